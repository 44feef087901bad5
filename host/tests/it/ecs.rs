//! The `ecs-deploy` plugin against moto_server's ECS, through a proxy that
//! rolls deployments out as ECS does (moto's `UpdateService` leaves a
//! service's deployments where they were): a new revision registered and
//! waited for until `COMPLETED`, a deployment the circuit breaker fails
//! undone, a later failure rolled back, all read back from moto's API;
//! `plan` says the change and sends nothing; a call outside `grants.aws`
//! is denied and recorded.

use crate::support::{RunOptions, TestRunbook, aws_at, run};
use runbook::events::{Decision, Status};
use runbook_testenv::ecs_rollout::{CIRCUIT_BREAKER_REASON, Rollout};
use runbook_testenv::{EcsRollout, Moto};
use serde_json::json;

/// Every action the step may need.
const ALL_ACTIONS: &str =
    r#"["DescribeServices", "DescribeTaskDefinition", "RegisterTaskDefinition", "UpdateService"]"#;

/// The ARN of task definition `app:REVISION` in moto's account.
fn arn(revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task-definition/app:{revision}")
}

/// A later step that fails, so that the run rolls back.
const FAILING_STEP: &str = "\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";

/// A fresh moto_server with cluster `prod` and its Fargate service `web`
/// of 2 tasks on task definition `app:1`: container `app` on
/// `repo/app:1.2.2` and an `envoy` sidecar, with roles, CPU and memory.
fn estate() -> Moto {
    let moto = Moto::start();
    moto.ecs("CreateCluster", &json!({ "clusterName": "prod" }));
    moto.ecs(
        "RegisterTaskDefinition",
        &json!({
            "family": "app",
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "repo/app:1.2.2",
                    "memory": 512,
                    "essential": true,
                    "portMappings": [{ "containerPort": 8080 }],
                    "environment": [{ "name": "MODE", "value": "live" }]
                },
                { "name": "envoy", "image": "envoy:1.29", "memory": 128 }
            ],
            "taskRoleArn": "arn:aws:iam::123456789012:role/app",
            "executionRoleArn": "arn:aws:iam::123456789012:role/app-exec",
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "1024"
        }),
    );
    moto.ecs(
        "CreateService",
        &json!({
            "cluster": "prod",
            "serviceName": "web",
            "taskDefinition": "app:1",
            "desiredCount": 2,
            "launchType": "FARGATE"
        }),
    );
    moto
}

async fn new_estate() -> Moto {
    tokio::task::spawn_blocking(estate).await.unwrap()
}

/// The task definition service `web` runs, as moto has it.
fn running(moto: &Moto) -> String {
    let described = moto.ecs(
        "DescribeServices",
        &json!({ "cluster": "prod", "services": ["web"] }),
    );
    described["services"][0]["taskDefinition"]
        .as_str()
        .unwrap_or_else(|| panic!("no task definition in {described}"))
        .to_owned()
}

/// A runbook whose step `deploy` puts `image` on container `app` of
/// service `web`, granted `actions` of ECS, with `with` lines added.
fn runbook(image: &str, with: &str, actions: &str) -> String {
    format!(
        "[runbook]\nname = \"deploy\"\n\n[[steps]]\nid = \"deploy\"\nuses = \"ecs-deploy\"\nwith.region = \"us-east-1\"\nwith.cluster = \"prod\"\nwith.service = \"web\"\nwith.images = {{ app = \"{image}\" }}\nwith.poll = \"100ms\"\n{with}grants.aws = {{ services = [\"ecs\"], actions = {actions}, regions = [\"us-east-1\"] }}\n"
    )
}

fn through(proxy: &EcsRollout) -> RunOptions {
    aws_at(&proxy.url)
}

/// How many times the proxy forwarded `action`.
fn count(proxy: &EcsRollout, action: &str) -> usize {
    proxy
        .actions()
        .iter()
        .filter(|forwarded| *forwarded == action)
        .count()
}

