//! `[state]`: which backend keeps the runbook's runs, locks and records.

use super::limits::parse_duration;
use crate::diagnostic::{Diagnostics, Source, ValuePath};
use crate::runbook::code::Code;
use crate::runbook::model::RawState;
use crate::runbook::{MIN_LEASE, StateBackend};
use std::sync::Arc;

/// The default lease of a shared backend.
const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The checked `[state]`: `None` for the local backend (or a wrong one,
/// reported).
pub(super) fn validate_state(
    source: &Arc<Source>,
    raw: RawState,
    problems: &mut Diagnostics,
) -> Option<StateBackend> {
    let at = ValuePath::default().key("state");
    let lease = match &raw.lease {
        None => DEFAULT_LEASE,
        Some(text) => match parse_duration(text) {
            Ok(lease) if lease < MIN_LEASE => {
                problems.push(
                    Code::LeaseTooShort
                        .diagnostic(format!(
                            "a lease of `{text}` is shorter than {}, the shortest a lock may have",
                            humantime::format_duration(MIN_LEASE)
                        ))
                        .at(source, &at.key("lease"))
                        .hint("a holder renews its lease every third of it; the default is 30s"),
                );
                DEFAULT_LEASE
            }
            Ok(lease) => lease,
            Err(problem) => {
                problems.push(
                    problem
                        .hint("write a duration such as \"30s\" or \"2m\"")
                        .at(source, &at.key("lease")),
                );
                DEFAULT_LEASE
            }
        },
    };
    match raw.backend.as_str() {
        "local" => {
            if raw.url.is_some() {
                problems.push(
                    Code::StateUrl
                        .diagnostic("the local backend takes no `url`")
                        .at(source, &at.key("url"))
                        .hint("`backend = \"postgres\"` keeps the state in a database"),
                );
            }
            None
        }
        "postgres" => {
            let Some(url) = raw.url else {
                problems.push(
                    Code::StateUrl
                        .diagnostic("the postgres backend needs a `url`")
                        .at(source, &at.key("backend"))
                        .hint("url = \"${{ env.RUNBOOK_STATE_URL }}\", or a postgres://user@host:5432/db URL without its password"),
                );
                return None;
            };
            check_url(source, &url, &at.key("url"), problems);
            Some(StateBackend {
                backend: raw.backend,
                url,
                lease,
            })
        }
        other => {
            let guess = crate::diagnostic::did_you_mean(other, ["local", "postgres"]);
            problems.push(
                Code::UnknownBackend
                    .diagnostic(format!("`{other}` is not a state backend"))
                    .at(source, &at.key("backend"))
                    .hint(match guess {
                        Some(guess) => {
                            format!("did you mean `{guess}`? (backends: local, postgres)")
                        }
                        None => {
                            "backends: local (`.runbook/` beside the runbook), postgres".to_owned()
                        }
                    }),
            );
            None
        }
    }
}

/// A URL that is read from the environment, or a postgres URL without a
/// password written into the runbook.
fn check_url(source: &Arc<Source>, url: &str, at: &ValuePath, problems: &mut Diagnostics) {
    let parts = regex::Regex::new(r"\$\{\{\s*(env|secrets)\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
        .expect("a valid pattern");
    let other = regex::Regex::new(r"\$\{\{[^}]*\}\}").expect("a valid pattern");
    let without = parts.replace_all(url, "x");
    if other.is_match(&without) {
        problems.push(
            Code::StateUrl
                .diagnostic("`state.url` may read only `${{ env.NAME }}` and `${{ secrets.NAME }}`")
                .at(source, at)
                .hint("the host reads them from the operator's environment before anything runs"),
        );
        return;
    }
    if parts.is_match(url) && !url.starts_with("postgres") {
        // The whole URL (or its start) comes from the environment.
        return;
    }
    match url::Url::parse(&without) {
        Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
            if parsed.password().is_some_and(|password| password != "x") {
                problems.push(
                    Code::StateUrl
                        .diagnostic("`state.url` holds a password")
                        .at(source, at)
                        .hint("read it like a secret: postgres://user:${{ secrets.STATE_PASSWORD }}@host/db, or the whole URL from ${{ env.NAME }}"),
                );
            }
        }
        _ => problems.push(
            Code::StateUrl
                .diagnostic(format!("`{url}` is not a postgres:// URL"))
                .at(source, at)
                .hint("postgres://user@host:5432/database, or \"${{ env.RUNBOOK_STATE_URL }}\""),
        ),
    }
}
