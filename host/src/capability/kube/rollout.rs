//! Whether a workload finished rolling out, by the rules `kubectl rollout
//! status` uses (`k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go`),
//! in its words. Pure: it reads the object it is given and nothing else, so
//! the watch loop and the tests feed it the same JSON the server sends.

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

/// The status condition of a type (`Progressing`, `Failed`), if present.
pub(super) fn status_condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether a Deployment, DaemonSet or StatefulSet finished rolling out.
pub(super) fn rollout_progress(kind: &str, object: &Value) -> Progress {
    let workload = Workload(object);
    match kind {
        "Deployment" => deployment(&workload),
        "DaemonSet" => daemon_set(&workload),
        "StatefulSet" => stateful_set(&workload),
        other => Progress::Failed(format!(
            "rollout-complete applies to Deployments, DaemonSets and StatefulSets, not {other}"
        )),
    }
}

/// A workload object as the rules read it: a field the server left out
/// counts as zero, as it does once kubectl decodes the object.
struct Workload<'a>(&'a Value);

impl Workload<'_> {
    fn int(&self, pointer: &str) -> i64 {
        self.0.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
    }

    fn text(&self, pointer: &str) -> Option<&str> {
        self.0.pointer(pointer).and_then(Value::as_str)
    }

    fn name(&self) -> &str {
        self.text("/metadata/name").unwrap_or("?")
    }

    /// Whether the controller has seen the latest spec.
    fn observed(&self) -> bool {
        self.int("/metadata/generation") <= self.int("/status/observedGeneration")
    }

    /// `spec.updateStrategy.type`, which the server sets to
    /// `RollingUpdate` when it is left out.
    fn strategy(&self) -> &str {
        self.text("/spec/updateStrategy/type")
            .unwrap_or("RollingUpdate")
    }

    /// A rolling update's partition: pods below it keep the old revision.
    /// `None` when the spec has no `rollingUpdate` block, which happens
    /// only when the strategy was named without one: a strategy left out
    /// is given a block with partition 0 by the server.
    fn partition(&self) -> Option<i64> {
        let strategy = self.0.pointer("/spec/updateStrategy");
        match strategy.and_then(|strategy| strategy.get("rollingUpdate")) {
            Some(rolling) => Some(
                rolling
                    .get("partition")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ),
            None if self.text("/spec/updateStrategy/type").is_none() => Some(0),
            None => None,
        }
    }

    /// `spec.replicas`, which the server sets to 1 when it is left out.
    fn replicas(&self) -> i64 {
        self.0
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    }
}

/// A Deployment: its progress deadline, then new replicas, old ones gone,
/// and the new ones available.
fn deployment(workload: &Workload) -> Progress {
    if !workload.observed() {
        return waiting("waiting for deployment spec update to be observed");
    }
    if status_condition(workload.0, "Progressing")
        .and_then(|progressing| progressing.get("reason"))
        .and_then(Value::as_str)
        == Some("ProgressDeadlineExceeded")
    {
        return Progress::Failed(format!(
            "deployment \"{}\" exceeded its progress deadline",
            workload.name()
        ));
    }
    let desired = workload.replicas();
    let total = workload.int("/status/replicas");
    let updated = workload.int("/status/updatedReplicas");
    let available = workload.int("/status/availableReplicas");
    if updated < desired {
        waiting(format!(
            "{updated} out of {desired} new replicas have been updated"
        ))
    } else if total > updated {
        waiting(format!(
            "{} old replicas are pending termination",
            total - updated
        ))
    } else if available < updated {
        waiting(format!(
            "{available} of {updated} updated replicas are available"
        ))
    } else {
        Progress::Done
    }
}

/// A DaemonSet: a rolling update, then every node's pod updated and
/// available.
fn daemon_set(workload: &Workload) -> Progress {
    if let Some(refused) = rolling_update_only(workload) {
        return refused;
    }
    if !workload.observed() {
        return waiting("waiting for daemon set spec update to be observed");
    }
    let desired = workload.int("/status/desiredNumberScheduled");
    let updated = workload.int("/status/updatedNumberScheduled");
    let available = workload.int("/status/numberAvailable");
    if updated < desired {
        waiting(format!(
            "{updated} out of {desired} new pods have been updated"
        ))
    } else if available < desired {
        waiting(format!(
            "{available} of {desired} updated pods are available"
        ))
    } else {
        Progress::Done
    }
}

