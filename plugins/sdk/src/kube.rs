//! Kubernetes through the host. The host makes each call with the
//! operator's kubeconfig, only within the step's `grants.kube`, and waits
//! for rollouts and conditions on its side (watching), so a plugin never
//! polls. Objects travel as `serde_json::Value`.

use crate::Error;
use crate::bindings::runbook::plugin::kube as host;
use serde_json::Value;
use std::time::Duration;

pub use host::PatchKind;

/// Which object: `apps/v1` `Deployment` `shop`/`api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `apps/v1`, `v1`, `networking.istio.io/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// A namespaced object.
    pub fn new(
        api_version: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    fn host(&self) -> host::ObjectRef {
        host::ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(formatter, "{} {namespace}/{}", self.kind, self.name),
            None => write!(formatter, "{} {}", self.kind, self.name),
        }
    }
}

fn parse(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|error| {
        Error::failed(format!(
            "the API server sent something that is not JSON: {error}"
        ))
    })
}

/// The object, or `None` when it does not exist.
pub fn get(object: &ObjectRef) -> Result<Option<Value>, Error> {
    host::get(&object.host())?
        .map(|text| parse(&text))
        .transpose()
}

/// The object; a failure naming it when it does not exist.
pub fn get_existing(object: &ObjectRef) -> Result<Value, Error> {
    get(object)?.ok_or_else(|| Error::failed(format!("{object} does not exist")))
}

/// The items of a list, in a namespace, optionally by label selector.
pub fn list(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    label_selector: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let list = parse(&host::list(api_version, kind, namespace, label_selector)?)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Creates an object from its JSON.
pub fn create(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    body: &Value,
) -> Result<Value, Error> {
    parse(&host::create(
        api_version,
        kind,
        namespace,
        &body.to_string(),
    )?)
}

/// Patches an object.
pub fn patch(object: &ObjectRef, kind: PatchKind, body: &Value) -> Result<Value, Error> {
    parse(&host::patch(&object.host(), kind, &body.to_string())?)
}

/// Deletes an object; `false` when it was already gone.
pub fn delete(object: &ObjectRef) -> Result<bool, Error> {
    host::delete(&object.host())
}

fn millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

/// A pod's logs: the last `tail_lines` lines, or all.
pub fn logs(
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    tail_lines: Option<u32>,
) -> Result<String, Error> {
    host::logs(namespace, pod, container, tail_lines)
}

/// Waits until a Deployment, DaemonSet or StatefulSet finished rolling
/// out (fails at a Deployment's progress deadline, or at once for an
/// `OnDelete` update strategy); returns the object.
pub fn wait_rollout(object: &ObjectRef, timeout: Duration) -> Result<Value, Error> {
    parse(&host::wait(
        &object.host(),
        &host::Condition::RolloutComplete,
        millis(timeout),
    )?)
}

/// Waits until `status.conditions` has `kind` with `status` (fails early
/// when a `Failed` condition turns true); returns the object.
pub fn wait_condition(
    object: &ObjectRef,
    kind: &str,
    status: &str,
    timeout: Duration,
) -> Result<Value, Error> {
    let condition = host::Condition::StatusCondition((kind.to_owned(), status.to_owned()));
    parse(&host::wait(&object.host(), &condition, millis(timeout))?)
}

/// Waits until the object is gone.
pub fn wait_deleted(object: &ObjectRef, timeout: Duration) -> Result<(), Error> {
    host::wait(&object.host(), &host::Condition::Deleted, millis(timeout)).map(|_| ())
}
