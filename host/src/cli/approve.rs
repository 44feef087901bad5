//! `runbook approve RUN --as NAME` and `runbook confirm RUN STEP --as NAME`:
//! the people side of a run, appended to its journal.

use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::events::{EventKind, Status};
use crate::journal;
use crate::state;
use std::path::PathBuf;

/// `runbook approve RUN --as NAME`
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run's id.
    run: String,
    /// Who approves.
    #[arg(long = "as", value_name = "NAME")]
    name: String,
    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
}

/// `runbook confirm RUN STEP --as NAME`
#[derive(Debug, clap::Args)]
pub struct ConfirmArgs {
    /// The run's id.
    run: String,
    /// The manual step.
    step: String,
    /// Who confirms.
    #[arg(long = "as", value_name = "NAME")]
    name: String,
    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
}

fn refuse(message: String, hint: impl Into<String>) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// Records an approval of the run's current plan.
pub fn approve(_cli: &Cli, args: &ApproveArgs) -> Result<u8, Failure> {
    let dir = state::find_run(&args.run, args.state_dir.as_deref())
        .map_err(|error| refuse(error.to_string(), "pass `--state-dir DIR`"))?;
    let path = state::journal_path(&dir);
    let record = journal::read(&path).map_err(|error| Failure::Internal(error.into()))?;
    if record.operator == args.name {
        return Err(refuse(
            format!(
                "{} started run {} and cannot approve it",
                args.name, args.run
            ),
            "another approver of the environment must approve",
        ));
    }
    let runbook = crate::runbook::load(std::path::Path::new(&record.file))?;
    // A rollback asked after the run ended is approved as asked: its own
    // emergency or not, and its own fingerprint (the journal's latest).
    let emergency = record.approving_as_emergency();
    let rule = record
        .environment
        .as_ref()
        .and_then(|name| runbook.environments.get(name))
        .and_then(|environment| crate::gates::rule(environment, emergency));
    let Some(rule) = rule else {
        return Err(refuse(
            format!("run {} needs no approvals", args.run),
            "its environment has no `approvals`",
        ));
    };
    if !rule.from.contains(&args.name) {
        let which = if emergency {
            "an emergency approver"
        } else {
            "an approver"
        };
        return Err(refuse(
            format!("{} is not {which} of this environment", args.name),
            format!("approvers: {}", rule.from.join(", ")),
        ));
    }
    let Some(plan_hash) = record.plan_hash.clone() else {
        return Err(refuse(
            format!("run {} has no plan fingerprint", args.run),
            "start a new run",
        ));
    };
    if record
        .approvals
        .iter()
        .any(|(who, hash)| who == &args.name && hash == &plan_hash)
    {
        return Err(refuse(
            format!("{} already approved run {}", args.name, args.run),
            "approvals need distinct people",
        ));
    }
    journal::append(
        &path,
        None,
        EventKind::Approved {
            by: args.name.clone(),
            plan_hash: plan_hash.clone(),
        },
    )
    .map_err(|error| Failure::Internal(error.into()))?;
    outln!(
        "✓ {} approved run {} (plan {}); `runbook resume {}` continues it once enough approvals are in",
        args.name,
        args.run,
        &plan_hash[..12.min(plan_hash.len())],
        args.run
    )?;
    Ok(exit::SUCCESS)
}

/// Records the confirmation of a manual step's checklist.
pub fn confirm(_cli: &Cli, args: &ConfirmArgs) -> Result<u8, Failure> {
    let dir = state::find_run(&args.run, args.state_dir.as_deref())
        .map_err(|error| refuse(error.to_string(), "pass `--state-dir DIR`"))?;
    let path = state::journal_path(&dir);
    let record = journal::read(&path).map_err(|error| Failure::Internal(error.into()))?;
    let Some(step) = record.steps.get(&args.step) else {
        // A name the runbook does not have is a typo, not a step to come.
        if let Ok(runbook) = crate::runbook::load(std::path::Path::new(&record.file)) {
            let ids: Vec<&str> = runbook
                .steps
                .iter()
                .map(|step| step.id.0.as_str())
                .collect();
            if !ids.contains(&args.step.as_str()) {
                let guess = crate::diagnostic::did_you_mean(&args.step, ids.iter().copied())
                    .map(|near| format!(" (did you mean `{near}`?)"))
                    .unwrap_or_default();
                return Err(refuse(
                    format!(
                        "runbook `{}` has no step `{}`{guess}",
                        runbook.name, args.step
                    ),
                    format!("its steps: {}", ids.join(", ")),
                ));
            }
        }
        return Err(refuse(
            format!("run {} has not reached step `{}`", args.run, args.step),
            "confirm a manual step once the run waits at it",
        ));
    };
    if step.status != Some(Status::Waiting) {
        return Err(refuse(
            format!(
                "step `{}` of run {} is not waiting for a confirmation",
                args.step, args.run
            ),
            format!(
                "its status is {}",
                step.status.map_or("running", |status| status.as_str())
            ),
        ));
    }
    let items: Vec<String> = step
        .summary
        .lines()
        .filter_map(|line| line.strip_prefix("[ ] ").map(str::to_owned))
        .collect();
    journal::append(
        &path,
        Some(&args.step),
        EventKind::Confirmed {
            by: args.name.clone(),
            items: items.clone(),
        },
    )
    .map_err(|error| Failure::Internal(error.into()))?;
    outln!("✓ {} confirmed `{}`:", args.name, args.step)?;
    for item in items {
        outln!("  [x] {item}")?;
    }
    outln!("continue with `runbook resume {}`", args.run)?;
    Ok(exit::SUCCESS)
}
