//! Evaluates a step's `with` tree into the JSON its plugin receives.
//! Secrets become sealed handles; a string that is one expression keeps its
//! value's type.

use crate::capability::secrets::SecretStore;
use crate::runbook::{ParamTree, Plan};
use crate::template::Reference;
use std::collections::BTreeMap;

/// Outputs of the steps that have finished, by step id.
pub type StepOutputs = BTreeMap<String, BTreeMap<String, String>>;

/// What to do with an output that is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// It is an error (at run time: the step never produced it).
    Fail,
    /// Write a placeholder that names it (validation and plan).
    Placeholder,
}

/// A reference that had no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` has no value{}", if self.step_ran { ": the step finished without that output" } else { "" })]
pub struct RenderError {
    /// The reference.
    pub reference: String,
    /// Whether it was a step output of a step that did run.
    pub step_ran: bool,
}

/// What expressions can see.
pub struct Scope<'a> {
    /// The bound runbook.
    pub plan: &'a Plan,
    /// Finished steps' outputs.
    pub outputs: &'a StepOutputs,
    /// Issues secret handles.
    pub secrets: &'a SecretStore,
    /// What to do with unknown outputs.
    pub unknown: Unknown,
}

impl Scope<'_> {
    fn value(&self, reference: &Reference) -> Result<serde_json::Value, RenderError> {
        if let Some(value) = self.plan.static_value(reference) {
            return Ok(value);
        }
        match reference {
            Reference::Secret(name) => Ok(self.secrets.handle(name).into()),
            Reference::StepOutput { step, key } => {
                match self.outputs.get(step).and_then(|outputs| outputs.get(key)) {
                    Some(value) => Ok(value.clone().into()),
                    None if self.unknown == Unknown::Placeholder => {
                        Ok(format!("<{reference}>").into())
                    }
                    None => Err(RenderError {
                        reference: reference.to_string(),
                        step_ran: self.outputs.contains_key(step),
                    }),
                }
            }
            other => Err(RenderError {
                reference: other.to_string(),
                step_ran: false,
            }),
        }
    }

    /// Renders a `with` tree to JSON.
    pub fn render(&self, tree: &ParamTree) -> Result<serde_json::Value, RenderError> {
        Ok(match tree {
            ParamTree::Scalar(value) => value.clone(),
            ParamTree::String(template) => match template.sole_reference() {
                Some(reference) => self.value(reference)?,
                None => template
                    .render(|reference| self.value(reference).map(|value| as_text(&value)))?
                    .into(),
            },
            ParamTree::Array(items) => items
                .iter()
                .map(|item| self.render(item))
                .collect::<Result<Vec<_>, _>>()?
                .into(),
            ParamTree::Table(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), self.render(value)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

/// A value as it reads inside a longer string.
fn as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
