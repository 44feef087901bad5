//! Command steps as users and attackers would run them: real programs
//! (`/bin/sh`, `python3`, `kubectl` against the API-server emulator, the AWS
//! CLI against moto) inside the host's sandbox. What is granted works; what
//! a hostile or broken program tries beyond it (reading credentials and
//! `/etc/shadow`, writing outside its folders, connecting to another port,
//! reading the host's environment, fork-bombing, outliving its deadline,
//! eating memory) is contained, and every run is an audit record.

use crate::support::{RunOptions, TestRunbook, run, run_file, runbook_cli, runtime, text};
use runbook::events::Status;
use std::path::Path;

/// A runbook whose one step `id` runs `program` with `args` (TOML arrays
/// and tables as written), granted `grant` (the inside of one
/// `grants.command` entry), with `extra` lines for the step.
fn one_step(program: &str, args: &str, grant: &str, extra: &str) -> String {
    format!(
        "[runbook]\nname = \"commands\"\n\n[[steps]]\nid = \"cmd\"\nuses = \"command\"\nwith.program = \"{program}\"\nwith.args = {args}\n{extra}\ngrants.command = [{{ program = \"{program}\", {grant} }}]\n"
    )
}

/// The audit records (capability calls) of `capability` in a run: what
/// each asked, what came of it, and whether it did what was asked.
fn calls(finished: &crate::support::Finished, capability: &str) -> Vec<(String, String, bool)> {
    finished
        .calls(capability)
        .into_iter()
        .map(|call| (call.requested, call.outcome, call.ok))
        .collect()
}

/// `sh -c SCRIPT` as one step, granted any script.
async fn shell(script: &str, extra: &str, grant_extra: &str) -> crate::support::Finished {
    let script = toml_string(script);
    let body = one_step(
        "/bin/sh",
        &format!("[\"-c\", {script}]"),
        &format!("args = [\"-c\", \"*\"]{grant_extra}"),
        extra,
    );
    run(&body, RunOptions::default()).await
}

/// A TOML basic string of `text`.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[tokio::test]
async fn a_granted_program_runs_confined_and_its_output_is_the_steps_log_and_outputs() {
    let finished = shell("echo hello; echo careful >&2; env | sort", "", "").await;
    let (status, _, outputs) = finished.step("cmd");
    assert_eq!(status, Status::Succeeded, "{}", finished.log());
    assert!(outputs["stdout"].starts_with("hello\n"), "{outputs:?}");
    assert_eq!(outputs["exit_code"], "0");
    // Nothing of the host's environment: only what the sandbox sets.
    let names: Vec<&str> = outputs["stdout"]
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert_eq!(
        names,
        ["HOME", "LANG", "PATH", "PWD", "TMPDIR"],
        "{outputs:?}"
    );
    let log = finished.log();
    assert!(log.contains("\"message\":\"hello\""), "{log}");
    assert!(log.contains("\"message\":\"careful\""), "{log}");
    let audited = calls(&finished, "command");
    assert_eq!(audited.len(), 1, "{audited:?}");
    let (requested, outcome, ok) = &audited[0];
    assert!(requested.starts_with("run /bin/sh -c "), "{requested}");
    assert!(*ok);
    assert!(outcome.starts_with("exit 0"), "{outcome}");
    assert!(outcome.contains("landlock (fully enforced)"), "{outcome}");
    assert!(outcome.contains("processes ≤ 512 (cgroup)"), "{outcome}");
}

#[tokio::test]
async fn a_program_or_arguments_outside_the_grant_are_denied_before_anything_runs() {
    let marker = tempfile::tempdir().unwrap();
    let touched = marker.path().join("touched");
    // The grant allows `-c` and one argument of the form `echo *`.
    let body = one_step(
        "/bin/sh",
        &format!("[\"-c\", \"touch {}\"]", touched.display()),
        "args = [\"-c\", \"echo *\"]",
        "",
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("cmd");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("do not fit the granted patterns [-c echo *]"),
        "{summary}"
    );
    assert!(!touched.exists());

    // Another program than the granted one.
    let body = "[runbook]\nname = \"commands\"\n\n[[steps]]\nid = \"cmd\"\nuses = \"command\"\nwith.program = \"/usr/bin/python3\"\nwith.args = [\"-c\", \"print(1)\"]\ngrants.command = [{ program = \"/bin/sh\", args = [\"**\"] }]\n";
    let finished = run(body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("cmd");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("program `/usr/bin/python3` is not granted (granted: /bin/sh)"),
        "{summary}"
    );
    let audited = calls(&finished, "command");
    assert_eq!(audited.len(), 1);
    assert!(!audited[0].2, "the denial is audited: {audited:?}");
}

