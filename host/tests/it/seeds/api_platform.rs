//! Enterprise API Platform (seed 001): `runbooks/api-platform.toml` end to
//! end on the local estate, by both of the seed's paths (its Helm chart,
//! and kubectl), through the seed's own rollbacks: a release whose health
//! checks fail is undone (Deployments, schema, tags), a migration that
//! fails restores the snapshot and deploys nothing, and a release that
//! succeeded is undone afterwards by `runbook rollback`.

use super::*;

const SERVICES: [&str; 3] = ["auth-service", "user-service", "org-service"];

/// The database the estate gives the API Platform, at revision 0001
/// after every reset.
const DATABASE: &str = "api_platform";

/// The local estate's status page (`vars.statuspage`'s page).
const STATUS_PAGE: &str = "api-platform";

/// [`local_options`] with `--set` values and a state folder.
fn api_platform_options(
    sets: &[(&str, &str)],
    state_dir: Option<std::path::PathBuf>,
) -> RunOptions {
    let mut options = local_options();
    options.sets = sets
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    options.state_dir = state_dir;
    options
}

/// Runs `runbooks/api-platform.toml` in `local` with `sets`, after putting
/// the estate back as before any deploy and then calling `prepare` (to
/// break something on purpose).
async fn deploy_api_platform(
    sets: &[(&str, &str)],
    state_dir: Option<std::path::PathBuf>,
    prepare: impl FnOnce(&'static Estate) + Send + 'static,
) -> Finished {
    let estate = estate();
    estate.reset();
    tokio::task::spawn_blocking(move || {
        estate.wait_until_calm();
        prepare(estate);
    })
    .await
    .unwrap();
    let options = api_platform_options(sets, state_dir);
    let path = workspace_root().join("runbooks/api-platform.toml");
    run_file(&runtime(), &path, options).await
}

/// The database's alembic revision, as `alembic current` would say.
fn revision() -> String {
    schema_of(DATABASE)
}

/// Whether the database has `table` (0002 adds `webhooks`).
fn has_table(table: &str) -> bool {
    estate().postgres.sql_in(
        DATABASE,
        &format!("select count(*) from information_schema.tables where table_name = '{table}'"),
    ) == "1"
}

fn replicas(service: &str) -> u64 {
    estate()
        .kube
        .get("apps/v1", "Deployment", Some("production"), service)
        .unwrap_or_else(|| panic!("production/{service} exists"))["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

/// Whether moto holds an available RDS instance `identifier`.
fn instance_exists(identifier: &str) -> bool {
    runbook_testenv::moto::query_at(
        &estate().moto.url,
        "rds",
        "2014-10-31",
        "DescribeDBInstances",
        &[("DBInstanceIdentifier", identifier)],
    )
    .contains("<DBInstanceStatus>available</DBInstanceStatus>")
}

/// The subjects of every email SES sent so far.
fn email_subjects() -> Vec<String> {
    runbook_testenv::moto::sent_emails_at(&estate().moto.url)
        .iter()
        .filter_map(|email| email["subject"].as_str().map(str::to_owned))
        .collect()
}

/// Every Slack-compatible message posted so far.
fn messages() -> Vec<String> {
    estate()
        .sample
        .state()
        .webhooks
        .iter()
        .filter_map(|message| message["text"].as_str().map(str::to_owned))
        .collect()
}

/// What each service's `latest` and `version` tags point at now.
async fn tags(version: &str) -> Vec<(Option<String>, Option<String>)> {
    let mut found = Vec::new();
    for service in SERVICES {
        let repository = format!("api-platform/{service}");
        found.push((
            tag_digest(&repository, version).await,
            tag_digest(&repository, "latest").await,
        ));
    }
    found
}

/// The three Deployments run 1.0.0 with the estate's two replicas, and
/// the schema is the one 1.0.0 runs.
fn api_platform_is_as_before() {
    for service in SERVICES {
        assert_eq!(
            image_of("production", service),
            estate::INITIAL_VERSION,
            "{service}"
        );
        assert_eq!(
            replicas(service),
            2,
            "{service}: the chart's 5 replicas undone"
        );
    }
    assert_eq!(revision(), estate::INITIAL_REVISION);
    assert!(!has_table("webhooks"), "0002 is not applied");
}

#[tokio::test]
async fn api_platform_helm_release_migrates_applies_the_chart_and_watches() {
    let _turn = turn().await;
    let finished = deploy_api_platform(&[("version", "1.2.3")], None, |_| {}).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(finished.step("deploy-helm").0, Status::Succeeded);
    assert_eq!(finished.step("restore-db").0, Status::Skipped);
    // The read-only status before the migration, and the schema after.
    assert_eq!(
        finished.step("schema-before").2["revision"],
        estate::INITIAL_REVISION,
        "{}",
        finished.log()
    );
    assert_eq!(revision(), "0002");
    assert!(has_table("webhooks"));
    // The chart's values: 5 replicas, an HPA of 5 to 50, the ingress.
    for service in SERVICES {
        assert_eq!(image_of("production", service), "1.2.3", "{service}");
        assert_eq!(replicas(service), 5, "{service}");
        let autoscaler = estate()
            .kube
            .get(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                Some("production"),
                service,
            )
            .unwrap_or_else(|| panic!("the chart's HPA of {service}"));
        assert_eq!(autoscaler["spec"]["minReplicas"], 5);
        assert_eq!(autoscaler["spec"]["maxReplicas"], 50);
    }
    let ingress = estate()
        .kube
        .get(
            "networking.k8s.io/v1",
            "Ingress",
            Some("production"),
            "api-platform",
        )
        .expect("the chart's ingress");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "api.example.com");
    // Both tags of each image, on the same manifest.
    for (service, (version, latest)) in SERVICES.iter().zip(tags("1.2.3").await) {
        assert!(version.is_some(), "{service}:1.2.3 pushed");
        assert_eq!(latest, version, "{service}:latest");
    }
    let snapshot =
        tokio::task::spawn_blocking(|| snapshot_exists("api-platform-prod-snapshot-test-run"))
            .await
            .unwrap();
    assert!(snapshot, "the snapshot is available in RDS");
    // The critical endpoints were called.
    let received = estate().sample.state().received;
    assert!(
        received
            .iter()
            .any(|request| request.method == "POST" && request.path == "/v1/auth/login")
    );
    assert!(received.iter().any(|request| request.path == "/v1/users"));
    let incidents = estate().sample.state().incidents;
    assert!(
        incidents
            .iter()
            .any(|incident| incident["page_id"] == STATUS_PAGE
                && incident["name"] == "API Platform 1.2.3 deployed"
                && incident["status"] == "resolved"),
        "the status page says the release is out: {incidents:?}"
    );
    // #deployments heard the release was out, and then the run's end;
    // stakeholders got the start and the end by email.
    assert!(
        messages()
            .iter()
            .any(|text| text.starts_with("api-platform 1.2.3 is deployed in local")),
        "{:?}",
        messages()
    );
    assert!(
        last_message().starts_with("api-platform local: succeeded"),
        "{}",
        last_message()
    );
    let subjects = tokio::task::spawn_blocking(email_subjects).await.unwrap();
    for status in ["started", "succeeded"] {
        let subject = format!("[{status}] API Platform 1.2.3 deployment in local");
        assert!(subjects.contains(&subject), "{subject}: {subjects:?}");
    }
}

/// The seed's kubectl path (`kubectl set image`, `rollout status`), then
/// its "Rollback Procedures" after the fact: `runbook rollback` undoes
/// the rollout (`kubectl rollout undo`), downgrades the schema to the
/// revision read before, and puts the tags back.
#[tokio::test]
async fn api_platform_kubectl_release_rolled_back_afterwards_restores_images_schema_and_tags() {
    let _turn = turn().await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = Some(state.path().to_path_buf());
    // The registry keeps what earlier tests pushed: each tag must be left
    // as it was before this run, whatever that was.
    let before = tags("1.2.3").await;
    let finished = deploy_api_platform(
        &[("version", "1.2.3"), ("strategy", "kubectl")],
        state_dir.clone(),
        |_| {},
    )
    .await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_every_step(&finished, &[Status::Succeeded, Status::Skipped]);
    assert_eq!(finished.step("deploy-helm").0, Status::Skipped);
    for service in SERVICES {
        assert_eq!(image_of("production", service), "1.2.3", "{service}");
        assert_eq!(replicas(service), 2, "{service}: kubectl sets images only");
    }
    assert_eq!(revision(), "0002");

    roll_back_cleanly(api_platform_options(&[], state_dir)).await;
    api_platform_is_as_before();
    assert_eq!(tags("1.2.3").await, before, "the tags as before the run");
    assert!(
        last_message().starts_with("api-platform local: rolled back in"),
        "{}",
        last_message()
    );
}

/// "Immediate rollback if service completely unavailable": 1.2.4 fails the
/// health endpoints, and everything the run did is undone: the chart's
/// objects, the migration (downgraded to 0001), the tags. The status page
/// opens an incident and resolves it as the seed words it, and the
/// stakeholders get the rollback notification.
#[tokio::test]
async fn api_platform_with_failing_health_checks_rolls_back_the_chart_the_schema_and_the_tags() {
    let _turn = turn().await;
    let latest_before: Vec<Option<String>> = tags("1.2.4")
        .await
        .into_iter()
        .map(|(_, latest)| latest)
        .collect();
    let finished = deploy_api_platform(&[("version", "1.2.4")], None, |_| {}).await;
    assert_eq!(
        finished.report.failed_step.as_deref(),
        Some("health"),
        "{}",
        finished.log()
    );
    assert_eq!(finished.step("migrate").0, Status::Succeeded);
    assert!(
        finished.report.rollback_failures.is_empty(),
        "{}",
        finished.log()
    );
    api_platform_is_as_before();
    for ((service, (version, latest)), before) in
        SERVICES.iter().zip(tags("1.2.4").await).zip(latest_before)
    {
        assert_eq!(version, None, "{service}:1.2.4 removed\n{}", finished.log());
        assert_eq!(latest, before, "{service}:latest restored");
    }
    assert!(
        estate().sample.state().healthy,
        "the old version serves again"
    );
    assert_eq!(
        finished.step("verify-rollback").0,
        Status::Succeeded,
        "/v1/health after the rollback\n{}",
        finished.log()
    );
    assert!(
        last_message().starts_with("api-platform local: failed at step health"),
        "{}",
        last_message()
    );
    let incident = estate()
        .sample
        .state()
        .incidents
        .into_iter()
        .rev()
        .find(|incident| incident["page_id"] == STATUS_PAGE)
        .expect("the status page has an incident");
    assert_eq!(incident["status"], "resolved", "{incident}");
    assert_eq!(
        incident["incident_updates"]
            .as_array()
            .and_then(|updates| updates.last())
            .and_then(|update| update["body"].as_str()),
        Some("Service restored after deployment rollback"),
        "{incident}"
    );
    let subjects = tokio::task::spawn_blocking(email_subjects).await.unwrap();
    assert!(
        subjects
            .iter()
            .any(|subject| subject == "Rollback Notification - local Deployment"),
        "{subjects:?}"
    );
}

/// A migration that fails on the data (two users with one email, which
/// 0002's unique index refuses): the revision stays 0001, the snapshot is
/// restored to a new instance (the seed's `prod-db-restore`), nothing is
/// deployed; `runbook rollback` then takes the pushed tags back.
#[tokio::test]
async fn api_platform_with_a_failing_migration_restores_the_snapshot_and_deploys_nothing() {
    let _turn = turn().await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = Some(state.path().to_path_buf());
    let before = tags("1.2.3").await;
    let finished = deploy_api_platform(&[("version", "1.2.3")], state_dir.clone(), |estate| {
        estate.postgres.sql_in(
            DATABASE,
            "insert into users (email, password_hash) values ('twice@example.com', 'a'), ('twice@example.com', 'b')",
        );
    })
    .await;
    assert_eq!(finished.report.status, Status::Failed, "{}", finished.log());
    let (status, summary, _) = finished.step("migrate");
    assert_eq!(status, Status::Failed, "{}", finished.log());
    assert!(summary.contains("failed (exit 1)"), "{summary}");
    assert_eq!(
        finished.step("restore-db").0,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    for skipped in ["migrate-status", "deploy-helm", "health", "watch-errors"] {
        assert_eq!(finished.step(skipped).0, Status::Skipped, "{skipped}");
    }
    let restored = tokio::task::spawn_blocking(|| instance_exists("api-platform-prod-restore"))
        .await
        .unwrap();
    assert!(
        restored,
        "the snapshot was restored to api-platform-prod-restore"
    );
    // The failed revision rolled back in its own transaction: the data
    // and the schema are as before.
    api_platform_is_as_before();
    assert_eq!(
        estate().postgres.sql_in(
            DATABASE,
            "select count(*) from users where email = 'twice@example.com'"
        ),
        "2"
    );

    roll_back_cleanly(api_platform_options(&[], state_dir)).await;
    assert_eq!(tags("1.2.3").await, before, "the tags as before the run");
    api_platform_is_as_before();
    assert!(
        last_message().starts_with("api-platform local: rolled back in"),
        "{}",
        last_message()
    );
}
