//! Checks a raw runbook into a [`Runbook`]: names, durations, templates and
//! references. Reports every problem it finds, each at its place in the file.
//! This file is the driver; each concern has its file in `validate/`, and
//! none of them does I/O beyond resolving `grants.fs` folders.

mod environments;
mod for_each;
mod grants;
mod graph;
mod limits;
mod notify;
mod params;
mod plugins;
mod promotion;
mod references;
mod secrets;
mod state;
mod steps;
mod values;

pub use values::toml_to_json;

use super::model::RawRunbook;
use super::{Environment, ParamSpec, PluginSource, Policy, Runbook};
use crate::diagnostic::{Diagnostics, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Validates the raw model; every problem found is reported.
pub fn validate(source: Arc<Source>, raw: RawRunbook) -> Result<Runbook, Diagnostics> {
    let mut problems = Diagnostics::default();
    let params = params::validate_params(&source, &raw.params, &mut problems);
    let environments =
        environments::validate_environments(&source, raw.environments, &params, &mut problems);
    let plugins = plugins::validate_plugins(&source, raw.plugins, &mut problems);
    let declared = Declared {
        params: &params,
        environments: &environments,
        plugins: &plugins,
    };
    let steps = steps::validate_steps(&source, raw.steps, &declared, &mut problems);
    let notify = raw
        .notify
        .map(|notify| notify::validate_notify(&source, notify, &declared, &mut problems));
    let state = raw
        .state
        .and_then(|state| state::validate_state(&source, state, &mut problems));
    let secrets = secrets::validate_secrets(&source, raw.secrets, &declared, &mut problems);
    problems.into_result(Runbook {
        name: raw.runbook.name,
        description: raw.runbook.description,
        source,
        params,
        environments,
        plugins,
        steps,
        on_failure: raw.runbook.on_failure.unwrap_or(Policy::Rollback),
        notify,
        state,
        secrets,
    })
}

/// What the runbook declares outside its steps, already checked: what a
/// step's `uses` and references may name.
struct Declared<'a> {
    params: &'a BTreeMap<String, ParamSpec>,
    environments: &'a BTreeMap<String, Environment>,
    plugins: &'a BTreeMap<String, PluginSource>,
}

/// What one step's checks read of the rest of the runbook.
struct StepContext<'a> {
    /// Parameters, environments and plugins.
    declared: &'a Declared<'a>,
    /// Every step this one transitively needs: the steps whose outputs and
    /// outcomes it may read.
    ancestors: &'a BTreeSet<String>,
    /// Steps with `for_each`, whose outputs no step may read.
    for_each_steps: &'a BTreeSet<String>,
}

/// Step ids and secret names: a letter, then letters, digits, `_`, `-`.
pub fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '-'
        })
}

/// What the tests of every part of validation share: runbook text in, the
/// codes of the problems out.
#[cfg(test)]
mod testing {
    use super::{Declared, StepContext};
    use crate::diagnostic::{Diagnostics, Source};
    use crate::runbook::validate::references::ReferenceCheck;
    use crate::runbook::{Environment, ParamSpec, PluginSource};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    /// A runbook file named `r.toml` in the current folder.
    pub(super) fn source(text: &str) -> Arc<Source> {
        Source::new("r.toml", text)
    }

    /// A part of the raw model, read from TOML.
    pub(super) fn raw<T: serde::de::DeserializeOwned>(text: &str) -> T {
        toml::from_str(text).unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    /// The codes of `problems`, in the order reported.
    pub(super) fn codes(problems: &Diagnostics) -> Vec<&'static str> {
        problems
            .0
            .iter()
            .map(|problem| problem.code.expect("every diagnostic has a code"))
            .collect()
    }

