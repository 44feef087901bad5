//! Signed approvals: the `allowed_signers` file (OpenSSH's format, as git
//! uses for signed commits), the canonical payload an operator and each
//! approver sign, and its verification in process with the `ssh-key`
//! crate. Pure but for [`sign`] (which runs `ssh-keygen -Y sign`) and
//! [`public_key_of`] (which reads a key file); at the bottom of the module
//! graph, it imports nothing of this crate.

use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey, SshSig};
use std::ops::Range;
use std::path::Path;

/// The SSHSIG namespace of every runbook signature: a signature made for
/// git, email or anything else never counts here, nor one of ours there.
pub const NAMESPACE: &str = "runbook-approval";

/// The SSHSIG namespace of a plugin's signature (`runbook plugin sign`):
/// an approval's signature never vouches for a plugin, nor the reverse.
pub const PLUGIN_NAMESPACE: &str = "runbook-plugin";

/// The first line of what a plugin's signer signs.
const PLUGIN_HEADER: &str = "runbook-plugin v1";

/// The first line of every payload, and its version.
const HEADER: &str = "runbook-approval v1";

/// Key types whose signatures this host verifies.
const SUPPORTED: &str = "ssh-ed25519, ecdsa-sha2-nistp256, sk-ssh-ed25519@openssh.com or sk-ecdsa-sha2-nistp256@openssh.com";

/// The key types an `allowed_signers` line may name, so that the token
/// after the principals is told apart from options.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One line of an `allowed_signers` file: who may sign with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The line in the file (1-based).
    pub line: usize,
    /// The principals' patterns (`alice`, `*@example.com`, `!mallory`).
    pub principals: Vec<String>,
    /// `namespaces="…"`: the namespaces' patterns this key may sign in,
    /// when the line limits them.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after=…`: the key signs nothing before this moment.
    pub valid_after: Option<jiff::Timestamp>,
    /// `valid-before=…`: the key signs nothing after this moment.
    pub valid_before: Option<jiff::Timestamp>,
    /// The public key.
    pub key: PublicKey,
}

impl Signer {
    /// Whether this line allows `principal` (its patterns match it and no
    /// negated one does).
    pub fn allows(&self, principal: &str) -> bool {
        matches_list(principal, &self.principals)
    }

    /// The key's fingerprint, `SHA256:…` as `ssh-keygen -l` shows it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }

    /// Why the key may not sign in `namespace` at `at`, if it may not.
    fn refuses(&self, namespace: &str, at: jiff::Timestamp) -> Option<String> {
        if let Some(namespaces) = &self.namespaces
            && !matches_list(namespace, namespaces)
        {
            return Some(format!(
                "line {} of allowed_signers limits the key to namespaces=\"{}\", without `{namespace}`",
                self.line,
                namespaces.join(",")
            ));
        }
        if let Some(after) = self.valid_after
            && at < after
        {
            return Some(format!(
                "line {} of allowed_signers makes the key valid only from {after}",
                self.line
            ));
        }
        if let Some(before) = self.valid_before
            && at > before
        {
            return Some(format!(
                "line {} of allowed_signers made the key valid only until {before}",
                self.line
            ));
        }
        None
    }
}

/// A line of an `allowed_signers` file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The line (1-based).
    pub line: usize,
    /// Its bytes in the file, without the line end.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

/// A parsed `allowed_signers` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowedSigners {
    /// Its lines that name a key, in order.
    pub signers: Vec<Signer>,
}

impl AllowedSigners {
    /// Reads the file's text: every line that names a key, or every line
    /// that cannot be used (all of them, so that one pass shows them).
    /// Empty lines and `#` comments are skipped. A `cert-authority` line is
    /// refused: each signer's own key is listed instead.
    pub fn parse(text: &str) -> Result<Self, Vec<LineProblem>> {
        let mut signers = Vec::new();
        let mut problems = Vec::new();
        let mut start = 0;
        for (index, raw) in text.split('\n').enumerate() {
            let span = start..start + raw.trim_end_matches('\r').len();
            start += raw.len() + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(index + 1, line) {
                Ok(signer) => signers.push(signer),
                Err((message, hint)) => problems.push(LineProblem {
                    line: index + 1,
                    span,
                    message,
                    hint,
                }),
            }
        }
        if problems.is_empty() {
            Ok(AllowedSigners { signers })
        } else {
            Err(problems)
        }
    }

