//! Live state, not typed state: `k8s-read` returns fields of an object on
//! the API-server emulator as outputs, a blue/green runbook computes the
//! idle colour from the Service's live selector (so consecutive releases
//! alternate by themselves), and `canary-shift` refuses to switch to the
//! colour that already serves. `kubectl` checks the cluster.

use crate::kube::{cluster, run_on};
use crate::support::{TestRunbook, cache_dir, kubectl_get};
use runbook::capability::kube::KubeAccess;
use runbook::events::Status;
use runbook_testenv::KubeEmulator;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The idle colour, computed from the live one the `live` step read.
const IDLE: &str = "${{ steps.live.outputs.colour == 'blue' && 'green' || 'blue' }}";

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

/// Read the live colour, put the release on `target`'s Deployment, switch
/// the Service from `stable` to `target`; rolled back on failure.
fn release(stable: &str, target: &str) -> String {
    let service_grant = "grants.kube = { namespaces = [\"shop\"], resources = [\"v1/Service\"]";
    format!(
        r#"[runbook]
name = "blue-green"
on_failure = "rollback"

[params.version]
required = true

[params.live]
default = "blue"

[params.target]
default = "green"

[[steps]]
id = "live"
uses = "k8s-read"
with.object = {{ api_version = "v1", kind = "Service", namespace = "shop", name = "api" }}
with.outputs = {{ colour = "/spec/selector/colour" }}
{service_grant}, verbs = ["get"] }}

[[steps]]
id = "deploy"
uses = "k8s-rollout"
with.namespace = "shop"
with.workloads = ["deployment/api-{target}"]
with.images = {{ app = "app:${{{{ params.version }}}}" }}
with.timeout = "20s"
grants.kube = {{ namespaces = ["shop"], resources = ["apps/v1/Deployment"], verbs = ["get", "patch", "watch"] }}

[[steps]]
id = "switch"
uses = "canary-shift"
with.router = {{ type = "service", namespace = "shop", service = "api", selector_key = "colour", stable = "{stable}", canary = "{target}" }}
with.stages = [100]
{service_grant}, verbs = ["get", "patch"] }}
"#
    )
}

/// The colour the Service selects, as `kubectl` reads it.
async fn live_colour(kubeconfig: &Path) -> String {
    kubectl_get(kubeconfig, "shop", "service/api", "{.spec.selector.colour}").await
}

/// The image of a colour's Deployment, as `kubectl` reads it.
async fn image(kubeconfig: &Path, colour: &str) -> String {
    let deployment = format!("deployment/api-{colour}");
    kubectl_get(
        kubeconfig,
        "shop",
        &deployment,
        "{.spec.template.spec.containers[0].image}",
    )
    .await
}

/// `runbook plan` of a runbook against the emulator: exit code and what it printed.
async fn plan(runbook: &TestRunbook, kubeconfig: &Path, sets: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"));
    command.arg("plan").arg(&runbook.path);
    for set in sets {
        command.args(["--set", set]);
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), said)
}

async fn run_release(
    body: &str,
    kubeconfig: &Path,
    sets: &[(&str, &str)],
) -> crate::support::Finished {
    let options = crate::support::RunOptions {
        kube: Some(KubeAccess::from_file(kubeconfig.to_path_buf(), None)),
        sets: sets
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..Default::default()
    };
    crate::support::run(body, options).await
}

/// What `runbook validate` says of a runbook it refuses.
fn refused_by_validate(runbook: &TestRunbook) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("validate")
        .arg(&runbook.path)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{said}");
    said
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
    let said = refused_by_validate(&runbook);
    assert!(
        said.contains("`spec/selector/colour` is not a JSON pointer: start it with `/`"),
        "{said}"
    );
    assert!(said.contains("runbook.toml:8:"), "{said}");
}

