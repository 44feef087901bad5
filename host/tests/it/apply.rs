//! The `k8s-apply` plugin against the API-server emulator, with `kubectl`
//! checking the cluster: a folder of manifests is server-side applied with
//! image overrides and the set's labels, the next apply prunes what it no
//! longer has and drops the fields it no longer sets, a rollback puts
//! every object back, a plan changes nothing, and an object outside the
//! grant stops the step before anything is applied. The emulator's
//! server-side apply is checked with `kubectl apply --server-side` too.

use crate::kube::cluster;
use crate::support::{
    Finished, RunOptions, cache_dir, kubectl, kubectl_get, plugins_table, run_file, runtime,
};
use runbook::capability::kube::KubeAccess;
use runbook::events::Status;
use serde_json::Value;
use std::path::{Path, PathBuf};

const GRANT: &str = "grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\", \"v1/Service\", \"v1/ConfigMap\"], verbs = [\"get\", \"list\", \"patch\", \"delete\", \"watch\"] }";

/// The Deployment and Service of the first release: the Deployment with a
/// `tier` label, its image overridden by repository.
const APP_V1: &str = r#"# The web front end and its Service.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    tier: front
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example.com/shop/web:1.0.0
          ports:
            - containerPort: 8080
        - name: proxy
          image: envoy:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
"#;

/// The first release's settings, which the second one no longer has.
const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  mode: blue\n";

/// The second release's flags, new with it.
const FLAGS: &str = "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"web-flags\"}, \"data\": {\"beta\": \"enabled\"}}\n";

/// A runbook folder with `k8s/` holding the first release.
fn first_release() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s");
    std::fs::create_dir(&k8s).unwrap();
    std::fs::write(k8s.join("app.yaml"), APP_V1).unwrap();
    std::fs::write(k8s.join("settings.yml"), SETTINGS).unwrap();
    dir
}

/// Turns `k8s/` into the second release: no `tier` label, no settings,
/// new flags.
fn second_release(dir: &Path) {
    let k8s = dir.join("k8s");
    std::fs::write(
        k8s.join("app.yaml"),
        APP_V1.replace("    tier: front\n", ""),
    )
    .unwrap();
    std::fs::remove_file(k8s.join("settings.yml")).unwrap();
    std::fs::write(k8s.join("flags.json"), FLAGS).unwrap();
}

/// The apply step, setting the web image to `version`, with `extra` steps
/// after it.
fn runbook(dir: &Path, version: &str, extra: &str) -> PathBuf {
    let path = dir.join("runbook.toml");
    std::fs::write(
        &path,
        format!(
            "[runbook]\nname = \"web\"\n\n[[steps]]\nid = \"apply\"\nuses = \"k8s-apply\"\nwith.folder = \"./k8s\"\nwith.namespace = \"shop\"\nwith.name = \"web\"\nwith.images = {{ \"registry.example.com/shop/web\" = \"registry.example.com/shop/web:{version}\" }}\nwith.timeout = \"20s\"\ngrants.fs.read = [\"./k8s\"]\n{GRANT}\n{extra}\n{}",
            plugins_table()
        ),
    )
    .unwrap();
    path
}

async fn run_in(path: &Path, kubeconfig: &Path) -> Finished {
    let options = RunOptions {
        kube: Some(KubeAccess::from_file(kubeconfig.to_path_buf(), None)),
        ..RunOptions::default()
    };
    run_file(&runtime(), path, options).await
}

