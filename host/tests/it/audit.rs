//! `runbook audit` as a security reviewer uses it: the review of a runbook,
//! what a run touched, and a tamper-evident audit log.

use crate::support::{TestRunbook, cache_dir};
use runbook_testenv::SampleService;
use std::process::{Command, Output};

fn runbook(index: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache_dir())
        .env("RUNBOOK_INDEX_DIR", index)
        .env("RUNBOOK_OPERATOR", "alice")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_review_shows_digest_imports_declarations_grants_and_mismatches() {
    let file = TestRunbook::new(
        "[runbook]\nname = \"review\"\n\n[[steps]]\nid = \"odd\"\nuses = \"misbehave\"\nwith.mode = \"print\"\n\n[[steps]]\nid = \"quiet\"\nuses = \"noop\"\ngrants.http = [\"https://api.example.com\"]\n",
    );
    let index = tempfile::tempdir().unwrap();
    let output = runbook(index.path(), &["audit", file.path.to_str().unwrap()]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(runbook_testenv::plugin_path("misbehave")).unwrap(),
        ))
    };
    assert!(report.contains(&digest), "{report}");
    assert!(
        report.contains("imports `runbook:plugin/kube` but does not declare the `kube` capability"),
        "{report}"
    );
    assert!(
        report.contains("needs `http`, and it is granted no URL: `validate` and `exec` refuse it"),
        "{report}"
    );
    assert!(
        report.contains("grant wider than the plugin asks: `grants.http` is given but plugin"),
        "{report}"
    );

    let json = runbook(
        index.path(),
        &["audit", file.path.to_str().unwrap(), "--output", "json"],
    );
    let reviews: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(reviews[0]["sha256"], digest);
    assert_eq!(
        reviews[1]["grants"]["http"],
        serde_json::json!(["https://api.example.com"])
    );

    let markdown = text(&runbook(
        index.path(),
        &["audit", file.path.to_str().unwrap(), "--output", "markdown"],
    ));
    assert!(
        markdown.starts_with("# Audit of runbook `review`"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| step | environment | plugin | sha256 |"),
        "{markdown}"
    );
}

#[tokio::test]
async fn a_run_s_audit_log_shows_what_it_touched_and_detects_tampering() {
    let service = SampleService::start(None).await.unwrap();
    let file = TestRunbook::new(&format!(
        "[runbook]\nname = \"touch\"\non_failure = \"abort\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"smoke-test\"\nwith.checks = [{{ url = \"{0}/health\" }}, {{ url = \"{0}/health/live\" }}]\ngrants.http = [\"{0}\"]\n\n[[steps]]\nid = \"address\"\nuses = \"noop\"\nwith.message = \"http://127.0.0.1:9/elsewhere\"\n\n[[steps]]\nid = \"sneaky\"\nuses = \"misbehave\"\nwith.mode = \"fetch\"\nwith.url = \"${{{{ steps.address.outputs.message }}}}\"\ngrants.http = [\"{0}\"]\n",
        service.base_url()
    ));
    let index = tempfile::tempdir().unwrap();
    let index_path = index.path().to_path_buf();
    let path = file.path.to_str().unwrap().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        runbook(&index_path, &["exec", &path, "--output", "json"])
    })
    .await
    .unwrap();
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&run.stdout).lines().next().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_owned();

    let touched = text(&runbook(index.path(), &["audit", "--run", &run_id]));
    assert!(
        touched.contains("allowed http     GET http://127.0.0.1"),
        "{touched}"
    );
    assert!(
        touched.contains("DENIED  http     GET http://127.0.0.1:9/elsewhere"),
        "{touched}"
    );

    let intact = runbook(index.path(), &["audit", "verify", &run_id]);
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact));
    assert!(text(&intact).contains("3 records"), "{}", text(&intact));

    let log = file
        .dir
        .path()
        .join(format!(".runbook/runs/{run_id}/audit.jsonl"));
    let original = std::fs::read_to_string(&log).unwrap();
    let tamper = |content: String, expected: &str| {
        std::fs::write(&log, content).unwrap();
        let verdict = runbook(index.path(), &["audit", "verify", &run_id]);
        assert_eq!(verdict.status.code(), Some(1), "{}", text(&verdict));
        assert!(text(&verdict).contains(expected), "{}", text(&verdict));
    };
    tamper(original.replace("elsewhere", "harmless"), "was edited");
    let lines: Vec<&str> = original.lines().collect();
    tamper(
        format!("{}\n{}\n", lines[0], lines[2]),
        "deleted, inserted or reordered",
    );
    tamper(
        format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
        "deleted, inserted or reordered",
    );
    tamper(
        format!("{}\n{}\n", lines[0], lines[1]),
        "removed from the end",
    );
}

