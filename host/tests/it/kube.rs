//! The Kubernetes capability against the API-server emulator, with the
//! real `kube` client on the host side and the real `kubectl` checking the
//! emulator: granted calls reach the cluster; another namespace, verb or
//! resource is denied, recorded, and never sent; a plan writes only with
//! `dryRun=All`.

use crate::support::{RunOptions, TestRunbook, cache_dir, kubectl, kubectl_get, run};
use runbook::capability::kube::KubeAccess;
use runbook::events::{Decision, EventKind, Status};
use runbook_testenv::KubeEmulator;
use serde_json::json;
use std::path::PathBuf;

/// An emulator with the `shop` and `payments` namespaces, a three-replica
/// `api` Deployment in each, and a kubeconfig pointing at it.
pub async fn cluster() -> (KubeEmulator, tempfile::TempDir, PathBuf) {
    let emulator = KubeEmulator::start().await.unwrap();
    for namespace in ["shop", "payments"] {
        emulator.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        );
        emulator.apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": namespace, "labels": {"app": "api"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                     "template": {"metadata": {"labels": {"app": "api"}},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "proxy", "image": "envoy:1"}]}}}
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).unwrap();
    (emulator, dir, kubeconfig)
}

pub fn image_of(emulator: &KubeEmulator, namespace: &str) -> String {
    let deployment = emulator
        .get("apps/v1", "Deployment", Some(namespace), "api")
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs a runbook with Kubernetes access through `kubeconfig`.
pub async fn run_on(
    body: &str,
    kubeconfig: PathBuf,
    context: Option<String>,
) -> crate::support::Finished {
    let options = RunOptions {
        kube: Some(KubeAccess::from_file(kubeconfig, context)),
        ..RunOptions::default()
    };
    run(body, options).await
}

const GRANT: &str = "grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }";

fn step(id: &str, needs: &[&str], call: &str) -> String {
    let needs: Vec<String> = needs.iter().map(|need| format!("\"{need}\"")).collect();
    format!(
        "\n[[steps]]\nid = \"{id}\"\nuses = \"misbehave\"\nneeds = [{}]\nwith.mode = \"kube-call\"\nwith.kube = {call}\n{GRANT}\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        needs.join(", ")
    )
}

const SET_IMAGE: &str = r#"{ op = "patch", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api", patch = "strategic", body = { spec = { template = { spec = { containers = [{ name = "app", image = "app:2" }] } } } } }"#;

#[tokio::test]
async fn granted_calls_reach_the_cluster_and_others_are_denied_before_sending() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let mut body = String::from("[runbook]\nname = \"kube\"\non_failure = \"continue\"\n");
    body.push_str(&step("read", &[], r#"{ op = "get", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api" }"#));
    body.push_str(&step("set-image", &["read"], SET_IMAGE));
    body.push_str(&step("rollout", &["set-image"], r#"{ op = "wait", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api", condition = "rollout", timeout_ms = 20000 }"#));
    body.push_str(&step("other-namespace", &["rollout"], r#"{ op = "patch", api_version = "apps/v1", kind = "Deployment", namespace = "payments", name = "api", body = { spec = { replicas = 0 } } }"#));
    body.push_str(&step("other-verb", &["rollout"], r#"{ op = "delete", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api" }"#));
    body.push_str(&step("other-resource", &["rollout"], r#"{ op = "get", api_version = "v1", kind = "Secret", namespace = "shop", name = "db-password" }"#));
    body.push_str(&step(
        "all-namespaces",
        &["rollout"],
        r#"{ op = "get", api_version = "apps/v1", kind = "Deployment", name = "api" }"#,
    ));
    let finished = run_on(&body, kubeconfig, Some("emulator".into())).await;

    let (status, summary, outputs) = finished.step("read");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        outputs["result"].contains("\"image\":\"app:1\""),
        "{outputs:?}"
    );
    let (status, summary, _) = finished.step("set-image");
    assert_eq!(status, Status::Succeeded, "{summary}");
    let (status, summary, outputs) = finished.step("rollout");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        outputs["result"].contains("\"updatedReplicas\":3"),
        "{outputs:?}"
    );

    for (id, expected) in [
        ("other-namespace", "namespace `payments` is not granted"),
        ("other-verb", "verb `delete` is not granted"),
        ("other-resource", "resource `v1/Secret` is not granted"),
        ("all-namespaces", "needs `namespaces = [\"*\"]`"),
    ] {
        let (status, summary, _) = finished.step(id);
        assert_eq!(status, Status::Denied, "{id}: {summary}");
        assert!(summary.contains(expected), "{id}: {summary}");
        assert!(
            summary.contains("add it to the step's `grants.kube`"),
            "{id}: {summary}"
        );
    }
    let denials = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(&event.kind, EventKind::CapabilityCall { capability, decision: Decision::Denied, .. } if capability == "kube"))
        .count();
    assert_eq!(denials, 4);
    let calls: Vec<String> = finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::CapabilityCall {
                capability,
                requested,
                decision: Decision::Allowed,
                outcome,
                ..
            } if capability == "kube" => Some(format!("{requested}: {outcome}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        [
            "get apps/v1/Deployment shop/api: found",
            "patch apps/v1/Deployment shop/api: patched",
            "watch apps/v1/Deployment shop/api: rollout complete reached",
        ]
    );

    // Checked in the cluster: the image changed in `shop` only, the rollout
    // went through, and no denied request reached the server.
    assert_eq!(image_of(&emulator, "shop"), "app:2");
    assert_eq!(image_of(&emulator, "payments"), "app:1");
    let deployment = emulator
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let requests = emulator.requests();
    assert!(
        !requests.iter().any(|request| request.starts_with("DELETE")
            || request.contains("/payments/")
            || request.contains("secrets")),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn a_rollout_that_stalls_fails_at_its_progress_deadline() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.break_image("app:broken");
    emulator.set_deadline_ticks(5);
    let mut body = String::from("[runbook]\nname = \"kube\"\n");
    body.push_str(&step(
        "set-image",
        &[],
        &SET_IMAGE.replace("app:2", "app:broken"),
    ));
    body.push_str(&step("rollout", &["set-image"], r#"{ op = "wait", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api", condition = "rollout", timeout_ms = 20000 }"#));
    let finished = run_on(&body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("rollout");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("deployment \"api\" exceeded its progress deadline"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_step_waits_for_a_job_to_complete_and_deletes_what_it_created() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.job_outcome("migrate", 0, "alembic upgrade head: done\n");
    let grant = "grants.kube = { namespaces = [\"shop\"], resources = [\"batch/v1/Job\"], verbs = [\"create\", \"watch\", \"delete\"] }";
    let job = r#"{ op = "create", api_version = "batch/v1", kind = "Job", namespace = "shop", body = { metadata = { name = "migrate-1" }, spec = { template = { spec = { restartPolicy = "Never", containers = [{ name = "migrate", image = "app:2", command = ["alembic", "upgrade", "head"] }] } } } } }"#;
    let wait = r#"{ op = "wait", api_version = "batch/v1", kind = "Job", namespace = "shop", name = "migrate-1", condition = "Complete=True", timeout_ms = 20000 }"#;
    let delete = r#"{ op = "delete", api_version = "batch/v1", kind = "Job", namespace = "shop", name = "migrate-1" }"#;
    let body = [
        ("create", job),
        ("wait", wait),
        ("delete", delete),
        ("delete-again", delete),
    ]
    .iter()
    .map(|(id, call)| {
        step(id, &[], call)
            .replace("needs = []\n", "")
            .replace(GRANT, grant)
    })
    .collect::<String>();
    let finished = run_on(
        &format!("[runbook]\nname = \"job\"\n{body}"),
        kubeconfig,
        None,
    )
    .await;
    for id in ["create", "wait", "delete", "delete-again"] {
        let (status, summary, _) = finished.step(id);
        assert_eq!(status, Status::Succeeded, "{id}: {summary}");
    }
    assert_eq!(finished.step("delete").2["result"], "true");
    assert_eq!(finished.step("delete-again").2["result"], "false");
    assert!(
        emulator
            .get("batch/v1", "Job", Some("shop"), "migrate-1")
            .is_none()
    );
}

#[tokio::test]
async fn a_plan_sends_writes_with_dry_run_and_the_cluster_does_not_change() {
    let (emulator, dir, kubeconfig) = cluster().await;
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"plan\"\n{}",
        step("set-image", &[], SET_IMAGE)
    ));
    for command in [&["plan"][..], &["exec", "--dry-run"][..]] {
        let mut args: Vec<String> = command.iter().map(|word| (*word).to_owned()).collect();
        args.extend([
            file.path.display().to_string(),
            "--kube-context".into(),
            "emulator".into(),
        ]);
        let (kubeconfig, index) = (kubeconfig.clone(), dir.path().to_path_buf());
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
                .args(&args)
                .env("KUBECONFIG", &kubeconfig)
                .env("RUNBOOK_CACHE_DIR", cache_dir())
                .env("RUNBOOK_INDEX_DIR", index)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(0), "{command:?}: {text}");
        assert!(
            text.contains("⊘ kube patch apps/v1/Deployment shop/api: the API server accepted it with dryRun=All; nothing changed"),
            "{command:?}: {text}"
        );
        // The reviewer sees every grant, not only HTTP and secrets.
        assert!(
            text.contains(
                "grants kube: namespaces shop; resources apps/v1/Deployment; verbs get, patch, watch"
            ),
            "{command:?}: {text}"
        );
    }
    let patches: Vec<String> = emulator
        .requests()
        .into_iter()
        .filter(|request| request.starts_with("PATCH"))
        .collect();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert!(
        patches.iter().all(|request| request.contains("dryRun=All")),
        "{patches:#?}"
    );
    assert_eq!(image_of(&emulator, "shop"), "app:1");
}

#[tokio::test]
async fn kubectl_reads_sets_an_image_and_follows_the_rollout_on_the_emulator() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let listed = kubectl(
        &kubeconfig,
        &["get", "deployments", "-n", "shop", "-o", "name"],
    )
    .await;
    assert_eq!(listed.trim(), "deployment.apps/api");
    kubectl(
        &kubeconfig,
        &["set", "image", "deployment/api", "app=app:3", "-n", "shop"],
    )
    .await;
    let status = kubectl(
        &kubeconfig,
        &[
            "rollout",
            "status",
            "deployment/api",
            "-n",
            "shop",
            "--timeout=30s",
        ],
    )
    .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    let images = kubectl_get(
        &kubeconfig,
        "shop",
        "deployment/api",
        "{.spec.template.spec.containers[*].image}",
    )
    .await;
    assert_eq!(images, "app:3 envoy:1");
    assert_eq!(image_of(&emulator, "shop"), "app:3");
    kubectl(
        &kubeconfig,
        &[
            "patch",
            "deployment",
            "api",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
        ],
    )
    .await;
    let replicas = kubectl_get(&kubeconfig, "shop", "deployment/api", "{.spec.replicas}").await;
    assert_eq!(replicas, "2");
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let stale = r#"{ op = "patch", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api", patch = "merge", body = { metadata = { resourceVersion = "1" }, spec = { replicas = 5 } } }"#;
    let body = format!(
        "[runbook]\nname = \"conflict\"\n{}",
        step("stale", &[], stale)
    );
    let finished = run_on(&body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("stale");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(summary.contains("409 Conflict"), "{summary}");
    let deployment = emulator
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
}

#[tokio::test]
async fn a_step_without_a_kube_grant_is_told_how_to_grant_it() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let body = step("sneaky", &[], r#"{ op = "get", api_version = "apps/v1", kind = "Deployment", namespace = "shop", name = "api" }"#).replace(GRANT, "");
    let finished = run_on(
        &format!("[runbook]\nname = \"kube\"\n{body}"),
        kubeconfig,
        None,
    )
    .await;
    let (status, summary, _) = finished.step("sneaky");
    assert_eq!(status, Status::Denied);
    assert!(summary.contains("grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\"] }"), "{summary}");
}
