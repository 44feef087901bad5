//! The command line: clap definitions and the dispatch to one file per verb.
//! Only this module and `main.rs` use `anyhow`.

/// `println!` for the verbs: the line passes the terminal filter
/// ([`crate::terminal::text`]), and a closed stdout (`runbook logs RUN |
/// head -1`) ends the command quietly instead of panicking. Evaluates to
/// `Result<(), Failure>`, for `?`.
macro_rules! outln {
    () => {
        $crate::cli::print_text("")
    };
    ($($argument:tt)*) => {
        $crate::cli::print_text(&format!($($argument)*))
    };
}

pub mod approve;
pub mod audit;
pub mod decide;
pub mod exec;
pub mod lock;
pub mod plan;
pub mod plugin;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod runs;
pub mod session;
pub mod state;
pub mod unlock;
pub mod validate;
pub mod worker;

use crate::diagnostic::Diagnostics;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes, as documented in `runbook --help`.
pub mod exit {
    /// Every step succeeded.
    pub const SUCCESS: u8 = 0;
    /// A step failed.
    pub const STEP_FAILED: u8 = 1;
    /// The runbook or the command line is invalid; nothing ran.
    pub const INVALID: u8 = 2;
    /// A step was denied a capability it was not granted.
    pub const DENIED: u8 = 3;
    /// The run waits for approvals, a confirmation or a step's next round;
    /// resume it later (or `runbook worker` does).
    pub const WAITING: u8 = 4;
    /// The operator answered no to `Apply this plan?` (or pressed Ctrl-C
    /// at it): nothing ran, nothing was recorded.
    pub const DECLINED: u8 = 5;
    /// The run was interrupted (Ctrl-C, SIGTERM).
    pub const CANCELLED: u8 = 130;
    /// runbook itself failed (a bug, or the machine: disk, memory).
    pub const INTERNAL: u8 = 70;
}

const AFTER_HELP: &str = "\
Examples:
  runbook validate runbooks/smoke.toml
  runbook plan runbooks/smoke.toml --env staging --set version=1.2.3
  runbook exec runbooks/smoke.toml --env staging --set version=1.2.3
  runbook plan runbooks/smoke.toml --env staging --set version=1.2.3 --out plan.json
  runbook exec plan.json
  runbook approve 20261122-101500-a1b2c3 --as bob
  runbook resume 20261122-101500-a1b2c3
  runbook decide 20261122-101500-a1b2c3 retry
  runbook worker --state-dir .runbook
  runbook rollback 20261122-101500-a1b2c3 --dry-run
  runbook runs
  runbook report 20261122-101500-a1b2c3 -o run.html
  runbook plugin inspect target/wasm32-wasip2/release/smoke_test.wasm

Exit codes:
  0    every step succeeded
  1    a step failed
  2    the runbook or the command line is invalid; nothing ran
  3    a step was denied a capability its runbook does not grant
  4    the run waits for approvals, a manual confirmation (runbook resume RUN),
       a step's next round (runbook worker, or runbook resume RUN) or a
       decision on a failed step (runbook decide RUN retry|skip|rollback|abort)
  5    the operator answered no to `Apply this plan?`; nothing ran
  70   runbook itself failed
  130  interrupted (Ctrl-C)

Secrets named `${{ secrets.NAME }}` in a runbook are read from the
environment variable NAME and never reach a plugin: plugins get a sealed
handle that the host swaps for the value only on requests to granted hosts.";

