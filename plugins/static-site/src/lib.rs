//! `static-site`: a granted folder uploaded to a versioned S3 bucket through
//! the host's AWS capability (S3's REST-XML API), skipping the files S3
//! already holds (a file's MD5 is the ETag of an object uploaded in one
//! part), then a CloudFront invalidation, waited for a round at a time with
//! the contract's durable wait. The version each changed key held is
//! checkpointed before anything changes; `rollback` puts those versions
//! back, deletes the objects the run created, and invalidates again.

use md5::{Digest, Md5};
use runbook_sdk::aws::{self, xml_elements, xml_escape, xml_text};
use runbook_sdk::serde_json;
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    RunResult, Serialize, Step, Wait, unresolved,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::Duration;

struct StaticSite;

/// Which folder goes where, and what CloudFront should forget.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The bucket's region (`eu-west-1`); CloudFront's calls are made (and
    /// granted) in it too.
    region: String,
    /// The bucket, which must keep object versions (`www-example-com`).
    bucket: String,
    /// The folder of the bucket the site goes to (`site` or `site/`); the
    /// whole bucket when empty.
    #[serde(default)]
    prefix: String,
    /// The folder to upload, inside one of the step's `grants.fs.read`
    /// (`./dist/site`).
    folder: String,
    /// A CloudFront distribution to invalidate after the upload
    /// (`E2QWRUHAPOMQZL`).
    #[serde(default)]
    distribution: Option<String>,
    /// The viewer paths to invalidate (default `["/*"]`).
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    /// The `Cache-Control` of every uploaded object
    /// (`public, max-age=31536000, immutable`); none when not given.
    #[serde(default)]
    cache_control: Option<String>,
    /// The `Cache-Control` of `.html` files, instead of `cache_control`
    /// (`no-cache`).
    #[serde(default)]
    html_cache_control: Option<String>,
    /// Delete the objects under `prefix` that are not in the folder.
    #[serde(default)]
    delete_removed: bool,
    /// Wait until CloudFront reports the invalidation completed.
    #[serde(default = "yes")]
    wait: bool,
    /// How long to wait for the invalidation before failing (default 15m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

fn default_paths() -> Vec<String> {
    vec!["/*".to_owned()]
}

fn yes() -> bool {
    true
}

/// How long the step waits for an invalidation when the runbook does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// When the first `GetInvalidation` is made after the invalidation was created.
const FIRST_CHECK: Duration = Duration::from_secs(2);

/// Time between two `GetInvalidation`s after the first.
const CHECK_EVERY: Duration = Duration::from_secs(15);

/// The largest object one `PutObject` stores: larger ones need a multipart
/// upload, which this plugin does not make.
const MAX_OBJECT_BYTES: u64 = 5 << 30;

/// The namespace of CloudFront's XML documents.
const CLOUDFRONT_XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";

/// The most paths one invalidation batch takes.
const MAX_PATHS: usize = 3000;

/// The most paths with a `*` one invalidation batch takes.
const MAX_WILDCARDS: usize = 15;

/// The start of the checkpoint keys that hold the changes, in chunks:
/// `changes.0`, `changes.1`, ...
const CHANGES: &str = "changes.";

/// The most bytes of changes one checkpoint holds (the host takes 256 KiB).
const CHUNK_BYTES: usize = 192 * 1024;

/// The most checkpoints the changes may take (the host takes 64 per step).
const MAX_CHUNKS: usize = 60;

/// A file of the folder, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalFile {
    /// The object's key: the prefix, then the file's path in the folder.
    key: String,
    /// The path as the plugin sees it, which is also what the host streams
    /// a file body from.
    path: String,
    /// Bytes.
    size: u64,
    /// The lowercase hex MD5 of its bytes: the object's ETag once uploaded.
    md5: String,
}

/// What a sync does to the bucket.
#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    /// Indexes of the local files to upload: other files first, then the
    /// pages (`.html`), so that a new page is served only once what it
    /// links to is there.
    upload: Vec<usize>,
    /// Keys under the prefix that are not in the folder, with
    /// `delete_removed`.
    remove: Vec<String>,
    /// Files whose object already holds their bytes.
    unchanged: usize,
}

/// An object's version, as S3 has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde")]
struct Version {
    /// Its `VersionId` (`null` for an object stored before versioning was
    /// enabled).
    id: String,
    /// Its ETag, without quotes.
    etag: String,
}

