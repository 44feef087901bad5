//! Runbooks: TOML text -> raw model (`model`) -> checked [`Runbook`]
//! (`validate`) -> a [`Plan`] bound to an environment and parameters
//! (`bind`). The engine only ever sees a `Plan`.

pub mod bind;
pub mod code;
pub mod model;
pub mod param_type;
pub mod validate;

use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath};
pub use crate::grant::{FsGrant, StepGrants, StepId};
use crate::runbook::model::RawPort;
use crate::template::Template;
pub use code::Code;
use regex::Regex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::schedule::Schedule;
pub use bind::{Bindings, Plan, PlannedStep, PlannedTarget, SecretSource};
pub use model::RawPolicy as Policy;
pub use param_type::ParamType;

/// A runbook whose shape, names and references have been checked.
#[derive(Debug)]
pub struct Runbook {
    /// The file it came from.
    pub source: Arc<Source>,
    /// `runbook.name`.
    pub name: String,
    /// `runbook.description`.
    pub description: Option<String>,
    /// Declared parameters, by name.
    pub params: BTreeMap<String, ParamSpec>,
    /// Environments, by name.
    pub environments: BTreeMap<String, Environment>,
    /// Plugins, by the name steps `use`.
    pub plugins: BTreeMap<String, PluginSource>,
    /// Steps in file order.
    pub steps: Vec<Step>,
    /// What a failed step does to the run, unless the step says otherwise.
    pub on_failure: Policy,
    /// `[notify]`: who hears how the run goes, and when.
    pub notify: Option<Notify>,
    /// `[state]`: the shared backend its runs, locks and records live in;
    /// `None` for `.runbook/` beside it.
    pub state: Option<StateBackend>,
    /// `[secrets.NAME]`: where the declared secrets' values come from; a
    /// secret not declared comes from the environment variable of its
    /// name.
    pub secrets: BTreeMap<String, WrittenSecret>,
}

/// A `[secrets.NAME]` as written: checked in form, its strings templates
/// that get the environment's values when a plan is bound
/// ([`bind::SecretSource`]).
#[derive(Debug, Clone)]
pub struct WrittenSecret {
    /// Where the value is kept.
    pub source: WrittenSource,
    /// Where the table is in the file.
    pub at: ValuePath,
}

/// Where a secret's value is kept, as written.
#[derive(Debug, Clone)]
pub enum WrittenSource {
    /// `from = "env"`: an environment variable of the operator's process.
    Env {
        /// The variable; `None` for the secret's own name.
        var: Option<Template>,
    },
    /// `from = "file"`: a file on the operator's machine.
    File {
        /// Relative to the runbook's folder.
        path: Template,
    },
    /// `from = "aws-secretsmanager"`: a secret of AWS Secrets Manager,
    /// read with the operator's credentials.
    AwsSecretsManager {
        /// Its name or ARN.
        id: Template,
        /// The region it is kept in.
        region: Template,
        /// A field of its JSON text, when it holds several.
        key: Option<Template>,
    },
}

impl WrittenSource {
    /// The source's name, as `from` writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            WrittenSource::Env { .. } => "env",
            WrittenSource::File { .. } => "file",
            WrittenSource::AwsSecretsManager { .. } => "aws-secretsmanager",
        }
    }

    /// Every template of the source, with the key it is written under.
    pub fn templates(&self) -> Vec<(&'static str, &Template)> {
        match self {
            WrittenSource::Env { var } => var.iter().map(|var| ("var", var)).collect(),
            WrittenSource::File { path } => vec![("path", path)],
            WrittenSource::AwsSecretsManager { id, region, key } => {
                let mut templates = vec![("id", id), ("region", region)];
                templates.extend(key.iter().map(|key| ("key", key)));
                templates
            }
        }
    }
}

/// Where `[secrets.NAME]` is in the file.
pub fn secret_path(name: &str) -> ValuePath {
    ValuePath::default().key("secrets").key(name)
}

/// `[state]`, checked: a shared backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBackend {
    /// `postgres`.
    pub backend: String,
    /// Its URL as written (`${{ env.NAME }}` and `${{ secrets.NAME }}`
    /// parts unread).
    pub url: String,
    /// How long a lock's lease lasts without renewal.
    pub lease: std::time::Duration,
}

