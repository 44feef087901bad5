//! `grants.fs.read`: a step reads the folders it is granted, read-only, and
//! nothing else: not outside them, not through `..`, not through symlinks.

use crate::support::{RunOptions, plugins_table, run_file, runtime};
use runbook::events::{EventKind, Status};

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("dist/image");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(
        image.join("manifest.json"),
        "{\"layers\": 3}\nsecond line\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("outside.txt"), "not granted\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", image.join("escape")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), image.join("sideways")).unwrap();
    let path = dir.path().join("runbook.toml");
    (dir, path)
}

async fn read(path: &str) -> (Status, String, std::collections::BTreeMap<String, String>) {
    let (status, summary, outputs, _) = read_audited(path).await;
    (status, summary, outputs)
}

/// Reads `path` in a step; also gives the file opens the step recorded.
async fn read_audited(
    path: &str,
) -> (
    Status,
    String,
    std::collections::BTreeMap<String, String>,
    Vec<String>,
) {
    let (dir, file) = setup();
    std::fs::write(
        &file,
        format!(
            "[runbook]\nname = \"files\"\n\n[[steps]]\nid = \"read\"\nuses = \"misbehave\"\nwith.mode = \"read-file\"\nwith.path = \"{path}\"\ngrants.fs.read = [\"./dist/image\"]\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{}",
            plugins_table()
        ),
    )
    .unwrap();
    let finished = run_file(&runtime(), &file, RunOptions::default()).await;
    drop(dir);
    let opens = finished
        .events
        .iter()
        .filter_map(|(event, _)| match &event.kind {
            EventKind::CapabilityCall {
                capability,
                requested,
                decision,
                outcome,
                ..
            } if capability == "fs" => Some(format!("{requested} {decision:?} {outcome}")),
            _ => None,
        })
        .collect();
    let (status, summary, outputs) = finished.step("read");
    (status, summary, outputs, opens)
}

#[tokio::test]
async fn every_file_open_is_recorded_with_its_path_and_outcome() {
    let (status, summary, _, opens) = read_audited("./dist/image/manifest.json").await;
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        opens,
        [
            "read /dist/image/manifest.json Allowed opened",
            "write /dist/image/manifest.json.copy Denied not-permitted",
        ]
    );
    let (_, _, _, opens) = read_audited("./dist/image/sideways").await;
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert!(
        opens[0].starts_with("read /dist/image/sideways Denied"),
        "{opens:?}"
    );
}

#[tokio::test]
async fn a_granted_folder_is_readable_at_its_path_and_not_writable() {
    let (status, summary, outputs) = read("./dist/image/manifest.json").await;
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["first_line"], "{\"layers\": 3}");
    assert_eq!(outputs["write"], "refused");
}

/// Asserts that reading `path` failed because the sandbox refused the
/// open of `opened` (the path as the host saw it), and for no other
/// reason: a file that is missing, or unreadable after the sandbox let the
/// open through, fails differently.
async fn assert_refused(path: &str, opened: &str) {
    let (status, summary, outputs, opens) = read_audited(path).await;
    assert_eq!(status, Status::Failed, "{path}: {summary}");
    assert_eq!(
        opens,
        [format!("read {opened} Denied not-permitted")],
        "{path}: {summary}"
    );
    assert!(
        summary.ends_with(": Operation not permitted (os error 63)"),
        "{path}: {summary}"
    );
    assert!(
        outputs.values().all(|value| !value.contains("not granted")),
        "{path}: {outputs:?}"
    );
}

#[tokio::test]
async fn nothing_outside_the_grant_is_visible() {
    // Outside every granted folder there is nothing: the guest's own
    // libc finds no folder to open it in, so no open reaches the host.
    for path in ["./outside.txt", "/etc/hostname"] {
        let (status, summary, _, opens) = read_audited(path).await;
        assert_eq!(status, Status::Failed, "{path}: {summary}");
        assert!(
            summary.ends_with(": No such file or directory (os error 44)"),
            "{path}: {summary}"
        );
        assert!(opens.is_empty(), "{path}: {opens:?}");
    }
    // Climbing out of a granted folder reaches the host, which refuses it.
    for path in [
        "./dist/image/../../outside.txt",
        "/dist/image/../../outside.txt",
    ] {
        assert_refused(path, "/dist/image/../../outside.txt").await;
    }
}

#[tokio::test]
async fn a_symlink_inside_the_grant_cannot_lead_out_of_it() {
    for name in ["escape", "sideways"] {
        assert_refused(
            &format!("./dist/image/{name}"),
            &format!("/dist/image/{name}"),
        )
        .await;
    }
}

#[test]
fn grants_that_leave_the_runbook_folder_are_refused_before_anything_runs() {
    let (dir, file) = setup();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc-link")).unwrap();
    for (grant, expected) in [
        ("../", "climbs out with `..`"),
        ("/etc", "is an absolute path"),
        ("./etc-link", "leads outside the runbook's folder"),
        ("./missing", "cannot grant `./missing`"),
        ("./outside.txt", "is not a folder"),
    ] {
        std::fs::write(
            &file,
            format!("[runbook]\nname = \"files\"\n\n[[steps]]\nid = \"read\"\nuses = \"misbehave\"\nwith.mode = \"print\"\ngrants.fs.read = [\"{grant}\"]\ngrants.http = [\"http://127.0.0.1:9\"]\n\n{}", plugins_table()),
        )
        .unwrap();
        let error = runbook::runbook::load(&file).unwrap_err().to_string();
        assert!(error.contains(expected), "{grant}: {error}");
    }
}
