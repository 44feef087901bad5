//! `runbook runs`, `runbook show RUN`, `runbook logs RUN [STEP]`: what
//! happened, read from the journals.

use super::{Cli, Failure, exit};
use crate::journal::{self, RunRecord};
use crate::state;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `runbook runs [--state-dir DIR]`
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The state folder [default: `.runbook/` here and in the folders below].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `runbook show RUN`
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run's id.
    run: String,
    /// The state folder, if the run is not found otherwise.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `runbook logs RUN [STEP]`
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run's id.
    run: String,
    /// Only this step's lines.
    step: Option<String>,
    /// The state folder, if the run is not found otherwise.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// A string field of a journal event, empty when absent.
fn field(event: &serde_json::Value, key: &str) -> String {
    event
        .get(key)
        .and_then(|value| value.as_str())
        .unwrap_or("")
        .to_owned()
}

fn status_of(record: &RunRecord) -> String {
    if let Some((step, wait)) = record.parked() {
        let what = if step.is_empty() {
            wait.status.clone()
        } else {
            format!("{step}: {}", wait.status)
        };
        return format!("waiting until {} ({what})", when(&wait.wake_at));
    }
    if let Some((step, _)) = record.awaiting_decision() {
        return format!("waiting for a decision on `{step}` (runbook decide)");
    }
    match record.finished {
        Some(status) => status.as_str().to_owned(),
        None if record.steps.values().any(|step| step.interrupted) => "interrupted".into(),
        None => "running or interrupted".into(),
    }
}

/// A wake-up time as an operator reads it: the time of day in UTC, with
/// the date when it is not today.
fn when(wake_at: &str) -> String {
    let Ok(wake) = wake_at.parse::<jiff::Timestamp>() else {
        return wake_at.to_owned();
    };
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    if wake.strftime("%Y-%m-%d").to_string() == today {
        wake.strftime("%H:%M:%S UTC").to_string()
    } else {
        wake.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
    }
}

/// The state folders a command looks in: the one given, else `.runbook/`
/// here and in the folders just below.
pub(super) fn state_folders(given: Option<&Path>) -> Vec<PathBuf> {
    match given {
        Some(dir) => vec![dir.to_path_buf()],
        None => {
            let mut folders = vec![PathBuf::from(".runbook")];
            if let Ok(entries) = std::fs::read_dir(".") {
                folders.extend(
                    entries
                        .flatten()
                        .map(|entry| entry.path().join(".runbook"))
                        .filter(|path| path.is_dir()),
                );
            }
            folders
        }
    }
}

/// Lists runs, newest first.
pub fn runs(_cli: &Cli, args: &RunsArgs) -> Result<u8, Failure> {
    let folders = state_folders(args.state_dir.as_deref());
    let mut rows = Vec::new();
    for folder in folders {
        for run in state::list_runs(&folder) {
            if let Ok(record) = journal::read(&state::journal_path(&run)) {
                rows.push(record);
            }
        }
    }
    rows.sort_by(|left, right| right.started.cmp(&left.started));
    if rows.is_empty() {
        outln!("no runs here; `runbook exec` starts one (use --state-dir to look elsewhere)")?;
        return Ok(exit::SUCCESS);
    }
    outln!(
        "{:<24} {:<22} {:<12} {:<10} {:<30} status",
        "run",
        "runbook",
        "environment",
        "operator",
        "started"
    )?;
    for record in rows {
        outln!(
            "{:<24} {:<22} {:<12} {:<10} {:<30} {}",
            record.run_id,
            record.runbook,
            record.environment.clone().unwrap_or_else(|| "-".into()),
            record.operator,
            record.started,
            status_of(&record)
        )?;
    }
    Ok(exit::SUCCESS)
}

/// Hands a run's events, streamed from its journal, to `print` until it
/// fails (a closed stdout).
fn each_event(
    run: &str,
    state_dir: Option<&Path>,
    mut print: impl FnMut(&serde_json::Value) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let dir = state::find_run(run, state_dir).map_err(|error| Failure::Internal(error.into()))?;
    let mut failed = None;
    journal::replay(&state::journal_path(&dir), |event| match print(event) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(error) => {
            failed = Some(error);
            std::ops::ControlFlow::Break(())
        }
    })
    .with_context(|| format!("reading run {run}"))
    .map_err(Failure::Internal)?;
    failed.map_or(Ok(()), Err)
}

fn load(run: &str, state_dir: Option<&Path>) -> Result<RunRecord, Failure> {
    let dir = state::find_run(run, state_dir).map_err(|error| Failure::Internal(error.into()))?;
    journal::read(&state::journal_path(&dir))
        .with_context(|| format!("reading run {run}"))
        .map_err(Failure::Internal)
}

