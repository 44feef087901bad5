//! The host side of `runbook:plugin/aws`: the grant check first (service,
//! action, region), then the request is built and signed on the host with
//! the operator's credentials (SigV4, `sigv4.rs`), for the Query protocol
//! (RDS, EC2, IAM, CloudWatch) and the JSON protocol (DynamoDB, ECR, ...)
//! here, and for REST-JSON (Lambda) and REST-XML (Route 53, CloudFront,
//! S3) in `rest.rs`. While planning, actions that change things are
//! recorded and not sent. Credentials never leave the host.

pub mod rest;
pub mod sigv4;

use super::{Call, Capability, StepContext, StepState};
pub use crate::grant::AwsGrant;
pub use crate::grant::AwsGrant as Grant;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::aws::{
    self as wit_aws, Host, Protocol, Request, Response, RestRequest, RestResponse,
};
use sigv4::Credentials;

/// AWS calls, signed on the host, within granted services, actions and
/// regions.
pub const CAPABILITY: Capability = Capability {
    name: "aws",
    used_through: &["aws"],
    grant_key: "grants.aws",
    example: "grants.aws = { services = [\"rds\"], actions = [\"CreateDBSnapshot\"], regions = [\"us-east-1\"] }",
    refused_without_grant: Some("none"),
    granted: |grants| grants.aws.is_some(),
    add_to_linker,
};

/// Links `runbook:plugin/aws`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepState>) -> wasmtime::Result<()> {
    wit_aws::add_to_linker::<_, wasmtime::component::HasSelf<StepState>>(linker, |state| state)
}

/// How the host reaches AWS for a run: credentials and an optional endpoint.
#[derive(Debug, Clone, Default)]
pub struct AwsAccess {
    /// The operator's credentials, when found.
    pub credentials: Option<Credentials>,
    /// Instead of AWS (an emulator).
    pub endpoint: Option<url::Url>,
}

impl AwsAccess {
    /// Credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// (`AWS_SESSION_TOKEN`), else the shared credentials file's profile
    /// (`AWS_PROFILE`, default `default`).
    pub fn from_environment(endpoint: Option<url::Url>) -> Self {
        let from_variables = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(access_key_id), Ok(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            }),
            _ => None,
        };
        AwsAccess {
            credentials: from_variables.or_else(from_shared_file),
            endpoint,
        }
    }
}

fn from_shared_file() -> Option<Credentials> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| std::path::PathBuf::from(home).join(".aws/credentials"))
        })?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut in_profile = false;
    let mut values = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            in_profile = name.trim() == profile;
        } else if in_profile && let Some((key, value)) = line.split_once('=') {
            values.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Some(Credentials {
        access_key_id: values.get("aws_access_key_id")?.clone(),
        secret_access_key: values.get("aws_secret_access_key")?.clone(),
        session_token: values.get("aws_session_token").cloned(),
    })
}

/// The Query API version of a service.
fn query_version(service: &str) -> Option<&'static str> {
    Some(match service {
        "rds" => "2014-10-31",
        "ec2" => "2016-11-15",
        "iam" => "2010-05-08",
        "sts" => "2011-06-15",
        "sqs" => "2012-11-05",
        "sns" => "2010-03-31",
        "cloudformation" => "2010-05-15",
        "elasticloadbalancing" => "2015-12-01",
        "autoscaling" => "2011-01-01",
        "monitoring" => "2010-08-01",
        "email" => "2010-12-01",
        _ => return None,
    })
}

/// The JSON protocol's target prefix and content type of a service.
fn json_target(service: &str) -> Option<(&'static str, &'static str)> {
    Some(match service {
        "dynamodb" => ("DynamoDB_20120810", "application/x-amz-json-1.0"),
        "ecr" => (
            "AmazonEC2ContainerRegistry_V20150921",
            "application/x-amz-json-1.1",
        ),
        "ecs" => (
            "AmazonEC2ContainerServiceV20141113",
            "application/x-amz-json-1.1",
        ),
        "secretsmanager" => ("secretsmanager", "application/x-amz-json-1.1"),
        "ssm" => ("AmazonSSM", "application/x-amz-json-1.1"),
        "logs" => ("Logs_20140328", "application/x-amz-json-1.1"),
        "kms" => ("TrentService", "application/x-amz-json-1.1"),
        _ => return None,
    })
}

