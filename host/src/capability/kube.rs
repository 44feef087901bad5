//! The host side of `runbook:plugin/kube`: the grant check first
//! (namespace, resource, verb), then the call is made by the host's `kube`
//! client with the operator's kubeconfig, which never enters the sandbox.
//! While planning, writes go to the API server with `dryRun=All`: the
//! server checks them and changes nothing.
//!
//! [`access`] holds the run's connection (client and discovered kinds),
//! [`call`] the grant check and the one event of every call, [`verbs`] the
//! six calls, [`rollout`] `kubectl rollout status`'s rules (pure) and
//! [`wait`] the watch loop that applies them; [`taped`] the calls as a
//! cassette keeps them.

mod access;
mod call;
mod rollout;
pub mod taped;
mod verbs;
mod wait;

use super::{Capability, StepState, tape};
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::{self as wit_kube, Condition, Host, ObjectRef, PatchKind};
use call::Call;
use std::ops::ControlFlow;
use std::time::Duration;

/// The call to make, or the cassette's answer returned at once.
macro_rules! answered {
    ($next:expr) => {
        match $next {
            ControlFlow::Break(answer) => return answer,
            ControlFlow::Continue(call) => call,
        }
    };
}

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
/// step's grant allowed it, so no verb can run unchecked. Each passes its
/// request through the run's tape ([`tape::through`]: kept when the run
/// records) and, once granted, asks the cassette when the run replays
/// ([`Call::replay`]), before any I/O.
impl Host for StepState {
    async fn get(&mut self, object: ObjectRef) -> Result<Option<String>, PluginError> {
        let context = &self.context;
        tape::through(context, taped::Get { object }, |request| async move {
            let call = Call::on_object(context, "get", &request.object)?;
            let call = answered!(call.replay(&request));
            verbs::get(call, &request.object).await
        })
        .await
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
    ) -> Result<String, PluginError> {
        let context = &self.context;
        let request = taped::List {
            api_version,
            kind,
            namespace,
            label_selector,
        };
        tape::through(context, request, |request| async move {
            let namespace = request.namespace.as_deref();
            let requested = verbs::listed(&request.api_version, &request.kind, namespace);
            let call = Call::begin(
                context,
                "list",
                namespace,
                &request.api_version,
                &request.kind,
                requested,
            )?;
            let call = answered!(call.replay(&request));
            verbs::list(
                call,
                &request.api_version,
                &request.kind,
                namespace,
                request.label_selector.as_deref(),
            )
            .await
        })
        .await
    }

    async fn create(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        body: String,
    ) -> Result<String, PluginError> {
        let context = &self.context;
        let request = taped::Create {
            api_version,
            kind,
            namespace,
            body,
        };
        tape::through(context, request, |request| async move {
            // The namespace may be stated only in the body, and the grant
            // check needs it: reading the body changes nothing.
            let new = verbs::NewObject::parse(
                &request.api_version,
                &request.kind,
                request.namespace.clone(),
                &request.body,
            )?;
            let call = Call::begin(
                context,
                "create",
                new.namespace.as_deref(),
                &request.api_version,
                &request.kind,
                new.describe(),
            )?;
            let call = answered!(call.replay(&request));
            verbs::create(call, new).await
        })
        .await
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        kind: PatchKind,
        body: String,
    ) -> Result<String, PluginError> {
        let context = &self.context;
        let request = taped::Patch {
            object,
            patch: kind,
            body,
        };
        tape::through(context, request, |request| async move {
            let call = Call::on_object(context, "patch", &request.object)?;
            let call = answered!(call.replay(&request));
            verbs::patch(call, &request.object, request.patch, &request.body).await
        })
        .await
    }

    async fn delete(&mut self, object: ObjectRef) -> Result<bool, PluginError> {
        let context = &self.context;
        tape::through(context, taped::Delete { object }, |request| async move {
            let call = Call::on_object(context, "delete", &request.object)?;
            let call = answered!(call.replay(&request));
            verbs::delete(call, &request.object).await
        })
        .await
    }

    async fn logs(
        &mut self,
        namespace: String,
        pod: String,
        container: Option<String>,
        tail_lines: Option<u32>,
    ) -> Result<String, PluginError> {
        let context = &self.context;
        let request = taped::Logs {
            namespace,
            pod,
            container,
            tail_lines,
        };
        tape::through(context, request, |request| async move {
            let requested = format!("v1/Pod {}/{}", request.namespace, request.pod);
            let call = Call::begin(
                context,
                "logs",
                Some(&request.namespace),
                "v1",
                "Pod",
                requested,
            )?;
            let call = answered!(call.replay(&request));
            verbs::logs(
                call,
                &request.namespace,
                &request.pod,
                request.container.as_deref(),
                request.tail_lines,
            )
            .await
        })
        .await
    }

    /// Kept as one exchange, the wait's end: see [`taped`].
    async fn wait(
        &mut self,
        object: ObjectRef,
        condition: Condition,
        timeout_ms: u64,
    ) -> Result<String, PluginError> {
        let context = &self.context;
        let request = taped::Wait {
            object,
            condition,
            timeout_ms,
        };
        tape::through(context, request, |request| async move {
            let call = Call::on_object(context, "watch", &request.object)?;
            let call = answered!(call.replay(&request));
            let timeout = Duration::from_millis(request.timeout_ms);
            wait::wait(call, &request.object, &request.condition, timeout).await
        })
        .await
    }
}
