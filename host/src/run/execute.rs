//! Running the prepared plan through the [`Executor`], and its dry twin for
//! `plan`: every step's plugin asked what it would do, with the step's
//! grants but read-only (HTTP and AWS writes held back, Kubernetes writes
//! sent with `dryRun=All`).

use super::resume::Earlier;
use super::{Error, Interface, Options, Prepared};
use crate::capability::RunAccess;
use crate::capability::aws::AwsAccess;
use crate::capability::command::CommandAccess;
use crate::capability::kube::KubeAccess;
use crate::engine::render::{Scope, StepOutcomes, StepOutputs, Unknown};
use crate::engine::{Confirmations, Executor, RunReport};
use crate::events::{Decision, EventKind, EventSink, Recorder};
use crate::plugin::{LoadedPlugin, PluginRuntime};
use crate::runbook::{Action, PlannedStep};
use serde::Serialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where steps granted AWS or Kubernetes reach: the caller's choice, as
/// the endpoint and context are (`--aws-endpoint`, `--kube-context`).
#[derive(Clone, Default)]
pub struct Connections {
    /// AWS credentials and endpoint, for steps granted AWS.
    pub aws: Option<AwsAccess>,
    /// The cluster connection, for steps granted Kubernetes.
    pub kube: Option<Arc<KubeAccess>>,
    /// How programs run, for steps granted commands.
    pub command: Option<CommandAccess>,
    /// Where each step's cassette goes (`--record DIR`): its capability
    /// calls with the host's answers, its parameters, grants and results.
    pub record: Option<std::path::PathBuf>,
}

impl Connections {
    /// The environment's `aws_endpoint` and `kube_context`, unless given
    /// here; AWS credentials from the process environment, the cluster
    /// from the kubeconfig.
    pub fn for_environment(
        prepared: &Prepared,
        aws_endpoint: Option<String>,
        kube_context: Option<String>,
    ) -> Self {
        let environment = prepared.environment();
        Connections {
            aws: Some(AwsAccess::from_environment(
                aws_endpoint
                    .or_else(|| {
                        environment.and_then(|environment| environment.aws_endpoint.clone())
                    })
                    .and_then(|endpoint| url::Url::parse(&endpoint).ok()),
            )),
            kube: Some(KubeAccess::new(kube_context.or_else(|| {
                environment.and_then(|environment| environment.kube_context.clone())
            }))),
            command: Some(CommandAccess::detect(false)),
            record: None,
        }
    }

    /// The same, keeping each step's cassette in `dir` when one is given.
    pub fn recording(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.record = dir;
        self
    }

    /// The same, letting command steps run unconfined where the kernel
    /// has no Landlock (`--allow-unconfined-commands`): each such run is
    /// recorded as unconfined in the audit log.
    pub fn allowing_unconfined_commands(mut self, allow: bool) -> Self {
        if let Some(access) = &mut self.command {
            access.allow_unconfined = allow;
        }
        self
    }
}

/// Runs the plan's steps, their failure policy and `always` steps,
/// continuing what earlier processes of the run left; every event goes to
/// `events`.
pub async fn execute(
    runtime: &PluginRuntime,
    prepared: &Prepared,
    earlier: Earlier,
    connections: Connections,
    events: &EventSink,
    options: &Options,
    interface: &dyn Interface,
) -> RunReport {
    let executor = Executor {
        runtime,
        plugins: &prepared.plugins,
        access: RunAccess {
            secrets: prepared.secrets.clone(),
            redactor: prepared.secrets.redactor(),
            events: events.clone(),
            http: runtime.http_client(),
            aws: connections.aws,
            kube: connections.kube,
            command: connections.command.map(Arc::new),
            tape: match connections.record {
                Some(dir) => crate::capability::tape::Tape::Record(Arc::new(
                    crate::capability::tape::Recorder::new(dir),
                )),
                None => crate::capability::tape::Tape::Off,
            },
        },
        cancel: options.cancel.clone(),
        abort: options.abort.clone(),
        parallel: options.parallel.max(1),
        recorded: earlier.recorded,
        rollback: earlier.rollback,
        checkpoints: earlier.checkpoints,
        confirmations: Confirmations {
            given: earlier.confirmations,
            ask: interface.ask(),
            operator: prepared.plan.operator.clone(),
            decided: earlier.decisions,
        },
        waits: earlier.waits,
        park_after: options.park_after,
        notified: earlier.notified,
    };
    executor.execute(&prepared.plan).await
}

