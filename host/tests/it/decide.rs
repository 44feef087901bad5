//! Guided failure (`on_failure = "ask"`): a failed step pauses the run for
//! a person's choice. Without a terminal the run ends waiting (exit 4) and
//! `runbook decide RUN retry|skip|rollback|abort` carries the choice out;
//! on a terminal `exec` asks at once. Each choice is journaled and
//! audited, and does what it says to the counter service's effects.

use crate::faults::{Bin, check_by_hand, counts, effects, exits, only_run, text, trace_points};
use crate::support::TestRunbook;
use runbook_testenv::Counter;
use std::path::PathBuf;
use std::sync::Arc;

/// Counted steps `one` → `two` → `three` and an `always` step `tell`;
/// `two` is given `two` (`fail = true`, or `transient_failures = 1` to
/// fail once). The runbook rolls back on failure; `[environments]` decide
/// where it asks.
fn runbook(name: &str, counter: &Counter, two: &str) -> TestRunbook {
    let step = |id: &str, needs: &str, extra: &str| {
        format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nneeds = [{needs}]\nwith.url = \"{url}\"\nwith.name = \"{name}-{id}\"\ngrants.http = [\"{url}\"]\n{extra}\n",
            url = counter.url
        )
    };
    let mut body = format!(
        "[runbook]\nname = \"{name}\"\non_failure = \"rollback\"\n\n[environments.production]\non_failure = \"ask\"\n\n[environments.staging]\n"
    );
    body.push_str(&step("one", "", ""));
    body.push_str(&step("two", "\"one\"", two));
    body.push_str(&step("three", "\"two\"", ""));
    body.push_str(&step("tell", "", "always = true"));
    TestRunbook::new(&body)
}

struct Operator {
    bin: Arc<Bin>,
    file: TestRunbook,
    state: PathBuf,
}

impl Operator {
    fn new(file: TestRunbook) -> Self {
        Self::with(&Bin::new(), file)
    }

    fn with(bin: &Arc<Bin>, file: TestRunbook) -> Self {
        let state = file.dir.path().join(".runbook");
        Operator {
            bin: Arc::clone(bin),
            file,
            state,
        }
    }

    fn run(&self, operator: &str, args: &[&str]) -> std::process::Output {
        self.run_with(operator, args, &[])
    }

    fn run_with(
        &self,
        operator: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let mut args: Vec<&str> = args.to_vec();
        let state = self.state.display().to_string();
        let path = self.file.path.display().to_string();
        if args[0] == "exec" {
            args.insert(1, &path);
        } else {
            args.extend(["--state-dir", &state]);
        }
        let mut env = env.to_vec();
        env.push(("RUNBOOK_OPERATOR", operator));
        self.bin.run(&args, &env)
    }

    fn lines(&self, run: &str, file: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("runs").join(run).join(file))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn journal(&self, run: &str, kind: &str) -> Vec<serde_json::Value> {
        self.lines(run, "events.jsonl")
            .into_iter()
            .filter(|event| event["event"] == kind)
            .collect()
    }

