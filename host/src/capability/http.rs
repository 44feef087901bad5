//! Outbound HTTP for plugins: the policy (`UrlGrant`), and the host side of
//! `runbook:plugin/http`. The grant check comes first; redirects are checked
//! like first requests; DNS answers pointing at link-local or metadata
//! addresses are refused; secret handles are unsealed only here; every
//! request, allowed or denied, is an event.

use super::secrets::Unseal;
use super::{Capability, StepContext, StepState};
use crate::grant::Refusal;
pub use crate::grant::UrlGrant;
pub use crate::grant::UrlGrant as Grant;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::http::{self as wit_http, Request, Response};
use futures_util::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Outbound HTTP to granted URL prefixes.
pub const CAPABILITY: Capability = Capability {
    name: "http",
    used_through: &["http"],
    grant_key: "grants.http",
    example: "grants.http = [\"https://api.example.com\"]",
    refused_without_grant: Some("no URL"),
    granted: |grants| !grants.http.is_empty(),
    add_to_linker,
};

/// Links `runbook:plugin/http`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepState>) -> wasmtime::Result<()> {
    wit_http::add_to_linker::<_, wasmtime::component::HasSelf<StepState>>(linker, |state| state)
}

impl wit_http::Host for StepState {
    async fn send(&mut self, request: Request) -> Result<Response, PluginError> {
        let context = &self.context;
        super::tape::through(context, request, |request| send(context, request)).await
    }
}

/// Largest response body handed to a plugin.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Request timeout when the plugin sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;

/// Headers that choose where a request goes: with them, one granted
/// address would reach other virtual hosts or paths behind the same
/// server. The host sets `Host` itself, from the granted URL.
const ROUTING_HEADERS: &[&str] = &[
    "host",
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-for",
    "x-real-ip",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-host-override",
    "x-http-method-override",
];

/// Hop-by-hop and framing headers, which the host's client manages: set
/// by a plugin they could smuggle a second request or reroute the
/// connection.
const CONNECTION_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "http2-settings",
];

/// Why a plugin may not set the header `name`, when it may not.
pub fn refused_header(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    if name.starts_with(':') {
        Some(
            "pseudo-headers such as `:authority` choose the target, which the host takes from the URL",
        )
    } else if ROUTING_HEADERS.contains(&name.as_str()) {
        Some(
            "it overrides where or how the server routes the request; the host sets the target from the granted URL",
        )
    } else if CONNECTION_HEADERS.contains(&name.as_str()) {
        Some("it controls the connection or the message framing, which the host's client manages")
    } else {
        None
    }
}

/// Why no grant of the step allows a request (or redirect, `what`) to
/// `url`, and the hint: the nearest grant and what differs from it (host,
/// scheme, port or path), and the narrowest grant that would allow it
/// (the URL itself without its query, never its whole host when only the
/// path differs). The path of a URL held in `secret` is not shown.
fn refusal(context: &StepContext, what: &str, url: &Url, secret: Option<&str>) -> (String, String) {
    let miss = UrlGrant::nearest(&context.grants.http, url);
    let refused = miss.refusal.describe();
    let explained = miss.explain(url, secret.is_none().then(|| url.path()));
    let why = format!("{what} to {refused}: {explained}");
    if miss.refusal == Refusal::PathOnceDecoded {
        let hint = format!(
            "{what} to {refused} (`%2e`, `%2f`, `%5c`), which servers may route outside the grant; send the path without encoded dots and slashes"
        );
        return (why, hint);
    }
    let grant = match secret {
        None => format!(
            "`grants.http = [\"{}\"]` to {}",
            UrlGrant::narrowest(url),
            context.step_id.place()
        ),
        Some(name) => format!(
            "the URL in secret `{name}`, without its query, to {}'s `grants.http`",
            context.step_id.place()
        ),
    };
    let hint = format!(
        "{what} not granted to {}: {explained}; if intended, add {grant}",
        context.step_id.subject()
    );
    (why, hint)
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

/// Sends a plugin's request within its step's grants. Everything given
/// back to the plugin, the response and any error, passes the run's
/// redactor here, in one place.
pub async fn send(context: &StepContext, request: Request) -> Result<Response, PluginError> {
    let redactor = &context.redactor;
    match send_within_grants(context, request).await {
        Ok(response) => Ok(Response {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|(name, value)| {
                    (
                        redactor.apply_ignoring_case(&name),
                        redactor.apply(&value).into_owned(),
                    )
                })
                .collect(),
            body: redactor.apply_bytes(response.body),
            elapsed_us: response.elapsed_us,
            final_url: redactor.apply(&response.final_url).into_owned(),
        }),
        Err(error) => Err(super::secrets::redact_error(redactor, error)),
    }
}

