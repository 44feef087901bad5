//! Operating runs with the binary: manual steps and confirmations,
//! approvals, deploy windows, the lock, and resume after a crash, checked
//! through the journal, the deployment record and a counter service.

use crate::support::{TestRunbook, cache_dir, run_id, text};
use runbook_testenv::Counter;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Env {
    index: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            index: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, operator: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(args)
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("RUNBOOK_INDEX_DIR", self.index.path())
            .env("RUNBOOK_OPERATOR", operator)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, operator: &str, args: &[&str]) -> Output {
        self.command(operator, args).output().expect("runbook runs")
    }
}

fn recorder(id: &str, counter: &Counter, extra: &str) -> String {
    format!(
        "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{id}\"\ngrants.http = [\"{url}\"]\n{extra}\n",
        url = counter.url
    )
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

#[tokio::test]
async fn a_manual_step_waits_for_confirmation_and_resume_continues_after_it() {
    let counter = Counter::start().await.unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"manual\"\n{}\n[[steps]]\nid = \"verify-backup\"\nkind = \"manual\"\nchecklist = [\"backup verified\", \"stakeholders notified\"]\n{}{}",
        recorder("before", &counter, ""),
        recorder("after", &counter, ""),
        // `always` runs once, at the real end: not at the pause.
        recorder("tell", &counter, "always = true"),
    ));
    let path = file.path.to_str().unwrap().to_owned();
    let env = Env::new();
    let (env, first) = blocking(move || {
        let output = env.run("alice", &["exec", &path]);
        (env, output)
    })
    .await;
    assert_eq!(first.status.code(), Some(4), "{}", text(&first));
    assert!(text(&first).contains("runbook confirm"), "{}", text(&first));
    let run = run_id(&first);
    assert_eq!(counter.tally().sequence, ["do:before"]);

    let resumed_too_early = env.run("alice", &["resume", &run]);
    assert_eq!(
        resumed_too_early.status.code(),
        Some(4),
        "{}",
        text(&resumed_too_early)
    );

    let confirmed = env.run("bob", &["confirm", &run, "verify-backup", "--as", "bob"]);
    assert_eq!(confirmed.status.code(), Some(0), "{}", text(&confirmed));
    assert!(text(&confirmed).contains("[x] backup verified"));

    let (_env, resumed) = blocking(move || {
        let output = env.run("alice", &["resume", &run]);
        (env, output)
    })
    .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(
        counter.tally().sequence,
        ["do:before", "do:after", "do:tell"],
        "a finished step ran again, or the always step ran at a pause"
    );
    assert!(
        text(&resumed).contains("confirmed by bob"),
        "{}",
        text(&resumed)
    );
}

