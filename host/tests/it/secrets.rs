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
        finished.log().contains("\"capability\":\"secrets\""),
        "no call of the secrets capability"
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

// The HTTP host function itself, called as a plugin would call it, against
// local servers that reflect, redirect and route what they get.

use runbook::capability::StepContext;
use runbook::capability::http::{HttpClient, UrlGrant, send};
use runbook::capability::secrets::SecretStore;
use runbook::events::{EventSink, Recorder};
use runbook::runbook::{StepGrants, StepId};
use runbook::wit::PluginError;
use runbook::wit::runbook::plugin::http::{Request, Response};
use runbook_testenv::http::{Request as Received, Response as Answer, bind_loopback, serve};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A step's capability context with these grants and secrets (all of them
/// granted), its events recorded.
fn step(http: &[&str], secrets: &[(&str, &str)]) -> (StepContext, Recorder) {
    let store = SecretStore::new(
        secrets
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
    );
    let events = EventSink::new();
    events.set_redactor(store.redactor());
    let recorder = Recorder::new();
    events.add(recorder.clone());
    let access = runbook::capability::RunAccess {
        redactor: store.redactor(),
        secrets: store,
        events,
        http: HttpClient::new().unwrap(),
        aws: None,
        kube: None,
        command: None,
        tape: Default::default(),
    };
    let grants = StepGrants {
        http: http
            .iter()
            .map(|grant| UrlGrant::parse(grant).unwrap())
            .collect(),
        secrets: secrets.iter().map(|(name, _)| (*name).to_owned()).collect(),
        ..StepGrants::default()
    };
    let context = access.for_step(
        StepId("hostile".into()),
        grants,
        tokio::time::Instant::now() + Duration::from_secs(20),
        &tokio_util::sync::CancellationToken::new(),
        false,
        Default::default(),
    );
    (context, recorder)
}

fn request(method: &str, url: &str) -> Request {
    Request {
        method: method.into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        body_file: None,
        basic_auth: None,
        timeout_ms: Some(5_000),
        follow_redirects: false,
    }
}

