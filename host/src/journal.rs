//! The durable journal of a run: the run's events as JSON lines in
//! `.runbook/runs/RUN/events.jsonl`, each state change (run and step
//! boundaries, rollbacks, confirmations, approvals) flushed and fsync'd
//! before the run moves on. Reading it back gives what `resume` needs; a
//! last line cut short by a crash is dropped, not fatal.

use crate::events::{Event, EventKind, EventWriter, Status};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends events to the journal, fsync'ing state changes.
pub struct Journal {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    failed: bool,
    /// Steps running that are not idempotent: their start and end must be
    /// on disk before the run goes on.
    unrepeatable: std::collections::BTreeSet<String>,
}

impl Journal {
    /// Opens (or creates) a run's journal for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        drop_torn_tail(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Journal {
            file: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            failed: false,
            unrepeatable: std::collections::BTreeSet::new(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

/// Cuts a last line that a crash left without its newline: it was never
/// durable, and appending after it would glue the next record to it.
fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |index| index + 1);
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()
}

/// Whether an event must be on disk before the run goes on. A step that
/// is not idempotent must be known to have started (so a crash leaves it
/// "interrupted", for the operator to decide) and known to have finished
/// (so it never runs twice). An idempotent step may be repeated after a
/// crash, so its events ride along with the next fsync. Each fsync makes
/// every earlier line durable too, as the file is only appended to.
fn must_sync(unrepeatable: &mut std::collections::BTreeSet<String>, event: &Event) -> bool {
    let step = event
        .step
        .as_ref()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    match &event.kind {
        EventKind::Log { .. }
        | EventKind::Progress { .. }
        | EventKind::Http { .. }
        | EventKind::Aws { .. }
        | EventKind::Kube { .. }
        | EventKind::FileOpened { .. }
        | EventKind::SecretUsed { .. }
        | EventKind::Denied { .. }
        | EventKind::HeldBack { .. }
        | EventKind::StepRetry { .. } => false,
        EventKind::StepStarted { idempotent, .. } => {
            if *idempotent {
                false
            } else {
                unrepeatable.insert(step);
                true
            }
        }
        EventKind::StepFinished { .. } => unrepeatable.remove(&step),
        _ => true,
    }
}

impl EventWriter for Journal {
    fn write(&mut self, event: &Event, line: &str) {
        let sync = must_sync(&mut self.unrepeatable, event);
        let written =
            writeln!(self.file, "{line}").and_then(|()| if sync { self.sync() } else { Ok(()) });
        if let Err(error) = written
            && !self.failed
        {
            self.failed = true;
            eprintln!(
                "error: cannot write the run journal {}: {error}",
                self.path.display()
            );
        }
    }

    fn finish(&mut self) {
        let _ = self.sync();
    }
}

/// One step as the journal remembers it.
#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    /// Started and not finished: the process died while it ran.
    pub interrupted: bool,
    /// How it ended, when it did.
    pub status: Option<Status>,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// One line.
    pub summary: String,
    /// Undone by a rollback.
    pub rolled_back: bool,
}

/// Everything the journal says about a run.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// The runbook file, as given when the run started.
    pub file: String,
    /// The runbook's name.
    pub runbook: String,
    /// The environment.
    pub environment: Option<String>,
    /// Who started it.
    pub operator: String,
    /// Parameter values.
    pub params: BTreeMap<String, String>,
    /// When it started.
    pub started: String,
    /// The fingerprint of what runs (approvals are bound to it).
    pub plan_hash: Option<String>,
    /// Steps by id, in the order they first appear.
    pub steps: BTreeMap<String, StepRecord>,
    /// Step ids in the order they started.
    pub order: Vec<String>,
    /// How the last process of the run ended, if it did.
    pub finished: Option<Status>,
    /// Whether a rollback started.
    pub rolled_back: bool,
    /// Manual steps confirmed: step -> who.
    pub confirmations: BTreeMap<String, String>,
    /// Approvals: who, and the plan hash they approved.
    pub approvals: Vec<(String, String)>,
    /// Every event, for `show` and `logs`.
    pub events: Vec<serde_json::Value>,
    /// A last line cut short was dropped.
    pub recovered_truncation: bool,
    /// The audit log's record count and head hash when the run last ended.
    pub audit_head: Option<(u64, String)>,
}

/// Why a journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// No such file.
    #[error("cannot read the journal {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line other than the last is not an event.
    #[error("the journal {path} is damaged at line {line}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The journal does not start with `run_started`.
    #[error(
        "the run never started: its journal {0} has no run_started record (the process stopped before the run began); start a new run with `runbook exec`"
    )]
    NoStart(PathBuf),
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    time: String,
    #[serde(flatten)]
    rest: serde_json::Value,
}