    /// Whether some line allows `principal`.
    pub fn knows(&self, principal: &str) -> bool {
        self.signers.iter().any(|signer| signer.allows(principal))
    }

    /// The lines that hold `key`.
    pub fn lines_of<'a, 'k>(
        &'a self,
        key: &'k ssh_key::public::KeyData,
    ) -> impl Iterator<Item = &'a Signer> + use<'a, 'k> {
        self.signers
            .iter()
            .filter(move |signer| signer.key.key_data() == key)
    }

    /// Whether some line holding `key` allows `principal`.
    pub fn allows(&self, key: &ssh_key::public::KeyData, principal: &str) -> bool {
        self.lines_of(key).any(|signer| signer.allows(principal))
    }

    /// The names of `candidates` some line holding `key` allows, in their
    /// order.
    pub fn principals_of<'a>(
        &self,
        key: &ssh_key::public::KeyData,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&'a str> {
        candidates
            .into_iter()
            .filter(|name| self.allows(key, name))
            .collect()
    }
}

/// One non-comment line, trimmed.
fn parse_line(number: usize, line: &str) -> Result<Signer, (String, String)> {
    let example = "write `alice ssh-ed25519 AAAA… alice@laptop`: the principals, optional options such as namespaces=\"runbook-approval\", then the public key as in `~/.ssh/id_ed25519.pub`";
    let (principals, rest) = field(line);
    let principals: Vec<String> = unquote(principals).split(',').map(str::to_owned).collect();
    if principals.iter().any(String::is_empty) {
        return Err((
            "an empty principal in allowed_signers".into(),
            example.into(),
        ));
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err((
            format!("the principals `{}` have no key", principals.join(",")),
            example.into(),
        ));
    }
    let (first, after) = field(rest);
    let (options, key_text) = if is_key_type(first) {
        ("", rest)
    } else {
        (first, after.trim_start())
    };
    let mut signer = Signer {
        line: number,
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key: PublicKey::from_openssh(
            key_text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .as_str(),
        )
        .map_err(|error| {
            let type_of = key_text.split_whitespace().next().unwrap_or_default();
            if type_of.ends_with("-cert-v01@openssh.com") {
                (
                    format!("`{type_of}` is a certificate; allowed_signers lines here name keys"),
                    "list each signer's own public key (`ssh-keygen -y -f KEY`)".into(),
                )
            } else if is_key_type(type_of) {
                (
                    format!("the `{type_of}` key cannot be read: {error}"),
                    "copy the line of the signer's `.pub` file whole".into(),
                )
            } else {
                (format!("`{type_of}` is not a key type"), example.into())
            }
        })?,
    };
    if !options.is_empty() {
        for option in split_outside_quotes(options, ',') {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_ascii_lowercase(), Some(unquote(value))),
                None => (option.to_ascii_lowercase(), None),
            };
            match (name.as_str(), value) {
                ("cert-authority", _) => {
                    return Err((
                        "cert-authority lines are not supported: an approval names one person's key".into(),
                        "list each approver's own public key with their principal instead of the certificate authority".into(),
                    ));
                }
                ("namespaces", Some(value)) => {
                    signer.namespaces = Some(value.split(',').map(str::to_owned).collect());
                }
                ("valid-after", Some(value)) => signer.valid_after = Some(timestamp(value)?),
                ("valid-before", Some(value)) => signer.valid_before = Some(timestamp(value)?),
                (name, _) => {
                    return Err((
                        format!("`{name}` is not an option of allowed_signers"),
                        "the options are namespaces=\"…\", valid-after=YYYYMMDD[HHMM[SS]][Z] and valid-before=…".into(),
                    ));
                }
            }
        }
    }
    if !verifiable(signer.key.algorithm()) {
        return Err((
            format!(
                "runbook cannot verify `{}` signatures",
                signer.key.algorithm().as_str()
            ),
            format!("use a key of type {SUPPORTED}: `ssh-keygen -t ed25519` makes one"),
        ));
    }
    Ok(signer)
}

