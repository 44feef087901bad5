//! The `canary-shift` plugin: an Istio VirtualService on the API-server
//! emulator, Prometheus scraping the sample service's stable and canary
//! traffic, and `kubectl` reading the weights at the end.

use crate::kube::{cluster, run_on};
use crate::metrics::ERROR_RATE;
use crate::support::kubectl_get;
use runbook::events::Status;
use runbook_testenv::{KubeEmulator, Prometheus, SampleService};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Estate {
    emulator: Arc<KubeEmulator>,
    service: Arc<SampleService>,
    prometheus: Prometheus,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// A VirtualService sending everything to stable, both tracks healthy,
/// Prometheus with data for the canary's error rate.
async fn estate() -> Estate {
    let (emulator, dir, kubeconfig) = cluster().await;
    emulator.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"hosts": ["api"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "api", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "api", "subset": "canary"}, "weight": 0}
        ]}]}
    }));
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| {
        state
            .traffic
            .set("stable", 0.005, Duration::from_millis(40));
        state
            .traffic
            .set("canary", 0.005, Duration::from_millis(40));
    });
    let target = service.address.to_string();
    let prometheus = tokio::task::spawn_blocking(move || {
        let prometheus = Prometheus::start(&[target]);
        prometheus.wait_for(&ERROR_RATE.replace("TRACK", "canary"));
        prometheus
    })
    .await
    .unwrap();
    Estate {
        emulator: Arc::new(emulator),
        service: Arc::new(service),
        prometheus,
        kubeconfig,
        _dir: dir,
    }
}

fn shift(prometheus: &str, stages: &str, hold: &str) -> String {
    format!(
        "[runbook]\nname = \"canary\"\n\n[[steps]]\nid = \"canary\"\nuses = \"canary-shift\"\nwith.router = {{ type = \"istio\", namespace = \"shop\", virtual_service = \"api\", route = \"primary\", stable = \"stable\", canary = \"canary\" }}\nwith.stages = {stages}\nwith.hold = \"{hold}\"\nwith.analysis = {{ prometheus = \"{prometheus}\", interval = \"1s\", checks = [{{ name = \"error_rate\", query = '{}', max = 0.02 }}] }}\ngrants.kube = {{ namespaces = [\"shop\"], resources = [\"networking.istio.io/v1/VirtualService\"], verbs = [\"get\", \"patch\"] }}\ngrants.http = [\"{prometheus}/api/v1/query\"]\n",
        ERROR_RATE.replace("TRACK", "canary")
    )
}

fn canary_weight(emulator: &KubeEmulator) -> u64 {
    let service = emulator
        .get(
            "networking.istio.io/v1",
            "VirtualService",
            Some("shop"),
            "api",
        )
        .unwrap();
    service["spec"]["http"][0]["route"][1]["weight"]
        .as_u64()
        .unwrap()
}

/// The weights of the `shop/api` VirtualService's routes, stable first.
async fn kubectl_weights(kubeconfig: &Path) -> String {
    let router = "virtualservices.networking.istio.io/api";
    kubectl_get(
        kubeconfig,
        "shop",
        router,
        "{.spec.http[0].route[*].weight}",
    )
    .await
}

#[tokio::test]
async fn a_healthy_canary_passes_every_stage_and_takes_all_traffic() {
    let estate = estate().await;
    let body = shift(&estate.prometheus.url, "[10, 50, 100]", "2s");
    let finished = run_on(&body, estate.kubeconfig.clone(), None).await;
    let (status, summary, outputs) = finished.step("canary");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.starts_with("canary 0% → 100% in 3 stages; last analysis: error_rate=0.005"),
        "{summary}"
    );
    assert_eq!(outputs["canary_weight"], "100");
    assert_eq!(kubectl_weights(&estate.kubeconfig).await, "0 100");
}

/// A canary promoted to 100% and left there is what the next run's new
/// image would reach before any analysis: the plan says so, and a
/// `stages = [0]` step sends the traffic home to stable.
#[tokio::test]
async fn a_promoted_canary_is_flagged_by_the_plan_and_sent_home_by_stage_zero() {
    let estate = estate().await;
    let promote = shift(&estate.prometheus.url, "[100]", "1s");
    let finished = run_on(&promote, estate.kubeconfig.clone(), None).await;
    assert_eq!(finished.step("canary").0, Status::Succeeded);
    assert_eq!(kubectl_weights(&estate.kubeconfig).await, "0 100");

    let next = crate::support::TestRunbook::new(&shift(&estate.prometheus.url, "[10, 100]", "1s"));
    let kubeconfig = estate.kubeconfig.clone();
    let plan = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["plan", next.path.to_str().unwrap()])
            .env("KUBECONFIG", kubeconfig)
            .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        said.contains("the canary already serves 100% of the traffic"),
        "{said}"
    );

    let home = shift(&estate.prometheus.url, "[0]", "1s");
    let finished = run_on(&home, estate.kubeconfig.clone(), None).await;
    let (status, summary, _) = finished.step("canary");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.contains("is home on stable (the canary had 100%)"),
        "{summary}"
    );
    assert_eq!(kubectl_weights(&estate.kubeconfig).await, "100 0");
}

