//! The run's events: what happened, in order, as JSON lines in the run log,
//! on stdout with `--output json`, and drawn for the operator. Every string
//! passes the secret redactor on its way out.

use crate::grant::StepId;
use crate::redact::Redactor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Shown with `-v`.
    Debug,
    /// Normal.
    Info,
    /// Worth reading.
    Warn,
    /// Something failed.
    Error,
}

/// Whether a capability call was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Within the step's grants.
    Allowed,
    /// Outside them.
    Denied,
    /// Within them, but a plan sends nothing that changes things.
    HeldBack,
}

/// How a step or run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It did what it should.
    Succeeded,
    /// It failed.
    Failed,
    /// A capability call was denied and the step failed because of it.
    Denied,
    /// It was cancelled (Ctrl-C).
    Cancelled,
    /// It did not run: its condition was false, a need did not succeed,
    /// or the run stopped first.
    Skipped,
    /// It waits for a person: a confirmation or approvals.
    Waiting,
    /// It was undone by a rollback.
    RolledBack,
}

impl Status {
    /// The name used in expressions and the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Denied => "denied",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
            Status::Waiting => "waiting",
            Status::RolledBack => "rolled_back",
        }
    }

    /// Whether the step (or run) ended badly.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Denied | Status::Cancelled)
    }
}

/// What a person chose for a step that failed in a run whose failure
/// policy is `ask` (Octopus Deploy's "guided failure").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// Run the failed step again.
    Retry,
    /// Go on as if it had succeeded: the steps after it run; it is not
    /// undone by a later rollback, as it did not complete.
    Skip,
    /// Undo what the run completed, newest first.
    Rollback,
    /// End the run as it stands, undoing nothing.
    Abort,
}

impl Choice {
    /// Every choice, in the order a prompt offers them.
    pub const ALL: [Choice; 4] = [Choice::Retry, Choice::Skip, Choice::Rollback, Choice::Abort];

    /// The name in the run log and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::Retry => "retry",
            Choice::Skip => "skip",
            Choice::Rollback => "rollback",
            Choice::Abort => "abort",
        }
    }
}

/// The saved plan a run applies (`runbook plan --out FILE`, then
/// `runbook exec FILE`), as its `run_started` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SavedPlanRef {
    /// The plan file, as given to `exec`.
    pub file: String,
    /// The plan file's sha256, hex.
    pub sha256: String,
    /// Who made the plan (`runbook plan --operator`, else the user).
    pub made_by: String,
    /// When it was made (RFC 3339).
    pub made_at: String,
}

