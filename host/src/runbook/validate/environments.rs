//! `[environments.NAME]`: variables, the time zone, deploy windows, freezes,
//! approvals (and the `allowed_signers` file they name, read here), and
//! the promotion gate (`requires`, in `promotion.rs`). Knows nothing of
//! steps.

use super::promotion::{self, Names};
use super::values::toml_to_json;
use crate::diagnostic::{Diagnostics, Source, ValuePath, relative_to};
use crate::runbook::Code;
use crate::runbook::model::{RawApprovals, RawEnvironment};
use crate::runbook::{Approvals, Environment, ParamSpec, Schedule, Signers};
use crate::signature::AllowedSigners;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checks every environment, in name order; `requires` may name the
/// declared `params`.
pub(super) fn validate_environments(
    source: &Arc<Source>,
    raw: BTreeMap<String, RawEnvironment>,
    params: &BTreeMap<String, ParamSpec>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, Environment> {
    let declared: Vec<String> = raw.keys().cloned().collect();
    let names = Names {
        environments: declared.iter().map(String::as_str).collect(),
        params,
    };
    let environments = raw
        .into_iter()
        .map(|(name, environment)| {
            let path = ValuePath::default().key("environments").key(&name);
            let checked = validate_environment(source, &path, environment, &names, problems);
            (name, checked)
        })
        .collect();
    promotion::circles(source, &environments, problems);
    environments
}

/// Checks one environment at `path`.
fn validate_environment(
    source: &Arc<Source>,
    path: &ValuePath,
    mut environment: RawEnvironment,
    names: &Names<'_>,
    problems: &mut Diagnostics,
) -> Environment {
    let requires = environment
        .requires
        .take()
        .map(|raw| promotion::requires(source, path, raw, names, problems));
    let schedule = schedule(source, path, &environment, problems);
    let rollback_window = rollback_window(
        source,
        &path.key("rollback_window"),
        environment.rollback_window.as_deref(),
        problems,
    );
    let regular = approvals(source, path, environment.approvals, "approvals", problems);
    let emergency_approvals = approvals(
        source,
        path,
        environment.emergency_approvals,
        "emergency_approvals",
        problems,
    );
    Environment {
        on_failure: environment.on_failure,
        aws_endpoint: environment.aws_endpoint,
        kube_context: environment.kube_context,
        rollback_window,
        description: environment.description,
        vars: environment
            .vars
            .into_iter()
            .map(|(key, value)| (key, toml_to_json(value)))
            .collect(),
        approvals: regular,
        emergency_approvals,
        schedule,
        requires,
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

/// `rollback_window`: a duration of at most thirty days, and more than
/// none (a window of nothing would refuse every rollback; leave the key out
/// to allow one at any time).
fn rollback_window(
    source: &Arc<Source>,
    at: &ValuePath,
    text: Option<&str>,
    problems: &mut Diagnostics,
) -> Option<std::time::Duration> {
    let text = text?;
    match super::limits::parse_duration(text) {
        Ok(window) if window.is_zero() => {
            problems.push(
                Code::RollbackWindowEmpty
                    .diagnostic(format!("a rollback_window of `{text}` would refuse every `runbook rollback`"))
                    .at(source, at)
                    .hint("give the time after a run in which on-call may roll it back, such as \"1h\"; leave the key out to allow it at any time"),
            );
            None
        }
        Ok(window) => Some(window),
        Err(problem) => {
            let problem = match problem.hint {
                Some(_) => problem,
                None => problem.hint("write how long after a run ends it may be rolled back, such as \"1h\" or \"30m\""),
            };
            problems.push(problem.at(source, at));
            None
        }
    }
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
    let signers = raw.allowed_signers.as_deref().and_then(|written| {
        signers(
            source,
            &path.key(key).key("allowed_signers"),
            written,
            problems,
        )
    });
    if let Some(signers) = &signers {
        for (position, name) in raw.from.iter().enumerate() {
            if signers.allowed.knows(name) {
                continue;
            }
            let known: Vec<&str> = signers
                .allowed
                .signers
                .iter()
                .flat_map(|signer| signer.principals.iter().map(String::as_str))
                .collect();
            let guess = crate::diagnostic::did_you_mean(name, known.iter().copied())
                .map(|near| format!(" (it has `{near}`)"))
                .unwrap_or_default();
            problems.push(
                Code::ApproverWithoutKey
                    .diagnostic(format!(
                        "approver `{name}` has no key in {}{guess}",
                        signers.written
                    ))
                    .at(source, &path.key(key).key("from").index(position))
                    .hint(format!(
                        "add a line `{name} ssh-ed25519 AAAA…` to {} with their public key (`cat ~/.ssh/id_ed25519.pub`), or take them out of `from`",
                        signers.written
                    )),
            );
        }
    }
    Some(Approvals {
        required: raw.required,
        from: raw.from,
        signers,
    })
}

/// The `allowed_signers` file named at `at`, read and parsed: a file that
/// cannot be read is reported at `at`, and each line that cannot be used
/// at its own place in that file.
pub(super) fn signers(
    source: &Arc<Source>,
    at: &ValuePath,
    written: &str,
    problems: &mut Diagnostics,
) -> Option<Signers> {
    let path = relative_to(&source.path, written);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            problems.push(
                Code::AllowedSignersUnreadable
                    .diagnostic(format!("cannot read allowed_signers `{written}`: {error}"))
                    .at(source, at)
                    .hint("the path is relative to the runbook's folder; the file has a line per signer, as git's gpg.ssh.allowedSignersFile: `alice ssh-ed25519 AAAA… alice@laptop`"),
            );
            return None;
        }
    };
    match AllowedSigners::parse(&text) {
        Ok(allowed) => Some(Signers {
            written: written.to_owned(),
            path,
            allowed,
        }),
        Err(lines) => {
            let named_at = source
                .span_of(at)
                .map(|span| {
                    let (line, _) = source.line_column(span.start);
                    format!("{}:{line}", source.path.display())
                })
                .unwrap_or_else(|| source.path.display().to_string());
            let file = Source::new(path, text);
            for line in lines {
                problems.push(
                    Code::AllowedSignersLine
                        .diagnostic(line.message)
                        .at_span(&file, line.span)
                        .hint(format!(
                            "{}; this allowed_signers file is named at {named_at}",
                            line.hint
                        )),
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, raw, source};

    /// The environment written as the TOML `text`, and its problems' codes.
    fn checked(text: &str) -> (Environment, Vec<&'static str>) {
        let source = source(text);
        let mut problems = Diagnostics::default();
        let params = BTreeMap::new();
        let names = Names {
            environments: Vec::new(),
            params: &params,
        };
        let environment = validate_environment(
            &source,
            &ValuePath::default(),
            raw(text),
            &names,
            &mut problems,
        );
        (environment, codes(&problems))
    }

    #[test]
    fn variables_become_json_and_gates_are_kept() {
        let (environment, problems) = checked(
            "kube_context = \"kind\"\nvars = { replicas = 3, services = [\"api\"], day = 2026-12-24 }\napprovals = { required = 1, from = [\"alice\"] }\nwindows = [{ days = [\"mon\"], from = \"09:00\", to = \"17:00\" }]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(environment.vars["replicas"], serde_json::json!(3));
        assert_eq!(environment.vars["services"], serde_json::json!(["api"]));
        assert_eq!(environment.vars["day"], serde_json::json!("2026-12-24"));
        assert_eq!(environment.approvals.unwrap().required, 1);
        assert!(!environment.schedule.is_unrestricted());
        assert_eq!(environment.kube_context.as_deref(), Some("kind"));
    }

    #[test]
    fn a_wrong_time_zone_window_or_freeze_is_reported_and_left_out() {
        let (environment, problems) = checked(
            "timezone = \"Mars/Olympus\"\nwindows = [{ days = [], from = \"09:00\", to = \"17:00\" }, { days = [\"mon\"], from = \"17:00\", to = \"09:00\" }]\nfreezes = [{ from = \"24.12.2026\", to = 2026-12-26 }]\n",
        );
        assert_eq!(problems, ["Timezone", "Window", "Window", "Freeze"]);
        assert!(environment.schedule.is_unrestricted());
    }

    #[test]
    fn approvals_need_one_to_as_many_distinct_people_as_are_named() {
        let (_, problems) = checked("approvals = { required = 2, from = [\"alice\", \"bob\"] }");
        assert!(problems.is_empty());
        let (_, problems) = checked(
            "approvals = { required = 2, from = [\"alice\", \"alice\"] }\nemergency_approvals = { required = 0, from = [\"bob\"] }",
        );
        assert_eq!(problems, ["Approvals", "Approvals"]);
    }

    #[test]
    fn a_rollback_window_is_a_duration_of_more_than_nothing() {
        let (environment, problems) = checked("rollback_window = \"1h 30m\"");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            environment.rollback_window,
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(checked("").0.rollback_window, None);
        for (text, code) in [
            ("soon", "NotADuration"),
            ("0s", "RollbackWindowEmpty"),
            ("40days", "DurationTooLong"),
        ] {
            let (environment, problems) = checked(&format!("rollback_window = \"{text}\""));
            assert_eq!(problems, [code], "{text}");
            assert_eq!(environment.rollback_window, None);
        }
    }

    #[test]
    fn environments_are_checked_each_at_its_own_place() {
        let text = "[a]\ntimezone = \"Nowhere\"\n\n[b]\ntimezone = \"Nowhere\"\n";
        let source = source(text);
        let mut problems = Diagnostics::default();
        let checked = validate_environments(&source, raw(text), &BTreeMap::new(), &mut problems);
        assert_eq!(checked.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(codes(&problems), ["Timezone", "Timezone"]);
    }
}
