//! `runbook unlock FILE --env NAME`: break a lock left behind by a run whose
//! process died. Never silent: it says whose lock it breaks.

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
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
}

/// Runs the command.
pub fn run(_cli: &Cli, args: &UnlockArgs) -> Result<u8, Failure> {
    let runbook = crate::runbook::load(&args.file)?;
    let state_dir = state::state_dir(
        &args.file,
        args.state_dir.as_deref(),
        runbook.state.as_ref(),
    )
    .map_err(|error| Failure::Internal(error.into()))?;
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
    let unfinished = lock.left_by().cloned().and_then(|left| {
        Some((
            crate::run::gates::unfinished(&state_dir, &left.run_id)?,
            left,
        ))
    });
    let Some((state, left)) = unfinished else {
        outln!("no lock is held for {}{env}", runbook.name)?;
        return Ok(exit::SUCCESS);
    };
    // The dead run is abandoned for good: resuming it later could undo
    // what newer runs did.
    let journal = state::journal_path(&state::current_run_dir(&state_dir, &left.run_id));
    state::append_event(
        &journal,
        None,
        crate::events::EventKind::RunAbandoned {
            by: std::env::var("RUNBOOK_OPERATOR")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "unknown".to_owned()),
            state: state.clone(),
        },
        true,
    )
    .map_err(|error| Failure::Internal(error.into()))?;
    lock.clear()
        .map_err(|error| Failure::Internal(error.into()))?;
    outln!(
        "run {} by {} died unfinished ({state}) and is now abandoned: it can no longer be resumed; check what it left, then start a new run",
        left.run_id,
        left.operator
    )?;
    Ok(exit::SUCCESS)
}
