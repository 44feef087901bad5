//! Faults as tests: the binary, built with failpoints (`host/src/fault.rs`),
//! is made to crash, or to meet a full disk or an I/O error, at every
//! durable write and between every effect and its record, in turn. After
//! each, `resume` (with the operator's decision where a step's outcome is
//! unknown, made from the counter service as a person would check by hand)
//! must finish the run with every side effect exactly once, every undo
//! exactly once, the lock free, the audit log verifiable and the run
//! readable. Races: several `exec` and `resume` processes at once.

use crate::support::{TestRunbook, cache_dir};
use runbook::state::{LockState, RunLock};
use runbook_testenv::Counter;
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

pub(crate) struct Bin {
    index: tempfile::TempDir,
}

impl Bin {
    pub(crate) fn new() -> Arc<Self> {
        let bin = Arc::new(Bin {
            index: tempfile::tempdir().unwrap(),
        });
        // Compile the plugins into the shared cache first, so that faults
        // land in runs, not in the first compilation.
        for plugin in ["recorder", "noop"] {
            let warm = bin.run(
                &[
                    "plugin",
                    "inspect",
                    runbook_testenv::plugin_path(plugin).to_str().unwrap(),
                ],
                &[],
            );
            assert!(warm.status.success(), "{}", text(&warm));
        }
        bin
    }

    pub(crate) fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(args)
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("RUNBOOK_INDEX_DIR", self.index.path())
            .env("RUNBOOK_OPERATOR", "alice")
            .env("NO_COLOR", "1")
            .env_remove("RUNBOOK_FAILPOINTS")
            .env_remove("RUNBOOK_FAILPOINT_TRACE")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    pub(crate) fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("runbook runs")
    }
}

/// Asserts how a process ended, showing what it said when it is wrong.
pub(crate) fn exits(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
}

/// The id of the one run in a state folder.
pub(crate) fn only_run(state: &std::path::Path) -> String {
    std::fs::read_dir(state.join("runs"))
        .unwrap()
        .next()
        .expect("a run")
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

/// A representative runbook: non-idempotent effects counted by the
/// counter service, an idempotent step between them, an `always` step,
/// and (with `fail_last`) a last step that fails after acting, so that
/// the run rolls back.
fn runbook(name: &str, counter: &Counter, fail_last: bool) -> TestRunbook {
    counted_runbook(name, counter, fail_last, "")
}

/// [`runbook`], with `environment` (a table of `[environments]`) added as
/// it is.
pub(crate) fn counted_runbook(
    name: &str,
    counter: &Counter,
    fail_last: bool,
    environment: &str,
) -> TestRunbook {
    let step = |id: &str, needs: &str, extra: &str| {
        format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nneeds = [{needs}]\nwith.url = \"{url}\"\nwith.name = \"{name}-{id}\"\ngrants.http = [\"{url}\"]\n{extra}\n",
            url = counter.url
        )
    };
    let mut body =
        format!("[runbook]\nname = \"{name}\"\non_failure = \"rollback\"\n{environment}\n");
    body.push_str(&step("one", "", ""));
    body.push_str("\n[[steps]]\nid = \"warm\"\nuses = \"noop\"\nneeds = [\"one\"]\n");
    body.push_str(&step("two", "\"warm\"", ""));
    body.push_str(&step(
        "three",
        "\"two\"",
        if fail_last { "with.fail = true" } else { "" },
    ));
    body.push_str(&step("tell", "", "always = true"));
    TestRunbook::new(&body)
}

/// The effects a finished run must have had, by counter name: how often
/// done and how often undone.
fn expected(name: &str, fail_last: bool) -> BTreeMap<String, (u32, u32)> {
    let undone = u32::from(fail_last);
    BTreeMap::from([
        (format!("{name}-one"), (1, undone)),
        (format!("{name}-two"), (1, undone)),
        (format!("{name}-three"), (1, 0)),
        (format!("{name}-tell"), (1, 0)),
    ])
}

pub(crate) fn effects(counter: &Counter, name: &str) -> BTreeMap<String, (u32, u32)> {
    let tally = counter.tally();
    ["one", "two", "three", "tell"]
        .iter()
        .map(|id| {
            let key = format!("{name}-{id}");
            let done = tally.done.get(&key).copied().unwrap_or(0);
            let undone = tally.undone.get(&key).copied().unwrap_or(0);
            (key, (done, undone))
        })
        .collect()
}

