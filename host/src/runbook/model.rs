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
    /// `[plugins]`: name -> component file, or plugin in an OCI registry.
    #[serde(default)]
    pub plugins: BTreeMap<String, RawPluginSource>,
    /// `[[steps]]`, in order.
    #[serde(default)]
    pub steps: Vec<RawStep>,
    /// `[notify]`: who hears how the run goes, and when.
    #[serde(default)]
    pub notify: Option<RawNotify>,
    /// `[state]`: where the runbook's runs, locks and records live.
    #[serde(default)]
    pub state: Option<RawState>,
    /// `[secrets.NAME]`: where each secret's value comes from; a secret
    /// not declared comes from the environment variable of its name.
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecret>,
}

/// `[state]`: `backend = "postgres"`, `url = "${{ env.RUNBOOK_STATE_URL }}"`,
/// `lease = "30s"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `local` (the default: `.runbook/` beside the runbook) or `postgres`.
    pub backend: String,
    /// The backend's URL; `${{ env.NAME }}` and `${{ secrets.NAME }}`
    /// parts are read from the operator's environment.
    #[serde(default)]
    pub url: Option<String>,
    /// How long a lock's lease lasts without renewal.
    #[serde(default)]
    pub lease: Option<String>,
}

/// `[secrets.NAME]`: `from = "env"` (the default, with `var`), `"file"`
/// (with `path`) or `"aws-secretsmanager"` (with `id`, `region` and
/// `key`). Which keys go with which source is checked in `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Where the value is kept: `env`, `file` or `aws-secretsmanager`.
    #[serde(default)]
    pub from: Option<String>,
    /// `env`: the variable, when not the secret's own name.
    #[serde(default)]
    pub var: Option<String>,
    /// `file`: the file, relative to the runbook's folder.
    #[serde(default)]
    pub path: Option<String>,
    /// `aws-secretsmanager`: the secret's name or ARN.
    #[serde(default)]
    pub id: Option<String>,
    /// `aws-secretsmanager`: the region it is kept in.
    #[serde(default)]
    pub region: Option<String>,
    /// `aws-secretsmanager`: a field of the secret's JSON text, when the
    /// secret holds several (`{"username": ..., "password": ...}`).
    #[serde(default)]
    pub key: Option<String>,
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
    /// What happens when a step fails: `rollback` (default), `abort`,
    /// `continue`, `ask`.
    #[serde(default)]
    pub on_failure: Option<RawPolicy>,
}

/// What happens when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawPolicy {
    /// Stop starting steps, undo the completed ones in reverse order.
    Rollback,
    /// Stop starting steps; undo nothing.
    Abort,
    /// Carry on with the steps that do not depend on the failed one.
    Continue,
    /// Pause for a person to choose: retry the step, skip it, roll back
    /// or abort (`runbook decide`, or the terminal's prompt).
    Ask,
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
    /// `string` (the default), `integer`, `number`, `boolean` or `list`:
    /// what `--set` must give and what expressions see.
    #[serde(default, rename = "type")]
    pub kind: Option<super::ParamType>,
    /// Used when `--set` does not give it: a TOML value of its type
    /// (checked in `validate`).
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// A regular expression the whole value must match (strings only).
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
    /// Who must approve a run before its first step.
    #[serde(default)]
    pub approvals: Option<RawApprovals>,
    /// Who must approve a run started with `--emergency`.
    #[serde(default)]
    pub emergency_approvals: Option<RawApprovals>,
    /// The time zone of `windows` and `freezes` (IANA name, default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// When runs may start; none means any time.
    #[serde(default)]
    pub windows: Vec<RawWindow>,
    /// Date ranges when no run may start.
    #[serde(default)]
    pub freezes: Vec<RawFreeze>,
    /// Send AWS calls here instead of `https://SERVICE.REGION.amazonaws.com`
    /// (an emulator such as moto).
    #[serde(default)]
    pub aws_endpoint: Option<String>,
    /// The kubeconfig context Kubernetes calls use in this environment.
    #[serde(default)]
    pub kube_context: Option<String>,
    /// How long after a run ends `runbook rollback` may undo it (`"1h"`);
    /// none means any time.
    #[serde(default)]
    pub rollback_window: Option<String>,
    /// The earlier success in another environment a run here needs.
    #[serde(default)]
    pub requires: Option<RawRequires>,
    /// What a failed step does to a run in this environment, over the
    /// runbook's `on_failure` (a step's own still wins).
    #[serde(default)]
    pub on_failure: Option<RawPolicy>,
}

