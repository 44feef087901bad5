//! The `registry-push` plugin against the Debian `docker-registry` (CNCF
//! distribution), with and without htpasswd auth; results checked with
//! `skopeo inspect`, promotions by digest equality.

use crate::support::{RunOptions, TestRunbook, run_file, runtime};
use runbook::events::{EventKind, Status};
use runbook_testenv::Registry;
use runbook_testenv::registry::{write_large_blob, write_layout, write_layout_with};
use std::collections::BTreeMap;

async fn registry(credentials: Option<(&'static str, &'static str)>) -> Registry {
    tokio::task::spawn_blocking(move || Registry::start(credentials))
        .await
        .unwrap()
}

fn push_step(id: &str, registry: &Registry, tags: &str, extra: &str) -> String {
    format!(
        "[[steps]]\nid = \"{id}\"\nuses = \"registry-push\"\nwith.registry = \"{url}\"\nwith.repository = \"riskcast/api\"\nwith.tags = {tags}\nwith.source = \"./dist/image\"\n{extra}grants.http = [\"{url}/v2/\"]\ngrants.fs.read = [\"./dist\"]\n\n",
        url = registry.url()
    )
}

/// A runbook in a folder holding an image layout at `dist/image`; the
/// layout's manifest digest.
fn runbook_with_image(body: &str, label: &str) -> (TestRunbook, String) {
    let runbook = TestRunbook::new(body);
    let digest = write_layout(&runbook.dir.path().join("dist/image"), 3, label);
    (runbook, digest)
}

async fn run_in(runbook: &TestRunbook, secrets: &[(&str, &str)]) -> crate::support::Finished {
    let secrets: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    run_file(
        &runtime(),
        &runbook.path,
        RunOptions {
            secrets,
            ..RunOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn an_image_is_pushed_with_its_tags_and_skopeo_sees_its_digest() {
    let registry = registry(None).await;
    let body = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"1.2.3\", \"latest\"]", "")
    );
    let (runbook, digest) = runbook_with_image(&body, "v1");
    let finished = run_in(&runbook, &[]).await;
    let (status, summary, outputs) = finished.step("push");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["digest"], digest);
    assert_eq!(outputs["previous.1.2.3"], "none");
    assert!(
        summary.ends_with("4 blobs (0.0 MiB), 0 already there"),
        "{summary}"
    );
    for tag in ["1.2.3", "latest"] {
        let seen = registry
            .inspect(&format!("riskcast/api:{tag}"))
            .expect("the tag exists");
        assert_eq!(seen["Digest"], digest.as_str());
        assert_eq!(seen["Labels"]["runbook.test"], "v1");
    }
    // Pushing again sends no blob.
    let again = run_in(&runbook, &[]).await;
    assert!(
        again
            .step("push")
            .1
            .ends_with("4 blobs (0.0 MiB), 4 already there")
    );
}

#[tokio::test]
async fn a_large_layer_goes_up_in_chunks_streamed_by_the_host() {
    let registry = registry(None).await;
    let body = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"big\"]", "with.chunk_mib = 1\n")
    );
    let runbook = TestRunbook::new(&body);
    let layout = runbook.dir.path().join("dist/image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let size = 3 * (1 << 20) + 12345;
    let layer = write_large_blob(&layout, size, 7);
    let digest = write_layout_with(&layout, &[(layer, size)], "big");
    let finished = run_in(&runbook, &[]).await;
    let (status, summary, outputs) = finished.step("push");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["digest"], digest);
    let patches = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(&event.kind, EventKind::CapabilityCall { requested, outcome, .. } if requested.starts_with("PATCH ") && outcome == "202"))
        .count();
    assert_eq!(patches, 4, "a 3 MiB + 12 KiB layer in 1 MiB chunks");
    let streamed = finished
        .events
        .iter()
        .filter(|(event, _)| matches!(&event.kind, EventKind::CapabilityCall { capability, requested, .. } if capability == "fs" && requested.contains("streamed")))
        .count();
    assert!(streamed >= 4, "{streamed}");
    assert_eq!(
        registry.inspect("riskcast/api:big").unwrap()["Digest"],
        digest.as_str()
    );
}

#[tokio::test]
async fn with_htpasswd_auth_the_password_is_a_sealed_secret_and_a_wrong_one_is_named() {
    let registry = registry(Some(("ci", "s3cret-pass"))).await;
    let auth = "with.username = \"ci\"\nwith.password = \"${{ secrets.REGISTRY_PASSWORD }}\"\ngrants.secrets = [\"REGISTRY_PASSWORD\"]\n";
    let body = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"1.2.3\"]", auth)
    );
    let (runbook, digest) = runbook_with_image(&body, "auth");
    let finished = run_in(&runbook, &[("REGISTRY_PASSWORD", "s3cret-pass")]).await;
    let (status, summary, _) = finished.step("push");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        registry.inspect("riskcast/api:1.2.3").unwrap()["Digest"],
        digest.as_str()
    );
    assert!(!finished.lines().join("\n").contains("s3cret-pass"));

    let refused = run_in(&runbook, &[("REGISTRY_PASSWORD", "wrong")]).await;
    let (status, summary, _) = refused.step("push");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("the registry refused the credentials of `ci`"),
        "{summary}"
    );
}

