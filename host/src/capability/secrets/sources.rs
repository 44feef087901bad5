//! Reading a secret's value from where the runbook says it is kept: a file
//! on the operator's machine, or AWS Secrets Manager through a signed
//! `GetSecretValue` with the operator's credentials (`aws::host_call`).
//! The host reads each once per process, before any step runs; the value
//! goes into the run's [`super::SecretStore`] and nowhere else: no error
//! here carries it, nor any part of an answer that held it.

use crate::capability::aws::{self, AwsAccess, HostCallError};
use crate::wit::runbook::plugin::aws::{Protocol, Request};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest secret read: Secrets Manager's own limit is 64 KiB, and a
/// file larger than this is not a secret but a mistake.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// How long one `GetSecretValue` may take, answer included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a secret's value could not be read. No variant holds the value or
/// any text an answer that held it gave back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Secrets Manager has no secret of that id (`ResourceNotFoundException`).
    #[error("AWS Secrets Manager has no secret `{id}` in {region}")]
    NotFound {
        /// The secret's id or ARN.
        id: String,
        /// The region asked.
        region: String,
    },
    /// The operator's credentials may not read it (`AccessDeniedException`,
    /// or another answer of 4xx that refuses the caller).
    #[error("reading secret `{id}` from AWS Secrets Manager was denied: {code}: {message}")]
    Denied {
        /// The secret's id or ARN.
        id: String,
        /// AWS's error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// Secrets Manager answered with another error.
    #[error("AWS Secrets Manager could not give secret `{id}`: {status} {code}: {message}")]
    Failed {
        /// The secret's id or ARN.
        id: String,
        /// The HTTP status.
        status: u16,
        /// AWS's error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// The secret holds bytes (`SecretBinary`), not text.
    #[error("secret `{id}` in AWS Secrets Manager is binary: only text secrets can be used")]
    Binary {
        /// The secret's id or ARN.
        id: String,
    },
    /// `key` names a field, but the secret's text is not a JSON object.
    #[error("secret `{id}` is not a JSON object, so it has no field `{key}`")]
    NotAnObject {
        /// The secret's id, ARN or file.
        id: String,
        /// The field asked for.
        key: String,
    },
    /// `key` names a field the JSON object does not hold.
    #[error("secret `{id}` holds no field `{key}`{}", fields_listed(.fields))]
    NoSuchKey {
        /// The secret's id, ARN or file.
        id: String,
        /// The field asked for.
        key: String,
        /// The fields it holds (names only).
        fields: Vec<String>,
    },
    /// `key` names an object, array or null, which is not a secret's text.
    #[error("field `{key}` of secret `{id}` is not text, a number or a boolean")]
    KeyNotText {
        /// The secret's id, ARN or file.
        id: String,
        /// The field asked for.
        key: String,
    },
    /// The machine has no AWS credentials.
    #[error(
        "cannot read secret `{id}` from AWS Secrets Manager: {}",
        HostCallError::NoCredentials
    )]
    NoCredentials {
        /// The secret's id or ARN.
        id: String,
    },
    /// Secrets Manager could not be reached, or the request not made.
    #[error("cannot read secret `{id}` from AWS Secrets Manager: {reason}")]
    Unreachable {
        /// The secret's id or ARN.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is not the one `GetSecretValue` gives.
    #[error(
        "AWS Secrets Manager's answer for secret `{id}` holds neither `SecretString` nor `SecretBinary`"
    )]
    Malformed {
        /// The secret's id or ARN.
        id: String,
    },
    /// The file cannot be read.
    #[error("cannot read secret file `{}`: {reason}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why, as the operating system says.
        reason: String,
    },
    /// The file is larger than [`MAX_SECRET_BYTES`].
    #[error("secret file `{}` is larger than {} KiB", .path.display(), MAX_SECRET_BYTES >> 10)]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error("secret file `{}` is not UTF-8 text", .path.display())]
    FileNotText {
        /// The file.
        path: PathBuf,
    },
}

