//! Secrets from the team's store: `[secrets.NAME]` read from AWS Secrets
//! Manager (moto) with the operator's credentials, or from a file, by the
//! `runbook` binary as an operator runs it. The value reaches the granted
//! server and no file of the state folder; a secret that cannot be read
//! (missing, denied, a field its JSON lacks, a file that is not there)
//! refuses the run at its line in the runbook before any step starts.

use crate::support::{TestRunbook, cache_dir, run_id, text};
use runbook_testenv::moto::json_at;
use runbook_testenv::{Moto, SampleService};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const API_TOKEN: &str = "sm-Tok3n-4c1d9e";
const DB_PASSWORD: &str = "db-Pa55-77f0b2";
const DEPLOY_TOKEN: &str = "file-Tok3n-0a9e51";

/// A runbook whose step sends three secrets as headers to the sample
/// service's `/echo`: two from Secrets Manager (one a field of a JSON
/// secret), one from a file beside the runbook. `MOTO` and `BASE` are
/// replaced by the emulator's and the service's addresses.
const RUNBOOK: &str = r#"[runbook]
name = "secret-sources"

[environments.local]
aws_endpoint = "MOTO"
vars.prefix = "prod/api"
vars.region = "us-east-1"
vars.base = "BASE"

[secrets.API_TOKEN]
from = "aws-secretsmanager"
id = "${{ vars.prefix }}/token"
region = "${{ vars.region }}"

[secrets.DB_PASSWORD]
from = "aws-secretsmanager"
id = "${{ vars.prefix }}/db"
region = "${{ vars.region }}"
key = "password"

[secrets.DEPLOY_TOKEN]
from = "file"
path = "deploy-token"

[[steps]]
id = "send"
uses = "smoke-test"
with.checks = [{ name = "echo", url = "${{ vars.base }}/echo", headers = { "x-api-token" = "${{ secrets.API_TOKEN }}", "x-db-password" = "${{ secrets.DB_PASSWORD }}", "x-deploy-token" = "${{ secrets.DEPLOY_TOKEN }}" } }]
grants.http = ["${{ vars.base }}/echo"]
grants.secrets = ["API_TOKEN", "DB_PASSWORD", "DEPLOY_TOKEN"]
"#;

/// The runbook of [`RUNBOOK`] against `moto` and `service`, with its
/// secret file written (with the line ending `echo` leaves).
fn runbook(moto: &Moto, service: &SampleService, text: &str) -> TestRunbook {
    let file = TestRunbook::new(
        &text
            .replace("MOTO", &moto.url)
            .replace("BASE", &service.base_url()),
    );
    std::fs::write(
        file.dir.path().join("deploy-token"),
        format!("{DEPLOY_TOKEN}\n"),
    )
    .unwrap();
    file
}

/// The 1-based line of `text` that holds `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in the runbook"))
        + 1
}

/// Creates secret `name` holding `value` as text in moto (unsigned, as
/// moto takes it before it checks signatures).
fn create_secret(moto_url: &str, name: &str, value: &str) {
    json_at(
        moto_url,
        "secretsmanager",
        "secretsmanager",
        "CreateSecret",
        &serde_json::json!({ "Name": name, "SecretString": value }),
    );
}

/// The secrets [`RUNBOOK`] reads, as the team keeps them.
fn create_secrets(moto_url: &str) {
    create_secret(moto_url, "prod/api/token", API_TOKEN);
    create_secret(
        moto_url,
        "prod/api/db",
        &serde_json::json!({ "username": "api", "password": DB_PASSWORD }).to_string(),
    );
}

/// The operator's side: the binary with AWS credentials, its own run
/// index, no terminal.
struct Operator {
    index: tempfile::TempDir,
    key_id: String,
    secret_key: String,
    env: Vec<(String, String)>,
}

impl Operator {
    fn new(key_id: &str, secret_key: &str) -> Self {
        Operator {
            index: tempfile::tempdir().unwrap(),
            key_id: key_id.to_owned(),
            secret_key: secret_key.to_owned(),
            env: Vec::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("RUNBOOK_INDEX_DIR", self.index.path())
            .env("RUNBOOK_OPERATOR", "alice")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .output()
            .expect("runbook runs")
    }
}

/// Runs `args` off the test's runtime, which serves the sample service.
async fn blocking(operator: Operator, args: Vec<String>) -> (Operator, Output) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = operator.run(&args);
        (operator, output)
    })
    .await
    .unwrap()
}

