//! RastUp (seed 003): `runbooks/rastup.toml` end to end on the local
//! estate's AWS (ECS services behind a load balancer, a Lambda alias, S3
//! and CloudFront, all in moto), PostgreSQL and Prometheus: a release that
//! goes all the way; a bad release whose canary breaches the seed's
//! trigger at 10% and is rolled back; a migration that fails on the data
//! and ends with the snapshot restored. Each checks the services
//! afterwards, not the run's own account of them.

use super::*;
use runbook_testenv::estate::rastup;
use runbook_testenv::moto::{query_at, rest_at};

/// The release `1.2.4` misbehaves (the estate's bad version); `1.2.3` is
/// good.
const GOOD: &str = "1.2.3";
const BAD: &str = "1.2.4";

/// The `local` environment as RastUp's runs need it: AWS through RastUp's proxy
/// in front of moto (which rolls ECS deployments out as ECS does).
fn rastup_options(sets: Vec<(String, String)>) -> RunOptions {
    let mut options = local_options();
    options.aws = Some(AwsAccess {
        credentials: Some(Credentials {
            access_key_id: "local".into(),
            secret_access_key: "local".into(),
            session_token: None,
        }),
        endpoint: Some(url::Url::parse(&rastup::aws_url()).unwrap()),
    });
    RunOptions { sets, ..options }
}

