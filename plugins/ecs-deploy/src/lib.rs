//! `ecs-deploy`: new images on an ECS service. Registers a new revision of
//! the service's task definition with the images the runbook gives, rolls
//! the service onto it (`UpdateService`), and waits, a round at a time with
//! the contract's durable wait, until ECS reports the deployment
//! `COMPLETED` or its circuit breaker fails it; all through the host's AWS
//! capability (ECS, JSON protocol). The task definition the service ran is
//! checkpointed before anything changes: a failed deployment is undone
//! before the step fails, and `rollback` puts the service back on it.

use runbook_sdk::aws;
use runbook_sdk::serde_json::{self, Map, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    RunResult, Serialize, Step, Wait, unresolved,
};
use std::collections::BTreeMap;
use std::time::Duration;

struct EcsDeploy;

/// The service, and the images to roll it onto.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The AWS region.
    region: String,
    /// The cluster's name or ARN.
    cluster: String,
    /// The service's name or ARN.
    service: String,
    /// Each container to change and its new image:
    /// `{ app = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.2.3" }`.
    /// The other containers keep theirs.
    images: BTreeMap<String, String>,
    /// Wait until the deployment is `COMPLETED`.
    #[serde(default = "yes")]
    wait: bool,
    /// How long to wait for the deployment before failing (default 30m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// Time between two looks at the deployment (default 15s).
    #[serde(default)]
    poll: Option<HumanDuration>,
    /// Start a new deployment even when the service already runs these
    /// images (so that a moving tag is pulled again).
    #[serde(default)]
    force_new_deployment: bool,
}

fn yes() -> bool {
    true
}

/// How long the step waits for the deployment when the runbook does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Time between two `DescribeServices` when the runbook does not say.
const DEFAULT_POLL: Duration = Duration::from_secs(15);

/// The fields of a described task definition that `RegisterTaskDefinition`
/// does not take: ECS sets them. Everything else is copied, so that a field
/// ECS adds later is carried over rather than silently dropped (the same
/// list as AWS's `amazon-ecs-deploy-task-definition` action).
const READ_ONLY: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// The longest container name ECS takes.
const MAX_CONTAINER_NAME: usize = 255;

/// A service as `DescribeServices` gives it: what the step reads of it.
struct Service {
    /// Its name, for messages.
    name: String,
    /// The task definition it runs, or rolls onto (an ARN).
    task_definition: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    status: String,
    /// Its deployment controller: `ECS`, `CODE_DEPLOY` or `EXTERNAL`.
    controller: String,
    /// Whether its deployment circuit breaker is on, and whether it rolls
    /// back; `None` when ECS does not say.
    circuit_breaker: Option<(bool, bool)>,
    /// Its deployments, the `PRIMARY` one (the newest) and the `ACTIVE`
    /// ones still draining.
    deployments: Vec<Deployment>,
}

/// One deployment of a service.
struct Deployment {
    /// `ecs-svc/1234567890123456789`.
    id: String,
    /// `PRIMARY` or `ACTIVE`.
    status: String,
    /// The task definition it runs (an ARN).
    task_definition: String,
    desired: u64,
    running: u64,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`; ECS gives none for a service
    /// behind a Classic Load Balancer.
    rollout_state: Option<String>,
    /// Why it is in that state (`ECS deployment circuit breaker: tasks
    /// failed to start.`).
    reason: Option<String>,
}

impl Service {
    fn from_json(service: &Value) -> Self {
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let breaker = &service["deploymentConfiguration"]["deploymentCircuitBreaker"];
        Service {
            name: text(&service["serviceName"]),
            task_definition: text(&service["taskDefinition"]),
            status: text(&service["status"]),
            controller: service["deploymentController"]["type"]
                .as_str()
                .unwrap_or("ECS")
                .to_owned(),
            circuit_breaker: breaker["enable"]
                .as_bool()
                .map(|enable| (enable, breaker["rollback"].as_bool().unwrap_or(false))),
            deployments: service["deployments"]
                .as_array()
                .map(|deployments| deployments.iter().map(Deployment::from_json).collect())
                .unwrap_or_default(),
        }
    }