    /// The codes of the problems validating a whole runbook reports.
    pub(super) fn codes_of(text: &str) -> Vec<&'static str> {
        match crate::runbook::parse(source(text)) {
            Ok(_) => Vec::new(),
            Err(problems) => codes(&problems),
        }
    }

    /// What one step's references are checked against: the declarations
    /// and the step's place in the graph.
    #[derive(Default)]
    pub(super) struct Scope {
        pub(super) params: BTreeMap<String, ParamSpec>,
        pub(super) environments: BTreeMap<String, Environment>,
        pub(super) ancestors: BTreeSet<String>,
        pub(super) for_each_steps: BTreeSet<String>,
    }

    impl Scope {
        /// A scope that declares `params` and one environment with `vars`.
        pub(super) fn new(params: &[&str], vars: &[&str]) -> Self {
            let spec = || ParamSpec {
                description: None,
                required: false,
                kind: crate::runbook::ParamType::String,
                default: None,
                pattern: None,
            };
            let environment = Environment {
                description: None,
                vars: vars
                    .iter()
                    .map(|name| ((*name).to_owned(), serde_json::Value::Null))
                    .collect(),
                approvals: None,
                emergency_approvals: None,
                schedule: Default::default(),
                aws_endpoint: None,
                kube_context: None,
                requires: None,
                rollback_window: None,
                on_failure: None,
            };
            Scope {
                params: params
                    .iter()
                    .map(|name| ((*name).to_owned(), spec()))
                    .collect(),
                environments: [("production".to_owned(), environment)].into(),
                ..Scope::default()
            }
        }

        /// Runs `test` with the check of step `step_id`, granted `secrets`,
        /// for a value known at run time (`with`).
        pub(super) fn check<R>(
            &self,
            source: &Arc<Source>,
            step_id: &str,
            secrets: &[String],
            test: impl FnOnce(&ReferenceCheck<'_>) -> R,
        ) -> R {
            let plugins: BTreeMap<String, PluginSource> = BTreeMap::new();
            let declared = Declared {
                params: &self.params,
                environments: &self.environments,
                plugins: &plugins,
            };
            let context = StepContext {
                declared: &declared,
                ancestors: &self.ancestors,
                for_each_steps: &self.for_each_steps,
            };
            test(&ReferenceCheck {
                source,
                context: &context,
                step_id,
                secret_grants: secrets,
                allow_step_outputs: true,
                allow_secrets: true,
                allow_item: false,
                in_notify: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::codes_of;
    use super::*;

    #[test]
    fn a_valid_runbook_becomes_a_runbook_with_its_declarations_and_steps() {
        let text = "[runbook]\nname = \"r\"\n\n[params.version]\nrequired = true\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n\n[[steps]]\nid = \"b\"\nuses = \"noop\"\n";
        let runbook = crate::runbook::parse(Source::new("folder/r.toml", text)).unwrap();
        assert_eq!(runbook.name, "r");
        assert!(runbook.params.contains_key("version"));
        assert_eq!(
            runbook.plugins["noop"].path,
            std::path::Path::new("folder/noop.wasm")
        );
        assert_eq!(runbook.on_failure, Policy::Rollback);
        let needs: Vec<Vec<&str>> = runbook
            .steps
            .iter()
            .map(|step| step.needs.iter().map(|need| need.0.as_str()).collect())
            .collect();
        assert_eq!(needs, [vec![], vec!["a"]]);
    }

    #[test]
    fn problems_of_every_part_are_reported_together_in_file_order_of_concerns() {
        let text = "[runbook]\nname = \"r\"\n\n[params.p]\npattern = \"(\"\n\n[environments.e]\ntimezone = \"Nowhere/Else\"\n\n[plugins]\nnoop = { path = \"noop.wasm\", sha256 = \"xyz\" }\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\nneeds = [\"b\"]\n";
        assert_eq!(
            codes_of(text),
            [
                "InvalidPattern",
                "Timezone",
                "MalformedSha256",
                "UnknownNeed"
            ]
        );
    }

    #[test]
    fn identifiers_start_with_a_letter_or_underscore_and_go_on_with_dashes_too() {
        for good in ["deploy", "deploy-api", "step_2", "_hidden", "A"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "2nd", "-x", "with space", "dot.ted", "ünïcode"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
