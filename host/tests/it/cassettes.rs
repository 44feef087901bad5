//! Cassettes: a real run recorded with `--record` (the library option
//! behind it), then replayed with the service gone; cassettes edited into
//! failure cases; calls the cassette does not hold, and expectations left
//! unused; the smoke-test plugin's committed cassettes; `k8s-read` and
//! `k8s-rollout` recorded against the Kubernetes emulator and replayed
//! with it gone.

use crate::support::{RunOptions, run, runbook_cli, runtime, text};
use runbook::capability::kube::KubeAccess;
use runbook::capability::tape::{Answer, Cassette, Ended, ErrorRecord, Exchange, Export};
use runbook::events::Status;
use runbook::plugin::replay::{self, Replayed};
use runbook_testenv::SampleService;
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

#[tokio::test]
async fn a_recorded_rds_snapshot_replays_without_moto_and_a_throttling_error_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let moto = crate::snapshots::rds().await;
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

/// A run with Kubernetes access through the emulator, recorded into `dir`.
async fn recorded_on_the_cluster(
    body: &str,
    kubeconfig: PathBuf,
    dir: &Path,
    step: &str,
) -> Cassette {
    let options = RunOptions {
        kube: Some(KubeAccess::from_file(kubeconfig, None)),
        record: Some(dir.to_path_buf()),
        ..RunOptions::default()
    };
    let finished = run(body, options).await;
    let (status, summary, _) = finished.step(step);
    assert_eq!(status, Status::Succeeded, "{summary}");
    Cassette::read(&dir.join(format!("{step}.json"))).unwrap()
}

