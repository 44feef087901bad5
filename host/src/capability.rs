//! What a step may do to the world, one place per capability, each with
//! the same parts (as wasmtime's `wasi-config` and Spin's factors):
//!
//! - the **grant** it reads from the runbook (a type in [`crate::grant`],
//!   re-exported by the capability as `Grant`);
//! - its **run-wide access**: a client, credentials, a connection, built
//!   once per run and shared by every step ([`RunAccess`]);
//! - the **per-step view** its host functions see ([`StepContext`], in the
//!   step's [`StepState`]);
//! - its **host functions**, whose first act is the grant check, and each
//!   call recorded as one [`CapabilityCall`](crate::events::EventKind::CapabilityCall)
//!   event through [`StepContext::call`];
//! - its **`add_to_linker`**, and a [`Capability`] entry saying what it is
//!   called, which interface a component imports to use it, and how a grant
//!   is read.
//!
//! [`CAPABILITIES`] is the one registration list: linking, the
//! need-versus-grant rules of `validate`, `exec` and `audit`, and the
//! capability names all read it. Adding a capability is its own file plus
//! one line there.

pub mod aws;
pub mod clock;
pub mod command;
pub mod fs;
pub mod http;
pub mod kube;
pub mod log;
pub mod secrets;

pub mod store;
pub mod tape;

use crate::events::{Decision, EventKind, EventSink};
use crate::grant::{StepGrants, StepId};
use crate::redact::Redactor;
use crate::wit::PluginError;
use secrets::SecretStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use store::StepState;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker};

/// One capability, as the rest of the host needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    /// Its name in `describe`, events, grants and reports (`http`).
    pub name: &'static str,
    /// The `runbook:plugin` interfaces a component imports to use it, or
    /// to use what it grants (secrets travel in HTTP requests and in a
    /// program's environment): any one of them will do; none when it
    /// comes through WASI, which every component imports.
    pub used_through: &'static [&'static str],
    /// The key that grants it, for messages (`grants.http`).
    pub grant_key: &'static str,
    /// A grant to copy, for hints.
    pub example: &'static str,
    /// When a plugin that needs it is refused if the step grants none
    /// (rather than running with every call denied): what such a step
    /// grants, in words (`no URL`, `none`).
    pub refused_without_grant: Option<&'static str>,
    /// Whether the step's grants give it anything.
    pub granted: fn(&StepGrants) -> bool,
    /// Links its host functions.
    pub add_to_linker: fn(&mut Linker<StepState>) -> wasmtime::Result<()>,
}

/// Every capability a runbook can grant, in the order they are linked:
/// the one list to extend when a capability is added.
pub const CAPABILITIES: &[Capability] = &[
    http::CAPABILITY,
    secrets::CAPABILITY,
    fs::CAPABILITY,
    kube::CAPABILITY,
    aws::CAPABILITY,
    command::CAPABILITY,
];

/// The capability called `name`, if there is one.
pub fn named(name: &str) -> Option<&'static Capability> {
    CAPABILITIES
        .iter()
        .find(|capability| capability.name == name)
}

/// Links every host function a step may call into `linker`: WASI with
/// nothing ambient, the interfaces every step has (`types`, `log`,
/// `clock`), then each capability's.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    crate::wit::runbook::plugin::types::add_to_linker::<_, HasSelf<StepState>>(linker, |state| {
        state
    })?;
    log::add_to_linker(linker)?;
    clock::add_to_linker(linker)?;
    for capability in CAPABILITIES {
        (capability.add_to_linker)(linker)?;
    }
    add_v0_1_to_linker(linker)
}