/// Runs deployment runbooks whose every step is a sandboxed WebAssembly
/// component, given only the capabilities its runbook grants.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// More detail: plugin debug logs and every capability call (HTTP, Kubernetes, AWS, files).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Where compiled plugins are cached [default: ~/.cache/runbook/components].
    #[arg(long, global = true, env = "RUNBOOK_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook's steps against an environment, or apply a saved plan.
    #[command(
        long_about = "Run a runbook's steps against an environment. On an interactive terminal (stdin and stderr, text output), `exec` first shows the plan, as `runbook plan` prints it, and asks `Apply this plan? [y/n]` before the first step: n (or Ctrl-C) runs nothing, records nothing and exits 5; `--yes` skips the question. It never asks without a terminal, with `--output json` or with `--detach`.\n\nGiven a plan saved by `runbook plan --out PLAN.json` instead of a runbook (a `.json` file, or one that starts with `{`), `exec` binds the runbook file the plan names again with the plan's environment and parameters, and runs it only when everything is as saved: the runbook's text, each plugin's bytes, each parameter, each step's and `[notify]` target's grants, and the fingerprint approvals bind to. Otherwise it refuses (exit 2, nothing ran), saying what changed. `--env` and `--set` are not taken with a saved plan, and it is not asked about: it was reviewed. The run records the plan it applied (`saved_plan` in `run_started`).",
        after_help = "Examples:\n  runbook exec deploy.toml --env production --set version=1.2.3\n  runbook exec deploy.toml --env production --set version=1.2.3 --yes\n  runbook plan deploy.toml --env production --set version=1.2.3 --out plan.json\n  runbook exec plan.json"
    )]
    Exec(exec::ExecArgs),
    /// Check a runbook without running anything: shape, references, plugins, parameters.
    #[command(
        after_help = "Example:\n  runbook validate deploy.toml\n  runbook validate deploy.toml --env production --set version=1.2.3\n\nPlugins the compile cache lacks are compiled by wasmtime's quick compiler,\nwhich is enough to check them; `runbook plugin warm deploy.toml` prepares the\noptimised code that `exec` runs (a CI image can do it ahead)."
    )]
    Validate(validate::ValidateArgs),
    /// Show what each step would do, without doing it; `--out` saves the plan for `exec`.
    #[command(
        after_help = "Examples:\n  runbook plan deploy.toml --env production --set version=1.2.3\n  runbook plan deploy.toml --env production --set version=1.2.3 --out plan.json && runbook exec plan.json"
    )]
    Plan(plan::PlanArgs),
    /// Continue a run that stopped: after a crash, a failure, or at a gate.
    #[command(
        after_help = "Examples:\n  runbook resume 20261122-101500-a1b2c3\n  runbook resume 20261122-101500-a1b2c3 --rerun migrate"
    )]
    Resume(resume::ResumeArgs),
    /// Undo a run that ended: its completed steps' rollbacks, newest first.
    #[command(
        long_about = "Undo a run that ended (succeeded, or stopped without rolling back): each completed step's plugin rollback, newest first, from the outputs and checkpoints the run recorded. The rollback is a later process of the same run: journaled, audited, resumable with `runbook resume RUN` after a crash, and the run then shows `rolled_back` in `runbook runs`, `show` and its deployment record.\n\nRefused while the run is running or locked, when it was rolled back already, when a later run of the same runbook and environment succeeded on top of it (`--force` goes ahead, recorded), and when the environment's `rollback_window` has passed since the run ended (`--emergency --reason` goes past it, recorded, with the emergency approvals). Deploy windows and freezes do not hold a rollback back. Where the environment requires approvals, the rollback needs its own: `runbook approve RUN --as NAME` (`--key KEY` where approvals are signed, and then `rollback` itself needs the operator's `--key`) once it waits, then `runbook resume RUN`; an approval of the deploy does not approve its rollback.",
        after_help = "Examples:\n  runbook rollback 20261122-101500-a1b2c3 --dry-run\n  runbook rollback 20261122-101500-a1b2c3\n  runbook rollback 20261122-101500-a1b2c3 --force\n  runbook rollback 20261122-101500-a1b2c3 --emergency --reason \"checkout broken since 1.2.3\""
    )]
    Rollback(rollback::RollbackArgs),
    /// Choose what happens to a run that stopped at a failed step (`on_failure = "ask"`).
    #[command(
        long_about = "Choose what happens to a run that stopped at a failed step whose policy is `on_failure = \"ask\"` (at the runbook, the environment or the step), and go on with it in this process: `retry` runs the failed step again, `skip` goes on as if it had succeeded (its dependents run; a rollback does not undo it), `rollback` undoes what the run completed, newest first, and `abort` ends the run as it stands. On an interactive terminal `exec` asks at once; without one (CI, `--detach`, `--output json`) the run ends waiting (exit 4) and `runbook runs` shows it waiting for a decision. The choice, who made it and the note are kept in the run log and the audit log.",
        after_help = "Examples:
  runbook decide 20261122-101500-a1b2c3 retry
  runbook decide 20261122-101500-a1b2c3 skip --as alice --note \"smoke test flaky, checked by hand\"
  runbook decide 20261122-101500-a1b2c3 rollback"
    )]
    Decide(decide::DecideArgs),
    /// Approve a run waiting at its environment's approval gate.
    #[command(after_help = "Example:\n  runbook approve 20261122-101500-a1b2c3 --as bob")]
    Approve(approve::ApproveArgs),
    /// Confirm a manual step's checklist.
    #[command(
        after_help = "Example:\n  runbook confirm 20261122-101500-a1b2c3 verify-backup --as alice"
    )]
    Confirm(approve::ConfirmArgs),
    /// List runs, newest first.
    Runs(runs::RunsArgs),
    /// Show one run's timeline.
    Show(runs::ShowArgs),
    /// Print a run's logs, for one step or all.
    Logs(runs::LogsArgs),
    /// Write a run's report: a self-contained HTML page (or Markdown) with its timeline, steps, calls, metrics and audit verdict.
    #[command(
        long_about = "Write a run's report from its journal and audit log: a self-contained HTML page (inline CSS and SVG, no script, nothing fetched: it opens offline and as an email attachment) or, with --markdown, the same content as Markdown. It shows the run (runbook, environment, operator, parameters, status, start, end, duration, approvals and who gave them, emergency and promotion facts), a timeline with one bar per step on a time axis (steps that ran side by side on their own rows at the same time; waits and rollbacks marked), each step's summary, log lines, capability calls and outputs, a chart of each metric of canary and gate rounds against its limit, and whether the audit log's hash chain is intact (as `runbook audit verify`). Every text from the journal is escaped.",
        after_help = "Examples:\n  runbook report 20261122-101500-a1b2c3 -o run.html\n  runbook report 20261122-101500-a1b2c3 --markdown > run.md\n  runbook report 20261122-101500-a1b2c3 --state-dir /srv/deploys/.runbook -o run.html"
    )]
    Report(report::ReportArgs),
    /// Break a lock left by a run whose process died.
    Unlock(unlock::UnlockArgs),
    /// Where runs, locks and records live: copy a local state folder into a shared backend.
    State(state::StateArgs),
    /// Go on with runs whose step waits for its next round, when it is due.
    #[command(
        long_about = "Go on with every run whose step waits for its next round (a soak, a canary's stages), when that round is due: runs parked by `exec --detach` or by a wait longer than `--park-after`, and runs whose process died during a wait. Each run goes on as `runbook resume RUN` would, under its lock, so a run is never carried by two processes. Runs wait in the worker between short rounds and park again at long waits. Stopping the worker is like a crash for the runs it carries: each goes on from its last journaled wait with the next worker. Run it beside the state folder as a systemd unit or a Kubernetes Deployment; `--once` suits cron.",
        after_help = "Examples:
  runbook exec soak.toml --env production --set version=1.2.3 --detach
  runbook worker --state-dir /srv/deploys/.runbook
  runbook worker --once"
    )]
    Worker(worker::WorkerArgs),
    /// For reviewers: what each step's plugin is, imports, asks for and is granted; what a run touched; whether its audit log is intact.
    #[command(
        after_help = "Examples:\n  runbook audit runbooks/smoke.toml --output markdown\n  runbook audit --run 20261122-101500-a1b2c3\n  runbook audit verify 20261122-101500-a1b2c3"
    )]
    Audit(audit::AuditArgs),
    /// Pin each plugin's digest and approved capabilities in `runbook.lock`.
    #[command(
        after_help = "Examples:\n  runbook lock runbooks/smoke.toml\n  runbook lock runbooks/smoke.toml --accept-new-capabilities"
    )]
    Lock(lock::LockArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// For people: progress on stderr.
    #[default]
    Text,
    /// For machines: JSON on stdout.
    Json,
}

