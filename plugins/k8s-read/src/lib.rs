//! `k8s-read`: reads one Kubernetes object and returns the fields the
//! runbook names (RFC 6901 JSON pointers) as outputs, so later steps
//! compute from the live state (which colour a Service serves) rather than
//! from a value someone typed. Read-only: it changes nothing, and `plan`
//! reads too.

use runbook_sdk::kube::{self, ObjectRef};
use runbook_sdk::serde_json::Value;
use runbook_sdk::{Capability, Deserialize, Error, JsonSchema, Outcome, PlannedAction, Step};
use std::collections::BTreeMap;

struct Read;

/// Which object, and which of its fields become outputs.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The object: `{ api_version = "v1", kind = "Service", namespace =
    /// "shop", name = "api" }`.
    object: Object,
    /// Output name → a JSON pointer into the object
    /// (`"/spec/selector/colour"`), or `{ pointer, default }` for a field
    /// that may be absent.
    outputs: BTreeMap<String, Field>,
}

/// One object of the cluster.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Object {
    /// `v1`, `apps/v1`, `networking.istio.io/v1`.
    api_version: String,
    /// `Service`, `Deployment`.
    kind: String,
    /// Its namespace; none for a cluster-scoped object.
    #[serde(default)]
    namespace: Option<String>,
    /// `metadata.name`.
    name: String,
}

/// Where an output comes from.
#[derive(Deserialize, JsonSchema)]
#[serde(
    crate = "runbook_sdk::serde",
    untagged,
    expecting = "a JSON pointer like \"/spec/selector/colour\", or { pointer = \"...\", default = \"...\" }"
)]
#[schemars(crate = "runbook_sdk::schemars")]
enum Field {
    /// A JSON pointer; the field must exist.
    Pointer(String),
    /// A JSON pointer, and the value when the field is absent.
    WithDefault {
        /// The JSON pointer.
        pointer: String,
        /// The output's value when the object has no such field.
        default: String,
    },
}

impl Field {
    fn pointer(&self) -> &str {
        match self {
            Field::Pointer(pointer) | Field::WithDefault { pointer, .. } => pointer,
        }
    }

    fn default(&self) -> Option<&str> {
        match self {
            Field::Pointer(_) => None,
            Field::WithDefault { default, .. } => Some(default),
        }
    }
}

impl Object {
    fn reference(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether a part is a placeholder (`validate`, `plan`): then the
    /// object is not known until the run.
    fn unresolved(&self) -> bool {
        [&self.api_version, &self.kind, &self.name]
            .into_iter()
            .chain(&self.namespace)
            .any(|part| runbook_sdk::unresolved(part))
    }
}

/// Why `pointer` is not an RFC 6901 JSON pointer, if it is not.
fn pointer_problem(pointer: &str) -> Option<String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Some(format!(
            "`{pointer}` is not a JSON pointer: start it with `/`, like `/spec/selector/colour`"
        ));
    }
    let mut rest = pointer;
    while let Some(at) = rest.find('~') {
        if !matches!(rest.as_bytes().get(at + 1), Some(b'0' | b'1')) {
            return Some(format!(
                "`{pointer}`: `~` starts an escape, `~0` for `~` and `~1` for `/` (RFC 6901)"
            ));
        }
        rest = &rest[at + 2..];
    }
    None
}

/// Whether `name` can be read as `steps.ID.outputs.NAME`.
fn output_name_is_valid(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == '-')
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.outputs.is_empty() {
        return Err(Error::invalid_param(
            "outputs",
            "name at least one output, like `outputs = { colour = \"/spec/selector/colour\" }`",
        ));
    }
    for (name, field) in &params.outputs {
        if !output_name_is_valid(name) {
            return Err(Error::invalid_param(
                format!("outputs.{name}"),
                "an output name is read as `steps.ID.outputs.NAME`: letters, digits, `_` and `-`, starting with a letter",
            ));
        }
        let pointer = field.pointer();
        if runbook_sdk::unresolved(pointer) {
            continue;
        }
        if let Some(problem) = pointer_problem(pointer) {
            return Err(Error::invalid_param(format!("outputs.{name}"), problem));
        }
    }
    Ok(())
}