    /// The deployment `id`; or, when there is none by that id (ECS named
    /// none), the `PRIMARY` one if it runs `task_definition`.
    fn deployment(&self, id: &str, task_definition: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|deployment| !id.is_empty() && deployment.id == id)
            .or_else(|| {
                self.deployments.iter().find(|deployment| {
                    deployment.status == "PRIMARY"
                        && same_definition(&deployment.task_definition, task_definition)
                })
            })
    }

    /// Whether `deployment` is done: `PRIMARY`, every task running, and
    /// `COMPLETED` (or, where ECS gives no rollout state, the only
    /// deployment left, as the `services-stable` waiter has it).
    fn steady(&self, deployment: &Deployment) -> bool {
        deployment.status == "PRIMARY"
            && deployment.running == deployment.desired
            && match deployment.rollout_state.as_deref() {
                Some(state) => state == "COMPLETED",
                None => self.deployments.len() == 1,
            }
    }
}

impl Deployment {
    fn from_json(deployment: &Value) -> Self {
        let text = |key: &str| deployment[key].as_str().unwrap_or_default().to_owned();
        Deployment {
            id: text("id"),
            status: text("status"),
            task_definition: text("taskDefinition"),
            desired: deployment["desiredCount"].as_u64().unwrap_or(0),
            running: deployment["runningCount"].as_u64().unwrap_or(0),
            rollout_state: deployment["rolloutState"].as_str().map(str::to_owned),
            reason: deployment["rolloutStateReason"].as_str().map(str::to_owned),
        }
    }

    fn failed(&self) -> bool {
        self.rollout_state.as_deref() == Some("FAILED")
    }

    /// Where it stands, for the operator.
    fn progress(&self) -> String {
        format!(
            "deployment {} {}, {} of {} tasks running",
            self.id,
            self.rollout_state.as_deref().unwrap_or("in progress"),
            self.running,
            self.desired
        )
    }

    /// Why ECS failed it, without AWS's final period.
    fn why(&self) -> String {
        self.reason
            .as_deref()
            .unwrap_or("ECS marked it FAILED")
            .trim_end_matches('.')
            .to_owned()
    }
}

/// A task definition as people say it: `app:8`, from its ARN
/// (`arn:aws:ecs:us-east-1:1:task-definition/app:8`).
fn label(task_definition: &str) -> &str {
    task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
}

/// Whether two task definitions are the same revision, whether written as
/// ARNs or as `family:revision`.
fn same_definition(a: &str, b: &str) -> bool {
    !a.is_empty() && label(a) == label(b)
}

/// "deployment ecs-svc/…", or "the deployment" when ECS named none.
fn named(deployment: &str) -> String {
    if deployment.is_empty() {
        "the deployment".to_owned()
    } else {
        format!("deployment {deployment}")
    }
}

