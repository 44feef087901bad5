//! The run's secrets, read once per process before any step runs, each
//! from its source (`Plan::secret_sources`): an environment variable, a
//! file, or AWS Secrets Manager with the operator's credentials
//! (`capability::secrets::sources`). A secret that cannot be read is a
//! diagnostic at its `[secrets.NAME]` in the runbook; no diagnostic holds
//! a value.

use crate::capability::aws::AwsAccess;
use crate::capability::secrets::SecretStore;
use crate::capability::secrets::sources::{self, SourceError};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::runbook::{Plan, SecretSource};
use std::collections::BTreeMap;

/// Where the host reads the secrets that are not given.
pub struct Reading<'a> {
    /// Values given by the caller, by secret name; they win over every
    /// source (the tests, callers that keep secrets elsewhere).
    pub given: &'a BTreeMap<String, String>,
    /// An environment variable of the operator's process, for `env`
    /// sources (`std::env::var`, or nothing).
    pub environment: &'a dyn Fn(&str) -> Option<String>,
    /// The HTTP client AWS calls go through.
    pub client: &'a reqwest::Client,
    /// The operator's AWS credentials, and the endpoint override of the
    /// run (the environment's `aws_endpoint`, or `--aws-endpoint`).
    pub aws: &'a AwsAccess,
}

/// Reads every secret the steps and `[notify]` targets use, each from its
/// source; every one that cannot be read is a diagnostic.
pub async fn read_secrets(plan: &Plan, reading: &Reading<'_>) -> Result<SecretStore, Diagnostics> {
    let mut values = BTreeMap::new();
    let mut problems = Diagnostics::default();
    for name in plan.secret_names() {
        if let Some(value) = reading.given.get(&name) {
            values.insert(name, value.clone());
            continue;
        }
        let source = plan
            .secret_sources
            .get(&name)
            .cloned()
            .unwrap_or_else(|| SecretSource::Env { var: name.clone() });
        match read(&source, reading).await {
            Ok(value) => {
                values.insert(name, value);
            }
            Err(problem) => problems.push(place(plan, &name, &source, problem)),
        }
    }
    problems.into_result(SecretStore::new(values))
}

/// The secrets that come from environment variables, when every one of
/// them is set: what `plan` reads (it never reads a file or Secrets
/// Manager, whose secrets its steps then lack).
pub fn read_environment_only(
    plan: &Plan,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Option<SecretStore> {
    let mut values = BTreeMap::new();
    for name in plan.secret_names() {
        match plan.secret_sources.get(&name) {
            None => values.insert(name.clone(), environment(&name)?),
            Some(SecretSource::Env { var }) => values.insert(name, environment(var)?),
            Some(_) => continue,
        };
    }
    Some(SecretStore::new(values))
}

/// Why a secret could not be had, before it is placed in the runbook.
enum Problem {
    /// Its environment variable is not set.
    Unset(String),
    /// Its file or Secrets Manager could not give it.
    Source(SourceError),
}

/// The value of one secret from its source.
async fn read(source: &SecretSource, reading: &Reading<'_>) -> Result<String, Problem> {
    match source {
        SecretSource::Env { var } => {
            (reading.environment)(var).ok_or_else(|| Problem::Unset(var.clone()))
        }
        SecretSource::File { path } => sources::read_file(path).map_err(Problem::Source),
        SecretSource::AwsSecretsManager { id, region, key } => {
            let text = sources::read_secrets_manager(reading.client, reading.aws, region, id)
                .await
                .map_err(Problem::Source)?;
            match key {
                Some(key) => sources::json_field(&text, key, id).map_err(Problem::Source),
                None => Ok(text),
            }
        }
    }
}

/// The diagnostic of a secret that could not be read: at its
/// `[secrets.NAME]` key that says where it is (none for a secret not
/// declared), with what to do.
fn place(plan: &Plan, name: &str, source: &SecretSource, problem: Problem) -> Diagnostic {
    let (message, key, hint) = match problem {
        Problem::Unset(var) => (
            crate::capability::secrets::SecretError::Missing(name.to_owned()).to_string(),
            "var",
            if var == name {
                format!(
                    "secrets are read from the environment: `export {name}=...` before running, or declare where it is kept under `[secrets.{name}]`"
                )
            } else {
                format!(
                    "secret `{name}` is read from environment variable `{var}`: `export {var}=...` before running"
                )
            },
        ),
        Problem::Source(error) => {
            let (key, hint) = hint(&error, source);
            (error.to_string(), key, hint)
        }
    };
    let diagnostic = Diagnostic::new(message).hint(hint);
    match plan.runbook.secrets.get(name) {
        Some(written) => diagnostic.at(&plan.runbook.source, &written.at.key(key)),
        None => diagnostic,
    }
}

/// The key of `[secrets.NAME]` a read's error points at, and what to do.
fn hint(error: &SourceError, source: &SecretSource) -> (&'static str, String) {
    let (id, region) = match source {
        SecretSource::AwsSecretsManager { id, region, .. } => (id.as_str(), region.as_str()),
        _ => ("ID", "REGION"),
    };
    match error {
        SourceError::NotFound { .. } => ("id", format!(
            "`id` is the secret's name or ARN and `region` where it is kept; `aws secretsmanager describe-secret --secret-id {id} --region {region}` shows whether the operator's credentials see it"
        )),
        SourceError::Denied { .. } => ("id", format!(
            "secrets are read with the AWS credentials of the operator who runs `runbook`: they need `secretsmanager:GetSecretValue` on `{id}` (and `kms:Decrypt` on its key, if it has its own)"
        )),
        SourceError::Failed { .. } | SourceError::Unreachable { .. } | SourceError::Malformed { .. } => ("id",
            "nothing ran; try again, and check the network and the environment's `aws_endpoint` (AWS, or an emulator of it)".to_owned()
        ),
        SourceError::Binary { .. } => ("id",
            "store the value as text (`SecretString`), or keep it in a file and declare `from = \"file\"`".to_owned()
        ),
        SourceError::NotAnObject { .. } | SourceError::NoSuchKey { .. } | SourceError::KeyNotText { .. } => ("key",
            "`key` names a field of the secret's JSON text; without `key` the whole text is the value".to_owned()
        ),
        SourceError::NoCredentials { .. } => ("from",
            "secrets in AWS Secrets Manager are read with the operator's own credentials, as `aws` reads them".to_owned()
        ),
        SourceError::File { .. } | SourceError::FileTooLarge { .. } | SourceError::FileNotText { .. } => ("path",
            "`path` is relative to the runbook's folder; the file must be there, readable by the operator who runs `runbook`, and hold the secret as text".to_owned()
        ),
    }
}
