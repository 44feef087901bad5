//! Undoing a run: every completed step, newest first, through its plugin's
//! `rollback` with the outputs of its `run` (recorded by whichever process
//! of the run ran it). A rollback is journaled step by step, so that
//! `resume` continues one that a crash cut short. A failed rollback is
//! reported loudly and does not stop the others.

use super::{Executor, RunState};
use crate::events::{EventKind, Status};
use crate::runbook::{Action, Plan};

/// What to undo and why.
pub(super) struct Undo {
    /// Plan indices, in the order to undo them.
    pub order: Vec<usize>,
    /// Why (shown and journaled).
    pub reason: String,
    /// Every completed step (the run is then over), or only the steps an
    /// interruption left half-done.
    pub whole_run: bool,
    /// A rollback an earlier process of the run started: no new
    /// `rollback_started` record.
    pub continued: bool,
}

impl Executor<'_> {
    /// The plugin steps among `indices`, newest first.
    pub(super) fn undo_order(&self, plan: &Plan, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .rev()
            .copied()
            .filter(|index| matches!(plan.step(&plan.steps[*index]).action, Action::Plugin(_)))
            .collect()
    }

    /// Rolls back the steps of `undo`; returns whether a rollback ran and
    /// the ids whose rollback failed.
    pub(super) async fn roll_back(
        &self,
        plan: &Plan,
        state: &RunState,
        undo: Undo,
    ) -> (bool, Vec<String>) {
        if undo.order.is_empty() && !undo.continued {
            // Nothing completed that could be undone: no rollback to report,
            // and the run may still be resumed.
            return (false, Vec::new());
        }
        if !undo.continued {
            self.access.events.emit(EventKind::RollbackStarted {
                reason: undo.reason,
                steps: undo
                    .order
                    .iter()
                    .map(|index| plan.steps[*index].id.0.clone())
                    .collect(),
                whole_run: undo.whole_run,
            });
        }
        let mut failed = Vec::new();
        let mut stopped = false;
        for index in undo.order {
            // A second interrupt stops the rollback, as an unrecordable
            // journal does: `resume` continues it from the journal.
            if self.access.events.failure().is_some() || self.abort.is_cancelled() {
                stopped = true;
                break;
            }
            let planned = &plan.steps[index];
            let step = plan.step(planned);
            let Action::Plugin(name) = &step.action else {
                continue;
            };
            let plugin = &self.plugins[name];
            self.access.events.emit_for(
                Some(&planned.id),
                EventKind::RollbackStepStarted {
                    idempotent: plugin.descriptor.idempotent,
                },
            );
            if self.access.events.failure().is_some() {
                break;
            }
            // The outputs of this run of the step (of this element, for a
            // `for_each` step).
            // What the step recorded before changing anything takes
            // precedence: a later attempt may have found its change made.
            let mut outputs = state
                .outputs
                .get(&planned.id.0)
                .cloned()
                .unwrap_or_default();
            if let Some(checkpoints) = self.checkpoints.get(&planned.id.0) {
                outputs.extend(checkpoints.clone());
            }
            let outputs: Vec<(String, String)> = outputs.into_iter().collect();
            let (status, mut summary) = match self.render(plan, state, index) {
                Err(error) => (
                    Status::Failed,
                    format!("cannot render its parameters: {error}"),
                ),
                Ok(params) => {
                    let deadline = tokio::time::Instant::now() + step.timeout;
                    let context = self.context(planned, deadline, &self.abort, &Default::default());
                    match self
                        .runtime
                        .rollback(plugin, context, step.memory_limit, &params, outputs)
                        .await
                    {
                        Ok(Ok(summary)) => (Status::RolledBack, summary),
                        Ok(Err(error)) => (Status::Failed, error.describe()),
                        Err(error) => (Status::Failed, error.to_string()),
                    }
                }
            };
            if self.abort.is_cancelled() {
                // Cut short mid-call: its outcome is unknown, and the
                // journal says it was in flight.
                stopped = true;
                break;
            }
            let _ = crate::fault::point("rollback.done");
            // Not known to have succeeded: cut short by Ctrl-C, or by a
            // crash before the rollback a resume now runs.
            if !matches!(state.slots[index], super::Slot::Done(Status::Succeeded)) {
                summary = format!(
                    "{summary} (the step was interrupted mid-call: what it had done is unknown, check it)"
                );
            }
            if status == Status::Failed {
                failed.push(planned.id.0.clone());
            }
            self.access.events.emit_for(
                Some(&planned.id),
                EventKind::StepRolledBack { status, summary },
            );
        }
        if !stopped && self.access.events.failure().is_none() {
            self.access.events.emit(EventKind::RollbackFinished {
                failed: failed.len(),
            });
        }
        (true, failed)
    }
}
