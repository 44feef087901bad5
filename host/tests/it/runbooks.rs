//! The five source runbooks in `runbooks/`, end to end against the local
//! estate (the same one `scripts/local-env` starts): each deploys to
//! success, and each has a failure that rolls back to the state before the
//! run, checked in the services themselves. The estate listens on fixed
//! ports, so these tests share one and take turns.

use crate::support::{Finished, RunOptions, roll_back, run_file, runtime};
use runbook::capability::aws::AwsAccess;
use runbook::capability::aws::sigv4::Credentials;
use runbook::capability::kube::KubeAccess;
use runbook::events::Status;
use runbook_testenv::estate::{self, Estate};
use runbook_testenv::workspace_root;
use serde_json::Value;
use std::sync::OnceLock;

/// The estate, started once for this test binary on its own runtime.
fn estate() -> &'static Estate {
    static ESTATE: OnceLock<(Estate, tokio::runtime::Runtime)> = OnceLock::new();
    &ESTATE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("a runtime for the estate");
                let dir = workspace_root().join("target/e2e-estate");
                let images = workspace_root().join("runbooks/dist");
                let estate = runtime
                    .block_on(Estate::start(&dir, &images, vec!["1.2.4".into()]))
                    .expect("the local estate starts (docker-registry, prometheus and moto_server are installed by scripts/test)");
                (estate, runtime)
            })
            .join()
            .expect("the estate thread")
        })
        .0
}

/// One runbook at a time on the shared estate.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Runs `runbooks/NAME.toml` in the `local` environment at `version`,
/// after putting the estate back as before any deploy.
async fn deploy(name: &str, version: &str) -> Finished {
    deploy_keeping_state(name, version, None).await
}

/// [`deploy`], keeping the run's state in `state_dir` when given.
async fn deploy_keeping_state(
    name: &str,
    version: &str,
    state_dir: Option<std::path::PathBuf>,
) -> Finished {
    let estate = estate();
    estate.reset();
    tokio::task::spawn_blocking(move || estate.wait_until_calm())
        .await
        .unwrap();
    let options = RunOptions {
        sets: vec![("version".into(), version.into())],
        state_dir,
        ..local_options()
    };
    let path = workspace_root().join(format!("runbooks/{name}.toml"));
    run_file(&runtime(), &path, options).await
}

/// The `local` environment of the estate: its secrets, moto and the
/// emulator.
fn local_options() -> RunOptions {
    let estate = estate();
    RunOptions {
        environment: Some("local".into()),
        secrets: [
            ("ADMIN_TOKEN", estate::ADMIN_TOKEN),
            ("TEST_KEY", estate::TEST_KEY),
            (
                "SLACK_WEBHOOK",
                "http://127.0.0.1:18080/hooks/local/deploys",
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect(),
        aws: Some(AwsAccess {
            credentials: Some(Credentials {
                access_key_id: "local".into(),
                secret_access_key: "local".into(),
                session_token: None,
            }),
            endpoint: Some(url::Url::parse(&estate.moto.url).unwrap()),
        }),
        kube: Some(KubeAccess::from_file(
            estate.kubeconfig(),
            Some("emulator".into()),
        )),
        ..RunOptions::default()
    }
}

fn image_of(namespace: &str, deployment: &str) -> String {
    let object = estate()
        .kube
        .get("apps/v1", "Deployment", Some(namespace), deployment)
        .unwrap_or_else(|| panic!("{namespace}/{deployment} exists"));
    object["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned()
}

fn weights(api_version: &str, kind: &str, namespace: &str, name: &str, pointer: &str) -> Vec<u64> {
    let object = estate()
        .kube
        .get(api_version, kind, Some(namespace), name)
        .unwrap();
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|entry| entry["weight"].as_u64().unwrap())
        .collect()
}

/// Stable and canary weights of RISKCAST's VirtualService.
fn riskcast_traffic() -> Vec<u64> {
    weights(
        "networking.istio.io/v1",
        "VirtualService",
        "riskcast-prod",
        "riskcast-api",
        "/spec/http/0/route",
    )
}

/// Stable and canary weights of RastUp's HTTPRoute.
fn rastup_traffic() -> Vec<u64> {
    weights(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "rastup-prod",
        "rastup-api",
        "/spec/rules/0/backendRefs",
    )
}

/// Blue and green weights of StoneCaster's VirtualService.
fn stonecaster_traffic() -> Vec<u64> {
    weights(
        "networking.istio.io/v1",
        "VirtualService",
        "stonecaster",
        "stonecaster",
        "/spec/http/0/route",
    )
}

fn flag(key: &str) -> u64 {
    estate().sample.state().flags[key]["percentage"]
        .as_u64()
        .unwrap()
}

fn last_message() -> String {
    let posted = estate().sample.state().webhooks;
    posted
        .last()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// What the registry has under `repository:tag`, by asking it directly.
async fn tag_digest(repository: &str, tag: &str) -> Option<String> {
    let url = format!(
        "{}/v2/{repository}/manifests/{tag}",
        estate().registry.url()
    );
    let response = reqwest::Client::new()
        .head(url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    response.status().is_success().then(|| {
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

fn assert_every_step(finished: &Finished, allowed: &[Status]) {
    for (event, _) in &finished.events {
        if let runbook::events::EventKind::StepFinished {
            status, summary, ..
        } = &event.kind
        {
            assert!(
                allowed.contains(status),
                "{:?} {status:?}: {summary}\n{}",
                event.step,
                finished.log()
            );
        }
    }
}

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

const SERVICES: [&str; 3] = ["auth-service", "user-service", "org-service"];

fn snapshot_exists(identifier: &str) -> bool {
    runbook_testenv::moto::query_at(
        &estate().moto.url,
        "rds",
        "2014-10-31",
        "DescribeDBSnapshots",
        &[("DBSnapshotIdentifier", identifier)],
    )
    .contains("<Status>available</Status>")
}

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

fn selector(namespace: &str, service: &str) -> String {
    let object = estate()
        .kube
        .get("v1", "Service", Some(namespace), service)
        .unwrap();
    object["spec"]["selector"]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

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
