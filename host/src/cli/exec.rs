//! `runbook exec`: check everything, pass the gates, run the steps with
//! live progress, write the journal and the deployment record.

use super::session::{RunOptions, Terminal};
use super::{BindArgs, Cli, Failure};
use crate::run::{self, Secrets, Start};
use crate::runbook::Bindings;

/// `runbook exec FILE --env NAME --set K=V...`
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    bind: BindArgs,

    #[command(flatten)]
    options: RunOptions,

    /// Run nothing for real: the same as `runbook plan` (plugins plan with
    /// their grants; HTTP and AWS writes are held back, Kubernetes writes
    /// go with `dryRun=All`).
    #[arg(long)]
    dry_run: bool,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &ExecArgs) -> Result<u8, Failure> {
    if args.dry_run {
        let plan = super::plan::PlanArgs {
            bind: args.bind.clone(),
            output: args.options.output,
            aws_endpoint: args.options.aws_endpoint.clone(),
            kube_context: args.options.kube_context.clone(),
            state_dir: args.options.state_dir.clone(),
            emergency: args.options.emergency,
            reason: args.options.reason.clone(),
        };
        return super::plan::run(cli, &plan).await;
    }
    let bindings = Bindings {
        environment: args.bind.env.clone(),
        sets: args.bind.set.clone(),
        operator: args.bind.operator(),
        run_id: run::new_run_id(),
        lenient: false,
    };
    let runtime = super::plugin_runtime(cli)?;
    let terminal = Terminal::new(cli, args.options.output);
    let options = args.options.for_run();
    let ended = async {
        let file = &args.bind.file;
        let prepared =
            run::prepare(&runtime, file, bindings, Secrets::Environment, &terminal).await?;
        let connections = args.options.connections(&prepared);
        run::run(
            &runtime,
            prepared,
            Start::New,
            connections,
            &options,
            &terminal,
        )
        .await
    }
    .await;
    super::session::print_ended(ended, args.options.output)
}
