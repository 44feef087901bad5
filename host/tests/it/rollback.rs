//! `runbook rollback RUN` as an operator uses it: the real binary, against
//! the counter service, which counts every effect (`/do/NAME`) and every
//! undo (`/undo/NAME`). A run that succeeded is undone newest first and
//! shows `rolled_back`; refused on top of a later success (until
//! `--force`), past the `rollback_window` (until `--emergency`), and
//! without its own approvals; its dry run changes nothing; and killed at
//! every failpoint of the rollback, `resume` finishes it with each step
//! undone exactly once.

use crate::faults::{
    Bin, blocking, counted_runbook, counts, effects, exits, only_run, text, trace_points,
};
use crate::support::TestRunbook;
use runbook::state::{LockState, RunLock};
use runbook_testenv::Counter;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

/// Three counted steps with an idempotent one among them, and an
/// `always` step (the runbook of the fault sweeps); `environment` is
/// added as it is (a rollback window, approvals).
fn runbook(name: &str, counter: &Counter, environment: &str) -> TestRunbook {
    counted_runbook(name, counter, false, environment)
}

/// A runbook's state folder and the binary that runs it.
struct Operator {
    bin: Arc<Bin>,
    file: TestRunbook,
    state: PathBuf,
}

impl Operator {
    fn new(bin: &Arc<Bin>, file: TestRunbook) -> Self {
        let state = file.dir.path().join(".runbook");
        Operator {
            bin: Arc::clone(bin),
            file,
            state,
        }
    }

