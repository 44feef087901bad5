//! The `runbook` binary as an operator uses it: exit codes, progress, the
//! run log, JSON output, `plan`, `plugin inspect`.

use crate::support::{TestRunbook, cache_dir};
use runbook_testenv::SampleService;
use std::process::{Command, Output};

fn runbook(args: &[&str], secret: Option<(&str, &str)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_OPERATOR", "alice");
    if let Some((name, value)) = secret {
        command.env(name, value);
    }
    command.output().expect("runbook runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn smoke_runbook(base: &str) -> TestRunbook {
    TestRunbook::new(&format!(
        r#"[runbook]
name = "riskcast-api"

[params.version]
required = true
pattern = '^\d+\.\d+\.\d+$'

[environments.local.vars]
base_url = "{base}"

[[steps]]
id = "health"
uses = "smoke-test"
with.checks = [{{ url = "${{{{ vars.base_url }}}}/health", expect_json = {{ status = "healthy" }} }}]
grants.http = ["${{{{ vars.base_url }}}}"]

[[steps]]
id = "api"
uses = "smoke-test"
with.checks = [{{ url = "${{{{ vars.base_url }}}}/v1/decisions", headers = {{ "X-API-Key" = "${{{{ secrets.TEST_KEY }}}}" }} }}]
grants.http = ["${{{{ vars.base_url }}}}/v1"]
grants.secrets = ["TEST_KEY"]
"#
    ))
}

const KEY: &str = "cli-k3y-abc123";

#[tokio::test]
async fn exec_runs_the_runbook_shows_progress_and_writes_a_run_log() {
    let service = SampleService::start(Some(KEY)).await.unwrap();
    let file = smoke_runbook(&service.base_url());
    let path = file.path.to_str().unwrap();
    let output = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || {
            runbook(
                &["exec", &path, "--env", "local", "--set", "version=1.2.3"],
                Some(("TEST_KEY", KEY)),
            )
        }
    })
    .await
    .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("riskcast-api · env local · 2 steps"),
        "{stderr}"
    );
    assert!(stderr.contains("✓ health"), "{stderr}");
    assert!(stderr.contains("✓ run succeeded"), "{stderr}");
    assert!(!stderr.contains(KEY), "the secret was printed");
    let log_line = stderr
        .lines()
        .find(|line| line.contains("run log:"))
        .expect("run log path");
    let log_path = log_line.split("run log: ").nth(1).unwrap().trim();
    let log = std::fs::read_to_string(log_path).expect("run log exists");
    assert!(log.contains("\"event\":\"run_started\""));
    assert!(log.contains("\"operator\":\"alice\""));
    assert!(log.contains("\"event\":\"capability_call\",\"capability\":\"http\""));
    assert!(!log.contains(KEY), "the secret is in the run log");
}

#[tokio::test]
async fn exec_exits_1_when_a_step_fails_and_3_when_a_step_is_denied() {
    let service = SampleService::start(Some(KEY)).await.unwrap();
    service.update(|state| state.healthy = false);
    let file = smoke_runbook(&service.base_url());
    let path = file.path.to_str().unwrap().to_owned();
    let failed = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            runbook(
                &["exec", &path, "--env", "local", "--set", "version=1.2.3"],
                Some(("TEST_KEY", KEY)),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("✗ run failed at step `health`"));

    let denied_file = TestRunbook::new(&format!(
        "[runbook]\nname = \"deny\"\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nwith.message = \"{}/health\"\n\n[[steps]]\nid = \"fetch\"\nuses = \"misbehave\"\nwith.mode = \"fetch\"\nwith.url = \"${{{{ steps.address.outputs.message }}}}\"\ngrants.http = [\"http://127.0.0.1:1\"]\n",
        service.base_url()
    ));
    let denied_path = denied_file.path.to_str().unwrap().to_owned();
    let denied = tokio::task::spawn_blocking(move || runbook(&["exec", &denied_path], None))
        .await
        .unwrap();
    let stderr = text(&denied.stderr);
    assert_eq!(denied.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("✗ denied GET"), "{stderr}");
}

