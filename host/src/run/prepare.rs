//! Before anything runs: the runbook loads and binds, every plugin loads
//! (pinned digests, `runbook.lock`), every step is granted what its plugin
//! needs, every secret exists, and every step's parameters pass its
//! plugin's `check`. What fails here is refused at its place in the
//! runbook, and nothing has started.

use super::{Error, Interface, Notice};
use crate::capability::secrets::SecretStore;
use crate::engine::preflight::{self, Plugins};
use crate::plugin::PluginRuntime;
use crate::runbook::{self, Bindings, Environment, Plan, bind::bind};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Where the run's secret values come from.
#[derive(Debug, Clone)]
pub enum Secrets {
    /// The process environment, each secret under its own name; a run
    /// refuses to start while one is missing (`exec`, `resume`).
    Environment,
    /// These values; a run refuses to start while one is missing (the
    /// tests, and callers that keep secrets elsewhere).
    Given(BTreeMap<String, String>),
    /// The process environment, when every secret is there; else none, and
    /// the steps that need one say so. For `plan`: reviewers who read a
    /// plan seldom hold the production secrets.
    IfSet,
}

/// A run that passed every check and is ready to go.
pub struct Prepared {
    /// The bound plan.
    pub plan: Plan,
    /// The loaded plugins, by the names steps `use`.
    pub plugins: Plugins,
    /// The run's secrets.
    pub secrets: SecretStore,
    /// What approvals bind to: the runbook, environment, parameters,
    /// plugin digests and grants ([`crate::gates::fingerprint`]).
    pub fingerprint: String,
    /// The saved plan this run applies (`runbook exec plan.json`), once
    /// [`super::saved::verify`] found it unchanged; recorded in
    /// `run_started`.
    pub saved_plan: Option<crate::events::SavedPlanRef>,
}

impl Prepared {
    /// The environment the plan is bound to, when it names one.
    pub fn environment(&self) -> Option<&Environment> {
        self.plan
            .environment
            .as_ref()
            .and_then(|name| self.plan.runbook.environments.get(name))
    }
}

/// Loads, binds and checks a runbook: nothing runs if this fails. Grants
/// wider than a plugin asks for are told to `interface` as warnings.
pub async fn prepare(
    runtime: &PluginRuntime,
    file: &Path,
    bindings: Bindings,
    secrets: Secrets,
    interface: &dyn Interface,
) -> Result<Prepared, Error> {
    let runbook = Arc::new(runbook::load(file)?);
    let plan = bind(runbook, bindings)?;
    let plugins = preflight::load_plugins(runtime, &plan).await?;
    for warning in preflight::check_capabilities(&plan, &plugins)? {
        interface.notice(Notice::WiderGrant(warning));
    }
    let environment = |name: &str| std::env::var(name).ok();
    let secrets = match secrets {
        Secrets::Environment => preflight::load_secrets(&plan, environment)?,
        Secrets::Given(values) => preflight::load_secrets(&plan, |name| values.get(name).cloned())?,
        Secrets::IfSet => preflight::load_secrets(&plan, environment)
            .unwrap_or_else(|_| SecretStore::new(BTreeMap::new())),
    };
    preflight::check_params(runtime, &plan, &plugins, &secrets).await?;
    let digests = plugins
        .iter()
        .map(|(name, plugin)| (name.clone(), plugin.digest.clone()))
        .collect();
    let fingerprint = crate::gates::fingerprint(&plan, &digests);
    Ok(Prepared {
        plan,
        plugins,
        secrets,
        fingerprint,
        saved_plan: None,
    })
}
