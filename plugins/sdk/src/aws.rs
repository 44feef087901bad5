//! AWS through the host. The host signs each call (SigV4) with the
//! operator's credentials, only within the step's `grants.aws`; plugins
//! never see the keys. Query-protocol services (RDS, EC2, IAM) answer in
//! XML: [`xml_text`] and [`xml_elements`] read the little of it a step
//! needs.

use crate::Error;
use crate::bindings::runbook::plugin::aws as host;
use serde_json::Value;

pub use host::Protocol;

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
    // Query services answer errors in XML, JSON services in JSON.
    let json: Option<Value> = serde_json::from_str(&response.body).ok();
    let from_json = |key: &str| {
        json.as_ref()
            .and_then(|body| body[key].as_str().map(str::to_owned))
    };
    let code = xml_text(&response.body, "Code")
        .or_else(|| from_json("__type"))
        .unwrap_or_else(|| format!("HTTP {}", response.status));
    let message = xml_text(&response.body, "Message")
        .or_else(|| from_json("message"))
        .unwrap_or_default();
    let text = format!("{service}:{action}: {code}: {message}");
    if response.status >= 500 || code.contains("Throttl") || code == "RequestLimitExceeded" {
        Err(Error::transient(text))
    } else {
        Err(Error::failed(text))
    }
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
}
