//! The engine: the DAG and parallel steps, conditions, retries, failure
//! policies, rollback order, `always` steps and `for_each`, observed through
//! a counter service that records every side effect.

use crate::support::{Finished, RunOptions, run};
use runbook::events::{EventKind, Status};
use runbook_testenv::Counter;
use tokio_util::sync::CancellationToken;

fn header(policy: &str) -> String {
    format!("[runbook]\nname = \"engine\"\non_failure = \"{policy}\"\n")
}

fn recorder(id: &str, counter: &Counter, extra: &str) -> String {
    format!(
        "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{id}\"\ngrants.http = [\"{url}\"]\n{extra}\n",
        url = counter.url
    )
}

/// Positions of each step's start and finish in the event stream.
fn position(finished: &Finished, step: &str, started: bool) -> usize {
    finished
        .events
        .iter()
        .position(|(event, _)| {
            event.step.as_ref().is_some_and(|id| id.0 == step)
                && match &event.kind {
                    EventKind::StepStarted { .. } => started,
                    EventKind::StepFinished { .. } => !started,
                    _ => false,
                }
        })
        .unwrap_or_else(|| panic!("no event for {step}"))
}

#[tokio::test]
async fn independent_steps_run_side_by_side_and_a_join_waits_for_both() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}",
        header("abort"),
        recorder("left", &counter, "needs = []\nwith.delay = \"300ms\""),
        recorder("right", &counter, "needs = []\nwith.delay = \"300ms\""),
        recorder("join", &counter, "needs = [\"left\", \"right\"]"),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.report.status, Status::Succeeded);
    // Both started before either finished: they overlapped.
    assert!(position(&finished, "right", true) < position(&finished, "left", false));
    assert!(position(&finished, "left", true) < position(&finished, "right", false));
    // The join started after both finished.
    assert!(position(&finished, "join", true) > position(&finished, "left", false));
    assert!(position(&finished, "join", true) > position(&finished, "right", false));
}

#[tokio::test]
async fn parallel_one_runs_independent_steps_one_after_the_other() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}",
        header("abort"),
        recorder("left", &counter, "needs = []\nwith.delay = \"100ms\""),
        recorder("right", &counter, "needs = []\nwith.delay = \"100ms\""),
    );
    let finished = run(
        &body,
        RunOptions {
            parallel: Some(1),
            ..RunOptions::default()
        },
    )
    .await;
    assert!(position(&finished, "left", false) < position(&finished, "right", true));
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_it_passes() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}",
        header("abort"),
        recorder(
            "flaky",
            &counter,
            "with.transient_failures = 2\nretries = { attempts = 5, backoff = \"10ms\", max = \"50ms\" }"
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("flaky");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(summary.contains("after 3 attempts"), "{summary}");
    let retries = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(event.kind, EventKind::StepRetry { .. }))
        .count();
    assert_eq!(retries, 2);
    assert_eq!(counter.tally().done["flaky"], 3);
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt_and_do_not_apply_to_plain_failures() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}",
        header("continue"),
        recorder(
            "flaky",
            &counter,
            "needs = []\nwith.transient_failures = 9\nretries = { attempts = 3, backoff = \"10ms\" }"
        ),
        recorder(
            "broken",
            &counter,
            "needs = []\nwith.fail = true\nretries = { attempts = 3, backoff = \"10ms\" }"
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.step("flaky").0, Status::Failed);
    assert_eq!(counter.tally().done["flaky"], 3);
    assert_eq!(finished.step("broken").0, Status::Failed);
    assert_eq!(
        counter.tally().done["broken"],
        1,
        "a plain failure was retried"
    );
}

