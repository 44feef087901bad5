//! The PostgreSQL state backend, used as a team would: several machines
//! (each a working folder with its own cache, index and mirror, running
//! the real binary) share one database. One run per environment across
//! machines; a run whose machine died is resumed on another after its
//! lease expired, every effect exactly once; a database that goes away
//! mid-run stops the run at a step boundary, losing no record; a paused
//! holder that lost its lease writes nothing more; approvals, the run list
//! and the promotion gate work from any machine; `state migrate` copies a
//! local folder in.

use crate::faults::{Bin, blocking, check_by_hand, counts, effects, exits, text};
use crate::support::TestRunbook;
use runbook_testenv::{Counter, Postgres};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

/// The `[state]` table of the tests' runbooks: the database from the
/// environment, a short lease so that takeovers come soon.
const STATE: &str =
    "[state]\nbackend = \"postgres\"\nurl = \"${{ env.TEST_STATE_URL }}\"\nlease = \"3s\"\n";

/// One machine: a working folder with the runbook, and its own cache
/// (where its mirror of the backend lives) and run index.
struct Machine {
    bin: Arc<Bin>,
    folder: tempfile::TempDir,
    url: String,
}

impl Machine {
    fn new(bin: &Arc<Bin>, url: &str) -> Self {
        Machine {
            bin: Arc::clone(bin),
            folder: tempfile::tempdir().unwrap(),
            url: url.to_owned(),
        }
    }

    /// Copies a runbook into this machine's folder; its path here.
    fn put(&self, runbook: &TestRunbook) -> PathBuf {
        let path = self.folder.path().join("deploy.toml");
        std::fs::write(&path, std::fs::read_to_string(&runbook.path).unwrap()).unwrap();
        path
    }

    fn command(&self, args: &[&str], operator: &str) -> std::process::Command {
        let cache = self.folder.path().join("cache");
        let index = self.folder.path().join("index");
        let mut command = self.bin.command(
            args,
            &[
                ("TEST_STATE_URL", &self.url),
                ("XDG_CACHE_HOME", cache.to_str().unwrap()),
                ("RUNBOOK_INDEX_DIR", index.to_str().unwrap()),
                ("RUNBOOK_OPERATOR", operator),
            ],
        );
        command.current_dir(self.folder.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args, "alice").output().unwrap()
    }

    fn run_as(&self, operator: &str, args: &[&str]) -> Output {
        self.command(args, operator).output().unwrap()
    }
}

/// A database of its own in `cluster`, as its URL.
fn database(cluster: &Postgres, name: &str) -> String {
    cluster.sql(&format!("CREATE DATABASE {name}"));
    cluster.url_of(name)
}

/// The one run of runbook `name` the backend holds.
fn run_of(cluster: &Postgres, database: &str, name: &str) -> Option<String> {
    // Nothing yet when no process reached the database.
    let found = cluster
        .try_sql_in(
            database,
            &format!("SELECT run_id FROM runbook_runs WHERE runbook = '{name}'"),
        )
        .unwrap_or_default();
    (!found.is_empty()).then_some(found)
}

/// Whether the backend's journal of `run` holds a `step_started` of `step`.
fn started(cluster: &Postgres, database: &str, run: &str, step: &str) -> bool {
    cluster
        .try_sql_in(
            database,
            &format!(
                "SELECT count(*) FROM runbook_lines WHERE run_id = '{run}' AND stream = 0 AND line LIKE '%\"event\":\"step_started\"%' AND line LIKE '%\"step\":\"{step}\"%'"
            ),
        )
        .is_ok_and(|count| count != "0")
}

