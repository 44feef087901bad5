//! Enterprise API Platform (seed 001): `runbooks/api-platform.toml` end to end on the local estate.

use super::*;

const SERVICES: [&str; 3] = ["auth-service", "user-service", "org-service"];

#[tokio::test]
async fn api_platform_snapshots_migrates_and_rolls_out_three_services() {
    let _turn = turn().await;
    let finished = deploy("api-platform", "1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    for service in SERVICES {
        assert_eq!(image_of("production", service), "1.2.3", "{service}");
        let pushed = tag_digest(&format!("api-platform/{service}"), "1.2.3").await;
        assert!(pushed.is_some(), "{service}:1.2.3 pushed");
        assert_eq!(
            tag_digest(&format!("api-platform/{service}"), "latest").await,
            pushed,
            "{service}:latest"
        );
    }
    let snapshot =
        tokio::task::spawn_blocking(|| snapshot_exists("api-platform-prod-pre-test-run"))
            .await
            .unwrap();
    assert!(snapshot, "the snapshot is available in RDS");
}

#[tokio::test]
async fn api_platform_with_failing_health_checks_restores_every_service() {
    let _turn = turn().await;
    let before: Vec<Option<String>> = {
        let mut tags = Vec::new();
        for service in SERVICES {
            tags.push(tag_digest(&format!("api-platform/{service}"), "latest").await);
        }
        tags
    };
    let finished = deploy("api-platform", "1.2.4").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("health"),
        "{}",
        finished.log()
    );
    for (service, latest) in SERVICES.iter().zip(before) {
        assert_eq!(
            image_of("production", service),
            estate::INITIAL_VERSION,
            "{service}"
        );
        assert_eq!(
            tag_digest(&format!("api-platform/{service}"), "1.2.4").await,
            None,
            "{service}:1.2.4 removed\n{}",
            finished.log()
        );
        assert_eq!(
            tag_digest(&format!("api-platform/{service}"), "latest").await,
            latest,
            "{service}:latest restored"
        );
    }
    assert!(
        estate().sample.state().healthy,
        "the old version serves again"
    );
}
