//! `runbook rollback RUN`: undoing a run after it ended, through the same
//! journaled rollback a failure runs ([`crate::engine::PendingRollback`]),
//! as a later process of that run. This module decides whether it may
//! (ended, not undone already, no later success on top, within the
//! environment's `rollback_window`), what it undoes, and what its dry run
//! shows; `run::run` then carries it out, and `resume` finishes it after a
//! crash. It never touches the terminal.

use super::execute::{Connections, dry_context, held_back_a_write, intercepted_writes};
use super::resume::{self, Resumption};
use super::{Error, Interface, Options, Prepared, Secrets, Start};
use crate::engine::render::{Scope, StepOutcomes, StepOutputs, Unknown};
use crate::events::Status;
use crate::journal::{RollbackRequest, RunRecord};
use crate::plugin::PluginRuntime;
use crate::runbook::{Action, Plan};
use crate::state;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `runbook rollback RUN` asks.
#[derive(Debug, Clone)]
pub struct Request {
    /// The run to undo.
    pub run: String,
    /// Who asks.
    pub operator: String,
    /// Go ahead although a later run succeeded on top of it (recorded).
    pub force: bool,
    /// Why this is an emergency (`--emergency --reason`): past the
    /// `rollback_window`, with the emergency approvers (recorded).
    pub emergency: Option<String>,
    /// Where the secret values come from (the process environment, for
    /// the CLI); a dry run uses those set, as `plan` does.
    pub secrets: Secrets,
}

/// Finds the run, refuses what may not be undone, prepares it again as it
/// started, takes its lock, and returns the rollback ready for
/// [`super::run`]: a later process of the run whose first record is
/// `rollback_requested`.
pub async fn prepare(
    runtime: &PluginRuntime,
    request: &Request,
    options: &Options,
    interface: &dyn Interface,
) -> Result<(Prepared, Start), Error> {
    let (journal, state_dir) = find(&request.run, options)?;
    // Refuse early what can be refused from the journal alone, before
    // loading plugins; then again, holding the lock, from what it says now.
    let record = resume::read_journal(&journal)?;
    check_undoable(&request.run, &record)?;
    let mut prepared = resume::prepare_again(
        runtime,
        &record,
        request.secrets.clone(),
        options.aws_endpoint.as_deref(),
        interface,
    )
    .await?;
    resume::check_fingerprint(&request.run, &record, &prepared, None)?;
    let lock = super::gates::take_lock(&prepared.plan, &state_dir, options, interface).await?;
    state::adopt(&state_dir, &request.run).map_err(Error::state)?;
    let journal = state::journal_path(&state::run_dir(&state_dir, &request.run));
    let mut record = resume::read_journal(&journal)?;
    check_undoable(&request.run, &record)?;
    let steps = undo_steps(&request.run, &prepared.plan, &record)?;
    let forced_over = match later_success(&record, &state_dir) {
        Some(later) if !request.force => return Err(over_later_run(&record, &later)),
        later => later.map(|later| later.run_id),
    };
    check_window(request, &record, &prepared)?;
    let plan_hash = resume::bind_to_rollback(&mut prepared, &steps);
    let asked = RollbackRequest {
        operator: request.operator.clone(),
        time: jiff::Timestamp::now().to_string(),
        plan_hash,
        steps,
        emergency: request.emergency.clone(),
        forced_over,
    };
    // What the journal will say once `rollback_requested` is written:
    // `resume` decides from the same record after a crash.
    record.rollback_request = Some(asked.clone());
    record.rollback = None;
    let resumed = resume::Request {
        run: request.run.clone(),
        rerun: Vec::new(),
        skip: Vec::new(),
        operator: Some(request.operator.clone()),
        decision: None,
    };
    let resumption: Resumption =
        resume::take_over(&resumed, record, &prepared, state_dir, lock, Some(asked))?;
    Ok((prepared, Start::Resume(Box::new(resumption))))
}

/// The run's journal and the state folder it lives in.
fn find(run: &str, options: &Options) -> Result<(PathBuf, PathBuf), Error> {
    let (run_dir, state_dir) = resume::find(run, options)?;
    Ok((state::journal_path(&run_dir), state_dir))
}

