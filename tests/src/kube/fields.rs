//! Server-side apply's field management: the fields each applier's
//! configuration sets, kept in `metadata.managedFields` in the API's
//! `FieldsV1` form, so that an apply removes what the same manager applied
//! before and applies no longer, while what other appliers own stays.
//! Only appliers are tracked: `PUT` and the other patch types take no
//! ownership, and every apply is taken as forced (no conflicts).

use super::patch::merge_key;
use serde_json::{Map, Value, json};

/// A field set: `f:NAME` for a field, `k:{"KEY":VALUE}` for an element of
/// a keyed list, `.` for the element itself; `{}` below a field that is
/// owned whole (a scalar, an atomic list).
pub type FieldSet = Map<String, Value>;

/// Metadata the server sets, which an applied configuration cannot.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// An apply request's body without what the server owns (status and
/// server-set metadata): what is merged into the object.
pub fn applied_config(body: &Value) -> Value {
    let mut applied = body.clone();
    if let Some(fields) = applied.as_object_mut() {
        fields.remove("status");
        if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
            for field in SERVER_METADATA {
                metadata.remove(*field);
            }
        }
    }
    applied
}

/// The fields an applied configuration sets, without those that name the
/// object (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`).
pub fn field_set(applied: &Value) -> FieldSet {
    let mut set = fields_of(applied);
    for field in ["f:apiVersion", "f:kind", "f:status"] {
        set.remove(field);
    }
    if let Some(Value::Object(metadata)) = set.get_mut("f:metadata") {
        metadata.remove("f:name");
        metadata.remove("f:namespace");
        if metadata.is_empty() {
            set.remove("f:metadata");
        }
    }
    set
}

fn fields_of(value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    if let Value::Object(fields) = value {
        for (key, child) in fields {
            if !key.starts_with('$') {
                set.insert(format!("f:{key}"), Value::Object(members(child)));
            }
        }
    }
    set
}

/// What a field's value sets below it: an object's fields, a keyed list's
/// elements (merged by key, as strategic merge does); nothing for a scalar
/// or a list without keys, which is owned whole.
fn members(value: &Value) -> FieldSet {
    match value {
        Value::Object(_) => fields_of(value),
        Value::Array(items) => {
            let Some(key) = merge_key(items) else {
                return FieldSet::new();
            };
            let mut set = FieldSet::new();
            for item in items {
                let Some(id) = item.get(key) else {
                    continue;
                };
                let mut element = fields_of(item);
                element.insert(".".to_owned(), Value::Object(FieldSet::new()));
                set.insert(element_key(key, id), Value::Object(element));
            }
            set
        }
        _ => FieldSet::new(),
    }
}

/// `k:{"name":"app"}`.
fn element_key(key: &str, id: &Value) -> String {
    let mut identity = Map::new();
    identity.insert(key.to_owned(), id.clone());
    format!("k:{}", Value::Object(identity))
}

fn is_apply_of(entry: &Value, manager: &str) -> bool {
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && entry.get("operation").and_then(Value::as_str) == Some("Apply")
}

/// The field sets of `object`'s `managedFields`: what `manager` applied
/// last, and what every other entry owns.
pub fn owned(object: &Value, manager: &str) -> (FieldSet, Vec<FieldSet>) {
    let mut mine = FieldSet::new();
    let mut others = Vec::new();
    let entries = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for entry in entries {
        let set = entry
            .get("fieldsV1")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if is_apply_of(entry, manager) {
            mine = set;
        } else {
            others.push(set);
        }
    }
    (mine, others)
}