/// How a request's URL is named in events, errors and denials: without
/// user info or query values, and when the URL came from a secret (a
/// webhook), only its origin and the secret's name, on every hop.
fn shown(url: &Url, secret: Option<&str>) -> String {
    match secret {
        None => loggable(url),
        Some(name) => format!(
            "{} [the URL in secret `{name}`]",
            url.origin().ascii_serialization()
        ),
    }
}

async fn send_within_grants(
    context: &StepContext,
    request: Request,
) -> Result<Response, PluginError> {
    let started = Instant::now();
    // What a cassette answers, when the run replays one: the request as
    // the plugin made it.
    let replayed = context.replaying().then(|| request.clone());
    let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| PluginError::Failed(format!("`{}` is not an HTTP method", request.method)))?;
    let (mut url, secret) = request_url(context, &request.url)?;
    let secret = secret.as_deref();
    let deadline = context.deadline_for(request.timeout_ms.map(Duration::from_millis));

    if let Some((name, why)) = request
        .headers
        .iter()
        .find_map(|(name, _)| refused_header(name).map(|why| (name, why)))
    {
        let requested = format!("{method} {}", shown(&url, secret));
        context
            .call("http", requested.clone())
            .refuse(format!("header `{name}` refused: {why}"));
        return Err(PluginError::denied(
            "http",
            format!("header `{name}` on {requested}"),
            format!(
                "a plugin cannot set `{name}`: {why}; to reach another host or path, request its URL and grant it in `grants.http`"
            ),
        ));
    }

    let mut headers = request.headers;
    let mut body = request.body;
    let mut basic_auth = request.basic_auth;
    let mut body_file = request.body_file;
    let mut method = method;
    for redirect in 0..=MAX_REDIRECTS {
        let call = context.call("http", format!("{method} {}", shown(&url, secret)));
        let Some(grant) = context.grants.http.iter().find(|grant| grant.allows(&url)) else {
            let what = if redirect == 0 { "request" } else { "redirect" };
            let (why, hint) = refusal(context, what, &url, secret);
            return Err(call.deny(why, hint));
        };
        let granted = Some(grant.as_str().to_owned());

        if context.dry_run && !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) {
            return Err(call.hold_back(
                granted,
                "`plan` runs plugins read-only: only GET and HEAD are sent",
            ));
        }
        let destination = shown(&url, secret);
        let mut builder = context.http.client.request(method.clone(), url.clone());
        for (name, value) in &headers {
            let value = unseal_to(context, value, &destination)?;
            builder = builder.header(name.as_str(), value);
        }
        if let Some((user, password)) = &basic_auth {
            let sealed = super::secrets::SecretStore::mentions_handle(user)
                || super::secrets::SecretStore::mentions_handle(password);
            let user = unseal_to(context, user, &destination)?;
            let password = unseal_to(context, password, &destination)?;
            // Built here rather than by the client, so that the redactor
            // learns the credential a server might echo back.
            let credential = if sealed {
                super::secrets::basic_credential(&context.redactor, &user, &password)
            } else {
                format!(
                    "Basic {}",
                    super::secrets::base64(format!("{user}:{password}").as_bytes())
                )
            };
            let mut value = reqwest::header::HeaderValue::from_str(&credential).map_err(|_| {
                PluginError::Failed(
                    "the basic-auth user name or password is not a valid header value".into(),
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        // Granted and unsealed: a replay answers here, before any I/O.
        if let Some(answer) = replayed
            .as_ref()
            .and_then(|request| context.replayed(request))
        {
            let outcome = match &answer {
                Ok(response) => format!("{} (from the cassette)", response.status),
                Err(error) => format!("{} (from the cassette)", error.describe()),
            };
            call.finish(granted, outcome, answer.is_ok());
            return answer;
        }
        if let Some(file) = &body_file {
            let (length, stream) = super::fs::stream_granted(context, file).await?;
            builder = builder
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(reqwest::Body::wrap_stream(stream));
        } else if let Some(bytes) = &body {
            let text = String::from_utf8_lossy(bytes);
            if super::secrets::SecretStore::mentions_handle(&text) {
                builder = builder.body(unseal_to(context, &text, &destination)?);
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
                call.finish(granted, reason.clone(), false);
                let message = format!("{method} {destination}: {reason}");
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
            call.finish(
                granted,
                format!("{}: redirect to {}", status.as_u16(), shown(&next, secret)),
                true,
            );
            if status == reqwest::StatusCode::SEE_OTHER
                || ((status == reqwest::StatusCode::MOVED_PERMANENTLY
                    || status == reqwest::StatusCode::FOUND)
                    && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                body = None;
                body_file = None;
            }
            if next.origin() != url.origin() {
                // A 307 or 308 resends the body; one that holds a secret
                // never goes to an origin the request did not name.
                let body_holds_secret = body.as_ref().is_some_and(|bytes| {
                    super::secrets::SecretStore::mentions_handle(&String::from_utf8_lossy(bytes))
                });
                if body_holds_secret {
                    let reason =
                        "redirect to another origin would resend a body that holds a secret";
                    context
                        .call("http", format!("{method} {}", shown(&next, secret)))
                        .refuse(reason);
                    return Err(PluginError::denied(
                        "http",
                        format!(
                            "{method} {} (a {} redirect from {destination})",
                            shown(&next, secret),
                            status.as_u16()
                        ),
                        format!(
                            "the {reason}; the host does not send secrets to an origin the step did not ask for; if intended, send the request to the new URL directly"
                        ),
                    ));
                }
                // Credentials never follow a redirect to another origin.
                headers.retain(|(name, value)| {
                    !super::secrets::SecretStore::mentions_handle(value)
                        && !name.eq_ignore_ascii_case("authorization")
                });
                basic_auth = None;
            }
            url = next;
            continue;
        }

        let response_headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (name.as_str().to_owned(), value.into_owned())
            })
            .collect();
        // A URL that came from a secret is not handed back, even after a
        // redirect: its path may be the secret.
        let final_url = match secret {
            Some(_) => super::secrets::REDACTED.to_owned(),
            None => response.url().to_string(),
        };
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
                        "{method} {destination}: the body did not arrive in time"
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    return Err(PluginError::Transient(format!(
                        "{method} {destination}: reading the body failed: {}",
                        describe_reqwest_error(&error)
                    )));
                }
                Ok(Some(Ok(bytes))) => {
                    if collected.len() + bytes.len() > MAX_RESPONSE_BYTES {
                        return Err(PluginError::Failed(format!(
                            "{method} {destination}: the response body is larger than {} MiB",
                            MAX_RESPONSE_BYTES >> 20
                        )));
                    }
                    collected.extend_from_slice(&bytes);
                }
            }
        }
        let elapsed = started.elapsed();
        call.finish(granted, status.as_u16().to_string(), true);
        return Ok(Response {
            status: status.as_u16(),
            headers: response_headers,
            body: collected,
            elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            final_url,
        });
    }
    Err(PluginError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects starting at {}",
        shown(&url, secret)
    )))
}