/// The images the runbook gives, in words: `app: repo/app:1.2.3`.
fn images_text(images: &BTreeMap<String, String>) -> String {
    images
        .iter()
        .map(|(container, image)| format!("{container}: {image}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One container's new image.
struct Change {
    container: String,
    from: String,
    to: String,
}

/// The changes, in words: `app: repo/app:1.2.2 → repo/app:1.2.3`.
fn changes_text(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|change| format!("{}: {} → {}", change.container, change.from, change.to))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The containers of `definition` whose image `images` changes. Fails when
/// `images` names a container the definition does not have.
fn changes(images: &BTreeMap<String, String>, definition: &Value) -> Result<Vec<Change>, Error> {
    let containers = definition["containerDefinitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut changes = Vec::new();
    for (name, image) in images {
        let Some(container) = containers
            .iter()
            .find(|container| container["name"].as_str() == Some(name.as_str()))
        else {
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|container| container["name"].as_str())
                .collect();
            return Err(Error::failed(format!(
                "task definition {} has no container `{name}` (its containers: {}): check `images`",
                label(definition["taskDefinitionArn"].as_str().unwrap_or_default()),
                names.join(", ")
            )));
        };
        let from = container["image"].as_str().unwrap_or_default();
        if from != image.as_str() {
            changes.push(Change {
                container: name.clone(),
                from: from.to_owned(),
                to: image.clone(),
            });
        }
    }
    Ok(changes)
}

/// The `RegisterTaskDefinition` request for a new revision of `definition`
/// (as `DescribeTaskDefinition` gave it) with `images`: everything ECS
/// takes back, the containers' images replaced.
fn revised(definition: &Value, images: &BTreeMap<String, String>) -> Value {
    let mut revised: Map<String, Value> = definition.as_object().cloned().unwrap_or_default();
    for key in READ_ONLY {
        revised.remove(*key);
    }
    revised.retain(|_, value| !value.is_null());
    if let Some(Value::Array(containers)) = revised.get_mut("containerDefinitions") {
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_owned();
            if let Some(image) = images.get(&name) {
                container["image"] = Value::String(image.clone());
            }
        }
    }
    Value::Object(revised)
}

/// Whether `name` is a container name ECS takes.
fn container_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CONTAINER_NAME
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Whether `image` is made of what ECS takes in an image reference:
/// letters, digits, `-`, `_`, `:`, `.`, `/`, `#`, and `@` for a digest.
fn image_ok(image: &str) -> bool {
    !image.is_empty()
        && image
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_:./#@".contains(&byte))
}

/// Milliseconds since the Unix epoch, from the host's wall clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Fails for a service ECS's rolling update does not deploy.
fn rolled_by_ecs(service: &Service) -> Result<(), Error> {
    if service.controller == "ECS" {
        return Ok(());
    }
    Err(Error::failed(format!(
        "service {} is deployed by its {} deployment controller, which `UpdateService` cannot move to a new task definition: deploy it through that controller (CodeDeploy for CODE_DEPLOY)",
        service.name, service.controller
    )))
}

impl Params {
    /// How long to wait for a deployment.
    fn wait_limit(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, HumanDuration::get)
    }

    /// Time between two looks at a deployment.
    fn poll_every(&self) -> Duration {
        self.poll.map_or(DEFAULT_POLL, HumanDuration::get)
    }

    /// Calls an ECS action; its answer as JSON.
    fn call(&self, action: &str, body: &Value) -> Result<Value, Error> {
        let reply = aws::json("ecs", &self.region, action, body)?;
        serde_json::from_str(&reply.body).map_err(|error| {
            Error::failed(format!(
                "ecs:{action} answered with something that is not JSON ({error})"
            ))
        })
    }

    /// The service, as ECS describes it now; fails when there is no such
    /// active service.
    fn service(&self) -> Result<Service, Error> {
        let reply = self.call(
            "DescribeServices",
            &serde_json::json!({ "cluster": self.cluster, "services": [self.service] }),
        )?;
        let Some(found) = reply["services"]
            .as_array()
            .and_then(|services| services.first())
        else {
            let reason = reply["failures"][0]["reason"]
                .as_str()
                .unwrap_or("not described");
            return Err(Error::failed(format!(
                "service {} of cluster {}: {reason}; check `cluster` and `service`",
                self.service, self.cluster
            )));
        };
        let service = Service::from_json(found);
        if service.status != "ACTIVE" {
            return Err(Error::failed(format!(
                "service {} of cluster {} is {}, not ACTIVE: it is deleted or being deleted",
                self.service, self.cluster, service.status
            )));
        }
        Ok(service)
    }

    /// A task definition, as `DescribeTaskDefinition` gives it.
    fn task_definition(&self, task_definition: &str) -> Result<Value, Error> {
        let mut reply = self.call(
            "DescribeTaskDefinition",
            &serde_json::json!({ "taskDefinition": task_definition }),
        )?;
        match reply.get_mut("taskDefinition").map(Value::take) {
            Some(definition @ Value::Object(_)) => Ok(definition),
            _ => Err(Error::failed(format!(
                "ECS described no task definition {}",
                label(task_definition)
            ))),
        }
    }

    /// The revision the next `RegisterTaskDefinition` of `definition`'s
    /// family is likely to get: `app:9` after the family's newest.
    fn next_revision(&self, definition: &Value) -> Result<String, Error> {
        let family = definition["family"].as_str().unwrap_or_default();
        let current = definition["revision"].as_u64().unwrap_or(0);
        let newest = self.task_definition(family)?["revision"]
            .as_u64()
            .unwrap_or(0);
        Ok(format!("{family}:{}", current.max(newest) + 1))
    }

    /// Registers a new revision of `definition` with `images`; its ARN.
    fn register(&self, definition: &Value) -> Result<String, Error> {
        let reply = self.call("RegisterTaskDefinition", &revised(definition, &self.images))?;
        reply["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::failed("ECS registered the new revision but named no ARN for it"))
    }

    /// Moves the service onto `task_definition`; the service as ECS
    /// answers, with the deployment that started.
    fn update(&self, task_definition: &str, force: bool) -> Result<Service, Error> {
        let mut body = serde_json::json!({
            "cluster": self.cluster,
            "service": self.service,
            "taskDefinition": task_definition,
        });
        if force {
            body["forceNewDeployment"] = Value::Bool(true);
        }
        let reply = self.call("UpdateService", &body)?;
        Ok(Service::from_json(&reply["service"]))
    }

    /// One look at the deployment a round waits for: done, failed (and
    /// undone), or another wait.
    fn follow(&self, pending: &Pending) -> Result<RunResult, Error> {
        let service = self.service()?;
        let rolls_onto = label(&pending.task_definition);
        let Some(deployment) = service.deployment(&pending.deployment, &pending.task_definition)
        else {
            let by_whom = if same_definition(&service.task_definition, &pending.previous) {
                "ECS's circuit breaker rolled it back, or someone did"
            } else {
                "another deployment replaced it"
            };
            return Err(Error::failed(format!(
                "service {} runs {} before {} of {rolls_onto} completed: {by_whom}; see the service's events",
                service.name,
                label(&service.task_definition),
                named(&pending.deployment)
            )));
        };
        if deployment.failed() {
            let what = format!(
                "deployment {} of {rolls_onto} failed: {}",
                deployment.id,
                deployment.why()
            );
            return Err(self.undo(pending, &service, what));
        }
        if service.steady(deployment) {
            return Ok(RunResult::Done(done(
                format!(
                    "{}, deployment {} COMPLETED with {} tasks running",
                    pending.now, deployment.id, deployment.running
                ),
                &pending.task_definition,
                &pending.previous,
                &deployment.id,
            )));
        }
        if deployment.status != "PRIMARY" {
            return Err(Error::failed(format!(
                "deployment {} of {rolls_onto} was replaced before it completed: service {} now rolls onto {}; not undoing a deployment this step did not start",
                deployment.id,
                service.name,
                label(&service.task_definition)
            )));
        }
        let waited = Duration::from_millis(now_ms().saturating_sub(pending.started_ms));
        if waited >= self.wait_limit() {
            let what = format!(
                "deployment {} of {rolls_onto} did not complete within {}: {}",
                deployment.id,
                HumanDuration(self.wait_limit()),
                deployment.progress()
            );
            return Err(self.undo(pending, &service, what));
        }
        Ok(RunResult::Wait(Wait::after(
            self.poll_every().min(self.wait_limit() - waited),
            pending,
            deployment.progress(),
        )))
    }

    /// Undoes this step's deployment before the step fails with `what`:
    /// the service back on the task definition it ran before, unless it is
    /// already (the circuit breaker rolled it back) or now runs another
    /// that is not this step's.
    fn undo(&self, pending: &Pending, service: &Service, what: String) -> Error {
        let undone = if same_definition(&pending.previous, &pending.task_definition) {
            format!(
                "nothing to undo: the service ran {} before the step",
                label(&pending.previous)
            )
        } else if !same_definition(&service.task_definition, &pending.task_definition)
            && !same_definition(&service.task_definition, &pending.previous)
        {
            format!(
                "service {} now runs {}, not this step's: left alone",
                service.name,
                label(&service.task_definition)
            )
        } else {
            match self.restore(service, &pending.previous) {
                Ok(words) => words,
                Err(error) => format!(
                    "service {} NOT put back on {}: {}",
                    service.name,
                    label(&pending.previous),
                    error.message()
                ),
            }
        };
        Error::failed(format!("{what}; {undone}"))
    }

    /// Puts `service` back on `previous` (unless it is already) and, with
    /// `wait`, waits for that deployment within this call; says what it
    /// did.
    fn restore(&self, service: &Service, previous: &str) -> Result<String, Error> {
        let back = label(previous);
        let (words, deployment) = if same_definition(&service.task_definition, previous) {
            (
                format!("service {} already back on {back}", service.name),
                service
                    .deployment("", previous)
                    .map(|deployment| deployment.id.clone())
                    .unwrap_or_default(),
            )
        } else {
            let updated = self.update(previous, false)?;
            (
                format!("service {} back on {back}", service.name),
                updated
                    .deployment("", previous)
                    .map(|deployment| deployment.id.clone())
                    .unwrap_or_default(),
            )
        };
        if !self.wait {
            return Ok(words);
        }
        let status = self.settle(&deployment, previous)?;
        Ok(format!("{words}, {status}"))
    }

    /// Polls a deployment within this call (for undoing and `rollback`,
    /// which have no rounds) until it completes, it fails, `timeout`
    /// passes, or the step's time nearly runs out; where it stands.
    fn settle(&self, deployment: &str, task_definition: &str) -> Result<String, Error> {
        let started = now_ms();
        loop {
            let service = self.service()?;
            let Some(found) = service.deployment(deployment, task_definition) else {
                return Ok(format!(
                    "{} is no longer listed: check the service",
                    named(deployment)
                ));
            };
            if found.failed() {
                return Err(Error::failed(format!(
                    "deployment {} of {} failed too: {}",
                    found.id,
                    label(task_definition),
                    found.why()
                )));
            }
            if service.steady(found) {
                return Ok(format!("deployment {} COMPLETED", found.id));
            }
            let waited = Duration::from_millis(now_ms().saturating_sub(started));
            if waited >= self.wait_limit() || runbook_sdk::remaining() < self.poll_every() * 2 {
                return Ok(format!("{} (not waited for further)", found.progress()));
            }
            runbook_sdk::sleep(self.poll_every())?;
        }
    }
}

/// What the step keeps between its rounds: the deployment it waits for.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Pending {
    /// The task definition the service rolls onto (an ARN).
    task_definition: String,
    /// The one it ran before (an ARN): what a failure puts back.
    previous: String,
    /// The deployment's id; empty when ECS named none.
    deployment: String,
    /// What the step did, in words, for the summary.
    now: String,
    /// When the service was updated, in milliseconds since the epoch.
    started_ms: u64,
}

/// The step's outcome once the deployment is done.
fn done(summary: String, task_definition: &str, previous: &str, deployment: &str) -> Outcome {
    Outcome::new(summary)
        .output("task_definition", task_definition)
        .output("previous", previous)
        .output("deployment", deployment)
}

impl Step for EcsDeploy {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        for (key, value) in [
            ("region", &params.region),
            ("cluster", &params.cluster),
            ("service", &params.service),
        ] {
            if value.trim().is_empty() {
                return Err(Error::invalid_param(key, format!("give the {key}")));
            }
        }
        if params.images.is_empty() {
            return Err(Error::invalid_param(
                "images",
                "give each container to change and its new image: `images = { app = \"repo/app:1.2.3\" }`",
            ));
        }
        for (name, image) in &params.images {
            if !container_name_ok(name) {
                return Err(Error::invalid_param(
                    format!("images.{name}"),
                    format!(
                        "`{name}` is not a container name (1 to {MAX_CONTAINER_NAME} letters, digits, `-` and `_`)"
                    ),
                ));
            }
            if !unresolved(image) && !image_ok(image) {
                return Err(Error::invalid_param(
                    format!("images.{name}"),
                    format!(
                        "`{image}` is not an image reference (`repo/app:1.2.3`, or `repo/app@sha256:…`)"
                    ),
                ));
            }
        }
        for (key, duration) in [("timeout", params.timeout), ("poll", params.poll)] {
            if duration.is_some_and(|duration| duration.get().is_zero()) {
                return Err(Error::invalid_param(key, "give a duration above 0s"));
            }
        }
        Ok(())
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        if [&params.region, &params.cluster, &params.service]
            .iter()
            .any(|value| unresolved(value))
        {
            // The service comes from an earlier step: nothing to read yet.
            return Ok(vec![PlannedAction::write(format!(
                "register a new revision of service {}'s task definition with {} and roll the service onto it",
                params.service,
                images_text(&params.images)
            ))]);
        }
        let service = params.service()?;
        rolled_by_ecs(&service)?;
        let definition = params.task_definition(&service.task_definition)?;
        let changes = changes(&params.images, &definition)?;
        let current = label(&service.task_definition);
        let mut actions = Vec::new();
        if !changes.is_empty() {
            actions.push(PlannedAction::write(format!(
                "register {} ({}) and roll service {} onto it (from {current})",
                params.next_revision(&definition)?,
                changes_text(&changes),
                service.name
            )));
        } else if params.force_new_deployment {
            actions.push(PlannedAction::write(format!(
                "force a new deployment of service {} on {current}",
                service.name
            )));
        } else {
            return Ok(vec![PlannedAction::read(format!(
                "service {} already runs {} ({current})",
                service.name,
                images_text(&params.images)
            ))]);
        }
        if params.wait {
            actions.push(PlannedAction::read(format!(
                "wait until the deployment is COMPLETED, at most {}",
                HumanDuration(params.wait_limit())
            )));
        }
        Ok(actions)
    }

    /// The first round reads the service and its task definition,
    /// checkpoints the latter, registers the new revision and updates the
    /// service; each later round looks at the deployment, with a journaled
    /// wait between rounds.
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        if let Some(pending) = runbook_sdk::state::<Pending>(state.as_deref())? {
            return params.follow(&pending);
        }

        let service = params.service()?;
        rolled_by_ecs(&service)?;
        let previous = service.task_definition.clone();
        let definition = params.task_definition(&previous)?;
        let changes = changes(&params.images, &definition)?;
        // What to restore, durable before anything changes.
        runbook_sdk::log::checkpoint("previous", &previous)?;
        if let Some((false, _)) = service.circuit_breaker {
            runbook_sdk::log::warn(format!(
                "service {}'s deployment circuit breaker is off: a deployment whose tasks do not start stays IN_PROGRESS until `timeout`",
                service.name
            ));
        }

        if changes.is_empty() && !params.force_new_deployment {
            // Already there: when the step runs again after a crash, its
            // deployment may still be rolling out; wait for that one.
            let now = format!(
                "service {} already runs {} ({})",
                service.name,
                images_text(&params.images),
                label(&previous)
            );
            let deployment = service.deployment("", &previous);
            let id = deployment
                .map(|deployment| deployment.id.clone())
                .unwrap_or_default();
            let rolling = deployment.is_some_and(|deployment| !service.steady(deployment));
            if !params.wait || !rolling {
                return Ok(RunResult::Done(done(now, &previous, &previous, &id)));
            }
            let pending = Pending {
                task_definition: previous.clone(),
                previous,
                deployment: id,
                now,
                started_ms: now_ms(),
            };
            return params.follow(&pending);
        }

        let (task_definition, now) = if changes.is_empty() {
            (
                previous.clone(),
                format!(
                    "service {} redeployed on {}",
                    service.name,
                    label(&previous)
                ),
            )
        } else {
            let registered = params.register(&definition)?;
            runbook_sdk::log::info(format!(
                "registered {} ({})",
                label(&registered),
                changes_text(&changes)
            ));
            let now = format!(
                "service {} from {} to {} ({})",
                service.name,
                label(&previous),
                label(&registered),
                changes_text(&changes)
            );
            (registered, now)
        };
        let updated = params.update(&task_definition, params.force_new_deployment)?;
        let deployment = updated
            .deployment("", &task_definition)
            .map(|deployment| deployment.id.clone())
            .unwrap_or_default();
        runbook_sdk::log::info(format!("{now}: {} started", named(&deployment)));
        if !params.wait {
            return Ok(RunResult::Done(done(
                format!("{now}, {} started", named(&deployment)),
                &task_definition,
                &previous,
                &deployment,
            )));
        }
        let status = format!("{} started", named(&deployment));
        let pending = Pending {
            task_definition,
            previous,
            deployment,
            now,
            started_ms: now_ms(),
        };
        Ok(RunResult::Wait(Wait::after(
            params.poll_every().min(params.wait_limit()),
            &pending,
            status,
        )))
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let Some(previous) = outputs
            .get("previous")
            .filter(|previous| !previous.is_empty())
        else {
            return Ok(
                "nothing to undo: the run recorded no task definition, so it changed none"
                    .to_owned(),
            );
        };
        if outputs
            .get("task_definition")
            .is_some_and(|task_definition| same_definition(task_definition, previous))
        {
            return Ok(format!(
                "nothing to undo: the service ran {} before the step",
                label(previous)
            ));
        }
        let service = params.service()?;
        params.restore(&service, previous)
    }
}

