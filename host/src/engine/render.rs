//! Evaluates a step's `with` tree into the JSON its plugin receives.
//! Secrets become sealed handles; a string that is one expression keeps its
//! value's type.

use crate::capability::secrets::SecretStore;
use crate::runbook::{ParamTree, Plan};
use crate::template::{Expr, Reference, RunField};
use std::collections::BTreeMap;

/// Outputs of the steps that have finished, by step id.
pub type StepOutputs = BTreeMap<String, BTreeMap<String, String>>;

/// How finished steps ended, by step id (a `for_each` step: failed if any
/// element failed).
pub type StepOutcomes = BTreeMap<String, crate::events::Status>;

/// Where the run's own ending is kept among the outcomes and outputs
/// (no step can have an empty id): the outcome is `run.status` once the
/// `always` steps start, the output `failed_step` is `run.failed_step`.
pub const RUN_KEY: &str = "";

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
    /// How finished steps ended.
    pub outcomes: &'a StepOutcomes,
    /// The `for_each` element of the step being rendered.
    pub item: Option<&'a serde_json::Value>,
}

impl Scope<'_> {
    fn value(&self, reference: &Reference) -> Result<serde_json::Value, RenderError> {
        if let Some(value) = self.plan.static_value(reference) {
            return Ok(value);
        }
        match reference {
            Reference::Secret(name) => Ok(self.secrets.handle(name).into()),
            Reference::StepOutcome(step) => match self.outcomes.get(step) {
                Some(status) => Ok(status.as_str().into()),
                None if self.unknown == Unknown::Placeholder => Ok("succeeded".into()),
                None => Ok("skipped".into()),
            },
            Reference::Run(RunField::Status) => Ok(match self.outcomes.get(RUN_KEY) {
                Some(status) => status.as_str().into(),
                None if self.unknown == Unknown::Placeholder => "succeeded".into(),
                None => "running".into(),
            }),
            Reference::Run(RunField::FailedStep) => Ok(self
                .outputs
                .get(RUN_KEY)
                .and_then(|outputs| outputs.get("failed_step"))
                .cloned()
                .unwrap_or_default()
                .into()),
            Reference::Item(key) => {
                let item = self.item.cloned().unwrap_or_else(|| {
                    if self.unknown == Unknown::Placeholder {
                        "<item>".into()
                    } else {
                        serde_json::Value::Null
                    }
                });
                Ok(match key {
                    None => item,
                    Some(key) => item.get(key).cloned().unwrap_or(serde_json::Value::Null),
                })
            }
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

    /// Whether a reference is only a placeholder here: an output, or the
    /// `for_each` element, not known while validating or planning.
    fn is_placeholder(&self, reference: &Reference) -> bool {
        if self.unknown != Unknown::Placeholder {
            return false;
        }
        match reference {
            Reference::StepOutput { step, key } => self
                .outputs
                .get(step)
                .is_none_or(|outputs| !outputs.contains_key(key)),
            Reference::Item(_) => self.item.is_none(),
            _ => false,
        }
    }

    /// One `${{ ... }}`'s value. While validating or planning, one that
    /// depends on a value not known yet is a placeholder naming the whole
    /// expression (`<steps.live.outputs.colour == 'blue' && 'green' ||
    /// 'blue'>`): comparing the placeholder would pick a branch as if the
    /// value were known, and the plan would show that guess as fact.
    fn expression(&self, expression: &Expr) -> Result<serde_json::Value, RenderError> {
        let mut unknown = false;
        let value = expression.evaluate(&mut |reference| {
            unknown |= self.is_placeholder(reference);
            self.value(reference)
        })?;
        Ok(match expression {
            Expr::Reference(_) => value,
            _ if unknown => format!("<{expression}>").into(),
            _ => value,
        })
    }

    /// Decides an `if` condition with what is known before the run:
    /// `Some` when its known part settles it, `None` when it depends on
    /// other steps (their outputs, the outcomes this scope does not hold)
    /// or on how the run ends.
    pub fn decide(&self, expression: &crate::expression::Expr) -> Option<bool> {
        expression
            .decide(&mut |reference| match reference {
                // Outcomes known already (a step `plan` found skipped).
                Reference::StepOutcome(step) => {
                    self.outcomes.get(step).map(|status| status.as_str().into())
                }
                Reference::StepOutput { .. }
                | Reference::Secret(_)
                | Reference::Run(RunField::Status | RunField::FailedStep) => None,
                other => self.value(other).ok(),
            })
            .map(|value| crate::expression::truthy(&value))
    }

    /// Evaluates an `if` condition.
    pub fn condition(&self, expression: &crate::expression::Expr) -> Result<bool, RenderError> {
        expression
            .evaluate(&mut |reference| self.value(reference))
            .map(|value| crate::expression::truthy(&value))
    }

    /// Renders a `with` tree to JSON.
    pub fn render(&self, tree: &ParamTree) -> Result<serde_json::Value, RenderError> {
        Ok(match tree {
            ParamTree::Scalar(value) => value.clone(),
            ParamTree::String(template) => {
                template.value_with(|expression| self.expression(expression))?
            }
            ParamTree::Array(items) => items
                .iter()
                .map(|item| self.render(item))
                .collect::<Result<Vec<_>, _>>()?
                .into(),
            ParamTree::Table(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(key, template, value)| {
                        let key = match template {
                            None => key.clone(),
                            Some(template) => match template
                                .value_with(|expression| self.expression(expression))?
                            {
                                serde_json::Value::String(text) => text,
                                other => other.to_string(),
                            },
                        };
                        Ok((key, self.render(value)?))
                    })
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}
