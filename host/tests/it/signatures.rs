//! Signed approvals with real `ssh-keygen` keys: an environment whose
//! approvals name an `allowed_signers` file takes only signatures that
//! verify, from approvers other than the operator (by key and by
//! principal), each once, for exactly the run's plan; the operator signs the
//! plan before anything runs; the journal and the deployment record keep
//! the signatures and `runbook audit verify` checks them again.

use crate::support::{TestRunbook, cache_dir, run_id, text};
use runbook::events::{EventKind, SignatureRecord};
use runbook::signature::{Payload, Role};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The people of the tests: alice operates, bob and carol approve, dave
/// has a key in allowed_signers but is no approver, mallory has a key
/// nobody listed.
const PEOPLE: [&str; 5] = ["alice", "bob", "carol", "dave", "mallory"];

/// A runbook whose production approvals name `allowed_signers`, the
/// people's keys, and a run index of their own.
struct Team {
    keys: tempfile::TempDir,
    index: tempfile::TempDir,
    file: TestRunbook,
}

impl Team {
    /// `required` signed approvals from alice, bob and carol.
    fn new(required: u32) -> Self {
        let keys = tempfile::tempdir().unwrap();
        for name in PEOPLE {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(keys.path().join(name))
                .stdin(Stdio::null())
                .output()
                .expect("ssh-keygen runs");
            assert!(made.status.success(), "{}", text(&made));
        }
        let file = TestRunbook::new(&format!(
            "[runbook]\nname = \"signed\"\n\n[params.version]\nrequired = true\n\n[environments.production]\napprovals = {{ required = {required}, from = [\"alice\", \"bob\", \"carol\"], allowed_signers = \"allowed_signers\" }}\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n"
        ));
        let mut signers = String::from("# who may sign runbook approvals\n");
        for name in ["alice", "bob", "carol", "dave"] {
            let public = std::fs::read_to_string(keys.path().join(format!("{name}.pub"))).unwrap();
            signers.push_str(&format!("{name} {}", public.trim()));
            signers.push('\n');
        }
        std::fs::write(file.dir.path().join("allowed_signers"), signers).unwrap();
        Team {
            keys,
            index: tempfile::tempdir().unwrap(),
            file,
        }
    }

    /// A person's private key file (the `.pub` beside it).
    fn key(&self, name: &str) -> PathBuf {
        self.keys.path().join(name)
    }

    /// `runbook ARGS` as `operator`, with no signing key from the
    /// environment and no ssh-agent.
    fn command(&self, operator: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(args)
            .env("RUNBOOK_CACHE_DIR", cache_dir())
            .env("RUNBOOK_INDEX_DIR", self.index.path())
            .env("RUNBOOK_OPERATOR", operator)
            .env("NO_COLOR", "1")
            .env_remove("RUNBOOK_SIGNING_KEY")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, operator: &str, args: &[&str]) -> Output {
        self.command(operator, args).output().expect("runbook runs")
    }

    /// `runbook exec` of version 1.2.3 in production by alice, signed with
    /// her key; it stops at the approval gate.
    fn start(&self) -> String {
        let path = self.file.path.to_str().unwrap().to_owned();
        let key = self.key("alice");
        let started = self.run(
            "alice",
            &[
                "exec",
                &path,
                "--env",
                "production",
                "--set",
                "version=1.2.3",
                "--key",
                key.to_str().unwrap(),
            ],
        );
        assert_eq!(started.status.code(), Some(4), "{}", text(&started));
        assert!(
            text(&started).contains("signed approval"),
            "{}",
            text(&started)
        );
        run_id(&started)
    }

