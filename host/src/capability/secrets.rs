//! Sealed secrets: values stay on the host. Plugins hold handles
//! (`@@runbook-secret/NAME/NONCE@@`); the HTTP capability swaps a handle for
//! its value only on a granted request, and the [`Redactor`] scrubs values
//! from everything the runner writes or gives back to a guest.

pub mod sources;

use crate::wit::PluginError;

use std::collections::BTreeMap;
use std::sync::Arc;

const PREFIX: &str = "@@runbook-secret/";
const SUFFIX: &str = "@@";
pub use crate::redact::{REDACTED, Redactor, base64};

/// The secrets of one run: their values and the run's handle nonce.
#[derive(Clone)]
pub struct SecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    values: BTreeMap<String, String>,
    nonce: String,
    /// Built once: every step's context shares it.
    redactor: Redactor,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SecretStore")
            .field("names", &self.inner.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a secret could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Neither the process environment nor the caller has it.
    #[error("secret `{0}` is not set")]
    Missing(String),
}

/// A handle found in a string, and whether it may be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unseal<'a> {
    /// Every handle in the text was granted; here is the text with values.
    Text(String, Vec<&'a str>),
    /// A handle names a secret this step is not granted.
    NotGranted(String),
    /// A handle was not issued for this run, or names an unknown secret.
    Forged(String),
}

impl SecretStore {
    /// A store over known values, with a fresh random nonce.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        let mut bytes = [0_u8; 12];
        getrandom::fill(&mut bytes).expect("the operating system has a random source");
        SecretStore {
            inner: Arc::new(Inner {
                redactor: Redactor::new(values.values().cloned()),
                values,
                nonce: hex::encode(bytes),
            }),
        }
    }

    /// Whether the store has a value for this name.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.values.contains_key(name)
    }

    /// The sealed handle of a secret.
    pub fn handle(&self, name: &str) -> String {
        format!("{PREFIX}{name}/{}{SUFFIX}", self.inner.nonce)
    }

    /// Whether the text holds anything that looks like a handle.
    pub fn mentions_handle(text: &str) -> bool {
        text.contains(PREFIX)
    }

    /// Replaces every handle in `text` with its value when `granted` allows
    /// it. Returns the names used, for the audit log.
    pub fn unseal<'a>(&'a self, text: &str, granted: &[String]) -> Unseal<'a> {
        let mut out = String::with_capacity(text.len());
        let mut used = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(PREFIX) {
            out.push_str(&rest[..start]);
            let after = &rest[start + PREFIX.len()..];
            let Some(end) = after.find(SUFFIX) else {
                return Unseal::Forged("an unterminated secret handle".into());
            };
            let inner = &after[..end];
            let Some((name, nonce)) = inner.split_once('/') else {
                return Unseal::Forged(format!("`{inner}`"));
            };
            let Some((stored_name, value)) = self.inner.values.get_key_value(name) else {
                return Unseal::Forged(format!("unknown secret `{name}`"));
            };
            if nonce != self.inner.nonce {
                return Unseal::Forged(format!("a handle for `{name}` not issued in this run"));
            }
            if !granted.iter().any(|grant| grant == name) {
                return Unseal::NotGranted(name.to_owned());
            }
            out.push_str(value);
            if !used.contains(&stored_name.as_str()) {
                used.push(stored_name.as_str());
            }
            rest = &after[end + SUFFIX.len()..];
        }
        out.push_str(rest);
        Unseal::Text(out, used)
    }

    /// A redactor for every value in this store.
    pub fn redactor(&self) -> Redactor {
        self.inner.redactor.clone()
    }
}

/// An error for a plugin with every message redacted.
pub fn redact_error(redactor: &Redactor, error: PluginError) -> PluginError {
    let text = |text: String| redactor.apply(&text).into_owned();
    match error {
        PluginError::InvalidParams(mut param) => {
            param.path = text(param.path);
            param.message = text(param.message);
            PluginError::InvalidParams(param)
        }
        PluginError::Denied(mut denial) => {
            denial.capability = text(denial.capability);
            denial.requested = text(denial.requested);
            denial.hint = text(denial.hint);
            PluginError::Denied(denial)
        }
        PluginError::Failed(message) => PluginError::Failed(text(message)),
        PluginError::Transient(message) => PluginError::Transient(text(message)),
        PluginError::Timeout(message) => PluginError::Timeout(text(message)),
        PluginError::Cancelled => PluginError::Cancelled,
    }
}

