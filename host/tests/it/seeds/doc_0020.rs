//! DOC-0020 (seed 002): `runbooks/doc-0020.toml` end to end on the local
//! estate: blue-green onto the idle colour and back again, canary and
//! rolling; a smoke test that fails on the idle colour, an error rate that
//! breaches after the switch, a migration that fails on the ledger's data,
//! and on-call's rollback of a release that succeeded. Each checks the
//! services afterwards: images, the Service's selector, the VirtualService,
//! the schema's revision, the registry's tags, RDS, and what was told.

use super::*;
use runbook::engine::Ask;
use runbook::events::Choice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "doc-0020";

/// On-call at the terminal: ticks a checklist, and rolls back a step that
/// failed under `on_failure = "ask"` (seed: "manual decision by Governance
/// Sentinel or on-call engineer").
struct OnCall;

impl Ask for OnCall {
    fn tick(&self, _step: &str, items: &[String]) -> Result<Vec<String>, String> {
        Ok(items.to_vec())
    }

    fn decide(&self, _step: &str, _failure: &str) -> Option<Choice> {
        Some(Choice::Rollback)
    }
}

/// The local environment with DOC-0020's secrets: the estate's, the
/// status page's and PagerDuty's keys, the ledger database.
fn doc_options(sets: &[(&str, &str)], state_dir: Option<std::path::PathBuf>) -> RunOptions {
    let options = local_options();
    RunOptions {
        sets: sets
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        state_dir,
        ask: Some(Arc::new(OnCall)),
        ..options
    }
}

/// Runs `runbooks/doc-0020.toml` in `local` on the estate as it stands.
async fn release(sets: &[(&str, &str)], state_dir: Option<std::path::PathBuf>) -> Finished {
    let path = workspace_root().join("runbooks/doc-0020.toml");
    run_file(&runtime(), &path, doc_options(sets, state_dir)).await
}

/// The colour the Service `ledger` selects.
fn live_colour() -> String {
    selector(NAMESPACE, "ledger")
}

/// The ledger database's alembic revision.
fn schema_version() -> String {
    schema_of("ledger")
}

/// Stable and canary weights of the ledger's VirtualService.
fn ledger_traffic() -> Vec<u64> {
    weights(
        "networking.istio.io/v1",
        "VirtualService",
        NAMESPACE,
        "ledger",
        "/spec/http/0/route",
    )
}

/// Whether any Slack message posted so far mentions `text`.
fn slack_mentions(text: &str) -> bool {
    estate()
        .sample
        .state()
        .webhooks
        .iter()
        .any(|message| message.to_string().contains(text))
}

/// The subjects of the emails SES sent so far.
fn email_subjects() -> Vec<String> {
    runbook_testenv::moto::sent_emails_at(&estate().moto.url)
        .iter()
        .filter_map(|email| email["subject"].as_str().map(str::to_owned))
        .collect()
}

/// Every colour, the canary and the traffic as before any deploy, and the
/// schema at the revision of 1.0.0.
fn ledger_is_as_before() {
    assert_eq!(live_colour(), "blue");
    for deployment in ["ledger-blue", "ledger-green", "ledger-canary"] {
        assert_eq!(
            image_of(NAMESPACE, deployment),
            estate::INITIAL_VERSION,
            "{deployment}"
        );
    }
    assert_eq!(ledger_traffic(), [100, 0]);
    assert_eq!(schema_version(), "0001");
}

