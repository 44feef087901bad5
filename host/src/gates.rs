//! What must hold before a run's first step: the deploy window, and the
//! approvals of people other than the operator, bound to a fingerprint of
//! exactly what will run; where the environment names an
//! `allowed_signers` file, approvals count only as signatures that verify
//! ([`crate::signature`]), and "other than the operator" compares keys and
//! principals.

use crate::events::SignatureRecord;
use crate::journal::Approval;
use crate::runbook::{Approvals, Environment, Plan, Signers};
use crate::signature::{self, Payload, Role};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The fields the fingerprint hashes, in order: `runbook` (the whole
/// text), `environment`, each `param`, each `plugin`, each `step` with its
/// grants, each `notify` target.
fn fields(plan: &Plan, plugin_digests: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("runbook", plan.runbook.source.text.clone()),
        ("environment", plan.environment.clone().unwrap_or_default()),
    ];
    // A value as text: a string as it is (so a runbook without typed
    // parameters keeps the fingerprint it had), anything else as JSON. The
    // runbook's text, hashed above, says which type each value has.
    for (key, value) in &plan.params {
        fields.push((
            "param",
            format!("{key}={}", crate::template::as_text(value)),
        ));
    }
    for (name, digest) in plugin_digests {
        fields.push(("plugin", format!("{name}={digest}")));
    }
    let grants_of = |grants: &crate::grant::StepGrants| {
        let http: Vec<&str> = grants.http.iter().map(|grant| grant.as_str()).collect();
        let folders: Vec<&str> = grants
            .fs_read
            .iter()
            .map(|grant| grant.written.as_str())
            .collect();
        format!(
            "http={:?} secrets={:?} fs={:?}",
            http, grants.secrets, folders
        )
    };
    for planned in &plan.steps {
        fields.push((
            "step",
            format!("{} {}", planned.id, grants_of(&planned.grants)),
        ));
    }
    // Announcements call plugins too, with grants of their own: what they
    // may do is part of what is approved. (A runbook without `[notify]`
    // keeps the fingerprint it had.)
    for planned in &plan.targets {
        let plugin = &plan.target(planned).plugin;
        fields.push((
            "notify",
            format!(
                "{} uses={plugin} {}",
                planned.id,
                grants_of(&planned.grants)
            ),
        ));
    }
    fields
}

fn hash<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in fields {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.len().to_le_bytes());
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The fingerprint of what a run will do: the runbook's text, the
/// environment, the parameters, each plugin's digest (the `[notify]`
/// targets' too) and the grants of each step and each target. An approval
/// counts only for the fingerprint it was given for.
pub fn fingerprint(plan: &Plan, plugin_digests: &BTreeMap<String, String>) -> String {
    let fields = fields(plan, plugin_digests);
    hash(fields.iter().map(|(name, value)| (*name, value.as_str())))
}