/// Every place a run of `file` passes a failpoint, in order.
/// The failpoints a process passed, and how often, as it listed them in
/// its `RUNBOOK_FAILPOINT_TRACE` file.
pub fn trace_points(trace: &std::path::Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, count) = line.split_once(' ')?;
            Some((name.to_owned(), count.parse().ok()?))
        })
        .collect()
}

fn failpoints_of(bin: &Bin, file: &TestRunbook) -> Vec<(String, u64)> {
    let trace = file.dir.path().join("trace");
    let output = bin.run(
        &["exec", file.path.to_str().unwrap()],
        &[("RUNBOOK_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    assert!(output.status.code().is_some(), "{}", text(&output));
    let points = trace_points(&trace);
    assert!(
        points.len() > 10,
        "the runbook binary passed {} failpoints: it must be built with `--features runbook/failpoints` (scripts/test does)",
        points.len()
    );
    points
}

/// Resumes a run until it is over, deciding interrupted steps from the
/// counter as an operator would by hand. Returns the run's id and the
/// steps the operator marked done, or `None` when the run never started
/// (then nothing may have happened).
async fn resume_to_the_end(
    bin: &Arc<Bin>,
    file: &TestRunbook,
    counter: &Counter,
    name: &str,
    trial: &str,
) -> Option<(String, Vec<String>)> {
    let state = file.dir.path().join(".runbook");
    let run = std::fs::read_dir(state.join("runs"))
        .ok()
        .and_then(|mut entries| entries.next())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned());
    let Some(run) = run else {
        assert!(
            effects(counter, name)
                .values()
                .all(|effect| *effect == (0, 0)),
            "{trial}: effects without a run: {:?}",
            effects(counter, name)
        );
        return None;
    };
    let mut decisions: Vec<String> = Vec::new();
    for _ in 0..8 {
        let mut args = vec![
            "resume".to_owned(),
            run.clone(),
            "--state-dir".to_owned(),
            state.display().to_string(),
        ];
        args.extend(decisions.iter().cloned());
        let bin = Arc::clone(bin);
        let output = blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bin.run(&args, &[])
        })
        .await;
        let said = text(&output);
        // The run ended: succeeded, or failed and rolled back.
        let skipped = decisions
            .chunks(2)
            .filter(|pair| pair[0] == "--skip")
            .map(|pair| pair[1].clone())
            .collect();
        if matches!(output.status.code(), Some(0 | 1))
            || said.contains("already succeeded")
            || said.contains("was rolled back")
        {
            return Some((run, skipped));
        }
        if said.contains("the run never started") {
            assert!(
                effects(counter, name)
                    .values()
                    .all(|effect| *effect == (0, 0)),
                "{trial}: effects without a run: {:?}",
                effects(counter, name)
            );
            return None;
        }
        decisions.extend(check_by_hand(&said, counter, name, trial));
    }
    panic!("{trial}: the run did not finish after 8 resumes");
}

/// What an operator tells `resume` about the step (or undo) it says may or
/// may not have taken effect, having looked at the counter as a person
/// checks by hand: `--skip STEP` when it did, else `--rerun STEP`.
pub(crate) fn check_by_hand(said: &str, counter: &Counter, name: &str, trial: &str) -> [String; 2] {
    assert!(
        said.contains("may or may not have taken effect"),
        "{trial}: unexpected resume: {said}"
    );
    let step = said
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("{trial}: {said}"))
        .to_owned();
    let (done, undone) = effects(counter, name)[&format!("{name}-{step}")];
    let took_effect = if said.contains("its rollback") {
        undone == 1
    } else {
        done == 1
    };
    [
        if took_effect { "--skip" } else { "--rerun" }.to_owned(),
        step,
    ]
}

/// `(done, undone)` of NAME-one, -two, -three and -tell, in that order, as
/// [`effects`] reports them.
pub(crate) fn counts(name: &str, pairs: [(u32, u32); 4]) -> BTreeMap<String, (u32, u32)> {
    ["one", "two", "three", "tell"]
        .into_iter()
        .map(|id| format!("{name}-{id}"))
        .zip(pairs)
        .collect()
}