#[tokio::test]
async fn doc_0020_deploys_onto_the_idle_colour_and_the_next_release_onto_the_other() {
    let _turn = turn().await;
    fresh_estate().await;
    let state = tempfile::tempdir().unwrap();
    let finished = release(
        &[("version", "1.2.3"), ("commit", "a1b2c3d")],
        Some(state.path().to_path_buf()),
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    // Blue served, so green took the release, was smoke-tested on its own
    // URL, and now serves.
    assert_eq!(finished.step("live").2["colour"], "blue");
    assert_eq!(image_of(NAMESPACE, "ledger-green"), "1.2.3");
    assert_eq!(image_of(NAMESPACE, "ledger-blue"), estate::INITIAL_VERSION);
    assert_eq!(live_colour(), "green");
    assert_eq!(finished.step("canary-deploy").0, Status::Skipped);
    assert_eq!(finished.step("rolling").0, Status::Skipped);
    assert_eq!(finished.step("restore-db").0, Status::Skipped);
    assert_eq!(ledger_traffic(), [100, 0]);
    // The schema moved from the revision read before to head.
    assert_eq!(finished.step("db-revision").2["stdout"], "0001");
    assert_eq!(schema_version(), "0002");
    assert_eq!(
        tag_digest("doc-0020/ledger", "1.2.3").await.as_deref(),
        finished.step("push").2.get("digest").map(String::as_str)
    );
    // The deployment record carries the commit and the strategy.
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("deployments/test-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["commit"], "a1b2c3d", "{record}");
    assert_eq!(record["strategy"], "blue-green", "{record}");
    assert_eq!(record["version"], "1.2.3", "{record}");
    // Told: Slack with the commit, the status page, on-call by email.
    assert!(slack_mentions("a1b2c3d"));
    assert!(
        estate()
            .sample
            .state()
            .incidents
            .iter()
            .any(
                |incident| incident["name"] == "Deployment complete: ledger 1.2.3"
                    && incident["status"] == "resolved"
            )
    );
    let subjects = email_subjects();
    assert!(
        subjects
            .iter()
            .any(|subject| subject == "ledger 1.2.3 deploys to local now (blue-green)"),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|subject| subject == "On-call briefing: ledger 1.2.3 is live in local"),
        "{subjects:?}"
    );

    // The next release reads green as live and goes onto blue.
    let next = release(&[("version", "1.3.0"), ("commit", "b2c3d4e")], None).await;
    assert_eq!(next.report.status, Status::Succeeded, "{}", next.log());
    assert_eq!(next.step("live").2["colour"], "green");
    assert_eq!(image_of(NAMESPACE, "ledger-blue"), "1.3.0");
    assert_eq!(image_of(NAMESPACE, "ledger-green"), "1.2.3");
    assert_eq!(live_colour(), "blue");
    assert_eq!(schema_version(), "0002");
}

#[tokio::test]
async fn doc_0020_with_a_failed_smoke_test_on_the_idle_colour_never_switches_and_undoes_the_release()
 {
    let _turn = turn().await;
    fresh_estate().await;
    let tag_before = tag_digest("doc-0020/ledger", "1.2.4").await;
    // 1.2.4 is a bad release: green's own health endpoint fails.
    let finished = release(&[("version", "1.2.4"), ("commit", "c3d4e5f")], None).await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("smoke-idle"),
        "{}",
        finished.log()
    );
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished.report.rollback_failures.is_empty(),
        "{}",
        finished.log()
    );
    // The smoke test called green's own URL, never the public one.
    let called: Vec<String> = finished
        .calls("http")
        .into_iter()
        .filter(|call| call.requested.contains("/health"))
        .map(|call| call.requested)
        .collect();
    assert!(
        called
            .iter()
            .any(|url| url.contains("/workloads/ledger-green/health")),
        "{called:?}"
    );
    assert_eq!(finished.step("switch").0, Status::Skipped);
    // Nothing took traffic; green, the schema and the tag are as before.
    ledger_is_as_before();
    assert_eq!(tag_digest("doc-0020/ledger", "1.2.4").await, tag_before);
    // Restoration verified on the public URL; on-call paged.
    assert_eq!(finished.step("verify-health").0, Status::Succeeded);
    assert!(
        estate()
            .sample
            .state()
            .pages
            .iter()
            .any(|page| page["event_action"] == "trigger"
                && page["payload"]["summary"]
                    .as_str()
                    .is_some_and(|summary| summary.contains("smoke-idle"))),
        "{:?}",
        estate().sample.state().pages
    );
    assert!(slack_mentions("Incident record: ledger 1.2.4"));
}

