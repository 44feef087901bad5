//! RISKCAST (seed 000): `runbooks/riskcast.toml` end to end on the local
//! estate, in each of the seed's strategies, with the seed's rollbacks.

use super::*;

/// RISKCAST's schema revision (`alembic_version`).
fn riskcast_schema() -> String {
    schema_of("riskcast")
}

/// The colour RISKCAST's Service sends traffic to.
fn riskcast_live_colour() -> String {
    selector("riskcast-prod", "riskcast-api")
}

/// PagerDuty events the estate received so far.
fn pages() -> Vec<Value> {
    estate().sample.state().pages
}

#[tokio::test]
async fn riskcast_deploys_through_its_canary_migrates_and_raises_the_flag() {
    let _turn = turn().await;
    let pages_before = pages().len();
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
    // The canary's traffic came home once the main Deployment had it.
    assert_eq!(riskcast_traffic(), [100, 0]);
    assert_eq!(flag("new_feature"), 100);
    assert_eq!(
        tag_digest("riskcast/api", "1.2.3").await.as_deref(),
        finished.step("push").2.get("digest").map(String::as_str)
    );
    // A real migration: the schema is at head, and the revision read
    // before it is what a rollback would go back to.
    assert_eq!(riskcast_schema(), "0002");
    assert_eq!(finished.step("schema-before").2["revision"], "0001");
    // The monitoring read each pod's CPU and memory against its limits
    // (the estate's pods use 30% and 39%).
    let monitored = finished.step("monitor").2;
    for (metric, expected) in [("cpu", 0.3), ("memory", 200.0 / 512.0)] {
        let value: f64 = monitored[metric].parse().unwrap();
        assert!((value - expected).abs() < 0.05, "{metric} = {value}");
    }
    // The blue/green colours were not touched by a canary release.
    assert_eq!(image_of("riskcast-prod", "riskcast-api-green"), "1.0.0");
    assert!(
        last_message().starts_with("riskcast local: succeeded"),
        "{}",
        last_message()
    );
    // A good end resolves, never pages.
    assert!(
        pages()[pages_before..]
            .iter()
            .all(|event| event["event_action"] != "trigger"),
        "{:?}",
        &pages()[pages_before..]
    );
}

#[tokio::test]
async fn riskcast_with_a_canary_that_breaches_its_error_rate_rolls_everything_back() {
    let _turn = turn().await;
    let pages_before = pages().len();
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
        last_message().contains("canary-traffic"),
        "{}",
        last_message()
    );
    // On-call was paged ("On-call: any deployment issue").
    assert!(
        pages()[pages_before..]
            .iter()
            .any(|event| event["event_action"] == "trigger"),
        "{:?}",
        &pages()[pages_before..]
    );
}

/// RISKCAST as before a run of `version`: images, traffic, the Service's
/// colour, flag, the registry tag as it was (`tag_before`), and the schema
/// downgraded to the revision it had.
async fn riskcast_is_as_before(version: &str, tag_before: Option<String>) {
    for deployment in [
        "riskcast-api",
        "riskcast-api-canary",
        "riskcast-api-blue",
        "riskcast-api-green",
    ] {
        assert_eq!(
            image_of("riskcast-prod", deployment),
            estate::INITIAL_VERSION,
            "{deployment}"
        );
    }
    assert_eq!(riskcast_traffic(), [100, 0]);
    assert_eq!(riskcast_live_colour(), "blue");
    assert_eq!(flag("new_feature"), 0);
    assert_eq!(tag_digest("riskcast/api", version).await, tag_before);
    assert_eq!(riskcast_schema(), estate::INITIAL_REVISION);
}

