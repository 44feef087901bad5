//! How a run that stopped (a crash, a failure, a gate) goes on. Steps that
//! succeeded never run again; a step that was running when the process
//! died runs again only if its plugin is idempotent or the operator says
//! so; a rollback cut short goes on where it stopped.

use super::{Error, Interface, Notice, Options, Prepared, Secrets, Start};
use crate::engine::{PendingRollback, Recorded};
use crate::events::{Choice, Status};
use crate::journal::{self, RollbackRecord, RollbackRequest, RunRecord};
use crate::plugin::PluginRuntime;
use crate::runbook::{Action, Bindings, Plan, Policy};
use crate::state::{self, RunLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `runbook resume RUN` asks.
#[derive(Debug, Clone)]
pub struct Request {
    /// The run's id.
    pub run: String,
    /// Interrupted steps to run again although their plugin is not
    /// idempotent.
    pub rerun: Vec<String>,
    /// Interrupted steps to treat as done (the operator checked that they
    /// took effect).
    pub skip: Vec<String>,
    /// Who resumes it, for the run log; `None` for the operator who
    /// started it.
    pub operator: Option<String>,
    /// What a person chose for the failed step the run waits at (`runbook
    /// decide`): the run must be waiting for one.
    pub decision: Option<Decision>,
}

/// A person's choice for the step a run waits at after it failed under
/// `on_failure = "ask"`.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What they chose.
    pub choice: Choice,
    /// Who.
    pub by: String,
    /// Why, in their words.
    pub note: String,
}

/// A stopped run, ready to go on: what its journal says, and what this
/// process does about it. It holds the run's lock, taken before the
/// journal was read, so that two resumes cannot both continue one run.
pub struct Resumption {
    /// What the journal says.
    pub record: RunRecord,
    /// Steps already finished, kept as they are.
    pub recorded: BTreeMap<String, Recorded>,
    /// A rollback that is to go on, or to start (the process died before
    /// it began).
    pub rollback: Option<PendingRollback>,
    /// Interrupted steps (or undos) to run again.
    pub rerun: Vec<String>,
    /// Interrupted steps (or undos) to skip.
    pub skip: Vec<String>,
    /// The state folder the run started in.
    pub state_dir: PathBuf,
    /// Who resumes it.
    pub operator: String,
    /// A rollback this process was asked for (`runbook rollback`): it is
    /// recorded as `rollback_requested` rather than `run_resumed`.
    pub asked: Option<RollbackRequest>,
    /// The choice this process carries out for the failed step the run
    /// waited at (`runbook decide`), recorded after `run_resumed`.
    pub decision: Option<(String, Decision)>,
    /// Choices that hold for failed steps (skip, abort), by step.
    pub decisions: BTreeMap<String, Choice>,
    /// Held for as long as this process continues the run.
    lock: RunLock,
}

impl Resumption {
    /// The run's lock, held by this process.
    pub fn lock(&self) -> &RunLock {
        &self.lock
    }
}

/// What earlier processes of a run left for this one: nothing, for a new run.
#[derive(Debug, Default)]
pub struct Earlier {
    /// Steps already finished.
    pub recorded: BTreeMap<String, Recorded>,
    /// A rollback to continue.
    pub rollback: Option<PendingRollback>,
    /// What steps recorded for their rollback (`log.checkpoint`), by step.
    pub checkpoints: BTreeMap<String, BTreeMap<String, String>>,
    /// Approvals given so far.
    pub approvals: Vec<crate::journal::Approval>,
    /// The operator's signature of the plan, when an earlier process of
    /// the run recorded one.
    pub operator_signature: Option<crate::events::SignatureRecord>,
    /// Manual steps confirmed: step, and who.
    pub confirmations: BTreeMap<String, String>,
    /// Steps that wait to be called again, and where they stand.
    pub waits: BTreeMap<String, crate::journal::WaitRecord>,
    /// What people chose for steps that failed under `on_failure = "ask"`.
    pub decisions: BTreeMap<String, Choice>,
    /// What the run announced (`[notify]`): the start, the last holding
    /// update, a wait.
    pub notified: crate::journal::NotifiedRecord,
}