/// Whether signatures of keys of `algorithm` are verified here.
fn verifiable(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::Ed25519
            | Algorithm::SkEd25519
            | Algorithm::SkEcdsaSha2NistP256
            | Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256
            }
    )
}

fn is_key_type(token: &str) -> bool {
    KEY_TYPES.contains(&token) || token.ends_with("-cert-v01@openssh.com")
}

/// The first field of `text` (up to whitespace outside double quotes), and
/// the rest.
fn field(text: &str) -> (&str, &str) {
    let mut quoted = false;
    for (index, character) in text.char_indices() {
        match character {
            '"' => quoted = !quoted,
            character if character.is_whitespace() && !quoted => {
                return (&text[..index], &text[index..]);
            }
            _ => {}
        }
    }
    (text, "")
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        if character == '"' {
            quoted = !quoted;
        } else if character == separator && !quoted {
            parts.push(&text[start..index]);
            start = index + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(text)
}

/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]`: UTC with `Z`, else the system's
/// time zone, as `ssh-keygen` reads them.
fn timestamp(text: &str) -> Result<jiff::Timestamp, (String, String)> {
    let wrong = || {
        (
            format!("`{text}` is not a time of allowed_signers"),
            "write YYYYMMDD or YYYYMMDDHHMM[SS], with Z for UTC (else the system's time zone)"
                .to_owned(),
        )
    };
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(digits) => (digits, true),
        None => (text, false),
    };
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(wrong());
    }
    if ![8, 12, 14].contains(&digits.len()) {
        return Err(wrong());
    }
    // A date is its midnight; a time without seconds, its first second.
    let padded = format!("{digits:0<14}");
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", &padded).map_err(|_| wrong())?;
    let zone = if utc {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::system()
    };
    civil
        .to_zoned(zone)
        .map(|zoned| zoned.timestamp())
        .map_err(|_| wrong())
}

/// Whether `name` matches an OpenSSH pattern-list: some pattern matches
/// (`*` any run of characters, `?` one), and no negated one (`!name`) does.
pub fn matches_list(name: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard(name, negated) => return false,
            Some(_) => {}
            None => matched |= wildcard(name, pattern),
        }
    }
    matched
}

fn wildcard(name: &str, pattern: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Classic backtracking over the last `*`.
    let (mut at, mut position) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while at < name.len() {
        match pattern.get(position) {
            Some('*') => {
                star = Some((position, at));
                position += 1;
            }
            Some(&character) if character == '?' || character == name[at] => {
                at += 1;
                position += 1;
            }
            _ => match star {
                Some((star_position, star_at)) => {
                    position = star_position + 1;
                    at = star_at + 1;
                    star = Some((star_position, star_at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[position..]
        .iter()
        .all(|character| *character == '*')
}

/// A key's fingerprint, `SHA256:…`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Who signs a payload: the person who starts the run (or asks for its
/// rollback), or one who approves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The operator who starts the run.
    Operator,
    /// An approver.
    Approver,
}

impl Role {
    /// The word in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
        }
    }
}

/// What a person signs: the run, their role and principal, when, the plan
/// fingerprint and the parts it was made from. Its text ([`Payload::text`])
/// is what `ssh-keygen -Y sign` signs, and what the journal keeps beside
/// the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The run's id.
    pub run: String,
    /// Who signs.
    pub role: Role,
    /// The principal, as allowed_signers names it.
    pub principal: String,
    /// When it was signed (RFC 3339), by the signer's clock.
    pub signed: String,
    /// The plan fingerprint.
    pub fingerprint: String,
    /// The fingerprint's parts: `(name, value)`, such as `("param",
    /// "version=1.2.3")`.
    pub parts: Vec<(String, String)>,
}