#[tokio::test]
async fn credentials_shadow_and_the_hosts_environment_stay_out_of_reach() {
    // A credentials file the operator has, outside anything granted.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    let credentials = home.path().join(".aws/credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_secret_access_key = host-only-secret\n",
    )
    .unwrap();
    let script = format!(
        "cat {} ; cat /etc/shadow ; cat /proc/$PPID/environ ; cat /proc/1/environ ; ls /root ; echo done",
        credentials.display()
    );
    let finished = shell(&script, "", "").await;
    let (status, _, outputs) = finished.step("cmd");
    assert_eq!(status, Status::Succeeded, "{}", finished.log());
    assert_eq!(outputs["stdout"], "done", "nothing was read: {outputs:?}");
    let log = finished.log();
    assert!(!log.contains("host-only-secret"), "{log}");
    assert!(!log.contains("root:"), "{log}");
    for refused in [credentials.display().to_string(), "/etc/shadow".into()] {
        assert!(
            log.contains(&format!("{refused}: Permission denied")),
            "{refused} refused: {log}"
        );
    }
    let (_, outcome, _) = &calls(&finished, "command")[0];
    assert!(
        outcome.contains("access error(s) in its output"),
        "{outcome}"
    );
}

#[tokio::test]
async fn writes_land_only_in_the_scratch_folder_and_granted_paths() {
    let granted = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let script = format!(
        "echo a > \"$HOME/scratch.txt\" && echo scratch-ok; echo b > {granted}/out.txt && echo granted-ok; echo c > {elsewhere}/out.txt || echo elsewhere-refused",
        granted = granted.path().display(),
        elsewhere = elsewhere.path().display()
    );
    let finished = shell(
        &script,
        "",
        &format!(", write = [\"{}\"]", granted.path().display()),
    )
    .await;
    let (status, _, outputs) = finished.step("cmd");
    assert_eq!(status, Status::Succeeded, "{}", finished.log());
    assert_eq!(
        outputs["stdout"],
        "scratch-ok\ngranted-ok\nelsewhere-refused",
        "{}",
        finished.log()
    );
    assert_eq!(
        std::fs::read_to_string(granted.path().join("out.txt")).unwrap(),
        "b\n"
    );
    assert!(!elsewhere.path().join("out.txt").exists());
}

#[tokio::test]
async fn only_granted_ports_can_be_connected_to() {
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (granted_port, other_port) = (
        granted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let script = format!(
        "import socket\nfor port in ({granted_port}, {other_port}):\n    try:\n        socket.create_connection(('127.0.0.1', port), timeout=5)\n        print(port, 'connected')\n    except OSError as error:\n        print(port, error.errno)\n"
    );
    let body = one_step(
        "/usr/bin/python3",
        &format!("[\"-c\", {}]", toml_string(&script)),
        &format!("args = [\"-c\", \"*\"], connect = [{granted_port}]"),
        "",
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, _, outputs) = finished.step("cmd");
    assert_eq!(status, Status::Succeeded, "{}", finished.log());
    // EACCES (13): Landlock refused the connection.
    assert_eq!(
        outputs["stdout"],
        format!("{granted_port} connected\n{other_port} 13"),
        "{}",
        finished.log()
    );
}

/// Whether a process whose command line holds `marker` is still alive.
fn alive(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
    })
}