/// Three releases with no colour typed: each reads the live colour, lands
/// on the other one, and switches to it, so the live colour goes blue →
/// green → blue → green and the previous release stays on the idle colour.
#[tokio::test]
async fn blue_green_alternates_by_itself_over_three_releases() {
    let (emulator, _dir, kubeconfig) = blue_green().await;
    let body = release("${{ steps.live.outputs.colour }}", IDLE);

    let runbook = TestRunbook::new(&body);
    let (code, said) = plan(&runbook, &kubeconfig, &["version=1"]).await;
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("read Service shop/api: now colour = blue"),
        "{said}"
    );
    assert!(
        said.contains("switch Service shop/api from `blue` (serving now) to <steps.live.outputs.colour == 'blue' && 'green' || 'blue'>, known when the run gets here"),
        "{said}"
    );
    assert!(
        said.contains("set image of deployment/api-<steps.live.outputs.colour == 'blue' && 'green' || 'blue'> (app = app:1)"),
        "{said}"
    );

    let mut previous = ("blue", "0");
    for (version, idle) in [("1", "green"), ("2", "blue"), ("3", "green")] {
        let finished = run_release(&body, &kubeconfig, &[("version", version)]).await;
        assert_eq!(
            finished.report.status,
            Status::Succeeded,
            "{}",
            finished.log()
        );
        assert_eq!(finished.step("live").2["colour"], previous.0);
        assert_eq!(live_colour(&kubeconfig).await, idle, "release {version}");
        assert_eq!(image(&kubeconfig, idle).await, format!("app:{version}"));
        assert_eq!(
            image(&kubeconfig, previous.0).await,
            format!("app:{}", previous.1),
            "release {version} left the colour it replaced alone"
        );
        previous = (idle, version);
    }
    let patches = emulator
        .requests()
        .into_iter()
        .filter(|request| request.starts_with("PATCH") && request.contains("/services/"))
        .count();
    assert_eq!(patches, 3);
}

/// Colours typed the wrong way round (`live=green target=blue` while blue
/// serves): `plan` says the run would be refused, and the run is refused
/// before the selector moves; rollback then puts the live colour's image
/// back.
#[tokio::test]
async fn a_target_equal_to_the_live_colour_is_refused_before_traffic_moves() {
    let (emulator, _dir, kubeconfig) = blue_green().await;
    let body = release("${{ params.live }}", "${{ params.target }}");
    let runbook = TestRunbook::new(&body);
    let (code, said) = plan(
        &runbook,
        &kubeconfig,
        &["version=1", "live=green", "target=blue"],
    )
    .await;
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("blue already carries all traffic: the new version was deployed onto the live colour; compute the target from the live selector (k8s-read)"),
        "{said}"
    );

    let finished = run_release(
        &body,
        &kubeconfig,
        &[("version", "1"), ("live", "green"), ("target", "blue")],
    )
    .await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("switch"),
        "{}",
        finished.log()
    );
    let (status, summary, _) = finished.step("switch");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("blue already carries all traffic: the new version was deployed onto the live colour; compute the target from the live selector (k8s-read)"),
        "{summary}"
    );
    assert!(
        summary.contains("Service shop/api selects colour=blue"),
        "{summary}"
    );
    assert_eq!(live_colour(&kubeconfig).await, "blue");
    assert_eq!(image(&kubeconfig, "blue").await, "app:0", "rolled back");
    assert_eq!(image(&kubeconfig, "green").await, "app:0");
    assert!(
        !emulator
            .requests()
            .iter()
            .any(|request| request.starts_with("PATCH") && request.contains("/services/")),
        "{:#?}",
        emulator.requests()
    );
}

/// The same colour typed for both sides cannot be right whichever serves:
/// `validate` refuses it at its line, before anything reads the cluster.
#[test]
fn a_canary_colour_equal_to_stable_is_refused_by_validate() {
    let runbook = TestRunbook::new(&release("blue", "blue"));
    let said = refused_by_validate(&runbook);
    assert!(
        said.contains("`canary` is `blue`, as `stable` is: the new version would go where the traffic already is"),
        "{said}"
    );
    assert!(said.contains("runbook.toml:33:"), "{said}");
}
