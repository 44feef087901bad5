//! The six calls a step can make (`get`, `list`, `create`, `patch`,
//! `delete`, `logs`), each on a [`Call`] the grant already allowed, each
//! bounded by the step's deadline and cancellation. Writes carry
//! `dryRun=All` while planning. What goes back to the guest is redacted.

use super::access::{self, api_for, api_for_object, from_kube_error};
use super::call::Call;
use crate::capability::StepContext;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::{ObjectRef, PatchKind};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;

/// The field manager the server records for every write.
const FIELD_MANAGER: &str = "runbook";

/// Gets an object; `None` when it does not exist.
pub(super) async fn get(call: Call<'_>, object: &ObjectRef) -> Result<Option<String>, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
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

/// What a `list` asks for, as the audit names it.
pub(super) fn listed(api_version: &str, kind: &str, namespace: Option<&str>) -> String {
    let scope = namespace.map_or_else(
        || "all namespaces".to_owned(),
        |name| format!("namespace {name}"),
    );
    format!("{api_version}/{kind} in {scope}")
}

/// Lists objects.
pub(super) async fn list(
    call: Call<'_>,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    label_selector: Option<&str>,
) -> Result<String, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
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

/// An object a step asks to create, read before the grant check because
/// its namespace may be stated only in the body.
pub(super) struct NewObject {
    api_version: String,
    kind: String,
    name: String,
    /// The namespace the call names, or else the body's.
    pub(super) namespace: Option<String>,
    body: Value,
}

impl NewObject {
    /// Reads the body the guest sent.
    pub(super) fn parse(
        api_version: &str,
        kind: &str,
        namespace: Option<String>,
        body: &str,
    ) -> Result<Self, PluginError> {
        let body = parse_body(body)?;
        let text = |pointer| body.pointer(pointer).and_then(Value::as_str);
        let name = text("/metadata/name")
            .unwrap_or("(generated name)")
            .to_owned();
        let namespace = namespace.or_else(|| text("/metadata/namespace").map(str::to_owned));
        Ok(NewObject {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name,
            namespace,
            body,
        })
    }

    /// The object as the audit names it.
    pub(super) fn describe(&self) -> String {
        let NewObject {
            api_version,
            kind,
            name,
            ..
        } = self;
        match &self.namespace {
            Some(namespace) => format!("{api_version}/{kind} {namespace}/{name}"),
            None => format!("{api_version}/{kind} {name}"),
        }
    }
}

/// Creates an object (with `dryRun=All` while planning).
pub(super) async fn create(call: Call<'_>, new: NewObject) -> Result<String, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
            let namespace = new.namespace.as_deref();
            let api = api_for(context, &new.api_version, &new.kind, namespace).await?;
            let object: DynamicObject = serde_json::from_value(new.body).map_err(|error| {
                PluginError::Failed(format!("not a Kubernetes object: {error}"))
            })?;
            let params = PostParams {
                dry_run: context.dry_run,
                field_manager: Some(FIELD_MANAGER.into()),
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
pub(super) async fn patch(
    call: Call<'_>,
    object: &ObjectRef,
    kind: PatchKind,
    body: &str,
) -> Result<String, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
            let patch = patch_of(kind, parse_body(body)?)?;
            let api = api_for_object(context, object).await?;
            let mut params = match kind {
                PatchKind::Apply => PatchParams::apply(FIELD_MANAGER).force(),
                _ => PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
            };
            params.dry_run = context.dry_run;
            let patched = api
                .patch(&object.name, &params, &patch)
                .await
                .map_err(|error| from_kube_error(error, "patch"))?;
            Ok(to_json(context, &patched))
        })
        .await;
    call.finish(result, |_| written(context, "patched"))
}

/// The patch of a kind the guest named, from its body.
fn patch_of(kind: PatchKind, body: Value) -> Result<Patch<Value>, PluginError> {
    Ok(match kind {
        PatchKind::Merge => Patch::Merge(body),
        PatchKind::Strategic => Patch::Strategic(body),
        PatchKind::Apply => Patch::Apply(body),
        PatchKind::Json => Patch::Json(
            serde_json::from_value(body)
                .map_err(|error| PluginError::Failed(format!("not a JSON patch: {error}")))?,
        ),
    })
}

/// Deletes an object; `false` when it was already gone.
pub(super) async fn delete(call: Call<'_>, object: &ObjectRef) -> Result<bool, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
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
pub(super) async fn logs(
    call: Call<'_>,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    tail_lines: Option<u32>,
) -> Result<String, PluginError> {
    let context = call.context;
    let result = call
        .bounded(context.deadline_for(None), async {
            let client = access::of(context)?.client().await?;
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

/// What a write did, as the audit records it.
fn written(context: &StepContext, done: &str) -> String {
    if context.dry_run {
        "accepted (dry run)".into()
    } else {
        done.into()
    }
}

/// An object as the guest receives it: JSON, with secret values redacted.
pub(super) fn to_json(context: &StepContext, object: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    context.redactor.apply(&text).into_owned()
}

fn parse_body(body: &str) -> Result<Value, PluginError> {
    serde_json::from_str(body)
        .map_err(|error| PluginError::Failed(format!("the body is not JSON: {error}")))
}