#[tokio::test]
async fn a_fork_bomb_is_held_to_its_process_limit_and_killed_at_its_deadline() {
    let marker = format!("bomb-{}", std::process::id());
    // `exec`: the shell becomes the sleep without forking, so it waits for
    // its deadline even when the bomb has used up every process the
    // limit allows (on a busy machine, before the shell gets there).
    let script = format!("b() {{ b | b & }}; b; exec sleep 60 # {marker}");
    let started = std::time::Instant::now();
    let finished = shell(&script, "with.timeout = \"3s\"", "").await;
    let (status, summary, _) = finished.step("cmd");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("every process it started were killed"),
        "{summary}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!alive(&marker), "a process of the bomb survived");
    let log = finished.log();
    assert!(
        log.contains("Cannot fork"),
        "the limit held the bomb: {log}"
    );
}

#[tokio::test]
async fn a_program_past_its_deadline_is_killed_with_what_it_started_even_in_a_new_session() {
    let marker = format!("outlive-{}", std::process::id());
    let script = format!("setsid sh -c 'sleep 300 # {marker}' & sleep 300 # {marker}");
    let finished = shell(&script, "with.timeout = \"1s\"", "").await;
    let (status, summary, _) = finished.step("cmd");
    assert_eq!(status, Status::Failed, "{summary}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!alive(&marker), "a process outlived its step");
    let (_, outcome, ok) = &calls(&finished, "command")[0];
    assert!(
        !ok && outcome.contains("stopped at its deadline"),
        "{outcome}"
    );
}

#[tokio::test]
async fn memory_beyond_the_limit_fails_the_program_not_the_host() {
    let body = one_step(
        "/usr/bin/python3",
        "[\"-c\", \"x = bytearray(6 << 30)\"]",
        "args = [\"-c\", \"*\"]",
        "",
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, _) = finished.step("cmd");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(summary.contains("MemoryError"), "{summary}");
    assert!(summary.contains("(exit 1)"), "{summary}");
}

#[tokio::test]
async fn a_granted_secret_reaches_the_program_only_through_its_environment_and_is_redacted() {
    let body = one_step(
        "/bin/sh",
        "[\"-c\", \"echo token=$TOKEN; echo other=$OTHER\"]",
        "args = [\"-c\", \"*\"]",
        "with.env = { TOKEN = \"${{ secrets.token }}\" }\ngrants.secrets = [\"token\"]",
    );
    let options = RunOptions {
        secrets: [("token".to_owned(), "s3cr3t-value".to_owned())].into(),
        ..RunOptions::default()
    };
    let finished = run(&body, options).await;
    let (status, _, outputs) = finished.step("cmd");
    assert_eq!(status, Status::Succeeded, "{}", finished.log());
    // The program had the value; nothing it said keeps it.
    assert!(!outputs["stdout"].contains("s3cr3t-value"), "{outputs:?}");
    assert!(
        outputs["stdout"].starts_with("token=") && outputs["stdout"].len() > "token=\nother=".len()
    );
    assert!(!finished.log().contains("s3cr3t-value"));
    assert!(
        calls(&finished, "secrets")
            .iter()
            .any(|(requested, _, ok)| *ok && requested.contains("`TOKEN` of run /bin/sh")),
        "{:?}",
        calls(&finished, "secrets")
    );

    // A secret the step is not granted is refused before anything runs.
    let runbook = TestRunbook::new(&one_step(
        "/bin/sh",
        "[\"-c\", \"echo $TOKEN\"]",
        "args = [\"-c\", \"*\"]",
        "with.env = { TOKEN = \"${{ secrets.token }}\" }",
    ));
    let file = runbook.path.display().to_string();
    let refused = tokio::task::spawn_blocking(move || runbook_cli(&["validate", &file]))
        .await
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused).contains("uses secret `token` without a grant"),
        "{}",
        text(&refused)
    );
}