/// The runbook of the fault tests (`faults::counted_runbook`: counted
/// non-idempotent effects, an idempotent step between them, an `always`
/// step), on the shared backend, each effect taking a moment so that a
/// kill can land within and between them.
fn slow_counted_runbook(name: &str, counter: &Counter) -> TestRunbook {
    let step = |id: &str, needs: &str, extra: &str| {
        format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"recorder\"\nneeds = [{needs}]\nwith.url = \"{url}\"\nwith.name = \"{name}-{id}\"\nwith.delay = \"150ms\"\ngrants.http = [\"{url}\"]\n{extra}\n",
            url = counter.url
        )
    };
    let mut body = format!("[runbook]\nname = \"{name}\"\non_failure = \"rollback\"\n{STATE}\n");
    body.push_str(&step("one", "", ""));
    body.push_str("\n[[steps]]\nid = \"warm\"\nuses = \"noop\"\nneeds = [\"one\"]\n");
    body.push_str(&step("two", "\"warm\"", ""));
    body.push_str(&step("three", "\"two\"", ""));
    body.push_str(&step("tell", "", "always = true"));
    TestRunbook::new(&body)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} never happened");
}

/// Resumes `run` on `machine` until it is over, deciding interrupted steps
/// from the counter as an operator would by hand, waiting for the lock
/// (the dead holder's lease) as long as it takes.
async fn resume_to_the_end(
    machine: &Arc<Machine>,
    run: &str,
    counter: &Counter,
    name: &str,
    trial: &str,
) {
    let mut decisions: Vec<String> = Vec::new();
    for _ in 0..8 {
        let mut args = vec![
            "resume".to_owned(),
            run.to_owned(),
            "--wait-lock".to_owned(),
            "--state-dir".to_owned(),
            machine.url.clone(),
        ];
        args.extend(decisions.iter().cloned());
        let on = Arc::clone(machine);
        let output = blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            on.run(&args)
        })
        .await;
        let said = text(&output);
        if matches!(output.status.code(), Some(0 | 1))
            || said.contains("already succeeded")
            || said.contains("was rolled back")
        {
            return;
        }
        decisions.extend(check_by_hand(&said, counter, name, trial));
    }
    panic!("{trial}: the run did not finish after 8 resumes");
}

/// What a run must leave on the backend, read from a third machine: it
/// ended, its audit log verifies, and its deployment record is there.
fn check_over(reader: &Machine, run: &str, trial: &str) {
    for args in [
        vec!["audit", "verify", run],
        vec!["show", run],
        vec!["logs", run],
    ] {
        let mut args = args;
        args.extend(["--state-dir", reader.url.as_str()]);
        let output = reader.run(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{trial}: `{}`: {}",
            args.join(" "),
            text(&output)
        );
    }
    let listed = reader.run(&["runs", "--state-dir", &reader.url, "--output", "json"]);
    exits(&listed, 0);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(run),
        "{trial}: `runs` does not list {run}: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_racing_for_one_environment_run_exactly_one() {
    let counter = Counter::start().await.unwrap();
    let cluster = Postgres::start();
    let url = database(&cluster, "race");
    let bin = Bin::new();
    for trial in 0..20 {
        let name = format!("race{trial}");
        let file = TestRunbook::new(&format!(
            "[runbook]\nname = \"{name}\"\n{STATE}\n[environments.production]\n\n[[steps]]\nid = \"slow\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{name}\"\nwith.delay = \"600ms\"\ngrants.http = [\"{url}\"]\n",
            url = counter.url
        ));
        let machines: Vec<Machine> = (0..2).map(|_| Machine::new(&bin, &url)).collect();
        let runners: Vec<_> = machines
            .iter()
            .map(|machine| {
                let path = machine.put(&file);
                let mut command = machine.command(
                    &["exec", path.to_str().unwrap(), "--env", "production"],
                    "alice",
                );
                std::thread::spawn(move || command.output().unwrap())
            })
            .collect();
        let outputs: Vec<Output> = runners
            .into_iter()
            .map(|runner| runner.join().unwrap())
            .collect();
        let codes: Vec<Option<i32>> = outputs.iter().map(|output| output.status.code()).collect();
        let said: Vec<String> = outputs.iter().map(text).collect();
        assert_eq!(
            codes.iter().filter(|code| **code == Some(0)).count(),
            1,
            "trial {trial}: exactly one runs: {codes:?} {said:?}"
        );
        let refused = said
            .iter()
            .zip(&codes)
            .find(|(_, code)| **code != Some(0))
            .map(|(said, _)| said.clone())
            .unwrap();
        assert!(
            refused.contains("the lock for this runbook and environment"),
            "trial {trial}: {refused}"
        );
        assert_eq!(counter.tally().done[&name], 1, "trial {trial}");
    }
}

