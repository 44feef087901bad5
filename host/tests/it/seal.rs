//! `runbook plugin seal`: a component without the `runbook:capabilities`
//! section (as componentize-py and jco build them; here a shipped plugin
//! stripped of it, and the `http-world` fixture built from the `step-http`
//! world without the SDK) is reported as not sealed, sealed from its
//! `describe`, then read as sealed by `inspect` and `audit`, and still runs;
//! a component with an import the host does not provide is refused, named.

use crate::support::{RunOptions, TestRunbook, cache_dir, plugins_table, run_file, runtime, text};
use runbook::events::Status;
use runbook::plugin::LoadError;
use runbook::plugin::seal::without_capabilities;
use runbook_testenv::SampleService;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn runbook(args: &[&str]) -> Output {
    let index = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("RUNBOOK_INDEX_DIR", index.path())
        .env("RUNBOOK_OPERATOR", "alice")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `plugin` without any `runbook:capabilities` section, in `dir`.
fn stripped(dir: &Path, plugin: &str) -> PathBuf {
    let bytes = std::fs::read(runbook_testenv::plugin_path(plugin)).unwrap();
    let bare = without_capabilities(&bytes).unwrap();
    assert_eq!(runbook::plugin::embedded_capabilities(&bare), None);
    let path = dir.join(format!("{plugin}-unsealed.wasm"));
    std::fs::write(&path, bare).unwrap();
    path
}

/// `runbook plugin seal IN -o OUT`, which must succeed.
fn seal(input: &Path, output: &Path) -> String {
    let result = runbook(&[
        "plugin",
        "seal",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(0), "{}", text(&result));
    text(&result)
}

/// `runbook plugin inspect FILE`'s text, which must succeed.
fn inspect(file: &Path) -> String {
    let result = runbook(&["plugin", "inspect", file.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(0), "{}", text(&result));
    text(&result)
}

/// A runbook whose `[plugins]` has the usual ones and `extra`.
fn runbook_with(body: &str, extra: &[(&str, &Path)]) -> TestRunbook {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbook.toml");
    let mut text = format!("{body}\n{}", plugins_table());
    for (name, file) in extra {
        text.push_str(&format!("{name} = {:?}\n", file.display().to_string()));
    }
    std::fs::write(&path, text).unwrap();
    TestRunbook { dir, path }
}

/// `bytes` with every `from` replaced by `to`, of the same length.
fn renamed(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut found = false;
    let mut at = 0;
    while let Some(offset) = out[at..]
        .windows(from.len())
        .position(|window| window == from.as_bytes())
    {
        let start = at + offset;
        out[start..start + to.len()].copy_from_slice(to.as_bytes());
        at = start + to.len();
        found = true;
    }
    assert!(found, "`{from}` is not in the component");
    out
}

#[test]
fn an_unsealed_plugin_says_so_and_sealing_writes_what_describe_says() {
    let dir = tempfile::tempdir().unwrap();
    let unsealed = stripped(dir.path(), "smoke-test");
    let before = inspect(&unsealed);
    assert!(
        before.contains("not sealed: no `runbook:capabilities` section"),
        "{before}"
    );
    assert!(before.contains("`runbook plugin seal`"), "{before}");
    assert!(!before.contains("runbook-sdk"), "{before}");

    let sealed = dir.path().join("smoke-test.wasm");
    let said = seal(&unsealed, &sealed);
    assert!(
        said.contains(&format!(
            "sealed smoke-test into {}: needs http, secrets?",
            sealed.display()
        )),
        "{said}"
    );
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&sealed).unwrap()))
    };
    assert!(said.contains(&format!("sha256        {digest}")), "{said}");
    assert!(!said.contains("replaced"), "{said}");

    let after = inspect(&sealed);
    assert!(
        after.contains("embedded      http, secrets? (sealed)"),
        "{after}"
    );
    let json = runbook(&[
        "plugin",
        "inspect",
        sealed.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        value["embedded_capabilities"],
        serde_json::json!(["http", "secrets?"])
    );
    assert_eq!(value["sha256"], digest);
}

