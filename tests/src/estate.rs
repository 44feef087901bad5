//! The local estate: everything the five source runbooks deploy to, on
//! fixed loopback ports, standing in for a production estate — the
//! Kubernetes API-server emulator with each runbook's namespaces,
//! Deployments, Services and traffic routers; the OCI registry; moto with
//! the RDS instances; Prometheus scraping the sample service, which also
//! serves the health endpoints, the feature-flag admin API and a webhook
//! receiver. Each runbook's `local` environment points here.
//!
//! Releases listed as bad misbehave the way a bad release does: a
//! deployment running one fails 30% of its requests and answers in 400 ms
//! (Prometheus sees it), and a main deployment running one makes the health
//! checks fail.

use crate::{KubeEmulator, Moto, Postgres, Prometheus, Registry, SampleService};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where each service listens.
pub mod ports {
    /// The sample service: health, API, flags, webhooks, metrics.
    pub const SAMPLE: u16 = 18080;
    /// The Kubernetes API-server emulator.
    pub const KUBE: u16 = 16443;
    /// The OCI registry.
    pub const REGISTRY: u16 = 15000;
    /// moto_server (AWS).
    pub const MOTO: u16 = 15001;
    /// Prometheus.
    pub const PROMETHEUS: u16 = 19090;
    /// PostgreSQL.
    pub const POSTGRES: u16 = 15432;
}

/// Each runbook's database in the estate's PostgreSQL: the folder of its
/// alembic project under `runbooks/migrations/`, the database's name, and
/// the secret (an environment variable) that holds its URL.
pub const DATABASES: &[(&str, &str, &str)] = &[
    ("riskcast", "riskcast", "RISKCAST_DATABASE_URL"),
    ("api-platform", "api_platform", "API_PLATFORM_DATABASE_URL"),
    ("doc-0020", "ledger", "LEDGER_DATABASE_URL"),
    ("rastup", "rastup", "RASTUP_DATABASE_URL"),
    ("stonecaster", "stonecaster", "STONECASTER_DATABASE_URL"),
];

/// The alembic revision of every database before a deploy: the schema
/// the workloads' 1.0.0 runs on.
pub const INITIAL_REVISION: &str = "0001";

/// The bearer token of the flag admin API.
pub const ADMIN_TOKEN: &str = "local-admin-token";
/// The routing key the runbooks page on-call with (PagerDuty's Events API).
pub const PAGERDUTY_KEY: &str = "local-routing-key";
/// The API key of the Statuspage-like API the runbooks keep incidents in
/// (the estate takes any).
pub const STATUSPAGE_KEY: &str = "local-statuspage-key";
/// The password of the registry's account (the estate's registry takes
/// any).
pub const DOCKERHUB_TOKEN: &str = "local-registry-password";
/// The API key `/v1/decisions` wants.
pub const TEST_KEY: &str = "local-test-key";
/// The version every workload runs at first.
pub const INITIAL_VERSION: &str = "1.0.0";

/// A deployment whose version decides how a track of traffic behaves.
struct Watched {
    namespace: &'static str,
    deployment: &'static str,
    track: &'static str,
    /// A main deployment: a bad version here fails the health checks.
    main: bool,
}

const WATCHED: &[Watched] = &[
    Watched {
        namespace: "riskcast-prod",
        deployment: "riskcast-api",
        track: "riskcast-stable",
        main: true,
    },
    Watched {
        namespace: "riskcast-prod",
        deployment: "riskcast-api-canary",
        track: "riskcast-canary",
        main: false,
    },
    Watched {
        namespace: "riskcast-prod",
        deployment: "riskcast-api-blue",
        track: "riskcast-blue",
        main: false,
    },
    Watched {
        namespace: "riskcast-prod",
        deployment: "riskcast-api-green",
        track: "riskcast-green",
        main: false,
    },
    Watched {
        namespace: "production",
        deployment: "auth-service",
        track: "api-platform",
        main: true,
    },
    Watched {
        namespace: "production",
        deployment: "user-service",
        track: "api-platform",
        main: true,
    },
    Watched {
        namespace: "production",
        deployment: "org-service",
        track: "api-platform",
        main: true,
    },
    Watched {
        namespace: "doc-0020",
        deployment: "ledger-blue",
        track: "ledger-blue",
        main: true,
    },
    Watched {
        namespace: "doc-0020",
        deployment: "ledger-green",
        track: "ledger-green",
        main: true,
    },
    Watched {
        namespace: "doc-0020",
        deployment: "ledger-canary",
        track: "ledger-canary",
        main: false,
    },
    Watched {
        namespace: "rastup-prod",
        deployment: "rastup-api",
        track: "rastup-stable",
        main: true,
    },
    Watched {
        namespace: "rastup-prod",
        deployment: "rastup-api-canary",
        track: "rastup-canary",
        main: false,
    },
    Watched {
        namespace: "stonecaster",
        deployment: "stonecaster-blue",
        track: "stonecaster-blue",
        main: true,
    },
    Watched {
        namespace: "stonecaster",
        deployment: "stonecaster-green",
        track: "stonecaster-green",
        main: false,
    },
];

/// The running estate.
pub struct Estate {
    /// Health, API, flags, webhooks, metrics.
    pub sample: Arc<SampleService>,
    /// Kubernetes.
    pub kube: Arc<KubeEmulator>,
    /// The OCI registry.
    pub registry: Registry,
    /// AWS.
    pub moto: Moto,
    /// Metrics.
    pub prometheus: Prometheus,
    /// The runbooks' databases ([`DATABASES`]).
    pub postgres: Postgres,
    /// The databases with an alembic project in `runbooks/migrations/`.
    databases: Vec<&'static str>,
    /// Holds the kubeconfig and the images the runbooks push.
    pub dir: PathBuf,
    /// Versions that behave as bad releases.
    pub bad_versions: Vec<String>,
    /// StoneCaster's load balancer and its colours' own endpoints.
    pub stonecaster: StoneCaster,
    watcher: tokio::task::JoinHandle<()>,
}

fn deployment(
    namespace: &str,
    name: &str,
    container: &str,
    image: &str,
    labels: Value,
    replicas: u32,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": container, "image": image}]}},
        },
    })
}

/// An Istio VirtualService whose route `route` sends everything to the
/// `stable` subset and nothing to `canary`.
fn virtual_service(namespace: &str, name: &str, route: &str, stable: &str, canary: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [name], "http": [{"name": route, "route": [
            {"destination": {"host": name, "subset": stable}, "weight": 100},
            {"destination": {"host": name, "subset": canary}, "weight": 0},
        ]}]},
    })
}

fn image(repository: &str) -> String {
    format!(
        "127.0.0.1:{}/{repository}:{INITIAL_VERSION}",
        ports::REGISTRY
    )
}

