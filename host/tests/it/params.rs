//! Typed parameters (`[params.NAME] type = "integer"`): a `--set` value is
//! parsed to its type, a lone `${{ params.NAME }}` hands the plugin a value
//! of that type (the `feature-flag` plugin takes its percentage as a
//! number), `if` compares it as a number, a list drives a `for_each`, the
//! journal and the deployment record keep the typed value, and a value not
//! of the type is refused before anything runs, at the parameter's `type`,
//! with an example.

use crate::support::{RunOptions, TestRunbook, run, runbook_cli, text};
use runbook::events::{EventKind, Status};
use runbook_testenv::SampleService;
use serde_json::json;

/// A runbook that sets a flag to the typed `percentage`, and a step that
/// runs only from 50 %.
fn flag_runbook(base: &str) -> String {
    format!(
        r#"[runbook]
name = "typed"

[params.flag]
default = "new_feature"

[params.percentage]
description = "the share of users who see the flag"
type = "integer"
required = true

[[steps]]
id = "flag"
uses = "feature-flag"
if = "params.percentage > 5"
with.url = "{base}/admin/feature-flags"
with.key = "${{{{ params.flag }}}}"
with.percentage = "${{{{ params.percentage }}}}"
with.token = "${{{{ secrets.ADMIN_TOKEN }}}}"
grants.http = ["{base}/admin/feature-flags"]
grants.secrets = ["ADMIN_TOKEN"]

[[steps]]
id = "wide"
uses = "noop"
if = "params.percentage >= 50"
with.message = "at ${{{{ params.percentage }}}}%"
"#
    )
}

#[tokio::test]
async fn a_typed_percentage_reaches_the_plugin_as_a_number_and_is_recorded_as_one() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.admin_token = Some("s3cret".into()));
    let state_dir = tempfile::tempdir().unwrap();
    let finished = run(
        &flag_runbook(&service.base_url()),
        RunOptions {
            sets: vec![("percentage".into(), "25".into())],
            secrets: [("ADMIN_TOKEN".to_owned(), "s3cret".to_owned())].into(),
            state_dir: Some(state_dir.path().to_path_buf()),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("flag");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "flag `new_feature` set to 25%");
    // The plugin posted the number it was given.
    let posted: Vec<serde_json::Value> = service
        .state()
        .received
        .iter()
        .filter(|request| request.method == "POST")
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["percentage"], json!(25));
    // `if` compared the number as a number: 25 >= 50 is false.
    assert_eq!(finished.step("wide").0, Status::Skipped);
    // The journal keeps the typed value, and the untyped one as a string.
    let started = finished
        .events
        .iter()
        .find_map(|(event, _)| match &event.kind {
            EventKind::RunStarted { params, .. } => Some(params.clone()),
            _ => None,
        })
        .expect("the run started");
    assert_eq!(started["percentage"], json!(25));
    assert_eq!(started["flag"], json!("new_feature"));
    let line = finished
        .events
        .iter()
        .find(|(event, _)| matches!(event.kind, EventKind::RunStarted { .. }))
        .map(|(_, line)| line.clone())
        .unwrap();
    assert!(line.contains(r#""percentage":25"#), "{line}");
    // So does the deployment record.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state_dir.path().join("deployments/test-run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["params"]["percentage"], json!(25), "{record:#}");
    assert_eq!(record["params"]["flag"], json!("new_feature"));
}

#[tokio::test]
async fn a_number_inside_longer_text_is_written_as_text() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.admin_token = Some("s3cret".into()));
    let finished = run(
        &flag_runbook(&service.base_url()),
        RunOptions {
            sets: vec![("percentage".into(), "50".into())],
            secrets: [("ADMIN_TOKEN".to_owned(), "s3cret".to_owned())].into(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, outputs) = finished.step("wide");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "at 50%");
    assert_eq!(outputs["message"], "at 50%");
}

#[tokio::test]
async fn a_list_parameter_runs_a_for_each_once_per_element() {
    let body = r#"[runbook]
name = "typed"

[params.services]
type = "list"
default = ["api"]

[params.dry_run]
type = "boolean"
default = false

[[steps]]
id = "deploy"
uses = "noop"
for_each = "${{ params.services }}"
if = "!params.dry_run"
with.message = "deploy ${{ item }}"
"#;
    let finished = run(
        body,
        RunOptions {
            sets: vec![("services".into(), "api, worker".into())],
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(finished.report.status, Status::Succeeded);
    assert_eq!(finished.step("deploy[api]").1, "deploy api");
    assert_eq!(finished.step("deploy[worker]").1, "deploy worker");
    let dry = run(
        body,
        RunOptions {
            sets: vec![
                ("services".into(), r#"["jobs"]"#.into()),
                ("dry_run".into(), "true".into()),
            ],
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(dry.step("deploy[jobs]").0, Status::Skipped);
}

#[test]
fn a_set_value_not_of_the_type_is_refused_at_the_type_with_an_example() {
    let body = flag_runbook("http://127.0.0.1:9");
    let runbook = TestRunbook::new(&body);
    let line = body
        .lines()
        .position(|line| line == "type = \"integer\"")
        .unwrap()
        + 1;
    let file = runbook.path.display().to_string();
    for verb in ["plan", "exec", "validate"] {
        let output = runbook_cli(&[verb, file.as_str(), "--set", "percentage=ten"]);
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(2), "{verb}: {shown}");
        assert!(
            shown.contains("error: parameter `percentage` = `ten` is not an integer"),
            "{verb}: {shown}"
        );
        assert!(
            shown.contains(&format!("{file}:{line}:8")),
            "{verb}: {shown}"
        );
        assert!(
            shown.contains("= hint: expected an integer, e.g. `--set percentage=10`"),
            "{verb}: {shown}"
        );
    }
}
