//! `runbook resume RUN`: continue a run that stopped (a crash, a failure, a
//! gate). What goes on, and how, is [`crate::run::resume`]'s to decide.

use super::session::{RunOptions, Terminal};
use super::{Cli, Failure};
use crate::run::{self, resume};

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

/// Runs the command.
pub async fn run(cli: &Cli, args: &ResumeArgs) -> Result<u8, Failure> {
    let request = resume::Request {
        run: args.run.clone(),
        rerun: args.rerun.clone(),
        skip: args.skip.clone(),
        operator: std::env::var("RUNBOOK_OPERATOR")
            .or_else(|_| std::env::var("USER"))
            .ok(),
        decision: None,
    };
    go_on(cli, &request, &args.options).await
}

/// Goes on with a stopped run in this process, as `request` asks
/// (`resume`, `decide`), and prints how it ended.
pub(super) async fn go_on(
    cli: &Cli,
    request: &resume::Request,
    options: &RunOptions,
) -> Result<u8, Failure> {
    let runtime = super::plugin_runtime(cli)?;
    let terminal = Terminal::new(cli, options.output);
    let run_options = options.for_run();
    let ended = async {
        let (prepared, start) = resume::prepare(&runtime, request, &run_options, &terminal).await?;
        let connections = options.connections(&prepared);
        run::run(
            &runtime,
            prepared,
            start,
            connections,
            &run_options,
            &terminal,
        )
        .await
    }
    .await;
    super::session::print_ended(ended, options.output)
}