/// What one step would do, as `plan` shows it.
#[derive(Debug, Serialize)]
pub struct PlannedStepView {
    /// The step's id.
    pub step: String,
    /// Its name.
    pub name: String,
    /// Its plugin's name and version, or `manual`.
    pub plugin: String,
    /// Its plugin's sha256.
    pub digest: String,
    /// What it is granted.
    pub grants: GrantsView,
    /// What its plugin says it would do.
    pub actions: Vec<ActionView>,
    /// Writes the plugin attempted while planning, which the host held
    /// back (HTTP, AWS) or sent with `dryRun=All` (Kubernetes).
    pub intercepted: Vec<String>,
    /// Why it could not be planned.
    pub error: Option<String>,
    /// Why it will not run: its `if` is false with what is known before
    /// the run (parameters, variables, the environment).
    pub skipped: Option<String>,
}

/// Everything a step is granted, as a reviewer reads it.
#[derive(Debug, Serialize, Default)]
pub struct GrantsView {
    /// URLs it may call.
    pub http: Vec<String>,
    /// Secrets it may send.
    pub secrets: Vec<String>,
    /// Files it may read.
    pub fs_read: Vec<String>,
    /// What it may do in the cluster.
    pub kube: Option<String>,
    /// What it may do in AWS.
    pub aws: Option<String>,
    /// The programs it may run.
    pub command: Vec<String>,
}

impl GrantsView {
    /// A step's or target's grants, as bound.
    pub fn of(grants: &crate::grant::StepGrants) -> Self {
        GrantsView {
            http: grants.http_texts(),
            secrets: grants.secrets.clone(),
            fs_read: grants.fs_texts(),
            kube: grants.kube.as_ref().map(crate::grant::KubeGrant::describe),
            aws: grants.aws.as_ref().map(crate::grant::AwsGrant::describe),
            command: grants
                .command
                .iter()
                .map(crate::grant::CommandGrant::describe)
                .collect(),
        }
    }
}

/// What `[notify]` does, as `plan` shows it: when it announces, and
/// where to. Nothing is announced while planning.
#[derive(Debug, Serialize)]
pub struct NotifyView {
    /// The moments announced: `start`, `stage`, `holding`, `failure`,
    /// `rollback`, `waiting`, `end`.
    pub on: Vec<String>,
    /// How often a step that waits between rounds is reported (`15m`).
    pub every: Option<String>,
    /// Where the announcements go.
    pub targets: Vec<TargetView>,
}

/// One target of `[notify]`, as `plan` shows it.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// The id its calls are journaled and audited under (`notify.0`).
    pub target: String,
    /// Its plugin's name and version.
    pub plugin: String,
    /// Its plugin's sha256.
    pub digest: String,
    /// What it is granted.
    pub grants: GrantsView,
}

/// What `[notify]` of the prepared run announces, and to which targets
/// with which grants; `None` without `[notify]`.
pub fn notify_view(prepared: &Prepared) -> Option<NotifyView> {
    let plan = &prepared.plan;
    let notify = plan.runbook.notify.as_ref()?;
    let targets = plan
        .targets
        .iter()
        .map(|planned| {
            let name = &plan.target(planned).plugin;
            let (plugin, digest) = match prepared.plugins.get(name) {
                Some(plugin) => (
                    format!("{} {}", plugin.descriptor.name, plugin.descriptor.version),
                    plugin.digest.clone(),
                ),
                None => (name.clone(), String::new()),
            };
            TargetView {
                target: planned.id.0.clone(),
                plugin,
                digest,
                grants: GrantsView::of(&planned.grants),
            }
        })
        .collect();
    Some(NotifyView {
        on: notify
            .on
            .iter()
            .map(|moment| moment.as_str().to_owned())
            .collect(),
        every: notify
            .every
            .map(|every| humantime::format_duration(every).to_string()),
        targets,
    })
}

/// One thing a step would do.
#[derive(Debug, Serialize)]
pub struct ActionView {
    /// In words.
    pub description: String,
    /// Whether it changes something.
    pub mutates: bool,
}