/// A signature over a run's plan ([`crate::signature`]): the operator's
/// (`operator_signed`) or an approver's (`approved`), kept in the journal
/// and the deployment record as the evidence `runbook audit verify`
/// checks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SignatureRecord {
    /// `operator` or `approver`, as the payload says.
    pub role: String,
    /// Who signed, as the environment's allowed_signers names them.
    pub principal: String,
    /// The key's fingerprint, `SHA256:…`.
    pub key: String,
    /// The exact text that was signed ([`crate::signature::Payload`]).
    pub payload: String,
    /// The signature as `ssh-keygen -Y sign` wrote it.
    pub armored: String,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The runbook's name.
        runbook: String,
        /// The runbook file.
        file: String,
        /// The environment, if any.
        environment: Option<String>,
        /// Who started it.
        operator: String,
        /// Parameter values, as JSON of their types (strings for
        /// parameters without `type`).
        params: BTreeMap<String, serde_json::Value>,
        /// How many steps will run.
        steps: usize,
        /// The fingerprint of what runs: runbook text, environment,
        /// parameters, plugin digests, grants. Approvals are bound to it.
        #[serde(skip_serializing_if = "Option::is_none")]
        plan_hash: Option<String>,
        /// Why, when the run was started with `--emergency`: it then needs
        /// the environment's emergency approvals, and `approve` reads this.
        #[serde(skip_serializing_if = "Option::is_none")]
        emergency: Option<String>,
        /// The saved plan the run applies (`runbook exec plan.json`), when
        /// it was started from one: its fingerprint is `plan_hash`.
        #[serde(skip_serializing_if = "Option::is_none")]
        saved_plan: Option<SavedPlanRef>,
    },
    /// A later process continues the run (`runbook resume`).
    RunResumed {
        /// Who resumed it.
        operator: String,
        /// The fingerprint of what runs now.
        plan_hash: Option<String>,
        /// Interrupted steps the operator chose to run again.
        rerun: Vec<String>,
        /// Interrupted steps the operator chose to skip.
        skip: Vec<String>,
    },
    /// `runbook rollback RUN`: an operator asked to undo a run that had
    /// ended. A later process of the run begins here; it undoes `steps`
    /// through the same journaled rollback as a failure does, so `resume`
    /// continues it after a crash.
    RollbackRequested {
        /// Who asked.
        operator: String,
        /// The rollback's fingerprint, distinct from the run's: approvals
        /// of the rollback are bound to it (`gates::rollback_fingerprint`).
        plan_hash: String,
        /// The steps to undo, newest first.
        steps: Vec<String>,
        /// Why, when it was asked with `--emergency`: past the
        /// environment's `rollback_window`, with its emergency approvers.
        #[serde(skip_serializing_if = "Option::is_none")]
        emergency: Option<String>,
        /// The later run that succeeded on top of this one, when the
        /// operator went ahead with `--force`.
        #[serde(skip_serializing_if = "Option::is_none")]
        forced_over: Option<String>,
    },
    /// `runbook unlock` gave up a run whose process died unfinished: it
    /// can no longer be resumed.
    RunAbandoned {
        /// Who.
        by: String,
        /// Where it stood.
        state: String,
    },
    /// The promotion gate of a new run (`requires` of its environment):
    /// the earlier run that satisfies it, or the emergency that let the
    /// run go without one.
    PromotionChecked {
        /// The environment the run is promoted from.
        from: String,
        /// What the gate asks, in words.
        requires: String,
        /// The run that satisfies it, when one does.
        satisfied_by: Option<String>,
        /// How that run satisfies it; when overridden, what is missing.
        detail: String,
        /// The `--emergency --reason` that overrode a gate not met.
        overridden: Option<String>,
    },
    /// Someone approved the run.
    Approved {
        /// Who: the principal of a signed approval, else as `--as` said.
        by: String,
        /// What they approved.
        plan_hash: String,
        /// The approver's signature, where the environment requires one;
        /// an approval without one is shown as `unsigned`.
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<SignatureRecord>,
    },
    /// The operator signed the plan before its first step (an environment
    /// whose approvals name an `allowed_signers` file): their key and
    /// principal may then not approve it.
    OperatorSigned {
        /// The operator, as the run names them.
        by: String,
        /// The fingerprint signed.
        plan_hash: String,
        /// The signature.
        signature: SignatureRecord,
    },
    /// A step began.
    StepStarted {
        /// Display name.
        name: String,
        /// The plugin's name in the runbook.
        plugin: String,
        /// The component's sha256.
        digest: String,
        /// Whether running it twice is harmless: the journal need not
        /// reach the disk before an idempotent step starts.
        idempotent: bool,
    },
    /// A plugin's log line, or a line it printed.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// Progress on long work.
    Progress {
        /// What is happening.
        message: String,
        /// Between 0 and 1 when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        fraction: Option<f32>,
    },
    /// A moment the people following the run should hear about (a canary
    /// reached its next stage): `log.milestone`.
    Milestone {
        /// What happened.
        message: String,
    },
    /// A step is not done and waits to be called again (`run` returned
    /// `wait`): with its state, so that another process can go on from
    /// here. Durable before the step waits.
    StepWaiting {
        /// How many times the step has waited so far, this one included.
        round: u32,
        /// Where it stands, in the plugin's words: `soak round 12/288`.
        status: String,
        /// When it is called again (RFC 3339, UTC).
        wake_at: String,
        /// The plugin's state, given back to that call.
        state: String,
        /// Whether the run parks here: the process ends, and `runbook
        /// worker` or `runbook resume` goes on when it is due.
        parked: bool,
    },
    /// A call a step made through a capability (`http`, `secrets`, `fs`,
    /// `kube`, `aws`), allowed, denied or held back: one kind of event for
    /// every capability, which the audit log, the terminal and `--output
    /// json` all read.
    CapabilityCall {
        /// Which capability.
        capability: String,
        /// What was asked: `GET https://...`, `patch apps/v1/Deployment
        /// shop/api`, `rds:CreateDBSnapshot in us-east-1`, `read /dist/x`.
        requested: String,
        /// Whether the grants let it through.
        decision: Decision,
        /// The grant that allowed it, where one grant entry did.
        #[serde(skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
        /// What came of it: a status, `patched`, an error, why it was
        /// denied.
        outcome: String,
        /// Whether it did what was asked.
        ok: bool,
        /// A write made while planning: held back, or sent as a dry run
        /// that changes nothing.
        dry_run: bool,
        /// Time taken.
        duration_ms: f64,
    },
    /// A step failed with a transient error and will be tried again.
    StepRetry {
        /// The try that failed (1 for the first).
        attempt: u32,
        /// The pause before the next try.
        delay_ms: u64,
        /// Why it failed.
        reason: String,
    },
    /// The run stopped and is undoing its completed steps, or (when
    /// `whole_run` is false) the steps an interruption left half-done.
    RollbackStarted {
        /// Why.
        reason: String,
        /// The steps to undo, in order.
        steps: Vec<String>,
        /// Whether every completed step is undone: the run is then over.
        whole_run: bool,
    },
    /// A step recorded, before changing anything, a value its rollback
    /// needs (`log.checkpoint`).
    Checkpoint {
        /// The output it stands for.
        key: String,
        /// The value.
        value: String,
    },
    /// A step's rollback is about to run: if the process dies before its
    /// `step_rolled_back`, `resume` knows this undo was in flight.
    RollbackStepStarted {
        /// Whether running the plugin's `rollback` twice is harmless.
        idempotent: bool,
    },
    /// One step was undone, or its undoing failed.
    StepRolledBack {
        /// `rolled_back` or `failed`.
        status: Status,
        /// What the plugin said.
        summary: String,
    },
    /// The rollback is over.
    RollbackFinished {
        /// How many steps could not be undone.
        failed: usize,
    },
    /// A step failed under `on_failure = "ask"` and no one could choose
    /// at once: the run waits for `runbook decide`.
    DecisionNeeded {
        /// Why the step failed.
        failure: String,
        /// What may be chosen.
        choices: Vec<Choice>,
    },
    /// A person chose what happens to a step that failed under
    /// `on_failure = "ask"`.
    Decided {
        /// What they chose.
        choice: Choice,
        /// Who.
        by: String,
        /// `terminal` (asked when the step failed) or `command` (`runbook
        /// decide`).
        how: String,
        /// Why, in their words (may be empty).
        note: String,
    },
    /// An operator confirmed a manual step's checklist.
    Confirmed {
        /// Who.
        by: String,
        /// What they confirmed.
        items: Vec<String>,
    },
    /// A step ended.
    StepFinished {
        /// How.
        status: Status,
        /// One line.
        summary: String,
        /// Outputs, for later steps.
        outputs: BTreeMap<String, String>,
        /// Time taken.
        elapsed_ms: f64,
    },
    /// The run parks before its first step until a gate opens (its deploy
    /// window, with `--detach`): `runbook worker` starts it then.
    RunWaiting {
        /// When the gate opens (RFC 3339, UTC).
        until: String,
        /// What it waits for, in words.
        reason: String,
    },
    /// The run's announcement of a moment (`[notify]`) went to its
    /// targets: how many took it. A target that failed left a warning
    /// before this; the run goes on either way. Read back when the run goes
    /// on in another process: the start is not announced twice, holding
    /// updates keep their pace.
    Notified {
        /// `start`, `stage`, `holding`, `failure`, `rollback`, `waiting`
        /// or `end`.
        moment: String,
        /// How many targets it went to.
        targets: usize,
        /// How many of them took it.
        ok: usize,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: Status,
        /// Time taken.
        elapsed_ms: f64,
        /// The step that failed, if one did.
        failed_step: Option<String>,
    },
    /// The audit log's state when this process of the run ended: how many
    /// records it had and the last one's hash.
    AuditHead {
        /// Records written so far.
        records: u64,
        /// The hash of the last one.
        hash: String,
    },
}

