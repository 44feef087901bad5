//! `runbook worker`: goes on with every run whose step waits for its next
//! round (a soak, a canary's stages) when that round is due: runs parked
//! by `exec --detach` or a long wait, and runs whose process died during a
//! wait. What a systemd unit or a Kubernetes Deployment runs beside the
//! state folder; `--once` suits cron.

use super::{Cli, Failure, Output, exit};
use crate::events::{Event, EventKind, EventSink, EventWriter, JsonStdout};
use crate::run::worker::{self, Waiting};
use crate::run::{Ended, Interface, Notice};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `runbook worker [--state-dir DIR]... [--once | --until-done]`
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// A state folder to look after; repeat for several [default:
    /// `.runbook/` here and in the folders just below]. A shared backend's
    /// `postgres://` URL works too: the worker then goes on with the team's
    /// parked runs, whichever machine started them.
    #[arg(long = "state-dir", visible_alias = "state", value_name = "DIR|URL")]
    state_dirs: Vec<PathBuf>,

    /// Go on with the runs due now, one round each (every run parks again
    /// at its next wait), then exit: for cron.
    #[arg(long, conflicts_with = "until_done")]
    once: bool,

    /// Exit once no run waits any more (every run it looks after ended).
    #[arg(long)]
    until_done: bool,

    /// How often to look for runs that became due.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    poll: Duration,

    /// At most this many runs at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_runs: usize,

    /// Park a run again at any wait at least this long, instead of
    /// waiting in the worker [default: 1h; with `--once`, every wait].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    park_after: Option<Duration>,

    /// Let command steps run without Landlock where this kernel lacks it,
    /// as `exec --allow-unconfined-commands` does (recorded per run).
    #[arg(long)]
    allow_unconfined_commands: bool,

    /// `text`: one line per step event, with its run; `json`: every event
    /// as a JSON line on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &WorkerArgs) -> Result<u8, Failure> {
    let runtime = super::plugin_runtime(cli)?;
    let folders = super::runs::state_folders(None);
    let folders = if args.state_dirs.is_empty() {
        folders
    } else {
        args.state_dirs
            .iter()
            .map(|given| crate::state::given_dir(given, None))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|error| Failure::Internal(error.into()))?
    };
    let park_after = if args.once {
        Duration::ZERO
    } else {
        args.park_after.unwrap_or(super::session::PARK_AFTER)
    };
    let options = crate::run::Options {
        state_dir: None,
        index_dir: crate::state::index_dir(),
        parallel: 16,
        emergency: None,
        wait_lock: false,
        wait_approval: false,
        // The runs it carries were signed when they started.
        signing_key: None,
        park_after: Some(park_after),
        // Stopping the worker is like a crash for the runs it carries: it
        // exits, and each run goes on from its last journaled wait with
        // the next worker or `runbook resume`. Nothing is rolled back.
        cancel: tokio_util::sync::CancellationToken::new(),
        abort: tokio_util::sync::CancellationToken::new(),
        aws_endpoint: None,
    };
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!(
            "worker stopped: the runs it carried go on from their last wait with the next worker or `runbook resume`"
        );
        std::process::exit(i32::from(exit::CANCELLED));
    });
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::spawn(async move {
            terminate.recv().await;
            eprintln!(
                "worker stopped (SIGTERM): the runs it carried go on from their last wait with the next worker or `runbook resume`"
            );
            std::process::exit(i32::from(exit::CANCELLED));
        });
    }

    let allow_unconfined = args.allow_unconfined_commands;
    let mut carrying: BTreeSet<String> = BTreeSet::new();
    // Runs it went on with, as they stood then: not tried again until they
    // change (their next round, a new approval), so a run that still
    // waits for people or that another process holds is not retried in a
    // loop.
    let mut tried: BTreeSet<(String, String)> = BTreeSet::new();
    let mut running = FuturesUnordered::new();
    let mut failures = 0_usize;
    loop {
        // `RUNBOOK_NOW` rehearses a deploy window, as for `exec`.
        let now = crate::schedule::now();
        let found: Vec<Waiting> = folders
            .iter()
            .flat_map(|dir| worker::waiting(dir))
            .collect();
        let mut next_due: Option<jiff::Timestamp> = None;
        let mut pending = 0;
        for waiting in &found {
            if carrying.contains(&waiting.run_id)
                || tried.contains(&(waiting.run_id.clone(), waiting.generation.clone()))
            {
                continue;
            }
            pending += 1;
            if !waiting.due(now) {
                next_due = Some(next_due.map_or(waiting.wake_at, |due| due.min(waiting.wake_at)));
                continue;
            }
            if running.len() >= args.max_runs {
                break;
            }
            carrying.insert(waiting.run_id.clone());
            tried.insert((waiting.run_id.clone(), waiting.generation.clone()));
            let waiting = waiting.clone();
            let runtime = &runtime;
            let options = &options;
            let output = args.output;
            running.push(async move {
                let view = WorkerView {
                    run_id: waiting.run_id.clone(),
                    output,
                };
                view.say(&format!(
                    "going on with `{}` ({})",
                    waiting.step, waiting.status
                ));
                let ended = worker::go_on(
                    runtime,
                    &waiting,
                    |prepared| {
                        crate::run::Connections::for_environment(prepared, None, None)
                            .allowing_unconfined_commands(allow_unconfined)
                    },
                    options,
                    &view,
                )
                .await;
                (waiting, ended)
            });
        }
        let idle = running.is_empty();
        if idle && (args.once || (args.until_done && pending == 0)) {
            break;
        }
        let nap = next_due
            .map(|due| {
                Duration::try_from(due.duration_since(jiff::Timestamp::now())).unwrap_or_default()
            })
            .unwrap_or(args.poll)
            .min(args.poll);
        tokio::select! {
            finished = running.next(), if !running.is_empty() => {
                if let Some((waiting, ended)) = finished {
                    carrying.remove(&waiting.run_id);
                    let view = WorkerView { run_id: waiting.run_id.clone(), output: args.output };
                    match ended {
                        Ok(Ended::Ran(finished)) => view.say(finished.report.status.as_str()),
                        Ok(Ended::AwaitingApprovals { waiting: who, .. }) => view.say(&format!("waits for approvals: {who}")),
                        Ok(Ended::Parked { reason, .. }) => view.say(&format!("waits for {reason}")),
                        Err(error) => {
                            failures += 1;
                            view.say(&format!("cannot go on: {error}"));
                        }
                    }
                }
            }
            () = tokio::time::sleep(nap) => {}
        }
    }
    Ok(if failures == 0 {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    })
}

