//! The `notify` plugin: an `always` step posts how the run ended to a
//! Slack-compatible webhook whose URL is a sealed secret; and `[notify]`,
//! whose targets hear of the run's moments as they happen (start, each
//! stage, a failure, the rollback, the end), each in its own sandbox, and
//! never fail the run. Its other forms against real local services:
//! PagerDuty and Statuspage.io incidents (the sample service), requests of
//! the runbook's own (the sample service's echo), and email through SES
//! (moto, read back from what moto keeps).

use crate::support::{
    Finished, RunOptions, TestRunbook, aws_at, plan_with_aws, roll_back, run, run_file,
    runbook_cli, runtime,
};
use runbook::events::{EventKind, Level, Status};
use runbook_testenv::{Moto, SampleService};
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

/// The warnings the run logged outside its steps: what `[notify]` said.
fn warnings(finished: &Finished) -> Vec<String> {
    finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            // A step's own warnings (a plugin's stderr) are not the
            // announcements'.
            EventKind::Log {
                level: Level::Warn,
                message,
            } if event
                .step
                .as_ref()
                .is_none_or(|step| step.is_notify_target()) =>
            {
                Some(message.clone())
            }
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

/// The parameters and grant of an email from `deploys@example.com`
/// through SES in `us-east-1`, the lines of a step or a target.
const EMAIL: &str = r#"with.format = "email"
with.from = "Deploys <deploys@example.com>"
with.region = "us-east-1"
grants.aws = { services = ["email"], actions = ["SendEmail"], regions = ["us-east-1"] }
"#;

/// moto, with `deploys@example.com` verified in `us-east-1`: SES (and
/// moto) refuse to send from an address they have not verified.
async fn moto_with_a_verified_sender() -> Moto {
    tokio::task::spawn_blocking(|| {
        let moto = Moto::start();
        let verified = moto.ses(
            "VerifyEmailIdentity",
            &[("EmailAddress", "deploys@example.com")],
        );
        assert!(
            verified.contains("<VerifyEmailIdentityResponse"),
            "{verified}"
        );
        moto
    })
    .await
    .unwrap()
}

/// The emails moto has sent, read off the test's runtime.
async fn sent_emails(moto: &Moto) -> Vec<Value> {
    let url = moto.url.clone();
    tokio::task::spawn_blocking(move || runbook_testenv::moto::sent_emails_at(&url))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_email_step_sends_through_ses_what_it_says_it_sent() {
    let moto = moto_with_a_verified_sender().await;
    let body = [
        r#"[runbook]
name = "riskcast"

[[steps]]
id = "announce"
uses = "notify"
with.to = ["oncall@example.com", "release@example.com"]
with.cc = ["audit@example.com"]
with.subject = "riskcast {status} (run ${{ run.id }})"
with.text = "riskcast 1.2.3 is out"
with.status = "succeeded"
with.run = "${{ run.id }}"
with.fields = { version = "1.2.3" }
"#,
        EMAIL,
    ]
    .concat();
    let finished = run(&body, aws_at(&moto.url)).await;
    let (status, summary, outputs) = finished.step("announce");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(
        summary,
        "emailed oncall@example.com, release@example.com (cc audit@example.com): riskcast succeeded (run test-run)"
    );
    // What moto received is what the step said, read back from moto.
    let sent = sent_emails(&moto).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let email = &sent[0];
    assert_eq!(email["id"], outputs["message_id"].as_str());
    assert_eq!(email["source"], "Deploys <deploys@example.com>");
    assert_eq!(
        email["destinations"]["ToAddresses"],
        serde_json::json!(["oncall@example.com", "release@example.com"])
    );
    assert_eq!(
        email["destinations"]["CcAddresses"],
        serde_json::json!(["audit@example.com"])
    );
    assert_eq!(email["subject"], "riskcast succeeded (run test-run)");
    assert_eq!(
        email["body"],
        "riskcast 1.2.3 is out\n\nstatus: succeeded\nrun: test-run\nversion: 1.2.3\n"
    );
    // One AWS call, within the grant, under the step's id.
    assert!(
        finished.events.iter().any(|(event, _)| matches!(
            &event.kind,
            EventKind::CapabilityCall { capability, requested, decision: runbook::events::Decision::Allowed, .. }
                if capability == "aws" && requested == "email:SendEmail in us-east-1"
        )),
        "{}",
        finished.log()
    );

    // A sender SES has not verified is refused, and the step says what to do.
    let stranger = body.replace("Deploys <deploys@example.com>", "nobody@example.org");
    let finished = run(&stranger, aws_at(&moto.url)).await;
    let (status, summary, _) = finished.step("announce");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("MessageRejected")
            && summary.contains("verify `nobody@example.org` in SES in us-east-1"),
        "{summary}"
    );
    assert_eq!(sent_emails(&moto).await.len(), 1);
}

#[tokio::test]
async fn plan_shows_the_email_and_sends_nothing() {
    let moto = moto_with_a_verified_sender().await;
    let file = TestRunbook::new(
        &[
            r#"[runbook]
name = "riskcast"

[[steps]]
id = "announce"
uses = "notify"
with.to = ["oncall@example.com"]
with.subject = "riskcast 1.2.3 is out"
with.text = "ship it"
"#,
            EMAIL,
        ]
        .concat(),
    );
    let output = plan_with_aws(&file.path, &moto.url).await;
    let said = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(
        said.contains("email \"riskcast 1.2.3 is out\" from Deploys <deploys@example.com> to oncall@example.com through SES in us-east-1: ship it"),
        "{said}"
    );
    assert!(sent_emails(&moto).await.is_empty());
}

#[tokio::test]
async fn an_email_target_writes_when_the_run_fails_and_only_then() {
    let moto = moto_with_a_verified_sender().await;
    let state = tempfile::tempdir().unwrap();
    let body = [
        r#"[runbook]
name = "deploy"

[[steps]]
id = "push"
uses = "noop"

[[steps]]
id = "migrate"
uses = "misbehave"
with.mode = "trap"
grants.http = ["http://127.0.0.1:9"]

[notify]

[[notify.targets]]
uses = "notify"
with.to = ["oncall@example.com"]
with.statuses = ["failed"]
"#,
        EMAIL,
    ]
    .concat();
    let options = RunOptions {
        state_dir: Some(state.path().to_path_buf()),
        ..aws_at(&moto.url)
    };
    let finished = run(&body, options).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    assert!(warnings(&finished).is_empty(), "{:?}", warnings(&finished));
    // The start and the rollback are not `failed`: the step's failure and
    // the run's end are written.
    let sent = sent_emails(&moto).await;
    let subjects: Vec<&str> = sent
        .iter()
        .map(|email| email["subject"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        subjects,
        [
            "deploy: failed at step migrate",
            "deploy: failed at step migrate"
        ],
        "{sent:?}"
    );
    let bodies: Vec<&str> = sent
        .iter()
        .map(|email| email["body"].as_str().unwrap_or_default())
        .collect();
    assert!(
        bodies[0].starts_with("deploy: migrate failed: "),
        "{bodies:?}"
    );
    assert!(
        bodies[1].starts_with("deploy: failed at step migrate after "),
        "{bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .all(|body| body.contains("\nfailed step: migrate\n"))
    );
    for email in &sent {
        assert_eq!(
            email["destinations"]["ToAddresses"],
            serde_json::json!(["oncall@example.com"])
        );
    }
    // Every moment went to the target, which took each one.
    let notified: Vec<(Value, Value)> = journal(state.path())
        .into_iter()
        .filter(|event| event["event"] == "notified")
        .map(|event| (event["moment"].clone(), event["ok"].clone()))
        .collect();
    assert_eq!(
        notified,
        [
            (serde_json::json!("start"), serde_json::json!(1)),
            (serde_json::json!("failure"), serde_json::json!(1)),
            (serde_json::json!("rollback"), serde_json::json!(1)),
            (serde_json::json!("end"), serde_json::json!(1)),
        ]
    );
}

#[tokio::test]
async fn a_statuspage_target_opens_an_incident_on_failure_and_resolves_it_at_a_good_end() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let target = r#"[notify]

[[notify.targets]]
uses = "notify"
with.format = "statuspage"
with.webhook = "BASE/v1/pages/pg1/incidents"
with.api_key = "${{ secrets.STATUSPAGE_KEY }}"
with.components = ["api"]
grants.http = ["BASE/v1/pages/pg1/incidents"]
grants.secrets = ["STATUSPAGE_KEY"]
"#
    .replace("BASE", &base);
    let options = |state: &Path| RunOptions {
        secrets: [("STATUSPAGE_KEY".to_owned(), "sp-key-123".to_owned())].into(),
        state_dir: Some(state.to_path_buf()),
        ..RunOptions::default()
    };
    // A failed run: the failure opens the run's incident, the rollback and
    // the end add to it; the start opens none.
    let state = tempfile::tempdir().unwrap();
    let failing = format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[[steps]]\nid = \"migrate\"\nuses = \"misbehave\"\nwith.mode = \"trap\"\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{target}"
    );
    let finished = run(&failing, options(state.path())).await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    assert!(warnings(&finished).is_empty(), "{:?}", warnings(&finished));
    let incidents = service.state().incidents;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let incident = &incidents[0];
    assert_eq!(incident["page_id"], "pg1");
    assert_eq!(incident["name"], "deploy: failed at step migrate");
    assert_eq!(incident["status"], "identified");
    assert_eq!(
        incident["metadata"],
        serde_json::json!({"runbook": {"key": "runbook/deploy/-/test-run"}})
    );
    assert_eq!(
        incident["components"],
        serde_json::json!([{"id": "api", "status": "degraded_performance"}])
    );
    let updates: Vec<(&str, &str)> = incident["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|update| {
            (
                update["status"].as_str().unwrap_or_default(),
                update["body"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    assert_eq!(updates[0].0, "investigating");
    assert!(
        updates[0].1.starts_with("deploy: migrate failed: "),
        "{updates:?}"
    );
    assert_eq!(
        updates[1],
        ("identified", "deploy: rolling back 1 step: push")
    );
    assert!(
        updates[2]
            .1
            .starts_with("deploy: failed at step migrate after "),
        "{updates:?}"
    );
    assert!(
        !finished.log().contains("sp-key-123"),
        "the API key leaked into the run log"
    );

    // A run that succeeds resolves its incident and sets the components
    // back; it opens none.
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
    assert!(warnings(&finished).is_empty(), "{:?}", warnings(&finished));
    let incidents = service.state().incidents;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0]["status"], "resolved");
    assert_eq!(
        incidents[0]["components"],
        serde_json::json!([{"id": "api", "status": "operational"}])
    );
    let last = incidents[0]["incident_updates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "resolved");
    assert!(
        last["body"]
            .as_str()
            .unwrap()
            .starts_with("deploy: succeeded in "),
        "{last}"
    );
    // Every call carried the page's key, unsealed only for the API.
    let calls: Vec<runbook_testenv::http::Request> = service
        .state()
        .received
        .into_iter()
        .filter(|request| request.path.starts_with("/v1/pages/"))
        .collect();
    assert!(!calls.is_empty());
    assert!(
        calls.iter().all(
            |request| request.headers.get("authorization").map(String::as_str)
                == Some("OAuth sp-key-123")
        ),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_body_of_ones_own_is_sent_as_json_with_its_method_headers_and_words() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let body = r#"[runbook]
name = "deploy"

# Opsgenie's shape: a table, the host's and the announcement's words in it.
[[steps]]
id = "page"
uses = "notify"
with.webhook = "BASE/echo"
with.method = "put"
with.headers = { Authorization = "GenieKey ${{ secrets.OPSGENIE_KEY }}" }
with.body = { message = "{text}", alias = "runbook-${{ run.id }}", details = { status = "{status}", runbook = "{runbook}" } }
with.text = 'deploy failed at "migrate"'
with.runbook = "deploy"
with.status = "failed"
grants.http = ["BASE/echo"]
grants.secrets = ["OPSGENIE_KEY"]

# Statuspage's shape, as JSON text.
[[steps]]
id = "incident"
uses = "notify"
with.webhook = "BASE/echo"
with.body = '''{"incident": {"name": "{subject}", "status": "investigating", "body": "{text}"}}'''
with.subject = "Checkout is slow"
with.text = 'rolling back "1.2.3"'
with.status = "rolling_back"
grants.http = ["BASE/echo"]

# Sent only when the run failed.
[[steps]]
id = "quiet"
uses = "notify"
with.webhook = "BASE/echo"
with.statuses = ["failed"]
with.body = { message = "{text}" }
with.status = "succeeded"
grants.http = ["BASE/echo"]
"#
    .replace("BASE", &base);
    let finished = run(
        &body,
        RunOptions {
            secrets: [("OPSGENIE_KEY".to_owned(), "og-key-123".to_owned())].into(),
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
    assert_eq!(finished.step("page").1, format!("PUT to {base}/echo: 200"));
    assert_eq!(
        finished.step("quiet").1,
        "nothing to send for status `succeeded`"
    );
    let sent: Vec<runbook_testenv::http::Request> = service
        .state()
        .received
        .into_iter()
        .filter(|request| request.path == "/echo")
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let json = |request: &runbook_testenv::http::Request| -> Value {
        serde_json::from_slice(&request.body).unwrap()
    };
    assert_eq!(sent[0].method, "PUT");
    assert_eq!(
        sent[0].headers.get("authorization").map(String::as_str),
        Some("GenieKey og-key-123")
    );
    assert_eq!(
        sent[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        json(&sent[0]),
        serde_json::json!({
            "message": "deploy failed at \"migrate\"",
            "alias": "runbook-test-run",
            "details": {"status": "failed", "runbook": "deploy"},
        })
    );
    assert_eq!(sent[1].method, "POST");
    assert_eq!(
        json(&sent[1]),
        serde_json::json!({"incident": {
            "name": "Checkout is slow",
            "status": "investigating",
            "body": "rolling back \"1.2.3\"",
        }})
    );
    assert!(
        !finished.log().contains("og-key-123"),
        "the key leaked into the run log"
    );
}

#[test]
fn an_email_target_without_recipients_or_its_grant_is_refused_by_validate() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[notify]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.format = \"email\"\nwith.from = \"deploys@example.com\"\nwith.region = \"us-east-1\"\n",
    );
    let output = runbook_cli(&["validate", file.path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains(
            "notify target 0: plugin `notify` needs `aws` with `format = \"email\"`, and it is granted none"
        ),
        "{said}"
    );
    assert!(
        said.contains("grants.aws = { services = [\"email\"], actions = [\"SendEmail\"]"),
        "{said}"
    );
    assert!(
        said.contains("notify target 0: `with.to`: `format = \"email\"` needs whom to write to"),
        "{said}"
    );
    // With both, it is valid.
    let file = TestRunbook::new(
        &[
            "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"push\"\nuses = \"noop\"\n\n[notify]\n\n[[notify.targets]]\nuses = \"notify\"\nwith.to = [\"oncall@example.com\"]\n",
            EMAIL,
        ]
        .concat(),
    );
    let output = runbook_cli(&["validate", file.path.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::text(&output)
    );
}

#[test]
fn a_parameter_the_format_does_not_read_is_refused_by_validate() {
    for (with, wanted) in [
        (
            "with.webhook = \"https://hooks.example.com/x\"\nwith.to = [\"oncall@example.com\"]\ngrants.http = [\"https://hooks.example.com/\"]\n",
            "`with.to`: `to` is not used here: `format = \"slack\"` does not use it",
        ),
        (
            "with.format = \"statuspage\"\nwith.webhook = \"${{ secrets.PAGE }}\"\nwith.api_key = \"k\"\ngrants.http = [\"https://api.statuspage.io/\"]\ngrants.secrets = [\"PAGE\"]\n",
            "Statuspage's incidents URL is no secret",
        ),
        (
            "with.webhook = \"https://hooks.example.com/x\"\nwith.body = '{ \"text\": '\ngrants.http = [\"https://hooks.example.com/\"]\n",
            "`with.body`: the body is not JSON",
        ),
        (
            "with.webhook = \"https://hooks.example.com/x\"\nwith.statuses = [\"failure\"]\ngrants.http = [\"https://hooks.example.com/\"]\n",
            "`failure` is not a status of a run",
        ),
    ] {
        let file = TestRunbook::new(&format!(
            "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"announce\"\nuses = \"notify\"\n{with}"
        ));
        let output = runbook_cli(&["validate", file.path.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(wanted), "{wanted}\n{said}");
    }
}

#[test]
fn plugin_inspect_says_which_format_needs_which_grant() {
    let path = runbook_testenv::plugin_path("notify");
    let output = runbook_cli(&["plugin", "inspect", path.to_str().unwrap()]);
    let said = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(said.contains("needs         nothing"), "{said}");
    assert!(
        said.contains("optional      http, secrets, aws (only with some parameters)"),
        "{said}"
    );
    assert!(
        said.contains("needed with   http: `format = \"slack\"`, no `format`"),
        "{said}"
    );
    assert!(
        said.contains("needed with   aws: `format = \"email\"`"),
        "{said}"
    );
}