/// Decides which events must be on disk before the run goes on. Each sync
/// makes every earlier line durable too, as the files are only appended
/// to; every line is written as it comes, so a process that dies loses
/// none of them, and what is decided here is what survives a power cut.
#[derive(Debug, Default)]
pub struct Durability {
    /// Steps running whose plugin is not idempotent.
    unrepeatable: std::collections::BTreeSet<String>,
}

impl Durability {
    /// An idempotent step that ran at least this long has its end synced
    /// too: running it again after a power cut would cost more than the
    /// sync (about 0.15 ms). A shorter one may simply run again.
    pub const REDO_COSTS_MORE_MS: f64 = 1_000.0;

    /// Whether `event` must be synced before the run goes on. A step that
    /// is not idempotent must be known to have started (so that a crash
    /// leaves it "interrupted", for the operator to decide) and to have
    /// finished (so that it never runs again); so must every run boundary,
    /// rollback, checkpoint, approval and confirmation. What happens
    /// within a step rides along with the next sync.
    pub fn must_sync(&mut self, event: &Event) -> bool {
        let step = || {
            event
                .step
                .as_ref()
                .map(|id| id.0.clone())
                .unwrap_or_default()
        };
        match &event.kind {
            EventKind::Log { .. }
            | EventKind::Progress { .. }
            | EventKind::Milestone { .. }
            // An announcement lost to a power cut is at most sent again.
            | EventKind::Notified { .. }
            | EventKind::CapabilityCall { .. }
            | EventKind::StepRetry { .. } => false,
            EventKind::StepStarted { idempotent, .. } => {
                if *idempotent {
                    false
                } else {
                    self.unrepeatable.insert(step());
                    true
                }
            }
            EventKind::StepFinished { elapsed_ms, .. } => {
                self.unrepeatable.remove(&step()) || *elapsed_ms >= Self::REDO_COSTS_MORE_MS
            }
            _ => true,
        }
    }
}

