//! Objects as the cluster has them: what of them the server and its
//! controllers set (and is neither saved, compared nor applied back),
//! where two states of an object differ, and the configuration that puts
//! an object back as it was. Pure: no Kubernetes call.

use crate::manifests::Target;
use runbook_sdk::serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Metadata the server sets.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations controllers write.
const CONTROLLER_ANNOTATIONS: &[&str] = &["deployment.kubernetes.io/revision"];

/// Labels the Job controller puts on a Job's pod template, from the Job's
/// uid: a re-created Job gets new ones.
const JOB_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// The kinds whose rollout `kube.wait` follows.
pub fn rolls_out(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
}

/// An object without its status and what the server and controllers set
/// in its metadata: what is saved before a change, and what is compared.
pub fn kept(object: &Value) -> Value {
    let mut kept = object.clone();
    let Some(fields) = kept.as_object_mut() else {
        return kept;
    };
    fields.remove("status");
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            for annotation in CONTROLLER_ANNOTATIONS {
                annotations.remove(*annotation);
            }
        }
        if metadata
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            metadata.remove("annotations");
        }
    }
    kept
}

/// Whether two states of an object are the same, but for what the server
/// and controllers set.
pub fn same(before: &Value, after: &Value) -> bool {
    kept(before) == kept(after)
}

/// Where two states of an object differ (`spec.template.spec.containers[0].image`),
/// but for what the server and controllers set.
pub fn differences(before: &Value, after: &Value) -> Vec<String> {
    let mut found = Vec::new();
    compare(&kept(before), &kept(after), "", &mut found);
    found
}

fn compare(before: &Value, after: &Value, path: &str, found: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => {
            let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (before.get(key.as_str()), after.get(key.as_str())) {
                    (Some(before), Some(after)) => compare(before, after, &child, found),
                    _ => found.push(child),
                }
            }
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => {
            for (index, (before, after)) in before.iter().zip(after).enumerate() {
                compare(before, after, &format!("{path}[{index}]"), found);
            }
        }
        _ if before != after => found.push(if path.is_empty() {
            "the whole object".to_owned()
        } else {
            path.to_owned()
        }),
        _ => {}
    }
}

/// A few of `paths`, for one line: `a, b, c and 4 more`.
pub fn some_of(paths: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = paths
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        text.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    text
}

/// The configuration that puts `target` back as `before` (saved by
/// [`kept`]) when applied: the object's own fields, with its identity.
/// For an object that is re-created (`recreate`), what the server gave
/// the old one (a Service's cluster IPs, a Job's selector and the labels
/// made from its uid) is left for the server to give again.
pub fn applicable(target: &Target, before: &Value, recreate: bool) -> Value {
    let mut object = kept(before);
    let Some(fields) = object.as_object_mut() else {
        return object;
    };
    fields.insert(
        "apiVersion".to_owned(),
        Value::String(target.api_version.clone()),
    );
    fields.insert("kind".to_owned(), Value::String(target.kind.clone()));
    let metadata = fields
        .entry("metadata".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.insert("name".to_owned(), Value::String(target.name.clone()));
        match &target.namespace {
            Some(namespace) => {
                metadata.insert("namespace".to_owned(), Value::String(namespace.clone()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
    }
    if recreate {
        match target.kind.as_str() {
            "Service" => {
                if let Some(Value::Object(spec)) = fields.get_mut("spec") {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
            }
            "Job" => {
                if let Some(Value::Object(spec)) = fields.get_mut("spec") {
                    spec.remove("selector");
                }
                if let Some(Value::Object(labels)) = fields
                    .get_mut("spec")
                    .and_then(|spec| spec.pointer_mut("/template/metadata/labels"))
                {
                    for label in JOB_LABELS {
                        labels.remove(*label);
                    }
                }
            }
            _ => {}
        }
    }
    object
}

/// Whether another object controls this one (a ReplicaSet's Deployment):
/// then it is that object's to delete, not a prune's.
pub fn controlled(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_sdk::serde_json::json;

    fn live(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                         "generation": 3, "managedFields": [{"manager": "runbook"}],
                         "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
            "status": {"replicas": 2}
        })
    }

    #[test]
    fn what_the_server_sets_is_not_a_difference() {
        let mut other = live("web:1");
        other["metadata"]["resourceVersion"] = json!("9");
        other["status"]["replicas"] = json!(1);
        other["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("4");
        assert!(same(&live("web:1"), &other));
        assert_eq!(
            differences(&live("web:1"), &live("web:2")),
            ["spec.template.spec.containers[0].image"]
        );
        assert_eq!(
            kept(&live("web:1")),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
            })
        );
        let paths: Vec<String> = ["a", "b", "c", "d", "e"].map(str::to_owned).to_vec();
        assert_eq!(some_of(&paths), "a, b, c and 2 more");
    }

    #[test]
    fn a_recreated_object_leaves_what_the_server_assigns() {
        let target = Target {
            api_version: "v1".into(),
            kind: "Service".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        let service = json!({"metadata": {"name": "web", "uid": "u"}, "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}});
        assert_eq!(
            applicable(&target, &service, true),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 80}]}})
        );
        assert_eq!(
            applicable(&target, &service, false)["spec"]["clusterIP"],
            "10.0.0.1"
        );
        assert!(controlled(
            &json!({"metadata": {"ownerReferences": [{"kind": "Deployment", "controller": true}]}})
        ));
        assert!(!controlled(&service));
    }
}
