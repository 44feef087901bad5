//! A plugin written in JavaScript (`plugins/http-json-js`, built with
//! `plugins/sdk-js` by `scripts/build-plugins`) run by the host against the
//! sample service: JSON pointers into an answer become outputs, a missing
//! pointer fails naming it, a URL outside the grants is a typed denial, a
//! 5xx answer is transient, `console.log` lines are the step's logs, and
//! the component is sealed, imports only `http` of the capabilities, and
//! passes `runbook audit` without a finding.

use crate::support::{
    Finished, RunOptions, TestRunbook, cache_dir, plugins_table, run_file, runbook_cli, runtime,
    text,
};
use runbook::events::{Decision, EventKind, Level, Status};
use runbook_testenv::SampleService;
use std::path::PathBuf;

/// The built plugin, compiled into the shared cache once: a JavaScript
/// component takes seconds to compile, and the tests of this file would
/// otherwise each compile it at the same time.
async fn plugin() -> PathBuf {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let path = runbook_testenv::plugin_path("http-json-js");
    WARM.get_or_init(|| async {
        runtime()
            .load(&path, None)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    })
    .await;
    path
}

/// The log lines of a step, with their levels.
fn logs(finished: &Finished, step: &str) -> Vec<(Level, String)> {
    finished
        .events
        .iter()
        .filter(|(event, _)| event.step.as_ref().is_some_and(|id| id.0 == step))
        .filter_map(|(event, _)| match &event.kind {
            EventKind::Log { level, message } => Some((*level, message.clone())),
            _ => None,
        })
        .collect()
}

/// A runbook using the JavaScript plugin as `http-json-js` (and the usual
/// plugins).
async fn runbook(body: &str) -> TestRunbook {
    let plugin = plugin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbook.toml");
    std::fs::write(
        &path,
        format!(
            "[runbook]\nname = \"js\"\n\n{body}\n{}http-json-js = {:?}\n",
            plugins_table(),
            plugin.display().to_string()
        ),
    )
    .unwrap();
    TestRunbook { dir, path }
}