/// Reads a run's journal.
pub fn read(path: &Path) -> Result<RunRecord, JournalError> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut record = RunRecord::default();
    let lines: Vec<&str> = text.split('\n').collect();
    let last_index = lines
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .unwrap_or(0);
    let mut saw_start = false;
    for (position, raw) in lines.iter().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = match serde_json::from_str(raw) {
            Ok(line) => line,
            Err(error) => {
                let cut_short = position == last_index && !text.ends_with('\n');
                if cut_short || position == last_index {
                    record.recovered_truncation = true;
                    continue;
                }
                return Err(JournalError::Damaged {
                    path: path.to_path_buf(),
                    line: position + 1,
                    reason: error.to_string(),
                });
            }
        };
        let value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
        record.events.push(value);
        let kind = line
            .rest
            .get("event")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let get = |key: &str| line.rest.get(key).cloned().unwrap_or_default();
        let text_of = |key: &str| get(key).as_str().unwrap_or_default().to_owned();
        match (kind, line.step) {
            ("run_started", _) => {
                saw_start = true;
                record.run_id = text_of("run_id");
                record.file = text_of("file");
                record.runbook = text_of("runbook");
                record.environment = get("environment").as_str().map(str::to_owned);
                record.operator = text_of("operator");
                record.params = serde_json::from_value(get("params")).unwrap_or_default();
                record.started = line.time;
                record.plan_hash = get("plan_hash").as_str().map(str::to_owned);
            }
            ("run_resumed", _) => {
                record.finished = None;
                if let Some(hash) = get("plan_hash").as_str() {
                    record.plan_hash = Some(hash.to_owned());
                }
                // `--skip STEP`: the operator found it took effect.
                let skipped: Vec<String> = serde_json::from_value(get("skip")).unwrap_or_default();
                for step in skipped {
                    let entry = record.steps.entry(step).or_default();
                    entry.interrupted = false;
                    entry.status = Some(Status::Succeeded);
                    entry.summary = "marked done by the operator on resume".into();
                }
            }
            ("step_started", Some(step)) => {
                if !record.steps.contains_key(&step) {
                    record.order.push(step.clone());
                }
                let entry = record.steps.entry(step).or_default();
                entry.interrupted = true;
                entry.status = None;
            }
            ("step_finished", Some(step)) => {
                if !record.steps.contains_key(&step) {
                    record.order.push(step.clone());
                }
                let entry = record.steps.entry(step).or_default();
                entry.interrupted = false;
                entry.status = serde_json::from_value(get("status")).ok();
                entry.outputs = serde_json::from_value(get("outputs")).unwrap_or_default();
                entry.summary = text_of("summary");
            }
            ("step_rolled_back", Some(step)) => {
                if let Some(entry) = record.steps.get_mut(&step) {
                    entry.rolled_back = get("status").as_str() == Some("rolled_back");
                }
            }
            ("rollback_started", _) => record.rolled_back = true,
            ("confirmed", Some(step)) => {
                record.confirmations.insert(step, text_of("by"));
            }
            ("approved", _) => record.approvals.push((text_of("by"), text_of("plan_hash"))),
            ("audit_head", _) => {
                record.audit_head = Some((get("records").as_u64().unwrap_or(0), text_of("hash")));
            }
            ("run_finished", _) => record.finished = serde_json::from_value(get("status")).ok(),
            _ => {}
        }
    }
    if !saw_start {
        return Err(JournalError::NoStart(path.to_path_buf()));
    }
    Ok(record)
}

/// Appends one event to a run's journal from another process (`approve`,
/// `confirm`), durably.
pub fn append(path: &Path, step: Option<&str>, kind: EventKind) -> std::io::Result<()> {
    let event = Event {
        time: jiff::Timestamp::now().to_string(),
        step: step.map(|id| crate::runbook::StepId(id.to_owned())),
        kind,
    };
    let line = serde_json::to_string(&event).map_err(std::io::Error::other)?;
    let mut journal = Journal::open(path)?;
    writeln!(journal.file, "{line}")?;
    journal.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"time":"2026-11-22T10:00:00Z","event":"run_started","run_id":"r1","runbook":"x","file":"x.toml","environment":"staging","operator":"alice","params":{"version":"1.2.3"},"steps":2}"#;

    fn write(lines: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, lines).unwrap();
        (dir, path)
    }

    #[test]
    fn a_step_started_but_not_finished_is_interrupted() {
        let (_dir, path) = write(&format!(
            "{START}\n{}\n{}\n{}\n",
            r#"{"time":"t","step":"a","event":"step_started","name":"a","plugin":"noop","digest":"d"}"#,
            r#"{"time":"t","step":"a","event":"step_finished","status":"succeeded","summary":"ok","outputs":{"k":"v"},"elapsed_ms":1.0}"#,
            r#"{"time":"t","step":"b","event":"step_started","name":"b","plugin":"noop","digest":"d"}"#,
        ));
        let record = read(&path).unwrap();
        assert_eq!(record.params["version"], "1.2.3");
        assert_eq!(record.steps["a"].status, Some(Status::Succeeded));
        assert_eq!(record.steps["a"].outputs["k"], "v");
        assert!(record.steps["b"].interrupted);
        assert_eq!(record.finished, None);
    }

    #[test]
    fn a_last_line_cut_short_by_a_crash_is_dropped() {
        let (_dir, path) = write(&format!(
            "{START}\n{{\"time\":\"t\",\"step\":\"a\",\"event\":\"step_fin"
        ));
        let record = read(&path).unwrap();
        assert!(record.recovered_truncation);
        assert!(record.steps.is_empty());
    }

    #[test]
    fn appending_after_a_crash_first_cuts_the_torn_line() {
        let (_dir, path) = write(&format!(
            "{START}\n{{\"time\":\"t\",\"step\":\"a\",\"event\":\"step_fin"
        ));
        append(
            &path,
            None,
            EventKind::Approved {
                by: "bob".into(),
                plan_hash: "h".into(),
            },
        )
        .unwrap();
        let record = read(&path).unwrap();
        assert!(!record.recovered_truncation);
        assert_eq!(record.approvals, [("bob".to_owned(), "h".to_owned())]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error() {
        let (_dir, path) = write(&format!("{START}\nnot json\n{START}\n"));
        assert!(matches!(
            read(&path),
            Err(JournalError::Damaged { line: 2, .. })
        ));
    }
}
