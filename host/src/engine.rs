//! Runs a [`Plan`]: the steps as a DAG, independent ones side by side (at
//! most `parallel` at once), each in its own sandbox with only its grants;
//! retries of transient failures; the failure policy (roll back, abort or
//! continue); `always` steps last; every event into the run log; the
//! announcements of `[notify]` beside it all.

mod notify;
pub mod preflight;
pub mod render;
mod rollback;
mod step;

use crate::events::{Choice, EventKind, Status};
use crate::plugin::PluginRuntime;
use crate::runbook::{Plan, Policy};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use preflight::Plugins;
use render::{Scope, StepOutcomes, StepOutputs, Unknown};
use std::collections::BTreeMap;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Succeeded, failed, denied, cancelled or waiting.
    pub status: Status,
    /// The step that ended the run, when one failed or waits.
    pub failed_step: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Every finished step's outputs.
    pub outputs: StepOutputs,
    /// Steps whose rollback failed.
    pub rollback_failures: Vec<String>,
    /// Whether a rollback undid completed steps (the run is then over).
    pub rolled_back: bool,
    /// Why the run could not be recorded, when its journal or audit log
    /// could not be written (a full disk): it stopped before its next
    /// step, and `resume` continues it once the disk is fixed.
    pub unrecorded: Option<String>,
    /// The failed step the run waits at for a person's choice (`on_failure
    /// = "ask"`): `runbook decide` goes on.
    pub awaiting_decision: Option<String>,
}

/// What is known of a step before this process runs it: from the journal
/// of an earlier process of the same run.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// How it ended.
    pub status: Status,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// When it finished among the run's steps (0 for the first): a
    /// rollback undoes steps in the reverse of this order.
    pub order: usize,
    /// What it said when it ended: why it failed, for a failed step that
    /// waits for a person's choice.
    pub summary: String,
}

/// A rollback that an earlier process of the run started and did not
/// finish: `resume` continues it.
#[derive(Debug, Clone)]
pub struct PendingRollback {
    /// The steps still to undo, in order.
    pub steps: Vec<String>,
    /// Whether it undoes the whole run.
    pub whole_run: bool,
    /// The step that failed, as the first process saw it.
    pub failed_step: Option<String>,
    /// Why the rollback started.
    pub reason: String,
    /// Whether its `rollback_started` is in the journal already (the
    /// process died during the rollback, not just before it).
    pub started: bool,
    /// An operator asked for it after the run ended (`runbook rollback`),
    /// rather than a failure: the run ends `rolled_back` when every undo
    /// worked, and nothing failed.
    pub requested: bool,
}

/// How manual steps are confirmed.
#[derive(Debug, Clone, Default)]
pub struct Confirmations {
    /// Confirmed steps: step id -> who.
    pub given: BTreeMap<String, String>,
    /// Asks a person now, when a step is not confirmed yet (the CLI's
    /// terminal prompt); without one, the step waits for `runbook confirm`.
    pub ask: Option<std::sync::Arc<dyn Ask>>,
    /// Who answers.
    pub operator: String,
    /// What people chose for steps that failed under `on_failure = "ask"`
    /// in earlier processes of the run (`runbook decide`): skip or abort.
    pub decided: BTreeMap<String, Choice>,
}

/// A person the engine can ask to tick a manual step's checklist: the
/// CLI supplies one for an interactive terminal. The engine itself reads
/// no terminal.
pub trait Ask: Send + Sync {
    /// Asks for each item in turn (blocking); the ticked items, or the
    /// first item left unticked.
    fn tick(&self, step: &str, items: &[String]) -> Result<Vec<String>, String>;

    /// Asks what happens to `step`, which failed under `on_failure =
    /// "ask"` with `failure` (blocking); `None` when no one answers, and
    /// the run then waits for `runbook decide`.
    fn decide(&self, _step: &str, _failure: &str) -> Option<Choice> {
        None
    }
}

impl std::fmt::Debug for dyn Ask {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Ask")
    }
}

