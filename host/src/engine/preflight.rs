//! Everything checked before a step runs: the plugins load (digest, world),
//! the secrets exist, and every step's parameters fit its plugin's schema.
//! Problems are diagnostics at their place in the runbook.

use super::render::{Scope, StepOutcomes, StepOutputs, Unknown};
use crate::capability::secrets::SecretStore;
use crate::capability::{Asks, Mismatch, NeededByParam};
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::plugin::{LoadError, LoadedPlugin, PluginRuntime};
use crate::runbook::{ParamTree, Plan};
use crate::wit::PluginError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod registry;
mod secrets;

pub use secrets::{Reading, read_environment_only, read_secrets};

/// Plugins by the name steps `use`.
pub type Plugins = BTreeMap<String, Arc<LoadedPlugin>>;

/// Loads every plugin the runbook declares.
pub async fn load_plugins(runtime: &PluginRuntime, plan: &Plan) -> Result<Plugins, Diagnostics> {
    let plugins = load_runbook_plugins(runtime, &plan.runbook).await?;
    check_lock(&plan.runbook, &plugins)?;
    Ok(plugins)
}

/// The lock entry of a loaded plugin, as `runbook lock` writes it.
pub fn locked_entry(
    source_path: &str,
    plugin: &crate::plugin::LoadedPlugin,
) -> crate::lockfile::LockedPlugin {
    crate::lockfile::LockedPlugin {
        path: source_path.to_owned(),
        sha256: plugin.digest.clone(),
        version: plugin.descriptor.version.clone(),
        // Optional capabilities are locked as `name?`: making one required
        // is a widening too.
        capabilities: crate::plugin::capability_names(&plugin.descriptor)
            .into_iter()
            .collect(),
        imports: plugin
            .imports
            .iter()
            .filter(|import| import.starts_with("runbook:plugin/"))
            .cloned()
            .collect(),
    }
}

/// With a `runbook.lock` beside the runbook, every plugin must be in it
/// with the same bytes.
fn check_lock(runbook: &crate::runbook::Runbook, plugins: &Plugins) -> Result<(), Diagnostics> {
    let lock = crate::lockfile::Lockfile::load(&runbook.source.path).map_err(|error| {
        Diagnostics(vec![
            Diagnostic::new(error.to_string()).hint("fix or delete it, then `runbook lock FILE`"),
        ])
    })?;
    let Some(lock) = lock else { return Ok(()) };
    let mut problems = Diagnostics::default();
    let file = runbook.source.path.display();
    for (name, plugin) in plugins {
        let at = ValuePath::default().key("plugins").key(name);
        match lock.plugins.get(name) {
            None => problems.push(
                Diagnostic::new(format!("plugin `{name}` is not in {}", crate::lockfile::FILE_NAME))
                    .at(&runbook.source, &at)
                    .hint(format!("review it (`runbook audit {file}`), then lock it: `runbook lock {file}`")),
            ),
            Some(locked) if locked.sha256 != plugin.digest => problems.push(
                Diagnostic::new(format!(
                    "plugin `{name}` changed since it was locked: {} approved sha256 {}, the file has {}",
                    crate::lockfile::FILE_NAME, locked.sha256, plugin.digest
                ))
                .at(&runbook.source, &at)
                .hint(format!(
                    "if the new plugin is trusted, review it and run `runbook lock {file}` (wider capabilities need `--accept-new-capabilities`)"
                )),
            ),
            Some(_) => {}
        }
    }
    problems.into_result(())
}