/// The worker's view of one run it carries: a line per step event with the
/// run's id (several runs share the terminal), or JSON lines.
struct WorkerView {
    run_id: String,
    output: Output,
}

impl WorkerView {
    fn say(&self, line: &str) {
        if self.output == Output::Text {
            eprintln!(
                "{}",
                crate::terminal::text(&format!("[{}] {line}", self.run_id))
            );
        }
    }
}

impl Interface for WorkerView {
    fn notice(&self, notice: Notice) {
        self.say(&notice.to_string());
    }

    fn watch(&self, events: &EventSink) {
        match self.output {
            Output::Text => events.add(StepLines {
                run_id: self.run_id.clone(),
            }),
            Output::Json => events.add(JsonStdout),
        }
    }

    fn ask(&self) -> Option<Arc<dyn crate::engine::Ask>> {
        None
    }
}

/// One line on stderr per step start, wait and end.
struct StepLines {
    run_id: String,
}

impl EventWriter for StepLines {
    fn write(&mut self, event: &Event, _line: &str) {
        let step = event
            .step
            .as_ref()
            .map(|id| id.0.as_str())
            .unwrap_or_default();
        let line = match &event.kind {
            EventKind::StepStarted { .. } => format!("{step}: started"),
            EventKind::StepWaiting {
                status,
                wake_at,
                parked,
                ..
            } => format!(
                "{step}: {status}; next round at {wake_at}{}",
                if *parked { " (parked)" } else { "" }
            ),
            EventKind::Milestone { message } => format!("{step}: {message}"),
            EventKind::StepFinished {
                status, summary, ..
            } => format!("{step}: {} — {summary}", status.as_str()),
            EventKind::RunFinished { status, .. } => format!("run {}", status.as_str()),
            _ => return,
        };
        eprintln!(
            "{}",
            crate::terminal::text(&format!("[{}] {line}", self.run_id))
        );
    }
}
