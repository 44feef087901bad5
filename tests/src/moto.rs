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
        Self::start_verifying_signatures_after(0, |_| {})
    }

    /// [`Moto::start_verifying_signatures`], with `setup` (making
    /// `setup_calls` unsigned calls, such as putting secrets there) run
    /// first, while moto still takes anything.
    pub fn start_verifying_signatures_after(
        setup_calls: usize,
        setup: impl FnOnce(&Moto),
    ) -> (Self, String, String) {
        // moto checks signatures after this many calls: the setup's and
        // the three below.
        let calls = (setup_calls + 3).to_string();
        let moto = Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", calls.as_str())]);
        setup(&moto);
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

    /// `python3 -m moto.server`, whose `/moto-api/data.json` leaves out what
    /// cannot be listed instead of failing.
    const MOTO_SERVER: &str = r#"
import json, sys
from moto.moto_api._internal.responses import MotoAPIResponse

def model_data(self, request, full_url, headers):
    from moto.core.model_instances import model_data
    results = {}
    for service in sorted(model_data):
        results[service] = {}
        for name in sorted(model_data[service]):
            rows = results[service][name] = []
            for instance in model_data[service][name].instances_tracked:
                row = {}
                for attr in dir(instance):
                    if attr.startswith("_"):
                        continue
                    try:
                        value = getattr(instance, attr)
                        json.dumps(value)
                    except Exception:
                        continue
                    row[attr] = value
                rows.append(row)
    return 200, {"Content-Type": "application/javascript"}, json.dumps(results)

MotoAPIResponse.model_data = model_data
from moto.server import main
sys.argv[0] = "moto_server"
main(sys.argv[1:])
"#;

    /// Starts moto_server on a given loopback port, with extra environment.
    pub fn start_on(port: u16, environment: &[(&str, &str)]) -> Self {
        // `python3 -c` runs moto.server and needs no script on PATH (pyenv
        // shims); it first makes `/moto-api/data.json` skip the attributes
        // moto cannot show (an RDS instance's password raises
        // `NotImplementedError`, which fails the whole listing), so the
        // tests can read SES's sent emails beside RDS instances.
        let args: Vec<String> = [
            "-c",
            Self::MOTO_SERVER,
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

    /// Calls the ECS JSON API directly (moto accepts unsigned calls):
    /// `CreateCluster`, `RegisterTaskDefinition` and `CreateService` to set
    /// a service up, `DescribeServices` and `DescribeTaskDefinition` to
    /// check what a step did. Panics when moto answers with an error.
    pub fn ecs(&self, action: &str, body: &serde_json::Value) -> serde_json::Value {
        json_at(
            &self.url,
            "ecs",
            "AmazonEC2ContainerServiceV20141113",
            action,
            body,
        )
    }

    /// Calls the Route 53 REST-XML API directly (`POST
    /// /2013-04-01/hostedzone` to create a zone, `GET .../rrset?...` to
    /// check what a step did).
    pub fn route53(&self, method: &str, path_and_query: &str, body: &str) -> String {
        rest_at(&self.url, "route53", method, path_and_query, body)
    }

    /// Calls the Lambda REST-JSON API directly, unsigned, with a JSON
    /// `body`: see [`lambda_at`].
    pub fn lambda(&self, method: &str, path_and_query: &str, body: &str) -> String {
        lambda_at(&self.url, method, path_and_query, body)
    }

    /// Creates Lambda function `name` (Python, handler `index.handler`)
    /// whose code is a zip file holding `source` as `index.py`, and
    /// publishes it as version 1. moto, like Lambda, wants the function's
    /// IAM role to exist: the role `lambda` is created first (a second
    /// `CreateRole` answers `EntityAlreadyExists`, which leaves it there).
    pub fn create_lambda_function(&self, name: &str, source: &str) {
        self.iam(
            "CreateRole",
            &[
                ("RoleName", "lambda"),
                ("AssumeRolePolicyDocument", LAMBDA_TRUST_POLICY),
            ],
        );
        let body = serde_json::json!({
            "FunctionName": name,
            "Runtime": "python3.12",
            "Role": "arn:aws:iam::123456789012:role/lambda",
            "Handler": "index.handler",
            "Code": { "ZipFile": base64(&zip_of("index.py", source.as_bytes())) },
            "Publish": true,
        });
        let created = self.lambda("POST", "/2015-03-31/functions", &body.to_string());
        assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    }

    /// Uploads a zip file holding `source` as `index.py` to function
    /// `name`'s `$LATEST` (`UpdateFunctionCode`), so that the next
    /// `PublishVersion` makes a new version.
    pub fn update_lambda_code(&self, name: &str, source: &str) {
        let body = serde_json::json!({ "ZipFile": base64(&zip_of("index.py", source.as_bytes())) });
        let updated = self.lambda(
            "PUT",
            &format!("/2015-03-31/functions/{name}/code"),
            &body.to_string(),
        );
        assert!(updated.starts_with("HTTP/1.1 200"), "{updated}");
    }

    /// Calls the S3 REST API directly, path-style (`PUT /bucket` creates
    /// a bucket, `GET /bucket/key` reads an object, `HEAD` its headers).
    /// A `PUT` of an object stores `body` as `application/xml`.
    pub fn s3(&self, method: &str, path_and_query: &str, body: &str) -> String {
        rest_at(&self.url, "s3", method, path_and_query, body)
    }

    /// Calls the CloudFront REST-XML API directly (`GET
    /// /2020-05-31/distribution/ID/invalidation/INV` to check what a step
    /// did).
    pub fn cloudfront(&self, method: &str, path_and_query: &str, body: &str) -> String {
        rest_at(&self.url, "cloudfront", method, path_and_query, body)
    }

    /// Creates bucket `name` in `us-east-1`, keeping object versions when
    /// `versioned`.
    pub fn create_bucket(&self, name: &str, versioned: bool) {
        let created = self.s3("PUT", &format!("/{name}"), "");
        assert!(created.starts_with("HTTP/1.1 200"), "{created}");
        if versioned {
            let enabled = self.s3(
                "PUT",
                &format!("/{name}?versioning"),
                "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>",
            );
            assert!(enabled.starts_with("HTTP/1.1 200"), "{enabled}");
        }
    }

    /// Creates a CloudFront distribution whose origin is bucket `bucket`;
    /// its id.
    pub fn create_distribution(&self, bucket: &str) -> String {
        let config = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DistributionConfig xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><CallerReference>runbook-{bucket}</CallerReference><Comment>{bucket}</Comment><Enabled>true</Enabled><Origins><Quantity>1</Quantity><Items><Origin><Id>{bucket}</Id><DomainName>{bucket}.s3.amazonaws.com</DomainName><S3OriginConfig><OriginAccessIdentity></OriginAccessIdentity></S3OriginConfig></Origin></Items></Origins><DefaultCacheBehavior><TargetOriginId>{bucket}</TargetOriginId><ViewerProtocolPolicy>redirect-to-https</ViewerProtocolPolicy><MinTTL>0</MinTTL><ForwardedValues><QueryString>false</QueryString><Cookies><Forward>none</Forward></Cookies></ForwardedValues><TrustedSigners><Enabled>false</Enabled><Quantity>0</Quantity></TrustedSigners></DefaultCacheBehavior></DistributionConfig>"
        );
        let created = self.cloudfront("POST", "/2020-05-31/distribution", &config);
        assert!(created.starts_with("HTTP/1.1 201"), "{created}");
        let start = created.find("<Id>").expect("the distribution's id") + "<Id>".len();
        let end = created[start..].find('<').expect("a closing tag") + start;
        created[start..end].to_owned()
    }
}

/// The trust policy of the role Lambda functions run as.
const LAMBDA_TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// A zip archive holding one file, `name` with `contents`, stored (not
/// compressed): a Lambda function's code as Lambda takes it.
fn zip_of(name: &str, contents: &[u8]) -> Vec<u8> {
    let crc = crc32(contents);
    let size = u32::try_from(contents.len()).expect("a small file");
    let name_length = u16::try_from(name.len()).expect("a short name");
    // 1980-01-01 00:00, the earliest time a zip entry can have.
    let (time, date) = (0u16, (1 << 5) | 1u16);
    let mut zip = Vec::new();
    // The local file header, then the file.
    zip.extend(0x0403_4b50u32.to_le_bytes());
    for half in [20u16, 0, 0, time, date] {
        zip.extend(half.to_le_bytes());
    }
    for word in [crc, size, size] {
        zip.extend(word.to_le_bytes());
    }
    zip.extend(name_length.to_le_bytes());
    zip.extend(0u16.to_le_bytes());
    zip.extend(name.as_bytes());
    zip.extend(contents);
    // The central directory's one entry: versions, flags, method, time,
    // date, CRC, sizes, name length, extra and comment lengths, disk,
    // attributes, the local header's offset (0), and the name.
    let directory_offset = u32::try_from(zip.len()).expect("a small archive");
    zip.extend(0x0201_4b50u32.to_le_bytes());
    for half in [20u16, 20, 0, 0, time, date] {
        zip.extend(half.to_le_bytes());
    }
    for word in [crc, size, size] {
        zip.extend(word.to_le_bytes());
    }
    for half in [name_length, 0, 0, 0, 0] {
        zip.extend(half.to_le_bytes());
    }
    for word in [0u32, 0] {
        zip.extend(word.to_le_bytes());
    }
    zip.extend(name.as_bytes());
    let directory_size = u32::try_from(zip.len()).expect("a small archive") - directory_offset;
    // The end of the central directory: one entry, where it is.
    zip.extend(0x0605_4b50u32.to_le_bytes());
    for half in [0u16, 0, 1, 1] {
        zip.extend(half.to_le_bytes());
    }
    for word in [directory_size, directory_offset] {
        zip.extend(word.to_le_bytes());
    }
    zip.extend(0u16.to_le_bytes());
    zip
}

/// The CRC-32 (IEEE) a zip entry carries.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Standard base64 with padding, as Lambda takes a `ZipFile`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let value = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(char::from(
                    ALPHABET[((value >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Calls a REST API (REST-XML or REST-JSON) of the moto_server at `url`
/// directly, unsigned: `method` on `path_and_query` (already encoded) with
/// an XML `body`. Returns the whole HTTP response, status line and headers
/// included. `service` goes into the authorization header, which moto
/// reads to tell services apart.
pub fn rest_at(url: &str, service: &str, method: &str, path_and_query: &str, body: &str) -> String {
    rest_with(
        url,
        service,
        method,
        path_and_query,
        "application/xml",
        body,
    )
}

/// Calls the Lambda REST-JSON API of the moto_server at `url` directly,
/// unsigned, with a JSON `body` (`POST /2015-03-31/functions/api/aliases`
/// to create an alias, `GET .../aliases/live` to check what a step did).
/// Returns the whole HTTP response, as [`rest_at`] does.
pub fn lambda_at(url: &str, method: &str, path_and_query: &str, body: &str) -> String {
    rest_with(
        url,
        "lambda",
        method,
        path_and_query,
        "application/json",
        body,
    )
}

/// [`rest_at`] with a body of `content_type`.
fn rest_with(
    url: &str,
    service: &str,
    method: &str,
    path_and_query: &str,
    content_type: &str,
    body: &str,
) -> String {
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("moto answers");
    use std::io::{Read, Write};
    write!(
        stream,
        "{method} {path_and_query} HTTP/1.1\r\nhost: {address}\r\ncontent-type: {content_type}\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// Calls a JSON-protocol (1.1) API of the moto_server at `url` directly,
/// unsigned: `x-amz-target: {target}.{action}` with `body`. Returns the
/// answer; panics with the whole response when it is not a 200 with JSON.
pub fn json_at(
    url: &str,
    service: &str,
    target: &str,
    action: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(address).expect("moto answers");
    write!(
        stream,
        "POST / HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amz-target: {target}.{action}\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{target}.{action}: {response}"
    );
    let answer = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(answer).unwrap_or_else(|error| {
        panic!("{target}.{action} answered with no JSON ({error}): {response}")
    })
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
