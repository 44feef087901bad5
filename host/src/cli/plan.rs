//! `runbook plan`: the run's pipeline as a dry execute ([`crate::run`]):
//! prepared and checked as `exec` prepares it, its promotion gate passed,
//! then every step's plugin is asked what it would do, with the step's
//! grants but read-only. This file prints the actions. Nothing changes.

use super::session::Terminal;
use super::{BindArgs, Cli, Failure, Output, exit};
use crate::run::execute::{NotifyView, PlannedStepView};
use crate::run::gates::PromotionGate;
use crate::run::{self, Connections, Secrets};
use crate::runbook::Bindings;
use crate::state;
use std::path::PathBuf;

/// `runbook plan FILE --env NAME --set K=V...`
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[allow(missing_docs)]
    #[command(flatten)]
    pub bind: BindArgs,

    /// `text` for people, `json` for machines.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Send AWS calls to this endpoint (an emulator) instead of AWS.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,

    /// Make Kubernetes calls (reads, and writes with `dryRun=All`)
    /// through this kubeconfig context.
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Where run state is [default: `.runbook/` beside the runbook]: the
    /// promotion gate reads its deployment records.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    pub state_dir: Option<PathBuf>,

    /// Plan an emergency run: one that may go without the earlier success
    /// its environment's promotion gate asks for. Needs `--reason`.
    #[arg(long, requires = "reason")]
    pub emergency: bool,

    /// Why the emergency.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Also save the reviewed plan to this file (JSON: the runbook's
    /// text, environment, parameters, plugin digests, grants and the
    /// fingerprint approvals bind to); `runbook exec FILE` then runs
    /// exactly that plan, or refuses saying what changed since.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs the command: the run's preparation, then its dry execute.
pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<u8, Failure> {
    let bindings = Bindings {
        environment: args.bind.env.clone(),
        sets: args.bind.set.clone(),
        operator: args.bind.operator(),
        run_id: "plan".into(),
        lenient: false,
    };
    let runtime = super::plugin_runtime(cli)?;
    let terminal = Terminal::new(cli, args.output);
    // Plans read (GET and HEAD are sent), and reads may need credentials:
    // the secrets set in the environment are used; without them a plan
    // still runs, and steps that need them say so. A plan never reads a
    // secret file or AWS Secrets Manager.
    let prepared = run::prepare(
        &runtime,
        &args.bind.file,
        bindings,
        Secrets::IfSet,
        args.aws_endpoint.as_deref(),
        &terminal,
    )
    .await?;
    // The gate `exec` would pass first: a plan of a run that would be
    // refused is refused, and one that passes shows how.
    let state_dir = state::state_dir(
        &prepared.plan.runbook.source.path,
        args.state_dir.as_deref(),
        prepared.plan.runbook.state.as_ref(),
    )
    .map_err(run::Error::state)?;
    let emergency = args
        .emergency
        .then(|| args.reason.clone().unwrap_or_default());
    let promotion = run::gates::promotion(&prepared, &state_dir, emergency.as_deref())?;
    let connections = Connections::for_environment(
        &prepared,
        args.aws_endpoint.clone(),
        args.kube_context.clone(),
    );
    let views = run::execute::dry(&runtime, &prepared, &connections).await?;
    let notify = run::execute::notify_view(&prepared);
    let code = if views.iter().any(|view| view.error.is_some()) {
        exit::STEP_FAILED
    } else {
        exit::SUCCESS
    };
    let plan = &prepared.plan;
    if let Some(out) = &args.out {
        let saved = run::saved::of(&prepared, &views, notify.as_ref(), promotion.as_ref());
        save(out, &saved)?;
        eprintln!(
            "plan saved to {} (fingerprint {}); apply exactly this plan with `runbook exec {}`",
            out.display(),
            saved.fingerprint,
            out.display()
        );
    }
    let printed = match args.output {
        Output::Json => super::print_json(&serde_json::json!({
            "runbook": plan.runbook.name,
            "environment": plan.environment,
            "params": plan.params,
            "fingerprint": prepared.fingerprint,
            "promotion": promotion,
            "steps": views,
            "notify": notify,
        })),
        Output::Text => text_lines(plan, promotion.as_ref(), &views, notify.as_ref())
            .iter()
            .try_for_each(|line| outln!("{line}")),
    };
    match printed {
        // The reader went away; the plan's verdict still stands.
        Ok(()) | Err(Failure::StdoutClosed) => Ok(code),
        Err(other) => Err(other),
    }
}