/// One key the run changes, as checkpointed for the rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde")]
struct Change {
    key: String,
    /// The version it held before the run; none when the run creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<Version>,
    /// The ETag the run gives it (the file's MD5); none when the run
    /// deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

/// What a sync did, kept between rounds while the invalidation is waited for.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(crate = "runbook_sdk::serde")]
struct Synced {
    /// `s3://bucket/prefix/`.
    location: String,
    uploaded: usize,
    unchanged: usize,
    deleted: usize,
}

impl Synced {
    /// `s3://site/web/: 2 uploaded, 3 unchanged, 0 deleted`.
    fn describe(&self) -> String {
        format!(
            "{}: {} uploaded, {} unchanged, {} deleted",
            self.location, self.uploaded, self.unchanged, self.deleted
        )
    }

    /// The step's outcome, with `invalidation` (empty when none was made).
    fn outcome(&self, summary: String, invalidation: &str) -> Outcome {
        Outcome::new(summary)
            .output("uploaded", self.uploaded.to_string())
            .output("skipped", self.unchanged.to_string())
            .output("deleted", self.deleted.to_string())
            .output("invalidation", invalidation)
    }
}

/// What the step keeps between its rounds: the invalidation it waits for.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Pending {
    distribution: String,
    invalidation: String,
    synced: Synced,
    /// When the invalidation was created, in milliseconds since the epoch.
    created_ms: u64,
}

/// Whether a key is a page: `.html` or `.htm`.
fn is_html(key: &str) -> bool {
    matches!(extension(key).as_str(), "html" | "htm")
}

/// The extension of a key's last segment, in lower case; empty without one.
fn extension(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => extension.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The `Content-Type` an object is served with, from its extension.
fn content_type(key: &str) -> &'static str {
    match extension(key).as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "xml" => "application/xml",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Text percent-encoded as a URI path: everything but letters, digits,
/// `-`, `_`, `.`, `~` and `/`. The host decodes a path once before it
/// encodes it for the signature, so a key holding `%20` must reach it as
/// `%2520` to stay itself.
fn uri_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// An ETag as compared: without quotes, in lower case.
fn plain_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

/// Whether CloudFront says an invalidation is done (`Completed`; moto says
/// `COMPLETED`).
fn completed(status: &str) -> bool {
    status.eq_ignore_ascii_case("Completed")
}

/// `1 file`, `2 files`.
fn count(number: usize, noun: &str) -> String {
    if number == 1 {
        format!("1 {noun}")
    } else {
        format!("{number} {noun}s")
    }
}

/// Milliseconds since the Unix epoch, from the host's wall clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Whether `name` is a bucket name: 3 to 63 lower-case letters, digits,
/// `.` and `-`, starting and ending with a letter or digit.
fn valid_bucket(name: &str) -> bool {
    let edge = |byte: Option<u8>| {
        byte.is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
    };
    (3..=63).contains(&name.len())
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'.' || byte == b'-'
        })
        && edge(name.bytes().next())
        && edge(name.bytes().last())
}

/// The lowercase hex MD5 of everything `reader` gives.
fn md5_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The files of `folder` and below (symbolic links to files followed,
/// to folders skipped), each with its key under `prefix` and its MD5,
/// sorted by key.
fn local_files(folder: &str, prefix: &str) -> Result<Vec<LocalFile>, Error> {
    let root = match folder.trim().trim_end_matches('/') {
        "" => "/",
        root => root,
    };
    let mut files = Vec::new();
    // Folders still to read, as paths inside `root` (`""` for `root`).
    let mut folders = vec![String::new()];
    while let Some(inside) = folders.pop() {
        let path = if inside.is_empty() {
            root.to_owned()
        } else {
            format!("{}/{inside}", root.trim_end_matches('/'))
        };
        let entries = std::fs::read_dir(&path).map_err(|error| unreadable(&path, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| unreadable(&path, error))?;
            let name = entry.file_name().into_string().map_err(|name| {
                Error::failed(format!(
                    "{path}/{}: a name that is not UTF-8 cannot be an S3 key; rename it",
                    name.to_string_lossy()
                ))
            })?;
            let relative = if inside.is_empty() {
                name
            } else {
                format!("{inside}/{name}")
            };
            let file_path = format!("{}/{relative}", root.trim_end_matches('/'));
            let metadata =
                std::fs::metadata(&file_path).map_err(|error| unreadable(&file_path, error))?;
            let linked = entry
                .file_type()
                .is_ok_and(|file_type| file_type.is_symlink());
            if metadata.is_dir() {
                if linked {
                    runbook_sdk::log::warn(format!(
                        "{file_path} is a symbolic link to a folder: not followed, its files are not uploaded"
                    ));
                } else {
                    folders.push(relative);
                }
                continue;
            }
            if !metadata.is_file() {
                continue;
            }
            if metadata.len() > MAX_OBJECT_BYTES {
                return Err(Error::failed(format!(
                    "{file_path} is {} bytes: above 5 GiB S3 needs a multipart upload, which static-site does not make",
                    metadata.len()
                )));
            }
            let file =
                std::fs::File::open(&file_path).map_err(|error| unreadable(&file_path, error))?;
            let md5 = md5_hex(file).map_err(|error| unreadable(&file_path, error))?;
            files.push(LocalFile {
                key: format!("{prefix}{relative}"),
                path: file_path,
                size: metadata.len(),
                md5,
            });
        }
    }
    files.sort_by(|left, right| left.key.cmp(&right.key));
    Ok(files)
}

/// A file or folder of the site that cannot be read.
fn unreadable(path: &str, error: std::io::Error) -> Error {
    Error::failed(format!(
        "cannot read {path} ({error}): is it inside one of the step's `grants.fs.read`?"
    ))
}

/// What to upload and delete to make `remote` (key to ETag, under the
/// prefix) hold `files`.
fn diff(files: &[LocalFile], remote: &BTreeMap<String, String>, delete_removed: bool) -> Diff {
    let mut upload: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, file)| remote.get(&file.key) != Some(&file.md5))
        .map(|(index, _)| index)
        .collect();
    // A stable sort: pages last, each group in key order.
    upload.sort_by_key(|index| is_html(&files[*index].key));
    let unchanged = files.len() - upload.len();
    let remove = if delete_removed {
        let local: BTreeSet<&str> = files.iter().map(|file| file.key.as_str()).collect();
        remote
            .keys()
            // A key ending in `/` is a folder marker some tools create.
            .filter(|key| !local.contains(key.as_str()) && !key.ends_with('/'))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    Diff {
        upload,
        remove,
        unchanged,
    }
}