#[tokio::test]
async fn rollback_runs_the_undo_program_and_plan_runs_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let made = folder.path().join("migrated");
    let body = format!(
        "[runbook]\nname = \"commands\"\non_failure = \"rollback\"\n\n[[steps]]\nid = \"migrate\"\nuses = \"command\"\nwith.program = \"/usr/bin/touch\"\nwith.args = [\"{made}\"]\nwith.rollback = {{ program = \"/usr/bin/rm\", args = [\"{made}\"] }}\ngrants.command = [{{ program = \"/usr/bin/touch\", args = [\"*\"], write = [\"{dir}\"] }}, {{ program = \"/usr/bin/rm\", args = [\"*\"], write = [\"{dir}\"] }}]\n\n[[steps]]\nid = \"fails\"\nuses = \"command\"\nwith.program = \"/bin/false\"\ngrants.command = [{{ program = \"/bin/false\", args = [] }}]\n",
        made = made.display(),
        dir = folder.path().display()
    );
    let runbook = TestRunbook::new(&body);
    let file = runbook.path.display().to_string();

    let planned = tokio::task::spawn_blocking(move || runbook_cli(&["plan", &file]))
        .await
        .unwrap();
    let said = text(&planned);
    assert!(
        said.contains(&format!("run `/usr/bin/touch {}`", made.display())),
        "{said}"
    );
    assert!(said.contains("grants command: /usr/bin/touch *"), "{said}");
    assert!(!made.exists(), "plan ran nothing");

    let finished = run_file(&runtime(), &runbook.path, RunOptions::default()).await;
    assert_eq!(finished.step("migrate").0, Status::Succeeded);
    assert_eq!(finished.step("fails").0, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(!made.exists(), "the rollback removed what the step made");
    let ran: Vec<String> = calls(&finished, "command")
        .into_iter()
        .map(|(requested, _, _)| requested)
        .collect();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(ran[2].starts_with("run /usr/bin/rm "), "{ran:?}");
}

#[test]
fn without_landlock_command_steps_are_refused_unless_the_operator_allows_them_unconfined() {
    const {
        assert!(
            runbook::fault::ENABLED,
            "this test needs the failpoints build (scripts/test builds it)"
        )
    };
    let runbook = TestRunbook::new(&format!(
        "{}\n[environments.local]\n",
        one_step("/bin/echo", "[\"hello\"]", "args = [\"*\"]", "")
    ));
    let file = runbook.path.display().to_string();
    let state = runbook.dir.path().join("state").display().to_string();
    let exec = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(["exec", &file, "--env", "local", "--state-dir", &state])
            .args(extra)
            .env("RUNBOOK_CACHE_DIR", crate::support::cache_dir())
            .env("RUNBOOK_FAILPOINTS", "landlock.detect=eio")
            .env("NO_COLOR", "1");
        command.output().unwrap()
    };
    let refused = exec(&[]);
    let said = text(&refused);
    assert_ne!(refused.status.code(), Some(0), "{said}");
    assert!(said.contains("Landlock could not be checked"), "{said}");
    assert!(said.contains("--allow-unconfined-commands"), "{said}");

    let allowed = exec(&["--allow-unconfined-commands", "-v"]);
    let said = text(&allowed);
    assert_eq!(allowed.status.code(), Some(0), "{said}");
    assert!(
        said.contains("not confined (--allow-unconfined-commands)"),
        "{said}"
    );
    // The audit log keeps it.
    let runs = Path::new(&state).join("runs");
    let audits: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("audit.jsonl")).ok())
        .collect();
    assert_eq!(audits.len(), 2, "one audit log per run");
    assert!(
        audits
            .iter()
            .any(|audit| audit.contains("not confined (--allow-unconfined-commands)")),
        "{audits:?}"
    );
}

