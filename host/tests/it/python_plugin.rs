//! A plugin written in Python with `plugins/sdk-python` (`http-check-py`,
//! built by `scripts/build-plugins` with componentize-py and sealed) runs
//! in a runbook against a local service like a Rust one: checks pass and
//! fail naming what differed, a 5xx is transient, a URL outside the
//! grants is a typed denial, `print()` lines are the step's log, and its
//! import list is honest (only the interfaces of the `step-http` world),
//! sealed, with a clean `runbook audit`.

use crate::support::{RunOptions, TestRunbook, cache_dir, plugins_table, run_file, runtime, text};
use runbook::events::{Decision, EventKind, Level, Status};
use runbook_testenv::SampleService;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn plugin() -> PathBuf {
    runbook_testenv::plugin_path("http-check-py")
}

/// Compiles the component into the shared cache once, before the tests
/// that use it: an interpreter-sized component takes seconds to compile,
/// and tests that all missed the cache at once would each compile it.
async fn warm() {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    WARM.get_or_init(|| async {
        runtime()
            .load(&plugin(), None)
            .await
            .expect("http-check-py loads");
    })
    .await;
}

/// A runbook with the usual plugins and `http-check-py`, one step `check`.
fn runbook(base: &str, checks: &str, extra: &str) -> TestRunbook {
    let body = format!(
        "[runbook]\nname = \"python\"\n\n[[steps]]\nid = \"check\"\nuses = \"http-check-py\"\nwith.checks = [\n{checks}\n]\ngrants.http = [\"{base}\"]\n{extra}\n"
    );
    with_plugin(&body)
}

fn with_plugin(body: &str) -> TestRunbook {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbook.toml");
    let table = format!(
        "{body}\n{}http-check-py = {:?}\n",
        plugins_table(),
        plugin().display().to_string()
    );
    std::fs::write(&path, table).unwrap();
    TestRunbook { dir, path }
}

/// `runbook ARGS` with the shared cache.
fn cli(args: &[&str]) -> std::process::Output {
    let index = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("RUNBOOK_INDEX_DIR", index.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_python_plugin_passes_its_checks_with_one_output_each_and_print_lines_in_the_log() {
    warm().await;
    let service = SampleService::start(Some("key-1")).await.unwrap();
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "health", url = "{base}/health", expect_body_contains = "healthy" }},
{{ name = "live", url = "{base}/health/live" }},
{{ name = "api", url = "{base}/v1/decisions", headers = {{ "X-API-Key" = "${{{{ secrets.KEY }}}}" }}, expect_status = [200, 204] }},"#
    );
    let file = runbook(&base, &checks, "grants.secrets = [\"KEY\"]");
    let finished = run_file(
        &runtime(),
        &file.path,
        RunOptions {
            secrets: BTreeMap::from([("KEY".to_owned(), "key-1".to_owned())]),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, outputs) = finished.step("check");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(summary, "3 checks passed");
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        ["api", "health", "live"]
    );
    assert!(outputs["health"].starts_with("200 in "), "{outputs:?}");
    // The plugin `print()`s one line per check that passed: each is an
    // info line of the step's log.
    let printed: Vec<&String> = finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::Log { level, message } if *level == Level::Info => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        printed
            .iter()
            .any(|line| line.starts_with(&format!("✓ health: GET {base}/health → 200 in "))),
        "{printed:?}"
    );
    assert_eq!(
        printed.iter().filter(|line| line.starts_with("✓ ")).count(),
        3,
        "{printed:?}"
    );
    // The secret travelled as a handle and was unsealed by the host.
    assert!(!finished.log().contains("key-1"), "{}", finished.log());
}

#[tokio::test]
async fn a_failing_check_fails_the_step_naming_the_check_and_what_differed() {
    warm().await;
    let service = SampleService::start(Some("right")).await.unwrap();
    let base = service.base_url();
    let checks = format!(
        r#"{{ name = "api", url = "{base}/v1/decisions", headers = {{ "X-API-Key" = "wrong" }} }},
{{ name = "live", url = "{base}/health/live", expect_body_contains = "nope" }},"#
    );
    let retries = "retries = { attempts = 3, backoff = \"10ms\" }";
    let file = runbook(&base, &checks, retries);
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("check");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(summary.starts_with("2 of 2 checks failed:"), "{summary}");
    assert!(
        summary.contains(&format!(
            "check `api` (GET {base}/v1/decisions): expected status 200, got 401"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("check `live` (GET") && summary.contains("to contain 'nope'"),
        "{summary}"
    );
    // A wrong answer would only repeat: not transient, not retried.
    let retried = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(event.kind, EventKind::StepRetry { .. }))
        .count();
    assert_eq!(retried, 0, "{}", finished.log());
}

#[tokio::test]
async fn an_unavailable_service_is_a_transient_failure_that_retries_try_again() {
    warm().await;
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.healthy = false);
    let base = service.base_url();
    let checks = format!(r#"{{ name = "health", url = "{base}/health" }},"#);
    let file = runbook(
        &base,
        &checks,
        "retries = { attempts = 3, backoff = \"10ms\" }",
    );
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("check");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("expected status 200, got 503"),
        "{summary}"
    );
    let retried = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(event.kind, EventKind::StepRetry { .. }))
        .count();
    assert_eq!(retried, 2, "{}", finished.log());
}