/// One event with its time and step.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When, RFC 3339.
    pub time: String,
    /// The step it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Something that receives events: a file, stdout, the terminal.
pub trait EventWriter: Send {
    /// Receives one event; `line` is its redacted JSON.
    fn write(&mut self, event: &Event, line: &str);

    /// The run is over: flush.
    fn finish(&mut self) {}

    /// Makes everything written so far durable. Called after every event
    /// that must be on disk before the run moves on
    /// ([`Durability::must_sync`]).
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Why this writer can no longer record the run, when it cannot. A
    /// durable writer (the journal, the audit log) that fails stops the
    /// run before its next step.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Whether this writer keeps the run's record (the journal, the audit
    /// log). Once either fails, neither takes another event: no record
    /// may stand in one without its counterpart in the other, nor after
    /// one that was lost.
    fn is_record(&self) -> bool {
        false
    }
}

/// Fans events out to writers, redacting secret values first.
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Arc<Mutex<SinkInner>>,
}

#[derive(Default)]
struct SinkInner {
    writers: Vec<Box<dyn EventWriter>>,
    redactor: Redactor,
    /// The first failure to make an event durable.
    failure: Option<String>,
    /// Which events are synced.
    durability: Durability,
    /// A grouped record waits for its sync ([`EventSink::settle`]).
    pending: bool,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventSink")
    }
}

impl EventSink {
    /// A sink with no writers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a writer.
    pub fn add(&self, writer: impl EventWriter + 'static) {
        self.lock().writers.push(Box::new(writer));
    }

    /// Sets the redactor every event passes.
    pub fn set_redactor(&self, redactor: Redactor) {
        self.lock().redactor = redactor;
    }

    /// Records a run-level event.
    pub fn emit(&self, kind: EventKind) {
        self.emit_for(None, kind);
    }

    /// Records an event, for a step or for the run. One that must be
    /// durable ([`Durability::must_sync`]) is synced before this returns.
    pub fn emit_for(&self, step: Option<&StepId>, kind: EventKind) {
        self.record(step, kind, false);
    }

    /// Records a step's start or end whose sync may be shared with the
    /// records that come with it: steps that finish together, and the end
    /// of one step with the start of the next, are made durable by one
    /// sync. The caller calls [`EventSink::settle`] before anything the
    /// record must precede: the step's first call, or the run waiting.
    pub fn emit_grouped_for(&self, step: Option<&StepId>, kind: EventKind) {
        self.record(step, kind, true);
    }

    /// Makes the records that [`EventSink::emit_grouped_for`] left unsynced
    /// durable (one sync for all of them); nothing when there are none.
    pub fn settle(&self) {
        let mut inner = self.lock();
        if inner.pending {
            sync_writers(&mut inner);
        }
    }

