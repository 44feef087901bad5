//! StoneCaster (seed 004): `runbooks/stonecaster.toml` end to end on the local estate.

use super::*;

#[tokio::test]
async fn stonecaster_shifts_traffic_to_green_in_five_held_stages() {
    let _turn = turn().await;
    let before = estate().sample.state().webhooks.len();
    let finished = deploy("stonecaster", "1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of("stonecaster", "stonecaster-green"), "1.2.3");
    assert_eq!(stonecaster_traffic(), [0, 100]);
    let (_, summary, _) = finished.step("traffic");
    assert!(
        summary.starts_with("canary 0% → 100% in 5 stages"),
        "{summary}"
    );
    // `[notify]` told the channel as it went: the start, each of the five
    // stages, the end.
    let posted: Vec<String> = estate().sample.state().webhooks[before..]
        .iter()
        .map(|message| message["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        posted.first().map(String::as_str),
        Some("stonecaster: started in local by tester (run test-run)"),
        "{posted:#?}"
    );
    let stages = posted
        .iter()
        .filter(|text| text.starts_with("stonecaster local: traffic: canary at "))
        .count();
    assert_eq!(stages, 5, "{posted:#?}");
    assert!(
        posted
            .last()
            .is_some_and(|text| text.starts_with("stonecaster local: succeeded in ")),
        "{posted:#?}"
    );
}

#[tokio::test]
async fn stonecaster_with_a_failed_migration_rolls_back_before_any_traffic_moves() {
    let _turn = turn().await;
    estate().kube.job_outcome(
        "stonecaster-migrate-1.3.0",
        1,
        "applying 0042_split_accounts\nERROR: duplicate key value violates unique constraint \"accounts_email_key\"\n",
    );
    let finished = deploy("stonecaster", "1.3.0").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("migrate"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("migrate");
    assert!(summary.contains("exit code 1"), "{summary}");
    assert!(summary.contains("accounts_email_key"), "{summary}");
    assert_eq!(
        image_of("stonecaster", "stonecaster-green"),
        estate::INITIAL_VERSION
    );
    assert_eq!(stonecaster_traffic(), [100, 0]);
    assert_eq!(tag_digest("stonecaster/app", "1.3.0").await, None);
}
