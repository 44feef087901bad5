//! The host side of `runbook:plugin/kube`: the grant check first
//! (namespace, resource, verb), then the call is made by the host's `kube`
//! client with the operator's kubeconfig, which never enters the sandbox.
//! While planning, writes go to the API server with `dryRun=All`: the
//! server checks them and changes nothing.

use super::{Capability, StepContext, StepState};
use crate::events::EventKind;
pub use crate::grant::KubeGrant as Grant;
pub use crate::grant::{KubeGrant, VERBS};
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::{self as wit_kube, Condition, Host, ObjectRef, PatchKind};
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::Scope;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kubernetes calls made by the host, within granted namespaces,
/// resources and verbs.
pub const CAPABILITY: Capability = Capability {
    name: "kube",
    used_through: Some("kube"),
    grant_key: "grants.kube",
    example: "grants.kube = { namespaces = [\"app\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }",
    refused_without_grant: true,
    granted: |grants| grants.kube.is_some(),
    add_to_linker,
};

/// Links `runbook:plugin/kube`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepState>) -> wasmtime::Result<()> {
    wit_kube::add_to_linker::<_, wasmtime::component::HasSelf<StepState>>(linker, |state| state)
}

/// How the host reaches the cluster for a run: a kubeconfig context, and
/// the client and kinds once they are known.
#[derive(Default)]
pub struct KubeAccess {
    /// The kubeconfig context; `None` for the current one.
    pub context: Option<String>,
    /// A kubeconfig file instead of `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
    client: tokio::sync::OnceCell<Result<kube::Client, String>>,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KubeAccess")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl KubeAccess {
    /// Access through `context` of the operator's kubeconfig (`KUBECONFIG`
    /// or `~/.kube/config`), or the current context. Nothing is read until
    /// a step makes a call.
    pub fn new(context: Option<String>) -> Arc<Self> {
        Arc::new(KubeAccess {
            context,
            ..KubeAccess::default()
        })
    }

    /// Access through `context` (or the current one) of this kubeconfig.
    pub fn from_file(kubeconfig: std::path::PathBuf, context: Option<String>) -> Arc<Self> {
        Arc::new(KubeAccess {
            context,
            kubeconfig: Some(kubeconfig),
            ..KubeAccess::default()
        })
    }

    async fn client(&self) -> Result<kube::Client, PluginError> {
        let made = self
            .client
            .get_or_init(|| async {
                let options = kube::config::KubeConfigOptions {
                    context: self.context.clone(),
                    ..Default::default()
                };
                let which = self.context.as_deref().map_or_else(
                    || "the current kubeconfig context".to_owned(),
                    |context| format!("kubeconfig context `{context}`"),
                );
                let config = match (&self.kubeconfig, &self.context) {
                    (Some(path), _) => {
                        let file = kube::config::Kubeconfig::read_from(path)
                            .map_err(|error| format!("{}: {error}", path.display()))?;
                        kube::Config::from_custom_kubeconfig(file, &options)
                            .await
                            .map_err(|error| format!("{which} in {}: {error}", path.display()))?
                    }
                    (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                        .await
                        .map_err(|error| format!("{which}: {error}"))?,
                    (None, None) => kube::Config::infer()
                        .await
                        .map_err(|error| format!("no usable kubeconfig: {error}"))?,
                };
                kube::Client::try_from(config).map_err(|error| error.to_string())
            })
            .await;
        made.clone().map_err(|reason| {
            PluginError::Failed(format!(
                "cannot reach Kubernetes: {reason} (set KUBECONFIG or pass --kube-context)"
            ))
        })
    }

    /// The resource of an `apiVersion` and `kind`, and whether it is
    /// namespaced, from the server's discovery documents.
    async fn resolve(
        &self,
        client: &kube::Client,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), PluginError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.lock().expect("kinds lock").get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind_id = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &kind_id)
            .await
            .map_err(|error| match error {
                kube::Error::Discovery(_) => {
                    PluginError::Failed(format!("the cluster does not serve {api_version} {kind}"))
                }
                other => from_kube_error(other, &format!("discovering {api_version} {kind}")),
            })?;
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.kinds
            .lock()
            .expect("kinds lock")
            .insert(key, found.clone());
        Ok(found)
    }
}

