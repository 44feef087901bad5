//! Cassettes: a real run recorded with `--record` (the library option
//! behind it), then replayed with the service gone; cassettes edited into
//! failure cases; calls the cassette does not hold, and expectations left
//! unused; the smoke-test plugin's committed cassettes.

use crate::support::{RunOptions, run, runbook_cli, runtime, text};
use runbook::capability::tape::{Answer, Cassette, Ended, Exchange, Export};
use runbook::events::Status;
use runbook::plugin::replay::{self, Replayed};
use runbook_testenv::{Moto, SampleService};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Replays `cassette` against the plugin `name` with the default exports.
async fn replay_with(name: &str, cassette: &Cassette) -> Replayed {
    let runtime = runtime();
    let plugin = runtime
        .load(&runbook_testenv::plugin_path(name), None)
        .await
        .unwrap();
    replay::replay(
        &runtime,
        &plugin,
        cassette,
        &replay::default_exports(cassette),
        replay::DEFAULT_TIMEOUT,
    )
    .await
    .unwrap()
}

fn problems(replayed: &Replayed) -> Vec<String> {
    replayed
        .calls
        .iter()
        .flat_map(|call| call.problems.clone())
        .collect()
}

/// The `run` calls' host calls of a cassette, to edit.
fn run_calls(cassette: &mut Cassette) -> &mut Vec<Exchange> {
    &mut cassette
        .calls
        .iter_mut()
        .find(|call| call.export == Export::Run)
        .expect("a run call")
        .host_calls
}

/// A smoke test of the sample service, recorded into `dir`; the service
/// is gone when this returns. Returns its base URL and the cassette.
async fn recorded_smoke_test(dir: &Path) -> (String, Cassette) {
    let service = SampleService::start(Some("key-1")).await.unwrap();
    let base = service.base_url();
    let body = format!(
        "[runbook]\nname = \"smoke\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"smoke-test\"\nwith.checks = [\n{{ name = \"health\", url = \"{base}/health\", expect_json = {{ status = \"healthy\" }} }},\n{{ name = \"api\", url = \"{base}/v1/decisions\", headers = {{ \"X-API-Key\" = \"${{{{ secrets.KEY }}}}\" }}, expect_status = [200, 204] }},\n]\ngrants.http = [\"{base}\"]\ngrants.secrets = [\"KEY\"]\n"
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: BTreeMap::from([("KEY".to_owned(), "key-1".to_owned())]),
            record: Some(dir.to_path_buf()),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Succeeded, "{summary}");
    drop(service);
    let cassette = Cassette::read(&dir.join("smoke.json")).unwrap();
    (base, cassette)
}

#[tokio::test]
async fn a_recorded_smoke_test_replays_without_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cassette) = recorded_smoke_test(dir.path()).await;
    assert_eq!(cassette.step, "smoke");
    assert_eq!(cassette.plugin.name, "smoke-test");
    assert_eq!(cassette.grants.http.len(), 1, "{:?}", cassette.grants);
    let calls = &cassette.calls.last().unwrap().host_calls;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].request["url"], format!("{base}/health"));
    let Ended::Done { outputs, .. } = &cassette.calls.last().unwrap().result else {
        panic!("{:?}", cassette.calls);
    };
    assert!(outputs["health"].starts_with("200 in "), "{outputs:?}");

    // The service is gone: every answer comes from the cassette.
    let replayed = replay_with("smoke-test", &cassette).await;
    assert!(replayed.passed, "{:?}", problems(&replayed));
    assert_eq!(replayed.calls.len(), 1);
    assert_eq!(replayed.calls[0].expected_calls, 2);
}

#[tokio::test]
async fn no_secret_value_appears_in_a_recorded_cassette() {
    let dir = tempfile::tempdir().unwrap();
    recorded_smoke_test(dir.path()).await;
    let text = std::fs::read_to_string(dir.path().join("smoke.json")).unwrap();
    assert!(!text.contains("key-1"), "{text}");
    // The handle stays a handle, without the run's nonce.
    assert!(text.contains("\"@@runbook-secret/KEY@@\""), "{text}");
}

#[tokio::test]
async fn a_cassette_edited_to_a_503_reports_the_plugins_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cassette) = recorded_smoke_test(dir.path()).await;
    let Answer::Response(response) = &mut run_calls(&mut cassette)[0].answer else {
        panic!("the health check was answered");
    };
    response["status"] = 503.into();
    response["body"] = "overloaded".into();
    let replayed = replay_with("smoke-test", &cassette).await;
    assert!(!replayed.passed);
    let Ended::Error(error) = &replayed.calls[0].got else {
        panic!("{:?}", replayed.calls[0].got);
    };
    let message = format!("{error:?}");
    assert!(
        message.contains("expected status 200, got 503"),
        "{message}"
    );
    assert!(message.contains("Transient"), "a 5xx may pass: {message}");
    let problems = problems(&replayed);
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with("result: expected done")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_call_the_cassette_does_not_hold_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mut cassette) = recorded_smoke_test(dir.path()).await;
    run_calls(&mut cassette).remove(1);
    let replayed = replay_with("smoke-test", &cassette).await;
    assert!(!replayed.passed);
    let problems = problems(&replayed);
    let named = format!("unexpected call http.send `GET {base}/v1/decisions`");
    assert!(
        problems.iter().any(|problem| problem.starts_with(&named)),
        "{problems:?}"
    );
}

