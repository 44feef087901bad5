//! The durable journal of a run: the run's events as JSON lines in
//! `.runbook/runs/RUN/events.jsonl`, each state change (run and step
//! boundaries, rollbacks, confirmations, approvals) flushed and fsync'd
//! before the run moves on. Reading it back gives what `resume` needs; a
//! last line cut short by a crash is dropped, not fatal.

use crate::events::{Event, EventKind, EventWriter, Status};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Appends events to the journal. Each line is written as it comes (a
/// killed process loses nothing it had written); the event sink syncs the
/// file after every event that must be durable
/// ([`crate::events::Durability`]). After the first failed write or sync
/// the journal writes nothing more, so that no later record can stand on
/// disk without an earlier one, and reports the failure: the run stops.
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    failure: Option<String>,
    /// Lines written since the last sync.
    unsynced: bool,
}

impl Journal {
    /// Opens (or creates) a run's journal for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::jsonl::drop_torn_tail(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            failure: None,
            unsynced: false,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append_line(&mut self, line: &str) -> std::io::Result<()> {
        crate::fault::point("journal.write")?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.unsynced = true;
        self.file.write_all(&bytes)
    }

    fn sync_file(&mut self) -> std::io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        crate::fault::point("journal.sync")?;
        self.file.sync_data()?;
        self.unsynced = false;
        crate::fault::point("journal.synced")
    }

    fn fail(&mut self, error: &std::io::Error) -> std::io::Error {
        if self.failure.is_none() {
            self.failure = Some(format!(
                "cannot write the run journal {}: {error}",
                self.path.display()
            ));
        }
        std::io::Error::new(error.kind(), self.failure.clone().unwrap_or_default())
    }
}

impl EventWriter for Journal {
    fn write(&mut self, _event: &Event, line: &str) {
        if self.failure.is_some() {
            return;
        }
        if let Err(error) = self.append_line(line) {
            self.fail(&error);
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if let Some(failure) = &self.failure {
            return Err(std::io::Error::other(failure.clone()));
        }
        self.sync_file().map_err(|error| self.fail(&error))
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn finish(&mut self) {
        let _ = self.sync();
    }

    fn is_record(&self) -> bool {
        true
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
    /// Whether its plugin said running it twice is harmless.
    pub idempotent: bool,
    /// Its place among the steps that succeeded, in the order they
    /// finished (a rollback undoes them backwards).
    pub order: Option<usize>,
    /// Its rollback started and did not end: the process died during it.
    pub rollback_interrupted: bool,
    /// How its rollback ended, if one ran.
    pub rollback_status: Option<Status>,
    /// Whether running its plugin's `rollback` twice is harmless.
    pub idempotent_rollback: bool,
    /// What it recorded for its rollback before changing anything: the
    /// first value of each key, across attempts and processes.
    pub checkpoints: BTreeMap<String, String>,
    /// Which process of the run (1 for the first) last finished it.
    pub finished_in: usize,
    /// Its last wait, while it is not done (`run` returned `wait`): the
    /// state a later call goes on from.
    pub wait: Option<WaitRecord>,
    /// It failed under `on_failure = "ask"` and waits for a person's
    /// choice (`runbook decide`).
    pub awaiting_decision: bool,
    /// What a person chose for its failure, until it starts again.
    pub decision: Option<crate::events::Choice>,
}

/// A step's wait as the journal remembers it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WaitRecord {
    /// How many times the step has waited.
    pub round: u32,
    /// Where it stands, in the plugin's words.
    pub status: String,
    /// When it is to be called again (RFC 3339).
    pub wake_at: String,
    /// The plugin's state for that call.
    pub state: String,
    /// Whether the run parked there (the process ended).
    pub parked: bool,
}

/// The run's announcements (`[notify]`) as the journal remembers them:
/// what a later process of the run must not announce again, and when the
/// last holding update went out, so that updates keep one pace however
/// many processes carry the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifiedRecord {
    /// The start was announced.
    pub started: bool,
    /// When the last holding update went out (RFC 3339).
    pub last_holding: Option<String>,
    /// The step the run was last announced waiting at (`""` for the run
    /// itself), when nothing but holding updates went out since.
    pub waiting: Option<String>,
}

/// A rollback as the journal remembers it.
#[derive(Debug, Clone, Default)]
pub struct RollbackRecord {
    /// Why it started.
    pub reason: String,
    /// The steps to undo, in order.
    pub steps: Vec<String>,
    /// Whether it undoes the whole run (the run is then over).
    pub whole_run: bool,
    /// Whether it reached its end.
    pub finished: bool,
}

/// `runbook rollback RUN` as the journal remembers it: who asked to undo
/// the run after it ended, and how.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RollbackRequest {
    /// Who asked.
    pub operator: String,
    /// When.
    pub time: String,
    /// The rollback's fingerprint, which its approvals carry.
    pub plan_hash: String,
    /// The steps to undo, newest first.
    pub steps: Vec<String>,
    /// Why, when asked with `--emergency`.
    pub emergency: Option<String>,
    /// The later run it went over with `--force`.
    pub forced_over: Option<String>,
}

