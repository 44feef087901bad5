//! The runbook format: every bad runbook in `bad/` is refused by `runbook
//! validate` (or by the command in its `.args` file, such as `plan` or
//! `validate --env nowhere`) with exactly the diagnostics in its `.err`
//! file (set `RUNBOOK_BLESS=1` to rewrite them after an intended change);
//! every kind of diagnostic has such a fixture; and good runbooks pass
//! values between steps as documented.

use crate::support::{RunOptions, run};
use runbook::diagnostic::Diagnostic;
use runbook::events::Status;
use runbook::runbook::{Bindings, Code, LoadError, bind::bind};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

#[test]
fn every_bad_runbook_is_refused_with_its_expected_diagnostics() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/bad");
    let cache = crate::support::cache_dir();
    let files = crate::support::toml_files(&folder);
    assert!(files.len() >= 10, "the bad/ fixtures are missing");
    let bless = std::env::var_os("RUNBOOK_BLESS").is_some();
    // A path outside the checkout's folder is written as from its root, so
    // that the expected text holds in any checkout.
    let workspace = runbook_testenv::workspace_root().canonicalize().unwrap();
    let mut mismatches = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(fixture_args(&file))
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
        let actual = String::from_utf8_lossy(&output.stderr)
            .replace(&workspace.display().to_string(), "<workspace>");
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

/// The command line a fixture is checked with, before its file name:
/// `NAME.args` when there is one, else `validate`.
fn fixture_args(file: &Path) -> Vec<String> {
    match std::fs::read_to_string(file.with_extension("args")) {
        Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
        Err(_) => vec!["validate".to_owned()],
    }
}

/// Every code of `runbook::runbook::Code` must be shown by a fixture. With
/// the unit test that finds no diagnostic made without a code, a new kind
/// of diagnostic cannot land without a fixture that shows it.
#[test]
fn every_kind_of_diagnostic_has_a_fixture() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/bad");
    let mut shown = BTreeSet::new();
    for file in crate::support::toml_files(&folder) {
        for diagnostic in library_diagnostics(&file, &fixture_args(&file)) {
            let code = diagnostic.code.unwrap_or_else(|| {
                panic!("{}: `{}` has no code", file.display(), diagnostic.message)
            });
            shown.insert(code);
        }
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|code| code.name())
        .filter(|name| !shown.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "no fixture in tests/it/bad/ shows {missing:?}: add NAME.toml (and NAME.args for a command other than `validate`), then write NAME.err with RUNBOOK_BLESS=1"
    );
}

/// The diagnostics loading and binding report for `file` with `args`, as
/// the command would before it loads plugins: `validate` binds leniently
/// to the environment it names or to each one; other commands bind
/// strictly to the one they name.
fn library_diagnostics(file: &Path, args: &[String]) -> Vec<Diagnostic> {
    let runbook = match runbook::runbook::load(file) {
        Ok(runbook) => Arc::new(runbook),
        Err(LoadError::Invalid(diagnostics)) => return diagnostics.0,
        Err(error) => panic!("{}: {error}", file.display()),
    };
    let values = |option: &str| -> Vec<String> {
        args.windows(2)
            .filter(|pair| pair[0] == option)
            .map(|pair| pair[1].clone())
            .collect()
    };
    let sets: Vec<(String, String)> = values("--set")
        .iter()
        .filter_map(|set| set.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let chosen = values("--env").into_iter().next();
    let lenient = args.first().is_some_and(|verb| verb == "validate");
    let environments = match chosen {
        None if lenient && !runbook.environments.is_empty() => {
            runbook.environments.keys().cloned().map(Some).collect()
        }
        chosen => vec![chosen],
    };
    let mut found = Vec::new();
    for environment in environments {
        let bindings = Bindings {
            environment,
            sets: sets.clone(),
            operator: "validate".into(),
            run_id: "validate".into(),
            lenient,
        };
        if let Err(diagnostics) = bind(Arc::clone(&runbook), bindings) {
            found.extend(diagnostics.0);
        }
    }
    found
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
