//! Plugins kept in an OCI registry: references (`oci://HOST/REPO:TAG@sha256:…`),
//! the small part of the OCI distribution API a plugin needs (blobs pushed
//! monolithically, manifests put and got, the registry's Basic or Bearer
//! challenge answered with the operator's credentials), the CNCF Wasm
//! artifact layout (config `application/vnd.wasm.config.v0+json`, one
//! `application/wasm` layer), pulls checked digest by digest into the
//! compiled-component cache, and signatures kept beside the plugin under
//! the tag `sha256-HEX.sig`, as cosign keeps its own (the Debian registry
//! has no referrers API). At the bottom of the module graph: it imports
//! nothing of this crate; what a signature means is `signature`'s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The manifest's media type: an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type in the CNCF Wasm artifact layout.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The one layer's media type: the component's bytes.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The `artifactType` of a signature's manifest.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.runbook.plugin.signature.v1";
/// A signature layer: one armored SSHSIG (`ssh-keygen -Y sign`).
pub const SIGNATURE_LAYER_MEDIA_TYPE: &str = "application/vnd.runbook.sshsig";
/// The empty config of a signature's manifest (`{}`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A manifest is read up to this size.
const MAX_MANIFEST: u64 = 4 << 20;
/// A component is read up to this size.
pub const MAX_COMPONENT: u64 = 512 << 20;
/// A signature is read up to this size.
const MAX_SIGNATURE: u64 = 64 << 10;

/// `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// `team/plugins/smoke-test`.
    pub repository: String,
    /// The tag, when written.
    pub tag: Option<String>,
    /// `sha256:HEX` (lower case), when written.
    pub digest: Option<String>,
}

impl Reference {
    /// Reads a reference; says what is wrong with one that cannot be read.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| "it does not start with `oci://`".to_owned())?;
        let (registry, rest) = rest
            .split_once('/')
            .ok_or_else(|| "it names no repository after the registry".to_owned())?;
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(format!("`{registry}` is not a registry's host[:port]"));
        }
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .filter(|hex| is_hex64(hex))
                    .ok_or_else(|| {
                        format!("`{digest}` is not a digest: write `sha256:` and 64 hex digits")
                    })?;
                (name, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            None => (rest, None),
        };
        let (repository, tag) = match name.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (name, None),
        };
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || tag.starts_with(['.', '-'])
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "`{tag}` is not a tag: letters, digits, `_`, `.` and `-`, up to 128"
            ));
        }
        let component_ok = |part: &str| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        };
        if !repository.split('/').all(component_ok) {
            return Err(format!(
                "`{repository}` is not a repository: lower-case letters, digits and `._-`, in parts between `/`"
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err("it names neither a tag nor a digest".into());
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The reference with `digest` pinned (the tag kept, for people).
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// The tag or else the digest: what the registry is asked for.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or_default()
    }

    /// Whether the registry is on this machine, and so reached over plain
    /// HTTP: every other registry is reached over HTTPS.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    }

    /// The first `oci://…` reference written between backquotes in `text`
    /// (a diagnostic's message), read back.
    pub fn find_in(text: &str) -> Option<Reference> {
        let start = text.find("`oci://")? + 1;
        let end = start + text[start..].find('`')?;
        Reference::parse(&text[start..end]).ok()
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// `sha256:HEX` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The tag a plugin's signatures are kept under: `sha256-HEX.sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry could not be reached, or the answer not read.
    #[error("cannot reach the registry {registry}: {reason}")]
    Unreachable {
        /// `HOST[:PORT]`.
        registry: String,
        /// Why, from the HTTP client (cause chain included).
        reason: String,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error(
        "the registry {registry} refused {what}: {}",
        if *had_credentials { "the credentials were not accepted" } else { "it asks for credentials; set RUNBOOK_REGISTRY_USER and RUNBOOK_REGISTRY_PASSWORD, or log in (`docker login`) so that ~/.docker/config.json holds them" }
    )]
    Unauthorized {
        /// `HOST[:PORT]`.
        registry: String,
        /// What was asked.
        what: String,
        /// Whether credentials were sent.
        had_credentials: bool,
    },
    /// The registry does not hold it.
    #[error("the registry {registry} has no {what}")]
    NotFound {
        /// `HOST[:PORT]`.
        registry: String,
        /// What was asked.
        what: String,
    },
    /// The registry answered something else than expected.
    #[error("the registry {registry} answered {status} to {what}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        /// `HOST[:PORT]`.
        registry: String,
        /// What was asked.
        what: String,
        /// Its status.
        status: u16,
        /// The start of its body.
        detail: String,
    },
    /// The bytes are not those their digest names.
    #[error(
        "{what} has digest {actual}, not {expected}: the registry's copy was altered, or is not what the reference pins; nothing of it was used"
    )]
    Tampered {
        /// What was checked.
        what: String,
        /// The digest the reference or the manifest names.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The manifest is not a Wasm component artifact.
    #[error("{0}")]
    NotAPlugin(String),
    /// An answer larger than anything it should be.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The cache folder could not be written or read.
    #[error("cannot keep the pulled plugin in {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A registry user and password.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The credentials for `registry`: `RUNBOOK_REGISTRY_USER` and
/// `RUNBOOK_REGISTRY_PASSWORD`, else the `auths` entry of
/// `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`) for it
/// (`auth`, base64 `user:password`, or `username` and `password`).
/// Credential helpers (`credsStore`) are not asked.
pub fn credentials_for(registry: &str) -> Option<Credentials> {
    if let (Ok(user), Ok(password)) = (
        std::env::var("RUNBOOK_REGISTRY_USER"),
        std::env::var("RUNBOOK_REGISTRY_PASSWORD"),
    ) {
        return Some(Credentials { user, password });
    }
    let folder = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    let text = std::fs::read_to_string(folder.join("config.json")).ok()?;
    docker_config_credentials(&text, registry)
}

/// The credentials of `registry` in a Docker `config.json`'s text.
pub fn docker_config_credentials(text: &str, registry: &str) -> Option<Credentials> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(key, entry)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (host == registry).then_some(entry)
    })?;
    if let Some(auth) = entry.get("auth").and_then(|auth| auth.as_str())
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth.trim())
        && let Ok(decoded) = String::from_utf8(decoded)
        && let Some((user, password)) = decoded.split_once(':')
    {
        return Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    Some(Credentials {
        user: entry.get("username")?.as_str()?.to_owned(),
        password: entry.get("password")?.as_str()?.to_owned(),
    })
}

