//! `runbook resume RUN`: continue a run that stopped (a crash, a failure, a
//! gate). Steps that succeeded are never run again; a step that was running
//! when the process died runs again only if its plugin is idempotent or the
//! operator says so.

use super::session::{self, RunOptions, Start};
use super::{Cli, Failure};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::{PendingRollback, Recorded};
use crate::events::Status;
use crate::journal;
use crate::runbook::{Action, Bindings, Policy};
use crate::state;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `runbook resume RUN [--rerun STEP] [--skip STEP]`
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run's id (`runbook runs` lists them).
    run: String,

    /// Run this interrupted step again although its plugin is not idempotent.
    #[arg(long, value_name = "STEP")]
    rerun: Vec<String>,

    /// Treat this interrupted step as done (you checked that it took effect) and go on.
    #[arg(long, value_name = "STEP")]
    skip: Vec<String>,

    #[command(flatten)]
    options: RunOptions,
}

fn refuse(message: String, hint: impl Into<String>) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &ResumeArgs) -> Result<u8, Failure> {
    let run_dir =
        state::find_run(&args.run, args.options.state_dir.as_deref()).map_err(|error| {
            refuse(
                error.to_string(),
                "pass the state folder with `--state-dir DIR`",
            )
        })?;
    let journal_path = state::journal_path(&run_dir);
    let record = read_journal(&journal_path)?;
    let state_dir: PathBuf = run_dir
        .parent()
        .and_then(|runs| runs.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".runbook"));
    check_resumable(args, &record, &run_dir, &state_dir, false)?;
    let mut options = args.options.clone();
    options.state_dir = Some(state_dir.clone());
    let bindings = Bindings {
        environment: record.environment.clone(),
        sets: record.params.clone().into_iter().collect(),
        operator: record.operator.clone(),
        run_id: record.run_id.clone(),
        lenient: false,
    };
    let file = PathBuf::from(&record.file);
    let prepared = session::prepare(cli, &file, bindings, &options).await?;
    if record.plan_hash.as_deref() != Some(prepared.fingerprint.as_str()) {
        return Err(refuse(
            format!(
                "the runbook, its parameters, plugins or grants changed since run {} started (fingerprint {} is now {})",
                args.run,
                record
                    .plan_hash
                    .as_deref()
                    .map(|hash| &hash[..12.min(hash.len())])
                    .unwrap_or("unknown"),
                &prepared.fingerprint[..12]
            ),
            "resume runs exactly what was started; restore the files, or start a new run with `runbook exec`",
        ));
    }

    // Only the lock's holder may continue the run, and what it continues
    // is what the journal says once the lock is held: another process may
    // have resumed it meanwhile.
    let lock = session::take_lock(&prepared.plan, &state_dir, &options).await?;
    let record = read_journal(&journal_path)?;
    check_resumable(args, &record, &run_dir, &state_dir, true)?;
    if record.recovered_truncation {
        eprintln!("note: the journal's last record was cut short by the crash and was dropped");
    }

    let plan = &prepared.plan;
    let known: Vec<&str> = plan
        .steps
        .iter()
        .map(|planned| planned.id.0.as_str())
        .collect();
    for named in args.rerun.iter().chain(&args.skip) {
        if !known.contains(&named.as_str()) {
            return Err(refuse(
                format!("run {} has no step `{named}`", args.run),
                format!("its steps are: {}", known.join(", ")),
            ));
        }
    }
    // A rollback cut short, or a whole-run rollback whose process died
    // before the run's end (its `always` steps may not have run).
    let pending = record
        .rollback
        .as_ref()
        .filter(|rollback| !rollback.finished || (rollback.whole_run && record.finished.is_none()));
    // A step failed and its policy was to roll back, but the process died
    // before the rollback began: the rollback is what comes next, undoing
    // what succeeded, newest first.
    let failed_into_rollback = if record.finished.is_none()
        && record
            .rollback
            .as_ref()
            .is_none_or(|rollback| rollback.finished && !rollback.whole_run)
    {
        plan.steps.iter().find(|planned| {
            let step = plan.step(planned);
            let policy = step.on_failure.unwrap_or(plan.runbook.on_failure);
            record.steps.get(&planned.id.0).is_some_and(|step_record| {
                matches!(step_record.status, Some(Status::Failed | Status::Denied))
                    && policy == Policy::Rollback
            })
        })
    } else {
        None
    };
    let into_rollback = failed_into_rollback.map(|failed| {
        // Steps that ran beside the failed one and were cut short by the
        // crash are undone first (what they did is unknown; their
        // checkpoints say what to restore), then the completed ones.
        let interrupted: Vec<String> = plan
            .steps
            .iter()
            .filter(|planned| {
                let step = plan.step(planned);
                !step.always
                    && matches!(step.action, Action::Plugin(_))
                    && record
                        .steps
                        .get(&planned.id.0)
                        .is_some_and(|step_record| step_record.interrupted)
            })
            .map(|planned| planned.id.0.clone())
            .collect();
        let mut done: Vec<(usize, String)> = plan
            .steps
            .iter()
            .filter(|planned| {
                let step = plan.step(planned);
                !step.always && matches!(step.action, Action::Plugin(_))
            })
            .filter_map(|planned| {
                let order = record.steps.get(&planned.id.0)?.order?;
                Some((order, planned.id.0.clone()))
            })
            .collect();
        done.sort();
        PendingRollback {
            steps: interrupted
                .into_iter()
                .chain(done.into_iter().rev().map(|(_, id)| id))
                .collect(),
            whole_run: true,
            failed_step: Some(failed.id.0.clone()),
            reason: "a step failed".to_owned(),
            started: false,
        }
    });
    let mut recorded = BTreeMap::new();
    let mut rerun = Vec::new();
    let mut skip = Vec::new();
    let mut undecided = Vec::new();
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
            recorded.insert(
                id.clone(),
                Recorded {
                    status: Status::Succeeded,
                    outputs: step_record.outputs.clone(),
                    order: step_record.order.unwrap_or(usize::MAX),
                },
            );
            continue;
        }
        // When the run goes on with a rollback, only its `always` steps run
        // again: an interrupted ordinary step is undone, not repeated.
        let rolling_back = pending.is_some() || into_rollback.is_some();
        if !step_record.interrupted || (rolling_back && !step.always) {
            continue;
        }
        let idempotent = match &step.action {
            Action::Plugin(name) => prepared.plugins[name].descriptor.idempotent,
            Action::Manual(_) => true,
        };
        if args.skip.contains(id) {
            // The operator checked that it took effect: its dependents go on.
            skip.push(id.clone());
            recorded.insert(
                id.clone(),
                Recorded {
                    status: Status::Succeeded,
                    outputs: BTreeMap::new(),
                    order: usize::MAX,
                },
            );
        } else if idempotent || args.rerun.contains(id) {
            rerun.push(id.clone());
        } else {
            undecided.push((id.clone(), false));
        }
    }
    // A rollback cut short goes on where it stopped. An undo that was in
    // flight runs again if its plugin says that is harmless; otherwise the
    // operator decides, as for a step.
    let rollback = match pending {
        None => into_rollback,
        Some(rollback) => {
            let mut steps = Vec::new();
            for id in &rollback.steps {
                let Some(step_record) = record.steps.get(id) else {
                    continue;
                };
                if step_record.rollback_status.is_some() {
                    continue;
                }
                if step_record.rollback_interrupted {
                    if args.skip.contains(id) {
                        skip.push(id.clone());
                        continue;
                    }
                    if !step_record.idempotent_rollback && !args.rerun.contains(id) {
                        undecided.push((id.clone(), true));
                        continue;
                    }
                    rerun.push(id.clone());
                }
                steps.push(id.clone());
            }
            Some(PendingRollback {
                steps,
                whole_run: rollback.whole_run,
                failed_step: record.failed_step.clone(),
                reason: rollback.reason.clone(),
                started: true,
            })
        }
    };
    // The first undecided step (or undo) is asked about; the rest come
    // with the next resume.
    if let Some((id, undo)) = undecided.first() {
        let (what, again) = if *undo {
            ("its rollback was running", "undo it again")
        } else {
            ("it was running", "run it again")
        };
        return Err(refuse(
            format!(
                "`{id}`: {what} when the run stopped, and its plugin is not idempotent: it may or may not have taken effect"
            ),
            format!(
                "check by hand, then `runbook resume {} --rerun {id}` to {again} or `--skip {id}` if it took effect",
                args.run
            ),
        ));
    }
    session::drive(
        cli,
        prepared,
        &options,
        Start::Resume {
            record: Box::new(record),
            recorded,
            rollback,
            rerun,
            skip,
        },
        Some(lock),
    )
    .await
}