/// A field's value as an output: text as it is, numbers and booleans
/// written out, objects and lists as JSON; `null` counts as absent.
fn as_output(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// What the object has at the deepest part of `pointer` that exists, for
/// the message when the field itself is absent.
fn nearest(object: &Value, pointer: &str) -> String {
    let mut parent = pointer;
    while let Some((head, _)) = parent.rsplit_once('/') {
        parent = head;
        if let Some(found) = object.pointer(parent) {
            let has = match found {
                Value::Object(map) => map.keys().cloned().collect::<Vec<_>>().join(", "),
                Value::Array(items) => format!("{} items", items.len()),
                other => other.to_string(),
            };
            let at = if parent.is_empty() { "/" } else { parent };
            return format!(" (at `{at}` it has: {has})");
        }
    }
    String::new()
}

/// The outputs read from `object`, in the order of their names.
fn read_outputs(
    params: &Params,
    object_ref: &ObjectRef,
    object: &Value,
) -> Result<Vec<(String, String)>, Error> {
    params
        .outputs
        .iter()
        .map(|(name, field)| {
            let pointer = field.pointer();
            let value = object
                .pointer(pointer)
                .and_then(as_output)
                .or_else(|| field.default().map(str::to_owned));
            value.map(|value| (name.clone(), value)).ok_or_else(|| {
                Error::failed(format!(
                    "{object_ref} has no `{pointer}` for output `{name}`{}: point at a field it has, or give the output a default (`{name} = {{ pointer = \"{pointer}\", default = \"...\" }}`)",
                    nearest(object, pointer)
                ))
            })
        })
        .collect()
}

/// Reads the object and its outputs.
fn read(params: &Params) -> Result<(ObjectRef, Vec<(String, String)>), Error> {
    let object_ref = params.object.reference();
    let object = kube::get(&object_ref)?.ok_or_else(|| {
        Error::failed(format!(
            "{object_ref} does not exist: check `object` (its api_version, kind, namespace and name)"
        ))
    })?;
    let outputs = read_outputs(params, &object_ref, &object)?;
    Ok((object_ref, outputs))
}

fn words(outputs: &[(String, String)]) -> String {
    outputs
        .iter()
        .map(|(name, value)| format!("{name} = {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Step for Read {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Kube];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        if params.object.unresolved() {
            return Ok(vec![PlannedAction::read(format!(
                "read {} (known when the run gets here)",
                params.object.reference()
            ))]);
        }
        let (object_ref, outputs) = read(params)?;
        Ok(vec![PlannedAction::read(format!(
            "read {object_ref}: now {} (read again when the step runs)",
            words(&outputs)
        ))])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let (object_ref, outputs) = read(&params)?;
        let mut outcome = Outcome::new(format!("read {object_ref}: {}", words(&outputs)));
        for (name, value) in outputs {
            outcome = outcome.output(name, value);
        }
        Ok(outcome)
    }
}

runbook_sdk::export_step!(Read);

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_sdk::serde_json::json;

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(pointer_problem("/spec/selector/colour"), None);
        assert_eq!(pointer_problem(""), None);
        assert_eq!(
            pointer_problem("/metadata/annotations/deployment.kubernetes.io~1revision"),
            None
        );
        assert!(
            pointer_problem("spec/selector")
                .unwrap()
                .contains("start it with `/`")
        );
        assert!(pointer_problem("/a~2b").unwrap().contains("`~0` for `~`"));
        assert!(pointer_problem("/a~").unwrap().contains("`~1` for `/`"));
    }

    #[test]
    fn output_names_are_what_an_expression_can_name() {
        assert!(output_name_is_valid("colour"));
        assert!(output_name_is_valid("ready_replicas-2"));
        assert!(!output_name_is_valid("2nd"));
        assert!(!output_name_is_valid("a.b"));
        assert!(!output_name_is_valid(""));
    }

    #[test]
    fn an_absent_field_is_named_with_what_its_parent_has() {
        let object = json!({"spec": {"selector": {"app": "api", "version": "blue"}}});
        assert_eq!(
            nearest(&object, "/spec/selector/colour"),
            " (at `/spec/selector` it has: app, version)"
        );
        assert_eq!(nearest(&object, "/status/x"), " (at `/` it has: spec)");
        assert_eq!(as_output(&json!(3)).as_deref(), Some("3"));
        assert_eq!(as_output(&json!({"a": 1})).as_deref(), Some("{\"a\":1}"));
        assert_eq!(as_output(&Value::Null), None);
    }
}