#[test]
fn exec_refuses_bad_parameters_before_running_anything() {
    let file = smoke_runbook("http://127.0.0.1:1");
    let path = file.path.to_str().unwrap();
    let missing = runbook(&["exec", path, "--env", "local"], Some(("TEST_KEY", KEY)));
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("missing required parameter `version`"));
    assert!(text(&missing.stderr).contains("--set version=VALUE"));

    let pattern = runbook(
        &["exec", path, "--env", "local", "--set", "version=latest"],
        Some(("TEST_KEY", KEY)),
    );
    assert_eq!(pattern.status.code(), Some(2));
    assert!(
        text(&pattern.stderr).contains("parameter `version` = `latest` does not match its pattern")
    );

    let environment = runbook(
        &["exec", path, "--env", "prod", "--set", "version=1.0.0"],
        Some(("TEST_KEY", KEY)),
    );
    assert_eq!(environment.status.code(), Some(2));
    assert!(text(&environment.stderr).contains("there is no environment `prod`"));

    let secret = runbook(
        &["exec", path, "--env", "local", "--set", "version=1.0.0"],
        None,
    );
    assert_eq!(secret.status.code(), Some(2));
    assert!(text(&secret.stderr).contains("secret `TEST_KEY` is not set"));
    assert!(
        !file.dir.path().join(".runbook").exists(),
        "a refused run left a run log"
    );
}

#[tokio::test]
async fn json_output_is_one_event_per_line() {
    let service = SampleService::start(Some(KEY)).await.unwrap();
    let file = smoke_runbook(&service.base_url());
    let path = file.path.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        runbook(
            &[
                "exec",
                &path,
                "--env",
                "local",
                "--set",
                "version=1.2.3",
                "--output",
                "json",
            ],
            Some(("TEST_KEY", KEY)),
        )
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let events: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    let finished = events
        .iter()
        .find(|event| event["event"] == "run_finished")
        .expect("run_finished");
    assert_eq!(finished["status"], "succeeded");
    let record = &events.last().unwrap()["record"];
    assert_eq!(events.last().unwrap()["event"], "deployment_record");
    assert_eq!(record["version"], "1.2.3");
    assert_eq!(record["operator"], "alice");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(
        events
            .iter()
            .filter(|event| event["event"] == "step_finished")
            .count(),
        2
    );
}

#[tokio::test]
async fn plan_shows_actions_and_sends_nothing_that_changes() {
    let service = SampleService::start(None).await.unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"plan\"\n\n[[steps]]\nid = \"poster\"\nuses = \"misbehave\"\nwith.mode = \"post\"\nwith.url = \"{0}/echo\"\ngrants.http = [\"{0}\"]\n\n[[steps]]\nid = \"smoke\"\nuses = \"smoke-test\"\nwith.checks = [{{ url = \"{0}/health\" }}]\ngrants.http = [\"{0}\"]\n",
        service.base_url()
    ));
    let path = file.path.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || runbook(&["plan", &path], None))
        .await
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(stdout.contains("· GET http://127.0.0.1"), "{stdout}");
    assert!(
        stdout.contains("cannot plan: http denied: POST"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "⊘ http POST {}/echo: not sent (dry run)",
            service.base_url()
        )),
        "{stdout}"
    );
    assert!(service.state().received.is_empty(), "plan sent a request");
}

#[test]
fn plugin_inspect_shows_digest_capabilities_imports_and_parameters() {
    let path = runbook_testenv::plugin_path("smoke-test");
    let output = runbook(&["plugin", "inspect", path.to_str().unwrap()], None);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()))
    };
    assert!(stdout.starts_with("smoke-test 0.1.0"), "{stdout}");
    assert!(
        stdout.contains(&format!("sha256        {digest}")),
        "{stdout}"
    );
    assert!(stdout.contains("needs         http"), "{stdout}");
    assert!(stdout.contains("runbook:plugin/http@0.2.0"), "{stdout}");
    assert!(
        !stdout.contains("runbook:plugin/aws"),
        "smoke-test must not import aws: {stdout}"
    );
    assert!(
        stdout.contains("checks: list of object (required)"),
        "{stdout}"
    );

    let json = runbook(
        &[
            "plugin",
            "inspect",
            path.to_str().unwrap(),
            "--output",
            "json",
        ],
        None,
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["sha256"], digest);
    assert_eq!(value["capabilities"], serde_json::json!(["http"]));
}

#[test]
fn help_teaches_with_examples_and_exit_codes() {
    let output = runbook(&["--help"], None);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("runbook exec runbooks/smoke.toml --env staging"),
        "{stdout}"
    );
    assert!(stdout.contains("Exit codes:"), "{stdout}");
}