#[tokio::test]
async fn a_new_revision_is_registered_and_waited_for_until_its_deployment_completes() {
    let moto = new_estate().await;
    let proxy = EcsRollout::start(&moto.url, Rollout::completing(2))
        .await
        .unwrap();
    let body = runbook("repo/app:1.2.3", "", ALL_ACTIONS);
    let finished = run(&body, through(&proxy)).await;
    let (status, summary, outputs) = finished.step("deploy");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert!(
        summary.starts_with(
            "service web from app:1 to app:2 (app: repo/app:1.2.2 → repo/app:1.2.3), deployment ecs-svc/"
        ) && summary.ends_with(" COMPLETED with 2 tasks running"),
        "{summary}"
    );
    assert_eq!(outputs["task_definition"], arn(2));
    assert_eq!(outputs["previous"], arn(1));
    assert!(outputs["deployment"].starts_with("ecs-svc/"), "{outputs:?}");
    // Read, register, update; then a look per round: two IN_PROGRESS,
    // then COMPLETED.
    let actions = proxy.actions();
    assert_eq!(
        actions[..4],
        [
            "DescribeServices",
            "DescribeTaskDefinition",
            "RegisterTaskDefinition",
            "UpdateService"
        ],
        "{actions:?}"
    );
    assert_eq!(count(&proxy, "DescribeServices"), 4, "{actions:?}");

    // The new revision, read back from ECS: the new image in `app`, the
    // rest of the task definition as it was.
    let _moto = tokio::task::spawn_blocking(move || {
        assert_eq!(running(&moto), arn(2));
        let described = moto.ecs(
            "DescribeTaskDefinition",
            &json!({ "taskDefinition": arn(2) }),
        );
        let definition = &described["taskDefinition"];
        assert_eq!(definition["family"], "app");
        assert_eq!(definition["revision"], 2);
        let containers = &definition["containerDefinitions"];
        assert_eq!(containers[0]["name"], "app");
        assert_eq!(containers[0]["image"], "repo/app:1.2.3");
        assert_eq!(containers[0]["environment"][0]["value"], "live");
        assert_eq!(containers[0]["portMappings"][0]["containerPort"], 8080);
        assert_eq!(containers[1]["image"], "envoy:1.29");
        assert_eq!(
            definition["taskRoleArn"],
            "arn:aws:iam::123456789012:role/app"
        );
        assert_eq!(
            definition["executionRoleArn"],
            "arn:aws:iam::123456789012:role/app-exec"
        );
        assert_eq!(definition["networkMode"], "awsvpc");
        assert_eq!(definition["cpu"], "256");
        assert_eq!(definition["memory"], "1024");
        assert_eq!(definition["requiresCompatibilities"][0], "FARGATE");
        moto
    })
    .await
    .unwrap();

    // Run again: the service already runs the image, nothing is sent.
    let before = proxy.actions().len();
    let again = run(&body, through(&proxy)).await;
    let (status, summary, outputs) = again.step("deploy");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "service web already runs app: repo/app:1.2.3 (app:2)"
    );
    assert_eq!(outputs["task_definition"], arn(2));
    assert_eq!(outputs["previous"], arn(2));
    assert_eq!(
        proxy.actions()[before..],
        ["DescribeServices", "DescribeTaskDefinition"]
    );
}