/// What the fingerprint is made of, as a signed payload carries it: the
/// fields [`fingerprint`] hashes, the runbook's text as its digest
/// (`sha256:…`). Two plans' parts say what differs between them
/// ([`differences`]).
pub fn fingerprint_parts(
    plan: &Plan,
    plugin_digests: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    fields(plan, plugin_digests)
        .into_iter()
        .map(|(name, value)| {
            let value = if name == "runbook" {
                format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
            } else {
                value
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// The parts of a rollback's fingerprint ([`rollback_fingerprint`]): the
/// run's parts, then what the rollback adds.
pub fn rollback_parts(
    run_parts: &[(String, String)],
    run_fingerprint: &str,
    run_id: &str,
    steps: &[String],
) -> Vec<(String, String)> {
    let mut parts = run_parts.to_vec();
    parts.push(("rollback-of".into(), run_fingerprint.to_owned()));
    parts.push(("run".into(), run_id.to_owned()));
    parts.extend(steps.iter().map(|step| ("undo".to_owned(), step.clone())));
    parts
}

/// What differs between the parts an approval was given for and the
/// run's, one phrase each: `approved version=1.2.3, this run has
/// version=1.2.4`. A part is matched by its name and key (a parameter's
/// or plugin's name, a step's id), so a changed value reads as one change.
pub fn differences(approved: &[(String, String)], current: &[(String, String)]) -> Vec<String> {
    fn key_of(name: &str, value: &str) -> String {
        let key = match name {
            "param" | "plugin" => value.split_once('=').map_or(value, |(key, _)| key),
            "step" | "notify" => value.split_once(' ').map_or(value, |(key, _)| key),
            "undo" => value,
            _ => "",
        };
        format!("{name} {key}")
    }
    fn keyed(parts: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
        let mut keyed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in parts {
            keyed
                .entry(key_of(name, value))
                .or_default()
                .push(value.clone());
        }
        keyed
    }
    let shown = |name: &str, value: &str| match name {
        "param" | "plugin" | "step" | "notify" | "undo" => value.to_owned(),
        _ => format!("{name} {value}"),
    };
    let (approved, current) = (keyed(approved), keyed(current));
    let mut found = Vec::new();
    for key in approved
        .keys()
        .chain(current.keys().filter(|key| !approved.contains_key(*key)))
    {
        let name = key.split_once(' ').map_or(key.as_str(), |(name, _)| name);
        let before = approved.get(key).cloned().unwrap_or_default();
        let now = current.get(key).cloned().unwrap_or_default();
        if before == now {
            continue;
        }
        let list = |values: &[String]| {
            values
                .iter()
                .map(|value| shown(name, value))
                .collect::<Vec<_>>()
                .join(", ")
        };
        found.push(match (before.is_empty(), now.is_empty()) {
            (false, false) => format!("approved {}, this run has {}", list(&before), list(&now)),
            (false, true) => format!("approved {}, which this run does not have", list(&before)),
            _ => format!("this run has {}, which was not approved", list(&now)),
        });
    }
    found
}

/// The fingerprint of a rollback asked for after a run ended (`runbook
/// rollback`): the run's own fingerprint, its id and the steps to undo, in
/// order, under a distinct tag. An approval of the deploy therefore never
/// approves its rollback, nor an approval of one run's rollback another's.
pub fn rollback_fingerprint(run_fingerprint: &str, run_id: &str, steps: &[String]) -> String {
    hash(
        [("rollback-of", run_fingerprint), ("run", run_id)]
            .into_iter()
            .chain(steps.iter().map(|step| ("undo", step.as_str()))),
    )
}

/// The approvals a run needs before its first step: a run started with
/// `--emergency` needs its environment's `emergency_approvals` (its
/// ordinary `approvals` when it has none); any other run its `approvals`.
/// `exec`, `resume` and `approve` all ask here, so an approver the gate
/// would count is never refused by `approve`, and the reverse.
pub fn rule(environment: &Environment, emergency: bool) -> Option<&Approvals> {
    if emergency {
        environment
            .emergency_approvals
            .as_ref()
            .or(environment.approvals.as_ref())
    } else {
        environment.approvals.as_ref()
    }
}

/// Which approvals count, which do not and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalCount {
    /// Distinct, allowed approvers of this fingerprint (principals, where
    /// approvals are signed).
    pub valid: Vec<String>,
    /// The signatures of the approvals that count, in the order of
    /// `valid`; empty where approvals are not signed.
    pub signatures: Vec<SignatureRecord>,
    /// The operator's signature of the plan, when it holds.
    pub operator_signature: Option<SignatureRecord>,
    /// Approvals that do not count, with the reason.
    pub ignored: Vec<(String, String)>,
    /// How many are needed.
    pub required: u32,
    /// The approvals were counted without signatures (`--as`): who
    /// approved is self-declared, and every view says `unsigned`.
    pub unsigned: bool,
}

impl ApprovalCount {
    /// Whether enough people approved.
    pub fn is_met(&self) -> bool {
        self.valid.len() >= self.required as usize
    }
}

/// The run approvals are counted for.
#[derive(Debug, Clone, Copy)]
pub struct Counting<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// Its fingerprint now (its rollback's, for a rollback asked after
    /// the end).
    pub fingerprint: &'a str,
    /// What the fingerprint is made of ([`fingerprint_parts`],
    /// [`rollback_parts`]).
    pub parts: &'a [(String, String)],
    /// The operator, as the run names them.
    pub operator: &'a str,
    /// The operator's signature of the plan, as the journal recorded it.
    pub operator_signature: Option<&'a SignatureRecord>,
    /// When keys must be valid (their allowed_signers line's
    /// `valid-after` and `valid-before`).
    pub at: jiff::Timestamp,
}

/// What a signature that holds proves: who signed, with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The principal.
    pub principal: String,
    /// The key's fingerprint, `SHA256:…`.
    pub key: String,
}

/// What a recorded signature must have been given for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The fingerprint.
    pub fingerprint: &'a str,
    /// The fingerprint's parts, when known (not to `audit verify`, which
    /// loads no plugin).
    pub parts: Option<&'a [(String, String)]>,
    /// When its key must have been valid; `None` for when it was signed,
    /// as its payload says (`audit verify`, after the fact).
    pub at: Option<jiff::Timestamp>,
}

