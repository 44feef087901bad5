//! One step, start to end: the started event, the plugin call in a fresh
//! sandbox, retries of transient failures with backoff and jitter, manual
//! checklists, and the finished event.

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

    /// Runs a step (with its retries) and records its start and end.
    pub(super) async fn run_step(
        &self,
        plan: &Plan,
        index: usize,
        params: Result<String, String>,
    ) -> StepResult {
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
        self.access.events.emit_for(
            Some(&planned.id),
            EventKind::StepStarted {
                name: planned.name.clone(),
                plugin: plugin_name,
                digest,
                idempotent,
            },
        );
        let started = Instant::now();
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
        self.access.events.emit_for(
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
        let plugin = &self.plugins[plugin];
        let deadline = tokio::time::Instant::now() + step.timeout;
        // `always` steps finish what they do at the end of a run, even an
        // interrupted one: only the second interrupt stops them.
        let cancel = if step.always {
            &self.abort
        } else {
            &self.cancel
        };
        let mut attempt = 1;
        loop {
            let context = self.context(planned, deadline, cancel, checkpoints);
            let called = self
                .runtime
                .run(plugin, context, step.memory_limit, params)
                .await;
            let retryable = matches!(&called, Ok(Err(PluginError::Transient(_))));
            if !retryable || attempt >= step.retries.attempts {
                let mut result = step_result(called);
                if attempt > 1 {
                    result.summary = format!("{} (after {attempt} attempts)", result.summary);
                }
                return result;
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
                return StepResult::new(
                    Status::Failed,
                    format!("the step's timeout leaves no time for try {}", attempt + 1),
                );
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = cancel.cancelled() => return StepResult::new(Status::Cancelled, "cancelled while waiting to retry"),
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
            let answers = tokio::task::spawn_blocking(move || ask.tick(&id, &list))
                .await
                .unwrap_or_else(|_| Err(String::new()));
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

fn step_result(called: Result<Result<Outcome, PluginError>, CallError>) -> StepResult {
    match called {
        Ok(Ok(outcome)) => StepResult {
            status: Status::Succeeded,
            summary: outcome.summary,
            outputs: outcome.outputs.into_iter().collect(),
        },
        Ok(Err(error @ PluginError::Denied(_))) => {
            StepResult::new(Status::Denied, error.describe())
        }
        Ok(Err(PluginError::Cancelled)) | Err(CallError::Cancelled) => {
            StepResult::new(Status::Cancelled, "cancelled")
        }
        Ok(Err(error)) => StepResult::new(Status::Failed, error.describe()),
        Err(error) => StepResult::new(Status::Failed, error.to_string()),
    }
}