/// Runs plans.
pub struct Executor<'a> {
    /// The wasm runtime.
    pub runtime: &'a PluginRuntime,
    /// Loaded plugins by name.
    pub plugins: &'a Plugins,
    /// What every step shares: where events go, the secrets, the HTTP
    /// client, AWS and the cluster.
    pub access: crate::capability::RunAccess,
    /// First Ctrl-C: running steps stop, then the failure policy applies.
    pub cancel: CancellationToken,
    /// Second Ctrl-C: rollback and `always` steps stop too.
    pub abort: CancellationToken,
    /// At most this many steps at once.
    pub parallel: usize,
    /// Steps finished by an earlier process of this run.
    pub recorded: BTreeMap<String, Recorded>,
    /// A rollback an earlier process started: this process finishes it
    /// (and runs the `always` steps) instead of running steps.
    pub rollback: Option<PendingRollback>,
    /// What steps recorded for their rollback in earlier processes of the
    /// run (`log.checkpoint`), by step: a step run again keeps them.
    pub checkpoints: BTreeMap<String, BTreeMap<String, String>>,
    /// Manual steps' confirmations.
    pub confirmations: Confirmations,
    /// Where steps that wait to be called again stood in earlier processes
    /// of the run, by step: they go on from there.
    pub waits: BTreeMap<String, crate::journal::WaitRecord>,
    /// A step's wait this long or longer parks the run (the process ends,
    /// `runbook worker` or `resume` goes on); `Some(ZERO)` parks at every
    /// wait (`--detach`), `None` never parks.
    pub park_after: Option<std::time::Duration>,
    /// What earlier processes of the run announced (`[notify]`): the
    /// start is not announced again, holding updates keep their pace.
    pub notified: crate::journal::NotifiedRecord,
}

/// The state of one planned step during the run.
#[derive(Debug, Clone)]
enum Slot {
    Pending,
    Running,
    Done(Status),
}

/// The run's mutable state, owned by the scheduling loop.
struct RunState {
    slots: Vec<Slot>,
    outputs: StepOutputs,
    outcomes: StepOutcomes,
    /// Succeeded steps, and steps interrupted mid-call, in the order they
    /// finished: a rollback goes backwards.
    completed: Vec<usize>,
    /// Steps interrupted mid-call (Ctrl-C, SIGTERM): whatever the failure
    /// policy, their rollback undoes what they may have half-done.
    interrupted: Vec<usize>,
}

