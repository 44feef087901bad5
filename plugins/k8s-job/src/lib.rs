//! `k8s-job`: runs a Job from a container image and command (or a full
//! Job spec), waits on the host until it completes or fails, copies the
//! pod's logs into the step log, and fails with the exit code. A finished
//! Job of the same name is replaced; a running one is an error. Rollback
//! can run a second Job (`alembic downgrade -1`).

use runbook_sdk::kube::{self, ObjectRef};
use runbook_sdk::serde_json::{Value, json};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    Step,
};
use std::collections::BTreeMap;
use std::time::Duration;

struct Job;

/// The Job to run.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The Job's namespace.
    namespace: String,
    /// The Job's name, e.g. `riskcast-migrate-${{ params.version }}`.
    name: String,
    /// The container image.
    #[serde(default)]
    image: Option<String>,
    /// The command, e.g. `["alembic", "upgrade", "head"]`.
    #[serde(default)]
    command: Vec<String>,
    /// Arguments after the command.
    #[serde(default)]
    args: Vec<String>,
    /// Environment variables of the container.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Environment from Secrets and ConfigMaps, as in a pod spec (`envFrom`).
    #[serde(default)]
    env_from: Vec<Value>,
    /// The pod's service account.
    #[serde(default)]
    service_account: Option<String>,
    /// Retries of a failed pod before the Job fails (default 0).
    #[serde(default)]
    backoff_limit: u32,
    /// A full Job `spec` instead of `image`/`command` (advanced).
    #[serde(default)]
    spec: Option<Value>,
    /// How long the Job may take (default 30m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// Log lines copied from the pod (default 200, the last ones).
    #[serde(default)]
    log_lines: Option<u32>,
    /// A command run as a second Job, with the same image and settings, when
    /// the runbook rolls back (e.g. `["alembic", "downgrade", "-1"]`).
    #[serde(default)]
    rollback_command: Vec<String>,
    /// Text that the Job's logs contain only when it changed something
    /// (alembic: `Running upgrade`). When given and absent, the Job
    /// changed nothing, and a rollback leaves it alone: re-deploying the
    /// live version and then failing must not downgrade the schema the
    /// live code needs.
    #[serde(default)]
    changed_when: Option<String>,
}

fn job_ref(params: &Params, name: &str) -> ObjectRef {
    ObjectRef::new("batch/v1", "Job", &params.namespace, name)
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.spec.is_none() && params.image.is_none() {
        return Err(Error::invalid_param(
            "image",
            "give `image` (and `command`), or a full `spec`",
        ));
    }
    if params.name.is_empty() || (params.name.len() > 63 && !runbook_sdk::unresolved(&params.name))
    {
        return Err(Error::invalid_param(
            "name",
            "a Job name is 1 to 63 characters",
        ));
    }
    Ok(())
}

/// The Job object for `command`.
fn manifest(params: &Params, name: &str, command: &[String]) -> Value {
    let spec = params.spec.clone().unwrap_or_else(|| {
        let env: Vec<Value> = params
            .env
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let mut container = json!({"name": "job", "image": params.image, "env": env});
        if !command.is_empty() {
            container["command"] = json!(command);
        }
        if !params.args.is_empty() {
            container["args"] = json!(params.args);
        }
        if !params.env_from.is_empty() {
            container["envFrom"] = json!(params.env_from);
        }
        let mut pod = json!({"restartPolicy": "Never", "containers": [container]});
        if let Some(account) = &params.service_account {
            pod["serviceAccountName"] = json!(account);
        }
        json!({"backoffLimit": params.backoff_limit, "template": {"metadata": {"labels": {"job-name": name}}, "spec": pod}})
    });
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": params.namespace, "labels": {"app.kubernetes.io/managed-by": "runbook"}},
        "spec": spec,
    })
}

fn finished(job: &Value) -> bool {
    job.pointer("/status/succeeded")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        > 0
        || job
            .pointer("/status/failed")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            > 0
}

/// The Job's pod (the latest one), its exit code, and its logs.
fn pod_result(params: &Params, name: &str) -> Result<(Option<String>, Option<i64>, String), Error> {
    let pods = kube::list(
        "v1",
        "Pod",
        Some(&params.namespace),
        Some(&format!("job-name={name}")),
    )?;
    let Some(pod) = pods.last() else {
        return Ok((None, None, String::new()));
    };
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let exit_code = pod
        .pointer("/status/containerStatuses/0/state/terminated/exitCode")
        .and_then(Value::as_i64);
    let logs = kube::logs(
        &params.namespace,
        &pod_name,
        None,
        Some(params.log_lines.unwrap_or(200)),
    )
    .unwrap_or_else(|error| format!("(no logs: {})", error.message()));
    Ok((Some(pod_name), exit_code, logs))
}