/// The changes as checkpoint values: JSON arrays of at most
/// [`CHUNK_BYTES`] each.
fn chunks(changes: &[Change]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for change in changes {
        let entry = serde_json::to_string(change).unwrap_or_default();
        if !current.is_empty() && current.len() + entry.len() + 2 > CHUNK_BYTES {
            current.push(']');
            chunks.push(std::mem::take(&mut current));
        }
        let separator = if current.is_empty() { '[' } else { ',' };
        current.push(separator);
        current.push_str(&entry);
    }
    if !current.is_empty() {
        current.push(']');
        chunks.push(current);
    }
    chunks
}

/// The changes a run checkpointed, from the outputs `rollback` is given.
fn recorded(outputs: &Outputs) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    for (key, value) in &outputs.0 {
        if !key.starts_with(CHANGES) {
            continue;
        }
        let chunk: Vec<Change> = serde_json::from_str(value).map_err(|error| {
            Error::failed(format!(
                "cannot read the changes the run recorded in `{key}` ({error}); the earlier versions are listed in that output of the step: restore them by hand"
            ))
        })?;
        changes.extend(chunk);
    }
    Ok(changes)
}

/// A non-2xx answer to a call whose status the plugin reads itself.
fn unexpected(action: &str, key: &str, status: u16) -> Error {
    let text = format!("s3:{action} of {key}: HTTP {status}");
    if status >= 500 || status == 429 {
        Error::transient(text)
    } else {
        Error::failed(text)
    }
}

impl Params {
    /// The key prefix: `site/` for `site`, `/site/` or `site/`; empty for
    /// the whole bucket.
    fn key_prefix(&self) -> String {
        let trimmed = self.prefix.trim().trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }

