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
                    .diagnostic(format!("there is no environment `{name}`"))
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