fn answer(status: u16, headers: Vec<(String, String)>, body: impl Into<Vec<u8>>) -> Answer {
    Answer {
        status,
        headers,
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// A loopback server that answers with `respond(request, base)` and keeps
/// every request it received.
struct Server {
    base: String,
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(respond: impl Fn(&Received, &str) -> Answer + Send + Sync + 'static) -> Self {
        let (listener, address) = bind_loopback(0).await.unwrap();
        let base = format!("http://{address}");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let task = tokio::spawn(serve(listener, {
            let received = Arc::clone(&received);
            let base = base.clone();
            move |request: Received| {
                let response = respond(&request, &base);
                received.lock().unwrap().push(request);
                async move { response }
            }
        }));
        Server {
            base,
            port: address.port(),
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the step's events say, as the terminal and audit log see
/// them and as the journal writes them.
fn recorded(recorder: &Recorder) -> String {
    recorder
        .events()
        .iter()
        .map(|(event, line)| format!("{event:?}\n{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn denial(result: Result<Response, PluginError>) -> runbook::wit::Denial {
    match result {
        Err(PluginError::Denied(denial)) => denial,
        Err(other) => panic!("not a denial: {}", other.describe()),
        Ok(response) => panic!("sent, answered {}", response.status),
    }
}

#[tokio::test]
async fn a_url_secret_never_comes_back_to_the_plugin_or_into_events_even_once_normalised() {
    let server = Server::start(|_, _| answer(200, vec![], "ok")).await;
    // The host lower-cases the host name: the value as written is not what
    // the host would show.
    let webhook = format!("http://LocalHost:{}/hooks/T0/B0/SECRETPATH", server.port);
    let granted = format!("http://localhost:{}", server.port);

    let (context, recorder) = step(&[granted.as_str()], &[("WEBHOOK", webhook.as_str())]);
    let handle = context.secrets.handle("WEBHOOK");
    let response = send(&context, request("POST", &handle)).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(server.received()[0].path, "/hooks/T0/B0/SECRETPATH");
    assert!(
        !response.final_url.contains("SECRETPATH"),
        "{}",
        response.final_url
    );

    // Not granted: the denial names the secret, not the URL.
    let (context, denied_events) = step(
        &["http://elsewhere.example"],
        &[("WEBHOOK", webhook.as_str())],
    );
    let handle = context.secrets.handle("WEBHOOK");
    let denied = denial(send(&context, request("POST", &handle)).await);
    assert!(denied.requested.contains("WEBHOOK"), "{denied:?}");
    assert!(!format!("{denied:?}").contains("SECRETPATH"), "{denied:?}");

    // Unreachable: the transient error does not carry it either.
    let closed = {
        let (listener, address) = bind_loopback(0).await.unwrap();
        drop(listener);
        address.port()
    };
    let unreachable = format!("http://LOCALHOST:{closed}/hooks/T0/B0/SECRETPATH");
    let (context, failed_events) = step(
        &[format!("http://localhost:{closed}").as_str()],
        &[("WEBHOOK", unreachable.as_str())],
    );
    let handle = context.secrets.handle("WEBHOOK");
    let error = send(&context, request("POST", &handle)).await.unwrap_err();
    assert!(
        matches!(error, PluginError::Transient(_)),
        "{}",
        error.describe()
    );
    assert!(
        !error.describe().contains("SECRETPATH"),
        "{}",
        error.describe()
    );

    for events in [
        recorded(&recorder),
        recorded(&denied_events),
        recorded(&failed_events),
    ] {
        assert!(events.contains("http"), "{events}");
        assert!(!events.contains("SECRETPATH"), "{events}");
    }
}

const TOKEN: &str = "Tok/en+\"q\" <V>&x";

#[tokio::test]
async fn responses_are_redacted_in_every_form_a_secret_comes_back_in() {
    let server = Server::start(|request, _| {
        let token = request.headers.get("x-token").cloned().unwrap_or_default();
        let key = request.headers.get("x-key").cloned().unwrap_or_default();
        let authorization = request.headers.get("authorization").cloned().unwrap_or_default();
        let json = serde_json::to_string(&token).unwrap();
        let percent: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
        let escaped = percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC).to_string();
        match request.path.as_str() {
            "/go" => answer(302, vec![("location".into(), format!("/landed?token={escaped}"))], ""),
            _ => answer(
                200,
                vec![
                    ("x-echo".into(), key.clone()),
                    (format!("x-echo-{key}"), "1".into()),
                    ("x-auth".into(), authorization.clone()),
                ],
                format!(
                    "raw={token}\njson={json}\nslashes={}\nform={percent}\npercent={escaped}\nhtml={}\nkey={key}\nauth={authorization}\n",
                    json.replace('/', "\\/"),
                    token.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;"),
                ),
            ),
        }
    })
    .await;
    let (context, recorder) = step(
        &[server.base.as_str()],
        &[("TOKEN", TOKEN), ("API_KEY", VALUE)],
    );
    let mut reflect = request("GET", &format!("{}/reflect", server.base));
    reflect.headers = vec![
        ("x-token".into(), context.secrets.handle("TOKEN")),
        ("x-key".into(), context.secrets.handle("API_KEY")),
    ];
    reflect.basic_auth = Some(("deploy".into(), context.secrets.handle("API_KEY")));
    let response = send(&context, reflect.clone()).await.unwrap();

    // The server got the values themselves.
    let received = &server.received()[0];
    assert_eq!(received.headers["x-token"], TOKEN);
    assert_eq!(received.headers["x-key"], VALUE);

    let body = String::from_utf8_lossy(&response.body).into_owned();
    let credential = received.headers["authorization"]
        .trim_start_matches("Basic ")
        .to_owned();
    for leaked in ["Tok", "s3cr3t", credential.as_str()] {
        assert!(!body.contains(leaked), "{leaked} in the body:\n{body}");
    }
    assert_eq!(body.matches("[REDACTED]").count(), 8, "{body}");
    for (name, value) in &response.headers {
        assert!(
            !name.to_ascii_lowercase().contains("s3cr3t"),
            "header name {name}"
        );
        assert!(
            !value.contains("s3cr3t") && !value.contains(&credential),
            "header {name}: {value}"
        );
    }

    // A redirect whose target carries the secret, percent-encoded.
    let mut go = reflect;
    go.url = format!("{}/go", server.base);
    go.follow_redirects = true;
    let response = send(&context, go).await.unwrap();
    assert!(
        response.final_url.contains("/landed?token="),
        "{}",
        response.final_url
    );
    assert!(
        !response.final_url.contains("Tok"),
        "{}",
        response.final_url
    );
    assert!(!recorded(&recorder).contains("Tok"));
}

#[tokio::test]
async fn a_body_holding_a_secret_does_not_follow_a_redirect_to_another_origin() {
    let other = Server::start(|_, _| answer(200, vec![], "ok")).await;
    let target = format!("{}/echo", other.base);
    let server = Server::start(move |request, base| match request.path.as_str() {
        "/elsewhere" => answer(307, vec![("location".into(), target.clone())], ""),
        "/here" => answer(308, vec![("location".into(), format!("{base}/echo"))], ""),
        _ => answer(200, vec![], "ok"),
    })
    .await;
    let (context, recorder) = step(
        &[server.base.as_str(), other.base.as_str()],
        &[("API_KEY", VALUE)],
    );
    let handle = context.secrets.handle("API_KEY");
    let mut post = request("POST", &format!("{}/elsewhere", server.base));
    post.body = Some(format!("token={handle}").into_bytes());
    post.follow_redirects = true;

    let denied = denial(send(&context, post.clone()).await);
    assert!(denied.hint.contains("another origin"), "{denied:?}");
    assert!(
        other.received().is_empty(),
        "the body followed the redirect"
    );
    assert_eq!(
        server.received()[0].body,
        format!("token={VALUE}").into_bytes()
    );
    assert!(recorded(&recorder).contains("\"decision\":\"denied\""));

    // Within the origin, and without a secret, the body follows.
    let mut same = post.clone();
    same.url = format!("{}/here", server.base);
    assert_eq!(send(&context, same).await.unwrap().status, 200);
    assert_eq!(
        server.received()[2].body,
        format!("token={VALUE}").into_bytes()
    );
    let mut plain = post;
    plain.body = Some(b"no secret".to_vec());
    assert_eq!(send(&context, plain).await.unwrap().status, 200);
    assert_eq!(other.received()[0].body, b"no secret".to_vec());
}

#[tokio::test]
async fn encoded_dots_and_slashes_do_not_escape_a_path_grant() {
    let server = Server::start(|_, _| answer(200, vec![], "ok")).await;
    let (context, recorder) = step(&[format!("{}/api", server.base).as_str()], &[]);
    for path in ["/api/..%2fadmin", "/api/%2e%2e%2fadmin", "/api/..%5cadmin"] {
        let denied =
            denial(send(&context, request("GET", &format!("{}{path}", server.base))).await);
        assert!(denied.hint.contains("decoded"), "{denied:?}");
    }
    assert!(server.received().is_empty(), "{:?}", server.received());
    assert!(recorded(&recorder).contains("percent-encoded"));
    let allowed = send(&context, request("GET", &format!("{}/api/ok", server.base))).await;
    assert_eq!(allowed.unwrap().status, 200);
}

#[tokio::test]
async fn a_plugin_cannot_choose_another_virtual_host_behind_a_granted_address() {
    let server = Server::start(|_, _| answer(200, vec![], "ok")).await;
    let (context, recorder) = step(&[server.base.as_str()], &[]);
    for (name, value) in [
        ("Host", "admin.internal"),
        ("X-Forwarded-Host", "admin.internal"),
        ("Forwarded", "host=admin.internal"),
    ] {
        let mut routed = request("GET", &format!("{}/health", server.base));
        routed.headers = vec![(name.into(), value.into())];
        let denied = denial(send(&context, routed).await);
        assert!(denied.requested.contains(name), "{denied:?}");
        assert!(denied.hint.contains("grants.http"), "{denied:?}");
    }
    assert!(server.received().is_empty(), "{:?}", server.received());
    assert_eq!(recorded(&recorder).matches("refused").count(), 6);
}

/// Every file under `folder`, as text.
fn files_under(folder: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            files.push((path, text));
        }
    }
    files
}

#[tokio::test]
async fn a_webhook_secret_stays_off_the_terminal_out_of_the_run_files_and_out_of_plans() {
    let closed = {
        let (listener, address) = bind_loopback(0).await.unwrap();
        drop(listener);
        address.port()
    };
    let webhook = format!("http://LocalHost:{closed}/hooks/T0/B0/SECRETPATH");
    let runbook = crate::support::TestRunbook::new(&format!(
        r#"[runbook]
name = "announce"

[[steps]]
id = "notify"
uses = "misbehave"
with.mode = "post"
with.url = "${{{{ secrets.WEBHOOK }}}}"
grants.http = ["http://localhost:{closed}"]
grants.secrets = ["WEBHOOK"]
retries = {{ attempts = 2, backoff = "10ms", max = "10ms" }}
"#
    ));
    let path = runbook.path.to_str().unwrap().to_owned();
    let binary = |args: Vec<String>| {
        let webhook = webhook.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
                .args(args)
                .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
                .env("NO_COLOR", "1")
                .env("RUNBOOK_OPERATOR", "alice")
                .env("WEBHOOK", webhook)
                .output()
                .expect("runbook runs")
        })
    };

    let exec = binary(vec!["exec".into(), path.clone()]).await.unwrap();
    let stderr = String::from_utf8_lossy(&exec.stderr);
    assert_ne!(exec.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("try 1 failed"), "{stderr}");
    assert!(!stderr.contains("SECRETPATH"), "{stderr}");
    let files = files_under(&runbook.dir.path().join(".runbook"));
    for name in ["events.jsonl", "audit.jsonl"] {
        let (_, text) = files
            .iter()
            .find(|(file, _)| file.ends_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(text.contains("\"http\""), "{name}: {text}");
    }
    for (file, text) in &files {
        assert!(!text.contains("SECRETPATH"), "{}: {text}", file.display());
    }

    for output in ["text", "json"] {
        let plan = binary(vec![
            "plan".into(),
            path.clone(),
            "--output".into(),
            output.into(),
        ])
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&plan.stdout);
        assert!(stdout.contains("not sent (dry run)"), "{stdout}");
        assert!(!stdout.contains("SECRETPATH"), "{stdout}");
        assert!(!String::from_utf8_lossy(&plan.stderr).contains("SECRETPATH"));
    }
}