#[tokio::test]
async fn rollback_undoes_completed_steps_newest_first() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}{}",
        header("rollback"),
        recorder("first", &counter, ""),
        recorder("second", &counter, ""),
        recorder("third", &counter, "with.fail = true"),
        recorder("fourth", &counter, ""),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.report.status, Status::Failed);
    assert_eq!(finished.report.failed_step.as_deref(), Some("third"));
    assert_eq!(
        counter.tally().sequence,
        [
            "do:first",
            "do:second",
            "do:third",
            "undo:second",
            "undo:first"
        ]
    );
    let (status, summary, _) = finished.step("fourth");
    assert_eq!(status, Status::Skipped);
    assert!(
        summary.contains("the run stopped after `third`"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_failed_rollback_is_reported_and_the_other_rollbacks_still_run() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}",
        header("rollback"),
        recorder("first", &counter, ""),
        recorder("second", &counter, "with.fail_rollback = true"),
        recorder("third", &counter, "with.fail = true"),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.report.rollback_failures, ["second"]);
    assert_eq!(
        counter.tally().sequence,
        ["do:first", "do:second", "do:third", "undo:first"]
    );
    assert!(
        finished
            .log()
            .contains("undoing `second` failed on purpose")
    );
}

#[tokio::test]
async fn abort_stops_without_undoing_and_a_step_can_override_the_policy() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}",
        header("rollback"),
        recorder("first", &counter, ""),
        recorder(
            "second",
            &counter,
            "with.fail = true\non_failure = \"abort\""
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.report.status, Status::Failed);
    assert_eq!(counter.tally().sequence, ["do:first", "do:second"]);
}

#[tokio::test]
async fn continue_runs_what_does_not_depend_on_the_failure_and_conditions_see_outcomes() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}{}",
        header("continue"),
        recorder("migrate", &counter, "needs = []\nwith.fail = true"),
        recorder("independent", &counter, "needs = []"),
        recorder("dependent", &counter, "needs = [\"migrate\"]"),
        recorder(
            "restore",
            &counter,
            "needs = [\"migrate\"]\nif = \"${{ steps.migrate.outcome == 'failed' }}\""
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.report.status, Status::Failed);
    assert_eq!(finished.step("independent").0, Status::Succeeded);
    let (status, summary, _) = finished.step("dependent");
    assert_eq!(status, Status::Skipped);
    assert!(summary.contains("`migrate` did not succeed"), "{summary}");
    assert_eq!(finished.step("restore").0, Status::Succeeded);
}

#[tokio::test]
async fn a_false_condition_skips_the_step() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}\n[params.canary]\ndefault = \"false\"\n{}",
        header("abort"),
        recorder("canary", &counter, "if = \"params.canary == 'true'\""),
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("canary");
    assert_eq!(status, Status::Skipped);
    assert!(summary.contains("`if` is false"), "{summary}");
    assert!(counter.tally().done.is_empty());
}

#[tokio::test]
async fn always_steps_run_after_the_rollback() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}",
        header("rollback"),
        recorder("deploy", &counter, ""),
        recorder("verify", &counter, "with.fail = true"),
        recorder("notify", &counter, "always = true"),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.step("notify").0, Status::Succeeded);
    assert_eq!(
        counter.tally().sequence,
        ["do:deploy", "do:verify", "undo:deploy", "do:notify"]
    );
}

/// An `always` step's `if` is read at the end, with how the run went: a
/// step for failures only (a restoration check, an incident record) stays
/// out of a run that succeeded.
#[tokio::test]
async fn an_always_step_runs_only_when_its_if_holds_at_the_end() {
    for (fail, ran) in [(false, false), (true, true)] {
        let counter = Counter::start().await.unwrap();
        let body = format!(
            "{}{}{}{}",
            header("rollback"),
            recorder(
                "deploy",
                &counter,
                if fail { "with.fail = true" } else { "" }
            ),
            recorder(
                "after-failure",
                &counter,
                "always = true\nif = \"run.status == 'failed'\""
            ),
            recorder("notify", &counter, "always = true"),
        );
        let finished = run(&body, RunOptions::default()).await;
        assert_eq!(
            counter
                .tally()
                .sequence
                .contains(&"do:after-failure".to_owned()),
            ran,
            "fail={fail}: {}",
            finished.log()
        );
        let expected = if ran {
            Status::Succeeded
        } else {
            Status::Skipped
        };
        assert_eq!(finished.step("after-failure").0, expected);
        assert_eq!(finished.step("notify").0, Status::Succeeded);
    }
}

