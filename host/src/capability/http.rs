//! Outbound HTTP for plugins: the policy (`UrlGrant`), and the host side of
//! `runbook:plugin/http`. The grant check comes first; redirects are checked
//! like first requests; DNS answers pointing at link-local or metadata
//! addresses are refused; secret handles are unsealed only here; every
//! request, allowed or denied, is an event.

use super::StepContext;
use super::secrets::Unseal;
use crate::events::{Decision, EventKind};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::runbook::plugin::http::{Request, Response};
use futures_util::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Largest response body handed to a plugin.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Request timeout when the plugin sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;

/// One entry of `grants.http`: a scheme, host and port, and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGrant {
    scheme: String,
    host: String,
    port: u16,
    path_prefix: String,
    text: String,
}

impl UrlGrant {
    /// Parses `scheme://host[:port][/path-prefix]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|error| error.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not http or https", url.scheme()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a grant has no query or fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a grant has no user name or password".into());
        }
        let host = url.host_str().ok_or("no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("no port")?;
        let path_prefix = url.path().trim_end_matches('/').to_owned();
        Ok(UrlGrant {
            scheme: url.scheme().to_owned(),
            host,
            port,
            path_prefix,
            text: text.trim_end_matches('/').to_owned(),
        })
    }

    /// Whether a request to `url` is within this grant. Paths match on
    /// segment boundaries: `/health` allows `/health` and `/health/ready`,
    /// not `/healthz`.
    pub fn allows(&self, url: &Url) -> bool {
        let same_origin = url.scheme() == self.scheme
            && url
                .host_str()
                .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port);
        if !same_origin {
            return false;
        }
        let path = url.path();
        self.path_prefix.is_empty()
            || path == self.path_prefix
            || path
                .strip_prefix(&self.path_prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The grant as the runbook wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The grant an operator would add to allow `url`.
pub fn suggested_grant(url: &Url) -> String {
    let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    origin
}

/// A URL for logs: no user info, and the query's values hidden.
pub fn loggable(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?<redacted>");
    }
    text
}

/// The shared HTTP client: no proxies from the environment, no automatic
/// redirects, and a resolver that refuses link-local addresses.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// The underlying client, for other host capabilities (AWS).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Builds the client.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(GuardedResolver))
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpClient { client })
    }
}

/// Resolves names, dropping link-local and unspecified addresses: a granted
/// name must not lead to a cloud metadata service.
struct GuardedResolver;

/// Addresses no granted host name may resolve to.
pub fn is_forbidden_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addresses
                .iter()
                .copied()
                .filter(|address| !is_forbidden_address(address.ip()))
                .collect();
            if allowed.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = format!(
                    "`{host}` resolves only to link-local or unspecified addresses, which plugins may not reach"
                )
                .into();
                return Err(error);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Sends a plugin's request within its step's grants.
