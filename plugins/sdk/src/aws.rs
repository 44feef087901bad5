//! AWS through the host. The host signs each call (SigV4) with the
//! operator's credentials, only within the step's `grants.aws`; plugins
//! never see the keys. [`query`] and [`json`] call Query- and
//! JSON-protocol services; [`rest`] builds a request to a REST-JSON
//! (Lambda) or REST-XML (Route 53, CloudFront, S3) one. Query and REST-XML
//! services answer in XML: [`xml_text`] and [`xml_elements`] read the
//! little of it a step needs, and [`xml_escape`] writes text into XML.

use crate::Error;
use crate::bindings::runbook::plugin::aws as host;
use serde_json::Value;

pub use host::Protocol;

/// The namespace of Route 53's XML documents.
pub const ROUTE53_XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

/// A successful call's body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status (2xx).
    pub status: u16,
    /// XML (Query) or JSON (JSON protocol).
    pub body: String,
}

/// Calls `action` of a Query-protocol service (`rds`, `ec2`, `iam`) with
/// flattened parameters (`{"DBInstanceIdentifier": "db-1"}`). An AWS error
/// becomes [`Error::Failed`] with its code and message, or
/// [`Error::Transient`] for throttling and 5xx.
pub fn query(service: &str, region: &str, action: &str, params: &Value) -> Result<Reply, Error> {
    call(service, region, action, Protocol::Query, params)
}

/// Calls `action` of a JSON-protocol service with a JSON body.
pub fn json(service: &str, region: &str, action: &str, body: &Value) -> Result<Reply, Error> {
    call(service, region, action, Protocol::Json, body)
}

fn call(
    service: &str,
    region: &str,
    action: &str,
    protocol: Protocol,
    params: &Value,
) -> Result<Reply, Error> {
    let response = host::call(&host::Request {
        service: service.to_owned(),
        region: region.to_owned(),
        action: action.to_owned(),
        protocol,
        params: params.to_string(),
    })?;
    if (200..300).contains(&response.status) {
        return Ok(Reply {
            status: response.status,
            body: response.body,
        });
    }
    Err(error(service, action, response.status, &[], &response.body))
}

/// A REST request being built: see [`rest`].
#[derive(Debug, Clone)]
pub struct Rest {
    request: host::RestRequest,
}

/// Starts a request to a REST-JSON (`lambda`) or REST-XML (`route53`,
/// `cloudfront`, `s3`) service: `action` is the API action it is
/// (`ChangeResourceRecordSets`), which `grants.aws` must name; `method`
/// and `path` come from the action's page in the API reference
/// (`POST /2013-04-01/hostedzone/Z1/rrset/`). An action that reads
/// (`Get*`, `List*`, `Describe*`, `Head*`) must be sent with GET or HEAD.
///
/// ```ignore
/// let reply = aws::rest("route53", "us-east-1", "GetChange", "GET", &format!("/2013-04-01/change/{id}"))
///     .send()?;
/// let status = aws::xml_text(&reply.body, "Status");
/// ```
pub fn rest(service: &str, region: &str, action: &str, method: &str, path: &str) -> Rest {
    Rest {
        request: host::RestRequest {
            service: service.to_owned(),
            region: region.to_owned(),
            action: action.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        },
    }
}