/// Loads every plugin the runbook's steps use, without the lock check.
pub async fn load_runbook_plugins(
    runtime: &PluginRuntime,
    runbook: &crate::runbook::Runbook,
) -> Result<Plugins, Diagnostics> {
    let mut problems = Diagnostics::default();
    let mut plugins = Plugins::new();
    let targets = runbook
        .notify
        .iter()
        .flat_map(|notify| &notify.targets)
        .map(|target| target.plugin.as_str());
    let used: std::collections::BTreeSet<&str> = runbook
        .steps
        .iter()
        .filter_map(|step| step.plugin())
        .chain(targets)
        .collect();
    // Plugins no step or `[notify]` target uses are not loaded: compiling
    // them would only cost time. Those on disk are compiled together
    // first, so an empty cache costs the slowest of them, not their sum.
    let local: Vec<std::path::PathBuf> = runbook
        .plugins
        .iter()
        .filter(|(name, source)| used.contains(name.as_str()) && source.oci.is_none())
        .map(|(_, source)| source.path.clone())
        .collect();
    if local.len() > 1 {
        // Blocking, as each load's compilation is: nothing else runs yet.
        runtime.warm(&local);
    }
    for (name, source) in runbook
        .plugins
        .iter()
        .filter(|(name, _)| used.contains(name.as_str()))
    {
        let at = ValuePath::default().key("plugins").key(name);
        // A plugin in a registry is a file of the cache once pulled (or
        // found there), pinned to the digest its checked manifest names.
        let (path, sha256) = match &source.oci {
            None => (source.path.clone(), source.sha256.clone()),
            Some(oci) => match registry::pull(runtime.cache_dir(), name, oci).await {
                Ok(pulled) => (pulled.path, Some(pulled.sha256)),
                Err(problem) => {
                    problems.push(problem.at(&runbook.source, &at));
                    continue;
                }
            },
        };
        match runtime.load(&path, sha256.as_deref()).await {
            Ok(plugin) => {
                plugins.insert(name.clone(), Arc::new(plugin));
            }
            Err(error) => {
                let hint = match &error {
                    LoadError::Read { .. } => format!(
                        "the path is relative to the runbook's folder; build the plugins with `scripts/build-plugins`{}",
                        if source.path.exists() { "" } else { " (the file does not exist)" }
                    ),
                    LoadError::DigestMismatch { path, .. } if source.oci.is_some() => format!(
                        "the copy pulled into the cache was altered since; delete {} and run again to pull it afresh",
                        path.display()
                    ),
                    LoadError::DigestMismatch { actual, .. } => format!(
                        "if the new file is trusted, pin it: `sha256 = \"{actual}\"`"
                    ),
                    LoadError::Invalid { .. } => {
                        "build it as a component of a world of `wit/plugin.wit` (`step`, or a narrower one such as `step-http`; docs/plugin-authors.md), with the Rust SDK `runbook_sdk::export_step!`".into()
                    }
                    LoadError::UnknownImport { .. } => {
                        "the host provides `runbook:plugin` (0.2 and 0.1) and WASI 0.2 without `wasi:http`; docs/plugin-authors.md lists the worlds".into()
                    }
                };
                let mut message = error.to_string();
                if let LoadError::Read { source, .. } = &error {
                    message = format!("{message}: {source}");
                }
                problems.push(Diagnostic::new(message).at(&runbook.source, &at).hint(hint));
            }
        }
    }
    problems.into_result(plugins)
}

/// Refuses a step whose plugin needs a capability the runbook does not
/// grant it, or whose parameters need one of the plugin's optional
/// capabilities that it is not granted (`notify`'s `format = "email"`
/// without `grants.aws`); warns where a grant is wider than the plugin
/// asks. The warnings quote the plugin's name as it is: whoever draws
/// them passes them through the terminal filter.
pub fn check_capabilities(plan: &Plan, plugins: &Plugins) -> Result<Vec<String>, Diagnostics> {
    let mut found = Findings::default();
    let mut seen = std::collections::BTreeSet::new();
    for planned in &plan.steps {
        let step = plan.step(planned);
        if !seen.insert(step.index) {
            continue;
        }
        let Some(plugin) = step.plugin().and_then(|name| plugins.get(name)) else {
            continue;
        };
        // `retries` tries again only a transient failure: on a plugin that
        // reports none, it would look like resilience and do nothing.
        if step.retries.attempts > 1 && plugin.transient().as_deref() == Some("") {
            let source = &plan.runbook.source;
            found.warnings.push(format!(
                "warning: step `{}`: `retries` will never retry: plugin `{}` reports no failure as transient, and only transient failures are retried ({}:{})",
                step.id,
                plugin.descriptor.name,
                source.path.display(),
                source
                    .span_of(&step.path().key("retries"))
                    .map(|span| source.line_column(span.start).0)
                    .unwrap_or(0)
            ));
        }
        found.review(
            plan,
            &asks_of(plan, plugin, &step.with, planned.item.as_ref()),
            &planned.grants,
            &format!("step `{}`", step.id),
            &step.path(),
        );
    }
    // A `[notify]` target is granted what its plugin needs as a step is.
    for planned in &plan.targets {
        let target = plan.target(planned);
        let Some(plugin) = plugins.get(&target.plugin) else {
            continue;
        };
        found.review(
            plan,
            &asks_of(plan, plugin, &target.with, None),
            &planned.grants,
            &format!("notify target {}", target.index),
            &target.path(),
        );
    }
    // A declared secret that nothing uses is never read: a grant that
    // misspells it, or a declaration left behind.
    let used = plan.secret_names();
    let source = &plan.runbook.source;
    for (name, written) in &plan.runbook.secrets {
        if !used.contains(name) {
            found.warnings.push(format!(
                "warning: secret `{name}` is declared but no step or `[notify]` target uses it: it is not read ({}:{})",
                source.path.display(),
                source
                    .span_of(&written.at.key("from"))
                    .map(|span| source.line_column(span.start).0)
                    .unwrap_or(0)
            ));
        }
    }
    found.problems.into_result(found.warnings)
}

