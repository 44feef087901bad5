//! RISKCAST (seed 000): `runbooks/riskcast.toml` end to end on the local estate.

use super::*;

#[tokio::test]
async fn riskcast_deploys_through_its_canary_and_raises_the_flag() {
    let _turn = turn().await;
    let finished = deploy("riskcast", "1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of("riskcast-prod", "riskcast-api"), "1.2.3");
    assert_eq!(image_of("riskcast-prod", "riskcast-api-canary"), "1.2.3");
    assert_eq!(riskcast_traffic(), [100, 0]);
    assert_eq!(flag("new_feature"), 100);
    assert_eq!(
        tag_digest("riskcast/api", "1.2.3").await.as_deref(),
        finished.step("push").2.get("digest").map(String::as_str)
    );
    assert!(
        estate()
            .kube
            .get(
                "batch/v1",
                "Job",
                Some("riskcast-prod"),
                "riskcast-migrate-1.2.3"
            )
            .is_some()
    );
    assert!(
        last_message().starts_with("riskcast local: succeeded"),
        "{}",
        last_message()
    );
}

#[tokio::test]
async fn riskcast_with_a_canary_that_breaches_its_error_rate_rolls_everything_back() {
    let _turn = turn().await;
    let finished = deploy("riskcast", "1.2.4").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("canary-traffic"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("canary-traffic");
    assert!(
        summary.starts_with("canary at 10%: error_rate = "),
        "{summary}"
    );
    riskcast_is_as_before("1.2.4", None).await;
    assert!(
        last_message().starts_with("riskcast local: failed at step `canary-traffic`"),
        "{}",
        last_message()
    );
}

/// RISKCAST as before a run of `version`: images, traffic, flag, the
/// registry tag as it was (`tag_before`); and the migration was downgraded.
async fn riskcast_is_as_before(version: &str, tag_before: Option<String>) {
    assert_eq!(
        image_of("riskcast-prod", "riskcast-api"),
        estate::INITIAL_VERSION
    );
    assert_eq!(
        image_of("riskcast-prod", "riskcast-api-canary"),
        estate::INITIAL_VERSION
    );
    assert_eq!(riskcast_traffic(), [100, 0]);
    assert_eq!(flag("new_feature"), 0);
    assert_eq!(tag_digest("riskcast/api", version).await, tag_before);
    let downgrade = estate()
        .kube
        .get(
            "batch/v1",
            "Job",
            Some("riskcast-prod"),
            &format!("riskcast-migrate-{version}-rollback"),
        )
        .expect("the downgrade Job ran");
    assert_eq!(downgrade["status"]["succeeded"], 1);
}

/// Seeds: DOC-0020 lets on-call roll back in the first hour; RISKCAST's
/// "full rollback" undoes the image, the migration and the flag. A run
/// that succeeded is undone after the fact by `runbook rollback`, through
/// the same journaled rollback a failure runs.
#[tokio::test]
async fn riskcast_rolled_back_after_it_succeeded_restores_the_estate() {
    let _turn = turn().await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = Some(state.path().to_path_buf());
    // The registry keeps what earlier tests pushed: the tag must be left
    // as it was before this run, whatever that was.
    let tag_before = tag_digest("riskcast/api", "1.2.3").await;
    let finished = deploy_keeping_state("riskcast", "1.2.3", state_dir.clone()).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_eq!(image_of("riskcast-prod", "riskcast-api"), "1.2.3");
    assert_eq!(flag("new_feature"), 100);

    let options = RunOptions {
        state_dir,
        ..local_options()
    };
    let rolled = roll_back(&runtime(), "test-run", options).await;
    assert_eq!(rolled.report.status, Status::RolledBack, "{}", rolled.log());
    assert!(
        rolled.report.rollback_failures.is_empty(),
        "{}",
        rolled.log()
    );
    riskcast_is_as_before("1.2.3", tag_before).await;
    assert!(
        last_message().starts_with("riskcast local: rolled_back"),
        "{}",
        last_message()
    );
}
