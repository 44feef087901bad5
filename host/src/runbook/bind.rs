//! Binds a checked runbook to an environment and parameter values: the
//! result, a [`Plan`], is everything the engine needs and nothing it must
//! check again.

use super::{ForEach, Runbook, Step, StepGrants, StepId};
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::grant::UrlGrant;
use crate::template::{Reference, RunField, Template};
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
    let source = &runbook.source;

    let environment = match (&bindings.environment, runbook.environments.is_empty()) {
        (Some(name), _) if runbook.environments.contains_key(name) => Some(name.clone()),
        (Some(name), true) => {
            problems.push(
                Diagnostic::new(format!(
                    "there is no environment `{name}`: the runbook defines none"
                ))
                .hint("drop `--env`, or add `[environments.NAME.vars]` to the runbook"),
            );
            None
        }
        (Some(name), false) => {
            problems.push(
                Diagnostic::new(format!("there is no environment `{name}`"))
                    .at(source, &ValuePath::default().key("environments"))
                    .hint(format!(
                        "choose one of: {}",
                        names(runbook.environments.keys())
                    )),
            );
            None
        }
        (None, true) => None,
        (None, false) => {
            problems.push(
                Diagnostic::new("choose an environment with `--env`").hint(format!(
                    "this runbook defines: {}",
                    names(runbook.environments.keys())
                )),
            );
            None
        }
    };
    let vars = environment
        .as_ref()
        .and_then(|name| runbook.environments.get(name))
        .map(|environment| environment.vars.clone())
        .unwrap_or_default();

    let mut params = BTreeMap::new();
    for (key, value) in &bindings.sets {
        if runbook.params.contains_key(key) {
            params.insert(key.clone(), value.clone());
        } else {
            problems.push(
                Diagnostic::new(format!(
                    "`--set {key}=...` names no parameter of this runbook"
                ))
                .hint(if runbook.params.is_empty() {
                    "this runbook takes no parameters".to_owned()
                } else {
                    format!("its parameters are: {}", names(runbook.params.keys()))
                }),
            );
        }
    }
    for (name, spec) in &runbook.params {
        let path = ValuePath::default().key("params").key(name);
        match params.get(name) {
            Some(value) => {
                if let Some(pattern) = &spec.pattern
                    && !pattern.is_match(value)
                {
                    let shown = pattern.as_str();
                    let shown = shown
                        .strip_prefix("^(?:")
                        .and_then(|rest| rest.strip_suffix(")$"))
                        .unwrap_or(shown);
                    problems.push(
                        Diagnostic::new(format!(
                            "parameter `{name}` = `{value}` does not match its pattern `{shown}`"
                        ))
                        .at(source, &path.key("pattern")),
                    );
                }
            }
            None => match &spec.default {
                Some(default) => {
                    params.insert(name.clone(), default.clone());
                }
                None if bindings.lenient => {
                    params.insert(name.clone(), format!("<params.{name}>"));
                }
                None if spec.required => problems.push(
                    Diagnostic::new(format!("missing required parameter `{name}`"))
                        .at(source, &path)
                        .hint(format!(
                            "pass it with `--set {name}=VALUE`{}",
                            spec.description
                                .as_ref()
                                .map(|description| format!(" ({description})"))
                                .unwrap_or_default()
                        )),
                ),
                None => {
                    params.insert(name.clone(), String::new());
                }
            },
        }
    }

    let mut plan = Plan {
        runbook: Arc::clone(&runbook),
        environment,
        params,
        vars,
        operator: bindings.operator,
        run_id: bindings.run_id,
        steps: Vec::new(),
    };

    // Every `vars.X` must exist in the chosen environment.
    if let Some(environment) = &plan.environment {
        for step in &runbook.steps {
            step.with
                .templates(&step.path().key("with"), &mut |template, at| {
                    for (reference, _) in template.references() {
                        if let Reference::Var(name) = reference
                            && !plan.vars.contains_key(name)
                        {
                            problems.push(
                                Diagnostic::new(format!(
                                    "environment `{environment}` does not define variable `{name}`"
                                ))
                                .at(source, at)
                                .hint(format!(
                                    "add `{name} = ...` under `[environments.{environment}.vars]`"
                                )),
                            );
                        }
                    }
                });
        }
    }

    let mut instances_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for step in &runbook.steps {
        let mut grants = StepGrants {
            http: Vec::new(),
            secrets: step.secret_grants.clone(),
            fs_read: step.fs_read.clone(),
            aws: step.aws.clone(),
            kube: step.kube.clone(),
        };
        for (template, at) in &step.http_grants {
            let rendered = template.render(|reference| plan.static_value(reference).ok_or(()));
            let Ok(rendered) = rendered else {
                problems.push(
                    Diagnostic::new("this grant refers to a value the environment does not define")
                        .at(source, at),
                );
                continue;
            };
            if rendered.contains('*') {
                // `UrlGrant::parse` would take `*` as a literal host or
                // path, and the grant would silently allow nothing.
                problems.push(
                    Diagnostic::new(format!(
                        "`{rendered}` is not an HTTP grant: grants have no wildcards"
                    ))
                    .at(source, at)
                    .hint("grant each host the step calls, e.g. \"https://api.example.com\"; a grant already allows every path below its own"),
                );
                continue;
            }
            match UrlGrant::parse(&rendered) {
                Ok(grant) => grants.http.push(grant),
                Err(error) => problems.push(
                    Diagnostic::new(format!("`{rendered}` is not an HTTP grant: {error}"))
                        .at(source, at)
                        .hint("write `scheme://host[:port][/path-prefix]`, e.g. \"https://api.example.com/v1\""),
                ),
            }
        }
        // Kubernetes namespaces and AWS regions may come from the
        // environment (`namespaces = ["${{ vars.namespace }}"]`).
        let grants_at = step.path().key("grants");
        let fixed = |text: &mut String, at: ValuePath, problems: &mut Diagnostics| {
            if !text.contains("${{") {
                return;
            }
            let rendered = Template::parse(text).ok().and_then(|template| {
                template
                    .render(|reference| plan.static_value(reference).ok_or(()))
                    .ok()
            });
            match rendered {
                Some(value) => *text = value,
                None => problems.push(
                    Diagnostic::new("this grant refers to a value the environment does not define")
                        .at(source, &at),
                ),
            }
        };
        if let Some(kube) = &mut grants.kube {
            for (position, namespace) in kube.namespaces.iter_mut().enumerate() {
                fixed(
                    namespace,
                    grants_at.key("kube").key("namespaces").index(position),
                    &mut problems,
                );
            }
        }
        if let Some(aws) = &mut grants.aws {
            for (position, region) in aws.regions.iter_mut().enumerate() {
                fixed(
                    region,
                    grants_at.key("aws").key("regions").index(position),
                    &mut problems,
                );
            }
        }
        let items: Vec<Option<serde_json::Value>> = match &step.for_each {
            None => vec![None],
            Some(ForEach::Items(items)) => items.iter().cloned().map(Some).collect(),
            Some(ForEach::Expression(template)) => {
                match template.value(|reference| plan.static_value(reference).ok_or(())) {
                    Ok(serde_json::Value::Array(items)) => {
                        match super::for_each_problem(&step.id.0, &items) {
                            None => items.into_iter().map(Some).collect(),
                            Some((message, hint, _)) => {
                                problems.push(
                                    Diagnostic::new(message)
                                        .at(source, &step.path().key("for_each"))
                                        .hint(hint),
                                );
                                Vec::new()
                            }
                        }
                    }
                    Ok(other) => {
                        problems.push(
                            Diagnostic::new(format!("`for_each` gives {other}, not a list"))
                                .at(source, &step.path().key("for_each"))
                                .hint(
                                    "make the variable a list: `services = [\"api\", \"worker\"]`",
                                ),
                        );
                        Vec::new()
                    }
                    Err(()) => Vec::new(),
                }
            }
        };
        let base_needs: Vec<usize> = step
            .needs
            .iter()
            .flat_map(|need| {
                instances_of
                    .get(need.0.as_str())
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let mut indices = Vec::new();
        for (position, item) in items.into_iter().enumerate() {
            let (id, name) = match &item {
                None => (step.id.clone(), step.name.clone()),
                Some(item) => {
                    let label = super::for_each_label(item, position);
                    (
                        StepId(format!("{}[{label}]", step.id)),
                        format!("{} [{}]", step.name, crate::template::as_text(item)),
                    )
                }
            };
            indices.push(plan.steps.len());
            plan.steps.push(super::PlannedStep {
                index: step.index,
                id,
                name,
                item,
                needs: base_needs.clone(),
                grants: grants.clone(),
            });
        }
        instances_of.insert(step.id.0.as_str(), indices);
    }

    problems.into_result(plan)
}

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
}