fn exec_args(file: &TestRunbook) -> Vec<String> {
    vec![
        "exec".into(),
        file.path.display().to_string(),
        "--env".into(),
        "local".into(),
    ]
}

/// Every file below `folder`, recursively.
fn files_below(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Each file below `folders` that holds one of `values`, as `FILE holds
/// VALUE`.
fn holding(folders: &[&Path], values: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in folders.iter().flat_map(|folder| files_below(folder)) {
        let bytes = std::fs::read(&file).unwrap();
        for value in values {
            if bytes
                .windows(value.len())
                .any(|window| window == value.as_bytes())
            {
                found.push(format!("{} holds {value}", file.display()));
            }
        }
    }
    found
}

/// That nothing ran: the service got no request, and no journal of the
/// state folder records a step started.
fn assert_nothing_ran(file: &TestRunbook, service: &SampleService, output: &Output) {
    assert!(
        service.state().received.is_empty(),
        "a step reached the service: {}",
        text(output)
    );
    let state = file.dir.path().join(".runbook");
    for path in files_below(&state) {
        let content = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(
            !content.contains("step_started"),
            "{} records a step started",
            path.display()
        );
    }
}

#[tokio::test]
async fn secrets_from_secrets_manager_and_a_file_reach_the_granted_server_and_no_file_of_the_state_folder()
 {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    create_secrets(&moto.url);
    let file = runbook(&moto, &service, RUNBOOK);
    let operator = Operator::new("AKIDTEST", "test-secret");
    let (operator, output) = blocking(operator, exec_args(&file)).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // The server got each value: the whole text of one secret, the
    // `password` field of the JSON one, the file without its line ending.
    let received = service.state().received;
    let echo = received
        .iter()
        .find(|request| request.path == "/echo")
        .expect("the step called /echo");
    for (header, value) in [
        ("x-api-token", API_TOKEN),
        ("x-db-password", DB_PASSWORD),
        ("x-deploy-token", DEPLOY_TOKEN),
    ] {
        assert_eq!(
            echo.headers.get(header).map(String::as_str),
            Some(value),
            "{header}"
        );
    }

    // `plan --out` reads no secret from a file or Secrets Manager, and
    // its plan holds none.
    let saved = file.dir.path().join(".runbook").join("plan.json");
    let mut plan = exec_args(&file);
    plan[0] = "plan".into();
    plan.extend(["--out".into(), saved.display().to_string()]);
    let (operator, planned) = blocking(operator, plan).await;
    assert!(saved.exists(), "no saved plan: {}", text(&planned));

    // Nothing the run wrote holds a value: journal, audit log, deployment
    // record, run index, saved plan; nor what it printed.
    let state = file.dir.path().join(".runbook");
    let written = files_below(&state);
    assert!(
        written.iter().any(|path| std::fs::read_to_string(path)
            .is_ok_and(|content| content.contains("run_started"))),
        "no journal in {}: {written:?}",
        state.display()
    );
    let values = [API_TOKEN, DB_PASSWORD, DEPLOY_TOKEN];
    let leaks = holding(&[state.as_path(), operator.index.path()], &values);
    assert!(leaks.is_empty(), "{leaks:#?}");
    for printed in [text(&output), text(&planned)] {
        for value in values {
            assert!(!printed.contains(value), "printed {value}: {printed}");
        }
    }
}

#[tokio::test]
async fn a_secret_missing_from_secrets_manager_is_refused_at_its_line_before_any_step() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    // The JSON one is there; `prod/api/token` is not.
    create_secret(
        &moto.url,
        "prod/api/db",
        &serde_json::json!({ "password": DB_PASSWORD }).to_string(),
    );
    let file = runbook(&moto, &service, RUNBOOK);
    let (_, output) = blocking(Operator::new("AKIDTEST", "test-secret"), exec_args(&file)).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("AWS Secrets Manager has no secret `prod/api/token` in us-east-1"),
        "{printed}"
    );
    let line = line_of(RUNBOOK, "id = \"${{ vars.prefix }}/token\"");
    assert!(
        printed.contains(&format!("{}:{line}:", file.path.display())),
        "not at line {line}: {printed}"
    );
    assert!(
        printed.contains(
            "aws secretsmanager describe-secret --secret-id prod/api/token --region us-east-1"
        ),
        "{printed}"
    );
    assert!(!printed.contains(DB_PASSWORD), "{printed}");
    assert_nothing_ran(&file, &service, &output);
}