/// The shortest lease `[state]` may set: renewed every third of it, a
/// shorter one would expire under an ordinary pause of a busy machine.
pub const MIN_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// A declared parameter.
#[derive(Debug)]
pub struct ParamSpec {
    /// What it is.
    pub description: Option<String>,
    /// Whether the run needs it.
    pub required: bool,
    /// What its values are: `--set` is parsed to it, expressions see it.
    pub kind: ParamType,
    /// Its value when not given, of its type.
    pub default: Option<serde_json::Value>,
    /// What the whole value must match (a string's only).
    pub pattern: Option<Regex>,
}

/// An environment: its variables, as JSON values, and its gates.
#[derive(Debug)]
pub struct Environment {
    /// What the environment is.
    pub description: Option<String>,
    /// `${{ vars.NAME }}` values.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Approvals every run needs before its first step.
    pub approvals: Option<Approvals>,
    /// Approvals a run started with `--emergency` needs instead.
    pub emergency_approvals: Option<Approvals>,
    /// Deploy windows and freezes.
    pub schedule: Schedule,
    /// Where AWS calls go instead of AWS (an emulator).
    pub aws_endpoint: Option<String>,
    /// The kubeconfig context for Kubernetes calls.
    pub kube_context: Option<String>,
    /// How long after a run ends `runbook rollback` may undo it without
    /// `--emergency`; `None` for any time.
    pub rollback_window: Option<std::time::Duration>,
    /// The success in another environment a run here needs first.
    pub requires: Option<Promotion>,
    /// What a failed step does to a run here, over the runbook's policy.
    pub on_failure: Option<Policy>,
}

/// A promotion requirement: a run in this environment needs a run of the
/// same runbook in [`Promotion::environment`] with the same values of
/// [`Promotion::same`] that succeeded at least [`Promotion::soaked`] and
/// at most [`Promotion::within`] ago, and was not rolled back since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The environment deployed first (`staging`).
    pub environment: String,
    /// Parameters that must have had the same values there.
    pub same: Vec<String>,
    /// How long that success must have soaked, at least (zero: any).
    pub soaked: Duration,
    /// How old that success may be, at most (`None`: any age).
    pub within: Option<Duration>,
}

/// `required` distinct approvers out of `from`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approvals {
    /// How many.
    pub required: u32,
    /// Who may approve.
    pub from: Vec<String>,
    /// The allowed_signers file, when approvals must be signed: the
    /// operator then signs the plan too, and only signatures count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signers: Option<Signers>,
}

impl Approvals {
    /// Whether approvals, and the operator, must sign.
    pub fn requires_signatures(&self) -> bool {
        self.signers.is_some()
    }
}

/// An environment's `allowed_signers` file, read when the runbook loads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signers {
    /// The path as the runbook writes it.
    pub written: String,
    /// The file, joined to the runbook's folder.
    pub path: PathBuf,
    /// Its lines.
    #[serde(skip)]
    pub allowed: crate::signature::AllowedSigners,
}

/// Where a plugin's component file is.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Absolute or relative to the current directory (already joined to the
    /// runbook's folder); for a plugin in a registry, its reference as
    /// written (the file is the one pulled into the cache).
    pub path: PathBuf,
    /// The digest the runbook pins, in lower-case hex.
    pub sha256: Option<String>,
    /// The plugin in an OCI registry, when it is kept in one.
    pub oci: Option<OciSource>,
}

/// A plugin kept in an OCI registry, pinned by its manifest's digest.
#[derive(Debug, Clone)]
pub struct OciSource {
    /// `oci://HOST/REPO[:TAG]@sha256:…`, its digest always given.
    pub reference: crate::oci::Reference,
    /// The manifest's digest, `sha256:…`.
    pub digest: String,
    /// Who must have signed it (`runbook plugin sign`), when the runbook
    /// says.
    pub signers: Option<Signers>,
}

/// A checked step.
#[derive(Debug)]
pub struct Step {
    /// Position in the file, for diagnostics.
    pub index: usize,
    /// The step's id.
    pub id: StepId,
    /// Display name.
    pub name: String,
    /// What the step does: run a plugin or wait for a person.
    pub action: Action,
    /// Steps that must finish before this one (effective: the step above
    /// when the runbook does not say).
    pub needs: Vec<StepId>,
    /// Runs only when true; without it, only when every need succeeded.
    pub condition: Option<crate::expression::Expr>,
    /// How transient failures are retried.
    pub retries: RetryPolicy,
    /// The elements the step runs once for.
    pub for_each: Option<ForEach>,
    /// Runs whatever happened before it.
    pub always: bool,
    /// Overrides the runbook's failure policy.
    pub on_failure: Option<Policy>,
    /// How long the step may take.
    pub timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_limit: u64,
    /// The plugin's parameters with their expressions parsed.
    pub with: ParamTree,
    /// What the step may touch, as written.
    pub grants: Grants,
}

