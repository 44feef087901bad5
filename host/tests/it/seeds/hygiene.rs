//! The shipped runbooks in production terms: nothing of the local estate
//! outside the `local` environment (its loopback addresses, its ports, its
//! 5-second rate windows), every environment complete, and every runbook
//! valid without a warning in every environment.

use regex::Regex;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped runbooks.
fn runbooks() -> Vec<PathBuf> {
    let files = crate::support::toml_files(&runbook_testenv::workspace_root().join("runbooks"));
    assert!(files.len() >= 6, "{files:?}");
    files
}

fn table(path: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn environments(table: &toml::Table) -> Vec<(String, toml::Table)> {
    table
        .get("environments")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .map(|(name, environment)| {
            (
                name.clone(),
                environment.as_table().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// `runbook validate FILE [--env NAME]`.
fn validate(path: &Path, environment: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command.arg("validate").arg(path);
    if let Some(environment) = environment {
        command.args(["--env", environment]);
    }
    command
        .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Every string in `value`, with where it is.
fn strings(value: &toml::Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        toml::Value::String(text) => found.push((at.to_owned(), text.clone())),
        toml::Value::Integer(number) => found.push((at.to_owned(), number.to_string())),
        toml::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                strings(item, &format!("{at}[{index}]"), found);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                strings(item, &format!("{at}.{key}"), found);
            }
        }
        _ => {}
    }
}

/// Every value of a runbook that production sees: each environment's but
/// `local`'s, and everything the steps, `[notify]` and `[secrets]` write
/// (which every environment shares).
fn production_values(table: &toml::Table) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, environment) in environments(table) {
        if name != "local" {
            strings(
                &toml::Value::Table(environment),
                &format!("environments.{name}"),
                &mut found,
            );
        }
    }
    for key in ["steps", "notify", "secrets"] {
        if let Some(value) = table.get(key) {
            strings(value, key, &mut found);
        }
    }
    found
}

#[test]
fn no_shipped_runbook_reaches_the_local_estate_outside_the_local_environment() {
    use runbook_testenv::estate::ports;
    let estate_ports = [
        ports::SAMPLE,
        ports::KUBE,
        ports::REGISTRY,
        ports::MOTO,
        ports::PROMETHEUS,
        ports::POSTGRES,
    ]
    .map(|port| Regex::new(&format!(r"(^|[^0-9]){port}([^0-9]|$)")).unwrap());
    for path in runbooks() {
        let found: Vec<_> = production_values(&table(&path))
            .into_iter()
            .filter(|(_, text)| {
                ["127.0.0.1", "localhost", "[::1]"]
                    .iter()
                    .any(|loopback| text.contains(loopback))
                    || estate_ports.iter().any(|port| port.is_match(text))
            })
            .collect();
        assert!(
            found.is_empty(),
            "{} reaches the local estate outside `local`: {found:?}",
            path.display()
        );
    }
}

/// A rate window of seconds holds less than two samples at a production
/// scrape interval (15 s to 1 min): the query answers nothing, and the
/// gate either fails or checks nothing.
#[test]
fn production_queries_use_rate_windows_of_minutes() {
    let literal_seconds = Regex::new(r"\[\s*\d+s\s*\]").unwrap();
    let short = Regex::new(r"^\d+s$").unwrap();
    for path in runbooks() {
        let table = table(&path);
        let found: Vec<_> = production_values(&table)
            .into_iter()
            .filter(|(at, text)| {
                literal_seconds.is_match(text)
                    || (at.starts_with("environments.")
                        && at.contains("window")
                        && short.is_match(text))
            })
            .collect();
        assert!(
            found.is_empty(),
            "{}: rate windows of seconds outside `local`: {found:?}",
            path.display()
        );
    }
}

#[test]
fn every_environment_defines_every_variable_the_runbook_uses() {
    let reference = Regex::new(r"vars\.([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    for path in runbooks() {
        let text = std::fs::read_to_string(&path).unwrap();
        // References outside comments.
        let used: std::collections::BTreeSet<String> = text
            .lines()
            .map(|line| line.split_once('#').map_or(line, |(code, _)| code))
            .flat_map(|line| {
                reference
                    .captures_iter(line)
                    .map(|found| found[1].to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|name| name != "NAME")
            .collect();
        for (name, environment) in environments(&table(&path)) {
            let vars = environment
                .get("vars")
                .and_then(toml::Value::as_table)
                .cloned()
                .unwrap_or_default();
            let missing: Vec<_> = used.iter().filter(|var| !vars.contains_key(*var)).collect();
            assert!(
                missing.is_empty(),
                "{} environment `{name}` lacks {missing:?}",
                path.display()
            );
        }
    }
}

#[test]
fn the_shipped_runbooks_are_valid_without_a_warning_in_every_environment() {
    for path in runbooks() {
        let output = validate(&path, None);
        assert!(
            output.status.success(),
            "{} is invalid:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        for (environment, _) in environments(&table(&path)) {
            let output = validate(&path, Some(&environment));
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                output.status.success(),
                "{} --env {environment}: {said}",
                path.display(),
            );
            assert!(
                !said.contains("warning"),
                "{} --env {environment} warns: {said}",
                path.display(),
            );
        }
    }
}

/// Waits the steps write themselves (a poll, a hold, a soak) are the
/// same in every environment: seconds tuned to the local estate would
/// hammer or cut short production's. They come from the environment's
/// variables instead.
#[test]
fn steps_write_no_waits_of_seconds_outside_the_environments() {
    let seconds = Regex::new(r"^\d+(ms|s)$").unwrap();
    let wait = Regex::new(r"\.(poll|hold|holds\[\d+\]|duration|soak)$").unwrap();
    for path in runbooks() {
        let found: Vec<_> = production_values(&table(&path))
            .into_iter()
            .filter(|(at, text)| {
                !at.starts_with("environments.") && wait.is_match(at) && seconds.is_match(text)
            })
            .collect();
        assert!(
            found.is_empty(),
            "{}: waits of seconds written in the steps: {found:?}",
            path.display()
        );
    }
}