#[tokio::test]
async fn kubectl_runs_against_the_cluster_with_only_its_kubeconfig_and_port() {
    let (emulator, dir, kubeconfig) = crate::kube::cluster().await;
    let port = emulator.address.port();
    let body = format!(
        "[runbook]\nname = \"commands\"\n\n[[steps]]\nid = \"status\"\nuses = \"command\"\nwith.program = \"/usr/bin/kubectl\"\nwith.args = [\"get\", \"deployment\", \"api\", \"-n\", \"shop\", \"-o\", \"jsonpath={{.spec.replicas}}\"]\nwith.env = {{ KUBECONFIG = \"{kubeconfig}\" }}\ngrants.command = [{{ program = \"/usr/bin/kubectl\", args = [\"get\", \"**\"], read = [\"{dir}\"], connect = [{port}] }}]\n",
        kubeconfig = kubeconfig.display(),
        dir = dir.path().display()
    );
    let finished = run(&body, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("status");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(outputs["stdout"], "3");

    // The same kubectl may not change anything: `scale` is not granted.
    let body = body
        .replace("id = \"status\"", "id = \"scale\"")
        .replace(
            "[\"get\", \"deployment\", \"api\", \"-n\", \"shop\", \"-o\", \"jsonpath={.spec.replicas}\"]",
            "[\"scale\", \"deployment/api\", \"-n\", \"shop\", \"--replicas=0\"]",
        );
    let finished = run(&body, RunOptions::default()).await;
    assert_eq!(finished.step("scale").0, Status::Denied);
    let replicas =
        crate::support::kubectl_get(&kubeconfig, "shop", "deployment/api", "{.spec.replicas}")
            .await;
    assert_eq!(replicas, "3");
}

/// The AWS CLI's program and the Python installation it runs on.
fn aws_cli() -> (String, String) {
    let found = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, sysconfig, shutil; print(sys.prefix); print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&found.stdout).into_owned();
    let mut lines = said.lines();
    let prefix = lines.next().expect("a prefix").to_owned();
    let scripts = lines.next().expect("a scripts folder").to_owned();
    let program = format!("{scripts}/aws");
    assert!(
        Path::new(&program).exists(),
        "the AWS CLI is installed (scripts/install-services installs PyPI awscli): {program}"
    );
    // Its Python may live outside the prefix (a symlinked venv).
    let real = std::fs::canonicalize(&prefix)
        .unwrap()
        .display()
        .to_string();
    (program, real)
}

#[tokio::test]
async fn the_aws_cli_reaches_moto_with_credentials_given_as_secrets_only() {
    let moto = runbook_testenv::Moto::start();
    let port: u16 = moto.url.rsplit(':').next().unwrap().parse().unwrap();
    let (program, prefix) = aws_cli();
    let body = format!(
        "[runbook]\nname = \"commands\"\n\n[[steps]]\nid = \"regions\"\nuses = \"command\"\nwith.program = \"{program}\"\nwith.args = [\"ec2\", \"describe-regions\", \"--region\", \"us-east-1\", \"--endpoint-url\", \"{url}\", \"--output\", \"text\", \"--query\", \"length(Regions)\"]\nwith.env = {{ AWS_ACCESS_KEY_ID = \"${{{{ secrets.key_id }}}}\", AWS_SECRET_ACCESS_KEY = \"${{{{ secrets.secret_key }}}}\" }}\ngrants.secrets = [\"key_id\", \"secret_key\"]\ngrants.command = [{{ program = \"{program}\", args = [\"ec2\", \"describe-*\", \"**\"], read = [\"{prefix}\"], connect = [{port}] }}]\n",
        url = moto.url
    );
    let options = RunOptions {
        secrets: [
            ("key_id".to_owned(), "AKIDTEST".to_owned()),
            ("secret_key".to_owned(), "test-secret".to_owned()),
        ]
        .into(),
        ..RunOptions::default()
    };
    let finished = run(&body, options).await;
    let (status, summary, outputs) = finished.step("regions");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    let regions: u32 = outputs["stdout"]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{outputs:?}"));
    assert!(regions > 10, "{outputs:?}");
}

/// An alembic project under `folder/db`: two revisions, `001` makes
/// `orders`, `002` adds its `status` column; the database is
/// `$DATABASE_URL`.
fn alembic_project(folder: &Path) -> std::path::PathBuf {
    let db = folder.join("db");
    std::fs::create_dir_all(db.join("migrations/versions")).unwrap();
    std::fs::write(
        db.join("alembic.ini"),
        "[alembic]\nscript_location = migrations\n",
    )
    .unwrap();
    std::fs::write(
        db.join("migrations/env.py"),
        "import os\nfrom alembic import context\nfrom sqlalchemy import create_engine, pool\n\nengine = create_engine(os.environ['DATABASE_URL'], poolclass=pool.NullPool)\nwith engine.connect() as connection:\n    context.configure(connection=connection, target_metadata=None)\n    with context.begin_transaction():\n        context.run_migrations()\n",
    )
    .unwrap();
    std::fs::write(
        db.join("migrations/versions/001_orders.py"),
        "from alembic import op\nimport sqlalchemy as sa\n\nrevision = '001'\ndown_revision = None\n\ndef upgrade():\n    op.create_table('orders', sa.Column('id', sa.Integer, primary_key=True))\n\ndef downgrade():\n    op.drop_table('orders')\n",
    )
    .unwrap();
    std::fs::write(
        db.join("migrations/versions/002_status.py"),
        "from alembic import op\nimport sqlalchemy as sa\n\nrevision = '002'\ndown_revision = '001'\n\ndef upgrade():\n    op.add_column('orders', sa.Column('status', sa.Text, server_default='new'))\n\ndef downgrade():\n    op.drop_column('orders', 'status')\n",
    )
    .unwrap();
    db
}

