//! The three patch formats of the Kubernetes API: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and strategic merge patch, which
//! merges lists of named things (containers, env, ports) by key instead of
//! replacing them, and understands the `$patch`, `$setElementOrder` and
//! `$deleteFromPrimitiveList` directives that `kubectl` sends.

use serde_json::{Map, Value};

/// How a patch body is to be read, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchFormat {
    /// The format of a `Content-Type`.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        Some(match essence {
            "application/merge-patch+json" => PatchFormat::Merge,
            "application/json-patch+json" => PatchFormat::Json,
            "application/strategic-merge-patch+json" => PatchFormat::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchFormat::Apply,
            _ => return None,
        })
    }
}

/// Applies `patch` to `target`.
pub fn apply(format: PatchFormat, target: &mut Value, patch: &Value) -> Result<(), String> {
    match format {
        PatchFormat::Merge => {
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchFormat::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|error| format!("not a JSON patch: {error}"))?;
            json_patch::patch(target, &operations).map_err(|error| error.to_string())
        }
        PatchFormat::Strategic | PatchFormat::Apply => {
            strategic_merge(target, patch);
            Ok(())
        }
    }
}

/// The key that identifies an element of a list of objects, when every
/// element has one.
pub(crate) fn merge_key(elements: &[Value]) -> Option<&'static str> {
    ["name", "containerPort", "port", "mountPath", "ip"]
        .into_iter()
        .find(|key| {
            !elements.is_empty()
                && elements
                    .iter()
                    .all(|element| element.get(*key).is_some() || is_directive_only(element))
        })
}

fn is_directive_only(element: &Value) -> bool {
    element
        .as_object()
        .is_some_and(|object| object.keys().all(|key| key.starts_with('$')))
}

/// Strategic merge: objects merge field by field, `null` deletes, lists of
/// keyed objects merge element by element, other lists are replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_fields.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_fields.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (key, value) in patch_fields {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Value::Array(removed)) =
                (fields.get_mut(list), value)
            {
                existing.retain(|item| !removed.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                fields.remove(key);
            }
            Value::Object(_) => strategic_merge(
                fields
                    .entry(key.clone())
                    .or_insert(Value::Object(Map::new())),
                value,
            ),
            Value::Array(elements) => match (fields.get_mut(key), merge_key(elements)) {
                (Some(Value::Array(existing)), Some(merge_key)) => {
                    merge_list(existing, elements, merge_key);
                }
                _ => {
                    let kept: Vec<Value> = elements
                        .iter()
                        .filter(|element| !is_directive_only(element))
                        .cloned()
                        .collect();
                    fields.insert(key.clone(), Value::Array(kept));
                }
            },
            other => {
                fields.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, elements: &[Value], merge_key: &str) {
    for element in elements {
        let Some(key) = element.get(merge_key) else {
            continue;
        };
        let position = existing
            .iter()
            .position(|candidate| candidate.get(merge_key) == Some(key));
        let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(position), true) => {
                existing.remove(position);
            }
            (Some(position), false) => strategic_merge(&mut existing[position], element),
            (None, false) => {
                let mut added = Value::Object(Map::new());
                strategic_merge(&mut added, element);
                existing.push(added);
            }
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_set_image_changes_one_container_and_keeps_the_others() {
        let mut deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "app", "image": "app:2"}]
        }}}});
        strategic_merge(&mut deployment, &patch);
        assert_eq!(
            deployment,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "proxy:1"}
            ]}}}})
        );
    }

    #[test]
    fn a_delete_directive_removes_the_named_element_and_null_removes_a_field() {
        let mut target =
            json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "x": 1});
        strategic_merge(
            &mut target,
            &json!({"env": [{"name": "A", "$patch": "delete"}], "x": null}),
        );
        assert_eq!(target, json!({"env": [{"name": "B", "value": "2"}]}));
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced() {
        let mut target = json!({"args": ["a", "b"]});
        strategic_merge(&mut target, &json!({"args": ["c"]}));
        assert_eq!(target, json!({"args": ["c"]}));
    }

    #[test]
    fn json_patch_and_merge_patch_follow_their_rfcs() {
        let mut target = json!({"spec": {"replicas": 1, "paused": true}});
        apply(
            PatchFormat::Json,
            &mut target,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        apply(
            PatchFormat::Merge,
            &mut target,
            &json!({"spec": {"paused": null}}),
        )
        .unwrap();
        assert_eq!(target, json!({"spec": {"replicas": 3}}));
    }
}
