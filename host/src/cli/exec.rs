//! `runbook exec`: check everything, pass the gates, run the steps with
//! live progress, write the journal and the deployment record. On an
//! interactive terminal it first shows the plan and asks to apply it;
//! given a saved plan (`runbook plan --out`), it runs exactly that plan or
//! refuses, saying what changed since.

use super::session::{RunOptions, Terminal};
use super::{BindArgs, Cli, Failure, Output, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::run::saved::SavedPlan;
use crate::run::{self, Connections, Prepared, Secrets, Start};
use crate::runbook::Bindings;

/// `runbook exec FILE --env NAME --set K=V...`, or `runbook exec PLAN.json`
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

    /// Apply without asking. On an interactive terminal `exec` shows the
    /// plan and asks `Apply this plan? [y/n]` before the first step; it
    /// never asks without a terminal (CI, pipes), with `--output json` or
    /// `--detach`, or when it applies a saved plan.
    #[arg(short = 'y', long)]
    yes: bool,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &ExecArgs) -> Result<u8, Failure> {
    let saved = if run::saved::looks_like(&args.bind.file) {
        Some(saved_plan(args)?)
    } else {
        None
    };
    if args.dry_run {
        if saved.is_some() {
            return Err(invalid(
                format!(
                    "`--dry-run` does not take a saved plan ({})",
                    args.bind.file.display()
                ),
                "a saved plan is already the dry run; `runbook plan` its runbook again to see what it would do now",
            ));
        }
        let plan = super::plan::PlanArgs {
            bind: args.bind.clone(),
            output: args.options.output,
            aws_endpoint: args.options.aws_endpoint.clone(),
            kube_context: args.options.kube_context.clone(),
            state_dir: args.options.state_dir.clone(),
            emergency: args.options.emergency,
            reason: args.options.reason.clone(),
            out: None,
        };
        return super::plan::run(cli, &plan).await;
    }
    let operator = args.bind.operator();
    let run_id = run::new_run_id();
    let runtime = super::plugin_runtime(cli)?;
    let terminal = Terminal::new(cli, args.options.output);
    // A saved plan was reviewed already: it is applied as it is, or
    // refused. A runbook run on a terminal is shown and asked first.
    let ask = saved.is_none() && !args.yes && asks(&args.options);
    // Ctrl-C stops a run (then its failure policy applies); at the
    // question, it is a no: the handler is wired after the question.
    let mut wired = (!ask).then(|| args.options.for_run());
    let ended = async {
        let prepared = match &saved {
            None => {
                let bindings = Bindings {
                    environment: args.bind.env.clone(),
                    sets: args.bind.set.clone(),
                    operator: operator.clone(),
                    run_id: run_id.clone(),
                    lenient: false,
                };
                let file = &args.bind.file;
                run::prepare(
                    &runtime,
                    file,
                    bindings,
                    Secrets::Environment,
                    args.options.aws_endpoint.as_deref(),
                    &terminal,
                )
                .await?
            }
            Some((plan, reference)) => {
                // The files first: a changed runbook may no longer bind,
                // and a changed plugin may no longer load; either is told
                // as what changed since the plan.
                plan.check_files()?;
                let bindings = plan.bindings(operator.clone(), run_id.clone());
                let file = plan.runbook_path();
                let mut prepared = run::prepare(
                    &runtime,
                    &file,
                    bindings,
                    Secrets::Environment,
                    args.options.aws_endpoint.as_deref(),
                    &terminal,
                )
                .await?;
                plan.compare(&prepared)?;
                prepared.saved_plan = Some(reference.clone());
                prepared
            }
        };
        let connections = args.options.connections(&prepared);
        if ask && !confirm(&runtime, &prepared, &connections, &args.options).await? {
            return Ok(None);
        }
        let options = match wired.take() {
            Some(options) => options,
            None => args.options.for_run(),
        };
        run::run(
            &runtime,
            prepared,
            Start::New,
            connections,
            &options,
            &terminal,
        )
        .await
        .map(Some)
    }
    .await;
    let ended = match ended {
        Ok(None) => {
            eprintln!("not applied: nothing ran");
            return Ok(exit::DECLINED);
        }
        Ok(Some(ended)) => Ok(ended),
        Err(error) => Err(error),
    };
    super::session::print_ended(ended, args.options.output)
}

/// The saved plan given to `exec`, which takes no `--env` or `--set`: it
/// runs with the environment and parameters it was made with.
fn saved_plan(args: &ExecArgs) -> Result<(SavedPlan, crate::events::SavedPlanRef), Failure> {
    let file = args.bind.file.display();
    if args.bind.env.is_some() || !args.bind.set.is_empty() {
        return Err(invalid(
            format!(
                "{file} is a saved plan: it runs with the environment and parameters it was made with, so `--env` and `--set` are not taken with it"
            ),
            format!(
                "run `runbook exec {file}` alone; for other values, plan again: `runbook plan RUNBOOK --env NAME --set K=V --out PLAN.json`"
            ),
        ));
    }
    Ok(run::saved::read(&args.bind.file)?)
}

/// A command line that cannot be run (exit 2).
fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// Whether `exec` asks before it applies: only a person at a terminal is
/// asked (stdin and stderr are terminals, text output, not `--detach`).
fn asks(options: &RunOptions) -> bool {
    use std::io::IsTerminal;
    options.output == Output::Text
        && !options.detach
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Shows the plan as `runbook plan` prints it (its promotion gate, what
/// each step's plugin would do, the grants, the announcements) and asks
/// `Apply this plan? [y/n]`: whether the operator said yes.
async fn confirm(
    runtime: &crate::plugin::PluginRuntime,
    prepared: &Prepared,
    connections: &Connections,
    options: &RunOptions,
) -> Result<bool, run::Error> {
    // What the run would refuse at once is refused before the question:
    // a closed deploy window, an unmet promotion gate.
    if let Err(closed) = run::gates::window(prepared, options.emergency) {
        return Err(run::gates::closed(&closed));
    }
    let state_dir = crate::state::state_dir(
        &prepared.plan.runbook.source.path,
        options.state_dir.as_deref(),
        prepared.plan.runbook.state.as_ref(),
    )
    .map_err(run::Error::state)?;
    let emergency = options
        .emergency
        .then(|| options.reason.clone().unwrap_or_default());
    let promotion = run::gates::promotion(prepared, &state_dir, emergency.as_deref())?;
    let views = run::execute::dry(runtime, prepared, connections).await?;
    let notify = run::execute::notify_view(prepared);
    let lines =
        super::plan::text_lines(&prepared.plan, promotion.as_ref(), &views, notify.as_ref());
    let _paused = crate::progress::pause();
    eprintln!();
    for line in &lines {
        eprintln!("{}", crate::terminal::text(line));
    }
    eprintln!();
    Ok(ask_to_apply().await)
}

/// Asks until the answer is y or n; Enter alone asks again. Ctrl-C, or
/// the end of stdin, is a no.
async fn ask_to_apply() -> bool {
    let question = tokio::task::spawn_blocking(|| {
        loop {
            eprint!("Apply this plan? [y/n] ");
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return true,
                "n" | "no" => return false,
                // Enter alone (or anything else) asks again: nothing is
                // applied, or refused, by a key pressed by habit.
                other => eprintln!(
                    "  {}answer y (apply it: the run starts) or n (run nothing)",
                    if other.is_empty() {
                        String::new()
                    } else {
                        format!("`{}` is not an answer: ", crate::terminal::text(other))
                    }
                ),
            }
        }
    });
    tokio::select! {
        answer = question => answer.unwrap_or(false),
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            false
        }
    }
}