#[tokio::test]
async fn an_unused_expectation_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mut cassette) = recorded_smoke_test(dir.path()).await;
    let calls = run_calls(&mut cassette);
    let mut extra = calls[0].clone();
    extra.request["url"] = format!("{base}/never").into();
    calls.push(extra);
    let replayed = replay_with("smoke-test", &cassette).await;
    assert!(!replayed.passed);
    let problems = problems(&replayed);
    let named = format!("expected http.send `GET {base}/never` was never made");
    assert!(
        problems.iter().any(|problem| problem.starts_with(&named)),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_cassette_cannot_widen_the_steps_grants() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cassette) = recorded_smoke_test(dir.path()).await;
    cassette.grants.http = vec!["http://127.0.0.1:9".into()];
    let replayed = replay_with("smoke-test", &cassette).await;
    assert!(!replayed.passed);
    let Ended::Error(error) = &replayed.calls[0].got else {
        panic!("{:?}", replayed.calls[0].got);
    };
    assert!(format!("{error:?}").contains("Denied"), "{error:?}");
}

/// moto with the `riskcast-db` instance.
async fn rds() -> Moto {
    tokio::task::spawn_blocking(|| {
        let moto = Moto::start();
        moto.rds(
            "CreateDBInstance",
            &[
                ("DBInstanceIdentifier", "riskcast-db"),
                ("DBInstanceClass", "db.t3.micro"),
                ("Engine", "postgres"),
                ("AllocatedStorage", "20"),
                ("MasterUsername", "admin"),
                ("MasterUserPassword", "password123"),
            ],
        );
        moto
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_recorded_rds_snapshot_replays_without_moto_and_a_throttling_error_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let moto = rds().await;
    let body = "[runbook]\nname = \"snapshot\"\n\n[[steps]]\nid = \"snapshot\"\nuses = \"rds-snapshot\"\nwith.region = \"us-east-1\"\nwith.instance = \"riskcast-db\"\nwith.snapshot = \"riskcast-pre-migrate-1-2-3\"\nwith.poll = \"100ms\"\ngrants.aws = { services = [\"rds\"], actions = [\"CreateDBSnapshot\", \"DeleteDBSnapshot\", \"RestoreDBInstanceFromDBSnapshot\", \"Describe*\"], regions = [\"us-east-1\"] }\n";
    let mut options = crate::support::aws_at(&moto.url);
    options.record = Some(dir.path().to_path_buf());
    let finished = run(body, options).await;
    let (status, summary, _) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    drop(moto);

    let cassette = Cassette::read(&dir.path().join("snapshot.json")).unwrap();
    let actions: Vec<String> = cassette
        .calls
        .iter()
        .flat_map(|call| &call.host_calls)
        .map(|exchange| exchange.request["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        actions.iter().any(|action| action == "CreateDBSnapshot"),
        "{actions:?}"
    );
    let replayed = replay_with("rds-snapshot", &cassette).await;
    assert!(replayed.passed, "{:?}", problems(&replayed));

    // AWS throttles the snapshot: the plugin's failure is reported.
    let mut throttled = cassette.clone();
    let create = throttled
        .calls
        .iter_mut()
        .flat_map(|call| call.host_calls.iter_mut())
        .find(|exchange| exchange.request["action"] == "CreateDBSnapshot")
        .unwrap();
    create.answer = Answer::Response(serde_json::json!({
        "status": 400,
        "body": "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>",
    }));
    let replayed = replay_with("rds-snapshot", &throttled).await;
    assert!(!replayed.passed);
    let got: Vec<&Ended> = replayed.calls.iter().map(|call| &call.got).collect();
    assert!(
        got.iter().any(|ended| matches!(ended, Ended::Error(_))),
        "{got:?}"
    );
}

fn committed_cassettes() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/smoke-test/tests/cassettes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

#[test]
fn the_smoke_test_plugins_committed_cassettes_replay_without_a_service() {
    let plugin = runbook_testenv::plugin_path("smoke-test");
    for cassette in committed_cassettes() {
        let output = runbook_cli(&[
            "plugin",
            "test",
            &plugin.display().to_string(),
            "--cassette",
            &cassette.display().to_string(),
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(
            text(&output).contains("answered as recorded"),
            "{}",
            text(&output)
        );
    }
}

#[test]
fn plugin_test_exits_1_with_the_difference_and_speaks_json() {
    let plugin = runbook_testenv::plugin_path("smoke-test");
    let healthy = committed_cassettes()
        .into_iter()
        .find(|path| path.ends_with("healthy.json"))
        .unwrap();
    let mut cassette: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(healthy).unwrap()).unwrap();
    cassette["calls"][0]["result"]["done"]["summary"] = "3 checks passed".into();
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, cassette.to_string()).unwrap();
    let plugin = plugin.display().to_string();
    let edited = edited.display().to_string();
    let output = runbook_cli(&["plugin", "test", &plugin, "--cassette", &edited]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("summary: expected \"3 checks passed\", got \"2 checks passed\""),
        "{}",
        text(&output)
    );
    let output = runbook_cli(&[
        "plugin",
        "test",
        &plugin,
        "--cassette",
        &edited,
        "--call",
        "check",
        "--call",
        "run",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["calls"][0]["export"], "check");
    assert_eq!(report["calls"][0]["problems"], serde_json::json!([]));
    assert_eq!(report["calls"][1]["export"], "run");
}
