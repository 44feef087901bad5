//! Undoing a run: every completed step, newest first, through its plugin's
//! `rollback` with the outputs of its `run`. A failed rollback is reported
//! loudly and does not stop the others.

use super::{Executor, RunState};
use crate::events::{EventKind, Status};
use crate::runbook::{Action, Plan};

impl Executor<'_> {
    /// Rolls back the completed steps; returns the ids whose rollback failed.
    pub(super) async fn roll_back(&self, plan: &Plan, state: &RunState) -> (bool, Vec<String>) {
        let order: Vec<usize> = state
            .completed
            .iter()
            .rev()
            .copied()
            .filter(|index| matches!(plan.step(&plan.steps[*index]).action, Action::Plugin(_)))
            .collect();
        if order.is_empty() {
            // Nothing completed that could be undone: no rollback to report,
            // and the run may still be resumed.
            return (false, Vec::new());
        }
        let reason = if self.cancel.is_cancelled() {
            "the run was interrupted".to_owned()
        } else {
            "a step failed".to_owned()
        };
        self.events.emit(EventKind::RollbackStarted {
            reason,
            steps: order
                .iter()
                .map(|index| plan.steps[*index].id.0.clone())
                .collect(),
        });
        let mut failed = Vec::new();
        for index in order {
            let planned = &plan.steps[index];
            let step = plan.step(planned);
            let Action::Plugin(name) = &step.action else {
                continue;
            };
            let plugin = &self.plugins[name];
            // The outputs of this run of the step (of this element, for a
            // `for_each` step).
            let outputs: Vec<(String, String)> = state
                .outputs
                .get(&planned.id.0)
                .map(|outputs| outputs.clone().into_iter().collect())
                .unwrap_or_default();
            let (status, summary) = match self.render(plan, state, index) {
                Err(error) => (
                    Status::Failed,
                    format!("cannot render its parameters: {error}"),
                ),
                Ok(params) => {
                    let deadline = tokio::time::Instant::now() + step.timeout;
                    let context = self.context(planned, deadline, &self.abort);
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
            if status == Status::Failed {
                failed.push(planned.id.0.clone());
            }
            self.events.emit_for(
                Some(&planned.id),
                EventKind::StepRolledBack { status, summary },
            );
        }
        self.events.emit(EventKind::RollbackFinished {
            failed: failed.len(),
        });
        (true, failed)
    }
}
