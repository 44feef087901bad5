//! `runbook unlock FILE --env NAME`: break a lock left behind by a run whose
//! process died. Never silent: it says whose lock it breaks.

use super::session;
use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::state::{self, LockError, RunLock};
use std::path::PathBuf;

/// `runbook unlock FILE [--env NAME]`
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// The runbook file.
    file: PathBuf,
    /// The environment.
    #[arg(short, long, value_name = "NAME")]
    env: Option<String>,
    /// Kept for scripts written for earlier versions: a lock is now held by
    /// the kernel for a live process only, so there is nothing to force.
    #[arg(long, hide = true)]
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
    let env = args
        .env
        .as_deref()
        .map(|name| format!(" in {name}"))
        .unwrap_or_default();
    let mut lock = match RunLock::acquire(&path) {
        Ok(lock) => lock,
        Err(LockError::Held(holder)) => {
            let hint = match &holder {
                Some(holder) => format!(
                    "a live process holds it: stop it (Ctrl-C, or `kill {}` on {}) and its lock goes with it",
                    holder.pid, holder.host
                ),
                None => "a live process holds it; try again in a moment".to_owned(),
            };
            return Err(Failure::Invalid(Diagnostics(vec![
                Diagnostic::new(LockError::Held(holder).to_string()).hint(hint),
            ])));
        }
        Err(error) => return Err(Failure::Internal(error.into())),
    };
    let Some(left) = lock.left_by().cloned() else {
        outln!("no lock is held for {}{env}", runbook.name)?;
        return Ok(exit::SUCCESS);
    };
    lock.clear()
        .map_err(|error| Failure::Internal(error.into()))?;
    match session::unfinished(&state_dir, &left.run_id) {
        Some(state) => outln!(
            "cleared the lock that run {} by {} left when its process {} died ({state}); \
             `runbook resume {}` still continues that run, or start a new one",
            left.run_id,
            left.operator,
            left.pid,
            left.run_id
        )?,
        None => outln!(
            "cleared the name that run {} by {} left on the lock of {}{env} (its process {} is gone)",
            left.run_id,
            left.operator,
            runbook.name,
            left.pid
        )?,
    }
    Ok(exit::SUCCESS)
}
