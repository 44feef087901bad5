//! `runbook rollback RUN`: undo a run after it ended, or (`--dry-run`) show
//! what that would undo. Whether it may, and the rollback itself, are
//! [`crate::run::rollback`]'s and [`crate::run`]'s.

use super::session::{RunOptions, Terminal};
use super::{Cli, Failure, Output, exit};
use crate::run::{self, rollback};

/// `runbook rollback RUN [--dry-run] [--force] [--emergency --reason TEXT]`
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The run to undo (`runbook runs` lists them).
    run: String,

    /// Show what would be undone, in order, each plugin's rollback tried
    /// with every write held back (HTTP, AWS) or sent with `dryRun=All`
    /// (Kubernetes), and whether the rollback would be refused. Changes
    /// nothing, takes no lock.
    #[arg(long)]
    dry_run: bool,

    /// Go ahead although a later run of the same runbook and environment
    /// succeeded on top of this one (recorded). It does not go past the
    /// environment's `rollback_window`: that takes `--emergency`.
    #[arg(long)]
    force: bool,

    /// Who asks, for the run log [default: $RUNBOOK_OPERATOR, else $USER].
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,

    #[command(flatten)]
    options: RunOptions,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &RollbackArgs) -> Result<u8, Failure> {
    let request = rollback::Request {
        run: args.run.clone(),
        operator: args
            .operator
            .clone()
            .or_else(|| std::env::var("RUNBOOK_OPERATOR").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_owned()),
        force: args.force,
        emergency: args
            .options
            .emergency
            .then(|| args.options.reason.clone().unwrap_or_default()),
        secrets: run::Secrets::Environment,
    };
    let runtime = super::plugin_runtime(cli)?;
    let terminal = Terminal::new(cli, args.options.output);
    let options = args.options.for_run();
    if args.dry_run {
        let connections = |prepared: &run::Prepared| args.options.connections(prepared);
        let dry = rollback::dry(&runtime, &request, &options, &terminal, connections).await?;
        return print_dry(&dry, args.options.output);
    }
    let ended = async {
        let (prepared, start) = rollback::prepare(&runtime, &request, &options, &terminal).await?;
        let connections = args.options.connections(&prepared);
        run::run(&runtime, prepared, start, connections, &options, &terminal).await
    }
    .await;
    super::session::print_ended(ended, args.options.output)
}

/// Prints the dry run; exit 2 when the rollback would be refused, 1 when a
/// step's rollback could not be tried.
fn print_dry(dry: &rollback::DryRollback, output: Output) -> Result<u8, Failure> {
    let code = if !dry.refused.is_empty() {
        exit::INVALID
    } else if dry.steps.iter().any(|view| view.error.is_some()) {
        exit::STEP_FAILED
    } else {
        exit::SUCCESS
    };
    let printed = match output {
        Output::Json => super::print_json(dry),
        Output::Text => print_dry_text(dry),
    };
    match printed {
        Ok(()) | Err(Failure::StdoutClosed) => Ok(code),
        Err(other) => Err(other),
    }
}

fn print_dry_text(dry: &rollback::DryRollback) -> Result<(), Failure> {
    let undone: Vec<&rollback::UndoView> = dry
        .steps
        .iter()
        .filter(|view| view.order.is_some())
        .collect();
    let environment = dry
        .environment
        .as_ref()
        .map(|name| format!(" in `{name}`"))
        .unwrap_or_default();
    outln!(
        "Rollback of run {} (`{}`{environment}): {} step{} undone, newest first; nothing is changed by this dry run",
        dry.run_id,
        dry.runbook,
        undone.len(),
        if undone.len() == 1 { "" } else { "s" }
    )?;
    for view in undone {
        outln!()?;
        outln!(
            "{}. {} `{}` ({})",
            view.order.unwrap_or_default(),
            view.name,
            view.step,
            view.plugin
        )?;
        if let Some(summary) = &view.summary {
            outln!("   ↶ {summary}")?;
        }
        for write in &view.intercepted {
            outln!("   ⊘ {write}")?;
        }
        if view.stopped_at_write {
            outln!(
                "   … its rollback stops at that held-back write in a dry run; what follows is not shown"
            )?;
        }
        if let Some(error) = &view.error {
            outln!("   ✗ cannot try its rollback: {error}")?;
        } else if view.intercepted.is_empty() {
            outln!("   · its rollback would change nothing")?;
        }
    }
    let untouched: Vec<&rollback::UndoView> = dry
        .steps
        .iter()
        .filter(|view| view.order.is_none())
        .collect();
    if !untouched.is_empty() {
        outln!()?;
        outln!("Nothing to undo:")?;
        for view in untouched {
            outln!(
                "   - `{}` ({}): {}",
                view.step,
                view.plugin,
                view.nothing.as_deref().unwrap_or_default()
            )?;
        }
    }
    outln!()?;
    for refusal in &dry.refused {
        outln!("✗ would be refused: {}", refusal.message)?;
        if let Some(hint) = &refusal.hint {
            outln!("  hint: {hint}")?;
        }
    }
    outln!("↶ the plugin's rollback said    ⊘ a write it tried, held back by the host")
}
