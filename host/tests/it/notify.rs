//! The `notify` plugin: an `always` step posts how the run ended to a
//! Slack-compatible webhook whose URL is a sealed secret.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use runbook_testenv::SampleService;

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