/// The kube calls of a cassette's `run` calls, as `METHOD TARGET-ish`.
fn kube_calls(cassette: &Cassette) -> Vec<String> {
    cassette
        .calls
        .iter()
        .filter(|call| call.export == Export::Run)
        .flat_map(|call| &call.host_calls)
        .filter(|exchange| exchange.capability == "kube")
        .map(|exchange| {
            format!(
                "{} {}/{}",
                exchange.method,
                exchange.request["namespace"].as_str().unwrap_or("-"),
                exchange.request["name"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

const K8S_READ: &str = "[runbook]\nname = \"read\"\n\n[[steps]]\nid = \"read\"\nuses = \"k8s-read\"\nwith.object = { api_version = \"apps/v1\", kind = \"Deployment\", namespace = \"shop\", name = \"api\" }\nwith.outputs = { image = \"/spec/template/spec/containers/0/image\", replicas = \"/spec/replicas\" }\ngrants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\"] }\n";

/// A `k8s-read` of `shop/api` recorded against the emulator, which is
/// gone when this returns.
async fn recorded_k8s_read(dir: &Path) -> Cassette {
    let (emulator, _config_dir, kubeconfig) = crate::kube::cluster().await;
    let cassette = recorded_on_the_cluster(K8S_READ, kubeconfig, dir, "read").await;
    drop(emulator);
    cassette
}

#[tokio::test]
async fn a_recorded_k8s_read_replays_without_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = recorded_k8s_read(dir.path()).await;
    assert_eq!(cassette.plugin.name, "k8s-read");
    assert!(cassette.grants.kube.is_some(), "{:?}", cassette.grants);
    assert_eq!(kube_calls(&cassette), ["get shop/api"]);
    let get = &cassette
        .calls
        .iter()
        .find(|call| call.export == Export::Run)
        .unwrap()
        .host_calls[0];
    assert_eq!(get.request["api_version"], "apps/v1");
    assert_eq!(get.request["kind"], "Deployment");
    let Answer::Response(object) = &get.answer else {
        panic!("{get:?}");
    };
    // The object is kept as JSON, to read and edit.
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:1"
    );
    let Ended::Done { outputs, .. } = &cassette.calls.last().unwrap().result else {
        panic!("{:?}", cassette.calls);
    };
    assert_eq!(outputs["image"], "app:1");
    assert_eq!(outputs["replicas"], "3");

    // The emulator is gone: the answer comes from the cassette.
    let replayed = replay_with("k8s-read", &cassette).await;
    assert!(replayed.passed, "{:?}", problems(&replayed));
    assert_eq!(replayed.calls[0].expected_calls, 1);
}

#[tokio::test]
async fn a_k8s_read_cassette_edited_to_a_404_or_a_403_reports_the_plugins_failure() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = recorded_k8s_read(dir.path()).await;

    // 404: `get` answers that the object does not exist.
    let mut missing = cassette.clone();
    run_calls(&mut missing)[0].answer = Answer::Response(serde_json::Value::Null);
    let replayed = replay_with("k8s-read", &missing).await;
    assert!(!replayed.passed);
    let Ended::Error(error) = &replayed.calls[0].got else {
        panic!("{:?}", replayed.calls[0].got);
    };
    let message = format!("{error:?}");
    assert!(message.contains("shop/api does not exist"), "{message}");
    assert!(
        problems(&replayed)
            .iter()
            .any(|problem| problem.starts_with("result: expected done")),
        "{:?}",
        problems(&replayed)
    );

    // 403: the server refuses the read; the plugin fails with its words.
    let mut forbidden = cassette.clone();
    run_calls(&mut forbidden)[0].answer = Answer::Error(ErrorRecord::Failed {
        message: "get: 403 Forbidden: deployments.apps \"api\" is forbidden".into(),
    });
    let replayed = replay_with("k8s-read", &forbidden).await;
    assert!(!replayed.passed);
    let Ended::Error(error) = &replayed.calls[0].got else {
        panic!("{:?}", replayed.calls[0].got);
    };
    let message = format!("{error:?}");
    assert!(message.contains("403 Forbidden"), "{message}");
    // No call went unanswered or unused: only the result differs.
    let problems = problems(&replayed);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[tokio::test]
async fn a_k8s_read_cassette_cannot_widen_the_steps_kube_grant() {
    let dir = tempfile::tempdir().unwrap();
    let mut cassette = recorded_k8s_read(dir.path()).await;
    if let Some(kube) = &mut cassette.grants.kube {
        kube.namespaces = vec!["payments".into()];
    }
    let replayed = replay_with("k8s-read", &cassette).await;
    assert!(!replayed.passed);
    let Ended::Error(error) = &replayed.calls[0].got else {
        panic!("{:?}", replayed.calls[0].got);
    };
    assert!(format!("{error:?}").contains("Denied"), "{error:?}");
}

#[tokio::test]
async fn a_recorded_k8s_rollout_replays_without_the_cluster_and_its_wait_is_one_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, _config_dir, kubeconfig) = crate::kube::cluster().await;
    let body = "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"rollout\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.images = { app = \"app:2\" }\nwith.timeout = \"20s\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }\n";
    let cassette = recorded_on_the_cluster(body, kubeconfig, dir.path(), "rollout").await;
    drop(emulator);
    let calls = kube_calls(&cassette);
    assert!(
        calls.iter().any(|call| call == "patch shop/api"),
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|call| *call == "wait shop/api").count(),
        1,
        "{calls:?}"
    );
    let replayed = replay_with("k8s-rollout", &cassette).await;
    assert!(replayed.passed, "{:?}", problems(&replayed));

    // The rollout does not finish in time: the plugin's failure is reported.
    let mut stuck = cassette.clone();
    let wait = stuck
        .calls
        .iter_mut()
        .flat_map(|call| call.host_calls.iter_mut())
        .find(|exchange| exchange.capability == "kube" && exchange.method == "wait")
        .unwrap();
    wait.answer = Answer::Error(ErrorRecord::Timeout {
        message: "apps/v1/Deployment shop/api did not reach rollout complete within 20s".into(),
    });
    let replayed = replay_with("k8s-rollout", &stuck).await;
    assert!(!replayed.passed);
    let got: Vec<&Ended> = replayed.calls.iter().map(|call| &call.got).collect();
    assert!(
        got.iter().any(|ended| !matches!(ended, Ended::Done { .. })),
        "{got:?}"
    );
}

/// A step that reads a granted folder, recorded on one machine, replays
/// on another from the folder the runbook names beside the cassette, as
/// the shipped cassettes keep their fixtures.
#[tokio::test]
async fn a_granted_folder_beside_the_cassette_stands_in_for_the_one_recorded_elsewhere() {
    let recorded_at = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(recorded_at.path().join("files")).unwrap();
    std::fs::write(
        recorded_at.path().join("files/notes.txt"),
        "first line\nsecond line\n",
    )
    .unwrap();
    let file = recorded_at.path().join("runbook.toml");
    std::fs::write(
        &file,
        format!(
            "[runbook]\nname = \"files\"\n\n[[steps]]\nid = \"read\"\nuses = \"misbehave\"\nwith.mode = \"read-file\"\nwith.path = \"./files/notes.txt\"\ngrants.fs.read = [\"./files\"]\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{}",
            crate::support::plugins_table()
        ),
    )
    .unwrap();
    let cassettes = recorded_at.path().join("cassettes");
    let finished = crate::support::run_file(
        &runtime(),
        &file,
        RunOptions {
            record: Some(cassettes.clone()),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("read");
    assert_eq!(status, Status::Succeeded, "{summary}");
    // Another checkout: the cassette and the folder beside it, nothing else.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(elsewhere.path().join("files")).unwrap();
    std::fs::copy(
        recorded_at.path().join("files/notes.txt"),
        elsewhere.path().join("files/notes.txt"),
    )
    .unwrap();
    std::fs::copy(
        cassettes.join("read.json"),
        elsewhere.path().join("read.json"),
    )
    .unwrap();
    drop(recorded_at);
    let cassette = Cassette::read(&elsewhere.path().join("read.json")).unwrap();
    let replayed = replay_with("misbehave", &cassette).await;
    assert!(replayed.passed, "{:?}", problems(&replayed));
    // Without the folder, the read fails and the replay says it differs.
    std::fs::remove_dir_all(elsewhere.path().join("files")).unwrap();
    let cassette = Cassette::read(&elsewhere.path().join("read.json")).unwrap();
    let replayed = replay_with("misbehave", &cassette).await;
    assert!(!replayed.passed);
}