/// Runs `runbooks/rastup.toml` at `version` with `sets`, after putting the
/// estate back as before any deploy and then calling `before` (which may
/// spoil it).
async fn deploy_rastup(version: &str, sets: &[(&str, &str)], before: fn(&Estate)) -> Finished {
    let estate = estate();
    estate.reset();
    tokio::task::spawn_blocking(move || {
        estate.wait_until_calm();
        before(estate);
    })
    .await
    .unwrap();
    let mut all = vec![("version".to_owned(), version.to_owned())];
    all.extend(
        sets.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    let path = workspace_root().join("runbooks/rastup.toml");
    run_file(&runtime(), &path, rastup_options(all)).await
}

fn nothing(_: &Estate) {}

/// What RastUp's services hold, read from moto, PostgreSQL and the flag
/// service themselves.
#[derive(Debug)]
struct Services {
    /// The image tags the stable and the canary ECS services run.
    stable: String,
    canary: String,
    /// The load balancer's weights: stable, canary.
    weights: (u64, u64),
    /// Alias `live`: its version and its other versions' weights.
    alias: (String, Value),
    /// `select version_num from alembic_version` in database `rastup`.
    schema: String,
    /// `s3://rastup-web/index.html`, when there is one.
    page: Option<String>,
    /// The feature flag's percentage.
    flag: u64,
}

async fn services() -> Services {
    tokio::task::spawn_blocking(|| {
        let moto = &estate().moto.url;
        let version = |service: &str| {
            rastup::service_version(moto, service)
                .unwrap_or_else(|| panic!("ECS service {service} is in moto"))
        };
        let page = rest_at(moto, "s3", "GET", "/rastup-web/index.html", "");
        Services {
            stable: version(rastup::STABLE_SERVICE),
            canary: version(rastup::CANARY_SERVICE),
            weights: rastup::weights(moto),
            alias: rastup::alias(moto),
            schema: schema_of("rastup"),
            page: page.starts_with("HTTP/1.1 200").then(|| {
                page.split_once("\r\n\r\n")
                    .map_or("", |(_, body)| body)
                    .to_owned()
            }),
            flag: flag(rastup::FLAG),
        }
    })
    .await
    .unwrap()
}

/// Whether moto holds DB instance `identifier`.
fn instance_exists(identifier: &str) -> bool {
    query_at(
        &estate().moto.url,
        "rds",
        "2014-10-31",
        "DescribeDBInstances",
        &[("DBInstanceIdentifier", identifier)],
    )
    .contains(&format!(
        "<DBInstanceIdentifier>{identifier}</DBInstanceIdentifier>"
    ))
}

/// How much the sample service had received before a run: the webhooks,
/// pages and status-page incidents of earlier tests stay there.
struct Seen {
    webhooks: usize,
    pages: usize,
    incidents: usize,
}

fn seen() -> Seen {
    let state = estate().sample.state();
    Seen {
        webhooks: state.webhooks.len(),
        pages: state.pages.len(),
        incidents: state.incidents.len(),
    }
}

/// Slack messages posted to `channel` since `seen`.
fn posted_to(channel: &str, seen: &Seen) -> Vec<Value> {
    estate()
        .sample
        .state()
        .webhooks
        .into_iter()
        .skip(seen.webhooks)
        .filter(|message| message["channel"] == channel)
        .collect()
}

#[tokio::test]
async fn rastup_deploys_api_lambda_and_assets_then_rolls_the_flag_out() {
    let _turn = turn().await;
    let seen = seen();
    let finished = deploy_rastup(GOOD, &[("user_facing", "true")], nothing).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    // Smoke tests ran on the new version before any traffic reached it.
    assert_eq!(finished.step("smoke-canary").0, Status::Succeeded);
    assert_eq!(finished.step("smoke-prod").0, Status::Succeeded);

    let services = services().await;
    // Both ECS services run the release, and all traffic is home on the
    // stable one: the next release goes onto the idle canary service.
    assert_eq!(services.stable, GOOD, "{services:?}");
    assert_eq!(services.canary, GOOD, "{services:?}");
    assert_eq!(services.weights, (100, 0), "{services:?}");
    // The alias is on the version the run published, with no split left.
    assert_ne!(services.alias.0, "1", "{services:?}");
    assert_eq!(services.alias.1, serde_json::json!({}), "{services:?}");
    assert_eq!(services.schema, "0002", "{services:?}");
    assert!(
        services
            .page
            .as_deref()
            .is_some_and(|page| page.contains("RastUp")),
        "{services:?}"
    );
    assert_eq!(services.flag, 100, "{services:?}");
    assert!(tag_digest("rastup/api", GOOD).await.is_some());
    let snapshot = tokio::task::spawn_blocking(|| snapshot_exists("pre-deploy-test-run"))
        .await
        .unwrap();
    assert!(snapshot, "the pre-deploy snapshot is kept");

    // Communication: on-call was told, #engineering heard the start and
    // the end, and the status page's notice of a user-facing release was
    // resolved at the good end.
    assert!(!posted_to("#devops-oncall", &seen).is_empty());
    assert!(posted_to("#engineering", &seen).len() >= 2);
    assert!(posted_to("#incidents", &seen).is_empty());
    let incidents = estate().sample.state().incidents;
    let notice = incidents
        .iter()
        .skip(seen.incidents)
        .find(|incident| incident["name"] == "RastUp release 1.2.3")
        .unwrap_or_else(|| panic!("no status-page notice in {incidents:#?}"));
    assert_eq!(notice["status"], "resolved", "{notice:#}");
}

#[tokio::test]
async fn rastup_canary_breaching_the_error_rate_trigger_at_10_percent_returns_traffic_and_rolls_back()
 {
    let _turn = turn().await;
    let seen = seen();
    let finished = deploy_rastup(BAD, &[], nothing).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("gate-10"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("gate-10");
    // The canary fails 30% of its requests in 400 ms: the error-rate or
    // the p95 trigger, whichever the gate names first.
    assert!(
        summary.contains("error_rate") || summary.contains("p95"),
        "{summary}"
    );

    let services = services().await;
    // Traffic back on stable, the canary service back on 1.0.0, stable
    // never touched, the schema back at the revision read before, nothing
    // of the Lambda, the assets or the flag changed.
    assert_eq!(services.weights, (100, 0), "{services:?}");
    assert_eq!(services.canary, estate::INITIAL_VERSION, "{services:?}");
    assert_eq!(services.stable, estate::INITIAL_VERSION, "{services:?}");
    assert_eq!(services.schema, estate::INITIAL_REVISION, "{services:?}");
    assert_eq!(
        services.alias,
        ("1".to_owned(), serde_json::json!({})),
        "{services:?}"
    );
    assert_eq!(services.page, None, "{services:?}");
    assert_eq!(services.flag, 0, "{services:?}");
    let snapshot = tokio::task::spawn_blocking(|| snapshot_exists("pre-deploy-test-run"))
        .await
        .unwrap();
    assert!(snapshot, "the snapshot is the way back, and is kept");

    // #incidents heard of it, and on-call was paged.
    assert!(!posted_to("#incidents", &seen).is_empty());
    let pages = estate().sample.state().pages;
    assert!(
        pages
            .iter()
            .skip(seen.pages)
            .any(|page| page["event_action"] == "trigger"),
        "{pages:#?}"
    );
}

/// Two bookings paid by one payment: revision 0002's unique index on
/// `payment_ref` cannot be made. And no instance left by an earlier run
/// where the restore goes.
fn duplicate_payments(estate: &Estate) {
    estate.postgres.sql_in(
        "rastup",
        "insert into bookings (city, venue_id, payment_ref) values ('los-angeles', 'venue-1', 'pay-1'), ('los-angeles', 'venue-2', 'pay-1')",
    );
    if instance_exists("rastup-prod-rollback") {
        query_at(
            &estate.moto.url,
            "rds",
            "2014-10-31",
            "DeleteDBInstance",
            &[
                ("DBInstanceIdentifier", "rastup-prod-rollback"),
                ("SkipFinalSnapshot", "true"),
            ],
        );
    }
}

#[tokio::test]
async fn rastup_migration_failing_on_duplicate_payments_restores_the_snapshot_and_ships_nothing() {
    let _turn = turn().await;
    let finished = deploy_rastup(GOOD, &[], duplicate_payments).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    let (status, summary, _) = finished.step("migrate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("bookings_payment_ref") || summary.contains("unique"),
        "{summary}"
    );
    // The seed's database rollback: its status read, the snapshot restored
    // to rastup-prod-rollback beside the live instance.
    assert_eq!(finished.step("migrate-status").0, Status::Succeeded);
    assert_eq!(
        finished.step("restore").0,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    let restored = tokio::task::spawn_blocking(|| instance_exists("rastup-prod-rollback"))
        .await
        .unwrap();
    assert!(restored, "{}", finished.log());
    // Nothing after the migration ran.
    for step in [
        "schema-valid",
        "canary-deploy",
        "shift-10",
        "lambda-canary",
        "web",
        "flag-1",
    ] {
        assert_eq!(finished.step(step).0, Status::Skipped, "{step}");
    }

    let services = services().await;
    // PostgreSQL undid the failed revision's transaction: still 0001.
    assert_eq!(services.schema, estate::INITIAL_REVISION, "{services:?}");
    assert_eq!(services.stable, estate::INITIAL_VERSION, "{services:?}");
    assert_eq!(services.canary, estate::INITIAL_VERSION, "{services:?}");
    assert_eq!(services.weights, (100, 0), "{services:?}");
    assert_eq!(
        services.alias,
        ("1".to_owned(), serde_json::json!({})),
        "{services:?}"
    );
    assert_eq!(services.page, None, "{services:?}");
    assert_eq!(services.flag, 0, "{services:?}");
}
