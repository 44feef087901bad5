//! moto_server (PyPI `moto[server]`), the AWS emulator the AWS tests run
//! against, started on a free loopback port. A test that needs it fails
//! loudly when it is missing; it never skips.

use crate::process::Tied;
use std::time::{Duration, Instant};

/// A running moto_server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _child: Tied,
}

impl Moto {
    /// Starts moto_server and waits until it answers. It accepts any
    /// signature.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts moto_server checking SigV4 signatures, with one IAM user
    /// allowed every RDS action; returns it with that user's access key id
    /// and secret key.
    pub fn start_verifying_signatures() -> (Self, String, String) {
        // moto checks signatures after this many calls: the three below.
        let moto = Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
        moto.iam("CreateUser", &[("UserName", "deployer")]);
        let key = moto.iam("CreateAccessKey", &[("UserName", "deployer")]);
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds:*","Resource":"*"}]}"#;
        moto.iam(
            "PutUserPolicy",
            &[
                ("UserName", "deployer"),
                ("PolicyName", "rds"),
                ("PolicyDocument", policy),
            ],
        );
        let field = |name: &str| {
            let start = key
                .find(&format!("<{name}>"))
                .unwrap_or_else(|| panic!("no {name} in {key}"))
                + name.len()
                + 2;
            let end = key[start..].find('<').expect("a closing tag") + start;
            key[start..end].to_owned()
        };
        let (id, secret) = (field("AccessKeyId"), field("SecretAccessKey"));
        (moto, id, secret)
    }

    fn start_with(environment: &[(&str, &str)]) -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        Self::start_on(port, environment)
    }

    /// Starts moto_server on a given loopback port, with extra environment.
    pub fn start_on(port: u16, environment: &[(&str, &str)]) -> Self {
        // `python3 -m moto.server` needs no script on PATH (pyenv shims).
        let args: Vec<String> = [
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let mut child = Tied::spawn("python3", &args, environment).unwrap_or_else(|error| {
            panic!("moto_server is needed for the AWS tests and could not start ({error}); install it with `python3 -m pip install 'moto[server]'` (scripts/test does)")
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.exited() {
                panic!(
                    "moto_server exited ({status}): it is needed for the AWS tests; install it with `python3 -m pip install 'moto[server]'` (scripts/test does)"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// Calls the RDS Query API directly (moto accepts unsigned calls), for
    /// checking what a step did.
    pub fn rds(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.query("rds", "2014-10-31", action, params)
    }

    /// Calls the IAM Query API directly.
    pub fn iam(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.query("iam", "2010-05-08", action, params)
    }

    /// Calls the CloudWatch Query API directly (`PutMetricData`, to give a
    /// gate metrics to read).
    pub fn cloudwatch(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.query("monitoring", "2010-08-01", action, params)
    }

    /// Calls the SES (v1) Query API directly: `VerifyEmailIdentity`
    /// before a step sends from an address, since moto, like SES, refuses
    /// a sender it has not verified in that region (here `us-east-1`).
    pub fn ses(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.query("email", "2010-12-01", action, params)
    }

    /// The emails SES has sent, oldest first: see [`sent_emails_at`].
    pub fn sent_emails(&self) -> Vec<serde_json::Value> {
        sent_emails_at(&self.url)
    }

    fn query(&self, service: &str, version: &str, action: &str, params: &[(&str, &str)]) -> String {
        query_at(&self.url, service, version, action, params)
    }

    /// Calls the Route 53 REST-XML API directly (`POST
    /// /2013-04-01/hostedzone` to create a zone, `GET .../rrset?...` to
    /// check what a step did).
    pub fn route53(&self, method: &str, path_and_query: &str, body: &str) -> String {
        rest_at(&self.url, "route53", method, path_and_query, body)
    }
}

/// Calls a REST API (REST-XML or REST-JSON) of the moto_server at `url`
/// directly, unsigned: `method` on `path_and_query` (already encoded) with
/// an XML `body`. Returns the whole HTTP response, status line and headers
/// included. `service` goes into the authorization header, which moto
/// reads to tell services apart.
pub fn rest_at(url: &str, service: &str, method: &str, path_and_query: &str, body: &str) -> String {
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("moto answers");
    use std::io::{Read, Write};
    write!(
        stream,
        "{method} {path_and_query} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/xml\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// Calls a Query API of the moto_server at `url` directly (moto accepts
/// unsigned calls unless it checks signatures).
pub fn query_at(
    url: &str,
    service: &str,
    version: &str,
    action: &str,
    params: &[(&str, &str)],
) -> String {
    let mut body = format!("Action={action}&Version={version}");
    for (key, value) in params {
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        body.push_str(&format!("&{key}={encoded}"));
    }
    let mut stream =
        std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("moto answers");
    use std::io::{Read, Write};
    write!(
        stream,
        "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        url.trim_start_matches("http://"),
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// The emails SES has sent through the moto_server at `url`, oldest
/// first, as moto keeps them (`GET /moto-api/data.json`, every region's):
/// each with `id` (the `MessageId` `SendEmail` answered), `source`,
/// `destinations` (`ToAddresses`, and `CcAddresses` when there were any),
/// `subject` and `body`.
pub fn sent_emails_at(url: &str) -> Vec<serde_json::Value> {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("moto answers");
    // HTTP/1.0: the whole body, never chunked, then the connection closes.
    write!(
        stream,
        "GET /moto-api/data.json HTTP/1.0\r\nhost: {address}\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let data: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("moto's data.json is not JSON ({error}): {response}"));
    // Before any SES call moto lists no `ses` at all.
    data["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
