//! What `exec` and `resume` share on the command line: the options of a
//! run, the terminal they run on (progress, prompts, notices, interrupts),
//! and what is printed when the run ends. The run itself is
//! [`crate::run`].

use super::{Cli, Failure, Output, exit};
use crate::engine::Ask;
use crate::events::{Choice, EventSink, JsonStdout, Status};
use crate::progress::Progress;
use crate::run::record::{Deployment, Finished, Unrecorded};
use crate::run::{Ended, Interface, Notice};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A wait of a step this long or longer parks the run unless
/// `--park-after` says otherwise: nobody keeps a terminal open for an hour.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The options of a run that `exec` and `resume` both take.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// `text` shows progress on stderr; `json` writes every event as a JSON line on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Where run state goes [default: `.runbook/` beside the runbook].
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    pub state_dir: Option<PathBuf>,

    /// At most this many steps at once [default: every ready step, up to 16].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,

    /// An emergency: `exec` and `resume` run outside the deploy windows or
    /// in a freeze, or without the earlier success the environment's
    /// promotion gate asks for; `rollback` goes past the environment's
    /// `rollback_window`. Needs `--reason` and the environment's emergency
    /// approvals. Recorded.
    #[arg(long, requires = "reason")]
    pub emergency: bool,

    /// Why the emergency (recorded in the run log and deployment record).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Wait for the lock when another run of this runbook and environment holds it.
    #[arg(long)]
    pub wait_lock: bool,

    /// Wait at the approval gate instead of stopping there.
    #[arg(long)]
    pub wait_approval: bool,

    /// The operator's SSH key, where the environment's approvals name an
    /// `allowed_signers` file: the run (or a rollback asked after it
    /// ended) is signed with it before anything runs, and refused without
    /// it. A private key file, or a public key whose private half is in
    /// ssh-agent; `ssh-keygen -Y sign` signs.
    #[arg(long, value_name = "KEY", env = "RUNBOOK_SIGNING_KEY")]
    pub key: Option<PathBuf>,

    /// Park the run at the first wait of a step that works in rounds (a
    /// soak, a canary's stages): the process ends, the journal keeps where
    /// the step stands, and `runbook worker` (or `runbook resume RUN`)
    /// goes on when the wait is due. `runbook runs` shows when.
    #[arg(long, conflicts_with = "park_after")]
    pub detach: bool,

    /// Park the run at any wait at least this long, instead of waiting in
    /// this process [default: 1h]. Shorter waits (an analysis round every
    /// 30s) are waited here, each journaled first.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub park_after: Option<std::time::Duration>,

    /// Send AWS calls to this endpoint (an emulator such as moto) instead
    /// of AWS; overrides the environment's `aws_endpoint`.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,

    /// Make Kubernetes calls through this kubeconfig context; overrides
    /// the environment's `kube_context` (default: the current context of
    /// `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Let command steps run without Landlock where this kernel lacks it
    /// (they are refused otherwise). Each such program run is recorded as
    /// unconfined in the audit log; it still gets only its granted
    /// programs and arguments, no inherited environment, and its limits.
    #[arg(long)]
    pub allow_unconfined_commands: bool,

    /// Keep a cassette of every step in this folder (`DIR/STEP.json`):
    /// each capability call its plugin made with the host's answer, its
    /// parameters, grants and results, secrets redacted. `runbook plugin
    /// test PLUGIN --cassette DIR/STEP.json` replays one without the
    /// services.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
}

impl RunOptions {
    /// The library's options, with cancellation wired to Ctrl-C and SIGTERM.
    pub fn for_run(&self) -> crate::run::Options {
        let options = crate::run::Options {
            state_dir: self.state_dir.clone(),
            index_dir: crate::state::index_dir(),
            parallel: self.parallel.unwrap_or(16),
            emergency: self
                .emergency
                .then(|| self.reason.clone().unwrap_or_default()),
            wait_lock: self.wait_lock,
            wait_approval: self.wait_approval,
            signing_key: self.key.clone(),
            park_after: Some(if self.detach {
                std::time::Duration::ZERO
            } else {
                self.park_after.unwrap_or(PARK_AFTER)
            }),
            cancel: CancellationToken::new(),
            abort: CancellationToken::new(),
            aws_endpoint: self.aws_endpoint.clone(),
        };
        spawn_signal_handler(options.cancel.clone(), options.abort.clone());
        options
    }