    /// `s3://bucket/prefix/`.
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key_prefix())
    }

    /// How long to wait for an invalidation.
    fn wait_limit(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, HumanDuration::get)
    }

    /// The `Cache-Control` of the object at `key`, if any.
    fn cache_control_for(&self, key: &str) -> Option<&str> {
        match &self.html_cache_control {
            Some(value) if is_html(key) => Some(value.as_str()),
            _ => self.cache_control.as_deref(),
        }
    }

    /// The path of the object at `key`.
    fn object_path(&self, key: &str) -> String {
        format!("/{}/{}", uri_encode(&self.bucket), uri_encode(key))
    }

    /// Refuses a bucket that does not keep versions: its rollback could not
    /// put back what the run overwrites or deletes.
    fn require_versioning(&self) -> Result<(), Error> {
        let reply = aws::rest(
            "s3",
            &self.region,
            "GetBucketVersioning",
            "GET",
            &format!("/{}", uri_encode(&self.bucket)),
        )
        .query("versioning", "")
        .send()?;
        match xml_text(&reply.body, "Status").as_deref() {
            Some("Enabled") => Ok(()),
            status => Err(Error::failed(format!(
                "bucket `{bucket}` does not keep object versions (versioning {}), so a rollback could not put back what the step overwrites: enable it (`aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled`) and run again",
                status.map_or("never enabled".to_owned(), str::to_ascii_lowercase),
                bucket = self.bucket
            ))),
        }
    }

    /// Every object under `prefix`: key to ETag (`ListObjectsV2`, page by
    /// page).
    fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut objects = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = aws::rest(
                "s3",
                &self.region,
                "ListObjectsV2",
                "GET",
                &format!("/{}", uri_encode(&self.bucket)),
            )
            .query("list-type", "2");
            if !prefix.is_empty() {
                request = request.query("prefix", prefix);
            }
            if let Some(token) = &token {
                request = request.query("continuation-token", token);
            }
            let reply = request.send()?;
            for object in xml_elements(&reply.body, "Contents") {
                if let Some(key) = xml_text(object, "Key") {
                    let etag = plain_etag(&xml_text(object, "ETag").unwrap_or_default());
                    objects.insert(key, etag);
                }
            }
            let more = xml_text(&reply.body, "IsTruncated").as_deref() == Some("true");
            match xml_text(&reply.body, "NextContinuationToken") {
                Some(next) if more && token.as_deref() != Some(next.as_str()) => {
                    token = Some(next);
                }
                _ => return Ok(objects),
            }
        }
    }

    /// The current version of the object at `key` (`HeadObject`); none
    /// when there is no such object.
    fn head(&self, key: &str) -> Result<Option<Version>, Error> {
        let reply = aws::rest(
            "s3",
            &self.region,
            "HeadObject",
            "HEAD",
            &self.object_path(key),
        )
        .send_any_status()?;
        match reply.status {
            200..=299 => Ok(Some(Version {
                id: reply
                    .header("x-amz-version-id")
                    .unwrap_or("null")
                    .to_owned(),
                etag: plain_etag(reply.header("etag").unwrap_or_default()),
            })),
            404 => Ok(None),
            status => Err(unexpected("HeadObject", key, status)),
        }
    }

    /// Uploads one file (`PutObject`), streamed by the host from the
    /// granted folder, with its `Content-Type` and `Cache-Control`.
    fn upload(&self, file: &LocalFile) -> Result<(), Error> {
        let mut request = aws::rest(
            "s3",
            &self.region,
            "PutObject",
            "PUT",
            &self.object_path(&file.key),
        )
        .header("content-type", content_type(&file.key));
        if let Some(value) = self.cache_control_for(&file.key) {
            request = request.header("cache-control", value);
        }
        request.file(&file.path, 0, file.size).send()?;
        Ok(())
    }

    /// Deletes the object at `key` (`DeleteObject`): in a versioned bucket
    /// a delete marker, which keeps its versions.
    fn delete(&self, key: &str) -> Result<(), Error> {
        aws::rest(
            "s3",
            &self.region,
            "DeleteObject",
            "DELETE",
            &self.object_path(key),
        )
        .send()?;
        Ok(())
    }

    /// Makes `version` the object at `key` again (`CopyObject` of that
    /// version onto the key, with its metadata: `Content-Type`,
    /// `Cache-Control`).
    fn restore(&self, key: &str, version: &Version) -> Result<(), Error> {
        let source = format!(
            "/{}/{}?versionId={}",
            uri_encode(&self.bucket),
            uri_encode(key),
            uri_encode(&version.id)
        );
        let reply = aws::rest(
            "s3",
            &self.region,
            "CopyObject",
            "PUT",
            &self.object_path(key),
        )
        .header("x-amz-copy-source", source)
        .send()?;
        // S3 may answer a copy 200 with an error in the body.
        if xml_elements(&reply.body, "Error").is_empty() {
            Ok(())
        } else {
            Err(Error::transient(format!(
                "s3:CopyObject of {key}: {}: {}",
                xml_text(&reply.body, "Code").unwrap_or_default(),
                xml_text(&reply.body, "Message").unwrap_or_default()
            )))
        }
    }

    /// Uploads what differs, deletes what is gone (with
    /// `delete_removed`), after checkpointing the version each key to
    /// change holds.
    fn sync(&self) -> Result<Synced, Error> {
        self.require_versioning()?;
        let prefix = self.key_prefix();
        let files = local_files(&self.folder, &prefix)?;
        let remote = self.list(&prefix)?;
        let delta = diff(&files, &remote, self.delete_removed);

        // What each key to change holds, read before anything changes.
        let mut changes = Vec::new();
        for index in &delta.upload {
            let file = &files[*index];
            let before = if remote.contains_key(&file.key) {
                self.head(&file.key)?
            } else {
                None
            };
            changes.push(Change {
                key: file.key.clone(),
                before,
                after: Some(file.md5.clone()),
            });
        }
        let mut removals = Vec::new();
        for key in &delta.remove {
            if let Some(before) = self.head(key)? {
                changes.push(Change {
                    key: key.clone(),
                    before: Some(before),
                    after: None,
                });
                removals.push(key.clone());
            }
        }
        let values = chunks(&changes);
        if values.len() > MAX_CHUNKS {
            return Err(Error::failed(format!(
                "{} changes to {} are more than the step can record for its rollback: upload the folder in parts (several steps with narrower `folder` and `prefix`)",
                changes.len(),
                self.location()
            )));
        }
        for (index, value) in values.iter().enumerate() {
            runbook_sdk::log::checkpoint(format!("{CHANGES}{index}"), value)?;
        }

        let total = delta.upload.len();
        let every = (total / 50).max(1);
        for (done, index) in delta.upload.iter().enumerate() {
            self.upload(&files[*index])?;
            if (done + 1).is_multiple_of(every) || done + 1 == total {
                runbook_sdk::log::progress(
                    format!("uploaded {}/{total}", done + 1),
                    Some((done + 1) as f32 / total as f32),
                );
            }
        }
        for key in &removals {
            self.delete(key)?;
        }
        let synced = Synced {
            location: self.location(),
            uploaded: total,
            unchanged: delta.unchanged,
            deleted: removals.len(),
        };
        runbook_sdk::log::info(synced.describe());
        Ok(synced)
    }

    /// Creates an invalidation of `paths` on `distribution`; its id.
    fn invalidate(&self, distribution: &str, reference: &str) -> Result<String, Error> {
        let items: String = self
            .paths
            .iter()
            .map(|path| format!("<Path>{}</Path>", xml_escape(path)))
            .collect();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InvalidationBatch xmlns=\"{CLOUDFRONT_XMLNS}\"><Paths><Quantity>{}</Quantity><Items>{items}</Items></Paths><CallerReference>{}</CallerReference></InvalidationBatch>",
            self.paths.len(),
            xml_escape(reference)
        );
        let reply = aws::rest(
            "cloudfront",
            &self.region,
            "CreateInvalidation",
            "POST",
            &format!(
                "/2020-05-31/distribution/{}/invalidation",
                uri_encode(distribution)
            ),
        )
        .xml(body)
        .send()?;
        xml_text(&reply.body, "Id").ok_or_else(|| {
            Error::failed(format!(
                "CloudFront took the invalidation of {distribution} but named none"
            ))
        })
    }

    /// An invalidation's status: `InProgress` or `Completed`.
    fn invalidation_status(&self, distribution: &str, invalidation: &str) -> Result<String, Error> {
        let reply = aws::rest(
            "cloudfront",
            &self.region,
            "GetInvalidation",
            "GET",
            &format!(
                "/2020-05-31/distribution/{}/invalidation/{}",
                uri_encode(distribution),
                uri_encode(invalidation)
            ),
        )
        .send()?;
        xml_text(&reply.body, "Status").ok_or_else(|| {
            Error::failed(format!(
                "CloudFront gave no status for invalidation {invalidation} of {distribution}"
            ))
        })
    }

    /// Polls an invalidation within this call (for `rollback`, which has
    /// no rounds) until it is completed, the wait's timeout passes, or the
    /// step's time nearly runs out; the last status.
    fn settle(&self, distribution: &str, invalidation: &str) -> Result<String, Error> {
        let started = now_ms();
        loop {
            let status = self.invalidation_status(distribution, invalidation)?;
            let waited = Duration::from_millis(now_ms().saturating_sub(started));
            if completed(&status)
                || waited >= self.wait_limit()
                || runbook_sdk::remaining() < CHECK_EVERY * 2
            {
                return Ok(status);
            }
            runbook_sdk::sleep(CHECK_EVERY)?;
        }
    }
}