/// Checks a recorded signature: it verifies against `signers` (key,
/// principal, namespace, validity), it was made in `role` for this run and
/// this fingerprint (else it says what differs), and what the journal
/// recorded beside it (principal, key) is what was signed.
pub fn check_signature(
    signers: &signature::AllowedSigners,
    record: &SignatureRecord,
    role: Role,
    expected: &Expected<'_>,
) -> Result<Signed, String> {
    let at = match expected.at {
        Some(at) => at,
        None => Payload::parse(&record.payload)
            .ok()
            .and_then(|payload| payload.signed.parse().ok())
            .ok_or("the signed payload has no time it was signed")?,
    };
    let verified = signature::verify(signers, &record.armored, &record.payload, at)
        .map_err(|rejected| rejected.to_string())?;
    let payload = verified.payload;
    if payload.role != role {
        return Err(format!(
            "signed as {}, not as {}",
            payload.role.as_str(),
            role.as_str()
        ));
    }
    if payload.run != expected.run_id {
        return Err(format!("signed for run {}", payload.run));
    }
    if record.principal != payload.principal || record.key != verified.key {
        return Err(format!(
            "recorded as {} with key {}, but signed by {} with key {}",
            record.principal, record.key, payload.principal, verified.key
        ));
    }
    let differ = |what: &str| match expected.parts {
        Some(parts) => {
            let found = differences(&payload.parts, parts);
            if found.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {}", found.join("; "))
            }
        }
        None => what.to_owned(),
    };
    if payload.fingerprint != expected.fingerprint {
        return Err(differ(&format!(
            "given for a different plan (fingerprint {}, this run's is {})",
            short(&payload.fingerprint),
            short(expected.fingerprint)
        )));
    }
    if expected
        .parts
        .is_some_and(|parts| parts != payload.parts.as_slice())
    {
        return Err(differ("the plan it describes is not this run's"));
    }
    Ok(Signed {
        principal: payload.principal,
        key: verified.key,
    })
}

/// The first twelve characters of a fingerprint.
fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