/// What a step or a `[notify]` target may touch, as the runbook writes it:
/// checked, with URL prefixes still templated (the environment's values go
/// in when a plan is bound, [`crate::grant::StepGrants`]).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// URL prefixes it may call, each with its place in the file.
    pub http: Vec<(Template, ValuePath)>,
    /// Secrets it may send.
    pub secrets: Vec<String>,
    /// Folders it may read.
    pub fs_read: Vec<FsGrant>,
    /// AWS calls it may make.
    pub aws: Option<crate::grant::AwsGrant>,
    /// Kubernetes calls it may make.
    pub kube: Option<crate::grant::KubeGrant>,
    /// Programs it may run, as written (paths may name variables).
    pub command: Vec<WrittenCommandGrant>,
}

/// A `grants.command` entry as written: checked in form; its paths get the
/// environment's values and are resolved when a plan is bound
/// ([`crate::grant::CommandGrant`]).
#[derive(Debug, Clone)]
pub struct WrittenCommandGrant {
    /// The program's path.
    pub program: String,
    /// One pattern per argument.
    pub args: Vec<String>,
    /// Paths it may read.
    pub read: Vec<String>,
    /// Paths it may write.
    pub write: Vec<String>,
    /// TCP ports it may connect to, as written (rendered when the plan
    /// is bound).
    pub connect: Vec<RawPort>,
    /// Where the entry is in the file.
    pub at: ValuePath,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Runs the plugin with this `[plugins]` key.
    Plugin(String),
    /// Waits for an operator to confirm these items.
    Manual(Vec<String>),
}

