//! The `k8s-rollout` plugin against the API-server emulator, with `kubectl`
//! checking the results: images roll out, a failed rollout is undone
//! before the step fails, and rollback restores the previous pod template.

use crate::kube::{cluster, image_of, run_on};
use crate::support::kubectl_get;
use runbook::events::Status;
use std::path::Path;

const GRANT: &str = "grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }";

fn rollout(image: &str) -> String {
    format!(
        "[[steps]]\nid = \"rollout\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.images = {{ app = \"{image}\" }}\nwith.timeout = \"20s\"\n{GRANT}\n"
    )
}

/// `kubectl get` of one field of the `shop/api` Deployment.
async fn api_field(kubeconfig: &Path, jsonpath: &str) -> String {
    kubectl_get(kubeconfig, "shop", "deployment/api", jsonpath).await
}

#[tokio::test]
async fn a_new_image_rolls_out_and_reports_the_revision() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let body = format!("[runbook]\nname = \"deploy\"\n\n{}", rollout("app:2"));
    let finished = run_on(&body, kubeconfig.clone(), None).await;
    let (status, summary, outputs) = finished.step("rollout");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "set image of deployment/api (app: app:1 → app:2)");
    assert_eq!(outputs["revision"], "2");
    assert_eq!(
        api_field(&kubeconfig, "{.spec.template.spec.containers[*].image}").await,
        "app:2 envoy:1"
    );
    assert_eq!(
        api_field(&kubeconfig, "{.status.updatedReplicas}").await,
        "3"
    );
}

#[tokio::test]
async fn when_a_later_step_fails_rollback_restores_the_previous_pod_template() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n{}\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        rollout("app:2")
    );
    let finished = run_on(&body, kubeconfig.clone(), None).await;
    assert_eq!(finished.step("smoke").0, Status::Failed);
    let rolled_back = finished.lines().join("\n");
    assert!(
        rolled_back.contains("deployment/api: restored, revision 3"),
        "{rolled_back}"
    );
    assert_eq!(
        api_field(&kubeconfig, "{.spec.template.spec.containers[*].image}").await,
        "app:1 envoy:1"
    );
}

#[tokio::test]
async fn a_rollout_that_exceeds_its_progress_deadline_is_undone_before_the_step_fails() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.break_image("app:broken");
    emulator.set_deadline_ticks(5);
    let body = format!("[runbook]\nname = \"deploy\"\n\n{}", rollout("app:broken"));
    let finished = run_on(&body, kubeconfig.clone(), None).await;
    let (status, summary, _) = finished.step("rollout");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains(
            "deployment/api did not roll out: deployment \"api\" exceeded its progress deadline"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("undone: deployment/api: restored"),
        "{summary}"
    );
    assert_eq!(image_of(&emulator, "shop"), "app:1");
}

#[tokio::test]
async fn a_container_the_workload_does_not_have_is_named_with_those_it_has() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n{}",
        rollout("app:2").replace("{ app =", "{ web =")
    );
    let finished = run_on(&body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("rollout");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("deployment/api has no container `web` (it has: app, proxy)"),
        "{summary}"
    );
}

#[tokio::test]
async fn scaling_changes_replicas_and_an_unchanged_workload_is_left_alone() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let body = "[runbook]\nname = \"scale\"\n\n[[steps]]\nid = \"scale\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.action = \"scale\"\nwith.replicas = 5\nwith.timeout = \"20s\"\nGRANT\n\n[[steps]]\nid = \"again\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.images = { app = \"app:1\" }\nGRANT\n".replace("GRANT", GRANT);
    let finished = run_on(&body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("scale");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "scale deployment/api from 3 to 5 replicas");
    assert_eq!(finished.step("again").1, "deployment/api: already as asked");
    let deployment = emulator
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert_eq!(deployment["status"]["availableReplicas"], 5);
}

#[tokio::test]
async fn a_statefulset_rolls_out_until_its_update_revision_is_current() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.apply(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]}}}
    }));
    let body = "[runbook]\nname = \"sts\"\n\n[[steps]]\nid = \"upgrade\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"statefulset/db\"]\nwith.images = { postgres = \"postgres:16\" }\nwith.timeout = \"20s\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/StatefulSet\"], verbs = [\"get\", \"patch\", \"watch\"] }\n";
    let finished = run_on(body, kubeconfig, None).await;
    let (status, summary, outputs) = finished.step("upgrade");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["revision"], "db-2");
    let object = emulator
        .get("apps/v1", "StatefulSet", Some("shop"), "db")
        .unwrap();
    assert_eq!(object["status"]["currentRevision"], "db-2");
    assert_eq!(object["status"]["updatedReplicas"], 3);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "postgres:16"
    );
}
