//! The OCI distribution API, as a client: blob existence, monolithic and
//! chunked uploads (bodies streamed by the host from granted files),
//! cross-repository mounts, manifests by tag or digest, tag deletion, and
//! authentication: anonymous, basic, and the bearer-token challenge
//! (`WWW-Authenticate: Bearer realm=...`) with basic credentials for the
//! token service.

use crate::layout::{Blob, Source};
use runbook_sdk::Error;
use runbook_sdk::http::{Request, Response};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Every manifest type a pull may get.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A registry and how to sign in to it.
pub struct Registry {
    /// `https://registry.example.com` (no trailing slash).
    pub base: String,
    credentials: Option<(String, String)>,
    /// Bearer tokens by scope, once a token service gave them.
    tokens: RefCell<BTreeMap<String, String>>,
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.header(name)
}

/// `realm`, `service` and `scope` of a `Bearer` challenge.
pub fn parse_challenge(value: &str) -> Option<BTreeMap<String, String>> {
    let rest = value.trim().strip_prefix("Bearer ")?;
    let mut fields = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        fields.insert(key.trim().to_owned(), value.to_owned());
        rest = remaining.trim_start_matches([',', ' ']);
    }
    Some(fields)
}

impl Registry {
    /// A client for `base`, with basic credentials (the password may be a
    /// sealed secret handle) or none.
    pub fn new(base: &str, credentials: Option<(String, String)>) -> Self {
        Registry {
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            tokens: RefCell::new(BTreeMap::new()),
        }
    }

    /// An absolute URL for a path or a `Location` header.
    pub fn url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Sends `request`, signing in as the registry asks; `scope` is the
    /// token scope (`repository:NAME:pull,push`).
    pub fn send(&self, request: Request, scope: &str) -> Result<Response, Error> {
        let response = self.authorized(request.clone(), scope).send()?;
        if response.status != 401 {
            return Ok(response);
        }
        let challenge = header(&response, "www-authenticate")
            .unwrap_or_default()
            .to_owned();
        if challenge.starts_with("Bearer") {
            self.fetch_token(&challenge, scope)?;
            let retried = self.authorized(request, scope).send()?;
            if retried.status == 401 {
                return Err(Error::failed(format!(
                    "{}: the registry refused the token it issued",
                    self.base
                )));
            }
            return Ok(retried);
        }
        Err(Error::failed(match &self.credentials {
            Some((user, _)) => format!(
                "{}: the registry refused the credentials of `{user}`",
                self.base
            ),
            None => format!(
                "{}: the registry needs credentials: set `username` and `password`",
                self.base
            ),
        }))
    }

