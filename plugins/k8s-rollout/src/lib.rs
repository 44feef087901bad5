//! `k8s-rollout`: sets the images of Deployments and StatefulSets, or
//! scales, pauses or resumes them, then waits (on the host) until the
//! rollout completes. A rollout that fails (past its progress deadline, or
//! not done in time) is undone before the step fails; `rollback` restores
//! each workload's previous pod template, as `kubectl rollout undo` does.

use runbook_sdk::kube::{self, ObjectRef, PatchKind};
use runbook_sdk::serde_json::{self, Value, json};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    Step,
};
use std::collections::BTreeMap;
use std::time::Duration;

struct Rollout;

/// What to change in which workloads.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The namespace of the workloads.
    namespace: String,
    /// `deployment/NAME` or `statefulset/NAME`, one or many.
    workloads: Vec<String>,
    /// `set-image` (default), `scale`, `pause`, `resume`.
    #[serde(default)]
    action: Action,
    /// For `set-image`: container name → image; `"*"` sets every container.
    #[serde(default)]
    images: BTreeMap<String, String>,
    /// For `scale`: the replica count.
    #[serde(default)]
    replicas: Option<u32>,
    /// How long each rollout may take (default 10m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "kebab-case")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Action {
    #[default]
    SetImage,
    Scale,
    Pause,
    Resume,
}

/// One workload of the parameters.
struct Workload {
    object: ObjectRef,
    /// `deployment/api`, as written.
    label: String,
}

fn workloads(params: &Params) -> Result<Vec<Workload>, Error> {
    if params.workloads.is_empty() {
        return Err(Error::invalid_param(
            "workloads",
            "name at least one workload, like \"deployment/api\"",
        ));
    }
    params
        .workloads
        .iter()
        .enumerate()
        .map(|(index, written)| {
            let (kind, name) = written.split_once('/').unwrap_or(("", written));
            let kind = match kind.to_ascii_lowercase().as_str() {
                "deployment" | "deployments" | "deploy" => "Deployment",
                "statefulset" | "statefulsets" | "sts" => "StatefulSet",
                _ => {
                    return Err(Error::invalid_param(
                        format!("workloads[{index}]"),
                        format!("`{written}` is not `deployment/NAME` or `statefulset/NAME`"),
                    ));
                }
            };
            Ok(Workload {
                object: ObjectRef::new("apps/v1", kind, &params.namespace, name),
                label: written.clone(),
            })
        })
        .collect()
}

fn check_params(params: &Params) -> Result<(), Error> {
    match params.action {
        Action::SetImage if params.images.is_empty() => Err(Error::invalid_param(
            "images",
            "`set-image` needs `images = { CONTAINER = \"IMAGE\" }`",
        )),
        Action::Scale if params.replicas.is_none() => {
            Err(Error::invalid_param("replicas", "`scale` needs `replicas`"))
        }
        _ => Ok(()),
    }
}

