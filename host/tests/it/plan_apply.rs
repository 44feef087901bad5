//! Plan, then apply, as an operator does it with the `runbook` binary: a
//! plan saved with `runbook plan --out` runs with `runbook exec PLAN.json`
//! exactly as reviewed, and is refused, with nothing run, once its
//! runbook's text, a plugin's bytes or its parameters changed; on a real
//! terminal (tmux, whose screen the test reads) `exec` shows the plan and
//! asks `Apply this plan? [y/n]` before the first step.

use crate::support::cache_dir;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A runbook beside its own copy of the `noop` plugin, so that a test can
/// change the plugin's bytes.
struct Deploy {
    dir: tempfile::TempDir,
    runbook: PathBuf,
    plugin: PathBuf,
}

const RUNBOOK: &str = r#"[runbook]
name = "shop"

[params.version]
required = true

[environments.staging.vars]
base = "http://127.0.0.1:9"

[plugins]
noop = "noop.wasm"

[[steps]]
id = "migrate"
uses = "noop"
grants.http = ["${{ vars.base }}/admin"]

[[steps]]
id = "deploy"
uses = "noop"
"#;

impl Deploy {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let runbook = dir.path().join("shop.toml");
        let plugin = dir.path().join("noop.wasm");
        std::fs::write(&runbook, RUNBOOK).expect("write the runbook");
        std::fs::copy(runbook_testenv::plugin_path("noop"), &plugin).expect("copy noop.wasm");
        Deploy {
            dir,
            runbook,
            plugin,
        }
    }

    /// `runbook ARGS` in the runbook's folder, with no terminal.
    fn runbook(&self, args: &[&str]) -> Output {
        self.runbook_in(self.dir.path(), args)
    }

    /// `runbook ARGS` in `dir`, with no terminal.
    fn runbook_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .current_dir(dir)
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("NO_COLOR", "1")
            .env("RUNBOOK_OPERATOR", "alice")
            .output()
            .expect("runbook runs")
    }

    /// `runbook plan shop.toml --env staging --set version=1.2.3 --out
    /// plan.json`: the saved plan's path.
    fn save_plan(&self) -> PathBuf {
        let output = self.runbook(&[
            "plan",
            "shop.toml",
            "--env",
            "staging",
            "--set",
            "version=1.2.3",
            "--out",
            "plan.json",
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains("plan saved to plan.json"), "{stderr}");
        self.dir.path().join("plan.json")
    }

    /// The runs this runbook's state folder holds.
    fn runs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.dir.path().join(".runbook/runs")) {
            Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `runbook exec PLAN` from another folder, which must be refused
    /// with nothing run: its stderr.
    fn refused(&self, plan: &Path) -> String {
        let elsewhere = tempfile::tempdir().unwrap();
        let output = self.runbook_in(elsewhere.path(), &["exec", plan.to_str().unwrap()]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("nothing was run"), "{stderr}");
        assert!(!stderr.contains("run succeeded"), "{stderr}");
        assert!(
            self.runs().is_empty(),
            "a run was started: {:?}",
            self.runs()
        );
        assert!(
            !elsewhere.path().join(".runbook").exists(),
            "state was written where exec was run"
        );
        stderr
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_saved_plan_keeps_what_was_reviewed_and_exec_runs_exactly_it() {
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    assert!(deploy.runs().is_empty(), "planning started a run");
    let saved = read_json(&plan);
    assert_eq!(saved["format"], "runbook-plan/1");
    assert_eq!(saved["runbook"]["name"], "shop");
    let path = saved["runbook"]["path"].as_str().unwrap();
    assert!(Path::new(path).is_absolute(), "{path}");
    assert_eq!(
        Path::new(path),
        std::fs::canonicalize(&deploy.runbook).unwrap()
    );
    assert_eq!(saved["runbook"]["text"], RUNBOOK);
    assert_eq!(saved["runbook"]["sha256"], sha256(RUNBOOK.as_bytes()));
    assert_eq!(saved["environment"], "staging");
    assert_eq!(saved["params"]["version"], "1.2.3");
    let plugin_bytes = std::fs::read(&deploy.plugin).unwrap();
    assert_eq!(saved["plugins"]["noop"]["sha256"], sha256(&plugin_bytes));
    assert!(
        Path::new(saved["plugins"]["noop"]["path"].as_str().unwrap()).is_absolute(),
        "{saved:#}"
    );
    let steps: Vec<&str> = saved["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["migrate", "deploy"]);
    assert_eq!(
        saved["steps"][0]["grants"]["http"][0], "http://127.0.0.1:9/admin",
        "{saved:#}"
    );
    let fingerprint = saved["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    assert_eq!(saved["made_by"], "alice");
    assert!(
        saved["made_at"].as_str().unwrap().contains('T'),
        "{saved:#}"
    );

    // The same fingerprint as `plan --output json` shows, and approvals bind to.
    let output = deploy.runbook(&[
        "plan",
        "shop.toml",
        "--env",
        "staging",
        "--set",
        "version=1.2.3",
        "--output",
        "json",
    ]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["fingerprint"], fingerprint.as_str());

    // Applied from another folder: the plan names its runbook's file.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = deploy.runbook_in(elsewhere.path(), &["exec", plan.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("✓ migrate"), "{stderr}");
    assert!(stderr.contains("✓ deploy"), "{stderr}");
    assert!(stderr.contains("run succeeded"), "{stderr}");
    // Without a terminal, nothing is asked.
    assert!(!stderr.contains("Apply this plan?"), "{stderr}");
    let runs = deploy.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let journal = std::fs::read_to_string(runs[0].join("events.jsonl")).unwrap();
    let started: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(started["event"], "run_started");
    assert_eq!(started["plan_hash"], fingerprint.as_str());
    assert_eq!(started["params"]["version"], "1.2.3");
    assert_eq!(started["environment"], "staging");
    let reference = &started["saved_plan"];
    assert_eq!(
        Path::new(reference["file"].as_str().unwrap()),
        std::fs::canonicalize(&plan).unwrap(),
        "{started:#}"
    );
    assert_eq!(reference["sha256"], sha256(&std::fs::read(&plan).unwrap()));
    assert_eq!(reference["made_by"], "alice");

    // A run of the runbook itself records no saved plan.
    let output = deploy.runbook(&[
        "exec",
        "shop.toml",
        "--env",
        "staging",
        "--set",
        "version=1.2.4",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let runs = deploy.runs();
    let other = runs
        .iter()
        .map(|run| std::fs::read_to_string(run.join("events.jsonl")).unwrap())
        .find(|journal| journal.contains("1.2.4"))
        .unwrap();
    assert!(!other.contains("saved_plan"), "{other}");
}

#[test]
fn a_plan_whose_runbook_changed_since_is_refused_saying_which_lines() {
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    let changed = RUNBOOK.replace(
        "grants.http = [\"${{ vars.base }}/admin\"]",
        "grants.http = [\"${{ vars.base }}\"]",
    );
    assert_ne!(changed, RUNBOOK);
    std::fs::write(&deploy.runbook, &changed).unwrap();
    let stderr = deploy.refused(&plan);
    assert!(
        stderr.contains("changed since the plan was saved"),
        "{stderr}"
    );
    assert!(stderr.contains(&sha256(RUNBOOK.as_bytes())), "{stderr}");
    assert!(stderr.contains(&sha256(changed.as_bytes())), "{stderr}");
    // The line, as it was and as it is.
    let line = RUNBOOK
        .lines()
        .position(|line| line.starts_with("grants.http"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("line {line} changed")), "{stderr}");
    assert!(
        stderr.contains("- grants.http = [\"${{ vars.base }}/admin\"]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("+ grants.http = [\"${{ vars.base }}\"]"),
        "{stderr}"
    );
    // And what it does: the step's grant is wider.
    assert!(
        stderr.contains("step `migrate`'s grants changed"),
        "{stderr}"
    );
    assert!(stderr.contains("plan again"), "{stderr}");

    // Put back as it was, the plan runs.
    std::fs::write(&deploy.runbook, RUNBOOK).unwrap();
    let output = deploy.runbook(&["exec", "plan.json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(deploy.runs().len(), 1);
}

#[test]
fn a_plan_whose_runbook_is_gone_says_so() {
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    std::fs::remove_file(&deploy.runbook).unwrap();
    let stderr = deploy.refused(&plan);
    assert!(stderr.contains("no longer exists"), "{stderr}");
    assert!(stderr.contains("shop.toml"), "{stderr}");
}

#[test]
fn a_plan_whose_plugin_bytes_changed_since_is_refused() {
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    let mut bytes = std::fs::read(&deploy.plugin).unwrap();
    let was = sha256(&bytes);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&deploy.plugin, &bytes).unwrap();
    let stderr = deploy.refused(&plan);
    assert!(
        stderr.contains("plugin `noop` changed since the plan was saved"),
        "{stderr}"
    );
    assert!(stderr.contains(&was), "{stderr}");
    assert!(stderr.contains(&sha256(&bytes)), "{stderr}");
}

#[test]
fn a_plan_edited_after_review_is_refused() {
    // The parameters in the file are changed by hand: the plan bound with
    // them is not the one whose fingerprint was reviewed.
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    let mut saved = read_json(&plan);
    saved["params"]["version"] = "9.9.9".into();
    std::fs::write(&plan, serde_json::to_string_pretty(&saved).unwrap()).unwrap();
    let stderr = deploy.refused(&plan);
    assert!(stderr.contains("fingerprint"), "{stderr}");

    // Not a plan at all.
    std::fs::write(&plan, "{\"hello\": 1}").unwrap();
    let stderr = deploy.refused(&plan);
    assert!(stderr.contains("is not a saved plan"), "{stderr}");
}

#[test]
fn a_saved_plan_takes_no_env_or_set() {
    let deploy = Deploy::new();
    let plan = deploy.save_plan();
    let plan = plan.to_str().unwrap();
    for extra in [
        &["--set", "version=2.0.0"][..],
        &["--env", "staging"][..],
        &["--env", "staging", "--set", "version=1.2.3"][..],
    ] {
        let mut args = vec!["exec", plan];
        args.extend_from_slice(extra);
        let output = deploy.runbook(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains("is a saved plan"), "{stderr}");
        assert!(stderr.contains("`--env` and `--set`"), "{stderr}");
        assert!(deploy.runs().is_empty());
    }
    let output = deploy.runbook(&["exec", plan, "--dry-run"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(deploy.runs().is_empty());
}

/// `exec` on a real terminal (tmux, whose screen the test reads): the
/// plan and `Apply this plan? [y/n]` are shown before the first step,
/// Enter alone asks again, `n` runs and records nothing (exit 5), `y`
/// runs it, and `--yes` never asks.
#[test]
fn on_a_terminal_exec_shows_the_plan_and_asks_before_the_first_step() {
    let deploy = Deploy::new();
    let socket = format!("runbook-apply-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs (scripts/install-services installs Debian's `tmux`)")
    };
    struct Kill<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let _kill = Kill(&tmux);
    let screen = |session: &str| text(&tmux(&["capture-pane", "-p", "-t", session]).stdout);
    let wait_for = |session: &str, wanted: &str| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let shown = screen(session);
            if shown.contains(wanted) {
                return shown;
            }
            assert!(
                std::time::Instant::now() < until,
                "`{wanted}` never showed:\n{shown}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let start = |session: &str, extra: &str| {
        let command = format!(
            "cd {} && RUNBOOK_CACHE_DIR={} RUNBOOK_OPERATOR=alice NO_COLOR=1 {} exec shop.toml --env staging --set version=1.2.3{extra}; echo exit=$?; sleep 30",
            deploy.dir.path().display(),
            cache_dir().display(),
            env!("CARGO_BIN_EXE_runbook"),
        );
        let started = tmux(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "50",
            &command,
        ]);
        assert!(started.status.success(), "{}", text(&started.stderr));
    };

    // No: nothing runs, nothing is recorded.
    start("declined", "");
    let shown = wait_for("declined", "Apply this plan? [y/n]");
    assert!(
        shown.contains("Plan of `shop` for environment `staging`: 2 steps"),
        "{shown}"
    );
    assert!(shown.contains("1. migrate (noop"), "{shown}");
    assert!(shown.contains("2. deploy (noop"), "{shown}");
    assert!(
        shown.contains("grants http: http://127.0.0.1:9/admin"),
        "{shown}"
    );
    // Asked before the first step: the run has not begun.
    assert!(!shown.contains("▶ shop"), "{shown}");
    assert!(deploy.runs().is_empty());
    // The question stays while nothing is answered.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        screen("declined").contains("Apply this plan? [y/n]"),
        "{}",
        screen("declined")
    );
    tmux(&["send-keys", "-t", "declined", "Enter"]);
    wait_for(
        "declined",
        "answer y (apply it: the run starts) or n (run nothing)",
    );
    tmux(&["send-keys", "-t", "declined", "n", "Enter"]);
    let shown = wait_for("declined", "exit=");
    assert!(shown.contains("exit=5"), "{shown}");
    assert!(shown.contains("not applied: nothing ran"), "{shown}");
    assert!(!shown.contains("▶ shop"), "{shown}");
    assert!(deploy.runs().is_empty(), "{:?}", deploy.runs());

    // Yes: the run starts, after the question.
    start("accepted", "");
    wait_for("accepted", "Apply this plan? [y/n]");
    tmux(&["send-keys", "-t", "accepted", "y", "Enter"]);
    let shown = wait_for("accepted", "exit=");
    assert!(shown.contains("exit=0"), "{shown}");
    assert!(shown.contains("run succeeded"), "{shown}");
    let question = shown.find("Apply this plan? [y/n]").unwrap();
    let run = shown.find("▶ shop").expect("the run's header");
    assert!(question < run, "{shown}");
    assert_eq!(deploy.runs().len(), 1);

    // --yes: never asked.
    start("unasked", " --yes");
    let shown = wait_for("unasked", "exit=");
    assert!(shown.contains("exit=0"), "{shown}");
    assert!(!shown.contains("Apply this plan?"), "{shown}");
    assert_eq!(deploy.runs().len(), 2);
}
