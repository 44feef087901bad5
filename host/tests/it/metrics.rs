//! The `metrics-gate` plugin against a real Prometheus scraping the sample
//! service, whose error rate and latency the test sets.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use runbook_testenv::{Prometheus, SampleService};
use std::time::Duration;

pub const ERROR_RATE: &str = r#"sum(rate(http_requests_total{track="TRACK",code="500"}[5s])) / sum(rate(http_requests_total{track="TRACK"}[5s]))"#;
pub const P95: &str = r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{track="TRACK"}[5s])))"#;

/// The sample service with a `stable` track, and Prometheus scraping it
/// with data for the error rate already there.
pub async fn monitored(error_rate: f64, latency: Duration) -> (SampleService, Prometheus) {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.traffic.set("stable", error_rate, latency));
    let target = service.address.to_string();
    let prometheus = tokio::task::spawn_blocking(move || {
        let prometheus = Prometheus::start(&[target]);
        prometheus.wait_for(&ERROR_RATE.replace("TRACK", "stable"));
        prometheus
    })
    .await
    .unwrap();
    (service, prometheus)
}

fn gate(prometheus: &str) -> String {
    format!(
        "[runbook]\nname = \"monitor\"\n\n[[steps]]\nid = \"gate\"\nuses = \"metrics-gate\"\nwith.prometheus = \"{prometheus}\"\nwith.duration = \"3s\"\nwith.interval = \"1s\"\nwith.checks = [\n  {{ name = \"error_rate\", query = '{}', max = 0.02 }},\n  {{ name = \"p95\", query = '{}', max = 0.5 }},\n]\ngrants.http = [\"{prometheus}/api/v1/query\"]\n",
        ERROR_RATE.replace("TRACK", "stable"),
        P95.replace("TRACK", "stable")
    )
}

#[tokio::test]
async fn a_healthy_service_passes_every_round() {
    let (_service, prometheus) = monitored(0.005, Duration::from_millis(40)).await;
    let finished = run(&gate(&prometheus.url), RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("gate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(summary.contains("all within limits"), "{summary}");
    let error_rate: f64 = outputs["error_rate"].parse().unwrap();
    assert!((0.004..0.006).contains(&error_rate), "{outputs:?}");
    let p95: f64 = outputs["p95"].parse().unwrap();
    assert!(p95 > 0.025 && p95 <= 0.05, "{outputs:?}");
    assert!(
        outputs["rounds"].parse::<u32>().unwrap() >= 3,
        "{outputs:?}"
    );
}

#[tokio::test]
async fn an_error_rate_above_its_threshold_fails_the_gate_with_the_value() {
    let (_service, prometheus) = monitored(0.10, Duration::from_millis(40)).await;
    let finished = run(&gate(&prometheus.url), RunOptions::default()).await;
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("error_rate = 0.1 is above 0.02 (1 failed round of 1, limit 0)"),
        "{summary}"
    );
}