/// What every run must leave, however it was broken: effects exactly
/// once, the lock free and without a holder, the audit log verifiable,
/// `show` and `logs` readable, and no completed step started again.
fn check_run_left_in_order(
    bin: &Bin,
    file: &TestRunbook,
    counter: &Counter,
    name: &str,
    fail_last: bool,
    run: &str,
    trial: &str,
) {
    assert_eq!(
        effects(counter, name),
        expected(name, fail_last),
        "{trial}: effects (done, undone)"
    );
    let state = file.dir.path().join(".runbook");
    let lock = runbook::state::lock_path(&state, name, None);
    // Free; a dead process's name may stay on it, but only for this run,
    // which is over, so it blocks no one.
    match RunLock::state(&lock).unwrap() {
        LockState::Free(None) => {}
        LockState::Free(Some(holder)) => assert_eq!(holder.run_id, run, "{trial}: the lock"),
        held => panic!("{trial}: the lock is {held:?}"),
    }
    let state_arg = state.display().to_string();
    for args in [
        vec!["audit", "verify", run, "--state-dir", &state_arg],
        vec!["show", run, "--state-dir", &state_arg],
        vec!["logs", run, "--state-dir", &state_arg],
    ] {
        let output = bin.run(&args, &[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{trial}: `{}`: {}",
            args.join(" "),
            text(&output)
        );
    }
    // The run is over: its deployment record is whole.
    let record = std::fs::read_to_string(state.join("deployments").join(format!("{run}.json")))
        .unwrap_or_else(|error| panic!("{trial}: no deployment record: {error}"));
    let record: serde_json::Value = serde_json::from_str(&record)
        .unwrap_or_else(|error| panic!("{trial}: a torn deployment record: {error}"));
    assert_eq!(record["run_id"], run, "{trial}");
    // Completed steps never run again: no step starts after it finished.
    let journal =
        std::fs::read_to_string(state.join("runs").join(run).join("events.jsonl")).unwrap();
    let mut succeeded = std::collections::BTreeSet::new();
    for line in journal.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = event["step"].as_str().unwrap_or_default().to_owned();
        match event["event"].as_str() {
            Some("step_started") => assert!(
                !succeeded.contains(&step) || step == "tell",
                "{trial}: `{step}` started again after it succeeded"
            ),
            Some("step_finished") if event["status"] == "succeeded" => {
                succeeded.insert(step);
            }
            _ => {}
        }
    }
}

