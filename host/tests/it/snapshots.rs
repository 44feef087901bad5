//! The `rds-snapshot` plugin against moto_server, through a proxy that
//! reports new snapshots as `creating` for a while (moto makes them
//! `available` at once); results checked with the RDS API directly.

use crate::support::{RunOptions, run};
use runbook::events::{EventKind, Status};
use runbook_testenv::{Moto, SlowRds};

/// moto with the `riskcast-db` instance.
pub(crate) async fn rds() -> Moto {
    tokio::task::spawn_blocking(|| {
        let moto = Moto::start();
        moto.rds(
            "CreateDBInstance",
            &[
                ("DBInstanceIdentifier", "riskcast-db"),
                ("DBInstanceClass", "db.t3.micro"),
                ("Engine", "postgres"),
                ("AllocatedStorage", "20"),
                ("MasterUsername", "admin"),
                ("MasterUserPassword", "password123"),
            ],
        );
        moto
    })
    .await
    .unwrap()
}

fn through(endpoint: &str) -> RunOptions {
    crate::support::aws_at(endpoint)
}

fn step(with: &str) -> String {
    format!(
        "[runbook]\nname = \"snapshot\"\n\n[[steps]]\nid = \"snapshot\"\nuses = \"rds-snapshot\"\nwith.region = \"us-east-1\"\nwith.instance = \"riskcast-db\"\n{with}grants.aws = {{ services = [\"rds\"], actions = [\"CreateDBSnapshot\", \"DeleteDBSnapshot\", \"RestoreDBInstanceFromDBSnapshot\", \"Describe*\"], regions = [\"us-east-1\"] }}\n"
    )
}

#[tokio::test]
async fn a_snapshot_is_created_and_waited_for_until_available() {
    let moto = rds().await;
    let proxy = SlowRds::start(&moto.url, 2).await.unwrap();
    let body = step("with.snapshot = \"riskcast-pre-migrate-1-2-3\"\nwith.poll = \"100ms\"\n");
    let finished = run(&body, through(&proxy.url)).await;
    let (status, summary, outputs) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "snapshot riskcast-pre-migrate-1-2-3 of riskcast-db is available"
    );
    assert!(
        outputs["arn"].starts_with("arn:aws:rds:us-east-1:"),
        "{outputs:?}"
    );
    let waited = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(&event.kind, EventKind::Progress { message, .. } if message.ends_with(": creating")))
        .count();
    assert_eq!(waited, 2, "it should have seen `creating` twice");
    let actions = proxy.actions();
    assert_eq!(
        actions[..2],
        ["DescribeDBSnapshots", "CreateDBSnapshot"],
        "{actions:?}"
    );
    let described = tokio::task::spawn_blocking(move || {
        moto.rds(
            "DescribeDBSnapshots",
            &[("DBSnapshotIdentifier", "riskcast-pre-migrate-1-2-3")],
        )
    })
    .await
    .unwrap();
    assert!(
        described.contains("<Status>available</Status>"),
        "{described}"
    );
}

#[tokio::test]
async fn a_snapshot_that_stays_creating_times_out_at_the_deadline() {
    let moto = rds().await;
    let proxy = SlowRds::start(&moto.url, 1000).await.unwrap();
    let body = step("with.snapshot = \"stuck\"\nwith.poll = \"100ms\"\nwith.timeout = \"600ms\"\n");
    let finished = run(&body, through(&proxy.url)).await;
    let (status, summary, _) = finished.step("snapshot");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("snapshot stuck was not done within 600ms"),
        "{summary}"
    );
}