/// The arguments that choose an environment and parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct BindArgs {
    /// The runbook file.
    pub file: PathBuf,

    /// The environment to run against (a key of `[environments]`).
    #[arg(short, long, value_name = "NAME")]
    pub env: Option<String>,

    /// A parameter value; repeat for several.
    #[arg(short, long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,

    /// Who is running this, for the run log [default: $RUNBOOK_OPERATOR, else $USER].
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
}

impl BindArgs {
    /// The operator's name.
    pub fn operator(&self) -> String {
        self.operator
            .clone()
            .or_else(|| std::env::var("RUNBOOK_OPERATOR").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// How a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The runbook or the arguments are wrong; nothing ran.
    Invalid(Diagnostics),
    /// Whoever read stdout stopped reading (`| head -1`): the output ends
    /// there, quietly, and the command exits as if it had finished it.
    StdoutClosed,
    /// Something else went wrong.
    Internal(anyhow::Error),
}

/// Writes one line of text on stdout, through the terminal filter.
pub fn print_text(line: &str) -> Result<(), Failure> {
    write_stdout(&crate::terminal::text(line))
}

/// Writes one JSON document on stdout, its raw control characters escaped
/// the JSON way ([`crate::terminal::json`]) so it means the same.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::Internal(anyhow::anyhow!("cannot write JSON: {error}")))?;
    write_stdout(&crate::terminal::json(&text))
}

/// Writes one JSON document on one line (a JSON-lines stream), escaped
/// like [`print_json`].
pub fn print_json_line(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|error| Failure::Internal(anyhow::anyhow!("cannot write JSON: {error}")))?;
    write_stdout(&crate::terminal::json(&text))
}