async fn sweep(fail_last: bool, action: &str) {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let scenario = if fail_last { "rb" } else { "ok" };
    let probe = runbook(&format!("probe-{scenario}-{action}"), &counter, fail_last);
    let points = failpoints_of(&bin, &probe);
    let mut broken = 0;
    for (trial, (point, hit)) in points.iter().enumerate() {
        // A full disk stays full: every write from the failing one on
        // fails. Points between an effect and its record are not writes,
        // and the run index is a convenience (`resume` also searches).
        if action != "crash"
            && matches!(
                point.as_str(),
                "step.done" | "rollback.done" | "index.write"
            )
        {
            continue;
        }
        let name = format!("{scenario}-{action}-{trial}");
        let label = format!("{action} at {point}#{hit}");
        let file = runbook(&name, &counter, fail_last);
        let rule = if action == "crash" {
            format!("{point}=crash@{hit}")
        } else {
            format!("{point}={action}@{hit}+")
        };
        let first = {
            let bin = Arc::clone(&bin);
            let path = file.path.to_str().unwrap().to_owned();
            blocking(move || bin.run(&["exec", &path], &[("RUNBOOK_FAILPOINTS", &rule)])).await
        };
        let said = text(&first);
        if action == "crash" {
            assert_eq!(first.status.code(), Some(137), "{label}: {said}");
        } else if point == "record.write" {
            // The run is over and recorded in its journal; only the
            // deployment record is missing: said, and `resume` writes it.
            assert!(
                said.contains("cannot write the deployment record"),
                "{label}: {said}"
            );
        } else {
            // The run never claims success, never crashes, and says why.
            assert!(
                matches!(first.status.code(), Some(1 | 70)),
                "{label}: exit {:?}: {said}",
                first.status.code()
            );
            // It may have drawn the end of a run whose end it then
            // could not record; it must say so last.
            assert!(
                said.contains("free the disk") || said.contains("cannot write the lock file"),
                "{label}: {said}"
            );
            assert!(!said.contains("panicked"), "{label}: {said}");
            assert!(
                said.contains("No space left on device")
                    || said.contains("Input/output error")
                    || said.contains("failed on purpose"),
                "{label}: {said}"
            );
        }
        broken += 1;
        if let Some((run, skipped)) = resume_to_the_end(&bin, &file, &counter, &name, &label).await
        {
            // Marking the failing step done (it had acted) lets the run
            // succeed: nothing is then undone.
            let fails = fail_last && !skipped.iter().any(|step| step == "three");
            check_run_left_in_order(&bin, &file, &counter, &name, fails, &run, &label);
        }
    }
    assert!(broken > 10, "only {broken} faults were injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_failpoint_of_a_run_then_resume_leaves_each_effect_exactly_once() {
    sweep(false, "crash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_failpoint_of_a_rollback_then_resume_undoes_each_effect_exactly_once() {
    sweep(true, "crash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_every_durable_write_stops_the_run_and_resume_finishes_it() {
    sweep(false, "enospc").await;
    sweep(true, "eio").await;
}

/// A second crash, in the process that continues a rollback: the first
/// process dies just after undoing `two` (before recording it); the
/// operator resumes, having checked that the undo took effect, and that
/// resume is broken at each of its own failpoints in turn. Every effect
/// and every undo still happens exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_failpoint_of_a_continued_rollback_still_undoes_each_effect_once() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let first_crash = "rollback.done=crash@1";
    let crash_then_resume = |name: String, resume_faults: Option<String>| {
        let file = runbook(&name, &counter, true);
        let bin = Arc::clone(&bin);
        async move {
            let path = file.path.to_str().unwrap().to_owned();
            let state = file.dir.path().join(".runbook");
            let first = {
                let bin = Arc::clone(&bin);
                blocking(move || bin.run(&["exec", &path], &[("RUNBOOK_FAILPOINTS", first_crash)]))
                    .await
            };
            exits(&first, 137);
            let run = only_run(&state);
            let trace = file.dir.path().join("trace");
            let faults = resume_faults.clone();
            let resumed = {
                let bin = Arc::clone(&bin);
                let state = state.display().to_string();
                let trace = trace.display().to_string();
                blocking(move || {
                    let mut env = vec![("RUNBOOK_FAILPOINT_TRACE", trace.as_str())];
                    if let Some(faults) = &faults {
                        env = vec![("RUNBOOK_FAILPOINTS", faults.as_str())];
                    }
                    bin.run(
                        &["resume", &run, "--state-dir", &state, "--skip", "two"],
                        &env,
                    )
                })
                .await
            };
            (file, resumed, trace)
        }
    };
    // The resume, unbroken, lists its failpoints.
    let (_probe, resumed, trace) = crash_then_resume("cont-probe".into(), None).await;
    exits(&resumed, 1);
    let points = trace_points(&trace);
    assert!(
        points.len() > 5,
        "the resume passed {} failpoints",
        points.len()
    );
    for (trial, (point, hit)) in points.iter().enumerate() {
        let name = format!("cont-{trial}");
        let label = format!("crash of the resume at {point}#{hit}");
        let (file, resumed, _) =
            crash_then_resume(name.clone(), Some(format!("{point}=crash@{hit}"))).await;
        exits(&resumed, 137);
        let (run, _) = resume_to_the_end(&bin, &file, &counter, &name, &label)
            .await
            .unwrap_or_else(|| panic!("{label}: the run vanished"));
        check_run_left_in_order(&bin, &file, &counter, &name, true, &run, &label);
    }
}

/// The first process of a crashed run died mid-step; four operators
/// resume it at once. One continues it; the others are refused or find it
/// finished; the interrupted step runs again once, not four times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_resumes_of_one_crashed_run_at_once_continue_it_once() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    for trial in 0..12 {
        let name = format!("race-{trial}");
        let file = runbook(&name, &counter, false);
        // Crash after `two` acted and before it was recorded.
        let first = bin.run(
            &["exec", file.path.to_str().unwrap()],
            &[("RUNBOOK_FAILPOINTS", "step.done=crash@3")],
        );
        exits(&first, 137);
        let state = file.dir.path().join(".runbook");
        let run = only_run(&state);
        let mut resumers = Vec::new();
        for _ in 0..4 {
            let command = bin.command(
                &[
                    "resume",
                    &run,
                    "--state-dir",
                    state.to_str().unwrap(),
                    "--rerun",
                    "two",
                ],
                &[],
            );
            resumers.push(std::thread::spawn(move || {
                let mut command = command;
                command.output().unwrap()
            }));
        }
        let outputs: Vec<Output> = resumers
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let finished = outputs
            .iter()
            .filter(|output| output.status.code() == Some(0))
            .count();
        assert_eq!(finished, 1, "trial {trial}: one resume finishes the run");
        for output in &outputs {
            let said = text(output);
            assert!(
                output.status.code() == Some(0)
                    || (output.status.code() == Some(2)
                        && (said.contains("holds the lock") || said.contains("already succeeded"))),
                "trial {trial}: a losing resume must say why: {said}"
            );
        }
        let effects = effects(&counter, &name);
        assert_eq!(effects[&format!("{name}-two")], (2, 0), "trial {trial}");
        assert_eq!(effects[&format!("{name}-one")], (1, 0), "trial {trial}");
        assert_eq!(effects[&format!("{name}-three")], (1, 0), "trial {trial}");
    }
}

