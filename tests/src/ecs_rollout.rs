//! A proxy in front of moto_server that makes ECS deployments roll out the
//! way they do in AWS. moto's `UpdateService` changes a service's task
//! definition but not its `deployments`, which stay on the task definition
//! the service was created with, `IN_PROGRESS` for ever with no task
//! running. The proxy keeps each service's deployments itself and shows
//! them in the `DescribeServices` and `UpdateService` answers: a new
//! `PRIMARY` deployment `IN_PROGRESS` for a number of descriptions, then
//! `COMPLETED` with every task running and the old deployment gone; or,
//! for the first one when asked, `FAILED` by the deployment circuit
//! breaker. It records every action it forwarded.

use crate::http::{Response, bind_loopback, serve};
use crate::slow_rds::forward;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The reason ECS gives a deployment its circuit breaker failed.
pub const CIRCUIT_BREAKER_REASON: &str = "ECS deployment circuit breaker: tasks failed to start.";

/// ECS's JSON target prefix.
const TARGET: &str = "AmazonEC2ContainerServiceV20141113";

/// How the proxy's deployments go.
#[derive(Debug, Clone, Copy)]
pub struct Rollout {
    /// How many `DescribeServices` show a new deployment `IN_PROGRESS`
    /// before it ends.
    pub in_progress_for: usize,
    /// Whether the first deployment started through the proxy ends
    /// `FAILED` by the circuit breaker; the later ones complete.
    pub first_fails: bool,
    /// The circuit breaker's `rollback`: when set, ECS puts a service whose
    /// deployment failed back on its last completed deployment by itself
    /// (the proxy sends moto that `UpdateService`); when not, the failed
    /// deployment stays `PRIMARY`.
    pub rollback: bool,
}

impl Rollout {
    /// Every deployment completes after `in_progress_for` descriptions.
    pub fn completing(in_progress_for: usize) -> Self {
        Rollout {
            in_progress_for,
            first_fails: false,
            rollback: true,
        }
    }

    /// The first deployment fails after `in_progress_for` descriptions,
    /// rolled back by ECS when `rollback`; the later ones complete.
    pub fn failing(in_progress_for: usize, rollback: bool) -> Self {
        Rollout {
            in_progress_for,
            first_fails: true,
            rollback,
        }
    }
}

/// A running proxy.
pub struct EcsRollout {
    /// `http://127.0.0.1:PORT`: the AWS endpoint to use.
    pub url: String,
    actions: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EcsRollout {
    /// Forwards to `moto_url`; deployments go as `rollout` says.
    pub async fn start(moto_url: &str, rollout: Rollout) -> std::io::Result<Self> {
        let (listener, address) = bind_loopback(0).await?;
        let upstream = moto_url.trim_start_matches("http://").to_owned();
        let actions = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(State {
            rollout,
            services: BTreeMap::new(),
            started: 0,
        }));
        let recorded = Arc::clone(&actions);
        let task = tokio::spawn(serve(listener, move |request| {
            let (upstream, recorded, state) =
                (upstream.clone(), Arc::clone(&recorded), Arc::clone(&state));
            async move {
                let action = request
                    .headers
                    .get("x-amz-target")
                    .and_then(|target| target.rsplit_once('.'))
                    .map(|(_, action)| action.to_owned())
                    .unwrap_or_default();
                recorded.lock().expect("actions lock").push(action.clone());
                let (status, body) = match forward(&upstream, &request).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        return Response::text(502, format!("moto is unreachable: {error}"));
                    }
                };
                let answer: Option<Value> = serde_json::from_str(&body).ok();
                let body = match (status, answer, action.as_str()) {
                    (200, Some(mut answer), "DescribeServices") => {
                        let rollbacks = {
                            let mut state = state.lock().expect("state lock");
                            state.described(&mut answer)
                        };
                        // ECS's own rollback, made in moto too.
                        for (cluster, service, task_definition) in rollbacks {
                            let mut update = request.clone();
                            update
                                .headers
                                .insert("x-amz-target".into(), format!("{TARGET}.UpdateService"));
                            update.body = json!({
                                "cluster": cluster,
                                "service": service,
                                "taskDefinition": task_definition,
                            })
                            .to_string()
                            .into_bytes();
                            if let Err(error) = forward(&upstream, &update).await {
                                return Response::text(
                                    502,
                                    format!("moto is unreachable: {error}"),
                                );
                            }
                        }
                        answer.to_string()
                    }
                    (200, Some(mut answer), "UpdateService") => {
                        let force = serde_json::from_slice::<Value>(&request.body)
                            .ok()
                            .and_then(|sent| sent["forceNewDeployment"].as_bool())
                            .unwrap_or(false);
                        state
                            .lock()
                            .expect("state lock")
                            .updated(&mut answer, force);
                        answer.to_string()
                    }
                    _ => body,
                };
                Response {
                    status,
                    headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
                    body: body.into_bytes(),
                    delay: std::time::Duration::ZERO,
                }
            }
        }));
        Ok(EcsRollout {
            url: format!("http://{address}"),
            actions,
            task,
        })
    }

    /// The actions forwarded so far, in order (not the proxy's own
    /// `UpdateService` of a circuit-breaker rollback).
    pub fn actions(&self) -> Vec<String> {
        self.actions.lock().expect("actions lock").clone()
    }
}