#[tokio::test]
async fn rollback_points_a_moved_tag_back_and_removes_a_new_one() {
    let registry = registry(None).await;
    let first = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"latest\"]", "")
    );
    let (runbook, old) = runbook_with_image(&first, "v1");
    assert_eq!(
        run_in(&runbook, &[]).await.step("push").0,
        Status::Succeeded
    );

    let second = format!(
        "[runbook]\nname = \"push\"\n\n{}[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        push_step("push", &registry, "[\"latest\", \"2.0.0\"]", "")
    );
    let (runbook, new) = runbook_with_image(&second, "v2");
    let finished = run_in(&runbook, &[]).await;
    assert_eq!(
        finished.step("push").1.split(';').next().unwrap(),
        format!("riskcast/api:latest,2.0.0 → {new}")
    );
    assert_eq!(finished.step("smoke").0, Status::Failed);
    assert!(
        finished
            .lines()
            .join("\n")
            .contains(&format!("latest → {old}; removed 2.0.0"))
    );
    assert_eq!(
        registry.inspect("riskcast/api:latest").unwrap()["Digest"],
        old.as_str()
    );
    assert!(
        registry.inspect("riskcast/api:2.0.0").is_none(),
        "2.0.0 should be gone"
    );
}

#[tokio::test]
async fn promote_by_digest_mounts_the_blobs_and_keeps_the_digest() {
    let registry = registry(None).await;
    let staging = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"rc1\"]", "")
            .replace("riskcast/api", "riskcast/api-staging")
    );
    let (runbook, digest) = runbook_with_image(&staging, "rc");
    assert_eq!(
        run_in(&runbook, &[]).await.step("push").0,
        Status::Succeeded
    );

    let promote = format!(
        "[runbook]\nname = \"promote\"\n\n[[steps]]\nid = \"promote\"\nuses = \"registry-push\"\nwith.mode = \"promote\"\nwith.registry = \"{url}\"\nwith.repository = \"riskcast/api\"\nwith.tags = [\"1.2.3\"]\nwith.from_repository = \"riskcast/api-staging\"\nwith.from_reference = \"{digest}\"\ngrants.http = [\"{url}/v2/\"]\n",
        url = registry.url()
    );
    let runbook = TestRunbook::new(&promote);
    let finished = run_in(&runbook, &[]).await;
    let (status, summary, outputs) = finished.step("promote");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.ends_with("4 blobs: 4 mounted, 0 copied, 0 already there"),
        "{summary}"
    );
    assert_eq!(outputs["digest"], digest);
    assert_eq!(
        registry.inspect("riskcast/api:1.2.3").unwrap()["Digest"],
        digest.as_str()
    );
}

#[tokio::test]
async fn a_tarball_of_an_oci_layout_is_pushed_without_unpacking_it() {
    let registry = registry(None).await;
    let body = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"tar\"]", "")
            .replace("./dist/image\"", "./dist/image.tar\"")
    );
    let runbook = TestRunbook::new(&body);
    let layout = runbook.dir.path().join("layout");
    let digest = write_layout(&layout, 2, "tarred");
    std::fs::create_dir_all(runbook.dir.path().join("dist")).unwrap();
    let tarred = std::process::Command::new("tar")
        .arg("-cf")
        .arg(runbook.dir.path().join("dist/image.tar"))
        .arg("-C")
        .arg(&layout)
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success(), "tar failed");
    let finished = run_in(&runbook, &[]).await;
    let (status, summary, outputs) = finished.step("push");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(outputs["digest"], digest);
    assert_eq!(
        registry.inspect("riskcast/api:tar").unwrap()["Digest"],
        digest.as_str()
    );
}

#[tokio::test]
async fn a_legacy_docker_save_tarball_is_pushed_with_digests_computed_from_its_layers() {
    use sha2::Digest;
    let registry = registry(None).await;
    let body = format!(
        "[runbook]\nname = \"push\"\n\n{}",
        push_step("push", &registry, "[\"saved\"]", "")
            .replace("./dist/image\"", "./dist/saved.tar\"")
    );
    let runbook = TestRunbook::new(&body);
    let saved = runbook.dir.path().join("saved");
    std::fs::create_dir_all(saved.join("0a1b")).unwrap();
    let layer = b"pretend this is a layer tar\n".repeat(1000);
    std::fs::write(saved.join("0a1b/layer.tar"), &layer).unwrap();
    let config = r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"runbook.test":"saved"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    std::fs::write(saved.join("c0ffee.json"), config).unwrap();
    std::fs::write(saved.join("manifest.json"), r#"[{"Config":"c0ffee.json","RepoTags":["riskcast/api:saved"],"Layers":["0a1b/layer.tar"]}]"#).unwrap();
    std::fs::create_dir_all(runbook.dir.path().join("dist")).unwrap();
    let tarred = std::process::Command::new("tar")
        .arg("-cf")
        .arg(runbook.dir.path().join("dist/saved.tar"))
        .arg("-C")
        .arg(&saved)
        .args(["manifest.json", "c0ffee.json", "0a1b/layer.tar"])
        .status()
        .unwrap();
    assert!(tarred.success());
    let finished = run_in(&runbook, &[]).await;
    let (status, summary, outputs) = finished.step("push");
    assert_eq!(status, Status::Succeeded, "{summary}");
    let seen = registry.inspect("riskcast/api:saved").unwrap();
    assert_eq!(seen["Digest"], outputs["digest"].as_str());
    assert_eq!(seen["Labels"]["runbook.test"], "saved");
    let layer_digest = format!("sha256:{:x}", sha2::Sha256::digest(&layer));
    assert_eq!(seen["Layers"][0], layer_digest.as_str());
}