    /// `runbook approve RUN --key KEY` by `name`, with more `args`.
    fn approve(&self, name: &str, run: &str, args: &[&str]) -> Output {
        let key = self.key(name);
        let mut all = vec!["approve", run, "--key", key.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(name, &all)
    }

    /// `runbook resume RUN` by alice.
    fn resume(&self, run: &str) -> Output {
        self.run("alice", &["resume", run])
    }

    fn state(&self) -> PathBuf {
        self.file.dir.path().join(".runbook")
    }

    fn journal(&self, run: &str) -> PathBuf {
        runbook::state::journal_path(&runbook::state::run_dir(&self.state(), run))
    }

    fn deployment(&self, run: &str) -> serde_json::Value {
        let path = self.state().join("deployments").join(format!("{run}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// An approval `name` signs with their own key, outside `runbook
    /// approve`, for the plan the operator signed as `edit` changes it.
    fn forged(&self, run: &str, name: &str, edit: impl FnOnce(&mut Payload)) -> EventKind {
        let record = runbook::journal::read(&self.journal(run)).unwrap();
        let operator = record.operator_signature.expect("the operator signed");
        let mut payload = Payload::parse(&operator.payload).unwrap();
        payload.role = Role::Approver;
        payload.principal = name.to_owned();
        payload.signed = jiff::Timestamp::now().to_string();
        edit(&mut payload);
        let text = payload.text();
        let key = self.key(name);
        let armored = runbook::signature::sign(&key, &text).unwrap();
        let fingerprint =
            runbook::signature::fingerprint(&runbook::signature::public_key_of(&key).unwrap());
        EventKind::Approved {
            by: name.to_owned(),
            plan_hash: payload.fingerprint.clone(),
            signature: Some(SignatureRecord {
                role: "approver".into(),
                principal: name.to_owned(),
                key: fingerprint,
                payload: text,
                armored,
            }),
        }
    }

    /// Appends `event` to the run's journal, as another process would.
    fn append(&self, run: &str, event: EventKind) {
        runbook::journal::append(&self.journal(run), None, event).unwrap();
    }
}

/// Whether the run ran a step.
fn ran_a_step(journal: &Path) -> bool {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .contains("\"step_started\"")
}

#[test]
fn a_signed_approval_lets_the_run_go_on_and_both_signatures_are_kept() {
    let team = Team::new(1);
    let run = team.start();
    let approved = team.approve("bob", &run, &[]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(
        text(&approved).contains("bob approved run")
            && text(&approved).contains("signed with SHA256:"),
        "{}",
        text(&approved)
    );
    assert!(!ran_a_step(&team.journal(&run)));

    let resumed = team.resume(&run);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert!(ran_a_step(&team.journal(&run)));

    let record = team.deployment(&run);
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["approvals"], serde_json::json!(["bob"]));
    assert!(record.get("unsigned_approvals").is_none(), "{record:#}");
    let signatures = record["signatures"].as_array().expect("signatures kept");
    let who: Vec<(&str, &str)> = signatures
        .iter()
        .map(|signature| {
            (
                signature["role"].as_str().unwrap(),
                signature["principal"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(who, [("operator", "alice"), ("approver", "bob")]);
    for signature in signatures {
        assert!(
            signature["key"].as_str().unwrap().starts_with("SHA256:"),
            "{signature:#}"
        );
        assert!(
            signature["armored"]
                .as_str()
                .unwrap()
                .contains("BEGIN SSH SIGNATURE"),
            "{signature:#}"
        );
    }

    let shown = team.run("alice", &["show", &run]);
    assert!(
        text(&shown).contains("bob (signed, SHA256:"),
        "{}",
        text(&shown)
    );
    let verified = team.run("alice", &["audit", "verify", &run]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(
        text(&verified).contains("signatures hold against the runbook's allowed_signers"),
        "{}",
        text(&verified)
    );
}

#[test]
fn without_a_listed_key_the_operator_starts_nothing() {
    let team = Team::new(1);
    let path = team.file.path.to_str().unwrap().to_owned();
    let base = [
        "exec",
        path.as_str(),
        "--env",
        "production",
        "--set",
        "version=1.2.3",
    ];
    let unsigned = team.run("alice", &base);
    assert_eq!(unsigned.status.code(), Some(2), "{}", text(&unsigned));
    assert!(
        text(&unsigned).contains("no signing key was given"),
        "{}",
        text(&unsigned)
    );
    let stranger = team.key("mallory");
    let mut with_stranger = base.to_vec();
    with_stranger.extend(["--key", stranger.to_str().unwrap()]);
    let refused = team.run("mallory", &with_stranger);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not in allowed_signers"),
        "{}",
        text(&refused)
    );
    // Refused before anything was recorded: no run, no journal.
    assert!(
        std::fs::read_dir(team.state().join("runs"))
            .map(|mut runs| runs.next().is_none())
            .unwrap_or(true),
        "a run was recorded"
    );
}

#[test]
fn a_key_not_in_allowed_signers_is_refused() {
    let team = Team::new(1);
    let run = team.start();
    let refused = team.approve("mallory", &run, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not in allowed_signers"),
        "{}",
        text(&refused)
    );
    // Without a key, in an environment that takes only signatures.
    let unsigned = team.run("bob", &["approve", &run, "--as", "bob"]);
    assert_eq!(unsigned.status.code(), Some(2), "{}", text(&unsigned));
    assert!(
        text(&unsigned).contains("takes only signed approvals"),
        "{}",
        text(&unsigned)
    );
    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(!ran_a_step(&team.journal(&run)));
}

#[test]
fn a_principal_who_is_no_approver_is_refused_and_so_is_a_name_the_key_does_not_give() {
    let team = Team::new(1);
    let run = team.start();
    let dave = team.approve("dave", &run, &[]);
    assert_eq!(dave.status.code(), Some(2), "{}", text(&dave));
    assert!(
        text(&dave).contains("belongs to dave")
            && text(&dave).contains("not to one of the approvers"),
        "{}",
        text(&dave)
    );
    let claimed = team.approve("bob", &run, &["--as", "carol"]);
    assert_eq!(claimed.status.code(), Some(2), "{}", text(&claimed));
    assert!(
        text(&claimed).contains("`--as carol` disagrees with the key"),
        "{}",
        text(&claimed)
    );
    // Signed outside `approve`, dave's approval is not counted either.
    team.append(&run, team.forged(&run, "dave", |_| {}));
    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("dave (not among the environment's approvers)"),
        "{}",
        text(&waiting)
    );
}

#[test]
fn the_operator_cannot_approve_with_their_own_key() {
    let team = Team::new(1);
    let run = team.start();
    let own = team.approve("alice", &run, &[]);
    assert_eq!(own.status.code(), Some(2), "{}", text(&own));
    assert!(
        text(&own).contains("as its operator (alice), who cannot approve it"),
        "{}",
        text(&own)
    );
    // The gate compares keys too: an approval alice signed elsewhere does
    // not count.
    team.append(&run, team.forged(&run, "alice", |_| {}));
    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("signed with the key of the operator who started the run"),
        "{}",
        text(&waiting)
    );
    assert!(!ran_a_step(&team.journal(&run)));
}

#[test]
fn the_same_approver_twice_counts_once() {
    let team = Team::new(2);
    let run = team.start();
    let first = team.approve("bob", &run, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let again = team.approve("bob", &run, &[]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("bob already approved run"),
        "{}",
        text(&again)
    );
    // A second signature of bob's, written into the journal, is one
    // approver still.
    team.append(&run, team.forged(&run, "bob", |_| {}));
    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("(1 so far; not counted: bob (already counted"),
        "{}",
        text(&waiting)
    );
    // carol's key, through RUNBOOK_SIGNING_KEY, makes two.
    let carol = team
        .command("carol", &["approve", &run])
        .env("RUNBOOK_SIGNING_KEY", team.key("carol"))
        .output()
        .unwrap();
    assert_eq!(carol.status.code(), Some(0), "{}", text(&carol));
    let resumed = team.resume(&run);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(
        team.deployment(&run)["approvals"],
        serde_json::json!(["bob", "carol"])
    );
}

#[test]
fn an_approval_of_another_plan_is_ignored_saying_what_differs() {
    let team = Team::new(1);
    let run = team.start();
    team.append(
        &run,
        team.forged(&run, "bob", |payload| {
            for (name, value) in &mut payload.parts {
                if name == "param" && value == "version=1.2.3" {
                    *value = "version=1.2.4".to_owned();
                }
            }
            payload.fingerprint = "0".repeat(64);
        }),
    );
    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("approved version=1.2.4, this run has version=1.2.3"),
        "{}",
        text(&waiting)
    );
    assert!(!ran_a_step(&team.journal(&run)));
}

#[test]
fn a_tampered_signature_is_refused_by_the_gate_and_by_audit_verify() {
    let team = Team::new(1);
    let run = team.start();
    let approved = team.approve("bob", &run, &[]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    // Flip one character of the signature's last bytes in the journal.
    let journal = team.journal(&run);
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            if event["event"] != "approved" {
                return line.to_owned();
            }
            let armored = event["signature"]["armored"].as_str().unwrap().to_owned();
            let mut body: Vec<&str> = armored.lines().collect();
            let last = body.len() - 2; // the line before `-----END`
            let flipped: String = body[last]
                .chars()
                .enumerate()
                .map(|(at, character)| match (at, character) {
                    (2, 'A') => 'B',
                    (2, _) => 'A',
                    (_, character) => character,
                })
                .collect();
            body[last] = &flipped;
            event["signature"]["armored"] =
                serde_json::Value::from(format!("{}\n", body.join("\n")));
            serde_json::to_string(&event).unwrap()
        })
        .collect();
    std::fs::write(&journal, format!("{}\n", lines.join("\n"))).unwrap();

    let waiting = team.resume(&run);
    assert_eq!(waiting.status.code(), Some(4), "{}", text(&waiting));
    assert!(
        text(&waiting).contains("not counted: bob ("),
        "{}",
        text(&waiting)
    );
    assert!(!ran_a_step(&journal));
    let verified = team.run("alice", &["audit", "verify", &run]);
    assert_eq!(verified.status.code(), Some(1), "{}", text(&verified));
    assert!(
        text(&verified).contains("the approver signature of bob")
            && text(&verified).contains("does not hold"),
        "{}",
        text(&verified)
    );
}

#[test]
fn unsigned_approvals_are_labelled_unsigned_where_no_allowed_signers_is_named() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"unsigned\"\n\n[environments.production]\napprovals = { required = 1, from = [\"bob\"] }\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n",
    );
    let team = Team {
        keys: tempfile::tempdir().unwrap(),
        index: tempfile::tempdir().unwrap(),
        file,
    };
    let path = team.file.path.to_str().unwrap().to_owned();
    let started = team.run("alice", &["exec", &path, "--env", "production"]);
    assert_eq!(started.status.code(), Some(4), "{}", text(&started));
    let run = run_id(&started);
    let approved = team.run("bob", &["approve", &run, "--as", "bob"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(text(&approved).contains("unsigned"), "{}", text(&approved));
    let resumed = team.resume(&run);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let record = team.deployment(&run);
    assert_eq!(record["approvals"], serde_json::json!(["bob"]));
    assert_eq!(record["unsigned_approvals"], true);
    let shown = team.run("alice", &["show", &run]);
    assert!(text(&shown).contains("bob (unsigned)"), "{}", text(&shown));
}
