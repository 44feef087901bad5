//! Time, which every step has: `clock.sleep` ends at the step's deadline
//! or when the run is cancelled, whichever comes first.

use super::StepState;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::clock;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};

/// Links `runbook:plugin/clock`.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    clock::add_to_linker::<_, HasSelf<StepState>>(linker, |state| state)
}

impl clock::Host for StepState {
    async fn sleep(&mut self, milliseconds: u64) -> Result<(), PluginError> {
        let context = &self.context;
        // A replay answers from a cassette: nothing to wait for.
        if context.replaying() {
            return Ok(());
        }
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