impl Drop for EcsRollout {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One deployment of a service, as the proxy keeps it.
#[derive(Debug, Clone)]
struct Deployment {
    id: String,
    /// `PRIMARY` or `ACTIVE`.
    status: &'static str,
    task_definition: String,
    desired: u64,
    running: u64,
    failed_tasks: u64,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    rollout_state: &'static str,
    reason: String,
    created_at: f64,
    updated_at: f64,
    /// Descriptions left before an `IN_PROGRESS` deployment ends.
    left: usize,
    /// Whether it ends `FAILED`.
    fails: bool,
}

/// What the proxy keeps: each service's deployments, by ARN, newest
/// first as ECS lists them.
struct State {
    rollout: Rollout,
    services: BTreeMap<String, Vec<Deployment>>,
    /// Deployments started through the proxy so far.
    started: usize,
}

impl State {
    /// Rewrites a `DescribeServices` answer, a description's worth further
    /// into each rollout; returns the rollbacks the circuit breaker starts,
    /// for moto: `(cluster, service, task definition)`.
    fn described(&mut self, answer: &mut Value) -> Vec<(String, String, String)> {
        let mut rollbacks = Vec::new();
        let Some(services) = answer["services"].as_array_mut() else {
            return rollbacks;
        };
        for service in services {
            let arn = text(&service["serviceArn"]);
            let deployments = self
                .services
                .entry(arn.clone())
                .or_insert_with(|| vec![steady(service, &text(&service["taskDefinition"]))]);
            if let Some(task_definition) = advance(deployments, self.rollout) {
                rollbacks.push((text(&service["clusterArn"]), arn, task_definition));
            }
            show(service, deployments, self.rollout);
        }
        rollbacks
    }

    /// Rewrites an `UpdateService` answer: a new `PRIMARY` deployment when
    /// the task definition changed or one was forced.
    fn updated(&mut self, answer: &mut Value, force: bool) {
        let service = &mut answer["service"];
        let arn = text(&service["serviceArn"]);
        // moto's own deployment still runs the task definition the service
        // had before this update.
        let deployments = self.services.entry(arn).or_insert_with(|| {
            vec![steady(
                service,
                &text(&service["deployments"][0]["taskDefinition"]),
            )]
        });
        let task_definition = text(&service["taskDefinition"]);
        let unchanged = deployments
            .iter()
            .find(|deployment| deployment.status == "PRIMARY")
            .is_some_and(|primary| same(&primary.task_definition, &task_definition));
        if force || !unchanged {
            for deployment in deployments.iter_mut() {
                if deployment.status == "PRIMARY" {
                    deployment.status = "ACTIVE";
                }
            }
            let id = format!(
                "ecs-svc/{}",
                7_310_000_000_000_000_000_u64 + 1_000_003 * self.started as u64
            );
            let now = now();
            deployments.insert(
                0,
                Deployment {
                    reason: format!("ECS deployment {id} in progress."),
                    id,
                    status: "PRIMARY",
                    task_definition,
                    desired: service["desiredCount"].as_u64().unwrap_or(0),
                    running: 0,
                    failed_tasks: 0,
                    rollout_state: "IN_PROGRESS",
                    created_at: now,
                    updated_at: now,
                    left: self.rollout.in_progress_for,
                    fails: self.rollout.first_fails && self.started == 0,
                },
            );
            self.started += 1;
        }
        show(service, deployments, self.rollout);
    }
}

/// A string field, or empty.
fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Whether two task definitions are the same revision, as ARNs or as
/// `family:revision` (moto keeps what `UpdateService` was given).
fn same(a: &str, b: &str) -> bool {
    a.rsplit('/').next() == b.rsplit('/').next()
}

/// Now, in seconds since the epoch, as ECS writes its timestamps.
fn now() -> f64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or_default();
    (seconds * 1000.0).round() / 1000.0
}

