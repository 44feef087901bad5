//! A plugin kept in an OCI registry, made a file before it loads: its
//! signatures verified against the runbook's `allowed_signers` for it
//! (when it names one) before anything of it is pulled, then its manifest
//! and component pulled by digest into the cache, where later runs find
//! them without asking the registry.

use crate::diagnostic::Diagnostic;
use crate::oci::{self, Client, OciError, Pulled};
use crate::runbook::OciSource;
use std::path::Path;

/// The component file of `source` (from the cache, or pulled into it) and
/// its sha256, to load it pinned to; or why not, in words naming the
/// plugin, the digest and what is missing.
pub(super) async fn pull(
    cache: &Path,
    name: &str,
    source: &OciSource,
) -> Result<Pulled, Diagnostic> {
    let reference = source.reference.to_string();
    let cached = oci::cached_plugin(cache, &source.digest);
    let mut client = None;
    if let Some(signers) = &source.signers
        && !signed_in_cache(cache, source, signers)
    {
        let registry = new_client(name, source)?;
        verify(cache, name, source, signers, &registry).await?;
        client = Some(registry);
    }
    if let Some(cached) = cached {
        return Ok(cached);
    }
    let client = match client {
        Some(client) => client,
        None => new_client(name, source)?,
    };
    client
        .pull_plugin(&source.digest, cache)
        .await
        .map_err(|error| refusal(name, &reference, cache, &error))
}

/// Whether a signature kept in the cache verifies against `signers` now (a
/// signature over a digest stays what it is; whether its key is trusted is
/// asked of the file every time).
fn signed_in_cache(cache: &Path, source: &OciSource, signers: &crate::runbook::Signers) -> bool {
    let now = jiff::Timestamp::now();
    oci::cached_signatures(cache, &source.digest)
        .iter()
        .any(|armored| {
            crate::signature::verify_plugin(&signers.allowed, armored, &source.digest, now).is_ok()
        })
}

fn new_client(name: &str, source: &OciSource) -> Result<Client, Diagnostic> {
    Client::new(&source.reference, "pull", false)
        .map_err(|error| Diagnostic::new(format!("plugin `{name}`: {error}")))
}

/// Some signature the registry holds for the plugin verifies against
/// `signers`; those that do are kept in the cache.
async fn verify(
    cache: &Path,
    name: &str,
    source: &OciSource,
    signers: &crate::runbook::Signers,
    client: &Client,
) -> Result<(), Diagnostic> {
    let now = jiff::Timestamp::now();
    let reference = source.reference.to_string();
    let found = client
        .signatures(&source.digest)
        .await
        .map_err(|error| refusal(name, &reference, cache, &error))?;
    let sign_hint = format!(
        "sign it with a key that {} lists: `runbook plugin sign {reference} --key ~/.ssh/id_ed25519`; `runbook plugin verify {reference} --allowed-signers {}` shows what the registry holds",
        signers.written,
        signers.path.display()
    );
    if found.is_empty() {
        return Err(Diagnostic::new(format!(
            "plugin `{name}` ({reference}) is not signed: the registry holds no signature for {} (tag `{}`), and the runbook trusts it only signed by a key in {}",
            source.digest,
            oci::signature_tag(&source.digest),
            signers.written
        ))
        .hint(sign_hint));
    }
    let mut reasons = Vec::new();
    let mut good = Vec::new();
    for armored in &found {
        match crate::signature::verify_plugin(&signers.allowed, armored, &source.digest, now) {
            Ok(_) => good.push(armored.clone()),
            Err(rejected) => reasons.push(rejected.to_string()),
        }
    }
    if good.is_empty() {
        reasons.sort();
        reasons.dedup();
        return Err(Diagnostic::new(format!(
            "plugin `{name}` ({reference}) is not signed by a key that {} trusts: {} signature{} of {} found, none verifies ({})",
            signers.written,
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            source.digest,
            reasons.join("; ")
        ))
        .hint(sign_hint));
    }
    oci::cache_signatures(cache, &source.digest, &good);
    Ok(())
}

/// An error of the registry as a refusal of the plugin.
fn refusal(name: &str, reference: &str, cache: &Path, error: &OciError) -> Diagnostic {
    let hint = match error {
        OciError::Tampered { .. } | OciError::NotAPlugin(_) => format!(
            "the registry does not hold the plugin the runbook pins; push it again (`runbook plugin push FILE {reference}`), pin the digest it prints, and find out who changed the registry"
        ),
        OciError::NotFound { .. } => "push it (`runbook plugin push FILE oci://…`) and pin the digest `push` prints".to_owned(),
        OciError::Unreachable { .. } => format!(
            "a plugin pulled once is kept in {} and needs no registry again; is the registry up, and reachable from here?",
            cache.join("oci").display()
        ),
        OciError::Unauthorized { .. } => {
            "set RUNBOOK_REGISTRY_USER and RUNBOOK_REGISTRY_PASSWORD, or `docker login` the registry".to_owned()
        }
        OciError::Status { .. } | OciError::TooLarge { .. } | OciError::Cache { .. } => {
            "try again; if it persists, pull it by hand to see what the registry answers".to_owned()
        }
    };
    Diagnostic::new(format!("plugin `{name}`: cannot pull {reference}: {error}")).hint(hint)
}