#[tokio::test]
async fn a_later_failure_rolls_the_service_back_to_its_previous_revision() {
    let moto = new_estate().await;
    let proxy = EcsRollout::start(&moto.url, Rollout::completing(1))
        .await
        .unwrap();
    let body = format!(
        "{}{FAILING_STEP}",
        runbook("repo/app:1.2.3", "", ALL_ACTIONS)
    );
    let finished = run(&body, through(&proxy)).await;
    let (status, summary, outputs) = finished.step("deploy");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(outputs["task_definition"], arn(2));
    assert_eq!(finished.report.status, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    let log = finished.log();
    assert!(
        log.contains("service web back on app:1, deployment ecs-svc/"),
        "{log}"
    );
    assert!(log.contains(" COMPLETED"), "{log}");
    assert_eq!(count(&proxy, "UpdateService"), 2, "{:?}", proxy.actions());
    let on = tokio::task::spawn_blocking(move || running(&moto))
        .await
        .unwrap();
    assert_eq!(on, arn(1));
}

#[tokio::test]
async fn a_deployment_the_circuit_breaker_fails_fails_the_step_and_is_undone() {
    let moto = new_estate().await;
    // The circuit breaker without `rollback`: the failed deployment stays,
    // and the step puts the service back itself.
    let proxy = EcsRollout::start(&moto.url, Rollout::failing(1, false))
        .await
        .unwrap();
    let finished = run(&runbook("repo/app:1.2.3", "", ALL_ACTIONS), through(&proxy)).await;
    let (status, summary, _) = finished.step("deploy");
    assert_eq!(status, Status::Failed, "{summary}\n{}", finished.log());
    let reason = CIRCUIT_BREAKER_REASON.trim_end_matches('.');
    assert!(
        summary.contains(&format!("of app:2 failed: {reason}; ")),
        "{summary}"
    );
    assert!(
        summary.contains("service web back on app:1, deployment ecs-svc/"),
        "{summary}"
    );
    assert_eq!(count(&proxy, "UpdateService"), 2, "{:?}", proxy.actions());
    let on = tokio::task::spawn_blocking(move || running(&moto))
        .await
        .unwrap();
    assert_eq!(on, arn(1));
}

#[tokio::test]
async fn a_deployment_the_circuit_breaker_rolls_back_is_waited_for_not_undone_again() {
    let moto = new_estate().await;
    // The circuit breaker with `rollback`: ECS puts the service back.
    let proxy = EcsRollout::start(&moto.url, Rollout::failing(1, true))
        .await
        .unwrap();
    let finished = run(&runbook("repo/app:1.2.3", "", ALL_ACTIONS), through(&proxy)).await;
    let (status, summary, _) = finished.step("deploy");
    assert_eq!(status, Status::Failed, "{summary}\n{}", finished.log());
    let reason = CIRCUIT_BREAKER_REASON.trim_end_matches('.');
    assert!(summary.contains(reason), "{summary}");
    assert!(
        summary.contains("service web already back on app:1, deployment ecs-svc/"),
        "{summary}"
    );
    assert!(summary.ends_with(" COMPLETED"), "{summary}");
    // Only the step's own update: the rollback was ECS's.
    assert_eq!(count(&proxy, "UpdateService"), 1, "{:?}", proxy.actions());
    let on = tokio::task::spawn_blocking(move || running(&moto))
        .await
        .unwrap();
    assert_eq!(on, arn(1));
}

#[tokio::test]
async fn plan_says_the_new_revision_and_sends_nothing() {
    let moto = new_estate().await;
    let file = TestRunbook::new(&runbook("repo/app:1.2.3", "", ALL_ACTIONS));
    let output = crate::support::plan_with_aws(&file.path, &moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains(
            "register app:2 (app: repo/app:1.2.2 → repo/app:1.2.3) and roll service web onto it (from app:1)"
        ),
        "{said}"
    );
    assert!(
        stdout.contains("wait until the deployment is COMPLETED, at most 30m"),
        "{said}"
    );
    tokio::task::spawn_blocking(move || {
        assert_eq!(running(&moto), arn(1));
        // No second revision was registered.
        let newest = moto.ecs(
            "DescribeTaskDefinition",
            &json!({ "taskDefinition": "app" }),
        );
        assert_eq!(newest["taskDefinition"]["revision"], 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_update_outside_the_grant_is_denied_recorded_and_never_sent() {
    let moto = new_estate().await;
    let body = runbook(
        "repo/app:1.2.3",
        "",
        r#"["DescribeServices", "DescribeTaskDefinition", "RegisterTaskDefinition"]"#,
    );
    let finished = run(&body, aws_at(&moto.url)).await;
    let (status, summary, _) = finished.step("deploy");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("action `UpdateService` is not granted"),
        "{summary}"
    );
    assert!(
        finished
            .aws_decisions("DescribeServices")
            .contains(&Decision::Allowed)
    );
    assert_eq!(finished.aws_decisions("UpdateService"), [Decision::Denied]);
    let on = tokio::task::spawn_blocking(move || running(&moto))
        .await
        .unwrap();
    assert_eq!(on, arn(1));
}

#[test]
fn no_images_or_an_image_with_a_space_is_refused_by_validate() {
    for (images, wanted) in [
        ("{}", "give each container to change and its new image"),
        (
            "{ app = \"repo/app 1.2.3\" }",
            "`repo/app 1.2.3` is not an image reference",
        ),
    ] {
        let body = runbook("x", "", ALL_ACTIONS).replace(
            "with.images = { app = \"x\" }",
            &format!("with.images = {images}"),
        );
        let file = TestRunbook::new(&body);
        let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(wanted), "{said}");
    }
}
