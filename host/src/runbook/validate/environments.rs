//! `[environments.NAME]`: variables, the time zone, deploy windows, freezes
//! and approvals. Knows nothing of steps.

use super::values::toml_to_json;
use crate::diagnostic::{Diagnostics, Source, ValuePath};
use crate::runbook::Code;
use crate::runbook::model::{RawApprovals, RawEnvironment};
use crate::runbook::{Approvals, Environment, Schedule};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checks every environment, in name order.
pub(super) fn validate_environments(
    source: &Arc<Source>,
    raw: BTreeMap<String, RawEnvironment>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, Environment> {
    raw.into_iter()
        .map(|(name, environment)| {
            let path = ValuePath::default().key("environments").key(&name);
            let checked = validate_environment(source, &path, environment, problems);
            (name, checked)
        })
        .collect()
}

/// Checks one environment at `path`.
fn validate_environment(
    source: &Arc<Source>,
    path: &ValuePath,
    environment: RawEnvironment,
    problems: &mut Diagnostics,
) -> Environment {
    let schedule = schedule(source, path, &environment, problems);
    let regular = approvals(source, path, environment.approvals, "approvals", problems);
    let emergency_approvals = approvals(
        source,
        path,
        environment.emergency_approvals,
        "emergency_approvals",
        problems,
    );
    Environment {
        aws_endpoint: environment.aws_endpoint,
        kube_context: environment.kube_context,
        description: environment.description,
        vars: environment
            .vars
            .into_iter()
            .map(|(key, value)| (key, toml_to_json(value)))
            .collect(),
        approvals: regular,
        emergency_approvals,
        schedule,
    }
}

/// The time zone, windows and freezes; a wrong one is reported and left out.
fn schedule(
    source: &Arc<Source>,
    path: &ValuePath,
    environment: &RawEnvironment,
    problems: &mut Diagnostics,
) -> Schedule {
    let mut schedule = Schedule::new(environment.timezone.as_deref()).unwrap_or_else(|message| {
        problems.push(
            Code::Timezone
                .diagnostic(message)
                .at(source, &path.key("timezone")),
        );
        Schedule::default()
    });
    for (position, window) in environment.windows.iter().enumerate() {
        if let Err(message) = schedule.add_window(&window.days, &window.from, &window.to) {
            problems.push(
                Code::Window
                    .diagnostic(format!("deploy window: {message}"))
                    .at(source, &path.key("windows").index(position))
                    .hint(
                        "write `{ days = [\"mon\", \"tue\"], from = \"09:00\", to = \"17:00\" }`",
                    ),
            );
        }
    }
    for (position, freeze) in environment.freezes.iter().enumerate() {
        if let Err(message) = schedule.add_freeze(
            &freeze.from.text(),
            &freeze.to.text(),
            freeze.reason.clone(),
        ) {
            problems.push(
                Code::Freeze.diagnostic(format!("freeze: {message}"))
                    .at(source, &path.key("freezes").index(position))
                    .hint("write `{ from = \"2026-12-24\", to = \"2026-12-26\", reason = \"holidays\" }`"),
            );
        }
    }
    schedule
}

/// `approvals` or `emergency_approvals` (`key`): at least one approval, and
/// no more than there are distinct people to give them.
fn approvals(
    source: &Arc<Source>,
    path: &ValuePath,
    raw: Option<RawApprovals>,
    key: &str,
    problems: &mut Diagnostics,
) -> Option<Approvals> {
    let raw = raw?;
    let mut from = raw.from.clone();
    from.sort();
    from.dedup();
    if raw.required == 0 || raw.required as usize > from.len() {
        problems.push(
            Code::Approvals
                .diagnostic(format!(
                    "{key} requires {} approvals from {} distinct people",
                    raw.required,
                    from.len()
                ))
                .at(source, &path.key(key))
                .hint("`required` must be at least 1 and at most the number of people in `from`"),
        );
    }
    Some(Approvals {
        required: raw.required,
        from: raw.from,
    })
}
