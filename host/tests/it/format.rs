//! The runbook format: every bad runbook in `bad/` is refused by `runbook
//! validate` with exactly the diagnostics in its `.err` file (set
//! `RUNBOOK_BLESS=1` to rewrite them after an intended change), and good
//! runbooks pass values between steps as documented.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use std::path::Path;
use std::process::Command;

#[test]
fn every_bad_runbook_is_refused_with_its_expected_diagnostics() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/bad");
    let cache = crate::support::cache_dir();
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the bad/ fixtures are missing");
    let bless = std::env::var_os("RUNBOOK_BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("validate")
            .arg(&name)
            .current_dir(&folder)
            .env("RUNBOOK_CACHE_DIR", &cache)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name} was not refused as invalid"
        );
        assert!(output.stdout.is_empty(), "{name} printed to stdout");
        let actual = String::from_utf8_lossy(&output.stderr).into_owned();
        let expected_path = file.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "--- {name}: expected\n{expected}\n--- got\n{actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn outputs_of_an_earlier_step_flow_into_a_later_one() {
    let finished = run(
        r#"[runbook]
name = "flow"

[params.version]
required = true

[[steps]]
id = "first"
uses = "noop"
with.message = "release ${{ params.version }} by ${{ run.operator }}"

[[steps]]
id = "second"
uses = "noop"
with.message = "saw: ${{ steps.first.outputs.message }}"
"#,
        RunOptions {
            sets: vec![("version".into(), "1.2.3".into())],
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(finished.report.status, Status::Succeeded);
    assert_eq!(
        finished.step("second").2["message"],
        "saw: release 1.2.3 by tester"
    );
}

#[tokio::test]
async fn a_lone_expression_keeps_its_value_type() {
    let service = runbook_testenv::SampleService::start(None).await.unwrap();
    let finished = run(
        &format!(
            r#"[runbook]
name = "types"

[environments.local.vars]
base = "{}"
status = 200

[[steps]]
id = "smoke"
uses = "smoke-test"
with.checks = [{{ url = "${{{{ vars.base }}}}/health", expect_status = "${{{{ vars.status }}}}" }}]
grants.http = ["${{{{ vars.base }}}}"]
"#,
            service.base_url()
        ),
        RunOptions {
            environment: Some("local".into()),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Succeeded, "{summary}");
}

#[test]
fn the_shipped_runbooks_are_valid() {
    let root = runbook_testenv::workspace_root();
    for entry in std::fs::read_dir(root.join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("validate")
            .arg(&path)
            .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} is invalid:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
