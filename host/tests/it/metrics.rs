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

/// A gate on the `stable` track's error rate with `extra` fields (`for`,
/// a baseline) and the hold's `duration`.
fn sustained_gate(prometheus: &str, check: &str, duration: &str) -> String {
    format!(
        "[runbook]\nname = \"monitor\"\n\n[[steps]]\nid = \"gate\"\nuses = \"metrics-gate\"\nwith.prometheus = \"{prometheus}\"\nwith.duration = \"{duration}\"\nwith.interval = \"1s\"\nwith.checks = [{check}]\ngrants.http = [\"{prometheus}/api/v1/query\"]\n",
    )
}

#[tokio::test]
async fn a_spike_shorter_than_for_does_not_fail_the_gate() {
    let (service, prometheus) = monitored(0.005, Duration::from_millis(40)).await;
    let check = format!(
        "{{ name = \"error_rate\", query = '{}', max = 0.02, for = \"30s\" }}",
        ERROR_RATE.replace("TRACK", "stable")
    );
    let body = sustained_gate(&prometheus.url, &check, "14s");
    let spike = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        service.update(|state| state.traffic.set("stable", 0.5, Duration::from_millis(40)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        service.update(|state| {
            state
                .traffic
                .set("stable", 0.005, Duration::from_millis(40))
        });
        service
    });
    let finished = run(&body, RunOptions::default()).await;
    let _service = spike.await.unwrap();
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    // The spike was seen, and did not count.
    let warned = finished.lines().iter().any(|line| {
        line.contains("\"level\":\"warn\"")
            && line.contains("error_rate = ")
            && line.contains("is above 0.02")
    });
    assert!(warned, "the spike was never seen: {:#?}", finished.lines());
}

#[tokio::test]
async fn a_breach_held_for_its_duration_fails_the_gate_even_past_the_hold() {
    let (_service, prometheus) = monitored(0.10, Duration::from_millis(40)).await;
    let check = format!(
        "{{ name = \"error_rate\", query = '{}', max = 0.02, for = \"30s\" }}",
        ERROR_RATE.replace("TRACK", "stable")
    );
    // The hold is shorter than `for`: the gate keeps watching the breach
    // until it counts, rather than passing when the hold ends.
    let body = sustained_gate(&prometheus.url, &check, "5s");
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("error_rate = 0.1 is above 0.02, failing for 3"),
        "{summary}"
    );
    assert!(summary.contains("(limit 30s)"), "{summary}");
}

#[tokio::test]
async fn a_canary_more_than_ten_percent_above_its_baseline_fails() {
    let (service, prometheus) = monitored(0.01, Duration::from_millis(40)).await;
    service.update(|state| state.traffic.set("canary", 0.03, Duration::from_millis(40)));
    let canary = ERROR_RATE.replace("TRACK", "canary");
    {
        let canary = canary.clone();
        let prometheus = prometheus.url.clone();
        tokio::task::spawn_blocking(move || Prometheus::wait_for_at(&prometheus, &canary))
            .await
            .unwrap();
    }
    let check = |increase: &str| {
        format!(
            "{{ name = \"error_rate\", query = '{canary}', baseline = '{}', max_increase = {increase} }}",
            ERROR_RATE.replace("TRACK", "stable")
        )
    };
    let finished = run(
        &sustained_gate(&prometheus.url, &check("\"10%\""), "1s"),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("error_rate = 0.0")
            && summary.contains(" is more than 10% above the baseline 0.0"),
        "{summary}"
    );
    // Two percentage points more are allowed as a number in the metric's unit.
    let finished = run(
        &sustained_gate(&prometheus.url, &check("0.025"), "1s"),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Succeeded, "{summary}");
}

/// A gate on a CloudWatch metric in moto, where the test put `value`.
async fn cloudwatch_gate(value: &'static str) -> crate::support::Finished {
    let moto = tokio::task::spawn_blocking(move || {
        let moto = runbook_testenv::Moto::start();
        let put = moto.cloudwatch(
            "PutMetricData",
            &[
                ("Namespace", "RastUp/API"),
                ("MetricData.member.1.MetricName", "Errors"),
                (
                    "MetricData.member.1.Dimensions.member.1.Name",
                    "FunctionName",
                ),
                ("MetricData.member.1.Dimensions.member.1.Value", "api"),
                ("MetricData.member.1.Value", value),
                ("MetricData.member.1.Unit", "Count"),
            ],
        );
        assert!(put.starts_with("HTTP/1.1 200"), "{put}");
        moto
    })
    .await
    .unwrap();
    let body = "[runbook]\nname = \"monitor\"\n\n[[steps]]\nid = \"gate\"\nuses = \"metrics-gate\"\nwith.cloudwatch = { region = \"us-east-1\" }\nwith.duration = \"1s\"\nwith.interval = \"1s\"\nwith.checks = [{ name = \"errors\", query = { namespace = \"RastUp/API\", metric = \"Errors\", dimensions = { FunctionName = \"api\" }, stat = \"Sum\", period = \"1m\" }, max = 5 }]\ngrants.aws = { services = [\"monitoring\"], actions = [\"GetMetricData\"], regions = [\"us-east-1\"] }\n";
    let options = RunOptions {
        aws: Some(runbook::capability::aws::AwsAccess {
            credentials: Some(runbook::capability::aws::sigv4::Credentials {
                access_key_id: "AKIDTEST".into(),
                secret_access_key: "test-secret".into(),
                session_token: None,
            }),
            endpoint: Some(url::Url::parse(&moto.url).unwrap()),
        }),
        ..RunOptions::default()
    };
    run(body, options).await
}

#[tokio::test]
async fn a_cloudwatch_gate_reads_the_metric_and_passes_within_its_limit() {
    let finished = cloudwatch_gate("3").await;
    let (status, summary, outputs) = finished.step("gate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["errors"], "3", "{outputs:?}");
    assert!(
        finished
            .log()
            .contains("monitoring:GetMetricData in us-east-1"),
        "the call is recorded"
    );
}

#[tokio::test]
async fn a_cloudwatch_gate_fails_above_its_limit() {
    let finished = cloudwatch_gate("9").await;
    let (status, summary, _) = finished.step("gate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(summary.starts_with("errors = 9 is above 5"), "{summary}");
}