/// The same host functions again under the names a plugin built against
/// `runbook:plugin@0.1.x` imports them by (`runbook:plugin/http@0.1.0`),
/// so that such a plugin keeps running unchanged: each 0.1 interface is
/// its 0.2 namesake less what was added since, with the same grant checks.
/// (The linker matches `@0.1.0` and `@0.1.1` imports to `@0.1.1`.)
fn add_v0_1_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    use crate::wit::runbook::plugin as current;
    let name = |interface: &str| format!("runbook:plugin/{interface}@0.1.1");
    fn getter(state: &mut StepState) -> &mut StepState {
        state
    }
    current::types::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("types"))?,
        getter,
    )?;
    current::log::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("log"))?,
        getter,
    )?;
    current::clock::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("clock"))?,
        getter,
    )?;
    current::http::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("http"))?,
        getter,
    )?;
    current::secrets::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("secrets"))?,
        getter,
    )?;
    current::kube::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("kube"))?,
        getter,
    )?;
    current::aws::add_to_linker_instance::<_, HasSelf<StepState>>(
        &mut linker.instance(&name("aws"))?,
        getter,
    )
}

impl crate::wit::runbook::plugin::types::Host for StepState {}

/// What a plugin asks for, as the need-versus-grant rules read it.
#[derive(Debug, Clone)]
pub struct Asks<'a> {
    /// The plugin's name.
    pub plugin: &'a str,
    /// Capabilities it needs to run.
    pub needs: Vec<&'static str>,
    /// Capabilities it may use, with some parameters.
    pub may_use: Vec<&'static str>,
    /// Those of `may_use` that the step's parameters need: the plugin
    /// says which values need them.
    pub needed_by_params: Vec<NeededByParam>,
    /// The interfaces its component imports.
    pub imports: &'a [String],
}

/// An optional capability that a step's parameters need, and the value
/// that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededByParam {
    /// The capability's name.
    pub capability: &'static str,
    /// The parameter (`format`).
    pub param: String,
    /// Its value, or `None` when it is left out and its default needs
    /// the capability.
    pub value: Option<String>,
    /// A grant to copy, when the plugin gives one.
    pub grant: Option<String>,
}

impl NeededByParam {
    /// Why it is needed, in words: ``with `format = "email"` ``, or
    /// ``with the default `format` ``.
    pub fn because(&self) -> String {
        match &self.value {
            Some(value) => format!("with `{} = {value:?}`", self.param),
            None => format!("with the default `{}`", self.param),
        }
    }
}

impl Asks<'_> {
    fn needs(&self, name: &str) -> bool {
        self.needs.contains(&name)
            || self
                .needed_by_params
                .iter()
                .any(|needed| needed.capability == name)
    }

    /// What the step's parameters need `name` for, when only they do.
    pub fn needed_by(&self, name: &str) -> Option<&NeededByParam> {
        if self.needs.contains(&name) {
            return None;
        }
        self.needed_by_params
            .iter()
            .find(|needed| needed.capability == name)
    }

    fn may_use(&self, name: &str) -> bool {
        self.needs(name) || self.may_use.contains(&name)
    }

    fn imports(&self, interface: &str) -> bool {
        self.imports
            .iter()
            .any(|import| import.starts_with(&format!("runbook:plugin/{interface}@")))
    }
}

/// How what a plugin asks for and what a step grants disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mismatch {
    /// It needs the capability and the step grants none: refused before
    /// the run.
    NeedsUngranted,
    /// The step grants what the plugin does not ask for, or cannot use.
    WiderThanAsked,
    /// The component imports the interface and the plugin does not
    /// declare the capability.
    ImportedUndeclared,
    /// The plugin declares the capability and its component cannot use it.
    DeclaredUnimported,
}

/// One disagreement between a plugin and a step's grants.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// Which capability.
    pub capability: &'static str,
    /// What kind of disagreement.
    pub mismatch: Mismatch,
    /// One line for the operator or the reviewer.
    pub message: String,
}

