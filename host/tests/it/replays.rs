//! The shipped plugins' committed cassettes (`plugins/*/tests/cassettes/`):
//! each replays with no service running, each plugin with cassettes has
//! at least one success and one failure case, and the plugins still
//! without cassettes only ever get fewer.

use crate::support::{cache_dir, text};
use std::path::{Path, PathBuf};

/// Shipped plugins without committed cassettes: none now. A new plugin
/// comes with its cassettes; this list is never added to.
const WITHOUT_CASSETTES: &[&str] = &[];

/// The shipped plugins: the folders of `plugins/` that build a component
/// (`cdylib`) and document it (`README.md`).
fn shipped_plugins() -> Vec<String> {
    let dir = runbook_testenv::workspace_root().join("plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("README.md").is_file())
        .filter(|path| {
            std::fs::read_to_string(path.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("cdylib"))
        })
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The plugins with a `tests/cassettes` folder, each with its cassettes.
fn plugins_with_cassettes() -> Vec<(String, Vec<PathBuf>)> {
    let dir = runbook_testenv::workspace_root().join("plugins");
    let mut plugins: Vec<(String, Vec<PathBuf>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("tests/cassettes").is_dir())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut files: Vec<PathBuf> = std::fs::read_dir(path.join("tests/cassettes"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "json")
                })
                .collect();
            files.sort();
            (name, files)
        })
        .collect();
    plugins.sort();
    plugins
}

/// Whether a cassette expects a failure: some call ends in an error or a
/// crash.
fn expects_a_failure(cassette: &Path) -> bool {
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cassette).unwrap()).unwrap();
    value["calls"].as_array().unwrap().iter().any(|call| {
        call["result"].get("error").is_some() || call["result"].get("crashed").is_some()
    })
}

#[test]
fn every_committed_cassette_replays_without_any_service() {
    let plugins = plugins_with_cassettes();
    let mut failures: Vec<String> = Vec::new();
    for (name, cassettes) in &plugins {
        let plugin = runbook_testenv::plugin_path(name);
        let successes = cassettes
            .iter()
            .filter(|cassette| !expects_a_failure(cassette))
            .count();
        if successes == 0 || successes == cassettes.len() {
            failures.push(format!(
                "plugins/{name}/tests/cassettes: needs at least one success and one failure case, has {successes} success(es) of {}",
                cassettes.len()
            ));
        }
        for cassette in cassettes {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
                .args([
                    "plugin",
                    "test",
                    &plugin.display().to_string(),
                    "--cassette",
                    &cassette.display().to_string(),
                    "--output",
                    "json",
                ])
                .env("RUNBOOK_CACHE_DIR", cache_dir())
                .env("NO_COLOR", "1")
                .output()
                .expect("runbook runs");
            if output.status.code() != Some(0) {
                failures.push(format!(
                    "{} (exit {:?}):\n{}",
                    cassette.display(),
                    output.status.code(),
                    text(&output)
                ));
            }
        }
    }

    // Shrink-only: a plugin gains cassettes, it leaves the list.
    let shipped = shipped_plugins();
    for name in WITHOUT_CASSETTES {
        if !shipped.iter().any(|shipped| shipped == name) {
            failures.push(format!(
                "`{name}` in WITHOUT_CASSETTES is not a shipped plugin"
            ));
        }
        if plugins.iter().any(|(with, _)| with == name) {
            failures.push(format!(
                "`{name}` has cassettes now: remove it from WITHOUT_CASSETTES"
            ));
        }
    }
    for name in &shipped {
        let covered = plugins.iter().any(|(with, _)| with == name);
        if !covered && !WITHOUT_CASSETTES.contains(&name.as_str()) {
            failures.push(format!(
                "`{name}` has no cassettes (plugins/{name}/tests/cassettes/) and is not in WITHOUT_CASSETTES"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
