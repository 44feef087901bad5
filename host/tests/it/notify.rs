//! The `notify` plugin: an `always` step posts how the run ended to a
//! Slack-compatible webhook whose URL is a sealed secret; and `[notify]`,
//! whose targets hear of the run's moments as they happen (start, each
//! stage, a failure, the rollback, the end), each in its own sandbox, and
//! never fail the run.

use crate::support::{Finished, RunOptions, TestRunbook, roll_back, run, run_file, runtime};
use runbook::events::{EventKind, Level, Status};
use runbook_testenv::SampleService;
use serde_json::Value;
use std::path::Path;

#[tokio::test]
async fn an_always_step_reports_the_failed_run_to_a_webhook_whose_url_is_a_secret() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let webhook = format!("{base}/hooks/T000/B000/XXXXSECRET");
    let body = format!(
        "[runbook]\nname = \"riskcast\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n\n[[steps]]\nid = \"announce\"\nuses = \"notify\"\nalways = true\nwith.webhook = \"${{{{ secrets.SLACK_WEBHOOK }}}}\"\nwith.runbook = \"riskcast\"\nwith.status = \"${{{{ run.status }}}}\"\nwith.failed_step = \"${{{{ run.failed_step }}}}\"\nwith.run = \"${{{{ run.id }}}}\"\nwith.fields = {{ version = \"1.2.3\" }}\ngrants.http = [\"{base}/hooks/\"]\ngrants.secrets = [\"SLACK_WEBHOOK\"]\n"
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: [("SLACK_WEBHOOK".to_owned(), webhook.clone())].into(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("announce");
    assert_eq!(status, Status::Succeeded, "{summary}");
    let posted = service.state().webhooks;
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0]["text"],
        "riskcast: failed at step `smoke` (run test-run)"
    );
    assert_eq!(posted[0]["attachments"][0]["color"], "danger");
    assert!(
        posted[0]
            .to_string()
            .contains("\"title\":\"version\",\"value\":\"1.2.3\""),
        "{}",
        posted[0]
    );
    let log = finished.lines().join("\n");
    assert!(
        !log.contains("XXXXSECRET"),
        "the webhook URL leaked into the run log: {log}"
    );
}