impl Earlier {
    /// What a resumed run's journal holds.
    pub fn of(resumption: &Resumption) -> Self {
        let record = &resumption.record;
        Earlier {
            recorded: resumption.recorded.clone(),
            rollback: resumption.rollback.clone(),
            checkpoints: record
                .steps
                .iter()
                .filter(|(_, step)| !step.checkpoints.is_empty())
                .map(|(id, step)| (id.clone(), step.checkpoints.clone()))
                .collect(),
            approvals: record.approvals.clone(),
            operator_signature: record.operator_signature.clone(),
            confirmations: record.confirmations.clone(),
            waits: record
                .steps
                .iter()
                .filter_map(|(id, step)| Some((id.clone(), step.wait.clone()?)))
                .collect(),
            decisions: resumption.decisions.clone(),
            notified: record.notified.clone(),
        }
    }
}

/// Finds the run (in the run index, or [`Options::state_dir`]), refuses
/// one that is over or whose runbook changed, prepares it again exactly as
/// it started, takes its lock, and decides from its journal what this
/// process does.
pub async fn prepare(
    runtime: &PluginRuntime,
    request: &Request,
    options: &Options,
    interface: &dyn Interface,
) -> Result<(Prepared, Start), Error> {
    let (run_dir, state_dir) = find(&request.run, options)?;
    let journal_path = state::journal_path(&run_dir);
    let record = read_journal(&journal_path)?;
    check_decision(request, &record)?;
    check_resumable(request, &record, &run_dir, &state_dir, false, interface)?;
    let mut prepared = prepare_again(
        runtime,
        &record,
        Secrets::Environment,
        options.aws_endpoint.as_deref(),
        interface,
    )
    .await?;
    if let Some(asked) = &record.rollback_request {
        // A rollback asked after the run ended: its approvals are bound
        // to the rollback's fingerprint, and nothing may have changed.
        check_fingerprint(&request.run, &record, &prepared, Some(asked))?;
        bind_to_rollback(&mut prepared, &asked.steps);
    } else {
        check_fingerprint(&request.run, &record, &prepared, None)?;
    }

    // Only the lock's holder may continue the run, and what it continues
    // is what the journal says once the lock is held: another process may
    // have resumed it meanwhile.
    let lock = super::gates::take_lock(&prepared.plan, &state_dir, options, interface).await?;
    // With a shared backend, what the backend holds is the run: this
    // machine's copy becomes it (another machine may have gone on).
    state::adopt(&state_dir, &request.run).map_err(|source| Error::Journal {
        path: state::run_dir(&state_dir, &request.run),
        source,
    })?;
    let journal_path = state::journal_path(&state::run_dir(&state_dir, &request.run));
    let record = read_journal(&journal_path)?;
    check_resumable(request, &record, &run_dir, &state_dir, true, interface)?;
    if record.recovered_truncation {
        interface.notice(Notice::JournalTornTail);
    }
    check_named_steps(request, &prepared.plan)?;
    check_decision(request, &record)?;
    if record.rollback.is_none()
        && let Some(asked) = &record.rollback_request
    {
        // Approved meanwhile, or its process died before it began: a later
        // run may have succeeded since it was asked for.
        if asked.forced_over.is_none() {
            super::rollback::refuse_over_later_run(&record, &state_dir)?;
        }
    }
    let resumption = take_over(request, record, &prepared, state_dir, lock, None)?;
    Ok((prepared, Start::Resume(Box::new(resumption))))
}

/// Decides from the journal what this process does, holding the run's
/// lock; `asked` is a rollback to record first (`runbook rollback`).
pub(super) fn take_over(
    request: &Request,
    record: RunRecord,
    prepared: &Prepared,
    state_dir: PathBuf,
    lock: RunLock,
    asked: Option<RollbackRequest>,
) -> Result<Resumption, Error> {
    let decided = decide(request, &record, prepared)?;
    let decision = request.decision.clone().and_then(|decision| {
        let (step, _) = record.awaiting_decision()?;
        Some((step.to_owned(), decision))
    });
    Ok(Resumption {
        decision,
        decisions: decided.decisions,
        record,
        recorded: decided.recorded,
        rollback: decided.rollback,
        rerun: decided.rerun,
        skip: decided.skip,
        state_dir,
        operator: request
            .operator
            .clone()
            .unwrap_or_else(|| prepared.plan.operator.clone()),
        asked,
        lock,
    })
}