/// The URL to call, and the name of the secret it came from. A handle may
/// stand for the whole URL (a webhook whose URL is the secret): it is
/// unsealed when the step is granted the secret, must be an http or https
/// URL, and must still be within `grants.http`. A handle in part of a URL
/// is refused: URLs end up in logs.
fn request_url(context: &StepContext, text: &str) -> Result<(Url, Option<String>), PluginError> {
    if !super::secrets::SecretStore::mentions_handle(text) {
        let url = Url::parse(text).map_err(|error| {
            PluginError::Failed(format!(
                "`{}` is not a URL: {error}",
                context.redactor.apply(text)
            ))
        })?;
        return Ok((url, None));
    }
    let whole = text.starts_with("@@") && text.ends_with("@@") && text.matches("@@").count() == 2;
    if !whole {
        return Err(PluginError::Failed(
            "a secret handle cannot be placed in part of a URL, where it would be logged; send it in a header or the body, or make the whole URL the secret".into(),
        ));
    }
    let (value, used) = unseal_names(context, text, "the URL it holds")?;
    let name = used.into_iter().next().unwrap_or_default();
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Ok((url, Some(name)))
        }
        _ => Err(PluginError::Failed(format!(
            "secret `{name}` does not hold an http or https URL"
        ))),
    }
}

