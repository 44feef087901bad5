//! `runbook unlock FILE --env NAME`: break a lock left behind by a run whose
//! process died. Never silent: it says whose lock it breaks.

use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::state::{self, RunLock};
use std::path::PathBuf;

/// `runbook unlock FILE [--env NAME] [--force]`
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// The runbook file.
    file: PathBuf,
    /// The environment.
    #[arg(short, long, value_name = "NAME")]
    env: Option<String>,
    /// Break the lock even though its process seems alive (or is on another machine).
    #[arg(long)]
    force: bool,
    /// The state folder [default: `.runbook/` beside the runbook].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Runs the command.
pub fn run(_cli: &Cli, args: &UnlockArgs) -> Result<u8, Failure> {
    let runbook = crate::runbook::load(&args.file)?;
    let state_dir = state::state_dir(&args.file, args.state_dir.as_deref());
    let path = state::lock_path(&state_dir, &runbook.name, args.env.as_deref());
    let Some(holder) = RunLock::holder(&path) else {
        println!(
            "no lock is held for {} {}",
            runbook.name,
            args.env.as_deref().unwrap_or("")
        );
        return Ok(exit::SUCCESS);
    };
    let alive = holder.host != state::hostname() || state::process_alive(holder.pid);
    if alive && !args.force {
        return Err(Failure::Invalid(Diagnostics(vec![
            Diagnostic::new(format!(
                "run {} by {} holds the lock and its process {} on {} may still be running",
                holder.run_id, holder.operator, holder.pid, holder.host
            ))
            .hint("if you are sure it is not, break it with `--force`"),
        ])));
    }
    RunLock::break_stale(&path).map_err(|error| Failure::Internal(error.into()))?;
    println!(
        "broke the lock of run {} by {} (since {}); `runbook resume {}` continues that run",
        holder.run_id, holder.operator, holder.since, holder.run_id
    );
    Ok(exit::SUCCESS)
}