#[tokio::test]
async fn approvals_need_distinct_people_other_than_the_operator_and_bind_to_the_plan() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "[runbook]\nname = \"approved\"\n\n[params.version]\nrequired = true\n\n[environments.production]\napprovals = {{ required = 2, from = [\"alice\", \"bob\", \"carol\"] }}\n{}",
        recorder("deploy", &counter, "")
    );
    let file = TestRunbook::new(&body);
    let path = file.path.to_str().unwrap().to_owned();
    let env = Env::new();
    let first = env.run(
        "alice",
        &[
            "exec",
            &path,
            "--env",
            "production",
            "--set",
            "version=1.2.3",
        ],
    );
    assert_eq!(first.status.code(), Some(4), "{}", text(&first));
    assert!(
        text(&first).contains("needs 2 approvals from alice, bob, carol"),
        "{}",
        text(&first)
    );
    let run = run_id(&first);

    let own = env.run("alice", &["approve", &run, "--as", "alice"]);
    assert_eq!(own.status.code(), Some(2));
    assert!(text(&own).contains("cannot approve it"), "{}", text(&own));
    let stranger = env.run("mallory", &["approve", &run, "--as", "mallory"]);
    assert_eq!(stranger.status.code(), Some(2));
    assert!(
        text(&stranger).contains("not an approver"),
        "{}",
        text(&stranger)
    );

    assert_eq!(
        env.run("bob", &["approve", &run, "--as", "bob"])
            .status
            .code(),
        Some(0)
    );
    let twice = env.run("bob", &["approve", &run, "--as", "bob"]);
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
    let one_short = env.run("alice", &["resume", &run]);
    assert_eq!(one_short.status.code(), Some(4), "{}", text(&one_short));
    assert!(
        counter.tally().done.is_empty(),
        "a step ran before the approvals were in"
    );

    assert_eq!(
        env.run("carol", &["approve", &run, "--as", "carol"])
            .status
            .code(),
        Some(0)
    );

    // A changed runbook invalidates the approvals: resume refuses.
    let original = std::fs::read_to_string(&file.path).unwrap();
    std::fs::write(
        &file.path,
        format!("{original}\n# changed after approval\n"),
    )
    .unwrap();
    let changed = env.run("alice", &["resume", &run]);
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed));
    assert!(
        text(&changed).contains("changed since run"),
        "{}",
        text(&changed)
    );
    std::fs::write(&file.path, original).unwrap();

    let (_env, approved) = blocking(move || {
        let output = env.run("alice", &["resume", &run]);
        (env, output)
    })
    .await;
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert_eq!(counter.tally().done["deploy"], 1);
    let record_dir = file.dir.path().join(".runbook/deployments");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::fs::read_dir(&record_dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["approvals"], serde_json::json!(["bob", "carol"]));
    assert_eq!(record["version"], "1.2.3");
    assert_eq!(record["status"], "succeeded");
}

#[test]
fn outside_the_deploy_window_exec_refuses_and_says_when_it_opens() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"windowed\"\n\n[environments.production]\ntimezone = \"Europe/Berlin\"\nwindows = [{ days = [\"mon\", \"tue\", \"wed\"], from = \"09:00\", to = \"17:00\" }, { days = [\"thu\"], from = \"09:00\", to = \"14:00\" }]\nfreezes = [{ from = \"2026-12-24\", to = \"2026-12-26\", reason = \"holidays\" }]\n\n[[steps]]\nid = \"x\"\nuses = \"noop\"\n",
    );
    let path = file.path.to_str().unwrap();
    let env = Env::new();
    let friday = |args: &[&str]| {
        env.command("alice", args)
            .env("RUNBOOK_NOW", "2026-11-27T10:00:00+01:00")
            .output()
            .unwrap()
    };
    let refused = friday(&["exec", path, "--env", "production"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("outside the deploy windows"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("Monday 2026-11-30 09:00 Europe/Berlin"),
        "{}",
        text(&refused)
    );

    let emergency = friday(&[
        "exec",
        path,
        "--env",
        "production",
        "--emergency",
        "--reason",
        "hotfix for CVE",
    ]);
    assert_eq!(emergency.status.code(), Some(0), "{}", text(&emergency));
    let records = file.dir.path().join(".runbook/deployments");
    let record = std::fs::read_to_string(
        std::fs::read_dir(records)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(record.contains("hotfix for CVE"), "{record}");

    let christmas = env
        .command("alice", &["exec", path, "--env", "production"])
        .env("RUNBOOK_NOW", "2026-12-24T10:00:00+01:00")
        .output()
        .unwrap();
    assert!(
        text(&christmas).contains("freeze 2026-12-24 to 2026-12-26 (holidays)"),
        "{}",
        text(&christmas)
    );
}

#[tokio::test]
async fn a_second_run_of_the_same_runbook_and_environment_is_refused_while_the_first_holds_the_lock()
 {
    let counter = Counter::start().await.unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"locked\"\n{}",
        recorder("slow", &counter, "with.delay = \"8s\"")
    ));
    let path = file.path.to_str().unwrap().to_owned();
    let env = Env::new();
    let mut first = env
        .command("alice", &["exec", &path])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock_dir = file.dir.path().join(".runbook/locks");
    for _ in 0..800 {
        if lock_dir
            .read_dir()
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(lock_dir.exists(), "the first run never took the lock");
    let env = std::sync::Arc::new(env);
    let (second_env, second_path) = (std::sync::Arc::clone(&env), path.clone());
    let second = blocking(move || second_env.run("bob", &["exec", &second_path])).await;
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        text(&second).contains("by alice holds the lock"),
        "{}",
        text(&second)
    );
    let status = blocking(move || first.wait().unwrap()).await;
    assert!(status.success());
    let third = blocking(move || env.run("bob", &["exec", &path])).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
}

