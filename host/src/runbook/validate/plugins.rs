//! `[plugins]`: where each plugin's component is, joined to the runbook's
//! folder, and its pinned digest's form; for a plugin in an OCI registry,
//! its reference (pinned by digest) and the `allowed_signers` file that
//! says who must have signed it. Whether the file exists and matches, and
//! whether the registry holds the plugin, is checked when the plugins load.

use super::environments::signers;
use crate::diagnostic::{Diagnostics, Source, ValuePath, relative_to};
use crate::oci::Reference;
use crate::runbook::model::RawPluginSource;
use crate::runbook::{Code, OciSource, PluginSource};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Checks every plugin, in name order.
pub(super) fn validate_plugins(
    source: &Arc<Source>,
    raw: BTreeMap<String, RawPluginSource>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, PluginSource> {
    raw.into_iter()
        .map(|(name, plugin)| {
            let at = ValuePath::default().key("plugins").key(&name);
            let (path, sha256) = match plugin {
                RawPluginSource::Path(path) if path.starts_with("oci://") => {
                    let plugin = oci(source, &name, &path, None, (&at, &at), problems);
                    return (name, plugin);
                }
                RawPluginSource::Oci(raw) => {
                    let plugin = oci(
                        source,
                        &name,
                        &raw.source,
                        raw.allowed_signers.as_deref(),
                        (&at.key("source"), &at.key("allowed_signers")),
                        problems,
                    );
                    return (name, plugin);
                }
                RawPluginSource::Path(path) => (path, None),
                RawPluginSource::Pinned(pinned) => (pinned.path, pinned.sha256),
            };
            if let Some(digest) = &sha256
                && !is_sha256(digest)
            {
                problems.push(
                    Code::MalformedSha256
                        .diagnostic(format!("plugin `{name}` has a malformed sha256"))
                        .at(source, &at.key("sha256"))
                        .hint("a sha256 is 64 hex digits; `runbook plugin inspect FILE` prints it"),
                );
            }
            let plugin = PluginSource {
                path: relative_to(&source.path, &path),
                sha256: sha256.map(|digest| digest.to_ascii_lowercase()),
                oci: None,
            };
            (name, plugin)
        })
        .collect()
}

/// A plugin in an OCI registry: its reference read, a digest required (a
/// tag can be moved to other bytes; the digest cannot), and its
/// `allowed_signers` file read.
fn oci(
    source: &Arc<Source>,
    name: &str,
    written: &str,
    allowed_signers: Option<&str>,
    (at, signers_at): (&ValuePath, &ValuePath),
    problems: &mut Diagnostics,
) -> PluginSource {
    let signers =
        allowed_signers.and_then(|written| signers(source, signers_at, written, problems));
    let oci = match Reference::parse(written) {
        Err(why) => {
            problems.push(
                Code::OciReference
                    .diagnostic(format!("plugin `{name}`: `{written}` is not a registry reference: {why}"))
                    .at(source, at)
                    .hint("write `oci://HOST[:PORT]/REPOSITORY:TAG@sha256:DIGEST`, as `runbook plugin push` prints it"),
            );
            None
        }
        Ok(reference) => match reference.digest.clone() {
            None => {
                problems.push(
                    Code::OciUnpinned
                        .diagnostic(format!(
                            "plugin `{name}` names `{reference}` by its tag, without a digest"
                        ))
                        .at(source, at)
                        .hint(format!(
                            "a tag can be moved to other bytes: pin the manifest's digest, `{reference}@sha256:…`, as `runbook plugin push` printed it"
                        )),
                );
                None
            }
            Some(digest) => Some(OciSource {
                reference,
                digest,
                signers,
            }),
        },
    };
    PluginSource {
        path: PathBuf::from(written),
        sha256: None,
        oci,
    }
}

/// Whether `digest` is a sha256 in hex, in either case.
fn is_sha256(digest: &str) -> bool {
    digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, raw};

    #[test]
    fn paths_are_joined_to_the_runbooks_folder_and_digests_lowered() {
        let digest = "AB".repeat(32);
        let text = format!(
            "plain = \"plugins/noop.wasm\"\npinned = {{ path = \"/opt/p.wasm\", sha256 = \"{digest}\" }}\nshort = {{ path = \"s.wasm\", sha256 = \"ab\" }}\nhexless = {{ path = \"h.wasm\", sha256 = \"{}\" }}\n",
            "g".repeat(64)
        );
        let source = Source::new("ops/deploy.toml", text.as_str());
        let mut problems = Diagnostics::default();
        let plugins = validate_plugins(&source, raw(&text), &mut problems);
        assert_eq!(
            plugins["plain"].path,
            std::path::Path::new("ops/plugins/noop.wasm")
        );
        assert_eq!(plugins["pinned"].path, std::path::Path::new("/opt/p.wasm"));
        assert_eq!(plugins["pinned"].sha256, Some("ab".repeat(32)));
        assert_eq!(codes(&problems), ["MalformedSha256", "MalformedSha256"]);
    }

    #[test]
    fn a_plugin_in_a_registry_is_pinned_by_digest() {
        let digest = "CD".repeat(32);
        let text = format!(
            "pinned = \"oci://127.0.0.1:5000/team/noop:1.0@sha256:{digest}\"\ntable = {{ source = \"oci://registry.example.com/noop@sha256:{digest}\" }}\ntagged = \"oci://127.0.0.1:5000/team/noop:1.0\"\nbroken = {{ source = \"oci://127.0.0.1:5000/Team\" }}\n"
        );
        let source = Source::new("ops/deploy.toml", text.as_str());
        let mut problems = Diagnostics::default();
        let plugins = validate_plugins(&source, raw(&text), &mut problems);
        let pinned = plugins["pinned"].oci.as_ref().unwrap();
        assert_eq!(pinned.digest, format!("sha256:{}", "cd".repeat(32)));
        assert_eq!(pinned.reference.repository, "team/noop");
        assert!(pinned.signers.is_none());
        assert_eq!(
            plugins["table"].oci.as_ref().unwrap().reference.registry,
            "registry.example.com"
        );
        assert!(plugins["tagged"].oci.is_none());
        assert_eq!(codes(&problems), ["OciReference", "OciUnpinned"]);
    }
}