/// An approval as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who: a signed approval's principal, else as `--as` said.
    pub by: String,
    /// The fingerprint approved.
    pub plan_hash: String,
    /// The approver's signature; `None` for an unsigned (`--as`) approval.
    pub signature: Option<crate::events::SignatureRecord>,
}

impl Approval {
    /// How it is shown: `bob (signed, SHA256:…)` or `bob (unsigned)`.
    pub fn label(&self) -> String {
        match &self.signature {
            Some(signature) => format!("{} (signed, {})", self.by, signature.key),
            None => format!("{} (unsigned)", self.by),
        }
    }
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
    /// Parameter values, as JSON of their types (strings in journals
    /// written before parameters had types).
    pub params: BTreeMap<String, serde_json::Value>,
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
    /// Whether a rollback of the whole run started.
    pub rolled_back: bool,
    /// The last rollback, whole or of interrupted steps.
    pub rollback: Option<RollbackRecord>,
    /// The step that ended the run, as the last `run_finished` said.
    pub failed_step: Option<String>,
    /// Manual steps confirmed: step -> who.
    pub confirmations: BTreeMap<String, String>,
    /// Approvals, in the order given.
    pub approvals: Vec<Approval>,
    /// The operator's signature of the plan the run (or its rollback asked
    /// after the end) carries out, when its environment requires one.
    pub operator_signature: Option<crate::events::SignatureRecord>,
    /// When the last `run_finished` was recorded.
    pub finished_at: String,
    /// Why, when it started as an emergency run (`--emergency`).
    pub emergency: Option<String>,
    /// Asked to be rolled back after it ended (`runbook rollback`).
    pub rollback_request: Option<RollbackRequest>,
    /// `runbook unlock` abandoned it: it can no longer be resumed.
    pub abandoned: bool,
    /// It parked before its first step until a gate opens (`run_waiting`):
    /// when, and why, in a wait's shape (no state).
    pub run_wait: Option<WaitRecord>,
    /// How many processes the run has had (`run_started`, then each
    /// `run_resumed`).
    pub processes: usize,
    /// What the run announced (`[notify]`).
    pub notified: NotifiedRecord,
    /// A last line cut short was dropped.
    pub recovered_truncation: bool,
    /// The audit log's record count and head hash each time a process
    /// of the run ended, and whether the last one ended cleanly.
    pub audit: crate::audit::Anchors,
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

impl RunRecord {
    /// The step the run is parked at and its wait, when the run ended
    /// waiting for a step that waits to be called again.
    /// `""` for a run parked before its first step (its deploy window).
    pub fn parked(&self) -> Option<(&str, &WaitRecord)> {
        if self.finished != Some(Status::Waiting) || self.abandoned {
            return None;
        }
        if let Some(wait) = &self.run_wait {
            return Some(("", wait));
        }
        self.waiting_step()
    }

    /// A step that waits to be called again, and its wait: parked, or
    /// left mid-wait by a process that died. A run that is over has none.
    pub fn waiting_step(&self) -> Option<(&str, &WaitRecord)> {
        if !self.may_go_on() {
            return None;
        }
        self.order.iter().find_map(|id| {
            let step = &self.steps[id];
            match (&step.wait, step.status) {
                (Some(wait), Some(Status::Waiting)) => Some((id.as_str(), wait)),
                (Some(wait), None) if step.interrupted => Some((id.as_str(), wait)),
                _ => None,
            }
        })
    }