/// Retries of transient failures: `attempts` tries in all, pauses growing
/// from `backoff` to at most `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (1: no retry).
    pub attempts: u32,
    /// The first pause.
    pub backoff: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1` (`attempt` starts at 1), before jitter.
    pub fn pause(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max)
    }
}

/// `for_each`: a literal list, or an expression giving one.
#[derive(Debug, Clone)]
pub enum ForEach {
    /// `for_each = ["api", "worker"]`.
    Items(Vec<serde_json::Value>),
    /// `for_each = "${{ vars.services }}"`.
    Expression(Template),
}

impl Step {
    /// The plugin this step runs, if it runs one.
    pub fn plugin(&self) -> Option<&str> {
        match &self.action {
            Action::Plugin(name) => Some(name),
            Action::Manual(_) => None,
        }
    }

    /// Where this step is in the file.
    pub fn path(&self) -> ValuePath {
        ValuePath::step(self.index)
    }
}

/// A moment of the run that `[notify]` can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Moment {
    /// The run's first process begins its steps.
    Start,
    /// A step reached a stage it announces (`log.milestone`: a canary at
    /// its next percentage).
    Stage,
    /// Every `every`, while a step waits between its rounds.
    Holding,
    /// A step failed.
    Failure,
    /// A rollback began.
    Rollback,
    /// The run stops waiting: parked, at a manual step, for a decision.
    Waiting,
    /// The run ended.
    End,
}

impl Moment {
    /// Every moment, in the order of a run.
    pub const ALL: [Moment; 7] = [
        Moment::Start,
        Moment::Stage,
        Moment::Holding,
        Moment::Failure,
        Moment::Rollback,
        Moment::Waiting,
        Moment::End,
    ];

    /// Its name in `on` and in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Moment::Start => "start",
            Moment::Stage => "stage",
            Moment::Holding => "holding",
            Moment::Failure => "failure",
            Moment::Rollback => "rollback",
            Moment::Waiting => "waiting",
            Moment::End => "end",
        }
    }

    /// The moment called `name`, if there is one.
    pub fn named(name: &str) -> Option<Moment> {
        Moment::ALL
            .into_iter()
            .find(|moment| moment.as_str() == name)
    }
}

/// `[notify]`, checked: where the run's announcements go and when.
#[derive(Debug)]
pub struct Notify {
    /// How often a step that waits between rounds is reported; `None`
    /// for no holding updates.
    pub every: Option<Duration>,
    /// The moments announced.
    pub on: std::collections::BTreeSet<Moment>,
    /// Where they go, in file order.
    pub targets: Vec<NotifyTarget>,
}

impl Notify {
    /// Whether `moment` is announced.
    pub fn announces(&self, moment: Moment) -> bool {
        self.on.contains(&moment)
    }
}

/// One `[[notify.targets]]`, checked: a plugin called with each
/// announcement, in its own sandbox with only its own grants.
#[derive(Debug)]
pub struct NotifyTarget {
    /// Position among the targets, for diagnostics.
    pub index: usize,
    /// The id its calls are journaled and audited under
    /// ([`notify_target_id`]), which no step can have.
    pub id: StepId,
    /// The `[plugins]` key it uses.
    pub plugin: String,
    /// How long one announcement may take.
    pub timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_limit: u64,
    /// The plugin's parameters with their expressions parsed.
    pub with: ParamTree,
    /// What it may touch, as written.
    pub grants: Grants,
}

impl NotifyTarget {
    /// Where this target is in the file.
    pub fn path(&self) -> ValuePath {
        notify_target_path(self.index)
    }
}

/// Where target `index` of `[notify]` is in the file.
pub fn notify_target_path(index: usize) -> ValuePath {
    ValuePath::default()
        .key("notify")
        .key("targets")
        .index(index)
}

/// The id target `index` of `[notify]` is journaled and audited under:
/// `notify.0`. A step id is an identifier (no `.`), and a `for_each`
/// element's is `ID[label]`, so no step can have it.
pub fn notify_target_id(index: usize) -> StepId {
    StepId::notify_target(index)
}

/// Whether `id` is a notification target's ([`notify_target_id`]) rather
/// than a step's.
pub fn is_notify_target(id: &str) -> bool {
    StepId(id.to_owned()).is_notify_target()
}

/// The shortest `every` of `[notify]`: updates more often than this are
/// noise in a channel people read.
pub const MIN_NOTIFY_EVERY: Duration = Duration::from_secs(60);

/// How long one announcement to one target may take, unless the target
/// says otherwise.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most elements a `for_each` may have: each becomes a step of the plan,
/// with its own journal records.
pub const MAX_FOR_EACH: usize = 1_000;

/// Longest duration a runbook may write (a step's `timeout`, a retry's
/// `backoff` and `max`): 30 days. Longer ones are typos, and would
/// overflow the clock arithmetic of deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Most tries a step's `retries.attempts` may ask for. Each try is a fresh
/// call with its own log budget, so this also bounds a step's log volume.
pub const MAX_ATTEMPTS: u32 = 10;

/// The label of a `for_each` element in its instance's id (`deploy[api]`):
/// the element itself when it is a plain name, else its position.
pub fn for_each_label(item: &serde_json::Value, position: usize) -> String {
    match item {
        serde_json::Value::String(text)
            if !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            text.clone()
        }
        _ => position.to_string(),
    }
}

/// The problem of a `for_each` of `length` elements, more than
/// [`MAX_FOR_EACH`], without its place.
pub fn for_each_too_long(step_id: &str, length: usize) -> Diagnostic {
    Code::ForEachTooLong
        .diagnostic(format!(
            "`for_each` of step `{step_id}` has {length} elements; at most {MAX_FOR_EACH} are allowed"
        ))
        .hint("split the work over several steps or runs")
}

/// Why a `for_each` list cannot run, without its place, and the position
/// of the element at fault: too long, or two elements that would run under
/// one id (the same element twice, or a name equal to another's position).
/// Linear in the list's length.
pub fn for_each_problem(
    step_id: &str,
    items: &[serde_json::Value],
) -> Option<(Diagnostic, Option<usize>)> {
    if items.len() > MAX_FOR_EACH {
        return Some((for_each_too_long(step_id, items.len()), None));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let label = for_each_label(item, position);
        if !seen.insert(label.clone()) {
            let problem = Code::ForEachRepeat
                .diagnostic(format!(
                    "`for_each` element `{}` of step `{step_id}` would run as `{step_id}[{label}]`, like an earlier one",
                    crate::template::as_text(item)
                ))
                .hint("each element runs once under its own name: remove the repeat");
            return Some((problem, Some(position)));
        }
    }
    None
}

/// Default step timeout when the runbook sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Largest memory cap a step may ask for.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Default linear-memory cap of a step.
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;

/// A step's parameters: the TOML tree with every string parsed as a template.
#[derive(Debug, Clone)]
pub enum ParamTree {
    /// A string, maybe with expressions.
    String(Template),
    /// A number, boolean or date, copied as it is.
    Scalar(serde_json::Value),
    /// An array.
    Array(Vec<ParamTree>),
    /// A table, keys in file order: each as written, and as a template
    /// when it holds an expression (`images = { "${{ item }}" = ... }`).
    Table(Vec<(String, Option<Template>, ParamTree)>),
}

impl ParamTree {
    /// Visits every template with its path relative to the tree.
    pub fn templates(&self, path: &ValuePath, visit: &mut impl FnMut(&Template, &ValuePath)) {
        match self {
            ParamTree::String(template) => visit(template, path),
            ParamTree::Scalar(_) => {}
            ParamTree::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    item.templates(&path.index(index), visit);
                }
            }
            ParamTree::Table(entries) => {
                for (key, template, value) in entries {
                    if let Some(template) = template {
                        visit(template, &path.key(key));
                    }
                    value.templates(&path.key(key), visit);
                }
            }
        }
    }
}

/// Why a runbook could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read runbook `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid runbook.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Largest runbook file read: far above any real runbook (the largest
/// shipped one is a few KiB), and it bounds what parsing and validation
/// may cost.
pub const MAX_RUNBOOK_BYTES: u64 = 1024 * 1024;

/// Reads, parses and validates a runbook file.
pub fn load(path: &Path) -> Result<Runbook, LoadError> {
    use std::io::Read;
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_RUNBOOK_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_RUNBOOK_BYTES {
        return Err(LoadError::Invalid(Diagnostics(vec![
            Code::TooLarge.diagnostic(format!(
                "runbook `{}` is larger than {} KiB",
                path.display(),
                MAX_RUNBOOK_BYTES >> 10
            ))
            .hint("a runbook this large is not written by hand: split it, or move data into the environment's files"),
        ])));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            // The text before the first bad byte is intact: point there.
            let at = error.utf8_error().valid_up_to();
            let byte = error.as_bytes()[at];
            let source = Source::new(path, String::from_utf8_lossy(error.as_bytes()).into_owned());
            return Err(LoadError::Invalid(Diagnostics(vec![
                Code::NotUtf8
                    .diagnostic(format!(
                        "the runbook is not UTF-8 text: invalid byte 0x{byte:02x}"
                    ))
                    .at_span(&source, at..at + '\u{fffd}'.len_utf8())
                    .hint("save the file as UTF-8"),
            ])));
        }
    };
    parse(Source::new(path, text)).map_err(LoadError::Invalid)
}