#[tokio::test]
async fn a_url_outside_the_grants_is_a_typed_denial_not_a_crash() {
    warm().await;
    let service = SampleService::start(None).await.unwrap();
    // The URL comes from an earlier step's output: `validate` refuses a
    // literal URL outside the grants before the run; this is the host's
    // check at run time, answered to Python as a `denied` error.
    let body = format!(
        "[runbook]\nname = \"python-denied\"\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nwith.message = \"{}/health\"\n\n[[steps]]\nid = \"check\"\nuses = \"http-check-py\"\nwith.checks = [ {{ name = \"elsewhere\", url = \"${{{{ steps.address.outputs.message }}}}\" }} ]\ngrants.http = [\"http://127.0.0.1:1\"]\n",
        service.base_url()
    );
    let file = with_plugin(&body);
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("check");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains(&format!("http denied: GET {}/health", service.base_url())),
        "{summary}"
    );
    assert!(summary.contains("grants.http = ["), "{summary}");
    assert!(
        service.state().received.is_empty(),
        "the request reached the server"
    );
    let denied = finished.events.iter().any(|(event, _)| {
        matches!(&event.kind, EventKind::CapabilityCall { capability, decision: Decision::Denied, .. } if capability == "http")
    });
    assert!(denied, "{}", finished.log());
}

#[tokio::test]
async fn a_bad_parameter_is_refused_at_its_path_before_anything_runs() {
    warm().await;
    let base = "http://127.0.0.1:1";
    for (checks, path, message) in [
        (
            format!(r#"{{ url = "{base}/a", expect_status = [200, 700] }},"#),
            "with.checks[0].expect_status[1]",
            "at most 599",
        ),
        // The plugin's own `check`: what the schema cannot say.
        (
            format!(r#"{{ name = "a", url = "{base}/a" }}, {{ name = "a", url = "{base}/b" }},"#),
            "with.checks[1].name",
            "two checks are named `a`",
        ),
    ] {
        let file = runbook(base, &checks, "");
        let path_arg = file.path.to_str().unwrap().to_owned();
        let output = tokio::task::spawn_blocking(move || cli(&["validate", &path_arg]))
            .await
            .unwrap();
        let said = text(&output);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(path) && said.contains(message), "{said}");
    }
}

#[tokio::test]
async fn it_is_sealed_imports_only_the_step_http_world_and_audits_clean() {
    warm().await;
    let path = plugin().display().to_string();
    let inspect = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || cli(&["plugin", "inspect", &path]))
            .await
            .unwrap()
    };
    let said = text(&inspect);
    assert_eq!(inspect.status.code(), Some(0), "{said}");
    assert!(said.starts_with("http-check-py 0.1.0"), "{said}");
    assert!(
        said.contains("embedded      http, secrets? (sealed)"),
        "{said}"
    );
    let ours: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("runbook:plugin/"))
        .collect();
    assert_eq!(
        ours,
        [
            "runbook:plugin/types@0.2.0",
            "runbook:plugin/http@0.2.0",
            "runbook:plugin/log@0.2.0",
            "runbook:plugin/clock@0.2.0",
        ],
        "{said}"
    );
    // No WASI interface outside what the host serves (`wasi:http` would
    // not load at all).
    assert!(!said.contains("wasi:http"), "{said}");

    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let file = runbook(
        &base,
        &format!(r#"{{ name = "health", url = "{base}/health" }},"#),
        "",
    );
    let file_path = file.path.to_str().unwrap().to_owned();
    let audit = tokio::task::spawn_blocking(move || cli(&["audit", &file_path]))
        .await
        .unwrap();
    let said = text(&audit);
    assert_eq!(audit.status.code(), Some(0), "{said}");
    assert!(said.contains("check: http-check-py 0.1.0"), "{said}");
    assert!(
        said.contains("embedded  http, secrets? (written at build time)"),
        "{said}"
    );
    assert!(!said.contains('⚠'), "{said}");
}