#[tokio::test]
async fn sealing_replaces_the_section_a_component_carries() {
    // The SDK's section, altered to say `kube`: such a component does not
    // load, and sealing it again puts `describe`'s answer in its place.
    let bytes = std::fs::read(runbook_testenv::plugin_path("smoke-test")).unwrap();
    let altered = renamed(
        &bytes,
        "runbook:capabilitieshttp",
        "runbook:capabilitieskube",
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("altered.wasm");
    std::fs::write(&input, &altered).unwrap();
    assert!(runtime().load(&input, None).await.is_err());

    let said = seal(&input, &input);
    assert!(said.contains("replaced      kube, secrets?"), "{said}");
    let resealed = std::fs::read(&input).unwrap();
    assert_eq!(
        runbook::plugin::embedded_capabilities(&resealed),
        Some(vec!["http".to_owned(), "secrets?".to_owned()])
    );
    // One section is left, the sealed one.
    let marker = b"runbook:capabilities";
    let count = resealed
        .windows(marker.len())
        .filter(|window| window == marker)
        .count();
    assert_eq!(count, 1);
    let loaded = runtime().load(&input, None).await.unwrap();
    assert_eq!(loaded.descriptor.name, "smoke-test");
}

#[tokio::test]
async fn a_sealed_shipped_plugin_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let unsealed = stripped(dir.path(), "noop");
    let sealed = dir.path().join("noop-sealed.wasm");
    let said = seal(&unsealed, &sealed);
    assert!(said.contains("needs nothing"), "{said}");
    assert_eq!(
        runbook::plugin::embedded_capabilities(&std::fs::read(&sealed).unwrap()),
        Some(Vec::new())
    );
    let file = runbook_with(
        "[runbook]\nname = \"sealed\"\n\n[[steps]]\nid = \"quiet\"\nuses = \"sealed\"\nwith.message = \"still runs\"\n",
        &[("sealed", &sealed)],
    );
    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("quiet");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["message"], "still runs");
}