/// Several `exec` of one runbook and environment at once: their runs never
/// overlap in time, and the lock is free at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execs_of_one_runbook_and_environment_never_overlap() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"crowd\"\n\n[[steps]]\nid = \"slow\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"crowd\"\nwith.delay = \"400ms\"\ngrants.http = [\"{url}\"]\n",
        url = counter.url
    ));
    let mut runners = Vec::new();
    for _ in 0..4 {
        let command = bin.command(&["exec", file.path.to_str().unwrap(), "--wait-lock"], &[]);
        runners.push(std::thread::spawn(move || {
            let mut command = command;
            command.output().unwrap()
        }));
    }
    for runner in runners {
        let output = runner.join().unwrap();
        exits(&output, 0);
    }
    assert_eq!(counter.tally().done["crowd"], 4);
    // Each run's span, from its journal: none overlaps another.
    let runs = file.dir.path().join(".runbook/runs");
    let mut spans: Vec<(String, String)> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|entry| {
            let journal =
                std::fs::read_to_string(entry.unwrap().path().join("events.jsonl")).unwrap();
            let times: Vec<String> = journal
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).unwrap()["time"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            (times[0].clone(), times[times.len() - 1].clone())
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        let start: jiff::Timestamp = pair[1].0.parse().unwrap();
        let end: jiff::Timestamp = pair[0].1.parse().unwrap();
        assert!(start >= end, "two runs overlapped: {spans:?}");
    }
    // Free, naming the last run, which is over.
    let lock = runbook::state::lock_path(&file.dir.path().join(".runbook"), "crowd", None);
    assert!(matches!(
        RunLock::state(&lock).unwrap(),
        LockState::Free(Some(_))
    ));
}

/// The lock file cannot be written (a full disk): the run does not start,
/// says why, and leaves nothing that blocks the next run.
#[test]
fn a_full_disk_while_taking_the_lock_blocks_nothing_afterwards() {
    let bin = Bin::new();
    let file = TestRunbook::new(
        "[runbook]\nname = \"lockfull\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n",
    );
    let path = file.path.to_str().unwrap();
    let first = bin.run(
        &["exec", path],
        &[("RUNBOOK_FAILPOINTS", "lock.write=enospc")],
    );
    exits(&first, 70);
    assert!(
        text(&first).contains("No space left on device"),
        "{}",
        text(&first)
    );
    let unlock = bin.run(&["unlock", path], &[]);
    assert!(
        text(&unlock).contains("no lock is held"),
        "{}",
        text(&unlock)
    );
    let second = bin.run(&["exec", path], &[]);
    exits(&second, 0);
}