/// Whether an action only reads.
pub fn is_read_only(action: &str) -> bool {
    [
        "Describe", "List", "Get", "BatchGet", "Query", "Scan", "Head",
    ]
    .iter()
    .any(|prefix| action.starts_with(prefix))
}

/// Why the step may not call `action` of `service` in `region`, and the
/// hint that would grant it; `None` when its grant allows the call.
fn refused(
    context: &StepContext,
    service: &str,
    action: &str,
    region: &str,
) -> Option<(String, String)> {
    let Some(grant) = &context.grants.aws else {
        return Some((
            "no AWS grant".to_owned(),
            format!(
                "{} has no AWS grant; if intended, add `grants.aws = {{ services = [\"{service}\"], actions = [\"{action}\"], regions = [\"{region}\"] }}`",
                context.step_id.subject()
            ),
        ));
    };
    refusal(grant, service, action, region)
}

/// Why `grant` does not allow the call, and the hint: what differs (the
/// service, action or region) and the grant with just that added.
fn refusal(
    grant: &AwsGrant,
    service: &str,
    action: &str,
    region: &str,
) -> Option<(String, String)> {
    let missing = grant.missing(service, action, region);
    if missing.is_empty() {
        return None;
    }
    let reason = missing.join("; ");
    let hint = format!(
        "{reason}; if intended, add {} to the step's `grants.aws`: `grants.aws = {}`",
        if missing.len() == 1 { "it" } else { "them" },
        grant.widened(service, action, region).to_toml()
    );
    Some((reason, hint))
}

/// How a call answered from a cassette is recorded.
pub(super) fn replayed_outcome<T>(
    answer: &Result<T, PluginError>,
    status: impl Fn(&T) -> u16,
) -> String {
    match answer {
        Ok(response) => format!("{} (from the cassette)", status(response)),
        Err(error) => format!("{} (from the cassette)", error.describe()),
    }
}

/// The error of a call made where the host has no credentials.
fn no_credentials() -> PluginError {
    PluginError::Failed(
        "no AWS credentials on this machine: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials".into(),
    )
}

/// Makes a Query- or JSON-protocol call within the step's grant.
pub async fn call(context: &StepContext, request: Request) -> Result<Response, PluginError> {
    let requested = format!(
        "{}:{} in {}",
        request.service, request.action, request.region
    );
    let record = context.call("aws", requested.clone());
    if let Some((why, hint)) = refused(context, &request.service, &request.action, &request.region)
    {
        return Err(record.deny(why, hint));
    }
    if context.dry_run && !is_read_only(&request.action) {
        return Err(record.hold_back(
            None,
            "`plan` runs plugins read-only: AWS actions that change things are recorded, not sent",
        ));
    }
    if let Some(answer) = context.replayed(&request) {
        record.finish(
            None,
            replayed_outcome(&answer, |response| response.status),
            answer.is_ok(),
        );
        return answer;
    }
    let access = context.aws.clone().unwrap_or_default();
    let Some(credentials) = &access.credentials else {
        record.finish(None, "no AWS credentials", false);
        return Err(no_credentials());
    };
    let builder = match signed_post(context.http.client(), &access, credentials, &request) {
        Ok(builder) => builder,
        Err(unsendable) => {
            record.finish(None, unsendable.to_string(), false);
            return Err(PluginError::Failed(match unsendable {
                Unsendable::Endpoint(error) => format!("bad service or region: {error}"),
                Unsendable::Encoding(reason) => reason,
                Unsendable::Signing(error) => format!("{requested}: {error}"),
            }));
        }
    };
    let deadline = context.deadline_for(None);
    let reply = exchange(context, record, &requested, builder, deadline).await?;
    Ok(Response {
        status: reply.status,
        body: context
            .redactor
            .apply(&String::from_utf8_lossy(&reply.body))
            .into_owned(),
    })
}

