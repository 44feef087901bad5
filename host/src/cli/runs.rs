//! `runbook runs`, `runbook show RUN`, `runbook logs RUN [STEP]`: what
//! happened, read from the journals.

use super::{Cli, Failure, Output, exit};
use crate::journal::{self, RunRecord};
use crate::state;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `runbook runs [--state-dir DIR] [filters] [--output json]`
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The state folder [default: `.runbook/` here and in the folders
    /// below, and every run this user started elsewhere].
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
    /// Only runs of this runbook (its `[runbook] name`).
    #[arg(long, value_name = "NAME")]
    runbook: Option<String>,
    /// Only runs in this environment.
    #[arg(long = "env", value_name = "NAME")]
    environment: Option<String>,
    /// Only runs with this status: succeeded, failed, rolled_back,
    /// cancelled, denied, waiting, running (or interrupted).
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// Only runs started this long ago at most (`24h`, `7d`), or since
    /// this time (`2026-11-22`, `2026-11-22T10:15:00Z`).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// At most this many runs, newest first.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// `json`: an array of `{ "run", "runbook", "file", "environment",
    /// "operator", "started", "finished", "status", "detail",
    /// "failed_step", "params", "dir" }`, newest first.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `runbook show RUN [--output json]`
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run's id.
    run: String,
    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
    /// `json`: `{ "run": {...as in runs...}, "approvals",
    /// "approvals_detail": [{ "by", "plan_hash", "signed", "key" }],
    /// "operator_signature", "emergency",
    /// "steps": [{ "id", "status", "summary", "outputs", "rolled_back",
    /// "rollback_status" }], "events": [every journal event] }`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `runbook logs RUN [STEP] [--output json]`
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run's id.
    run: String,
    /// Only this step's lines.
    step: Option<String>,
    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
    /// `json`: the journal's `log`, `capability_call` and `step_finished`
    /// events, one JSON object per line, as the journal holds them.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
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

/// The run's status as one word, for filters and scripts: the ending the
/// journal records, else `waiting`, `interrupted` or `running`.
fn status_word(record: &RunRecord) -> &'static str {
    if record.parked().is_some() || record.awaiting_decision().is_some() {
        return "waiting";
    }
    match record.finished {
        Some(status) => status.as_str(),
        None if record.steps.values().any(|step| step.interrupted) => "interrupted",
        None => "running",
    }
}

/// A run as `runs --output json` lists it.
fn run_json(record: &RunRecord, dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "run": record.run_id,
        "runbook": record.runbook,
        "file": record.file,
        "environment": record.environment,
        "operator": record.operator,
        "started": record.started,
        "finished": (!record.finished_at.is_empty()).then_some(&record.finished_at),
        "status": status_word(record),
        "detail": status_of(record),
        "failed_step": record.failed_step,
        "params": record.params,
        "dir": dir.display().to_string(),
    })
}

/// A mistake in what the operator asked for (exit 2), with a hint.
fn usage(message: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure::Invalid(crate::diagnostic::Diagnostics(vec![
        crate::diagnostic::Diagnostic::new(message).hint(hint),
    ]))
}

/// A run that is not where the command looked.
fn not_found(error: state::RunNotFound) -> Failure {
    usage(
        error.to_string(),
        "`runbook runs` lists the runs this user started and those of `.runbook/` here; `--state-dir DIR` looks in another state folder",
    )
}

/// The statuses `runs --status` takes.
const STATUSES: [&str; 8] = [
    "succeeded",
    "failed",
    "rolled_back",
    "cancelled",
    "denied",
    "waiting",
    "running",
    "interrupted",
];

/// `--since`: a duration back from now (`24h`), or a date or time.
fn since(text: &str) -> Result<jiff::Timestamp, Failure> {
    let invalid = || {
        usage(
            format!("`--since {text}` is neither a duration nor a date or time"),
            "write how long ago (`24h`, `7d`) or when (`2026-11-22`, `2026-11-22T10:15:00Z`)",
        )
    };
    if let Ok(duration) = humantime::parse_duration(text) {
        let span = jiff::SignedDuration::try_from(duration).map_err(|_| invalid())?;
        return jiff::Timestamp::now()
            .checked_sub(span)
            .map_err(|_| invalid());
    }
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|date| date.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|zoned| zoned.timestamp())
        .ok_or_else(invalid)
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

