//! `runbook exec`: validate, then run every step, with live progress and a
//! run log in `.runbook/runs/RUN/events.jsonl` beside the runbook.

use super::{BindArgs, Cli, Failure, Output, exit};
use crate::engine::{Executor, preflight};
use crate::events::{EventSink, JsonStdout, JsonlFile, Status};
use crate::progress::Progress;
use crate::runbook::{self, Bindings, bind::bind};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `runbook exec FILE --env NAME --set K=V...`
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    bind: BindArgs,

    /// `text` shows progress on stderr; `json` writes every event as a JSON line on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,

    /// Where run logs go [default: `.runbook/` beside the runbook].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// The folder of a runbook's state: `.runbook/` beside it.
pub fn state_dir(runbook: &Path, given: Option<&Path>) -> PathBuf {
    match given {
        Some(dir) => dir.to_path_buf(),
        None => runbook
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(".runbook"),
    }
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &ExecArgs) -> Result<u8, Failure> {
    let runbook = Arc::new(runbook::load(&args.bind.file)?);
    let run_id = super::new_run_id();
    let plan = bind(
        runbook,
        Bindings {
            environment: args.bind.env.clone(),
            sets: args.bind.set.clone(),
            operator: args.bind.operator(),
            run_id: run_id.clone(),
            lenient: false,
        },
    )?;
    let runtime = super::plugin_runtime(cli)?;
    let plugins = preflight::load_plugins(&runtime, &plan).await?;
    let secrets = preflight::load_secrets(&plan)?;
    preflight::check_params(&runtime, &plan, &plugins, &secrets).await?;

    let log_path = state_dir(&args.bind.file, args.state_dir.as_deref())
        .join("runs")
        .join(&run_id)
        .join("events.jsonl");
    let events = EventSink::new();
    events.set_redactor(secrets.redactor());
    events.add(
        JsonlFile::create(&log_path)
            .with_context(|| format!("cannot create the run log {}", log_path.display()))?,
    );
    match args.output {
        Output::Text => events.add(Progress::stderr(cli.verbose)),
        Output::Json => events.add(JsonStdout),
    }

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let executor = Executor {
        runtime: &runtime,
        plugins: &plugins,
        events,
        secrets,
        cancel,
    };
    let report = executor.execute(&plan).await;
    if args.output == Output::Text {
        eprintln!("  run log: {}", log_path.display());
    }
    Ok(match report.status {
        Status::Succeeded | Status::Skipped => exit::SUCCESS,
        Status::Failed => exit::STEP_FAILED,
        Status::Denied => exit::DENIED,
        Status::Cancelled => exit::CANCELLED,
    })
}

/// Ctrl-C or SIGTERM cancels the run: running steps stop at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(_) => {
                        let _ = interrupt.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
        eprintln!("\ninterrupted: cancelling the running step");
        cancel.cancel();
    });
}