#[test]
fn a_locked_plugin_whose_bytes_change_is_refused_and_a_wider_one_needs_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("thing.wasm");
    std::fs::copy(runbook_testenv::plugin_path("noop"), &plugin).unwrap();
    let file = dir.path().join("deploy.toml");
    std::fs::write(&file, "[runbook]\nname = \"locked\"\n\n[plugins]\nthing = \"thing.wasm\"\n\n[[steps]]\nid = \"x\"\nuses = \"thing\"\n").unwrap();
    let index = tempfile::tempdir().unwrap();
    let path = file.to_str().unwrap();

    let locked = runbook(index.path(), &["lock", path]);
    assert_eq!(locked.status.code(), Some(0), "{}", text(&locked));
    let lock = std::fs::read_to_string(dir.path().join("runbook.lock")).unwrap();
    let noop_digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&plugin).unwrap()))
    };
    assert!(lock.contains(&noop_digest), "{lock}");
    assert_eq!(
        runbook(index.path(), &["exec", path]).status.code(),
        Some(0)
    );

    // The plugin's bytes change after locking: refused, both digests named.
    std::fs::copy(runbook_testenv::plugin_path("misbehave"), &plugin).unwrap();
    let changed_digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&plugin).unwrap()))
    };
    let refused = runbook(index.path(), &["exec", path]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains(&noop_digest) && text(&refused).contains(&changed_digest),
        "{}",
        text(&refused)
    );

    // Re-locking shows what it now asks for and needs acceptance.
    let widening = runbook(index.path(), &["lock", path]);
    assert_eq!(widening.status.code(), Some(2), "{}", text(&widening));
    assert!(
        text(&widening).contains("+ asks for capability `http`"),
        "{}",
        text(&widening)
    );
    assert!(
        text(&widening).contains("+ asks for import `runbook:plugin/kube@0.2.0`"),
        "{}",
        text(&widening)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runbook.lock")).unwrap(),
        lock,
        "the lock changed without acceptance"
    );
    let accepted = runbook(index.path(), &["lock", path, "--accept-new-capabilities"]);
    assert_eq!(accepted.status.code(), Some(0), "{}", text(&accepted));
    assert!(
        std::fs::read_to_string(dir.path().join("runbook.lock"))
            .unwrap()
            .contains(&changed_digest)
    );
}

