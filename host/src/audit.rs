//! The audit log: every capability call of a run (HTTP, secret use,
//! denials), every rollback and the promotion gate (which run satisfied
//! it, or the emergency that overrode it), as JSON lines in
//! `.runbook/runs/RUN/audit.jsonl`, each carrying the hash of the one
//! before, so that `runbook audit verify RUN` detects any edit, deletion or
//! reordering. The head hash and count also go into the journal when the
//! run ends, which catches a log cut short.

use crate::events::{Decision, Event, EventKind, EventWriter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When.
    pub time: String,
    /// The run.
    pub run_id: String,
    /// The step, if any.
    pub step: Option<String>,
    /// The sha256 of the step's plugin.
    pub plugin_digest: Option<String>,
    /// `http`, `secrets`, `kube`, `aws`, `rollback`, `promotion`.
    pub capability: String,
    /// What was asked, as the operator would write it.
    pub request: String,
    /// Allowed or denied (rollbacks: allowed).
    pub decision: Decision,
    /// The grant that decided it, when one allowed it.
    pub grant: Option<String>,
    /// Status, reason or result.
    pub detail: Option<String>,
    /// The hash of the previous record (of the run id for the first).
    pub prev: String,
    /// sha256 of this record without `hash`.
    pub hash: String,
}

/// The chain's state, shared so the journal can record the head at the end.
#[derive(Debug, Clone, Default)]
pub struct AuditHead {
    inner: Arc<Mutex<(u64, String)>>,
}

impl AuditHead {
    /// Records written and the hash of the last one.
    pub fn get(&self) -> (u64, String) {
        self.inner
            .lock()
            .map(|head| head.clone())
            .unwrap_or_default()
    }
}

/// Writes the audit log.
pub struct AuditLog {
    /// Written a record at a time, so a killed process loses none.
    file: std::fs::File,
    path: PathBuf,
    /// The first failed write or sync: the log then takes no more records
    /// (a gap would break the chain) and the run stops.
    failure: Option<String>,
    /// Records written since the last sync.
    unsynced: bool,
    run_id: String,
    digests: BTreeMap<String, String>,
    head: AuditHead,
    /// Where each line also goes: a shared state backend's
    /// `state::remote::Mirror`.
    tee: Option<Arc<Mutex<Vec<String>>>>,
}

/// The hash the chain starts from.
pub fn genesis(run_id: &str) -> String {
    hex::encode(Sha256::digest(format!("runbook audit log of run {run_id}")))
}