/// What `plugin` asks for where its parameters are `with` (and `item`,
/// for a `for_each` element): what it always needs and may use, and the
/// optional capabilities that the values `with` gives need, as far as
/// they are known before the run (a value computed from a step's output
/// is not, and then the call is denied if it comes to that).
pub fn asks_of<'a>(
    plan: &Plan,
    plugin: &'a LoadedPlugin,
    with: &ParamTree,
    item: Option<&serde_json::Value>,
) -> Asks<'a> {
    let mut asks = plugin.asks();
    let needed_when = plugin.needed_when();
    if needed_when.is_empty() {
        return asks;
    }
    let secrets = SecretStore::new(BTreeMap::new());
    let outputs = StepOutputs::new();
    let outcomes = StepOutcomes::new();
    let scope = Scope {
        plan,
        outputs: &outputs,
        secrets: &secrets,
        unknown: Unknown::Placeholder,
        outcomes: &outcomes,
        item,
    };
    // Parameters that do not render are reported by `check_params`.
    let Ok(params) = scope.render(with) else {
        return asks;
    };
    for needed in needed_when {
        // Only what the plugin declares it may use can be needed so.
        let Some(capability) = crate::capability::named(&needed.capability) else {
            continue;
        };
        let name = capability.name;
        if !plugin.may_use(name) || asks.needs.contains(&name) {
            continue;
        }
        let value = match params.get(&needed.param) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(_) => continue,
        };
        let needs = match &value {
            None => needed.or_absent,
            Some(text) => needed.values.iter().any(|wanted| wanted == text),
        };
        if needs {
            asks.needed_by_params.push(NeededByParam {
                capability: name,
                param: needed.param,
                value,
                grant: needed.grant,
            });
        }
    }
    asks
}

/// What [`check_capabilities`] found so far.
#[derive(Default)]
struct Findings {
    problems: Diagnostics,
    warnings: Vec<String>,
}

impl Findings {
    /// Reviews what a plugin `asks` against the `grants` of `who` (a step
    /// or a `[notify]` target), written at `path` of the runbook.
    fn review(
        &mut self,
        plan: &Plan,
        asks: &Asks<'_>,
        grants: &crate::grant::StepGrants,
        who: &str,
        path: &ValuePath,
    ) {
        let source = &plan.runbook.source;
        for finding in crate::capability::review(asks, grants) {
            let capability = crate::capability::named(finding.capability);
            match finding.mismatch {
                Mismatch::NeedsUngranted => {
                    // Needed for a parameter's value: shown at the value,
                    // with the plugin's own grant to copy when it has one.
                    let needed_by = asks.needed_by(finding.capability);
                    let at = match needed_by {
                        Some(needed) if needed.value.is_some() => {
                            path.key("with").key(needed.param.as_str())
                        }
                        _ => path.clone(),
                    };
                    let example = needed_by
                        .and_then(|needed| needed.grant.as_deref())
                        .or(capability.map(|capability| capability.example))
                        .unwrap_or_default();
                    self.problems.push(
                        Diagnostic::new(format!("{who}: {}", finding.message))
                            .at(source, &at)
                            .hint(format!("grant what it may do, for example `{example}`")),
                    );
                }
                Mismatch::WiderThanAsked => self.warnings.push(format!(
                    "warning: {who}: {} ({}:{})",
                    finding.message,
                    source.path.display(),
                    source
                        .span_of(&path.key("grants"))
                        .map(|span| source.line_column(span.start).0)
                        .unwrap_or(0)
                )),
                // Whether a component imports what it declares is the
                // plugin's affair, reported by `audit` and `inspect`.
                Mismatch::ImportedUndeclared | Mismatch::DeclaredUnimported => {}
            }
        }
    }
}

