//! The host side of `runbook:plugin/kube`: the grant check first
//! (namespace, resource, verb), then the call is made by the host's `kube`
//! client with the operator's kubeconfig, which never enters the sandbox.
//! While planning, writes go to the API server with `dryRun=All`: the
//! server checks them and changes nothing.
//!
//! [`access`] holds the run's connection (client and discovered kinds),
//! [`call`] the grant check and the one event of every call, [`verbs`] the
//! six calls, [`rollout`] `kubectl rollout status`'s rules (pure) and
//! [`wait`] the watch loop that applies them.

mod access;
mod call;
mod rollout;
mod verbs;
mod wait;

use super::{Capability, StepState};
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::{self as wit_kube, Condition, Host, ObjectRef, PatchKind};
use call::Call;
use std::time::Duration;

pub use crate::grant::KubeGrant as Grant;
pub use crate::grant::{KubeGrant, VERBS};
pub use access::KubeAccess;

/// Kubernetes calls made by the host, within granted namespaces,
/// resources and verbs.
pub const CAPABILITY: Capability = Capability {
    name: "kube",
    used_through: &["kube"],
    grant_key: "grants.kube",
    example: "grants.kube = { namespaces = [\"app\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }",
    refused_without_grant: Some("none"),
    granted: |grants| grants.kube.is_some(),
    add_to_linker,
};

/// Links `runbook:plugin/kube`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepState>) -> wasmtime::Result<()> {
    wit_kube::add_to_linker::<_, wasmtime::component::HasSelf<StepState>>(linker, |state| state)
}

/// Every function takes its [`Call`] first: a `Call` exists only once the
/// step's grant allowed it, so no verb can run unchecked.
impl Host for StepState {
    async fn get(&mut self, object: ObjectRef) -> Result<Option<String>, PluginError> {
        let call = Call::on_object(&self.context, "get", &object)?;
        verbs::get(call, &object).await
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
    ) -> Result<String, PluginError> {
        let namespace = namespace.as_deref();
        let requested = verbs::listed(&api_version, &kind, namespace);
        let call = Call::begin(
            &self.context,
            "list",
            namespace,
            &api_version,
            &kind,
            requested,
        )?;
        verbs::list(
            call,
            &api_version,
            &kind,
            namespace,
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
        // The namespace may be stated only in the body, and the grant
        // check needs it: reading the body changes nothing.
        let new = verbs::NewObject::parse(&api_version, &kind, namespace, &body)?;
        let call = Call::begin(
            &self.context,
            "create",
            new.namespace.as_deref(),
            &api_version,
            &kind,
            new.describe(),
        )?;
        verbs::create(call, new).await
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        kind: PatchKind,
        body: String,
    ) -> Result<String, PluginError> {
        let call = Call::on_object(&self.context, "patch", &object)?;
        verbs::patch(call, &object, kind, &body).await
    }

    async fn delete(&mut self, object: ObjectRef) -> Result<bool, PluginError> {
        let call = Call::on_object(&self.context, "delete", &object)?;
        verbs::delete(call, &object).await
    }

    async fn logs(
        &mut self,
        namespace: String,
        pod: String,
        container: Option<String>,
        tail_lines: Option<u32>,
    ) -> Result<String, PluginError> {
        let requested = format!("v1/Pod {namespace}/{pod}");
        let call = Call::begin(
            &self.context,
            "logs",
            Some(&namespace),
            "v1",
            "Pod",
            requested,
        )?;
        verbs::logs(call, &namespace, &pod, container.as_deref(), tail_lines).await
    }

    async fn wait(
        &mut self,
        object: ObjectRef,
        condition: Condition,
        timeout_ms: u64,
    ) -> Result<String, PluginError> {
        let call = Call::on_object(&self.context, "watch", &object)?;
        let timeout = Duration::from_millis(timeout_ms);
        wait::wait(call, &object, &condition, timeout).await
    }
}