#[test]
fn ctrl_c_cancels_the_running_step_and_exits_130() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"wait\"\n\n[[steps]]\nid = \"wait\"\nuses = \"misbehave\"\nwith.mode = \"sleep\"\ngrants.http = [\"http://127.0.0.1:1\"]\n\n[[steps]]\nid = \"after\"\nuses = \"noop\"\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["exec", file.path.to_str().unwrap()])
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs, then interrupt as a terminal would.
    let log_dir = file.dir.path().join(".runbook/runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !log_dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let interrupted_at = std::time::Instant::now();
    // SIGINT, as Ctrl-C on a terminal sends (bash's builtin `kill`).
    let status = Command::new("bash")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(interrupted_at.elapsed() < std::time::Duration::from_secs(5));
    assert!(stderr.contains("⊘ wait"), "{stderr}");
    assert!(stderr.contains("run cancelled"), "{stderr}");
    assert!(
        !stderr.contains("→ after"),
        "a step ran after the interrupt: {stderr}"
    );
}

/// Whether `text` holds a character that would drive a terminal: an escape
/// or other control (newline and tab aside), DEL, C1, or a bidi override.
fn drives_the_terminal(text: &str) -> bool {
    text.chars().any(|character| {
        (character.is_control() && character != '\n' && character != '\t')
            || matches!(character, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

#[test]
fn plugin_text_reaches_the_terminal_only_as_visible_escapes() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"escapes\"\n\n[[steps]]\nid = \"forge\"\nuses = \"misbehave\"\nwith.mode = \"escapes\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
    );
    let path = file.path.to_str().unwrap();
    let state = file.dir.path().join(".runbook");
    let state = state.to_str().unwrap();
    let exec = runbook(&["exec", path], None);
    assert_eq!(exec.status.code(), Some(1), "{}", text(&exec.stderr));
    let drawn = text(&exec.stderr);
    assert!(!drives_the_terminal(&drawn), "{drawn:?}");
    assert!(
        drawn.contains("\\u{1b}[2K\\u{d}  ✓ approved by alice"),
        "{drawn}"
    );
    assert!(drawn.contains("\\u{202e}txet desrever"), "{drawn}");
    assert!(drawn.contains("\\u{9b}31m"), "{drawn}");
    let run = drawn
        .split(" · run ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("run id")
        .to_owned();
    for verb in ["logs", "show"] {
        let replayed = runbook(&[verb, &run, "--state-dir", state], None);
        assert_eq!(
            replayed.status.code(),
            Some(0),
            "{}",
            text(&replayed.stderr)
        );
        let shown = text(&replayed.stdout);
        assert!(!drives_the_terminal(&shown), "{verb}: {shown:?}");
        assert!(shown.contains("\\u{1b}["), "{verb}: {shown}");
    }
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"quiet\"\n\n[[steps]]\nid = \"fine\"\nuses = \"noop\"\n",
    );
    let path = file.path.to_str().unwrap();
    let state = file.dir.path().join(".runbook");
    let state = state.to_str().unwrap();
    // The reader is gone before the first line: every write meets a
    // closed pipe, as `| head -1` does to all but the first.
    let closed = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("NO_COLOR", "1")
            .env("RUNBOOK_OPERATOR", "alice")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    let noop = runbook_testenv::plugin_path("noop").display().to_string();
    let exec = closed(&["exec", path, "--output", "json"]);
    assert_eq!(exec.status.code(), Some(0), "{}", text(&exec.stderr));
    assert!(
        !text(&exec.stderr).contains("panicked"),
        "{}",
        text(&exec.stderr)
    );
    let run = std::fs::read_dir(file.dir.path().join(".runbook/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    for args in [
        vec!["logs", &run, "--state-dir", state],
        vec!["show", &run, "--state-dir", state],
        vec!["runs", "--state-dir", state],
        vec!["logs", &run, "--state-dir", state, "--output", "json"],
        vec!["show", &run, "--state-dir", state, "--output", "json"],
        vec!["runs", "--state-dir", state, "--output", "json"],
        vec!["validate", path, "--output", "json"],
        vec!["report", &run, "--state-dir", state],
        vec!["report", &run, "--state-dir", state, "--markdown"],
        vec!["audit", path, "--output", "json"],
        vec!["plugin", "inspect", &noop],
        vec!["plugin", "inspect", &noop, "--output", "json"],
        vec!["plan", path],
        vec!["plan", path, "--output", "json"],
        vec!["unlock", path],
    ] {
        let output = closed(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

/// A script reads runs, one run and its logs as JSON, filters the runs,
/// and hears of a wrong step or run name as a mistake (exit 2), not as
/// nothing printed.
#[test]
fn runs_show_logs_and_validate_speak_json_and_refuse_unknown_names() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"scripted\"\n\n[environments.dev]\n[environments.prod]\n\n[[steps]]\nid = \"fine\"\nuses = \"noop\"\n\n[[steps]]\nid = \"each\"\nuses = \"noop\"\nfor_each = [\"a\", \"b\"]\n",
    );
    let path = file.path.to_str().unwrap();
    let state = file.dir.path().join(".runbook");
    let state = state.to_str().unwrap();
    for env in ["dev", "prod"] {
        let exec = runbook(&["exec", path, "--env", env], None);
        assert_eq!(exec.status.code(), Some(0), "{}", text(&exec.stderr));
    }
    let json = |args: &[&str]| -> serde_json::Value {
        let output = runbook(args, None);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: {error}: {}", text(&output.stdout)))
    };

    let all = json(&["runs", "--state-dir", state, "--output", "json"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all[0]["started"].as_str() >= all[1]["started"].as_str(),
        "newest first"
    );
    for run in all {
        assert_eq!(run["runbook"], "scripted");
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["operator"], "alice");
    }
    let prod = json(&[
        "runs",
        "--state-dir",
        state,
        "--env",
        "prod",
        "--output",
        "json",
    ]);
    assert_eq!(prod.as_array().unwrap().len(), 1);
    assert_eq!(prod[0]["environment"], "prod");
    let run = prod[0]["run"].as_str().unwrap().to_owned();
    for (filters, expected) in [
        (vec!["--status", "failed"], 0),
        (vec!["--runbook", "other"], 0),
        (vec!["--since", "1h"], 2),
        (vec!["--since", "2999-01-01"], 0),
        (vec!["--limit", "1"], 1),
    ] {
        let mut args = vec!["runs", "--state-dir", state, "--output", "json"];
        args.extend(filters.iter().copied());
        assert_eq!(
            json(&args).as_array().unwrap().len(),
            expected,
            "{filters:?}"
        );
    }

    let shown = json(&["show", &run, "--state-dir", state, "--output", "json"]);
    assert_eq!(shown["run"]["run"], run.as_str());
    let ids: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fine", "each[a]", "each[b]"]);
    assert!(shown["events"].as_array().unwrap().len() >= 6);

    let logs = runbook(
        &[
            "logs",
            &run,
            "each",
            "--state-dir",
            state,
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
    let lines: Vec<serde_json::Value> = text(&logs.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|event| event["step"].as_str().unwrap().starts_with("each["))
    );

    let wrong_step = runbook(&["logs", &run, "fien", "--state-dir", state], None);
    assert_eq!(wrong_step.status.code(), Some(2));
    assert!(
        text(&wrong_step.stderr).contains("did you mean `fine`?"),
        "{}",
        text(&wrong_step.stderr)
    );
    let wrong_confirm = runbook(
        &["confirm", &run, "fien", "--as", "bob", "--state-dir", state],
        None,
    );
    assert_eq!(wrong_confirm.status.code(), Some(2));
    assert!(
        text(&wrong_confirm.stderr).contains("has no step `fien` (did you mean `fine`?)"),
        "{}",
        text(&wrong_confirm.stderr)
    );
    let wrong_run = runbook(
        &["show", "20000101-000000-000000", "--state-dir", state],
        None,
    );
    assert_eq!(
        wrong_run.status.code(),
        Some(2),
        "{}",
        text(&wrong_run.stderr)
    );
    let wrong_status = runbook(
        &["runs", "--state-dir", state, "--status", "succeded"],
        None,
    );
    assert_eq!(wrong_status.status.code(), Some(2));
    assert!(text(&wrong_status.stderr).contains("did you mean `succeeded`?"));

    let valid = json(&["validate", path, "--output", "json"]);
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["environments"], serde_json::json!(["dev", "prod"]));
    let broken = TestRunbook::new("[runbook]\nname = \"x\"\nbogus = 1\n");
    let invalid = runbook(
        &[
            "validate",
            broken.path.to_str().unwrap(),
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(invalid.status.code(), Some(2));
    let invalid: serde_json::Value = serde_json::from_slice(&invalid.stdout).unwrap();
    assert_eq!(invalid["valid"], false);
    assert_eq!(invalid["problems"][0]["code"], "UnknownKey");
    assert_eq!(invalid["problems"][0]["line"], 3);
}

/// `plan` decides an `if` that reads only what is known before the run: a
/// checklist skipped in `local` is shown skipped there, and as questions
/// where it will be asked.
#[test]
fn plan_shows_steps_whose_if_is_false_as_skipped() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"checked\"\n\n[environments.local]\n[environments.production]\n\n[[steps]]\nid = \"checklist\"\nkind = \"manual\"\nif = \"run.environment != 'local'\"\nchecklist = [\"release notes written\"]\n\n[[steps]]\nid = \"fine\"\nuses = \"noop\"\nif = \"run.environment == 'local'\"\n\n[[steps]]\nid = \"after\"\nuses = \"noop\"\n",
    );
    let path = file.path.to_str().unwrap();
    let local = runbook(&["plan", path, "--env", "local"], None);
    assert_eq!(local.status.code(), Some(0), "{}", text(&local.stderr));
    let shown = text(&local.stdout);
    assert!(
        shown.contains("skipped: its `if` is false: run.environment != 'local'"),
        "{shown}"
    );
    assert!(!shown.contains("operator confirms"), "{shown}");
    let production = runbook(
        &["plan", path, "--env", "production", "--output", "json"],
        None,
    );
    assert_eq!(
        production.status.code(),
        Some(0),
        "{}",
        text(&production.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&production.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["skipped"], serde_json::Value::Null);
    assert_eq!(
        steps[0]["actions"][0]["description"],
        "operator confirms: release notes written"
    );
    assert_eq!(
        steps[1]["skipped"],
        "its `if` is false: run.environment == 'local'"
    );
    // A step that needs a skipped one will not run either.
    assert_eq!(steps[2]["skipped"], "`fine` will not run");
}

/// A checklist asked while another step runs, on a real terminal (tmux,
/// whose screen the test reads): the question stays on the screen while
/// the other step's live line would redraw, Enter alone asks again rather
/// than stopping the run, and `y` ticks it.
#[test]
fn a_checklist_question_stays_on_the_screen_and_enter_asks_again() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"asked\"\n\n[[steps]]\nid = \"slow\"\nuses = \"command\"\nneeds = []\nwith.program = \"/bin/sleep\"\nwith.args = [\"4\"]\ngrants.command = [{ program = \"/bin/sleep\", args = [\"*\"] }]\n\n[[steps]]\nid = \"notes\"\nkind = \"manual\"\nneeds = []\nchecklist = [\"release notes written\"]\n",
    );
    let socket = format!("runbook-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs (scripts/install-services installs Debian's `tmux`)")
    };
    let screen = || text(&tmux(&["capture-pane", "-p", "-t", "asked"]).stdout);
    let wait_for = |wanted: &str| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let shown = screen();
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
    let command = format!(
        "cd {} && RUNBOOK_CACHE_DIR={} RUNBOOK_OPERATOR=alice NO_COLOR=1 {} exec {} --yes; echo exit=$?; sleep 30",
        file.dir.path().display(),
        cache_dir().display(),
        env!("CARGO_BIN_EXE_runbook"),
        file.path.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "asked",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    struct Kill<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let _kill = Kill(&tmux);

    wait_for("release notes written — done? [y/n]");
    // The other step's live line redraws ten times a second: the question
    // must still be there after many redraws.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let shown = screen();
    assert!(
        shown.contains("release notes written — done? [y/n]"),
        "the question was drawn over:\n{shown}"
    );
    tmux(&["send-keys", "-t", "asked", "Enter"]);
    wait_for("answer y (done) or n (stop the run)");
    tmux(&["send-keys", "-t", "asked", "y", "Enter"]);
    let shown = wait_for("exit=");
    assert!(shown.contains("[x] release notes written"), "{shown}");
    assert!(shown.contains("exit=0"), "{shown}");
}

/// `retries` on a step whose plugin reports no failure as transient would
/// never retry: `validate` says so, at the step's line.
#[test]
fn validate_warns_about_retries_that_can_never_retry() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"retried\"\n\n[[steps]]\nid = \"check\"\nuses = \"command\"\nwith.program = \"/bin/true\"\nretries = { attempts = 3 }\ngrants.command = [{ program = \"/bin/true\", args = [] }]\n\n[[steps]]\nid = \"health\"\nuses = \"smoke-test\"\nwith.checks = [{ url = \"http://127.0.0.1:1/health\" }]\nretries = { attempts = 3 }\ngrants.http = [\"http://127.0.0.1:1\"]\n",
    );
    let output = runbook(&["validate", file.path.to_str().unwrap()], None);
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(
        said.contains("step `check`: `retries` will never retry: plugin `command` reports no failure as transient"),
        "{said}"
    );
    assert!(said.contains("runbook.toml:8)"), "{said}");
    assert!(!said.contains("step `health`: `retries`"), "{said}");
}