/// Counts recorded approvals against a rule. Where the rule names an
/// `allowed_signers` file, an approval counts only when its signature
/// holds ([`check_signature`]) and its principal is among `from`, its key
/// and its principal are not the operator's (whose own signature must
/// hold first), and neither was counted already: distinct keys of distinct
/// principals. Elsewhere approvals are names (`--as`), counted unsigned.
pub fn count(rule: &Approvals, recorded: &[Approval], counting: &Counting<'_>) -> ApprovalCount {
    let mut counted = ApprovalCount {
        required: rule.required,
        unsigned: rule.signers.is_none(),
        ..ApprovalCount::default()
    };
    let Some(signers) = &rule.signers else {
        for approval in recorded {
            let who = &approval.by;
            let reason = if who == counting.operator {
                Some("the operator who started the run cannot approve it")
            } else if !rule.from.contains(who) {
                Some("not among the environment's approvers")
            } else if approval.plan_hash != counting.fingerprint {
                Some(
                    "given for a different plan (the runbook, parameters, plugins or grants changed since)",
                )
            } else if counted.valid.contains(who) {
                Some("already counted")
            } else {
                None
            };
            match reason {
                Some(reason) => counted.ignored.push((who.clone(), reason.to_owned())),
                None => counted.valid.push(who.clone()),
            }
        }
        return counted;
    };
    let expected = Expected {
        run_id: counting.run_id,
        fingerprint: counting.fingerprint,
        parts: Some(counting.parts),
        at: Some(counting.at),
    };
    // Without the operator's own signature, whose key and principal may
    // not approve, nothing can be counted.
    let operator = match counting.operator_signature {
        None => Err("the run has no operator signature".to_owned()),
        Some(record) => check_signature(&signers.allowed, record, Role::Operator, &expected)
            .map(|signed| (signed, record.clone())),
    };
    let operator = match operator {
        Ok((signed, record)) => {
            counted.operator_signature = Some(record);
            signed
        }
        Err(why) => {
            for approval in recorded {
                counted.ignored.push((
                    approval.by.clone(),
                    format!("the operator's signature of the run does not hold ({why})"),
                ));
            }
            return counted;
        }
    };
    let mut keys: Vec<String> = Vec::new();
    for approval in recorded {
        let Some(record) = &approval.signature else {
            counted.ignored.push((
                format!("{} (unsigned)", approval.by),
                format!(
                    "unsigned: approvals here must be signed with a key of {} (`runbook approve RUN --key KEY`)",
                    signers.written
                ),
            ));
            continue;
        };
        let signed = match check_signature(&signers.allowed, record, Role::Approver, &expected) {
            Ok(signed) => signed,
            Err(why) => {
                counted.ignored.push((approval.by.clone(), why));
                continue;
            }
        };
        let reason = if signed.key == operator.key {
            Some("signed with the key of the operator who started the run, who cannot approve it")
        } else if signed.principal == operator.principal {
            Some("the operator who started the run cannot approve it")
        } else if !rule.from.contains(&signed.principal) {
            Some("not among the environment's approvers")
        } else if keys.contains(&signed.key) {
            Some("already counted (the same key)")
        } else if counted.valid.contains(&signed.principal) {
            Some("already counted")
        } else {
            None
        };
        match reason {
            Some(reason) => counted
                .ignored
                .push((signed.principal.clone(), reason.to_owned())),
            None => {
                keys.push(signed.key);
                counted.valid.push(signed.principal);
                counted.signatures.push(record.clone());
            }
        }
    }
    counted
}

/// What a signature is given for.
#[derive(Debug, Clone, Copy)]
pub struct Signing<'a> {
    /// Who signs.
    pub role: Role,
    /// The run's id.
    pub run_id: &'a str,
    /// The fingerprint of its plan (of its rollback's, when one was asked
    /// after the end).
    pub fingerprint: &'a str,
    /// The fingerprint's parts.
    pub parts: &'a [(String, String)],
}

/// A refusal to sign: what is wrong, and what to do.
pub type Refusal = (String, String);