impl Payload {
    /// The canonical text: `runbook-approval v1`, then one `NAME VALUE`
    /// line each for `run`, `role`, `principal`, `signed`, `fingerprint`
    /// and each part in order; in a value, `\` is written `\\`, a line feed
    /// `\n` and a carriage return `\r`, so every field is one line. Each
    /// line ends with a line feed.
    pub fn text(&self) -> String {
        let mut text = format!("{HEADER}\n");
        let mut line = |name: &str, value: &str| {
            text.push_str(name);
            text.push(' ');
            text.push_str(&escape(value));
            text.push('\n');
        };
        line("run", &self.run);
        line("role", self.role.as_str());
        line("principal", &self.principal);
        line("signed", &self.signed);
        line("fingerprint", &self.fingerprint);
        for (name, value) in &self.parts {
            line(name, value);
        }
        text
    }

    /// Reads a payload's text back.
    pub fn parse(text: &str) -> Result<Payload, String> {
        let mut lines = text
            .strip_suffix('\n')
            .ok_or("the payload does not end with a line end")?
            .split('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("the payload does not begin with `{HEADER}`"));
        }
        let mut fields = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("the payload line `{line}` has no value"))?;
            fields.push((name.to_owned(), unescape(value)?));
        }
        let mut fields = fields.into_iter();
        let mut take = |expected: &str| match fields.next() {
            Some((name, value)) if name == expected => Ok(value),
            _ => Err(format!("the payload has no `{expected}` where expected")),
        };
        let run = take("run")?;
        let role = match take("role")?.as_str() {
            "operator" => Role::Operator,
            "approver" => Role::Approver,
            other => return Err(format!("the payload's role `{other}` is unknown")),
        };
        let principal = take("principal")?;
        let signed = take("signed")?;
        let fingerprint = take("fingerprint")?;
        Ok(Payload {
            run,
            role,
            principal,
            signed,
            fingerprint,
            parts: fields.collect(),
        })
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut characters = value.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err(format!("the payload value `{value}` has a bad escape")),
        }
    }
    Ok(out)
}

/// A signature that verified: the line of allowed_signers it verified
/// against, its key's fingerprint, and what was signed.
#[derive(Debug, Clone)]
pub struct Verified<'a> {
    /// The allowed_signers line.
    pub signer: &'a Signer,
    /// The key's fingerprint, `SHA256:…`.
    pub key: String,
    /// What was signed.
    pub payload: Payload,
}

/// Why a signature does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The armor is not an SSH signature.
    #[error("the signature cannot be read ({0})")]
    Unreadable(String),
    /// The signature is of another namespace.
    #[error("the signature is for namespace `{found}`, not `{expected}`")]
    Namespace {
        /// The namespace it was made in.
        found: String,
        /// The one it must be made in.
        expected: &'static str,
    },
    /// The signing key is in no line of allowed_signers.
    #[error("key {0} is not in allowed_signers")]
    UnknownKey(String),
    /// The payload that was signed cannot be read.
    #[error("the signed payload cannot be read: {0}")]
    Payload(String),
    /// No line holding the key allows the payload's principal.
    #[error("allowed_signers does not give key {key} to `{principal}`")]
    Principal {
        /// The principal the payload names.
        principal: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The key's line does not allow it now (namespaces, validity).
    #[error("{0}")]
    NotValid(String),
    /// The signature does not match the payload and key.
    #[error("the signature of key {0} does not verify: the signature or the payload was altered")]
    Invalid(String),
}