#[tokio::test]
async fn a_webhook_url_outside_the_grants_is_denied_even_when_it_is_a_secret() {
    let service = SampleService::start(None).await.unwrap();
    let body = format!(
        "[runbook]\nname = \"riskcast\"\n\n[[steps]]\nid = \"announce\"\nuses = \"notify\"\nwith.webhook = \"${{{{ secrets.SLACK_WEBHOOK }}}}\"\nwith.text = \"hello\"\ngrants.http = [\"{}/hooks/\"]\ngrants.secrets = [\"SLACK_WEBHOOK\"]\n",
        service.base_url()
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: [(
                "SLACK_WEBHOOK".to_owned(),
                "http://127.0.0.9:9/elsewhere".to_owned(),
            )]
            .into(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("announce");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(service.state().webhooks.is_empty());
}

/// A `[notify]` whose one target posts to the sample service's webhook,
/// its URL the secret `SLACK_WEBHOOK`.
fn notify_block(base: &str, extra: &str) -> String {
    format!(
        "[notify]\n{extra}\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"${{{{ secrets.SLACK_WEBHOOK }}}}\"\nwith.channel = \"#deploys\"\ngrants.http = [\"{base}/hooks/\"]\ngrants.secrets = [\"SLACK_WEBHOOK\"]\n"
    )
}

/// The options of a run whose webhook is `webhook`, its state in `state`.
fn options(webhook: &str, state: &Path) -> RunOptions {
    RunOptions {
        secrets: [("SLACK_WEBHOOK".to_owned(), webhook.to_owned())].into(),
        state_dir: Some(state.to_path_buf()),
        ..RunOptions::default()
    }
}

/// The text and the `status` field of each message posted, in order.
fn posted(service: &SampleService) -> Vec<(String, String)> {
    service
        .state()
        .webhooks
        .iter()
        .map(|message| {
            let status = message["attachments"][0]["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|field| field["title"] == "status")
                .map(|field| field["value"].as_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            (
                message["text"].as_str().unwrap_or_default().to_owned(),
                status,
            )
        })
        .collect()
}

/// The journal's events of the run `test-run` in `state`, as JSON.
fn journal(state: &Path) -> Vec<Value> {
    let run_dir = runbook::state::run_dir(state, "test-run");
    std::fs::read_to_string(runbook::state::journal_path(&run_dir))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The warnings the run logged.
fn warnings(finished: &Finished) -> Vec<String> {
    finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::Log {
                level: Level::Warn,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_run_announces_its_start_each_stage_and_its_end_in_order() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let state = tempfile::tempdir().unwrap();
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"shift\"\nuses = \"rounds\"\nwith.rounds = 2\nwith.every = \"10ms\"\nwith.milestones = true\n\n{}",
        notify_block(&base, "")
    );
    let webhook = format!("{base}/hooks/T000/B000/XXXXSECRET");
    let finished = run(&body, options(&webhook, state.path())).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert!(warnings(&finished).is_empty(), "{:?}", warnings(&finished));
    let posted = posted(&service);
    let shown: Vec<(&str, &str)> = posted
        .iter()
        .map(|(text, status)| (text.as_str(), status.as_str()))
        .collect();
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert_eq!(
        shown[..3],
        [
            ("deploy: started by tester (run test-run)", "started"),
            ("deploy: shift: round 1/2", "running"),
            ("deploy: shift: round 2/2", "running"),
        ]
    );
    // How long it took depends on the machine.
    assert!(shown[3].0.starts_with("deploy: succeeded in "), "{shown:?}");
    assert_eq!(shown[3].1, "succeeded");
    // The target's own parameters are kept beside the host's.
    assert_eq!(service.state().webhooks[0]["channel"], "#deploys");
    // Each announcement is journaled, and the webhook's URL is in none of
    // the run's records.
    let moments: Vec<Value> = journal(state.path())
        .into_iter()
        .filter(|event| event["event"] == "notified")
        .map(|event| event["moment"].clone())
        .collect();
    assert_eq!(moments, ["start", "stage", "stage", "end"]);
    let log = finished.log();
    assert!(!log.contains("XXXXSECRET"), "the webhook URL leaked: {log}");
}

#[tokio::test]
async fn a_failed_run_announces_the_failure_the_rollback_and_its_end() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let state = tempfile::tempdir().unwrap();
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[[steps]]\nid = \"migrate\"\nuses = \"misbehave\"\nwith.mode = \"trap\"\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{}",
        notify_block(&base, "on = [\"failure\", \"rollback\", \"end\"]")
    );
    let finished = run(&body, options(&format!("{base}/hooks/x"), state.path())).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    let posted = posted(&service);
    let texts: Vec<&str> = posted.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[0].starts_with("deploy: migrate failed: "),
        "{texts:?}"
    );
    assert_eq!(texts[1], "deploy: rolling back 1 step: push");
    assert!(
        texts[2].starts_with("deploy: failed at step migrate after "),
        "{texts:?}"
    );
    let statuses: Vec<&str> = posted.iter().map(|(_, status)| status.as_str()).collect();
    assert_eq!(statuses, ["failed", "rolling_back", "failed"]);
    // `failed_step` goes with each of them.
    for message in service.state().webhooks {
        assert!(
            message
                .to_string()
                .contains("\"title\":\"failed step\",\"value\":\"migrate\""),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_target_that_fails_or_is_denied_is_a_warning_and_the_run_goes_on() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let state = tempfile::tempdir().unwrap();
    // Target 0's webhook answers 404; target 1's is outside its grants.
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[notify]\non = [\"end\"]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"{base}/nowhere/x\"\ngrants.http = [\"{base}/\"]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"${{{{ secrets.SLACK_WEBHOOK }}}}\"\ngrants.http = [\"{base}/hooks/\"]\ngrants.secrets = [\"SLACK_WEBHOOK\"]\n"
    );
    let elsewhere = "http://127.0.0.9:9/elsewhere";
    let finished = run(&body, options(elsewhere, state.path())).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_eq!(finished.step("push").0, Status::Succeeded);
    assert!(service.state().webhooks.is_empty());
    let warnings = warnings(&finished);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("notify target 0 (notify): the webhook refused the message (404)"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("notify target 1 (notify): "),
        "{warnings:?}"
    );
    // The denial's hint speaks of the target, not of a step.
    assert!(
        warnings[1].contains("not granted to `[notify]` target 1")
            && warnings[1].contains("to the target"),
        "{warnings:?}"
    );
    // Both are in the journal, under the targets' ids, and the run's end
    // says no target took the announcement.
    let journal = journal(state.path());
    let logged: Vec<&str> = journal
        .iter()
        .filter(|event| event["event"] == "log" && event["level"] == "warn")
        .filter_map(|event| event["step"].as_str())
        .collect();
    assert_eq!(logged, ["notify.0", "notify.1"]);
    let notified = journal
        .iter()
        .find(|event| event["event"] == "notified")
        .unwrap();
    assert_eq!(
        (notified["targets"].as_u64(), notified["ok"].as_u64()),
        (Some(2), Some(0))
    );
    let finished_at = journal
        .iter()
        .position(|event| event["event"] == "run_finished")
        .unwrap();
    assert_eq!(journal[finished_at]["status"], "succeeded");
    // The denial is a capability call of target 1, denied.
    assert!(
        journal
            .iter()
            .any(|event| event["event"] == "capability_call"
                && event["step"] == "notify.1"
                && event["decision"] == "denied")
    );
}

#[tokio::test]
async fn the_audit_log_has_each_call_of_a_target_under_its_id() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let state = tempfile::tempdir().unwrap();
    let body = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n{}",
        notify_block(&base, "on = [\"end\"]")
    );
    let finished = run(&body, options(&format!("{base}/hooks/x"), state.path())).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    let run_dir = runbook::state::run_dir(state.path(), "test-run");
    let records = runbook::audit::read(&runbook::audit::path(&run_dir));
    let of_target = |capability: &str| -> Vec<&runbook::audit::AuditRecord> {
        records
            .iter()
            .filter(|record| {
                record.step.as_deref() == Some("notify.0") && record.capability == capability
            })
            .collect()
    };
    // The webhook's secret was used for the post, and the post was sent.
    assert!(!of_target("secrets").is_empty(), "{records:#?}");
    let posts = of_target("http");
    assert_eq!(posts.len(), 1, "{records:#?}");
    assert_eq!(posts[0].decision, runbook::events::Decision::Allowed);
    assert!(posts[0].request.starts_with("POST "), "{:?}", posts[0]);
    // The record names the target's plugin by its digest, as a step's does.
    let notify_digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(runbook_testenv::plugin_path("notify")).unwrap(),
        ))
    };
    assert_eq!(
        posts[0].plugin_digest.as_deref(),
        Some(notify_digest.as_str())
    );
    // The chain still holds with the target's records in it.
    let record = runbook::journal::read(&runbook::state::journal_path(&run_dir)).unwrap();
    let verified =
        runbook::audit::verify(&runbook::audit::path(&run_dir), "test-run", &record.audit);
    assert!(verified.is_ok(), "the audit log's chain is broken");
}