/// A manifest, as much of it as plugins and signatures use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// What kind of artifact, when the config does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (a signature's plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A blob's or manifest's media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// `sha256:HEX`.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// The wasm layer of a plugin's manifest, once the manifest is checked to
/// be one: an OCI image manifest whose config is a Wasm config and which
/// has exactly one `application/wasm` layer with a sha256 digest.
pub fn plugin_layer(manifest: &[u8]) -> Result<Descriptor, OciError> {
    let not = |why: String| {
        OciError::NotAPlugin(format!(
            "the manifest is not a wasm component artifact: {why}"
        ))
    };
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|error| not(format!("it cannot be read ({error})")))?;
    if manifest.schema_version != 2 {
        return Err(not(format!("schemaVersion is {}", manifest.schema_version)));
    }
    if let Some(media_type) = &manifest.media_type
        && media_type != MANIFEST_MEDIA_TYPE
    {
        return Err(not(format!("its mediaType is `{media_type}`")));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not(format!(
            "its config is `{}`, not `{CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        )));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(not(format!(
            "it has {} layers, not one",
            manifest.layers.len()
        )));
    };
    if layer.media_type != LAYER_MEDIA_TYPE {
        return Err(not(format!(
            "its layer is `{}`, not `{LAYER_MEDIA_TYPE}`",
            layer.media_type
        )));
    }
    if !layer.digest.strip_prefix("sha256:").is_some_and(is_hex64) {
        return Err(not(format!(
            "its layer's digest `{}` is not a sha256",
            layer.digest
        )));
    }
    if layer.size > MAX_COMPONENT {
        return Err(OciError::TooLarge {
            what: "the plugin's layer".into(),
            limit: MAX_COMPONENT,
        });
    }
    Ok(layer.clone())
}

/// A plugin pulled into the cache (or found there).
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The component file in the cache.
    pub path: PathBuf,
    /// The component's sha256 (hex, without `sha256:`), which its manifest
    /// names: load it pinned to this.
    pub sha256: String,
    /// Whether this call pulled it from the registry.
    pub pulled: bool,
}