/// Runs one Job to its end; its pod, exit code and logs.
fn run_job(
    params: &Params,
    name: &str,
    command: &[String],
) -> Result<(String, i64, String), Error> {
    let object = job_ref(params, name);
    if let Some(existing) = kube::get(&object)? {
        if !finished(&existing) {
            return Err(Error::failed(format!(
                "Job {}/{name} already exists and has not finished: another run may be migrating",
                params.namespace
            )));
        }
        runbook_sdk::log::info(format!("replacing the finished Job {name}"));
        kube::delete(&object)?;
        kube::wait_deleted(&object, Duration::from_secs(60))?;
    }
    kube::create(
        "batch/v1",
        "Job",
        Some(&params.namespace),
        &manifest(params, name, command),
    )?;
    runbook_sdk::log::progress(format!("Job {name} running"), None);
    let timeout = params
        .timeout
        .map_or(Duration::from_secs(1800), HumanDuration::get);
    let waited = kube::wait_condition(&object, "Complete", "True", timeout);
    let (pod, exit_code, logs) = pod_result(params, name)?;
    for line in logs.lines() {
        runbook_sdk::log::info(format!("{}: {line}", pod.as_deref().unwrap_or(name)));
    }
    let last_line = logs.lines().last().unwrap_or_default().to_owned();
    match waited {
        Ok(_) => Ok((pod.unwrap_or_default(), exit_code.unwrap_or(0), logs)),
        Err(error) => {
            let code = exit_code.map_or_else(
                || "no exit code".to_owned(),
                |code| format!("exit code {code}"),
            );
            Err(Error::failed(format!(
                "Job {name} failed ({code}): {}{}",
                error.message(),
                if last_line.is_empty() {
                    String::new()
                } else {
                    format!("; last log line: {last_line}")
                }
            )))
        }
    }
}

impl Step for Job {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Kube];

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let what = if params.command.is_empty() {
            params.image.clone().unwrap_or_else(|| "its spec".into())
        } else {
            format!(
                "{} `{}`",
                params.image.clone().unwrap_or_default(),
                params.command.join(" ")
            )
        };
        let mut actions = vec![PlannedAction::write(format!(
            "run Job {}/{} ({what}) and wait for it",
            params.namespace, params.name
        ))];
        if let Some(existing) = kube::get(&job_ref(params, &params.name))? {
            actions.push(PlannedAction::write(if finished(&existing) {
                format!("replace the finished Job {}", params.name)
            } else {
                format!("Job {} is still running: the run would fail", params.name)
            }));
        }
        if !params.rollback_command.is_empty() {
            actions.push(PlannedAction::read(format!(
                "on rollback: `{}`",
                params.rollback_command.join(" ")
            )));
        }
        Ok(actions)
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let (pod, exit_code, logs) = run_job(&params, &params.name, &params.command)?;
        let changed = params
            .changed_when
            .as_deref()
            .map(|marker| logs.contains(marker));
        let mut summary = format!("Job {} completed (exit code {exit_code})", params.name);
        if changed == Some(false) {
            summary.push_str("; it changed nothing");
        }
        let mut outcome = Outcome::new(summary)
            .output("job", params.name.clone())
            .output("pod", pod)
            .output("exit_code", exit_code.to_string());
        if let Some(changed) = changed {
            outcome = outcome.output("changed", changed.to_string());
        }
        Ok(outcome)
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        if outputs.get("changed") == Some("false") {
            return Ok(format!(
                "nothing to undo: Job {} changed nothing (its logs had no `{}`)",
                params.name,
                params.changed_when.as_deref().unwrap_or_default()
            ));
        }
        if params.rollback_command.is_empty() {
            return Ok(format!(
                "nothing to undo: Job {} has no `rollback_command`",
                params.name
            ));
        }
        let name = format!(
            "{}-rollback",
            params.name.chars().take(54).collect::<String>()
        );
        run_job(&params, &name, &params.rollback_command)?;
        Ok(format!(
            "ran Job {name}: `{}`",
            params.rollback_command.join(" ")
        ))
    }
}

runbook_sdk::export_step!(Job);
