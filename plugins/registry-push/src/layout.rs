//! Reading an image from disk: an OCI image layout folder (`oci-layout`,
//! `index.json`, `blobs/sha256/...`), the same in a tar file (`docker save`
//! since Docker 25, `skopeo copy oci-archive:`), or a legacy `docker save`
//! tarball (`manifest.json` and uncompressed layer tars, whose digests are
//! computed here). Blobs are located, not loaded: each is a byte range of a
//! file that the host streams when uploading.

use runbook_sdk::Error;
use runbook_sdk::serde_json::{self, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A byte range of a file (the path as the plugin sees it).
    File { path: String, offset: u64 },
    /// Built here (a manifest written for a legacy tarball).
    Bytes(Vec<u8>),
}

/// A child manifest of an index: digest, media type, bytes.
pub type ChildManifest = (String, String, Vec<u8>);

/// One blob to push.
#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:...`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Where it is.
    pub source: Source,
}

/// An image ready to push: its blobs (config and layers, and for an index
/// its child manifests) and the top manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// Config and layer blobs, in upload order.
    pub blobs: Vec<Blob>,
    /// Child manifests of an index, pushed by digest before it.
    pub children: Vec<ChildManifest>,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's bytes, pushed as they are (their digest is kept).
    pub manifest: Vec<u8>,
}

impl Image {
    /// The manifest's digest.
    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// Bytes of all blobs.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|blob| blob.size).sum()
    }
}

/// `sha256:` and the hex digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A file's members: name → (offset, size), for a tar; or a folder.
enum Store {
    Folder(String),
    Tar {
        path: String,
        members: BTreeMap<String, (u64, u64)>,
    },
}

fn io(path: &str, error: std::io::Error) -> Error {
    Error::failed(format!("{path}: {error}"))
}

impl Store {
    fn open(path: &str) -> Result<Self, Error> {
        let metadata = std::fs::metadata(path).map_err(|error| {
            Error::failed(format!(
                "cannot read the image at {path} ({error}): is its folder in the step's `grants.fs.read`?"
            ))
        })?;
        if metadata.is_dir() {
            return Ok(Store::Folder(path.trim_end_matches('/').to_owned()));
        }
        Ok(Store::Tar {
            path: path.to_owned(),
            members: tar_members(path)?,
        })
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Store::Folder(root) => std::fs::metadata(format!("{root}/{name}")).is_ok(),
            Store::Tar { members, .. } => members.contains_key(name),
        }
    }

    fn locate(&self, name: &str) -> Result<(String, u64, u64), Error> {
        match self {
            Store::Folder(root) => {
                let path = format!("{root}/{name}");
                let size = std::fs::metadata(&path)
                    .map_err(|error| io(&path, error))?
                    .len();
                Ok((path, 0, size))
            }
            Store::Tar { path, members } => {
                let (offset, size) = members
                    .get(name)
                    .ok_or_else(|| Error::failed(format!("{path} has no `{name}`")))?;
                Ok((path.clone(), *offset, *size))
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        let (path, offset, size) = self.locate(name)?;
        if size > 64 << 20 {
            return Err(Error::failed(format!(
                "`{name}` is {size} bytes: too large for a manifest"
            )));
        }
        let mut file = std::fs::File::open(&path).map_err(|error| io(&path, error))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|error| io(&path, error))?;
        let mut bytes = vec![0; usize::try_from(size).unwrap_or(0)];
        file.read_exact(&mut bytes)
            .map_err(|error| io(&path, error))?;
        Ok(bytes)
    }

    fn json(&self, name: &str) -> Result<Value, Error> {
        serde_json::from_slice(&self.read(name)?)
            .map_err(|error| Error::failed(format!("`{name}` is not JSON: {error}")))
    }

    fn blob(&self, digest: &str, size: Option<u64>) -> Result<Blob, Error> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::failed(format!("`{digest}` is not a sha256 digest")))?;
        let (path, offset, actual) = self.locate(&format!("blobs/sha256/{hex}"))?;
        if let Some(size) = size
            && size != actual
        {
            return Err(Error::failed(format!(
                "blob {digest} is {actual} bytes, its manifest says {size}"
            )));
        }
        Ok(Blob {
            digest: digest.to_owned(),
            size: actual,
            source: Source::File { path, offset },
        })
    }
}