/// Asks each step's plugin, and each `[notify]` target's, whether its
/// parameters are right. Outputs of earlier steps are not known yet and
/// are checked as placeholder strings; a target's are checked with every
/// key the host adds to an announcement.
pub async fn check_params(
    runtime: &PluginRuntime,
    plan: &Plan,
    plugins: &Plugins,
    secrets: &SecretStore,
) -> Result<(), Diagnostics> {
    let mut problems = Diagnostics::default();
    let outputs = StepOutputs::new();
    let outcomes = StepOutcomes::new();
    for planned in &plan.steps {
        let step = plan.step(planned);
        let scope = Scope {
            plan,
            outputs: &outputs,
            secrets,
            unknown: Unknown::Placeholder,
            outcomes: &outcomes,
            item: planned.item.as_ref(),
        };
        let Some(plugin) = step.plugin().and_then(|name| plugins.get(name)) else {
            continue;
        };
        let with_path = step.path().key("with");
        let params = match scope.render(&step.with) {
            Ok(params) => params.to_string(),
            Err(error) => {
                problems
                    .push(Diagnostic::new(error.to_string()).at(&plan.runbook.source, &with_path));
                continue;
            }
        };
        let checked = Checked {
            who: format!("step `{}`", step.id),
            uses: step.plugin().unwrap_or_default(),
            id: planned.id.clone(),
            at: step.path(),
        };
        problems
            .0
            .extend(checked.check(runtime, plan, plugin, &params).await);
    }
    let example = super::notify::Notice::example(plan);
    for planned in &plan.targets {
        let target = plan.target(planned);
        let Some(plugin) = plugins.get(&target.plugin) else {
            continue;
        };
        let scope = Scope {
            plan,
            outputs: &outputs,
            secrets,
            unknown: Unknown::Placeholder,
            outcomes: &outcomes,
            item: None,
        };
        let mut params = match scope.render(&target.with) {
            Ok(params) => params,
            Err(error) => {
                let at = target.path().key("with");
                problems.push(Diagnostic::new(error.to_string()).at(&plan.runbook.source, &at));
                continue;
            }
        };
        super::notify::add_host_keys(&mut params, plan, &example);
        let checked = Checked {
            who: format!("notify target {}", target.index),
            uses: &target.plugin,
            id: planned.id.clone(),
            at: target.path(),
        };
        problems.0.extend(
            checked
                .check(runtime, plan, plugin, &params.to_string())
                .await,
        );
    }
    problems.into_result(())
}

/// A step, or a `[notify]` target, whose parameters its plugin checks.
struct Checked<'a> {
    /// How messages name it: ``step `deploy` ``, `notify target 0`.
    who: String,
    /// The `[plugins]` key it uses.
    uses: &'a str,
    /// The id its check runs under.
    id: crate::grant::StepId,
    /// Where it is in the runbook; its `with` and `uses` are below.
    at: ValuePath,
}

impl Checked<'_> {
    /// What the plugin's `check` finds wrong with `params`, at its place
    /// in the runbook.
    async fn check(
        &self,
        runtime: &PluginRuntime,
        plan: &Plan,
        plugin: &LoadedPlugin,
        params: &str,
    ) -> Option<Diagnostic> {
        let who = &self.who;
        let with_path = self.at.key("with");
        let context = runtime.bare_context(self.id.clone(), Duration::from_secs(10));
        let problem = match runtime.check(plugin, context, params).await {
            Ok(Ok(())) => return None,
            Ok(Err(PluginError::InvalidParams(error))) => {
                let at = with_path.join_dotted(&error.path);
                let shown = if error.path.is_empty() {
                    "with".to_owned()
                } else {
                    format!("with.{}", error.path)
                };
                let inspect = format!(
                    "`runbook plugin inspect {}` shows the parameters `{}` takes",
                    plugin.path.display(),
                    self.uses
                );
                let (message, hint) = match crate::diagnostic::parse_unknown_field(&error.message) {
                    Some((field, allowed)) => (
                        format!("{who}: unknown parameter `{shown}`"),
                        match crate::diagnostic::did_you_mean(field, allowed.iter().copied()) {
                            Some(suggestion) => format!("did you mean `{suggestion}`? {inspect}"),
                            None => inspect,
                        },
                    ),
                    None => (format!("{who}: `{shown}`: {}", error.message), inspect),
                };
                Diagnostic::new(message)
                    .at(&plan.runbook.source, &at)
                    .hint(hint)
            }
            Ok(Err(other)) => Diagnostic::new(format!(
                "{who}: the plugin rejected its parameters: {}",
                other.describe()
            ))
            .at(&plan.runbook.source, &with_path),
            Err(error) => {
                Diagnostic::new(format!("{who}: checking its parameters failed: {error}"))
                    .at(&plan.runbook.source, &self.at.key("uses"))
            }
        };
        Some(problem)
    }
}