fn from_kube_error(error: kube::Error, doing: &str) -> PluginError {
    match error {
        kube::Error::Api(status) => {
            let text = format!(
                "{doing}: {} {}: {}",
                status.code, status.reason, status.message
            );
            if status.code == 429 || status.code >= 500 {
                PluginError::Transient(text)
            } else {
                PluginError::Failed(text)
            }
        }
        other => PluginError::Transient(format!("{doing}: {other}")),
    }
}

fn describe(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!(
            "{}/{} {namespace}/{}",
            object.api_version, object.kind, object.name
        ),
        None => format!("{}/{} {}", object.api_version, object.kind, object.name),
    }
}

/// One call: what it asks and how it went, recorded once at the end.
struct Call<'a> {
    record: super::Call<'a>,
}

impl<'a> Call<'a> {
    /// Checks the grant; a refusal is evented and returned as `denied`.
    fn begin(
        context: &'a StepContext,
        verb: &'static str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
        requested: String,
    ) -> Result<Self, PluginError> {
        let refusal = match &context.grants.kube {
            None => Some((
                "no Kubernetes grant".to_owned(),
                format!(
                    "step `{}` has no Kubernetes grant; if intended, add `grants.kube = {{ namespaces = [\"{}\"], resources = [\"{api_version}/{kind}\"], verbs = [\"{verb}\"] }}`",
                    context.step_id,
                    namespace.unwrap_or("*"),
                ),
            )),
            Some(grant) => grant
                .refuses(verb, namespace, api_version, kind)
                .map(|reason| {
                    let hint = format!("{reason}; if intended, add it to the step's `grants.kube`");
                    (reason, hint)
                }),
        };
        let record = context
            .call("kube", format!("{verb} {requested}"))
            .sent_as_dry_run(context.dry_run && is_write(verb));
        if let Some((reason, hint)) = refusal {
            return Err(record.deny(reason, hint));
        }
        Ok(Call { record })
    }

    /// [`Call::begin`] for a call on one object.
    fn on_object(
        context: &'a StepContext,
        verb: &'static str,
        object: &ObjectRef,
    ) -> Result<Self, PluginError> {
        Self::begin(
            context,
            verb,
            object.namespace.as_deref(),
            &object.api_version,
            &object.kind,
            describe(object),
        )
    }

    /// Events the call's end and passes its result through.
    fn finish<T>(
        self,
        result: Result<T, PluginError>,
        outcome: impl FnOnce(&T) -> String,
    ) -> Result<T, PluginError> {
        let summary = match &result {
            Ok(value) => outcome(value),
            Err(error) => error.describe(),
        };
        self.record.finish(None, summary, result.is_ok());
        result
    }
}

/// What a write did, as the audit records it.
fn written(context: &StepContext, done: &str) -> String {
    if context.dry_run {
        "accepted (dry run)".into()
    } else {
        done.into()
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "patch" | "delete")
}