/// Prepares the run again exactly as it started: its file, environment,
/// parameters, operator and id.
pub(super) async fn prepare_again(
    runtime: &PluginRuntime,
    record: &RunRecord,
    secrets: Secrets,
    aws_endpoint: Option<&str>,
    interface: &dyn Interface,
) -> Result<Prepared, Error> {
    let bindings = Bindings {
        environment: record.environment.clone(),
        // Each value as the text `--set` gave (a typed one parses back to
        // itself); a typed parameter that had no value (`null`) is left
        // unset, to be without one again.
        sets: record
            .params
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), crate::template::as_text(value)))
            .collect(),
        operator: record.operator.clone(),
        run_id: record.run_id.clone(),
        lenient: false,
    };
    let file = locate_runbook(&record.file, &std::env::current_dir().unwrap_or_default())
        .ok_or_else(|| {
            Error::refuse(
                format!(
                    "the runbook {} that run {} started from is not on this machine",
                    record.file, record.run_id
                ),
                "run this from a checkout that has it: it is looked for by the end of its path (such as runbooks/deploy.toml) in this folder and the folders above",
            )
        })?;
    super::prepare(runtime, &file, bindings, secrets, aws_endpoint, interface).await
}

/// Where the runbook a run started from is on this machine: the path it
/// was started from, else (a run that started on another machine, whose
/// checkout is elsewhere) the longest end of that path found in `here` or
/// a folder above it. The run's fingerprint then proves it is the same
/// runbook; a different one is refused as changed.
pub fn locate_runbook(started_from: &str, here: &Path) -> Option<PathBuf> {
    let original = PathBuf::from(started_from);
    if original.is_file() {
        return Some(original);
    }
    let parts: Vec<&std::ffi::OsStr> = original
        .components()
        .filter_map(|component| match component {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    let ancestors: Vec<&Path> = here.ancestors().take(8).collect();
    for take in (1..=parts.len().min(5)).rev() {
        let end: PathBuf = parts[parts.len() - take..].iter().collect();
        for folder in &ancestors {
            let candidate = folder.join(&end);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The fingerprint of undoing `steps` of the prepared run.
pub(super) fn rollback_fingerprint(prepared: &Prepared, steps: Vec<String>) -> String {
    crate::gates::rollback_fingerprint(&prepared.fingerprint, &prepared.plan.run_id, &steps)
}

/// Makes the prepared run's fingerprint, and its parts, those of undoing
/// `steps`: what the rollback's approvals, and its operator, sign.
pub(super) fn bind_to_rollback(prepared: &mut Prepared, steps: &[String]) -> String {
    let fingerprint = rollback_fingerprint(prepared, steps.to_vec());
    prepared.parts = crate::gates::rollback_parts(
        &prepared.parts,
        &prepared.fingerprint,
        &prepared.plan.run_id,
        steps,
    );
    prepared.fingerprint = fingerprint.clone();
    fingerprint
}

/// The run's folder (in [`Options::state_dir`], the run index, or below
/// here) and the state folder it lives in.
pub(super) fn find(run: &str, options: &Options) -> Result<(PathBuf, PathBuf), Error> {
    let run_dir = state::find_run(run, options.state_dir.as_deref()).map_err(|error| {
        Error::refuse(
            error.to_string(),
            "`runbook runs` lists the runs here; pass the state folder with `--state-dir DIR`",
        )
    })?;
    let state_dir = run_dir
        .parent()
        .and_then(|runs| runs.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".runbook"));
    Ok((run_dir, state_dir))
}

/// Reads the run's journal; a run that never started has nothing to resume.
pub(super) fn read_journal(path: &Path) -> Result<RunRecord, Error> {
    journal::read(path).map_err(|error| match error {
        journal::JournalError::NoStart(_) => Error::refuse(
            error.to_string(),
            "nothing ran; start a new run with `runbook exec`",
        ),
        other => Error::JournalRead(other),
    })
}

/// Refuses a run that was abandoned or is over: succeeded, or rolled back
/// to the end. A crash between such a run's end and its deployment record
/// leaves the record to write now, by the lock's holder only, so that it
/// never replaces the record a finishing process writes.
fn check_resumable(
    request: &Request,
    record: &RunRecord,
    run_dir: &Path,
    state_dir: &Path,
    holding_lock: bool,
    interface: &dyn Interface,
) -> Result<(), Error> {
    if record.abandoned {
        return Err(Error::refuse(
            format!("run {} was abandoned with `runbook unlock`", request.run),
            "an abandoned run is over, and newer runs may have changed what it touched; start a new run with `runbook exec`",
        ));
    }
    let over = record.finished == Some(Status::Succeeded)
        || record.rollback.as_ref().is_some_and(|rollback| {
            rollback.whole_run && rollback.finished && record.finished.is_some()
        });
    if over {
        write_missing_record(record, run_dir, state_dir, holding_lock, interface);
    }
    if record.finished == Some(Status::Succeeded) {
        return Err(Error::refuse(
            format!("run {} already succeeded", request.run),
            "start a new run with `runbook exec`",
        ));
    }
    if over {
        return Err(Error::refuse(
            format!("run {} was rolled back", request.run),
            "a rolled-back run is over; start a new run with `runbook exec`",
        ));
    }
    Ok(())
}

/// Writes the deployment record of a run that is over, when a crash left
/// it unwritten (or left the one of the run's earlier end, before a
/// `runbook rollback`) and this process holds (or can take) the lock.
fn write_missing_record(
    record: &RunRecord,
    run_dir: &Path,
    state_dir: &Path,
    holding_lock: bool,
    interface: &dyn Interface,
) {
    let lock = (!holding_lock).then(|| {
        RunLock::acquire(&state::lock_path(
            state_dir,
            &record.runbook,
            record.environment.as_deref(),
        ))
    });
    let may_write = holding_lock || matches!(lock, Some(Ok(_)));
    let ending = record.finished.map(Status::as_str);
    let written_ending = state::read_record(state_dir, &record.run_id)
        .map(|written| written["status"].as_str().map(str::to_owned));
    let stale = match written_ending {
        None => true,
        Some(status) => status.as_deref() != ending,
    };
    if may_write && stale {
        let rebuilt = state::DeploymentRecord::from_journal(record, &state::journal_path(run_dir));
        if let Ok(path) = state::write_record(state_dir, &rebuilt) {
            interface.notice(Notice::RecordWritten(path));
        }
    }
}

/// Refuses to resume a run whose runbook, parameters, plugins or grants
/// changed since it started: its approvals were given for what started.
/// For a rollback asked after the run ended (`asked`), the journal holds
/// the rollback's fingerprint, made from the run's.
pub(super) fn check_fingerprint(
    run: &str,
    record: &RunRecord,
    prepared: &Prepared,
    asked: Option<&RollbackRequest>,
) -> Result<(), Error> {
    let now = match asked {
        Some(asked) => rollback_fingerprint(prepared, asked.steps.clone()),
        None => prepared.fingerprint.clone(),
    };
    if record.plan_hash.as_deref() == Some(now.as_str()) {
        return Ok(());
    }
    Err(Error::refuse(
        format!(
            "the runbook, its parameters, plugins or grants changed since run {} started (fingerprint {} is now {})",
            run,
            record
                .plan_hash
                .as_deref()
                .map(|hash| &hash[..12.min(hash.len())])
                .unwrap_or("unknown"),
            &now[..12]
        ),
        "resume and rollback run exactly what was started; restore the files, or start a new run with `runbook exec`",
    ))
}

/// Refuses `--rerun` and `--skip` of steps the run does not have.
fn check_named_steps(request: &Request, plan: &Plan) -> Result<(), Error> {
    let known: Vec<&str> = plan
        .steps
        .iter()
        .map(|planned| planned.id.0.as_str())
        .collect();
    match request
        .rerun
        .iter()
        .chain(&request.skip)
        .find(|named| !known.contains(&named.as_str()))
    {
        Some(named) => Err(Error::refuse(
            format!("run {} has no step `{named}`", request.run),
            format!("its steps are: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Refuses `runbook decide` for a run that waits for no decision.
fn check_decision(request: &Request, record: &RunRecord) -> Result<(), Error> {
    if request.decision.is_none() || record.awaiting_decision().is_some() {
        return Ok(());
    }
    let state = match record.finished {
        Some(Status::Waiting) => "waiting, but not for a decision",
        Some(status) => status.as_str(),
        None => "not finished (its process may still be running, or died)",
    };
    Err(Error::refuse(
        format!(
            "run {} is not waiting for a decision: it is {state}",
            request.run
        ),
        format!(
            "a run waits for one when a step fails under `on_failure = \"ask\"`; `runbook show {}` shows where it stands",
            request.run
        ),
    ))
}

/// What this process does with each step the journal knows.
#[derive(Default)]
struct Decided {
    recorded: BTreeMap<String, Recorded>,
    rollback: Option<PendingRollback>,
    rerun: Vec<String>,
    skip: Vec<String>,
    /// Interrupted steps (`true`: their undo) that neither an idempotent
    /// plugin nor the operator allows to run again.
    undecided: Vec<(String, bool)>,
    /// Choices that hold for steps that failed under `ask` (skip, abort).
    decisions: BTreeMap<String, Choice>,
}

/// Decides from the journal which steps are kept, run again or skipped,
/// and whether a rollback goes on or starts. The first interrupted step
/// (or undo) that may not simply run again is asked about; the rest come
/// with the next resume.
fn decide(request: &Request, record: &RunRecord, prepared: &Prepared) -> Result<Decided, Error> {
    let plan = &prepared.plan;
    // A rollback cut short, or a whole-run rollback whose process died
    // before the run's end (its `always` steps may not have run).
    let pending = record
        .rollback
        .as_ref()
        .filter(|rollback| !rollback.finished || (rollback.whole_run && record.finished.is_none()));
    let into_rollback = asked_rollback(record)
        .or_else(|| decided_rollback(request, plan, record))
        .or_else(|| into_rollback(plan, record));
    let mut decided = Decided::default();
    let rolling_back = pending.is_some() || into_rollback.is_some();
    decide_steps(request, record, prepared, rolling_back, &mut decided);
    decided.rollback = match pending {
        None => into_rollback,
        Some(rollback) => Some(continue_rollback(request, record, rollback, &mut decided)),
    };
    if let Some((id, undo)) = decided.undecided.first() {
        let (what, again) = if *undo {
            ("its rollback was running", "undo it again")
        } else {
            ("it was running", "run it again")
        };
        return Err(Error::refuse(
            format!(
                "`{id}`: {what} when the run stopped, and its plugin is not idempotent: it may or may not have taken effect"
            ),
            format!(
                "check by hand, then `runbook resume {} --rerun {id}` to {again} or `--skip {id}` if it took effect",
                request.run
            ),
        ));
    }
    Ok(decided)
}

/// An operator asked to roll the run back after it ended (`runbook
/// rollback`), and its rollback has not begun: it waited for approvals,
/// or the process died first. It undoes the steps the request named.
fn asked_rollback(record: &RunRecord) -> Option<PendingRollback> {
    let asked = record.rollback_request.as_ref()?;
    if record.rollback.is_some() {
        return None;
    }
    Some(PendingRollback {
        steps: asked.steps.clone(),
        whole_run: true,
        failed_step: None,
        reason: format!("rollback asked by {}", asked.operator),
        started: false,
        requested: true,
    })
}

/// The choice for a step that failed under `ask`: this process's (`runbook
/// decide`), else one the journal holds that a crash kept from being
/// carried out. An abort ended its process: a later resume asks again.
fn choice_for(request: &Request, record: &RunRecord, id: &str) -> Option<Choice> {
    let step = record.steps.get(id)?;
    if let Some(decision) = &request.decision
        && record.awaiting_decision().map(|(step, _)| step) == Some(id)
    {
        return Some(decision.choice);
    }
    step.decision.filter(|choice| *choice != Choice::Abort)
}

/// A person chose to roll back at a step that failed under `ask`: the
/// rollback undoes what succeeded, newest first.
fn decided_rollback(request: &Request, plan: &Plan, record: &RunRecord) -> Option<PendingRollback> {
    if record.rollback.is_some() {
        return None;
    }
    let failed = plan.steps.iter().find(|planned| {
        plan.policy(planned) == Policy::Ask
            && choice_for(request, record, &planned.id.0) == Some(Choice::Rollback)
    })?;
    Some(PendingRollback {
        steps: completed_newest_first(plan, record),
        whole_run: true,
        failed_step: Some(failed.id.0.clone()),
        reason: "a step failed, and rolling back was chosen".to_owned(),
        started: false,
        requested: false,
    })
}

/// A step failed and its policy was to roll back, but the process died
/// before the rollback began: the rollback is what comes next, undoing
/// what succeeded, newest first.
fn into_rollback(plan: &Plan, record: &RunRecord) -> Option<PendingRollback> {
    if record.finished.is_some()
        || record
            .rollback
            .as_ref()
            .is_some_and(|rollback| !rollback.finished || rollback.whole_run)
    {
        return None;
    }
    let failed = plan.steps.iter().find(|planned| {
        let policy = plan.policy(planned);
        record.steps.get(&planned.id.0).is_some_and(|step_record| {
            matches!(step_record.status, Some(Status::Failed | Status::Denied))
                && policy == Policy::Rollback
        })
    })?;
    let undoable = |planned: &&crate::runbook::PlannedStep| {
        let step = plan.step(planned);
        !step.always && matches!(step.action, Action::Plugin(_))
    };
    // Steps that ran beside the failed one and were cut short by the
    // crash are undone first (what they did is unknown; their checkpoints
    // say what to restore), then the completed ones.
    let interrupted = plan
        .steps
        .iter()
        .filter(undoable)
        .filter(|planned| {
            record
                .steps
                .get(&planned.id.0)
                .is_some_and(|step_record| step_record.interrupted)
        })
        .map(|planned| planned.id.0.clone());
    Some(PendingRollback {
        steps: interrupted
            .chain(completed_newest_first(plan, record))
            .collect(),
        whole_run: true,
        failed_step: Some(failed.id.0.clone()),
        reason: "a step failed".to_owned(),
        started: false,
        requested: false,
    })
}

/// The plugin steps (not `always` ones) that the journal shows succeeded,
/// in the reverse of the order they finished in: what a rollback undoes.
pub(super) fn completed_newest_first(plan: &Plan, record: &RunRecord) -> Vec<String> {
    let mut done: Vec<(usize, String)> = plan
        .steps
        .iter()
        .filter(|planned| {
            let step = plan.step(planned);
            !step.always && matches!(step.action, Action::Plugin(_))
        })
        .filter_map(|planned| {
            let step_record = record.steps.get(&planned.id.0)?;
            (step_record.status == Some(Status::Succeeded) && !step_record.rolled_back)
                .then_some(())?;
            Some((step_record.order?, planned.id.0.clone()))
        })
        .collect();
    done.sort();
    done.into_iter().rev().map(|(_, id)| id).collect()
}

/// Which steps are kept as done, run again, skipped, or asked about.
fn decide_steps(
    request: &Request,
    record: &RunRecord,
    prepared: &Prepared,
    rolling_back: bool,
    decided: &mut Decided,
) {
    let plan = &prepared.plan;
    for planned in &plan.steps {
        let id = &planned.id.0;
        let Some(step_record) = record.steps.get(id) else {
            continue;
        };
        let step = plan.step(planned);
        // An `always` step ran at the end of a process of the run: when it
        // was the last process, and it died before the run's end was
        // recorded, it is done; when that process's end was recorded (the
        // run failed or was cancelled, and is now resumed), it runs again
        // at the new end.
        let always_done = record.finished.is_none() && step_record.finished_in == record.processes;
        if step_record.status == Some(Status::Succeeded) && (!step.always || always_done) {
            decided.recorded.insert(
                id.clone(),
                Recorded {
                    status: Status::Succeeded,
                    outputs: step_record.outputs.clone(),
                    order: step_record.order.unwrap_or(usize::MAX),
                    summary: step_record.summary.clone(),
                },
            );
            continue;
        }
        if matches!(step_record.status, Some(Status::Failed | Status::Denied))
            && !rolling_back
            && !step.always
            && plan.policy(planned) == Policy::Ask
        {
            // Failed under `ask`: it runs again only when a person chose
            // so; otherwise what they chose (or will choose) holds.
            match choice_for(request, record, id) {
                Some(Choice::Retry) => {}
                choice => {
                    if let Some(choice) = choice {
                        decided.decisions.insert(id.clone(), choice);
                    }
                    decided.recorded.insert(
                        id.clone(),
                        Recorded {
                            status: step_record.status.unwrap_or(Status::Failed),
                            outputs: step_record.outputs.clone(),
                            order: usize::MAX,
                            summary: step_record.summary.clone(),
                        },
                    );
                }
            }
            continue;
        }
        // When the run goes on with a rollback, only its `always` steps run
        // again: an interrupted ordinary step is undone, not repeated.
        if !step_record.interrupted || (rolling_back && !step.always) {
            continue;
        }
        let idempotent = match &step.action {
            Action::Plugin(name) => prepared.plugins[name].descriptor.idempotent,
            Action::Manual(_) => true,
        };
        if request.skip.contains(id) {
            // The operator checked that it took effect: its dependents go on.
            decided.skip.push(id.clone());
            decided.recorded.insert(
                id.clone(),
                Recorded {
                    status: Status::Succeeded,
                    outputs: BTreeMap::new(),
                    order: usize::MAX,
                    summary: "marked done by the operator on resume".to_owned(),
                },
            );
        } else if idempotent || request.rerun.contains(id) || step_record.wait.is_some() {
            // A step that waited goes on from the state of its last wait,
            // which its plugin keeps safe to redo from.
            decided.rerun.push(id.clone());
        } else {
            decided.undecided.push((id.clone(), false));
        }
    }
}

/// A rollback cut short goes on where it stopped. An undo that was in
/// flight runs again if its plugin says that is harmless; otherwise the
/// operator decides, as for a step.
fn continue_rollback(
    request: &Request,
    record: &RunRecord,
    rollback: &RollbackRecord,
    decided: &mut Decided,
) -> PendingRollback {
    let mut steps = Vec::new();
    for id in &rollback.steps {
        let Some(step_record) = record.steps.get(id) else {
            continue;
        };
        if step_record.rollback_status.is_some() {
            continue;
        }
        if step_record.rollback_interrupted {
            if request.skip.contains(id) {
                decided.skip.push(id.clone());
                continue;
            }
            if !step_record.idempotent_rollback && !request.rerun.contains(id) {
                decided.undecided.push((id.clone(), true));
                continue;
            }
            decided.rerun.push(id.clone());
        }
        steps.push(id.clone());
    }
    PendingRollback {
        steps,
        whole_run: rollback.whole_run,
        failed_step: record.failed_step.clone(),
        reason: rollback.reason.clone(),
        started: true,
        requested: record.rollback_request.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::locate_runbook;

    #[test]
    fn a_runbook_started_elsewhere_is_found_by_the_end_of_its_path() {
        let checkout = tempfile::tempdir().unwrap();
        let runbooks = checkout.path().join("deploys/runbooks");
        std::fs::create_dir_all(&runbooks).unwrap();
        std::fs::write(runbooks.join("api.toml"), "").unwrap();
        std::fs::write(checkout.path().join("api.toml"), "").unwrap();
        let elsewhere = "/home/alice/src/deploys/runbooks/api.toml";
        // From the checkout's root or from inside it, the longest end wins.
        assert_eq!(
            locate_runbook(elsewhere, checkout.path()),
            Some(checkout.path().join("deploys/runbooks/api.toml"))
        );
        assert_eq!(
            locate_runbook(elsewhere, &runbooks),
            Some(runbooks.join("api.toml"))
        );
        assert_eq!(locate_runbook("/elsewhere/other.toml", &runbooks), None);
    }
}