/// Removes from `object` what `old` (the manager's last applied set, at
/// this place) has and `new` (its set now) has not, unless one of
/// `others` (the other managers' sets, at this place) owns it: a field
/// owned whole, or an element of a keyed list; below a field owned in
/// part, what the manager owned, and the field itself once it is empty.
pub fn remove_dropped(
    object: &mut Value,
    old: &FieldSet,
    new: Option<&FieldSet>,
    others: &[&FieldSet],
) {
    for (key, old_child) in old {
        let Value::Object(old_child) = old_child else {
            continue;
        };
        let new_child = new.and_then(|new| new.get(key)).and_then(Value::as_object);
        let other_children: Vec<&FieldSet> = others
            .iter()
            .filter_map(|other| other.get(key).and_then(Value::as_object))
            .collect();
        let dropped = new_child.is_none() && other_children.is_empty();
        if let Some(field) = key.strip_prefix("f:") {
            let Value::Object(fields) = object else {
                continue;
            };
            if dropped && old_child.is_empty() {
                fields.remove(field);
                continue;
            }
            // Owned in part: what the manager owned below goes, and the
            // field with it only when nothing is left in it.
            let Some(child) = fields.get_mut(field) else {
                continue;
            };
            remove_dropped(child, old_child, new_child, &other_children);
            let emptied = match child {
                Value::Object(members) => members.is_empty(),
                Value::Array(items) => items.is_empty(),
                _ => false,
            };
            if dropped && emptied {
                fields.remove(field);
            }
        } else if let Some(identity) = key.strip_prefix("k:") {
            let Value::Array(items) = object else {
                continue;
            };
            let Ok(Value::Object(identity)) = serde_json::from_str::<Value>(identity) else {
                continue;
            };
            let found = items.iter().position(|item| {
                identity
                    .iter()
                    .all(|(name, value)| item.get(name) == Some(value))
            });
            let Some(position) = found else {
                continue;
            };
            if dropped {
                items.remove(position);
            } else {
                remove_dropped(&mut items[position], old_child, new_child, &other_children);
            }
        }
    }
}

/// Records `set` as what `manager` applied to `object`, at `time`; an
/// entry whose set and version did not change keeps its time, so that an
/// apply that changes nothing leaves the object as it was.
pub fn record(object: &mut Value, manager: &str, api_version: &str, set: FieldSet, time: &str) {
    let mut entries: Vec<Value> = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let set = Value::Object(set);
    if let Some(position) = entries.iter().position(|entry| is_apply_of(entry, manager)) {
        let entry = &entries[position];
        if entry.get("fieldsV1") == Some(&set)
            && entry.get("apiVersion").and_then(Value::as_str) == Some(api_version)
        {
            return;
        }
        entries.remove(position);
    }
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": set,
    }));
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("managedFields".to_owned(), Value::Array(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(labels: Value, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": labels},
            "spec": {"template": {"spec": {"containers": containers}}}
        })
    }

    #[test]
    fn a_field_set_names_fields_and_keyed_elements_but_not_the_object() {
        let applied = deployment(
            json!({"app": "web"}),
            json!([{"name": "web", "image": "web:1", "args": ["a"]}]),
        );
        assert_eq!(
            Value::Object(field_set(&applied)),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}
                }}}}
            })
        );
    }

    #[test]
    fn what_the_manager_stopped_applying_goes_and_what_others_own_stays() {
        let old = field_set(&deployment(
            json!({"app": "web", "tier": "front", "team": "shop"}),
            json!([{"name": "web", "image": "web:1"}, {"name": "proxy", "image": "envoy:1"}]),
        ));
        let new = field_set(&deployment(
            json!({"app": "web"}),
            json!([{"name": "web", "image": "web:2"}]),
        ));
        let other = field_set(&json!({"metadata": {"labels": {"team": "shop"}}}));
        let mut object = deployment(
            json!({"app": "web", "tier": "front", "team": "shop", "kept": "yes"}),
            json!([{"name": "web", "image": "web:1"}, {"name": "proxy", "image": "envoy:1"}]),
        );
        remove_dropped(&mut object, &old, Some(&new), &[&other]);
        assert_eq!(
            object,
            deployment(
                json!({"app": "web", "team": "shop", "kept": "yes"}),
                json!([{"name": "web", "image": "web:1"}]),
            )
        );
        // No labels applied any more: the manager's go, the rest stays,
        // and so does the metadata that names the object.
        let bare =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        remove_dropped(&mut object, &new, Some(&field_set(&bare)), &[&other]);
        assert_eq!(
            object,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "shop", "kept": "yes"}}
            })
        );
    }

    #[test]
    fn an_unchanged_set_keeps_its_time() {
        let mut object = json!({"metadata": {"name": "web"}});
        let set = field_set(&json!({"data": {"a": "1"}}));
        record(
            &mut object,
            "runbook",
            "v1",
            set.clone(),
            "2026-01-01T00:00:00Z",
        );
        record(&mut object, "runbook", "v1", set, "2026-01-02T00:00:00Z");
        record(
            &mut object,
            "kubectl",
            "v1",
            FieldSet::new(),
            "2026-01-03T00:00:00Z",
        );
        let entries = object["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["time"], "2026-01-01T00:00:00Z");
        assert_eq!(entries[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
        let (mine, others) = owned(&object, "runbook");
        assert_eq!(Value::Object(mine), json!({"f:data": {"f:a": {}}}));
        assert_eq!(others.len(), 1);
    }
}
