//! Scrubbing secret values from text: every form in which the host
//! writes a secret or may read it back. Pure, at the bottom of the module
//! graph, so that events and every sink can use it.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// What a secret's value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces secret values with `[REDACTED]` in every form the host itself
/// produces or may get back: the raw value, its JSON, URL, form and HTML
/// escapings, the spellings of a URL-secret after normalisation (host case,
/// default port), its path and query, and credentials the host builds from
/// a secret at run time (the base64 of a Basic credential, learned when it
/// is built). Clones share what was learned, so the events, the journal and
/// the responses given back to plugins all know every form.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Redactor({} forms)", self.read().len())
    }
}

impl Redactor {
    /// A redactor for these values; empty values are ignored.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let redactor = Redactor::default();
        for value in values {
            redactor.learn(&value);
        }
        redactor
    }

    /// Adds a secret, or a credential the host built from one, with all
    /// its forms; every clone of this redactor knows it from now on.
    pub fn learn(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut new: Vec<String> = Vec::new();
        for form in forms_of(value) {
            for escaped in escapings_of(&form) {
                if !escaped.is_empty() && !new.contains(&escaped) {
                    new.push(escaped);
                }
            }
        }
        let mut needles = self
            .needles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = needles.len();
        for needle in new {
            if !needles.contains(&needle) {
                needles.push(needle);
            }
        }
        if needles.len() != before {
            // Longest first, so that a value containing another is
            // replaced whole.
            needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.needles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text with every secret value replaced.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let needles = self.read();
        let mut result = Cow::Borrowed(text);
        for needle in needles.iter() {
            if result.contains(needle.as_str()) {
                result = Cow::Owned(result.replace(needle.as_str(), REDACTED));
            }
        }
        result
    }

    /// [`Redactor::apply`] ignoring ASCII case, for text that travels
    /// case-folded, such as HTTP header names.
    pub fn apply_ignoring_case(&self, text: &str) -> String {
        let needles = self.read();
        let mut result = text.to_owned();
        for needle in needles.iter() {
            let needle = needle.to_ascii_lowercase();
            let mut from = 0;
            // ASCII lower-casing keeps byte offsets, so a match in the
            // folded text is a match at the same place in the original.
            while let Some(found) = result.to_ascii_lowercase()[from..].find(&needle) {
                let start = from + found;
                result.replace_range(start..start + needle.len(), REDACTED);
                from = start + REDACTED.len();
            }
        }
        result
    }

    /// [`Redactor::apply`] in place, for owned strings.
    pub fn scrub(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.apply(text) {
            *text = redacted;
        }
    }

    /// The bytes with every secret value replaced.
    pub fn apply_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let needles = self.read();
        let mut result = bytes;
        for needle in needles.iter() {
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
        self.read().is_empty()
    }
}

/// The spellings of a secret the host may write or read back: the value,
/// and when it is an http(s) URL, the URL as the host normalises it (host
/// lower-cased, default port dropped or spelled out), its path and query,
/// and its user info. The origin alone is not secret: it is what
/// `grants.http` names.
fn forms_of(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    let trimmed = value.trim();
    if trimmed != value {
        forms.push(trimmed.to_owned());
    }
    let Ok(url) = url::Url::parse(trimmed) else {
        return forms;
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return forms;
    }
    forms.push(url.as_str().to_owned());
    if let Some(port) = url.port_or_known_default() {
        let host = url.host_str().unwrap_or_default();
        let mut spelled = format!("{}://", url.scheme());
        if !url.username().is_empty() || url.password().is_some() {
            spelled.push_str(&url[url::Position::BeforeUsername..url::Position::BeforeHost]);
        }
        spelled.push_str(&format!("{host}:{port}"));
        spelled.push_str(&url[url::Position::BeforePath..]);
        forms.push(spelled);
        // Without user info, as logged.
        forms.push(format!(
            "{}://{host}:{port}{}",
            url.scheme(),
            &url[url::Position::BeforePath..]
        ));
        forms.push(format!(
            "{}://{host}{}",
            url.scheme(),
            &url[url::Position::BeforePath..]
        ));
    }
    let rest = &url[url::Position::BeforePath..];
    if rest != "/" && !rest.is_empty() {
        forms.push(rest.to_owned());
        let path = url.path();
        if path != "/" {
            forms.push(path.to_owned());
        }
        if let Some(query) = url.query().filter(|query| !query.is_empty()) {
            forms.push(query.to_owned());
        }
    }
    if let Some(password) = url.password() {
        forms.push(password.to_owned());
        let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        forms.push(decoded.into_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The HTTP client turns user info into a Basic credential.
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = url.username();
        let password = url.password().unwrap_or_default();
        let credential = format!("{}:{}", decode(user), decode(password));
        forms.push(base64(credential.as_bytes()));
        forms.push(credential);
        forms.push(format!("{user}:{password}"));
    }
    forms
}

/// Characters left as they are by `encodeURIComponent`-style encoding.
pub(crate) const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A form and its escapings: JSON (as serde writes it, with `\/`, and
/// ASCII-only), URL percent-encoding (upper- and lower-case hex), form
/// encoding, and HTML.
fn escapings_of(form: &str) -> Vec<String> {
    let mut escaped = vec![form.to_owned()];
    let json = serde_json::to_string(form).unwrap_or_default();
    let json = json[1..json.len() - 1].to_owned();
    escaped.push(json.replace('/', "\\/"));
    let ascii: String = json
        .chars()
        .map(|character| {
            if character.is_ascii() {
                character.to_string()
            } else {
                let mut units = [0_u16; 2];
                character
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|unit| format!("\\u{unit:04x}"))
                    .collect()
            }
        })
        .collect();
    escaped.push(json);
    escaped.push(ascii);
    let percent = percent_encoding::utf8_percent_encode(form, COMPONENT).to_string();
    escaped.push(lower_hex(&percent));
    escaped.push(percent);
    escaped.push(url::form_urlencoded::byte_serialize(form.as_bytes()).collect());
    escaped.push(
        form.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;"),
    );
    escaped
}

/// `%2F` spelled `%2f`.
fn lower_hex(percent: &str) -> String {
    let mut out = String::with_capacity(percent.len());
    let mut rest = percent;
    while let Some(index) = rest.find('%') {
        out.push_str(&rest[..index]);
        let escape = rest.get(index..index + 3).unwrap_or(&rest[index..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[index + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Standard base64 with padding (RFC 4648), as `Authorization: Basic` uses.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