#[test]
fn the_review_of_a_runbook_using_every_shipped_plugin_shows_each_ones_exact_capabilities() {
    let kube = "grants.kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\"] }\n";
    let steps = [
        ("push", "registry-push", "with.registry = \"http://127.0.0.1:5000\"\nwith.repository = \"app\"\nwith.tags = [\"1\"]\nwith.source = \"./dist\"\ngrants.http = [\"http://127.0.0.1:5000/v2/\"]\ngrants.fs.read = [\"./dist\"]\n".to_owned(), vec!["http", "secrets", "fs"]),
        ("snapshot", "rds-snapshot", "with.region = \"us-east-1\"\nwith.instance = \"db\"\nwith.snapshot = \"s\"\ngrants.aws = { services = [\"rds\"], actions = [\"CreateDBSnapshot\", \"DescribeDBSnapshots\"], regions = [\"us-east-1\"] }\n".to_owned(), vec!["aws"]),
        ("migrate", "k8s-job", "with.namespace = \"shop\"\nwith.name = \"m\"\nwith.image = \"app:1\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"batch/v1/Job\", \"v1/Pod\"], verbs = [\"get\", \"list\", \"create\", \"delete\", \"watch\", \"logs\"] }\n".to_owned(), vec!["kube"]),
        ("rollout", "k8s-rollout", format!("with.namespace = \"shop\"\nwith.workloads = [\"deployment/api\"]\nwith.images = {{ app = \"app:2\" }}\n{kube}"), vec!["kube"]),
        ("canary", "canary-shift", "with.router = { type = \"service\", namespace = \"shop\", service = \"api\", stable = \"blue\", canary = \"green\" }\nwith.stages = [100]\nwith.hold = \"1s\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Service\"], verbs = [\"get\", \"patch\"] }\n".to_owned(), vec!["kube"]),
        ("gate", "metrics-gate", "with.prometheus = \"http://127.0.0.1:9090\"\nwith.duration = \"1s\"\nwith.checks = [{ name = \"e\", query = \"up\", min = 1 }]\ngrants.http = [\"http://127.0.0.1:9090/api/v1/query\"]\n".to_owned(), vec![]),
        ("flag", "feature-flag", "with.url = \"http://127.0.0.1:8080/admin/feature-flags\"\nwith.key = \"k\"\nwith.percentage = 10\ngrants.http = [\"http://127.0.0.1:8080/admin/feature-flags\"]\n".to_owned(), vec!["http", "secrets"]),
        ("smoke", "smoke-test", "with.checks = [{ url = \"http://127.0.0.1:8080/health\" }]\ngrants.http = [\"http://127.0.0.1:8080\"]\n".to_owned(), vec!["http"]),
        // What notify needs depends on its `format`: all of it is optional.
        ("announce", "notify", "always = true\nwith.webhook = \"http://127.0.0.1:8080/hooks/x\"\nwith.text = \"done\"\ngrants.http = [\"http://127.0.0.1:8080/hooks/\"]\n".to_owned(), vec![]),
    ];
    let mut body = String::from("[runbook]\nname = \"everything\"\n");
    for (id, plugin, with, _) in &steps {
        body.push_str(&format!(
            "\n[[steps]]\nid = \"{id}\"\nuses = \"{plugin}\"\n{with}"
        ));
    }
    let file = TestRunbook::new(&body);
    std::fs::create_dir_all(file.dir.path().join("dist")).unwrap();
    let index = tempfile::tempdir().unwrap();
    let output = runbook(
        index.path(),
        &["audit", file.path.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let reviews: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    for (id, plugin, _, capabilities) in &steps {
        let review = reviews
            .iter()
            .find(|review| review["step"] == *id)
            .unwrap_or_else(|| panic!("no review of {id}"));
        assert_eq!(review["plugin"], *plugin);
        let declares: Vec<&str> = review["declares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(declares, *capabilities, "{id} declares");
        let names = |key: &str| -> Vec<String> {
            review[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        };
        let optional = names("optional");
        // Metrics come over HTTP (Prometheus) or AWS (CloudWatch); notify
        // posts over HTTP (with secrets) or emails through AWS (SES).
        let expected_optional: Vec<String> = match *id {
            "canary" | "gate" => vec!["http".into(), "aws".into()],
            "announce" => vec!["http".into(), "secrets".into(), "aws".into()],
            // A check's headers may hold a secret (an API key).
            "smoke" => vec!["secrets".into()],
            _ => vec![],
        };
        assert_eq!(optional, expected_optional, "{id} optional");
        let written: Vec<String> = capabilities
            .iter()
            .map(|c| (*c).to_owned())
            .chain(optional.iter().map(|c| format!("{c}?")))
            .collect();
        assert_eq!(names("embedded"), written, "{id} carries");
        assert_eq!(review["sha256"].as_str().unwrap().len(), 64);
        let imports: Vec<&str> = review["imports"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.as_str())
            .filter(|i| i.starts_with("runbook:plugin/"))
            .collect();
        for capability in capabilities
            .iter()
            .filter(|c| matches!(**c, "http" | "kube" | "aws"))
        {
            assert!(
                imports
                    .iter()
                    .any(|import| import.starts_with(&format!("runbook:plugin/{capability}@"))),
                "{id} imports {imports:?}"
            );
        }
        assert_eq!(review["findings"], serde_json::json!([]), "{id}");
    }
}
