//! One step, start to end: the started event, the plugin call in a fresh
//! sandbox, retries of transient failures with backoff and jitter, the
//! waits between a plugin's rounds (journaled, in this process or parked),
//! manual checklists, and the finished event.

use super::{Executor, millis};
use crate::capability::StepContext;
use crate::events::{EventKind, Status};
use crate::plugin::CallError;
use crate::runbook::{Action, Plan};
use crate::wit::{Outcome, PluginError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one step ended.
pub(super) struct StepResult {
    pub status: Status,
    pub summary: String,
    pub outputs: BTreeMap<String, String>,
}

impl StepResult {
    fn new(status: Status, summary: impl Into<String>) -> Self {
        StepResult {
            status,
            summary: summary.into(),
            outputs: BTreeMap::new(),
        }
    }
}

impl Executor<'_> {
    /// The capability context of one call of a step's plugin.
    pub(super) fn context(
        &self,
        planned: &crate::runbook::PlannedStep,
        deadline: tokio::time::Instant,
        cancel: &tokio_util::sync::CancellationToken,
        checkpoints: &crate::capability::Checkpoints,
    ) -> Arc<StepContext> {
        Arc::new(self.access.for_step(
            planned.id.clone(),
            planned.grants.clone(),
            deadline,
            cancel,
            false,
            Arc::clone(checkpoints),
        ))
    }

    /// Records a step's start, then gives what runs it (with its retries)
    /// and records its end. The start is recorded at once, its sync shared
    /// with the records around it: the caller settles the event sink
    /// before it polls what this returns, so no call of the step happens
    /// before its start is durable.
    pub(super) fn run_step<'s>(
        &'s self,
        plan: &'s Plan,
        index: usize,
        params: Result<String, String>,
    ) -> impl std::future::Future<Output = StepResult> + 's {
        let planned = &plan.steps[index];
        let step = plan.step(planned);
        let (plugin_name, digest, idempotent) = match &step.action {
            Action::Plugin(name) => {
                let plugin = &self.plugins[name];
                (
                    name.clone(),
                    plugin.digest.clone(),
                    plugin.descriptor.idempotent,
                )
            }
            Action::Manual(_) => ("manual".to_owned(), String::new(), true),
        };
        self.access.events.emit_grouped_for(
            Some(&planned.id),
            EventKind::StepStarted {
                name: planned.name.clone(),
                plugin: plugin_name,
                digest,
                idempotent,
            },
        );
        let started = Instant::now();
        async move { self.run_started(plan, index, params, started).await }
    }

    /// A step whose start is recorded: its call (or checklist) and its end.
    async fn run_started(
        &self,
        plan: &Plan,
        index: usize,
        params: Result<String, String>,
        started: Instant,
    ) -> StepResult {
        let planned = &plan.steps[index];
        let step = plan.step(planned);
        // Whoever started the step settled the sink before this runs: its
        // start is durable, unless the disk refused it (checked below).
        // What an earlier attempt (in an earlier process, too) recorded for
        // the rollback before it changed anything: kept, and the step's
        // outputs carry it.
        let checkpoints: crate::capability::Checkpoints = Arc::new(std::sync::Mutex::new(
            self.checkpoints
                .get(&planned.id.0)
                .cloned()
                .unwrap_or_default(),
        ));
        let mut result = match (&step.action, params) {
            // Its start could not be recorded: a crash now would leave no
            // trace of it, so it does not run.
            _ if self.access.events.failure().is_some() => {
                StepResult::new(Status::Failed, "not started: the run cannot be recorded")
            }
            (Action::Manual(checklist), _) => self.confirm(plan, index, checklist).await,
            (Action::Plugin(_), Err(error)) => StepResult::new(Status::Failed, error),
            (Action::Plugin(name), Ok(params)) => {
                self.call_with_retries(plan, index, name, &params, &checkpoints)
                    .await
            }
        };
        let recorded = checkpoints
            .lock()
            .map(|checkpoints| checkpoints.clone())
            .unwrap_or_default();
        result.outputs.extend(recorded);
        // Between the effect and its record: a crash here leaves the step
        // started and not finished.
        let _ = crate::fault::point("step.done");
        // Synced with the records that come with it (the next step's start,
        // other steps that finished together) before the run waits or
        // calls anything: see `Executor::execute`.
        self.access.events.emit_grouped_for(
            Some(&planned.id),
            EventKind::StepFinished {
                status: result.status,
                summary: result.summary.clone(),
                outputs: result.outputs.clone(),
                elapsed_ms: millis(started),
            },
        );
        result
    }

    /// Calls the step's plugin until it is done: each call with its
    /// retries, and between calls the waits the plugin asks for, each
    /// journaled before it begins. A step an earlier process left waiting
    /// goes on from its recorded state, once that wait is due.
    async fn call_with_retries(
        &self,
        plan: &Plan,
        index: usize,
        plugin: &str,
        params: &str,
        checkpoints: &crate::capability::Checkpoints,
    ) -> StepResult {
        let planned = &plan.steps[index];
        let step = plan.step(planned);
        // `always` steps finish what they do at the end of a run, even an
        // interrupted one: only the second interrupt stops them.
        let cancel = if step.always {
            &self.abort
        } else {
            &self.cancel
        };
        let mut waited = self.waits.get(&planned.id.0).cloned();
        // The first call of this process goes on from an earlier one's wait.
        let mut first = true;
        loop {
            if let Some(wait) = &waited {
                if first {
                    self.access.events.emit_for(
                        Some(&planned.id),
                        EventKind::Log {
                            level: crate::events::Level::Info,
                            message: format!(
                                "going on from wait {} ({}), due {}",
                                wait.round, wait.status, wait.wake_at
                            ),
                        },
                    );
                }
                let due = wait
                    .wake_at
                    .parse::<jiff::Timestamp>()
                    .map(|wake| wake.duration_since(jiff::Timestamp::now()))
                    .ok()
                    .and_then(|left| Duration::try_from(left).ok())
                    .unwrap_or_default();
                // Resumed long before it is due: it stays parked rather
                // than hold this process for hours.
                if first
                    && self
                        .park_after
                        .is_some_and(|limit| due >= limit && !due.is_zero())
                {
                    return parked(wait, &plan.run_id);
                }
                tokio::select! {
                    () = tokio::time::sleep(due) => {}
                    () = cancel.cancelled() => return StepResult::new(
                        Status::Cancelled,
                        format!("cancelled while waiting ({})", wait.status),
                    ),
                }
            }
            first = false;
            let state = waited.as_ref().map(|wait| wait.state.as_str());
            let wait = match self
                .call_once(plan, index, plugin, params, state, checkpoints, cancel)
                .await
            {
                Ok(crate::wit::RunResult::Done(outcome)) => return done(outcome),
                Ok(crate::wit::RunResult::Wait(wait)) => wait,
                Err(result) => return result,
            };
            match self.record_wait(planned, waited.as_ref(), wait) {
                Ok(record) if record.parked => return parked(&record, &plan.run_id),
                Ok(record) => waited = Some(record),
                Err(result) => return result,
            }
        }
    }

    /// Journals a wait the plugin asked for, durably, before it begins;
    /// whether it parks the run.
    fn record_wait(
        &self,
        planned: &crate::runbook::PlannedStep,
        previous: Option<&crate::journal::WaitRecord>,
        wait: crate::wit::Wait,
    ) -> Result<crate::journal::WaitRecord, StepResult> {
        if wait.state.len() > MAX_WAIT_STATE {
            return Err(StepResult::new(
                Status::Failed,
                format!(
                    "the plugin asked to wait with {} KiB of state; a wait's state is at most {} KiB",
                    wait.state.len().div_ceil(1024),
                    MAX_WAIT_STATE / 1024
                ),
            ));
        }
        let after = Duration::from_millis(wait.after_ms);
        let wake_at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(after).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(jiff::Timestamp::MAX)
            .round(jiff::TimestampRound::new().smallest(jiff::Unit::Millisecond))
            .unwrap_or(jiff::Timestamp::MAX);
        let record = crate::journal::WaitRecord {
            round: previous.map_or(1, |wait| wait.round.saturating_add(1)),
            status: crate::capability::log::truncate(wait.status, 200),
            wake_at: wake_at.to_string(),
            state: wait.state,
            parked: self.park_after.is_some_and(|limit| after >= limit),
        };
        self.access.events.emit_for(
            Some(&planned.id),
            EventKind::StepWaiting {
                round: record.round,
                status: record.status.clone(),
                wake_at: record.wake_at.clone(),
                state: record.state.clone(),
                parked: record.parked,
            },
        );
        if let Some(failure) = self.access.events.failure() {
            return Err(StepResult::new(
                Status::Failed,
                format!("its wait could not be recorded: {failure}"),
            ));
        }
        Ok(record)
    }

    /// One call of the step's plugin, with retries of transient failures:
    /// what it returned, or how the step ended.
    #[allow(clippy::too_many_arguments, reason = "one call's whole context")]
    async fn call_once(
        &self,
        plan: &Plan,
        index: usize,
        plugin: &str,
        params: &str,
        state: Option<&str>,
        checkpoints: &crate::capability::Checkpoints,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<crate::wit::RunResult, StepResult> {
        let planned = &plan.steps[index];
        let step = plan.step(planned);
        let plugin = &self.plugins[plugin];
        // The step's timeout bounds each call: a step that waits between
        // rounds has each round bounded, not its whole hold.
        let deadline = tokio::time::Instant::now() + step.timeout;
        let mut attempt = 1;
        loop {
            let context = self.context(planned, deadline, cancel, checkpoints);
            let called = self
                .runtime
                .run(plugin, context, step.memory_limit, params, state)
                .await;
            let retryable = matches!(&called, Ok(Err(PluginError::Transient(_))));
            if !retryable || attempt >= step.retries.attempts {
                let error = match called {
                    Ok(Ok(mut result)) => {
                        if attempt > 1
                            && let crate::wit::RunResult::Done(outcome) = &mut result
                        {
                            outcome.summary =
                                format!("{} (after {attempt} attempts)", outcome.summary);
                        }
                        return Ok(result);
                    }
                    Ok(Err(error)) => Ok(error),
                    Err(error) => Err(error),
                };
                let mut result = step_error(error);
                if attempt > 1 {
                    result.summary = format!("{} (after {attempt} attempts)", result.summary);
                }
                return Err(result);
            }
            let reason = match &called {
                Ok(Err(error)) => error.describe(),
                _ => String::new(),
            };
            let delay = jitter(step.retries.pause(attempt));
            self.access.events.emit_for(
                Some(&planned.id),
                EventKind::StepRetry {
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    reason,
                },
            );
            let wake = tokio::time::Instant::now() + delay;
            if wake >= deadline {
                return Err(StepResult::new(
                    Status::Failed,
                    format!("the step's timeout leaves no time for try {}", attempt + 1),
                ));
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = cancel.cancelled() => return Err(StepResult::new(Status::Cancelled, "cancelled while waiting to retry")),
            }
            attempt += 1;
        }
    }

    /// A manual step: confirmed already (`runbook confirm`), confirmed now
    /// on the terminal, or waiting.
    async fn confirm(&self, plan: &Plan, index: usize, checklist: &[String]) -> StepResult {
        let planned = &plan.steps[index];
        if let Some(who) = self.confirmations.given.get(&planned.id.0) {
            return StepResult::new(Status::Succeeded, format!("confirmed by {who}"));
        }
        if let Some(ask) = self.confirmations.ask.clone() {
            let id = planned.id.0.clone();
            let list = checklist.to_vec();
            let asking = tokio::task::spawn_blocking(move || ask.tick(&id, &list));
            // Ctrl-C at the checklist stops the step, as it stops a call.
            let answers = tokio::select! {
                answered = asking => answered.unwrap_or_else(|_| Err(String::new())),
                () = self.cancel.cancelled() => {
                    return StepResult::new(Status::Cancelled, "cancelled at the checklist");
                }
            };
            return match answers {
                Ok(ticked) => {
                    self.access.events.emit_for(
                        Some(&planned.id),
                        EventKind::Confirmed {
                            by: self.confirmations.operator.clone(),
                            items: ticked,
                        },
                    );
                    StepResult::new(
                        Status::Succeeded,
                        format!("confirmed by {}", self.confirmations.operator),
                    )
                }
                Err(item) => StepResult::new(
                    Status::Failed,
                    format!("the operator did not tick `{item}`"),
                ),
            };
        }
        let items = checklist
            .iter()
            .map(|item| format!("[ ] {item}"))
            .collect::<Vec<_>>()
            .join("\n");
        StepResult::new(
            Status::Waiting,
            format!(
                "waiting for confirmation of:\n{items}\nconfirm with `runbook confirm {} {} --as NAME`, then `runbook resume {}`",
                plan.run_id, planned.id, plan.run_id
            ),
        )
    }
}