fn fields_listed(fields: &[String]) -> String {
    if fields.is_empty() {
        " (it is an empty object)".to_owned()
    } else {
        format!(
            " (its fields: {})",
            fields
                .iter()
                .map(|field| format!("`{field}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The text of a secret file, without its trailing line ending (what
/// `echo value > file` adds).
pub fn read_file(path: &Path) -> Result<String, SourceError> {
    use std::io::Read;
    let failed = |error: std::io::Error| SourceError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SourceError::FileTooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| SourceError::FileNotText {
        path: path.to_path_buf(),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The text of secret `id` in `region` of AWS Secrets Manager (its
/// `AWSCURRENT` version), read with a signed `GetSecretValue` (the JSON
/// protocol) through `access`: the operator's credentials, and the
/// endpoint override of the run when there is one.
pub async fn read_secrets_manager(
    client: &reqwest::Client,
    access: &AwsAccess,
    region: &str,
    id: &str,
) -> Result<String, SourceError> {
    let request = Request {
        service: "secretsmanager".into(),
        region: region.to_owned(),
        action: "GetSecretValue".into(),
        protocol: Protocol::Json,
        params: serde_json::json!({ "SecretId": id }).to_string(),
    };
    let reply = aws::host_call(client, access, &request, READ_TIMEOUT)
        .await
        .map_err(|error| match error {
            HostCallError::NoCredentials => SourceError::NoCredentials { id: id.to_owned() },
            HostCallError::Unsendable(reason) | HostCallError::Unreachable(reason) => {
                SourceError::Unreachable {
                    id: id.to_owned(),
                    reason,
                }
            }
        })?;
    if !(200..300).contains(&reply.status) {
        return Err(refusal(id, region, &reply));
    }
    let answer: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|_| SourceError::Malformed { id: id.to_owned() })?;
    match (answer.get("SecretString"), answer.get("SecretBinary")) {
        (Some(serde_json::Value::String(text)), _) => Ok(text.clone()),
        (_, Some(_)) => Err(SourceError::Binary { id: id.to_owned() }),
        _ => Err(SourceError::Malformed { id: id.to_owned() }),
    }
}

/// What an error answer of Secrets Manager means: not found, denied (any
/// 4xx that refuses the caller rather than the request), or another
/// failure. Its code comes from the JSON protocol's `__type` (or the
/// `x-amzn-errortype` header), or from an XML `<Code>` (what IAM's
/// enforcement answers, in moto as in AWS's older front ends).
fn refusal(id: &str, region: &str, reply: &aws::HostReply) -> SourceError {
    let (code, message) = error_of(reply);
    let id = id.to_owned();
    let denied = matches!(
        code.as_str(),
        "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "MissingAuthenticationTokenException"
            | "IncompleteSignature"
    ) || matches!(reply.status, 401 | 403);
    if code == "ResourceNotFoundException" {
        SourceError::NotFound {
            id,
            region: region.to_owned(),
        }
    } else if denied {
        SourceError::Denied { id, code, message }
    } else {
        SourceError::Failed {
            id,
            status: reply.status,
            code,
            message,
        }
    }
}

/// The code and message of an AWS error answer, as far as they can be
/// read; the code without its namespace (`com.amazon...#Name`) or detail
/// (`Name:http://...`).
fn error_of(reply: &aws::HostReply) -> (String, String) {
    let text = String::from_utf8_lossy(&reply.body);
    let header = reply
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, value)| value.clone());
    let (code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(json) => (
            json.get("__type")
                .or_else(|| json.get("code"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            json.get("message")
                .or_else(|| json.get("Message"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        ),
        Err(_) => (xml_element(&text, "Code"), xml_element(&text, "Message")),
    };
    let code = code
        .or(header)
        .map(|code| {
            let code = code.rsplit('#').next().unwrap_or_default();
            code.split(':').next().unwrap_or_default().to_owned()
        })
        .filter(|code| !code.is_empty())
        .unwrap_or_else(|| format!("HTTP {}", reply.status));
    let message = message
        .map(|message| message.trim().to_owned())
        .filter(|message| !message.is_empty())
        .unwrap_or_else(|| "no message".to_owned());
    (code, message)
}

/// The text of the first `<name>` element of `xml`, if any.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

/// Field `key` of a secret whose text is a JSON object (`{"username":
/// "...", "password": "..."}`, as Secrets Manager keeps database
/// credentials): a string as it is, a number or boolean as its JSON text.
/// `id` names the secret in errors.
pub fn json_field(text: &str, key: &str, id: &str) -> Result<String, SourceError> {
    let not_an_object = || SourceError::NotAnObject {
        id: id.to_owned(),
        key: key.to_owned(),
    };
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(object)) => object,
        _ => return Err(not_an_object()),
    };
    match object.get(key) {
        Some(serde_json::Value::String(value)) => Ok(value.clone()),
        Some(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
            Ok(value.to_string())
        }
        Some(_) => Err(SourceError::KeyNotText {
            id: id.to_owned(),
            key: key.to_owned(),
        }),
        None => {
            let mut fields: Vec<String> = object.keys().cloned().collect();
            fields.sort();
            Err(SourceError::NoSuchKey {
                id: id.to_owned(),
                key: key.to_owned(),
                fields,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> aws::HostReply {
        aws::HostReply {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_field_of_a_json_secret_is_read_and_a_missing_one_names_the_fields_not_the_values() {
        let text = r#"{"username": "app", "password": "pw-Sekr1t", "port": 5432}"#;
        assert_eq!(
            json_field(text, "password", "prod/db").unwrap(),
            "pw-Sekr1t"
        );
        assert_eq!(json_field(text, "port", "prod/db").unwrap(), "5432");
        let missing = json_field(text, "pasword", "prod/db").unwrap_err();
        let message = missing.to_string();
        assert!(
            message.contains("`password`") && message.contains("`username`"),
            "{message}"
        );
        assert!(!message.contains("pw-Sekr1t"), "{message}");
        assert!(matches!(
            json_field("just-text", "password", "prod/db"),
            Err(SourceError::NotAnObject { .. })
        ));
        assert!(matches!(
            json_field(r#"{"password": {"nested": 1}}"#, "password", "prod/db"),
            Err(SourceError::KeyNotText { .. })
        ));
    }

    #[test]
    fn error_answers_are_read_from_json_from_the_header_and_from_xml() {
        let not_found = reply(
            400,
            &[],
            r#"{"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the specified secret."}"#,
        );
        assert!(matches!(
            refusal("prod/db", "us-east-1", &not_found),
            SourceError::NotFound { .. }
        ));
        let namespaced = reply(
            400,
            &[],
            r#"{"__type": "com.amazonaws.secretsmanager#AccessDeniedException", "Message": "no"}"#,
        );
        assert_eq!(
            refusal("prod/db", "us-east-1", &namespaced),
            SourceError::Denied {
                id: "prod/db".into(),
                code: "AccessDeniedException".into(),
                message: "no".into()
            }
        );
        let iam = reply(
            403,
            &[],
            "<?xml version=\"1.0\"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/d is not authorized to perform: secretsmanager:GetSecretValue</Message></Error></Errors></ErrorResponse>",
        );
        assert!(matches!(
            refusal("prod/db", "us-east-1", &iam),
            SourceError::Denied { code, .. } if code == "AccessDenied"
        ));
        let by_header = reply(
            500,
            &[("x-amzn-errortype", "InternalServiceError:http://internal")],
            "",
        );
        assert!(matches!(
            refusal("prod/db", "us-east-1", &by_header),
            SourceError::Failed { code, status: 500, .. } if code == "InternalServiceError"
        ));
    }

    #[test]
    fn a_secret_file_loses_its_trailing_line_ending_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " tok en \r\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), " tok en ");
        std::fs::write(&path, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            read_file(&path),
            Err(SourceError::FileTooLarge { .. })
        ));
        assert!(matches!(
            read_file(&dir.path().join("absent")),
            Err(SourceError::File { .. })
        ));
    }
}