/// Names, offsets and sizes of a tar's regular files (ustar, pax and GNU
/// long names).
fn tar_members(path: &str) -> Result<BTreeMap<String, (u64, u64)>, Error> {
    let mut file = std::fs::File::open(path).map_err(|error| io(path, error))?;
    let mut members = BTreeMap::new();
    let mut offset = 0u64;
    let mut long_name: Option<String> = None;
    loop {
        let mut header = [0u8; 512];
        file.seek(SeekFrom::Start(offset))
            .map_err(|error| io(path, error))?;
        if file.read_exact(&mut header).is_err() || header.iter().all(|byte| *byte == 0) {
            break;
        }
        let text = |range: std::ops::Range<usize>| {
            let field = &header[range];
            let end = field
                .iter()
                .position(|byte| *byte == 0)
                .unwrap_or(field.len());
            String::from_utf8_lossy(&field[..end]).into_owned()
        };
        let size_field = text(124..136);
        let size = u64::from_str_radix(size_field.trim(), 8).map_err(|_| {
            Error::failed(format!(
                "{path} is not a tar file (bad size at byte {offset})"
            ))
        })?;
        let kind = header[156];
        let data = offset + 512;
        let mut name = text(0..100);
        let prefix = text(345..500);
        if !prefix.is_empty() && &header[257..262] == b"ustar" {
            name = format!("{prefix}/{name}");
        }
        match kind {
            b'L' | b'x' => {
                let mut extra = vec![0; usize::try_from(size).unwrap_or(0)];
                file.seek(SeekFrom::Start(data))
                    .map_err(|error| io(path, error))?;
                file.read_exact(&mut extra)
                    .map_err(|error| io(path, error))?;
                let extra = String::from_utf8_lossy(&extra).into_owned();
                long_name = if kind == b'L' {
                    Some(extra.trim_end_matches('\0').to_owned())
                } else {
                    extra
                        .lines()
                        .find_map(|line| line.split_once(" path=").map(|(_, name)| name.to_owned()))
                };
            }
            b'0' | 0 => {
                let name = long_name.take().unwrap_or(name);
                members.insert(name.trim_start_matches("./").to_owned(), (data, size));
            }
            _ => long_name = None,
        }
        offset = data + size.div_ceil(512) * 512;
    }
    if members.is_empty() {
        return Err(Error::failed(format!(
            "{path} is not a tar file of an image"
        )));
    }
    Ok(members)
}

/// The image at `path`: a layout folder, an OCI archive or a `docker save`
/// tarball. `pick` chooses among several manifests in an index by its
/// `org.opencontainers.image.ref.name` annotation.
pub fn read(path: &str, pick: Option<&str>) -> Result<Image, Error> {
    let store = Store::open(path)?;
    if store.has("index.json") {
        return from_index(&store, pick);
    }
    if store.has("manifest.json") {
        return from_docker_save(&store);
    }
    Err(Error::failed(format!(
        "{path} is neither an OCI image layout (index.json) nor a `docker save` tarball (manifest.json)"
    )))
}