/// A process killed before its run's journal exists, or after the run
/// ended but before it let go of the lock, leaves nothing to resume: the
/// next run starts without `unlock`. One killed mid-run is refused with
/// both ways out named.
#[test]
fn a_dead_holder_blocks_the_next_run_only_when_its_run_is_unfinished() {
    let bin = Bin::new();
    let file = TestRunbook::new(
        "[runbook]\nname = \"dead\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n\n[[steps]]\nid = \"b\"\nuses = \"noop\"\nneeds = [\"a\"]\n",
    );
    let path = file.path.to_str().unwrap();
    // Before the journal has a record.
    let killed = bin.run(
        &["exec", path],
        &[("RUNBOOK_FAILPOINTS", "journal.write=crash@1")],
    );
    exits(&killed, 137);
    let next = bin.run(&["exec", path], &[]);
    exits(&next, 0);
    // After `run_finished`, before the lock is let go: the last write of
    // a run is its audit head.
    let probe = file.dir.path().join("trace");
    let traced = bin.run(
        &["exec", path],
        &[("RUNBOOK_FAILPOINT_TRACE", probe.to_str().unwrap())],
    );
    exits(&traced, 0);
    let writes = std::fs::read_to_string(&probe)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("journal.write "))
        .count();
    let late = bin.run(
        &["exec", path],
        &[(
            "RUNBOOK_FAILPOINTS",
            &format!("journal.write=crash@{writes}"),
        )],
    );
    exits(&late, 137);
    let next = bin.run(&["exec", path], &[]);
    exits(&next, 0);
    // Mid-run: refused, naming `resume` and `unlock`.
    let killed = bin.run(
        &["exec", path],
        &[("RUNBOOK_FAILPOINTS", "step.done=crash@1")],
    );
    exits(&killed, 137);
    let refused = bin.run(&["exec", path], &[]);
    exits(&refused, 2);
    let said = text(&refused);
    assert!(
        said.contains("died unfinished")
            && said.contains("runbook resume")
            && said.contains("runbook unlock"),
        "{said}"
    );
    let unlock = bin.run(&["unlock", path], &[]);
    exits(&unlock, 0);
    let next = bin.run(&["exec", path], &[]);
    exits(&next, 0);
}

/// A run died in a step that may not be repeated. A resume that stops to
/// ask, and exits, must not make the run's claim disappear: the next
/// `exec` is still refused. `unlock` abandons the run for good, so that
/// resuming it later cannot undo what newer runs did.
#[test]
fn a_run_that_died_unfinished_blocks_new_runs_until_it_is_abandoned_for_good() {
    let bin = Bin::new();
    let file = TestRunbook::new(
        "[runbook]\nname = \"claim\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop-once\"\n",
    );
    let path = file.path.to_str().unwrap();
    let state = file.dir.path().join(".runbook");
    let state_arg = state.to_str().unwrap();
    let killed = bin.run(
        &["exec", path],
        &[("RUNBOOK_FAILPOINTS", "step.done=crash@1")],
    );
    exits(&killed, 137);
    let run = only_run(&state);
    let asked = bin.run(&["resume", &run, "--state-dir", state_arg], &[]);
    exits(&asked, 2);
    assert!(text(&asked).contains("may or may not have taken effect"));
    let refused = bin.run(&["exec", path], &[]);
    exits(&refused, 2);
    assert!(
        text(&refused).contains("died unfinished"),
        "{}",
        text(&refused)
    );
    let unlock = bin.run(&["unlock", path], &[]);
    exits(&unlock, 0);
    assert!(text(&unlock).contains("abandoned"), "{}", text(&unlock));
    let late = bin.run(&["resume", &run, "--state-dir", state_arg], &[]);
    exits(&late, 2);
    assert!(text(&late).contains("was abandoned"), "{}", text(&late));
    let next = bin.run(&["exec", path], &[]);
    exits(&next, 0);
}

/// A step fails while another runs beside it, and the process dies before
/// the rollback begins. `resume` rolls back, and the step that was cut
/// short mid-call is undone too (what it did is unknown), not forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cut_short_beside_a_failed_one_is_undone_when_resume_rolls_back() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"beside\"\non_failure = \"rollback\"\n\n[[steps]]\nid = \"slow\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"beside-slow\"\nwith.delay = \"3s\"\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"gate\"\nuses = \"recorder\"\nneeds = []\nwith.url = \"{url}\"\nwith.name = \"beside-gate\"\nwith.fail = true\ngrants.http = [\"{url}\"]\n",
        url = counter.url
    ));
    let state = file.dir.path().join(".runbook");
    // Syncs: run_started, the two steps' starts (started together, one
    // sync), gate failed: die right after the failure is on disk, with
    // `slow` still running.
    let killed = {
        let bin = Arc::clone(&bin);
        let path = file.path.to_str().unwrap().to_owned();
        blocking(move || {
            bin.run(
                &["exec", &path],
                &[("RUNBOOK_FAILPOINTS", "journal.synced=crash@3")],
            )
        })
        .await
    };
    exits(&killed, 137);
    let run = only_run(&state);
    let resumed = {
        let bin = Arc::clone(&bin);
        let state = state.display().to_string();
        blocking(move || bin.run(&["resume", &run, "--state-dir", &state], &[])).await
    };
    exits(&resumed, 1);
    assert!(
        text(&resumed).contains("interrupted mid-call"),
        "{}",
        text(&resumed)
    );
    assert_eq!(counter.tally().undone.get("beside-slow"), Some(&1));
}