/// Verifies `armored` (what `ssh-keygen -Y sign` wrote) over
/// `payload` against `signers`: the namespace is [`NAMESPACE`], the key
/// is in a line of the file that allows the payload's principal (and, by
/// its options, signing in that namespace at `at`), and the signature is
/// the key's over exactly these bytes.
pub fn verify<'a>(
    signers: &'a AllowedSigners,
    armored: &str,
    payload: &str,
    at: jiff::Timestamp,
) -> Result<Verified<'a>, Rejected> {
    let signature = SshSig::from_pem(armored.trim())
        .map_err(|error| Rejected::Unreadable(error.to_string()))?;
    if signature.namespace() != NAMESPACE {
        return Err(Rejected::Namespace {
            found: signature.namespace().to_owned(),
            expected: NAMESPACE,
        });
    }
    let key = signature
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    let lines: Vec<&'a Signer> = signers.lines_of(signature.public_key()).collect();
    if lines.is_empty() {
        return Err(Rejected::UnknownKey(key));
    }
    let parsed = Payload::parse(payload).map_err(Rejected::Payload)?;
    let mut refusal = None;
    for signer in lines
        .into_iter()
        .filter(|signer| signer.allows(&parsed.principal))
    {
        if let Some(why) = signer.refuses(NAMESPACE, at) {
            refusal = Some(why);
            continue;
        }
        signer
            .key
            .verify(NAMESPACE, payload.as_bytes(), &signature)
            .map_err(|_| Rejected::Invalid(key.clone()))?;
        return Ok(Verified {
            signer,
            key,
            payload: parsed,
        });
    }
    Err(match refusal {
        Some(why) => Rejected::NotValid(why),
        None => Rejected::Principal {
            principal: parsed.principal,
            key,
        },
    })
}

/// What a plugin's signer signs: the manifest digest of the plugin as it
/// is stored in a registry (`sha256:…`), which fixes the manifest, hence
/// its config and its one wasm layer.
pub fn plugin_payload(manifest_digest: &str) -> String {
    format!("{PLUGIN_HEADER}\nmanifest {manifest_digest}\n")
}

/// A plugin signature that verified: the allowed_signers line and the
/// key's fingerprint.
#[derive(Debug, Clone)]
pub struct PluginVerified<'a> {
    /// The allowed_signers line that holds the key.
    pub signer: &'a Signer,
    /// The key's fingerprint, `SHA256:…`.
    pub key: String,
}

/// Verifies `armored` as a signature of the plugin whose manifest digest
/// is `manifest_digest`: made in [`PLUGIN_NAMESPACE`] over
/// [`plugin_payload`], by a key some line of `signers` holds and allows
/// (its `namespaces`, `valid-after` and `valid-before`) at `at`. A plugin
/// has no principal of its own: any principal of the key's line stands for
/// its signer.
pub fn verify_plugin<'a>(
    signers: &'a AllowedSigners,
    armored: &str,
    manifest_digest: &str,
    at: jiff::Timestamp,
) -> Result<PluginVerified<'a>, Rejected> {
    let signature = SshSig::from_pem(armored.trim())
        .map_err(|error| Rejected::Unreadable(error.to_string()))?;
    if signature.namespace() != PLUGIN_NAMESPACE {
        return Err(Rejected::Namespace {
            found: signature.namespace().to_owned(),
            expected: PLUGIN_NAMESPACE,
        });
    }
    let key = signature
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    let payload = plugin_payload(manifest_digest);
    let mut refusal = None;
    let mut known = false;
    for signer in signers.lines_of(signature.public_key()) {
        known = true;
        if let Some(why) = signer.refuses(PLUGIN_NAMESPACE, at) {
            refusal = Some(why);
            continue;
        }
        signer
            .key
            .verify(PLUGIN_NAMESPACE, payload.as_bytes(), &signature)
            .map_err(|_| Rejected::Invalid(key.clone()))?;
        return Ok(PluginVerified { signer, key });
    }
    Err(match refusal {
        Some(why) => Rejected::NotValid(why),
        None if !known => Rejected::UnknownKey(key),
        None => Rejected::Invalid(key),
    })
}

