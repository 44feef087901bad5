//! The smallest possible step: does nothing. It measures the host's per-step
//! overhead and shows the shape of a plugin.

use runbook_sdk::{Capability, Deserialize, Error, JsonSchema, Outcome, PlannedAction, Step};

struct Noop;

/// No parameters but an optional message to echo as the summary.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// Returned as the step's summary and its `message` output.
    #[serde(default)]
    message: Option<String>,
}

impl Step for Noop {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[];
    /// It does nothing, so it never fails.
    const TRANSIENT: &'static str = "";
    const IDEMPOTENT: bool = true;

    fn plan(_params: &Params) -> Result<Vec<PlannedAction>, Error> {
        Ok(vec![PlannedAction::read("nothing")])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let message = params.message.unwrap_or_else(|| "did nothing".to_owned());
        Ok(Outcome::new(message.clone()).output("message", message))
    }
}

runbook_sdk::export_step!(Noop);