/// Signs the payload of `signing` with the key at `key` (`ssh-keygen -Y
/// sign`), as the principal `principal_of` finds for its public half in
/// `signers`, and checks the signature as [`count`] will: a key the file
/// does not list, or a private key that does not match its `.pub`, is
/// refused here rather than ignored later.
pub fn sign_plan(
    signers: &Signers,
    key: &Path,
    signing: &Signing<'_>,
    principal_of: impl FnOnce(&ssh_key::PublicKey) -> Result<String, Refusal>,
) -> Result<SignatureRecord, Refusal> {
    let public = signature::public_key_of(key).map_err(|error| {
        (
            error.to_string(),
            "pass a private key file (its `.pub` beside it), or a public key whose private half is in ssh-agent".to_owned(),
        )
    })?;
    let fingerprint = signature::fingerprint(&public);
    if signers.allowed.lines_of(public.key_data()).next().is_none() {
        return Err((
            format!(
                "key {fingerprint} ({}) is not in {}",
                key.display(),
                signers.written
            ),
            format!(
                "sign with a key that {} lists, or have `NAME {}` added to it",
                signers.written,
                public.to_openssh().unwrap_or_default()
            ),
        ));
    }
    let principal = principal_of(&public)?;
    let now = jiff::Timestamp::now();
    let payload = Payload {
        run: signing.run_id.to_owned(),
        role: signing.role,
        principal: principal.clone(),
        signed: now.to_string(),
        fingerprint: signing.fingerprint.to_owned(),
        parts: signing.parts.to_vec(),
    }
    .text();
    let armored = signature::sign(key, &payload).map_err(|error| {
        (
            error.to_string(),
            "`ssh-keygen` (OpenSSH 8.1 or later) signs; a key with a passphrase asks for it on the terminal, and a public key needs its private half in ssh-agent".to_owned(),
        )
    })?;
    let verified = signature::verify(&signers.allowed, &armored, &payload, now).map_err(|rejected| {
        (
            format!("the signature made with {} does not hold: {rejected}", key.display()),
            format!(
                "check that the private key matches {fingerprint} and that its line in {} allows `{principal}` now",
                signers.written
            ),
        )
    })?;
    Ok(SignatureRecord {
        role: signing.role.as_str().to_owned(),
        principal,
        key: verified.key,
        payload,
        armored,
    })
}

/// Whether `pattern` is a plain name rather than an OpenSSH pattern.
fn plain(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '!'])
}

/// The principal an operator signs as: their name (`$RUNBOOK_OPERATOR`,
/// else `$USER`) when the key's line allows it, else the first plain
/// principal of that line.
pub fn operator_principal(
    signers: &Signers,
    key: &ssh_key::PublicKey,
    operator: &str,
) -> Result<String, Refusal> {
    if signers.allowed.allows(key.key_data(), operator) {
        return Ok(operator.to_owned());
    }
    signers
        .allowed
        .lines_of(key.key_data())
        .flat_map(|signer| signer.principals.iter())
        .find(|principal| plain(principal))
        .cloned()
        .ok_or_else(|| {
            (
                format!(
                    "the line of {} that holds key {} names no principal `{operator}` matches",
                    signers.written,
                    signature::fingerprint(key)
                ),
                "set RUNBOOK_OPERATOR to the principal the line gives you".to_owned(),
            )
        })
}

