//! Kubernetes calls as a cassette keeps them ([`crate::capability::tape`]):
//! one request type per function of `runbook:plugin/kube`, holding what the
//! plugin sent (kind, namespace, name, body), and the answer as the plugin
//! got it (the object's JSON, kept as JSON so it can be edited; `null` for
//! a `get` of an object that does not exist; `delete`'s `true`/`false`;
//! `logs`' text). Matched on the function and the object it names.
//!
//! `wait` is one exchange: the host's watch loop runs inside the one host
//! function, and the plugin sees only how it ended (the object when the
//! condition held, or the `failed`/`timeout` error). So the cassette keeps
//! that end, not each version the watch saw: replaying the versions would
//! replay the watch's timing (streams that end, 410s, fresh gets), which
//! the plugin never saw and which would make a replay depend on how the
//! server happened to deliver them. A plugin that polls with `get` itself
//! sees each answer, and each is kept as its own exchange, in order.

use super::call::describe;
use super::verbs::{NewObject, listed};
use super::wait::condition_text;
use crate::capability::tape::Taped;
use crate::wit::runbook::plugin::kube::{Condition, ObjectRef, PatchKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `kube.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
}

/// `kube.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `None`: all namespaces.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `app=api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// `kube.create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Create {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The namespace the call names (else the body's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object as the plugin sent it (JSON when it is JSON).
    #[serde(with = "json_text")]
    pub body: String,
}

/// `kube.patch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Patch {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// `Merge`, `Strategic`, `Apply`, `Json`.
    pub patch: PatchKind,
    /// The patch as the plugin sent it (JSON when it is JSON).
    #[serde(with = "json_text")]
    pub body: String,
}

/// `kube.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delete {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
}

/// `kube.logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logs {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// One of its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Only the last lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_lines: Option<u32>,
}

/// `kube.wait`: kept as one exchange, its end (see the module's notes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wait {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// What it waits for.
    pub condition: Condition,
    /// For how long at most.
    pub timeout_ms: u64,
}

/// A JSON text kept as JSON when it is JSON (so a cassette can be read
/// and edited), as a string otherwise.
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        super::object_value(text).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Ok(super::object_text(Value::deserialize(deserializer)?))
    }
}

/// An object's JSON text as a cassette keeps it.
fn object_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// An object's JSON text back from a cassette.
fn object_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|error| error.to_string())
}

/// The `Taped` items every kube request shares: its JSON forms.
macro_rules! kept_as_json {
    () => {
        fn to_json(&self) -> Value {
            to_value(self)
        }

        fn from_json(value: Value) -> Result<Self, String> {
            from_value(value)
        }
    };
}

impl Taped for Get {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "get";
    type Answer = Option<String>;

    fn target(&self) -> String {
        describe(&self.object)
    }

    kept_as_json!();

    fn answer_to_json(answer: &Option<String>) -> Value {
        answer.as_deref().map_or(Value::Null, object_value)
    }

    fn answer_from_json(value: Value) -> Result<Option<String>, String> {
        Ok(match value {
            Value::Null => None,
            other => Some(object_text(other)),
        })
    }
}

/// The answer of a call that returns one object's (or a list's) JSON.
fn object_answer(value: Value) -> Result<String, String> {
    Ok(object_text(value))
}

impl Taped for List {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "list";
    type Answer = String;

    fn target(&self) -> String {
        let listed = listed(&self.api_version, &self.kind, self.namespace.as_deref());
        match &self.label_selector {
            Some(selector) => format!("{listed} labelled {selector}"),
            None => listed,
        }
    }

    kept_as_json!();

    fn answer_to_json(answer: &String) -> Value {
        object_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<String, String> {
        object_answer(value)
    }
}

impl Taped for Create {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "create";
    type Answer = String;

    fn target(&self) -> String {
        NewObject::parse(
            &self.api_version,
            &self.kind,
            self.namespace.clone(),
            &self.body,
        )
        .map_or_else(
            |_| {
                format!(
                    "{}/{} (a body that is not JSON)",
                    self.api_version, self.kind
                )
            },
            |new| new.describe(),
        )
    }

    kept_as_json!();

    fn answer_to_json(answer: &String) -> Value {
        object_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<String, String> {
        object_answer(value)
    }
}

impl Taped for Patch {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "patch";
    type Answer = String;

    fn target(&self) -> String {
        describe(&self.object)
    }

    kept_as_json!();

    fn answer_to_json(answer: &String) -> Value {
        object_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<String, String> {
        object_answer(value)
    }
}

impl Taped for Delete {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "delete";
    type Answer = bool;

    fn target(&self) -> String {
        describe(&self.object)
    }

    kept_as_json!();

    fn answer_to_json(answer: &bool) -> Value {
        Value::Bool(*answer)
    }

    fn answer_from_json(value: Value) -> Result<bool, String> {
        value
            .as_bool()
            .ok_or_else(|| format!("`delete` answers true or false, not {value}"))
    }
}

impl Taped for Logs {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "logs";
    type Answer = String;

    fn target(&self) -> String {
        let pod = format!("v1/Pod {}/{}", self.namespace, self.pod);
        match &self.container {
            Some(container) => format!("{pod} container {container}"),
            None => pod,
        }
    }

    kept_as_json!();

    fn answer_to_json(answer: &String) -> Value {
        Value::String(answer.clone())
    }

    fn answer_from_json(value: Value) -> Result<String, String> {
        match value {
            Value::String(text) => Ok(text),
            other => Err(format!("`logs` answers text, not {other}")),
        }
    }
}

impl Taped for Wait {
    const CAPABILITY: &'static str = "kube";
    const METHOD: &'static str = "wait";
    type Answer = String;

    fn target(&self) -> String {
        format!(
            "{} until {}",
            describe(&self.object),
            condition_text(&self.condition)
        )
    }

    kept_as_json!();

    fn answer_to_json(answer: &String) -> Value {
        object_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<String, String> {
        object_answer(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "api".into(),
        }
    }

    #[test]
    fn requests_and_answers_keep_json_as_json_and_round_trip() {
        let patch = Patch {
            object: api(),
            patch: PatchKind::Strategic,
            body: r#"{"spec":{"replicas":2}}"#.into(),
        };
        let kept = patch.to_json();
        assert_eq!(kept["name"], "api");
        assert_eq!(kept["body"]["spec"]["replicas"], 2);
        let back = Patch::from_json(kept).unwrap();
        assert_eq!(back.target(), "apps/v1/Deployment shop/api");
        assert_eq!(back.body, r#"{"spec":{"replicas":2}}"#);

        let object = r#"{"kind":"Deployment","metadata":{"name":"api"}}"#;
        let kept = Get::answer_to_json(&Some(object.into()));
        assert_eq!(kept["metadata"]["name"], "api");
        assert_eq!(
            Get::answer_from_json(kept).unwrap().as_deref(),
            Some(object)
        );
        assert_eq!(Get::answer_from_json(Value::Null).unwrap(), None);

        let wait = Wait {
            object: api(),
            condition: Condition::RolloutComplete,
            timeout_ms: 1000,
        };
        assert_eq!(
            Wait::from_json(wait.to_json()).unwrap().target(),
            "apps/v1/Deployment shop/api until rollout complete"
        );
    }
}