/// The need-versus-grant rules, for every capability: what `validate` and
/// `exec` refuse or warn about, and what `audit` reports.
pub fn review(asks: &Asks<'_>, grants: &StepGrants) -> Vec<Finding> {
    let mut found = Vec::new();
    for capability in CAPABILITIES {
        let name = capability.name;
        let granted = (capability.granted)(grants);
        let mut finding = |mismatch, message: String| {
            found.push(Finding {
                capability: name,
                mismatch,
                message,
            });
        };
        // Secrets and files are needed by some parameters only (a webhook
        // in a secret, a folder to push): without a grant the plugin says
        // what it misses when it is used so.
        if let Some(grants_none) = capability.refused_without_grant
            && asks.needs(name)
            && !granted
        {
            let because = asks
                .needed_by(name)
                .map(|needed| format!(" {}", needed.because()))
                .unwrap_or_default();
            finding(
                Mismatch::NeedsUngranted,
                format!(
                    "plugin `{}` needs `{name}`{because}, and it is granted {grants_none}",
                    asks.plugin
                ),
            );
        }
        let usable = asks.may_use(name)
            && (capability.used_through.is_empty()
                || capability
                    .used_through
                    .iter()
                    .any(|interface| asks.imports(interface)));
        if granted && !usable {
            finding(
                Mismatch::WiderThanAsked,
                format!(
                    "grant wider than the plugin asks: `{}` is given but plugin `{}` does not ask for `{name}` or cannot use it",
                    capability.grant_key, asks.plugin
                ),
            );
        }
        if capability.used_through != [name] {
            continue;
        }
        if asks.imports(name) && !asks.may_use(name) {
            finding(
                Mismatch::ImportedUndeclared,
                format!(
                    "imports `runbook:plugin/{name}` but does not declare the `{name}` capability"
                ),
            );
        }
        if asks.may_use(name) && !asks.imports(name) {
            finding(
                Mismatch::DeclaredUnimported,
                format!("declares `{name}` but cannot use it: the component does not import it"),
            );
        }
    }
    found
}

/// What every step of a run shares: clients, credentials, connections,
/// secrets. Built once per run; each step's [`StepContext`] holds a clone.
#[derive(Debug, Clone)]
pub struct RunAccess {
    /// The run's secrets.
    pub secrets: SecretStore,
    /// Scrubs secret values from what goes back to the guest.
    pub redactor: Redactor,
    /// The run log and the operator's view.
    pub events: EventSink,
    /// The shared HTTP client.
    pub http: http::HttpClient,
    /// Credentials and endpoint for AWS calls, when the run has them.
    pub aws: Option<aws::AwsAccess>,
    /// The cluster connection for Kubernetes calls, when the run has one.
    pub kube: Option<Arc<kube::KubeAccess>>,
    /// How programs run: confined, or not at all, when the run has any.
    pub command: Option<Arc<command::CommandAccess>>,
    /// Whether steps' calls are recorded into cassettes, or answered
    /// from one.
    pub tape: tape::Tape,
}

impl RunAccess {
    /// Access with no secrets, no cloud and no event writers: for
    /// `describe` and for tools that only inspect.
    pub fn bare(http: http::HttpClient) -> Self {
        RunAccess {
            secrets: SecretStore::new(Default::default()),
            redactor: Redactor::default(),
            events: EventSink::new(),
            http,
            aws: None,
            kube: None,
            command: None,
            tape: tape::Tape::Off,
        }
    }

    /// The view of one step: who is calling, what it is granted, until
    /// when, and what stops it (the run's cancellation, or for a rollback
    /// and `always` steps, only a second Ctrl-C).
    pub fn for_step(
        &self,
        step_id: StepId,
        grants: StepGrants,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
        dry_run: bool,
        checkpoints: Checkpoints,
    ) -> StepContext {
        StepContext {
            step_id,
            grants,
            secrets: self.secrets.clone(),
            redactor: self.redactor.clone(),
            events: self.events.clone(),
            deadline,
            cancel: cancel.clone(),
            http: self.http.clone(),
            dry_run,
            aws: self.aws.clone(),
            kube: self.kube.clone(),
            command: self.command.clone(),
            checkpoints,
            tape: self.tape.clone(),
            exchanges: Default::default(),
            clock_reads: Default::default(),
        }
    }
}

