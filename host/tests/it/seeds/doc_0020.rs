//! DOC-0020 (seed 002): `runbooks/doc-0020.toml` end to end on the local estate.

use super::*;

#[tokio::test]
async fn doc_0020_deploys_green_and_switches_the_service_to_it() {
    let _turn = turn().await;
    let finished = deploy("doc-0020", "1.2.3").await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of("doc-0020", "ledger-green"), "1.2.3");
    assert_eq!(image_of("doc-0020", "ledger-blue"), estate::INITIAL_VERSION);
    assert_eq!(selector("doc-0020", "ledger"), "green");
}

#[tokio::test]
async fn doc_0020_with_a_failed_smoke_test_on_green_never_switches_and_restores_green() {
    let _turn = turn().await;
    let finished = deploy("doc-0020", "1.2.4").await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("smoke-idle"),
        "{}",
        finished.log()
    );
    assert_eq!(selector("doc-0020", "ledger"), "blue");
    assert_eq!(
        image_of("doc-0020", "ledger-green"),
        estate::INITIAL_VERSION
    );
    assert_eq!(tag_digest("doc-0020/ledger", "1.2.4").await, None);
}
