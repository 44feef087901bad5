//! The REST-JSON (Lambda) and REST-XML (Route 53, CloudFront, S3) half of
//! `runbook:plugin/aws`: a plugin's method, path, query and headers checked
//! and encoded as SigV4 wants them (this file's pure part, unit-tested),
//! then `send`, which keeps `call`'s order: the grant check, the request's
//! own checks, plan mode, then signing and sending on the host.

use super::sigv4;
use super::{AwsAccess, is_read_only};
use crate::capability::StepContext;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::aws::{RestBody, RestRequest, RestResponse};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

/// Everything SigV4 leaves unencoded: letters, digits, `-`, `_`, `.`, `~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The methods AWS REST APIs use.
const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"];

/// Headers the host sets on every request: the signature and what it
/// covers. A plugin never sets them.
const HOST_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Headers a plugin may set besides `x-amz-*`: what REST-JSON and
/// REST-XML requests carry (S3's object metadata and conditions
/// included). Nothing that routes the request or frames the message.
const PLUGIN_HEADERS: &[&str] = &[
    "content-type",
    "content-md5",
    "content-encoding",
    "content-language",
    "content-disposition",
    "cache-control",
    "expires",
    "accept",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// Services with one endpoint for every region, whose requests are signed
/// in `us-east-1`.
const GLOBAL_SERVICES: &[&str] = &["route53", "cloudfront", "iam"];

/// Why a REST request is refused before it is built: recorded as a
/// denial, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What is wrong, for the audit record.
    pub why: String,
    /// What to do instead, for the plugin and the operator.
    pub hint: String,
}

impl Refused {
    fn new(why: impl Into<String>, hint: impl Into<String>) -> Self {
        Refused {
            why: why.into(),
            hint: hint.into(),
        }
    }
}

/// A plugin's REST request, checked and encoded: what is signed and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// `GET`, `POST`, in upper case.
    pub method: String,
    /// The path, each segment URI-encoded once as SigV4 wants (`/` kept).
    pub path: String,
    /// The query string, names and values URI-encoded, in the plugin's
    /// order (the signer sorts its own copy); `None` without parameters.
    pub query: Option<String>,
    /// The plugin's headers, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
}

/// Checks and encodes a REST request to `service` for `action`: a known
/// method, an action that reads sent as a read, a path without `.`, `..`
/// (or, but for S3, empty) segments, and only headers a plugin may set.
pub fn prepare(
    service: &str,
    action: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
) -> Result<Prepared, Refused> {
    let method = method.trim().to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(Refused::new(
            format!("`{method}` is not a method of AWS REST APIs"),
            "send GET, HEAD, PUT, POST, PATCH or DELETE",
        ));
    }
    if is_read_only(action) && !matches!(method.as_str(), "GET" | "HEAD") {
        return Err(Refused::new(
            format!("action `{action}` reads, but is sent with {method}"),
            "an action named `Get*`, `List*`, `Describe*` or `Head*` is sent with GET or HEAD, so that a grant to read cannot change anything",
        ));
    }
    Ok(Prepared {
        path: encode_path(service, path)?,
        query: encode_query(query),
        headers: plugin_headers(headers)?,
        method,
    })
}

impl Prepared {
    /// Whether the request only reads: GET or HEAD, of an action named as
    /// a read. Only such requests are sent while planning.
    pub fn reads(&self, action: &str) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD") && is_read_only(action)
    }

    /// The URL to send it to, at `endpoint`.
    pub fn url(&self, endpoint: &Url) -> Url {
        let mut url = endpoint.clone();
        url.set_path(&self.path);
        url.set_query(self.query.as_deref());
        url.set_fragment(None);
        url
    }
}