/// The `Api` for an object's resource, namespaced when the resource is.
async fn api_for(
    context: &StepContext,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>, PluginError> {
    let access = context
        .kube
        .clone()
        .ok_or_else(|| PluginError::Failed("this run has no Kubernetes access".into()))?;
    let client = access.client().await?;
    let (resource, namespaced) = access.resolve(&client, api_version, kind).await?;
    Ok(match (namespaced, namespace) {
        (true, Some(namespace)) => Api::namespaced_with(client, namespace, &resource),
        (true, None) => Api::all_with(client, &resource),
        (false, _) => Api::all_with(client, &resource),
    })
}

/// The `Api` for one object's resource.
async fn api_for_object(
    context: &StepContext,
    object: &ObjectRef,
) -> Result<Api<DynamicObject>, PluginError> {
    api_for(
        context,
        &object.api_version,
        &object.kind,
        object.namespace.as_deref(),
    )
    .await
}

/// Runs `work` unless the run is cancelled or the step's time is up.
async fn bounded<T>(
    context: &StepContext,
    deadline: tokio::time::Instant,
    work: impl std::future::Future<Output = Result<T, PluginError>>,
) -> Result<T, PluginError> {
    tokio::select! {
        result = work => result,
        () = context.cancel.cancelled() => Err(PluginError::Cancelled),
        () = tokio::time::sleep_until(deadline) => Err(PluginError::Timeout("the Kubernetes call did not finish in time".into())),
    }
}

fn to_json(context: &StepContext, object: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    context.redactor.apply(&text).into_owned()
}

fn parse_body(body: &str) -> Result<Value, PluginError> {
    serde_json::from_str(body)
        .map_err(|error| PluginError::Failed(format!("the body is not JSON: {error}")))
}

/// Gets an object; `None` when it does not exist.
pub async fn get(context: &StepContext, object: &ObjectRef) -> Result<Option<String>, PluginError> {
    let call = Call::on_object(context, "get", object)?;
    let result = bounded(context, context.deadline_for(None), async {
        let api = api_for_object(context, object).await?;
        let found = api
            .get_opt(&object.name)
            .await
            .map_err(|error| from_kube_error(error, "get"))?;
        Ok(found.map(|found| to_json(context, &found)))
    })
    .await;
    call.finish(result, |found| {
        if found.is_some() {
            "found".into()
        } else {
            "not found".into()
        }
    })
}

/// Lists objects.
pub async fn list(
    context: &StepContext,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    label_selector: Option<&str>,
) -> Result<String, PluginError> {
    let scope = namespace.map_or_else(
        || "all namespaces".to_owned(),
        |name| format!("namespace {name}"),
    );
    let call = Call::begin(
        context,
        "list",
        namespace,
        api_version,
        kind,
        format!("{api_version}/{kind} in {scope}"),
    )?;
    let result = bounded(context, context.deadline_for(None), async {
        let api = api_for(context, api_version, kind, namespace).await?;
        let mut params = ListParams::default();
        if let Some(selector) = label_selector {
            params = params.labels(selector);
        }
        let found = api
            .list(&params)
            .await
            .map_err(|error| from_kube_error(error, "list"))?;
        Ok((found.items.len(), to_json(context, &found)))
    })
    .await;
    call.finish(result, |(count, _)| format!("{count} found"))
        .map(|(_, text)| text)
}

/// Creates an object (with `dryRun=All` while planning).
pub async fn create(
    context: &StepContext,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    body: &str,
) -> Result<String, PluginError> {
    let body = parse_body(body)?;
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(generated name)")
        .to_owned();
    let stated = body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = namespace.or(stated.as_deref());
    let requested = match namespace {
        Some(namespace) => format!("{api_version}/{kind} {namespace}/{name}"),
        None => format!("{api_version}/{kind} {name}"),
    };
    let call = Call::begin(context, "create", namespace, api_version, kind, requested)?;
    let result = bounded(context, context.deadline_for(None), async {
        let api = api_for(context, api_version, kind, namespace).await?;
        let object: DynamicObject = serde_json::from_value(body)
            .map_err(|error| PluginError::Failed(format!("not a Kubernetes object: {error}")))?;
        let params = PostParams {
            dry_run: context.dry_run,
            field_manager: Some("runbook".into()),
        };
        let created = api
            .create(&params, &object)
            .await
            .map_err(|error| from_kube_error(error, "create"))?;
        Ok(to_json(context, &created))
    })
    .await;
    call.finish(result, |_| written(context, "created"))
}

/// Patches an object (with `dryRun=All` while planning).
pub async fn patch(
    context: &StepContext,
    object: &ObjectRef,
    kind: PatchKind,
    body: &str,
) -> Result<String, PluginError> {
    let call = Call::on_object(context, "patch", object)?;
    let result = bounded(context, context.deadline_for(None), async {
        let body = parse_body(body)?;
        let api = api_for_object(context, object).await?;
        let mut params = match kind {
            PatchKind::Apply => PatchParams::apply("runbook").force(),
            _ => PatchParams {
                field_manager: Some("runbook".into()),
                ..PatchParams::default()
            },
        };
        params.dry_run = context.dry_run;
        let patch = match kind {
            PatchKind::Merge => Patch::Merge(body),
            PatchKind::Strategic => Patch::Strategic(body),
            PatchKind::Apply => Patch::Apply(body),
            PatchKind::Json => Patch::Json(
                serde_json::from_value(body)
                    .map_err(|error| PluginError::Failed(format!("not a JSON patch: {error}")))?,
            ),
        };
        let patched = api
            .patch(&object.name, &params, &patch)
            .await
            .map_err(|error| from_kube_error(error, "patch"))?;
        Ok(to_json(context, &patched))
    })
    .await;
    call.finish(result, |_| written(context, "patched"))
}

/// Deletes an object; `false` when it was already gone.
pub async fn delete(context: &StepContext, object: &ObjectRef) -> Result<bool, PluginError> {
    let call = Call::on_object(context, "delete", object)?;
    let result = bounded(context, context.deadline_for(None), async {
        let api = api_for_object(context, object).await?;
        let params = DeleteParams {
            dry_run: context.dry_run,
            ..DeleteParams::background()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(error) => Err(from_kube_error(error, "delete")),
        }
    })
    .await;
    call.finish(result, |existed| match (existed, context.dry_run) {
        (true, true) => "accepted (dry run)".into(),
        (true, false) => "deleted".into(),
        (false, _) => "already absent".into(),
    })
}

/// A pod's logs.
pub async fn logs(
    context: &StepContext,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    tail_lines: Option<u32>,
) -> Result<String, PluginError> {
    let call = Call::begin(
        context,
        "logs",
        Some(namespace),
        "v1",
        "Pod",
        format!("v1/Pod {namespace}/{pod}"),
    )?;
    let result = bounded(context, context.deadline_for(None), async {
        let access = context
            .kube
            .clone()
            .ok_or_else(|| PluginError::Failed("this run has no Kubernetes access".into()))?;
        let client = access.client().await?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, namespace);
        let params = kube::api::LogParams {
            container: container.map(str::to_owned),
            tail_lines: tail_lines.map(i64::from),
            ..kube::api::LogParams::default()
        };
        let text = pods
            .logs(pod, &params)
            .await
            .map_err(|error| from_kube_error(error, "logs"))?;
        Ok(context.redactor.apply(&text).into_owned())
    })
    .await;
    call.finish(result, |text| format!("{} lines", text.lines().count()))
}