/// Every Kubernetes object of the five runbooks, as before a deploy.
pub fn objects() -> Vec<Value> {
    let mut objects: Vec<Value> = [
        "riskcast-prod",
        "production",
        "doc-0020",
        "rastup-prod",
        "stonecaster",
    ]
    .iter()
    .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    .collect();
    // RISKCAST (seed 000): the API and its canary behind an Istio VirtualService.
    let riskcast = image("riskcast/api");
    objects.push(deployment(
        "riskcast-prod",
        "riskcast-api",
        "api",
        &riskcast,
        json!({"app": "riskcast", "version": "stable"}),
        3,
    ));
    objects.push(deployment(
        "riskcast-prod",
        "riskcast-api-canary",
        "api",
        &riskcast,
        json!({"app": "riskcast", "version": "canary"}),
        1,
    ));
    objects.push(virtual_service(
        "riskcast-prod",
        "riskcast-api",
        "primary",
        "stable",
        "canary",
    ));
    // Its blue/green strategy: two colours behind the Service's selector,
    // blue live.
    for colour in ["blue", "green"] {
        objects.push(deployment(
            "riskcast-prod",
            &format!("riskcast-api-{colour}"),
            "api",
            &riskcast,
            json!({"app": "riskcast", "version": colour}),
            3,
        ));
    }
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "riskcast-api", "namespace": "riskcast-prod"},
        "spec": {"selector": {"app": "riskcast", "version": "blue"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    // Enterprise API Platform (seed 001): three services.
    for service in ["auth-service", "user-service", "org-service"] {
        objects.push(deployment(
            "production",
            service,
            service,
            &image(&format!("api-platform/{service}")),
            json!({"app": service}),
            2,
        ));
    }
    // DOC-0020 (seed 002): blue/green behind a Service selector.
    let ledger = image("doc-0020/ledger");
    objects.push(deployment(
        "doc-0020",
        "ledger-blue",
        "ledger",
        &ledger,
        json!({"app": "ledger", "version": "blue"}),
        2,
    ));
    objects.push(deployment(
        "doc-0020",
        "ledger-green",
        "ledger",
        &ledger,
        json!({"app": "ledger", "version": "green"}),
        2,
    ));
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ledger", "namespace": "doc-0020"},
        "spec": {"selector": {"app": "ledger", "version": "blue"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    objects.extend(doc_0020_canary(&ledger));
    // RastUp (seed 003): stable and canary behind a Gateway API HTTPRoute.
    let rastup = image("rastup/api");
    objects.push(deployment(
        "rastup-prod",
        "rastup-api",
        "api",
        &rastup,
        json!({"app": "rastup", "track": "stable"}),
        3,
    ));
    objects.push(deployment(
        "rastup-prod",
        "rastup-api-canary",
        "api",
        &rastup,
        json!({"app": "rastup", "track": "canary"}),
        1,
    ));
    objects.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "rastup-api", "namespace": "rastup-prod"},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [
            {"name": "rastup-api-stable", "port": 80, "weight": 100},
            {"name": "rastup-api-canary", "port": 80, "weight": 0},
        ]}]},
    }));
    // StoneCaster (seed 004): blue and green behind a load balancer in moto
    // (see `StoneCaster`), blue live.
    let stonecaster = image("stonecaster/app");
    objects.push(deployment(
        "stonecaster",
        "stonecaster-blue",
        "app",
        &stonecaster,
        json!({"app": "stonecaster", "color": "blue"}),
        3,
    ));
    objects.push(deployment(
        "stonecaster",
        "stonecaster-green",
        "app",
        &stonecaster,
        json!({"app": "stonecaster", "color": "green"}),
        // Stopped: the runbook takes the colour that runs as the live one
        // and provisions the other.
        0,
    ));
    objects
}

/// DOC-0020's canary strategy (seed 002: 5% → 25% → 100%): a canary
/// Deployment beside the two colours, and the VirtualService whose route
/// `primary` weighs `stable` (the live colour) against `canary`.
fn doc_0020_canary(image: &str) -> Vec<Value> {
    vec![
        deployment(
            "doc-0020",
            "ledger-canary",
            "ledger",
            image,
            json!({"app": "ledger", "track": "canary"}),
            1,
        ),
        virtual_service("doc-0020", "ledger", "primary", "stable", "canary"),
    ]
}

/// The versions built into each image folder (one OCI layout holding an
/// image per version, named by it): what the runbooks can deploy locally.
pub const VERSIONS: &[&str] = &["1.0.0", "1.2.3", "1.2.4", "1.3.0", "2.0.0"];

/// The image folders the runbooks push (`runbooks/dist/NAME`).
pub const IMAGES: &[&str] = &[
    "riskcast-api",
    "auth-service",
    "user-service",
    "org-service",
    "ledger",
    "rastup-api",
    "stonecaster",
];