/// Ctrl-C during a hold: the step is cancelled mid-call, and its rollback
/// sends the traffic back to stable, whatever the failure policy, instead
/// of leaving the canary at 10%.
#[tokio::test]
async fn an_interrupt_during_a_hold_leaves_all_traffic_on_stable() {
    let estate = estate().await;
    let body = shift(&estate.prometheus.url, "[10, 100]", "1h").replace(
        "name = \"canary\"\n",
        "name = \"canary\"\non_failure = \"abort\"\n",
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let trigger = cancel.clone();
    let emulator = Arc::clone(&estate.emulator);
    let interrupt = async move {
        while canary_weight(&emulator) != 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    };
    let options = crate::support::RunOptions {
        kube: Some(runbook::capability::kube::KubeAccess::from_file(
            estate.kubeconfig.clone(),
            None,
        )),
        cancel: Some(cancel),
        ..Default::default()
    };
    let (finished, ()) = tokio::join!(crate::support::run(&body, options), interrupt);
    assert_eq!(finished.step("canary").0, Status::Cancelled);
    assert_eq!(canary_weight(&estate.emulator), 0, "{}", finished.log());
}

#[tokio::test]
async fn an_error_rate_rising_at_25_percent_sends_traffic_back_to_stable() {
    let estate = estate().await;
    // The canary starts failing once it gets a quarter of the traffic.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (emulator, service, seen) = (
            Arc::clone(&estate.emulator),
            Arc::clone(&estate.service),
            Arc::clone(&seen),
        );
        tokio::spawn(async move {
            loop {
                let weight = canary_weight(&emulator);
                let changed = {
                    let mut seen = seen.lock().unwrap();
                    let changed = seen.last() != Some(&weight);
                    if changed {
                        seen.push(weight);
                    }
                    changed
                };
                if changed && weight == 25 {
                    service.update(|state| {
                        state.traffic.set("canary", 0.30, Duration::from_millis(40))
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let body = shift(&estate.prometheus.url, "[5, 10, 25, 50, 100]", "5s");
    let finished = run_on(&body, estate.kubeconfig.clone(), None).await;
    watcher.abort();
    let (status, summary, _) = finished.step("canary");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("canary at 25%: error_rate = "),
        "{summary}"
    );
    assert!(
        summary.ends_with("all traffic is back on stable"),
        "{summary}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..4], [0, 5, 10, 25], "{seen:?}");
    assert!(!seen.contains(&50), "the canary reached 50%: {seen:?}");
    assert_eq!(canary_weight(&estate.emulator), 0);
    assert_eq!(kubectl_weights(&estate.kubeconfig).await, "100 0");
}

#[tokio::test]
async fn blue_green_switches_the_service_selector_and_rollback_switches_it_back() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"selector": {"app": "api", "version": "blue"}, "ports": [{"port": 80}]}
    }));
    let body = "[runbook]\nname = \"blue-green\"\n\n[[steps]]\nid = \"switch\"\nuses = \"canary-shift\"\nwith.router = { type = \"service\", namespace = \"shop\", service = \"api\", stable = \"blue\", canary = \"green\" }\nwith.stages = [100]\nwith.hold = \"1s\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Service\"], verbs = [\"get\", \"patch\"] }\n\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";
    let selector = |emulator: &KubeEmulator| {
        emulator.get("v1", "Service", Some("shop"), "api").unwrap()["spec"]["selector"]["version"]
            .clone()
    };
    let finished = run_on(body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("switch");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(finished.step("smoke").0, Status::Failed);
    assert!(
        finished
            .lines()
            .join("\n")
            .contains("all traffic in Service shop/api is back on stable")
    );
    assert_eq!(selector(&emulator), "blue");
    let requests = emulator.requests();
    assert!(
        requests
            .iter()
            .filter(|request| request.starts_with("PATCH"))
            .count()
            == 2,
        "{requests:#?}"
    );
}

#[tokio::test]
async fn a_gateway_api_route_moves_its_backend_weights() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"rules": [{"backendRefs": [{"name": "api-stable", "port": 80, "weight": 100}, {"name": "api-canary", "port": 80, "weight": 0}]}]}
    }));
    let body = "[runbook]\nname = \"gateway\"\n\n[[steps]]\nid = \"shift\"\nuses = \"canary-shift\"\nwith.router = { type = \"gateway-api\", namespace = \"shop\", http_route = \"api\", stable = \"api-stable\", canary = \"api-canary\" }\nwith.stages = [20, 100]\nwith.hold = \"200ms\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"gateway.networking.k8s.io/v1/HTTPRoute\"], verbs = [\"get\", \"patch\"] }\n";
    let finished = run_on(body, kubeconfig, None).await;
    let (status, summary, _) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}");
    let route = emulator
        .get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("shop"),
            "api",
        )
        .unwrap();
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 100);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["port"], 80);
}

/// The refusal to switch onto the serving colour does not stop traffic
/// going home: with green serving, `stages = [0]` puts blue back.
#[tokio::test]
async fn blue_green_stage_zero_sends_traffic_home_from_the_serving_colour() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"selector": {"app": "api", "version": "green"}, "ports": [{"port": 80}]}
    }));
    let body = "[runbook]\nname = \"blue-green\"\n\n[[steps]]\nid = \"home\"\nuses = \"canary-shift\"\nwith.router = { type = \"service\", namespace = \"shop\", service = \"api\", stable = \"blue\", canary = \"green\" }\nwith.stages = [0]\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Service\"], verbs = [\"get\", \"patch\"] }\n";
    let finished = run_on(body, kubeconfig.clone(), None).await;
    let (status, summary, outputs) = finished.step("home");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "all traffic in Service shop/api is home on stable (the canary had 100%)"
    );
    assert_eq!(outputs["initial_canary_weight"], "100");
    assert_eq!(
        kubectl_get(
            &kubeconfig,
            "shop",
            "service/api",
            "{.spec.selector.version}"
        )
        .await,
        "blue"
    );
}