/// Shows one run's timeline.
pub fn show(_cli: &Cli, args: &ShowArgs) -> Result<u8, Failure> {
    let record = load(&args.run, args.state_dir.as_deref())?;
    outln!("run        {}", record.run_id)?;
    outln!("runbook    {} ({})", record.runbook, record.file)?;
    outln!(
        "environment {}",
        record.environment.clone().unwrap_or_else(|| "-".into())
    )?;
    outln!("operator   {}", record.operator)?;
    outln!(
        "params     {}",
        record
            .params
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    outln!("status     {}", status_of(&record))?;
    if let Some(reason) = &record.emergency {
        outln!("emergency  {reason}")?;
    }
    if let Some(asked) = &record.rollback_request {
        outln!("rollback   asked by {} at {}", asked.operator, asked.time)?;
    }
    if !record.approvals.is_empty() {
        outln!(
            "approvals  {}",
            record
                .approvals
                .iter()
                .map(|(who, _)| who.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    outln!()?;
    each_event(&args.run, args.state_dir.as_deref(), |event| {
        let time = event
            .get("time")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let step = event
            .get("step")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let kind = event
            .get("event")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let text = |key: &str| field(event, key);
        let line = match kind {
            "run_started" => format!("run started by {}", text("operator")),
            "run_resumed" => format!("run resumed by {}", text("operator")),
            "step_started" => format!("{step}: started"),
            "run_waiting" => format!(
                "run parked until {}: waits for {}",
                when(&text("until")),
                text("reason")
            ),
            "step_waiting" => format!(
                "{step}: waits until {} ({}){}",
                when(&text("wake_at")),
                text("status"),
                if event["parked"].as_bool() == Some(true) {
                    ", parked"
                } else {
                    ""
                }
            ),
            "step_retry" => format!(
                "{step}: try {} failed, retrying: {}",
                event["attempt"],
                text("reason")
            ),
            "step_finished" => format!(
                "{step}: {} — {}",
                text("status"),
                text("summary").replace('\n', " / ")
            ),
            "confirmed" => format!("{step}: confirmed by {}", text("by")),
            "decision_needed" => format!(
                "{step}: waits for a decision: retry, skip, rollback or abort (runbook decide)"
            ),
            "decided" => {
                let mut line = format!(
                    "{step}: {} chose {} ({})",
                    text("by"),
                    text("choice"),
                    text("how")
                );
                if !text("note").is_empty() {
                    line.push_str(&format!(": {}", text("note")));
                }
                line
            }
            "approved" => format!("approved by {}", text("by")),
            "promotion_checked" => match event.get("overridden").and_then(|value| value.as_str()) {
                None => format!("promoted from {}", text("detail")),
                Some(reason) => format!(
                    "promotion gate overridden (emergency: {reason}): {}",
                    text("detail")
                ),
            },
            "rollback_requested" => {
                let mut line = format!("rollback asked by {}", text("operator"));
                if let Some(later) = event.get("forced_over").and_then(|value| value.as_str()) {
                    line.push_str(&format!(" (--force over the later run {later})"));
                }
                if let Some(reason) = event.get("emergency").and_then(|value| value.as_str()) {
                    line.push_str(&format!(" (emergency: {reason})"));
                }
                line
            }
            "rollback_started" => format!("rollback started: {}", text("reason")),
            "step_rolled_back" => {
                format!("{step}: rollback {} — {}", text("status"), text("summary"))
            }
            "notified" => format!(
                "announced {}{}: {} of {} targets took it",
                text("moment"),
                if step.is_empty() {
                    String::new()
                } else {
                    format!(" ({step})")
                },
                event["ok"],
                event["targets"]
            ),
            "run_finished" => format!("run finished: {}", text("status")),
            _ => return Ok(()),
        };
        outln!("{time}  {line}")
    })?;
    Ok(exit::SUCCESS)
}

/// Prints a run's log lines and capability calls, for one step or all.
pub fn logs(_cli: &Cli, args: &LogsArgs) -> Result<u8, Failure> {
    each_event(&args.run, args.state_dir.as_deref(), |event| {
        let step = event
            .get("step")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        if args.step.as_deref().is_some_and(|wanted| wanted != step) {
            return Ok(());
        }
        let kind = event
            .get("event")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let text = |key: &str| field(event, key);
        match kind {
            "log" => outln!("{step} [{}] {}", text("level"), text("message")),
            "capability_call" => outln!(
                "{step} [{}] {} → {} ({})",
                text("capability"),
                text("requested"),
                text("outcome"),
                text("decision")
            ),
            "step_finished" => outln!("{step} [{}] {}", text("status"), text("summary")),
            _ => Ok(()),
        }
    })?;
    Ok(exit::SUCCESS)
}