pub async fn send(context: &StepContext, request: Request) -> Result<Response, PluginError> {
    let started = Instant::now();
    let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| PluginError::Failed(format!("`{}` is not an HTTP method", request.method)))?;
    let url_text = secret_url(context, &request.url)?;
    let mut url = Url::parse(&url_text).map_err(|error| {
        PluginError::Failed(format!(
            "`{}` is not a URL: {error}",
            context.redactor.apply(&url_text)
        ))
    })?;
    let deadline = context.deadline_for(request.timeout_ms.map(Duration::from_millis));

    let mut headers = request.headers;
    let mut body = request.body;
    let mut basic_auth = request.basic_auth;
    let body_file = request.body_file;
    let mut method = method;
    for redirect in 0..=MAX_REDIRECTS {
        let Some(grant) = context.grants.http.iter().find(|grant| grant.allows(&url)) else {
            let requested = format!("{method} {}", loggable(&url));
            let what = if redirect == 0 { "request" } else { "redirect" };
            context.emit(EventKind::Http {
                method: method.to_string(),
                url: loggable(&url),
                status: None,
                bytes: 0,
                duration_ms: millis(started.elapsed()),
                decision: Decision::Denied,
                grant: None,
                reason: Some(format!("{what} to a host that is not granted")),
            });
            return Err(PluginError::denied(
                "http",
                requested,
                format!(
                    "{what} not granted to step `{}`; if intended, add `grants.http = [\"{}\"]` to the step",
                    context.step_id,
                    suggested_grant(&url)
                ),
            ));
        };

        if context.dry_run && !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) {
            context.emit(EventKind::HeldBack {
                capability: "http".into(),
                requested: format!("{method} {}", loggable(&url)),
            });
            return Err(PluginError::denied(
                "http",
                format!("{method} {}", loggable(&url)),
                "`plan` runs plugins read-only: only GET and HEAD are sent",
            ));
        }
        let mut builder = context.http.client.request(method.clone(), url.clone());
        for (name, value) in &headers {
            let value = unseal(context, value, &url)?;
            builder = builder.header(name.as_str(), value);
        }
        if let Some((user, password)) = &basic_auth {
            builder = builder.basic_auth(user, Some(unseal(context, password, &url)?));
        }
        if let Some(file) = &body_file {
            let (length, stream) = super::fs::stream_granted(context, file).await?;
            builder = builder
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(reqwest::Body::wrap_stream(stream));
        } else if let Some(bytes) = &body {
            let text = String::from_utf8_lossy(bytes);
            if super::secrets::SecretStore::mentions_handle(&text) {
                builder = builder.body(unseal(context, &text, &url)?);
            } else {
                builder = builder.body(bytes.clone());
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        builder = builder.timeout(remaining);

        let sent = tokio::select! {
            result = builder.send() => result,
            () = context.cancel.cancelled() => return Err(PluginError::Cancelled),
        };
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let reason = describe_reqwest_error(&error);
                context.emit(EventKind::Http {
                    method: method.to_string(),
                    url: loggable(&url),
                    status: None,
                    bytes: 0,
                    duration_ms: millis(started.elapsed()),
                    decision: Decision::Allowed,
                    grant: Some(grant.as_str().to_owned()),
                    reason: Some(reason.clone()),
                });
                let message = format!("{method} {}: {reason}", loggable(&url));
                return Err(if error.is_timeout() {
                    PluginError::Timeout(message)
                } else {
                    PluginError::Transient(message)
                });
            }
        };

        let status = response.status();
        if request.follow_redirects
            && status.is_redirection()
            && let Some(location) = response.headers().get(reqwest::header::LOCATION)
        {
            let location = location.to_str().unwrap_or_default();
            let next = url.join(location).map_err(|error| {
                PluginError::Failed(format!("redirect to `{location}` is not a URL: {error}"))
            })?;
            context.emit(EventKind::Http {
                method: method.to_string(),
                url: loggable(&url),
                status: Some(status.as_u16()),
                bytes: 0,
                duration_ms: millis(started.elapsed()),
                decision: Decision::Allowed,
                grant: Some(grant.as_str().to_owned()),
                reason: Some(format!("redirect to {}", loggable(&next))),
            });
            if next.origin() != url.origin() {
                // Credentials never follow a redirect to another origin.
                headers.retain(|(name, value)| {
                    !super::secrets::SecretStore::mentions_handle(value)
                        && !name.eq_ignore_ascii_case("authorization")
                });
                basic_auth = None;
            }
            if status == reqwest::StatusCode::SEE_OTHER
                || ((status == reqwest::StatusCode::MOVED_PERMANENTLY
                    || status == reqwest::StatusCode::FOUND)
                    && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                body = None;
            }
            url = next;
            continue;
        }

        let response_headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (
                    name.as_str().to_owned(),
                    context.redactor.apply(&value).into_owned(),
                )
            })
            .collect();
        let final_url = response.url().to_string();
        let mut collected = Vec::new();
        let mut stream = response.bytes_stream();
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout_at(deadline, stream.next()) => chunk,
                () = context.cancel.cancelled() => return Err(PluginError::Cancelled),
            };
            match chunk {
                Err(_) => {
                    return Err(PluginError::Timeout(format!(
                        "{method} {}: the body did not arrive in time",
                        loggable(&url)
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    return Err(PluginError::Transient(format!(
                        "{method} {}: reading the body failed: {}",
                        loggable(&url),
                        describe_reqwest_error(&error)
                    )));
                }
                Ok(Some(Ok(bytes))) => {
                    if collected.len() + bytes.len() > MAX_RESPONSE_BYTES {
                        return Err(PluginError::Failed(format!(
                            "{method} {}: the response body is larger than {} MiB",
                            loggable(&url),
                            MAX_RESPONSE_BYTES >> 20
                        )));
                    }
                    collected.extend_from_slice(&bytes);
                }
            }
        }
        let elapsed = started.elapsed();
        context.emit(EventKind::Http {
            method: method.to_string(),
            url: loggable(&url),
            status: Some(status.as_u16()),
            bytes: collected.len() as u64,
            duration_ms: millis(elapsed),
            decision: Decision::Allowed,
            grant: Some(grant.as_str().to_owned()),
            reason: None,
        });
        return Ok(Response {
            status: status.as_u16(),
            headers: response_headers,
            body: context.redactor.apply_bytes(collected),
            elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            final_url,
        });
    }
    Err(PluginError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects starting at {}",
        loggable(&url)
    )))
}

