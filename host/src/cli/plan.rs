//! `runbook plan`: asks every step's plugin what it would do, with the
//! step's grants but read-only, and prints the actions. Nothing changes.

use super::{BindArgs, Cli, Failure, Output, exit};
use crate::capability::RunAccess;
use crate::capability::secrets::SecretStore;
use crate::engine::preflight;
use crate::engine::render::{Scope, StepOutputs, Unknown};
use crate::events::{Decision, EventKind, EventSink};
use crate::runbook::{self, Bindings, bind::bind};
use serde::Serialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
}

#[derive(Serialize)]
struct PlannedStepView {
    step: String,
    name: String,
    plugin: String,
    digest: String,
    grants: GrantsView,
    actions: Vec<ActionView>,
    /// Writes the plugin attempted while planning, which the host held
    /// back (HTTP, AWS) or sent with `dryRun=All` (Kubernetes).
    intercepted: Vec<String>,
    error: Option<String>,
}

/// Everything a step is granted, as a reviewer reads it.
#[derive(Serialize, Default)]
struct GrantsView {
    http: Vec<String>,
    secrets: Vec<String>,
    fs_read: Vec<String>,
    kube: Option<String>,
    aws: Option<String>,
}

impl GrantsView {
    fn of(grants: &crate::grant::StepGrants) -> Self {
        GrantsView {
            http: grants.http_texts(),
            secrets: grants.secrets.clone(),
            fs_read: grants.fs_texts(),
            kube: grants.kube.as_ref().map(crate::grant::KubeGrant::describe),
            aws: grants.aws.as_ref().map(crate::grant::AwsGrant::describe),
        }
    }
}