/// An object of `shop` as `kubectl get -o json` prints it, with its
/// managed fields.
async fn kubectl_json(kubeconfig: &Path, object: &str) -> Value {
    let text = kubectl(
        kubeconfig,
        &[
            "get",
            object,
            "-n",
            "shop",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    )
    .await;
    serde_json::from_str(&text).unwrap()
}

/// The ConfigMaps of `shop`, as `kubectl get -o name` lists them.
async fn config_maps(kubeconfig: &Path) -> String {
    kubectl(
        kubeconfig,
        &["get", "configmaps", "-n", "shop", "-o", "name"],
    )
    .await
}

async fn web_images(kubeconfig: &Path) -> String {
    kubectl_get(
        kubeconfig,
        "shop",
        "deployment/web",
        "{.spec.template.spec.containers[*].image}",
    )
    .await
}

#[tokio::test]
async fn a_first_apply_creates_the_objects_with_the_image_and_the_set_labels_and_waits() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let folder = first_release();
    let finished = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    let (status, summary, outputs) = finished.step("apply");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "applied 3 objects of set `web` (3 created); rolled out Deployment shop/web"
    );
    assert_eq!(
        outputs["applied"],
        r#"["ConfigMap/shop/web-settings","Service/shop/web","Deployment/shop/web"]"#
    );
    assert_eq!(outputs["created"], outputs["applied"]);
    assert_eq!(outputs["pruned"], "[]");
    // What rollback needs, recorded before anything changed: none of the
    // objects existed.
    let previous: Value = serde_json::from_str(&outputs["previous"]).unwrap();
    assert_eq!(previous["objects"].as_array().unwrap().len(), 3);
    assert!(
        previous["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|saved| saved["before"].is_null())
    );

    assert_eq!(
        web_images(&kubeconfig).await,
        "registry.example.com/shop/web:1.1.0 envoy:1"
    );
    // The step waited for the rollout.
    assert_eq!(
        kubectl_get(
            &kubeconfig,
            "shop",
            "deployment/web",
            "{.status.updatedReplicas}"
        )
        .await,
        "2"
    );
    for object in ["deployment/web", "service/web", "configmap/web-settings"] {
        let found = kubectl_json(&kubeconfig, object).await;
        let labels = &found["metadata"]["labels"];
        assert_eq!(labels["runbook.dev/apply-set"], "web", "{object}: {found}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "runbook",
            "{object}"
        );
        assert_eq!(
            found["metadata"]["annotations"]["runbook.dev/apply-set-kinds"],
            "apps/v1/Deployment,v1/ConfigMap,v1/Service",
            "{object}"
        );
        let managers: Vec<(&str, &str)> = found["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["manager"].as_str().unwrap(),
                    entry["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(managers, [("runbook", "Apply")], "{object}");
    }
}

#[tokio::test]
async fn a_second_apply_prunes_what_it_no_longer_has_and_changes_the_deployment() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let folder = first_release();
    let first = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    assert_eq!(first.step("apply").0, Status::Succeeded);
    assert_eq!(
        kubectl_get(
            &kubeconfig,
            "shop",
            "deployment/web",
            "{.metadata.labels.tier}"
        )
        .await,
        "front"
    );

    second_release(folder.path());
    let second = run_in(&runbook(folder.path(), "1.2.0", ""), &kubeconfig).await;
    let (status, summary, outputs) = second.step("apply");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "applied 3 objects of set `web` (1 created, 1 updated, 1 unchanged); rolled out Deployment shop/web; pruned ConfigMap shop/web-settings"
    );
    assert_eq!(outputs["created"], r#"["ConfigMap/shop/web-flags"]"#);
    assert_eq!(outputs["pruned"], r#"["ConfigMap/shop/web-settings"]"#);

    let maps = config_maps(&kubeconfig).await;
    assert!(maps.contains("configmap/web-flags"), "{maps}");
    assert!(!maps.contains("configmap/web-settings"), "{maps}");
    assert_eq!(
        web_images(&kubeconfig).await,
        "registry.example.com/shop/web:1.2.0 envoy:1"
    );
    // Server-side apply dropped the label the set's manager stopped setting.
    let deployment = kubectl_json(&kubeconfig, "deployment/web").await;
    assert!(
        deployment["metadata"]["labels"].get("tier").is_none(),
        "{deployment}"
    );
    assert_eq!(deployment["metadata"]["labels"]["app"], "web");
}

#[tokio::test]
async fn rollback_after_a_later_failure_puts_every_object_back_as_it_was() {
    let (_emulator, _dir, kubeconfig) = cluster().await;
    let folder = first_release();
    let first = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    assert_eq!(first.step("apply").0, Status::Succeeded);

    second_release(folder.path());
    let smoke = "\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nneeds = [\"apply\"]\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";
    let finished = run_in(&runbook(folder.path(), "1.2.0", smoke), &kubeconfig).await;
    let (status, summary, _) = finished.step("apply");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(finished.step("smoke").0, Status::Failed);
    let log = finished.log();
    assert!(
        log.contains("re-created ConfigMap shop/web-settings; restored Deployment shop/web; deleted ConfigMap shop/web-flags (the run created it)"),
        "{log}"
    );

    assert_eq!(
        web_images(&kubeconfig).await,
        "registry.example.com/shop/web:1.1.0 envoy:1"
    );
    assert_eq!(
        kubectl_get(
            &kubeconfig,
            "shop",
            "deployment/web",
            "{.metadata.labels.tier}"
        )
        .await,
        "front"
    );
    assert_eq!(
        kubectl_get(
            &kubeconfig,
            "shop",
            "deployment/web",
            "{.status.updatedReplicas}"
        )
        .await,
        "2"
    );
    let maps = config_maps(&kubeconfig).await;
    assert!(maps.contains("configmap/web-settings"), "{maps}");
    assert!(!maps.contains("configmap/web-flags"), "{maps}");
    let settings = kubectl_json(&kubeconfig, "configmap/web-settings").await;
    assert_eq!(settings["data"]["mode"], "blue");
    assert_eq!(
        settings["metadata"]["labels"]["runbook.dev/apply-set"],
        "web"
    );
}

#[tokio::test]
async fn a_rollout_that_stalls_is_undone_before_the_step_fails() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.break_image("registry.example.com/shop/web:broken");
    emulator.set_deadline_ticks(5);
    let folder = first_release();
    let first = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    assert_eq!(first.step("apply").0, Status::Succeeded);

    let broken = run_in(&runbook(folder.path(), "broken", ""), &kubeconfig).await;
    let (status, summary, _) = broken.step("apply");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains(
            "Deployment shop/web did not roll out: deployment \"web\" exceeded its progress deadline"
        ),
        "{summary}"
    );
    assert!(
        summary.ends_with("; undone: restored Deployment shop/web"),
        "{summary}"
    );
    assert_eq!(
        web_images(&kubeconfig).await,
        "registry.example.com/shop/web:1.1.0 envoy:1"
    );
}