/// The columns of `orders`, in order.
fn order_columns(postgres: &runbook_testenv::Postgres) -> String {
    postgres.sql(
        "select coalesce(string_agg(column_name, ',' order by ordinal_position), '') from information_schema.columns where table_name = 'orders'",
    )
}

#[tokio::test]
async fn alembic_migrates_a_real_database_and_the_rollback_downgrades_it_to_where_it_was() {
    let postgres = tokio::task::spawn_blocking(runbook_testenv::Postgres::start)
        .await
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let db = alembic_project(folder.path());
    // The database stands at `001`, as production did before this release.
    let url = postgres.url();
    let setup = std::process::Command::new("/usr/bin/alembic")
        .args(["-c", "alembic.ini", "upgrade", "001"])
        .current_dir(&db)
        .env("DATABASE_URL", &url)
        .output()
        .expect("alembic is installed (scripts/install-services installs Debian's `alembic`)");
    assert!(setup.status.success(), "{}", text(&setup));
    assert_eq!(order_columns(&postgres), "id");

    let port = postgres.port;
    let body = |then_fail: bool| {
        format!(
            r#"[runbook]
name = "migrations"
on_failure = "rollback"

[[steps]]
id = "current"
uses = "command"
with.program = "{psql}"
with.args = ["-X", "-At", "-d", "{url}", "-c", "select version_num from alembic_version"]
grants.command = [{{ program = "{psql}", args = ["-X", "-At", "-d", "*", "-c", "select version_num from alembic_version"], connect = [{port}] }}]

[[steps]]
id = "migrate"
uses = "command"
with.program = "/usr/bin/alembic"
with.args = ["-c", "alembic.ini", "upgrade", "head"]
with.dir = "{db}"
with.env = {{ DATABASE_URL = "${{{{ secrets.database_url }}}}" }}
with.rollback = {{ program = "/usr/bin/alembic", args = ["-c", "alembic.ini", "downgrade", "${{{{ steps.current.outputs.stdout }}}}"], dir = "{db}", env = {{ DATABASE_URL = "${{{{ secrets.database_url }}}}" }} }}
grants.secrets = ["database_url"]
grants.command = [
  {{ program = "/usr/bin/alembic", args = ["-c", "alembic.ini", "upgrade", "head"], read = ["{db}"], connect = [{port}] }},
  {{ program = "/usr/bin/alembic", args = ["-c", "alembic.ini", "downgrade", "*"], read = ["{db}"], connect = [{port}] }},
]

[[steps]]
id = "smoke"
uses = "command"
with.program = "/bin/sh"
with.args = ["-c", "exit {code}"]
grants.command = [{{ program = "/bin/sh", args = ["-c", "*"] }}]
"#,
            db = db.display(),
            // Debian's `psql` is a link to `pg_wrapper`, which picks the
            // program by the name it was started as: it must see `psql`.
            psql = "/usr/bin/psql",
            code = u8::from(then_fail),
        )
    };
    let options = || RunOptions {
        secrets: [("database_url".to_owned(), url.clone())].into(),
        ..RunOptions::default()
    };

    // A release whose smoke test fails: the migration ran, then the
    // rollback put the schema back to `001`.
    let finished = run(&body(true), options()).await;
    assert_eq!(
        finished.step("current").2["stdout"],
        "001",
        "{}",
        finished.log()
    );
    assert_eq!(
        finished.step("migrate").0,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert_eq!(
        postgres.sql("select version_num from alembic_version"),
        "001"
    );
    assert_eq!(order_columns(&postgres), "id");
    assert!(
        !finished.log().contains(&url),
        "the URL is a secret: redacted"
    );

    // A good release leaves the schema at `002`.
    let finished = run(&body(false), options()).await;
    assert_eq!(
        finished.report.status,
        Status::Succeeded,
        "{}",
        finished.log()
    );
    assert_eq!(
        postgres.sql("select version_num from alembic_version"),
        "002"
    );
    assert_eq!(order_columns(&postgres), "id,status");
}

#[tokio::test]
async fn ctrl_c_while_a_program_runs_kills_it_and_all_it_started() {
    let marker = format!("interrupted-{}", std::process::id());
    let started = tempfile::tempdir().unwrap();
    let flag = started.path().join("started");
    let script = format!(
        "sleep 300 & touch {flag}; sleep 300 # {marker}",
        flag = flag.display()
    );
    let body = one_step(
        "/bin/sh",
        &format!("[\"-c\", {}]", toml_string(&script)),
        &format!(
            "args = [\"-c\", \"*\"], write = [\"{}\"]",
            started.path().display()
        ),
        "",
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let trigger = cancel.clone();
    let interrupt = async move {
        while !flag.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        trigger.cancel();
    };
    let options = RunOptions {
        cancel: Some(cancel),
        ..RunOptions::default()
    };
    let began = std::time::Instant::now();
    let (finished, ()) = tokio::join!(run(&body, options), interrupt);
    assert_eq!(
        finished.step("cmd").0,
        Status::Cancelled,
        "{}",
        finished.log()
    );
    assert!(began.elapsed() < std::time::Duration::from_secs(60));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!alive(&marker), "a process outlived the interrupt");
    let (_, outcome, ok) = &calls(&finished, "command")[0];
    assert!(!ok && outcome.contains("stopped"), "{outcome}");
    assert!(
        outcome.contains("killed") || outcome.contains("operator"),
        "{outcome}"
    );
}

#[test]
fn audit_lists_each_command_grant_beside_the_others() {
    let runbook = TestRunbook::new(&one_step(
        "/usr/bin/env",
        "[\"true\"]",
        "args = [\"true\", \"**\"], connect = [5432]",
        "grants.http = [\"http://127.0.0.1:9\"]",
    ));
    let file = runbook.path.display().to_string();
    let text_report = runbook_cli(&["audit", &file]);
    let said = text(&text_report);
    assert!(
        said.contains("command: /usr/bin/env true ** (connect 5432)"),
        "{said}"
    );
    let markdown = text(&runbook_cli(&["audit", &file, "--output", "markdown"]));
    assert!(markdown.contains("| grants command |"), "{markdown}");
    assert!(
        markdown.contains("`/usr/bin/env true ** (connect 5432)`"),
        "{markdown}"
    );
    let json = runbook_cli(&["audit", &file, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(&json)));
    assert!(
        report
            .to_string()
            .contains("/usr/bin/env true ** (connect 5432)"),
        "{report}"
    );
}

/// A relative working directory is the runbook's folder's, as the grant's
/// paths are; one that leads out of the granted folders (`..`) is denied
/// before the program starts.
#[tokio::test]
async fn a_relative_working_directory_is_the_runbooks_and_cannot_climb_out() {
    let body = |dir: &str| {
        format!(
            "[runbook]\nname = \"dirs\"\n\n[[steps]]\nid = \"where\"\nuses = \"command\"\nwith.program = \"/bin/pwd\"\nwith.dir = \"{dir}\"\ngrants.command = [{{ program = \"/bin/pwd\", args = [], read = [\"./db\"] }}]\n"
        )
    };
    let inside = TestRunbook::new(&body("./db"));
    std::fs::create_dir(inside.dir.path().join("db")).unwrap();
    let finished = run_file(&runtime(), &inside.path, RunOptions::default()).await;
    let (status, summary, outputs) = finished.step("where");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        Path::new(&outputs["stdout"]),
        inside.dir.path().join("db").canonicalize().unwrap()
    );

    let climbing = TestRunbook::new(&body("./db/.."));
    std::fs::create_dir(climbing.dir.path().join("db")).unwrap();
    let finished = run_file(&runtime(), &climbing.path, RunOptions::default()).await;
    let (status, summary, _) = finished.step("where");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("run it in a folder of the grant's `read` or `write`"),
        "{summary}"
    );
}