/// Every run a command can list: those of the state folders, and, without
/// `--state-dir`, every run this user started elsewhere (the index that
/// lets `show` and `resume` find a run from anywhere). Each once.
fn known_runs(state_dir: Option<&Path>) -> Vec<(RunRecord, PathBuf)> {
    let mut dirs: Vec<PathBuf> = state_folders(state_dir)
        .iter()
        .flat_map(|folder| state::list_runs(folder))
        .collect();
    if state_dir.is_none()
        && let Ok(entries) = std::fs::read_dir(state::index_dir())
    {
        dirs.extend(entries.flatten().filter_map(|entry| {
            std::fs::read_to_string(entry.path())
                .ok()
                .map(|dir| PathBuf::from(dir.trim()))
        }));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut runs = Vec::new();
    for dir in dirs {
        let Ok(record) = journal::read(&state::journal_path(&dir)) else {
            continue;
        };
        if seen.insert(record.run_id.clone()) {
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            runs.push((record, dir));
        }
    }
    runs
}

/// Lists runs, newest first.
pub fn runs(_cli: &Cli, args: &RunsArgs) -> Result<u8, Failure> {
    let since = args.since.as_deref().map(since).transpose()?;
    if let Some(status) = args.status.as_deref()
        && !STATUSES.contains(&status)
    {
        let guess = crate::diagnostic::did_you_mean(status, STATUSES)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        return Err(usage(
            format!("`--status {status}` is not a run's status{guess}"),
            format!("one of {}", STATUSES.join(", ")),
        ));
    }
    let mut rows: Vec<(RunRecord, PathBuf)> = known_runs(args.state_dir.as_deref())
        .into_iter()
        .filter(|(record, _)| {
            args.runbook
                .as_deref()
                .is_none_or(|name| record.runbook == name)
                && args
                    .environment
                    .as_deref()
                    .is_none_or(|name| record.environment.as_deref() == Some(name))
                && args.status.as_deref().is_none_or(|wanted| {
                    let word = status_word(record);
                    word == wanted || (wanted == "running" && word == "interrupted")
                })
                && since.is_none_or(|since| {
                    record
                        .started
                        .parse::<jiff::Timestamp>()
                        .is_ok_and(|started| started >= since)
                })
        })
        .collect();
    rows.sort_by(|left, right| right.0.started.cmp(&left.0.started));
    if let Some(limit) = args.limit {
        rows.truncate(limit);
    }
    if args.output == Output::Json {
        super::print_json(
            &rows
                .iter()
                .map(|(record, dir)| run_json(record, dir))
                .collect::<Vec<_>>(),
        )?;
        return Ok(exit::SUCCESS);
    }
    if rows.is_empty() {
        let filtered = args.runbook.is_some()
            || args.environment.is_some()
            || args.status.is_some()
            || args.since.is_some();
        if filtered {
            outln!("no run matches; `runbook runs` without filters lists them all")?;
        } else {
            outln!("no runs here; `runbook exec` starts one (use --state-dir to look elsewhere)")?;
        }
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
    for (record, _) in rows {
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
    let dir = state::find_run(run, state_dir).map_err(not_found)?;
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
    let dir = state::find_run(run, state_dir).map_err(not_found)?;
    journal::read(&state::journal_path(&dir))
        .with_context(|| format!("reading run {run}"))
        .map_err(Failure::Internal)
}

/// Shows one run's timeline.
pub fn show(_cli: &Cli, args: &ShowArgs) -> Result<u8, Failure> {
    let record = load(&args.run, args.state_dir.as_deref())?;
    if args.output == Output::Json {
        let dir = state::find_run(&args.run, args.state_dir.as_deref()).map_err(not_found)?;
        let mut events = Vec::new();
        each_event(&args.run, args.state_dir.as_deref(), |event| {
            events.push(event.clone());
            Ok(())
        })?;
        let steps: Vec<serde_json::Value> = record
            .order
            .iter()
            .chain(record.steps.keys().filter(|id| !record.order.contains(id)))
            .filter_map(|id| record.steps.get(id).map(|step| (id, step)))
            .map(|(id, step)| {
                serde_json::json!({
                    "id": id,
                    "status": step.status.map(|status| status.as_str()),
                    "summary": step.summary,
                    "outputs": step.outputs,
                    "rolled_back": step.rolled_back,
                    "rollback_status": step.rollback_status.map(|status| status.as_str()),
                })
            })
            .collect();
        super::print_json(&serde_json::json!({
            "run": run_json(&record, &std::fs::canonicalize(&dir).unwrap_or(dir)),
            "approvals": record.approvals.iter().map(|approval| &approval.by).collect::<Vec<_>>(),
            "approvals_detail": record.approvals.iter().map(|approval| serde_json::json!({
                "by": approval.by,
                "plan_hash": approval.plan_hash,
                "signed": approval.signature.is_some(),
                "key": approval.signature.as_ref().map(|signature| &signature.key),
            })).collect::<Vec<_>>(),
            "operator_signature": record.operator_signature.as_ref().map(|signature| serde_json::json!({
                "principal": signature.principal,
                "key": signature.key,
            })),
            "emergency": record.emergency,
            "steps": steps,
            "events": events,
        }))?;
        return Ok(exit::SUCCESS);
    }
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
            .map(|(key, value)| format!("{key}={}", crate::template::as_text(value)))
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
    if let Some(signature) = &record.operator_signature {
        outln!(
            "signed     by the operator, {} ({})",
            signature.principal,
            signature.key
        )?;
    }
    if !record.approvals.is_empty() {
        outln!(
            "approvals  {}",
            record
                .approvals
                .iter()
                .map(crate::journal::Approval::label)
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
            "approved" => match event
                .get("signature")
                .and_then(|signature| signature.get("key"))
                .and_then(|key| key.as_str())
            {
                Some(key) => format!("approved by {} (signed, {key})", text("by")),
                None => format!("approved by {} (unsigned)", text("by")),
            },
            "operator_signed" => format!(
                "plan signed by the operator, {}",
                event
                    .get("signature")
                    .map(|signature| format!(
                        "{} ({})",
                        signature
                            .get("principal")
                            .and_then(|value| value.as_str())
                            .unwrap_or_default(),
                        signature
                            .get("key")
                            .and_then(|value| value.as_str())
                            .unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ),
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
    if let Some(wanted) = &args.step {
        let record = load(&args.run, args.state_dir.as_deref())?;
        // A `for_each` step's elements are `ID[ITEM]`: its id names them all.
        let known = record
            .steps
            .keys()
            .any(|id| id == wanted || id.split_once('[').is_some_and(|(base, _)| base == wanted));
        if !known {
            let ids: Vec<&str> = record.steps.keys().map(String::as_str).collect();
            let guess = crate::diagnostic::did_you_mean(wanted, ids.iter().copied())
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            return Err(usage(
                format!("run {} has no step `{wanted}`{guess}", args.run),
                format!("its steps: {}", ids.join(", ")),
            ));
        }
    }
    each_event(&args.run, args.state_dir.as_deref(), |event| {
        let step = event
            .get("step")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        let of_step = |wanted: &str| {
            step == wanted || step.split_once('[').is_some_and(|(base, _)| base == wanted)
        };
        if args.step.as_deref().is_some_and(|wanted| !of_step(wanted)) {
            return Ok(());
        }
        let kind = event
            .get("event")
            .and_then(|value| value.as_str())
            .unwrap_or("");
        if args.output == Output::Json {
            return match kind {
                "log" | "capability_call" | "step_finished" => super::print_json_line(event),
                _ => Ok(()),
            };
        }
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