#[tokio::test]
async fn a_component_of_the_step_http_world_imports_only_http_and_runs_once_sealed() {
    let built = runbook_testenv::plugin_path("http-world");
    let loaded = runtime().load(&built, None).await.unwrap();
    let ours: Vec<&str> = loaded
        .imports
        .iter()
        .filter(|import| import.starts_with("runbook:plugin/"))
        .map(String::as_str)
        .collect();
    assert!(
        ours.iter()
            .any(|import| import.starts_with("runbook:plugin/http@")),
        "{ours:?}"
    );
    for absent in ["kube", "aws", "secrets", "command"] {
        assert!(
            !ours
                .iter()
                .any(|import| import.starts_with(&format!("runbook:plugin/{absent}@"))),
            "{ours:?}"
        );
    }
    assert_eq!(loaded.embedded_capabilities, None);

    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let body = format!(
        "[runbook]\nname = \"world\"\n\n[[steps]]\nid = \"probe\"\nuses = \"probe\"\nwith.url = \"{base}/health\"\ngrants.http = [\"{base}\"]\n"
    );

    // Unsealed, the audit says so.
    let unsealed = runbook_with(&body, &[("probe", &built)]);
    let audit = runbook(&["audit", unsealed.path.to_str().unwrap()]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(
        text(&audit).contains("not sealed: no `runbook:capabilities` section"),
        "{}",
        text(&audit)
    );

    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("http_world.wasm");
    let said = tokio::task::spawn_blocking({
        let (built, sealed) = (built.clone(), sealed.clone());
        move || seal(&built, &sealed)
    })
    .await
    .unwrap();
    assert!(said.contains("sealed http-world into"), "{said}");
    assert!(said.contains(": needs http"), "{said}");

    let file = runbook_with(&body, &[("probe", &sealed)]);
    let audit = runbook(&["audit", file.path.to_str().unwrap()]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(!text(&audit).contains("not sealed"), "{}", text(&audit));

    let finished = run_file(&runtime(), &file.path, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("probe");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["status"], "200");
    assert!(
        finished.log().contains("built from the step-http world"),
        "{}",
        finished.log()
    );
}

#[tokio::test]
async fn a_component_importing_what_the_host_does_not_provide_is_refused_naming_it() {
    let noop = std::fs::read(runbook_testenv::plugin_path("noop")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // What the default JavaScript build adds: `wasi:http`.
    let http = dir.path().join("wasi-http.wasm");
    std::fs::write(
        &http,
        renamed(&noop, "wasi:cli/stdout@0.2.", "wasi:http/types@0.2."),
    )
    .unwrap();
    let error = runtime().load(&http, None).await.unwrap_err();
    assert!(
        matches!(&error, LoadError::UnknownImport { import, .. } if import.starts_with("wasi:http/types@0.2.")),
        "{error}"
    );
    let out = dir.path().join("sealed.wasm");
    let refused = runbook(&[
        "plugin",
        "seal",
        http.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let said = text(&refused);
    assert_ne!(refused.status.code(), Some(0), "{said}");
    assert!(said.contains("imports `wasi:http/types@0.2."), "{said}");
    assert!(said.contains("which the host does not provide"), "{said}");
    assert!(said.contains("`--disable http`"), "{said}");
    assert!(said.contains("`step-http`"), "{said}");
    assert!(!out.exists());

    // An interface of the contract this host does not serve.
    let unknown = dir.path().join("unknown.wasm");
    // (An interface with functions: one of types only links whatever its
    // name.)
    let smoke = std::fs::read(runbook_testenv::plugin_path("smoke-test")).unwrap();
    std::fs::write(
        &unknown,
        renamed(&smoke, "runbook:plugin/http@", "runbook:plugin/hxtp@"),
    )
    .unwrap();
    let error = runtime()
        .load(&unknown, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("imports `runbook:plugin/hxtp@0.2.0`, which the host does not provide"),
        "{error}"
    );
    assert!(
        error.contains("serves `runbook:plugin` 0.2 and 0.1"),
        "{error}"
    );

    // And a runbook that uses it is refused before anything runs.
    let file = runbook_with(
        "[runbook]\nname = \"refused\"\n\n[[steps]]\nid = \"js\"\nuses = \"js\"\n",
        &[("js", &http)],
    );
    let validate = runbook(&["validate", file.path.to_str().unwrap()]);
    let said = text(&validate);
    assert_eq!(validate.status.code(), Some(2), "{said}");
    assert!(said.contains("imports `wasi:http/types@0.2."), "{said}");
}

/// `runbook plugin warm` compiles every plugin a runbook names into an
/// empty cache at once, says which it compiled, and finds them all cached
/// the second time; `validate` then compiles nothing.
#[test]
fn plugin_warm_compiles_a_runbooks_plugins_ahead_and_then_finds_them_cached() {
    let cache = tempfile::tempdir().unwrap();
    let riskcast = runbook_testenv::workspace_root().join("runbooks/riskcast.toml");
    let warm = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args([
                "plugin",
                "warm",
                riskcast.to_str().unwrap(),
                "--output",
                "json",
            ])
            .args(extra)
            .env("RUNBOOK_CACHE_DIR", cache.path());
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let first = warm(&[]);
    let plugins = first["plugins"].as_array().unwrap();
    assert!(plugins.len() >= 5, "{first}");
    assert!(
        plugins.iter().all(|plugin| plugin["compiled"] == true),
        "an empty cache compiles each: {first}"
    );
    let second = warm(&[]);
    assert!(
        second["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|plugin| plugin["compiled"] == false),
        "{second}"
    );
    // A component that is not one is reported, and the exit says so.
    let broken = cache.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm nonsense").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["plugin", "warm", broken.to_str().unwrap()])
        .env("RUNBOOK_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("failed"), "{}", text(&output));
}

/// `validate` on an empty cache compiles the runbook's plugins with the
/// baseline compiler, cached under a key of its own, and no step ever runs
/// that code: `plugin warm` (as `exec` would) still compiles every plugin
/// with the optimising compiler, after which `validate` maps the optimised
/// code and compiles nothing more.
#[test]
fn validate_compiles_quickly_what_the_cache_lacks_and_steps_never_run_that_code() {
    let cache = tempfile::tempdir().unwrap();
    let riskcast = runbook_testenv::workspace_root().join("runbooks/riskcast.toml");
    let cached = || {
        let mut names: Vec<String> = std::fs::read_dir(cache.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let runbook = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .env("RUNBOOK_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        output
    };
    let riskcast = riskcast.to_str().unwrap();
    runbook(&["validate", riskcast, "--env", "local"]);
    let quick = cached();
    assert!(quick.len() >= 5, "{quick:?}");
    let warm = runbook(&["plugin", "warm", riskcast, "--output", "json"]);
    let warm: serde_json::Value = serde_json::from_slice(&warm.stdout).unwrap();
    assert!(
        warm["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|plugin| plugin["compiled"] == true),
        "the quick code must not serve steps: warm compiles each plugin again, optimised: {warm}"
    );
    let both = cached();
    assert_eq!(both.len(), 2 * quick.len(), "{both:?}");
    assert!(quick.iter().all(|name| both.contains(name)));
    runbook(&["validate", riskcast, "--env", "local"]);
    assert_eq!(
        cached(),
        both,
        "validate uses the optimised code once it is cached"
    );
}