/// A StatefulSet: its pods ready, then updated; with a partition only
/// those at or above it, which is all of them when it is 0.
fn stateful_set(workload: &Workload) -> Progress {
    if let Some(refused) = rolling_update_only(workload) {
        return refused;
    }
    // Unlike a Deployment's, a StatefulSet's status not yet written by
    // its controller (observedGeneration 0) is not taken as observed.
    if workload.int("/status/observedGeneration") == 0 || !workload.observed() {
        return waiting("waiting for statefulset spec update to be observed");
    }
    let desired = workload.replicas();
    let ready = workload.int("/status/readyReplicas");
    if ready < desired {
        return waiting(format!("waiting for {} pods to be ready", desired - ready));
    }
    let updated = workload.int("/status/updatedReplicas");
    if let Some(partition) = workload.partition() {
        let wanted = desired - partition;
        if updated < wanted {
            return waiting(format!(
                "waiting for partitioned roll out to finish: {updated} out of {wanted} new pods have been updated"
            ));
        }
        return Progress::Done;
    }
    let revision = workload.text("/status/updateRevision").unwrap_or_default();
    if workload.text("/status/currentRevision").unwrap_or_default() != revision {
        return waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {revision}"
        ));
    }
    Progress::Done
}

/// Only a rolling update has a rollout to follow: with `OnDelete` the
/// controller replaces a pod only when someone deletes it, so waiting
/// would last until the timeout.
fn rolling_update_only(workload: &Workload) -> Option<Progress> {
    let strategy = workload.strategy();
    (strategy != "RollingUpdate").then(|| {
        Progress::Failed(format!(
            "rollout status is only available for RollingUpdate strategy type, not {strategy}"
        ))
    })
}

fn waiting(reason: impl Into<String>) -> Progress {
    Progress::Waiting(reason.into())
}

