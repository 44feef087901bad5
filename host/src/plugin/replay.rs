//! `runbook plugin test`: a plugin's exports run against a cassette, the
//! host answering every capability call from it
//! ([`crate::capability::tape`]), and what the plugin returns compared
//! with what it returned when the cassette was recorded.
//!
//! The step gets exactly the cassette's grants and parameters; its secrets
//! are stand-ins (a handle stays a handle, and no value was ever kept), so
//! the grant checks and the unsealing run as in a real run. Nothing
//! reaches the network, a program, the cloud or a cluster: a call the
//! cassette does not hold fails, naming it and the closest call it does
//! hold.

use super::{LoadedPlugin, PluginRuntime, ended, ended_run};
use crate::capability::RunAccess;
use crate::capability::secrets::SecretStore;
use crate::capability::tape::{self, Cassette, Ended, Export, Replay, Tape};
use crate::events::EventSink;
use crate::grant::StepId;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long each export call may take in a replay.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The step the cassette was recorded for.
    pub step: String,
    /// The plugin replayed (its name and version).
    pub plugin: String,
    /// Each export call, in order.
    pub calls: Vec<CallReplayed>,
    /// Whether every call answered as recorded.
    pub passed: bool,
}

/// One export call of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct CallReplayed {
    /// Which export.
    pub export: Export,
    /// How many host calls the cassette expected of it.
    pub expected_calls: usize,
    /// What the cassette says it returned, when it holds the call.
    pub expected: Option<Ended>,
    /// What it returned now.
    pub got: Ended,
    /// What differs, in words: calls not held, calls not made, results.
    pub problems: Vec<String>,
}

impl CallReplayed {
    /// Whether it answered as recorded.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Which exports a replay runs when none are asked for: `run`, and
/// `rollback` when the cassette holds one.
pub fn default_exports(cassette: &Cassette) -> Vec<Export> {
    let mut exports = vec![Export::Run];
    if cassette
        .calls
        .iter()
        .any(|call| call.export == Export::Rollback)
    {
        exports.push(Export::Rollback);
    }
    exports
}

/// Runs `exports` of `plugin` against `cassette` (each call of them the
/// cassette holds, in order; `check` and `plan` once with no host calls
/// when it holds none), each within `timeout`. `Err` when the cassette
/// cannot be replayed at all (its grants or a kept request unreadable).
pub async fn replay(
    runtime: &PluginRuntime,
    plugin: &LoadedPlugin,
    cassette: &Cassette,
    exports: &[Export],
    timeout: Duration,
) -> Result<Replayed, String> {
    let mut grants = cassette.grants.to_grants()?;
    // A granted folder recorded on another machine: the one the runbook
    // names, beside the cassette (where the recording runbook sits).
    if let Some(folder) = &cassette.folder {
        for grant in &mut grants.fs_read {
            if !grant.host.exists() {
                let beside = folder.join(&grant.written);
                if let Ok(found) = beside.canonicalize() {
                    grant.host = found;
                }
            }
        }
    }
    // Stand-ins: the plugin holds handles, and what it is given back
    // passes the redactor as in a run.
    let secrets = SecretStore::new(
        grants
            .secrets
            .iter()
            .map(|name| (name.clone(), format!("replayed-secret-{name}")))
            .collect(),
    );
    let redactor = secrets.redactor();
    let events = EventSink::new();
    events.set_redactor(redactor.clone());
    let params = cassette.params_for(&secrets);
    let memory = crate::runbook::DEFAULT_MEMORY;
    let mut calls = Vec::new();
    for &export in exports {
        let kept: Vec<_> = cassette
            .calls
            .iter()
            .filter(|call| call.export == export)
            .collect();
        if kept.is_empty() && matches!(export, Export::Run | Export::Rollback) {
            calls.push(CallReplayed {
                export,
                expected_calls: 0,
                expected: None,
                got: Ended::Crashed("not called".into()),
                problems: vec![format!(
                    "the cassette holds no `{}` call to replay",
                    export.name()
                )],
            });
            continue;
        }
        let unrecorded = [None];
        let entries: Vec<Option<&tape::CallRecord>> = if kept.is_empty() {
            unrecorded.to_vec()
        } else {
            kept.into_iter().map(Some).collect()
        };
        for entry in entries {
            let host_calls = entry
                .map(|entry| entry.host_calls.as_slice())
                .unwrap_or(&[]);
            let clock = entry.map(|entry| entry.clock.clone()).unwrap_or_default();
            let replay = Arc::new(Replay::new(host_calls)?.with_clock(clock));
            let access = RunAccess {
                secrets: secrets.clone(),
                redactor: redactor.clone(),
                events: events.clone(),
                http: runtime.http_client(),
                aws: None,
                kube: None,
                command: None,
                tape: Tape::Replay(Arc::clone(&replay)),
            };
            let context = Arc::new(access.for_step(
                StepId(cassette.step.clone()),
                grants.clone(),
                tokio::time::Instant::now() + timeout,
                &CancellationToken::new(),
                export == Export::Plan,
                Default::default(),
            ));
            let got = match export {
                Export::Check => ended(&runtime.check(plugin, context, &params).await, |()| {
                    Ended::Checked
                }),
                Export::Plan => ended(
                    &runtime.plan(plugin, context, memory, &params).await,
                    |actions| {
                        Ended::Planned(
                            actions
                                .iter()
                                .map(|action| tape::PlannedRecord {
                                    description: action.description.clone(),
                                    mutates: action.mutates,
                                })
                                .collect(),
                        )
                    },
                ),
                Export::Run => {
                    let state = entry
                        .and_then(|entry| entry.state.as_deref())
                        .map(|state| tape::with_nonces(state, &secrets));
                    ended(
                        &runtime
                            .run(plugin, context, memory, &params, state.as_deref())
                            .await,
                        ended_run,
                    )
                }
                Export::Rollback => {
                    let outputs = entry
                        .and_then(|entry| entry.outputs.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, tape::with_nonces(&value, &secrets)))
                        .collect();
                    ended(
                        &runtime
                            .rollback(plugin, context, memory, &params, outputs)
                            .await,
                        |summary| Ended::RolledBack {
                            summary: summary.clone(),
                        },
                    )
                }
            };
            let got = sealed(&got, &redactor);
            let mut problems = replay.problems();
            match entry {
                Some(entry) => problems.extend(differences(&entry.result, &got)),
                None => {
                    if matches!(got, Ended::Error(_) | Ended::Crashed(_)) {
                        problems.push(format!("`{}` failed: {}", export.name(), describe(&got)));
                    }
                }
            }
            calls.push(CallReplayed {
                export,
                expected_calls: host_calls.len(),
                expected: entry.map(|entry| entry.result.clone()),
                got,
                problems,
            });
        }
    }
    Ok(Replayed {
        step: cassette.step.clone(),
        plugin: format!("{} {}", plugin.descriptor.name, plugin.descriptor.version),
        passed: calls.iter().all(CallReplayed::passed),
        calls,
    })
}