/// Everything a step's host functions need: who is calling, what it is
/// granted, where events go, and when it must stop. Built by
/// [`RunAccess::for_step`].
#[derive(Debug)]
pub struct StepContext {
    /// The step's id.
    pub step_id: StepId,
    /// The step's grants, resolved.
    pub grants: StepGrants,
    /// The run's secrets.
    pub secrets: SecretStore,
    /// Scrubs secret values from what goes back to the guest.
    pub redactor: Redactor,
    /// The run log and the operator's view.
    pub events: EventSink,
    /// The step's deadline.
    pub deadline: tokio::time::Instant,
    /// Fires when the run is cancelled.
    pub cancel: CancellationToken,
    /// The shared HTTP client.
    pub http: http::HttpClient,
    /// `plan`: requests that change things are recorded, not sent.
    pub dry_run: bool,
    /// Credentials and endpoint for AWS calls, when the run has them.
    pub aws: Option<aws::AwsAccess>,
    /// The cluster connection for Kubernetes calls, when the run has one.
    pub kube: Option<Arc<kube::KubeAccess>>,
    /// How programs run, when the run has any.
    pub command: Option<Arc<command::CommandAccess>>,
    /// What the step recorded for its rollback before changing anything
    /// (`log.checkpoint`), shared by its attempts: the first value of a
    /// key is kept.
    pub checkpoints: Checkpoints,
    /// Whether its calls are recorded or replayed.
    pub tape: tape::Tape,
    /// The calls of the current export call, when the run records.
    pub exchanges: std::sync::Mutex<Vec<tape::Exchange>>,
    /// The clock readings of the current export call, when the run
    /// records.
    pub clock_reads: Arc<std::sync::Mutex<tape::ClockReads>>,
}

/// A step's checkpoints: key -> the value recorded first.
pub type Checkpoints = Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

impl StepContext {
    /// Records an event for this step.
    pub fn emit(&self, kind: EventKind) {
        self.events.emit_for(Some(&self.step_id), kind);
    }

    /// The deadline of a host operation: its own timeout, capped by the step's.
    pub fn deadline_for(&self, timeout: Option<Duration>) -> tokio::time::Instant {
        let own = tokio::time::Instant::now() + timeout.unwrap_or(http::DEFAULT_REQUEST_TIMEOUT);
        own.min(self.deadline)
    }

    /// Starts recording a capability call: `requested` says what was
    /// asked (`GET https://...`, `patch apps/v1/Deployment shop/api`). The
    /// call becomes one event when it is denied, held back or finished.
    pub fn call(&self, capability: &'static str, requested: impl Into<String>) -> Call<'_> {
        Call {
            context: self,
            capability,
            requested: requested.into(),
            started: Instant::now(),
            dry_run: false,
        }
    }
}

/// A capability call being made; see [`StepContext::call`].
#[must_use = "a call is recorded only when it is denied, held back or finished"]
pub struct Call<'a> {
    context: &'a StepContext,
    capability: &'static str,
    requested: String,
    started: Instant,
    dry_run: bool,
}

