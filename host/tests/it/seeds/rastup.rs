//! RastUp (seed 003): `runbooks/rastup.toml` end to end on the local estate.

use super::*;

#[tokio::test]
async fn rastup_snapshots_migrates_shifts_traffic_and_raises_the_flag() {
    let _turn = turn().await;
    let finished = deploy("rastup", "1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of("rastup-prod", "rastup-api"), "1.2.3");
    // The canary proved 1.2.3 at 100%, stable now runs it, and traffic is
    // home on stable: the next run's canary starts from 0%.
    assert_eq!(rastup_traffic(), [100, 0]);
    assert_eq!(flag("new_checkout"), 100);
    let snapshot = tokio::task::spawn_blocking(|| snapshot_exists("pre-deploy-test-run"))
        .await
        .unwrap();
    assert!(snapshot);
}

#[tokio::test]
async fn rastup_with_canary_latency_above_its_baseline_returns_traffic_and_rolls_back() {
    let _turn = turn().await;
    let finished = deploy("rastup", "1.2.4").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("traffic"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("traffic");
    assert!(summary.starts_with("canary at 10%"), "{summary}");
    assert!(
        summary.contains("all traffic is back on stable"),
        "{summary}"
    );
    assert_eq!(rastup_traffic(), [100, 0]);
    assert_eq!(
        image_of("rastup-prod", "rastup-api-canary"),
        estate::INITIAL_VERSION
    );
    assert_eq!(
        image_of("rastup-prod", "rastup-api"),
        estate::INITIAL_VERSION
    );
    assert_eq!(flag("new_checkout"), 0);
    let downgrade = estate().kube.get(
        "batch/v1",
        "Job",
        Some("rastup-prod"),
        "rastup-migrate-1.2.4-rollback",
    );
    assert!(downgrade.is_some(), "the migration was undone");
}