/// Fails `fraction` of green's requests from the moment the Service
/// switches to green until it switches back (traffic follows the
/// selector, as it would in a cluster), or `done` is set.
fn errors_on_green_while_it_serves(done: Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut injected = false;
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(180) {
            let colour = live_colour();
            if !injected && colour == "green" {
                estate().sample.update(|state| {
                    state
                        .traffic
                        .set("ledger-green", 0.30, Duration::from_millis(40))
                });
                injected = true;
            } else if injected && colour == "blue" {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        estate().sample.update(|state| {
            state
                .traffic
                .set("ledger-green", 0.0005, Duration::from_millis(40))
        });
        injected
    })
}

#[tokio::test]
async fn doc_0020_with_an_error_rate_breach_after_the_switch_switches_back_and_undoes_the_release()
{
    let _turn = turn().await;
    fresh_estate().await;
    let tag_before = tag_digest("doc-0020/ledger", "1.2.3").await;
    let done = Arc::new(AtomicBool::new(false));
    let errors = errors_on_green_while_it_serves(Arc::clone(&done));
    let finished = release(&[("version", "1.2.3"), ("commit", "d4e5f60")], None).await;
    done.store(true, Ordering::SeqCst);
    assert!(
        errors.join().unwrap(),
        "the Service never switched to green"
    );
    // Either the validation (on-call decides: roll back) or the monitoring
    // window's trigger (error rate 10% over its baseline) catches it.
    let failed = finished.report.failed_step.clone();
    assert!(
        matches!(failed.as_deref(), Some("validate" | "monitor")),
        "{failed:?}\n{}",
        finished.log()
    );
    let (_, summary, _) = finished.step(failed.as_deref().unwrap());
    assert!(summary.contains("error_rate"), "{summary}");
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished.report.rollback_failures.is_empty(),
        "{}",
        finished.log()
    );
    assert_eq!(finished.step("switch").0, Status::Succeeded);
    // Traffic back on blue, green and the schema as before, the tag as it was.
    ledger_is_as_before();
    assert_eq!(tag_digest("doc-0020/ledger", "1.2.3").await, tag_before);
    assert_eq!(finished.step("verify-health").0, Status::Succeeded);
}

#[tokio::test]
async fn doc_0020_with_a_migration_that_fails_on_the_ledgers_data_deploys_nothing_and_restores_the_backup()
 {
    let _turn = turn().await;
    fresh_estate().await;
    // The same external id twice: 0002's unique index cannot be built.
    estate().postgres.sql_in(
        "ledger",
        "insert into transactions (external_id, account, amount_cents) values ('tx-1', 'acct-1', 100), ('tx-1', 'acct-2', 250)",
    );
    let finished = release(
        &[
            ("version", "1.2.3"),
            ("commit", "e5f6071"),
            ("db_rollback", "restore"),
        ],
        None,
    )
    .await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("migrate"),
        "{}",
        finished.log()
    );
    // No colour, canary or rolling update ran on a schema that did not move.
    for step in [
        "deploy-idle",
        "canary-deploy",
        "rolling",
        "smoke-idle",
        "switch",
    ] {
        assert_ne!(finished.step(step).0, Status::Succeeded, "{step}");
    }
    ledger_is_as_before();
    assert_eq!(
        estate().postgres.sql_in(
            "ledger",
            "select count(*) from transactions where external_id = 'tx-1'"
        ),
        "2"
    );
    // The last resort: the verified backup restored into a new instance.
    let (status, summary, outputs) = finished.step("restore-db");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(outputs["instance"], "doc-0020-ledger-restored-test-run");
    let described = runbook_testenv::moto::query_at(
        &estate().moto.url,
        "rds",
        "2014-10-31",
        "DescribeDBInstances",
        &[("DBInstanceIdentifier", "doc-0020-ledger-restored-test-run")],
    );
    assert!(
        described.contains(
            "<DBInstanceIdentifier>doc-0020-ledger-restored-test-run</DBInstanceIdentifier>"
        ),
        "{described}"
    );
    assert_eq!(
        finished.step("backup").2["snapshot"],
        outputs["snapshot"],
        "the backup restored is the one verified"
    );
}

