//! Durable waits: a step that works in rounds (a soak, a canary's stages)
//! returns `wait` between them; the host journals each wait before it
//! begins, so a killed process goes on at the next round with the rounds
//! before kept, `exec --detach` parks the run for `runbook worker`, and
//! `runbook runs` says when it wakes. Plugins built against the 0.1
//! contract, which cannot wait, keep running.

use crate::faults::{Bin, blocking, exits, only_run, text};
use crate::metrics::{ERROR_RATE, monitored};
use crate::support::{RunOptions, TestRunbook, run};
use runbook::events::Status;
use std::path::Path;
use std::time::Duration;

/// The journal's events of one kind, in order.
fn events(state: &Path, run: &str, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("runs").join(run).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == kind)
        .collect()
}

fn rounds_of(waits: &[serde_json::Value]) -> Vec<u64> {
    waits
        .iter()
        .map(|wait| wait["round"].as_u64().unwrap())
        .collect()
}

/// A runbook whose `soak` step works in `rounds` rounds `every` apart, then
/// a step after it.
fn soak(rounds: u32, every: &str, extra: &str) -> TestRunbook {
    TestRunbook::new(&format!(
        "[runbook]\nname = \"soak\"\n\n[[steps]]\nid = \"soak\"\nuses = \"rounds\"\nwith.rounds = {rounds}\nwith.every = \"{every}\"\n{extra}\n\n[[steps]]\nid = \"after\"\nuses = \"noop\"\nneeds = [\"soak\"]\n",
    ))
}

#[tokio::test]
async fn a_soak_of_twenty_rounds_killed_in_the_middle_goes_on_from_its_last_round() {
    let (_service, prometheus) = monitored(0.005, Duration::from_millis(40)).await;
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"soak\"\n\n[[steps]]\nid = \"gate\"\nuses = \"metrics-gate\"\nwith.prometheus = \"{url}\"\nwith.duration = \"19s\"\nwith.interval = \"1s\"\nwith.checks = [{{ name = \"error_rate\", query = '{query}', max = 0.02 }}]\ngrants.http = [\"{url}/api/v1/query\"]\n",
        url = prometheus.url,
        query = ERROR_RATE.replace("TRACK", "stable"),
    ));
    let bin = Bin::new();
    let state = file.dir.path().join("state");
    let state_arg = state.display().to_string();
    let path = file.path.display().to_string();
    let mut child = bin
        .command(&["exec", &path, "--state-dir", &state_arg], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) once it has waited eight times.
    let mut waited = 0;
    for _ in 0..600 {
        if state.join("runs").exists()
            && let Some(run) = std::fs::read_dir(state.join("runs")).unwrap().next()
        {
            let run = run.unwrap().file_name().to_string_lossy().into_owned();
            waited = events(&state, &run, "step_waiting").len();
            if waited >= 8 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waited >= 8, "the soak did not get to its eighth round");
    child.kill().unwrap();
    child.wait().unwrap();
    let run = only_run(&state);
    let before = rounds_of(&events(&state, &run, "step_waiting"));
    let last = *before.last().unwrap();
    assert_eq!(before, (1..=last).collect::<Vec<_>>());
    assert!(events(&state, &run, "step_finished").is_empty());

    let runs = blocking({
        let bin = std::sync::Arc::clone(&bin);
        let state_arg = state_arg.clone();
        move || bin.run(&["runs", "--state-dir", &state_arg], &[])
    })
    .await;
    assert!(
        text(&runs).contains("interrupted"),
        "a killed run is not parked: {}",
        text(&runs)
    );

    let resumed = blocking({
        let bin = std::sync::Arc::clone(&bin);
        let run = run.clone();
        move || bin.run(&["resume", &run, "--state-dir", &state_arg], &[])
    })
    .await;
    exits(&resumed, 0);
    let after = rounds_of(&events(&state, &run, "step_waiting"));
    // The rounds before the kill are kept: the next process goes on from
    // the last recorded one, it does not start the soak again.
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after[before.len()], last + 1, "{after:?}");
    let finished = events(&state, &run, "step_finished");
    assert_eq!(finished[0]["status"], "succeeded", "{finished:?}");
    let rounds: u64 = finished[0]["outputs"]["rounds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let resumed_rounds = after.len() - before.len() + 1;
    assert!(
        rounds >= 19 && (resumed_rounds as u64) < rounds,
        "{rounds} rounds in all, {resumed_rounds} of them after the kill"
    );
    assert!(
        finished[0]["summary"]
            .as_str()
            .unwrap()
            .contains("all within limits"),
        "{finished:?}"
    );
}