/// Kills the runner at random points; after `resume` (with the operator's
/// decision for an interrupted step, made from the counter as a person
/// would check by hand), every side effect happened exactly once.
#[tokio::test]
async fn after_a_kill_at_any_point_resume_finishes_with_every_side_effect_exactly_once() {
    let counter = Counter::start().await.unwrap();
    let steps = ["one", "two", "three", "four", "five"];
    let env = std::sync::Arc::new(Env::new());
    // Compile the plugin into the cache first, so that kills land in runs,
    // not in the first compilation.
    let warm = env.run(
        "alice",
        &[
            "plugin",
            "inspect",
            runbook_testenv::plugin_path("recorder").to_str().unwrap(),
        ],
    );
    assert!(warm.status.success(), "{}", text(&warm));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills_mid_run = 0;
    for trial in 0..50 {
        let mut body = format!("[runbook]\nname = \"crash-{trial}\"\n");
        for step in steps {
            body.push_str(&recorder(
                &format!("{step}-{trial}"),
                &counter,
                "with.delay = \"30ms\"",
            ));
        }
        let file = TestRunbook::new(&body);
        let path = file.path.to_str().unwrap().to_owned();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(seed % 250);
        let log = std::fs::File::create(file.dir.path().join("exec.log")).unwrap();
        let mut child = env
            .command("alice", &["exec", &path])
            .stderr(log)
            .spawn()
            .unwrap();
        tokio::time::sleep(kill_after).await;
        // SIGKILL: the runner gets no chance to clean up.
        let _ = child.kill();
        let _ = blocking(move || child.wait()).await;

        let runs = file.dir.path().join(".runbook/runs");
        let Some(run) = runs
            .read_dir()
            .ok()
            .and_then(|mut entries| entries.next())
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        else {
            // Killed before the journal existed: nothing happened at all.
            assert!(steps.iter().all(|step| {
                !counter
                    .tally()
                    .done
                    .contains_key(&format!("{step}-{trial}"))
            }));
            continue;
        };
        let mut decisions: Vec<String> = Vec::new();
        let mut finished = false;
        let mut never_started = false;
        for _ in 0..6 {
            let mut args = vec![
                "resume".to_owned(),
                run.clone(),
                "--state-dir".to_owned(),
                file.dir.path().join(".runbook").display().to_string(),
            ];
            args.extend(decisions.iter().cloned());
            let env_for = std::sync::Arc::clone(&env);
            let output = blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                env_for.run("alice", &args)
            })
            .await;
            let said = text(&output);
            if output.status.code() == Some(0) {
                kills_mid_run += 1;
                finished = true;
                break;
            }
            if said.contains("already succeeded") {
                finished = true;
                break;
            }
            if said.contains("the run never started") || said.contains("no run `") {
                // Killed between creating the run's folder or journal and
                // starting the run.
                assert!(steps.iter().all(|step| {
                    !counter
                        .tally()
                        .done
                        .contains_key(&format!("{step}-{trial}"))
                }));
                never_started = true;
                break;
            }
            // An interrupted, non-idempotent step: check by hand, decide.
            let interrupted = said
                .split('`')
                .nth(1)
                .unwrap_or_else(|| panic!("trial {trial}: unexpected resume failure: {said}"))
                .to_owned();
            assert!(said.contains("not idempotent"), "trial {trial}: {said}");
            let happened = counter.tally().done.get(&interrupted).copied().unwrap_or(0);
            decisions.push(if happened == 1 {
                "--skip".into()
            } else {
                "--rerun".into()
            });
            decisions.push(interrupted);
        }
        if never_started {
            continue;
        }
        assert!(finished, "trial {trial}: the run did not finish");
        let tally = counter.tally();
        for step in steps {
            let name = format!("{step}-{trial}");
            assert_eq!(
                tally.done.get(&name).copied(),
                Some(1),
                "trial {trial}: `{name}` happened {:?} times",
                tally.done.get(&name)
            );
        }
        assert!(Path::new(&file.dir.path().join(".runbook/deployments")).exists());
    }
    assert!(
        kills_mid_run >= 10,
        "only {kills_mid_run} of 50 kills landed mid-run"
    );
}