/// `requires = { environment = "staging", same = ["version"], soaked =
/// "24h", within = "7d" }`: a run here needs a run of this runbook in
/// `environment`, with the same values of `same`, that succeeded at least
/// `soaked` and at most `within` ago.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequires {
    /// The environment that is deployed first.
    pub environment: String,
    /// Parameters whose values must be the same as in that run.
    #[serde(default)]
    pub same: Vec<String>,
    /// How long ago that run must have succeeded, at least.
    #[serde(default)]
    pub soaked: Option<String>,
    /// How long ago that run may have succeeded, at most.
    #[serde(default)]
    pub within: Option<String>,
}

/// `approvals = { required = 2, from = ["alice", "bob", "carol"] }`, with
/// `allowed_signers = "allowed_signers"` when approvals must be signed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How many distinct approvers.
    pub required: u32,
    /// Who may approve.
    pub from: Vec<String>,
    /// The OpenSSH allowed_signers file (relative to the runbook's
    /// folder) whose keys approvals, and the operator, must sign with.
    #[serde(default)]
    pub allowed_signers: Option<String>,
}

/// `{ days = ["mon", "tue"], from = "09:00", to = "17:00" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days of the week: `mon` … `sun`.
    pub days: Vec<String>,
    /// Start time of day, `HH:MM`.
    pub from: String,
    /// End time of day, `HH:MM` (exclusive).
    pub to: String,
}

/// `{ from = "2026-12-24", to = "2026-12-26", reason = "holidays" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreeze {
    /// First day of the freeze.
    pub from: RawDate,
    /// Last day of the freeze (inclusive).
    pub to: RawDate,
    /// Shown when a run is refused.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A date written as a TOML date or as a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDate {
    /// `2026-12-24`.
    Date(toml::value::Datetime),
    /// `"2026-12-24"`.
    Text(String),
}

impl RawDate {
    /// The date as `YYYY-MM-DD` text.
    pub fn text(&self) -> String {
        match self {
            RawDate::Date(date) => date.to_string(),
            RawDate::Text(text) => text.clone(),
        }
    }
}

/// Where a plugin's component is: a path, or a path with a pinned digest.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPluginSource {
    /// `name = "path/to/plugin.wasm"`.
    Path(String),
    /// `name = { path = "...", sha256 = "..." }`.
    Pinned(RawPinnedPlugin),
    /// `[plugins.NAME] source = "oci://...@sha256:...", allowed_signers = "..."`.
    Oci(RawOciPlugin),
}

/// `{ source = "oci://HOST/REPO:TAG@sha256:...", allowed_signers = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOciPlugin {
    /// The plugin in a registry, pinned by its manifest's digest.
    pub source: String,
    /// The signers this plugin must be signed by (`runbook plugin sign`),
    /// an OpenSSH `allowed_signers` file relative to the runbook's folder.
    #[serde(default)]
    pub allowed_signers: Option<String>,
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
    /// A key of `[plugins]`; not for manual steps.
    #[serde(default)]
    pub uses: Option<String>,
    /// `plugin` (default) or `manual`.
    #[serde(default)]
    pub kind: Option<RawKind>,
    /// What the operator confirms in a manual step.
    #[serde(default)]
    pub checklist: Vec<String>,
    /// Steps that must finish first; without it, the step above.
    #[serde(default)]
    pub needs: Option<Vec<String>>,
    /// Run only when this expression is true.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// Retry transient failures.
    #[serde(default)]
    pub retries: Option<RawRetries>,
    /// Run once per element: a list, or an expression giving one.
    #[serde(default)]
    pub for_each: Option<toml::Value>,
    /// Run whatever happened before (notifications).
    #[serde(default)]
    pub always: bool,
    /// Overrides the runbook's `on_failure` for this step.
    #[serde(default)]
    pub on_failure: Option<RawPolicy>,
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

/// `kind` of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawKind {
    /// Runs a plugin.
    Plugin,
    /// Pauses for the operator to confirm a checklist.
    Manual,
}

