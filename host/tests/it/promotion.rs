//! The promotion gate with the binary: `production` requires a `staging`
//! run of the same version that succeeded at least 24 hours and at most 7
//! days ago. The staging runs are real runs; the clock of the production
//! runs is moved with `RUNBOOK_NOW`, so nothing sleeps.

use crate::support::{TestRunbook, cache_dir, run_id, text};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `deploy` runs everywhere; `break`, when `--set fail=yes`, fails the run.
/// Production needs bob's approval, when `approvals` says so.
fn promoted(approvals: &str) -> TestRunbook {
    TestRunbook::new(&format!(
        r#"[runbook]
name = "promote"

[params.version]
required = true

[params.fail]
default = "no"

[environments.staging]

[environments.production]
requires = {{ environment = "staging", same = ["version"], soaked = "24h", within = "7d" }}
{approvals}

[[steps]]
id = "deploy"
uses = "noop"

[[steps]]
id = "break"
uses = "misbehave"
if = "params.fail == 'yes'"
with.mode = "trap"
grants.http = ["http://127.0.0.1:9"]
"#
    ))
}

/// Runs `runbook` as `operator`, its index in `index`, at `now` when given
/// (RFC 3339).
fn runbook(index: &Path, operator: &str, now: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("RUNBOOK_INDEX_DIR", index)
        .env("RUNBOOK_OPERATOR", operator)
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_NOW")
        .stdin(Stdio::null());
    if let Some(now) = now {
        command.env("RUNBOOK_NOW", now);
    }
    command.output().expect("runbook runs")
}

/// The time `hours` from now, as `RUNBOOK_NOW` takes it.
fn later(hours: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(hours)).to_string()
}

/// A runbook and its runs: staging and production runs of one file.
struct Rehearsal {
    file: TestRunbook,
    index: tempfile::TempDir,
}

impl Rehearsal {
    fn new(approvals: &str) -> Self {
        Rehearsal {
            file: promoted(approvals),
            index: tempfile::tempdir().unwrap(),
        }
    }

    /// `runbook VERB FILE --env ENVIRONMENT --set version=VERSION EXTRA...`
    /// by alice at `now`.
    fn run(
        &self,
        verb: &str,
        environment: &str,
        version: &str,
        now: Option<&str>,
        extra: &[&str],
    ) -> Output {
        let path = self.file.path.to_str().unwrap();
        let set = format!("version={version}");
        let args = [verb, path, "--env", environment, "--set", &set];
        runbook(
            self.index.path(),
            "alice",
            now,
            &[&args[..], extra].concat(),
        )
    }

    /// A staging run of `version`, which must exit with `code`; its run id.
    fn staging(&self, version: &str, extra: &[&str], code: i32) -> String {
        let output = self.run("exec", "staging", version, None, extra);
        assert_eq!(output.status.code(), Some(code), "{}", text(&output));
        run_id(&output)
    }

    /// A folder or file of the state folder.
    fn state(&self, path: &str) -> std::path::PathBuf {
        self.file.dir.path().join(".runbook").join(path)
    }