impl Call<'_> {
    /// Marks a write sent as a dry run (Kubernetes' `dryRun=All`): the
    /// service checks it and changes nothing.
    pub fn sent_as_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// What was asked.
    pub fn requested(&self) -> &str {
        &self.requested
    }

    /// Outside the step's grants: recorded with why, and the error the
    /// plugin sees, naming what would grant it.
    pub fn deny(self, why: impl Into<String>, hint: impl Into<String>) -> PluginError {
        let error = PluginError::denied(self.capability, self.requested.clone(), hint);
        self.record(Decision::Denied, None, why.into(), false);
        error
    }

    /// Outside the step's grants, when the plugin sees another error
    /// than the plain denial: recorded with why.
    pub fn refuse(self, why: impl Into<String>) {
        self.record(Decision::Denied, None, why.into(), false);
    }

    /// Within the grants, but a plan does not send what changes things:
    /// recorded, and the error the plugin sees.
    pub fn hold_back(self, grant: Option<String>, hint: impl Into<String>) -> PluginError {
        let error = PluginError::denied(self.capability, self.requested.clone(), hint);
        self.record(
            Decision::HeldBack,
            grant,
            "not sent: a plan sends nothing that changes things".into(),
            true,
        );
        error
    }

    /// Made under `grant`: what came of it (a status, `patched`, an
    /// error), and whether it did what was asked.
    pub fn finish(self, grant: Option<String>, outcome: impl Into<String>, ok: bool) {
        self.record(Decision::Allowed, grant, outcome.into(), ok);
    }

    fn record(self, decision: Decision, grant: Option<String>, outcome: String, ok: bool) {
        let dry_run = self.dry_run || decision == Decision::HeldBack;
        self.context.emit(EventKind::CapabilityCall {
            capability: self.capability.to_owned(),
            requested: self.requested,
            decision,
            grant,
            outcome,
            ok,
            dry_run,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asks<'a>(needs: &[&'static str], imports: &'a [String]) -> Asks<'a> {
        Asks {
            plugin: "p",
            needs: needs.to_vec(),
            may_use: Vec::new(),
            needed_by_params: Vec::new(),
            imports,
        }
    }

    fn mismatches(findings: &[Finding]) -> Vec<(&str, Mismatch)> {
        findings
            .iter()
            .map(|finding| (finding.capability, finding.mismatch))
            .collect()
    }

    #[test]
    fn a_plugin_that_needs_an_ungranted_capability_is_refused() {
        let imports = ["runbook:plugin/http@0.1.0".to_owned()];
        let found = review(&asks(&["http"], &imports), &StepGrants::default());
        assert_eq!(mismatches(&found), [("http", Mismatch::NeedsUngranted)]);
        assert!(found[0].message.contains("granted no URL"), "{found:?}");
    }

    #[test]
    fn an_optional_capability_a_parameter_needs_is_refused_without_its_grant() {
        let imports = [
            "runbook:plugin/http@0.2.0".to_owned(),
            "runbook:plugin/aws@0.2.0".to_owned(),
        ];
        let mut asked = asks(&[], &imports);
        asked.may_use = vec!["http", "aws"];
        assert!(review(&asked, &StepGrants::default()).is_empty());
        asked.needed_by_params = vec![NeededByParam {
            capability: "aws",
            param: "format".into(),
            value: Some("email".into()),
            grant: None,
        }];
        let found = review(&asked, &StepGrants::default());
        assert_eq!(mismatches(&found), [("aws", Mismatch::NeedsUngranted)]);
        assert_eq!(
            found[0].message,
            "plugin `p` needs `aws` with `format = \"email\"`, and it is granted none"
        );
        // Left out, the parameter's default may need one too.
        asked.needed_by_params[0].value = None;
        let found = review(&asked, &StepGrants::default());
        assert!(
            found[0]
                .message
                .contains("needs `aws` with the default `format`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_grant_the_plugin_cannot_use_is_wider_than_it_asks() {
        let grants = StepGrants {
            secrets: vec!["token".into()],
            kube: Some(crate::grant::KubeGrant {
                namespaces: vec!["app".into()],
                resources: vec!["v1/Service".into()],
                verbs: vec!["get".into()],
            }),
            ..StepGrants::default()
        };
        // No HTTP import: the secret cannot be sent anywhere.
        let found = review(&asks(&[], &[]), &grants);
        assert_eq!(
            mismatches(&found),
            [
                ("secrets", Mismatch::WiderThanAsked),
                ("kube", Mismatch::WiderThanAsked)
            ]
        );
    }

    #[test]
    fn imports_and_declarations_must_agree() {
        let imports = ["runbook:plugin/kube@0.1.0".to_owned()];
        let found = review(&asks(&["aws"], &imports), &StepGrants::default());
        assert_eq!(
            mismatches(&found),
            [
                ("kube", Mismatch::ImportedUndeclared),
                ("aws", Mismatch::NeedsUngranted),
                ("aws", Mismatch::DeclaredUnimported)
            ]
        );
    }

    #[test]
    fn every_capability_has_a_unique_name_and_grant_key() {
        let mut names: Vec<_> = CAPABILITIES.iter().map(|c| c.name).collect();
        let mut keys: Vec<_> = CAPABILITIES.iter().map(|c| c.grant_key).collect();
        names.dedup();
        keys.dedup();
        assert_eq!(names.len(), CAPABILITIES.len());
        assert_eq!(keys.len(), CAPABILITIES.len());
        assert!(named("kube").is_some() && named("nope").is_none());
    }
}