    fn record(&self, run: &str) -> serde_json::Value {
        let path = self.state.join("deployments").join(format!("{run}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// `exec --env production`, which stops at `two`'s failure: its run.
    fn exec_until_asked(&self) -> String {
        let output = self.run("alice", &["exec", "--env", "production"]);
        exits(&output, 4);
        let said = text(&output);
        let run = only_run(&self.state);
        assert!(
            said.contains(&format!("runbook decide {run} retry|skip|rollback|abort")),
            "{said}"
        );
        let runs = self.run("alice", &["runs"]);
        exits(&runs, 0);
        assert!(
            text(&runs).contains("waiting for a decision on `two`"),
            "{}",
            text(&runs)
        );
        assert_eq!(self.journal(&run, "decision_needed").len(), 1);
        run
    }
}

#[test]
fn a_failed_step_waits_for_a_decision_and_retry_runs_it_again() {
    let counter = tokio_counter();
    let operator = Operator::new(runbook("retry", &counter, "with.transient_failures = 1"));
    let run = operator.exec_until_asked();
    // Nothing undone, nothing after `two` ran, and the `always` step waits
    // for the real end.
    assert_eq!(
        effects(&counter, "retry"),
        counts("retry", [(1, 0), (1, 0), (0, 0), (0, 0)])
    );
    // The worker leaves it to a person: it neither resumes nor retries it.
    exits(&operator.run("alice", &["worker", "--once"]), 0);
    assert!(operator.journal(&run, "run_resumed").is_empty());
    assert_eq!(effects(&counter, "retry")["retry-two"], (1, 0));
    // A plain resume asks again; it does not retry on its own.
    exits(&operator.run("alice", &["resume", &run]), 4);
    assert_eq!(effects(&counter, "retry")["retry-two"], (1, 0));

    let decided = operator.run(
        "bob",
        &["decide", &run, "retry", "--note", "the pool was warming up"],
    );
    exits(&decided, 0);
    assert_eq!(
        effects(&counter, "retry"),
        counts("retry", [(1, 0), (2, 0), (1, 0), (1, 0)])
    );
    let chosen = operator.journal(&run, "decided");
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["step"], "two");
    assert_eq!(chosen[0]["choice"], "retry");
    assert_eq!(chosen[0]["by"], "bob");
    assert_eq!(chosen[0]["how"], "command");
    assert_eq!(chosen[0]["note"], "the pool was warming up");
    assert_eq!(operator.record(&run)["status"], "succeeded");

    // The audit log holds the decision, and is intact.
    let audited: Vec<serde_json::Value> = operator
        .lines(&run, "audit.jsonl")
        .into_iter()
        .filter(|record| record["capability"] == "decision")
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["step"], "two");
    let audited = audited[0].to_string();
    assert!(
        audited.contains("retry") && audited.contains("bob"),
        "{audited}"
    );
    exits(&operator.run("carol", &["audit", "verify", &run]), 0);

    let show = operator.run("carol", &["show", &run]);
    exits(&show, 0);
    assert!(
        text(&show).contains("two: bob chose retry (command): the pool was warming up"),
        "{}",
        text(&show)
    );
    // A run that waits for no decision refuses one.
    let again = operator.run("bob", &["decide", &run, "skip"]);
    exits(&again, 2);
    assert!(
        text(&again).contains("is not waiting for a decision"),
        "{}",
        text(&again)
    );
}

#[test]
fn skip_goes_on_past_the_failed_step_and_a_later_rollback_leaves_it_alone() {
    let counter = tokio_counter();
    let operator = Operator::new(runbook("skip", &counter, "with.fail = true"));
    let run = operator.exec_until_asked();
    exits(&operator.run("bob", &["decide", &run, "skip"]), 0);
    assert_eq!(
        effects(&counter, "skip"),
        counts("skip", [(1, 0), (1, 0), (1, 0), (1, 0)])
    );
    assert_eq!(operator.record(&run)["status"], "succeeded");
    // The skipped step did not complete: undoing the run leaves it be.
    exits(&operator.run("carol", &["rollback", &run]), 0);
    let undone: Vec<String> = operator
        .journal(&run, "step_rolled_back")
        .iter()
        .map(|event| event["step"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(undone, ["three", "one"]);
}

#[test]
fn rollback_undoes_what_completed_and_abort_undoes_nothing() {
    let counter = tokio_counter();
    let rolled = Operator::new(runbook("undo", &counter, "with.fail = true"));
    let run = rolled.exec_until_asked();
    let decided = rolled.run("bob", &["decide", &run, "rollback"]);
    exits(&decided, 1);
    assert_eq!(
        effects(&counter, "undo"),
        counts("undo", [(1, 1), (1, 0), (0, 0), (1, 0)])
    );
    assert_eq!(rolled.record(&run)["status"], "failed");
    assert_eq!(rolled.journal(&run, "rollback_started").len(), 1);

    let aborted = Operator::new(runbook("stop", &counter, "with.fail = true"));
    let run = aborted.exec_until_asked();
    let decided = aborted.run("bob", &["decide", &run, "abort", "--note", "on it"]);
    exits(&decided, 1);
    assert_eq!(
        effects(&counter, "stop"),
        counts("stop", [(1, 0), (1, 0), (0, 0), (1, 0)])
    );
    assert_eq!(aborted.record(&run)["status"], "failed");
    assert_eq!(
        aborted.journal(&run, "run_finished")[1]["failed_step"],
        "two"
    );
    // A later resume of the aborted run asks again.
    exits(&aborted.run("alice", &["resume", &run]), 4);
    assert_eq!(aborted.journal(&run, "decision_needed").len(), 2);
    assert_eq!(effects(&counter, "stop")["stop-two"], (1, 0));
}

#[test]
fn another_environment_keeps_the_runbooks_policy() {
    let counter = tokio_counter();
    let operator = Operator::new(runbook("staged", &counter, "with.fail = true"));
    let output = operator.run("alice", &["exec", "--env", "staging"]);
    exits(&output, 1);
    let run = only_run(&operator.state);
    assert!(operator.journal(&run, "decision_needed").is_empty());
    assert_eq!(
        effects(&counter, "staged"),
        counts("staged", [(1, 1), (1, 0), (0, 0), (1, 0)])
    );
}

/// `exec --env production --yes` (the plan was reviewed) of `operator`'s runbook on a real terminal (a
/// pseudo-terminal from `script`), its standard streams piped.
fn on_a_pseudo_terminal(operator: &Operator) -> std::process::Child {
    let state = operator.state.display().to_string();
    // `exec`: the shell `script` starts becomes runbook, so a Ctrl-C
    // reaches runbook alone (dash, CI's /bin/sh, would otherwise wait for
    // it, take the SIGINT itself and report 130 whatever runbook did).
    let exec = format!(
        "exec {} exec {} --env production --yes --state-dir {state}",
        env!("CARGO_BIN_EXE_runbook"),
        operator.file.path.display()
    );
    std::process::Command::new("script")
        .args(["-qec", &exec, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
        .env("RUNBOOK_INDEX_DIR", operator.file.dir.path().join("index"))
        .env("RUNBOOK_OPERATOR", "alice")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs")
}

/// `exec --env production` on a real terminal (a pseudo-terminal from
/// `script`), where the operator first types something that is not a
/// choice, then `answer`: how it exited, what it said, and its run.
fn on_a_terminal(operator: &Operator, answer: &str) -> (Option<i32>, String, String) {
    let mut child = on_a_pseudo_terminal(operator);
    let mut stdin = child.stdin.take().unwrap();
    let typed = format!("maybe\n{answer}\n");
    // Typed ahead, as a person may: the terminal keeps it until the
    // prompt reads it. The terminal stays open until the run ends.
    std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(typed.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    let output = child.wait_with_output().unwrap();
    let said = text(&output);
    assert!(said.contains("What now?"), "{said}");
    assert!(said.contains("`maybe` is not a choice"), "{said}");
    let run = only_run(&operator.state);
    let chosen = operator.journal(&run, "decided");
    assert_eq!(chosen.len(), 1, "{said}");
    assert_eq!(chosen[0]["how"], "terminal");
    assert_eq!(chosen[0]["by"], "alice");
    assert!(operator.journal(&run, "decision_needed").is_empty());
    (output.status.code(), said, run)
}

#[test]
fn on_a_terminal_exec_asks_at_once_and_carries_out_each_answer() {
    let counter = tokio_counter();
    let retried = Operator::new(runbook("t-retry", &counter, "with.transient_failures = 1"));
    let (code, said, _) = on_a_terminal(&retried, "r");
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        effects(&counter, "t-retry"),
        counts("t-retry", [(1, 0), (2, 0), (1, 0), (1, 0)])
    );

    let skipped = Operator::new(runbook("t-skip", &counter, "with.fail = true"));
    let (code, said, _) = on_a_terminal(&skipped, "s");
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        effects(&counter, "t-skip"),
        counts("t-skip", [(1, 0), (1, 0), (1, 0), (1, 0)])
    );

    let rolled = Operator::new(runbook("t-back", &counter, "with.fail = true"));
    let (code, said, run) = on_a_terminal(&rolled, "b");
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(
        effects(&counter, "t-back"),
        counts("t-back", [(1, 1), (1, 0), (0, 0), (1, 0)])
    );
    assert_eq!(rolled.journal(&run, "rollback_started").len(), 1);

    let aborted = Operator::new(runbook("t-abort", &counter, "with.fail = true"));
    let (code, said, _) = on_a_terminal(&aborted, "a");
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(
        effects(&counter, "t-abort"),
        counts("t-abort", [(1, 0), (1, 0), (0, 0), (1, 0)])
    );
}

#[test]
fn the_question_waits_for_the_steps_running_beside_the_failed_one() {
    let counter = tokio_counter();
    let step = |id: &str, needs: &str, extra: &str| {
        format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nneeds = [{needs}]\nwith.url = \"{url}\"\nwith.name = \"side-{id}\"\ngrants.http = [\"{url}\"]\n{extra}\n",
            url = counter.url
        )
    };
    let mut body = "[runbook]\nname = \"side\"\non_failure = \"rollback\"\n\n[environments.production]\non_failure = \"ask\"\n".to_owned();
    body.push_str(&step("one", "", "with.fail = true"));
    body.push_str(&step("slow", "", "with.delay = \"1500ms\""));
    body.push_str(&step("three", "\"one\", \"slow\"", ""));
    body.push_str(&step("tell", "", "always = true"));
    let operator = Operator::new(TestRunbook::new(&body));
    let (code, said, _) = on_a_terminal(&operator, "s");
    assert_eq!(code, Some(0), "{said}");
    // `slow` was not held up by the question: it finished first.
    let slow_done = said.find("recorded `side-slow`").expect(&said);
    let asked = said.find("What now?").unwrap();
    assert!(slow_done < asked, "{said}");
    assert_eq!(
        effects(&counter, "side"),
        counts("side", [(1, 0), (0, 0), (1, 0), (1, 0)])
    );
    assert_eq!(counter.tally().done.get("side-slow"), Some(&1));
}

/// Carries out `choice` for `run` as an operator would after a crash:
/// `decide` again while the journal holds no choice (the crash came first),
/// else only `resume`, which must carry out the journaled choice without
/// asking again; an interrupted step (or undo) is decided from the counter
/// as a person checks by hand.
fn finish(
    operator: &Operator,
    run: &str,
    choice: &str,
    name: &str,
    counter: &Counter,
    trial: &str,
) {
    let mut decisions: Vec<String> = Vec::new();
    for _ in 0..8 {
        if operator.journal(run, "decided").is_empty() {
            let decided = operator.run("bob", &["decide", run, choice]);
            let said = text(&decided);
            if matches!(decided.status.code(), Some(0 | 1)) {
                return;
            }
            assert!(
                said.contains("is not waiting for a decision") && said.contains("not finished"),
                "{trial}: {said}"
            );
        }
        let chosen = !operator.journal(run, "decided").is_empty();
        let mut args = vec!["resume", run];
        args.extend(decisions.iter().map(String::as_str));
        let resumed = operator.run("bob", &args);
        let said = text(&resumed);
        // Over already: the crash came after the run's end.
        if said.contains("already succeeded") || said.contains("was rolled back") {
            return;
        }
        match resumed.status.code() {
            Some(0 | 1) => return,
            Some(4) => {
                assert!(
                    !chosen,
                    "{trial}: the journaled choice was asked again: {said}"
                );
                continue;
            }
            _ => {}
        }
        decisions.extend(check_by_hand(&said, counter, name, trial));
    }
    panic!("{trial}: the run did not finish");
}

#[test]
fn a_crash_at_every_failpoint_of_a_decision_then_resume_carries_it_out_once() {
    let counter = tokio_counter();
    let bin = Bin::new();
    for (choice, expected) in [
        ("skip", [(1, 0), (1, 0), (1, 0), (1, 0)]),
        ("rollback", [(1, 1), (1, 0), (0, 0), (1, 0)]),
    ] {
        let traced = Operator::with(
            &bin,
            runbook(&format!("trace-{choice}"), &counter, "with.fail = true"),
        );
        let run = traced.exec_until_asked();
        let trace = traced.file.dir.path().join("trace");
        let output = traced.run_with(
            "bob",
            &["decide", &run, choice],
            &[("RUNBOOK_FAILPOINT_TRACE", trace.to_str().unwrap())],
        );
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{}",
            text(&output)
        );
        let points = trace_points(&trace);
        assert!(points.len() > 5, "{points:?}");
        let mut trials = 0;
        for (point, passes) in points {
            for pass in 1..=passes {
                trials += 1;
                let name = format!("{choice}{trials}");
                let trial = format!("{choice}: crash at {point} pass {pass}");
                let operator = Operator::with(&bin, runbook(&name, &counter, "with.fail = true"));
                let run = operator.exec_until_asked();
                let rule = format!("{point}=crash@{pass}");
                let crashed = operator.run_with(
                    "bob",
                    &["decide", &run, choice],
                    &[("RUNBOOK_FAILPOINTS", rule.as_str())],
                );
                assert_eq!(
                    crashed.status.code(),
                    Some(137),
                    "{trial}: {}",
                    text(&crashed)
                );
                finish(&operator, &run, choice, &name, &counter, &trial);
                assert_eq!(effects(&counter, &name), counts(&name, expected), "{trial}");
                let chosen = operator.journal(&run, "decided");
                assert!(!chosen.is_empty(), "{trial}");
                assert!(
                    chosen.iter().all(|event| event["choice"] == choice),
                    "{trial}"
                );
                exits(&operator.run("carol", &["audit", "verify", &run]), 0);
            }
        }
    }
}

/// The counter service, on a runtime of its own (these tests drive the
/// binary synchronously).
fn tokio_counter() -> Counter {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    runtime.block_on(Counter::start()).unwrap()
}

/// `exec --env production` of `operator`'s runbook on a real terminal,
/// where the operator presses Ctrl-C once `prompt` is shown: how it
/// exited and what the terminal showed. Fails if it does not end at once.
fn interrupted_at(operator: &Operator, prompt: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let mut child = on_a_pseudo_terminal(operator);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Read what the terminal shows until the prompt is there, then press
    // Ctrl-C (the terminal turns it into SIGINT).
    let (shown, seen) = std::sync::mpsc::channel();
    let prompt_text = prompt.to_owned();
    let reader = std::thread::spawn(move || {
        let mut said = Vec::new();
        let mut buffer = [0_u8; 4096];
        let mut told = false;
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            said.extend_from_slice(&buffer[..read]);
            if !told && String::from_utf8_lossy(&said).contains(&prompt_text) {
                told = true;
                let _ = shown.send(());
            }
        }
        String::from_utf8_lossy(&said).into_owned()
    });
    seen.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the prompt is shown");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stdin.write_all(b"\x03").unwrap();
    // The run ends at once, without an answer, the terminal still open.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "Ctrl-C at `{prompt}` did not end the run"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(stdin);
    (status.code(), reader.join().unwrap())
}

#[test]
fn ctrl_c_at_the_question_leaves_the_choice_for_runbook_decide() {
    let counter = tokio_counter();
    let operator = Operator::new(runbook("t-int", &counter, "with.transient_failures = 1"));
    let (code, said) = interrupted_at(&operator, "What now?");
    assert_eq!(code, Some(4), "{said}");
    let run = only_run(&operator.state);
    assert_eq!(operator.journal(&run, "decision_needed").len(), 1, "{said}");
    assert!(operator.journal(&run, "decided").is_empty());

    // The choice is made later, as for a run without a terminal.
    exits(&operator.run("bob", &["decide", &run, "retry"]), 0);
    assert_eq!(
        effects(&counter, "t-int"),
        counts("t-int", [(1, 0), (2, 0), (1, 0), (1, 0)])
    );
}

#[test]
fn ctrl_c_at_a_checklist_stops_the_run_at_once() {
    let operator = Operator::new(TestRunbook::new(
        "[runbook]\nname = \"check\"\n\n[environments.production]\n\n[[steps]]\nid = \"verify\"\nkind = \"manual\"\nchecklist = [\"backup verified\"]\n\n[[steps]]\nid = \"after\"\nuses = \"noop\"\n",
    ));
    let (code, said) = interrupted_at(&operator, "done? [y/n]");
    assert_eq!(code, Some(130), "{said}");
    let run = only_run(&operator.state);
    let finished = operator.journal(&run, "step_finished");
    assert_eq!(finished[0]["step"], "verify");
    assert_eq!(finished[0]["status"], "cancelled");
    assert!(operator.journal(&run, "confirmed").is_empty());
}