#[tokio::test]
async fn a_field_the_secrets_json_lacks_is_refused_naming_its_fields_but_no_value() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    create_secret(&moto.url, "prod/api/token", API_TOKEN);
    create_secret(
        &moto.url,
        "prod/api/db",
        &serde_json::json!({ "username": "api", "pass": DB_PASSWORD }).to_string(),
    );
    let file = runbook(&moto, &service, RUNBOOK);
    let (_, output) = blocking(Operator::new("AKIDTEST", "test-secret"), exec_args(&file)).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains(
            "secret `prod/api/db` holds no field `password` (its fields: `pass`, `username`)"
        ),
        "{printed}"
    );
    let line = line_of(RUNBOOK, "key = \"password\"");
    assert!(
        printed.contains(&format!("{}:{line}:", file.path.display())),
        "not at line {line}: {printed}"
    );
    for value in [API_TOKEN, DB_PASSWORD, DEPLOY_TOKEN] {
        assert!(!printed.contains(value), "printed {value}: {printed}");
    }
    assert_nothing_ran(&file, &service, &output);
}

#[tokio::test]
async fn a_secret_file_that_is_not_there_is_refused_at_its_line_before_any_step() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    create_secrets(&moto.url);
    let file = runbook(&moto, &service, RUNBOOK);
    std::fs::remove_file(file.dir.path().join("deploy-token")).unwrap();
    let (_, output) = blocking(Operator::new("AKIDTEST", "test-secret"), exec_args(&file)).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(printed.contains("cannot read secret file"), "{printed}");
    assert!(printed.contains("deploy-token"), "{printed}");
    let line = line_of(RUNBOOK, "path = \"deploy-token\"");
    assert!(
        printed.contains(&format!("{}:{line}:", file.path.display())),
        "not at line {line}: {printed}"
    );
    assert!(!printed.contains(API_TOKEN), "{printed}");
    assert_nothing_ran(&file, &service, &output);
}

/// moto enforcing IAM after the setup's four calls (the secrets, a user,
/// its key, its policy), with a user whose policy allows RDS only; the
/// moto, and that user's access key id and secret key.
fn moto_with_a_user_allowed_rds_only() -> (Moto, String, String) {
    // The two secrets are put there before moto checks signatures.
    Moto::start_verifying_signatures_after(2, |moto| create_secrets(&moto.url))
}

#[tokio::test]
async fn a_read_the_operators_credentials_may_not_make_is_refused_before_any_step() {
    let (moto, key_id, secret_key) = tokio::task::spawn_blocking(moto_with_a_user_allowed_rds_only)
        .await
        .unwrap();
    let service = SampleService::start(None).await.unwrap();
    let file = runbook(&moto, &service, RUNBOOK);
    let (_, output) = blocking(Operator::new(&key_id, &secret_key), exec_args(&file)).await;
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains(
            "reading secret `prod/api/token` from AWS Secrets Manager was denied: AccessDenied"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("is not authorized to perform: secretsmanager:GetSecretValue"),
        "{printed}"
    );
    assert!(
        printed.contains("they need `secretsmanager:GetSecretValue` on `prod/api/token`"),
        "{printed}"
    );
    let line = line_of(RUNBOOK, "id = \"${{ vars.prefix }}/token\"");
    assert!(
        printed.contains(&format!("{}:{line}:", file.path.display())),
        "not at line {line}: {printed}"
    );
    for value in [API_TOKEN, DB_PASSWORD] {
        assert!(!printed.contains(value), "printed {value}: {printed}");
    }
    assert_nothing_ran(&file, &service, &output);
}

