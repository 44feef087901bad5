//! `runbook state migrate --from DIR --to URL`: copy a local state folder
//! (its runs' journals and audit logs, and its deployment records) into a
//! shared backend, so that a team's runs, approvals and promotion gate
//! carry on from what one machine did.

use super::{Cli, Failure, Output, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::state::{self, LockState, RunLock, remote};
use std::path::{Path, PathBuf};

/// `runbook state ...`
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    command: StateCommand,
}

/// The `state` verbs.
#[derive(Debug, clap::Subcommand)]
enum StateCommand {
    /// Copy a local state folder into a shared backend.
    #[command(
        long_about = "Copy a local state folder into a shared backend: every run's journal and audit log (unchanged: `runbook audit verify` still holds), and every deployment record (the promotion gate reads them). Runs already in the backend with the same lines are left as they are, so running it again copies only what is new; a run the backend holds differently is refused, naming it. Nothing is copied while a live process holds one of the folder's locks. The folder is left as it was, as a backup: point the runbook's `[state]` at the backend (or pass `--state URL`) to use the backend from then on.",
        after_help = "Examples:\n  runbook state migrate --from runbooks/.runbook --to postgres://runbook@db.internal:5432/runbook\n  RUNBOOK_STATE=postgres://runbook@db.internal/runbook runbook runs"
    )]
    Migrate {
        /// The local state folder (`.runbook/` beside the runbook).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The backend's URL (`postgres://user@host:port/db`; the password
        /// from `PGPASSWORD` or `${{ env.NAME }}` parts).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Say what would be copied, and copy nothing.
        #[arg(long)]
        dry_run: bool,
        /// `text`, or `json`: what was copied, as one JSON object.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn refuse(message: String, hint: impl Into<String>) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// What a migration did.
#[derive(Debug, Default, serde::Serialize)]
struct Migrated {
    backend: String,
    copied: Vec<String>,
    already: Vec<String>,
    records: usize,
    dry_run: bool,
}

/// Runs the command.
pub fn run(_cli: &Cli, args: &StateArgs) -> Result<u8, Failure> {
    match &args.command {
        StateCommand::Migrate {
            from,
            to,
            dry_run,
            output,
        } => migrate(from, to, *dry_run, *output),
    }
}

fn migrate(from: &Path, to: &str, dry_run: bool, output: Output) -> Result<u8, Failure> {
    if from.join(remote::BACKEND_FILE).exists() {
        return Err(refuse(
            format!(
                "{} mirrors a shared backend already: its runs are there",
                from.display()
            ),
            "migrate the local `.runbook/` folder beside the runbook",
        ));
    }
    if !from.join("runs").is_dir() && !from.join("deployments").is_dir() {
        return Err(refuse(
            format!("{} holds no runs and no deployment records", from.display()),
            "pass the `.runbook/` folder beside the runbook with `--from`",
        ));
    }
    if !state::is_backend_url(Path::new(to)) {
        return Err(refuse(
            format!("`{to}` is not a postgres:// URL"),
            "--to postgres://user@host:5432/database",
        ));
    }
    // A live run would go on writing here, not there.
    if let Ok(locks) = std::fs::read_dir(from.join("locks")) {
        for path in locks.flatten().map(|entry| entry.path()) {
            if let Ok(LockState::Held(holder)) = RunLock::state(&path) {
                return Err(refuse(
                    format!(
                        "a live process holds {}{}",
                        path.display(),
                        holder
                            .map(|holder| format!(
                                " (run {} by {})",
                                holder.run_id, holder.operator
                            ))
                            .unwrap_or_default()
                    ),
                    "let it end (or park), then migrate",
                ));
            }
        }
    }
    let file = state::BackendFile {
        backend: "postgres".into(),
        url: to.to_owned(),
        lease_seconds: remote::DEFAULT_LEASE.as_secs_f64(),
    };
    let shared = remote::connect(&file).map_err(|error| Failure::Internal(error.into()))?;
    let mut migrated = Migrated {
        backend: shared.remote.describe(),
        dry_run,
        ..Migrated::default()
    };
    let mut runs = state::list_runs(from);
    runs.reverse();
    for dir in runs {
        let journal = lines_of(&state::journal_path(&dir))?;
        let audit = lines_of(&crate::audit::path(&dir))?;
        let record = crate::journal::read(&state::journal_path(&dir))
            .map_err(|error| Failure::Internal(error.into()))?;
        let summary = remote::RunSummary {
            run_id: record.run_id.clone(),
            runbook: record.runbook.clone(),
            environment: record.environment.clone(),
        };
        let held = shared
            .remote
            .pull(&record.run_id, (0, 0))
            .map_err(|error| Failure::Internal(error.into()))?;
        match held {
            Some(held) if held.journal == journal && held.audit == audit => {
                migrated.already.push(record.run_id);
                continue;
            }
            Some(_) => {
                return Err(refuse(
                    format!(
                        "the backend holds run {} with other lines than {}",
                        record.run_id,
                        dir.display()
                    ),
                    "the run went on elsewhere after it was copied: the backend's copy is the run now",
                ));
            }
            None => {}
        }
        if !dry_run {
            shared
                .remote
                .append(&summary, journal, audit, None)
                .map_err(|error| Failure::Internal(error.into()))?;
        }
        migrated.copied.push(record.run_id);
    }
    if let Ok(entries) = std::fs::read_dir(from.join("deployments")) {
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().is_none_or(|extension| extension != "json") {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|error| Failure::Internal(error.into()))?;
            let Ok(record) = serde_json::from_str::<state::DeploymentRecord>(&text) else {
                return Err(refuse(
                    format!("{} is not a deployment record", path.display()),
                    "move it out of the folder, or repair it, then migrate again",
                ));
            };
            if !dry_run {
                shared
                    .remote
                    .put_record(&record.run_id, text)
                    .map_err(|error| Failure::Internal(error.into()))?;
            }
            migrated.records += 1;
        }
    }
    if output == Output::Json {
        super::print_json(&migrated)?;
        return Ok(exit::SUCCESS);
    }
    let verb = if dry_run { "would copy" } else { "copied" };
    outln!(
        "{verb} {} run(s) and {} deployment record(s) from {} into {}{}",
        migrated.copied.len(),
        migrated.records,
        from.display(),
        migrated.backend,
        if migrated.already.is_empty() {
            String::new()
        } else {
            format!("; {} run(s) were there already", migrated.already.len())
        }
    )?;
    if !dry_run {
        outln!(
            "{} is left as it was. Name the backend in the runbook (`[state] backend = \"postgres\"`, `url = ...`) or pass `--state URL`, and every machine sees these runs.",
            from.display()
        )?;
    }
    Ok(exit::SUCCESS)
}

/// A file's whole lines (a last one a crash cut short is not one).
fn lines_of(path: &Path) -> Result<Vec<String>, Failure> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Failure::Internal(error.into())),
    };
    let intact = crate::jsonl::intact_length(&bytes);
    Ok(String::from_utf8_lossy(&bytes[..intact])
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect())
}
