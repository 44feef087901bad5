//! The host side of `runbook:plugin/kube`. Until a runbook can grant
//! Kubernetes access (`grants.kube`), every call is outside the step's
//! grants: it is denied with a typed error and recorded, never trapped.

use super::StepContext;
use crate::events::{Decision, EventKind};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::runbook::plugin::kube::{Condition, Host, ObjectRef, PatchKind};
use crate::plugin::state::StepState;

fn describe(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!(
            "{} {} {namespace}/{}",
            object.api_version, object.kind, object.name
        ),
        None => format!("{} {} {}", object.api_version, object.kind, object.name),
    }
}

/// Denies a Kubernetes call and records it.
fn deny(context: &StepContext, verb: &str, what: String) -> PluginError {
    let requested = format!("{verb} {what}");
    context.emit(EventKind::Denied {
        capability: "kube".into(),
        requested: requested.clone(),
        decision: Decision::Denied,
    });
    PluginError::denied(
        "kube",
        requested,
        format!(
            "step `{}` has no Kubernetes grant, and this version of runbook cannot grant one yet",
            context.step_id
        ),
    )
}

impl Host for StepState {
    async fn get(&mut self, object: ObjectRef) -> Result<String, PluginError> {
        Err(deny(&self.context, "get", describe(&object)))
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        _label_selector: Option<String>,
    ) -> Result<String, PluginError> {
        let scope = namespace.map_or_else(
            || "all namespaces".to_owned(),
            |name| format!("namespace {name}"),
        );
        Err(deny(
            &self.context,
            "list",
            format!("{api_version} {kind} in {scope}"),
        ))
    }

    async fn create(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        _body: String,
    ) -> Result<String, PluginError> {
        let scope = namespace.unwrap_or_default();
        Err(deny(
            &self.context,
            "create",
            format!("{api_version} {kind} in {scope}"),
        ))
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        _kind: PatchKind,
        _body: String,
    ) -> Result<String, PluginError> {
        Err(deny(&self.context, "patch", describe(&object)))
    }

    async fn delete(&mut self, object: ObjectRef) -> Result<(), PluginError> {
        Err(deny(&self.context, "delete", describe(&object)))
    }

    async fn wait(
        &mut self,
        object: ObjectRef,
        _condition: Condition,
        _timeout_ms: u64,
    ) -> Result<String, PluginError> {
        Err(deny(&self.context, "watch", describe(&object)))
    }
}
