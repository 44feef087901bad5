//! `[plugins]`: where each plugin's component is, joined to the runbook's
//! folder, and its pinned digest's form. Whether the file exists and matches
//! is checked when the plugins load.

use crate::diagnostic::{Diagnostics, Source, ValuePath, relative_to};
use crate::runbook::Code;
use crate::runbook::PluginSource;
use crate::runbook::model::RawPluginSource;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checks every plugin, in name order.
pub(super) fn validate_plugins(
    source: &Arc<Source>,
    raw: BTreeMap<String, RawPluginSource>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, PluginSource> {
    raw.into_iter()
        .map(|(name, plugin)| {
            let (path, sha256) = match plugin {
                RawPluginSource::Path(path) => (path, None),
                RawPluginSource::Pinned(pinned) => (pinned.path, pinned.sha256),
            };
            if let Some(digest) = &sha256
                && !is_sha256(digest)
            {
                problems.push(
                    Code::MalformedSha256
                        .diagnostic(format!("plugin `{name}` has a malformed sha256"))
                        .at(
                            source,
                            &ValuePath::default().key("plugins").key(&name).key("sha256"),
                        )
                        .hint("a sha256 is 64 hex digits; `runbook plugin inspect FILE` prints it"),
                );
            }
            let plugin = PluginSource {
                path: relative_to(&source.path, &path),
                sha256: sha256.map(|digest| digest.to_ascii_lowercase()),
            };
            (name, plugin)
        })
        .collect()
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
}