/// The dry execute behind `plan`: asks every step's plugin what it would
/// do, in order, with outputs of earlier steps as placeholders. Nothing
/// changes; what plugins answer passes the run's redactor.
pub async fn dry(
    runtime: &PluginRuntime,
    prepared: &Prepared,
    connections: &Connections,
) -> Result<Vec<PlannedStepView>, Error> {
    let plan = &prepared.plan;
    let outputs = StepOutputs::new();
    // The outcomes known before the run: the steps found skipped.
    let mut known = StepOutcomes::new();
    let mut views = Vec::new();
    for planned in &plan.steps {
        let step = plan.step(planned);
        let outcomes = known.clone();
        let scope = Scope {
            plan,
            outputs: &outputs,
            secrets: &prepared.secrets,
            unknown: Unknown::Placeholder,
            outcomes: &outcomes,
            item: planned.item.as_ref(),
        };
        // An `if` that what is known before the run settles (parameters,
        // variables, the environment; `false && steps.x.outcome == ...`
        // whatever `x` does) is decided now: such a step is shown skipped,
        // not as something that will happen.
        let skipped = match &step.condition {
            _ if step.always => None,
            Some(condition) => (scope.decide(condition) == Some(false))
                .then(|| format!("its `if` is false: {condition}")),
            // Without an `if`, a step runs only when what it needs did.
            None => planned
                .needs
                .iter()
                .map(|need| plan.step(&plan.steps[*need]))
                .find(|need| known.get(&need.id.0) == Some(&crate::events::Status::Skipped))
                .map(|need| format!("`{}` will not run", need.id)),
        };
        if let Some(why) = skipped {
            known.insert(step.id.0.clone(), crate::events::Status::Skipped);
            let mut view = match &step.action {
                Action::Manual(_) => manual_view(planned, &[]),
                Action::Plugin(name) => {
                    let plugin = &prepared.plugins[name];
                    let mut view = manual_view(planned, &[]);
                    view.plugin =
                        format!("{} {}", plugin.descriptor.name, plugin.descriptor.version);
                    view.digest = plugin.digest.clone();
                    view.grants = GrantsView::of(&planned.grants);
                    view
                }
            };
            view.skipped = Some(why);
            views.push(view);
            continue;
        }
        let plugin = match &step.action {
            Action::Plugin(name) => &prepared.plugins[name],
            Action::Manual(checklist) => {
                views.push(manual_view(planned, checklist));
                continue;
            }
        };
        let params = scope.render(&step.with).map_err(|error| Error::Render {
            step: step.id.to_string(),
            reason: error.to_string(),
        })?;
        let view = dry_step(runtime, prepared, connections, planned, plugin, &params).await;
        views.push(view);
    }
    // What plugins answered passes the redactor too: a plan prints it.
    let redactor = prepared.secrets.redactor();
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
    Ok(views)
}

/// A manual step's plan: its checklist.
fn manual_view(planned: &PlannedStep, checklist: &[String]) -> PlannedStepView {
    PlannedStepView {
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
        skipped: None,
    }
}

/// Asks one step's plugin what it would do, in a dry-run sandbox with the
/// step's grants, and notes the writes the host intercepted.
async fn dry_step(
    runtime: &PluginRuntime,
    prepared: &Prepared,
    connections: &Connections,
    planned: &PlannedStep,
    plugin: &LoadedPlugin,
    params: &serde_json::Value,
) -> PlannedStepView {
    let step = prepared.plan.step(planned);
    let (context, recorder) = dry_context(runtime, prepared, connections, planned);
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
    let intercepted = intercepted_writes(&recorder);
    PlannedStepView {
        step: planned.id.0.clone(),
        name: planned.name.clone(),
        plugin: format!("{} {}", plugin.descriptor.name, plugin.descriptor.version),
        digest: plugin.digest.clone(),
        grants: GrantsView::of(&planned.grants),
        actions,
        intercepted,
        error,
        skipped: None,
    }
}

/// A dry-run sandbox for one step's call: its grants, read-only (HTTP and
/// AWS writes held back, Kubernetes writes sent with `dryRun=All`), its
/// events kept by the recorder returned beside it.
pub(super) fn dry_context(
    runtime: &PluginRuntime,
    prepared: &Prepared,
    connections: &Connections,
    planned: &PlannedStep,
) -> (Arc<crate::capability::StepContext>, Recorder) {
    let step = prepared.plan.step(planned);
    let secrets = &prepared.secrets;
    let recorder = Recorder::new();
    let events = EventSink::new();
    events.set_redactor(secrets.redactor());
    events.add(recorder.clone());
    let access = RunAccess {
        secrets: secrets.clone(),
        redactor: secrets.redactor(),
        events,
        http: runtime.http_client(),
        aws: connections.aws.clone(),
        kube: connections.kube.clone(),
        command: connections.command.clone().map(Arc::new),
        tape: crate::capability::tape::Tape::Off,
    };
    let context = Arc::new(access.for_step(
        planned.id.clone(),
        planned.grants.clone(),
        tokio::time::Instant::now() + step.timeout,
        &CancellationToken::new(),
        true,
        Default::default(),
    ));
    (context, recorder)
}

/// The writes the host intercepted in a dry-run sandbox, in words.
pub(super) fn intercepted_writes(recorder: &Recorder) -> Vec<String> {
    recorder
        .events()
        .into_iter()
        .filter_map(|(event, _)| intercepted_write(&event.kind))
        .collect()
}

/// Whether the host held back a write in a dry-run sandbox (HTTP, AWS):
/// the plugin was answered with a denial, so it stopped there.
pub(super) fn held_back_a_write(recorder: &Recorder) -> bool {
    recorder.events().iter().any(|(event, _)| {
        matches!(
            event.kind,
            EventKind::CapabilityCall {
                decision: Decision::HeldBack,
                ..
            }
        )
    })
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
