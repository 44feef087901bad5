//! Shared test helpers: write a runbook into a temporary folder, run it
//! through the library's pipeline (the one `runbook exec` runs) with an
//! event recorder, and look at what happened.

use runbook::engine::{Ask, RunReport};
use runbook::events::{Decision, Event, EventKind, EventSink, Recorder, Status};
use runbook::plugin::{PluginRuntime, RuntimeOptions};
use runbook::run::{self, Connections, Ended, Interface, Notice, Secrets, Start};
use runbook::runbook::Bindings;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// The plugins a test runbook can use, by the names in `[plugins]`.
pub fn plugins_table() -> String {
    let mut table = String::from("[plugins]\n");
    for name in [
        "smoke-test",
        "noop",
        "noop-once",
        "misbehave",
        "recorder",
        "k8s-rollout",
        "feature-flag",
        "notify",
        "metrics-gate",
        "canary-shift",
        "k8s-job",
        "k8s-read",
        "k8s-apply",
        "rds-snapshot",
        "registry-push",
        "rounds",
        "lb-weights",
        "command",
        "dns-record",
        "ecs-deploy",
        "lambda-alias",
        "static-site",
    ] {
        let path = runbook_testenv::plugin_path(name);
        table.push_str(&format!("{name} = {:?}\n", path.display().to_string()));
    }
    table
}

/// A compiled-component cache shared by the tests of this binary.
pub fn cache_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"))
        .path()
        .to_path_buf()
}

/// A runtime over the shared cache.
pub fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(cache_dir()),
        ..Default::default()
    })
    .expect("runtime starts")
}

/// A runbook in a temporary folder.
pub struct TestRunbook {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
    /// The runbook file.
    pub path: PathBuf,
}

impl TestRunbook {
    /// Writes `body` (everything but `[plugins]`) as `runbook.toml`.
    pub fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("runbook.toml");
        std::fs::write(&path, format!("{body}\n{}", plugins_table())).expect("write runbook");
        TestRunbook { dir, path }
    }
}

/// What a run left behind.
pub struct Finished {
    /// How it ended.
    pub report: RunReport,
    /// Every event with its redacted JSON line.
    pub events: Vec<(Event, String)>,
}