    /// Whether the run stopped partway and may go on from where it stands:
    /// it waits, or its process died, and no rollback has begun.
    fn may_go_on(&self) -> bool {
        !self.abandoned
            && matches!(self.finished, None | Some(Status::Waiting))
            && self.rollback.is_none()
    }

    /// The failed step the run waits at for a person's choice (`on_failure
    /// = "ask"`), and why it failed: also when the process that was to
    /// carry out a choice died before recording it. A run that is over
    /// has none.
    pub fn awaiting_decision(&self) -> Option<(&str, &str)> {
        if !self.may_go_on() {
            return None;
        }
        self.order.iter().find_map(|id| {
            let step = &self.steps[id];
            (step.awaiting_decision && step.decision.is_none())
                .then_some((id.as_str(), step.summary.as_str()))
        })
    }

    /// Whether the approvals the run waits for now are the emergency ones:
    /// those of its rollback when one was asked for, else of its start.
    pub fn approving_as_emergency(&self) -> bool {
        match &self.rollback_request {
            Some(request) => request.emergency.is_some(),
            None => self.emergency.is_some(),
        }
    }
}

/// Reads a run's journal.
pub fn read(path: &Path) -> Result<RunRecord, JournalError> {
    replay(path, |_| ControlFlow::Continue(()))
}

/// Reads a run's journal a line at a time (never the whole file at once),
/// handing each event to `visit` in order (`show`, `logs`) until it
/// breaks, and returns what the journal says of the run. What a crash
/// left at the end (a line without its newline, damaged last lines) is
/// dropped, as [`Journal::open`] cuts it before the next append; damage
/// anywhere else is an error.
pub fn replay(
    path: &Path,
    mut visit: impl FnMut(&serde_json::Value) -> ControlFlow<()>,
) -> Result<RunRecord, JournalError> {
    let unreadable = |source| JournalError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(unreadable)?);
    let mut record = RunRecord::default();
    let mut saw_start = false;
    let mut finished_steps = 0;
    let mut visiting = true;
    let mut buffer = Vec::new();
    let mut position = 0;
    // The first line that is not a record: an error, unless only such
    // lines follow it.
    let mut damaged: Option<JournalError> = None;
    loop {
        buffer.clear();
        if std::io::BufRead::read_until(&mut reader, b'\n', &mut buffer).map_err(unreadable)? == 0 {
            break;
        }
        position += 1;
        let complete = buffer.ends_with(b"\n");
        let parsed = match std::str::from_utf8(&buffer) {
            Err(error) => Err(error.to_string()),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) if !complete => Err(format!("cut short: {}", text.len())),
            Ok(text) => {
                serde_json::from_str::<serde_json::Value>(text).map_err(|error| error.to_string())
            }
        };
        let value = match parsed {
            Ok(value) => value,
            Err(reason) => {
                damaged.get_or_insert(JournalError::Damaged {
                    path: path.to_path_buf(),
                    line: position,
                    reason,
                });
                continue;
            }
        };
        if let Some(error) = damaged.take() {
            return Err(error);
        }
        if visiting && visit(&value).is_break() {
            visiting = false;
        }
        let step = value
            .get("step")
            .and_then(|step| step.as_str())
            .map(str::to_owned);
        let time = value
            .get("time")
            .and_then(|time| time.as_str())
            .unwrap_or_default()
            .to_owned();
        let kind = value
            .get("event")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let get = |key: &str| value.get(key).cloned().unwrap_or_default();
        let text_of = |key: &str| get(key).as_str().unwrap_or_default().to_owned();
        // A process of the run began: the log may grow again until it
        // records its head.
        if matches!(kind, "run_started" | "run_resumed" | "rollback_requested") {
            record.audit.closed = false;
            record.processes += 1;
        }
        match (kind, step) {
            ("run_started", _) => {
                saw_start = true;
                record.run_id = text_of("run_id");
                record.file = text_of("file");
                record.runbook = text_of("runbook");
                record.environment = get("environment").as_str().map(str::to_owned);
                record.operator = text_of("operator");
                record.params = serde_json::from_value(get("params")).unwrap_or_default();
                record.started = time;
                record.emergency = get("emergency").as_str().map(str::to_owned);
                record.plan_hash = get("plan_hash").as_str().map(str::to_owned);
            }
            ("run_resumed", _) => {
                record.finished = None;
                record.run_wait = None;
                if let Some(hash) = get("plan_hash").as_str() {
                    record.plan_hash = Some(hash.to_owned());
                }
                // `--skip STEP`: the operator found it took effect.
                let skipped: Vec<String> = serde_json::from_value(get("skip")).unwrap_or_default();
                for step in skipped {
                    let entry = record.steps.entry(step).or_default();
                    if entry.rollback_interrupted {
                        // Its undo was in flight, and the operator found
                        // that it took effect.
                        entry.rollback_interrupted = false;
                        entry.rollback_status = Some(Status::RolledBack);
                        entry.rolled_back = true;
                        continue;
                    }
                    entry.interrupted = false;
                    if entry.status != Some(Status::Succeeded) {
                        entry.order = Some(finished_steps);
                        finished_steps += 1;
                    }
                    entry.status = Some(Status::Succeeded);
                    entry.summary = "marked done by the operator on resume".into();
                }
            }
            ("rollback_requested", _) => {
                // A new process that undoes the run: it is not over until
                // that rollback is, and its approvals bind to this hash.
                record.finished = None;
                record.rollback = None;
                let request = RollbackRequest {
                    operator: text_of("operator"),
                    time,
                    plan_hash: text_of("plan_hash"),
                    steps: serde_json::from_value(get("steps")).unwrap_or_default(),
                    emergency: get("emergency").as_str().map(str::to_owned),
                    forced_over: get("forced_over").as_str().map(str::to_owned),
                };
                record.plan_hash = Some(request.plan_hash.clone());
                record.rollback_request = Some(request);
                // Whoever asked signs the rollback's plan anew.
                record.operator_signature = None;
            }
            ("step_started", Some(step)) => {
                if !record.steps.contains_key(&step) {
                    record.order.push(step.clone());
                }
                let entry = record.steps.entry(step).or_default();
                entry.interrupted = true;
                entry.status = None;
                entry.order = None;
                entry.rolled_back = false;
                entry.rollback_status = None;
                entry.awaiting_decision = false;
                entry.decision = None;
                entry.idempotent = get("idempotent").as_bool().unwrap_or(false);
            }
            ("step_finished", Some(step)) => {
                if !record.steps.contains_key(&step) {
                    record.order.push(step.clone());
                }
                let entry = record.steps.entry(step).or_default();
                entry.finished_in = record.processes;
                entry.status = serde_json::from_value(get("status")).ok();
                // A step cancelled mid-call that may not be repeated has an
                // unknown outcome, as after a crash: resume asks.
                entry.interrupted = entry.status == Some(Status::Cancelled) && !entry.idempotent;
                entry.outputs = serde_json::from_value(get("outputs")).unwrap_or_default();
                entry.summary = text_of("summary");
                // A step that ended waiting goes on from its wait; one
                // that ended otherwise is done with it.
                if entry.status != Some(Status::Waiting) {
                    entry.wait = None;
                }
                if entry.status == Some(Status::Succeeded) {
                    entry.order = Some(finished_steps);
                    finished_steps += 1;
                }
            }
            ("step_waiting", Some(step)) => {
                record.steps.entry(step).or_default().wait = Some(WaitRecord {
                    round: get("round")
                        .as_u64()
                        .and_then(|round| u32::try_from(round).ok())
                        .unwrap_or(0),
                    status: text_of("status"),
                    wake_at: text_of("wake_at"),
                    state: text_of("state"),
                    parked: get("parked").as_bool().unwrap_or(false),
                });
            }
            ("decision_needed", Some(step)) => {
                let entry = record.steps.entry(step).or_default();
                entry.awaiting_decision = true;
                entry.decision = None;
            }
            ("decided", Some(step)) => {
                let entry = record.steps.entry(step).or_default();
                entry.awaiting_decision = false;
                entry.decision = serde_json::from_value(get("choice")).ok();
            }
            // A `[notify]` target's checkpoint undoes nothing: it is no step.
            ("checkpoint", Some(step)) if crate::runbook::is_notify_target(&step) => {}
            ("checkpoint", Some(step)) => {
                record
                    .steps
                    .entry(step)
                    .or_default()
                    .checkpoints
                    .entry(text_of("key"))
                    .or_insert_with(|| text_of("value"));
            }
            ("rollback_step_started", Some(step)) => {
                let entry = record.steps.entry(step).or_default();
                entry.rollback_interrupted = true;
                entry.idempotent_rollback = get("idempotent").as_bool().unwrap_or(false);
            }
            ("step_rolled_back", Some(step)) => {
                let entry = record.steps.entry(step).or_default();
                let status = serde_json::from_value(get("status")).ok();
                entry.rollback_interrupted = false;
                entry.rollback_status = status;
                entry.rolled_back = status == Some(Status::RolledBack);
                // An interrupted step whose half-done work was undone may
                // simply run again.
                if entry.rolled_back && entry.status == Some(Status::Cancelled) {
                    entry.interrupted = false;
                }
            }
            ("rollback_started", _) => {
                let whole_run = get("whole_run").as_bool().unwrap_or(true);
                record.rolled_back |= whole_run;
                record.rollback = Some(RollbackRecord {
                    reason: text_of("reason"),
                    steps: serde_json::from_value(get("steps")).unwrap_or_default(),
                    whole_run,
                    finished: false,
                });
            }
            ("rollback_finished", _) => {
                if let Some(rollback) = &mut record.rollback {
                    rollback.finished = true;
                }
            }
            ("confirmed", Some(step)) => {
                record.confirmations.insert(step, text_of("by"));
            }
            ("approved", _) => record.approvals.push(Approval {
                by: text_of("by"),
                plan_hash: text_of("plan_hash"),
                signature: serde_json::from_value(get("signature")).ok(),
            }),
            ("operator_signed", _) => {
                record.operator_signature = serde_json::from_value(get("signature")).ok();
            }
            ("audit_head", _) => {
                record
                    .audit
                    .heads
                    .push((get("records").as_u64().unwrap_or(0), text_of("hash")));
                record.audit.closed = true;
            }
            ("run_abandoned", _) => record.abandoned = true,
            ("run_waiting", _) => {
                record.run_wait = Some(WaitRecord {
                    round: 0,
                    status: text_of("reason"),
                    wake_at: text_of("until"),
                    state: String::new(),
                    parked: true,
                });
            }
            ("notified", step) => {
                let moment = text_of("moment");
                match moment.as_str() {
                    "start" => record.notified.started = true,
                    "holding" => record.notified.last_holding = Some(time),
                    "waiting" => record.notified.waiting = Some(step.unwrap_or_default()),
                    _ => {}
                }
                // Anything but a holding update says more since the run was
                // announced waiting: a later wait is announced again.
                if !matches!(moment.as_str(), "holding" | "waiting") {
                    record.notified.waiting = None;
                }
            }
            ("run_finished", _) => {
                record.finished_at = time;
                record.finished = serde_json::from_value(get("status")).ok();
                record.failed_step = get("failed_step").as_str().map(str::to_owned);
            }
            _ => {}
        }
    }
    record.recovered_truncation = damaged.is_some();
    if !saw_start {
        return Err(JournalError::NoStart(path.to_path_buf()));
    }
    Ok(record)
}