impl Step for StaticSite {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws, Capability::Fs];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        if params.region.trim().is_empty() {
            return Err(Error::invalid_param(
                "region",
                "give the bucket's region (`eu-west-1`)",
            ));
        }
        if !unresolved(&params.bucket) && !valid_bucket(&params.bucket) {
            return Err(Error::invalid_param(
                "bucket",
                format!(
                    "`{}` is not a bucket name: 3 to 63 lower-case letters, digits, `.` and `-`",
                    params.bucket
                ),
            ));
        }
        if params
            .prefix
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(Error::invalid_param(
                "prefix",
                "a prefix has no `.` or `..` segments",
            ));
        }
        let folder = params.folder.trim();
        if folder.is_empty() {
            return Err(Error::invalid_param(
                "folder",
                "give the folder to upload, inside the step's `grants.fs.read` (`./dist/site`)",
            ));
        }
        if folder.split('/').any(|segment| segment == "..") {
            return Err(Error::invalid_param(
                "folder",
                "a folder with `..` is refused: give it as it is inside the step's `grants.fs.read`",
            ));
        }
        if let Some(distribution) = &params.distribution
            && !unresolved(distribution)
            && (distribution.is_empty()
                || !distribution
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric()))
        {
            return Err(Error::invalid_param(
                "distribution",
                format!(
                    "`{distribution}` is not a CloudFront distribution id (letters and digits, `E2QWRUHAPOMQZL`)"
                ),
            ));
        }
        if params.distribution.is_some() {
            if params.paths.is_empty() {
                return Err(Error::invalid_param(
                    "paths",
                    "give at least one path to invalidate (`/*`)",
                ));
            }
            if params.paths.len() > MAX_PATHS {
                return Err(Error::invalid_param(
                    "paths",
                    format!("an invalidation takes at most {MAX_PATHS} paths"),
                ));
            }
            for (index, path) in params.paths.iter().enumerate() {
                if unresolved(path) {
                    continue;
                }
                if !path.starts_with('/') {
                    return Err(Error::invalid_param(
                        format!("paths[{index}]"),
                        format!(
                            "`{path}` does not start with `/`: invalidation paths are the viewer's, such as `/*` or `/index.html`"
                        ),
                    ));
                }
                if path.contains('*') && !path.ends_with('*') {
                    return Err(Error::invalid_param(
                        format!("paths[{index}]"),
                        format!(
                            "`{path}` has a `*` that does not end it: CloudFront takes one only at the end"
                        ),
                    ));
                }
            }
            let wildcards = params
                .paths
                .iter()
                .filter(|path| path.contains('*'))
                .count();
            if wildcards > MAX_WILDCARDS {
                return Err(Error::invalid_param(
                    "paths",
                    format!("an invalidation takes at most {MAX_WILDCARDS} paths with `*`"),
                ));
            }
        }
        for (name, value) in [
            ("cache_control", &params.cache_control),
            ("html_cache_control", &params.html_cache_control),
        ] {
            if let Some(value) = value
                && value.chars().any(char::is_control)
            {
                return Err(Error::invalid_param(
                    name,
                    "a header value has no line breaks or control characters",
                ));
            }
        }
        Ok(())
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let location = params.location();
        let unknown = [
            &params.region,
            &params.bucket,
            &params.prefix,
            &params.folder,
        ]
        .into_iter()
        .any(|value| unresolved(value.as_str()));
        let mut actions = Vec::new();
        if unknown {
            // A value comes from an earlier step: nothing to read yet.
            actions.push(PlannedAction::write(format!(
                "upload the files of {} to {location}",
                params.folder
            )));
        } else if std::fs::metadata(params.folder.trim()).is_err() {
            // An earlier step of the run builds it.
            actions.push(PlannedAction::write(format!(
                "upload the files of {} to {location} (the folder is not there yet, or not inside the step's `grants.fs.read`)",
                params.folder
            )));
        } else {
            params.require_versioning()?;
            let prefix = params.key_prefix();
            let files = local_files(&params.folder, &prefix)?;
            let remote = params.list(&prefix)?;
            let delta = diff(&files, &remote, params.delete_removed);
            actions.push(if delta.upload.is_empty() {
                PlannedAction::read(format!(
                    "{location} already holds the {} of {}",
                    count(files.len(), "file"),
                    params.folder
                ))
            } else {
                PlannedAction::write(format!(
                    "upload {} ({} unchanged) to {location}",
                    count(delta.upload.len(), "file"),
                    delta.unchanged
                ))
            });
            if !delta.remove.is_empty() {
                actions.push(PlannedAction::write(format!(
                    "delete {} under {location} no longer in {}",
                    count(delta.remove.len(), "object"),
                    params.folder
                )));
            }
        }
        if let Some(distribution) = &params.distribution {
            actions.push(PlannedAction::write(format!(
                "invalidate {} on {distribution}",
                params.paths.join(", ")
            )));
            if params.wait {
                actions.push(PlannedAction::read(format!(
                    "wait until the invalidation is Completed, at most {}",
                    HumanDuration(params.wait_limit())
                )));
            }
        }
        Ok(actions)
    }

    /// The first round syncs the folder (checkpointing first) and creates
    /// the invalidation; each later round asks `GetInvalidation` whether
    /// it is completed, with a journaled wait between rounds.
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        if let Some(pending) = runbook_sdk::state::<Pending>(state.as_deref())? {
            let status =
                params.invalidation_status(&pending.distribution, &pending.invalidation)?;
            if completed(&status) {
                return Ok(RunResult::Done(pending.synced.outcome(
                    format!(
                        "{}, invalidation {} {status}",
                        pending.synced.describe(),
                        pending.invalidation
                    ),
                    &pending.invalidation,
                )));
            }
            let waited = Duration::from_millis(now_ms().saturating_sub(pending.created_ms));
            if waited >= params.wait_limit() {
                return Err(Error::failed(format!(
                    "invalidation {} of {} is still {status} after {}: the files are in S3, but CloudFront may serve older copies until it completes",
                    pending.invalidation,
                    pending.distribution,
                    HumanDuration(params.wait_limit())
                )));
            }
            let status = format!("invalidation {} {status}", pending.invalidation);
            return Ok(RunResult::Wait(Wait::after(
                CHECK_EVERY.min(params.wait_limit() - waited),
                &pending,
                status,
            )));
        }

        let synced = params.sync()?;
        let Some(distribution) = params.distribution.clone() else {
            return Ok(RunResult::Done(synced.outcome(synced.describe(), "")));
        };
        // Also when nothing was uploaded: a run retried after its uploads
        // still leaves CloudFront serving the folder.
        let reference = format!("runbook-static-site-{}", now_ms());
        let invalidation = params.invalidate(&distribution, &reference)?;
        runbook_sdk::log::info(format!(
            "invalidation {invalidation} of {} on {distribution} created",
            params.paths.join(", ")
        ));
        if !params.wait {
            return Ok(RunResult::Done(synced.outcome(
                format!("{}, invalidation {invalidation} created", synced.describe()),
                &invalidation,
            )));
        }
        let status = format!("invalidation {invalidation} created");
        let pending = Pending {
            distribution,
            invalidation,
            synced,
            created_ms: now_ms(),
        };
        Ok(RunResult::Wait(Wait::after(FIRST_CHECK, &pending, status)))
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let changes = recorded(outputs)?;
        let location = params.location();
        if changes.is_empty() {
            return Ok(format!(
                "nothing to undo: the run recorded no change to {location}"
            ));
        }
        let current = params.list(&params.key_prefix())?;
        // Other files first, then the pages that link to them; what the
        // run created goes last.
        let (pages, assets): (Vec<&Change>, Vec<&Change>) =
            changes.iter().partition(|change| is_html(&change.key));
        let (mut restored, mut recreated) = (0, 0);
        let mut created = Vec::new();
        let mut left = Vec::new();
        for change in assets.into_iter().chain(pages) {
            let now = current.get(&change.key).map(String::as_str);
            let before = change.before.as_ref().map(|version| version.etag.as_str());
            if now == before {
                // Never changed (the run stopped first), or already put back.
                continue;
            }
            let as_the_run_left_it = match &change.after {
                Some(after) => now == Some(after.as_str()),
                None => now.is_none(),
            };
            if !as_the_run_left_it {
                left.push(change.key.clone());
                continue;
            }
            match (&change.before, &change.after) {
                (Some(version), Some(_)) => {
                    params.restore(&change.key, version)?;
                    restored += 1;
                }
                (Some(version), None) => {
                    params.restore(&change.key, version)?;
                    recreated += 1;
                }
                (None, _) => created.push(change.key.clone()),
            }
        }
        for key in &created {
            params.delete(key)?;
        }
        let mut summary = format!(
            "{location}: {restored} restored, {} removed, {recreated} re-created",
            created.len()
        );
        if restored + recreated + created.len() > 0
            && let Some(distribution) = &params.distribution
        {
            let reference = format!("runbook-static-site-rollback-{}", now_ms());
            let invalidation = params.invalidate(distribution, &reference)?;
            if params.wait {
                let status = params.settle(distribution, &invalidation)?;
                summary.push_str(&format!(", invalidation {invalidation} {status}"));
            } else {
                summary.push_str(&format!(", invalidation {invalidation} created"));
            }
        }
        if left.is_empty() {
            return Ok(summary);
        }
        let shown: Vec<&str> = left.iter().take(5).map(String::as_str).collect();
        let more = if left.len() > shown.len() {
            format!(" and {} more", left.len() - shown.len())
        } else {
            String::new()
        };
        Err(Error::failed(format!(
            "{summary}; left {} changed since the run: {}{more}; put back their earlier versions by hand if they should go back too",
            count(left.len(), "object"),
            shown.join(", ")
        )))
    }
}

