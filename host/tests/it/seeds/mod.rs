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
    deploy_with(name, version, &[], state_dir).await
}

/// [`deploy`] with more parameters (`strategy=blue-green`), keeping the
/// run's state in `state_dir` when given.
async fn deploy_with(
    name: &str,
    version: &str,
    sets: &[(&str, &str)],
    state_dir: Option<std::path::PathBuf>,
) -> Finished {
    deploy_after(name, version, sets, state_dir, || {}).await
}

/// [`deploy_with`], doing `prepare` to the estate once it is reset and
/// calm, just before the run (data a migration will trip on).
async fn deploy_after(
    name: &str,
    version: &str,
    sets: &[(&str, &str)],
    state_dir: Option<std::path::PathBuf>,
    prepare: impl FnOnce() + Send + 'static,
) -> Finished {
    fresh_estate().await;
    tokio::task::spawn_blocking(prepare).await.unwrap();
    let mut all = vec![("version".to_owned(), version.to_owned())];
    all.extend(
        sets.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    let options = RunOptions {
        sets: all,
        state_dir,
        ..local_options()
    };
    let path = workspace_root().join(format!("runbooks/{name}.toml"));
    run_file(&runtime(), &path, options).await
}

/// `runbook rollback` of the run in `options.state_dir` (tests name every
/// run `test-run`), which must undo every step it completed.
async fn roll_back_cleanly(options: RunOptions) {
    let rolled = roll_back(&runtime(), "test-run", options).await;
    assert_eq!(rolled.report.status, Status::RolledBack, "{}", rolled.log());
    assert!(
        rolled.report.rollback_failures.is_empty(),
        "{}",
        rolled.log()
    );
}

/// The estate as before any deploy, with Prometheus's windows calm.
async fn fresh_estate() {
    let estate = estate();
    estate.reset();
    tokio::task::spawn_blocking(move || estate.wait_until_calm())
        .await
        .unwrap();
}

/// The alembic revision of `database` in the estate's PostgreSQL.
fn schema_of(database: &str) -> String {
    estate()
        .postgres
        .sql_in(database, "select version_num from alembic_version")
}

/// The colour (`version` label) a Service selects.
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

/// The `local` environment of the estate: its secrets, moto and the
/// emulator.
fn local_options() -> RunOptions {
    let estate = estate();
    RunOptions {
        environment: Some("local".into()),
        secrets: [
            ("ADMIN_TOKEN", estate::ADMIN_TOKEN),
            ("TEST_KEY", estate::TEST_KEY),
            ("PAGERDUTY_KEY", estate::PAGERDUTY_KEY),
            ("STATUSPAGE_KEY", estate::STATUSPAGE_KEY),
            ("DOCKERHUB_TOKEN", estate::DOCKERHUB_TOKEN),
            (
                "SLACK_WEBHOOK",
                "http://127.0.0.1:18080/hooks/local/deploys",
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .chain(estate.database_secrets())
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

/// Whether moto holds an available RDS snapshot `identifier`.
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

mod api_platform;
mod doc_0020;
mod hygiene;
mod maps;
mod rastup;
mod riskcast;
mod stonecaster;