/// Waits until a step of the run in `state` has started.
fn wait_for_start(state: &std::path::Path, step: &str) {
    for _ in 0..400 {
        let started = std::fs::read_dir(state.join("runs"))
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|entry| std::fs::read_to_string(entry.ok()?.path().join("events.jsonl")).ok())
            .is_some_and(|journal| {
                journal.lines().any(|line| {
                    line.contains("\"event\":\"step_started\"")
                        && line.contains(&format!("\"step\":\"{step}\""))
                })
            });
        if started {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("`{step}` never started");
}

/// Ctrl-C while a step that may not be repeated is mid-call: its outcome
/// is unknown. Its rollback undoes what it may have half-done (whatever
/// the failure policy), the `always` step still runs (only a second
/// interrupt stops it), and `resume` runs the step again only once its
/// undo is known to have worked; when the undo failed, it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_mid_call_undoes_the_step_runs_always_steps_and_resume_asks_when_unsure() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    for fail_rollback in [false, true] {
        let name = format!("sigint-{fail_rollback}");
        let file = TestRunbook::new(&format!(
            "[runbook]\nname = \"{name}\"\non_failure = \"abort\"\n\n[[steps]]\nid = \"one\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{name}-one\"\nwith.delay = \"3s\"\nwith.fail_rollback = {fail_rollback}\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"tell\"\nuses = \"recorder\"\nalways = true\nwith.url = \"{url}\"\nwith.name = \"{name}-tell\"\ngrants.http = [\"{url}\"]\n",
            url = counter.url
        ));
        let state = file.dir.path().join(".runbook");
        let child = bin
            .command(&["exec", file.path.to_str().unwrap()], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_start(&state, "one");
        let interrupt = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(interrupt.success());
        let output = child.wait_with_output().unwrap();
        exits(&output, 130);
        let tally = counter.tally();
        assert_eq!(
            tally.done.get(&format!("{name}-tell")),
            Some(&1),
            "the always step runs after Ctrl-C: {}",
            text(&output)
        );
        if !fail_rollback {
            assert_eq!(tally.undone.get(&format!("{name}-one")), Some(&1));
        }
        let run = only_run(&state);
        let resumed = bin.run(
            &["resume", &run, "--state-dir", state.to_str().unwrap()],
            &[],
        );
        if fail_rollback {
            exits(&resumed, 2);
            assert!(
                text(&resumed).contains("`one`: it was running")
                    && text(&resumed).contains("may or may not have taken effect"),
                "{}",
                text(&resumed)
            );
        } else {
            exits(&resumed, 0);
            assert_eq!(counter.tally().done.get(&format!("{name}-one")), Some(&1));
        }
    }
}

/// The process dies after a step changed the cluster and before the step
/// was recorded (the bad RISKCAST release killed mid `canary-deploy`). On
/// resume the step runs again and finds its change made ("already as
/// asked"); when a later step fails, the rollback must still restore what
/// was there before the run: the step recorded it before changing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_killed_after_its_change_is_still_undone_from_what_it_recorded_first() {
    let (emulator, _dir, kubeconfig) = crate::kube::cluster().await;
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"canary\"\non_failure = \"rollback\"\n\n[[steps]]\nid = \"canary-deploy\"\nuses = \"k8s-rollout\"\nwith.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.images = {{ app = \"app:2\" }}\nwith.timeout = \"20s\"\ngrants.kube = {{ namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }}\n\n[[steps]]\nid = \"gate\"\nuses = \"recorder\"\nneeds = [\"canary-deploy\"]\nwith.url = \"{url}\"\nwith.name = \"gate\"\nwith.fail = true\ngrants.http = [\"{url}\"]\n",
        url = counter.url
    ));
    let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let crash = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("RUNBOOK_FAILPOINTS", "step.done=crash@1"),
    ];
    let path = file.path.to_str().unwrap().to_owned();
    let killed = {
        let bin = Arc::clone(&bin);
        let crash = crash.map(|(key, value)| (key, value.to_owned()));
        blocking(move || {
            let crash: Vec<(&str, &str)> = crash.iter().map(|(k, v)| (*k, v.as_str())).collect();
            bin.run(&["exec", &path], &crash)
        })
        .await
    };
    exits(&killed, 137);
    assert_eq!(crate::kube::image_of(&emulator, "shop"), "app:2");
    let state = file.dir.path().join(".runbook");
    let run = only_run(&state);
    let resumed = {
        let bin = Arc::clone(&bin);
        let state = state.display().to_string();
        let env = env.map(|(key, value)| (key, value.to_owned()));
        blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            bin.run(&["resume", &run, "--state-dir", &state], &env)
        })
        .await
    };
    exits(&resumed, 1);
    let said = text(&resumed);
    assert!(said.contains("already as asked"), "{said}");
    assert_eq!(
        crate::kube::image_of(&emulator, "shop"),
        "app:1",
        "the rollback restored what was there before the run: {said}"
    );
}