fn from_index(store: &Store, pick: Option<&str>) -> Result<Image, Error> {
    let index = store.json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = match pick {
        Some(name) => manifests
            .iter()
            .find(|entry| {
                entry
                    .pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(Value::as_str)
                    == Some(name)
            })
            .ok_or_else(|| {
                Error::failed(format!(
                    "the layout's index.json has no image named `{name}`"
                ))
            })?,
        None if manifests.len() == 1 => &manifests[0],
        None => {
            return Err(Error::failed(format!(
                "the layout holds {} images: choose one with `image_name`",
                manifests.len()
            )));
        }
    };
    let digest = chosen["digest"].as_str().unwrap_or_default();
    let media_type = chosen["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    let manifest = store.read(&format!(
        "blobs/sha256/{}",
        digest.trim_start_matches("sha256:")
    ))?;
    if digest_of(&manifest) != digest {
        return Err(Error::failed(format!(
            "the manifest's bytes do not match its digest {digest}"
        )));
    }
    let parsed: Value = serde_json::from_slice(&manifest)
        .map_err(|error| Error::failed(format!("manifest {digest} is not JSON: {error}")))?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if let Some(entries) = parsed["manifests"].as_array() {
        // An index (multi-platform): each child manifest and its blobs.
        for entry in entries {
            let child_digest = entry["digest"].as_str().unwrap_or_default();
            let child = store.read(&format!(
                "blobs/sha256/{}",
                child_digest.trim_start_matches("sha256:")
            ))?;
            let child_type = entry["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            blobs.extend(manifest_blobs(
                store,
                &serde_json::from_slice(&child).unwrap_or_default(),
            )?);
            children.push((child_digest.to_owned(), child_type.to_owned(), child));
        }
    } else {
        blobs = manifest_blobs(store, &parsed)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    blobs.retain(|blob| seen.insert(blob.digest.clone()));
    Ok(Image {
        blobs,
        children,
        media_type,
        manifest,
    })
}

fn manifest_blobs(store: &Store, manifest: &Value) -> Result<Vec<Blob>, Error> {
    let mut blobs = Vec::new();
    let config = &manifest["config"];
    blobs.push(store.blob(
        config["digest"].as_str().unwrap_or_default(),
        config["size"].as_u64(),
    )?);
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        blobs.push(store.blob(
            layer["digest"].as_str().unwrap_or_default(),
            layer["size"].as_u64(),
        )?);
    }
    Ok(blobs)
}

/// A legacy `docker save` tarball: layers are uncompressed tars named by
/// image id, so their digests are computed here, reading each once.
fn from_docker_save(store: &Store) -> Result<Image, Error> {
    let saved = store.json("manifest.json")?;
    let entry = saved
        .get(0)
        .ok_or_else(|| Error::failed("manifest.json lists no image"))?;
    let config_name = entry["Config"].as_str().unwrap_or_default();
    let config = store.read(config_name)?;
    let config_blob = Blob {
        digest: digest_of(&config),
        size: config.len() as u64,
        source: Source::Bytes(config),
    };
    let mut layers = Vec::new();
    let layer_names: Vec<String> = entry["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    for (position, name) in layer_names.iter().enumerate() {
        let (path, offset, size) = store.locate(name)?;
        runbook_sdk::log::progress(
            format!(
                "computing the digest of layer {}/{}",
                position + 1,
                layer_names.len()
            ),
            Some(position as f32 / layer_names.len().max(1) as f32),
        );
        let digest = hash_range(&path, offset, size)?;
        layers.push(Blob {
            digest,
            size,
            source: Source::File { path, offset },
        });
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config_blob.size, "digest": config_blob.digest},
        "layers": layers.iter().map(|layer| json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
            "size": layer.size,
            "digest": layer.digest,
        })).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config_blob];
    blobs.extend(layers);
    Ok(Image {
        blobs,
        children: Vec::new(),
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
    })
}

fn hash_range(path: &str, offset: u64, size: u64) -> Result<String, Error> {
    let mut file = std::fs::File::open(path).map_err(|error| io(path, error))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|error| io(path, error))?;
    let mut hasher = Sha256::new();
    let mut left = size;
    let mut buffer = vec![0; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        file.read_exact(&mut buffer[..want])
            .map_err(|error| io(path, error))?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(format!("sha256:{:x}", hasher.finalize()))
}
