//! The Debian `docker-registry` (CNCF distribution) on loopback, with or
//! without htpasswd authentication, deletes enabled; OCI image layouts
//! written for tests; and `skopeo inspect` to check what a registry holds.
//! A test that needs them fails loudly when they are missing.

use crate::process::Tied;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// `user:password` when it needs them.
    pub credentials: Option<String>,
    child: Tied,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `credentials` (`user`, `password`) it asks
    /// for basic auth (bcrypt htpasswd). Blocking.
    pub fn start(credentials: Option<(&str, &str)>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port, credentials)
    }

    /// [`Registry::start`] on a given loopback port.
    pub fn start_on(port: u16, credentials: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = credentials {
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd is installed (Debian apache2-utils; scripts/test installs it)");
            std::fs::write(dir.path().join("htpasswd"), &output.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: runbook-tests\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let child = Tied::spawn("docker-registry", &["serve".to_owned(), config_path.display().to_string()], &[])
            .unwrap_or_else(|error| {
                panic!("docker-registry is needed for the registry tests and could not start ({error}); install the Debian package `docker-registry` (scripts/test does)")
            });
        let mut registry = Registry {
            address: format!("127.0.0.1:{port}"),
            credentials: credentials.map(|(user, password)| format!("{user}:{password}")),
            child,
            dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(&registry.address).is_err() {
            if let Some(status) = registry.child.exited() {
                panic!(
                    "docker-registry exited ({status}): is the Debian package `docker-registry` installed (scripts/test installs it), and port {port} free?"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "docker-registry did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The file the registry keeps a blob's (or a manifest's) bytes in,
    /// `sha256:HEX` named: a test alters it to play a tampered registry.
    pub fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `skopeo inspect` of `repository:reference`: the JSON it prints, or
    /// `None` when the image is not there. Blocking.
    pub fn inspect(&self, reference: &str) -> Option<serde_json::Value> {
        let mut command = Command::new("skopeo");
        command.args(["inspect", "--tls-verify=false"]);
        if let Some(credentials) = &self.credentials {
            command.args(["--creds", credentials]);
        }
        let output = command
            .arg(format!("docker://{}/{reference}", self.address))
            .output()
            .expect("skopeo is installed (scripts/test installs it)");
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = hex_digest(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write a blob");
    format!("sha256:{hex}")
}

/// A layer of `size` bytes, written in pieces (so a 1 GiB layer is never
/// in memory); its digest. The bytes are a pattern seeded by `seed`.
pub fn write_large_blob(layout: &Path, size: u64, seed: u8) -> String {
    let temporary = layout.join("blobs/sha256/partial");
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&temporary).expect("create a blob"));
    let mut hasher = Sha256::new();
    let mut piece = vec![0u8; 1 << 20];
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut left = size;
    while left > 0 {
        for byte in piece.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = state as u8;
        }
        let now = usize::try_from(left.min(piece.len() as u64)).unwrap_or(piece.len());
        file.write_all(&piece[..now]).expect("write a blob");
        hasher.update(&piece[..now]);
        left -= now as u64;
    }
    file.flush().expect("flush a blob");
    let hex = format!("{:x}", hasher.finalize());
    std::fs::rename(&temporary, layout.join("blobs/sha256").join(&hex)).expect("name a blob");
    format!("sha256:{hex}")
}

/// Writes an OCI image layout at `layout` with the given layers (digest,
/// size) already written as blobs; returns the manifest's digest.
pub fn write_layout_with(layout: &Path, layers: &[(String, u64)], label: &str) -> String {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"runbook.test": label}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(digest, _)| digest).collect::<Vec<_>>()},
    })
    .to_string();
    let config_digest = write_blob(layout, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(digest, size)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = write_blob(layout, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len()}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("write index.json");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    manifest_digest
}

/// A small OCI image layout at `layout`: `layers` layers of a few KiB,
/// different for each `label`; returns the manifest's digest.
pub fn write_layout(layout: &Path, layers: usize, label: &str) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("create the layout");
    let written: Vec<(String, u64)> = (0..layers)
        .map(|index| {
            let bytes = format!("{label} layer {index}\n")
                .repeat(200 + index)
                .into_bytes();
            (write_blob(layout, &bytes), bytes.len() as u64)
        })
        .collect();
    write_layout_with(layout, &written, label)
}

/// An OCI image layout holding one image per version, each named by its
/// version (`org.opencontainers.image.ref.name`), as `skopeo copy ...
/// oci:DIR:VERSION` leaves it; each version's layers differ.
pub fn write_versions(layout: &Path, name: &str, versions: &[&str]) {
    let mut entries = Vec::new();
    for version in versions {
        // Each image is written as a layout of its own into the same
        // folder (blobs are shared); the index naming them all comes last.
        let digest = write_layout(layout, 3, &format!("{name} {version}"));
        let size = std::fs::metadata(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .expect("the manifest was written")
        .len();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": version},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
    std::fs::write(layout.join("index.json"), index.to_string()).expect("write index.json");
}