#[test]
fn a_version_with_dots_is_refused_as_a_snapshot_identifier_by_validate() {
    // Refused by the plugin's `check`, which calls nothing: no AWS here.
    let file = crate::support::TestRunbook::new(&step("with.snapshot = \"pre-1.2.3\"\n"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("validate")
        .arg(&file.path)
        .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`pre-1.2.3` is not a snapshot identifier"),
        "{stderr}"
    );
    assert!(
        stderr.contains("runbook.toml:9:17"),
        "at the value: {stderr}"
    );
}

#[tokio::test]
async fn prune_keeps_the_newest_snapshots_with_the_prefix() {
    let moto = rds().await;
    let moto = tokio::task::spawn_blocking(move || {
        for id in ["pre-a", "pre-b", "pre-c", "pre-d", "other"] {
            moto.rds(
                "CreateDBSnapshot",
                &[
                    ("DBInstanceIdentifier", "riskcast-db"),
                    ("DBSnapshotIdentifier", id),
                ],
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        moto
    })
    .await
    .unwrap();
    let finished = run(
        &step("with.mode = \"prune\"\nwith.keep = 2\nwith.prefix = \"pre-\"\n"),
        through(&moto.url),
    )
    .await;
    let (status, summary, outputs) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "deleted 2 of 4 snapshots, kept the newest 2");
    assert_eq!(outputs["deleted"], "pre-a,pre-b");
    let left = tokio::task::spawn_blocking(move || moto.rds("DescribeDBSnapshots", &[]))
        .await
        .unwrap();
    for (id, kept) in [
        ("pre-a", false),
        ("pre-b", false),
        ("pre-c", true),
        ("pre-d", true),
        ("other", true),
    ] {
        assert_eq!(
            left.contains(&format!(
                "<DBSnapshotIdentifier>{id}</DBSnapshotIdentifier>"
            )),
            kept,
            "{id}"
        );
    }
}

#[tokio::test]
async fn an_instance_is_restored_from_a_snapshot() {
    let moto = rds().await;
    let moto = tokio::task::spawn_blocking(move || {
        moto.rds(
            "CreateDBSnapshot",
            &[
                ("DBInstanceIdentifier", "riskcast-db"),
                ("DBSnapshotIdentifier", "before"),
            ],
        );
        moto
    })
    .await
    .unwrap();
    let body = step(
        "with.mode = \"restore\"\nwith.snapshot = \"before\"\nwith.target_instance = \"riskcast-db-restored\"\nwith.poll = \"100ms\"\n",
    );
    let finished = run(&body, through(&moto.url)).await;
    let (status, summary, _) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    let instances = tokio::task::spawn_blocking(move || moto.rds("DescribeDBInstances", &[]))
        .await
        .unwrap();
    assert!(
        instances.contains("<DBInstanceIdentifier>riskcast-db-restored</DBInstanceIdentifier>"),
        "{instances}"
    );
}

#[tokio::test]
async fn an_aurora_cluster_snapshot_is_created_and_waited_for() {
    let moto = rds().await;
    let moto = tokio::task::spawn_blocking(move || {
        moto.rds(
            "CreateDBCluster",
            &[
                ("DBClusterIdentifier", "riskcast-aurora"),
                ("Engine", "aurora-postgresql"),
                ("MasterUsername", "admin"),
                ("MasterUserPassword", "password123"),
            ],
        );
        moto
    })
    .await
    .unwrap();
    let proxy = SlowRds::start(&moto.url, 1).await.unwrap();
    let body = step("with.snapshot = \"aurora-before\"\nwith.poll = \"100ms\"\n")
        .replace(
            "with.instance = \"riskcast-db\"",
            "with.cluster = \"riskcast-aurora\"",
        )
        .replace("\"CreateDBSnapshot\"", "\"CreateDBClusterSnapshot\"");
    let finished = run(&body, through(&proxy.url)).await;
    let (status, summary, outputs) = finished.step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "snapshot aurora-before of riskcast-aurora is available"
    );
    assert!(
        outputs["arn"].contains(":cluster-snapshot:aurora-before"),
        "{outputs:?}"
    );
    assert!(
        proxy
            .actions()
            .contains(&"CreateDBClusterSnapshot".to_owned())
    );
}

#[tokio::test]
async fn verify_passes_on_a_fresh_backup_and_fails_on_none_or_an_old_one() {
    let moto = rds().await;
    let verify = |max_age: &str| {
        step(&format!(
            "with.mode = \"verify\"\nwith.max_age = \"{max_age}\"\n"
        ))
    };
    // RDS keeps an automated snapshot of a new instance: a backup.
    let (status, summary, outputs) = run(&verify("24h"), through(&moto.url))
        .await
        .step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        outputs["snapshot"].starts_with("rds:riskcast-db-"),
        "{outputs:?}"
    );

    // A newer manual snapshot is the newest backup.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let moto = tokio::task::spawn_blocking(move || {
        moto.rds(
            "CreateDBSnapshot",
            &[
                ("DBInstanceIdentifier", "riskcast-db"),
                ("DBSnapshotIdentifier", "nightly-1"),
            ],
        );
        moto
    })
    .await
    .unwrap();
    let (status, summary, outputs) = run(&verify("1h"), through(&moto.url))
        .await
        .step("snapshot");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.starts_with("the newest backup of riskcast-db is nightly-1, "),
        "{summary}"
    );
    assert_eq!(outputs["snapshot"], "nightly-1");
    assert!(outputs["age_seconds"].parse::<u64>().unwrap() < 3600);

    // Too old.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, summary, _) = run(&verify("1s"), through(&moto.url))
        .await
        .step("snapshot");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("nightly-1") && summary.contains("older than max_age 1s"),
        "{summary}"
    );

    // None at all.
    let ghost = verify("24h").replace("riskcast-db", "ghost-db");
    let (status, summary, _) = run(&ghost, through(&moto.url)).await.step("snapshot");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("ghost-db has no available snapshot"),
        "{summary}"
    );
}

#[test]
fn verify_without_max_age_is_refused_by_validate() {
    let file = crate::support::TestRunbook::new(&step("with.mode = \"verify\"\n"));
    let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("max_age"), "{said}");
}
