//! Before anything runs: the runbook loads and binds, every plugin loads
//! (pinned digests, `runbook.lock`), every step is granted what its plugin
//! needs, every secret exists, and every step's parameters pass its
//! plugin's `check`. What fails here is refused at its place in the
//! runbook, and nothing has started.

use super::{Error, Interface, Notice};
use crate::capability::aws::AwsAccess;
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
    /// Each from the source its `[secrets.NAME]` names (a file, AWS
    /// Secrets Manager with the operator's credentials), else the process
    /// environment under its own name; a run refuses to start while one
    /// cannot be read (`exec`, `resume`, `rollback`).
    Environment,
    /// These values, by secret name, and the declared sources for the
    /// rest (never the process environment); a run refuses to start while
    /// one is missing (the tests, and callers that keep secrets
    /// elsewhere).
    Given(BTreeMap<String, String>),
    /// The process environment, when every secret that comes from it is
    /// there; else none, and the steps that need one say so. A file or
    /// Secrets Manager is never read. For `plan`: reviewers who read a
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
    /// What the fingerprint is made of, as signed payloads carry it
    /// ([`crate::gates::fingerprint_parts`]; a rollback's,
    /// [`crate::gates::rollback_parts`]).
    pub parts: Vec<(String, String)>,
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
/// Secrets kept in AWS Secrets Manager are read at `aws_endpoint` when
/// given (`--aws-endpoint`), else at the environment's `aws_endpoint`,
/// else at AWS.
pub async fn prepare(
    runtime: &PluginRuntime,
    file: &Path,
    bindings: Bindings,
    secrets: Secrets,
    aws_endpoint: Option<&str>,
    interface: &dyn Interface,
) -> Result<Prepared, Error> {
    let runbook = Arc::new(runbook::load(file)?);
    let plan = bind(runbook, bindings)?;
    let plugins = preflight::load_plugins(runtime, &plan).await?;
    for warning in preflight::check_capabilities(&plan, &plugins)? {
        interface.notice(Notice::WiderGrant(warning));
    }
    let secrets = read_secrets(runtime, &plan, secrets, aws_endpoint).await?;
    preflight::check_params(runtime, &plan, &plugins, &secrets).await?;
    let digests = plugins
        .iter()
        .map(|(name, plugin)| (name.clone(), plugin.digest.clone()))
        .collect();
    let fingerprint = crate::gates::fingerprint(&plan, &digests);
    let parts = crate::gates::fingerprint_parts(&plan, &digests);
    Ok(Prepared {
        plan,
        plugins,
        secrets,
        fingerprint,
        parts,
        saved_plan: None,
    })
}

/// The run's secrets, as `secrets` says: each read from its source (the
/// process environment, a file, AWS Secrets Manager with the operator's
/// credentials), once, before any step runs.
async fn read_secrets(
    runtime: &PluginRuntime,
    plan: &Plan,
    secrets: Secrets,
    aws_endpoint: Option<&str>,
) -> Result<SecretStore, Error> {
    let endpoint = aws_endpoint
        .map(str::to_owned)
        .or_else(|| {
            plan.environment
                .as_ref()
                .and_then(|name| plan.runbook.environments.get(name))
                .and_then(|environment| environment.aws_endpoint.clone())
        })
        .and_then(|endpoint| url::Url::parse(&endpoint).ok());
    let aws = AwsAccess::from_environment(endpoint);
    let http = runtime.http_client();
    let from_process = |name: &str| std::env::var(name).ok();
    let nothing = |_: &str| None;
    let none = BTreeMap::new();
    let reading = |given, environment| preflight::Reading {
        given,
        environment,
        client: http.client(),
        aws: &aws,
    };
    Ok(match secrets {
        Secrets::Environment => {
            preflight::read_secrets(plan, &reading(&none, &from_process)).await?
        }
        Secrets::Given(values) => {
            preflight::read_secrets(plan, &reading(&values, &nothing)).await?
        }
        Secrets::IfSet => preflight::read_environment_only(plan, &from_process)
            .unwrap_or_else(|| SecretStore::new(BTreeMap::new())),
    })
}