/// Each case is one branch of kubectl's rules, with the words kubectl
/// says there (less its `Waiting for deployment "api" rollout to finish:`
/// preamble, as the progress line names the object itself).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A workload of `kind` named `api`.
    fn workload(kind: &str, generation: i64, spec: Value, status: Value) -> Value {
        json!({"kind": kind, "metadata": {"name": "api", "generation": generation},
               "spec": spec, "status": status})
    }

    /// Judges each case and names the one that differs.
    fn judge_all(kind: &str, cases: Vec<(&str, Value, Progress)>) {
        for (case, object, expected) in cases {
            assert_eq!(rollout_progress(kind, &object), expected, "{kind}: {case}");
        }
    }

    /// A Deployment of `replicas` at `generation`, and its status: the
    /// generation observed, and its replicas in all, updated and available.
    fn deployment(generation: i64, replicas: i64, status: [i64; 4]) -> Value {
        let [observed, total, updated, available] = status;
        workload(
            "Deployment",
            generation,
            json!({"replicas": replicas}),
            json!({"observedGeneration": observed, "replicas": total,
                   "updatedReplicas": updated, "availableReplicas": available}),
        )
    }

    /// `deployment` whose controller gave up on it.
    fn past_deadline(mut object: Value) -> Value {
        object["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]);
        object
    }

    #[test]
    fn a_deployment_is_judged_as_kubectl_judges_it() {
        judge_all(
            "Deployment",
            vec![
                (
                    "a spec not yet observed",
                    deployment(2, 2, [1, 2, 2, 2]),
                    waiting("waiting for deployment spec update to be observed"),
                ),
                (
                    "past its progress deadline",
                    past_deadline(deployment(2, 3, [2, 3, 1, 1])),
                    Progress::Failed("deployment \"api\" exceeded its progress deadline".into()),
                ),
                (
                    "a deadline reported before the newest spec was observed",
                    past_deadline(deployment(3, 3, [2, 3, 1, 1])),
                    waiting("waiting for deployment spec update to be observed"),
                ),
                (
                    // kubectl's own case: a generation of 0 counts as observed.
                    "new replicas not yet updated",
                    deployment(0, 1, [1, 1, 0, 1]),
                    waiting("0 out of 1 new replicas have been updated"),
                ),
                (
                    "old replicas still running",
                    deployment(1, 1, [1, 2, 1, 2]),
                    waiting("1 old replicas are pending termination"),
                ),
                (
                    "updated replicas not yet available",
                    deployment(1, 2, [1, 2, 2, 1]),
                    waiting("1 of 2 updated replicas are available"),
                ),
                (
                    "observed, updated and available",
                    deployment(1, 2, [1, 2, 2, 2]),
                    Progress::Done,
                ),
            ],
        );
    }

    /// A DaemonSet at generation 1 updated `strategy`, and its status:
    /// the generation observed, and its pods desired, updated and
    /// available.
    fn daemon_set(strategy: &str, status: [i64; 4]) -> Value {
        let [observed, desired, updated, available] = status;
        workload(
            "DaemonSet",
            1,
            json!({"updateStrategy": {"type": strategy}}),
            json!({"observedGeneration": observed, "desiredNumberScheduled": desired,
                   "updatedNumberScheduled": updated, "numberAvailable": available}),
        )
    }

    #[test]
    fn a_daemon_set_is_judged_as_kubectl_judges_it() {
        judge_all(
            "DaemonSet",
            vec![
                (
                    "updated only when its pods are deleted",
                    daemon_set("OnDelete", [1, 2, 0, 2]),
                    Progress::Failed(
                        "rollout status is only available for RollingUpdate strategy type, not OnDelete"
                            .into(),
                    ),
                ),
                (
                    "a spec not yet observed",
                    daemon_set("RollingUpdate", [0, 2, 2, 2]),
                    waiting("waiting for daemon set spec update to be observed"),
                ),
                (
                    "new pods not yet updated",
                    daemon_set("RollingUpdate", [1, 1, 0, 0]),
                    waiting("0 out of 1 new pods have been updated"),
                ),
                (
                    "updated pods not yet available",
                    daemon_set("RollingUpdate", [1, 2, 2, 1]),
                    waiting("1 of 2 updated pods are available"),
                ),
                (
                    "observed, updated and available",
                    daemon_set("RollingUpdate", [1, 2, 2, 2]),
                    Progress::Done,
                ),
            ],
        );
    }

    #[test]
    fn other_kinds_have_no_rollout_to_follow() {
        assert_eq!(
            rollout_progress("Job", &workload("Job", 1, json!({}), json!({}))),
            Progress::Failed(
                "rollout-complete applies to Deployments, DaemonSets and StatefulSets, not Job"
                    .into()
            )
        );
    }

    /// A StatefulSet of 3 replicas at generation 1 with this update
    /// strategy, and its status: the generation observed, and its pods
    /// ready and updated.
    fn stateful_set(strategy: Value, status: [i64; 3], revisions: [&str; 2]) -> Value {
        let [observed, ready, updated] = status;
        let [current, update] = revisions;
        workload(
            "StatefulSet",
            1,
            json!({"replicas": 3, "updateStrategy": strategy}),
            json!({"observedGeneration": observed, "replicas": 3, "readyReplicas": ready,
                   "updatedReplicas": updated, "currentRevision": current, "updateRevision": update}),
        )
    }

    /// `object` as it was created, before the server numbered its spec.
    fn unnumbered(mut object: Value) -> Value {
        object["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("generation");
        object
    }

    #[test]
    fn a_statefulset_is_judged_as_kubectl_judges_it() {
        let on_delete = json!({"type": "OnDelete"});
        let rolling = || json!({"type": "RollingUpdate"});
        let partitioned =
            |partition| json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}});
        let unobserved = || waiting("waiting for statefulset spec update to be observed");
        judge_all(
            "StatefulSet",
            vec![
                (
                    "updated only when its pods are deleted",
                    stateful_set(on_delete, [1, 3, 0], ["api-1", "api-2"]),
                    Progress::Failed(
                        "rollout status is only available for RollingUpdate strategy type, not OnDelete"
                            .into(),
                    ),
                ),
                (
                    "a spec not yet observed",
                    stateful_set(rolling(), [0, 3, 3], ["api-1", "api-1"]),
                    unobserved(),
                ),
                (
                    "pods not yet ready",
                    stateful_set(rolling(), [1, 2, 3], ["api-1", "api-1"]),
                    waiting("waiting for 1 pods to be ready"),
                ),
                (
                    "pods above the partition not yet updated",
                    stateful_set(partitioned(2), [1, 3, 0], ["api-1", "api-2"]),
                    waiting(
                        "waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated",
                    ),
                ),
                (
                    "every pod above the partition updated, those below not",
                    stateful_set(partitioned(2), [1, 3, 1], ["api-1", "api-2"]),
                    Progress::Done,
                ),
                (
                    "every pod updated, its current revision not yet moved",
                    stateful_set(partitioned(0), [1, 3, 3], ["api-1", "api-2"]),
                    Progress::Done,
                ),
                (
                    "a strategy left out, as the server defaults it: partition 0",
                    stateful_set(Value::Null, [1, 3, 2], ["api-1", "api-2"]),
                    waiting(
                        "waiting for partitioned roll out to finish: 2 out of 3 new pods have been updated",
                    ),
                ),
                (
                    "a rolling update without a partition, its revision not yet current",
                    stateful_set(rolling(), [1, 3, 3], ["api-1", "api-2"]),
                    waiting("waiting for statefulset rolling update to complete 3 pods at revision api-2"),
                ),
                (
                    "a rolling update without a partition, its revision current",
                    stateful_set(rolling(), [1, 3, 3], ["api-2", "api-2"]),
                    Progress::Done,
                ),
                (
                    "no generation observed yet, however ready it looks",
                    unnumbered(stateful_set(rolling(), [0, 3, 3], ["api-1", "api-1"])),
                    unobserved(),
                ),
            ],
        );
    }
}