    /// The deployment record of a run.
    fn record(&self, run_id: &str) -> serde_json::Value {
        let path = self.state(&format!("deployments/{run_id}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// Asserts a refusal (exit 2, nothing run) that says `says`.
fn assert_refused(output: &Output, says: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "{}", text(output));
    for words in says {
        assert!(
            text(output).contains(words),
            "no {words:?} in:\n{}",
            text(output)
        );
    }
}

#[test]
fn a_production_run_is_refused_without_a_staging_success_and_says_what_is_missing() {
    let rehearsal = Rehearsal::new("");
    for verb in ["exec", "plan"] {
        let refused = rehearsal.run(verb, "production", "1.2.3", None, &[]);
        assert_refused(
            &refused,
            &[
                "`production` is deployed only after `staging`: no run in `staging` with version=1.2.3 succeeded",
                "deploy it to `staging` first: `runbook exec",
                "--env staging --set version=1.2.3`",
                "--emergency --reason",
            ],
        );
    }
    assert!(
        !rehearsal.file.dir.path().join(".runbook/runs").exists(),
        "a refused run leaves no run behind"
    );
}

#[test]
fn a_production_run_goes_once_the_staging_success_has_soaked_and_names_it() {
    let rehearsal = Rehearsal::new("");
    let staging = rehearsal.staging("1.2.3", &[], 0);

    let young = rehearsal.run("exec", "production", "1.2.3", None, &[]);
    assert_refused(
        &young,
        &[
            &format!("run {staging} in `staging` with version=1.2.3 succeeded"),
            "`soaked` needs 24h: it is eligible at",
            "run again from",
        ],
    );

    let tomorrow = later(25);
    let plan = rehearsal.run(
        "plan",
        "production",
        "1.2.3",
        Some(&tomorrow),
        &["--output", "json"],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["promotion"]["satisfied_by"], staging.as_str());
    assert_eq!(plan["promotion"]["from"], "staging");
    assert_eq!(plan["promotion"]["overridden"], serde_json::Value::Null);
    let plan = rehearsal.run("plan", "production", "1.2.3", Some(&tomorrow), &[]);
    assert!(
        text(&plan).contains(&format!(
            "✓ satisfied by run {staging} in `staging` with version=1.2.3 succeeded 25h"
        )),
        "{}",
        text(&plan)
    );

    let promoted = rehearsal.run("exec", "production", "1.2.3", Some(&tomorrow), &[]);
    assert_eq!(promoted.status.code(), Some(0), "{}", text(&promoted));
    let production = run_id(&promoted);
    let record = rehearsal.record(&production);
    assert_eq!(record["environment"], "production");
    assert_eq!(record["status"], "succeeded");
    let show = runbook(
        rehearsal.index.path(),
        "alice",
        None,
        &["show", &production],
    );
    assert!(
        text(&show).contains(&format!("promoted from run {staging} in `staging`")),
        "{}",
        text(&show)
    );
}

#[test]
fn a_staging_success_older_than_within_does_not_count() {
    let rehearsal = Rehearsal::new("");
    let staging = rehearsal.staging("1.2.3", &[], 0);
    let refused = rehearsal.run(
        "exec",
        "production",
        "1.2.3",
        Some(&later(9 * 24 + 12)),
        &[],
    );
    assert_refused(
        &refused,
        &[
            &format!(
                "the newest run in `staging` with version=1.2.3 that succeeded, {staging}, is 9d 12h old"
            ),
            "`within` allows 7d",
            "deploy it to `staging` again",
        ],
    );
}

#[test]
fn a_staging_run_that_failed_or_was_rolled_back_does_not_count() {
    let rehearsal = Rehearsal::new("");
    let failed = rehearsal.staging("1.2.3", &["--set", "fail=yes"], 1);
    let tomorrow = later(25);
    let refused = rehearsal.run("exec", "production", "1.2.3", Some(&tomorrow), &[]);
    assert_refused(
        &refused,
        &[&format!(
            "no run in `staging` with version=1.2.3 succeeded (run {failed} failed)"
        )],
    );

    // A success that `runbook rollback` undid afterwards.
    let undone = rehearsal.staging("1.2.3", &[], 0);
    assert_eq!(rehearsal.record(&undone)["status"], "succeeded");
    let rolled_back = runbook(
        rehearsal.index.path(),
        "alice",
        None,
        &["rollback", &undone],
    );
    assert_eq!(rolled_back.status.code(), Some(0), "{}", text(&rolled_back));
    assert_eq!(rehearsal.record(&undone)["status"], "rolled_back");
    let refused = rehearsal.run("exec", "production", "1.2.3", Some(&tomorrow), &[]);
    assert_refused(
        &refused,
        &[&format!(
            "run {failed} failed; run {undone} was rolled back"
        )],
    );
}

#[test]
fn a_staging_success_of_another_version_does_not_count() {
    let rehearsal = Rehearsal::new("");
    rehearsal.staging("1.2.3", &[], 0);
    let refused = rehearsal.run("exec", "production", "1.2.4", Some(&later(25)), &[]);
    assert_refused(
        &refused,
        &[
            "no run in `staging` with version=1.2.4 succeeded",
            "--set version=1.2.4`",
        ],
    );
}

#[test]
fn an_emergency_overrides_the_gate_and_the_journal_audit_log_and_show_record_it() {
    let rehearsal = Rehearsal::new("");
    let emergency = rehearsal.run(
        "exec",
        "production",
        "1.2.3",
        None,
        &["--emergency", "--reason", "CVE-2026-1 hotfix"],
    );
    assert_eq!(emergency.status.code(), Some(0), "{}", text(&emergency));
    let run_id = run_id(&emergency);
    assert_eq!(rehearsal.record(&run_id)["emergency"], "CVE-2026-1 hotfix");
    let run = rehearsal.state(&format!("runs/{run_id}"));

    let journal = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let checked: serde_json::Value = journal
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "promotion_checked")
        .unwrap_or_else(|| panic!("no promotion_checked in {journal}"));
    assert_eq!(checked["overridden"], "CVE-2026-1 hotfix");
    assert_eq!(checked["satisfied_by"], serde_json::Value::Null);
    assert_eq!(
        checked["detail"],
        "no run in `staging` with version=1.2.3 succeeded"
    );

    let audit = std::fs::read_to_string(run.join("audit.jsonl")).unwrap();
    let audited: serde_json::Value = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|record| record["capability"] == "promotion")
        .unwrap_or_else(|| panic!("no promotion record in {audit}"));
    assert_eq!(audited["grant"], "--emergency: CVE-2026-1 hotfix");

    let show = runbook(rehearsal.index.path(), "alice", None, &["show", &run_id]);
    let shown = text(&show);
    assert!(shown.contains("emergency  CVE-2026-1 hotfix"), "{shown}");
    assert!(
        shown.contains("promotion gate overridden (emergency: CVE-2026-1 hotfix): no run in `staging` with version=1.2.3 succeeded"),
        "{shown}"
    );
}

#[test]
fn a_resumed_run_is_not_checked_again_though_its_staging_run_aged_past_within() {
    let rehearsal = Rehearsal::new("approvals = { required = 1, from = [\"bob\"] }");
    rehearsal.staging("1.2.3", &[], 0);
    let waiting = rehearsal.run("exec", "production", "1.2.3", Some(&later(25)), &[]);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    let run_id = run_id(&waiting);
    let approved = runbook(
        rehearsal.index.path(),
        "bob",
        None,
        &["approve", &run_id, "--as", "bob"],
    );
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    // Eight days after the staging run, a new run would be refused...
    let next_week = later(8 * 24);
    let refused = rehearsal.run("exec", "production", "1.2.3", Some(&next_week), &[]);
    assert_refused(&refused, &["`within` allows 7d"]);
    // ...the run that passed the gate when it started goes on.
    let resumed = runbook(
        rehearsal.index.path(),
        "alice",
        Some(&next_week),
        &["resume", &run_id],
    );
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(rehearsal.record(&run_id)["status"], "succeeded");
}