/// The holder is killed at a different moment of each trial; another
/// machine resumes the run once the dead holder's lease expired (without
/// `runbook unlock`), and every effect happened exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_taken_over_by_another_machine_after_its_lease_each_effect_once() {
    let counter = Counter::start().await.unwrap();
    let cluster = Postgres::start();
    let url = database(&cluster, "takeover");
    let bin = Bin::new();
    let reader = Machine::new(&bin, &url);
    // How long a run takes here once it has begun (its first record in
    // the backend) until its process ends: the kills are spread over it.
    let spawn = |machine: &Machine, path: &std::path::Path| {
        machine
            .command(&["exec", path.to_str().unwrap()], "alice")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let begun = |child: &mut std::process::Child, name: &str| {
        wait_until("the run began", || {
            run_of(&cluster, "takeover", name).is_some() || child.try_wait().unwrap().is_some()
        });
    };
    let probe = Machine::new(&bin, &url);
    let probe_path = probe.put(&slow_counted_runbook("probe", &counter));
    let mut child = spawn(&probe, &probe_path);
    begun(&mut child, "probe");
    let started = std::time::Instant::now();
    assert!(child.wait().unwrap().success());
    let whole = started.elapsed();
    let mut killed = 0;
    for trial in 0..30u32 {
        let name = format!("kill{trial}");
        let file = slow_counted_runbook(&name, &counter);
        let first = Machine::new(&bin, &url);
        let second = Arc::new(Machine::new(&bin, &url));
        let path = first.put(&file);
        second.put(&file);
        let mut child = spawn(&first, &path);
        begun(&mut child, &name);
        // Killed a little later each trial: as the run begins, between
        // and within its steps, at its end.
        std::thread::sleep(whole * trial / 30);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
            killed += 1;
        }
        let label = format!("trial {trial}");
        let Some(run) = run_of(&cluster, "takeover", &name) else {
            assert!(
                effects(&counter, &name)
                    .values()
                    .all(|effect| *effect == (0, 0)),
                "{label}: effects without a run: {:?}",
                effects(&counter, &name)
            );
            continue;
        };
        resume_to_the_end(&second, &run, &counter, &name, &label).await;
        assert_eq!(
            effects(&counter, &name),
            counts(&name, [(1, 0), (1, 0), (1, 0), (1, 0)]),
            "{label}: effects (done, undone)"
        );
        check_over(&reader, &run, &label);
    }
    assert!(
        killed >= 25,
        "only {killed} of 30 holders were killed before their run ended"
    );
}

/// PostgreSQL stops (as a crash would) while a step runs: the run stops at
/// the step's boundary, says why, and loses nothing the backend had taken;
/// once the server is back, `resume` finishes it with each effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_lost_mid_run_stops_it_at_a_step_boundary_and_resume_finishes_it() {
    let counter = Counter::start().await.unwrap();
    let mut cluster = Postgres::start();
    let url = database(&cluster, "outage");
    let bin = Bin::new();
    let name = "outage";
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"{name}\"\n{STATE}\n[[steps]]\nid = \"one\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{name}-one\"\nwith.delay = \"1500ms\"\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"two\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{name}-two\"\ngrants.http = [\"{url}\"]\n",
        url = counter.url
    ));
    let machine = Arc::new(Machine::new(&bin, &url));
    let path = machine.put(&file);
    let child = machine
        .command(&["exec", path.to_str().unwrap()], "alice")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("step one started", || {
        run_of(&cluster, "outage", name).is_some_and(|run| started(&cluster, "outage", &run, "one"))
    });
    let run = run_of(&cluster, "outage", name).unwrap();
    let lines_before = cluster.sql_in("outage", "SELECT count(*) FROM runbook_lines");
    cluster.stop();
    let first = blocking(move || child.wait_with_output().unwrap()).await;
    let said = text(&first);
    assert_ne!(first.status.code(), Some(0), "{said}");
    assert!(said.contains("state backend"), "it says why: {said}");
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(
        counter.tally().done.get("outage-two"),
        None,
        "no step after the failure: {said}"
    );
    cluster.restart();
    // Nothing the backend had committed was lost.
    let lines_after = cluster.sql_in("outage", "SELECT count(*) FROM runbook_lines");
    assert!(
        lines_after >= lines_before,
        "{lines_before} lines, then {lines_after}"
    );
    resume_to_the_end(&machine, &run, &counter, name, "outage").await;
    let tally = counter.tally();
    assert_eq!(tally.done.get("outage-one"), Some(&1), "{tally:?}");
    assert_eq!(tally.done.get("outage-two"), Some(&1), "{tally:?}");
    check_over(&Machine::new(&bin, &url), &run, "outage");
}