/// Where a plugin pulled by `manifest_digest` is kept in the cache folder
/// of compiled components: `oci/HEX.wasm` and its manifest `oci/HEX.json`.
fn cache_paths(cache: &Path, manifest_digest: &str) -> (PathBuf, PathBuf) {
    let hex = manifest_digest.trim_start_matches("sha256:");
    let folder = cache.join("oci");
    (
        folder.join(format!("{hex}.wasm")),
        folder.join(format!("{hex}.json")),
    )
}

/// The plugin of `manifest_digest` when the cache holds it: its manifest
/// is there and still has that digest (the component's own digest is
/// checked when it loads, pinned to the manifest's layer).
pub fn cached_plugin(cache: &Path, manifest_digest: &str) -> Option<Pulled> {
    let (wasm, manifest) = cache_paths(cache, manifest_digest);
    let bytes = std::fs::read(&manifest).ok()?;
    if digest_of(&bytes) != manifest_digest || !wasm.exists() {
        return None;
    }
    let layer = plugin_layer(&bytes).ok()?;
    Some(Pulled {
        path: wasm,
        sha256: layer.digest.trim_start_matches("sha256:").to_owned(),
        pulled: false,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let cache = |source| OciError::Cache {
        path: path.to_owned(),
        source,
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(cache)?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(cache)?;
    std::fs::rename(&temporary, path).map_err(cache)
}

/// The signatures kept in the cache for `manifest_digest` (those that
/// verified once: a signature over a digest stays what it is).
pub fn cached_signatures(cache: &Path, manifest_digest: &str) -> Vec<String> {
    let (_, manifest) = cache_paths(cache, manifest_digest);
    std::fs::read(manifest.with_extension("sigs.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Keeps `signatures` for `manifest_digest` in the cache; a failure only
/// costs a pull next time.
pub fn cache_signatures(cache: &Path, manifest_digest: &str, signatures: &[String]) {
    let (_, manifest) = cache_paths(cache, manifest_digest);
    let text = serde_json::to_vec(signatures).unwrap_or_default();
    if let Err(error) = write_atomically(&manifest.with_extension("sigs.json"), &text) {
        tracing::warn!("{error}");
    }
}

/// What `push_plugin` stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest: what a runbook pins.
    pub manifest: String,
    /// The manifest's size.
    pub manifest_size: u64,
    /// The wasm layer's digest (the component's sha256).
    pub layer: String,
    /// The component's size.
    pub size: u64,
}

/// One repository of one registry, with the operator's credentials.
pub struct Client {
    http: reqwest::Client,
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    actions: &'static str,
    authorization: Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `reference`'s repository, for `actions` (`pull` or
    /// `pull,push`, asked of a token service): over HTTPS, or plain HTTP
    /// for a loopback registry or when `plain_http`; with the credentials
    /// [`credentials_for`] finds.
    pub fn new(
        reference: &Reference,
        actions: &'static str,
        plain_http: bool,
    ) -> Result<Client, OciError> {
        let loopback = reference.is_loopback();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")));
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|error| OciError::Unreachable {
            registry: reference.registry.clone(),
            reason: chain(&error),
        })?;
        let scheme = if loopback || plain_http {
            "http"
        } else {
            "https"
        };
        Ok(Client {
            http,
            base: format!("{scheme}://{}", reference.registry),
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials: credentials_for(&reference.registry),
            actions,
            authorization: Mutex::new(None),
        })
    }

    /// With these credentials instead of those found.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    fn unreachable(&self, error: &reqwest::Error) -> OciError {
        OciError::Unreachable {
            registry: self.registry.clone(),
            reason: chain(error),
        }
    }

    async fn try_send(
        &self,
        request: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let mut builder = request(&self.http);
        let authorization = self
            .authorization
            .lock()
            .map(|held| held.clone())
            .unwrap_or_default();
        if let Some(value) = authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        builder
            .send()
            .await
            .map_err(|error| self.unreachable(&error))
    }

    /// Sends a request; a 401 is answered once with the challenge's scheme
    /// (Basic with the credentials, or a Bearer token from the realm).
    async fn send(
        &self,
        what: &str,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let response = self.try_send(&request).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let authorization = self.answer(what, &challenge).await?;
        if let Ok(mut held) = self.authorization.lock() {
            *held = Some(authorization);
        }
        let response = self.try_send(&request).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(what));
        }
        Ok(response)
    }

    fn unauthorized(&self, what: &str) -> OciError {
        OciError::Unauthorized {
            registry: self.registry.clone(),
            what: what.to_owned(),
            had_credentials: self.credentials.is_some(),
        }
    }

    /// The `Authorization` header that answers `challenge`.
    async fn answer(&self, what: &str, challenge: &str) -> Result<String, OciError> {
        use base64::Engine as _;
        let (scheme, parameters) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self.credentials.as_ref().map(|credentials| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credentials.user, credentials.password))
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return basic
                .map(|basic| format!("Basic {basic}"))
                .ok_or_else(|| self.unauthorized(what));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.unauthorized(what));
        }
        let parameters = challenge_parameters(parameters);
        let realm = parameters
            .get("realm")
            .ok_or_else(|| self.unauthorized(what))?;
        let scope = parameters
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:{}", self.repository, self.actions));
        let mut query = vec![("scope", scope)];
        if let Some(service) = parameters.get("service") {
            query.push(("service", service.clone()));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(basic) = &basic {
            request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        if !response.status().is_success() {
            return Err(self.unauthorized(what));
        }
        let body = read_limited(response, 1 << 20, "the token", self).await?;
        let token: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| self.unauthorized(what))?;
        token
            .get("token")
            .or_else(|| token.get("access_token"))
            .and_then(|token| token.as_str())
            .map(|token| format!("Bearer {token}"))
            .ok_or_else(|| self.unauthorized(what))
    }

    async fn status_error(&self, what: &str, response: reqwest::Response) -> OciError {
        let status = response.status().as_u16();
        if status == 404 {
            return OciError::NotFound {
                registry: self.registry.clone(),
                what: what.to_owned(),
            };
        }
        if status == 401 || status == 403 {
            return self.unauthorized(what);
        }
        let detail = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        OciError::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status,
            detail,
        }
    }

    /// The manifest named by `reference` (a tag or `sha256:…`): its bytes.
    pub async fn manifest(&self, reference: &str) -> Result<Vec<u8>, OciError> {
        let what = format!("manifest {}:{reference}", self.repository);
        let url = self.url(&format!("manifests/{reference}"));
        let response = self
            .send(&what, |http| {
                http.get(&url)
                    .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPE)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(&what, response).await);
        }
        read_limited(response, MAX_MANIFEST, &what, self).await
    }

    /// The manifest named by `digest`, checked to have it.
    pub async fn manifest_by_digest(&self, digest: &str) -> Result<Vec<u8>, OciError> {
        let bytes = self.manifest(digest).await?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(OciError::Tampered {
                what: format!("the manifest of {}@{digest}", self.repository),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The digest of the manifest `tag` names now.
    pub async fn resolve(&self, tag: &str) -> Result<String, OciError> {
        Ok(digest_of(&self.manifest(tag).await?))
    }

    /// The blob `descriptor` names, checked to have its digest and size.
    pub async fn blob(&self, descriptor: &Descriptor, limit: u64) -> Result<Vec<u8>, OciError> {
        let what = format!("blob {}@{}", self.repository, descriptor.digest);
        let url = self.url(&format!("blobs/{}", descriptor.digest));
        let response = self.send(&what, |http| http.get(&url)).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&what, response).await);
        }
        if descriptor.size > limit {
            return Err(OciError::TooLarge { what, limit });
        }
        let bytes = read_limited(response, descriptor.size, &what, self)
            .await
            .map_err(|error| match error {
                // More bytes than the manifest says is a changed blob.
                OciError::TooLarge { .. } => OciError::Tampered {
                    what: what.clone(),
                    expected: descriptor.digest.clone(),
                    actual: format!("(more than its {} bytes)", descriptor.size),
                },
                other => other,
            })?;
        let actual = digest_of(&bytes);
        if actual != descriptor.digest {
            return Err(OciError::Tampered {
                what,
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Uploads `bytes` unless the registry holds them (POST, then one PUT);
    /// their digest.
    pub async fn push_blob(&self, bytes: Bytes) -> Result<String, OciError> {
        let digest = digest_of(&bytes);
        let what = format!("blob {}@{digest}", self.repository);
        let head = self.url(&format!("blobs/{digest}"));
        let response = self.send(&what, |http| http.head(&head)).await?;
        if response.status().is_success() {
            return Ok(digest);
        }
        let uploads = self.url("blobs/uploads/");
        let response = self.send(&what, |http| http.post(&uploads)).await?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            return Err(self
                .status_error(&format!("the upload of {what}"), response)
                .await);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let mut location = url::Url::parse(&self.base)
            .and_then(|base| base.join(location))
            .map_err(|error| OciError::Status {
                registry: self.registry.clone(),
                what: format!("the upload of {what}"),
                status: 202,
                detail: format!("its Location cannot be read ({error})"),
            })?;
        location.query_pairs_mut().append_pair("digest", &digest);
        let location = location.to_string();
        let response = self
            .send(&what, |http| {
                http.put(&location)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(self
                .status_error(&format!("the upload of {what}"), response)
                .await);
        }
        Ok(digest)
    }

    /// Puts `manifest` under `tag`; its digest.
    pub async fn push_manifest(&self, tag: &str, manifest: Bytes) -> Result<String, OciError> {
        let digest = digest_of(&manifest);
        let what = format!("manifest {}:{tag}", self.repository);
        let url = self.url(&format!("manifests/{tag}"));
        let response = self
            .send(&what, |http| {
                http.put(&url)
                    .header(reqwest::header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                    .body(manifest.clone())
            })
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(self.status_error(&what, response).await);
        }
        Ok(digest)
    }

    /// Stores `wasm` as a plugin in the CNCF Wasm artifact layout under
    /// `tag`.
    pub async fn push_plugin(&self, tag: &str, wasm: Vec<u8>) -> Result<Pushed, OciError> {
        let layer = Descriptor::of(LAYER_MEDIA_TYPE, &wasm);
        let config = serde_json::json!({
            "created": jiff::Timestamp::now().to_string(),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.digest],
        })
        .to_string()
        .into_bytes();
        let config_descriptor = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
        self.push_blob(Bytes::from(wasm)).await?;
        self.push_blob(Bytes::from(config)).await?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: None,
            config: config_descriptor,
            layers: vec![layer.clone()],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_size = bytes.len() as u64;
        let digest = self.push_manifest(tag, Bytes::from(bytes)).await?;
        Ok(Pushed {
            manifest: digest,
            manifest_size,
            layer: layer.digest,
            size: layer.size,
        })
    }

    /// The plugin whose manifest has `digest`: from the cache folder, or
    /// pulled into it (manifest checked by digest and layout, the layer by
    /// its digest) and kept there.
    pub async fn pull_plugin(&self, digest: &str, cache: &Path) -> Result<Pulled, OciError> {
        if let Some(cached) = cached_plugin(cache, digest) {
            return Ok(cached);
        }
        let manifest = self.manifest_by_digest(digest).await?;
        let layer = plugin_layer(&manifest)?;
        let wasm = self.blob(&layer, MAX_COMPONENT).await?;
        let (wasm_path, manifest_path) = cache_paths(cache, digest);
        write_atomically(&wasm_path, &wasm)?;
        write_atomically(&manifest_path, &manifest)?;
        Ok(Pulled {
            path: wasm_path,
            sha256: layer.digest.trim_start_matches("sha256:").to_owned(),
            pulled: true,
        })
    }

    /// The signatures kept for the plugin of `digest` (the layers of the
    /// manifest tagged [`signature_tag`]); none when there is no such tag.
    pub async fn signatures(&self, digest: &str) -> Result<Vec<String>, OciError> {
        let bytes = match self.manifest(&signature_tag(digest)).await {
            Ok(bytes) => bytes,
            Err(OciError::NotFound { .. }) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
            return Ok(Vec::new());
        };
        let mut signatures = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|layer| layer.media_type == SIGNATURE_LAYER_MEDIA_TYPE)
        {
            let bytes = self.blob(layer, MAX_SIGNATURE).await?;
            signatures.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(signatures)
    }

    /// Adds `armored` to the signatures of the plugin whose manifest is
    /// `subject` (those already there are kept); the signature manifest's
    /// digest.
    pub async fn push_signature(
        &self,
        subject: &Descriptor,
        armored: &str,
    ) -> Result<String, OciError> {
        let tag = signature_tag(&subject.digest);
        let mut layers = match self.manifest(&tag).await {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .map(|manifest| manifest.layers)
                .unwrap_or_default(),
            Err(OciError::NotFound { .. }) => Vec::new(),
            Err(error) => return Err(error),
        };
        let layer = Descriptor::of(SIGNATURE_LAYER_MEDIA_TYPE, armored.as_bytes());
        self.push_blob(Bytes::from(armored.as_bytes().to_vec()))
            .await?;
        if !layers.contains(&layer) {
            layers.push(layer);
        }
        let empty = b"{}".to_vec();
        let config = Descriptor::of(EMPTY_MEDIA_TYPE, &empty);
        self.push_blob(Bytes::from(empty)).await?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
            config,
            layers,
            subject: Some(subject.clone()),
            annotations: BTreeMap::new(),
        };
        self.push_manifest(
            &tag,
            Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default()),
        )
        .await
    }
}

/// `realm="…",service="…",scope="…"` read into its parameters (quoted
/// values may hold commas).
fn challenge_parameters(text: &str) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        parameters.insert(key, value.to_owned());
        rest = after.trim_start_matches([',', ' ']);
    }
    parameters
}