/// Refuses a run that cannot be rolled back now: abandoned, not ended
/// (running, or its process died), rolled back already, or with a
/// rollback under way.
fn check_undoable(run: &str, record: &RunRecord) -> Result<(), Error> {
    if record.abandoned {
        return Err(Error::refuse(
            format!("run {run} was abandoned with `runbook unlock`"),
            "newer runs may have changed what it touched; roll forward with `runbook exec`",
        ));
    }
    let whole = record
        .rollback
        .as_ref()
        .filter(|rollback| rollback.whole_run);
    if record.finished == Some(Status::RolledBack)
        || whole.is_some_and(|rollback| rollback.finished && record.finished.is_some())
    {
        return Err(Error::refuse(
            format!("run {run} was already rolled back"),
            format!("nothing is left to undo; `runbook show {run}` tells what was undone"),
        ));
    }
    if let Some(asked) = &record.rollback_request {
        return Err(Error::refuse(
            format!(
                "a rollback of run {run} was asked by {} at {} and has not finished",
                asked.operator, asked.time
            ),
            format!(
                "`runbook resume {run}` continues it (once it has its approvals, when it waits for them)"
            ),
        ));
    }
    if whole.is_some() || record.finished.is_none() {
        return Err(Error::refuse(
            format!("run {run} has not ended: it is still running, or its process died"),
            format!(
                "wait for it to end; if its process died, `runbook resume {run}` finishes it (a failure rolls it back by its policy), or `runbook unlock` abandons it"
            ),
        ));
    }
    Ok(())
}

/// The steps to undo, newest first; refused when there is none.
fn undo_steps(run: &str, plan: &Plan, record: &RunRecord) -> Result<Vec<String>, Error> {
    let steps = resume::completed_newest_first(plan, record);
    if steps.is_empty() {
        return Err(Error::refuse(
            format!("run {run} completed no step that a rollback can undo"),
            format!("nothing to roll back; `runbook show {run}` tells how it went"),
        ));
    }
    Ok(steps)
}

/// A later run of the same runbook and environment that succeeded.
#[derive(Debug, Clone)]
pub struct LaterRun {
    /// Its id.
    pub run_id: String,
    /// Who ran it.
    pub operator: String,
    /// When it ended.
    pub finished_at: String,
}

/// The newest run of the same runbook and environment, started after this
/// one, that succeeded (and was not rolled back since): undoing this run
/// would pull the ground from under it.
pub fn later_success(record: &RunRecord, state_dir: &Path) -> Option<LaterRun> {
    let started = |text: &str| text.parse::<jiff::Timestamp>().ok();
    let this = started(&record.started)?;
    state::list_runs(state_dir)
        .into_iter()
        .filter_map(|dir| crate::journal::read(&state::journal_path(&dir)).ok())
        .filter(|other| {
            other.run_id != record.run_id
                && other.runbook == record.runbook
                && other.environment == record.environment
                && other.finished == Some(Status::Succeeded)
                && started(&other.started).is_some_and(|time| time > this)
        })
        .max_by_key(|other| started(&other.started))
        .map(|other| LaterRun {
            run_id: other.run_id,
            operator: other.operator,
            finished_at: other.finished_at,
        })
}

/// The refusal of a rollback under a later run that succeeded.
fn over_later_run(record: &RunRecord, later: &LaterRun) -> Error {
    let run = &record.run_id;
    Error::refuse(
        format!(
            "run {} by {} of `{}`{} succeeded on top of run {run} (it ended {}): undoing {run} would undo what it relies on",
            later.run_id,
            later.operator,
            record.runbook,
            record
                .environment
                .as_ref()
                .map(|name| format!(" in `{name}`"))
                .unwrap_or_default(),
            later.finished_at
        ),
        format!(
            "roll back {} first (`runbook rollback {}`); or, having checked what both changed, `runbook rollback {run} --force` (recorded)",
            later.run_id, later.run_id
        ),
    )
}

/// Refuses a rollback whose run ended longer ago than its environment's
/// `rollback_window`, unless it is an emergency. `--force` does not
/// override the window: it answers for a later run, a fact the operator
/// checked; the window is the environment owner's policy, which only an
/// emergency, with its own approvers, goes past.
fn check_window(request: &Request, record: &RunRecord, prepared: &Prepared) -> Result<(), Error> {
    let Some(window) = prepared
        .environment()
        .and_then(|environment| environment.rollback_window)
    else {
        return Ok(());
    };
    if request.emergency.is_some() {
        return Ok(());
    }
    let elapsed = record
        .finished_at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|ended| Duration::try_from(jiff::Timestamp::now().duration_since(ended)).ok());
    let Some(elapsed) = elapsed.filter(|elapsed| *elapsed > window) else {
        return Ok(());
    };
    let run = &record.run_id;
    Err(Error::refuse(
        format!(
            "run {run} ended {} ago, past the {} rollback window of environment `{}`",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
            humantime::format_duration(window),
            record.environment.as_deref().unwrap_or_default()
        ),
        format!(
            "roll forward with a new `runbook exec`; if undoing {run} is the way out, `runbook rollback {run} --emergency --reason \"...\"` (recorded, with the emergency approvals)"
        ),
    ))
}

