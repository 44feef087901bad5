//! The host side of `runbook:plugin/aws`. Until a runbook can grant AWS
//! actions (`grants.aws`), every call is outside the step's grants: it is
//! denied with a typed error and recorded, never trapped.

use crate::events::{Decision, EventKind};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::runbook::plugin::aws::{Host, Request, Response};
use crate::plugin::state::StepState;

impl Host for StepState {
    async fn call(&mut self, request: Request) -> Result<Response, PluginError> {
        let context = &self.context;
        let requested = format!(
            "{}:{} in {}",
            request.service, request.action, request.region
        );
        context.emit(EventKind::Denied {
            capability: "aws".into(),
            requested: requested.clone(),
            decision: Decision::Denied,
        });
        Err(PluginError::denied(
            "aws",
            requested,
            format!(
                "step `{}` has no AWS grant, and this version of runbook cannot grant one yet",
                context.step_id
            ),
        ))
    }
}