    fn record(&self, step: Option<&StepId>, kind: EventKind, grouped: bool) {
        let event = Event {
            time: jiff::Timestamp::now().to_string(),
            step: step.cloned(),
            kind,
        };
        let mut inner = self.lock();
        // Every string of the event is redacted before any writer sees it
        // (the audit log and the terminal read the event, the journal and
        // `--output json` its line), and the line again for escapings that
        // span fields.
        let event = redact_event(event, &inner.redactor);
        let line = serde_json::to_string(&event).unwrap_or_default();
        let line = inner.redactor.apply(&line).into_owned();
        let inner = &mut *inner;
        let durable = inner.durability.must_sync(&event);
        let recording = inner.failure.is_none()
            && inner
                .writers
                .iter()
                .all(|writer| writer.failure().is_none());
        for writer in &mut inner.writers {
            if recording || !writer.is_record() {
                writer.write(&event, &line);
            }
        }
        if durable && recording {
            if grouped {
                inner.pending = true;
            } else {
                sync_writers(inner);
            }
        }
    }

    /// Why the run can no longer be recorded durably (a full disk, an I/O
    /// error on the journal or the audit log), once that happened. The
    /// engine starts no step after it.
    pub fn failure(&self) -> Option<String> {
        let inner = self.lock();
        inner
            .failure
            .clone()
            .or_else(|| inner.writers.iter().find_map(|writer| writer.failure()))
    }