#[tokio::test]
async fn runs_show_and_logs_tell_what_happened() {
    let counter = Counter::start().await.unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"history\"\non_failure = \"rollback\"\n{}{}",
        recorder("deploy", &counter, ""),
        recorder("verify", &counter, "with.fail = true"),
    ));
    let path = file.path.to_str().unwrap().to_owned();
    let env = std::sync::Arc::new(Env::new());
    let runner = std::sync::Arc::clone(&env);
    let failed = blocking(move || runner.run("alice", &["exec", &path])).await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let run = run_id(&failed);
    let state = file.dir.path().join(".runbook").display().to_string();

    let runs = env.run("alice", &["runs", "--state-dir", &state]);
    assert!(
        text(&runs).contains(&run) && text(&runs).contains("failed"),
        "{}",
        text(&runs)
    );

    let show = env.run("alice", &["show", &run]);
    let timeline = text(&show);
    assert!(timeline.contains("deploy: succeeded"), "{timeline}");
    assert!(timeline.contains("verify: failed"), "{timeline}");
    assert!(timeline.contains("rollback started"), "{timeline}");
    assert!(
        timeline.contains("deploy: rollback rolled_back"),
        "{timeline}"
    );

    let logs = env.run("alice", &["logs", &run, "verify"]);
    let lines = text(&logs);
    assert!(lines.contains("verify [http] POST"), "{lines}");
    assert!(!lines.contains("deploy [http]"), "{lines}");
}

#[tokio::test]
async fn an_emergency_run_is_approved_by_the_emergency_approvers() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "[runbook]\nname = \"hotfix\"\n\n[environments.production]\napprovals = {{ required = 1, from = [\"bob\"] }}\nemergency_approvals = {{ required = 1, from = [\"eve\"] }}\n{}",
        recorder("deploy", &counter, "")
    );
    let file = TestRunbook::new(&body);
    let path = file.path.to_str().unwrap().to_owned();
    let env = Env::new();
    let emergency = ["--emergency", "--reason", "outage"];
    let first = env.run(
        "alice",
        &[&["exec", &path, "--env", "production"][..], &emergency[..]].concat(),
    );
    assert_eq!(first.status.code(), Some(4), "{}", text(&first));
    let run = run_id(&first);

    // The ordinary approver does not count for an emergency run...
    let ordinary = env.run("bob", &["approve", &run, "--as", "bob"]);
    assert_eq!(ordinary.status.code(), Some(2), "{}", text(&ordinary));
    assert!(
        text(&ordinary).contains("not an emergency approver"),
        "{}",
        text(&ordinary)
    );
    // ...the emergency approver does, and the run goes on with her.
    let approved = env.run("eve", &["approve", &run, "--as", "eve"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    // The run stays an emergency run, whoever resumes it and how.
    let (_env, resumed) = blocking(move || {
        let output = env.run("alice", &["resume", &run]);
        (env, output)
    })
    .await;
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(counter.tally().done["deploy"], 1);
}