/// Appends one event to a run's journal from another process (`approve`,
/// `confirm`), durably, without the run's lock: it never cuts the file,
/// since the run's process may be writing a line at that moment. A tail
/// still torn after a moment was left by a crash; only the lock's holder
/// may cut it, so the caller is told to resume the run first.
pub fn append(path: &Path, step: Option<&str>, kind: EventKind) -> std::io::Result<()> {
    let line = line_of(step, kind)?;
    for _ in 0..50 {
        let bytes = std::fs::read(path)?;
        if crate::jsonl::intact_length(&bytes) == bytes.len() {
            let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
            // One write with O_APPEND: it lands whole after whatever the
            // run's process wrote last.
            file.write_all(format!("{line}\n").as_bytes())?;
            return file.sync_data();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(std::io::Error::other(format!(
        "the journal {} ends in a record that a crash cut short; `runbook resume` the run first (it repairs the journal)",
        path.display()
    )))
}

/// Appends one event to a run's journal while holding the run's lock
/// (`unlock`): what a crash left at the end is cut first.
pub fn append_as_holder(path: &Path, step: Option<&str>, kind: EventKind) -> std::io::Result<()> {
    let line = line_of(step, kind)?;
    let mut journal = Journal::open(path)?;
    journal.append_line(&line)?;
    journal.sync_file()
}

/// One event as the journal's line.
pub fn line_of(step: Option<&str>, kind: EventKind) -> std::io::Result<String> {
    let event = Event {
        time: jiff::Timestamp::now().to_string(),
        step: step.map(|id| crate::runbook::StepId(id.to_owned())),
        kind,
    };
    serde_json::to_string(&event).map_err(std::io::Error::other)
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
    fn typed_parameters_are_read_back_with_their_types() {
        let (_dir, path) = write(&format!(
            "{}\n",
            START.replace(
                r#""params":{"version":"1.2.3"}"#,
                r#""params":{"version":"1.2.3","percentage":10,"dry_run":false,"services":["api","worker"],"ratio":null}"#
            )
        ));
        let record = read(&path).unwrap();
        assert_eq!(record.params["version"], "1.2.3");
        assert_eq!(record.params["percentage"], serde_json::json!(10));
        assert_eq!(record.params["dry_run"], serde_json::json!(false));
        assert_eq!(
            record.params["services"],
            serde_json::json!(["api", "worker"])
        );
        assert_eq!(record.params["ratio"], serde_json::Value::Null);
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

    /// Another process (`approve`) never cuts the journal: the run may be
    /// writing that line right now. A tail that stays torn is refused.
    #[test]
    fn appending_from_another_process_refuses_a_torn_tail_and_cuts_nothing() {
        let text = format!("{START}\n{{\"time\":\"t\",\"step\":\"a\",\"event\":\"step_fin");
        let (_dir, path) = write(&text);
        let refused = append(
            &path,
            None,
            EventKind::Approved {
                by: "bob".into(),
                plan_hash: "h".into(),
                signature: None,
            },
        );
        assert!(refused.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    /// What a crash can leave at the end: a line without its newline, or
    /// a damaged line (garbage, zeros) that still ends in one. The lock's
    /// holder cuts it before it appends.
    #[test]
    fn appending_after_a_crash_first_cuts_what_it_left_at_the_end() {
        for tail in [
            "{\"time\":\"t\",\"step\":\"a\",\"event\":\"step_fin",
            "{\"time\":\"t\",\"step\":\"a\",\"eve\n\0\0\0\n",
        ] {
            let (_dir, path) = write(&format!("{START}\n{tail}"));
            assert!(read(&path).unwrap().recovered_truncation);
            append_as_holder(
                &path,
                None,
                EventKind::Approved {
                    by: "bob".into(),
                    plan_hash: "h".into(),
                    signature: None,
                },
            )
            .unwrap();
            let record = read(&path).unwrap();
            assert!(!record.recovered_truncation, "{tail:?}");
            assert_eq!(
                record.approvals,
                [Approval {
                    by: "bob".to_owned(),
                    plan_hash: "h".to_owned(),
                    signature: None,
                }]
            );
        }
    }

    #[test]
    fn a_cancelled_step_that_may_not_be_repeated_is_interrupted_until_undone() {
        let (_dir, path) = write(&format!(
            "{START}\n{}\n{}\n",
            r#"{"time":"t","step":"a","event":"step_started","name":"a","plugin":"p","digest":"d","idempotent":false}"#,
            r#"{"time":"t","step":"a","event":"step_finished","status":"cancelled","summary":"cancelled","outputs":{},"elapsed_ms":1.0}"#,
        ));
        assert!(read(&path).unwrap().steps["a"].interrupted);
        std::fs::write(
            &path,
            format!(
                "{}{}\n",
                std::fs::read_to_string(&path).unwrap(),
                r#"{"time":"t","step":"a","event":"step_rolled_back","status":"rolled_back","summary":"undone"}"#
            ),
        )
        .unwrap();
        assert!(!read(&path).unwrap().steps["a"].interrupted);
    }

    #[test]
    fn a_full_disk_stops_the_journal_at_its_first_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut journal = Journal::open(&path).unwrap();
        // /dev/full answers every write with ENOSPC.
        journal.file = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap();
        let event = Event {
            time: "t".into(),
            step: None,
            kind: EventKind::RunFinished {
                status: Status::Succeeded,
                elapsed_ms: 0.0,
                failed_step: None,
            },
        };
        journal.write(&event, "{}");
        let failure = journal.failure().expect("the failure is kept");
        assert!(failure.contains("No space left on device"), "{failure}");
        assert!(
            journal.sync().is_err(),
            "a failed journal never syncs again"
        );
    }

    #[test]
    fn replay_hands_each_event_in_order_until_told_to_stop() {
        let (_dir, path) = write(&format!(
            "{START}\n{}\n{}\n",
            r#"{"time":"t","step":"a","event":"log","level":"info","message":"one"}"#,
            r#"{"time":"t","step":"a","event":"log","level":"info","message":"two"}"#,
        ));
        let mut seen = Vec::new();
        let record = replay(&path, |event| {
            seen.push(event["event"].as_str().unwrap_or_default().to_owned());
            if seen.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, ["run_started", "log"]);
        assert_eq!(record.run_id, "r1", "the record is read to the end");
    }

    #[test]
    fn each_step_remembers_which_process_of_the_run_finished_it() {
        let finished = r#"{"time":"t","step":"tell","event":"step_finished","status":"succeeded","summary":"","outputs":{},"elapsed_ms":1.0}"#;
        let resumed = r#"{"time":"t","event":"run_resumed","operator":"a","plan_hash":"h","rerun":[],"skip":[]}"#;
        let (_dir, path) = write(&format!("{START}\n{finished}\n{resumed}\n"));
        let record = read(&path).unwrap();
        assert_eq!(record.processes, 2);
        assert_eq!(record.steps["tell"].finished_in, 1);
    }

    #[test]
    fn an_approval_after_the_end_keeps_the_audit_log_closed() {
        let (_dir, path) = write(&format!(
            "{START}\n{}\n{}\n",
            r#"{"time":"t","event":"audit_head","records":3,"hash":"h"}"#,
            r#"{"time":"t","event":"approved","by":"bob","plan_hash":"p"}"#,
        ));
        assert!(read(&path).unwrap().audit.closed);
    }

    #[test]
    fn announcements_are_remembered_for_the_next_process_of_the_run() {
        let (_dir, path) = write(&format!(
            "{START}\n{}\n{}\n{}\n{}\n{}\n",
            r#"{"time":"2026-11-22T10:00:01Z","event":"notified","moment":"start","targets":1,"ok":1}"#,
            r#"{"time":"2026-11-22T10:15:00Z","step":"soak","event":"notified","moment":"holding","targets":1,"ok":0}"#,
            r#"{"time":"2026-11-22T10:20:00Z","step":"soak","event":"notified","moment":"waiting","targets":1,"ok":1}"#,
            r#"{"time":"2026-11-22T10:30:00Z","step":"soak","event":"notified","moment":"holding","targets":1,"ok":1}"#,
            r#"{"time":"t","step":"notify.0","event":"checkpoint","key":"k","value":"v"}"#,
        ));
        let record = read(&path).unwrap();
        assert_eq!(
            record.notified,
            NotifiedRecord {
                started: true,
                last_holding: Some("2026-11-22T10:30:00Z".into()),
                waiting: Some("soak".into()),
            }
        );
        assert!(
            record.steps.is_empty(),
            "a target is no step: {:?}",
            record.steps
        );
        let stage =
            r#"{"time":"t","step":"soak","event":"notified","moment":"stage","targets":1,"ok":1}"#;
        std::fs::write(
            &path,
            format!("{}{stage}\n", std::fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        assert_eq!(read(&path).unwrap().notified.waiting, None);
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