impl Rest {
    /// Adds a query parameter, not encoded (the host encodes it).
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.query.push((name.into(), value.into()));
        self
    }

    /// Adds a header: `content-type`, `content-md5`, `cache-control`,
    /// `range`, an `if-*` condition, or an `x-amz-*` header such as S3's
    /// `x-amz-meta-*`. The host refuses the ones it sets itself
    /// (`authorization`, `host`, `x-amz-date`, ...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.headers.push((name.into(), value.into()));
        self
    }

    /// An XML body (`content-type: application/xml`), as REST-XML
    /// services take.
    pub fn xml(self, body: impl Into<String>) -> Self {
        self.header("content-type", "application/xml").text(body)
    }

    /// A JSON body (`content-type: application/json`), as REST-JSON
    /// services take.
    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .text(body.to_string())
    }

    /// A text body, with whatever `content-type` [`Rest::header`] set.
    pub fn text(mut self, body: impl Into<String>) -> Self {
        self.request.body = Some(host::RestBody::Text(body.into()));
        self
    }

    /// A body streamed by the host from a file in a folder the step is
    /// granted (`grants.fs.read`): `length` bytes from `offset` of `path`
    /// as the plugin sees it. The bytes never pass through the plugin.
    pub fn file(mut self, path: impl Into<String>, offset: u64, length: u64) -> Self {
        self.request.body = Some(host::RestBody::File(host::FileBody {
            path: path.into(),
            offset,
            length,
        }));
        self
    }

    /// Sends the request. An answer outside 2xx becomes [`Error::Failed`]
    /// with AWS's error code and message, or [`Error::Transient`] for
    /// throttling and 5xx.
    pub fn send(self) -> Result<RestReply, Error> {
        let service = self.request.service.clone();
        let action = self.request.action.clone();
        let reply = self.send_any_status()?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(error(
                &service,
                &action,
                reply.status,
                &reply.headers,
                &reply.body,
            ))
        }
    }

    /// Sends the request and returns whatever status came back (an S3
    /// `HeadObject` that answers 404 when the object is absent); only the
    /// host's refusals and failures to reach AWS are errors.
    pub fn send_any_status(self) -> Result<RestReply, Error> {
        let response = host::send(&self.request)?;
        Ok(RestReply {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

/// What a REST service answered.
#[derive(Debug, Clone)]
pub struct RestReply {
    /// HTTP status.
    pub status: u16,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// XML (REST-XML), JSON (REST-JSON), or an object's bytes as text.
    pub body: String,
}

impl RestReply {
    /// The value of header `name` (any case), if it was sent:
    /// `etag`, `location`, `content-type`, `x-amz-request-id`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An AWS error answer as the step's error: its code and message from the
/// `x-amzn-errortype` header (REST-JSON), a JSON body's `__type`/`code`
/// and `message` (JSON, REST-JSON) or an XML body's `<Code>` and
/// `<Message>` (Query, REST-XML); transient when AWS throttles or fails
/// (5xx, 429, `Throttling`, `SlowDown`, `PriorRequestNotComplete`).
fn error(
    service: &str,
    action: &str,
    status: u16,
    headers: &[(String, String)],
    body: &str,
) -> Error {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let from_json = |keys: &[&str]| {
        keys.iter().find_map(|key| {
            json.as_ref()
                .and_then(|body| body[*key].as_str().map(str::to_owned))
        })
    };
    let from_header = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, value)| value.clone());
    let code = from_header
        .or_else(|| xml_text(body, "Code"))
        .or_else(|| from_json(&["__type", "code", "Code"]))
        .map(|code| short_code(&code).to_owned())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = xml_text(body, "Message")
        .or_else(|| from_json(&["message", "Message", "errorMessage"]))
        .unwrap_or_default();
    let text = format!("{service}:{action}: {code}: {message}");
    let transient = status >= 500
        || status == 429
        || code.contains("Throttl")
        || matches!(
            code.as_str(),
            "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "SlowDown"
                | "PriorRequestNotComplete"
                | "RequestTimeout"
        );
    if transient {
        Error::transient(text)
    } else {
        Error::failed(text)
    }
}

/// An error code without the decorations services add:
/// `ResourceNotFoundException:http://internal.amazon.com/...` (the
/// `x-amzn-errortype` header) and `com.amazonaws.lambda#ResourceNotFoundException`
/// (a JSON `__type`) are `ResourceNotFoundException`.
fn short_code(code: &str) -> &str {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit('#').next().unwrap_or(code).trim()
}

/// Text escaped for an XML element or attribute: `&`, `<`, `>`, `"` and
/// `'` as entities.
pub fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The text of the first `<tag>` element, entities decoded.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_elements(xml, tag)
        .into_iter()
        .next()
        .map(|inner| unescape(inner.trim()))
}

/// The inner XML of every `<tag>` element, in order (not nested in itself).
pub fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_texts_are_read_from_a_query_response() {
        let xml = "<R><DBSnapshots><DBSnapshot><DBSnapshotIdentifier>a</DBSnapshotIdentifier><Status>available</Status></DBSnapshot><DBSnapshot><DBSnapshotIdentifier>b&amp;c</DBSnapshotIdentifier></DBSnapshot></DBSnapshots></R>";
        let snapshots = xml_elements(xml, "DBSnapshot");
        assert_eq!(snapshots.len(), 2);
        assert_eq!(
            xml_text(snapshots[1], "DBSnapshotIdentifier").as_deref(),
            Some("b&c")
        );
        assert_eq!(xml_text(xml, "Status").as_deref(), Some("available"));
        assert_eq!(xml_text(xml, "Missing"), None);
    }

    fn code_and_kind(error: Error) -> (String, bool) {
        match error {
            Error::Failed(text) => (text, false),
            Error::Transient(text) => (text, true),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rest_xml_errors_are_read_from_the_error_document() {
        let body = "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>NoSuchHostedZone</Code><Message>No hosted zone found with ID: Z9</Message></Error><RequestId>r</RequestId></ErrorResponse>";
        let (text, transient) = code_and_kind(error("route53", "GetHostedZone", 404, &[], body));
        assert_eq!(
            text,
            "route53:GetHostedZone: NoSuchHostedZone: No hosted zone found with ID: Z9"
        );
        assert!(!transient);
        let busy = "<ErrorResponse><Error><Code>PriorRequestNotComplete</Code><Message>wait</Message></Error></ErrorResponse>";
        assert!(code_and_kind(error("route53", "ChangeResourceRecordSets", 400, &[], busy)).1);
        let slow =
            "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>";
        assert!(code_and_kind(error("s3", "PutObject", 503, &[], slow)).1);
    }

    #[test]
    fn rest_json_errors_are_read_from_the_header_or_the_body() {
        let headers = vec![(
            "X-Amzn-ErrorType".to_owned(),
            "ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.lambda/"
                .to_owned(),
        )];
        let body = r#"{"Type":"User","message":"Function not found: arn:aws:lambda:us-east-1:1:function:f"}"#;
        let (text, transient) = code_and_kind(error("lambda", "GetFunction", 404, &headers, body));
        assert_eq!(
            text,
            "lambda:GetFunction: ResourceNotFoundException: Function not found: arn:aws:lambda:us-east-1:1:function:f"
        );
        assert!(!transient);
        let body = r#"{"__type":"com.amazonaws.lambda#TooManyRequestsException","message":"Rate exceeded"}"#;
        let (text, transient) = code_and_kind(error("lambda", "Invoke", 429, &[], body));
        assert_eq!(
            text,
            "lambda:Invoke: TooManyRequestsException: Rate exceeded"
        );
        assert!(transient);
        let (text, _) = code_and_kind(error("s3", "HeadObject", 404, &[], ""));
        assert_eq!(text, "s3:HeadObject: HTTP 404: ");
    }

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(
            xml_escape(r#""v=spf1 a & b <c>" 'd'"#),
            "&quot;v=spf1 a &amp; b &lt;c&gt;&quot; &apos;d&apos;"
        );
        assert_eq!(unescape(&xml_escape("a&amp;<")), "a&amp;<");
    }
}