/// The seed's "Blue-Green Deployments": the idle colour gets the release
/// and its smoke tests, then the Service's selector; the next release goes
/// onto the colour that is idle then, never onto the live one.
#[tokio::test]
async fn riskcast_blue_green_deploys_the_idle_colour_and_alternates() {
    let _turn = turn().await;
    let state = tempfile::tempdir().unwrap();
    let first = deploy_with(
        "riskcast",
        "1.2.3",
        &[("strategy", "blue-green")],
        Some(state.path().to_path_buf()),
    )
    .await;
    assert_eq!(first.report.status, Status::Succeeded, "{}", first.log());
    assert_eq!(first.step("live-colour").2["colour"], "blue");
    assert_eq!(riskcast_live_colour(), "green");
    assert_eq!(image_of("riskcast-prod", "riskcast-api-green"), "1.2.3");
    assert_eq!(image_of("riskcast-prod", "riskcast-api-blue"), "1.0.0");
    assert_eq!(riskcast_schema(), "0002");
    // The smoke tests before the switch reached green only.
    let idle_checks: Vec<String> = estate()
        .sample
        .state()
        .received
        .iter()
        .map(|request| request.path.clone())
        .filter(|path| path.starts_with("/workloads/riskcast-api-"))
        .collect();
    assert!(
        idle_checks
            .iter()
            .all(|path| path.starts_with("/workloads/riskcast-api-green/")),
        "{idle_checks:?}"
    );
    // Canary parts were skipped: the VirtualService never moved.
    assert_eq!(first.step("canary-traffic").0, Status::Skipped);

    // The next release, without resetting the estate: green is live, so
    // blue gets it.
    let second = run_file(
        &runtime(),
        &workspace_root().join("runbooks/riskcast.toml"),
        RunOptions {
            sets: vec![
                ("version".into(), "1.3.0".into()),
                ("strategy".into(), "blue-green".into()),
            ],
            state_dir: Some(state.path().to_path_buf()),
            ..local_options()
        },
    )
    .await;
    assert_eq!(second.report.status, Status::Succeeded, "{}", second.log());
    assert_eq!(second.step("live-colour").2["colour"], "green");
    assert_eq!(riskcast_live_colour(), "blue");
    assert_eq!(image_of("riskcast-prod", "riskcast-api-blue"), "1.3.0");
    assert_eq!(image_of("riskcast-prod", "riskcast-api-green"), "1.2.3");
}

/// A bad release fails its smoke tests on the idle colour, which never
/// took traffic: the Service stays on the live colour, and the rollback
/// undoes the idle colour's image, the migration and the flag.
#[tokio::test]
async fn riskcast_blue_green_with_a_bad_release_never_switches_and_rolls_back() {
    let _turn = turn().await;
    let finished = deploy_with("riskcast", "1.2.4", &[("strategy", "blue-green")], None).await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("smoke-idle"),
        "{}",
        finished.log()
    );
    assert_eq!(finished.step("switch").0, Status::Skipped);
    assert!(finished.report.rolled_back, "{}", finished.log());
    riskcast_is_as_before("1.2.4", None).await;
}

/// A migration that fails on the data it finds (two decisions for one
/// request: the release's unique index cannot be built) stops the release
/// before any workload changes; the schema stays where it was.
#[tokio::test]
async fn riskcast_with_a_failing_migration_changes_no_workload() {
    let _turn = turn().await;
    let tag_before = tag_digest("riskcast/api", "1.2.3").await;
    let finished = deploy_after(
        "riskcast",
        "1.2.3",
        &[("strategy", "standard")],
        None,
        || {
            estate().postgres.sql_in(
                "riskcast",
                "insert into decisions (request_id, score) values ('r-1', 0.2), ('r-1', 0.3)",
            );
        },
    )
    .await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("migrate"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("migrate");
    assert!(summary.contains("decisions_request_id"), "{summary}");
    assert_eq!(finished.step("rollout-standard").0, Status::Skipped);
    riskcast_is_as_before("1.2.3", tag_before).await;
    // The data that stopped it is still there, untouched.
    assert_eq!(
        estate()
            .postgres
            .sql_in("riskcast", "select count(*) from decisions"),
        "2"
    );
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
    assert_eq!(riskcast_schema(), "0002");

    let options = RunOptions {
        state_dir,
        ..local_options()
    };
    roll_back_cleanly(options).await;
    riskcast_is_as_before("1.2.3", tag_before).await;
    assert!(
        last_message().starts_with("riskcast local: rolled"),
        "{}",
        last_message()
    );
}
