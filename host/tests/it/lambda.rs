//! The `lambda-alias` plugin and the `aws` capability's REST-JSON protocol
//! against moto_server's Lambda: a version published and an alias moved
//! onto it through weighted stages, watched with `GetAlias`; a breach of
//! the CloudWatch analysis, an interrupt during a hold and a later step's
//! failure each put the alias back as it was; `plan` says the shift and
//! publishes nothing; a call outside `grants.aws` is denied.

use crate::support::{RunOptions, TestRunbook, run};
use runbook::events::{Decision, EventKind, Status};
use runbook_testenv::Moto;
use runbook_testenv::moto::lambda_at;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every action the step needs, without analysis.
const GRANT: &str = r#"{ services = ["lambda"], actions = ["GetAlias", "GetFunction", "PublishVersion", "UpdateAlias"], regions = ["us-east-1"] }"#;

/// A later step that fails, so that the run rolls back.
const FAILING_STEP: &str = "\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";

/// A runbook whose step `shift` moves alias `live` of function `api`,
/// with the `with` lines given, granted `grant` (a `grants.aws` value).
fn runbook(with: &str, grant: &str) -> String {
    format!(
        "[runbook]\nname = \"lambda\"\n\n[[steps]]\nid = \"shift\"\nuses = \"lambda-alias\"\nwith.region = \"us-east-1\"\nwith.function = \"api\"\nwith.alias = \"live\"\n{with}grants.aws = {grant}\n"
    )
}

/// The JSON body of a whole HTTP response.
fn body(response: &str) -> Value {
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {response}"));
    serde_json::from_str(body).unwrap_or_else(|error| panic!("not JSON ({error}): {response}"))
}

/// Alias `live` of `api` as the moto_server at `url` routes it: its
/// version, and the other versions' weights (`{}` for none).
fn routing_at(url: &str) -> (String, Value) {
    let alias = body(&lambda_at(
        url,
        "GET",
        "/2015-03-31/functions/api/aliases/live",
        "",
    ));
    let weights = match &alias["RoutingConfig"]["AdditionalVersionWeights"] {
        Value::Null => json!({}),
        weights => weights.clone(),
    };
    let version = alias["FunctionVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no FunctionVersion in {alias}"))
        .to_owned();
    (version, weights)
}

/// `(version, weights)` as [`routing_at`] reads it.
fn routing(version: &str, weights: Value) -> (String, Value) {
    (version.to_owned(), weights)
}

/// Function `api` in a fresh moto_server: version 1 published, alias
/// `live` on it, and new code in `$LATEST`.
struct Function {
    moto: Moto,
}

fn function() -> Function {
    let moto = Moto::start();
    moto.create_lambda_function("api", "def handler(event, context):\n    return 1\n");
    let alias = moto.lambda(
        "POST",
        "/2015-03-31/functions/api/aliases",
        r#"{"Name": "live", "FunctionVersion": "1"}"#,
    );
    assert!(alias.starts_with("HTTP/1.1 201"), "{alias}");
    moto.update_lambda_code("api", "def handler(event, context):\n    return 2\n");
    Function { moto }
}

async fn new_function() -> Function {
    tokio::task::spawn_blocking(function).await.unwrap()
}

impl Function {
    /// Alias `live` as Lambda routes it now.
    fn routing(&self) -> (String, Value) {
        routing_at(&self.moto.url)
    }