/// Most unknown keys reported in one pass; past them the file is not a
/// runbook with typos but something else.
const MAX_UNKNOWN_KEYS: usize = 64;

/// Parses and validates a runbook's text. Every problem is reported in one
/// pass: an unknown key is reported and left out, and the rest of the file
/// is read and checked as if it were not there.
pub fn parse(source: Arc<Source>) -> Result<Runbook, Diagnostics> {
    let diagnose = |error: &toml::de::Error| {
        let mut diagnostic = explain_toml_error(error.message().trim());
        if let Some(span) = error.span() {
            diagnostic = diagnostic.at_span(&source, span);
        }
        diagnostic
    };
    let mut table = toml::de::DeTable::parse(&source.text)
        .map_err(|error| Diagnostics(vec![diagnose(&error)]))?;
    let mut unknown = Diagnostics::default();
    let raw = loop {
        let parsed = <model::RawRunbook as serde::Deserialize>::deserialize(
            toml::de::Deserializer::from(table.clone()),
        );
        match parsed {
            Ok(raw) => break raw,
            Err(error) => {
                let diagnostic = diagnose(&error);
                let is_unknown = diagnostic.code == Some(Code::UnknownKey.name());
                unknown.push(diagnostic);
                let removed = is_unknown
                    && unknown.0.len() < MAX_UNKNOWN_KEYS
                    && error
                        .span()
                        .is_some_and(|span| remove_key(table.get_mut(), &span));
                if !removed {
                    return Err(unknown);
                }
            }
        }
    };
    match validate::validate(Arc::clone(&source), raw) {
        Ok(runbook) if unknown.is_empty() => Ok(runbook),
        Ok(_) => Err(unknown),
        Err(more) => {
            let consequences = misspelled_required(&source, &unknown);
            unknown.0.extend(more.0.into_iter().filter(|diagnostic| {
                // A step that lacks `uses` because `uses` was misspelled.
                !consequences.iter().any(|(key, header)| {
                    key == "uses"
                        && diagnostic.code == Some(Code::NoUses.name())
                        && diagnostic
                            .place
                            .as_ref()
                            .is_some_and(|place| source.line_column(place.span.start).0 == *header)
                })
            }));
            Err(unknown)
        }
    }
}