    /// Flushes every writer.
    pub fn finish(&self) {
        let mut inner = self.lock();
        if inner.pending {
            sync_writers(&mut inner);
        }
        for writer in &mut inner.writers {
            writer.finish();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One sync of every writer, which makes every line written so far
/// durable. The audit log before the journal: a head the journal records
/// is never ahead of the log on disk.
fn sync_writers(inner: &mut SinkInner) {
    inner.pending = false;
    let recording = inner.failure.is_none()
        && inner
            .writers
            .iter()
            .all(|writer| writer.failure().is_none());
    if !recording {
        return;
    }
    for writer in inner.writers.iter_mut().rev() {
        if let Err(error) = writer.sync()
            && inner.failure.is_none()
        {
            inner.failure = Some(error.to_string());
        }
    }
}

impl Event {
    /// Hands every string of the event to `visit`, which may rewrite it:
    /// its time, its step, every text field, and both keys and values of
    /// its maps. This is the one list of an event's texts: the redactor
    /// and the terminal filter both walk it, and the match is exhaustive,
    /// so a new kind of event cannot reach a writer without saying which
    /// of its fields are text.
    pub fn map_texts(&mut self, mut visit: impl FnMut(&mut String)) {
        fn visit_map(map: &mut BTreeMap<String, String>, visit: &mut impl FnMut(&mut String)) {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(mut key, mut value)| {
                    visit(&mut key);
                    visit(&mut value);
                    (key, value)
                })
                .collect();
        }
        fn visit_json(value: &mut serde_json::Value, visit: &mut impl FnMut(&mut String)) {
            match value {
                serde_json::Value::String(text) => visit(text),
                serde_json::Value::Array(items) => {
                    for item in items {
                        visit_json(item, visit);
                    }
                }
                serde_json::Value::Object(map) => {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(mut key, mut item)| {
                            visit(&mut key);
                            visit_json(&mut item, visit);
                            (key, item)
                        })
                        .collect();
                }
                serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_) => {}
            }
        }
        fn visit_values(
            map: &mut BTreeMap<String, serde_json::Value>,
            visit: &mut impl FnMut(&mut String),
        ) {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(mut key, mut value)| {
                    visit(&mut key);
                    visit_json(&mut value, visit);
                    (key, value)
                })
                .collect();
        }
        visit(&mut self.time);
        if let Some(step) = &mut self.step {
            visit(&mut step.0);
        }
        match &mut self.kind {
            EventKind::RunStarted {
                run_id,
                runbook,
                file,
                environment,
                operator,
                params,
                steps: _,
                plan_hash,
                emergency,
                saved_plan,
            } => {
                emergency.iter_mut().for_each(&mut visit);
                if let Some(saved) = saved_plan {
                    visit(&mut saved.file);
                    visit(&mut saved.sha256);
                    visit(&mut saved.made_by);
                    visit(&mut saved.made_at);
                }
                visit(run_id);
                visit(runbook);
                visit(file);
                environment.iter_mut().for_each(&mut visit);
                visit(operator);
                visit_values(params, &mut visit);
                plan_hash.iter_mut().for_each(&mut visit);
            }
            EventKind::RunResumed {
                operator,
                plan_hash,
                rerun,
                skip,
            } => {
                visit(operator);
                plan_hash.iter_mut().for_each(&mut visit);
                rerun.iter_mut().for_each(&mut visit);
                skip.iter_mut().for_each(&mut visit);
            }
            // A signature's payload and armor are left as signed: a byte
            // changed by the redactor or the terminal filter would make the
            // evidence fail to verify, and neither holds a secret value (a
            // payload names secrets only by name, and a parameter is never
            // a secret). Its principal and key are shown, and pass.
            EventKind::Approved {
                by,
                plan_hash,
                signature,
            } => {
                visit(by);
                visit(plan_hash);
                if let Some(signature) = signature {
                    visit(&mut signature.principal);
                    visit(&mut signature.key);
                }
            }
            EventKind::OperatorSigned {
                by,
                plan_hash,
                signature,
            } => {
                visit(by);
                visit(plan_hash);
                visit(&mut signature.principal);
                visit(&mut signature.key);
            }
            EventKind::PromotionChecked {
                from,
                requires,
                satisfied_by,
                detail,
                overridden,
            } => {
                visit(from);
                visit(requires);
                satisfied_by.iter_mut().for_each(&mut visit);
                visit(detail);
                overridden.iter_mut().for_each(&mut visit);
            }
            EventKind::RollbackRequested {
                operator,
                plan_hash,
                steps,
                emergency,
                forced_over,
            } => {
                visit(operator);
                visit(plan_hash);
                steps.iter_mut().for_each(&mut visit);
                emergency.iter_mut().for_each(&mut visit);
                forced_over.iter_mut().for_each(&mut visit);
            }
            EventKind::StepStarted {
                name,
                plugin,
                digest,
                idempotent: _,
            } => {
                visit(name);
                visit(plugin);
                visit(digest);
            }
            EventKind::Log { level: _, message }
            | EventKind::Milestone { message }
            | EventKind::Progress {
                message,
                fraction: _,
            } => visit(message),
            EventKind::StepWaiting {
                round: _,
                status,
                wake_at,
                state,
                parked: _,
            } => {
                visit(status);
                visit(wake_at);
                visit(state);
            }
            EventKind::RunWaiting { until, reason } => {
                visit(until);
                visit(reason);
            }
            EventKind::CapabilityCall {
                capability,
                requested,
                decision: _,
                grant,
                outcome,
                ok: _,
                dry_run: _,
                duration_ms: _,
            } => {
                visit(capability);
                visit(requested);
                grant.iter_mut().for_each(&mut visit);
                visit(outcome);
            }
            EventKind::StepRetry {
                attempt: _,
                delay_ms: _,
                reason,
            } => visit(reason),
            EventKind::RollbackStarted {
                reason,
                steps,
                whole_run: _,
            } => {
                visit(reason);
                steps.iter_mut().for_each(&mut visit);
            }
            EventKind::RollbackStepStarted { idempotent: _ } => {}
            EventKind::RunAbandoned { by, state } => {
                visit(by);
                visit(state);
            }
            EventKind::Checkpoint { key, value } => {
                visit(key);
                visit(value);
            }
            EventKind::StepRolledBack { status: _, summary } => visit(summary),
            EventKind::RollbackFinished { failed: _ } => {}
            EventKind::Confirmed { by, items } => {
                visit(by);
                items.iter_mut().for_each(&mut visit);
            }
            EventKind::DecisionNeeded {
                failure,
                choices: _,
            } => visit(failure),
            EventKind::Decided {
                choice: _,
                by,
                how,
                note,
            } => {
                visit(by);
                visit(how);
                visit(note);
            }
            EventKind::StepFinished {
                status: _,
                summary,
                outputs,
                elapsed_ms: _,
            } => {
                visit(summary);
                visit_map(outputs, &mut visit);
            }
            EventKind::Notified {
                moment,
                targets: _,
                ok: _,
            } => visit(moment),
            EventKind::RunFinished {
                status: _,
                elapsed_ms: _,
                failed_step,
            } => failed_step.iter_mut().for_each(&mut visit),
            EventKind::AuditHead { records: _, hash } => visit(hash),
        }
    }
}

/// Redacts every string of an event (see [`Event::map_texts`]).
fn redact_event(mut event: Event, redactor: &Redactor) -> Event {
    if !redactor.is_empty() {
        event.map_texts(|text| redactor.scrub(text));
    }
    event
}

/// Writes every event as a JSON line on stdout (`--output json`).
pub struct JsonStdout;