/// Between half and all of the pause, so that retries of parallel steps
/// do not hit a recovering service at the same instant.
fn jitter(pause: Duration) -> Duration {
    let mut byte = [0_u8; 1];
    let _ = getrandom::fill(&mut byte);
    pause.mul_f64(0.5 + f64::from(byte[0]) / 510.0)
}

/// How a step ends when its wait parks the run: `waiting`, saying when it
/// wakes and what goes on with it.
fn parked(wait: &crate::journal::WaitRecord, run_id: &str) -> StepResult {
    StepResult::new(
        Status::Waiting,
        format!(
            "parked: waits until {} ({}); `runbook worker` or `runbook resume {run_id}` goes on then",
            wait.wake_at, wait.status
        ),
    )
}

/// Most bytes of state a step may ask to be called again with: it is
/// journaled at every wait.
pub const MAX_WAIT_STATE: usize = 64 * 1024;

fn done(outcome: Outcome) -> StepResult {
    StepResult {
        status: Status::Succeeded,
        summary: outcome.summary,
        outputs: outcome.outputs.into_iter().collect(),
    }
}

/// How a step ends when its plugin (or the call) failed.
fn step_error(called: Result<PluginError, CallError>) -> StepResult {
    match called {
        Ok(error @ PluginError::Denied(_)) => StepResult::new(Status::Denied, error.describe()),
        Ok(PluginError::Cancelled) | Err(CallError::Cancelled) => {
            StepResult::new(Status::Cancelled, "cancelled")
        }
        Ok(error) => StepResult::new(Status::Failed, error.describe()),
        Err(error) => StepResult::new(Status::Failed, error.to_string()),
    }
}