/// Where a wait stands after looking at the object.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// The condition holds.
    Done,
    /// Not yet, and why.
    Waiting(String),
    /// It will not hold (a rollout past its progress deadline, a failed Job).
    Failed(String),
}

fn field(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn status_condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether a Deployment or StatefulSet finished rolling out, by the rules
/// `kubectl rollout status` uses.
pub fn rollout_progress(kind: &str, object: &Value) -> Progress {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let generation = field(object, "/metadata/generation");
    let observed = field(object, "/status/observedGeneration");
    if observed < generation {
        return Progress::Waiting(format!(
            "waiting for the {kind} controller to see generation {generation}"
        ));
    }
    let desired = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = field(object, "/status/updatedReplicas");
    match kind {
        "Deployment" => {
            if let Some(progressing) = status_condition(object, "Progressing")
                && progressing.get("reason").and_then(Value::as_str)
                    == Some("ProgressDeadlineExceeded")
            {
                return Progress::Failed(format!(
                    "deployment \"{name}\" exceeded its progress deadline"
                ));
            }
            let total = field(object, "/status/replicas");
            let available = field(object, "/status/availableReplicas");
            if updated < desired {
                Progress::Waiting(format!("{updated} of {desired} new replicas updated"))
            } else if total > updated {
                Progress::Waiting(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < updated {
                Progress::Waiting(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Progress::Done
            }
        }
        "StatefulSet" => {
            let ready = field(object, "/status/readyReplicas");
            let current = object
                .pointer("/status/currentRevision")
                .and_then(Value::as_str);
            let update = object
                .pointer("/status/updateRevision")
                .and_then(Value::as_str);
            if ready < desired {
                Progress::Waiting(format!("{ready} of {desired} pods ready"))
            } else if updated < desired || current != update {
                Progress::Waiting(format!("{updated} of {desired} pods updated"))
            } else {
                Progress::Done
            }
        }
        other => Progress::Failed(format!(
            "rollout-complete applies to Deployments and StatefulSets, not {other}"
        )),
    }
}

/// Whether `condition` holds for the object as it is now (`None`: gone).
pub fn progress_of(kind: &str, condition: &Condition, object: Option<&Value>) -> Progress {
    match (condition, object) {
        (Condition::Deleted, None) => Progress::Done,
        (Condition::Deleted, Some(_)) => Progress::Waiting("still exists".into()),
        (_, None) => Progress::Failed(format!("the {kind} does not exist")),
        (Condition::RolloutComplete, Some(object)) => rollout_progress(kind, object),
        (Condition::StatusCondition((wanted, value)), Some(object)) => {
            if status_condition(object, wanted)
                .and_then(|found| found.get("status"))
                .and_then(Value::as_str)
                == Some(value.as_str())
            {
                return Progress::Done;
            }
            if wanted != "Failed"
                && let Some(failed) = status_condition(object, "Failed")
                && failed.get("status").and_then(Value::as_str) == Some("True")
            {
                let message = failed
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                return Progress::Failed(format!("the {kind} failed: {message}"));
            }
            Progress::Waiting(format!("waiting for condition {wanted}={value}"))
        }
    }
}

/// Waits on the host, watching the object, until the condition holds.
pub async fn wait(
    context: &StepContext,
    object: &ObjectRef,
    condition: &Condition,
    timeout: Duration,
) -> Result<String, PluginError> {
    let call = Call::on_object(context, "watch", object)?;
    let deadline = context.deadline_for(Some(timeout));
    let result = bounded(context, deadline, watch_until(context, object, condition)).await;
    let result = match result {
        Err(PluginError::Timeout(_)) => Err(PluginError::Timeout(format!(
            "{} did not reach {} within {}",
            describe(object),
            condition_text(condition),
            humantime::format_duration(timeout)
        ))),
        other => other,
    };
    call.finish(result, |_| format!("{} reached", condition_text(condition)))
}

fn condition_text(condition: &Condition) -> String {
    match condition {
        Condition::RolloutComplete => "rollout complete".into(),
        Condition::StatusCondition((kind, status)) => format!("condition {kind}={status}"),
        Condition::Deleted => "deleted".into(),
    }
}

async fn watch_until(
    context: &StepContext,
    object: &ObjectRef,
    condition: &Condition,
) -> Result<String, PluginError> {
    let api = api_for_object(context, object).await?;
    let mut last_said = String::new();
    loop {
        let current = api
            .get_opt(&object.name)
            .await
            .map_err(|error| from_kube_error(error, "get"))?;
        let revision = current
            .as_ref()
            .and_then(|found| found.metadata.resource_version.clone())
            .unwrap_or_else(|| "0".into());
        let mut seen = current.map(|found| serde_json::to_value(found).unwrap_or_default());
        if let Some(settled) = settle(
            context,
            object,
            condition,
            seen.as_ref(),
            &mut last_said,
            true,
        ) {
            return settled;
        }
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", object.name))
            .timeout(290);
        let mut stream = match api.watch(&params, &revision).await {
            Ok(stream) => stream.boxed(),
            Err(error) => return Err(from_kube_error(error, "watch")),
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(found) | WatchEvent::Modified(found)) => {
                    seen = Some(serde_json::to_value(found).unwrap_or_default());
                }
                Ok(WatchEvent::Deleted(_)) => seen = None,
                Ok(WatchEvent::Bookmark(_)) => continue,
                // 410 Gone and friends: start again from a fresh get.
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            }
            if let Some(settled) = settle(
                context,
                object,
                condition,
                seen.as_ref(),
                &mut last_said,
                false,
            ) {
                return settled;
            }
        }
    }
}

/// The end of a wait, if the object as seen ends it; otherwise says what
/// it waits for (once per change). A plan changed nothing, so while
/// planning the first look ends the wait.
fn settle(
    context: &StepContext,
    object: &ObjectRef,
    condition: &Condition,
    seen: Option<&Value>,
    last_said: &mut String,
    first_look: bool,
) -> Option<Result<String, PluginError>> {
    let found = || seen.map_or_else(|| "null".into(), |found| to_json(context, found));
    match progress_of(&object.kind, condition, seen) {
        Progress::Done => Some(Ok(found())),
        Progress::Failed(reason) => Some(Err(PluginError::Failed(reason))),
        Progress::Waiting(_) if context.dry_run && first_look => Some(Ok(found())),
        Progress::Waiting(reason) => {
            if reason != *last_said {
                context.emit(EventKind::Progress {
                    message: format!("{}: {reason}", object.name),
                    fraction: None,
                });
                *last_said = reason;
            }
            None
        }
    }
}

impl Host for StepState {
    async fn get(&mut self, object: ObjectRef) -> Result<Option<String>, PluginError> {
        get(&self.context, &object).await
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
    ) -> Result<String, PluginError> {
        list(
            &self.context,
            &api_version,
            &kind,
            namespace.as_deref(),
            label_selector.as_deref(),
        )
        .await
    }

    async fn create(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        body: String,
    ) -> Result<String, PluginError> {
        create(
            &self.context,
            &api_version,
            &kind,
            namespace.as_deref(),
            &body,
        )
        .await
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        kind: PatchKind,
        body: String,
    ) -> Result<String, PluginError> {
        patch(&self.context, &object, kind, &body).await
    }

    async fn delete(&mut self, object: ObjectRef) -> Result<bool, PluginError> {
        delete(&self.context, &object).await
    }

    async fn logs(
        &mut self,
        namespace: String,
        pod: String,
        container: Option<String>,
        tail_lines: Option<u32>,
    ) -> Result<String, PluginError> {
        logs(
            &self.context,
            &namespace,
            &pod,
            container.as_deref(),
            tail_lines,
        )
        .await
    }

    async fn wait(
        &mut self,
        object: ObjectRef,
        condition: Condition,
        timeout_ms: u64,
    ) -> Result<String, PluginError> {
        wait(
            &self.context,
            &object,
            &condition,
            Duration::from_millis(timeout_ms),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant() -> KubeGrant {
        KubeGrant {
            namespaces: vec!["riskcast-prod".into()],
            resources: vec!["apps/v1/Deployment".into()],
            verbs: vec!["get".into(), "patch".into(), "watch".into()],
        }
    }

    #[test]
    fn a_call_inside_the_grant_is_allowed() {
        assert_eq!(
            grant().refuses("patch", Some("riskcast-prod"), "apps/v1", "Deployment"),
            None
        );
    }

    #[test]
    fn another_namespace_verb_or_resource_is_refused_and_named() {
        let refused = |verb, namespace, api_version, kind| {
            grant().refuses(verb, namespace, api_version, kind).unwrap()
        };
        assert!(
            refused("get", Some("kube-system"), "apps/v1", "Deployment")
                .contains("namespace `kube-system`")
        );
        assert!(
            refused("delete", Some("riskcast-prod"), "apps/v1", "Deployment")
                .contains("verb `delete`")
        );
        assert!(
            refused("get", Some("riskcast-prod"), "v1", "Secret").contains("resource `v1/Secret`")
        );
        assert!(refused("get", None, "apps/v1", "Deployment").contains("namespaces = [\"*\"]"));
    }

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "api", "generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn a_rollout_is_complete_only_when_observed_updated_and_available() {
        let waiting = |status| {
            matches!(
                rollout_progress("Deployment", &deployment(2, status)),
                Progress::Waiting(_)
            )
        };
        assert!(waiting(
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2})
        ));
        assert_eq!(
            rollout_progress(
                "Deployment",
                &deployment(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
                )
            ),
            Progress::Done
        );
    }

    #[test]
    fn a_rollout_past_its_progress_deadline_fails() {
        let stalled = deployment(
            2,
            json!({"observedGeneration": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert!(
            matches!(rollout_progress("Deployment", &stalled), Progress::Failed(reason) if reason.contains("progress deadline"))
        );
    }

    #[test]
    fn waiting_for_a_condition_stops_early_when_the_object_failed() {
        let job = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "backoff limit"}]}});
        let complete = Condition::StatusCondition(("Complete".into(), "True".into()));
        assert!(
            matches!(progress_of("Job", &complete, Some(&job)), Progress::Failed(reason) if reason.contains("backoff limit"))
        );
        assert_eq!(
            progress_of("Job", &Condition::Deleted, None),
            Progress::Done
        );
    }
}