/// What `runbook rollback RUN --dry-run` shows.
#[derive(Debug, Serialize)]
pub struct DryRollback {
    /// The run.
    pub run_id: String,
    /// Its runbook.
    pub runbook: String,
    /// Its environment.
    pub environment: Option<String>,
    /// Every step of the run: first those undone, in order, then the rest
    /// with why nothing is undone for them.
    pub steps: Vec<UndoView>,
    /// Why the rollback itself would be refused now, if it would.
    pub refused: Vec<Refusal>,
}

/// Why a rollback would be refused, and what to do about it.
#[derive(Debug, Serialize)]
pub struct Refusal {
    /// What stands in the way.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

/// One step in a rollback's dry run.
#[derive(Debug, Serialize)]
pub struct UndoView {
    /// The step's id.
    pub step: String,
    /// Its name.
    pub name: String,
    /// Its plugin's name and version, or `manual`.
    pub plugin: String,
    /// Its place in the rollback (1 for the first undone), when undone.
    pub order: Option<usize>,
    /// Why nothing is undone for it, when nothing is.
    pub nothing: Option<String>,
    /// What its plugin's `rollback` said, run in the dry-run sandbox.
    pub summary: Option<String>,
    /// The writes that `rollback` attempted, which the host held back (HTTP,
    /// AWS) or sent with `dryRun=All` (Kubernetes).
    pub intercepted: Vec<String>,
    /// Its rollback stopped at a write the host held back (HTTP and AWS
    /// writes are answered with a denial in a dry run): what it would do
    /// after that write is not shown.
    pub stopped_at_write: bool,
    /// Why its rollback could not be tried.
    pub error: Option<String>,
}

/// The dry run of `runbook rollback RUN`: what it would undo, in order,
/// each step's plugin's `rollback` called with its recorded outputs in the
/// dry-run sandbox (nothing changes), and why it would be refused, if it
/// would. Takes no lock and writes nothing.
pub async fn dry(
    runtime: &PluginRuntime,
    request: &Request,
    options: &Options,
    interface: &dyn Interface,
    connections: impl FnOnce(&Prepared) -> Connections,
) -> Result<DryRollback, Error> {
    let (journal, state_dir) = find(&request.run, options)?;
    let record = resume::read_journal(&journal)?;
    let secrets = match &request.secrets {
        Secrets::Environment => Secrets::IfSet,
        given => given.clone(),
    };
    let prepared = resume::prepare_again(
        runtime,
        &record,
        secrets,
        options.aws_endpoint.as_deref(),
        interface,
    )
    .await?;
    resume::check_fingerprint(&request.run, &record, &prepared, None)?;
    let mut refused: Vec<Refusal> = Vec::new();
    let mut note = |result: Result<(), Error>| match result {
        Ok(()) => {}
        Err(Error::Refused(diagnostics)) => {
            refused.extend(diagnostics.0.into_iter().map(|diagnostic| Refusal {
                message: diagnostic.message,
                hint: diagnostic.hint,
            }));
        }
        Err(other) => refused.push(Refusal {
            message: other.to_string(),
            hint: None,
        }),
    };
    note(check_undoable(&request.run, &record));
    if let Some(later) = later_success(&record, &state_dir).filter(|_| !request.force) {
        note(Err(over_later_run(&record, &later)));
    }
    note(check_window(request, &record, &prepared));
    let order = resume::completed_newest_first(&prepared.plan, &record);
    let connections = connections(&prepared);
    let mut steps = Vec::new();
    for (position, id) in order.iter().enumerate() {
        let mut view = dry_undo(runtime, &prepared, &record, &connections, id).await;
        view.order = Some(position + 1);
        steps.push(view);
    }
    steps.extend(untouched(&prepared, &record, &order));
    let redactor = prepared.secrets.redactor();
    for view in &mut steps {
        view.summary
            .iter_mut()
            .for_each(|text| redactor.scrub(text));
        view.error.iter_mut().for_each(|text| redactor.scrub(text));
        view.intercepted
            .iter_mut()
            .for_each(|text| redactor.scrub(text));
    }
    Ok(DryRollback {
        run_id: record.run_id.clone(),
        runbook: record.runbook.clone(),
        environment: record.environment.clone(),
        steps,
        refused,
    })
}

/// Calls one step's plugin's `rollback` in the dry-run sandbox, with the
/// outputs the journal recorded and what it checkpointed before changing
/// anything, as the real rollback would.
async fn dry_undo(
    runtime: &PluginRuntime,
    prepared: &Prepared,
    record: &RunRecord,
    connections: &Connections,
    id: &str,
) -> UndoView {
    let plan = &prepared.plan;
    let planned = plan
        .steps
        .iter()
        .find(|planned| planned.id.0 == id)
        .expect("the steps to undo come from the plan");
    let step = plan.step(planned);
    let Action::Plugin(name) = &step.action else {
        unreachable!("only plugin steps are undone")
    };
    let plugin = &prepared.plugins[name];
    let mut view = view_of(
        planned,
        format!("{} {}", plugin.descriptor.name, plugin.descriptor.version),
    );
    let outputs: StepOutputs = record
        .steps
        .iter()
        .map(|(id, step)| (id.clone(), step.outputs.clone()))
        .collect();
    let outcomes: StepOutcomes = record
        .steps
        .iter()
        .filter_map(|(id, step)| Some((id.clone(), step.status?)))
        .collect();
    let scope = Scope {
        plan,
        outputs: &outputs,
        secrets: &prepared.secrets,
        unknown: Unknown::Placeholder,
        outcomes: &outcomes,
        item: planned.item.as_ref(),
    };
    let params = match scope.render(&step.with) {
        Ok(params) => params.to_string(),
        Err(error) => {
            view.error = Some(format!("cannot render its parameters: {error}"));
            return view;
        }
    };
    let step_record = &record.steps[id];
    let mut recorded = step_record.outputs.clone();
    recorded.extend(step_record.checkpoints.clone());
    let (context, recorder) = dry_context(runtime, prepared, connections, planned);
    let result = runtime
        .rollback(
            plugin,
            context,
            step.memory_limit,
            &params,
            recorded.into_iter().collect(),
        )
        .await;
    view.intercepted = intercepted_writes(&recorder);
    match result {
        Ok(Ok(summary)) => view.summary = Some(summary),
        // The denial of a held-back write is the dry run working.
        Ok(Err(_)) if held_back_a_write(&recorder) => view.stopped_at_write = true,
        Ok(Err(error)) => view.error = Some(error.describe()),
        Err(error) => view.error = Some(error.to_string()),
    }
    view
}

/// The steps a rollback leaves alone, with why.
fn untouched(prepared: &Prepared, record: &RunRecord, undone: &[String]) -> Vec<UndoView> {
    let plan = &prepared.plan;
    plan.steps
        .iter()
        .filter(|planned| !undone.contains(&planned.id.0))
        .map(|planned| {
            let step = plan.step(planned);
            let step_record = record.steps.get(&planned.id.0);
            let (plugin, why) = match &step.action {
                Action::Manual(_) => ("manual".to_owned(), "a manual step: undo it by hand if it needs undoing".to_owned()),
                Action::Plugin(name) => {
                    let plugin = &prepared.plugins[name];
                    let why = if step.always {
                        "an `always` step: it runs again at the rollback's end, with `run.status` rolled_back".to_owned()
                    } else if step_record.is_some_and(|step| step.rolled_back) {
                        "undone already, by an earlier rollback of the run".to_owned()
                    } else {
                        match step_record.and_then(|step| step.status) {
                            Some(status) => format!(
                                "its outcome was {}: it completed nothing to undo",
                                status.as_str()
                            ),
                            None => "it never ran".to_owned(),
                        }
                    };
                    (format!("{} {}", plugin.descriptor.name, plugin.descriptor.version), why)
                }
            };
            let mut view = view_of(planned, plugin);
            view.nothing = Some(why);
            view
        })
        .collect()
}

fn view_of(planned: &crate::runbook::PlannedStep, plugin: String) -> UndoView {
    UndoView {
        step: planned.id.0.clone(),
        name: planned.name.clone(),
        plugin,
        order: None,
        nothing: None,
        summary: None,
        intercepted: Vec::new(),
        stopped_at_write: false,
        error: None,
    }
}

/// Refuses to carry out a rollback asked earlier (it waited for its
/// approvals, or its process died before it began) when a run succeeded
/// on top of this one since, unless it was asked with `--force`.
pub(super) fn refuse_over_later_run(record: &RunRecord, state_dir: &Path) -> Result<(), Error> {
    match later_success(record, state_dir) {
        Some(later) => Err(over_later_run(record, &later)),
        None => Ok(()),
    }
}