/// A holder paused (SIGSTOP) longer than its lease loses the run to
/// another machine; when it wakes it writes nothing more, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_that_lost_its_lease_cannot_write_after_another_took_over() {
    let counter = Counter::start().await.unwrap();
    let cluster = Postgres::start();
    let url = database(&cluster, "paused");
    let bin = Bin::new();
    let name = "paused";
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"{name}\"\n{STATE}\n[[steps]]\nid = \"one\"\nuses = \"recorder\"\nwith.url = \"{url}\"\nwith.name = \"{name}-one\"\nwith.delay = \"1s\"\ngrants.http = [\"{url}\"]\n\n[[steps]]\nid = \"two\"\nuses = \"noop\"\n",
        url = counter.url
    ));
    let first = Machine::new(&bin, &url);
    let second = Arc::new(Machine::new(&bin, &url));
    let path = first.put(&file);
    second.put(&file);
    let child = first
        .command(&["exec", path.to_str().unwrap()], "alice")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    wait_until("step one started", || {
        run_of(&cluster, "paused", name).is_some_and(|run| started(&cluster, "paused", &run, "one"))
    });
    let run = run_of(&cluster, "paused", name).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Another machine takes the run over once the lease (3 s) expired.
    resume_to_the_end(&second, &run, &counter, name, "paused").await;
    let lines = || {
        cluster.sql_in(
            "paused",
            &format!("SELECT count(*) FROM runbook_lines WHERE run_id = '{run}'"),
        )
    };
    let taken_over = lines();
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let woken = blocking(move || child.wait_with_output().unwrap()).await;
    let said = text(&woken);
    assert_ne!(woken.status.code(), Some(0), "{said}");
    assert!(said.contains("lost the run's lease"), "{said}");
    assert_eq!(
        lines(),
        taken_over,
        "the paused holder wrote after the takeover: {said}"
    );
    check_over(&Machine::new(&bin, &url), &run, "paused");
}

/// Approvals, the run list and the promotion gate across machines: a run
/// started on one machine waits for approvals, is approved from another,
/// resumed from the first; production on a third machine passes its gate
/// on the staging record the first machine wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_runs_and_the_promotion_gate_work_from_any_machine() {
    let cluster = Postgres::start();
    let url = database(&cluster, "team");
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"team\"\n{STATE}\n[params.version]\nrequired = true\n\n[environments.staging]\napprovals = {{ required = 1, from = [\"bob\", \"carol\"] }}\n\n[environments.production]\nrequires = {{ environment = \"staging\", same = [\"version\"] }}\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n"
    ));
    let laptop = Machine::new(&bin, &url);
    let other = Machine::new(&bin, &url);
    let ci = Machine::new(&bin, &url);
    let path = laptop.put(&file);
    let waiting = laptop.run(&[
        "exec",
        path.to_str().unwrap(),
        "--env",
        "staging",
        "--set",
        "version=1.2.3",
    ]);
    exits(&waiting, 4);
    let run = run_of(&cluster, "team", "team").unwrap();
    // Production is refused everywhere until staging succeeded.
    let ci_path = ci.put(&file);
    let early = ci.run(&[
        "exec",
        ci_path.to_str().unwrap(),
        "--env",
        "production",
        "--set",
        "version=1.2.3",
    ]);
    exits(&early, 2);
    // Bob approves from his own machine, which never saw the run.
    let approved = other.run_as(
        "bob",
        &["approve", &run, "--as", "bob", "--state-dir", &url],
    );
    exits(&approved, 0);
    // The laptop is gone; CI, with its own checkout of the runbook and
    // only the database's URL, goes on with the run.
    std::fs::remove_file(&path).unwrap();
    let resumed = ci.run(&["resume", &run, "--state", &url]);
    exits(&resumed, 0);
    check_over(&other, &run, "team");
    let shown = other.run(&["show", &run, "--state-dir", &url, "--output", "json"]);
    assert!(text(&shown).contains("bob"), "{}", text(&shown));
    let promoted = ci.run(&[
        "exec",
        ci_path.to_str().unwrap(),
        "--env",
        "production",
        "--set",
        "version=1.2.3",
    ]);
    exits(&promoted, 0);
    assert!(
        text(&promoted).contains(&run),
        "the gate names the staging run: {}",
        text(&promoted)
    );
}