fn hash_of(record: &AuditRecord) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    let text = serde_json::to_string(&unhashed).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl AuditLog {
    /// Records that the calls of `step` come from the plugin with this
    /// digest: for callers that start no step (a `[notify]` target), whose
    /// digest no `step_started` carries.
    pub fn know_digest(&mut self, step: &str, digest: &str) {
        self.digests.insert(step.to_owned(), digest.to_owned());
    }

    /// Hands each line written from now on to a shared buffer as well.
    pub fn tee(&mut self) -> Arc<Mutex<Vec<String>>> {
        self.tee.get_or_insert_with(Default::default).clone()
    }

    /// Opens a run's audit log, continuing its chain if it exists (resume).
    pub fn open(path: &Path, run_id: &str) -> std::io::Result<(Self, AuditHead)> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A record torn by a crash was never part of the chain.
        crate::jsonl::drop_torn_tail(path)?;
        let mut head = (0, genesis(run_id));
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                if let Ok(record) = serde_json::from_str::<AuditRecord>(line) {
                    head = (record.seq + 1, record.hash);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let head = AuditHead {
            inner: Arc::new(Mutex::new(head)),
        };
        Ok((
            AuditLog {
                file,
                path: path.to_path_buf(),
                failure: None,
                unsynced: false,
                run_id: run_id.to_owned(),
                digests: BTreeMap::new(),
                head: head.clone(),
                tee: None,
            },
            head,
        ))
    }

    fn append(
        &mut self,
        event: &Event,
        capability: &str,
        request: String,
        decision: Decision,
        grant: Option<String>,
        detail: Option<String>,
    ) {
        if self.failure.is_some() {
            return;
        }
        let Ok(mut head) = self.head.inner.lock() else {
            return;
        };
        let step = event.step.as_ref().map(|id| id.0.clone());
        let mut record = AuditRecord {
            seq: head.0,
            time: event.time.clone(),
            run_id: self.run_id.clone(),
            plugin_digest: step
                .as_ref()
                .and_then(|step| self.digests.get(step).cloned()),
            step,
            capability: capability.to_owned(),
            request,
            decision,
            grant,
            detail,
            prev: head.1.clone(),
            hash: String::new(),
        };
        record.hash = hash_of(&record);
        let mut line = serde_json::to_string(&record).unwrap_or_default();
        line.push('\n');
        let written =
            crate::fault::point("audit.write").and_then(|()| self.file.write_all(line.as_bytes()));
        match written {
            Ok(()) => {
                *head = (record.seq + 1, record.hash);
                self.unsynced = true;
                if let Some(tee) = &self.tee {
                    tee.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line.trim_end().to_owned());
                }
            }
            Err(error) => {
                self.failure = Some(format!(
                    "cannot write the audit log {}: {error}",
                    self.path.display()
                ));
            }
        }
    }
}

impl EventWriter for AuditLog {
    fn write(&mut self, event: &Event, _line: &str) {
        match &event.kind {
            EventKind::StepStarted { digest, .. } => {
                if let Some(step) = &event.step {
                    self.digests.insert(step.0.clone(), digest.clone());
                }
            }
            EventKind::CapabilityCall {
                capability,
                requested,
                decision,
                grant,
                outcome,
                dry_run,
                ..
            } => self.append(
                event,
                capability,
                requested.clone(),
                *decision,
                grant.clone(),
                Some(if *dry_run && *decision == Decision::Allowed {
                    format!("{outcome} (dry run)")
                } else {
                    outcome.clone()
                }),
            ),
            EventKind::PromotionChecked {
                requires,
                satisfied_by,
                detail,
                overridden,
                ..
            } => self.append(
                event,
                "promotion",
                requires.clone(),
                Decision::Allowed,
                match (satisfied_by, overridden) {
                    (Some(run_id), _) => Some(format!("run {run_id}")),
                    (None, Some(reason)) => Some(format!("--emergency: {reason}")),
                    (None, None) => None,
                },
                Some(detail.clone()),
            ),
            EventKind::Decided {
                choice,
                by,
                how,
                note,
            } => self.append(
                event,
                "decision",
                format!("{} the failed step", choice.as_str()),
                Decision::Allowed,
                Some(format!("on_failure = \"ask\", by {by} ({how})")),
                Some(if note.is_empty() {
                    choice.as_str().to_owned()
                } else {
                    format!("{}: {note}", choice.as_str())
                }),
            ),
            EventKind::StepRolledBack { status, summary } => self.append(
                event,
                "rollback",
                "rollback".to_owned(),
                Decision::Allowed,
                None,
                Some(format!("{}: {summary}", status.as_str())),
            ),
            _ => {}
        }
    }

