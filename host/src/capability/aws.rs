//! The host side of `runbook:plugin/aws`: the grant check first (service,
//! action, region), then the request is built and signed on the host with
//! the operator's credentials (SigV4), for the Query protocol (RDS, EC2,
//! IAM, CloudWatch) and the JSON protocol (DynamoDB, ECR, ...). While planning,
//! actions that change things are recorded and not sent.

pub mod sigv4;

use super::{Capability, StepContext, StepState};
pub use crate::grant::AwsGrant;
pub use crate::grant::AwsGrant as Grant;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::aws::{self as wit_aws, Host, Protocol, Request, Response};
use sigv4::{Credentials, SignableRequest};

/// AWS calls, signed on the host, within granted services, actions and
/// regions.
pub const CAPABILITY: Capability = Capability {
    name: "aws",
    used_through: Some("aws"),
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
    ["Describe", "List", "Get", "BatchGet", "Query", "Scan"]
        .iter()
        .any(|prefix| action.starts_with(prefix))
}

/// Makes an AWS call within the step's grant.
pub async fn call(context: &StepContext, request: Request) -> Result<Response, PluginError> {
    let requested = format!(
        "{}:{} in {}",
        request.service, request.action, request.region
    );
    let record = context.call("aws", requested.clone());
    let Some(grant) = &context.grants.aws else {
        return Err(record.deny(
            "no AWS grant",
            format!(
                "{} has no AWS grant; if intended, add `grants.aws = {{ services = [\"{}\"], actions = [\"{}\"], regions = [\"{}\"] }}`",
                context.step_id.subject(), request.service, request.action, request.region
            ),
        ));
    };
    if let Some(reason) = grant.refuses(&request.service, &request.action, &request.region) {
        let hint = format!("{reason}; if intended, add it to the step's `grants.aws`");
        return Err(record.deny(reason, hint));
    }
    if context.dry_run && !is_read_only(&request.action) {
        return Err(record.hold_back(
            None,
            "`plan` runs plugins read-only: AWS actions that change things are recorded, not sent",
        ));
    }
    let access = context.aws.clone().unwrap_or_default();
    let Some(credentials) = &access.credentials else {
        return Err(PluginError::Failed(
            "no AWS credentials on this machine: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials".into(),
        ));
    };
    let endpoint = match &access.endpoint {
        Some(endpoint) => endpoint.clone(),
        None if request.service == "iam" => {
            url::Url::parse("https://iam.amazonaws.com/").expect("a valid URL")
        }
        None => url::Url::parse(&format!(
            "https://{}.{}.amazonaws.com/",
            request.service, request.region
        ))
        .map_err(|error| PluginError::Failed(format!("bad service or region: {error}")))?,
    };
    let (body, content_type, target) = match request.protocol {
        Protocol::Query => {
            let Some(version) = query_version(&request.service) else {
                return Err(PluginError::Failed(format!(
                    "service `{}` does not speak the Query protocol here",
                    request.service
                )));
            };
            let params: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(if request.params.trim().is_empty() {
                    "{}"
                } else {
                    &request.params
                })
                .map_err(|error| {
                    PluginError::Failed(format!("params must be a JSON object of strings: {error}"))
                })?;
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
            (
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
            )
        }
        Protocol::Json => {
            let Some((prefix, content_type)) = json_target(&request.service) else {
                return Err(PluginError::Failed(format!(
                    "service `{}` does not speak the JSON protocol here",
                    request.service
                )));
            };
            let body = if request.params.trim().is_empty() {
                "{}".to_owned()
            } else {
                request.params.clone()
            };
            (
                body.into_bytes(),
                content_type,
                Some(format!("{prefix}.{}", request.action)),
            )
        }
    };
    let amz_date = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let host = match endpoint.port() {
        Some(port) => format!("{}:{port}", endpoint.host_str().unwrap_or_default()),
        None => endpoint.host_str().unwrap_or_default().to_owned(),
    };
    let mut headers = vec![
        ("content-type".to_owned(), content_type.to_owned()),
        ("host".to_owned(), host),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    if let Some(target) = &target {
        headers.push(("x-amz-target".to_owned(), target.clone()));
    }
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    let signable = SignableRequest {
        method: "POST",
        path: endpoint.path(),
        query: &[],
        headers: &headers,
        body: &body,
    };
    let authorization = sigv4::authorization(
        &signable,
        credentials,
        &request.region,
        &request.service,
        &amz_date,
    );
    let mut builder = context.http.client().post(endpoint.clone()).body(body);
    for (name, value) in headers.iter().filter(|(name, _)| name != "host") {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder = builder.header("authorization", authorization).timeout(
        context
            .deadline_for(None)
            .saturating_duration_since(tokio::time::Instant::now()),
    );
    let sent = tokio::select! {
        result = builder.send() => result,
        () = context.cancel.cancelled() => return Err(PluginError::Cancelled),
    };
    let outcome = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            Ok((status, text))
        }
        Err(error) => Err(error.to_string()),
    };
    match &outcome {
        Ok((status, _)) => record.finish(None, status.to_string(), true),
        Err(reason) => record.finish(None, reason.clone(), false),
    }
    match outcome {
        Ok((status, text)) => Ok(Response {
            status,
            body: context.redactor.apply(&text).into_owned(),
        }),
        Err(reason) => Err(PluginError::Transient(format!("{requested}: {reason}"))),
    }
}

impl Host for StepState {
    async fn call(&mut self, request: Request) -> Result<Response, PluginError> {
        call(&self.context, request).await
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
    fn read_only_actions_are_recognised() {
        assert!(is_read_only("DescribeDBSnapshots"));
        assert!(!is_read_only("CreateDBSnapshot"));
    }
}
