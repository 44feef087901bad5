//! The environment a run binds to: the one `--env` names, which the
//! runbook must define, and the variables its steps read from it.

use super::{Plan, names};
use crate::diagnostic::{Diagnostics, ValuePath};
use crate::runbook::Code;
use crate::runbook::Runbook;
use crate::template::Reference;

/// The environment `chosen` names, when the runbook defines it. A runbook
/// with environments needs one chosen; one without takes none.
pub(super) fn choose(
    runbook: &Runbook,
    chosen: Option<&str>,
    problems: &mut Diagnostics,
) -> Option<String> {
    let defined = &runbook.environments;
    match (chosen, defined.is_empty()) {
        (Some(name), _) if defined.contains_key(name) => Some(name.to_owned()),
        (Some(name), true) => {
            problems.push(
                Code::NoEnvironments
                    .diagnostic(format!(
                        "there is no environment `{name}`: the runbook defines none"
                    ))
                    .hint("drop `--env`, or add `[environments.NAME.vars]` to the runbook"),
            );
            None
        }
        (Some(name), false) => {
            problems.push(
                Code::UnknownEnvironment
                    .diagnostic(format!(
                        "there is no environment `{name}`{}",
                        closest(name, defined.keys().map(String::as_str))
                            .map(|near| format!(" (did you mean `{near}`?)"))
                            .unwrap_or_default()
                    ))
                    .at(&runbook.source, &ValuePath::default().key("environments"))
                    .hint(format!("choose one of: {}", names(defined.keys()))),
            );
            None
        }
        (None, true) => None,
        (None, false) => {
            problems.push(
                Code::NoEnvironmentChosen
                    .diagnostic("choose an environment with `--env`")
                    .hint(format!("this runbook defines: {}", names(defined.keys()))),
            );
            None
        }
    }
}

/// The environment an operator most likely meant: one a typo away, else
/// the only one that `given` starts (`prod` for `production`).
fn closest<'a>(given: &str, defined: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    crate::diagnostic::did_you_mean(given, defined.clone()).or_else(|| {
        let mut starting = defined.filter(|name| !given.is_empty() && name.starts_with(given));
        match (starting.next(), starting.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    })
}

/// Every `vars.X` in a step's `with` must exist in the chosen environment
/// (validation checked only that some environment defines it).
pub(super) fn check_vars(plan: &Plan, environment: &str, problems: &mut Diagnostics) {
    let source = &plan.runbook.source;
    for step in &plan.runbook.steps {
        step.with
            .templates(&step.path().key("with"), &mut |template, at| {
                for (reference, _) in template.references() {
                    if let Reference::Var(name) = reference
                        && !plan.vars.contains_key(name)
                    {
                        problems.push(
                            Code::UndefinedVar
                                .diagnostic(format!(
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

#[cfg(test)]
mod tests {
    use crate::runbook::bind::testing::{bound, codes, runbook};

    const STEP: &str =
        "[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.message = \"${{ vars.greeting }}\"\n";

    #[test]
    fn the_environment_named_is_chosen_with_its_variables() {
        let runbook = runbook(&format!(
            "[environments.production.vars]\ngreeting = \"hi\"\n\n[environments.staging.vars]\ngreeting = \"yo\"\n\n{STEP}"
        ));
        let plan = bound(&runbook, Some("staging"), &[]).unwrap();
        assert_eq!(plan.environment.as_deref(), Some("staging"));
        assert_eq!(plan.vars["greeting"], "yo");
    }

    #[test]
    fn a_runbook_with_environments_needs_one_of_them_chosen() {
        let runbook = runbook(&format!(
            "[environments.production.vars]\ngreeting = \"hi\"\n\n{STEP}"
        ));
        assert_eq!(codes(bound(&runbook, None, &[])), ["NoEnvironmentChosen"]);
        assert_eq!(
            codes(bound(&runbook, Some("prod"), &[])),
            ["UnknownEnvironment"]
        );
    }

    #[test]
    fn a_runbook_without_environments_takes_none() {
        let runbook = runbook("[[steps]]\nid = \"a\"\nuses = \"noop\"\n");
        let plan = bound(&runbook, None, &[]).unwrap();
        assert!(plan.environment.is_none() && plan.vars.is_empty());
        assert_eq!(
            codes(bound(&runbook, Some("production"), &[])),
            ["NoEnvironments"]
        );
    }

    #[test]
    fn a_variable_of_with_must_be_defined_by_the_chosen_environment() {
        let runbook = runbook(&format!(
            "[environments.production.vars]\ngreeting = \"hi\"\n\n[environments.staging.vars]\n\n{STEP}"
        ));
        assert!(bound(&runbook, Some("production"), &[]).is_ok());
        assert_eq!(
            codes(bound(&runbook, Some("staging"), &[])),
            ["UndefinedVar"]
        );
    }
}