    fn finish(&mut self) {
        let _ = self.sync();
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if let Some(failure) = &self.failure {
            return Err(std::io::Error::other(failure.clone()));
        }
        if !self.unsynced {
            return Ok(());
        }
        let synced = crate::fault::point("audit.sync").and_then(|()| self.file.sync_data());
        if synced.is_ok() {
            self.unsynced = false;
        }
        if let Err(error) = &synced {
            self.failure = Some(format!(
                "cannot write the audit log {}: {error}",
                self.path.display()
            ));
        }
        synced
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn is_record(&self) -> bool {
        true
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tampered {
    /// A line is not a record.
    #[error("line {line} is not an audit record: {reason}")]
    Unreadable {
        /// 1-based.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A record's content does not match its hash: edited.
    #[error("record {seq} (line {line}) was edited: its hash does not match its content")]
    Edited {
        /// Its sequence number.
        seq: u64,
        /// 1-based.
        line: usize,
    },
    /// A record does not follow the one before: deleted, inserted or reordered.
    #[error(
        "record {seq} (line {line}) does not follow the record before it: records were deleted, inserted or reordered"
    )]
    Broken {
        /// Its sequence number.
        seq: u64,
        /// 1-based.
        line: usize,
    },
    /// The log has records after the run's last process ended.
    #[error(
        "the log has {found} records but the run ended with {expected}: records were appended after the run ended"
    )]
    Appended {
        /// Records in the file.
        found: u64,
        /// Records the journal says were written.
        expected: u64,
    },
    /// The chain up to a recorded head is not the one the run wrote.
    #[error("the first {at} records are not the ones the run recorded: the log was rewritten")]
    Rewritten {
        /// The head's record count.
        at: u64,
    },
    /// The log ends before the head the journal recorded.
    #[error(
        "the log has {found} records but the run recorded {expected} when it ended: records were removed from the end"
    )]
    Truncated {
        /// Records in the file.
        found: u64,
        /// Records the journal says were written.
        expected: u64,
    },
}

/// What the journal says of the audit log: the (count, head hash) each
/// process of the run recorded when it ended, oldest first, and whether
/// the last process ended there (nothing ran after its head was
/// recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    /// Heads, oldest first.
    pub heads: Vec<(u64, String)>,
    /// The last head is the end of the log: the run's last process ended
    /// cleanly, so no record may follow it.
    pub closed: bool,
}

/// Checks the chain, and holds it against every head the journal
/// recorded: a record cut from the end, or appended after the run's last
/// process ended, is found. Returns the number of records.
pub fn verify(path: &Path, run_id: &str, anchors: &Anchors) -> Result<u64, Tampered> {
    let bytes = std::fs::read(path).unwrap_or_default();
    // What a crash left at the end was never part of the chain (the next
    // process of the run cuts it); a head recorded past it still fails.
    let text = String::from_utf8_lossy(&bytes[..crate::jsonl::intact_length(&bytes)]);
    let mut previous = genesis(run_id);
    let mut count = 0;
    // The hash after each record count, to hold the heads against.
    let mut chain = vec![previous.clone()];
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let record: AuditRecord =
            serde_json::from_str(line).map_err(|error| Tampered::Unreadable {
                line: index + 1,
                reason: error.to_string(),
            })?;
        if hash_of(&record) != record.hash {
            return Err(Tampered::Edited {
                seq: record.seq,
                line: index + 1,
            });
        }
        if record.prev != previous || record.seq != count {
            return Err(Tampered::Broken {
                seq: record.seq,
                line: index + 1,
            });
        }
        previous = record.hash;
        count += 1;
        chain.push(previous.clone());
    }
    for (expected_count, expected_head) in &anchors.heads {
        let at = usize::try_from(*expected_count).unwrap_or(usize::MAX);
        match chain.get(at) {
            None => {
                return Err(Tampered::Truncated {
                    found: count,
                    expected: *expected_count,
                });
            }
            Some(hash) if hash != expected_head => {
                return Err(Tampered::Rewritten {
                    at: *expected_count,
                });
            }
            Some(_) => {}
        }
    }
    if anchors.closed
        && let Some((expected_count, _)) = anchors.heads.last()
        && count > *expected_count
    {
        return Err(Tampered::Appended {
            found: count,
            expected: *expected_count,
        });
    }
    Ok(count)
}