#[tokio::test]
async fn doc_0020_rolled_back_by_on_call_within_the_first_hour_restores_the_estate() {
    let _turn = turn().await;
    fresh_estate().await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = Some(state.path().to_path_buf());
    let tag_before = tag_digest("doc-0020/ledger", "1.2.3").await;
    let finished = release(
        &[("version", "1.2.3"), ("commit", "f60718a")],
        state_dir.clone(),
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_eq!(live_colour(), "green");
    assert_eq!(schema_version(), "0002");

    // "First hour: on-call engineer available for immediate rollback."
    roll_back_cleanly(doc_options(&[], state_dir)).await;
    ledger_is_as_before();
    assert_eq!(tag_digest("doc-0020/ledger", "1.2.3").await, tag_before);
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("deployments/test-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "rolled_back", "{record}");
    assert_eq!(record["commit"], "f60718a", "{record}");
    assert!(slack_mentions(
        "Incident record: ledger 1.2.3 (commit f60718a)"
    ));
}

#[tokio::test]
async fn doc_0020_canary_goes_through_5_and_25_percent_then_the_live_colour_takes_the_release() {
    let _turn = turn().await;
    fresh_estate().await;
    let finished = release(
        &[
            ("version", "1.2.3"),
            ("commit", "0718a9b"),
            ("strategy", "canary"),
        ],
        None,
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(finished.step("deploy-idle").0, Status::Skipped);
    assert_eq!(image_of(NAMESPACE, "ledger-canary"), "1.2.3");
    assert_eq!(image_of(NAMESPACE, "ledger-blue"), "1.2.3");
    assert_eq!(image_of(NAMESPACE, "ledger-green"), estate::INITIAL_VERSION);
    assert_eq!(live_colour(), "blue");
    assert_eq!(ledger_traffic(), [100, 0]);
    assert_eq!(schema_version(), "0002");
}

#[tokio::test]
async fn doc_0020_canary_that_breaches_sends_traffic_home_and_undoes_the_release() {
    let _turn = turn().await;
    fresh_estate().await;
    let tag_before = tag_digest("doc-0020/ledger", "1.2.4").await;
    let finished = release(
        &[
            ("version", "1.2.4"),
            ("commit", "18a9b0c"),
            ("strategy", "canary"),
        ],
        None,
    )
    .await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("canary-traffic"),
        "{}",
        finished.log()
    );
    let (_, summary, _) = finished.step("canary-traffic");
    assert!(summary.starts_with("canary at 5%"), "{summary}");
    assert!(finished.report.rolled_back, "{}", finished.log());
    ledger_is_as_before();
    assert_eq!(tag_digest("doc-0020/ledger", "1.2.4").await, tag_before);
}

#[tokio::test]
async fn doc_0020_rolling_updates_the_live_colour_in_place() {
    let _turn = turn().await;
    fresh_estate().await;
    let finished = release(
        &[
            ("version", "1.2.3"),
            ("commit", "a9b0c1d"),
            ("strategy", "rolling"),
        ],
        None,
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(image_of(NAMESPACE, "ledger-blue"), "1.2.3");
    assert_eq!(image_of(NAMESPACE, "ledger-green"), estate::INITIAL_VERSION);
    assert_eq!(live_colour(), "blue");
    assert_eq!(schema_version(), "0002");
}