/// A local state folder copied into the backend: its runs read, verify
/// and count for the promotion gate from another machine; copying again
/// copies nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_migrate_copies_a_local_folder_into_the_backend_once() {
    let cluster = Postgres::start();
    let url = database(&cluster, "migrated");
    let bin = Bin::new();
    let body = |state: &str| {
        format!(
            "[runbook]\nname = \"moving\"\n{state}\n[params.version]\nrequired = true\n\n[environments.staging]\n\n[environments.production]\nrequires = {{ environment = \"staging\", same = [\"version\"] }}\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n"
        )
    };
    let local = TestRunbook::new(&body(""));
    let machine = Machine::new(&bin, &url);
    let path = local.path.to_str().unwrap();
    exits(
        &machine.run(&["exec", path, "--env", "staging", "--set", "version=2.0.0"]),
        0,
    );
    let folder = local.dir.path().join(".runbook");
    let run = crate::faults::only_run(&folder);
    let folder_arg = folder.to_str().unwrap();
    let dry = machine.run(&[
        "state",
        "migrate",
        "--from",
        folder_arg,
        "--to",
        &url,
        "--dry-run",
    ]);
    exits(&dry, 0);
    assert!(
        text(&dry).contains("would copy 1 run(s) and 1 deployment record(s)"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        cluster.sql_in(
            "migrated",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'runbook_runs'"
        ),
        "1"
    );
    assert_eq!(
        cluster.sql_in("migrated", "SELECT count(*) FROM runbook_runs"),
        "0",
        "a dry run copies nothing"
    );
    let copied = machine.run(&[
        "state", "migrate", "--from", folder_arg, "--to", &url, "--output", "json",
    ]);
    exits(&copied, 0);
    let copied: serde_json::Value = serde_json::from_slice(&copied.stdout).unwrap();
    assert_eq!(copied["copied"], serde_json::json!([run]));
    assert_eq!(copied["records"], 1);
    let again = machine.run(&[
        "state", "migrate", "--from", folder_arg, "--to", &url, "--output", "json",
    ]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(again["already"], serde_json::json!([run]));
    // Another machine, with the runbook now naming the backend.
    let other = Machine::new(&bin, &url);
    check_over(&other, &run, "migrated");
    let shared = TestRunbook::new(&body(STATE));
    let other_path = other.put(&shared);
    let promoted = other.run(&[
        "exec",
        other_path.to_str().unwrap(),
        "--env",
        "production",
        "--set",
        "version=2.0.0",
    ]);
    exits(&promoted, 0);
    // A folder that mirrors the backend is not migrated again.
    let mirror = other.folder.path().join("cache/runbook/state");
    let mirror = std::fs::read_dir(&mirror)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let refused = other.run(&[
        "state",
        "migrate",
        "--from",
        mirror.to_str().unwrap(),
        "--to",
        &url,
    ]);
    exits(&refused, 2);
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with the
/// `openssl` command: (CA certificate, server certificate, server key).
fn certificates(folder: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(folder)
            .output()
            .expect("openssl runs (Debian's openssl package)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=runbook test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(folder.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        folder.join("ca.crt"),
        folder.join("server.crt"),
        folder.join("server.key"),
    )
}

/// A database that takes only TLS: a run reaches it over TLS with the
/// team's CA (`$PGSSLROOTCERT`); without the CA the server's certificate
/// is refused, and without TLS the server refuses the run; either way
/// before any step, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_backend_is_reached_over_tls_with_the_teams_ca() {
    let folder = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(folder.path());
    let cluster = Postgres::start_tls(&certificate, &key);
    let url = database(&cluster, "tls");
    let bin = Bin::new();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"tls\"\n{STATE}\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n"
    ));
    let machine = Machine::new(&bin, &format!("{url}?sslmode=require"));
    let path = machine.put(&file);
    let path = path.to_str().unwrap();
    let ca = ca.display().to_string();
    let trusted = machine
        .command(&["exec", path], "alice")
        .env("PGSSLROOTCERT", &ca)
        .output()
        .unwrap();
    exits(&trusted, 0);
    assert_eq!(
        cluster.sql_in("tls", "SELECT count(*) FROM runbook_records"),
        "1",
        "the run's record is in the database"
    );
    let unknown_ca = machine.run(&["exec", path]);
    assert_ne!(unknown_ca.status.code(), Some(0), "{}", text(&unknown_ca));
    assert!(
        text(&unknown_ca).contains("certificate"),
        "{}",
        text(&unknown_ca)
    );
    let plain = Machine::new(&bin, &format!("{url}?sslmode=disable"));
    let plain_path = plain.put(&file);
    let refused = plain.run(&["exec", plain_path.to_str().unwrap()]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(text(&refused).contains("pg_hba.conf"), "{}", text(&refused));
    assert_eq!(
        cluster.sql_in("tls", "SELECT count(*) FROM runbook_records"),
        "1"
    );
}