runbook_sdk::export_step!(EcsDeploy);

#[cfg(test)]
mod tests {
    use super::*;

    fn described() -> Value {
        serde_json::json!({
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/app:7",
            "family": "app",
            "revision": 7,
            "status": "ACTIVE",
            "containerDefinitions": [
                { "name": "app", "image": "repo/app:1.2.2", "essential": true },
                { "name": "envoy", "image": "envoy:1.29" }
            ],
            "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
            "networkMode": "awsvpc",
            "requiresAttributes": [{ "name": "com.amazonaws.ecs.capability.task-eni" }],
            "compatibilities": ["EC2", "FARGATE"],
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "512",
            "registeredAt": 1_700_000_000.5,
            "registeredBy": "arn:aws:iam::123456789012:user/ci",
            "taskRoleArn": null
        })
    }

    fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, image)| ((*name).to_owned(), (*image).to_owned()))
            .collect()
    }

    #[test]
    fn a_new_revision_keeps_what_ecs_takes_back_and_changes_only_the_named_images() {
        let revised = revised(&described(), &images(&[("app", "repo/app:1.2.3")]));
        for read_only in [
            "taskDefinitionArn",
            "revision",
            "status",
            "requiresAttributes",
            "compatibilities",
            "registeredAt",
            "registeredBy",
            "taskRoleArn",
        ] {
            assert!(revised.get(read_only).is_none(), "{read_only}: {revised}");
        }
        assert_eq!(revised["family"], "app");
        assert_eq!(revised["cpu"], "256");
        assert_eq!(revised["requiresCompatibilities"][0], "FARGATE");
        assert_eq!(
            revised["executionRoleArn"],
            "arn:aws:iam::123456789012:role/exec"
        );
        assert_eq!(
            revised["containerDefinitions"][0]["image"],
            "repo/app:1.2.3"
        );
        assert_eq!(revised["containerDefinitions"][0]["essential"], true);
        assert_eq!(revised["containerDefinitions"][1]["image"], "envoy:1.29");
    }

    #[test]
    fn changes_name_what_moves_and_refuse_an_unknown_container() {
        let definition = described();
        let found = changes(
            &images(&[("app", "repo/app:1.2.3"), ("envoy", "envoy:1.29")]),
            &definition,
        )
        .unwrap();
        assert_eq!(changes_text(&found), "app: repo/app:1.2.2 → repo/app:1.2.3");
        let Err(error) = changes(&images(&[("web", "repo/web:2")]), &definition) else {
            panic!("a container the definition lacks is refused");
        };
        assert_eq!(
            error.message(),
            "task definition app:7 has no container `web` (its containers: app, envoy): check `images`"
        );
    }

    #[test]
    fn a_deployment_is_steady_when_completed_with_every_task_running() {
        let service = Service::from_json(&serde_json::json!({
            "serviceName": "web",
            "status": "ACTIVE",
            "taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/app:8",
            "deployments": [
                { "id": "ecs-svc/2", "status": "PRIMARY", "taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/app:8",
                  "desiredCount": 2, "runningCount": 2, "rolloutState": "COMPLETED" },
                { "id": "ecs-svc/1", "status": "ACTIVE", "taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/app:7",
                  "desiredCount": 2, "runningCount": 2, "rolloutState": "COMPLETED" }
            ]
        }));
        assert_eq!(service.controller, "ECS");
        assert_eq!(service.circuit_breaker, None);
        let primary = service.deployment("", "app:8").unwrap();
        assert_eq!(primary.id, "ecs-svc/2");
        assert!(service.steady(primary));
        let old = service.deployment("ecs-svc/1", "app:8").unwrap();
        assert!(!service.steady(old));
        assert!(service.deployment("", "app:7").is_none());
    }

    #[test]
    fn names_and_images_are_checked_as_ecs_does() {
        assert!(container_name_ok("app_1-web"));
        assert!(!container_name_ok("app web"));
        assert!(!container_name_ok(""));
        assert!(image_ok(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.2.3"
        ));
        assert!(image_ok("repo/app@sha256:0123abcd"));
        assert!(!image_ok("repo/app:1.2.3 "));
        assert!(!image_ok(""));
        assert_eq!(
            label("arn:aws:ecs:us-east-1:1:task-definition/app:8"),
            "app:8"
        );
        assert!(same_definition(
            "app:8",
            "arn:aws:ecs:us-east-1:1:task-definition/app:8"
        ));
        assert!(!same_definition("", ""));
    }
}
