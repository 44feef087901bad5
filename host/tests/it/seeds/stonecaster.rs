//! StoneCaster (seed 004): `runbooks/stonecaster.toml` end to end on the
//! local estate: blue/green at the load balancer (moto's ELBv2), alembic
//! migrations on PostgreSQL, the snapshot in moto's RDS.

use super::*;
use runbook::engine::Ask;
use runbook::events::Choice;
use std::sync::Arc;

/// A person at the terminal: ticks every checklist, and at a decision
/// point ("consider rollback") chooses to roll back.
struct Operator;

impl Ask for Operator {
    fn tick(&self, _step: &str, items: &[String]) -> Result<Vec<String>, String> {
        Ok(items.to_vec())
    }

    fn decide(&self, _step: &str, _failure: &str) -> Option<Choice> {
        Some(Choice::Rollback)
    }
}

/// Runs StoneCaster at `version` on the estate as it stands (no reset: a
/// second release sees what the first left).
async fn release(version: &str) -> Finished {
    let estate = estate();
    tokio::task::spawn_blocking(move || estate.wait_until_calm())
        .await
        .unwrap();
    let options = RunOptions {
        sets: vec![("version".into(), version.into())],
        ask: Some(Arc::new(Operator)),
        ..local_options()
    };
    let path = workspace_root().join("runbooks/stonecaster.toml");
    run_file(&runtime(), &path, options).await
}

/// [`release`] after putting the estate back as before any deploy.
async fn first_release(version: &str) -> Finished {
    estate().reset();
    release(version).await
}

/// `(blue, green)` weights of the listener.
fn traffic() -> (u32, u32) {
    estate().stonecaster.weights(&estate().moto.url)
}

fn replicas(deployment: &str) -> u64 {
    estate()
        .kube
        .get("apps/v1", "Deployment", Some("stonecaster"), deployment)
        .unwrap()["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

fn schema_version() -> String {
    schema_of("stonecaster")
}

fn instance_exists(identifier: &str) -> bool {
    runbook_testenv::moto::query_at(
        &estate().moto.url,
        "rds",
        "2014-10-31",
        "DescribeDBInstances",
        &[("DBInstanceIdentifier", identifier)],
    )
    .contains("<DBInstanceIdentifier>")
}

/// Blue as before any deploy: it runs 1.0.0 and takes all traffic; green
/// runs 1.0.0, stopped, with none; the schema is back at 0001.
fn stonecaster_is_as_before(finished: &Finished) {
    assert_eq!(
        image_of("stonecaster", "stonecaster-blue"),
        estate::INITIAL_VERSION
    );
    assert_eq!(
        image_of("stonecaster", "stonecaster-green"),
        estate::INITIAL_VERSION,
        "{}",
        finished.log()
    );
    assert_eq!(replicas("stonecaster-green"), 0, "{}", finished.log());
    let (blue, green) = traffic();
    assert!(
        blue > 0 && green == 0,
        "blue {blue}, green {green}\n{}",
        finished.log()
    );
    assert_eq!(schema_version(), "0001", "{}", finished.log());
}

#[tokio::test]
async fn stonecaster_shifts_to_the_idle_colour_and_the_next_release_goes_to_the_other() {
    let _turn = turn().await;
    let finished = first_release("1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of("stonecaster", "stonecaster-green"), "1.2.3");
    assert_eq!(
        image_of("stonecaster", "stonecaster-blue"),
        estate::INITIAL_VERSION
    );
    assert_eq!(traffic(), (0, 100));
    assert_eq!(replicas("stonecaster-blue"), 0);
    assert_eq!(replicas("stonecaster-green"), 3);
    assert_eq!(schema_version(), "0002");
    assert!(snapshot_exists("stonecaster-test-run"));
    // The idle colour was tested on its own url before any traffic moved.
    assert!(
        estate()
            .stonecaster
            .green
            .state()
            .received
            .iter()
            .any(|request| request.path == "/health")
    );
    for stage in ["shift-5", "shift-10", "shift-25", "shift-50", "shift-100"] {
        assert_eq!(finished.step(stage).0, Status::Succeeded, "{stage}");
    }
    assert!(
        last_message().starts_with("stonecaster local: succeeded"),
        "{}",
        last_message()
    );

    // The next release goes onto blue, idle now; green is stopped after it.
    let second = release("1.3.0").await;
    assert_eq!(second.report.status, Status::Succeeded, "{}", second.log());
    assert_eq!(image_of("stonecaster", "stonecaster-blue"), "1.3.0");
    assert_eq!(image_of("stonecaster", "stonecaster-green"), "1.2.3");
    assert_eq!(traffic(), (100, 0));
    assert_eq!(replicas("stonecaster-blue"), 3);
    assert_eq!(replicas("stonecaster-green"), 0);
    assert_eq!(schema_version(), "0002");
}

#[tokio::test]
async fn stonecaster_with_an_error_rate_breach_returns_all_traffic_to_the_old_colour() {
    let _turn = turn().await;
    // 1.2.4 is a bad release: healthy on its own url, 30% errors under traffic.
    let finished = first_release("1.2.4").await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    let failed = finished.report.failed_step.clone().unwrap_or_default();
    assert!(
        failed.starts_with("hold-") || failed.starts_with("decide-"),
        "{failed}\n{}",
        finished.log()
    );
    assert_eq!(finished.step("shift-5").0, Status::Succeeded);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished.report.rollback_failures.is_empty(),
        "{}",
        finished.log()
    );
    stonecaster_is_as_before(&finished);
    assert!(snapshot_exists("stonecaster-test-run"));
    assert!(
        last_message().starts_with("stonecaster local: failed at step"),
        "{}",
        last_message()
    );
}

#[tokio::test]
async fn stonecaster_with_a_failed_migration_restores_the_snapshot_and_touches_no_colour() {
    let _turn = turn().await;
    estate().reset();
    // Two accounts with one email: 0002's unique index cannot be built.
    estate().postgres.sql_in(
        "stonecaster",
        "insert into accounts (email) values ('ada@example.com'), ('ada@example.com')",
    );
    let finished = release("1.2.3").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("migrate"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("migrate");
    assert!(summary.contains("accounts_email_key"), "{summary}");
    assert_eq!(
        finished.step("restore-db").0,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert!(instance_exists("stonecaster-restore-test-run"));
    assert_eq!(finished.step("provision").0, Status::Skipped);
    assert_eq!(
        finished.step("after-rollback-integrity").0,
        Status::Succeeded
    );
    stonecaster_is_as_before(&finished);
}

#[tokio::test]
async fn stonecaster_with_an_unhealthy_idle_colour_never_moves_traffic() {
    let _turn = turn().await;
    let finished = first_release(estate::STONECASTER_UNHEALTHY_VERSION).await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("verify-idle"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("verify-idle");
    assert!(summary.contains("degraded"), "{summary}");
    assert_eq!(finished.step("shift-5").0, Status::Skipped);
    // The public url was never what the idle colour was tested through.
    assert!(
        estate()
            .stonecaster
            .green
            .state()
            .received
            .iter()
            .any(|request| request.path == "/health")
    );
    stonecaster_is_as_before(&finished);
}
