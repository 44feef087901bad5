//! Binds a checked runbook to an environment and parameter values: the
//! result, a [`Plan`], is everything the engine needs and nothing it must
//! check again. This file is the driver; choosing the environment, the
//! parameters' values, the grants and the `for_each` instances have their
//! files in `bind/`.

mod environment;
mod grants;
mod instances;
mod params;
mod reach;
mod secrets;

use super::{NotifyTarget, Runbook, Step, StepGrants, StepId};
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
    /// Every parameter's value, as JSON of its type (a string for a
    /// parameter without `type`).
    pub params: BTreeMap<String, serde_json::Value>,
    /// The environment's variables.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Who runs it.
    pub operator: String,
    /// The run's id.
    pub run_id: String,
    /// The steps, in the order they run, with their grants resolved.
    pub steps: Vec<PlannedStep>,
    /// The targets of `[notify]`, with their grants resolved.
    pub targets: Vec<PlannedTarget>,
    /// Where each secret's value is read from, with the environment's
    /// values in it: every `[secrets.NAME]`, and every other secret the
    /// steps and targets use (from the environment variable of its name).
    pub secret_sources: BTreeMap<String, SecretSource>,
}

/// Where a secret's value is read from, in the environment a plan binds.
/// The host reads it before any step runs (`engine::preflight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the operator's process.
    Env {
        /// The variable.
        var: String,
    },
    /// A file on the operator's machine; its trailing line ending is not
    /// part of the value.
    File {
        /// Absolute, or relative to the current directory (already joined
        /// to the runbook's folder).
        path: std::path::PathBuf,
    },
    /// A secret of AWS Secrets Manager, read with the operator's
    /// credentials.
    AwsSecretsManager {
        /// Its name or ARN.
        id: String,
        /// The region it is kept in.
        region: String,
        /// A field of its JSON text, when it holds several.
        key: Option<String>,
    },
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

/// A target of `[notify]` with its grants resolved.
#[derive(Debug)]
pub struct PlannedTarget {
    /// Index into the runbook's `notify.targets`.
    pub index: usize,
    /// The id its calls are journaled and audited under (`notify.0`).
    pub id: StepId,
    /// What it may touch.
    pub grants: StepGrants,
}

impl Plan {
    /// The checked step behind a planned one.
    pub fn step(&self, planned: &PlannedStep) -> &Step {
        &self.runbook.steps[planned.index]
    }

    /// The checked target of `[notify]` behind a planned one.
    pub fn target(&self, planned: &PlannedTarget) -> &NotifyTarget {
        let notify = self
            .runbook
            .notify
            .as_ref()
            .expect("a plan has targets only when its runbook has `[notify]`");
        &notify.targets[planned.index]
    }

    /// What a failure of `planned` does to the run: the step's own
    /// `on_failure`, else its environment's, else the runbook's.
    pub fn policy(&self, planned: &PlannedStep) -> super::Policy {
        self.step(planned)
            .on_failure
            .or_else(|| {
                self.environment
                    .as_ref()
                    .and_then(|name| self.runbook.environments.get(name))
                    .and_then(|environment| environment.on_failure)
            })
            .unwrap_or(self.runbook.on_failure)
    }

