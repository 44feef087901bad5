//! The smoke-test plugin against a real local HTTP server.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use runbook_testenv::SampleService;
use std::collections::BTreeMap;
use std::time::Duration;

fn runbook(base: &str, checks: &str, extra: &str) -> String {
    format!(
        "[runbook]\nname = \"smoke\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"smoke-test\"\nwith.checks = [\n{checks}\n]\ngrants.http = [\"{base}\"]\n{extra}\n"
    )
}

#[tokio::test]
async fn a_healthy_service_passes_every_check_with_one_output_per_check() {
    let service = SampleService::start(Some("key-1")).await.unwrap();
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "health", url = "{base}/health", expect_json = {{ status = "healthy", "checks.database" = "ok" }}, max_latency = "2s" }},
{{ name = "live", url = "{base}/health/live", expect_body_contains = "ok" }},
{{ name = "api", url = "{base}/v1/decisions", headers = {{ "X-API-Key" = "${{{{ secrets.KEY }}}}" }}, expect_status = [200, 204] }},"#
    );
    let finished = run(
        &runbook(&base, &checks, "grants.secrets = [\"KEY\"]"),
        RunOptions {
            secrets: BTreeMap::from([("KEY".to_owned(), "key-1".to_owned())]),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, outputs) = finished.step("smoke");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "3 checks passed");
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        ["api", "health", "live"]
    );
    assert!(outputs["health"].starts_with("200 in "), "{outputs:?}");
}

#[tokio::test]
async fn a_wrong_status_fails_naming_the_check_and_what_differed() {
    let service = SampleService::start(Some("right")).await.unwrap();
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "api", url = "{base}/v1/decisions", headers = {{ "X-API-Key" = "wrong" }} }},"#
    );
    let finished = run(&runbook(&base, &checks, ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Failed);
    assert!(summary.contains("check `api` (GET"), "{summary}");
    assert!(
        summary.contains("expected status 200, got 401"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_json_field_mismatch_names_the_field_and_both_values() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.healthy = false);
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "health", url = "{base}/health", expect_status = 503, expect_json = {{ status = "healthy" }} }},"#
    );
    let finished = run(&runbook(&base, &checks, ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("expected JSON field `status` = \"healthy\", got \"degraded\""),
        "{summary}"
    );
}

#[tokio::test]
async fn a_slow_answer_fails_max_latency() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.delay = Duration::from_millis(300));
    let base = service.base_url();
    let checks = format!(r#"{{ name = "health", url = "{base}/health", max_latency = "100ms" }},"#);
    let finished = run(&runbook(&base, &checks, ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Failed);
    assert!(summary.contains("more than max_latency 100ms"), "{summary}");
}

#[tokio::test]
async fn retry_for_waits_until_the_service_becomes_healthy() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.healthy = false);
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "health", url = "{base}/health", expect_json = {{ status = "healthy" }} }},"#
    );
    let body = runbook(
        &base,
        &checks,
        "with.retry_for = \"20s\"\nwith.interval = \"100ms\"",
    );
    let recover = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        service.update(|state| state.healthy = true);
    };
    let (finished, ()) = tokio::join!(run(&body, RunOptions::default()), recover);
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(summary.contains("after"), "{summary}");
    assert!(service.state().received.len() >= 3);
}

#[tokio::test]
async fn retry_for_gives_up_after_its_deadline() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.healthy = false);
    let base = service.base_url();
    let checks = format!(r#"{{ name = "health", url = "{base}/health" }},"#);
    let body = runbook(
        &base,
        &checks,
        "with.retry_for = \"600ms\"\nwith.interval = \"100ms\"",
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("after") && summary.contains("attempts"),
        "{summary}"
    );
    assert!(summary.contains("got 503"), "{summary}");
}

#[tokio::test]
async fn a_refused_connection_is_reported_with_its_cause() {
    let base = "http://127.0.0.1:9";
    let checks = format!(r#"{{ name = "down", url = "{base}/health" }},"#);
    let finished = run(&runbook(base, &checks, ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Failed);
    assert!(summary.contains("could not connect"), "{summary}");
}

/// A service that does not answer (or answers 5xx) past `retry_for` fails
/// the check transiently, so the step's `retries` tries it again later; a
/// wrong answer fails at once, since trying again would only repeat it.
#[tokio::test]
async fn only_an_unavailable_service_is_a_transient_failure_that_retries_try_again() {
    let tries = |finished: &crate::support::Finished| {
        finished
            .events
            .iter()
            .filter(|(event, _)| matches!(event.kind, runbook::events::EventKind::StepRetry { .. }))
            .count()
    };
    // Nothing listens on this port: a refused connection.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{closed}");
    let retries = "retries = { attempts = 3, backoff = \"10ms\" }";
    let unavailable = run(
        &runbook(&base, &format!("{{ url = \"{base}/health\" }},"), retries),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = unavailable.step("smoke");
    assert_eq!(status, Status::Failed, "{summary}");
    assert_eq!(tries(&unavailable), 2, "{}", unavailable.log());

    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let wrong = run(
        &runbook(
            &base,
            &format!("{{ url = \"{base}/health\", expect_status = 404 }},"),
            retries,
        ),
        RunOptions::default(),
    )
    .await;
    assert_eq!(wrong.step("smoke").0, Status::Failed);
    assert_eq!(tries(&wrong), 0, "{}", wrong.log());
}