/// A service's one deployment when the proxy first sees it: done, on
/// `task_definition`, with every task running.
fn steady(service: &Value, task_definition: &str) -> Deployment {
    let moto = &service["deployments"][0];
    let desired = service["desiredCount"].as_u64().unwrap_or(0);
    let id = moto["id"]
        .as_str()
        .unwrap_or("ecs-svc/7300000000000000000")
        .to_owned();
    let created_at = moto["createdAt"].as_f64().unwrap_or_else(now);
    Deployment {
        reason: format!("ECS deployment {id} completed."),
        id,
        status: "PRIMARY",
        task_definition: task_definition.to_owned(),
        desired,
        running: desired,
        failed_tasks: 0,
        rollout_state: "COMPLETED",
        created_at,
        updated_at: created_at,
        left: 0,
        fails: false,
    }
}

/// One description's worth of progress of the deployment in progress, if
/// there is one: it goes on, completes (and the others go), or fails. When
/// the circuit breaker rolls back, the newest completed deployment becomes
/// `PRIMARY` again and rolls out anew: returns its task definition.
fn advance(deployments: &mut Vec<Deployment>, rollout: Rollout) -> Option<String> {
    let index = deployments.iter().position(|deployment| {
        deployment.status == "PRIMARY" && deployment.rollout_state == "IN_PROGRESS"
    })?;
    let now = now();
    let deployment = &mut deployments[index];
    deployment.updated_at = now;
    if deployment.left > 0 {
        deployment.left -= 1;
        let shown = (rollout.in_progress_for - deployment.left) as u64;
        if deployment.fails {
            deployment.failed_tasks = shown;
        } else {
            let rising = deployment.desired * shown / (rollout.in_progress_for as u64 + 1);
            deployment.running = deployment.running.max(rising);
        }
        return None;
    }
    if !deployment.fails {
        deployment.rollout_state = "COMPLETED";
        deployment.running = deployment.desired;
        deployment.reason = format!("ECS deployment {} completed.", deployment.id);
        let id = deployment.id.clone();
        deployments.retain(|deployment| deployment.id == id);
        return None;
    }
    deployment.rollout_state = "FAILED";
    deployment.running = 0;
    deployment.reason = CIRCUIT_BREAKER_REASON.to_owned();
    if !rollout.rollback {
        return None;
    }
    deployment.status = "ACTIVE";
    let back = deployments
        .iter_mut()
        .find(|deployment| deployment.rollout_state == "COMPLETED")?;
    back.status = "PRIMARY";
    back.rollout_state = "IN_PROGRESS";
    back.reason = format!("ECS deployment {} in progress.", back.id);
    back.left = rollout.in_progress_for;
    back.fails = false;
    back.updated_at = now;
    let task_definition = back.task_definition.clone();
    // The `PRIMARY` deployment first, as ECS lists them.
    deployments.sort_by_key(|deployment| deployment.status != "PRIMARY");
    Some(task_definition)
}

/// Writes the proxy's deployments into a service as ECS describes it,
/// keeping what moto says of each deployment otherwise (launch type,
/// platform), with the service's task definition and task counts to
/// match, and the deployment configuration moto leaves out.
fn show(service: &mut Value, deployments: &[Deployment], rollout: Rollout) {
    let template = service["deployments"][0].clone();
    let listed: Vec<Value> = deployments
        .iter()
        .map(|deployment| {
            let mut shown = template.clone();
            let pending = if deployment.rollout_state == "IN_PROGRESS" && !deployment.fails {
                deployment.desired.saturating_sub(deployment.running)
            } else {
                0
            };
            shown["id"] = json!(deployment.id);
            shown["status"] = json!(deployment.status);
            shown["taskDefinition"] = json!(deployment.task_definition);
            shown["desiredCount"] = json!(deployment.desired);
            shown["pendingCount"] = json!(pending);
            shown["runningCount"] = json!(deployment.running);
            shown["failedTasks"] = json!(deployment.failed_tasks);
            shown["createdAt"] = json!(deployment.created_at);
            shown["updatedAt"] = json!(deployment.updated_at);
            shown["rolloutState"] = json!(deployment.rollout_state);
            shown["rolloutStateReason"] = json!(deployment.reason);
            shown
        })
        .collect();
    if let Some(primary) = deployments
        .iter()
        .find(|deployment| deployment.status == "PRIMARY")
    {
        service["taskDefinition"] = json!(primary.task_definition);
    }
    let running: u64 = deployments
        .iter()
        .map(|deployment| deployment.running)
        .sum();
    let pending: u64 = listed
        .iter()
        .filter_map(|deployment| deployment["pendingCount"].as_u64())
        .sum();
    service["runningCount"] = json!(running);
    service["pendingCount"] = json!(pending);
    service["deployments"] = Value::Array(listed);
    if service.get("deploymentConfiguration").is_none() {
        service["deploymentConfiguration"] = json!({
            "deploymentCircuitBreaker": { "enable": true, "rollback": rollout.rollback },
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        });
    }
}