/// Why a key file cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file (or its `.pub`) cannot be read as a key.
    #[error("cannot read the key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `ssh-keygen` could not be started.
    #[error("cannot run `ssh-keygen` to sign: {0}")]
    Start(#[source] std::io::Error),
    /// `ssh-keygen -Y sign` failed.
    #[error("`ssh-keygen -Y sign` failed: {0}")]
    Failed(String),
}

/// The public half of the key at `path`: `PATH.pub` when it exists (a
/// private key's usual companion), else `path` itself read as a public key
/// (whose private half is in the ssh-agent, as git allows), else as an
/// OpenSSH private key (whose public half is stored unencrypted).
pub fn public_key_of(path: &Path) -> Result<PublicKey, SignError> {
    let failed = |reason: String| SignError::Key {
        path: path.display().to_string(),
        reason,
    };
    let companion = {
        let mut name = path.as_os_str().to_owned();
        name.push(".pub");
        std::path::PathBuf::from(name)
    };
    if let Ok(text) = std::fs::read_to_string(&companion) {
        return PublicKey::from_openssh(text.trim()).map_err(|error| failed(error.to_string()));
    }
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    if let Ok(key) = PublicKey::from_openssh(text.trim()) {
        return Ok(key);
    }
    ssh_key::PrivateKey::from_openssh(text.as_bytes())
        .map(|private| private.public_key().clone())
        .map_err(|error| {
            failed(format!(
                "neither a public key nor an OpenSSH private key ({error})"
            ))
        })
}

/// Signs `payload` with `ssh-keygen -Y sign -n runbook-approval -f KEY`
/// (a private key file, or a public key whose private half is in the
/// ssh-agent) and returns the armored signature. A key with a passphrase
/// is asked for it on the terminal, by `ssh-keygen`.
pub fn sign(key: &Path, payload: &str) -> Result<String, SignError> {
    sign_in(key, NAMESPACE, payload)
}

