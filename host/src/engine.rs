//! Runs a [`Plan`]: each step in order, in its own sandbox, with only its
//! grants; records every event; stops at the first failure. Later issues add
//! the DAG, retries, rollback and the journal here.

pub mod preflight;
pub mod render;

use crate::capability::StepContext;
use crate::capability::secrets::SecretStore;
use crate::events::{EventKind, EventSink, Status};
use crate::plugin::bindings::PluginError;
use crate::plugin::{CallError, PluginRuntime};
use crate::runbook::Plan;
use preflight::Plugins;
use render::{Scope, StepOutputs, Unknown};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Succeeded, failed, denied or cancelled.
    pub status: Status,
    /// The step that ended the run, when one failed.
    pub failed_step: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Every finished step's outputs.
    pub outputs: StepOutputs,
}

/// What one step's call ended with.
struct StepResult {
    status: Status,
    summary: String,
    outputs: BTreeMap<String, String>,
}

/// Runs plans.
pub struct Executor<'a> {
    /// The wasm runtime.
    pub runtime: &'a PluginRuntime,
    /// Loaded plugins by name.
    pub plugins: &'a Plugins,
    /// Where events go.
    pub events: EventSink,
    /// The run's secrets.
    pub secrets: SecretStore,
    /// Fires on Ctrl-C.
    pub cancel: CancellationToken,
}

impl Executor<'_> {
    /// Runs every step in order and reports how the run ended.
    pub async fn execute(&self, plan: &Plan) -> RunReport {
        let started = Instant::now();
        self.events.emit(EventKind::RunStarted {
            run_id: plan.run_id.clone(),
            runbook: plan.runbook.name.clone(),
            file: plan.runbook.source.path.display().to_string(),
            environment: plan.environment.clone(),
            operator: plan.operator.clone(),
            params: plan.params.clone(),
            steps: plan.steps.len(),
        });
        let mut outputs = StepOutputs::new();
        let mut report = RunReport {
            status: Status::Succeeded,
            failed_step: None,
            failure: None,
            outputs: StepOutputs::new(),
        };
        for planned in &plan.steps {
            let step = plan.step(planned);
            let plugin = &self.plugins[&step.uses];
            self.events.emit_for(
                Some(&step.id),
                EventKind::StepStarted {
                    name: step.name.clone(),
                    plugin: step.uses.clone(),
                    digest: plugin.digest.clone(),
                },
            );
            let step_started = Instant::now();
            let result = if self.cancel.is_cancelled() {
                StepResult {
                    status: Status::Cancelled,
                    summary: "cancelled before it started".into(),
                    outputs: BTreeMap::new(),
                }
            } else {
                let scope = Scope {
                    plan,
                    outputs: &outputs,
                    secrets: &self.secrets,
                    unknown: Unknown::Fail,
                };
                match scope.render(&step.with) {
                    Err(error) => StepResult {
                        status: Status::Failed,
                        summary: error.to_string(),
                        outputs: BTreeMap::new(),
                    },
                    Ok(params) => {
                        let context = Arc::new(StepContext {
                            step_id: step.id.clone(),
                            grants: planned.grants.clone(),
                            secrets: self.secrets.clone(),
                            redactor: self.secrets.redactor(),
                            events: self.events.clone(),
                            deadline: tokio::time::Instant::now() + step.timeout,
                            cancel: self.cancel.clone(),
                            http: self.runtime.http_client(),
                            dry_run: false,
                        });
                        let called = self
                            .runtime
                            .run(plugin, context, step.memory_limit, &params.to_string())
                            .await;
                        step_result(called)
                    }
                }
            };
            self.events.emit_for(
                Some(&step.id),
                EventKind::StepFinished {
                    status: result.status,
                    summary: result.summary.clone(),
                    outputs: result.outputs.clone(),
                    elapsed_ms: millis(step_started),
                },
            );
            outputs.insert(step.id.0.clone(), result.outputs);
            if result.status != Status::Succeeded {
                report.status = result.status;
                report.failed_step = Some(step.id.0.clone());
                report.failure = Some(result.summary);
                break;
            }
        }
        report.outputs = outputs;
        self.events.emit(EventKind::RunFinished {
            status: report.status,
            elapsed_ms: millis(started),
            failed_step: report.failed_step.clone(),
        });
        self.events.finish();
        report
    }
}

fn step_result(
    called: Result<Result<crate::plugin::bindings::Outcome, PluginError>, CallError>,
) -> StepResult {
    let failed = |status, summary: String| StepResult {
        status,
        summary,
        outputs: BTreeMap::new(),
    };
    match called {
        Ok(Ok(outcome)) => StepResult {
            status: Status::Succeeded,
            summary: outcome.summary,
            outputs: outcome.outputs.into_iter().collect(),
        },
        Ok(Err(error @ PluginError::Denied(_))) => failed(Status::Denied, error.describe()),
        Ok(Err(PluginError::Cancelled)) | Err(CallError::Cancelled) => {
            failed(Status::Cancelled, "cancelled".into())
        }
        Ok(Err(error)) => failed(Status::Failed, error.describe()),
        Err(error) => failed(Status::Failed, error.to_string()),
    }
}

fn millis(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