impl Executor<'_> {
    /// Runs the plan to its end and reports how it ended. With `[notify]`,
    /// its moments are announced beside the steps, and what is left to
    /// announce when the run ends goes out before this returns.
    pub async fn execute(&self, plan: &Plan) -> RunReport {
        let notify = plan
            .runbook
            .notify
            .as_ref()
            .filter(|_| !plan.targets.is_empty());
        let Some(notify) = notify else {
            let report = self.run_plan(plan).await;
            self.access.events.finish();
            return report;
        };
        // The announcing task reads the run's events from the sink, beside
        // the steps in this task: nothing it does waits for a step, nor a
        // step for it.
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        self.access.events.add(notify::Tap::new(sender));
        let ended = CancellationToken::new();
        let run = async {
            let report = self.run_plan(plan).await;
            ended.cancel();
            report
        };
        let announce = self.announce(plan, notify, events, &ended);
        let (report, ()) = futures_util::future::join(run, announce).await;
        self.access.events.finish();
        report
    }

    /// The run itself: the steps, the failure policy, the rollback, the
    /// `always` steps, the run's end.
    async fn run_plan(&self, plan: &Plan) -> RunReport {
        let started = Instant::now();
        let mut state = RunState {
            slots: vec![Slot::Pending; plan.steps.len()],
            outputs: StepOutputs::new(),
            outcomes: StepOutcomes::new(),
            completed: Vec::new(),
            interrupted: Vec::new(),
        };
        let mut earlier = Vec::new();
        for (index, planned) in plan.steps.iter().enumerate() {
            if let Some(recorded) = self.recorded.get(&planned.id.0) {
                state.slots[index] = Slot::Done(recorded.status);
                self.record_result(
                    plan,
                    &mut state,
                    index,
                    recorded.status,
                    recorded.outputs.clone(),
                );
                if recorded.status == Status::Succeeded {
                    earlier.push((recorded.order, index));
                }
            }
        }
        // Steps that earlier processes of the run completed are undone by
        // a rollback too, from their recorded outputs.
        earlier.sort_unstable();
        state.completed = earlier.into_iter().map(|(_, index)| index).collect();

        let mut report = RunReport {
            status: Status::Succeeded,
            failed_step: None,
            failure: None,
            outputs: StepOutputs::new(),
            rollback_failures: Vec::new(),
            rolled_back: false,
            unrecorded: None,
            awaiting_decision: None,
        };
        let mut stopping: Option<Policy> = None;
        if let Some(pending) = &self.rollback {
            // Continuing (or carrying out) a rollback: no step runs.
            if pending.requested {
                report.status = Status::RolledBack;
            } else {
                report.status = Status::Failed;
                report.failed_step.clone_from(&pending.failed_step);
                report.failure = Some(pending.reason.clone());
            }
            for (index, planned) in plan.steps.iter().enumerate() {
                if matches!(state.slots[index], Slot::Pending) && !plan.step(planned).always {
                    state.slots[index] = Slot::Done(Status::Skipped);
                }
            }
        }
        if self.rollback.is_none() {
            // Steps that failed under `ask` in an earlier process: what a
            // person chose (`runbook decide`), or ask again.
            for (index, planned) in plan.steps.iter().enumerate() {
                let Some(recorded) = self.recorded.get(&planned.id.0) else {
                    continue;
                };
                if stopping.is_some()
                    || !matches!(recorded.status, Status::Failed | Status::Denied)
                    || plan.policy(planned) != Policy::Ask
                {
                    continue;
                }
                let given = self.confirmations.decided.get(&planned.id.0).copied();
                let choice = self.choose(plan, index, &recorded.summary, given).await;
                self.settle(
                    plan,
                    &mut state,
                    &mut report,
                    &mut stopping,
                    (index, &recorded.summary),
                    choice,
                );
            }
        }
        // Steps that failed under `ask`, with why, until the steps running
        // beside them are done.
        let mut undecided: Vec<(usize, String)> = Vec::new();
        let mut running = FuturesUnordered::new();
        // Steps that finished and are not yet handled, in the order they
        // finished.
        let mut finished = std::collections::VecDeque::new();
        let mut first_pending = 0;
        loop {
            if self.access.events.failure().is_some() {
                // The run can no longer be recorded: start nothing more.
                stopping.get_or_insert(Policy::Abort);
            }
            // Start every step that is ready, within the parallel limit.
            // Steps before the first pending one are done or running: the
            // scan starts there.
            while first_pending < plan.steps.len()
                && !matches!(state.slots[first_pending], Slot::Pending)
            {
                first_pending += 1;
            }
            // Nothing new starts once the run stops, while a failure waits
            // for a person, or after an interrupt.
            let halted = stopping.is_some() || !undecided.is_empty() || self.cancel.is_cancelled();
            let mut progressed = !halted;
            while progressed {
                progressed = false;
                for index in first_pending..plan.steps.len() {
                    if running.len() >= self.parallel {
                        break;
                    }
                    if !matches!(state.slots[index], Slot::Pending) {
                        continue;
                    }
                    let planned = &plan.steps[index];
                    let step = plan.step(planned);
                    // `always` steps run last, after any rollback, when
                    // `run.status` says how the run went.
                    if step.always {
                        continue;
                    }
                    if !planned
                        .needs
                        .iter()
                        .all(|need| matches!(state.slots[*need], Slot::Done(_)))
                    {
                        continue;
                    }
                    match self.should_run(plan, &state, index) {
                        Ok(true) => {}
                        Ok(false) => {
                            let reason = if step.condition.is_some() {
                                "skipped: its `if` is false".to_owned()
                            } else {
                                let failed: Vec<String> = planned
                                    .needs
                                    .iter()
                                    .filter(|need| {
                                        !matches!(
                                            state.slots[**need],
                                            Slot::Done(Status::Succeeded)
                                        )
                                    })
                                    .map(|need| format!("`{}`", plan.steps[*need].id))
                                    .collect();
                                format!("skipped: {} did not succeed", failed.join(", "))
                            };
                            self.finish_unrun(plan, &mut state, index, reason);
                            progressed = true;
                            continue;
                        }
                        Err(error) => {
                            self.finish_unrun(
                                plan,
                                &mut state,
                                index,
                                format!("skipped: its `if` cannot be evaluated: {error}"),
                            );
                            progressed = true;
                            continue;
                        }
                    }
                    let params = self.render(plan, &state, index);
                    state.slots[index] = Slot::Running;
                    // Starting a step makes no other step ready: only a
                    // step ended unrun (above) calls for another pass.
                    // Its start is recorded here, now; the sync before
                    // the loop waits makes it durable before it is polled.
                    let step = self.run_step(plan, index, params);
                    running.push(async move { (index, step.await) });
                }
            }
            let next = match finished.pop_front() {
                Some(done) => Some(done),
                None => {
                    // The steps just started and those that finished before
                    // them are made durable by one sync, before any of them
                    // is called and before the run waits.
                    self.access.events.settle();
                    let next = running.next().await;
                    // Steps that finished together: their ends share the
                    // next sync. Every step polled here had its start
                    // settled above.
                    if next.is_some() {
                        while let Some(Some(done)) = running.next().now_or_never() {
                            finished.push_back(done);
                        }
                    }
                    next
                }
            };
            let Some((index, result)) = next else {
                if undecided.is_empty() {
                    break;
                }
                // Every running step is done: ask about the failures that
                // wait for a person, in the order they came.
                for (index, summary) in std::mem::take(&mut undecided) {
                    let choice = match stopping {
                        None => self.choose(plan, index, &summary, None).await,
                        // Another failure's policy stopped the run.
                        Some(_) => Some(Choice::Abort),
                    };
                    self.settle(
                        plan,
                        &mut state,
                        &mut report,
                        &mut stopping,
                        (index, &summary),
                        choice,
                    );
                }
                // A retry makes its step pending again.
                first_pending = 0;
                continue;
            };
            state.slots[index] = Slot::Done(result.status);
            self.record_result(
                plan,
                &mut state,
                index,
                result.status,
                result.outputs.clone(),
            );
            if result.status == Status::Succeeded {
                state.completed.push(index);
                continue;
            }
            if result.status == Status::Cancelled
                && matches!(
                    plan.step(&plan.steps[index]).action,
                    crate::runbook::Action::Plugin(_)
                )
            {
                state.completed.push(index);
                state.interrupted.push(index);
            }
            let planned = &plan.steps[index];
            let policy = if result.status == Status::Cancelled {
                // Interrupted by the operator, who is there: nothing to ask.
                match plan.runbook.on_failure {
                    Policy::Ask => Policy::Abort,
                    policy => policy,
                }
            } else {
                plan.policy(planned)
            };
            if policy == Policy::Ask && result.status.is_failure() && stopping.is_none() {
                // Asked once the steps running beside it are done: no new
                // step starts meanwhile, and none is held up by the
                // question.
                undecided.push((index, result.summary.clone()));
                continue;
            }
            if report.failed_step.is_none()
                && (result.status.is_failure() || result.status == Status::Waiting)
            {
                report.status = result.status;
                report.failed_step = Some(planned.id.0.clone());
                report.failure = Some(result.summary.clone());
            }
            if result.status == Status::Waiting {
                stopping.get_or_insert(Policy::Abort);
                continue;
            }
            if policy != Policy::Continue && stopping.is_none() {
                stopping = Some(policy);
            }
        }

        // Steps that never started: skipped, except `always` steps, which
        // run after any rollback.
        let stopped_by = report.failed_step.clone();
        let mut always = Vec::new();
        for index in 0..plan.steps.len() {
            if matches!(state.slots[index], Slot::Pending) {
                if plan.step(&plan.steps[index]).always {
                    always.push(index);
                } else {
                    let reason = match (&stopped_by, self.cancel.is_cancelled()) {
                        (_, true) => "not run: the run was interrupted".to_owned(),
                        (Some(step), false) => format!("not run: the run stopped after `{step}`"),
                        (None, false) => "not run".to_owned(),
                    };
                    self.finish_unrun(plan, &mut state, index, reason);
                }
            }
        }
        if self.cancel.is_cancelled() && report.status == Status::Succeeded {
            report.status = Status::Cancelled;
        }

        report.unrecorded = self.access.events.failure();
        if report.unrecorded.is_some() {
            report.status = Status::Failed;
        }
        let undo = if report.unrecorded.is_some() || report.status == Status::Waiting {
            None
        } else if let Some(pending) = &self.rollback {
            Some(rollback::Undo {
                order: pending
                    .steps
                    .iter()
                    .filter_map(|id| plan.steps.iter().position(|planned| planned.id.0 == *id))
                    .collect(),
                reason: pending.reason.clone(),
                whole_run: pending.whole_run,
                continued: pending.started,
            })
        } else if stopping == Some(Policy::Rollback) {
            Some(rollback::Undo {
                order: self.undo_order(plan, &state.completed),
                reason: if self.cancel.is_cancelled() {
                    "the run was interrupted".to_owned()
                } else {
                    "a step failed".to_owned()
                },
                whole_run: true,
                continued: false,
            })
        } else {
            Some(rollback::Undo {
                order: self.undo_order(plan, &state.interrupted),
                reason: "undoing what the interrupted steps may have half-done".to_owned(),
                whole_run: false,
                continued: false,
            })
        };
        if let Some(undo) = undo {
            let whole_run = undo.whole_run;
            let (ran, failures) = self.roll_back(plan, &state, undo).await;
            report.rolled_back = whole_run && (ran || self.rollback.is_some());
            report.rollback_failures = failures;
            if report.status == Status::RolledBack {
                requested_outcome(&mut report, self.abort.is_cancelled());
            }
        }
        report.unrecorded = self.access.events.failure();

        state
            .outcomes
            .insert(render::RUN_KEY.to_owned(), report.status);
        state.outputs.insert(
            render::RUN_KEY.to_owned(),
            BTreeMap::from([(
                "failed_step".to_owned(),
                report.failed_step.clone().unwrap_or_default(),
            )]),
        );
        // `always` steps run once, at the real end of the run: not at a
        // pause (a manual step, an approval), not when the run cannot be
        // recorded, and not stopped by the first Ctrl-C (only the second).
        if report.status != Status::Waiting && report.unrecorded.is_none() {
            for index in always {
                // An `always` step's `if` is read now, when `run.status`
                // says how the run went (`if = "run.status == 'failed'"`).
                if let Some(condition) = &plan.step(&plan.steps[index]).condition {
                    match self.scope(plan, &state, index).condition(condition) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.finish_unrun(
                                plan,
                                &mut state,
                                index,
                                "skipped: its `if` is false".to_owned(),
                            );
                            continue;
                        }
                        Err(error) => {
                            self.finish_unrun(
                                plan,
                                &mut state,
                                index,
                                format!("skipped: its `if` cannot be evaluated: {error}"),
                            );
                            continue;
                        }
                    }
                }
                let params = self.render(plan, &state, index);
                let step = self.run_step(plan, index, params);
                self.access.events.settle();
                let result = step.await;
                state.slots[index] = Slot::Done(result.status);
                self.record_result(plan, &mut state, index, result.status, result.outputs);
                if result.status.is_failure() && report.failed_step.is_none() {
                    report.status = result.status;
                    report.failed_step = Some(plan.steps[index].id.0.clone());
                    report.failure = Some(result.summary);
                }
            }
        }
        report.unrecorded = self.access.events.failure();

        state.outputs.remove(render::RUN_KEY);
        report.outputs = state.outputs;
        if report.unrecorded.is_some() {
            // The run stopped, it did not end: no end is recorded (or
            // drawn), and `resume` takes it from what the journal holds.
            return report;
        }
        self.access.events.emit(EventKind::RunFinished {
            status: report.status,
            elapsed_ms: millis(started),
            failed_step: report.failed_step.clone(),
        });
        report
    }

    /// What happens after `index` failed under `on_failure = "ask"`: the
    /// choice `given` (`runbook decide`), else the operator's answer on
    /// the terminal, journaled; `None` when no one can answer now.
    async fn choose(
        &self,
        plan: &Plan,
        index: usize,
        failure: &str,
        given: Option<Choice>,
    ) -> Option<Choice> {
        if given.is_some() {
            return given;
        }
        let ask = self.confirmations.ask.clone()?;
        if self.cancel.is_cancelled() {
            return None;
        }
        let planned = &plan.steps[index];
        let (id, why) = (planned.id.0.clone(), failure.to_owned());
        let asking = tokio::task::spawn_blocking(move || ask.decide(&id, &why));
        // Ctrl-C at the question leaves the choice for later (`runbook
        // decide`): the question is abandoned, not answered.
        let choice = tokio::select! {
            answered = asking => answered.ok().flatten()?,
            () = self.cancel.cancelled() => return None,
        };
        self.access.events.emit_for(
            Some(&planned.id),
            EventKind::Decided {
                choice,
                by: self.confirmations.operator.clone(),
                how: "terminal".to_owned(),
                note: String::new(),
            },
        );
        Some(choice)
    }

    /// Carries out a choice for a step that failed under `ask`: run it
    /// again, go on past it, roll back, abort; without one, the run stops
    /// `waiting` for `runbook decide`.
    fn settle(
        &self,
        plan: &Plan,
        state: &mut RunState,
        report: &mut RunReport,
        stopping: &mut Option<Policy>,
        (index, failure): (usize, &str),
        choice: Option<Choice>,
    ) {
        let id = &plan.steps[index].id;
        let mut fail = |status: Status, why: String| {
            if report.failed_step.is_none() {
                report.status = status;
                report.failed_step = Some(id.0.clone());
                report.failure = Some(why);
            }
        };
        match choice {
            Some(Choice::Retry) => state.slots[index] = Slot::Pending,
            // Its dependents run; its outcome stays `failed` for
            // expressions, and a rollback does not undo it, as it did not
            // complete.
            Some(Choice::Skip) => state.slots[index] = Slot::Done(Status::Succeeded),
            Some(Choice::Rollback) => {
                fail(Status::Failed, failure.to_owned());
                stopping.get_or_insert(Policy::Rollback);
            }
            Some(Choice::Abort) => {
                fail(Status::Failed, failure.to_owned());
                stopping.get_or_insert(Policy::Abort);
            }
            None => {
                self.access.events.emit_for(
                    Some(id),
                    EventKind::DecisionNeeded {
                        failure: failure.to_owned(),
                        choices: Choice::ALL.to_vec(),
                    },
                );
                fail(
                    Status::Waiting,
                    format!(
                        "`{id}` failed: {failure}\nwaiting for a decision: `runbook decide {} retry|skip|rollback|abort`",
                        plan.run_id
                    ),
                );
                report.awaiting_decision = Some(id.0.clone());
                stopping.get_or_insert(Policy::Abort);
            }
        }
    }

    /// Whether a step whose needs are done should run.
    fn should_run(
        &self,
        plan: &Plan,
        state: &RunState,
        index: usize,
    ) -> Result<bool, render::RenderError> {
        let planned = &plan.steps[index];
        let step = plan.step(planned);
        match &step.condition {
            Some(condition) => self.scope(plan, state, index).condition(condition),
            None => Ok(planned
                .needs
                .iter()
                .all(|need| matches!(state.slots[*need], Slot::Done(Status::Succeeded)))),
        }
    }

    fn scope<'s>(&'s self, plan: &'s Plan, state: &'s RunState, index: usize) -> Scope<'s> {
        Scope {
            plan,
            outputs: &state.outputs,
            secrets: &self.access.secrets,
            unknown: Unknown::Fail,
            outcomes: &state.outcomes,
            item: plan.steps[index].item.as_ref(),
        }
    }

    fn render(&self, plan: &Plan, state: &RunState, index: usize) -> Result<String, String> {
        let step = plan.step(&plan.steps[index]);
        self.scope(plan, state, index)
            .render(&step.with)
            .map(|value| value.to_string())
            .map_err(|error| error.to_string())
    }

    /// Notes a finished step's outputs and outcome for later expressions.
    fn record_result(
        &self,
        plan: &Plan,
        state: &mut RunState,
        index: usize,
        status: Status,
        outputs: BTreeMap<String, String>,
    ) {
        let planned = &plan.steps[index];
        let base = plan.step(planned).id.0.clone();
        if planned.item.is_none() {
            state.outputs.insert(base.clone(), outputs);
            state.outcomes.insert(base, status);
            return;
        }
        // Each element keeps its own outputs, for its rollback.
        state.outputs.insert(planned.id.0.clone(), outputs);
        // A for_each step's outcome: failed if any element failed,
        // succeeded if any succeeded, else skipped.
        let merged = match (state.outcomes.get(&base).copied(), status) {
            (Some(previous), _) if previous.is_failure() => previous,
            (_, current) if current.is_failure() => current,
            (Some(Status::Succeeded), _) | (_, Status::Succeeded) => Status::Succeeded,
            (_, current) => current,
        };
        state.outcomes.insert(base, merged);
    }

    /// Records a step that did not run.
    fn finish_unrun(&self, plan: &Plan, state: &mut RunState, index: usize, reason: String) {
        let planned = &plan.steps[index];
        state.slots[index] = Slot::Done(Status::Skipped);
        self.record_result(plan, state, index, Status::Skipped, BTreeMap::new());
        self.access.events.emit_for(
            Some(&planned.id),
            EventKind::StepFinished {
                status: Status::Skipped,
                summary: reason,
                outputs: BTreeMap::new(),
                elapsed_ms: 0.0,
            },
        );
    }
}

/// How a rollback an operator asked for ended: `rolled_back` only when
/// every undo worked; an undo that failed fails the run (the operator must
/// look), and a second interrupt cancels it (`resume` continues it).
fn requested_outcome(report: &mut RunReport, aborted: bool) {
    if aborted {
        report.status = Status::Cancelled;
        report.failure = Some("the rollback was interrupted".to_owned());
    } else if let Some(first) = report.rollback_failures.first() {
        report.status = Status::Failed;
        report.failed_step = Some(first.clone());
        report.failure = Some(format!(
            "could not undo {}",
            report.rollback_failures.join(", ")
        ));
    }
}

fn millis(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
