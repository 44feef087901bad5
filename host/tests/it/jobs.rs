//! The `k8s-job` plugin against the API-server emulator: a migration Job
//! runs, its logs reach the step log, a failure carries the exit code, and
//! rollback runs the downgrade Job.

use crate::kube::{cluster, run_on};
use crate::support::kubectl_get;
use runbook::events::Status;

fn migrate(extra: &str) -> String {
    format!(
        "[[steps]]\nid = \"migrate\"\nuses = \"k8s-job\"\nwith.namespace = \"shop\"\nwith.name = \"riskcast-migrate-1\"\nwith.image = \"riskcast/api:1.2.3\"\nwith.command = [\"alembic\", \"upgrade\", \"head\"]\nwith.timeout = \"20s\"\n{extra}grants.kube = {{ namespaces = [\"shop\"], resources = [\"batch/v1/Job\", \"v1/Pod\"], verbs = [\"get\", \"list\", \"create\", \"delete\", \"watch\", \"logs\"] }}\n"
    )
}

#[tokio::test]
async fn a_migration_job_runs_to_completion_and_its_logs_reach_the_step_log() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.job_outcome(
        "riskcast-migrate",
        0,
        "INFO  [alembic.runtime.migration] Running upgrade a1 -> b2\n",
    );
    let finished = run_on(
        &format!("[runbook]\nname = \"migrate\"\n\n{}", migrate("")),
        kubeconfig.clone(),
        None,
    )
    .await;
    let (status, summary, outputs) = finished.step("migrate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "Job riskcast-migrate-1 completed (exit code 0)");
    assert_eq!(outputs["exit_code"], "0");
    assert!(
        finished
            .lines()
            .join("\n")
            .contains("Running upgrade a1 -> b2")
    );
    let succeeded = kubectl_get(
        &kubeconfig,
        "shop",
        "job/riskcast-migrate-1",
        "{.status.succeeded}",
    )
    .await;
    assert_eq!(succeeded, "1");
    let command = kubectl_get(
        &kubeconfig,
        "shop",
        "job/riskcast-migrate-1",
        "{.spec.template.spec.containers[0].command}",
    )
    .await;
    assert_eq!(command, r#"["alembic","upgrade","head"]"#);
}

#[tokio::test]
async fn a_failed_migration_fails_the_step_with_its_exit_code_and_last_log_line() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    emulator.job_outcome(
        "riskcast-migrate",
        3,
        "INFO  starting\nERROR: relation \"decisions\" already exists\n",
    );
    let finished = run_on(
        &format!("[runbook]\nname = \"migrate\"\n\n{}", migrate("")),
        kubeconfig.clone(),
        None,
    )
    .await;
    let (status, summary, _) = finished.step("migrate");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.starts_with("Job riskcast-migrate-1 failed (exit code 3)"),
        "{summary}"
    );
    assert!(
        summary.ends_with("last log line: ERROR: relation \"decisions\" already exists"),
        "{summary}"
    );
    let failed = kubectl_get(
        &kubeconfig,
        "shop",
        "job/riskcast-migrate-1",
        "{.status.failed}",
    )
    .await;
    assert_eq!(failed, "1");
}

#[tokio::test]
async fn rollback_runs_the_downgrade_job_and_a_rerun_replaces_the_finished_job() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let body = format!(
        "[runbook]\nname = \"migrate\"\n\n{}\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        migrate("with.rollback_command = [\"alembic\", \"downgrade\", \"-1\"]\n")
    );
    let finished = run_on(&body, kubeconfig.clone(), None).await;
    assert_eq!(finished.step("migrate").0, Status::Succeeded);
    assert!(
        finished
            .lines()
            .join("\n")
            .contains("ran Job riskcast-migrate-1-rollback: `alembic downgrade -1`")
    );
    let downgrade = emulator
        .get(
            "batch/v1",
            "Job",
            Some("shop"),
            "riskcast-migrate-1-rollback",
        )
        .unwrap();
    assert_eq!(
        downgrade["spec"]["template"]["spec"]["containers"][0]["command"][1],
        "downgrade"
    );
    assert_eq!(downgrade["status"]["succeeded"], 1);
    // Running the migration again replaces the finished Job.
    let again = run_on(
        &format!("[runbook]\nname = \"migrate\"\n\n{}", migrate("")),
        kubeconfig,
        None,
    )
    .await;
    let (status, summary, _) = again.step("migrate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        again
            .lines()
            .join("\n")
            .contains("replacing the finished Job riskcast-migrate-1")
    );
}

/// Re-deploying the live version, whose migration has nothing to apply,
/// and then failing: the rollback must not downgrade the schema that the
/// live code needs. (The emulator's Jobs print what alembic would.)
#[tokio::test]
async fn a_migration_that_changed_nothing_is_not_downgraded_by_a_rollback() {
    let (emulator, _dir, kubeconfig) = cluster().await;
    let step = migrate(
        "with.rollback_command = [\"alembic\", \"downgrade\", \"-1\"]\nwith.changed_when = \"Running upgrade\"\n",
    );
    let live = run_on(
        &format!("[runbook]\nname = \"migrate\"\n\n{step}"),
        kubeconfig.clone(),
        None,
    )
    .await;
    let (status, summary, outputs) = live.step("migrate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["changed"], "true");

    let body = format!(
        "[runbook]\nname = \"migrate\"\non_failure = \"rollback\"\n\n{step}\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n"
    );
    let again = run_on(&body, kubeconfig, None).await;
    let (status, summary, outputs) = again.step("migrate");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(summary.ends_with("it changed nothing"), "{summary}");
    assert_eq!(outputs["changed"], "false");
    assert!(
        again
            .lines()
            .join("\n")
            .contains("nothing to undo: Job riskcast-migrate-1 changed nothing"),
        "{}",
        again.lines().join("\n")
    );
    assert!(
        emulator
            .get(
                "batch/v1",
                "Job",
                Some("shop"),
                "riskcast-migrate-1-rollback"
            )
            .is_none(),
        "no downgrade Job ran"
    );
}
