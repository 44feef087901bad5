//! The runbook file as written: serde types that mirror the TOML, with unknown
//! keys rejected. Nothing here is checked beyond its shape; see `validate`.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRunbook {
    /// `[runbook]`: name and description.
    pub runbook: RawMeta,
    /// `[params.NAME]`: what the operator passes with `--set`.
    #[serde(default)]
    pub params: BTreeMap<String, RawParam>,
    /// `[environments.NAME]`: per-environment variables.
    #[serde(default)]
    pub environments: BTreeMap<String, RawEnvironment>,
    /// `[plugins]`: name -> component file.
    #[serde(default)]
    pub plugins: BTreeMap<String, RawPluginSource>,
    /// `[[steps]]`, in order.
    #[serde(default)]
    pub steps: Vec<RawStep>,
}

/// `[runbook]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    /// Short name, shown in progress and records.
    pub name: String,
    /// One line on what the runbook does.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[params.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// Shown by `--help`-like listings and errors.
    #[serde(default)]
    pub description: Option<String>,
    /// The run refuses to start without it.
    #[serde(default)]
    pub required: bool,
    /// Used when `--set` does not give it.
    #[serde(default)]
    pub default: Option<String>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// `[environments.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    /// One line on what the environment is.
    #[serde(default)]
    pub description: Option<String>,
    /// `${{ vars.NAME }}` values.
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
}

/// Where a plugin's component is: a path, or a path with a pinned digest.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPluginSource {
    /// `name = "path/to/plugin.wasm"`.
    Path(String),
    /// `name = { path = "...", sha256 = "..." }`.
    Pinned(RawPinnedPlugin),
}

/// `{ path = "...", sha256 = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPinnedPlugin {
    /// Relative to the runbook's folder.
    pub path: String,
    /// The component's sha256 in hex; loading fails if the file differs.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `[[steps]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Unique within the runbook; `${{ steps.ID.outputs.X }}` uses it.
    pub id: String,
    /// Shown in progress instead of the id.
    #[serde(default)]
    pub name: Option<String>,
    /// A key of `[plugins]`.
    pub uses: String,
    /// How long the step may take, `"2m"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Linear memory cap, `"64MiB"`.
    #[serde(default)]
    pub memory: Option<String>,
    /// The plugin's parameters.
    #[serde(default)]
    pub with: toml::Table,
    /// What the step may touch.
    #[serde(default)]
    pub grants: RawGrants,
}

/// `grants` of a step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrants {
    /// URL prefixes the step may call: `scheme://host[:port][/path]`.
    #[serde(default)]
    pub http: Vec<String>,
    /// Names of secrets the step may send.
    #[serde(default)]
    pub secrets: Vec<String>,
}