/// The `Authorization` value of a Basic credential, which the redactor
/// learns: a server that echoes it gives back only `[REDACTED]`.
pub fn basic_credential(redactor: &Redactor, user: &str, password: &str) -> String {
    let encoded = base64(format!("{user}:{password}").as_bytes());
    redactor.learn(&encoded);
    format!("Basic {encoded}")
}

/// Secrets, sealed: a step holds handles, and the HTTP capability
/// unseals them on granted requests (so a grant is used through HTTP).
pub const CAPABILITY: super::Capability = super::Capability {
    name: "secrets",
    used_through: &["http", "command"],
    grant_key: "grants.secrets",
    example: "grants.secrets = [\"SLACK_WEBHOOK\"]",
    refused_without_grant: None,
    granted: |grants| !grants.secrets.is_empty(),
    add_to_linker,
};

/// Links `runbook:plugin/secrets`.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<super::StepState>,
) -> wasmtime::Result<()> {
    crate::wit::runbook::plugin::secrets::add_to_linker::<
        _,
        wasmtime::component::HasSelf<super::StepState>,
    >(linker, |state| state)
}

impl crate::wit::runbook::plugin::secrets::Host for super::StepState {
    async fn handle(&mut self, name: String) -> Result<String, PluginError> {
        handle(&self.context, &name)
    }
}