impl EventWriter for JsonStdout {
    fn write(&mut self, _event: &Event, line: &str) {
        // A closed stdout (`| head -1`) ends this output, not the run: the
        // run goes on, recorded in its journal, and exits with its own code.
        // Raw control characters the serializer leaves (DEL, C1, bidi) are
        // escaped the JSON way, so the line means the same on a terminal.
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{}", crate::terminal::json(line));
    }
}

/// Keeps events in memory: for tests and for summaries.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<(Event, String)>>>,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event so far with its JSON line.
    pub fn events(&self) -> Vec<(Event, String)> {
        self.events
            .lock()
            .map(|events| events.clone())
            .unwrap_or_default()
    }
}

impl EventWriter for Recorder {
    fn write(&mut self, event: &Event, line: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.push((event.clone(), line.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    fn at(step: &str, kind: EventKind) -> Event {
        Event {
            time: "t".into(),
            step: Some(StepId(step.into())),
            kind,
        }
    }

    fn started(idempotent: bool) -> EventKind {
        EventKind::StepStarted {
            name: "s".into(),
            plugin: "p".into(),
            digest: "d".into(),
            idempotent,
        }
    }

    fn finished(elapsed_ms: f64) -> EventKind {
        EventKind::StepFinished {
            status: Status::Succeeded,
            summary: String::new(),
            outputs: BTreeMap::new(),
            elapsed_ms,
        }
    }

    #[test]
    fn what_is_synced_is_what_a_power_cut_must_not_lose() {
        let mut durability = Durability::default();
        // Not idempotent: its start and its end.
        assert!(durability.must_sync(&at("a", started(false))));
        assert!(durability.must_sync(&at("a", finished(1.0))));
        // Idempotent and quick: running it again costs less than a sync.
        assert!(!durability.must_sync(&at("b", started(true))));
        assert!(!durability.must_sync(&at("b", finished(5.0))));
        // Idempotent and long (a 30-minute analysis): its end is synced.
        assert!(!durability.must_sync(&at("c", started(true))));
        assert!(durability.must_sync(&at("c", finished(1_800_000.0))));
        assert!(!durability.must_sync(&at(
            "c",
            EventKind::Log {
                level: Level::Info,
                message: "x".into()
            }
        )));
    }

    use super::*;

    const WEBHOOK: &str = "https://Hooks.Example.com/services/T0/B0/XyZsecret";

    fn sink() -> (EventSink, Recorder) {
        let sink = EventSink::new();
        sink.set_redactor(Redactor::new([WEBHOOK.to_owned()]));
        let recorder = Recorder::new();
        sink.add(recorder.clone());
        (sink, recorder)
    }

    #[test]
    fn every_string_of_every_event_is_redacted_for_every_writer() {
        let (sink, recorder) = sink();
        let normalised = "https://hooks.example.com:443/services/T0/B0/XyZsecret";
        let step = StepId("notify".into());
        sink.emit_for(
            Some(&step),
            EventKind::StepRetry {
                attempt: 1,
                delay_ms: 10,
                reason: format!("POST {normalised}: could not connect (transient)"),
            },
        );
        sink.emit_for(
            Some(&step),
            EventKind::CapabilityCall {
                capability: "http".into(),
                requested: format!("POST {normalised}"),
                decision: Decision::Denied,
                grant: None,
                outcome: format!("request to {normalised} not granted"),
                ok: false,
                dry_run: false,
                duration_ms: 0.0,
            },
        );
        sink.emit_for(
            Some(&step),
            EventKind::CapabilityCall {
                capability: "http".into(),
                requested: format!("POST {WEBHOOK}"),
                decision: Decision::HeldBack,
                grant: Some(WEBHOOK.into()),
                outcome: "not sent".into(),
                ok: true,
                dry_run: true,
                duration_ms: 0.0,
            },
        );
        sink.emit(EventKind::RunFinished {
            status: Status::Failed,
            elapsed_ms: 1.0,
            failed_step: Some(format!("notify {normalised}")),
        });
        let events = recorder.events();
        assert_eq!(events.len(), 4);
        for (event, line) in events {
            // The terminal and the audit log read the event itself.
            let drawn = format!("{event:?}");
            assert!(!drawn.contains("XyZsecret"), "{drawn}");
            assert!(!line.contains("XyZsecret"), "{line}");
            assert!(line.contains("[REDACTED]"), "{line}");
        }
    }
}