fn read_journal(path: &std::path::Path) -> Result<journal::RunRecord, Failure> {
    journal::read(path).map_err(|error| match error {
        journal::JournalError::NoStart(_) => refuse(
            error.to_string(),
            "nothing ran; start a new run with `runbook exec`",
        ),
        other => Failure::Internal(other.into()),
    })
}

/// Refuses a run that is over: succeeded, or rolled back to the end.
fn check_resumable(
    args: &ResumeArgs,
    record: &journal::RunRecord,
    run_dir: &std::path::Path,
    state_dir: &std::path::Path,
    holding_lock: bool,
) -> Result<(), Failure> {
    if record.abandoned {
        return Err(refuse(
            format!("run {} was abandoned with `runbook unlock`", args.run),
            "an abandoned run is over, and newer runs may have changed what it touched; start a new run with `runbook exec`",
        ));
    }
    let over = record.finished == Some(Status::Succeeded)
        || record.rollback.as_ref().is_some_and(|rollback| {
            rollback.whole_run && rollback.finished && record.finished.is_some()
        });
    if over {
        // A crash between the end of the run and its deployment record
        // leaves the record to write now: by the lock's holder only, so
        // that it never replaces the record a finishing process writes.
        let lock = (!holding_lock).then(|| {
            state::RunLock::acquire(&state::lock_path(
                state_dir,
                &record.runbook,
                record.environment.as_deref(),
            ))
        });
        let may_write = holding_lock || matches!(lock, Some(Ok(_)));
        if may_write
            && !state_dir
                .join("deployments")
                .join(format!("{}.json", record.run_id))
                .exists()
        {
            let rebuilt =
                state::DeploymentRecord::from_journal(record, &state::journal_path(run_dir));
            if let Ok(path) = state::write_record(state_dir, &rebuilt) {
                eprintln!(
                    "note: the run's deployment record was missing and is written now: {}",
                    path.display()
                );
            }
        }
    }
    if record.finished == Some(Status::Succeeded) {
        return Err(refuse(
            format!("run {} already succeeded", args.run),
            "start a new run with `runbook exec`",
        ));
    }
    if over {
        return Err(refuse(
            format!("run {} was rolled back", args.run),
            "a rolled-back run is over; start a new run with `runbook exec`",
        ));
    }
    Ok(())
}
