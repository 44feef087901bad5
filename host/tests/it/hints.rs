//! Hints that keep privilege least: a denial names the grant nearest to
//! what was asked and what differs from it, and suggests the narrowest
//! grant that would allow it (the URL itself, never its whole host when
//! only the path differs); `validate`, and `exec` before anything runs,
//! find the same mistake in a URL written in the runbook.

use crate::support::{RunOptions, TestRunbook, run, runbook_cli, text};
use runbook::events::{Decision, EventKind, Status};
use runbook_testenv::SampleService;

/// A runbook whose step `flags` checks `url` with a grant for
/// `{base}/admin/feature-flag`, after a step `address` that outputs
/// `{base}/admin/feature-flags` as `message`.
fn flags_runbook(base: &str, url: &str) -> String {
    format!(
        "[runbook]\nname = \"hints\"\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nwith.message = \"{base}/admin/feature-flags\"\n\n[[steps]]\nid = \"flags\"\nuses = \"smoke-test\"\nwith.checks = [{{ url = \"{url}\" }}]\ngrants.http = [\"{base}/admin/feature-flag\"]\n"
    )
}

#[tokio::test]
async fn a_url_that_differs_from_its_grant_only_by_path_is_told_so_and_hinted_exactly() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    // The URL reaches the step as an earlier step's output, as a URL a
    // plugin builds at run time would: nothing before the run can see it.
    let finished = run(
        &flags_runbook(&base, "${{ steps.address.outputs.message }}"),
        RunOptions::default(),
    )
    .await;
    let (status, summary, _) = finished.step("flags");
    assert_eq!(status, Status::Denied, "{summary}");
    let summary = summary.replace("\\\"", "\"");
    assert!(
        summary.contains(&format!(
            "scheme, host and port are granted (`{base}/admin/feature-flag`), only the path differs: `/admin/feature-flags` is not under `/admin/feature-flag`"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "if intended, add `grants.http = [\"{base}/admin/feature-flags\"]` to the step"
        )),
        "{summary}"
    );
    assert!(
        !summary.contains(&format!("grants.http = [\"{base}\"]")),
        "the hint grants the whole host: {summary}"
    );
    assert!(
        service.state().received.is_empty(),
        "the request reached the server"
    );
    // The denial is still one capability call in the journal and the
    // audit log, with its usual fields; its outcome says what differs.
    let (requested, outcome) = finished
        .events
        .iter()
        .find_map(|(event, _)| match &event.kind {
            EventKind::CapabilityCall {
                capability,
                decision: Decision::Denied,
                requested,
                outcome,
                ..
            } if capability == "http" => Some((requested.clone(), outcome.clone())),
            _ => None,
        })
        .expect("a denied http call");
    assert!(
        requested.ends_with(&format!(" {base}/admin/feature-flags")),
        "{requested}"
    );
    assert!(
        outcome.starts_with(
            "request to a path that is not granted: scheme, host and port are granted"
        ),
        "{outcome}"
    );
}

#[tokio::test]
async fn the_same_url_written_in_the_runbook_is_refused_before_anything_runs() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let body = flags_runbook(&base, &format!("{base}/admin/feature-flags"));
    let file = TestRunbook::new(&body);
    let path = file.path.display().to_string();
    let line = body
        .lines()
        .position(|line| line.starts_with("with.checks"))
        .unwrap()
        + 1;
    for verb in ["validate", "exec", "plan"] {
        let owned = path.clone();
        let output = tokio::task::spawn_blocking(move || runbook_cli(&[verb, &owned]))
            .await
            .unwrap();
        let shown = text(&output);
        assert_eq!(output.status.code(), Some(2), "{verb}: {shown}");
        assert!(
            shown.contains(&format!("{path}:{line}:")),
            "{verb}: {shown}"
        );
        assert!(
            shown.contains(&format!(
                "`{base}/admin/feature-flags` is outside the `grants.http` of step `flags`: scheme, host and port are granted (`{base}/admin/feature-flag`), only the path differs"
            )),
            "{verb}: {shown}"
        );
        assert!(
            shown.contains(&format!(
                "add `grants.http = [\"{base}/admin/feature-flags\"]` to the step"
            )),
            "{verb}: {shown}"
        );
    }
    assert!(service.state().received.is_empty(), "something ran");
}