/// A run killed mid-way keeps the audit records of the calls it made: they
/// are written as the calls return, not when the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_keeps_the_audit_records_of_the_calls_it_made() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"killed\"\n\n[[steps]]\nid = \"one\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"killed-one\"\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"two\"\nuses = \"recorder\"\nneeds = [\"one\"]\nwith.url = \"{url}\"\nwith.name = \"killed-two\"\nwith.delay = \"30s\"\ngrants.http = [\"{url}\"]\n",
        url = counter.url
    ));
    let state = file.dir.path().join(".runbook");
    let mut child = bin
        .command(&["exec", file.path.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = state.clone();
    blocking(move || wait_for_start(&waiting, "two")).await;
    child.kill().unwrap();
    let _ = blocking(move || child.wait()).await;
    let run = only_run(&state);
    let audit = std::fs::read_to_string(state.join("runs").join(&run).join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("/do/killed-one"),
        "the audit log lost the call of `one`: {audit}"
    );
    let verify = bin.run(
        &[
            "audit",
            "verify",
            &run,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    exits(&verify, 0);
}

/// How often a run of `body` synced its journal, as its failpoint trace
/// counts them. With `in_turn` (steps that run one after another), also
/// that no step ended (`step.done`) while a line written before it was
/// still unsynced: each step's start was durable before it was called.
fn journal_syncs(bin: &Bin, body: &str, in_turn: bool) -> u64 {
    let file = TestRunbook::new(body);
    let trace = file.dir.path().join("trace");
    let output = bin.run(
        &["exec", file.path.to_str().unwrap()],
        &[("RUNBOOK_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    exits(&output, 0);
    // Each pass is a line, with how often the point was passed so far.
    let points = trace_points(&trace);
    let mut unsynced = false;
    for (name, hit) in &points {
        match name.as_str() {
            "journal.write" => unsynced = true,
            "journal.synced" => unsynced = false,
            "step.done" => assert!(
                !(in_turn && unsynced),
                "step end #{hit} came after a journal line that was never synced: a step ran before its start was durable ({points:?})"
            ),
            _ => {}
        }
    }
    points
        .iter()
        .filter(|(name, _)| name == "journal.sync")
        .count() as u64
}

/// Group commit: the end of one step and the start of the next share one
/// fsync, and steps that start together share one, while each step that
/// is not idempotent still has its start durable before it is called (the
/// crash sweeps above break the run at each of these syncs).
#[test]
fn a_chain_pays_one_journal_sync_per_step_and_steps_started_together_share_one() {
    let bin = Bin::new();
    let steps = 12;
    let chain: String = (0..steps)
        .map(|i| format!("[[steps]]\nid = \"s{i}\"\nuses = \"noop-once\"\n"))
        .collect();
    let syncs = journal_syncs(&bin, &format!("[runbook]\nname = \"chain\"\n{chain}"), true);
    // One per step, plus the run's start and end and the audit head.
    assert!(
        syncs <= steps + 4,
        "a chain of {steps} non-idempotent steps synced the journal {syncs} times: a step's end must share its sync with the next start"
    );
    let wide: String = (0..steps)
        .map(|i| format!("[[steps]]\nid = \"s{i}\"\nuses = \"noop-once\"\nneeds = []\n"))
        .collect();
    let syncs = journal_syncs(&bin, &format!("[runbook]\nname = \"wide\"\n{wide}"), false);
    // The starts share one sync; the ends share theirs as they come.
    assert!(
        syncs <= steps + 4,
        "{steps} non-idempotent steps started together synced the journal {syncs} times: their starts must share one sync"
    );
}