/// The path with each segment decoded once and encoded again as SigV4
/// wants, so that `a b` and `a%20b` are sent and signed alike, and a `/`
/// inside a segment stays `%2F`.
fn encode_path(service: &str, path: &str) -> Result<String, Refused> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Refused::new(
            format!("path `{path}` does not start with `/`"),
            "give the URI path from the service's API reference, such as `/2013-04-01/hostedzone/Z1/rrset`",
        ));
    };
    if path.contains(['?', '#']) {
        return Err(Refused::new(
            format!("path `{path}` holds `?` or `#`"),
            "give query parameters in the request's `query`, not in its path",
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut encoded = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| {
            Refused::new(
                format!("path `{path}` is not UTF-8 once decoded"),
                "encode the path's segments from UTF-8 text",
            )
        })?;
        if decoded == "." || decoded == ".." {
            return Err(Refused::new(
                format!("path `{path}` has a `.` or `..` segment"),
                "give the path without `.` and `..`: servers and signatures resolve them differently",
            ));
        }
        if segment.is_empty() && index != last && service != "s3" {
            return Err(Refused::new(
                format!("path `{path}` has an empty segment (`//`)"),
                "give the path without `//`",
            ));
        }
        encoded.push(utf8_percent_encode(&decoded, UNRESERVED).to_string());
    }
    Ok(format!("/{}", encoded.join("/")))
}

/// The query string, names and values URI-encoded as SigV4 wants (`%20`,
/// never `+`).
fn encode_query(query: &[(String, String)]) -> Option<String> {
    if query.is_empty() {
        return None;
    }
    Some(
        query
            .iter()
            .map(|(name, value)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(name, UNRESERVED),
                    utf8_percent_encode(value, UNRESERVED)
                )
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The plugin's headers, names in lower case, if it may set every one.
fn plugin_headers(headers: &[(String, String)]) -> Result<Vec<(String, String)>, Refused> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_owned();
            if let Some(why) = refused_header(&name) {
                return Err(why);
            }
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(Refused::new(
                    format!("header `{name}` has a value that is not a header value"),
                    "send header values without line breaks or control characters",
                ));
            }
            Ok((name, value))
        })
        .collect()
}

/// Why a plugin may not set header `name` (in lower case), if it may not.
pub fn refused_header(name: &str) -> Option<Refused> {
    if HOST_HEADERS.contains(&name) {
        return Some(Refused::new(
            format!("header `{name}` is set by the host"),
            "leave out `authorization`, `host`, `x-amz-date`, `x-amz-security-token` and `x-amz-content-sha256`: the host signs the request and sets them",
        ));
    }
    let allowed = PLUGIN_HEADERS.contains(&name)
        || (name.starts_with("x-amz-")
            && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok());
    if allowed {
        None
    } else {
        Some(Refused::new(
            format!("header `{name}` is not one an AWS REST request may set"),
            "a plugin may set `content-type`, `content-md5`, `content-encoding`, `content-language`, `content-disposition`, `cache-control`, `expires`, `accept`, `range`, the `if-*` conditions and `x-amz-*` headers",
        ))
    }
}

/// Whether `name` can be part of a host name: lower-case letters, digits
/// and `-`.
fn host_label(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Where a service's requests go: the run's endpoint override (an
/// emulator) for every service; else Route 53's, CloudFront's and IAM's
/// global endpoints, S3's regional one (path-style), and
/// `https://SERVICE.REGION.amazonaws.com/` for the rest.
pub fn endpoint(access: &AwsAccess, service: &str, region: &str) -> Result<Url, String> {
    if let Some(endpoint) = &access.endpoint {
        return Ok(endpoint.clone());
    }
    if !host_label(service) || !host_label(region) {
        return Err(format!(
            "`{service}` in `{region}` is not a service and region name (lower-case letters, digits and `-`)"
        ));
    }
    let host = match service {
        "route53" | "cloudfront" | "iam" => format!("{service}.amazonaws.com"),
        "s3" => format!("s3.{region}.amazonaws.com"),
        _ => format!("{service}.{region}.amazonaws.com"),
    };
    Url::parse(&format!("https://{host}/")).map_err(|error| error.to_string())
}

/// The name a service's requests are signed with, where it differs from
/// the one in its host name: SES answers at `email.REGION.amazonaws.com`
/// and signs as `ses`.
pub fn signing_name(service: &str) -> &str {
    match service {
        "email" => "ses",
        other => other,
    }
}

/// The region a service's requests are signed in: `us-east-1` for the
/// global services, else the request's.
pub fn signing_region<'a>(service: &str, region: &'a str) -> &'a str {
    if GLOBAL_SERVICES.contains(&service) {
        "us-east-1"
    } else {
        region
    }
}

