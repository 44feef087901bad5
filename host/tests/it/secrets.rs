//! Sealed secrets: the plugin holds a handle, the granted server gets the
//! value, and the value appears nowhere else.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use runbook_testenv::SampleService;
use std::collections::BTreeMap;

const VALUE: &str = "s3cr3t-Value-7f2a";

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("API_KEY".to_owned(), VALUE.to_owned()),
        ("OTHER".to_owned(), "other-Value-91".to_owned()),
    ])
}

#[tokio::test]
async fn a_secret_reaches_the_granted_server_but_never_the_plugin_or_the_log() {
    let service = SampleService::start(None).await.unwrap();
    let body = format!(
        r#"[runbook]
name = "steal"

[[steps]]
id = "thief"
uses = "misbehave"
with.mode = "steal-secret"
with.url = "{base}/echo"
with.secret = "${{{{ secrets.API_KEY }}}}"
grants.http = ["{base}"]
grants.secrets = ["API_KEY"]
"#,
        base = service.base_url()
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: secrets(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, outputs) = finished.step("thief");
    assert_eq!(status, Status::Succeeded, "{summary}");

    // The server got the real value, in the header and in the body.
    let received = service.state().received;
    let echo = received
        .iter()
        .find(|request| request.path == "/echo")
        .expect("echo request");
    assert_eq!(
        echo.headers.get("x-stolen").map(String::as_str),
        Some(VALUE)
    );
    assert_eq!(
        String::from_utf8_lossy(&echo.body),
        format!("secret={VALUE}")
    );

    // The plugin only ever held a handle; the echoed value was scrubbed.
    assert!(
        outputs["handle"].starts_with("@@runbook-secret/API_KEY/"),
        "{outputs:?}"
    );
    assert!(outputs["echo"].contains("[REDACTED]"), "{outputs:?}");
    assert!(
        outputs["in_url"].contains("cannot be placed in part of a URL"),
        "{outputs:?}"
    );
    for (key, value) in &outputs {
        assert!(
            !value.contains(VALUE),
            "output {key} holds the secret: {value}"
        );
    }
    assert!(
        !finished.log().contains(VALUE),
        "the run log holds the secret"
    );
    assert!(
        finished.log().contains("\"secret_used\""),
        "no secret_used event"
    );
}

#[tokio::test]
async fn a_secret_granted_only_to_another_step_is_refused() {
    let service = SampleService::start(None).await.unwrap();
    let body = format!(
        r#"[runbook]
name = "steal"

[[steps]]
id = "owner"
uses = "noop"
grants.secrets = ["OTHER"]

[[steps]]
id = "thief"
uses = "misbehave"
with.mode = "steal-secret"
with.url = "{base}/echo"
with.secret_name = "OTHER"
grants.http = ["{base}"]
"#,
        base = service.base_url()
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: secrets(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("thief");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("grants.secrets = [\"OTHER\"]"),
        "{summary}"
    );
    let leaked = service.state().received.iter().any(|request| {
        request
            .headers
            .values()
            .any(|value| value.contains("other-Value-91"))
    });
    assert!(!leaked, "the secret reached the server");
}

#[tokio::test]
async fn a_forged_handle_is_refused() {
    let service = SampleService::start(None).await.unwrap();
    let body = format!(
        r#"[runbook]
name = "forge"

[[steps]]
id = "forger"
uses = "misbehave"
with.mode = "steal-secret"
with.url = "{base}/echo"
with.secret = "@@runbook-secret/API_KEY/0123456789abcdef01234567@@"
grants.http = ["{base}"]
grants.secrets = ["API_KEY"]
"#,
        base = service.base_url()
    );
    let finished = run(
        &body,
        RunOptions {
            secrets: secrets(),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("forger");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(summary.contains("not issued in this run"), "{summary}");
    assert!(service.state().received.is_empty());
}