#[tokio::test]
async fn a_detached_run_parks_at_its_first_wait_and_the_worker_finishes_it() {
    let file = soak(4, "300ms", "");
    let bin = Bin::new();
    let state = file.dir.path().join("state").display().to_string();
    let path = file.path.display().to_string();
    let parked = blocking({
        let bin = std::sync::Arc::clone(&bin);
        let (path, state) = (path.clone(), state.clone());
        move || bin.run(&["exec", &path, "--state-dir", &state, "--detach"], &[])
    })
    .await;
    exits(&parked, 4);
    assert!(text(&parked).contains("parked"), "{}", text(&parked));
    let run = only_run(Path::new(&state));

    let runs = bin.run(&["runs", "--state-dir", &state], &[]);
    let listed = text(&runs);
    assert!(
        listed.contains("waiting until") && listed.contains("soak: round 1/4"),
        "{listed}"
    );
    // Parked is not over: the runbook and environment stay taken.
    let second = bin.run(&["exec", &path, "--state-dir", &state], &[]);
    exits(&second, 2);
    assert!(
        text(&second).contains(&format!("run {run} by alice is parked at `soak`")),
        "{}",
        text(&second)
    );

    // `--once` does what is due, a round each, and exits.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let once = bin.run(&["worker", "--state-dir", &state, "--once"], &[]);
    exits(&once, 0);
    let rounds = rounds_of(&events(Path::new(&state), &run, "step_waiting"));
    assert_eq!(rounds, vec![1, 2], "{}", text(&once));

    let worker = blocking({
        let bin = std::sync::Arc::clone(&bin);
        let state = state.clone();
        move || bin.run(&["worker", "--state-dir", &state, "--until-done"], &[])
    })
    .await;
    exits(&worker, 0);
    assert!(
        text(&worker).contains(&format!("[{run}] run succeeded")),
        "{}",
        text(&worker)
    );
    let rounds = rounds_of(&events(Path::new(&state), &run, "step_waiting"));
    assert_eq!(rounds, vec![1, 2, 3]);
    let finished = events(Path::new(&state), &run, "run_finished");
    assert_eq!(finished.last().unwrap()["status"], "succeeded");
    let runs = text(&bin.run(&["runs", "--state-dir", &state], &[]));
    assert!(
        runs.contains("succeeded") && !runs.contains("waiting until"),
        "{runs}"
    );
}

#[tokio::test]
async fn a_wait_longer_than_park_after_parks_and_resume_goes_on_when_it_is_due() {
    let file = soak(2, "2s", "");
    let bin = Bin::new();
    let state = file.dir.path().join("state").display().to_string();
    let path = file.path.display().to_string();
    let parked = bin.run(
        &["exec", &path, "--state-dir", &state, "--park-after", "1s"],
        &[],
    );
    exits(&parked, 4);
    let run = only_run(Path::new(&state));
    let waits = events(Path::new(&state), &run, "step_waiting");
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0]["parked"], true);
    // Resumed before it is due, the run waits for it, then goes on.
    let resumed = bin.run(&["resume", &run, "--state-dir", &state], &[]);
    exits(&resumed, 0);
    let calls: Vec<String> = events(Path::new(&state), &run, "log")
        .iter()
        .map(|log| log["message"].as_str().unwrap_or_default().to_owned())
        .filter(|message| message.starts_with("round "))
        .collect();
    assert_eq!(calls, ["round 1", "round 2"], "each round ran once");
    let started = events(Path::new(&state), &run, "step_finished");
    assert!(
        started
            .iter()
            .any(|step| step["step"] == "after" && step["status"] == "succeeded")
    );
}

#[tokio::test]
async fn short_waits_are_journaled_and_waited_in_the_process() {
    let file = soak(3, "50ms", "");
    let finished = crate::support::run_file(
        &crate::support::runtime(),
        &file.path,
        RunOptions::default(),
    )
    .await;
    let (status, summary, outputs) = finished.step("soak");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["rounds"], "3");
    let lines = finished.lines();
    let waits: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("\"step_waiting\""))
        .collect();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(waits[1].contains("\"round\":2") && waits[1].contains("round 2/3"));
}