    fn authorized(&self, request: Request, scope: &str) -> Request {
        if let Some(token) = self.tokens.borrow().get(scope) {
            return request.header("authorization", format!("Bearer {token}"));
        }
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, password),
            None => request,
        }
    }

    fn fetch_token(&self, challenge: &str, scope: &str) -> Result<(), Error> {
        let fields = parse_challenge(challenge).ok_or_else(|| {
            Error::failed(format!(
                "cannot read the registry's challenge `{challenge}`"
            ))
        })?;
        let realm = fields
            .get("realm")
            .ok_or_else(|| Error::failed("the registry's Bearer challenge has no realm"))?;
        let mut url = format!(
            "{realm}?scope={}",
            runbook_sdk::http::encode_component(scope)
        );
        if let Some(service) = fields.get("service") {
            url.push_str(&format!(
                "&service={}",
                runbook_sdk::http::encode_component(service)
            ));
        }
        let mut request = Request::get(&url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, password);
        }
        let response = request.send()?;
        if response.status != 200 {
            return Err(Error::failed(format!(
                "the token service {realm} answered {}: check the credentials",
                response.status
            )));
        }
        let body = response.json()?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| Error::failed("the token service's answer has no token"))?;
        self.tokens
            .borrow_mut()
            .insert(scope.to_owned(), token.to_owned());
        Ok(())
    }

    /// Whether `repository` has the blob.
    pub fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let response = self.send(Request::new("HEAD", url), &scope(repository, "pull"))?;
        match response.status {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(unexpected("checking blob", digest, status, &response)),
        }
    }

    /// Mounts a blob from another repository of the same registry; false
    /// when the registry would not (it then opened an upload, cancelled).
    pub fn mount(&self, repository: &str, from: &str, digest: &str) -> Result<bool, Error> {
        let url = format!(
            "{}/v2/{repository}/blobs/uploads/?mount={digest}&from={from}",
            self.base
        );
        let scope = format!("{} repository:{from}:pull", scope(repository, "pull,push"));
        let response = self.send(Request::post(url), &scope)?;
        match response.status {
            201 => Ok(true),
            202 => {
                if let Some(location) = header(&response, "location") {
                    let cancel = Request::new("DELETE", self.url(location));
                    // A leftover upload session expires on its own.
                    let _ = self.send(cancel, &scope);
                }
                Ok(false)
            }
            status => Err(unexpected("mounting blob", digest, status, &response)),
        }
    }

    /// Uploads a blob: one PUT up to `chunk` bytes, else PATCH chunks then
    /// a closing PUT. File bodies are streamed by the host. `progress` gets
    /// the bytes sent so far.
    pub fn upload(
        &self,
        repository: &str,
        blob: &Blob,
        chunk: u64,
        progress: impl FnMut(u64),
    ) -> Result<(), Error> {
        let attach = |request: Request, offset: u64, length: u64| {
            Ok(match &blob.source {
                Source::File {
                    path,
                    offset: start,
                } => request.body_file(path.clone(), start + offset, length),
                Source::Bytes(bytes) => {
                    let from = usize::try_from(offset).unwrap_or(0);
                    let to = usize::try_from(offset + length).unwrap_or(bytes.len());
                    request.body(bytes[from..to].to_vec())
                }
            })
        };
        self.upload_parts(repository, &blob.digest, blob.size, chunk, attach, progress)
    }

    /// Copies a blob between registries (or repositories that cannot
    /// mount), through the plugin in `chunk`-sized ranges.
    pub fn copy_blob(
        &self,
        source: &Registry,
        from: &str,
        repository: &str,
        digest: &str,
        size: u64,
        chunk: u64,
    ) -> Result<(), Error> {
        let attach = |request: Request, offset: u64, length: u64| {
            Ok(request.body(source.get_range(from, digest, offset, length)?))
        };
        self.upload_parts(repository, digest, size, chunk, attach, |_| {})
    }

    /// The upload protocol: start a session, send the bytes in one PUT or in
    /// PATCH chunks (each body from `attach(request, offset, length)`), close
    /// with the digest, and check what the registry stored.
    fn upload_parts(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        chunk: u64,
        mut attach: impl FnMut(Request, u64, u64) -> Result<Request, Error>,
        mut progress: impl FnMut(u64),
    ) -> Result<(), Error> {
        let scope = scope(repository, "pull,push");
        let started = self.send(
            Request::post(format!("{}/v2/{repository}/blobs/uploads/", self.base)),
            &scope,
        )?;
        if started.status != 202 {
            return Err(unexpected(
                "starting the upload of",
                digest,
                started.status,
                &started,
            ));
        }
        let mut location = self.url(
            header(&started, "location")
                .ok_or_else(|| Error::failed("the registry gave no upload location"))?,
        );
        let finish = |location: &str| {
            let separator = if location.contains('?') { '&' } else { '?' };
            format!("{location}{separator}digest={digest}")
        };
        let closing = if size <= chunk {
            let request = Request::new("PUT", finish(&location))
                .header("content-type", "application/octet-stream");
            self.send(attach(request, 0, size)?, &scope)?
        } else {
            let mut sent = 0;
            while sent < size {
                let length = chunk.min(size - sent);
                let request = Request::new("PATCH", &location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{sent}-{}", sent + length - 1));
                let response = self.send(attach(request, sent, length)?, &scope)?;
                if response.status != 202 {
                    return Err(unexpected(
                        "uploading a chunk of",
                        digest,
                        response.status,
                        &response,
                    ));
                }
                location = self.url(
                    header(&response, "location")
                        .unwrap_or(&location)
                        .to_owned()
                        .as_str(),
                );
                sent += length;
                progress(sent);
            }
            self.send(Request::new("PUT", finish(&location)), &scope)?
        };
        if closing.status != 201 {
            return Err(unexpected(
                "finishing the upload of",
                digest,
                closing.status,
                &closing,
            ));
        }
        if let Some(stored) = header(&closing, "docker-content-digest")
            && stored != digest
        {
            return Err(Error::failed(format!(
                "the registry stored {stored} for blob {digest}"
            )));
        }
        progress(size);
        Ok(())
    }

    fn get_range(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let request = Request::get(url)
            .header("range", format!("bytes={offset}-{}", offset + length - 1))
            .follow_redirects(true);
        let response = self.send(request, &scope(repository, "pull"))?;
        match response.status {
            206 => Ok(response.body),
            200 => {
                let from = usize::try_from(offset).unwrap_or(0);
                let to = usize::try_from(offset + length)
                    .unwrap_or(response.body.len())
                    .min(response.body.len());
                Ok(response.body[from.min(to)..to].to_vec())
            }
            status => Err(unexpected("reading blob", digest, status, &response)),
        }
    }

    /// The digest a tag points at, or `None` when it does not exist.
    pub fn tag_digest(&self, repository: &str, tag: &str) -> Result<Option<String>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{tag}", self.base);
        let response = self.send(
            Request::new("HEAD", url).header("accept", ACCEPT),
            &scope(repository, "pull"),
        )?;
        match response.status {
            200 => Ok(header(&response, "docker-content-digest").map(str::to_owned)),
            404 => Ok(None),
            status => Err(unexpected("reading tag", tag, status, &response)),
        }
    }

    /// A manifest: its media type and bytes.
    pub fn manifest(&self, repository: &str, reference: &str) -> Result<(String, Vec<u8>), Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = self.send(
            Request::get(url).header("accept", ACCEPT),
            &scope(repository, "pull"),
        )?;
        if response.status != 200 {
            return Err(unexpected(
                "reading manifest",
                reference,
                response.status,
                &response,
            ));
        }
        let media_type = header(&response, "content-type")
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_owned();
        Ok((media_type, response.body))
    }

    /// Puts a manifest under a tag or digest; the digest the registry gives.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let request = Request::new("PUT", url)
            .header("content-type", media_type)
            .body(bytes.to_vec());
        let response = self.send(request, &scope(repository, "pull,push"))?;
        if response.status != 201 {
            return Err(unexpected(
                "putting manifest",
                reference,
                response.status,
                &response,
            ));
        }
        Ok(header(&response, "docker-content-digest")
            .map(str::to_owned)
            .unwrap_or_else(|| crate::layout::digest_of(bytes)))
    }

    /// Deletes a manifest by tag or digest; false when the registry does
    /// not allow it.
    pub fn delete_manifest(&self, repository: &str, reference: &str) -> Result<bool, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = self.send(Request::new("DELETE", url), &scope(repository, "delete"))?;
        match response.status {
            200..=299 | 404 => Ok(true),
            400 | 405 => Ok(false),
            status => Err(unexpected("deleting", reference, status, &response)),
        }
    }

    /// The repository's tags.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>, Error> {
        let url = format!("{}/v2/{repository}/tags/list", self.base);
        let response = self.send(Request::get(url), &scope(repository, "pull"))?;
        if response.status == 404 {
            return Ok(Vec::new());
        }
        let body = response.json()?;
        Ok(body["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect())
    }
}

/// The token scope for `actions` on a repository.
pub fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

fn unexpected(doing: &str, what: &str, status: u16, response: &Response) -> Error {
    let text = response.text();
    let detail: String = text.chars().take(300).collect();
    let message = format!("{doing} {what}: the registry answered {status}: {detail}");
    if status >= 500 || status == 429 {
        Error::transient(message)
    } else {
        Error::failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_is_read_with_quoted_and_bare_values() {
        let fields = parse_challenge(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:app:pull,push""#).unwrap();
        assert_eq!(fields["realm"], "https://auth.example.com/token");
        assert_eq!(fields["service"], "registry.example.com");
        assert_eq!(fields["scope"], "repository:app:pull,push");
        assert_eq!(parse_challenge("Basic realm=\"x\""), None);
    }
}
