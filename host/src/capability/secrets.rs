//! Sealed secrets: values stay on the host. Plugins hold handles
//! (`@@runbook-secret/NAME/NONCE@@`); the HTTP capability swaps a handle for
//! its value only on a granted request, and the [`Redactor`] scrubs values
//! from everything the runner writes or gives back to a guest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

const PREFIX: &str = "@@runbook-secret/";
const SUFFIX: &str = "@@";
/// What a secret's value is replaced with in logs, events and responses.
pub const REDACTED: &str = "[REDACTED]";

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
    /// The process environment lacks the variable.
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
    /// Reads each named secret from the process environment.
    pub fn from_env(names: impl IntoIterator<Item = String>) -> Result<Self, Vec<SecretError>> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            match std::env::var(&name) {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(_) => missing.push(SecretError::Missing(name)),
            }
        }
        if missing.is_empty() {
            Ok(Self::new(values))
        } else {
            Err(missing)
        }
    }

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

/// Replaces secret values with `[REDACTED]`, including their JSON-escaped
/// forms, so that no log, event, error or output shows one.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Redactor({} values)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for these values; empty values are ignored.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut needles = Vec::new();
        for value in values.into_iter().filter(|value| !value.is_empty()) {
            let escaped = serde_json::to_string(&value).unwrap_or_default();
            let escaped = escaped.trim_matches('"').to_owned();
            if escaped != value {
                needles.push(escaped);
            }
            needles.push(value);
        }
        // Longest first, so that a value containing another is replaced whole.
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Redactor {
            needles: Arc::new(needles),
        }
    }

    /// The text with every secret value replaced.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut result = Cow::Borrowed(text);
        for needle in self.needles.iter() {
            if result.contains(needle.as_str()) {
                result = Cow::Owned(result.replace(needle.as_str(), REDACTED));
            }
        }
        result
    }

    /// The bytes with every secret value replaced.
    pub fn apply_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut result = bytes;
        for needle in self.needles.iter() {
            let needle = needle.as_bytes();
            if needle.len() > result.len() {
                continue;
            }
            if result.windows(needle.len()).any(|window| window == needle) {
                let mut replaced = Vec::with_capacity(result.len());
                let mut index = 0;
                while index < result.len() {
                    if result[index..].starts_with(needle) {
                        replaced.extend_from_slice(REDACTED.as_bytes());
                        index += needle.len();
                    } else {
                        replaced.push(result[index]);
                        index += 1;
                    }
                }
                result = replaced;
            }
        }
        result
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }
}

/// `secrets.handle(name)`: the handle of a secret the step is granted.
pub fn handle(
    context: &super::StepContext,
    name: &str,
) -> Result<String, crate::plugin::bindings::PluginError> {
    use crate::events::{Decision, EventKind};
    let granted = context.grants.secrets.iter().any(|grant| grant == name);
    let known = context.secrets.contains(name);
    if granted && known {
        return Ok(context.secrets.handle(name));
    }
    context.emit(EventKind::SecretUsed {
        secret: name.to_owned(),
        destination: "handle".to_owned(),
        decision: Decision::Denied,
    });
    Err(crate::plugin::bindings::PluginError::denied(
        "secrets",
        format!("handle of secret `{name}`"),
        format!(
            "secret not granted to step `{}`; if intended, add `grants.secrets = [\"{name}\"]` to the step",
            context.step_id
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
