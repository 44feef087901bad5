//! What a step may do to the world, one file per capability. Each host
//! function checks the step's grants first; a denial is an error value the
//! plugin sees and an event in the run log, never a trap.

pub mod aws;
pub mod fs;
pub mod http;
pub mod kube;
pub mod secrets;
pub mod sigv4;

use crate::events::{EventKind, EventSink};
use crate::grant::{StepGrants, StepId};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::runbook::plugin::{clock, log, types};
use crate::plugin::state::StepState;
use secrets::{Redactor, SecretStore};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything a step's host functions need: who is calling, what it is
/// granted, where events go, and when it must stop.
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
    pub kube: Option<std::sync::Arc<kube::KubeAccess>>,
    /// What the step recorded for its rollback before changing anything
    /// (`log.checkpoint`), shared by its attempts: the first value of a
    /// key is kept.
    pub checkpoints: Checkpoints,
}

/// A step's checkpoints: key -> the value recorded first.
pub type Checkpoints = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

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
}

impl types::Host for StepState {}

impl log::Host for StepState {
    async fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(message, 8 * 1024);
        if self.log_budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Log {
                level: level.into(),
                message,
            });
        }
    }

    async fn progress(&mut self, message: String, fraction: Option<f32>) {
        let fraction = fraction
            .filter(|value| value.is_finite())
            .map(|value| value.clamp(0.0, 1.0));
        let message = truncate(message, 1024);
        if self.log_budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Progress { message, fraction });
        }
    }

    async fn checkpoint(&mut self, key: String, value: String) -> Result<(), PluginError> {
        self.record_checkpoint(key, value)
    }
}

impl StepState {
    /// `log.checkpoint`: durable before it returns, first value kept.
    fn record_checkpoint(&mut self, key: String, value: String) -> Result<(), PluginError> {
        const MAX_KEY: usize = 256;
        const MAX_VALUE: usize = 256 * 1024;
        const MAX_KEYS: usize = 64;
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(PluginError::Failed(format!(
                "a checkpoint's key is at most {MAX_KEY} bytes and its value {} KiB",
                MAX_VALUE / 1024
            )));
        }
        let context = &self.context;
        if context.dry_run {
            return Ok(());
        }
        let fresh = {
            let mut checkpoints = context
                .checkpoints
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if checkpoints.contains_key(&key) {
                false
            } else if checkpoints.len() >= MAX_KEYS {
                return Err(PluginError::Failed(format!(
                    "a step records at most {MAX_KEYS} checkpoints"
                )));
            } else {
                checkpoints.insert(key.clone(), value.clone());
                true
            }
        };
        if fresh {
            context.emit(EventKind::Checkpoint { key, value });
        }
        match context.events.failure() {
            None => Ok(()),
            Some(failure) => Err(PluginError::Failed(format!(
                "the checkpoint could not be recorded, so nothing may change: {failure}"
            ))),
        }
    }
}

impl clock::Host for StepState {
    async fn sleep(&mut self, milliseconds: u64) -> Result<(), PluginError> {
        let context = &self.context;
        let wake = tokio::time::Instant::now() + Duration::from_millis(milliseconds);
        if wake > context.deadline {
            tokio::select! {
                () = tokio::time::sleep_until(context.deadline) => {}
                () = context.cancel.cancelled() => return Err(PluginError::Cancelled),
            }
            return Err(PluginError::Timeout(
                "the step's timeout passed while it slept".into(),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake) => Ok(()),
            () = context.cancel.cancelled() => Err(PluginError::Cancelled),
        }
    }

    async fn remaining(&mut self) -> u64 {
        let left = self
            .context
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    }
}

impl crate::plugin::bindings::runbook::plugin::http::Host for StepState {
    async fn send(
        &mut self,
        request: crate::plugin::bindings::runbook::plugin::http::Request,
    ) -> Result<crate::plugin::bindings::runbook::plugin::http::Response, PluginError> {
        http::send(&self.context, request).await
    }
}

impl crate::plugin::bindings::runbook::plugin::secrets::Host for StepState {
    async fn handle(&mut self, name: String) -> Result<String, PluginError> {
        secrets::handle(&self.context, &name)
    }
}

impl From<log::Level> for crate::events::Level {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Trace => crate::events::Level::Trace,
            log::Level::Debug => crate::events::Level::Debug,
            log::Level::Info => crate::events::Level::Info,
            log::Level::Warn => crate::events::Level::Warn,
            log::Level::Error => crate::events::Level::Error,
        }
    }
}

/// Cuts a guest-provided string to at most `limit` bytes on a char boundary.
pub fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [truncated]");
    }
    text
}