/// `retries = { attempts = 5, backoff = "2s", max = "1m" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first pause; each next one doubles.
    #[serde(default)]
    pub backoff: Option<String>,
    /// The longest pause.
    #[serde(default)]
    pub max: Option<String>,
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
    /// Folders the step may read.
    #[serde(default)]
    pub fs: RawFsGrants,
    /// AWS services, actions and regions the step may call.
    #[serde(default)]
    pub aws: Option<RawAwsGrant>,
    /// Kubernetes namespaces, resources and verbs the step may use.
    #[serde(default)]
    pub kube: Option<RawKubeGrant>,
    /// Programs the step may run, in a sandbox.
    #[serde(default)]
    pub command: Vec<RawCommandGrant>,
}

/// `grants.command = [{ program = "/usr/bin/alembic", args = ["upgrade", "*"], read = ["./db"], connect = [5432] }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommandGrant {
    /// The program: an absolute path, or a path relative to the runbook.
    pub program: String,
    /// One pattern per argument (`*` for any text in it); a last `**`
    /// allows any further arguments.
    pub args: Vec<String>,
    /// Files and folders it may read, beyond the system's.
    #[serde(default)]
    pub read: Vec<String>,
    /// Files and folders it may write, beyond its scratch folder.
    #[serde(default)]
    pub write: Vec<String>,
    /// TCP ports it may connect to: numbers, or templates of the
    /// environment's values (`"${{ vars.db_port }}"`).
    #[serde(default)]
    pub connect: Vec<RawPort>,
}

/// A port of `grants.command.connect`: `5432`, or `"${{ vars.db_port }}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPort {
    /// A literal port.
    Number(u16),
    /// A template rendered when the plan is bound.
    Template(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPort;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a TCP port (`5432`) or a template (`\"${{ vars.db_port }}\"`)")
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<RawPort, E> {
                u16::try_from(value)
                    .map(RawPort::Number)
                    .map_err(|_| E::custom(format!("{value} is not a TCP port (0 to 65535)")))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<RawPort, E> {
                u16::try_from(value)
                    .map(RawPort::Number)
                    .map_err(|_| E::custom(format!("{value} is not a TCP port (0 to 65535)")))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawPort, E> {
                Ok(RawPort::Template(value.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `grants.kube = { namespaces = ["shop"], resources = ["apps/v1/Deployment"], verbs = ["get", "patch", "watch"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubeGrant {
    /// Namespaces; `"*"` for all and for cluster-scoped objects.
    pub namespaces: Vec<String>,
    /// `GROUP/VERSION/Kind`, or `v1/Kind` for the core group.
    pub resources: Vec<String>,
    /// `get`, `list`, `watch`, `create`, `patch`, `delete`.
    pub verbs: Vec<String>,
}

/// `grants.aws = { services = ["rds"], actions = ["CreateDBSnapshot"], regions = ["us-east-1"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsGrant {
    /// Service names as AWS signs them: `rds`, `ec2`, `dynamodb`.
    pub services: Vec<String>,
    /// Action names; a trailing `*` allows a prefix (`Describe*`).
    pub actions: Vec<String>,
    /// Regions.
    pub regions: Vec<String>,
}

/// `grants.fs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFsGrants {
    /// Folders, relative to the runbook, the step may read (not write).
    #[serde(default)]
    pub read: Vec<String>,
}

/// `[notify]`: the run's announcements, sent to each of `targets` at the
/// moments `on` names, and every `every` while a step holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// How often a holding step (one that waits between rounds) is
    /// reported, `"15m"`; none for no holding updates.
    #[serde(default)]
    pub every: Option<String>,
    /// The moments announced: `start`, `stage`, `holding`, `failure`,
    /// `rollback`, `waiting`, `end`; default all of them (`holding` only
    /// with `every`).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// `[[notify.targets]]`: where the announcements go.
    #[serde(default)]
    pub targets: Vec<RawNotifyTarget>,
}

/// `[[notify.targets]]`: a plugin called with each announcement, in its
/// own sandbox with its own grants, as a step is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifyTarget {
    /// A key of `[plugins]`.
    pub uses: String,
    /// The plugin's parameters; the host adds `text`, `status` and the
    /// run's facts unless they are set here.
    #[serde(default)]
    pub with: toml::Table,
    /// What the target may touch.
    #[serde(default)]
    pub grants: RawGrants,
    /// How long one announcement may take, `"30s"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Linear memory cap, `"64MiB"`.
    #[serde(default)]
    pub memory: Option<String>,
}
