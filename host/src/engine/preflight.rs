//! Everything checked before a step runs: the plugins load (digest, world),
//! the secrets exist, and every step's parameters fit its plugin's schema.
//! Problems are diagnostics at their place in the runbook.

use super::render::{Scope, StepOutputs, Unknown};
use crate::capability::Mismatch;
use crate::capability::secrets::SecretStore;
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::plugin::{LoadError, LoadedPlugin, PluginRuntime};
use crate::runbook::Plan;
use crate::wit::PluginError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    let used: std::collections::BTreeSet<&str> = runbook
        .steps
        .iter()
        .filter_map(|step| step.plugin())
        .collect();
    // Plugins no step uses are not loaded: compiling them would only cost time.
    for (name, source) in runbook
        .plugins
        .iter()
        .filter(|(name, _)| used.contains(name.as_str()))
    {
        let at = ValuePath::default().key("plugins").key(name);
        match runtime.load(&source.path, source.sha256.as_deref()).await {
            Ok(plugin) => {
                plugins.insert(name.clone(), Arc::new(plugin));
            }
            Err(error) => {
                let hint = match &error {
                    LoadError::Read { .. } => format!(
                        "the path is relative to the runbook's folder; build the plugins with `scripts/build-plugins`{}",
                        if source.path.exists() { "" } else { " (the file does not exist)" }
                    ),
                    LoadError::DigestMismatch { actual, .. } => format!(
                        "if the new file is trusted, pin it: `sha256 = \"{actual}\"`"
                    ),
                    LoadError::Invalid { .. } => {
                        "build it for wasm32-wasip2 with the runbook SDK (`runbook_sdk::export_step!`)".into()
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

/// Looks up every secret the runbook uses (in the process environment,
/// say); each one missing is a diagnostic.
pub fn load_secrets(
    plan: &Plan,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SecretStore, Diagnostics> {
    let mut values = BTreeMap::new();
    let mut missing = Diagnostics::default();
    for name in plan.secret_names() {
        match lookup(&name) {
            Some(value) => {
                values.insert(name, value);
            }
            None => missing.push(
                Diagnostic::new(
                    crate::capability::secrets::SecretError::Missing(name.clone()).to_string(),
                )
                .hint(format!(
                    "secrets are read from the environment: `export {name}=...` before running"
                )),
            ),
        }
    }
    missing.into_result(SecretStore::new(values))
}

/// Refuses a step whose plugin needs a capability the runbook does not
/// grant it; warns where a grant is wider than the plugin asks. The
/// warnings quote the plugin's name as it is: whoever draws them passes
/// them through the terminal filter.
pub fn check_capabilities(plan: &Plan, plugins: &Plugins) -> Result<Vec<String>, Diagnostics> {
    let mut problems = Diagnostics::default();
    let mut warnings = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for planned in &plan.steps {
        let step = plan.step(planned);
        if !seen.insert(step.index) {
            continue;
        }
        let Some(plugin) = step.plugin().and_then(|name| plugins.get(name)) else {
            continue;
        };
        let at = step.path().key("grants");
        for finding in crate::capability::review(&plugin.asks(), &planned.grants) {
            let capability = crate::capability::named(finding.capability);
            match finding.mismatch {
                Mismatch::NeedsUngranted => problems.push(
                    Diagnostic::new(format!("step `{}`: {}", step.id, finding.message))
                        .at(&plan.runbook.source, &step.path())
                        .hint(format!(
                            "grant what it may do, for example `{}`",
                            capability.map_or("", |capability| capability.example)
                        )),
                ),
                Mismatch::WiderThanAsked => warnings.push(format!(
                    "warning: step `{}`: {} ({}:{})",
                    step.id,
                    finding.message,
                    plan.runbook.source.path.display(),
                    plan.runbook
                        .source
                        .span_of(&at)
                        .map(|span| plan.runbook.source.line_column(span.start).0)
                        .unwrap_or(0)
                )),
                // Whether a component imports what it declares is the
                // plugin's affair, reported by `audit` and `inspect`.
                Mismatch::ImportedUndeclared | Mismatch::DeclaredUnimported => {}
            }
        }
    }
    problems.into_result(warnings)
}

/// Asks each step's plugin whether its parameters are right. Outputs of
/// earlier steps are not known yet and are checked as placeholder strings.
pub async fn check_params(
    runtime: &PluginRuntime,
    plan: &Plan,
    plugins: &Plugins,
    secrets: &SecretStore,
) -> Result<(), Diagnostics> {
    let mut problems = Diagnostics::default();
    let outputs = StepOutputs::new();
    let outcomes = super::render::StepOutcomes::new();
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
        let context = runtime.bare_context(planned.id.clone(), Duration::from_secs(10));
        match runtime.check(plugin, context, &params).await {
            Ok(Ok(())) => {}
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
                    step.plugin().unwrap_or_default()
                );
                let (message, hint) = match crate::diagnostic::parse_unknown_field(&error.message) {
                    Some((field, allowed)) => (
                        format!("step `{}`: unknown parameter `{shown}`", step.id),
                        match crate::diagnostic::did_you_mean(field, allowed.iter().copied()) {
                            Some(suggestion) => format!("did you mean `{suggestion}`? {inspect}"),
                            None => inspect,
                        },
                    ),
                    None => (
                        format!("step `{}`: `{shown}`: {}", step.id, error.message),
                        inspect,
                    ),
                };
                problems.push(
                    Diagnostic::new(message)
                        .at(&plan.runbook.source, &at)
                        .hint(hint),
                );
            }
            Ok(Err(other)) => problems.push(
                Diagnostic::new(format!(
                    "step `{}`: the plugin rejected its parameters: {}",
                    step.id,
                    other.describe()
                ))
                .at(&plan.runbook.source, &with_path),
            ),
            Err(error) => problems.push(
                Diagnostic::new(format!(
                    "step `{}`: checking its parameters failed: {error}",
                    step.id
                ))
                .at(
                    &plan.runbook.source,
                    &ValuePath::step(step.index).key("uses"),
                ),
            ),
        }
    }
    problems.into_result(())
}
