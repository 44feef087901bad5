//! `runbook resume RUN`: continue a run that stopped (a crash, a failure, a
//! gate). Steps that succeeded are never run again; a step that was running
//! when the process died runs again only if its plugin is idempotent or the
//! operator says so.

use super::session::{self, RunOptions, Start};
use super::{Cli, Failure};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::Recorded;
use crate::events::Status;
use crate::journal;
use crate::runbook::{Action, Bindings};
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
    let record = journal::read(&state::journal_path(&run_dir))
        .map_err(|error| Failure::Internal(error.into()))?;
    if record.recovered_truncation {
        eprintln!("note: the journal's last record was cut short by the crash and was dropped");
    }
    match record.finished {
        Some(Status::Succeeded) => {
            // A crash between the end of the run and its deployment record
            // leaves the record to write now.
            let state_dir = run_dir
                .parent()
                .and_then(|runs| runs.parent())
                .map(PathBuf::from);
            if let Some(state_dir) = state_dir
                && !state_dir
                    .join("deployments")
                    .join(format!("{}.json", record.run_id))
                    .exists()
            {
                let rebuilt =
                    state::DeploymentRecord::from_journal(&record, &state::journal_path(&run_dir));
                if let Ok(path) = state::write_record(&state_dir, &rebuilt) {
                    eprintln!(
                        "note: the run's deployment record was missing and is written now: {}",
                        path.display()
                    );
                }
            }
            return Err(refuse(
                format!("run {} already succeeded", args.run),
                "start a new run with `runbook exec`",
            ));
        }
        _ if record.rolled_back => {
            return Err(refuse(
                format!("run {} was rolled back", args.run),
                "a rolled-back run is over; start a new run with `runbook exec`",
            ));
        }
        _ => {}
    }
    let mut options = args.options.clone();
    let state_dir: PathBuf = run_dir
        .parent()
        .and_then(|runs| runs.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".runbook"));
    options.state_dir = Some(state_dir);
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
    let mut recorded = BTreeMap::new();
    let mut rerun = Vec::new();
    let mut skip = Vec::new();
    let mut undecided = Vec::new();
    for planned in &plan.steps {
        let id = &planned.id.0;
        let Some(step_record) = record.steps.get(id) else {
            continue;
        };
        if step_record.status == Some(Status::Succeeded) {
            recorded.insert(
                id.clone(),
                Recorded {
                    status: Status::Succeeded,
                    outputs: step_record.outputs.clone(),
                },
            );
            continue;
        }
        if !step_record.interrupted {
            continue;
        }
        let idempotent = match &plan.step(planned).action {
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
                },
            );
        } else if idempotent || args.rerun.contains(id) {
            rerun.push(id.clone());
        } else {
            undecided.push(id.clone());
        }
    }
    if !undecided.is_empty() {
        let list = undecided
            .iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(refuse(
            format!(
                "{list} was running when the run stopped, and its plugin is not idempotent: it may or may not have taken effect"
            ),
            format!(
                "check by hand, then `runbook resume {} --rerun {}` to run it again or `--skip {}` if it took effect",
                args.run, undecided[0], undecided[0]
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
            rerun,
            skip,
        },
    )
    .await
}
