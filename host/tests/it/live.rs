//! Live state, not typed state: `k8s-read` returns fields of an object on
//! the API-server emulator as outputs. `kubectl` checks the cluster.

use crate::kube::{cluster, run_on};
use crate::support::{TestRunbook, cache_dir, kubectl_get};
use runbook::events::Status;
use runbook_testenv::KubeEmulator;
use serde_json::json;
use std::path::PathBuf;

/// `api-blue` and `api-green` Deployments at `app:0`, and the Service
/// `api` sending all traffic to blue.
async fn blue_green() -> (KubeEmulator, tempfile::TempDir, PathBuf) {
    let (emulator, dir, kubeconfig) = cluster().await;
    for colour in ["blue", "green"] {
        emulator.apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("api-{colour}"), "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api", "colour": colour}},
                     "template": {"metadata": {"labels": {"app": "api", "colour": colour}},
                                  "spec": {"containers": [{"name": "app", "image": "app:0"}]}}}
        }));
    }
    emulator.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"selector": {"app": "api", "colour": "blue"}, "ports": [{"port": 80}]}
    }));
    (emulator, dir, kubeconfig)
}

#[tokio::test]
async fn k8s_read_returns_live_fields_and_names_a_missing_one() {
    let (_emulator, _dir, kubeconfig) = blue_green().await;
    let grant = "grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\", \"v1/Service\"], verbs = [\"get\"] }";
    let body = format!(
        "[runbook]\nname = \"read\"\non_failure = \"continue\"\n\n[[steps]]\nid = \"deployment\"\nuses = \"k8s-read\"\nwith.object = {{ api_version = \"apps/v1\", kind = \"Deployment\", namespace = \"shop\", name = \"api\" }}\nwith.outputs = {{ image = \"/spec/template/spec/containers/0/image\", replicas = \"/spec/replicas\", owner = {{ pointer = \"/metadata/annotations/example.com~1owner\", default = \"nobody\" }} }}\n{grant}\n\n[[steps]]\nid = \"missing\"\nuses = \"k8s-read\"\nwith.object = {{ api_version = \"v1\", kind = \"Service\", namespace = \"shop\", name = \"api\" }}\nwith.outputs = {{ colour = \"/spec/selector/version\" }}\n{grant}\n"
    );
    let finished = run_on(&body, kubeconfig.clone(), None).await;
    let (status, summary, outputs) = finished.step("deployment");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["image"], "app:1");
    assert_eq!(outputs["replicas"], "3");
    assert_eq!(outputs["owner"], "nobody");
    assert_eq!(
        summary,
        "read Deployment shop/api: image = app:1, owner = nobody, replicas = 3"
    );
    assert_eq!(
        kubectl_get(&kubeconfig, "shop", "deployment/api", "{.spec.replicas}").await,
        outputs["replicas"]
    );
    let (status, summary, outputs) = finished.step("missing");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("Service shop/api has no `/spec/selector/version` for output `colour` (at `/spec/selector` it has: app, colour)"),
        "{summary}"
    );
    assert!(summary.contains("give the output a default"), "{summary}");
    assert!(outputs.is_empty(), "{outputs:?}");
}

#[tokio::test]
async fn k8s_read_refuses_a_pointer_that_is_not_one_before_anything_runs() {
    let runbook = TestRunbook::new(
        "[runbook]\nname = \"read\"\n\n[[steps]]\nid = \"live\"\nuses = \"k8s-read\"\nwith.object = { api_version = \"v1\", kind = \"Service\", namespace = \"shop\", name = \"api\" }\nwith.outputs = { colour = \"spec/selector/colour\" }\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Service\"], verbs = [\"get\"] }\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("validate")
        .arg(&runbook.path)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("`spec/selector/colour` is not a JSON pointer: start it with `/`"),
        "{said}"
    );
    assert!(said.contains("runbook.toml:8:"), "{said}");
}
