//! The AWS capability against moto_server: granted calls are signed on the
//! host and reach the service; calls outside the grant (another action,
//! region or service) are denied, recorded, and never reach it.

use crate::support::{RunOptions, run};
use runbook::capability::aws::AwsAccess;
use runbook::capability::aws::sigv4::Credentials;
use runbook::events::{Decision, EventKind, Status};
use runbook_testenv::Moto;

fn access(moto: &Moto) -> Option<AwsAccess> {
    Some(AwsAccess {
        credentials: Some(Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "test-secret".into(),
            session_token: None,
        }),
        endpoint: Some(url::Url::parse(&moto.url).unwrap()),
    })
}

fn step(id: &str, service: &str, action: &str, region: &str, params: &str) -> String {
    format!(
        "\n[[steps]]\nid = \"{id}\"\nuses = \"misbehave\"\non_failure = \"continue\"\nneeds = []\nwith.mode = \"aws-call\"\nwith.aws = [\"{service}\", \"{action}\", \"{region}\", {params}]\ngrants.http = [\"http://127.0.0.1:9\"]\ngrants.aws = {{ services = [\"rds\"], actions = [\"CreateDBInstance\", \"CreateDBSnapshot\", \"Describe*\"], regions = [\"us-east-1\"] }}\n"
    )
}

#[tokio::test]
async fn granted_rds_calls_reach_moto_and_the_rest_are_denied_before_sending() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let instance = r#"{ DBInstanceIdentifier = "riskcast-db", DBInstanceClass = "db.t3.micro", Engine = "postgres", AllocatedStorage = "20", MasterUsername = "admin", MasterUserPassword = "password123" }"#;
    let mut body = String::from("[runbook]\nname = \"rds\"\non_failure = \"continue\"\n");
    body.push_str(
        &step("create", "rds", "CreateDBInstance", "us-east-1", instance)
            .replace("needs = []\n", ""),
    );
    body.push_str(
        &step(
            "snapshot",
            "rds",
            "CreateDBSnapshot",
            "us-east-1",
            r#"{ DBInstanceIdentifier = "riskcast-db", DBSnapshotIdentifier = "before-1-2-3" }"#,
        )
        .replace("needs = []", "needs = [\"create\"]"),
    );
    body.push_str(
        &step(
            "delete",
            "rds",
            "DeleteDBInstance",
            "us-east-1",
            r#"{ DBInstanceIdentifier = "riskcast-db", SkipFinalSnapshot = "true" }"#,
        )
        .replace("needs = []", "needs = [\"snapshot\"]"),
    );
    body.push_str(
        &step("elsewhere", "rds", "DescribeDBInstances", "eu-west-1", "{}")
            .replace("needs = []", "needs = [\"snapshot\"]"),
    );
    body.push_str(
        &step("ec2", "ec2", "DescribeInstances", "us-east-1", "{}")
            .replace("needs = []", "needs = [\"snapshot\"]"),
    );
    let finished = run(
        &body,
        RunOptions {
            aws: access(&moto),
            ..RunOptions::default()
        },
    )
    .await;

    let (status, summary, outputs) = finished.step("create");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["status"], "200", "{outputs:?}");
    let (status, summary, outputs) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(outputs["body"].contains("before-1-2-3"), "{outputs:?}");

    for (id, expected) in [
        ("delete", "action `DeleteDBInstance` is not granted"),
        ("elsewhere", "region `eu-west-1` is not granted"),
        ("ec2", "service `ec2` is not granted"),
    ] {
        let (status, summary, _) = finished.step(id);
        assert_eq!(status, Status::Denied, "{id}: {summary}");
        assert!(summary.contains(expected), "{id}: {summary}");
    }
    let denials = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(&event.kind, EventKind::CapabilityCall { capability, decision: Decision::Denied, .. } if capability == "aws"))
        .count();
    assert_eq!(denials, 3);

    // Checked with the AWS API directly: the snapshot exists, the instance
    // was not deleted.
    let snapshots = moto.rds("DescribeDBSnapshots", &[]);
    assert!(
        snapshots.contains("<DBSnapshotIdentifier>before-1-2-3</DBSnapshotIdentifier>"),
        "{snapshots}"
    );
    let instances = moto.rds("DescribeDBInstances", &[]);
    assert!(
        instances.contains("<DBInstanceIdentifier>riskcast-db</DBInstanceIdentifier>"),
        "{instances}"
    );
}

#[tokio::test]
async fn a_step_without_an_aws_grant_is_told_how_to_grant_it() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let body = "[runbook]\nname = \"rds\"\n\n[[steps]]\nid = \"sneaky\"\nuses = \"misbehave\"\nwith.mode = \"aws-call\"\nwith.aws = [\"rds\", \"DeleteDBInstance\", \"us-east-1\", {}]\ngrants.http = [\"http://127.0.0.1:9\"]\n";
    let finished = run(
        body,
        RunOptions {
            aws: access(&moto),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, _) = finished.step("sneaky");
    assert_eq!(status, Status::Denied);
    assert!(summary.contains("grants.aws = { services = [\"rds\"], actions = [\"DeleteDBInstance\"], regions = [\"us-east-1\"] }"), "{summary}");
}

#[tokio::test]
async fn moto_checking_signatures_accepts_the_hosts_sigv4_and_refuses_a_wrong_key() {
    let (moto, key_id, secret) = tokio::task::spawn_blocking(Moto::start_verifying_signatures)
        .await
        .unwrap();
    let body = format!(
        "[runbook]\nname = \"signed\"\n{}",
        step("describe", "rds", "DescribeDBInstances", "us-east-1", "{}")
            .replace("needs = []\n", "")
    );
    let with_key = |secret: &str| {
        Some(AwsAccess {
            credentials: Some(Credentials {
                access_key_id: key_id.clone(),
                secret_access_key: secret.to_owned(),
                session_token: None,
            }),
            endpoint: Some(url::Url::parse(&moto.url).unwrap()),
        })
    };
    let signed = run(
        &body,
        RunOptions {
            aws: with_key(&secret),
            ..RunOptions::default()
        },
    )
    .await;
    let (status, summary, outputs) = signed.step("describe");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["status"], "200", "{outputs:?}");

    let forged = run(
        &body,
        RunOptions {
            aws: with_key("not-the-secret"),
            ..RunOptions::default()
        },
    )
    .await;
    let (_, _, outputs) = forged.step("describe");
    assert_eq!(outputs["status"], "403", "{outputs:?}");
    assert!(
        outputs["body"].contains("SignatureDoesNotMatch"),
        "{outputs:?}"
    );
}

#[tokio::test]
async fn a_plan_holds_back_aws_actions_that_change_things() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let body = format!(
        "[runbook]\nname = \"plan\"\n{}",
        step(
            "snapshot",
            "rds",
            "CreateDBSnapshot",
            "us-east-1",
            r#"{ DBInstanceIdentifier = "riskcast-db", DBSnapshotIdentifier = "planned" }"#
        )
        .replace("needs = []\n", "")
    );
    let file = crate::support::TestRunbook::new(&body);
    let output = crate::support::plan_with_aws(&file.path, &moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("⊘ aws rds:CreateDBSnapshot in us-east-1: not sent (dry run)"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let snapshots = tokio::task::spawn_blocking(move || moto.rds("DescribeDBSnapshots", &[]))
        .await
        .unwrap();
    assert!(!snapshots.contains("planned"), "{snapshots}");
}