/// Every record of a run's audit log.
pub fn read(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A run's audit log.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("audit.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::StepId;

    fn event(step: &str, kind: EventKind) -> Event {
        Event {
            time: "2026-11-22T10:00:00Z".into(),
            step: Some(StepId(step.into())),
            kind,
        }
    }

    fn http(url: &str, decision: Decision) -> EventKind {
        EventKind::CapabilityCall {
            capability: "http".into(),
            requested: format!("GET {url}"),
            decision,
            grant: Some("http://h".into()),
            outcome: "200".into(),
            ok: true,
            dry_run: false,
            duration_ms: 1.0,
        }
    }

    fn write_log() -> (tempfile::TempDir, PathBuf, (u64, String)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (mut log, head) = AuditLog::open(&path, "r1").unwrap();
        log.write(
            &event(
                "a",
                EventKind::StepStarted {
                    name: "a".into(),
                    plugin: "p".into(),
                    digest: "d1".into(),
                    idempotent: true,
                },
            ),
            "",
        );
        for index in 0..4 {
            log.write(
                &event("a", http(&format!("http://h/{index}"), Decision::Allowed)),
                "",
            );
        }
        log.write(&event("a", http("http://evil/", Decision::Denied)), "");
        log.finish();
        (dir, path, head.get())
    }

    fn anchored(head: (u64, String)) -> Anchors {
        Anchors {
            heads: vec![head],
            closed: true,
        }
    }

    #[test]
    fn records_appended_after_the_run_ended_are_detected() {
        let (_dir, path, head) = write_log();
        // Recompute a valid record after the end, as a forger would.
        let (mut log, _) = AuditLog::open(&path, "r1").unwrap();
        log.write(&event("a", http("http://h/late", Decision::Allowed)), "");
        log.finish();
        assert_eq!(
            verify(&path, "r1", &anchored(head.clone())),
            Err(Tampered::Appended {
                found: 6,
                expected: 5
            })
        );
        // A run whose last process died after its head may have more.
        let open = Anchors {
            heads: vec![head],
            closed: false,
        };
        assert_eq!(verify(&path, "r1", &open), Ok(6));
    }

    #[test]
    fn a_record_torn_by_a_crash_is_not_tampering() {
        let (_dir, path, head) = write_log();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":5,\"time\":\"2026-");
        std::fs::write(&path, text).unwrap();
        let open = Anchors {
            heads: vec![head],
            closed: false,
        };
        assert_eq!(verify(&path, "r1", &open), Ok(5));
    }

    #[test]
    fn an_untouched_log_verifies_and_records_the_plugin_digest() {
        let (_dir, path, head) = write_log();
        assert_eq!(verify(&path, "r1", &anchored(head)), Ok(5));
        assert_eq!(read(&path)[0].plugin_digest.as_deref(), Some("d1"));
        assert_eq!(read(&path)[4].decision, Decision::Denied);
    }

    #[test]
    fn an_edited_record_is_detected() {
        let (_dir, path, head) = write_log();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("http://evil/", "http://fine/");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            verify(&path, "r1", &anchored(head)),
            Err(Tampered::Edited { seq: 4, .. })
        ));
    }

    #[test]
    fn a_deleted_record_is_detected() {
        let (_dir, path, head) = write_log();
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let kept: Vec<String> = lines
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != 2)
            .map(|(_, line)| line.clone())
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path, "r1", &anchored(head)),
            Err(Tampered::Broken { seq: 3, .. })
        ));
    }

    #[test]
    fn reordered_records_are_detected() {
        let (_dir, path, head) = write_log();
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.swap(1, 2);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path, "r1", &anchored(head)),
            Err(Tampered::Broken { .. })
        ));
    }

    #[test]
    fn records_cut_from_the_end_are_detected_against_the_journal() {
        let (_dir, path, head) = write_log();
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        assert_eq!(
            verify(&path, "r1", &anchored(head)),
            Err(Tampered::Truncated {
                found: 3,
                expected: 5
            })
        );
    }
}