    /// Runs `runbook ARGS` (with `--state-dir` for a verb on a run) as
    /// `operator`, off the test's runtime.
    async fn run(&self, operator: &str, args: &[&str], failpoints: Option<&str>) -> Output {
        let bin = Arc::clone(&self.bin);
        let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        if args[0] != "exec" {
            args.extend(["--state-dir".to_owned(), self.state.display().to_string()]);
        }
        let mut env = vec![("RUNBOOK_OPERATOR".to_owned(), operator.to_owned())];
        if let Some(rule) = failpoints {
            env.push(("RUNBOOK_FAILPOINTS".to_owned(), rule.to_owned()));
        }
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            bin.run(&args, &env)
        })
        .await
    }

    /// `runbook exec` of the runbook, with `extra` arguments; its run id.
    async fn exec(&self, extra: &[&str]) -> String {
        let before = runs(&self.state);
        let path = self.file.path.to_str().unwrap().to_owned();
        let mut args = vec!["exec", path.as_str()];
        args.extend(extra);
        let output = self.run("alice", &args, None).await;
        exits(&output, 0);
        let mut new: Vec<String> = runs(&self.state)
            .into_iter()
            .filter(|run| !before.contains(run))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        new.remove(0)
    }

    fn record(&self, run: &str) -> serde_json::Value {
        let path = self.state.join("deployments").join(format!("{run}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn journal(&self, run: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("runs").join(run).join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The steps the journal shows undone, in the order they were.
    fn undone_in_order(&self, run: &str) -> Vec<String> {
        self.journal(run)
            .iter()
            .filter(|event| event["event"] == "step_rolled_back")
            .map(|event| event["step"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The ids of the runs in a state folder.
fn runs(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("runs"))
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_run_is_rolled_back_newest_first_and_shows_rolled_back() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let operator = Operator::new(&bin, runbook("undo", &counter, ""));
    let run = operator.exec(&[]).await;
    assert_eq!(
        effects(&counter, "undo"),
        counts("undo", [(1, 0), (1, 0), (1, 0), (1, 0)])
    );

    let rolled = operator.run("carol", &["rollback", &run], None).await;
    exits(&rolled, 0);
    // Each completed step undone once; the `always` step announces the
    // rollback's end, so it ran a second time.
    assert_eq!(
        effects(&counter, "undo"),
        counts("undo", [(1, 1), (1, 1), (1, 1), (2, 0)])
    );
    assert_eq!(
        operator.undone_in_order(&run),
        ["three", "two", "warm", "one"]
    );
    let record = operator.record(&run);
    assert_eq!(record["status"], "rolled_back");
    assert_eq!(record["rollback"]["operator"], "carol");
    assert_eq!(
        record["rollback"]["steps"],
        serde_json::json!(["three", "two", "warm", "one"])
    );
    assert_eq!(record["operator"], "alice", "the run's operator stays");

    let runs = operator.run("carol", &["runs"], None).await;
    exits(&runs, 0);
    let row = text(&runs);
    assert!(row.contains(&run) && row.contains("rolled_back"), "{row}");
    let show = operator.run("carol", &["show", &run], None).await;
    exits(&show, 0);
    assert!(
        text(&show).contains("rollback asked by carol"),
        "{}",
        text(&show)
    );
    exits(
        &operator
            .run("carol", &["audit", "verify", &run], None)
            .await,
        0,
    );

    let again = operator.run("carol", &["rollback", &run], None).await;
    exits(&again, 2);
    assert!(
        text(&again).contains("already rolled back"),
        "{}",
        text(&again)
    );
    let resumed = operator.run("carol", &["resume", &run], None).await;
    exits(&resumed, 2);
    assert!(
        text(&resumed).contains("was rolled back"),
        "{}",
        text(&resumed)
    );
    let unknown = operator
        .run("carol", &["rollback", "no-such-run"], None)
        .await;
    exits(&unknown, 2);
    assert!(
        text(&unknown).contains("no run `no-such-run` found"),
        "{}",
        text(&unknown)
    );
    assert_eq!(
        effects(&counter, "undo"),
        counts("undo", [(1, 1), (1, 1), (1, 1), (2, 0)]),
        "refusals undo nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_on_top_of_a_later_success_is_refused_until_forced() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let operator = Operator::new(&bin, runbook("later", &counter, ""));
    let first = operator.exec(&[]).await;
    let second = operator.exec(&[]).await;
    assert_ne!(first, second);

    let refused = operator.run("alice", &["rollback", &first], None).await;
    exits(&refused, 2);
    let said = text(&refused);
    assert!(said.contains(&format!("run {second} by alice")), "{said}");
    assert!(
        said.contains(&format!("runbook rollback {first} --force")),
        "{said}"
    );
    assert_eq!(effects(&counter, "later")["later-one"], (2, 0));
    // The dry run says the same, and changes nothing either.
    let dry = operator
        .run("alice", &["rollback", &first, "--dry-run"], None)
        .await;
    exits(&dry, 2);
    assert!(text(&dry).contains("would be refused"), "{}", text(&dry));

    let forced = operator
        .run("alice", &["rollback", &first, "--force"], None)
        .await;
    exits(&forced, 0);
    assert_eq!(
        effects(&counter, "later"),
        counts("later", [(2, 1), (2, 1), (2, 1), (3, 0)])
    );
    let record = operator.record(&first);
    assert_eq!(record["rollback"]["forced_over"], second.as_str());
    assert!(
        operator
            .journal(&first)
            .iter()
            .any(|event| event["event"] == "rollback_requested"
                && event["forced_over"] == second.as_str()),
        "the journal records what --force went over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_past_the_window_is_refused_unless_an_emergency() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let environment = "[environments.production]\nrollback_window = \"1s\"\n";
    let operator = Operator::new(&bin, runbook("window", &counter, environment));
    let run = operator.exec(&["--env", "production"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["rollback", run.as_str()];
        args.extend(extra);
        let refused = operator.run("alice", &args, None).await;
        exits(&refused, 2);
        let said = text(&refused);
        assert!(
            said.contains("past the 1s rollback window of environment `production`"),
            "{said}"
        );
        assert!(said.contains("--emergency --reason"), "{said}");
    }
    assert_eq!(effects(&counter, "window")["window-three"], (1, 0));

    let emergency = operator
        .run(
            "alice",
            &[
                "rollback",
                &run,
                "--emergency",
                "--reason",
                "checkout broken",
            ],
            None,
        )
        .await;
    exits(&emergency, 0);
    assert_eq!(effects(&counter, "window")["window-three"], (1, 1));
    let record = operator.record(&run);
    assert_eq!(record["rollback"]["emergency"], "checkout broken");
    assert_eq!(
        record["emergency"],
        serde_json::Value::Null,
        "the deploy was no emergency"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_needs_its_own_approvals_not_the_deploys() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let environment =
        "[environments.production]\napprovals = { required = 1, from = [\"bob\", \"carol\"] }\n";
    let operator = Operator::new(&bin, runbook("approved", &counter, environment));
    let path = operator.file.path.to_str().unwrap().to_owned();
    let waiting = operator
        .run("alice", &["exec", &path, "--env", "production"], None)
        .await;
    exits(&waiting, 4);
    let run = only_run(&operator.state);
    exits(
        &operator
            .run("bob", &["approve", &run, "--as", "bob"], None)
            .await,
        0,
    );
    exits(&operator.run("alice", &["resume", &run], None).await, 0);

    let asked = operator.run("alice", &["rollback", &run], None).await;
    exits(&asked, 4);
    let said = text(&asked);
    assert!(said.contains("needs 1 approval from bob, carol"), "{said}");
    assert!(said.contains("bob (given for a different plan"), "{said}");
    assert_eq!(
        effects(&counter, "approved")["approved-one"],
        (1, 0),
        "nothing undone yet"
    );
    // Waiting for its approvals, the rollback cannot be asked twice.
    let twice = operator.run("alice", &["rollback", &run], None).await;
    exits(&twice, 2);
    assert!(text(&twice).contains("runbook resume"), "{}", text(&twice));

    exits(
        &operator
            .run("carol", &["approve", &run, "--as", "carol"], None)
            .await,
        0,
    );
    exits(&operator.run("alice", &["resume", &run], None).await, 0);
    assert_eq!(
        effects(&counter, "approved"),
        counts("approved", [(1, 1), (1, 1), (1, 1), (2, 0)])
    );
    let record = operator.record(&run);
    assert_eq!(record["status"], "rolled_back");
    assert_eq!(record["approvals"], serde_json::json!(["bob"]));
    assert_eq!(
        record["rollback"]["approvals"],
        serde_json::json!(["carol"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_dry_run_lists_what_it_would_undo_in_order_and_changes_nothing() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let operator = Operator::new(&bin, runbook("dry", &counter, ""));
    let run = operator.exec(&[]).await;
    let journal_before = operator.journal(&run).len();

    let json = operator
        .run(
            "alice",
            &["rollback", &run, "--dry-run", "--output", "json"],
            None,
        )
        .await;
    exits(&json, 0);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let order: Vec<(&str, u64)> = steps
        .iter()
        .filter_map(|step| Some((step["step"].as_str()?, step["order"].as_u64()?)))
        .collect();
    assert_eq!(order, [("three", 1), ("two", 2), ("warm", 3), ("one", 4)]);
    let three = &steps[0];
    assert!(
        three["intercepted"][0]
            .as_str()
            .unwrap()
            .contains("/undo/dry-three: not sent (dry run)"),
        "{three}"
    );
    assert_eq!(three["stopped_at_write"], true, "{three}");
    assert_eq!(three["error"], serde_json::Value::Null, "{three}");
    assert_eq!(
        steps[2]["intercepted"],
        serde_json::json!([]),
        "noop undoes nothing"
    );
    let tell = steps.iter().find(|step| step["step"] == "tell").unwrap();
    assert!(
        tell["nothing"].as_str().unwrap().contains("`always` step"),
        "{tell}"
    );
    assert_eq!(plan["refused"], serde_json::json!([]));

    let words = operator
        .run("alice", &["rollback", &run, "--dry-run"], None)
        .await;
    exits(&words, 0);
    let said = text(&words);
    assert!(said.contains("4 steps undone, newest first"), "{said}");
    assert!(said.contains("its rollback would change nothing"), "{said}");
    assert!(said.contains("Nothing to undo:"), "{said}");

    assert_eq!(
        effects(&counter, "dry"),
        counts("dry", [(1, 0), (1, 0), (1, 0), (1, 0)]),
        "a dry run undoes nothing"
    );
    assert_eq!(
        operator.journal(&run).len(),
        journal_before,
        "nor writes to the run"
    );
}

/// Every failpoint one `runbook rollback` passes, in order.
async fn failpoints_of_a_rollback(bin: &Arc<Bin>, counter: &Counter) -> Vec<(String, u64)> {
    let operator = Operator::new(bin, runbook("probe", counter, ""));
    let run = operator.exec(&[]).await;
    let trace = operator.file.dir.path().join("trace");
    let output = {
        let bin = Arc::clone(bin);
        let state = operator.state.display().to_string();
        let trace = trace.display().to_string();
        blocking(move || {
            bin.run(
                &["rollback", &run, "--state-dir", &state],
                &[("RUNBOOK_FAILPOINT_TRACE", &trace)],
            )
        })
        .await
    };
    exits(&output, 0);
    let points = trace_points(&trace);
    assert!(
        points.iter().any(|(name, _)| name == "rollback.done") && points.len() > 30,
        "the runbook binary must be built with `--features runbook/failpoints`: {points:?}"
    );
    points
}

/// Continues a rollback that a crash cut short, as an operator would: asks
/// again when the crash came before the request was recorded, else
/// resumes, deciding an undo in flight from the counter.
async fn finish_rollback(
    operator: &Operator,
    counter: &Counter,
    name: &str,
    run: &str,
    trial: &str,
) {
    let mut decisions: Vec<String> = Vec::new();
    for _ in 0..8 {
        let asked = operator
            .journal(run)
            .iter()
            .any(|event| event["event"] == "rollback_requested");
        let mut args = if asked {
            vec!["resume", run]
        } else {
            vec!["rollback", run]
        };
        args.extend(decisions.iter().map(String::as_str));
        let output = operator.run("alice", &args, None).await;
        let said = text(&output);
        if output.status.code() == Some(0) || said.contains("was rolled back") {
            return;
        }
        assert!(
            said.contains("may or may not have taken effect"),
            "{trial}: unexpected `{}`: {said}",
            args.join(" ")
        );
        let step = said.split('`').nth(1).unwrap().to_owned();
        let (done, undone) = effects(counter, name)[&format!("{name}-{step}")];
        let took_effect = if said.contains("its rollback") {
            undone == 1
        } else {
            done == 2
        };
        decisions.push(if took_effect { "--skip" } else { "--rerun" }.to_owned());
        decisions.push(step);
    }
    panic!("{trial}: the rollback did not finish after 8 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_killed_at_any_failpoint_is_finished_by_resume_undoing_each_step_once() {
    let counter = Counter::start().await.unwrap();
    let bin = Bin::new();
    let points = failpoints_of_a_rollback(&bin, &counter).await;
    for (trial, (point, hit)) in points.iter().enumerate() {
        let name = format!("crash-{trial}");
        let label = format!("crash at {point}#{hit}");
        let operator = Operator::new(&bin, runbook(&name, &counter, ""));
        let run = operator.exec(&[]).await;
        let rule = format!("{point}=crash@{hit}");
        let crashed = operator
            .run("alice", &["rollback", &run], Some(&rule))
            .await;
        assert_eq!(
            crashed.status.code(),
            Some(137),
            "{label}: {}",
            text(&crashed)
        );
        finish_rollback(&operator, &counter, &name, &run, &label).await;

        assert_eq!(
            effects(&counter, &name),
            counts(&name, [(1, 1), (1, 1), (1, 1), (2, 0)]),
            "{label}: (done, undone)"
        );
        let lock = runbook::state::lock_path(&operator.state, &name, None);
        match RunLock::state(&lock).unwrap() {
            LockState::Free(None) => {}
            LockState::Free(Some(holder)) => assert_eq!(holder.run_id, run, "{label}"),
            held => panic!("{label}: the lock is {held:?}"),
        }
        assert_eq!(operator.record(&run)["status"], "rolled_back", "{label}");
        exits(
            &operator
                .run("alice", &["audit", "verify", &run], None)
                .await,
            0,
        );
    }
}