    /// The function's versions, `$LATEST` first.
    fn versions(&self) -> Vec<String> {
        let listed = body(
            &self
                .moto
                .lambda("GET", "/2015-03-31/functions/api/versions", ""),
        );
        listed["Versions"]
            .as_array()
            .unwrap_or_else(|| panic!("no Versions in {listed}"))
            .iter()
            .map(|version| version["Version"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Publishes `$LATEST` directly; its version.
    fn publish(&self) -> String {
        let published = body(
            &self
                .moto
                .lambda("POST", "/2015-03-31/functions/api/versions", "{}"),
        );
        published["Version"].as_str().unwrap().to_owned()
    }

    /// Sets alias `live` directly, as it was before the runbook ran.
    fn set_alias(&self, version: &str, weights: Value) {
        let body = json!({
            "FunctionVersion": version,
            "RoutingConfig": { "AdditionalVersionWeights": weights },
        });
        let answer = self.moto.lambda(
            "PUT",
            "/2015-03-31/functions/api/aliases/live",
            &body.to_string(),
        );
        // moto answers UpdateAlias (and GetAlias) with 201.
        assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    }

    fn options(&self) -> RunOptions {
        crate::support::aws_at(&self.moto.url)
    }
}

/// Every routing alias `live` goes through while a run runs, from
/// [`Watch::start`] until [`Watch::finish`], polled from moto.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, Value)>>,
}

impl Watch {
    fn start(url: &str) -> Self {
        let url = url.to_owned();
        let first = routing_at(&url);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = vec![first];
            loop {
                let last_look = stopped.load(Ordering::SeqCst);
                let now = routing_at(&url);
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
                if last_look {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Watch { stop, thread }
    }

    fn finish(self) -> Vec<(String, Value)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the watch ends")
    }
}

#[tokio::test]
async fn a_run_publishes_a_version_and_moves_the_alias_onto_it_stage_by_stage() {
    let function = new_function().await;
    let watch = Watch::start(&function.moto.url);
    let body = runbook("with.stages = [10, 50, 100]\nwith.hold = \"1s\"\n", GRANT);
    let finished = run(&body, function.options()).await;
    let seen = watch.finish();
    let (status, summary, outputs) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(
        summary,
        "alias live of api on v2 (was v1) through 10% → 50% → 100%"
    );
    assert_eq!(outputs["version"], "2");
    assert_eq!(
        outputs["previous"],
        r#"{"FunctionVersion":"1","RoutingConfig":null}"#
    );
    assert_eq!(
        seen,
        [
            routing("1", json!({})),
            routing("1", json!({"2": 0.1})),
            routing("1", json!({"2": 0.5})),
            routing("2", json!({})),
        ],
        "{}",
        finished.log()
    );
    assert_eq!(function.versions(), ["$LATEST", "1", "2"]);
    // Each hold was a journaled wait between two calls of the step, and
    // each stage a milestone.
    let waits = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(event.kind, EventKind::StepWaiting { .. }))
        .count();
    assert!(waits >= 2, "{}", finished.log());
    assert!(
        finished
            .log()
            .contains("alias live of api at 50% on v2 (stage 2/3)"),
        "{}",
        finished.log()
    );
}

#[tokio::test]
async fn a_later_failure_puts_the_alias_back_on_its_version_and_split() {
    let function = new_function().await;
    // When the run begins, v2 takes a quarter of the traffic and `$LATEST`
    // holds a third code.
    assert_eq!(function.publish(), "2");
    function.set_alias("1", json!({"2": 0.25}));
    function
        .moto
        .update_lambda_code("api", "def handler(event, context):\n    return 3\n");
    let body = format!(
        "{}{FAILING_STEP}",
        runbook("with.stages = [50, 100]\nwith.hold = \"1s\"\n", GRANT)
    );
    let finished = run(&body, function.options()).await;
    let (status, summary, outputs) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(
        summary,
        "alias live of api on v3 (was v1 with 25% on v2) through 50% → 100%"
    );
    assert_eq!(outputs["version"], "3");
    assert_eq!(
        outputs["previous"],
        r#"{"FunctionVersion":"1","RoutingConfig":{"AdditionalVersionWeights":{"2":0.25}}}"#
    );
    assert_eq!(finished.report.status, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished
            .log()
            .contains("alias live of api back on v1 with 25% on v2"),
        "{}",
        finished.log()
    );
    assert_eq!(function.routing(), routing("1", json!({"2": 0.25})));
}

/// Ctrl-C during a hold: the step is cancelled between two calls, and its
/// rollback puts the alias back, whatever the failure policy, instead of
/// leaving the new version with 10% of the traffic.
#[tokio::test]
async fn an_interrupt_during_a_hold_puts_the_alias_back() {
    let function = new_function().await;
    assert_eq!(function.publish(), "2");
    let body = runbook(
        "with.version = \"2\"\nwith.stages = [10, 100]\nwith.hold = \"1h\"\n",
        GRANT,
    )
    .replace(
        "name = \"lambda\"\n",
        "name = \"lambda\"\non_failure = \"abort\"\n",
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let trigger = cancel.clone();
    let url = function.moto.url.clone();
    let interrupt = async move {
        // At most 30 s: a run that never splits the alias fails below.
        for _ in 0..1500 {
            let url = url.clone();
            let (_, weights) = tokio::task::spawn_blocking(move || routing_at(&url))
                .await
                .unwrap();
            if weights != json!({}) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    };
    let options = RunOptions {
        cancel: Some(cancel),
        ..function.options()
    };
    let (finished, ()) = tokio::join!(run(&body, options), interrupt);
    assert_eq!(
        finished.step("shift").0,
        Status::Cancelled,
        "{}",
        finished.log()
    );
    assert!(
        finished.log().contains("alias live of api back on v1"),
        "{}",
        finished.log()
    );
    assert_eq!(function.routing(), routing("1", json!({})));
    // A given version is taken as it is, not published.
    assert!(finished.aws_decisions("PublishVersion").is_empty());
}

#[tokio::test]
async fn a_breach_of_the_analysis_puts_the_alias_back_and_fails_the_step() {
    let function = new_function().await;
    // The alias's errors as Lambda reports them to CloudWatch.
    let put = function.moto.cloudwatch(
        "PutMetricData",
        &[
            ("Namespace", "AWS/Lambda"),
            ("MetricData.member.1.MetricName", "Errors"),
            (
                "MetricData.member.1.Dimensions.member.1.Name",
                "FunctionName",
            ),
            ("MetricData.member.1.Dimensions.member.1.Value", "api"),
            ("MetricData.member.1.Dimensions.member.2.Name", "Resource"),
            ("MetricData.member.1.Dimensions.member.2.Value", "api:live"),
            ("MetricData.member.1.Value", "9"),
            ("MetricData.member.1.Unit", "Count"),
        ],
    );
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    let with = "with.stages = [10, 50, 100]\nwith.hold = \"5s\"\nwith.analysis = { cloudwatch = { region = \"us-east-1\" }, interval = \"1s\", checks = [{ name = \"errors\", query = { namespace = \"AWS/Lambda\", metric = \"Errors\", dimensions = { FunctionName = \"api\", Resource = \"api:live\" }, stat = \"Sum\", period = \"1m\" }, max = 5 }] }\n";
    let grant = r#"{ services = ["lambda", "monitoring"], actions = ["GetAlias", "GetFunction", "PublishVersion", "UpdateAlias", "GetMetricData"], regions = ["us-east-1"] }"#;
    let finished = run(&runbook(with, grant), function.options()).await;
    let (status, summary, _) = finished.step("shift");
    assert_eq!(status, Status::Failed, "{summary}\n{}", finished.log());
    assert!(
        summary.starts_with("alias live of api at 10% on v2: errors = 9 is above 5"),
        "{summary}"
    );
    assert!(
        summary.ends_with("; alias live of api is back on v1"),
        "{summary}"
    );
    // The 10% stage, then back: 50% was never reached.
    assert_eq!(
        finished.aws_decisions("UpdateAlias"),
        [Decision::Allowed, Decision::Allowed]
    );
    assert!(!finished.log().contains("at 50%"), "{}", finished.log());
    assert_eq!(function.routing(), routing("1", json!({})));
}

#[tokio::test]
async fn a_code_sha256_guard_publishes_only_the_code_it_names() {
    let function = new_function().await;
    let latest = body(&function.moto.lambda("GET", "/2015-03-31/functions/api", ""))
        ["Configuration"]["CodeSha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let with = |sha256: &str| format!("with.code_sha256 = \"{sha256}\"\nwith.stages = [100]\n");

    let finished = run(&runbook(&with(other), GRANT), function.options()).await;
    let (status, summary, _) = finished.step("shift");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains(&format!("has code sha256 {latest}, not the {other}")),
        "{summary}"
    );
    assert!(finished.aws_decisions("PublishVersion").is_empty());
    assert_eq!(function.versions(), ["$LATEST", "1"]);

    let finished = run(&runbook(&with(latest.as_str()), GRANT), function.options()).await;
    let (status, summary, outputs) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "alias live of api on v2 (was v1) through 100%");
    assert_eq!(outputs["version"], "2");
    assert_eq!(function.routing(), routing("2", json!({})));
}

#[tokio::test]
async fn plan_says_the_shift_and_publishes_nothing() {
    let function = new_function().await;
    let file = TestRunbook::new(&runbook(
        "with.stages = [10, 50, 100]\nwith.hold = \"5m\"\n",
        GRANT,
    ));
    let output = crate::support::plan_with_aws(&file.path, &function.moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("~ publish a version of api from $LATEST"),
        "{said}"
    );
    assert!(
        stdout.contains(
            "~ shift alias live of api from v1 to the version it publishes through 10% → 50% → 100%, holding 5m at each stage below 100%"
        ),
        "{said}"
    );
    assert_eq!(function.versions(), ["$LATEST", "1"]);
    assert_eq!(function.routing(), routing("1", json!({})));
}

#[tokio::test]
async fn publishing_outside_the_grant_is_denied_and_changes_nothing() {
    let function = new_function().await;
    let grant = r#"{ services = ["lambda"], actions = ["GetAlias", "GetFunction", "UpdateAlias"], regions = ["us-east-1"] }"#;
    let body = runbook("with.stages = [10, 100]\nwith.hold = \"1s\"\n", grant);
    let finished = run(&body, function.options()).await;
    let (status, summary, _) = finished.step("shift");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("action `PublishVersion` is not granted"),
        "{summary}"
    );
    assert!(
        finished
            .aws_decisions("GetAlias")
            .contains(&Decision::Allowed)
    );
    assert_eq!(finished.aws_decisions("PublishVersion"), [Decision::Denied]);
    assert!(finished.aws_decisions("UpdateAlias").is_empty());
    assert_eq!(function.versions(), ["$LATEST", "1"]);
    assert_eq!(function.routing(), routing("1", json!({})));
}

#[test]
fn stages_that_fall_or_stop_short_of_100_are_refused_by_validate() {
    for (stages, wanted) in [
        ("[50, 10, 100]", "stages must rise"),
        ("[10, 50]", "the last stage is 100"),
    ] {
        let body = runbook(
            &format!("with.stages = {stages}\nwith.hold = \"1m\"\n"),
            GRANT,
        );
        let file = TestRunbook::new(&body);
        let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(wanted), "{said}");
    }
}