/// `secrets.handle(name)`: the handle of a secret the step is granted.
pub fn handle(context: &super::StepContext, name: &str) -> Result<String, crate::wit::PluginError> {
    let granted = context.grants.secrets.iter().any(|grant| grant == name);
    let known = context.secrets.contains(name);
    if granted && known {
        return Ok(context.secrets.handle(name));
    }
    let hint = format!(
        "secret not granted to {}; if intended, add `grants.secrets = [\"{name}\"]` to {}",
        context.step_id.subject(),
        context.step_id.place()
    );
    Err(context
        .call("secrets", format!("handle of secret `{name}`"))
        .deny(
            if granted {
                "the run has no such secret"
            } else {
                "not granted to the step"
            },
            hint,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::COMPONENT;

    fn store() -> SecretStore {
        SecretStore::new(BTreeMap::from([
            ("API_KEY".to_owned(), "s3cr3t-value".to_owned()),
            ("OTHER".to_owned(), "other\"quoted".to_owned()),
        ]))
    }

    #[test]
    fn a_granted_handle_is_unsealed_inside_other_text() {
        let store = store();
        let text = format!("Bearer {}", store.handle("API_KEY"));
        assert_eq!(
            store.unseal(&text, &["API_KEY".into()]),
            Unseal::Text("Bearer s3cr3t-value".into(), vec!["API_KEY"])
        );
    }

    #[test]
    fn an_ungranted_handle_is_refused() {
        let store = store();
        let text = store.handle("OTHER");
        assert_eq!(
            store.unseal(&text, &["API_KEY".into()]),
            Unseal::NotGranted("OTHER".into())
        );
    }

    #[test]
    fn a_handle_with_another_nonce_is_forged() {
        let store = store();
        let text = "@@runbook-secret/API_KEY/000000000000000000000000@@";
        assert!(matches!(
            store.unseal(text, &["API_KEY".into()]),
            Unseal::Forged(_)
        ));
    }

    #[test]
    fn text_without_handles_passes_unchanged() {
        let store = store();
        assert_eq!(
            store.unseal("plain", &[]),
            Unseal::Text("plain".into(), vec![])
        );
    }

    #[test]
    fn redaction_covers_raw_and_json_escaped_values() {
        let redactor = store().redactor();
        assert_eq!(redactor.apply("key=s3cr3t-value;"), "key=[REDACTED];");
        let json = serde_json::to_string("other\"quoted").unwrap();
        assert_eq!(redactor.apply(&json), "\"[REDACTED]\"");
        assert_eq!(
            redactor.apply_bytes(b"xx s3cr3t-value yy".to_vec()),
            b"xx [REDACTED] yy".to_vec()
        );
    }

    #[test]
    fn a_url_secret_is_redacted_in_every_spelling_the_host_normalises_it_to() {
        let redactor =
            Redactor::new(["HTTPS://Hooks.Example.COM:443/services/T0/B0/XyZ".to_owned()]);
        for text in [
            "HTTPS://Hooks.Example.COM:443/services/T0/B0/XyZ",
            "https://hooks.example.com/services/T0/B0/XyZ",
            "https://hooks.example.com:443/services/T0/B0/XyZ",
            "POST https://hooks.example.com/services/T0/B0/XyZ?<redacted>",
            "no route for /services/T0/B0/XyZ",
            "https:\\/\\/hooks.example.com\\/services\\/T0\\/B0\\/XyZ",
            "next=https%3A%2F%2Fhooks.example.com%2Fservices%2FT0%2FB0%2FXyZ",
            "next=https%3a%2f%2fhooks.example.com%2fservices%2fT0%2fB0%2fXyZ",
        ] {
            let redacted = redactor.apply(text);
            assert!(!redacted.contains("XyZ"), "{text} became {redacted}");
        }
        // The origin alone is what `grants.http` names, not a secret.
        assert_eq!(
            redactor.apply("https://hooks.example.com"),
            "https://hooks.example.com"
        );

        let redactor = Redactor::new(["http://hooks.example.com/a/SeCrEt".to_owned()]);
        let redacted = redactor.apply("http://hooks.example.com:80/a/SeCrEt");
        assert!(!redacted.contains("SeCrEt"), "{redacted}");
    }

    #[test]
    fn user_info_of_a_url_secret_is_redacted_with_the_basic_credential_built_from_it() {
        let redactor = Redactor::new(["https://deploy:pa%20ss@registry.example.com/".to_owned()]);
        assert_eq!(redactor.apply("pw=pa ss"), "pw=[REDACTED]");
        let credential = base64(b"deploy:pa ss");
        assert_eq!(
            redactor.apply(&format!("Basic {credential}")),
            "Basic [REDACTED]"
        );
    }

    #[test]
    fn every_escaping_of_a_value_is_redacted() {
        let value = "Tok/en+\"q\" ü&<x>";
        let redactor = Redactor::new([value.to_owned()]);
        let json = serde_json::to_string(value).unwrap();
        let escaped = [
            json.clone(),
            json.replace('/', "\\/"),
            "\"Tok/en+\\\"q\\\" \\u00fc&<x>\"".to_owned(),
            percent_encoding::utf8_percent_encode(value, COMPONENT).to_string(),
            "Tok%2fen%2b%22q%22%20%c3%bc%26%3cx%3e".to_owned(),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            "Tok/en+&quot;q&quot; ü&amp;&lt;x&gt;".to_owned(),
        ];
        for text in escaped {
            let redacted = redactor.apply(&text);
            assert!(redacted.contains(REDACTED), "{text} became {redacted}");
            assert!(!redacted.contains("Tok"), "{text} became {redacted}");
        }
    }

    #[test]
    fn header_names_are_redacted_whatever_their_case() {
        let redactor = store().redactor();
        assert_eq!(
            redactor.apply_ignoring_case("x-S3CR3T-value-echo"),
            "x-[REDACTED]-echo"
        );
        let tiny = Redactor::new(["e".to_owned()]);
        assert_eq!(tiny.apply_ignoring_case("Ee"), "[REDACTED][REDACTED]");
    }

    #[test]
    fn base64_follows_rfc_4648() {
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), encoded);
        }
    }

    #[test]
    fn a_basic_credential_the_host_builds_is_learned_by_every_clone() {
        let store = store();
        let redactor = store.redactor();
        let events = store.redactor();
        let header = basic_credential(&redactor, "deploy", "s3cr3t-value");
        assert_eq!(header, format!("Basic {}", base64(b"deploy:s3cr3t-value")));
        assert_eq!(
            events.apply(&format!("{{\"authorization\":\"{header}\"}}")),
            "{\"authorization\":\"Basic [REDACTED]\"}"
        );
    }

    #[test]
    fn errors_handed_to_plugins_are_redacted() {
        let redactor = store().redactor();
        let error = redact_error(
            &redactor,
            PluginError::denied("http", "GET https://h/s3cr3t-value", "grant s3cr3t-value"),
        );
        assert_eq!(
            error.describe(),
            "http denied: GET https://h/[REDACTED]; grant [REDACTED]"
        );
        let error = redact_error(
            &redactor,
            PluginError::Transient("s3cr3t-value down".into()),
        );
        assert_eq!(error.describe(), "[REDACTED] down (transient)");
    }
}
