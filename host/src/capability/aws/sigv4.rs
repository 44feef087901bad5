//! AWS Signature Version 4, with the `aws-sigv4` crate: the host signs
//! requests with the operator's credentials; plugins never see them. The
//! rules that differ per service (S3's payload hash header, single URI
//! encoding and unnormalised paths) are chosen here, and checked against
//! AWS's published test-suite vectors and the S3 documentation's example.

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningParams,
    SigningSettings, UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// The operator's AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Credentials({})", self.access_key_id)
    }
}

/// What is signed: the request as it will be sent, less what the signer
/// adds (`host` comes from the URL; `x-amz-date`, `x-amz-security-token`,
/// `x-amz-content-sha256` and `authorization` from [`sign`]).
#[derive(Debug)]
pub struct Unsigned<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The URL as it is sent: its path and query already URI-encoded.
    pub url: &'a url::Url,
    /// Headers to sign, names in lower case; none of those [`sign`] adds.
    pub headers: &'a [(String, String)],
    /// The body's SHA-256, lowercase hex ([`payload_hash`]).
    pub payload_sha256: &'a str,
}

/// Who signs for what: the service's signing name, the region, and when.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The signing name (`rds`, `route53`, `s3`).
    pub service: &'a str,
    /// The region the signature is for (`us-east-1` for global services).
    pub region: &'a str,
    /// The signing time, normally now.
    pub time: SystemTime,
}

/// Why a request could not be signed (a header value that is not one, a
/// URL the signer cannot read).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub struct SignError(String);

/// The lowercase hex SHA-256 of a body, as the signature covers it.
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The headers that sign `request`: `x-amz-date`, `authorization`, and
/// when needed `x-amz-content-sha256` (S3) and `x-amz-security-token`.
/// S3 is signed as S3 wants: the payload hash in a header, the path
/// encoded once and not normalised; every other service has its path
/// encoded twice, as AWS's signature test suite does.
pub fn sign(
    request: &Unsigned<'_>,
    credentials: &Credentials,
    scope: Scope<'_>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let identity: Identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "runbook",
    )
    .into();
    let mut settings = SigningSettings::default();
    if scope.service == "s3" {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params: SigningParams<'_> = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(scope.time)
        .settings(settings)
        .build()
        .map_err(|error| SignError(error.to_string()))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url.as_str(),
        request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
        SignableBody::Precomputed(request.payload_sha256.to_owned()),
    )
    .map_err(|error| SignError(describe(&error)))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|error| SignError(describe(&error)))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|header| (header.name(), header.value().to_owned()))
        .collect())
}

/// An error and its causes, on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn suite_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(found, _)| *found == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
    }

    /// The signature of a test-suite request to `https://example.amazonaws.com`
    /// + `path_and_query`, with no body.
    fn signature(method: &str, path_and_query: &str) -> String {
        let url = url::Url::parse(&format!("https://example.amazonaws.com{path_and_query}"))
            .expect("a URL");
        let request = Unsigned {
            method,
            url: &url,
            headers: &[],
            payload_sha256: &payload_hash(b""),
        };
        let scope = Scope {
            service: "service",
            region: "us-east-1",
            time: suite_time(),
        };
        let headers = sign(&request, &suite_credentials(), scope).expect("signed");
        assert_eq!(header(&headers, "x-amz-date"), "20150830T123600Z");
        let authorization = header(&headers, "authorization");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, "),
            "{authorization}"
        );
        authorization
            .rsplit("Signature=")
            .next()
            .expect("a signature")
            .to_owned()
    }

    #[test]
    fn get_vanilla_matches_the_aws_test_suite() {
        assert_eq!(
            signature("GET", "/"),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_vanilla_matches_the_aws_test_suite() {
        assert_eq!(
            signature("POST", "/"),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn query_parameters_are_sorted_as_the_aws_test_suite_expects() {
        assert_eq!(
            signature("GET", "/?Param2=value2&Param1=value1"),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    /// The "GET Object" example of the S3 documentation ("Signature
    /// Calculations for the Authorization Header: Transferring Payload in
    /// a Single Chunk").
    #[test]
    fn an_s3_get_object_matches_the_s3_documentation_example() {
        let url = url::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let request = Unsigned {
            method: "GET",
            url: &url,
            headers: &[("range".to_owned(), "bytes=0-9".to_owned())],
            payload_sha256: &payload_hash(b""),
        };
        let credentials = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let scope = Scope {
            service: "s3",
            region: "us-east-1",
            // 2013-05-24T00:00:00Z.
            time: UNIX_EPOCH + Duration::from_secs(1_369_353_600),
        };
        let headers = sign(&request, &credentials, scope).expect("signed");
        assert_eq!(
            header(&headers, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The documentation writes the same header without spaces after
        // the commas.
        assert_eq!(
            header(&headers, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let url = url::Url::parse("https://rds.us-east-1.amazonaws.com/").unwrap();
        let request = Unsigned {
            method: "POST",
            url: &url,
            headers: &[],
            payload_sha256: &payload_hash(b"Action=DescribeDBInstances"),
        };
        let credentials = Credentials {
            session_token: Some("token".into()),
            ..suite_credentials()
        };
        let scope = Scope {
            service: "rds",
            region: "us-east-1",
            time: suite_time(),
        };
        let headers = sign(&request, &credentials, scope).expect("signed");
        assert_eq!(header(&headers, "x-amz-security-token"), "token");
        assert!(
            header(&headers, "authorization")
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
            "{headers:?}"
        );
        assert!(
            headers
                .iter()
                .all(|(name, _)| *name != "x-amz-content-sha256")
        );
    }
}
