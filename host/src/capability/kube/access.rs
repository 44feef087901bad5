//! How the host reaches the cluster for a run: the operator's kubeconfig,
//! one client made at the first call, and the kinds discovery found. It
//! knows nothing of steps or grants; [`super::call`] checks those first.

use crate::capability::StepContext;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::ObjectRef;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

    /// The run's client, made at the first call; a kubeconfig that does
    /// not work fails every call the same way.
    pub(super) async fn client(&self) -> Result<kube::Client, PluginError> {
        let made = self
            .client
            .get_or_init(|| async {
                let config = self.config().await?;
                kube::Client::try_from(config).map_err(|error| error.to_string())
            })
            .await;
        made.clone().map_err(|reason| {
            PluginError::Failed(format!(
                "cannot reach Kubernetes: {reason} (set KUBECONFIG or pass --kube-context)"
            ))
        })
    }

    /// The client's configuration from the kubeconfig this access names.
    async fn config(&self) -> Result<kube::Config, String> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let which = self.context.as_deref().map_or_else(
            || "the current kubeconfig context".to_owned(),
            |context| format!("kubeconfig context `{context}`"),
        );
        match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|error| format!("{which} in {}: {error}", path.display()))
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|error| format!("{which}: {error}")),
            (None, None) => kube::Config::infer()
                .await
                .map_err(|error| format!("no usable kubeconfig: {error}")),
        }
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

/// The run's access, or the error a step sees when the run has none.
pub(super) fn of(context: &StepContext) -> Result<Arc<KubeAccess>, PluginError> {
    context
        .kube
        .clone()
        .ok_or_else(|| PluginError::Failed("this run has no Kubernetes access".into()))
}

/// The `Api` for an object's resource, namespaced when the resource is.
pub(super) async fn api_for(
    context: &StepContext,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<Api<DynamicObject>, PluginError> {
    let access = of(context)?;
    let client = access.client().await?;
    let (resource, namespaced) = access.resolve(&client, api_version, kind).await?;
    Ok(match (namespaced, namespace) {
        (true, Some(namespace)) => Api::namespaced_with(client, namespace, &resource),
        (true, None) | (false, _) => Api::all_with(client, &resource),
    })
}

/// The `Api` for one object's resource.
pub(super) async fn api_for_object(
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

/// The error a step sees for a failed request: the server's refusals as
/// they are, overload and server errors and lost connections as transient,
/// so the step's retry policy can try again.
pub(super) fn from_kube_error(error: kube::Error, doing: &str) -> PluginError {
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