/// The approver a key signs for: among `rule.from`, the name its line
/// in allowed_signers allows; `claimed` (`--as`) must be that name, and
/// picks one when the line allows several.
pub fn approver_principal(
    rule: &Approvals,
    signers: &Signers,
    key: &ssh_key::PublicKey,
    claimed: Option<&str>,
    emergency: bool,
) -> Result<String, Refusal> {
    let fingerprint = signature::fingerprint(key);
    let which = if emergency {
        "emergency approvers"
    } else {
        "approvers"
    };
    let allowed = signers
        .allowed
        .principals_of(key.key_data(), rule.from.iter().map(String::as_str));
    let lines: Vec<String> = signers
        .allowed
        .lines_of(key.key_data())
        .map(|signer| signer.principals.join(","))
        .collect();
    match (claimed, allowed.as_slice()) {
        (Some(name), _) if !signers.allowed.allows(key.key_data(), name) => Err((
            format!(
                "`--as {name}` disagrees with the key: {} gives key {fingerprint} to {}",
                signers.written,
                lines.join("; ")
            ),
            "leave `--as` out: the key says who approves".to_owned(),
        )),
        (Some(name), _) if !rule.from.iter().any(|from| from == name) => Err((
            format!("{name} is not among the {which} of this environment"),
            format!("{which}: {}", rule.from.join(", ")),
        )),
        (Some(name), _) => Ok(name.to_owned()),
        (None, [one]) => Ok((*one).to_owned()),
        (None, []) => Err((
            format!(
                "key {fingerprint} belongs to {} in {}, not to one of the {which} of this environment",
                lines.join("; "),
                signers.written
            ),
            format!("{which}: {}", rule.from.join(", ")),
        )),
        (None, several) => Err((
            format!(
                "key {fingerprint} may sign as {}: say which with `--as NAME`",
                several.join(", ")
            ),
            "each approval counts for one principal".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Approvals {
        Approvals {
            required: 2,
            from: vec!["alice".into(), "bob".into(), "carol".into()],
            signers: None,
        }
    }

    fn approvals(list: &[(&str, &str)]) -> Vec<Approval> {
        list.iter()
            .map(|(who, hash)| Approval {
                by: (*who).to_owned(),
                plan_hash: (*hash).to_owned(),
                signature: None,
            })
            .collect()
    }

    /// Counts unsigned approvals of run `r1` by `operator`.
    fn counted(
        rule: &Approvals,
        recorded: &[Approval],
        fingerprint: &str,
        operator: &str,
    ) -> ApprovalCount {
        count(
            rule,
            recorded,
            &Counting {
                run_id: "r1",
                fingerprint,
                parts: &[],
                operator,
                operator_signature: None,
                at: jiff::Timestamp::now(),
            },
        )
    }

    #[test]
    fn two_distinct_approvers_meet_a_two_person_rule() {
        let counted = counted(
            &rule(),
            &approvals(&[("bob", "h"), ("carol", "h")]),
            "h",
            "alice",
        );
        assert!(counted.is_met());
    }

    #[test]
    fn the_operator_cannot_approve_their_own_run() {
        let counted = counted(
            &rule(),
            &approvals(&[("alice", "h"), ("bob", "h")]),
            "h",
            "alice",
        );
        assert!(!counted.is_met());
        assert_eq!(counted.ignored[0].0, "alice");
    }

    #[test]
    fn the_same_person_twice_counts_once() {
        let counted = counted(
            &rule(),
            &approvals(&[("bob", "h"), ("bob", "h")]),
            "h",
            "alice",
        );
        assert_eq!(counted.valid, ["bob"]);
        assert!(!counted.is_met());
    }

    #[test]
    fn an_approval_of_a_changed_plan_no_longer_counts() {
        let counted = counted(
            &rule(),
            &approvals(&[("bob", "old"), ("carol", "new")]),
            "new",
            "alice",
        );
        assert_eq!(counted.valid, ["carol"]);
        assert!(counted.ignored[0].1.contains("different plan"));
    }

    #[test]
    fn an_emergency_run_is_approved_by_the_emergency_approvers() {
        let mut environment = Environment {
            description: None,
            vars: Default::default(),
            approvals: Some(rule()),
            emergency_approvals: Some(Approvals {
                required: 1,
                from: vec!["eve".into()],
                signers: None,
            }),
            schedule: Default::default(),
            aws_endpoint: None,
            kube_context: None,
            requires: None,
            rollback_window: None,
            on_failure: None,
        };
        assert_eq!(super::rule(&environment, true).unwrap().from, ["eve"]);
        assert_eq!(super::rule(&environment, false), Some(&rule()));
        environment.emergency_approvals = None;
        assert_eq!(super::rule(&environment, true), Some(&rule()));
    }

    #[test]
    fn an_approval_of_a_deploy_does_not_approve_its_rollback() {
        let steps = vec!["deploy".to_owned(), "migrate".to_owned()];
        let rollback = rollback_fingerprint("h", "run-1", &steps);
        assert_ne!(rollback, "h");
        let counted = counted(&rule(), &approvals(&[("bob", "h")]), &rollback, "alice");
        assert!(counted.valid.is_empty());
        assert_ne!(rollback, rollback_fingerprint("h", "run-2", &steps));
        assert_ne!(
            rollback,
            rollback_fingerprint("h", "run-1", &["deploy".to_owned()])
        );
        assert_eq!(rollback, rollback_fingerprint("h", "run-1", &steps));
    }

    /// `text` bound with `sets`.
    fn plan_of(text: &str, sets: Vec<(String, String)>) -> Plan {
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", text))
            .unwrap_or_else(|problems| panic!("{problems}"));
        crate::runbook::bind::bind(
            std::sync::Arc::new(runbook),
            crate::runbook::Bindings {
                sets,
                operator: "alice".into(),
                run_id: "run-1".into(),
                ..crate::runbook::Bindings::default()
            },
        )
        .unwrap_or_else(|problems| panic!("{problems}"))
    }

    #[test]
    fn typed_values_written_back_as_text_bind_to_the_same_fingerprint() {
        // `runbook resume` binds the journal's values again as `--set`
        // text: the fingerprint its approvals are bound to must not move.
        let text = "[runbook]\nname = \"r\"\n\n[params.version]\n\n[params.percentage]\ntype = \"integer\"\n\n[params.ratio]\ntype = \"number\"\n\n[params.dry_run]\ntype = \"boolean\"\n\n[params.services]\ntype = \"list\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
        let given = [
            ("version", "1.2.3"),
            ("percentage", "10"),
            ("ratio", "0.5"),
            ("dry_run", "true"),
            ("services", "api, worker"),
        ];
        let first = plan_of(
            text,
            given
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        );
        let again = plan_of(
            text,
            first
                .params
                .iter()
                .map(|(key, value)| (key.clone(), crate::template::as_text(value)))
                .collect(),
        );
        assert_eq!(first.params, again.params);
        let digests = BTreeMap::new();
        assert_eq!(fingerprint(&first, &digests), fingerprint(&again, &digests));
        let other = plan_of(text, vec![("percentage".to_owned(), "11".to_owned())]);
        assert_ne!(fingerprint(&first, &digests), fingerprint(&other, &digests));
    }

    #[test]
    fn unsigned_approvals_are_labelled_so() {
        let counted = counted(&rule(), &approvals(&[("bob", "h")]), "h", "alice");
        assert!(counted.unsigned);
        assert!(counted.signatures.is_empty());
    }

    fn part(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn a_difference_of_plans_is_said_part_by_part() {
        let approved = [
            part("runbook", "sha256:aa"),
            part("environment", "production"),
            part("param", "version=1.2.3"),
            part("param", "region=eu"),
            part("plugin", "noop=abc"),
            part("step", "deploy http=[] secrets=[] fs=[]"),
        ];
        let current = [
            part("runbook", "sha256:aa"),
            part("environment", "production"),
            part("param", "version=1.2.4"),
            part("plugin", "noop=def"),
            part("step", "deploy http=[\"https://x\"] secrets=[] fs=[]"),
            part("step", "verify http=[] secrets=[] fs=[]"),
        ];
        assert_eq!(
            differences(&approved, &current),
            [
                "approved region=eu, which this run does not have",
                "approved version=1.2.3, this run has version=1.2.4",
                "approved noop=abc, this run has noop=def",
                "approved deploy http=[] secrets=[] fs=[], this run has deploy http=[\"https://x\"] secrets=[] fs=[]",
                "this run has verify http=[] secrets=[] fs=[], which was not approved",
            ]
        );
        assert!(differences(&current, &current).is_empty());
        let other_environment = [part("environment", "staging")];
        assert_eq!(
            differences(&other_environment, &[part("environment", "production")]),
            ["approved environment staging, this run has environment production"]
        );
    }

    #[test]
    fn the_parts_of_a_plan_hash_to_its_fingerprint_and_show_the_runbook_as_a_digest() {
        let text = "[runbook]\nname = \"r\"\n\n[params.version]\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
        let plan = plan_of(text, vec![("version".to_owned(), "1.2.3".to_owned())]);
        let digests = BTreeMap::from([("noop".to_owned(), "abc".to_owned())]);
        let parts = fingerprint_parts(&plan, &digests);
        assert_eq!(parts[0].0, "runbook");
        assert!(parts[0].1.starts_with("sha256:"), "{parts:?}");
        assert!(parts.contains(&part("param", "version=1.2.3")), "{parts:?}");
        assert!(parts.contains(&part("plugin", "noop=abc")), "{parts:?}");
        let rollback = rollback_parts(&parts, "h", "run-1", &["a".to_owned()]);
        assert_eq!(rollback.last(), Some(&part("undo", "a")));
    }

    #[test]
    fn strangers_do_not_count() {
        let counted = counted(&rule(), &approvals(&[("mallory", "h")]), "h", "alice");
        assert!(counted.valid.is_empty());
    }
}
