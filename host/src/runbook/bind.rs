//! Binds a checked runbook to an environment and parameter values: the
//! result, a [`Plan`], is everything the engine needs and nothing it must
//! check again. This file is the driver; choosing the environment, the
//! parameters' values, the grants and the `for_each` instances have their
//! files in `bind/`.

mod environment;
mod grants;
mod instances;
mod params;

use super::{Runbook, Step, StepGrants, StepId};
use crate::diagnostic::{Diagnostics, ValuePath};
use crate::template::{Reference, RunField};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What the operator chose on the command line.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    /// `--env NAME`.
    pub environment: Option<String>,
    /// `--set KEY=VALUE`, in order; a later one wins.
    pub sets: Vec<(String, String)>,
    /// Who runs it.
    pub operator: String,
    /// The run's id, for `${{ run.id }}`.
    pub run_id: String,
    /// `validate`: parameters not given are placeholders, not errors.
    pub lenient: bool,
}

/// A runbook bound to an environment and parameters: ready to plan or run.
#[derive(Debug)]
pub struct Plan {
    /// The checked runbook.
    pub runbook: Arc<Runbook>,
    /// The chosen environment, when the runbook has any.
    pub environment: Option<String>,
    /// Every parameter's value.
    pub params: BTreeMap<String, String>,
    /// The environment's variables.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Who runs it.
    pub operator: String,
    /// The run's id.
    pub run_id: String,
    /// The steps, in the order they run, with their grants resolved.
    pub steps: Vec<PlannedStep>,
}

/// A step (or one `for_each` element of a step) with its grants resolved.
#[derive(Debug)]
pub struct PlannedStep {
    /// Index into `runbook.steps`.
    pub index: usize,
    /// The step's id, or `ID[element]` for a `for_each` element.
    pub id: StepId,
    /// Display name.
    pub name: String,
    /// The `for_each` element, as `${{ item }}`.
    pub item: Option<serde_json::Value>,
    /// Indices into `Plan::steps` that must finish first.
    pub needs: Vec<usize>,
    /// What it may touch.
    pub grants: StepGrants,
}

impl Plan {
    /// The checked step behind a planned one.
    pub fn step(&self, planned: &PlannedStep) -> &Step {
        &self.runbook.steps[planned.index]
    }

    /// The names of every secret the steps use.
    pub fn secret_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for step in &self.runbook.steps {
            step.with
                .templates(&ValuePath::default(), &mut |template, _| {
                    for (reference, _) in template.references() {
                        if let Reference::Secret(name) = reference {
                            names.insert(name.clone());
                        }
                    }
                });
            names.extend(step.secret_grants.iter().cloned());
        }
        names
    }

    /// The value of a reference that is known before the run starts.
    pub fn static_value(&self, reference: &Reference) -> Option<serde_json::Value> {
        match reference {
            Reference::Param(name) => self
                .params
                .get(name)
                .cloned()
                .map(serde_json::Value::String),
            Reference::Var(name) => self.vars.get(name).cloned(),
            Reference::Run(RunField::Id) => Some(self.run_id.clone().into()),
            Reference::Run(RunField::Environment) => {
                Some(self.environment.clone().unwrap_or_default().into())
            }
            Reference::Run(RunField::Operator) => Some(self.operator.clone().into()),
            Reference::Run(RunField::Status | RunField::FailedStep)
            | Reference::StepOutput { .. }
            | Reference::StepOutcome(_)
            | Reference::Secret(_)
            | Reference::Item(_) => None,
        }
    }
}

/// Binds the runbook; every problem is reported.
pub fn bind(runbook: Arc<Runbook>, bindings: Bindings) -> Result<Plan, Diagnostics> {
    let mut problems = Diagnostics::default();
    let environment = environment::choose(&runbook, bindings.environment.as_deref(), &mut problems);
    let vars = environment
        .as_ref()
        .and_then(|name| runbook.environments.get(name))
        .map(|environment| environment.vars.clone())
        .unwrap_or_default();
    let params = params::bind_params(&runbook, &bindings, &mut problems);
    let mut plan = Plan {
        runbook: Arc::clone(&runbook),
        environment,
        params,
        vars,
        operator: bindings.operator,
        run_id: bindings.run_id,
        steps: Vec::new(),
    };
    if let Some(environment) = &plan.environment {
        environment::check_vars(&plan, environment, &mut problems);
    }
    plan.steps = instances::plan_steps(&plan, &mut problems);
    problems.into_result(plan)
}

/// `` `a`, `b` ``: names as a hint lists them.
fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_services(services: &str) -> Result<Plan, Diagnostics> {
        let text = format!(
            "[runbook]\nname = \"fan-out\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[environments.production.vars]\nservices = {services}\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\nfor_each = \"${{{{ vars.services }}}}\"\n"
        );
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("fan-out.toml", text))
            .expect("the runbook is valid");
        bind(
            Arc::new(runbook),
            Bindings {
                environment: Some("production".into()),
                sets: Vec::new(),
                operator: "alice".into(),
                run_id: "run".into(),
                lenient: false,
            },
        )
    }

    #[test]
    fn a_for_each_from_the_environment_runs_each_element_once() {
        let plan = bind_services(r#"["api", "worker"]"#).unwrap();
        let ids: Vec<&str> = plan.steps.iter().map(|step| step.id.0.as_str()).collect();
        assert_eq!(ids, ["deploy[api]", "deploy[worker]"]);
        let twice = bind_services(r#"["api", "worker", "api"]"#).unwrap_err();
        assert!(
            twice.to_string().contains("would run as `deploy[api]`"),
            "{twice}"
        );
        let many = (0..1_001)
            .map(|index| format!("\"s{index}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let long = bind_services(&format!("[{many}]")).unwrap_err();
        assert!(
            long.to_string().contains("has 1001 elements; at most 1000"),
            "{long}"
        );
    }

    #[test]
    fn a_for_each_from_a_variable_the_environment_lacks_is_refused_not_run_for_nothing() {
        let text = "[runbook]\nname = \"fan-out\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[environments.production.vars]\nservices = [\"api\"]\n\n[environments.staging.vars]\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\nfor_each = \"${{ vars.services }}\"\n";
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("fan-out.toml", text))
            .expect("the runbook is valid");
        let problems = bind(
            Arc::new(runbook),
            Bindings {
                environment: Some("staging".into()),
                ..Bindings::default()
            },
        )
        .unwrap_err();
        assert!(
            problems
                .to_string()
                .contains("`for_each` refers to a value the environment does not define"),
            "{problems}"
        );
    }
}