#[tokio::test]
async fn a_plan_lists_creates_updates_and_prunes_and_changes_nothing() {
    let (emulator, dir, kubeconfig) = cluster().await;
    let folder = first_release();
    let first = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    assert_eq!(first.step("apply").0, Status::Succeeded);
    let before = emulator.requests().len();

    second_release(folder.path());
    let path = runbook(folder.path(), "1.2.0", "");
    let args = [
        "plan".to_owned(),
        path.display().to_string(),
        "--kube-context".to_owned(),
        "emulator".to_owned(),
    ];
    let (kubeconfig_for_plan, index) = (kubeconfig.clone(), dir.path().join("index"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig_for_plan)
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
    assert_eq!(output.status.code(), Some(0), "{text}");
    for line in [
        "~ create ConfigMap shop/web-flags",
        "· unchanged Service shop/web",
        "~ update Deployment shop/web (metadata.labels.tier, spec.template.spec.containers[0].image)",
        "· wait up to 20s for Deployment shop/web to roll out",
        "~ prune ConfigMap shop/web-settings (the previous apply of set `web` had it, this one has not)",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    // The plan's writes were dry runs, and nothing was deleted.
    let requests = emulator.requests()[before..].to_vec();
    let patches: Vec<&String> = requests
        .iter()
        .filter(|request| request.starts_with("PATCH"))
        .collect();
    assert!(!patches.is_empty(), "{requests:#?}");
    assert!(
        patches.iter().all(|request| request.contains("dryRun=All")),
        "{requests:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|request| request.starts_with("DELETE") || request.starts_with("POST")),
        "{requests:#?}"
    );
    assert_eq!(
        web_images(&kubeconfig).await,
        "registry.example.com/shop/web:1.1.0 envoy:1"
    );
    let maps = config_maps(&kubeconfig).await;
    assert!(maps.contains("configmap/web-settings"), "{maps}");
    assert!(!maps.contains("configmap/web-flags"), "{maps}");
}

#[tokio::test]
async fn an_object_in_a_namespace_not_granted_is_denied_before_anything_is_applied() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let folder = first_release();
    std::fs::write(
        folder.path().join("k8s/payments.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-payments\n  namespace: payments\ndata:\n  x: \"1\"\n",
    )
    .unwrap();
    let finished = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    let (status, summary, _) = finished.step("apply");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("namespace `payments` is not granted"),
        "{summary}"
    );
    let requests = emulator.requests();
    assert!(
        !requests.iter().any(|request| request.starts_with("PATCH")
            || request.starts_with("DELETE")
            || request.contains("/payments/")),
        "{requests:#?}"
    );
    assert!(
        emulator
            .get("apps/v1", "Deployment", Some("shop"), "web")
            .is_none()
    );
}

#[tokio::test]
async fn a_manifest_that_is_not_yaml_is_named_by_file_and_document() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let folder = first_release();
    std::fs::write(
        folder.path().join("k8s/app.yaml"),
        format!("{APP_V1}---\napiVersion: v1\nkind: ConfigMap\nmetadata: [broken\n"),
    )
    .unwrap();
    let finished = run_in(&runbook(folder.path(), "1.1.0", ""), &kubeconfig).await;
    let (status, summary, _) = finished.step("apply");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("./k8s/app.yaml, document 3: not YAML"),
        "{summary}"
    );
    assert!(
        !emulator
            .requests()
            .iter()
            .any(|request| request.starts_with("PATCH")),
    );
}

#[tokio::test]
async fn kubectl_server_side_apply_drops_what_its_manager_no_longer_applies_on_the_emulator() {
    let (_emulator, dir, kubeconfig) = cluster().await;
    let file = dir.path().join("settings.yaml");
    let file_arg = file.display().to_string();
    let apply = [
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        file_arg.as_str(),
    ];
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\n  labels:\n    team: shop\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    )
    .unwrap();
    let applied = kubectl(&kubeconfig, &apply).await;
    assert!(applied.contains("serverside-applied"), "{applied}");
    // Another manager's label, set by an update: not the applier's to drop.
    kubectl(
        &kubeconfig,
        &["label", "configmap", "settings", "extra=kept", "-n", "shop"],
    )
    .await;
    std::fs::write(
        file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  a: \"1\"\n",
    )
    .unwrap();
    kubectl(&kubeconfig, &apply).await;

    let found = kubectl_json(&kubeconfig, "configmap/settings").await;
    assert_eq!(found["data"], serde_json::json!({"a": "1"}), "{found}");
    assert_eq!(
        found["metadata"]["labels"],
        serde_json::json!({"extra": "kept"}),
        "{found}"
    );
    let entry = &found["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl", "{found}");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(
        entry["fieldsV1"],
        serde_json::json!({"f:data": {"f:a": {}}})
    );
}