#[derive(Serialize)]
struct ActionView {
    description: String,
    mutates: bool,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<u8, Failure> {
    let runbook = Arc::new(runbook::load(&args.bind.file)?);
    let plan = bind(
        runbook,
        Bindings {
            environment: args.bind.env.clone(),
            sets: args.bind.set.clone(),
            operator: args.bind.operator(),
            run_id: "plan".into(),
            lenient: false,
        },
    )?;
    let runtime = super::plugin_runtime(cli)?;
    let plugins = preflight::load_plugins(&runtime, &plan).await?;
    // Plans read (GET and HEAD are sent), and reads may need credentials:
    // the secrets set in the environment are used; without them a plan
    // still runs, and steps that need them say so.
    let secrets = SecretStore::from_env(plan.secret_names())
        .unwrap_or_else(|_| SecretStore::new(Default::default()));
    preflight::check_params(&runtime, &plan, &plugins, &secrets).await?;

    let outputs = StepOutputs::new();
    let outcomes = crate::engine::render::StepOutcomes::new();
    let environment = plan
        .environment
        .as_ref()
        .and_then(|name| plan.runbook.environments.get(name));
    let aws = crate::capability::aws::AwsAccess::from_environment(
        args.aws_endpoint
            .clone()
            .or_else(|| environment.and_then(|environment| environment.aws_endpoint.clone()))
            .and_then(|endpoint| url::Url::parse(&endpoint).ok()),
    );
    let kube = crate::capability::kube::KubeAccess::new(
        args.kube_context
            .clone()
            .or_else(|| environment.and_then(|environment| environment.kube_context.clone())),
    );
    let mut views = Vec::new();
    let mut failed = false;
    for planned in &plan.steps {
        let step = plan.step(planned);
        let scope = Scope {
            plan: &plan,
            outputs: &outputs,
            secrets: &secrets,
            unknown: Unknown::Placeholder,
            outcomes: &outcomes,
            item: planned.item.as_ref(),
        };
        let plugin = match &step.action {
            crate::runbook::Action::Plugin(name) => &plugins[name],
            crate::runbook::Action::Manual(checklist) => {
                views.push(PlannedStepView {
                    step: planned.id.0.clone(),
                    name: planned.name.clone(),
                    plugin: "manual".into(),
                    digest: String::new(),
                    grants: GrantsView::default(),
                    actions: checklist
                        .iter()
                        .map(|item| ActionView {
                            description: format!("operator confirms: {item}"),
                            mutates: false,
                        })
                        .collect(),
                    intercepted: Vec::new(),
                    error: None,
                });
                continue;
            }
        };
        let params = scope
            .render(&step.with)
            .map_err(|error| anyhow::anyhow!("step `{}`: {error}", step.id))?;
        let recorder = crate::events::Recorder::new();
        let events = EventSink::new();
        events.set_redactor(secrets.redactor());
        events.add(recorder.clone());
        let access = RunAccess {
            secrets: secrets.clone(),
            redactor: secrets.redactor(),
            events,
            cancel: CancellationToken::new(),
            http: runtime.http_client(),
            aws: Some(aws.clone()),
            kube: Some(kube.clone()),
        };
        let context = Arc::new(access.for_step(
            planned.id.clone(),
            planned.grants.clone(),
            tokio::time::Instant::now() + step.timeout,
            true,
            Default::default(),
        ));
        let result = runtime
            .plan(plugin, context, step.memory_limit, &params.to_string())
            .await;
        let (actions, error) = match result {
            Ok(Ok(actions)) => (
                actions
                    .into_iter()
                    .map(|action| ActionView {
                        description: action.description,
                        mutates: action.mutates,
                    })
                    .collect(),
                None,
            ),
            Ok(Err(error)) => (Vec::new(), Some(error.describe())),
            Err(error) => (Vec::new(), Some(error.to_string())),
        };
        let intercepted = recorder
            .events()
            .into_iter()
            .filter_map(|(event, _)| intercepted_write(&event.kind))
            .collect();
        failed |= error.is_some();
        views.push(PlannedStepView {
            step: planned.id.0.clone(),
            name: planned.name.clone(),
            plugin: format!("{} {}", plugin.descriptor.name, plugin.descriptor.version),
            digest: plugin.digest.clone(),
            grants: GrantsView::of(&planned.grants),
            actions,
            intercepted,
            error,
        });
    }

    // What plugins answered passes the redactor too: a plan prints it.
    let redactor = secrets.redactor();
    for view in &mut views {
        for action in &mut view.actions {
            redactor.scrub(&mut action.description);
        }
        view.intercepted
            .iter_mut()
            .for_each(|write| redactor.scrub(write));
        view.error
            .iter_mut()
            .for_each(|error| redactor.scrub(error));
    }
    let code = if failed {
        exit::STEP_FAILED
    } else {
        exit::SUCCESS
    };
    let printed = match args.output {
        Output::Json => super::print_json(&serde_json::json!({
            "runbook": plan.runbook.name,
            "environment": plan.environment,
            "params": plan.params,
            "steps": views,
        })),
        Output::Text => print_text(&plan, &views),
    };
    match printed {
        // The reader went away; the plan's verdict still stands.
        Ok(()) | Err(Failure::StdoutClosed) => Ok(code),
        Err(other) => Err(other),
    }
}

fn print_text(plan: &crate::runbook::Plan, views: &[PlannedStepView]) -> Result<(), Failure> {
    let environment = plan
        .environment
        .as_ref()
        .map(|name| format!(" for environment `{name}`"))
        .unwrap_or_default();
    outln!(
        "Plan of `{}`{environment}: {} steps, nothing is changed by planning",
        plan.runbook.name,
        views.len()
    )?;
    for (position, view) in views.iter().enumerate() {
        outln!()?;
        outln!("{}. {} ({})", position + 1, view.name, view.plugin)?;
        for action in &view.actions {
            let marker = if action.mutates { "~" } else { "·" };
            outln!("   {marker} {}", action.description)?;
        }
        for write in &view.intercepted {
            outln!("   ⊘ {write}")?;
        }
        if let Some(error) = &view.error {
            outln!("   ✗ cannot plan: {error}")?;
        }
        if !view.grants.http.is_empty() {
            outln!("   grants http: {}", view.grants.http.join(", "))?;
        }
        if !view.grants.secrets.is_empty() {
            outln!("   grants secrets: {}", view.grants.secrets.join(", "))?;
        }
        if !view.grants.fs_read.is_empty() {
            outln!("   grants fs.read: {}", view.grants.fs_read.join(", "))?;
        }
        if let Some(kube) = &view.grants.kube {
            outln!("   grants kube: {kube}")?;
        }
        if let Some(aws) = &view.grants.aws {
            outln!("   grants aws: {aws}")?;
        }
    }
    outln!()?;
    outln!(
        "· reads only    ~ changes something    ⊘ a write the plugin tried, held back by the host"
    )
}

/// A write the host intercepted while planning, in words.
fn intercepted_write(kind: &EventKind) -> Option<String> {
    let EventKind::CapabilityCall {
        capability,
        requested,
        decision,
        outcome,
        ok,
        dry_run: true,
        ..
    } = kind
    else {
        return None;
    };
    Some(match (decision, ok) {
        (Decision::HeldBack, _) => format!("{capability} {requested}: not sent (dry run)"),
        (_, true) => format!(
            "{capability} {requested}: the API server accepted it with dryRun=All; nothing changed"
        ),
        (_, false) => format!(
            "{capability} {requested}: the API server refused it even as a dry run: {outcome}"
        ),
    })
}