/// A Query- or JSON-protocol call's body, content type and `x-amz-target`.
fn encode(request: &Request) -> Result<(Vec<u8>, &'static str, Option<String>), String> {
    match request.protocol {
        Protocol::Query => {
            let Some(version) = query_version(&request.service) else {
                return Err(format!(
                    "service `{}` does not speak the Query protocol here",
                    request.service
                ));
            };
            let params: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(if request.params.trim().is_empty() {
                    "{}"
                } else {
                    &request.params
                })
                .map_err(|error| format!("params must be a JSON object of strings: {error}"))?;
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", &request.action);
            form.append_pair("Version", version);
            for (key, value) in &params {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                form.append_pair(key, &text);
            }
            Ok((
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
            ))
        }
        Protocol::Json => {
            let Some((prefix, content_type)) = json_target(&request.service) else {
                return Err(format!(
                    "service `{}` does not speak the JSON protocol here",
                    request.service
                ));
            };
            let body = if request.params.trim().is_empty() {
                "{}".to_owned()
            } else {
                request.params.clone()
            };
            Ok((
                body.into_bytes(),
                content_type,
                Some(format!("{prefix}.{}", request.action)),
            ))
        }
    }
}

/// Why a Query- or JSON-protocol request could not be made ready to send.
#[derive(Debug, thiserror::Error)]
enum Unsendable {
    /// No endpoint for the service and region.
    #[error("{0}")]
    Endpoint(String),
    /// The parameters are not what the protocol carries.
    #[error("{0}")]
    Encoding(String),
    /// The request could not be signed.
    #[error("{0}")]
    Signing(#[source] sigv4::SignError),
}

/// A Query- or JSON-protocol request, encoded and signed with
/// `credentials`, ready to send to its endpoint: what a step's `aws.call`
/// and the host's own calls ([`host_call`]) both send.
fn signed_post(
    client: &reqwest::Client,
    access: &AwsAccess,
    credentials: &Credentials,
    request: &Request,
) -> Result<reqwest::RequestBuilder, Unsendable> {
    let url =
        rest::endpoint(access, &request.service, &request.region).map_err(Unsendable::Endpoint)?;
    let (body, content_type, target) = encode(request).map_err(Unsendable::Encoding)?;
    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
    if let Some(target) = target {
        headers.push(("x-amz-target".to_owned(), target));
    }
    let payload_sha256 = sigv4::payload_hash(&body);
    let unsigned = sigv4::Unsigned {
        method: "POST",
        url: &url,
        headers: &headers,
        payload_sha256: &payload_sha256,
    };
    let scope = sigv4::Scope {
        service: rest::signing_name(&request.service),
        region: rest::signing_region(&request.service, &request.region),
        time: std::time::SystemTime::now(),
    };
    let signature = sigv4::sign(&unsigned, credentials, scope).map_err(Unsendable::Signing)?;
    let mut builder = client.post(url).body(body);
    for (name, value) in &headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    Ok(with_signature(builder, signature))
}

/// What AWS answered a call the host made for itself.
#[derive(Debug)]
pub struct HostReply {
    /// The HTTP status.
    pub status: u16,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_RESPONSE_BYTES`](super::http::MAX_RESPONSE_BYTES).
    pub body: Vec<u8>,
}

/// Why a call the host made for itself got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HostCallError {
    /// The machine has no AWS credentials.
    #[error(
        "no AWS credentials on this machine: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
    )]
    NoCredentials,
    /// The request could not be made (a bad region, say).
    #[error("{0}")]
    Unsendable(String),
    /// The request or its answer did not get through.
    #[error("{0}")]
    Unreachable(String),
}

/// A Query- or JSON-protocol call the host makes for itself, outside any
/// step, with the operator's credentials: reading a secret from Secrets
/// Manager before the run (`engine::preflight`). No grant applies, since
/// no plugin asked, and no event is recorded: the caller tells what it
/// read, never the answer. Bounded by `timeout`, its answer by 16 MiB.
pub async fn host_call(
    client: &reqwest::Client,
    access: &AwsAccess,
    request: &Request,
    timeout: std::time::Duration,
) -> Result<HostReply, HostCallError> {
    let credentials = access
        .credentials
        .as_ref()
        .ok_or(HostCallError::NoCredentials)?;
    let builder = signed_post(client, access, credentials, request)
        .map_err(|unsendable| HostCallError::Unsendable(unsendable.to_string()))?;
    let unreachable = |error: reqwest::Error| {
        HostCallError::Unreachable(super::http::describe_reqwest_error(&error))
    };
    let mut response = builder.timeout(timeout).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > super::http::MAX_RESPONSE_BYTES {
            return Err(HostCallError::Unreachable(format!(
                "the answer is larger than {} MiB",
                super::http::MAX_RESPONSE_BYTES >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HostReply {
        status,
        headers,
        body,
    })
}

/// Adds a signature's headers to a request; those that carry credentials
/// are marked sensitive, so that no log of the client shows them.
fn with_signature(
    mut builder: reqwest::RequestBuilder,
    signature: Vec<(&'static str, String)>,
) -> reqwest::RequestBuilder {
    for (name, value) in signature {
        builder = match reqwest::header::HeaderValue::from_str(&value) {
            Ok(mut header) => {
                header.set_sensitive(matches!(name, "authorization" | "x-amz-security-token"));
                builder.header(name, header)
            }
            // The client refuses it when sending, with the reason.
            Err(_) => builder.header(name, value),
        };
    }
    builder
}

/// What AWS answered.
struct Reply {
    status: u16,
    /// Every header, names in lower case.
    headers: Vec<(String, String)>,
    /// At most [`MAX_RESPONSE_BYTES`](super::http::MAX_RESPONSE_BYTES).
    body: Vec<u8>,
}

/// Sends a signed request within the step's deadline, unless the run is
/// cancelled first; reads the answer (at most 16 MiB); and finishes the
/// call's record with the status or what went wrong.
async fn exchange(
    context: &StepContext,
    record: Call<'_>,
    requested: &str,
    builder: reqwest::RequestBuilder,
    deadline: tokio::time::Instant,
) -> Result<Reply, PluginError> {
    use futures_util::StreamExt;
    let builder = builder.timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let sent = tokio::select! {
        result = builder.send() => Some(result),
        () = context.cancel.cancelled() => None,
    };
    let Some(sent) = sent else {
        record.finish(None, "cancelled", false);
        return Err(PluginError::Cancelled);
    };
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            let reason = super::http::describe_reqwest_error(&error);
            record.finish(None, reason.clone(), false);
            let message = format!("{requested}: {reason}");
            return Err(if error.is_timeout() {
                PluginError::Timeout(message)
            } else {
                PluginError::Transient(message)
            });
        }
    };
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    loop {
        let chunk = tokio::select! {
            chunk = tokio::time::timeout_at(deadline, stream.next()) => Some(chunk),
            () = context.cancel.cancelled() => None,
        };
        let failure = match chunk {
            None => PluginError::Cancelled,
            Some(Err(_)) => {
                PluginError::Timeout(format!("{requested}: the answer did not arrive in time"))
            }
            Some(Ok(None)) => break,
            Some(Ok(Some(Err(error)))) => PluginError::Transient(format!(
                "{requested}: reading the answer failed: {}",
                super::http::describe_reqwest_error(&error)
            )),
            Some(Ok(Some(Ok(bytes)))) => {
                if body.len() + bytes.len() > super::http::MAX_RESPONSE_BYTES {
                    PluginError::Failed(format!(
                        "{requested}: the answer is larger than {} MiB",
                        super::http::MAX_RESPONSE_BYTES >> 20
                    ))
                } else {
                    body.extend_from_slice(&bytes);
                    continue;
                }
            }
        };
        record.finish(None, format!("{status}: {}", failure.describe()), false);
        return Err(failure);
    }
    record.finish(None, status.to_string(), true);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

impl Host for StepState {
    async fn call(&mut self, request: Request) -> Result<Response, PluginError> {
        let context = &self.context;
        super::tape::through(context, request, |request| call(context, request)).await
    }

    async fn send(&mut self, request: RestRequest) -> Result<RestResponse, PluginError> {
        let context = &self.context;
        super::tape::through(context, request, |request| rest::send(context, request)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> AwsGrant {
        AwsGrant {
            services: vec!["rds".into()],
            actions: vec!["CreateDBSnapshot".into(), "Describe*".into()],
            regions: vec!["us-east-1".into()],
        }
    }

    #[test]
    fn a_call_inside_the_grant_is_allowed() {
        assert_eq!(
            grant().refuses("rds", "CreateDBSnapshot", "us-east-1"),
            None
        );
        assert_eq!(
            grant().refuses("rds", "DescribeDBSnapshots", "us-east-1"),
            None
        );
    }

    #[test]
    fn another_service_action_or_region_is_refused_and_named() {
        assert!(
            grant()
                .refuses("ec2", "CreateDBSnapshot", "us-east-1")
                .unwrap()
                .contains("service `ec2`")
        );
        assert!(
            grant()
                .refuses("rds", "DeleteDBInstance", "us-east-1")
                .unwrap()
                .contains("action `DeleteDBInstance`")
        );
        assert!(
            grant()
                .refuses("rds", "CreateDBSnapshot", "eu-west-1")
                .unwrap()
                .contains("region `eu-west-1`")
        );
    }

    #[test]
    fn the_hint_names_what_differs_and_the_grant_with_just_that_added() {
        let (reason, hint) = refusal(&grant(), "rds", "DeleteDBInstance", "us-east-1").unwrap();
        assert_eq!(
            reason,
            "action `DeleteDBInstance` is not granted (granted: CreateDBSnapshot, Describe*)"
        );
        assert!(
            hint.ends_with("if intended, add it to the step's `grants.aws`: `grants.aws = { services = [\"rds\"], actions = [\"CreateDBSnapshot\", \"Describe*\", \"DeleteDBInstance\"], regions = [\"us-east-1\"] }`"),
            "{hint}"
        );
        let (reason, hint) = refusal(&grant(), "rds", "DescribeDBInstances", "eu-west-1").unwrap();
        assert!(
            reason.starts_with("region `eu-west-1` is not granted"),
            "{reason}"
        );
        assert!(
            hint.contains("actions = [\"CreateDBSnapshot\", \"Describe*\"], regions = [\"us-east-1\", \"eu-west-1\"]"),
            "the action a prefix allows is not added again: {hint}"
        );
        let (reason, hint) = refusal(&grant(), "ec2", "DescribeInstances", "eu-west-1").unwrap();
        assert!(
            reason.contains("service `ec2`") && reason.contains("region `eu-west-1`"),
            "{reason}"
        );
        assert!(hint.contains("add them to"), "{hint}");
        assert!(refusal(&grant(), "rds", "CreateDBSnapshot", "us-east-1").is_none());
    }

    #[test]
    fn read_only_actions_are_recognised() {
        assert!(is_read_only("DescribeDBSnapshots"));
        assert!(is_read_only("ListResourceRecordSets"));
        assert!(is_read_only("HeadObject"));
        assert!(!is_read_only("CreateDBSnapshot"));
        assert!(!is_read_only("ChangeResourceRecordSets"));
    }
}