#[tokio::test]
async fn fields_selected_by_json_pointers_become_outputs_and_console_log_lines_are_logs() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let file = runbook(&format!(
        r#"[[steps]]
id = "read"
uses = "http-json-js"
with.url = "{base}/health"
with.outputs = {{ status = "/status", version = "/version", database = "/checks/database", checks = "/checks" }}
grants.http = ["{base}"]

[[steps]]
id = "next"
uses = "http-json-js"
with.url = "{base}/v1/health"
with.headers = {{ "X-Version" = "${{{{ steps.read.outputs.version }}}}" }}
with.outputs = {{ redis = "/services/redis/status", latency = "/services/redis/latency" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;

    let (status, summary, outputs) = finished.step("read");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["status"], "healthy");
    assert_eq!(outputs["version"], "1.0.0");
    assert_eq!(outputs["database"], "ok");
    // Anything but a string is its JSON.
    assert_eq!(outputs["checks"], r#"{"database":"ok"}"#);
    assert!(
        summary.starts_with(&format!(
            "read checks, database, status, version from GET {base}/health (200 in "
        )),
        "{summary}"
    );

    // A later step reads the outputs.
    let (status, summary, outputs) = finished.step("next");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["redis"], "healthy");
    assert_eq!(outputs["latency"], "2");
    let received = service.state().received;
    let sent = received
        .iter()
        .find(|request| request.path == "/v1/health")
        .expect("the second step's request");
    assert_eq!(
        sent.headers.get("x-version").map(String::as_str),
        Some("1.0.0")
    );

    // `console.log` and `console.debug` in the plugin are the step's log
    // lines, at their levels.
    let lines = logs(&finished, "read");
    assert!(
        lines.iter().any(|(level, message)| *level == Level::Info
            && message.starts_with(&format!("GET {base}/health: 200 in "))),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Level::Debug, "version = 1.0.0".to_owned())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_pointer_missing_from_the_answer_fails_naming_it_and_what_is_there() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let file = runbook(&format!(
        r#"[[steps]]
id = "read"
uses = "http-json-js"
with.url = "{base}/health"
with.outputs = {{ version = "/version", cache = "/checks/cache", first = "/checks/database/0" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("read");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(outputs.is_empty(), "{outputs:?}");
    assert!(
        summary.starts_with(&format!(
            "2 of 3 pointers not found in the JSON from GET {base}/health: "
        )),
        "{summary}"
    );
    assert!(
        summary.contains("output `cache`: JSON pointer `/checks/cache` is not in the answer: `/checks` has no member `cache` (it has `database`)"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "output `first`: JSON pointer `/checks/database/0` is not in the answer: `/checks/database` is a string (\"ok\"), not an object or an array"
        ),
        "{summary}"
    );
    // A wrong answer is not retried.
    assert!(!summary.contains("transient"), "{summary}");
}

#[tokio::test]
async fn a_default_stands_in_for_a_missing_pointer_with_a_warning() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let file = runbook(&format!(
        r#"[[steps]]
id = "read"
uses = "http-json-js"
with.url = "{base}/health"
with.outputs = {{ version = "/version", cache = "/checks/cache" }}
with.defaults = {{ cache = "absent" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("read");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["cache"], "absent");
    assert_eq!(outputs["version"], "1.0.0");
    // `console.warn` is a warning.
    let lines = logs(&finished, "read");
    assert!(
        lines.iter().any(|(level, message)| *level == Level::Warn
            && message
                .starts_with("output `cache`: JSON pointer `/checks/cache` is not in the answer")),
        "{lines:?}"
    );
}

/// A URL known only during the run (an earlier step's output) that the
/// grants do not cover: the host denies the request, and the plugin passes
/// the typed denial on.
#[tokio::test]
async fn a_url_outside_the_grants_is_a_typed_denial() {
    let granted = SampleService::start(None).await.unwrap();
    let other = SampleService::start(None).await.unwrap();
    let (base, elsewhere) = (granted.base_url(), other.base_url());
    let file = runbook(&format!(
        r#"[[steps]]
id = "where"
uses = "noop"
with.message = "{elsewhere}/health"

[[steps]]
id = "read"
uses = "http-json-js"
with.url = "${{{{ steps.where.outputs.message }}}}"
with.outputs = {{ version = "/version" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("read");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.starts_with(&format!("http denied: GET {elsewhere}/health")),
        "{summary}"
    );
    assert!(summary.contains("grants.http"), "{summary}");
    let calls = finished.calls("http");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].decision, Decision::Denied);
    assert!(other.state().received.is_empty());
}

#[tokio::test]
async fn a_5xx_answer_is_transient_and_retried_and_expect_status_reads_it() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.healthy = false);
    let base = service.base_url();
    let file = runbook(&format!(
        r#"[[steps]]
id = "degraded"
uses = "http-json-js"
with.url = "{base}/health"
with.expect_status = [200, 503]
with.outputs = {{ status = "/status" }}
grants.http = ["{base}"]

[[steps]]
id = "strict"
uses = "http-json-js"
retries = {{ attempts = 2, backoff = "100ms" }}
with.url = "{base}/health"
with.outputs = {{ version = "/version" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("strict");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains(&format!("GET {base}/health answered 503, expected 2xx: ")),
        "{summary}"
    );
    assert!(summary.contains("(transient)"), "{summary}");
    assert!(summary.contains("(after 2 attempts)"), "{summary}");
    let (status, summary, outputs) = finished.step("degraded");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["status"], "degraded");
    assert_eq!(service.state().received.len(), 3);
}

#[tokio::test]
async fn parameters_are_checked_against_the_schema_at_their_place_before_anything_runs() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    for (with, expected) in [
        (
            r#"with.outputs = { version = "version" }"#,
            "`with.outputs.version`: `version` is not a JSON pointer: it must be empty (the whole document) or start with `/`",
        ),
        (
            "with.outputs = { version = \"/version\" }\nwith.expect_status = [200, \"x\"]",
            "`with.expect_status[1]`: expected an integer, got a string \"x\"",
        ),
        (
            "with.outputs = { version = \"/version\" }\nwith.expect = 200",
            "`with.expect`: unknown parameter; expected one of `url`, `outputs`,",
        ),
        (
            "with.outputs = { version = \"/version\" }\nwith.defaults = { cache = \"x\" }",
            "`with.defaults.cache`: `cache` is not one of the outputs (`version`)",
        ),
    ] {
        let file = runbook(&format!(
            "[[steps]]\nid = \"read\"\nuses = \"http-json-js\"\nwith.url = \"{base}/health\"\n{with}\ngrants.http = [\"{base}\"]\n"
        ))
        .await;
        let output = tokio::task::spawn_blocking(move || {
            let output = runbook_cli(&["validate", file.path.to_str().unwrap()]);
            drop(file);
            output
        })
        .await
        .unwrap();
        let said = text(&output);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(
            said.contains(&format!("error: step `read`: {expected}")),
            "{said}"
        );
        // At its place in the runbook.
        assert!(said.contains("runbook.toml:"), "{said}");
    }
    assert!(service.state().received.is_empty());
}

#[tokio::test]
async fn it_is_sealed_imports_only_http_and_the_audit_finds_nothing() {
    let plugin = plugin().await;
    let inspect = {
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            runbook_cli(&["plugin", "inspect", plugin.to_str().unwrap()])
        })
        .await
        .unwrap()
    };
    let said = text(&inspect);
    assert_eq!(inspect.status.code(), Some(0), "{said}");
    assert!(said.starts_with("http-json-js 0.1.0\n"), "{said}");
    assert!(
        said.contains("embedded      http, secrets? (sealed)"),
        "{said}"
    );
    assert!(!said.contains("not sealed"), "{said}");

    let json = {
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            runbook_cli(&[
                "plugin",
                "inspect",
                plugin.to_str().unwrap(),
                "--output",
                "json",
            ])
        })
        .await
        .unwrap()
    };
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        value["embedded_capabilities"],
        serde_json::json!(["http", "secrets?"])
    );
    let imports: Vec<&str> = value["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|import| import.as_str().unwrap())
        .collect();
    // Of the contract: what every step has, and `http`; no `wasi:http`.
    let ours: Vec<&str> = imports
        .iter()
        .filter(|import| import.starts_with("runbook:plugin/"))
        .map(|import| import.split('@').next().unwrap())
        .collect();
    assert_eq!(
        ours,
        [
            "runbook:plugin/types",
            "runbook:plugin/http",
            "runbook:plugin/log",
            "runbook:plugin/clock"
        ],
        "{imports:?}"
    );
    assert!(
        !imports
            .iter()
            .any(|import| import.starts_with("wasi:http/")),
        "{imports:?}"
    );

    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let file = runbook(&format!(
        r#"[[steps]]
id = "read"
uses = "http-json-js"
with.url = "{base}/health"
with.outputs = {{ version = "/version" }}
grants.http = ["{base}"]
"#
    ))
    .await;
    let index = tempfile::tempdir().unwrap();
    let audit = tokio::task::spawn_blocking({
        let (path, index) = (file.path.clone(), index.path().to_path_buf());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
                .args(["audit", path.to_str().unwrap()])
                .env("RUNBOOK_CACHE_DIR", cache_dir())
                .env("RUNBOOK_INDEX_DIR", index)
                .env("RUNBOOK_OPERATOR", "alice")
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report = text(&audit);
    assert_eq!(audit.status.code(), Some(0), "{report}");
    assert!(report.contains("read: http-json-js 0.1.0"), "{report}");
    assert!(report.contains("embedded  http, secrets?"), "{report}");
    assert!(
        report.contains("imports   runbook:plugin/types@0.2.0, runbook:plugin/http@0.2.0, runbook:plugin/log@0.2.0, runbook:plugin/clock@0.2.0"),
        "{report}"
    );
    // No finding: not "not sealed", not "imports ... but does not declare".
    assert!(!report.contains('⚠'), "{report}");
}
