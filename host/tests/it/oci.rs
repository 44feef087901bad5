//! Plugins through an OCI registry, against the Debian `docker-registry`
//! with and without htpasswd auth: `runbook plugin push` stores a
//! component in the CNCF Wasm layout and prints the digest to pin; a
//! runbook naming it runs, and runs again with the registry gone (the
//! cache holds it); a tampered layer, manifest or cached copy is refused;
//! `sign` and `verify` with real `ssh-keygen` keys, and a plugin whose
//! runbook trusts signers does not load unsigned or signed by a stranger;
//! a tag without digest is refused by `validate` with the digest to pin.

use crate::support::text;
use runbook_testenv::Registry;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `runbook` binary with a cache folder of the test's own (so that a
/// pull is seen to happen or not), no registry credentials but `env`.
fn cli(cache: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(args)
        .env("RUNBOOK_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", cache.join("no-docker-config"))
        .env_remove("RUNBOOK_REGISTRY_USER")
        .env_remove("RUNBOOK_REGISTRY_PASSWORD")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("runbook runs")
}

const CREDENTIALS: [(&str, &str); 2] = [
    ("RUNBOOK_REGISTRY_USER", "ci"),
    ("RUNBOOK_REGISTRY_PASSWORD", "s3cret-pass"),
];

/// Pushes the `noop` plugin to `repository:tag`; the pinned reference
/// `push` printed, and its JSON.
fn push(
    registry: &Registry,
    env: &[(&str, &str)],
    repository: &str,
    tag: &str,
) -> (String, serde_json::Value) {
    let cache = tempfile::tempdir().unwrap();
    let noop = runbook_testenv::plugin_path("noop");
    let target = format!("oci://{}/{repository}:{tag}", registry.address);
    let pushed = cli(
        cache.path(),
        env,
        &[
            "plugin",
            "push",
            noop.to_str().unwrap(),
            &target,
            "--output",
            "json",
        ],
    );
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    let json: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    let reference = json["reference"].as_str().unwrap().to_owned();
    assert!(
        reference.starts_with(&format!("{target}@sha256:")),
        "{reference}"
    );
    (reference, json)
}

/// A runbook in a folder of its own naming `plugin` (a `[plugins]` value,
/// TOML) for its one step.
struct Book {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Book {
    fn new(plugin: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runbook.toml");
        std::fs::write(
            &path,
            format!(
                "[runbook]\nname = \"from-registry\"\n\n[plugins]\nnoop = {plugin}\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\n"
            ),
        )
        .unwrap();
        Book { dir, path }
    }

    fn file(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn digest_of(reference: &str) -> &str {
    reference.rsplit_once('@').unwrap().1
}

#[test]
fn a_pushed_plugin_runs_from_its_digest_and_again_without_the_registry() {
    let registry = Registry::start(None);
    let (reference, json) = push(&registry, &[], "plugins/noop", "1.0");
    assert_eq!(json["plugin"], "noop");
    // The CNCF Wasm layout: a wasm config and one application/wasm layer.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.blob_file(digest_of(&reference))).unwrap())
            .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{}", json["sha256"].as_str().unwrap()).as_str()
    );

    let book = Book::new(&format!("{reference:?}"));
    let cache = tempfile::tempdir().unwrap();
    let first = cli(cache.path(), &[], &["exec", book.file()]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let hex = digest_of(&reference).trim_start_matches("sha256:");
    let kept = cache.path().join("oci").join(format!("{hex}.wasm"));
    assert!(kept.exists(), "the pulled plugin is kept in the cache");

    // The registry is gone: the cache holds the plugin, checked again.
    drop(registry);
    let second = cli(cache.path(), &[], &["exec", book.file()]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));

    // A cached copy altered since is refused, and named.
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes.push(0);
    std::fs::write(&kept, bytes).unwrap();
    let altered = cli(cache.path(), &[], &["validate", book.file()]);
    assert_eq!(altered.status.code(), Some(2), "{}", text(&altered));
    assert!(
        text(&altered).contains("altered since"),
        "{}",
        text(&altered)
    );
}

#[test]
fn with_htpasswd_auth_push_and_pull_use_the_operators_credentials() {
    let registry = Registry::start(Some(("ci", "s3cret-pass")));
    let noop = runbook_testenv::plugin_path("noop");
    let target = format!("oci://{}/plugins/noop:1.0", registry.address);
    let cache = tempfile::tempdir().unwrap();
    let refused = cli(
        cache.path(),
        &[],
        &["plugin", "push", noop.to_str().unwrap(), &target],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("RUNBOOK_REGISTRY_USER"),
        "{}",
        text(&refused)
    );
    let wrong = cli(
        cache.path(),
        &[
            ("RUNBOOK_REGISTRY_USER", "ci"),
            ("RUNBOOK_REGISTRY_PASSWORD", "nope"),
        ],
        &["plugin", "push", noop.to_str().unwrap(), &target],
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("credentials were not accepted"),
        "{}",
        text(&wrong)
    );

    let (reference, _) = push(&registry, &CREDENTIALS, "plugins/noop", "1.0");
    let book = Book::new(&format!("{reference:?}"));
    let no_credentials = cli(cache.path(), &[], &["validate", book.file()]);
    assert_eq!(
        no_credentials.status.code(),
        Some(2),
        "{}",
        text(&no_credentials)
    );
    let ran = cli(cache.path(), &CREDENTIALS, &["exec", book.file()]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));