/// Sends a REST request within the step's grant: the grant check first,
/// then the request's own checks (a denial either way, recorded), plan
/// mode, the body hashed (a granted file is read once for its hash, then
/// streamed), signed with the operator's credentials, sent with the step's
/// deadline and cancellation. Response headers and body pass the run's
/// redactor.
pub async fn send(
    context: &StepContext,
    request: RestRequest,
) -> Result<RestResponse, PluginError> {
    let requested = format!(
        "{}:{} in {} ({} {})",
        request.service,
        request.action,
        request.region,
        request.method.trim().to_ascii_uppercase(),
        request.path
    );
    let record = context.call("aws", requested.clone());
    if let Some((why, hint)) =
        super::refused(context, &request.service, &request.action, &request.region)
    {
        return Err(record.deny(why, hint));
    }
    let prepared = match prepare(
        &request.service,
        &request.action,
        &request.method,
        &request.path,
        &request.query,
        &request.headers,
    ) {
        Ok(prepared) => prepared,
        Err(refused) => return Err(record.deny(refused.why, refused.hint)),
    };
    if context.dry_run && !prepared.reads(&request.action) {
        return Err(record.hold_back(
            None,
            "`plan` runs plugins read-only: only AWS reads (GET or HEAD of a `Get*`, `List*` or `Describe*` action) are sent",
        ));
    }
    if let Some(answer) = context.replayed(&request) {
        record.finish(
            None,
            super::replayed_outcome(&answer, |response| response.status),
            answer.is_ok(),
        );
        return answer;
    }
    let access = context.aws.clone().unwrap_or_default();
    let Some(credentials) = &access.credentials else {
        record.finish(None, "no AWS credentials", false);
        return Err(super::no_credentials());
    };
    let url = match endpoint(&access, &request.service, &request.region) {
        Ok(endpoint) => prepared.url(&endpoint),
        Err(reason) => {
            record.finish(None, reason.clone(), false);
            return Err(PluginError::Failed(reason));
        }
    };

    // The payload's hash goes into the signature: a file is read once for
    // it, then streamed (S3 compares what arrives with the hash, so a file
    // changed in between is refused rather than stored).
    let file = match &request.body {
        Some(RestBody::File(file)) => Some(crate::wit::runbook::plugin::http::FileBody {
            path: file.path.clone(),
            offset: file.offset,
            length: file.length,
        }),
        _ => None,
    };
    let payload_sha256 = match (&request.body, &file) {
        (Some(RestBody::Text(text)), _) => sigv4::payload_hash(text.as_bytes()),
        (_, Some(file)) => match super::super::fs::sha256_of_granted(context, file).await {
            Ok(hash) => hash,
            Err(error) => {
                record.finish(None, format!("body not read: {}", error.describe()), false);
                return Err(error);
            }
        },
        _ => sigv4::payload_hash(b""),
    };
    let scope = sigv4::Scope {
        service: signing_name(&request.service),
        region: signing_region(&request.service, &request.region),
        time: std::time::SystemTime::now(),
    };
    let unsigned = sigv4::Unsigned {
        method: &prepared.method,
        url: &url,
        headers: &prepared.headers,
        payload_sha256: &payload_sha256,
    };
    let signature = match sigv4::sign(&unsigned, credentials, scope) {
        Ok(signature) => signature,
        Err(error) => {
            record.finish(None, error.to_string(), false);
            return Err(PluginError::Failed(format!("{requested}: {error}")));
        }
    };

    let method = reqwest::Method::from_bytes(prepared.method.as_bytes())
        .map_err(|_| PluginError::Failed(format!("`{}` is not a method", prepared.method)))?;
    let deadline = context.deadline_for(None);
    let mut builder = context.http.client().request(method, url);
    for (name, value) in &prepared.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder = super::with_signature(builder, signature);
    builder = match (request.body, file) {
        (Some(RestBody::Text(text)), _) => builder.body(text),
        (_, Some(file)) => {
            let (length, stream) = match super::super::fs::stream_granted(context, &file).await {
                Ok(opened) => opened,
                Err(error) => {
                    record.finish(None, format!("body not read: {}", error.describe()), false);
                    return Err(error);
                }
            };
            builder
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(reqwest::Body::wrap_stream(stream))
        }
        // A write without a body still says its length (0), which S3 and
        // Route 53 want.
        _ if matches!(prepared.method.as_str(), "PUT" | "POST" | "PATCH") => {
            builder.body(Vec::<u8>::new())
        }
        _ => builder,
    };
    let reply = super::exchange(context, record, &requested, builder, deadline).await?;
    Ok(RestResponse {
        status: reply.status,
        headers: reply
            .headers
            .into_iter()
            .map(|(name, value)| (name, context.redactor.apply(&value).into_owned()))
            .collect(),
        body: context
            .redactor
            .apply(&String::from_utf8_lossy(&reply.body))
            .into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn route53(method: &str, path: &str, query: &[(&str, &str)]) -> Result<Prepared, Refused> {
        prepare(
            "route53",
            "ListResourceRecordSets",
            method,
            path,
            &pairs(query),
            &[],
        )
    }

    #[test]
    fn a_route53_path_and_query_are_encoded_as_sigv4_wants() {
        let prepared = route53(
            "get",
            "/2013-04-01/hostedzone/Z1/rrset",
            &[
                ("name", "www.example.com."),
                ("type", "A"),
                ("identifier", "blue green+1"),
            ],
        )
        .unwrap();
        assert_eq!(prepared.method, "GET");
        assert_eq!(prepared.path, "/2013-04-01/hostedzone/Z1/rrset");
        assert_eq!(
            prepared.query.as_deref(),
            Some("name=www.example.com.&type=A&identifier=blue%20green%2B1")
        );
        let url = prepared.url(&Url::parse("http://127.0.0.1:5000").unwrap());
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:5000/2013-04-01/hostedzone/Z1/rrset?name=www.example.com.&type=A&identifier=blue%20green%2B1"
        );
        assert!(prepared.reads("ListResourceRecordSets"));
        assert_eq!(route53("GET", "/", &[]).unwrap().query, None);
    }

    #[test]
    fn path_segments_are_encoded_once_whether_or_not_the_plugin_encoded_them() {
        let path = |path: &str| {
            prepare("s3", "PutObject", "PUT", path, &[], &[])
                .unwrap()
                .path
        };
        assert_eq!(
            path("/bucket/my photos/été+1.jpg"),
            "/bucket/my%20photos/%C3%A9t%C3%A9%2B1.jpg"
        );
        assert_eq!(path("/bucket/my%20photos/a"), "/bucket/my%20photos/a");
        assert_eq!(path("/bucket/a%2Fb"), "/bucket/a%2Fb");
        assert_eq!(path("/bucket/100%"), "/bucket/100%25");
        assert_eq!(path("/bucket/a:b=c"), "/bucket/a%3Ab%3Dc");
        // S3 keys may have empty segments; other services' paths may not.
        assert_eq!(path("/bucket/a//b"), "/bucket/a//b");
        assert!(route53("GET", "/2013-04-01//hostedzone", &[]).is_err());
        // A trailing slash is kept (Route 53's `.../rrset/`).
        assert_eq!(
            route53("GET", "/2013-04-01/hostedzone/Z1/rrset/", &[])
                .unwrap()
                .path,
            "/2013-04-01/hostedzone/Z1/rrset/"
        );
    }

    #[test]
    fn paths_that_a_server_could_resolve_elsewhere_are_refused() {
        for path in [
            "/2013-04-01/hostedzone/../change",
            "/2013-04-01/./hostedzone",
            "/2013-04-01/%2e%2e/x",
            "/2013-04-01/hostedzone?x=1",
            "/a#b",
            "2013-04-01/hostedzone",
        ] {
            assert!(route53("GET", path, &[]).is_err(), "{path} is allowed");
        }
    }

    #[test]
    fn host_headers_and_routing_headers_are_refused_and_the_rest_kept_in_lower_case() {
        let headers = |list: &[(&str, &str)]| {
            prepare("s3", "PutObject", "PUT", "/bucket/key", &[], &pairs(list))
        };
        for name in [
            "Authorization",
            "host",
            "X-Amz-Date",
            "x-amz-security-token",
            "x-amz-content-sha256",
            "x-forwarded-host",
            "content-length",
            "transfer-encoding",
            "cookie",
        ] {
            assert!(headers(&[(name, "x")]).is_err(), "{name} is allowed");
        }
        let refused = headers(&[("Authorization", "AWS4 x")]).unwrap_err();
        assert!(refused.why.contains("set by the host"), "{refused:?}");
        let prepared = headers(&[
            ("Content-Type", " text/plain "),
            ("x-amz-meta-owner", "team-a"),
            ("X-Amz-Server-Side-Encryption", "AES256"),
            ("If-None-Match", "*"),
        ])
        .unwrap();
        assert_eq!(
            prepared.headers,
            pairs(&[
                ("content-type", "text/plain"),
                ("x-amz-meta-owner", "team-a"),
                ("x-amz-server-side-encryption", "AES256"),
                ("if-none-match", "*"),
            ])
        );
        assert!(headers(&[("x-amz-meta-note", "a\nb")]).is_err());
    }

    #[test]
    fn an_action_that_reads_is_sent_as_a_read_and_only_reads_pass_a_plan() {
        let refused = prepare(
            "route53",
            "GetChange",
            "POST",
            "/2013-04-01/change/C1",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            refused.why.contains("reads, but is sent with POST"),
            "{refused:?}"
        );
        assert!(prepare("route53", "GetChange", "TRACE", "/", &[], &[]).is_err());
        let change = prepare(
            "route53",
            "ChangeResourceRecordSets",
            "POST",
            "/2013-04-01/hostedzone/Z1/rrset/",
            &[],
            &[],
        )
        .unwrap();
        assert!(!change.reads("ChangeResourceRecordSets"));
        // A GET of an action not named as a read (Lambda's `Invoke` is a
        // POST; S3's `GetObject` reads) is not sent by a plan either.
        let get = prepare("lambda", "InvokeWithResponseStream", "GET", "/x", &[], &[]).unwrap();
        assert!(!get.reads("InvokeWithResponseStream"));
        assert!(
            prepare("s3", "HeadObject", "HEAD", "/bucket/key", &[], &[])
                .unwrap()
                .reads("HeadObject")
        );
    }

    #[test]
    fn global_services_have_one_endpoint_signed_in_us_east_1() {
        let aws = AwsAccess::default();
        let at = |service: &str, region: &str| endpoint(&aws, service, region).unwrap().to_string();
        assert_eq!(at("route53", "eu-west-1"), "https://route53.amazonaws.com/");
        assert_eq!(
            at("cloudfront", "us-east-1"),
            "https://cloudfront.amazonaws.com/"
        );
        assert_eq!(at("s3", "eu-west-1"), "https://s3.eu-west-1.amazonaws.com/");
        assert_eq!(
            at("lambda", "eu-west-1"),
            "https://lambda.eu-west-1.amazonaws.com/"
        );
        assert_eq!(signing_region("route53", "eu-west-1"), "us-east-1");
        assert_eq!(signing_region("s3", "eu-west-1"), "eu-west-1");
        // SES: its host says `email`, its signatures say `ses`.
        assert_eq!(
            at("email", "eu-west-1"),
            "https://email.eu-west-1.amazonaws.com/"
        );
        assert_eq!(signing_name("email"), "ses");
        assert_eq!(signing_name("route53"), "route53");
        assert!(endpoint(&aws, "evil.com/#", "us-east-1").is_err());
        assert!(endpoint(&aws, "s3", "x.evil.com").is_err());
        let emulator = AwsAccess {
            credentials: None,
            endpoint: Some(Url::parse("http://127.0.0.1:5000").unwrap()),
        };
        assert_eq!(
            endpoint(&emulator, "route53", "us-east-1")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/"
        );
    }
}