/// Writes the saved plan to `out` (pretty JSON), through a temporary file
/// beside it, so that a reader never finds half a plan.
fn save(out: &std::path::Path, saved: &run::saved::SavedPlan) -> Result<(), Failure> {
    use anyhow::Context;
    let mut text = serde_json::to_string_pretty(saved).context("cannot write the plan as JSON")?;
    text.push('\n');
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, out))
        .with_context(|| format!("cannot save the plan to {}", out.display()))?;
    Ok(())
}

/// The plan as `runbook plan` prints it for people, one line each:
/// `exec` shows the same lines before it asks to apply them.
pub(super) fn text_lines(
    plan: &crate::runbook::Plan,
    promotion: Option<&PromotionGate>,
    views: &[PlannedStepView],
    notify: Option<&NotifyView>,
) -> Vec<String> {
    let mut lines = Vec::new();
    macro_rules! push {
        () => {
            lines.push(String::new())
        };
        ($($argument:tt)*) => {
            lines.push(format!($($argument)*))
        };
    }
    let environment = plan
        .environment
        .as_ref()
        .map(|name| format!(" for environment `{name}`"))
        .unwrap_or_default();
    push!(
        "Plan of `{}`{environment}: {} steps, nothing is changed by planning",
        plan.runbook.name,
        views.len()
    );
    if let Some(gate) = promotion {
        push!();
        push!("Promotion: needs {}", gate.requires);
        match &gate.overridden {
            None => push!("   ✓ satisfied by {}", gate.detail),
            Some(reason) => push!("   ⚠ overridden by --emergency ({reason}): {}", gate.detail),
        }
    }
    for (position, view) in views.iter().enumerate() {
        push!();
        push!("{}. {} ({})", position + 1, view.name, view.plugin);
        if let Some(why) = &view.skipped {
            push!("   - skipped: {why}");
        }
        for action in &view.actions {
            let marker = if action.mutates { "~" } else { "·" };
            push!("   {marker} {}", action.description);
        }
        for write in &view.intercepted {
            push!("   ⊘ {write}");
        }
        if let Some(error) = &view.error {
            push!("   ✗ cannot plan: {error}");
        }
        if !view.grants.http.is_empty() {
            push!("   grants http: {}", view.grants.http.join(", "));
        }
        if !view.grants.secrets.is_empty() {
            push!("   grants secrets: {}", view.grants.secrets.join(", "));
        }
        if !view.grants.fs_read.is_empty() {
            push!("   grants fs.read: {}", view.grants.fs_read.join(", "));
        }
        if let Some(kube) = &view.grants.kube {
            push!("   grants kube: {kube}");
        }
        if let Some(aws) = &view.grants.aws {
            push!("   grants aws: {aws}");
        }
        for command in &view.grants.command {
            push!("   grants command: {command}");
        }
    }
    if let Some(notify) = notify {
        notify_lines(notify, &mut lines);
    }
    push!();
    push!(
        "· reads only    ~ changes something    ⊘ a write the plugin tried, held back by the host"
    );
    lines
}

/// `[notify]`: when it announces, and each target with its grants.
fn notify_lines(notify: &NotifyView, lines: &mut Vec<String>) {
    macro_rules! push {
        () => {
            lines.push(String::new())
        };
        ($($argument:tt)*) => {
            lines.push(format!($($argument)*))
        };
    }
    push!();
    let every = notify
        .every
        .as_ref()
        .map(|every| format!("; a holding step every {every}"))
        .unwrap_or_default();
    push!(
        "Announcements (nothing is sent by planning): on {}{every}",
        notify.on.join(", ")
    );
    for target in &notify.targets {
        push!("   ✉ {} ({})", target.target, target.plugin);
        if !target.grants.http.is_empty() {
            push!("     grants http: {}", target.grants.http.join(", "));
        }
        if !target.grants.secrets.is_empty() {
            push!("     grants secrets: {}", target.grants.secrets.join(", "));
        }
        if !target.grants.fs_read.is_empty() {
            push!("     grants fs.read: {}", target.grants.fs_read.join(", "));
        }
        if let Some(kube) = &target.grants.kube {
            push!("     grants kube: {kube}");
        }
        if let Some(aws) = &target.grants.aws {
            push!("     grants aws: {aws}");
        }
        for command in &target.grants.command {
            push!("     grants command: {command}");
        }
    }
}