#[tokio::test]
async fn a_later_process_of_the_run_does_not_announce_its_start_again() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let state = tempfile::tempdir().unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n{}",
        notify_block(&base, "")
    ));
    let webhook = format!("{base}/hooks/x");
    let finished = run_file(&runtime(), &file.path, options(&webhook, state.path())).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    let undone = roll_back(&runtime(), "test-run", options(&webhook, state.path())).await;
    assert_eq!(undone.report.status, Status::RolledBack, "{}", undone.log());
    let texts: Vec<String> = posted(&service).into_iter().map(|(text, _)| text).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[0], "deploy: started by tester (run test-run)");
    assert!(texts[1].starts_with("deploy: succeeded in "), "{texts:?}");
    // The rollback is a later process of the run: no second start.
    assert_eq!(texts[2], "deploy: rolling back 1 step: push");
    assert!(texts[3].starts_with("deploy: rolled back in "), "{texts:?}");
}

#[tokio::test]
async fn a_pagerduty_target_pages_on_failure_and_resolves_at_a_good_end() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let target = format!(
        "[notify]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"{base}/v2/enqueue\"\nwith.format = \"pagerduty\"\nwith.routing_key = \"${{{{ secrets.PD_KEY }}}}\"\ngrants.http = [\"{base}/v2/enqueue\"]\ngrants.secrets = [\"PD_KEY\"]\n"
    );
    let options = |state: &Path| RunOptions {
        secrets: [("PD_KEY".to_owned(), "pd-routing-key-123".to_owned())].into(),
        state_dir: Some(state.to_path_buf()),
        ..RunOptions::default()
    };
    // A failed run: paged at the failure, the rollback and the end, one
    // incident (one dedup key); the start pages no one.
    let state = tempfile::tempdir().unwrap();
    let failing = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[[steps]]\nid = \"migrate\"\nuses = \"misbehave\"\nwith.mode = \"trap\"\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{target}"
    );
    let finished = run(&failing, options(state.path())).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    let events = service.state().pages;
    let actions: Vec<&str> = events
        .iter()
        .map(|event| event["event_action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "trigger"], "{events:?}");
    let severities: Vec<&str> = events
        .iter()
        .map(|event| event["payload"]["severity"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(severities, ["critical", "error", "critical"]);
    assert!(
        events
            .iter()
            .all(|event| event["dedup_key"] == "runbook/deploy/-/test-run")
    );
    assert!(
        events
            .iter()
            .all(|event| event["routing_key"] == "pd-routing-key-123")
    );
    assert_eq!(
        events[0]["payload"]["custom_details"]["failed_step"],
        "migrate"
    );
    assert!(
        !finished.log().contains("pd-routing-key-123"),
        "the routing key leaked into the run log"
    );

    // A run that succeeds resolves its incident, and only that.
    let state = tempfile::tempdir().unwrap();
    let good = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n{target}"
    );
    let finished = run(&good, options(state.path())).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    let events = service.state().pages;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3]["event_action"], "resolve");
    assert_eq!(events[3]["dedup_key"], "runbook/deploy/-/test-run");
    assert!(events[3].get("payload").is_none());
}

#[test]
fn a_pagerduty_target_without_its_routing_key_is_refused_by_validate() {
    let file = crate::support::TestRunbook::new(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[notify]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"https://events.pagerduty.com/v2/enqueue\"\nwith.format = \"pagerduty\"\ngrants.http = [\"https://events.pagerduty.com/v2/\"]\n",
    );
    let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("routing_key"), "{said}");
}