/// [`sign`] in `namespace` ([`NAMESPACE`] or [`PLUGIN_NAMESPACE`]).
pub fn sign_in(key: &Path, namespace: &str, payload: &str) -> Result<String, SignError> {
    use std::io::Write;
    let mut child = std::process::Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(SignError::Start)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(payload.as_bytes())
            .map_err(SignError::Start)?;
    }
    let output = child.wait_with_output().map_err(SignError::Start)?;
    let armored = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || !armored.contains("BEGIN SSH SIGNATURE") {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said
            .lines()
            .filter(|line| !line.starts_with("Signing data on standard input"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SignError::Failed(if said.is_empty() {
            format!("it exited with {}", output.status)
        } else {
            said
        }));
    }
    Ok(armored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1vrfsxBlPRCWA7kEL17MaVxGZp2yNjLIjSUX8ded6R";

    /// What ALICE's key signed, with `ssh-keygen -Y sign`.
    const PAYLOAD: &str = "runbook-approval v1\nrun r1\nrole approver\nprincipal alice\nsigned 2026-11-22T10:00:00Z\nfingerprint 00ff\nenvironment production\n";

    /// ALICE's signature of PAYLOAD in `runbook-approval`.
    const SIGNED: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgfW+t+zEGU9EJYDuQQvXsxpXEZm
nbI2MsiNJRfx153pEAAAAQcnVuYm9vay1hcHByb3ZhbAAAAAAAAAAGc2hhNTEyAAAAUwAA
AAtzc2gtZWQyNTUxOQAAAEDk1Cs7bdu22imwk4tJp9Y+9ZRuOr9ZLX0dm+AsvFzbAKCr+j
JapWRZukNbG/NTVeqtUlJjDO2tbGPA3WnZhVgK
-----END SSH SIGNATURE-----
";

    /// ALICE's signature of PAYLOAD in the namespace `file`.
    const FILE_NAMESPACE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgfW+t+zEGU9EJYDuQQvXsxpXEZm
nbI2MsiNJRfx153pEAAAAEZmlsZQAAAAAAAAAGc2hhNTEyAAAAUwAAAAtzc2gtZWQyNTUx
OQAAAEAdlMrDZ09m4FjEzloePdzsJUslOMt2/3ltXmKW8AnWdcCtbfKJ6w3QH8F2I0LdEX
w8YCRfPVw0X7D9XIUhVaYJ
-----END SSH SIGNATURE-----
";

    /// Another key.
    const CAROL: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEGV4h3hugAbmQmBwFGnigPFrTG5G54YRD8muQtENu6d carol";

    fn parsed(text: &str) -> AllowedSigners {
        AllowedSigners::parse(text).unwrap_or_else(|problems| panic!("{problems:?}"))
    }

    fn problems(text: &str) -> Vec<LineProblem> {
        AllowedSigners::parse(text).expect_err("a problem")
    }

    #[test]
    fn lines_name_principals_options_and_a_key() {
        let signers = parsed(&format!(
            "# the release managers\n\nalice,al {ALICE} alice@laptop\n\"bob\" namespaces=\"runbook-approval,file\",valid-after=20260101Z {ALICE}\n*@example.com,!mallory@example.com valid-before=\"20300101120000Z\" {ALICE}\n"
        ));
        assert_eq!(signers.signers.len(), 3);
        let first = &signers.signers[0];
        assert_eq!(first.line, 3);
        assert_eq!(first.principals, ["alice", "al"]);
        assert!(first.allows("al") && !first.allows("bob"));
        assert_eq!(
            first.fingerprint(),
            "SHA256:c+lkTqlaNUy7xmQD1cMYNCIlgUj1ml1yA0U5aQLhECU"
        );
        let second = &signers.signers[1];
        assert_eq!(second.principals, ["bob"]);
        assert_eq!(
            second.namespaces.as_deref(),
            Some(&["runbook-approval".to_owned(), "file".to_owned()][..])
        );
        assert_eq!(
            second.valid_after,
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        let third = &signers.signers[2];
        assert!(third.allows("carol@example.com"));
        assert!(!third.allows("mallory@example.com"));
        assert_eq!(
            third.valid_before,
            Some("2030-01-01T12:00:00Z".parse().unwrap())
        );
        assert!(signers.knows("carol@example.com") && !signers.knows("eve"));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_place() {
        let text = format!(
            "alice {ALICE}\nbob cert-authority {ALICE}\ncarol\ndave ssh-ed25519 AAAAnotbase64\neve frobnicate {ALICE}\nfrank valid-after=tomorrow {ALICE}\ngrace ssh-rsa-cert-v01@openssh.com AAAA\n"
        );
        let found = problems(&text);
        let lines: Vec<usize> = found.iter().map(|problem| problem.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert!(found[0].message.contains("cert-authority"), "{found:?}");
        assert!(found[1].message.contains("have no key"), "{found:?}");
        assert!(found[2].message.contains("cannot be read"), "{found:?}");
        assert!(found[3].message.contains("`frobnicate`"), "{found:?}");
        assert!(found[4].message.contains("`tomorrow`"), "{found:?}");
        assert!(found[5].message.contains("certificate"), "{found:?}");
        assert_eq!(&text[found[1].span.clone()], "carol");
    }

    #[test]
    fn keys_whose_signatures_cannot_be_verified_are_refused() {
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCwaHgAHNvKYr0Sm6xwbxD8f3Y+y3FBlMaGzfA/uzY6liEjtsOe7F9M0/K4GJdRDBD3rllGZE0DY2FQAuEXxQcNGU7BUQIGFTVG2XBmMi0BPm7e0W3k32Pr5Suho4moATJ+71ZWba51rI6eMEmDU2zOsxDytncbk3wXTSRg2bGqnQ== root@vm";
        let found = problems(&format!("alice {rsa}\n"));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("cannot verify `ssh-rsa`"),
            "{found:?}"
        );
    }

    #[test]
    fn patterns_match_as_openssh_does() {
        let list = |patterns: &[&str]| -> Vec<String> {
            patterns
                .iter()
                .map(|pattern| (*pattern).to_owned())
                .collect()
        };
        assert!(matches_list("alice", &list(&["alice"])));
        assert!(matches_list("alice@example.com", &list(&["*@example.com"])));
        assert!(matches_list("bob", &list(&["b?b"])));
        assert!(!matches_list("bob", &list(&["b?"])));
        assert!(!matches_list("mallory", &list(&["*", "!mallory"])));
        assert!(!matches_list("alice", &list(&["!bob"])));
    }

    #[test]
    fn a_payload_reads_back_as_written_whatever_its_values_hold() {
        let payload = Payload {
            run: "20261122-100000-abcdef".into(),
            role: Role::Approver,
            principal: "bob".into(),
            signed: "2026-11-22T10:00:00Z".into(),
            fingerprint: "00ff".into(),
            parts: vec![
                ("environment".into(), "production".into()),
                ("param".into(), "notes=two\nlines \\ and\r".into()),
            ],
        };
        let text = payload.text();
        assert!(
            text.starts_with(
                "runbook-approval v1\nrun 20261122-100000-abcdef\nrole approver\nprincipal bob\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("param notes=two\\nlines \\\\ and\\r\n"),
            "{text}"
        );
        assert_eq!(Payload::parse(&text), Ok(payload));
        assert!(Payload::parse("runbook-approval v1\nrun x\n").is_err());
    }

    #[test]
    fn a_signature_verifies_against_its_line_and_nothing_else() {
        let now = jiff::Timestamp::now();
        let signers = parsed(&format!("alice {ALICE}\n"));
        let verified = verify(&signers, SIGNED, PAYLOAD, now).expect("it verifies");
        assert_eq!(verified.payload.principal, "alice");
        assert_eq!(
            verified.payload.parts,
            [("environment".to_owned(), "production".to_owned())]
        );
        assert_eq!(
            verified.key,
            "SHA256:c+lkTqlaNUy7xmQD1cMYNCIlgUj1ml1yA0U5aQLhECU"
        );
        // One byte of the payload changed.
        assert_eq!(
            verify(&signers, SIGNED, &PAYLOAD.replace("00ff", "00fe"), now).unwrap_err(),
            Rejected::Invalid(verified.key.clone())
        );
        // Another namespace, another key, another principal, no armor.
        assert!(matches!(
            verify(&signers, FILE_NAMESPACE, PAYLOAD, now),
            Err(Rejected::Namespace { found, .. }) if found == "file"
        ));
        // An approval's signature never vouches for a plugin.
        assert!(matches!(
            verify_plugin(&signers, SIGNED, "sha256:00ff", now),
            Err(Rejected::Namespace { found, expected: PLUGIN_NAMESPACE }) if found == NAMESPACE
        ));
        let strangers = parsed(&format!("alice {CAROL}\n"));
        assert!(matches!(
            verify(&strangers, SIGNED, PAYLOAD, now),
            Err(Rejected::UnknownKey(_))
        ));
        let someone_else = parsed(&format!("bob {ALICE}\n"));
        assert!(matches!(
            verify(&someone_else, SIGNED, PAYLOAD, now),
            Err(Rejected::Principal { principal, .. }) if principal == "alice"
        ));
        assert!(matches!(
            verify(&signers, "not armor", PAYLOAD, now),
            Err(Rejected::Unreadable(_))
        ));
        // Its line's options.
        let file_only = parsed(&format!("alice namespaces=\"file\" {ALICE}\n"));
        assert!(matches!(
            verify(&file_only, SIGNED, PAYLOAD, now),
            Err(Rejected::NotValid(_))
        ));
        let expired = parsed(&format!("alice valid-before=20200101Z {ALICE}\n"));
        assert!(matches!(
            verify(&expired, SIGNED, PAYLOAD, now),
            Err(Rejected::NotValid(why)) if why.contains("until")
        ));
    }
}