fn containers(workload: &Value) -> Vec<(String, String)> {
    workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|containers| {
            containers
                .iter()
                .map(|container| {
                    (
                        container["name"].as_str().unwrap_or_default().to_owned(),
                        container["image"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The image changes `images` makes to this workload: (container, from, to).
fn image_changes(
    params: &Params,
    workload: &Workload,
    object: &Value,
) -> Result<Vec<(String, String, String)>, Error> {
    let present = containers(object);
    for name in params.images.keys().filter(|name| *name != "*") {
        if !present.iter().any(|(container, _)| container == name) {
            let names: Vec<&str> = present
                .iter()
                .map(|(container, _)| container.as_str())
                .collect();
            return Err(Error::invalid_param(
                format!("images.{name}"),
                format!(
                    "{} has no container `{name}` (it has: {})",
                    workload.label,
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(present
        .into_iter()
        .filter_map(|(container, image)| {
            let wanted = params
                .images
                .get(&container)
                .or_else(|| params.images.get("*"))?;
            (*wanted != image).then(|| (container, image, wanted.clone()))
        })
        .collect())
}

/// The patch an action makes, and what it says about it; `None` when the
/// workload is already as asked.
fn change(
    params: &Params,
    workload: &Workload,
    object: &Value,
) -> Result<Option<(Value, String)>, Error> {
    Ok(match params.action {
        Action::SetImage => {
            let changes = image_changes(params, workload, object)?;
            if changes.is_empty() {
                None
            } else {
                let containers: Vec<Value> = changes
                    .iter()
                    .map(|(name, _, image)| json!({"name": name, "image": image}))
                    .collect();
                let words: Vec<String> = changes
                    .iter()
                    .map(|(name, from, to)| format!("{name}: {from} → {to}"))
                    .collect();
                Some((
                    json!({"spec": {"template": {"spec": {"containers": containers}}}}),
                    format!("set image of {} ({})", workload.label, words.join(", ")),
                ))
            }
        }
        Action::Scale => {
            let wanted = params.replicas.unwrap_or(1);
            let current = object
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            (current != u64::from(wanted)).then(|| {
                (
                    json!({"spec": {"replicas": wanted}}),
                    format!(
                        "scale {} from {current} to {wanted} replicas",
                        workload.label
                    ),
                )
            })
        }
        Action::Pause | Action::Resume => {
            let pause = params.action == Action::Pause;
            let paused = object
                .pointer("/spec/paused")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            (paused != pause).then(|| {
                (
                    json!({"spec": {"paused": pause}}),
                    format!(
                        "{} the rollout of {}",
                        if pause { "pause" } else { "resume" },
                        workload.label
                    ),
                )
            })
        }
    })
}

/// What an action would do to a workload not known yet (its name comes
/// from an earlier step's output, such as the idle colour).
fn unknown_change(params: &Params, workload: &Workload) -> String {
    let label = &workload.label;
    match params.action {
        Action::SetImage => {
            let images: Vec<String> = params
                .images
                .iter()
                .map(|(container, image)| format!("{container} = {image}"))
                .collect();
            format!("set image of {label} ({})", images.join(", "))
        }
        Action::Scale => format!("scale {label} to {} replicas", params.replicas.unwrap_or(1)),
        Action::Pause => format!("pause the rollout of {label}"),
        Action::Resume => format!("resume the rollout of {label}"),
    }
}

fn timeout(params: &Params) -> Duration {
    params
        .timeout
        .map_or(Duration::from_secs(600), HumanDuration::get)
}

fn revision(object: &Value) -> String {
    object
        .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/status/updateRevision")
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_owned()
}

/// What a workload looked like before the step: restored on rollback.
fn saved(object: &Value) -> Value {
    json!({
        "template": object.pointer("/spec/template").cloned().unwrap_or(Value::Null),
        "replicas": object.pointer("/spec/replicas").cloned().unwrap_or(Value::Null),
        "paused": object.pointer("/spec/paused").cloned().unwrap_or(Value::Bool(false)),
    })
}

/// Puts a workload's template, replicas and paused flag back as saved.
fn restore(workload: &Workload, before: &Value, timeout: Duration) -> Result<String, Error> {
    let operations = json!([
        {"op": "replace", "path": "/spec/template", "value": before["template"]},
        {"op": "add", "path": "/spec/replicas", "value": before["replicas"]},
        {"op": "add", "path": "/spec/paused", "value": before["paused"]},
    ]);
    kube::patch(&workload.object, PatchKind::Json, &operations)?;
    if before["paused"] == Value::Bool(true) {
        return Ok(format!("{}: restored (paused)", workload.label));
    }
    let done = kube::wait_rollout(&workload.object, timeout)?;
    Ok(format!(
        "{}: restored, revision {}",
        workload.label,
        revision(&done)
    ))
}

impl Step for Rollout {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Kube];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let mut actions = Vec::new();
        for workload in workloads(params)? {
            if runbook_sdk::unresolved(&workload.label) {
                actions.push(PlannedAction::write(format!(
                    "{}, the workload known when the run gets here",
                    unknown_change(params, &workload)
                )));
                continue;
            }
            let object = kube::get_existing(&workload.object)?;
            match change(params, &workload, &object)? {
                Some((_, words)) => {
                    actions.push(PlannedAction::write(words));
                    if params.action != Action::Pause {
                        actions.push(PlannedAction::read(format!(
                            "wait up to {} for {} to roll out",
                            HumanDuration(timeout(params)),
                            workload.label
                        )));
                    }
                }
                None => actions.push(PlannedAction::read(format!(
                    "{}: already as asked",
                    workload.label
                ))),
            }
        }
        Ok(actions)
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let workloads = workloads(&params)?;
        let mut outcome_words = Vec::new();
        let mut outputs: Vec<(String, String)> = Vec::new();
        let mut changed: Vec<(&Workload, Value)> = Vec::new();
        for workload in &workloads {
            let object = kube::get_existing(&workload.object)?;
            let Some((patch, words)) = change(&params, workload, &object)? else {
                outcome_words.push(format!("{}: already as asked", workload.label));
                continue;
            };
            runbook_sdk::log::info(&words);
            // On disk before the change: if the process dies after the
            // patch, the step's next attempt finds the workload "already
            // as asked", and its rollback still restores this.
            let before = format!("before.{}", workload.label);
            runbook_sdk::log::checkpoint(&before, saved(&object).to_string())?;
            kube::patch(&workload.object, PatchKind::Strategic, &patch)?;
            outputs.push((before, saved(&object).to_string()));
            changed.push((workload, saved(&object)));
            outcome_words.push(words);
        }
        if params.action != Action::Pause {
            for workload in &workloads {
                match kube::wait_rollout(&workload.object, timeout(&params)) {
                    Ok(done) => {
                        let revision = revision(&done);
                        outputs.push((format!("revision.{}", workload.label), revision.clone()));
                        if outputs.iter().all(|(key, _)| key != "revision") {
                            outputs.push(("revision".into(), revision));
                        }
                    }
                    Err(error) => {
                        let mut undone = Vec::new();
                        for (workload, before) in &changed {
                            undone.push(match restore(workload, before, timeout(&params)) {
                                Ok(words) => words,
                                Err(undo) => {
                                    format!("{}: NOT restored: {}", workload.label, undo.message())
                                }
                            });
                        }
                        return Err(Error::failed(format!(
                            "{} did not roll out: {}; undone: {}",
                            workload.label,
                            error.message(),
                            if undone.is_empty() {
                                "nothing to undo".into()
                            } else {
                                undone.join("; ")
                            }
                        )));
                    }
                }
            }
        }
        let mut outcome = Outcome::new(outcome_words.join("; "));
        for (key, value) in outputs {
            outcome = outcome.output(key, value);
        }
        Ok(outcome)
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let mut done = Vec::new();
        for workload in workloads(&params)? {
            let Some(before) = outputs.get(&format!("before.{}", workload.label)) else {
                continue;
            };
            let before: Value = serde_json::from_str(before).map_err(|error| {
                Error::failed(format!(
                    "the saved state of {} is unreadable: {error}",
                    workload.label
                ))
            })?;
            done.push(restore(&workload, &before, timeout(&params))?);
        }
        Ok(if done.is_empty() {
            "nothing was changed".into()
        } else {
            done.join("; ")
        })
    }
}

runbook_sdk::export_step!(Rollout);
