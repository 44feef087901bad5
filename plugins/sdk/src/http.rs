//! Outbound HTTP through the host. The host allows only the URLs the runbook
//! grants to the step and swaps sealed secret handles for their values.

use crate::Error;
use crate::bindings::runbook::plugin::http as host;
use std::time::Duration;

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    inner: host::Request,
}

/// A response read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
    /// The URL that answered, after redirects.
    pub final_url: String,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            inner: host::Request {
                method: method.into(),
                url: url.into(),
                headers: Vec::new(),
                body: None,
                body_file: None,
                basic_auth: None,
                timeout_ms: None,
                follow_redirects: false,
            },
        }
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Streams `length` bytes from `offset` of a file in a granted folder
    /// as the body: the host reads and sends them, so a large file never
    /// passes through the plugin's memory.
    pub fn body_file(mut self, path: impl Into<String>, offset: u64, length: u64) -> Self {
        self.inner.body_file = Some(host::FileBody {
            path: path.into(),
            offset,
            length,
        });
        self.inner.body = None;
        self
    }

    /// `Authorization: Basic`, built on the host; `password` may be a sealed
    /// secret handle (`${{ secrets.NAME }}`), which the plugin cannot read.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.inner.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// Adds a header. The value may contain sealed secret handles.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body. It may contain sealed secret handles.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = Some(body.into());
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Gives up after `timeout` (the host also stops at the step's deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Follows redirects; each one is checked against the step's grants.
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.inner.follow_redirects = follow;
        self
    }

    /// Sends the request through the host.
    pub fn send(self) -> Result<Response, Error> {
        let response = host::send(&self.inner)?;
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
            elapsed: Duration::from_micros(response.elapsed_us),
            final_url: response.final_url,
        })
    }
}

impl Response {
    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|error| Error::failed(format!("response body is not JSON: {error}")))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Percent-encodes `text` for a query parameter or a path segment: every
/// byte but letters, digits and `-_.~`.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(
            encode_component("rate(x{a=\"b\"}[1m])"),
            "rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29"
        );
    }
}
