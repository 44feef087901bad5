//! `runbook.lock`: each plugin's sha256 and the capabilities and interfaces
//! it was approved with, beside the runbook. `exec` refuses a plugin whose
//! bytes differ from the lock; `runbook lock` refuses a plugin update that
//! asks for more than it was locked with unless the reviewer accepts it.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The lock file's name, beside the runbook.
pub const FILE_NAME: &str = "runbook.lock";

/// What a plugin was approved with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlugin {
    /// The component file, as the runbook names it.
    pub path: String,
    /// Its sha256.
    pub sha256: String,
    /// Its version, for people.
    pub version: String,
    /// The capabilities it declares.
    pub capabilities: BTreeSet<String>,
    /// The `runbook:plugin` interfaces it imports.
    pub imports: BTreeSet<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// By the plugin's name in `[plugins]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, LockedPlugin>,
}

/// Where the lock of a runbook is.
pub fn path_for(runbook: &Path) -> PathBuf {
    runbook
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(FILE_NAME)
}

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    /// It could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a lock file.
    #[error("{path} is not a valid lock file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Lockfile {
    /// Reads the lock beside a runbook, if there is one.
    pub fn load(runbook: &Path) -> Result<Option<Lockfile>, LockfileError> {
        let path = path_for(runbook);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|error| LockfileError::Invalid {
                    path,
                    reason: error.message().to_owned(),
                }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LockfileError::Read { path, source }),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "# runbook.lock: each plugin's digest and what it was approved to do.\n# Written by `runbook lock`; review every change to it like code.\n\n{}",
            toml::to_string_pretty(self).unwrap_or_default()
        )
    }
}

/// What a plugin asks for now beyond what it was locked with.
pub fn widening(locked: &LockedPlugin, now: &LockedPlugin) -> Vec<String> {
    let mut added: Vec<String> = now
        .capabilities
        .difference(&locked.capabilities)
        .map(|capability| format!("capability `{capability}`"))
        .collect();
    added.extend(
        now.imports
            .difference(&locked.imports)
            .map(|import| format!("import `{import}`")),
    );
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(capabilities: &[&str], imports: &[&str]) -> LockedPlugin {
        LockedPlugin {
            path: "p.wasm".into(),
            sha256: "0".repeat(64),
            version: "1.0.0".into(),
            capabilities: capabilities.iter().map(|name| (*name).to_owned()).collect(),
            imports: imports.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    #[test]
    fn a_new_capability_or_import_is_a_widening() {
        let locked = plugin(&["http"], &["runbook:plugin/http@0.1.0"]);
        let now = plugin(
            &["http", "aws"],
            &["runbook:plugin/http@0.1.0", "runbook:plugin/aws@0.1.0"],
        );
        assert_eq!(
            widening(&locked, &now),
            ["capability `aws`", "import `runbook:plugin/aws@0.1.0`"]
        );
        assert!(
            widening(&now, &locked).is_empty(),
            "narrowing is not widening"
        );
    }

    #[test]
    fn an_optional_capability_becoming_required_is_a_widening() {
        let imports = &["runbook:plugin/kube@0.1.0", "runbook:plugin/http@0.1.0"];
        let locked = plugin(&["kube", "http?"], imports);
        let now = plugin(&["kube", "http"], imports);
        assert_eq!(widening(&locked, &now), ["capability `http`"]);
    }

    #[test]
    fn the_file_round_trips() {
        let mut lock = Lockfile::default();
        lock.plugins.insert(
            "smoke".into(),
            plugin(&["http"], &["runbook:plugin/http@0.1.0"]),
        );
        let text = lock.render();
        assert!(text.starts_with("# runbook.lock"));
        let parsed: Lockfile = toml::from_str(&text).unwrap();
        assert_eq!(parsed, lock);
    }
}
