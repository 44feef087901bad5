//! Misbehaving plugins are contained, reported, and do not take the runner down.

use crate::support::{RunOptions, TestRunbook, run, run_file, runtime};
use runbook::events::{Decision, EventKind, Status};
use runbook_testenv::SampleService;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A runbook of one `misbehave` step. The plugin needs `http`, so the step
/// is granted a URL that answers nothing, unless `extra` grants its own.
fn misbehave(mode: &str, extra: &str) -> String {
    let grant = if extra.contains("grants.http") {
        ""
    } else {
        "grants.http = [\"http://127.0.0.1:9\"]\n"
    };
    format!(
        "[runbook]\nname = \"fixture\"\n\n[[steps]]\nid = \"bad\"\nuses = \"misbehave\"\nwith.mode = \"{mode}\"\n{grant}{extra}\n"
    )
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_step_timeout() {
    let started = Instant::now();
    let finished = run(
        &misbehave("loop", "timeout = \"300ms\""),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("took longer than its timeout of 300ms"),
        "{summary}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped late: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn endless_allocation_is_stopped_by_the_memory_cap() {
    let finished = run(
        &misbehave("allocate", "memory = \"16MiB\""),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("exceeded its memory limit of 16 MiB"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_panic_is_reported_as_a_crash_with_the_panic_message_in_the_log() {
    let finished = run(&misbehave("trap", ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Failed);
    assert!(summary.contains("the plugin crashed"), "{summary}");
    assert!(
        finished.log().contains("the fixture panics on purpose"),
        "{}",
        finished.log()
    );
}

#[tokio::test]
async fn the_sandbox_shows_no_environment_arguments_files_or_sockets() {
    let finished = run(&misbehave("escape", ""), RunOptions::default()).await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Failed);
    assert!(!summary.contains("ESCAPED"), "{summary}");
    for expected in [
        "environment: empty",
        "arguments: none",
        "file /etc/passwd:",
        "file .:",
        "socket:",
        "udp:",
    ] {
        assert!(
            summary.contains(expected),
            "missing `{expected}` in {summary}"
        );
    }
}

#[tokio::test]
async fn a_request_to_an_ungranted_host_is_denied_and_recorded() {
    let service = SampleService::start(None).await.unwrap();
    // The URL comes from an earlier step's output: `validate` refuses a
    // literal URL outside the grants before the run, and this is about
    // the host's check at run time.
    let body = format!(
        "[runbook]\nname = \"fixture\"\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nwith.message = \"{}/health\"\n\n[[steps]]\nid = \"bad\"\nuses = \"misbehave\"\nwith.mode = \"fetch\"\nwith.url = \"${{{{ steps.address.outputs.message }}}}\"\ngrants.http = [\"http://127.0.0.1:1\"]\n",
        service.base_url()
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Denied);
    // The same host on another port: named as such, and the hint is the
    // URL itself, not the whole service.
    assert!(
        summary.contains("host `127.0.0.1` is granted (`http://127.0.0.1:1`), but the port is"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "grants.http = [\\\"{}/health\\\"]",
            service.base_url()
        )) || summary.contains(&format!(
            "grants.http = [\"{}/health\"]",
            service.base_url()
        )),
        "{summary}"
    );
    assert!(
        service.state().received.is_empty(),
        "the request reached the server"
    );
    let denied = finished.events.iter().any(|(event, _)| {
        matches!(&event.kind, EventKind::CapabilityCall { capability, decision: Decision::Denied, requested, .. } if capability == "http" && requested.ends_with("/health"))
    });
    assert!(denied, "no denied http event: {:#?}", finished.lines());
}

#[tokio::test]
async fn a_redirect_to_an_ungranted_host_is_denied_not_followed() {
    let granted = SampleService::start(None).await.unwrap();
    let elsewhere = SampleService::start(None).await.unwrap();
    let target = format!("{}/health", elsewhere.base_url());
    let body = misbehave(
        "redirect",
        &format!(
            "with.url = \"{}/redirect?to={}\"\ngrants.http = [\"{}\"]",
            granted.base_url(),
            target.replace(':', "%3A").replace('/', "%2F"),
            granted.base_url()
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(summary.contains("redirect not granted"), "{summary}");
    assert_eq!(granted.state().received.len(), 1);
    assert!(
        elsewhere.state().received.is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn a_redirect_within_the_grants_is_followed() {
    let service = SampleService::start(None).await.unwrap();
    let body = misbehave(
        "redirect",
        &format!(
            "with.url = \"{0}/redirect\"\ngrants.http = [\"{0}\"]",
            service.base_url()
        ),
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(summary.ends_with("/health"), "{summary}");
}

#[tokio::test]
async fn kubernetes_and_aws_calls_without_grants_are_denied_as_errors_not_traps() {
    for (mode, capability) in [("kube", "kube denied"), ("aws", "aws denied")] {
        let finished = run(&misbehave(mode, ""), RunOptions::default()).await;
        let (status, summary, _) = finished.step("bad");
        assert_eq!(status, Status::Denied, "{mode}: {summary}");
        assert!(summary.starts_with(capability), "{summary}");
        let recorded = finished.events.iter().any(|(event, _)| {
            matches!(
                &event.kind,
                EventKind::CapabilityCall {
                    decision: Decision::Denied,
                    ..
                }
            )
        });
        assert!(recorded, "no denial event for {mode}");
    }
}

/// How long a cancelled step may take to end: the guest notices a
/// cancellation at the next epoch tick (`EPOCH_TICK`, 10 ms), a host call
/// at once; the rest is slack for a busy machine. One that waited for a
/// host call to return, or ticked the epoch once a second, would not make
/// it.
const PROMPTLY: Duration = Duration::from_secs(1);

/// Runs the fixture in `mode`, cancels the run while its step is under
/// way, and returns the run with how long it went on after the cancel.
async fn cancelled_while(mode: &str) -> (crate::support::Finished, Duration) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let cancelled_at = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
        Instant::now()
    });
    let finished = run(
        &misbehave(mode, ""),
        RunOptions {
            cancel: Some(cancel),
            ..RunOptions::default()
        },
    )
    .await;
    let ended = Instant::now();
    let cancelled_at = cancelled_at.await.expect("the cancel fired");
    (finished, ended.saturating_duration_since(cancelled_at))
}

#[tokio::test]
async fn a_waiting_plugin_is_cancelled_promptly() {
    let (finished, after_cancel) = cancelled_while("sleep").await;
    assert_eq!(finished.step("bad").0, Status::Cancelled);
    assert_eq!(finished.report.status, Status::Cancelled);
    assert!(
        after_cancel < PROMPTLY,
        "ended {after_cancel:?} after the cancel"
    );
}

#[tokio::test]
async fn a_busy_plugin_is_cancelled_promptly() {
    let (finished, after_cancel) = cancelled_while("loop").await;
    assert_eq!(finished.step("bad").0, Status::Cancelled);
    assert_eq!(finished.report.status, Status::Cancelled);
    // Not at the step's timeout: at the next epoch tick after Ctrl-C.
    assert!(
        after_cancel < PROMPTLY,
        "ended {after_cancel:?} after the cancel"
    );
}

#[tokio::test]
async fn a_host_sleep_past_the_deadline_times_out() {
    let started = Instant::now();
    let finished = run(
        &misbehave("sleep", "timeout = \"200ms\""),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("bad");
    assert_eq!(status, Status::Failed);
    assert!(
        summary.contains("timed out") || summary.contains("timeout"),
        "{summary}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn printed_lines_become_step_logs() {
    let finished = run(&misbehave("print", ""), RunOptions::default()).await;
    assert_eq!(finished.step("bad").0, Status::Succeeded);
    let logs: Vec<String> = finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(logs.contains(&"a line on stdout".to_owned()), "{logs:?}");
    assert!(logs.contains(&"a line on stderr".to_owned()), "{logs:?}");
}

#[tokio::test]
async fn a_flood_of_log_lines_is_capped_per_call_and_the_drop_is_reported_once() {
    use runbook::capability::log::{MAX_LOG_BYTES, MAX_LOG_LINES};
    let finished = run(&misbehave("flood", ""), RunOptions::default()).await;
    assert_eq!(finished.step("bad").0, Status::Succeeded);
    let logs: Vec<&str> = finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    // 20,000 `log()` lines and 20,000 printed ones share one budget.
    let kept = logs.len() - 1;
    assert!(kept <= MAX_LOG_LINES, "{kept} lines kept");
    let bytes: usize = logs[..kept].iter().map(|line| line.len() + 1).sum();
    assert!(bytes <= MAX_LOG_BYTES, "{bytes} bytes kept");
    assert!(logs.contains(&"logged line 0") && logs.contains(&"printed line 0"));
    let dropped: Vec<&&str> = logs
        .iter()
        .filter(|line| line.contains("dropped"))
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].starts_with(&format!("[{} log lines (", 40_000 - kept)),
        "{}",
        dropped[0]
    );
    assert_eq!(
        logs.last(),
        dropped.first().copied(),
        "the report comes last"
    );
}

#[tokio::test]
async fn the_runner_survives_every_misbehaviour_and_runs_the_next_runbook() {
    let runtime = runtime();
    for (mode, extra) in [
        ("loop", "timeout = \"200ms\""),
        ("allocate", "memory = \"8MiB\""),
        ("trap", ""),
    ] {
        let runbook = TestRunbook::new(&misbehave(mode, extra));
        let finished = run_file(&runtime, &runbook.path, RunOptions::default()).await;
        assert_eq!(finished.report.status, Status::Failed, "{mode}");
    }
    let healthy =
        TestRunbook::new("[runbook]\nname = \"ok\"\n\n[[steps]]\nid = \"fine\"\nuses = \"noop\"\n");
    let finished = run_file(&runtime, &healthy.path, RunOptions::default()).await;
    assert_eq!(finished.report.status, Status::Succeeded);
}

#[tokio::test]
async fn a_compiled_plugin_is_cached_and_not_compiled_again() {
    let cache = tempfile::tempdir().unwrap();
    let options = || runbook::plugin::RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let path = runbook_testenv::plugin_path("noop");
    let first = runbook::plugin::PluginRuntime::new(options()).unwrap();
    assert!(first.load(&path, None).await.unwrap().compiled);
    let second = runbook::plugin::PluginRuntime::new(options()).unwrap();
    let loaded = second.load(&path, None).await.unwrap();
    assert!(!loaded.compiled, "the second load compiled again");
    assert_eq!(loaded.descriptor.name, "noop");
}

#[tokio::test]
async fn a_pinned_digest_that_differs_refuses_the_plugin() {
    let runtime = runtime();
    let path = runbook_testenv::plugin_path("noop");
    let error = runtime
        .load(&path, Some(&"0".repeat(64)))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("but the runbook pins 0000"),
        "{error}"
    );
}

#[tokio::test]
async fn a_plugin_carries_its_capabilities_in_the_component_and_they_agree_with_describe() {
    let path = runbook_testenv::plugin_path("smoke-test");
    let bytes = std::fs::read(&path).unwrap();
    // `secrets?`: optional, for a check whose headers hold one.
    let written = Some(vec!["http".to_owned(), "secrets?".to_owned()]);
    assert_eq!(runbook::plugin::embedded_capabilities(&bytes), written);
    let loaded = runtime().load(&path, None).await.unwrap();
    assert_eq!(loaded.embedded_capabilities, written);
}

#[tokio::test]
async fn a_component_whose_written_capabilities_were_altered_is_refused() {
    let bytes = std::fs::read(runbook_testenv::plugin_path("smoke-test")).unwrap();
    let marker = b"runbook:capabilitieshttp";
    let at = bytes
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("the SDK wrote the section");
    let mut altered = bytes.clone();
    altered[at + marker.len() - 4..at + marker.len()].copy_from_slice(b"kube");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("altered.wasm");
    std::fs::write(&path, &altered).unwrap();
    let error = runtime().load(&path, None).await.unwrap_err().to_string();
    assert!(
        error.contains(
            "capabilities [kube, secrets?] are written into the component, but `describe` says [http, secrets?]"
        ),
        "{error}"
    );
}