#[tokio::test]
async fn a_resumed_run_reads_its_secrets_again_from_secrets_manager() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    create_secrets(&moto.url);
    // A person confirms a checklist before the step that sends them.
    let paused = RUNBOOK.replace(
        "[[steps]]\nid = \"send\"\n",
        "[[steps]]\nid = \"ready\"\nkind = \"manual\"\nchecklist = [\"the release is tagged\"]\n\n[[steps]]\nid = \"send\"\n",
    );
    assert_ne!(paused, RUNBOOK);
    let file = runbook(&moto, &service, &paused);
    let operator = Operator::new("AKIDTEST", "test-secret");
    let (operator, first) = blocking(operator, exec_args(&file)).await;
    assert_eq!(first.status.code(), Some(4), "{}", text(&first));
    let run = run_id(&first);
    assert!(service.state().received.is_empty());

    // The team rotates the token meanwhile: the resumed run reads it again.
    let rotated = "sm-R0tated-5b2e88";
    json_at(
        &moto.url,
        "secretsmanager",
        "secretsmanager",
        "PutSecretValue",
        &serde_json::json!({ "SecretId": "prod/api/token", "SecretString": rotated }),
    );
    let (operator, confirmed) = blocking(
        operator,
        vec![
            "confirm".into(),
            run.clone(),
            "ready".into(),
            "--as".into(),
            "bob".into(),
        ],
    )
    .await;
    assert_eq!(confirmed.status.code(), Some(0), "{}", text(&confirmed));
    let (operator, resumed) = blocking(operator, vec!["resume".into(), run]).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let received = service.state().received;
    let echo = received
        .iter()
        .find(|request| request.path == "/echo")
        .expect("the step called /echo");
    assert_eq!(
        echo.headers.get("x-api-token").map(String::as_str),
        Some(rotated)
    );
    let state = file.dir.path().join(".runbook");
    let leaks = holding(
        &[state.as_path(), operator.index.path()],
        &[API_TOKEN, rotated, DB_PASSWORD, DEPLOY_TOKEN],
    );
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// The same run with its state in PostgreSQL: the values reach the server
/// and appear in no line, record or lock of the database, and in no file
/// of this machine's mirror of it.
#[tokio::test]
async fn secrets_of_a_run_kept_in_postgres_appear_in_no_row_of_the_database() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let service = SampleService::start(None).await.unwrap();
    let cluster = tokio::task::spawn_blocking(runbook_testenv::Postgres::start)
        .await
        .unwrap();
    cluster.sql("CREATE DATABASE team");
    create_secrets(&moto.url);
    let shared = RUNBOOK.replace(
        "[environments.local]",
        "[state]\nbackend = \"postgres\"\nurl = \"${{ env.TEST_STATE_URL }}\"\n\n[environments.local]",
    );
    let file = runbook(&moto, &service, &shared);
    let cache = tempfile::tempdir().unwrap();
    let mut operator = Operator::new("AKIDTEST", "test-secret");
    operator.env = vec![
        ("TEST_STATE_URL".into(), cluster.url_of("team")),
        ("XDG_CACHE_HOME".into(), cache.path().display().to_string()),
    ];
    let (operator, output) = blocking(operator, exec_args(&file)).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let echo = service.state().received;
    assert!(
        echo.iter().any(
            |request| request.headers.get("x-db-password").map(String::as_str) == Some(DB_PASSWORD)
        ),
        "the value reached the server"
    );
    let lines = cluster.sql_in("team", "SELECT count(*) FROM runbook_lines");
    assert!(
        lines.parse::<u32>().unwrap() > 5,
        "the run is in the database: {lines} lines"
    );
    for value in [API_TOKEN, DB_PASSWORD, DEPLOY_TOKEN] {
        let found = cluster.sql_in(
            "team",
            &format!(
                "SELECT (SELECT count(*) FROM runbook_lines WHERE line LIKE '%{value}%') + (SELECT count(*) FROM runbook_records WHERE record LIKE '%{value}%') + (SELECT count(*) FROM runbook_locks WHERE holder LIKE '%{value}%')"
            ),
        );
        assert_eq!(found, "0", "{value} is in the database");
    }
    let leaks = holding(
        &[
            cache.path(),
            operator.index.path(),
            &file.dir.path().join(".runbook"),
        ],
        &[API_TOKEN, DB_PASSWORD, DEPLOY_TOKEN],
    );
    assert!(leaks.is_empty(), "{leaks:#?}");
}