/// For each unknown key that is a misspelling of a known one (`usez` for
/// `uses`): the key meant and the line of the table it is in. Its table
/// then lacks the key meant, a consequence not worth a second error.
fn misspelled_required(source: &Source, unknown: &Diagnostics) -> Vec<(String, usize)> {
    unknown
        .0
        .iter()
        .filter_map(|diagnostic| {
            let field = diagnostic
                .message
                .strip_prefix("unknown key `")?
                .strip_suffix('`')?;
            let meant = diagnostic
                .hint
                .as_deref()?
                .strip_prefix("did you mean `")?
                .split_once('`')?
                .0;
            let start = diagnostic.place.as_ref()?.span.start;
            // The table header above the key: the nearest line that opens one.
            let (line, _) = source.line_column(start);
            let header = (1..=line)
                .rev()
                .find(|number| source.line_text(*number).trim_start().starts_with('['))?;
            (field != meant).then(|| (meant.to_owned(), header))
        })
        .collect()
}

/// Removes the entry whose key is written at `span`, in `table` or any
/// table within it; whether it was found.
fn remove_key(table: &mut toml::de::DeTable<'_>, span: &std::ops::Range<usize>) -> bool {
    let found = table.keys().find(|key| key.span() == *span).cloned();
    if let Some(key) = found {
        table.remove(&key);
        return true;
    }
    table
        .iter_mut()
        .any(|(_, value)| remove_key_in(value.get_mut(), span))
}

fn remove_key_in(value: &mut toml::de::DeValue<'_>, span: &std::ops::Range<usize>) -> bool {
    match value {
        toml::de::DeValue::Table(table) => remove_key(table, span),
        toml::de::DeValue::Array(items) => items
            .iter_mut()
            .any(|item| remove_key_in(item.get_mut(), span)),
        _ => false,
    }
}

/// Turns serde's wording into the operator's, with a hint where one helps.
fn explain_toml_error(message: &str) -> Diagnostic {
    if let Some((field, allowed)) = crate::diagnostic::parse_unknown_field(message) {
        let listed = allowed
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = match crate::diagnostic::did_you_mean(field, allowed.iter().copied()) {
            Some(suggestion) => {
                format!("did you mean `{suggestion}`? The keys allowed here are {listed}")
            }
            None if allowed.is_empty() => "remove it".to_owned(),
            None => format!("the keys allowed here are {listed}"),
        };
        return Code::UnknownKey
            .diagnostic(format!("unknown key `{field}`"))
            .hint(hint);
    }
    if message.starts_with("data did not match any variant of untagged enum RawPluginSource") {
        return Code::PluginSourceShape
            .diagnostic("a plugin is a path, `{ path = \"...\", sha256 = \"...\" }` or `{ source = \"oci://...\", allowed_signers = \"...\" }`")
            .hint("write `name = \"plugins/name.wasm\"`");
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return Code::MissingKey.diagnostic(format!("missing key {field}"));
    }
    Code::Toml.diagnostic(message)
}

/// Parses a memory size such as `64MiB`, `1GiB` or `512KiB`.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..split].parse().ok()?;
    let multiplier = match text[split..].trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runbook_larger_than_the_limit_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        let mut text = String::from("[runbook]\nname = \"huge\"\n");
        while (text.len() as u64) <= MAX_RUNBOOK_BYTES {
            text.push_str("# padding padding padding padding padding padding\n");
        }
        std::fs::write(&path, &text).unwrap();
        match load(&path) {
            Err(LoadError::Invalid(diagnostics)) => {
                assert!(diagnostics.to_string().contains("larger than 1024 KiB"))
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn memory_sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_memory("64MiB"), Some(64 << 20));
        assert_eq!(parse_memory("1GiB"), Some(1 << 30));
        assert_eq!(parse_memory("500 MB"), Some(500_000_000));
        assert_eq!(parse_memory("lots"), None);
    }
}