/// A crash at each commit of the run to the database (the failpoint
/// `backend.append`, passed at every durable record) and at the lease's
/// taking: another machine then resumes the run once the lease expired,
/// and every effect happened exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_commit_to_the_database_then_resume_elsewhere_leaves_each_effect_once() {
    let counter = Counter::start().await.unwrap();
    let cluster = Postgres::start();
    let url = database(&cluster, "sweep");
    let bin = Bin::new();
    let reader = Machine::new(&bin, &url);
    // Every place the run passes a failpoint of the backend, in order.
    let probe = Machine::new(&bin, &url);
    let probe_path = probe.put(&slow_counted_runbook("probe", &counter));
    let trace = probe.folder.path().join("trace");
    let traced = probe
        .command(&["exec", probe_path.to_str().unwrap()], "alice")
        .env("RUNBOOK_FAILPOINT_TRACE", &trace)
        .output()
        .unwrap();
    exits(&traced, 0);
    let points: Vec<(String, u64)> = crate::faults::trace_points(&trace)
        .into_iter()
        .filter(|(point, _)| point.starts_with("backend.") || point == "lock.take")
        .collect();
    assert!(
        points.len() > 5,
        "the binary passed {} backend failpoints: it must be built with `--features runbook/failpoints`",
        points.len()
    );
    for (trial, (point, hit)) in points.iter().enumerate() {
        let name = format!("sweep{trial}");
        let label = format!("crash at {point}#{hit}");
        let file = slow_counted_runbook(&name, &counter);
        let first = Machine::new(&bin, &url);
        let second = Arc::new(Machine::new(&bin, &url));
        let path = first.put(&file);
        second.put(&file);
        let rule = format!("{point}=crash@{hit}");
        let crashed = first
            .command(&["exec", path.to_str().unwrap()], "alice")
            .env("RUNBOOK_FAILPOINTS", &rule)
            .output()
            .unwrap();
        assert_eq!(
            crashed.status.code(),
            Some(137),
            "{label}: {}",
            text(&crashed)
        );
        let Some(run) = run_of(&cluster, "sweep", &name) else {
            assert!(
                effects(&counter, &name)
                    .values()
                    .all(|effect| *effect == (0, 0)),
                "{label}: effects without a run: {:?}",
                effects(&counter, &name)
            );
            continue;
        };
        resume_to_the_end(&second, &run, &counter, &name, &label).await;
        assert_eq!(
            effects(&counter, &name),
            counts(&name, [(1, 0), (1, 0), (1, 0), (1, 0)]),
            "{label}: effects (done, undone)"
        );
        check_over(&reader, &run, &label);
    }
}