    // `docker login`'s config.json serves as well.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"Y2k6czNjcmV0LXBhc3M=\"}}}}}}",
            registry.address
        ),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let from_config = cli(
        fresh.path(),
        &[("DOCKER_CONFIG", docker.path().to_str().unwrap())],
        &["validate", book.file()],
    );
    assert_eq!(from_config.status.code(), Some(0), "{}", text(&from_config));
}

#[test]
fn a_tampered_layer_or_manifest_is_refused() {
    let registry = Registry::start(None);
    let (layer_reference, json) = push(&registry, &[], "plugins/layer", "1.0");
    let layer = format!("sha256:{}", json["sha256"].as_str().unwrap());
    let layer_file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&layer_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_file, bytes).unwrap();
    let book = Book::new(&format!("{layer_reference:?}"));
    let cache = tempfile::tempdir().unwrap();
    let refused = cli(cache.path(), &[], &["validate", book.file()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = text(&refused);
    assert!(said.contains(&format!("not {layer}")), "{said}");
    assert!(said.contains("plugin `noop`"), "{said}");
    assert!(
        !cache.path().join("oci").exists()
            || std::fs::read_dir(cache.path().join("oci")).unwrap().count() == 0,
        "nothing of a tampered plugin is kept"
    );

    let (manifest_reference, _) = push(&registry, &[], "plugins/manifest", "1.0");
    let manifest_file = registry.blob_file(digest_of(&manifest_reference));
    let text_of = std::fs::read_to_string(&manifest_file).unwrap();
    std::fs::write(&manifest_file, format!("{text_of} ")).unwrap();
    let book = Book::new(&format!("{manifest_reference:?}"));
    let refused = cli(cache.path(), &[], &["validate", book.file()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = text(&refused);
    assert!(said.contains("the manifest of plugins/manifest"), "{said}");
    assert!(
        said.contains(&format!("not {}", digest_of(&manifest_reference))),
        "{said}"
    );
}

/// `name`'s ed25519 key in `folder` (the `.pub` beside it).
fn key(folder: &Path, name: &str) -> PathBuf {
    let path = folder.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    assert!(made.status.success(), "{}", text(&made));
    path
}

#[test]
fn a_plugin_whose_runbook_trusts_signers_loads_only_signed_by_one_of_them() {
    let registry = Registry::start(Some(("ci", "s3cret-pass")));
    let (reference, _) = push(&registry, &CREDENTIALS, "plugins/noop", "1.0");
    let keys = tempfile::tempdir().unwrap();
    let alice = key(keys.path(), "alice");
    let mallory = key(keys.path(), "mallory");
    let book = Book::new(&format!(
        "{{ source = {reference:?}, allowed_signers = \"plugins_allowed_signers\" }}"
    ));
    let public = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    let signers = book.dir.path().join("plugins_allowed_signers");
    std::fs::write(
        &signers,
        format!("alice namespaces=\"runbook-plugin\" {}", public.trim()),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();

    let unsigned = cli(cache.path(), &CREDENTIALS, &["validate", book.file()]);
    assert_eq!(unsigned.status.code(), Some(2), "{}", text(&unsigned));
    let said = text(&unsigned);
    assert!(said.contains("plugin `noop`"), "{said}");
    assert!(said.contains("is not signed"), "{said}");
    assert!(said.contains(digest_of(&reference)), "{said}");
    assert!(
        !cache
            .path()
            .join("oci")
            .join(format!(
                "{}.wasm",
                digest_of(&reference).trim_start_matches("sha256:")
            ))
            .exists(),
        "an unsigned plugin is not even pulled"
    );

    let signed = cli(
        cache.path(),
        &CREDENTIALS,
        &[
            "plugin",
            "sign",
            &reference,
            "--key",
            mallory.to_str().unwrap(),
        ],
    );
    assert_eq!(signed.status.code(), Some(0), "{}", text(&signed));
    let stranger = cli(cache.path(), &CREDENTIALS, &["validate", book.file()]);
    assert_eq!(stranger.status.code(), Some(2), "{}", text(&stranger));
    let said = text(&stranger);
    assert!(said.contains("none verifies"), "{said}");
    assert!(said.contains("is not in allowed_signers"), "{said}");
    let verify = |cache: &Path| {
        cli(
            cache,
            &CREDENTIALS,
            &[
                "plugin",
                "verify",
                &reference,
                "--allowed-signers",
                signers.to_str().unwrap(),
            ],
        )
    };
    let not_yet = verify(cache.path());
    assert_eq!(not_yet.status.code(), Some(1), "{}", text(&not_yet));

    // Signed by tag: the digest the tag names is what is signed.
    let by_tag = reference.rsplit_once('@').unwrap().0;
    let signed = cli(
        cache.path(),
        &CREDENTIALS,
        &["plugin", "sign", by_tag, "--key", alice.to_str().unwrap()],
    );
    assert_eq!(signed.status.code(), Some(0), "{}", text(&signed));
    assert!(text(&signed).contains(&reference), "{}", text(&signed));
    let verified = verify(cache.path());
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(
        text(&verified).contains("signed by alice"),
        "{}",
        text(&verified)
    );
    let trusted = cli(cache.path(), &CREDENTIALS, &["exec", book.file()]);
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted));

    // A signature over another digest does not carry over: the same key,
    // another plugin manifest.
    let (other, _) = push(&registry, &CREDENTIALS, "plugins/noop", "1.1");
    assert_ne!(other, reference);
    let other_book = Book::new(&format!(
        "{{ source = {other:?}, allowed_signers = \"{}\" }}",
        signers.display()
    ));
    let unsigned = cli(cache.path(), &CREDENTIALS, &["validate", other_book.file()]);
    assert_eq!(unsigned.status.code(), Some(2), "{}", text(&unsigned));
    assert!(
        text(&unsigned).contains("is not signed"),
        "{}",
        text(&unsigned)
    );

    // Trusting nobody's key: the runbook's file is asked every time, even
    // when the cache holds a signature that verified before.
    std::fs::write(&signers, "# nobody\n").unwrap();
    let distrusted = cli(cache.path(), &CREDENTIALS, &["validate", book.file()]);
    assert_eq!(distrusted.status.code(), Some(2), "{}", text(&distrusted));
}

#[test]
fn a_tag_without_digest_is_refused_by_validate_with_the_digest_to_pin() {
    let registry = Registry::start(None);
    let (reference, _) = push(&registry, &[], "plugins/noop", "1.0");
    let by_tag = reference.rsplit_once('@').unwrap().0;
    let book = Book::new(&format!("{by_tag:?}"));
    let cache = tempfile::tempdir().unwrap();
    let refused = cli(cache.path(), &[], &["validate", book.file()]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = text(&refused);
    assert!(said.contains("by its tag, without a digest"), "{said}");
    assert!(
        said.contains(&format!("pin the digest it names now, `{reference}`")),
        "{said}"
    );
}