    /// The names of every secret the steps and the targets of `[notify]`
    /// use.
    pub fn secret_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let targets = self
            .runbook
            .notify
            .iter()
            .flat_map(|notify| &notify.targets)
            .map(|target| (&target.with, &target.grants.secrets));
        let steps = self
            .runbook
            .steps
            .iter()
            .map(|step| (&step.with, &step.grants.secrets));
        for (with, granted) in steps.chain(targets) {
            with.templates(&ValuePath::default(), &mut |template, _| {
                for (reference, _) in template.references() {
                    if let Reference::Secret(name) = reference {
                        names.insert(name.clone());
                    }
                }
            });
            names.extend(granted.iter().cloned());
        }
        names
    }

    /// The value of a reference that is known before the run starts.
    pub fn static_value(&self, reference: &Reference) -> Option<serde_json::Value> {
        match reference {
            Reference::Param(name) => self.params.get(name).cloned(),
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
    // Parameters `validate` was not given stand for any value: their
    // placeholders are no URL's, namespace's or region's text.
    let placeholders: BTreeSet<String> = runbook
        .params
        .iter()
        .filter(|(name, spec)| {
            bindings.lenient
                && spec.default.is_none()
                && !bindings.sets.iter().any(|(key, _)| key == *name)
        })
        .map(|(name, _)| name.clone())
        .collect();
    if environment.is_none() && !runbook.environments.is_empty() {
        // Without its environment every grant and variable would be
        // reported as undefined: consequences that bury the one mistake.
        return Err(problems);
    }
    let mut plan = Plan {
        runbook: Arc::clone(&runbook),
        environment,
        params,
        vars,
        operator: bindings.operator,
        run_id: bindings.run_id,
        steps: Vec::new(),
        targets: Vec::new(),
        secret_sources: BTreeMap::new(),
    };
    if let Some(environment) = &plan.environment {
        environment::check_vars(&plan, environment, &mut problems);
    }
    plan.steps = instances::plan_steps(&plan, &mut problems);
    reach::check(&plan, &placeholders, &mut problems);
    let targets: Vec<PlannedTarget> = runbook
        .notify
        .iter()
        .flat_map(|notify| &notify.targets)
        .map(|target| PlannedTarget {
            index: target.index,
            id: target.id.clone(),
            grants: grants::resolve_target(&plan, target, &mut problems),
        })
        .collect();
    plan.targets = targets;
    plan.secret_sources = secrets::bind_secrets(&plan, &mut problems);
    problems.into_result(plan)
}

/// `` `a`, `b` ``: names as a hint lists them.
fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the tests of every part of binding share: a runbook's text bound
/// to an environment and `--set` values.
#[cfg(test)]
mod testing {
    use super::{Bindings, Plan, bind};
    use crate::diagnostic::{Diagnostics, Source};
    use crate::runbook::Runbook;
    use std::sync::Arc;

    /// A valid runbook with a `noop` plugin, `[[steps]]` and the rest
    /// written as `rest`.
    pub(super) fn runbook(rest: &str) -> Arc<Runbook> {
        let text = format!("[runbook]\nname = \"r\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n{rest}");
        let runbook = crate::runbook::parse(Source::new("r.toml", text.as_str()))
            .unwrap_or_else(|problems| panic!("{problems}\n{text}"));
        Arc::new(runbook)
    }

    /// `runbook` bound strictly to `environment` with `sets`.
    pub(super) fn bound(
        runbook: &Arc<Runbook>,
        environment: Option<&str>,
        sets: &[(&str, &str)],
    ) -> Result<Plan, Diagnostics> {
        bind(
            Arc::clone(runbook),
            Bindings {
                environment: environment.map(str::to_owned),
                sets: sets
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                operator: "alice".into(),
                run_id: "run-1".into(),
                lenient: false,
            },
        )
    }

    /// The codes of the problems binding reports; none when it binds.
    pub(super) fn codes(bound: Result<Plan, Diagnostics>) -> Vec<&'static str> {
        match bound {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .0
                .iter()
                .map(|problem| problem.code.expect("every diagnostic has a code"))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{bound, runbook};
    use super::*;

    #[test]
    fn values_known_before_the_run_are_the_parameters_variables_and_run_fields() {
        let runbook = runbook(
            "[params.version]\ndefault = \"1.0\"\n\n[environments.production.vars]\nreplicas = 3\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n",
        );
        let plan = bound(&runbook, Some("production"), &[]).unwrap();
        let value = |text: &str| {
            let expression = crate::expression::Expr::parse(text).unwrap();
            plan.static_value(expression.references()[0])
        };
        assert_eq!(value("params.version"), Some("1.0".into()));
        assert_eq!(value("vars.replicas"), Some(3.into()));
        assert_eq!(value("vars.missing"), None);
        assert_eq!(value("run.id"), Some("run-1".into()));
        assert_eq!(value("run.environment"), Some("production".into()));
        assert_eq!(value("run.operator"), Some("alice".into()));
        for later in [
            "run.status",
            "steps.a.outcome",
            "steps.a.outputs.x",
            "secrets.token",
            "item",
        ] {
            assert_eq!(value(later), None, "{later}");
        }
    }

    #[test]
    fn a_typed_parameter_keeps_its_type_alone_and_is_text_inside_a_string() {
        let runbook = runbook(
            "[params.percentage]\ntype = \"integer\"\ndefault = 10\n\n[params.services]\ntype = \"list\"\ndefault = [\"api\", \"worker\"]\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n",
        );
        let plan = bound(&runbook, None, &[("percentage", "25")]).unwrap();
        let value = |text: &str| {
            crate::template::Template::parse(text)
                .unwrap()
                .value(|reference| plan.static_value(reference).ok_or(()))
                .unwrap()
        };
        assert_eq!(value("${{ params.percentage }}"), serde_json::json!(25));
        assert_eq!(
            value("at ${{ params.percentage }}%"),
            serde_json::json!("at 25%")
        );
        assert_eq!(
            value("${{ params.services }}"),
            serde_json::json!(["api", "worker"])
        );
        assert_eq!(
            value("${{ params.percentage > 9 }}"),
            serde_json::json!(true),
            "numbers compare as numbers"
        );
        let ids: Vec<&str> = plan.steps.iter().map(|step| step.id.0.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn a_for_each_over_a_list_parameter_runs_each_element() {
        let runbook = runbook(
            "[params.services]\ntype = \"list\"\ndefault = [\"api\"]\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\nfor_each = \"${{ params.services }}\"\n",
        );
        let plan = bound(&runbook, None, &[("services", "api,worker")]).unwrap();
        let ids: Vec<&str> = plan.steps.iter().map(|step| step.id.0.as_str()).collect();
        assert_eq!(ids, ["deploy[api]", "deploy[worker]"]);
    }

    #[test]
    fn the_secrets_named_are_those_used_in_with_and_those_granted() {
        let runbook = runbook(
            "[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.auth = \"Bearer ${{ secrets.token }}\"\ngrants.secrets = [\"token\", \"spare\"]\n\n[[steps]]\nid = \"b\"\nuses = \"noop\"\n",
        );
        let plan = bound(&runbook, None, &[]).unwrap();
        assert_eq!(
            plan.secret_names().into_iter().collect::<Vec<_>>(),
            ["spare", "token"]
        );
        assert_eq!(plan.step(&plan.steps[1]).id.0, "b");
    }

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