    /// Where steps granted AWS or Kubernetes reach, by the environment
    /// unless `--aws-endpoint` or `--kube-context` say otherwise.
    pub fn connections(&self, prepared: &crate::run::Prepared) -> crate::run::Connections {
        crate::run::Connections::for_environment(
            prepared,
            self.aws_endpoint.clone(),
            self.kube_context.clone(),
        )
        .allowing_unconfined_commands(self.allow_unconfined_commands)
        .recording(self.record.clone())
    }
}

/// The operator's terminal, as a run's [`Interface`]: progress on stderr
/// or JSON lines on stdout, notices on stderr, and manual checklists
/// ticked on an interactive terminal.
pub struct Terminal {
    output: Output,
    verbose: bool,
}

impl Terminal {
    /// The terminal of this command line.
    pub fn new(cli: &Cli, output: Output) -> Self {
        Terminal {
            output,
            verbose: cli.verbose,
        }
    }
}

impl Interface for Terminal {
    fn notice(&self, notice: Notice) {
        let line = match &notice {
            Notice::WiderGrant(_) => notice.to_string(),
            Notice::LockHeld(_) => format!("waiting: {notice}"),
            Notice::AwaitingApprovals(_) => format!("⏸ {notice}"),
            Notice::LockTakenOver { .. } | Notice::JournalTornTail | Notice::RecordWritten(_) => {
                format!("note: {notice}")
            }
        };
        // Notices quote plugin names, operators and lock holders: text the
        // host did not write passes the terminal filter.
        eprintln!("{}", crate::terminal::text(&line));
    }

    fn watch(&self, events: &EventSink) {
        match self.output {
            Output::Text => events.add(Progress::stderr(self.verbose)),
            Output::Json => events.add(JsonStdout),
        }
    }

    fn ask(&self) -> Option<Arc<dyn Ask>> {
        (self.output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stdin()))
            .then(|| Arc::new(TerminalChecklist) as Arc<dyn Ask>)
    }
}

/// Ticks a manual step's checklist on the operator's terminal, one item
/// at a time, as on the paper checklist.
struct TerminalChecklist;

impl Ask for TerminalChecklist {
    fn tick(&self, step: &str, items: &[String]) -> Result<Vec<String>, String> {
        let _paused = crate::progress::pause();
        eprintln!("\nManual step `{step}`: tick each item: y when it is done, n to stop the run");
        let mut ticked = Vec::new();
        for item in items {
            let item_text = crate::terminal::text(item);
            loop {
                eprint!("  [ ] {item_text} — done? [y/n] ");
                let mut line = String::new();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => return Err(item.clone()),
                    Ok(_) => {}
                }
                match line.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => break,
                    "n" | "no" => return Err(item.clone()),
                    // Enter alone (or anything else) asks again: a run is
                    // never stopped by a key pressed at a blank screen.
                    other => eprintln!(
                        "  {}answer y (done) or n (stop the run)",
                        if other.is_empty() {
                            String::new()
                        } else {
                            format!("`{}` is not an answer: ", crate::terminal::text(other))
                        }
                    ),
                }
            }
            eprintln!("  [x] {item_text}");
            ticked.push(item.clone());
        }
        Ok(ticked)
    }

    fn decide(&self, step: &str, failure: &str) -> Option<Choice> {
        let _paused = crate::progress::pause();
        eprintln!(
            "\nStep `{}` failed: {}\nWhat now? [r]etry it, [s]kip it and go on, roll [b]ack the run, [a]bort the run, or Enter to decide later with `runbook decide`",
            crate::terminal::text(step),
            crate::terminal::text(failure)
        );
        loop {
            eprint!("  [r/s/b/a] ");
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).ok()? == 0 {
                return None;
            }
            match line.trim().to_ascii_lowercase().as_str() {
                "" => return None,
                "r" | "retry" => return Some(Choice::Retry),
                "s" | "skip" => return Some(Choice::Skip),
                "b" | "rollback" | "roll back" => return Some(Choice::Rollback),
                "a" | "abort" => return Some(Choice::Abort),
                other => eprintln!(
                    "  `{}` is not a choice: r, s, b, a, or Enter for later",
                    crate::terminal::text(other)
                ),
            }
        }
    }
}

/// Prints how the run ended, or why it did not start, and returns the
/// exit code.
pub fn print_ended(ended: Result<Ended, crate::run::Error>, output: Output) -> Result<u8, Failure> {
    match ended {
        Ok(Ended::AwaitingApprovals { run_id, waiting }) => {
            let waiting = crate::terminal::text(&waiting);
            eprintln!("⏸ {waiting}, then `runbook resume {run_id}`");
            Ok(exit::WAITING)
        }
        Ok(Ended::Parked {
            run_id,
            until,
            reason,
        }) => {
            eprintln!(
                "⏸ parked: run {run_id} waits for {} (until {until}); `runbook worker` starts it then, or `runbook resume {run_id}` once it is open",
                crate::terminal::text(&reason)
            );
            Ok(exit::WAITING)
        }
        Ok(Ended::Ran(finished)) => Ok(print_finished(&finished, output)),
        Err(crate::run::Error::Interrupted) => Ok(exit::CANCELLED),
        Err(error) => Err(error.into()),
    }
}