/// Swaps sealed handles in a header value or body for their values;
/// `destination` is the URL as the audit log should name it.
pub(crate) fn unseal_to(
    context: &StepContext,
    text: &str,
    destination: &str,
) -> Result<String, PluginError> {
    unseal_names(context, text, destination).map(|(value, _)| value)
}

/// [`unseal_to`], with the names of the secrets used.
fn unseal_names(
    context: &StepContext,
    text: &str,
    destination: &str,
) -> Result<(String, Vec<String>), PluginError> {
    match context.secrets.unseal(text, &context.grants.secrets) {
        Unseal::Text(value, used) => {
            for name in &used {
                context
                    .call("secrets", format!("use `{name}` for {destination}"))
                    .finish(Some((*name).to_owned()), "unsealed", true);
            }
            Ok((value, used.into_iter().map(str::to_owned).collect()))
        }
        Unseal::NotGranted(name) => {
            context
                .call("secrets", format!("use `{name}` for {destination}"))
                .refuse("not granted to the step");
            Err(PluginError::denied(
                "secrets",
                format!("use of secret `{name}`"),
                format!(
                    "secret not granted to {}; if intended, add `grants.secrets = [\"{name}\"]` to {}",
                    context.step_id.subject(),
                    context.step_id.place()
                ),
            ))
        }
        Unseal::Forged(what) => Err(context.call("secrets", what).deny(
            "not a handle given to this step in this run",
            "only handles given to this step in this run can be used",
        )),
    }
}

/// A client error and its causes, on one line, as the operator reads it.
pub(super) fn describe_reqwest_error(error: &reqwest::Error) -> String {
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

    #[test]
    fn encoded_dots_and_slashes_do_not_leave_a_path_grant() {
        for url in [
            "http://h/api/..%2fadmin",
            "http://h/api/%2e%2e%2fadmin",
            "http://h/api/%2E%2E%2Fadmin",
            "http://h/api/..%5cadmin",
            "http://h/api/%252e%252e%252fadmin",
            "http://h/api/a%2f..%2f..%2fadmin",
            "http://h/api//..%2fadmin",
            "http://h/admin/..%2fapi/x",
        ] {
            assert!(!allows("http://h/api", url), "{url} is allowed");
        }
        let grant = UrlGrant::parse("http://h/api").unwrap();
        assert!(
            UrlGrant::why_not(&[grant], &Url::parse("http://h/api/..%2fadmin").unwrap())
                == Refusal::PathOnceDecoded
        );
        // Encoded slashes that stay inside the prefix, and origin grants,
        // are unaffected; segment boundaries still hold.
        assert!(allows("http://h/api", "http://h/api/group%2Fproject"));
        assert!(allows("http://h/api", "http://h/api/v1/..%2fv2"));
        assert!(allows("http://h", "http://h/api/..%2fadmin"));
        assert!(!allows("http://h/api", "http://h/api%2fx"));
        assert!(!allows("http://h/api", "http://h/apix"));
    }

    #[test]
    fn routing_and_connection_headers_are_refused() {
        for name in [
            "Host",
            " host",
            ":authority",
            "X-Forwarded-Host",
            "Forwarded",
            "X-Original-URL",
            "Transfer-Encoding",
            "Connection",
            "Content-Length",
        ] {
            assert!(refused_header(name).is_some(), "{name} is allowed");
        }
        for name in ["Authorization", "Content-Type", "X-API-Key", "Accept"] {
            assert!(refused_header(name).is_none(), "{name} is refused");
        }
    }
}