/// A result as a cassette would keep it: redacted, handles without nonces.
fn sealed(ended: &Ended, redactor: &crate::redact::Redactor) -> Ended {
    let text = serde_json::to_string(ended).unwrap_or_default();
    let text = tape::without_nonces(&redactor.apply(&text));
    serde_json::from_str(&text).unwrap_or_else(|_| ended.clone())
}

/// A result in words.
pub fn describe(ended: &Ended) -> String {
    match ended {
        Ended::Checked => "check passed".into(),
        Ended::Planned(actions) => format!("{} planned action(s)", actions.len()),
        Ended::Done { summary, .. } => format!("done: {summary}"),
        Ended::Wait {
            status, after_ms, ..
        } => format!("wait {after_ms} ms: {status}"),
        Ended::RolledBack { summary } => format!("rolled back: {summary}"),
        Ended::Error(error) => {
            let error: crate::wit::PluginError = error.clone().into();
            format!("error: {}", error.describe())
        }
        Ended::Crashed(why) => format!("crashed: {why}"),
    }
}

/// What differs between the recorded result and the replayed one, one
/// line each: every output added, lost or changed, the summary, or the
/// whole result when its kind changed.
pub fn differences(expected: &Ended, got: &Ended) -> Vec<String> {
    if expected == got {
        return Vec::new();
    }
    match (expected, got) {
        (
            Ended::Done {
                outputs: expected_outputs,
                summary: expected_summary,
            },
            Ended::Done {
                outputs: got_outputs,
                summary: got_summary,
            },
        ) => {
            let mut lines = Vec::new();
            for (key, value) in expected_outputs {
                match got_outputs.get(key) {
                    None => lines.push(format!("output `{key}`: expected {value:?}, not given")),
                    Some(got) if got != value => {
                        lines.push(format!("output `{key}`: expected {value:?}, got {got:?}"));
                    }
                    Some(_) => {}
                }
            }
            for (key, value) in got_outputs {
                if !expected_outputs.contains_key(key) {
                    lines.push(format!("output `{key}`: not expected, got {value:?}"));
                }
            }
            if expected_summary != got_summary {
                lines.push(format!(
                    "summary: expected {expected_summary:?}, got {got_summary:?}"
                ));
            }
            lines
        }
        _ => vec![format!(
            "result: expected {}, got {}",
            describe(expected),
            describe(got)
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn differences_name_each_output_and_the_summary() {
        let done = |pairs: &[(&str, &str)], summary: &str| Ended::Done {
            outputs: pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            summary: summary.into(),
        };
        let lines = differences(
            &done(&[("a", "1"), ("b", "2")], "ok"),
            &done(&[("a", "9"), ("c", "3")], "ok!"),
        );
        assert_eq!(
            lines,
            [
                "output `a`: expected \"1\", got \"9\"",
                "output `b`: expected \"2\", not given",
                "output `c`: not expected, got \"3\"",
                "summary: expected \"ok\", got \"ok!\"",
            ]
        );
        let failed = Ended::Error(tape::ErrorRecord::Failed {
            message: "expected status 200, got 503".into(),
        });
        let lines = differences(&done(&[], "ok"), &failed);
        assert_eq!(
            lines,
            ["result: expected done: ok, got error: expected status 200, got 503"]
        );
    }
}
