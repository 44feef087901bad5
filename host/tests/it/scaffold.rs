//! `runbook plugin new`: the project it makes builds with cargo, passes its
//! own test, is a sealed component with an honest import list, and runs in
//! the example runbook it comes with against a real service.

use crate::support::text;
use runbook_testenv::SampleService;
use std::process::Command;

fn cargo(project: &std::path::Path, target: &std::path::Path, args: &[&str]) {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo {}: {}",
        args.join(" "),
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_plugin_builds_passes_its_test_and_runs_in_its_example() {
    let service = SampleService::start(None).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let made = crate::support::runbook_cli(&[
        "plugin",
        "new",
        "http-check",
        "--dir",
        folder.path().join("http-check").to_str().unwrap(),
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    let project = folder.path().join("http-check");
    // Its target folder inside it, as a plugin author's would be.
    let target = project.join("target");
    let built = {
        let (project, target) = (project.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            cargo(&project, &target, &["test", "--offline"]);
            cargo(
                &project,
                &target,
                &[
                    "build",
                    "--offline",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                ],
            );
        })
    };
    built.await.unwrap();
    let component = target.join("wasm32-wasip2/release/http_check.wasm");
    let inspected = crate::support::runbook_cli(&[
        "plugin",
        "inspect",
        component.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(inspected.status.code(), Some(0), "{}", text(&inspected));
    let described: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(described["name"], "http-check", "{described}");
    let example = project.join("example.toml").display().to_string();
    let healthy = format!("url={}/health", service.base_url());
    let ran = tokio::task::spawn_blocking(move || {
        crate::support::runbook_cli(&["exec", &example, "--set", &healthy, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
    assert!(
        service
            .state()
            .received
            .iter()
            .any(|request| request.path == "/health"),
        "the step reached the service"
    );
    // A second new project in the same folder is refused.
    let again = crate::support::runbook_cli(&[
        "plugin",
        "new",
        "http-check",
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_plugin_passes_its_test_builds_sealed_and_runs_in_its_example() {
    let service = SampleService::start(None).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let project = folder.path().join("py-check");
    let made = crate::support::runbook_cli(&[
        "plugin",
        "new",
        "py-check",
        "--lang",
        "python",
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    // Its own test, on this machine's Python.
    let tested = Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&project)
        .output()
        .expect("python3 runs");
    assert!(tested.status.success(), "{}", text(&tested));
    assert!(text(&tested).contains("ok"), "{}", text(&tested));
    // Built with the pinned componentize-py that scripts/build-plugins
    // installed, and sealed by this runbook.
    let venv = std::env::var("RUNBOOK_PYTHON_VENV").map_or_else(
        |_| runbook_testenv::workspace_root().join(".venv"),
        std::path::PathBuf::from,
    );
    let built = {
        let project = project.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(venv.join("bin/python"))
                .args(["runbook_sdk/build.py", "plugin.py", "-o", "plugin.wasm"])
                .current_dir(&project)
                .env("RUNBOOK", env!("CARGO_BIN_EXE_runbook"))
                .output()
                .expect("the venv's python runs (scripts/build-plugins makes it)")
        })
        .await
        .unwrap()
    };
    assert!(built.status.success(), "{}", text(&built));
    let inspected = crate::support::runbook_cli(&[
        "plugin",
        "inspect",
        project.join("plugin.wasm").to_str().unwrap(),
    ]);
    let said = text(&inspected);
    assert_eq!(inspected.status.code(), Some(0), "{said}");
    assert!(said.contains("(sealed)"), "{said}");
    assert!(
        !said.contains("runbook:plugin/aws"),
        "honest imports: {said}"
    );
    let example = project.join("example.toml").display().to_string();
    let healthy = format!("url={}/health", service.base_url());
    let ran = tokio::task::spawn_blocking(move || {
        crate::support::runbook_cli(&["exec", &example, "--set", &healthy, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_javascript_plugin_passes_its_test_builds_sealed_and_runs_in_its_example() {
    let service = SampleService::start(None).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let project = folder.path().join("js-check");
    let made = crate::support::runbook_cli(&[
        "plugin",
        "new",
        "js-check",
        "--lang",
        "js",
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    let npm = move |at: &std::path::Path, args: &[&str]| {
        Command::new("npm")
            .args(args)
            .current_dir(at)
            .env("RUNBOOK", env!("CARGO_BIN_EXE_runbook"))
            .output()
            .expect("npm runs (Node.js 20)")
    };
    let tested = npm(&project, &["test"]);
    assert!(tested.status.success(), "{}", text(&tested));
    assert!(text(&tested).contains("# pass 1"), "{}", text(&tested));
    // The toolchain `npm run setup` would install is the one
    // scripts/build-plugins installed for plugins/sdk-js, from the same
    // lockfile: lent rather than downloaded again.
    std::os::unix::fs::symlink(
        runbook_testenv::workspace_root().join("plugins/sdk-js/node_modules"),
        project.join("runbook-sdk/node_modules"),
    )
    .unwrap();
    let at = project.clone();
    let built = tokio::task::spawn_blocking(move || npm(&at, &["run", "build"]))
        .await
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let inspected = crate::support::runbook_cli(&[
        "plugin",
        "inspect",
        folder.path().join("js-check/plugin.wasm").to_str().unwrap(),
    ]);
    let said = text(&inspected);
    assert_eq!(inspected.status.code(), Some(0), "{said}");
    assert!(said.contains("(sealed)"), "{said}");
    assert!(!said.contains("wasi:http"), "honest imports: {said}");
    let example = folder
        .path()
        .join("js-check/example.toml")
        .display()
        .to_string();
    let healthy = format!("url={}/health", service.base_url());
    let ran = tokio::task::spawn_blocking(move || {
        crate::support::runbook_cli(&["exec", &example, "--set", &healthy, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
}