/// Writes a line on stdout; a closed pipe is [`Failure::StdoutClosed`].
fn write_stdout(line: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                Failure::StdoutClosed
            } else {
                Failure::Internal(anyhow::Error::new(error).context("cannot write to stdout"))
            }
        })
}

impl From<Diagnostics> for Failure {
    fn from(diagnostics: Diagnostics) -> Self {
        Failure::Invalid(diagnostics)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Internal(error)
    }
}

impl From<crate::runbook::LoadError> for Failure {
    fn from(error: crate::runbook::LoadError) -> Self {
        match error {
            crate::runbook::LoadError::Invalid(diagnostics) => Failure::Invalid(diagnostics),
            other => Failure::Internal(other.into()),
        }
    }
}

impl From<crate::run::Error> for Failure {
    fn from(error: crate::run::Error) -> Self {
        match error {
            crate::run::Error::Refused(diagnostics) => Failure::Invalid(diagnostics),
            other => Failure::Internal(other.into()),
        }
    }
}

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Exec(args) => exec::run(&cli, args).await,
            Command::Validate(args) => validate::run(&cli, args).await,
            Command::Plan(args) => plan::run(&cli, args).await,
            Command::Plugin(command) => plugin::run(&cli, command).await,
            Command::Resume(args) => resume::run(&cli, args).await,
            Command::Decide(args) => decide::run(&cli, args).await,
            Command::Rollback(args) => rollback::run(&cli, args).await,
            Command::Approve(args) => approve::approve(&cli, args),
            Command::Confirm(args) => approve::confirm(&cli, args),
            Command::Runs(args) => runs::runs(&cli, args),
            Command::Show(args) => runs::show(&cli, args),
            Command::Logs(args) => runs::logs(&cli, args),
            Command::Report(args) => report::run(&cli, args),
            Command::Unlock(args) => unlock::run(&cli, args),
            Command::State(args) => state::run(&cli, args),
            Command::Worker(args) => worker::run(&cli, args).await,
            Command::Audit(args) => audit::run(&cli, args).await,
            Command::Lock(args) => lock::run(&cli, args).await,
        }
    });
    // A question abandoned by Ctrl-C may still wait on the terminal in a
    // blocking thread: the process ends without it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // Diagnostics and errors quote plugin text and file contents: they
    // pass the terminal filter like everything else drawn.
    let text = |value: &dyn std::fmt::Display| crate::terminal::owned(&value.to_string());
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Invalid(diagnostics)) => {
            eprintln!("{}", text(&diagnostics));
            ExitCode::from(exit::INVALID)
        }
        Err(Failure::StdoutClosed) => ExitCode::from(exit::SUCCESS),
        Err(Failure::Internal(error)) => {
            eprintln!("error: {}", text(&error));
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {}", text(&cause));
            }
            ExitCode::from(exit::INTERNAL)
        }
    }
}

/// The runtime, with the cache folder from the command line.
pub fn plugin_runtime(cli: &Cli) -> anyhow::Result<crate::plugin::PluginRuntime> {
    runtime_compiling(cli, crate::plugin::FirstCompile::Optimised)
}

/// The runtime of a command that calls each plugin once or twice and runs
/// no step (`validate`): a component the cache does not have is compiled
/// by the baseline compiler ([`crate::plugin::FirstCompile::Quick`]).
pub fn quick_plugin_runtime(cli: &Cli) -> anyhow::Result<crate::plugin::PluginRuntime> {
    runtime_compiling(cli, crate::plugin::FirstCompile::Quick)
}

fn runtime_compiling(
    cli: &Cli,
    first_compile: crate::plugin::FirstCompile,
) -> anyhow::Result<crate::plugin::PluginRuntime> {
    Ok(crate::plugin::PluginRuntime::new(
        crate::plugin::RuntimeOptions {
            cache_dir: cli.cache_dir.clone(),
            first_compile,
            ..Default::default()
        },
    )?)
}