impl Estate {
    /// Starts every service on its fixed port, seeds it, and writes the
    /// kubeconfig and the images under `dir` (images into `images`, the
    /// runbooks' `dist` folder). Blocking parts run on blocking threads.
    pub async fn start(
        dir: &Path,
        images: &Path,
        bad_versions: Vec<String>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for port in [
            ports::SAMPLE,
            ports::KUBE,
            ports::REGISTRY,
            ports::MOTO,
            ports::PROMETHEUS,
            ports::POSTGRES,
        ] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                anyhow::bail!(
                    "port {port} is in use: is a local estate already running? (`scripts/local-env stop`)"
                );
            }
        }
        let sample = Arc::new(SampleService::start_on(ports::SAMPLE, Some(TEST_KEY)).await?);
        let kube = Arc::new(KubeEmulator::start_on(ports::KUBE, Duration::from_millis(150)).await?);
        kube.write_kubeconfig(&dir.join("kubeconfig"))?;
        let migrations = images.parent().unwrap_or(Path::new(".")).join("migrations");
        let (registry, moto, prometheus, postgres, databases) =
            tokio::task::spawn_blocking(move || {
                let registry = Registry::start_on(ports::REGISTRY, None);
                let moto = Moto::start_on(ports::MOTO, &[]);
                let prometheus = Prometheus::start_on(
                    ports::PROMETHEUS,
                    &[
                        format!("127.0.0.1:{}", ports::SAMPLE),
                        format!("127.0.0.1:{}", rastup::METRICS_PORT),
                    ],
                );
                let postgres = Postgres::start_on(ports::POSTGRES);
                let databases = initial_databases(&postgres, &migrations);
                (registry, moto, prometheus, postgres, databases)
            })
            .await?;
        let images = images.to_path_buf();
        tokio::task::spawn_blocking(move || {
            for name in IMAGES {
                let layout = images.join(name);
                // Written once: the images are the same on every start.
                let index = std::fs::read_to_string(layout.join("index.json")).unwrap_or_default();
                if !VERSIONS
                    .iter()
                    .all(|version| index.contains(&format!("\"{version}\"")))
                {
                    crate::registry::write_versions(&layout, name, VERSIONS);
                }
            }
        })
        .await?;
        let watcher = tokio::spawn(watch_versions(
            Arc::clone(&kube),
            Arc::clone(&sample),
            bad_versions.clone(),
        ));
        let stonecaster = StoneCaster::start(&moto.url, Arc::clone(&kube)).await?;
        let estate = Estate {
            sample,
            kube,
            registry,
            moto,
            prometheus,
            postgres,
            databases: databases?,
            dir: dir.to_path_buf(),
            bad_versions,
            stonecaster,
            watcher,
        };
        rastup::start(&estate.sample, &estate.moto, &estate.bad_versions).await?;
        estate.reset();
        let moto = estate.moto.url.clone();
        let api_platform_database = estate.postgres.url_of("api_platform");
        tokio::task::spawn_blocking(move || {
            seed_databases(&moto);
            seed_doc_0020(&moto);
            seed_secrets(&moto, &api_platform_database);
        })
        .await?;
        let moto = estate.moto.url.clone();
        tokio::task::spawn_blocking(move || verify_email_senders(&moto)).await?;
        // Ready means the metric gates have data: Prometheus takes a few
        // scrapes before `rate()` over a new target answers.
        let prometheus_url = estate.prometheus.url.clone();
        tokio::task::spawn_blocking(move || {
            Prometheus::wait_for_at(
                &prometheus_url,
                r#"sum(rate(http_requests_total{track="riskcast-canary"}[5s]))"#,
            )
        })
        .await?;
        Ok(estate)
    }

    /// Puts Kubernetes objects, flags and traffic back as before any deploy.
    pub fn reset(&self) {
        for object in objects() {
            self.kube.apply(object);
        }
        self.stonecaster.reset(&self.kube, &self.moto.url);
        self.kube.forget_migrations();
        for database in &self.databases {
            self.postgres
                .sql(&format!("drop database if exists {database} with (force)"));
            self.postgres.sql(&format!(
                "create database {database} template {database}_initial"
            ));
        }
        self.sample.update(|state| {
            state.admin_token = Some(ADMIN_TOKEN.into());
            state.healthy = true;
            state.unhealthy_workloads.clear();
            state.flags.clear();
            for key in ["new_feature", "new_checkout"] {
                state.flags.insert(
                    key.into(),
                    json!({"key": key, "percentage": 0, "enabled": false}),
                );
            }
            for watched in WATCHED {
                state
                    .traffic
                    .set(watched.track, 0.0005, Duration::from_millis(40));
                state
                    .traffic
                    .place(watched.track, watched.namespace, watched.deployment);
            }
        });
        rastup::reset(&self.sample, &self.moto);
    }

    /// Waits until Prometheus no longer sees the errors of an earlier bad
    /// release (its rate windows are 5 s), so that a run starts calm.
    /// Blocking.
    pub fn wait_until_calm(&self) {
        let query = r#"max(sum by (track) (rate(http_requests_total{code="500"}[5s])) / sum by (track) (rate(http_requests_total[5s])))"#;
        let started = std::time::Instant::now();
        while self
            .prometheus
            .value(query)
            .is_none_or(|worst| worst > 0.001)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the error rates did not settle within 30 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Shell lines that point `runbook` at the estate.
    pub fn environment(&self) -> String {
        format!(
            "# The runbook binary scripts/local-env built, first on PATH.\nexport PATH=\"{}:$PATH\"\nexport KUBECONFIG={}\nexport AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local\nexport ADMIN_TOKEN={ADMIN_TOKEN} TEST_KEY={TEST_KEY}\nexport SLACK_WEBHOOK=http://127.0.0.1:{}/hooks/local/deploys\nexport PAGERDUTY_KEY={PAGERDUTY_KEY} STATUSPAGE_KEY={STATUSPAGE_KEY} DOCKERHUB_TOKEN={DOCKERHUB_TOKEN}\n{}",
            crate::workspace_root().join("target/debug").display(),
            self.dir.join("kubeconfig").display(),
            ports::SAMPLE,
            self.database_secrets()
                .into_iter()
                .map(|(name, url)| format!("export {name}={url}\n"))
                .collect::<String>()
        )
    }

    /// Each database's secret and URL (`RISKCAST_DATABASE_URL`, ...).
    pub fn database_secrets(&self) -> Vec<(String, String)> {
        DATABASES
            .iter()
            .map(|(_, database, secret)| ((*secret).to_owned(), self.postgres.url_of(database)))
            .collect()
    }

    /// The kubeconfig's path.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

/// The secrets DOC-0020's notifications send: any non-empty key opens
/// the sample service's Statuspage and PagerDuty stand-ins.
impl Drop for Estate {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Makes `NAME_initial` for every database of [`DATABASES`] whose alembic
/// project is under `migrations`, at [`INITIAL_REVISION`] by running the
/// project's own migrations: [`Estate::reset`] copies it to `NAME`.
fn initial_databases(postgres: &Postgres, migrations: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut made = Vec::new();
    for (folder, database, _) in DATABASES {
        let config = migrations.join(folder).join("alembic.ini");
        if !config.exists() {
            continue;
        }
        let initial = format!("{database}_initial");
        postgres.sql(&format!("create database {initial}"));
        let output = std::process::Command::new("/usr/bin/alembic")
            .arg("-c")
            .arg(&config)
            .args(["upgrade", INITIAL_REVISION])
            .env("DATABASE_URL", postgres.url_of(&initial))
            .output()
            .map_err(|error| {
                anyhow::anyhow!(
                    "/usr/bin/alembic runs ({error}): scripts/install-services installs Debian's alembic"
                )
            })?;
        anyhow::ensure!(
            output.status.success(),
            "alembic upgrade {INITIAL_REVISION} of {}: {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        // A template takes no connections while it is copied.
        postgres.sql(&format!(
            "alter database {initial} with is_template true allow_connections false"
        ));
        made.push(*database);
    }
    Ok(made)
}

/// The senders the runbooks email from through SES (the API Platform's
/// stakeholder and rollback notifications, seed 001): moto, like SES,
/// refuses to send from an address or domain it has not verified.
fn verify_email_senders(moto: &str) {
    crate::moto::query_at(
        moto,
        "email",
        "2010-12-01",
        "VerifyEmailIdentity",
        &[("EmailAddress", "deploys@example.com")],
    );
    crate::moto::query_at(
        moto,
        "email",
        "2010-12-01",
        "VerifyDomainIdentity",
        &[("Domain", "example.com")],
    );
}

/// The RDS instances of the runbooks that snapshot before migrating.
fn seed_databases(moto: &str) {
    for instance in [
        "api-platform-prod",
        "rastup-prod",
        "stonecaster-prod",
        "riskcast-prod",
    ] {
        crate::moto::query_at(
            moto,
            "rds",
            "2014-10-31",
            "CreateDBInstance",
            &[
                ("DBInstanceIdentifier", instance),
                ("DBInstanceClass", "db.t3.medium"),
                ("Engine", "postgres"),
                ("AllocatedStorage", "50"),
                ("MasterUsername", "admin"),
                ("MasterUserPassword", "local-password"),
            ],
        );
    }
}

/// The secrets the runbooks keep in AWS Secrets Manager: API Platform's
/// database URL (seed 001, "Secrets manager access"), as its `local`
/// environment names it.
fn seed_secrets(moto: &str, api_platform_database: &str) {
    crate::moto::json_at(
        moto,
        "secretsmanager",
        "secretsmanager",
        "CreateSecret",
        &json!({
            "Name": "local/api-platform/database",
            "SecretString": json!({ "url": api_platform_database }).to_string(),
        }),
    );
}

/// DOC-0020's AWS side (seed 002): the ledger's RDS instance with a
/// backup younger than 24 hours ("verify_backup.sh --max-age=24h"), and
/// the SES sender its emails come from.
fn seed_doc_0020(moto: &str) {
    let rds = |action: &str, params: &[(&str, &str)]| {
        crate::moto::query_at(moto, "rds", "2014-10-31", action, params)
    };
    rds(
        "CreateDBInstance",
        &[
            ("DBInstanceIdentifier", "doc-0020-ledger"),
            ("DBInstanceClass", "db.t3.medium"),
            ("Engine", "postgres"),
            ("AllocatedStorage", "20"),
            ("MasterUsername", "admin"),
            ("MasterUserPassword", "local-password"),
        ],
    );
    rds(
        "CreateDBSnapshot",
        &[
            ("DBInstanceIdentifier", "doc-0020-ledger"),
            ("DBSnapshotIdentifier", "doc-0020-ledger-nightly"),
        ],
    );
    crate::moto::query_at(
        moto,
        "email",
        "2010-12-01",
        "VerifyEmailIdentity",
        &[("EmailAddress", "deploys@example.com")],
    );
}

fn tag_of(image: &str) -> &str {
    image.rsplit_once(':').map_or("", |(_, tag)| tag)
}

/// Makes traffic and health follow the versions deployed.
async fn watch_versions(kube: Arc<KubeEmulator>, sample: Arc<SampleService>, bad: Vec<String>) {
    let mut last = Vec::new();
    loop {
        let seen: Vec<(bool, &Watched)> = WATCHED
            .iter()
            .map(|watched| {
                let running = kube
                    .get(
                        "apps/v1",
                        "Deployment",
                        Some(watched.namespace),
                        watched.deployment,
                    )
                    .and_then(|object| {
                        object
                            .pointer("/spec/template/spec/containers/0/image")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                (
                    bad.iter().any(|version| version == tag_of(&running)),
                    watched,
                )
            })
            .collect();
        let flags: Vec<bool> = seen.iter().map(|(is_bad, _)| *is_bad).collect();
        if flags != last {
            sample.update(|state| {
                for (is_bad, watched) in &seen {
                    if *is_bad {
                        state
                            .traffic
                            .set(watched.track, 0.30, Duration::from_millis(400));
                    } else if !seen
                        .iter()
                        .any(|(other_bad, other)| *other_bad && other.track == watched.track)
                    {
                        state
                            .traffic
                            .set(watched.track, 0.0005, Duration::from_millis(40));
                    }
                }
                state.healthy = !seen.iter().any(|(is_bad, watched)| *is_bad && watched.main);
                state.unhealthy_workloads = seen
                    .iter()
                    .filter(|(is_bad, _)| *is_bad)
                    .map(|(_, watched)| watched.deployment.to_owned())
                    .collect();
            });
            last = flags;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ports of StoneCaster's colours' own endpoints (what an internal
/// per-colour host name reaches in production): the idle colour is tested
/// there, never through the public url.
pub mod stonecaster_ports {
    /// The blue colour's endpoints.
    pub const BLUE: u16 = 18141;
    /// The green colour's endpoints.
    pub const GREEN: u16 = 18142;
}

/// A StoneCaster release whose own health endpoint says `degraded` (its
/// metrics stay good): the release that fails verification on the idle
/// colour before it takes any traffic.
pub const STONECASTER_UNHEALTHY_VERSION: &str = "2.0.0";

/// StoneCaster (seed 004) shifts traffic at an application load balancer:
/// in moto, a listener forwarding to the `stonecaster-blue` target group,
/// with `stonecaster-green` beside it; the ARNs, as Terraform would
/// publish them, in ConfigMap `stonecaster/stonecaster-lb`, which the
/// runbook reads. Also the Route 53 zone of its DNS step, the SES sender
/// of its emails, and each colour's own health and API endpoints, whose
/// health follows the version that colour's Deployment runs.
pub struct StoneCaster {
    /// The listener's ARN.
    pub listener: String,
    /// The blue target group's ARN.
    pub blue_group: String,
    /// The green target group's ARN.
    pub green_group: String,
    /// The balancer's DNS name.
    pub dns_name: String,
    /// The balancer's canonical hosted zone.
    pub dns_zone_id: String,
    /// Blue's own endpoints.
    pub blue: Arc<SampleService>,
    /// Green's own endpoints.
    pub green: Arc<SampleService>,
    watcher: tokio::task::JoinHandle<()>,
}

/// The first `<tag>` text of an XML reply.
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    xml[start..start + xml[start..].find('<').unwrap_or(0)].to_owned()
}

impl StoneCaster {
    async fn start(moto: &str, kube: Arc<KubeEmulator>) -> anyhow::Result<Self> {
        let blue =
            Arc::new(SampleService::start_on(stonecaster_ports::BLUE, Some(TEST_KEY)).await?);
        let green =
            Arc::new(SampleService::start_on(stonecaster_ports::GREEN, Some(TEST_KEY)).await?);
        let url = moto.to_owned();
        let (listener, blue_group, green_group, dns_name, dns_zone_id) =
            tokio::task::spawn_blocking(move || {
                let ec2 = |action: &str, params: &[(&str, &str)]| {
                    crate::moto::query_at(&url, "ec2", "2016-11-15", action, params)
                };
                let elb = |action: &str, params: &[(&str, &str)]| {
                    crate::moto::query_at(&url, "elasticloadbalancing", "2015-12-01", action, params)
                };
                let vpc = xml_text(&ec2("CreateVpc", &[("CidrBlock", "10.40.0.0/16")]), "vpcId");
                let subnet = |cidr: &str, zone: &str| {
                    xml_text(
                        &ec2(
                            "CreateSubnet",
                            &[("VpcId", &vpc), ("CidrBlock", cidr), ("AvailabilityZone", zone)],
                        ),
                        "subnetId",
                    )
                };
                let (a, b) = (
                    subnet("10.40.1.0/24", "us-east-1a"),
                    subnet("10.40.2.0/24", "us-east-1b"),
                );
                let balancer = elb(
                    "CreateLoadBalancer",
                    &[("Name", "stonecaster"), ("Subnets.member.1", &a), ("Subnets.member.2", &b)],
                );
                let group = |name: &str| {
                    xml_text(
                        &elb(
                            "CreateTargetGroup",
                            &[("Name", name), ("Protocol", "HTTP"), ("Port", "80"), ("VpcId", &vpc)],
                        ),
                        "TargetGroupArn",
                    )
                };
                let (blue_group, green_group) = (group("stonecaster-blue"), group("stonecaster-green"));
                let listener = xml_text(
                    &elb(
                        "CreateListener",
                        &[
                            ("LoadBalancerArn", &xml_text(&balancer, "LoadBalancerArn")),
                            ("Protocol", "HTTP"),
                            ("Port", "80"),
                            ("DefaultActions.member.1.Type", "forward"),
                            ("DefaultActions.member.1.TargetGroupArn", &blue_group),
                        ],
                    ),
                    "ListenerArn",
                );
                crate::moto::rest_at(
                    &url,
                    "route53",
                    "POST",
                    "/2013-04-01/hostedzone",
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>stonecaster.local.</Name><CallerReference>stonecaster-estate</CallerReference></CreateHostedZoneRequest>",
                );
                crate::moto::query_at(
                    &url,
                    "email",
                    "2010-12-01",
                    "VerifyEmailIdentity",
                    &[("EmailAddress", "deploys@stonecaster.local")],
                );
                (
                    listener,
                    blue_group,
                    green_group,
                    xml_text(&balancer, "DNSName"),
                    xml_text(&balancer, "CanonicalHostedZoneId"),
                )
            })
            .await?;
        let watcher = tokio::spawn(watch_stonecaster_colours(
            kube,
            Arc::clone(&blue),
            Arc::clone(&green),
        ));
        Ok(StoneCaster {
            listener,
            blue_group,
            green_group,
            dns_name,
            dns_zone_id,
            blue,
            green,
            watcher,
        })
    }

    /// Blue takes all traffic again, and the ConfigMap names the balancer.
    fn reset(&self, kube: &KubeEmulator, moto: &str) {
        kube.apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "stonecaster-lb", "namespace": "stonecaster"},
            "data": {
                "listener": self.listener,
                "blue_target_group": self.blue_group,
                "green_target_group": self.green_group,
                "dns_name": self.dns_name,
                "dns_zone_id": self.dns_zone_id,
            },
        }));
        crate::moto::query_at(
            moto,
            "elasticloadbalancing",
            "2015-12-01",
            "ModifyListener",
            &[
                ("ListenerArn", &self.listener),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &self.blue_group),
            ],
        );
    }

    /// The listener's weights as ELBv2 describes them, by colour:
    /// `(blue, green)`, a group the listener does not name counting 0 and
    /// a plain forward to one group counting 1.
    pub fn weights(&self, moto: &str) -> (u32, u32) {
        let reply = crate::moto::query_at(
            moto,
            "elasticloadbalancing",
            "2015-12-01",
            "DescribeListeners",
            &[("ListenerArns.member.1", &self.listener)],
        );
        let (mut blue, mut green) = (0, 0);
        let mut rest = reply.as_str();
        while let Some(at) = rest.find("<TargetGroupArn>") {
            rest = &rest[at..];
            let arn = xml_text(rest, "TargetGroupArn");
            let after = &rest["<TargetGroupArn>".len()..];
            let weight = after
                .find("<Weight>")
                .filter(|weight| {
                    after
                        .find("<TargetGroupArn>")
                        .is_none_or(|next| *weight < next)
                })
                .map_or(1, |_| xml_text(after, "Weight").parse().unwrap_or(0));
            if arn == self.blue_group {
                blue = blue.max(weight);
            } else if arn == self.green_group {
                green = green.max(weight);
            }
            rest = after;
        }
        (blue, green)
    }
}

impl Drop for StoneCaster {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Makes each StoneCaster colour's own health follow the version its
/// Deployment runs: `degraded` for [`STONECASTER_UNHEALTHY_VERSION`].
async fn watch_stonecaster_colours(
    kube: Arc<KubeEmulator>,
    blue: Arc<SampleService>,
    green: Arc<SampleService>,
) {
    loop {
        for (deployment, service) in [("stonecaster-blue", &blue), ("stonecaster-green", &green)] {
            let running = kube
                .get("apps/v1", "Deployment", Some("stonecaster"), deployment)
                .and_then(|object| {
                    object
                        .pointer("/spec/template/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let version = tag_of(&running).to_owned();
            service.update(|state| {
                state.healthy = version != STONECASTER_UNHEALTHY_VERSION;
                state.version = version.clone();
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// RastUp (seed 003) on AWS, as `runbooks/rastup.toml` deploys it: the API
/// as two ECS Fargate services (stable and canary) behind an Application
/// Load Balancer whose listener splits traffic between their target
/// groups, a Lambda function behind alias `live`, the web assets in a
/// versioned S3 bucket behind CloudFront, and the infrastructure and
/// business metrics the seed watches. Self-contained: [`Estate::start`]
/// and [`Estate::reset`] call [`start`] and [`reset`].
///
/// AWS calls of the runbook's `local` environment go to [`aws_url`], a
/// proxy in front of moto that rolls ECS deployments out as ECS does
/// ([`crate::EcsRollout`]: moto's own stay `IN_PROGRESS` on the old task
/// definition for ever) and passes every other call to moto as it is.
///
/// A bad release ([`Estate::bad_versions`]) on the canary service fails
/// 30% of the canary's requests and answers in 400 ms (Prometheus sees it
/// under [`CANARY_TRACK`]); on the stable service it makes `/health` fail.
/// `/health` reports the stable service's version.
pub mod rastup {
    use super::{INITIAL_VERSION, ports};
    use crate::ecs_rollout::Rollout;
    use crate::http::{Request, Response, bind_loopback, serve};
    use crate::moto::{json_at, lambda_at, query_at, rest_at};
    use crate::{EcsRollout, Moto, SampleService};
    use serde_json::{Value, json};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// The AWS endpoint of the runbook's `local` environment.
    pub const AWS_PORT: u16 = 15012;
    /// Where Prometheus scrapes the infrastructure and business metrics.
    pub const METRICS_PORT: u16 = 18082;
    /// The region of everything below.
    pub const REGION: &str = "us-east-1";
    /// The ECS cluster.
    pub const CLUSTER: &str = "rastup-prod";
    /// The ECS service that carries the traffic between releases.
    pub const STABLE_SERVICE: &str = "rastup-api";
    /// The ECS service a release goes onto first.
    pub const CANARY_SERVICE: &str = "rastup-api-canary";
    /// The task definition both services start on (`rastup-api:1`).
    pub const INITIAL_TASK_DEFINITION: &str = "rastup-api:1";
    /// The Lambda function and its alias.
    pub const FUNCTION: &str = "rastup-events";
    /// The alias the runbook moves.
    pub const ALIAS: &str = "live";
    /// The bucket of the web assets (`runbooks/dist/rastup-web`).
    pub const BUCKET: &str = "rastup-web";
    /// The keys the runbook uploads, which [`reset`] deletes again.
    pub const WEB_KEYS: &[&str] = &["index.html", "assets/app.js", "assets/app.css"];
    /// The feature flag of the seed's rollout.
    pub const FLAG: &str = "new_feature_enabled";
    /// Prometheus's `track` of the stable service's requests.
    pub const STABLE_TRACK: &str = "rastup-api-stable";
    /// Prometheus's `track` of the canary service's requests.
    pub const CANARY_TRACK: &str = "rastup-api-canary";
    /// Prometheus's `track` of the Lambda function's new version.
    pub const FUNCTION_TRACK: &str = "rastup-events-canary";
    /// The load balancer's listener. moto makes ARNs and ids at random:
    /// [`start`] seeds its random numbers before creating each of these,
    /// so that they are the same on every start, as the runbook's `local`
    /// environment names them (and [`start`] checks).
    pub const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/rastup-public/51c3b186ad7e5972/6c358004081e963f";
    /// The stable service's target group.
    pub const STABLE_GROUP: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/rastup-api-stable/b1f4a2f2d0a7a5d0";
    /// The canary service's target group.
    pub const CANARY_GROUP: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/rastup-api-canary/61cdc56c453d716e";
    /// The CloudFront distribution in front of [`BUCKET`].
    pub const DISTRIBUTION: &str = "VE6CIEKNRRRYD";

    /// ECS's JSON target prefix.
    const ECS: &str = "AmazonEC2ContainerServiceV20141113";
    /// The image both services start on.
    fn initial_image() -> String {
        format!("127.0.0.1:{}/rastup/api:{INITIAL_VERSION}", ports::REGISTRY)
    }

    /// `http://127.0.0.1:15012`: the AWS endpoint RastUp's runs use.
    pub fn aws_url() -> String {
        format!("http://127.0.0.1:{AWS_PORT}")
    }

    /// Starts the AWS proxy, the metrics endpoint and the watcher that
    /// makes traffic follow the ECS services' versions, and creates the
    /// AWS resources in moto.
    pub(super) async fn start(
        sample: &Arc<SampleService>,
        moto: &Moto,
        bad_versions: &[String],
    ) -> anyhow::Result<()> {
        for port in [AWS_PORT, METRICS_PORT] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                anyhow::bail!(
                    "port {port} is in use: is a local estate already running? (`scripts/local-env stop`)"
                );
            }
        }
        let rollout = EcsRollout::start(&moto.url, Rollout::completing(1)).await?;
        let ecs = rollout.url.trim_start_matches("http://").to_owned();
        // Lives as long as the estate's process: its task is not aborted.
        std::mem::forget(rollout);
        let upstream = moto.url.trim_start_matches("http://").to_owned();
        let (listener, _) = bind_loopback(AWS_PORT).await?;
        tokio::spawn(serve(listener, move |request: Request| {
            let is_ecs = request
                .headers
                .get("x-amz-target")
                .is_some_and(|target| target.starts_with(ECS));
            let to = if is_ecs {
                ecs.clone()
            } else {
                upstream.clone()
            };
            async move {
                pass(&to, &request).await.unwrap_or_else(|error| {
                    Response::text(502, format!("moto is unreachable: {error}"))
                })
            }
        }));
        let (listener, _) = bind_loopback(METRICS_PORT).await?;
        tokio::spawn(serve(listener, |request: Request| async move {
            if request.path == "/metrics" {
                Response {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain; version=0.0.4".into())],
                    body: METRICS.as_bytes().to_vec(),
                    delay: Duration::ZERO,
                }
            } else {
                Response::text(404, "not found")
            }
        }));
        let url = moto.url.clone();
        tokio::task::spawn_blocking(move || create(&url)).await??;
        create_function(moto);
        let (sample, url, bad) = (Arc::clone(sample), moto.url.clone(), bad_versions.to_vec());
        std::thread::spawn(move || watch(&sample, &url, &bad));
        Ok(())
    }

    /// The infrastructure and business metrics of the seed ("CPU
    /// utilization < 70%", "search conversion rate", ...), steady, as a
    /// healthy estate has them.
    const METRICS: &str = "# TYPE rastup_cpu_utilization gauge
rastup_cpu_utilization{service=\"api\"} 0.35
rastup_cpu_utilization{service=\"search\"} 0.41
rastup_cpu_utilization{service=\"messaging\"} 0.22
# TYPE rastup_memory_utilization gauge
rastup_memory_utilization{service=\"api\"} 0.52
rastup_memory_utilization{service=\"search\"} 0.61
rastup_memory_utilization{service=\"messaging\"} 0.38
# TYPE rastup_db_connections gauge
rastup_db_connections{db=\"rastup-prod\"} 42
# TYPE rastup_db_connections_max gauge
rastup_db_connections_max{db=\"rastup-prod\"} 200
# TYPE rastup_search_conversion_ratio gauge
rastup_search_conversion_ratio 0.031
# TYPE rastup_booking_completion_ratio gauge
rastup_booking_completion_ratio 0.62
# TYPE rastup_payment_success_ratio gauge
rastup_payment_success_ratio 0.985
";

    /// Puts RastUp's AWS resources, flag, traffic and version back as
    /// before any deploy. Blocking (plain sockets), callable from anywhere.
    pub(super) fn reset(sample: &SampleService, moto: &Moto) {
        // A service that moved goes back through the proxy, so that it
        // rolls the service back as ECS would and then shows it steady. (A
        // service already there is left alone: then no call goes through
        // the proxy, whose tasks may share this thread's runtime when the
        // estate resets itself as it starts.)
        for service in [STABLE_SERVICE, CANARY_SERVICE] {
            let on = ecs_call(
                &moto.url,
                "DescribeServices",
                &json!({ "cluster": CLUSTER, "services": [service] }),
            )
            .and_then(|described| {
                described["services"][0]["taskDefinition"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
            if on.rsplit('/').next() == Some(INITIAL_TASK_DEFINITION) {
                continue;
            }
            json_at(
                &aws_url(),
                "ecs",
                ECS,
                "UpdateService",
                &json!({ "cluster": CLUSTER, "service": service, "taskDefinition": INITIAL_TASK_DEFINITION }),
            );
            for _ in 0..3 {
                json_at(
                    &aws_url(),
                    "ecs",
                    ECS,
                    "DescribeServices",
                    &json!({ "cluster": CLUSTER, "services": [service] }),
                );
            }
        }
        let modified = elb(&moto.url, "ModifyListener", &listener_weights(100, 0));
        assert!(modified.contains("<ListenerArn>"), "{modified}");
        let alias = lambda_at(
            &moto.url,
            "PUT",
            &format!("/2015-03-31/functions/{FUNCTION}/aliases/{ALIAS}"),
            &json!({ "FunctionVersion": "1", "RoutingConfig": { "AdditionalVersionWeights": {} } })
                .to_string(),
        );
        assert!(alias.starts_with("HTTP/1.1 20"), "{alias}");
        // New code in `$LATEST` on every reset: what CI uploads before the
        // runbook publishes it.
        static BUILDS: AtomicU64 = AtomicU64::new(0);
        let build = BUILDS.fetch_add(1, Ordering::Relaxed);
        moto.update_lambda_code(
            FUNCTION,
            &format!("def handler(event, context):\n    return {{'build': {build}}}\n"),
        );
        for key in WEB_KEYS {
            rest_at(&moto.url, "s3", "DELETE", &format!("/{BUCKET}/{key}"), "");
        }
        sample.update(|state| {
            state.flags.insert(
                FLAG.into(),
                json!({"key": FLAG, "percentage": 0, "enabled": false}),
            );
            for track in [STABLE_TRACK, CANARY_TRACK, FUNCTION_TRACK] {
                state.traffic.set(track, 0.0005, Duration::from_millis(40));
            }
            state.version = INITIAL_VERSION.into();
        });
    }

    /// Creates the cluster, its task definition and both services, the
    /// load balancer with its target groups and listener (all traffic to
    /// stable), and the versioned bucket with its distribution.
    fn create(moto: &str) -> anyhow::Result<()> {
        let ecs = |action: &str, body: Value| json_at(moto, "ecs", ECS, action, &body);
        ecs("CreateCluster", json!({ "clusterName": CLUSTER }));
        ecs(
            "RegisterTaskDefinition",
            json!({
                "family": "rastup-api",
                "containerDefinitions": [{
                    "name": "api",
                    "image": initial_image(),
                    "memory": 512,
                    "essential": true,
                    "portMappings": [{ "containerPort": 8080 }],
                }],
                "networkMode": "awsvpc",
                "requiresCompatibilities": ["FARGATE"],
                "cpu": "256",
                "memory": "1024",
            }),
        );
        for (service, count) in [(STABLE_SERVICE, 3), (CANARY_SERVICE, 1)] {
            ecs(
                "CreateService",
                json!({
                    "cluster": CLUSTER,
                    "serviceName": service,
                    "taskDefinition": INITIAL_TASK_DEFINITION,
                    "desiredCount": count,
                    "launchType": "FARGATE",
                }),
            );
        }
        let ec2 = |action: &str, params: &[(&str, &str)]| {
            query_at(moto, "ec2", "2016-11-15", action, params)
        };
        let vpc = first(&ec2("CreateVpc", &[("CidrBlock", "10.30.0.0/16")]), "vpcId")?;
        let subnet = |cidr: &str, zone: &str| {
            first(
                &ec2(
                    "CreateSubnet",
                    &[
                        ("VpcId", &vpc),
                        ("CidrBlock", cidr),
                        ("AvailabilityZone", zone),
                    ],
                ),
                "subnetId",
            )
        };
        let (a, b) = (
            subnet("10.30.1.0/24", "us-east-1a")?,
            subnet("10.30.2.0/24", "us-east-1b")?,
        );
        seed_random(moto, 30031)?;
        let balancer = first(
            &elb(
                moto,
                "CreateLoadBalancer",
                &[
                    ("Name", "rastup-public".into()),
                    ("Subnets.member.1", a),
                    ("Subnets.member.2", b),
                ],
            ),
            "LoadBalancerArn",
        )?;
        let mut groups = Vec::new();
        for (seed, name) in [(30032, "rastup-api-stable"), (30033, "rastup-api-canary")] {
            seed_random(moto, seed)?;
            groups.push(first(
                &elb(
                    moto,
                    "CreateTargetGroup",
                    &[
                        ("Name", name.into()),
                        ("Protocol", "HTTP".into()),
                        ("Port", "80".into()),
                        ("VpcId", vpc.clone()),
                        ("TargetType", "ip".into()),
                    ],
                ),
                "TargetGroupArn",
            )?);
        }
        seed_random(moto, 30034)?;
        let mut params = listener_weights(100, 0);
        params.retain(|(key, _)| *key != "ListenerArn");
        params.extend([
            ("LoadBalancerArn", balancer),
            ("Protocol", "HTTP".into()),
            ("Port", "80".into()),
        ]);
        let listener = first(&elb(moto, "CreateListener", &params), "ListenerArn")?;
        let bucket = rest_at(moto, "s3", "PUT", &format!("/{BUCKET}"), "");
        anyhow::ensure!(bucket.starts_with("HTTP/1.1 200"), "{bucket}");
        let versioned = rest_at(
            moto,
            "s3",
            "PUT",
            &format!("/{BUCKET}?versioning"),
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>",
        );
        anyhow::ensure!(versioned.starts_with("HTTP/1.1 200"), "{versioned}");
        seed_random(moto, 30035)?;
        let distribution = create_distribution(moto)?;
        let made = [
            ("listener", listener.as_str(), LISTENER),
            ("stable target group", groups[0].as_str(), STABLE_GROUP),
            ("canary target group", groups[1].as_str(), CANARY_GROUP),
            ("distribution", distribution.as_str(), DISTRIBUTION),
        ];
        for (what, made, expected) in made {
            anyhow::ensure!(
                made == expected,
                "moto made RastUp's {what} {made}, not {expected}: this moto makes its ids otherwise; put {made} in tests/src/estate.rs (rastup) and in runbooks/rastup.toml's [environments.local]"
            );
        }
        Ok(())
    }

    /// A CloudFront distribution in front of [`BUCKET`], as
    /// [`Moto::create_distribution`] makes one; its id.
    fn create_distribution(moto: &str) -> anyhow::Result<String> {
        let config = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DistributionConfig xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><CallerReference>runbook-{BUCKET}</CallerReference><Comment>{BUCKET}</Comment><Enabled>true</Enabled><Origins><Quantity>1</Quantity><Items><Origin><Id>{BUCKET}</Id><DomainName>{BUCKET}.s3.amazonaws.com</DomainName><S3OriginConfig><OriginAccessIdentity></OriginAccessIdentity></S3OriginConfig></Origin></Items></Origins><DefaultCacheBehavior><TargetOriginId>{BUCKET}</TargetOriginId><ViewerProtocolPolicy>redirect-to-https</ViewerProtocolPolicy><MinTTL>0</MinTTL><ForwardedValues><QueryString>false</QueryString><Cookies><Forward>none</Forward></Cookies></ForwardedValues><TrustedSigners><Enabled>false</Enabled><Quantity>0</Quantity></TrustedSigners></DefaultCacheBehavior></DistributionConfig>"
        );
        let created = rest_at(
            moto,
            "cloudfront",
            "POST",
            "/2020-05-31/distribution",
            &config,
        );
        anyhow::ensure!(created.starts_with("HTTP/1.1 201"), "{created}");
        first(&created, "Id")
    }

    /// Function [`FUNCTION`], version 1 published, alias [`ALIAS`] on it.
    fn create_function(moto: &Moto) {
        moto.create_lambda_function(
            FUNCTION,
            "def handler(event, context):\n    return {'build': 'initial'}\n",
        );
        let alias = moto.lambda(
            "POST",
            &format!("/2015-03-31/functions/{FUNCTION}/aliases"),
            &json!({ "Name": ALIAS, "FunctionVersion": "1" }).to_string(),
        );
        assert!(alias.starts_with("HTTP/1.1 201"), "{alias}");
    }

    /// The listener's default action: forward to stable and canary with
    /// these weights (ELBv2's Query parameters, as `lb-weights` sends them).
    fn listener_weights(stable: u32, canary: u32) -> Vec<(&'static str, String)> {
        vec![
            ("ListenerArn", LISTENER.into()),
            ("DefaultActions.member.1.Type", "forward".into()),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                STABLE_GROUP.into(),
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                stable.to_string(),
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn",
                CANARY_GROUP.into(),
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.Weight",
                canary.to_string(),
            ),
        ]
    }

    /// An ELBv2 Query call.
    fn elb(moto: &str, action: &str, params: &[(&str, String)]) -> String {
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        query_at(moto, "elasticloadbalancing", "2015-12-01", action, &params)
    }

    /// The listener's weights as moto has them: `(stable, canary)`.
    pub fn weights(moto: &str) -> (u64, u64) {
        let described = elb(
            moto,
            "DescribeListeners",
            &[("ListenerArns.member.1", LISTENER.into())],
        );
        let mut stable = 0;
        let mut canary = 0;
        for member in described.split("<member>") {
            let weight = first(member, "Weight")
                .ok()
                .and_then(|weight| weight.parse::<u64>().ok());
            if let (Ok(arn), Some(weight)) = (first(member, "TargetGroupArn"), weight) {
                if arn == STABLE_GROUP {
                    stable = weight;
                } else if arn == CANARY_GROUP {
                    canary = weight;
                }
            }
        }
        (stable, canary)
    }

    /// The image tag service `service` runs, as moto has it (not through
    /// the proxy, whose rollouts a look would move on).
    pub fn service_version(moto: &str, service: &str) -> Option<String> {
        let described = ecs_call(
            moto,
            "DescribeServices",
            &json!({ "cluster": CLUSTER, "services": [service] }),
        )?;
        let task_definition = described["services"][0]["taskDefinition"].as_str()?;
        let definition = ecs_call(
            moto,
            "DescribeTaskDefinition",
            &json!({ "taskDefinition": task_definition }),
        )?;
        let image = definition["taskDefinition"]["containerDefinitions"][0]["image"].as_str()?;
        image.rsplit_once(':').map(|(_, tag)| tag.to_owned())
    }

    /// Alias [`ALIAS`]'s version and its other versions' weights.
    pub fn alias(moto: &str) -> (String, Value) {
        let answer = lambda_at(
            moto,
            "GET",
            &format!("/2015-03-31/functions/{FUNCTION}/aliases/{ALIAS}"),
            "",
        );
        let body: Value = answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or_else(|| panic!("GetAlias answered {answer}"));
        let weights = match &body["RoutingConfig"]["AdditionalVersionWeights"] {
            Value::Null => json!({}),
            weights => weights.clone(),
        };
        (
            body["FunctionVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            weights,
        )
    }

    /// Makes traffic, health and `/health`'s version follow the versions
    /// the ECS services run. Runs on its own thread for as long as the
    /// process does.
    fn watch(sample: &SampleService, moto: &str, bad: &[String]) {
        let mut last: Option<(String, String)> = None;
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let (Some(stable), Some(canary)) = (
                service_version(moto, STABLE_SERVICE),
                service_version(moto, CANARY_SERVICE),
            ) else {
                continue;
            };
            let seen = (stable, canary);
            if last.as_ref() == Some(&seen) {
                continue;
            }
            let is_bad = |version: &String| bad.contains(version);
            let was_bad = last.as_ref().is_some_and(|(stable, _)| is_bad(stable));
            sample.update(|state| {
                for (track, version) in [(STABLE_TRACK, &seen.0), (CANARY_TRACK, &seen.1)] {
                    if is_bad(version) {
                        state.traffic.set(track, 0.30, Duration::from_millis(400));
                    } else {
                        state.traffic.set(track, 0.0005, Duration::from_millis(40));
                    }
                }
                if is_bad(&seen.0) {
                    state.healthy = false;
                } else if was_bad {
                    state.healthy = true;
                }
                state.version = seen.0.clone();
            });
            last = Some(seen);
        }
    }

    /// Seeds moto's random numbers (`/moto-api/seed`), so that the next
    /// resource gets the same id on every start.
    fn seed_random(moto: &str, seed: u32) -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let address = moto.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address)?;
        write!(
            stream,
            "POST /moto-api/seed?a={seed} HTTP/1.0\r\nhost: {address}\r\ncontent-length: 0\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        anyhow::ensure!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "moto refused to seed its random numbers: {response}"
        );
        Ok(())
    }

    /// The text of the first `<tag>` in `xml`.
    fn first(xml: &str, tag: &str) -> anyhow::Result<String> {
        let open = format!("<{tag}>");
        let start = xml
            .find(&open)
            .ok_or_else(|| anyhow::anyhow!("no <{tag}> in {xml}"))?
            + open.len();
        let end = xml[start..]
            .find('<')
            .ok_or_else(|| anyhow::anyhow!("no end of <{tag}> in {xml}"))?;
        Ok(xml[start..start + end].to_owned())
    }

    /// An ECS JSON call to moto that gives `None` rather than panicking
    /// (the watcher outlives moto at the end of a process).
    fn ecs_call(moto: &str, action: &str, body: &Value) -> Option<Value> {
        use std::io::{Read, Write};
        let address = moto.trim_start_matches("http://");
        let body = body.to_string();
        let mut stream = std::net::TcpStream::connect(address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "POST / HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amz-target: {ECS}.{action}\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        if !response.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
    }

    /// Sends `request` to `upstream` and gives back its answer whole:
    /// status, headers (an S3 object's `ETag` and `x-amz-version-id`) and
    /// body, de-chunked.
    async fn pass(upstream: &str, request: &Request) -> std::io::Result<Response> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(upstream).await?;
        let mut head = format!("{} {}", request.method, request.path);
        if let Some(query) = &request.query {
            head.push('?');
            head.push_str(query);
        }
        head.push_str(" HTTP/1.1\r\n");
        for (name, value) in &request.headers {
            if !matches!(
                name.as_str(),
                "host" | "connection" | "content-length" | "transfer-encoding"
            ) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!(
            "host: {upstream}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            request.body.len()
        ));
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&request.body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("an answer without a header's end"))?;
        let text = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body = raw[split + 4..].to_vec();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(502);
        let mut headers = Vec::new();
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            match name.as_str() {
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-length" | "connection" => {}
                _ => headers.push((name, value)),
            }
        }
        if chunked {
            body = dechunk(&body);
        }
        Ok(Response {
            status,
            headers,
            body,
            delay: Duration::ZERO,
        })
    }

    /// A chunked body's bytes.
    fn dechunk(mut rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(end) = rest.windows(2).position(|window| window == b"\r\n") {
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            let size =
                usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            rest = &rest[end + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        out
    }
}