/// Prints the end of a run that ran: what could not be recorded, the
/// deployment record, where the log is, and how to go on.
fn print_finished(finished: &Finished, output: Output) -> u8 {
    if let Some(unrecorded) = &finished.unrecorded {
        print_unrecorded(finished, unrecorded, output);
        return exit::INTERNAL;
    }
    if let Some(deployment) = &finished.deployment {
        print_deployment(finished, deployment, output);
    }
    let report = &finished.report;
    if output == Output::Text {
        eprintln!("  run log: {}", finished.journal.display());
        if let Some(Deployment {
            written: Ok(path), ..
        }) = &finished.deployment
        {
            eprintln!("  deployment record: {}", path.display());
        }
        if !report.rollback_failures.is_empty() {
            eprintln!(
                "  ROLLBACK FAILED for {}: check these by hand",
                report.rollback_failures.join(", ")
            );
        }
        if let Some(step) = &report.awaiting_decision {
            eprintln!(
                "  `{step}` failed; choose with `runbook decide {} retry|skip|rollback|abort`",
                finished.run_id
            );
        } else if report.status == Status::Waiting
            || report.status == Status::Cancelled
            || (report.status.is_failure()
                && report.status != Status::Denied
                && !report.rolled_back)
        {
            eprintln!("  resume with `runbook resume {}`", finished.run_id);
        }
    }
    exit_code(report.status)
}

/// A run that stopped because its journal or audit log could not be
/// written: what the journal holds, and how to go on.
fn print_unrecorded(finished: &Finished, unrecorded: &Unrecorded, output: Output) {
    let Unrecorded { reason, completed } = unrecorded;
    match output {
        Output::Text => {
            let completed = if completed.is_empty() {
                "none".to_owned()
            } else {
                completed
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            eprintln!(
                "✗ the run stopped: {reason}. No step was started after that. Completed steps, as the journal records them: {completed}. A step that was running when it happened may or may not have taken effect; `resume` will ask."
            );
            eprintln!(
                "  free the disk (or fix the error), then `runbook resume {}`",
                finished.run_id
            );
        }
        // A closed stdout ends this output quietly; the exit code still
        // says what happened.
        Output::Json => print_json_event(&serde_json::json!({
            "event": "run_unrecorded",
            "reason": reason,
            "run_id": finished.run_id,
            "completed": completed,
        })),
    }
}

/// The deployment record: a failed write said on stderr, the record as a
/// JSON line for `--output json`.
fn print_deployment(finished: &Finished, deployment: &Deployment, output: Output) {
    if let Err(error) = &deployment.written {
        eprintln!(
            "error: cannot write the deployment record: {error}; the run is recorded in its journal, and `runbook resume {}` writes the record once the disk is fixed",
            finished.run_id
        );
    }
    // A closed stdout ends the output quietly, not the run's exit code.
    if output == Output::Json {
        print_json_event(
            &serde_json::json!({"event": "deployment_record", "record": deployment.record}),
        );
    }
}

/// Writes a JSON line after the run's events; a closed stdout is quiet.
fn print_json_event(value: &serde_json::Value) {
    if let Err(Failure::Internal(error)) = super::print_json_line(value) {
        eprintln!("error: {error:#}");
    }
}

/// The exit code of a run that ended so.
fn exit_code(status: Status) -> u8 {
    match status {
        Status::Succeeded | Status::Skipped | Status::RolledBack => exit::SUCCESS,
        Status::Failed => exit::STEP_FAILED,
        Status::Denied => exit::DENIED,
        Status::Cancelled => exit::CANCELLED,
        Status::Waiting => exit::WAITING,
    }
}

/// First Ctrl-C or SIGTERM: running steps stop, then the failure policy
/// applies (a rollback, say). Second: the rollback stops too.
fn spawn_signal_handler(cancel: CancellationToken, abort: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for round in 0..2 {
            #[cfg(unix)]
            {
                let term = async {
                    match terminate.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if round == 0 {
                eprintln!(
                    "\ninterrupted: stopping the running steps, then following the failure policy (interrupt again to stop that too)"
                );
                cancel.cancel();
            } else {
                eprintln!("\ninterrupted again: stopping the rollback");
                abort.cancel();
            }
        }
    });
}