runbook_sdk::export_step!(StaticSite);

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, md5: &str) -> LocalFile {
        LocalFile {
            key: key.to_owned(),
            path: format!("./dist/{key}"),
            size: 1,
            md5: md5.to_owned(),
        }
    }

    #[test]
    fn unchanged_files_are_skipped_pages_go_last_and_removed_keys_are_listed() {
        let files = [
            file("web/about.html", "a1"),
            file("web/app.js", "j2"),
            file("web/index.html", "i1"),
            file("web/style.css", "s1"),
        ];
        let remote: BTreeMap<String, String> = [
            ("web/about.html", "a0"),
            ("web/index.html", "i1"),
            ("web/old.css", "o1"),
            ("web/assets/", "d41d8cd98f00b204e9800998ecf8427e"),
            ("web/style.css", "s1"),
        ]
        .into_iter()
        .map(|(key, etag)| (key.to_owned(), etag.to_owned()))
        .collect();
        let found = diff(&files, &remote, true);
        let keys: Vec<&str> = found
            .upload
            .iter()
            .map(|index| files[*index].key.as_str())
            .collect();
        assert_eq!(keys, ["web/app.js", "web/about.html"]);
        assert_eq!(found.unchanged, 2);
        assert_eq!(found.remove, ["web/old.css"]);
        assert!(diff(&files, &remote, false).remove.is_empty());
    }

    #[test]
    fn the_md5_is_what_s3_gives_as_the_etag_of_a_single_part_upload() {
        assert_eq!(
            md5_hex(&b"hello"[..]).unwrap(),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            md5_hex(&b""[..]).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            plain_etag("\"5D41402ABC4B2A76B9719D911017C592\""),
            "5d41402abc4b2a76b9719d911017c592"
        );
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("web/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("web/app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("web/app.js.map"), "application/json");
        assert_eq!(content_type("fonts/a.woff2"), "font/woff2");
        assert_eq!(content_type("favicon.ico"), "image/x-icon");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
        assert_eq!(content_type("web/.htaccess"), "application/octet-stream");
        assert!(is_html("a/b.HTM"));
        assert!(!is_html("a.html/b"));
    }

    #[test]
    fn keys_are_encoded_so_that_the_host_decoding_once_gives_them_back() {
        assert_eq!(
            uri_encode("web/my page+1 100%.html"),
            "web/my%20page%2B1%20100%25.html"
        );
        assert_eq!(uri_encode("web/été.css"), "web/%C3%A9t%C3%A9.css");
        assert_eq!(uri_encode("a-b_c.d~e/f"), "a-b_c.d~e/f");
    }

    fn params(prefix: &str) -> Params {
        serde_json::from_value(serde_json::json!({
            "region": "us-east-1",
            "bucket": "site",
            "prefix": prefix,
            "folder": "./dist/site",
            "cache_control": "max-age=60",
            "html_cache_control": "no-cache",
        }))
        .unwrap()
    }

    #[test]
    fn the_prefix_is_a_folder_and_pages_get_their_own_cache_control() {
        assert_eq!(params("").key_prefix(), "");
        assert_eq!(params("/web/").key_prefix(), "web/");
        assert_eq!(params("web").location(), "s3://site/web/");
        let params = params("web");
        assert_eq!(params.cache_control_for("web/index.html"), Some("no-cache"));
        assert_eq!(params.cache_control_for("web/app.css"), Some("max-age=60"));
        assert_eq!(params.paths, ["/*"]);
        assert!(params.wait);
    }

    #[test]
    fn changes_are_recorded_in_chunks_and_read_back_from_the_outputs() {
        let changes: Vec<Change> = (0..3000_u32)
            .map(|number| Change {
                key: format!("web/assets/file-{number:05}.js"),
                before: number.is_multiple_of(2).then(|| Version {
                    id: format!("version-{number}"),
                    etag: "0123456789abcdef0123456789abcdef".to_owned(),
                }),
                after: (!number.is_multiple_of(3))
                    .then(|| "fedcba9876543210fedcba9876543210".to_owned()),
            })
            .collect();
        assert!(chunks(&[]).is_empty());
        let values = chunks(&changes);
        assert!(values.len() > 1, "{}", values.len());
        assert!(values.iter().all(|value| value.len() <= CHUNK_BYTES));
        let mut outputs: Vec<(String, String)> = values
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| (format!("{CHANGES}{index}"), chunk))
            .collect();
        outputs.push(("uploaded".to_owned(), "2000".to_owned()));
        let read = recorded(&Outputs(outputs)).unwrap();
        assert_eq!(read, changes);
    }

    #[test]
    fn bucket_names_are_checked() {
        assert!(valid_bucket("www.example-site"));
        assert!(!valid_bucket("Site"));
        assert!(!valid_bucket("ab"));
        assert!(!valid_bucket("-site"));
        assert!(!valid_bucket("site/x"));
    }
}