impl Finished {
    /// The `StepFinished` of a step: status and summary.
    pub fn step(&self, id: &str) -> (Status, String, BTreeMap<String, String>) {
        self.events
            .iter()
            .find_map(|(event, _)| match &event.kind {
                EventKind::StepFinished {
                    status,
                    summary,
                    outputs,
                    ..
                } if event.step.as_ref().is_some_and(|step| step.0 == id) => {
                    Some((*status, summary.clone(), outputs.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("step `{id}` did not finish; events: {:#?}", self.lines()))
    }

    /// Every event as its JSON line.
    pub fn lines(&self) -> Vec<String> {
        self.events.iter().map(|(_, line)| line.clone()).collect()
    }

    /// The whole log as one string.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// The run's calls of `capability` (its audit records), in order.
    pub fn calls(&self, capability: &str) -> Vec<Called> {
        self.events
            .iter()
            .filter_map(|(event, _)| match &event.kind {
                EventKind::CapabilityCall {
                    capability: called,
                    requested,
                    decision,
                    outcome,
                    ok,
                    ..
                } if called == capability => Some(Called {
                    requested: requested.clone(),
                    decision: *decision,
                    outcome: outcome.clone(),
                    ok: *ok,
                }),
                _ => None,
            })
            .collect()
    }

    /// The run's `aws` calls of `action` (`requested` is `SERVICE:ACTION in
    /// REGION`).
    pub fn aws_calls(&self, action: &str) -> Vec<Called> {
        let named = format!(":{action} ");
        self.calls("aws")
            .into_iter()
            .filter(|call| call.requested.contains(&named))
            .collect()
    }

    /// How each `aws` call of `action` was decided.
    pub fn aws_decisions(&self, action: &str) -> Vec<Decision> {
        self.aws_calls(action)
            .into_iter()
            .map(|call| call.decision)
            .collect()
    }
}

/// One capability call of a run, as its event tells it.
#[derive(Debug, Clone)]
pub struct Called {
    /// What was asked.
    pub requested: String,
    /// Allowed, denied or held back.
    pub decision: Decision,
    /// What came of it.
    pub outcome: String,
    /// Whether it did what was asked.
    pub ok: bool,
}

/// Options of a test run.
#[derive(Default)]
pub struct RunOptions {
    /// `--env`.
    pub environment: Option<String>,
    /// `--set`.
    pub sets: Vec<(String, String)>,
    /// Secret values.
    pub secrets: BTreeMap<String, String>,
    /// Cancelled from outside.
    pub cancel: Option<CancellationToken>,
    /// `--parallel`.
    pub parallel: Option<usize>,
    /// AWS credentials and endpoint.
    pub aws: Option<runbook::capability::aws::AwsAccess>,
    /// The cluster connection.
    pub kube: Option<std::sync::Arc<runbook::capability::kube::KubeAccess>>,
    /// Who ticks manual checklists now (the CLI's terminal prompt).
    pub ask: Option<Arc<dyn Ask>>,
    /// Where run state goes, kept by the caller (for a later `rollback`);
    /// else a temporary folder dropped with the run.
    pub state_dir: Option<PathBuf>,
    /// `--record DIR`: each step's cassette.
    pub record: Option<PathBuf>,
}

/// The test's side of a run: its events go to a recorder, its notices
/// are kept, and manual checklists are ticked by the test's `ask`.
struct TestInterface {
    recorder: Recorder,
    ask: Option<Arc<dyn Ask>>,
}

impl Interface for TestInterface {
    fn notice(&self, _notice: Notice) {}

    fn watch(&self, events: &EventSink) {
        events.add(self.recorder.clone());
    }

    fn ask(&self) -> Option<Arc<dyn Ask>> {
        self.ask.clone()
    }
}

/// Runs a runbook file through the library's pipeline, as `runbook exec`
/// does: every check before the run (capabilities and secrets included),
/// the gates, the journal and audit log (in a temporary state folder), the
/// steps, the deployment record.
pub async fn run_file(runtime: &PluginRuntime, path: &Path, options: RunOptions) -> Finished {
    let interface = TestInterface {
        recorder: Recorder::new(),
        ask: options.ask,
    };
    let bindings = Bindings {
        environment: options.environment,
        sets: options.sets,
        operator: "tester".into(),
        run_id: "test-run".into(),
        lenient: false,
    };
    let secrets = Secrets::Given(options.secrets);
    let prepared = run::prepare(runtime, path, bindings, secrets, None, &interface)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let state = tempfile::tempdir().expect("temporary folder");
    let run_options = library_options(&options.state_dir, &state, options.cancel, options.parallel);
    let connections = Connections {
        aws: options.aws,
        kube: options.kube,
        command: Some(runbook::capability::command::CommandAccess::detect(false)),
        record: options.record,
    };
    run_to_end(
        runtime,
        prepared,
        Start::New,
        connections,
        &run_options,
        &interface,
    )
    .await
}

/// The library's options of a test run: state in `state_dir`, else in the
/// temporary `state`.
fn library_options(
    state_dir: &Option<PathBuf>,
    state: &tempfile::TempDir,
    cancel: Option<CancellationToken>,
    parallel: Option<usize>,
) -> run::Options {
    let state_dir = state_dir
        .clone()
        .unwrap_or_else(|| state.path().join("state"));
    shared_state_if_asked(&state_dir);
    run::Options {
        state_dir: Some(state_dir),
        index_dir: state.path().join("index"),
        parallel: parallel.unwrap_or(16),
        emergency: None,
        wait_lock: false,
        wait_approval: false,
        signing_key: None,
        park_after: None,
        cancel: cancel.unwrap_or_default(),
        abort: CancellationToken::new(),
        aws_endpoint: None,
    }
}

/// With `RUNBOOK_TEST_STATE=postgres` (the second pass of the engine
/// suite in `scripts/test`), a state folder not yet used becomes the
/// mirror of a database of its own in one PostgreSQL cluster for the
/// whole test process: the same tests, on the shared backend.
pub fn shared_state_if_asked(state_dir: &Path) {
    if std::env::var("RUNBOOK_TEST_STATE").as_deref() != Ok("postgres")
        || state_dir
            .join(runbook::state::remote::BACKEND_FILE)
            .exists()
        || state_dir.join("runs").exists()
    {
        return;
    }
    let url = fresh_database();
    runbook::state::remote::attach(
        state_dir,
        &runbook::state::BackendFile {
            backend: "postgres".into(),
            url,
            lease_seconds: 5.0,
        },
    )
    .expect("the state folder mirrors its database");
}

/// A new, empty database in the test process's PostgreSQL cluster
/// (started on first use), as its URL.
pub fn fresh_database() -> String {
    static CLUSTER: OnceLock<runbook_testenv::Postgres> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let cluster = CLUSTER.get_or_init(runbook_testenv::Postgres::start);
    let name = format!(
        "state_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    cluster.sql(&format!("CREATE DATABASE {name}"));
    cluster.url_of(&name)
}

/// Runs a prepared run to its end through `run::run`, as the CLI does.
async fn run_to_end(
    runtime: &PluginRuntime,
    prepared: run::Prepared,
    start: Start,
    connections: Connections,
    options: &run::Options,
    interface: &TestInterface,
) -> Finished {
    let ended = run::run(runtime, prepared, start, connections, options, interface)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    ran(ended, interface)
}

/// What a run that ran left; a run stopped at its approval gate fails the
/// test.
fn ran(ended: Ended, interface: &TestInterface) -> Finished {
    let Ended::Ran(finished) = ended else {
        panic!("the run stopped at its approval gate: {ended:?}");
    };
    Finished {
        report: finished.report,
        events: interface.recorder.events(),
    }
}

/// Rolls back run `run_id` after it ended, through the library's pipeline
/// (the one `runbook rollback` runs), in `options.state_dir`, with the
/// secrets and connections of `options`.
pub async fn roll_back(runtime: &PluginRuntime, run_id: &str, options: RunOptions) -> Finished {
    let interface = TestInterface {
        recorder: Recorder::new(),
        ask: options.ask,
    };
    let state = tempfile::tempdir().expect("temporary folder");
    let run_options = library_options(&options.state_dir, &state, options.cancel, options.parallel);
    let request = run::rollback::Request {
        run: run_id.to_owned(),
        operator: "on-call".into(),
        force: false,
        emergency: None,
        secrets: Secrets::Given(options.secrets),
    };
    let (prepared, start) = run::rollback::prepare(runtime, &request, &run_options, &interface)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let connections = Connections {
        aws: options.aws,
        kube: options.kube,
        command: Some(runbook::capability::command::CommandAccess::detect(false)),
        record: options.record,
    };
    run_to_end(
        runtime,
        prepared,
        start,
        connections,
        &run_options,
        &interface,
    )
    .await
}

/// Runs a runbook given as text.
pub async fn run(body: &str, options: RunOptions) -> Finished {
    let runbook = TestRunbook::new(body);
    run_file(&runtime(), &runbook.path, options).await
}

/// Options that send AWS calls to `endpoint` (moto) with test credentials.
pub fn aws_at(endpoint: &str) -> RunOptions {
    RunOptions {
        aws: Some(runbook::capability::aws::AwsAccess {
            credentials: Some(runbook::capability::aws::sigv4::Credentials {
                access_key_id: "AKIDTEST".into(),
                secret_access_key: "test-secret".into(),
                session_token: None,
            }),
            endpoint: Some(url::Url::parse(endpoint).expect("an endpoint URL")),
        }),
        ..RunOptions::default()
    }
}

/// `runbook plan FILE --aws-endpoint ENDPOINT`, off the test's runtime.
pub async fn plan_with_aws(file: &Path, endpoint: &str) -> std::process::Output {
    let (file, endpoint) = (file.display().to_string(), endpoint.to_owned());
    tokio::task::spawn_blocking(move || runbook_cli(&["plan", &file, "--aws-endpoint", &endpoint]))
        .await
        .expect("plan runs")
}

/// Runs the `runbook` binary with `args`, the shared compiled-plugin cache,
/// no colour, and the AWS test credentials moto takes.
pub fn runbook_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("runbook runs")
}

/// What a command printed: its standard output, then its standard error.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The run id `exec` prints in its header line `… · run ID`.
pub fn run_id(output: &std::process::Output) -> String {
    let all = text(output);
    all.split(" · run ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in: {all}"))
        .to_owned()
}

/// The `.toml` files of a folder, sorted.
pub fn toml_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    files
}

/// Runs `kubectl` against the cluster `kubeconfig` points at (the
/// API-server emulator); its standard output. Fails the test when kubectl
/// fails, with what it said.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("kubectl")
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("kubectl is installed (scripts/test installs the Debian package `kubectl`)");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .unwrap()
}

/// `kubectl get` of one object (`deployment/api`) in `namespace`, printed
/// through a JSONPath template (`{.status.updatedReplicas}`).
pub async fn kubectl_get(
    kubeconfig: &Path,
    namespace: &str,
    object: &str,
    jsonpath: &str,
) -> String {
    let output = format!("jsonpath={jsonpath}");
    kubectl(kubeconfig, &["get", object, "-n", namespace, "-o", &output]).await
}