#[tokio::test]
async fn an_always_step_runs_even_when_the_step_before_it_was_skipped() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}{}",
        header("rollback"),
        recorder("deploy", &counter, ""),
        recorder("checklist", &counter, "if = \"false\""),
        recorder("notify", &counter, "always = true"),
    );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.step("checklist").0, Status::Skipped);
    assert_eq!(finished.step("notify").0, Status::Succeeded);
    assert_eq!(counter.tally().sequence, ["do:deploy", "do:notify"]);
}

#[tokio::test]
async fn for_each_runs_the_step_once_per_element() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}\n[environments.prod.vars]\nservices = [\"api\", \"worker\", \"scheduler\"]\n\n[[steps]]\nid = \"rollout\"\nuses = \"recorder\"\nfor_each = \"${{{{ vars.services }}}}\"\nwith.url = \"{url}\"\nwith.name = \"rollout-${{{{ item }}}}\"\ngrants.http = [\"{url}\"]\n{}",
        header("rollback"),
        recorder(
            "after",
            &counter,
            "if = \"steps.rollout.outcome == 'succeeded'\""
        ),
        url = counter.url
    );
    let finished = run(
        &body,
        RunOptions {
            environment: Some("prod".into()),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    for service in ["api", "worker", "scheduler"] {
        assert_eq!(
            finished.step(&format!("rollout[{service}]")).0,
            Status::Succeeded
        );
        assert_eq!(counter.tally().done[&format!("rollout-{service}")], 1);
    }
    assert_eq!(finished.step("after").0, Status::Succeeded);
}

#[tokio::test]
async fn an_interrupt_cancels_the_running_step_then_rolls_back() {
    let counter = Counter::start().await.unwrap();
    let body = format!(
        "{}{}{}",
        header("rollback"),
        recorder("deploy", &counter, ""),
        recorder("hold", &counter, "with.delay = \"1h\""),
    );
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let interrupt = async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        trigger.cancel();
    };
    let (finished, ()) = tokio::join!(
        run(
            &body,
            RunOptions {
                cancel: Some(cancel),
                ..RunOptions::default()
            }
        ),
        interrupt
    );
    assert_eq!(finished.report.status, Status::Cancelled);
    assert_eq!(finished.step("hold").0, Status::Cancelled);
    // The interrupted step is undone too, newest first: what it may have
    // half-done is not left behind.
    assert_eq!(
        counter.tally().sequence,
        ["do:deploy", "undo:hold", "undo:deploy"]
    );
}

/// A manual step's checklist is ticked through the interface the CLI
/// supplies for its terminal: every item ticked confirms the step, one
/// left unticked fails it. The engine itself reads no terminal.
#[tokio::test]
async fn a_manual_checklist_is_ticked_through_the_ask_interface() {
    struct Ticks(Option<&'static str>);
    impl runbook::engine::Ask for Ticks {
        fn tick(&self, _step: &str, items: &[String]) -> Result<Vec<String>, String> {
            match self.0 {
                Some(refused) => Err(refused.to_owned()),
                None => Ok(items.to_vec()),
            }
        }
    }
    let body = "[runbook]\nname = \"manual\"\n\n[[steps]]\nid = \"check\"\nkind = \"manual\"\nchecklist = [\"backup verified\", \"on call told\"]\n";
    for (answer, expected) in [
        (None, Status::Succeeded),
        (Some("on call told"), Status::Failed),
    ] {
        let finished = run(
            body,
            RunOptions {
                ask: Some(std::sync::Arc::new(Ticks(answer))),
                ..RunOptions::default()
            },
        )
        .await;
        let (status, summary, _) = finished.step("check");
        assert_eq!(status, expected, "{summary}");
        match answer {
            None => assert_eq!(summary, "confirmed by tester"),
            Some(item) => assert!(summary.contains(item), "{summary}"),
        }
    }
}