/// The URL to call. A handle may stand for the whole URL (a webhook whose
/// URL is the secret): it is unsealed when the step is granted the secret,
/// and the unsealed URL must still be within `grants.http`. A handle in
/// part of a URL is refused: URLs end up in logs.
fn secret_url(context: &StepContext, text: &str) -> Result<String, PluginError> {
    if !super::secrets::SecretStore::mentions_handle(text) {
        return Ok(text.to_owned());
    }
    let whole = text.starts_with("@@") && text.ends_with("@@") && text.matches("@@").count() == 2;
    if !whole {
        return Err(PluginError::Failed(
            "a secret handle cannot be placed in part of a URL, where it would be logged; send it in a header or the body, or make the whole URL the secret".into(),
        ));
    }
    unseal_to(context, text, "the URL it holds")
}

/// Swaps sealed handles in a header value or body for their values.
fn unseal(context: &StepContext, text: &str, url: &Url) -> Result<String, PluginError> {
    unseal_to(context, text, &loggable(url))
}

/// [`unseal`] with the destination as the audit log should name it.
fn unseal_to(context: &StepContext, text: &str, destination: &str) -> Result<String, PluginError> {
    match context.secrets.unseal(text, &context.grants.secrets) {
        Unseal::Text(value, used) => {
            for name in used {
                context.emit(EventKind::SecretUsed {
                    secret: name.to_owned(),
                    destination: destination.to_owned(),
                    decision: Decision::Allowed,
                });
            }
            Ok(value)
        }
        Unseal::NotGranted(name) => {
            context.emit(EventKind::SecretUsed {
                secret: name.clone(),
                destination: destination.to_owned(),
                decision: Decision::Denied,
            });
            Err(PluginError::denied(
                "secrets",
                format!("use of secret `{name}`"),
                format!(
                    "secret not granted to step `{}`; if intended, add `grants.secrets = [\"{name}\"]` to the step",
                    context.step_id
                ),
            ))
        }
        Unseal::Forged(what) => Err(PluginError::denied(
            "secrets",
            what,
            "only handles given to this step in this run can be used",
        )),
    }
}

fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, url: &str) -> bool {
        UrlGrant::parse(grant)
            .unwrap()
            .allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn an_origin_grant_allows_every_path_on_it() {
        assert!(allows(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/health"
        ));
        assert!(allows(
            "https://api.example.com",
            "https://API.example.com/v1/x?y=1"
        ));
    }

    #[test]
    fn another_port_scheme_or_host_is_not_allowed() {
        assert!(!allows(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8081/health"
        ));
        assert!(!allows(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com.evil.net/"
        ));
    }

    #[test]
    fn default_ports_are_implied() {
        assert!(allows(
            "https://api.example.com",
            "https://api.example.com:443/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com:8443/"
        ));
    }

    #[test]
    fn a_path_prefix_matches_on_segment_boundaries() {
        assert!(allows("http://h/health", "http://h/health"));
        assert!(allows("http://h/health/", "http://h/health/ready"));
        assert!(!allows("http://h/health", "http://h/healthz"));
        assert!(!allows("http://h/health", "http://h/admin"));
    }

    #[test]
    fn grants_with_queries_or_credentials_or_other_schemes_are_rejected() {
        assert!(UrlGrant::parse("http://h/?a=b").is_err());
        assert!(UrlGrant::parse("http://user:pw@h/").is_err());
        assert!(UrlGrant::parse("ftp://h/").is_err());
        assert!(UrlGrant::parse("not a url").is_err());
    }

    #[test]
    fn logged_urls_hide_queries_and_credentials() {
        let url = Url::parse("https://user:pw@h/p?token=abc#frag").unwrap();
        assert_eq!(loggable(&url), "https://h/p?<redacted>");
    }

    #[test]
    fn link_local_and_metadata_addresses_are_forbidden() {
        assert!(is_forbidden_address("169.254.169.254".parse().unwrap()));
        assert!(is_forbidden_address("fe80::1".parse().unwrap()));
        assert!(is_forbidden_address("0.0.0.0".parse().unwrap()));
        assert!(!is_forbidden_address("127.0.0.1".parse().unwrap()));
        assert!(!is_forbidden_address("10.1.2.3".parse().unwrap()));
    }
}
