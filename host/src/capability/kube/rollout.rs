//! Whether a workload finished rolling out, by the rules `kubectl rollout
//! status` uses. Pure: it reads the object it is given and nothing else,
//! so the watch loop and the tests feed it the same JSON the server sends.

use serde_json::Value;

/// Where a wait stands after looking at the object.
#[derive(Debug, PartialEq)]
pub(super) enum Progress {
    /// The condition holds.
    Done,
    /// Not yet, and why.
    Waiting(String),
    /// It will not hold (a rollout past its progress deadline, a failed Job).
    Failed(String),
}

/// An integer field of the object; absent counts as zero, as it does for
/// the server's own types.
fn field(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The status condition of a type (`Progressing`, `Failed`), if present.
pub(super) fn status_condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether a Deployment or StatefulSet finished rolling out, by the rules
/// `kubectl rollout status` uses.
pub(super) fn rollout_progress(kind: &str, object: &Value) -> Progress {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let generation = field(object, "/metadata/generation");
    let observed = field(object, "/status/observedGeneration");
    if observed < generation {
        return Progress::Waiting(format!(
            "waiting for the {kind} controller to see generation {generation}"
        ));
    }
    let desired = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = field(object, "/status/updatedReplicas");
    match kind {
        "Deployment" => {
            if let Some(progressing) = status_condition(object, "Progressing")
                && progressing.get("reason").and_then(Value::as_str)
                    == Some("ProgressDeadlineExceeded")
            {
                return Progress::Failed(format!(
                    "deployment \"{name}\" exceeded its progress deadline"
                ));
            }
            let total = field(object, "/status/replicas");
            let available = field(object, "/status/availableReplicas");
            if updated < desired {
                Progress::Waiting(format!("{updated} of {desired} new replicas updated"))
            } else if total > updated {
                Progress::Waiting(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < updated {
                Progress::Waiting(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Progress::Done
            }
        }
        "StatefulSet" => {
            let ready = field(object, "/status/readyReplicas");
            let current = object
                .pointer("/status/currentRevision")
                .and_then(Value::as_str);
            let update = object
                .pointer("/status/updateRevision")
                .and_then(Value::as_str);
            if ready < desired {
                Progress::Waiting(format!("{ready} of {desired} pods ready"))
            } else if updated < desired || current != update {
                Progress::Waiting(format!("{updated} of {desired} pods updated"))
            } else {
                Progress::Done
            }
        }
        other => Progress::Failed(format!(
            "rollout-complete applies to Deployments and StatefulSets, not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "api", "generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn a_rollout_is_complete_only_when_observed_updated_and_available() {
        let waiting = |status| {
            matches!(
                rollout_progress("Deployment", &deployment(2, status)),
                Progress::Waiting(_)
            )
        };
        assert!(waiting(
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3})
        ));
        assert!(waiting(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2})
        ));
        assert_eq!(
            rollout_progress(
                "Deployment",
                &deployment(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
                )
            ),
            Progress::Done
        );
    }

    #[test]
    fn a_rollout_past_its_progress_deadline_fails() {
        let stalled = deployment(
            2,
            json!({"observedGeneration": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert!(
            matches!(rollout_progress("Deployment", &stalled), Progress::Failed(reason) if reason.contains("progress deadline"))
        );
    }
}