/// An error with its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
    what: &str,
    client: &Client,
) -> Result<Vec<u8>, OciError> {
    let too_large = || OciError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| client.unreachable(&error))?
    {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_with_their_tag_and_digest() {
        let digest = format!("sha256:{}", "AB".repeat(32));
        let reference =
            Reference::parse(&format!("oci://127.0.0.1:5000/team/noop:1.0@{digest}")).unwrap();
        assert_eq!(reference.registry, "127.0.0.1:5000");
        assert_eq!(reference.repository, "team/noop");
        assert_eq!(reference.tag.as_deref(), Some("1.0"));
        assert_eq!(reference.digest, Some(digest.to_ascii_lowercase()));
        assert!(reference.is_loopback());
        assert_eq!(
            reference.to_string(),
            format!(
                "oci://127.0.0.1:5000/team/noop:1.0@{}",
                digest.to_ascii_lowercase()
            )
        );
        let tagged = Reference::parse("oci://registry.example.com/noop:latest").unwrap();
        assert_eq!(tagged.digest, None);
        assert!(!tagged.is_loopback());
        assert!(
            Reference::parse("oci://[::1]:5000/noop:1")
                .unwrap()
                .is_loopback()
        );
        assert!(
            Reference::parse("oci://localhost/noop:1")
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "https://registry/noop:1",
            "oci://registry",
            "oci://registry/noop",
            "oci://registry/Noop:1",
            "oci://registry/noop:1@sha256:abc",
            "oci://registry/noop:-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Reference::find_in("plugin `noop` names the tag of `oci://h:1/a/b:2`, not a digest"),
            Some(Reference::parse("oci://h:1/a/b:2").unwrap())
        );
    }

    #[test]
    fn the_signature_tag_is_coslike() {
        assert_eq!(signature_tag("sha256:00ff"), "sha256-00ff.sig");
    }

    #[test]
    fn challenges_are_read_with_commas_in_quotes() {
        let parameters = challenge_parameters(
            r#"realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parameters["realm"], "https://auth.example.com/token");
        assert_eq!(parameters["service"], "registry");
        assert_eq!(parameters["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn docker_config_auths_give_credentials() {
        let text = r#"{"auths": {"https://registry.example.com/v1/": {"auth": "Y2k6czNjcmV0"}, "other:5000": {"username": "u", "password": "p"}}}"#;
        let found = docker_config_credentials(text, "registry.example.com").unwrap();
        assert_eq!(
            (found.user.as_str(), found.password.as_str()),
            ("ci", "s3cret")
        );
        let found = docker_config_credentials(text, "other:5000").unwrap();
        assert_eq!((found.user.as_str(), found.password.as_str()), ("u", "p"));
        assert!(docker_config_credentials(text, "elsewhere").is_none());
    }

    #[test]
    fn only_a_wasm_artifact_with_one_wasm_layer_is_a_plugin() {
        let layer = Descriptor::of(LAYER_MEDIA_TYPE, b"\0asm");
        let manifest = |config: &str, layers: Vec<Descriptor>| {
            serde_json::to_vec(&Manifest {
                schema_version: 2,
                media_type: Some(MANIFEST_MEDIA_TYPE.into()),
                artifact_type: None,
                config: Descriptor::of(config, b"{}"),
                layers,
                subject: None,
                annotations: BTreeMap::new(),
            })
            .unwrap()
        };
        assert_eq!(
            plugin_layer(&manifest(CONFIG_MEDIA_TYPE, vec![layer.clone()])).unwrap(),
            layer
        );
        assert!(
            plugin_layer(&manifest(
                "application/vnd.oci.image.config.v1+json",
                vec![layer.clone()]
            ))
            .is_err()
        );
        assert!(plugin_layer(&manifest(CONFIG_MEDIA_TYPE, vec![layer.clone(), layer])).is_err());
        assert!(plugin_layer(b"not json").is_err());
    }
}