#[tokio::test]
async fn a_wait_with_too_much_state_fails_the_step() {
    let finished = run(
        "[runbook]\nname = \"big\"\n\n[[steps]]\nid = \"soak\"\nuses = \"rounds\"\nwith.rounds = 3\nwith.every = \"10ms\"\nwith.state_bytes = 70000\n",
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("soak");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("a wait's state is at most 64 KiB"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_plugin_built_against_contract_0_1_0_keeps_loading_and_running() {
    let service = runbook_testenv::SampleService::start(None).await.unwrap();
    let legacy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/contract/smoke-test-0.1.0.wasm");
    let runtime = crate::support::runtime();
    let plugin = runtime.load(&legacy, None).await.unwrap();
    assert_eq!(plugin.contract(), "0.1");
    assert!(
        plugin
            .imports
            .iter()
            .any(|import| import == "runbook:plugin/http@0.1.0"),
        "{:?}",
        plugin.imports
    );
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"legacy\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"legacy-smoke\"\nwith.checks = [{{ url = \"{url}/health\" }}]\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nneeds = [\"smoke\"]\nwith.message = \"http://127.0.0.1:9/health\"\n\n[[steps]]\nid = \"denied\"\nuses = \"legacy-smoke\"\nneeds = [\"address\"]\nwith.checks = [{{ url = \"${{{{ steps.address.outputs.message }}}}\" }}]\ngrants.http = [\"{url}\"]\n",
        url = format!("http://{}", service.address),
    ));
    let body = std::fs::read_to_string(&file.path).unwrap().replace(
        "[plugins]\n",
        &format!(
            "[plugins]\nlegacy-smoke = {:?}\n",
            legacy.display().to_string()
        ),
    );
    std::fs::write(&file.path, body).unwrap();
    let finished = crate::support::run_file(&runtime, &file.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("smoke");
    assert_eq!(status, Status::Succeeded, "{summary}");
    // Its imports go through the same grant checks as a current plugin's.
    let (status, summary, _) = finished.step("denied");
    assert_eq!(status, Status::Denied, "{summary}");
}

#[tokio::test]
async fn a_detached_run_outside_its_window_parks_until_it_opens_and_the_worker_starts_it() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"windowed\"\n\n[environments.production]\ntimezone = \"Europe/Berlin\"\nwindows = [{ days = [\"mon\"], from = \"09:00\", to = \"17:00\" }]\n\n[[steps]]\nid = \"x\"\nuses = \"noop\"\n",
    );
    let bin = Bin::new();
    let state = file.dir.path().join("state").display().to_string();
    let path = file.path.display().to_string();
    let friday = [("RUNBOOK_NOW", "2026-11-27T10:00:00+01:00")];
    let parked = bin.run(
        &[
            "exec",
            &path,
            "--env",
            "production",
            "--state-dir",
            &state,
            "--detach",
        ],
        &friday,
    );
    exits(&parked, 4);
    assert!(
        text(&parked).contains("Monday 2026-11-30 09:00 Europe/Berlin"),
        "{}",
        text(&parked)
    );
    let run = only_run(Path::new(&state));
    assert!(events(Path::new(&state), &run, "step_started").is_empty());
    let listed = text(&bin.run(&["runs", "--state-dir", &state], &friday));
    assert!(
        listed.contains("waiting until 2026-11-30 08:00:00 UTC (the deploy window"),
        "{listed}"
    );
    // Still closed: the worker leaves it.
    let early = bin.run(&["worker", "--state-dir", &state, "--once"], &friday);
    exits(&early, 0);
    assert!(events(Path::new(&state), &run, "step_started").is_empty());
    // Monday, open: the worker starts it.
    let monday = [("RUNBOOK_NOW", "2026-11-30T09:30:00+01:00")];
    let worker = bin.run(&["worker", "--state-dir", &state, "--until-done"], &monday);
    exits(&worker, 0);
    let finished = events(Path::new(&state), &run, "run_finished");
    assert_eq!(
        finished.last().unwrap()["status"],
        "succeeded",
        "{}",
        text(&worker)
    );
}

#[tokio::test]
async fn the_worker_goes_on_with_a_run_once_it_is_approved() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"gated\"\n\n[environments.production]\napprovals = { required = 1, from = [\"bob\", \"carol\"] }\n\n[[steps]]\nid = \"x\"\nuses = \"noop\"\n",
    );
    let bin = Bin::new();
    let state = file.dir.path().join("state").display().to_string();
    let path = file.path.display().to_string();
    let waiting = bin.run(
        &["exec", &path, "--env", "production", "--state-dir", &state],
        &[],
    );
    exits(&waiting, 4);
    let run = only_run(Path::new(&state));
    // Nobody approved yet: one try, and the worker is done with it.
    let idle = bin.run(&["worker", "--state-dir", &state, "--until-done"], &[]);
    exits(&idle, 0);
    assert!(events(Path::new(&state), &run, "step_started").is_empty());
    let approved = bin.run(
        &["approve", &run, "--as", "bob", "--state-dir", &state],
        &[],
    );
    exits(&approved, 0);
    let worker = bin.run(&["worker", "--state-dir", &state, "--until-done"], &[]);
    exits(&worker, 0);
    let finished = events(Path::new(&state), &run, "run_finished");
    assert_eq!(
        finished.last().unwrap()["status"],
        "succeeded",
        "{}",
        text(&worker)
    );
}
