//! The plugin author's crate: implement [`Step`] for a type, export it with
//! [`export_step!`], build for `wasm32-wasip2`. Everything a plugin can do to
//! the outside world goes through the host; this crate only makes that easy.

pub mod duration;
pub mod http;
pub mod log;

pub mod aws;
pub mod command;
pub mod kube;
#[doc(hidden)]
pub mod private;

/// The generated bindings of the `runbook:plugin` WIT package.
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs, clippy::all, unsafe_code)]
    wit_bindgen::generate!({
        world: "step",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "runbook_sdk::bindings",
        generate_all,
    });
}

pub use bindings::runbook::plugin::types::{
    Capability, Denial, Error, Outcome, ParamError, PlannedAction, RunResult, Wait,
};
pub use duration::HumanDuration;
// A plugin derives through these instead of depending on serde and
// schemars itself (`#[serde(crate = "runbook_sdk::serde")]`,
// `#[schemars(crate = "runbook_sdk::schemars")]`), so every plugin uses
// the versions the SDK was built with.
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};
pub use serde_json;

/// A step plugin. Implement it for a unit struct and export it with
/// [`export_step!`]; the plugin's name, version and description come from its
/// `Cargo.toml`.
pub trait Step {
    /// The step's parameters: the runbook's `with` table.
    type Params: serde::de::DeserializeOwned + JsonSchema;

    /// The capabilities the plugin needs. The host grants none that the
    /// runbook does not, and the audit report shows this list.
    const CAPABILITIES: &'static [Capability];

    /// Capabilities used only with some parameters; a step that does not
    /// grant them still runs (and is denied if it uses them anyway).
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[];

    /// Which values of a parameter need which of the optional
    /// capabilities (`notify`'s `format = "email"` needs `aws`): a step
    /// that gives such a value without granting the capability is refused
    /// by `runbook validate` and `exec` before anything runs, as one that
    /// does not grant what [`Step::CAPABILITIES`] names is.
    const NEEDED_WHEN: &'static [NeededWhen] = &[];

    /// Whether `run` may be repeated with the same parameters to the same
    /// effect. The host re-runs an idempotent step after a crash unasked.
    const IDEMPOTENT: bool = false;

    /// Which of its failures are `transient`, the only ones a step's
    /// `retries` tries again, in a phrase for its README and for
    /// `validate`; `""` when none are (then `validate` warns about
    /// `retries` on its steps). The default: what the host reports as
    /// transient from the services it reaches for the plugin, which a
    /// plugin passes on when it returns the host's errors with `?`.
    const TRANSIENT: &'static str = HOST_TRANSIENT;

    /// What the parameters' types cannot say (`action = "set-image"` needs
    /// `images`; stages must rise). Runs in `runbook validate`, `plan` and
    /// `exec` before any step starts, and again before `plan` and `run`, so
    /// a misuse is reported at its place in the runbook instead of in the
    /// middle of a deploy. Point at a parameter with
    /// `Error::invalid_param("images", "...")`. It must not call the host,
    /// and it skips values that are not known yet ([`unresolved`]).
    fn check(params: &Self::Params) -> Result<(), Error> {
        let _ = params;
        Ok(())
    }

    /// What `run` would do, without doing it.
    fn plan(params: &Self::Params) -> Result<Vec<PlannedAction>, Error>;

    /// Do the step, in one call. A step that holds for long (a soak, a
    /// canary's stages) implements [`Step::round`] instead.
    fn run(params: Self::Params) -> Result<Outcome, Error> {
        let _ = params;
        Err(Error::failed(
            "the plugin implements neither `Step::run` nor `Step::round`",
        ))
    }

    /// One round of a step that works in rounds: `state` is `None` on the
    /// first call, and after a [`Wait`] the state it carried. Return
    /// `RunResult::Done(outcome)` when the step is done, or
    /// `RunResult::Wait(Wait::after(..))` to be called again later: the
    /// host journals the wait, so a run killed during a 24-hour soak goes
    /// on at its next round, and a long wait lets the process end (`exec
    /// --detach`, `runbook worker`). After a crash the host calls again
    /// with the last state it recorded, so what a round does must be safe
    /// to redo from that state. The default calls [`Step::run`].
    fn round(params: Self::Params, state: Option<String>) -> Result<RunResult, Error> {
        let _ = state;
        Self::run(params).map(RunResult::Done)
    }

    /// Undo a previous `run`, given its outputs. The default has nothing to
    /// undo, which is right for steps that change nothing (checks, waits).
    fn rollback(params: Self::Params, outputs: &Outputs) -> Result<String, Error> {
        let _ = (params, outputs);
        Ok("nothing to undo".to_owned())
    }
}

/// The failures the host reports as transient: a lost or refused
/// connection, an overloaded or failing service (HTTP 429 and 5xx, AWS
/// throttling, a Kubernetes API server's 429 and 5xx).
pub const HOST_TRANSIENT: &str = "a lost or refused connection, and 429 or 5xx answers (AWS throttling included) from the services the host reaches for it";

/// An optional capability that some values of one parameter need; see
/// [`Step::NEEDED_WHEN`]. The SDK writes these into the parameters' JSON
/// Schema (under `x-runbook-needed-when`), where the host reads them.
#[derive(Debug, Clone, Copy)]
pub struct NeededWhen {
    /// The capability, one of [`Step::OPTIONAL_CAPABILITIES`].
    pub capability: Capability,
    /// A top-level parameter whose value is text (`format`).
    pub param: &'static str,
    /// The values of it that need the capability (`["email"]`).
    pub values: &'static [&'static str],
    /// Whether leaving the parameter out needs it too: its default is
    /// one of `values`.
    pub or_absent: bool,
    /// A grant to copy, shown with the refusal
    /// (`grants.aws = { services = ["email"], ... }`).
    pub grant: &'static str,
}

/// Whether a parameter value is not known yet: while a runbook is
/// validated or planned, a value that comes from a parameter not given or
/// from an earlier step's output is a placeholder naming it
/// (`<params.version>`, `v<steps.build.outputs.tag>`). [`Step::check`]
/// skips such values rather than refusing them.
pub fn unresolved(value: &str) -> bool {
    value
        .find('<')
        .is_some_and(|start| value[start..].contains('>'))
}

/// The outputs of a previous `run`, as given to `rollback`.
#[derive(Debug, Clone, Default)]
pub struct Outputs(pub Vec<(String, String)>);

impl Outputs {
    /// The value of one output, if the run produced it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

impl Outcome {
    /// A successful outcome with a one-line summary and no outputs yet.
    pub fn new(summary: impl Into<String>) -> Self {
        Outcome {
            outputs: Vec::new(),
            summary: summary.into(),
        }
    }

    /// Adds an output that later steps read as `${{ steps.ID.outputs.KEY }}`.
    pub fn output(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.outputs.push((key.into(), value.into()));
        self
    }
}

impl Wait {
    /// Call the step again after `after`, with `state` (any value that
    /// serializes to JSON: [`state`] reads it back) and `status`, a few
    /// words for the operator (`soak round 12/288`).
    pub fn after(
        after: std::time::Duration,
        state: &impl serde::Serialize,
        status: impl Into<String>,
    ) -> Self {
        Wait {
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            state: serde_json::to_string(state).unwrap_or_default(),
            status: status.into(),
        }
    }
}

/// The state an earlier [`Wait`] carried, read back: `None` on a step's
/// first call. A state that does not parse (a plugin upgraded between two
/// rounds) fails the step with a message saying so.
pub fn state<T: serde::de::DeserializeOwned>(state: Option<&str>) -> Result<Option<T>, Error> {
    state
        .map(|text| {
            serde_json::from_str(text).map_err(|error| {
                Error::failed(format!(
                    "cannot read the state this step waited with ({error}); was the plugin changed between two rounds?"
                ))
            })
        })
        .transpose()
}

impl PlannedAction {
    /// An action that only reads.
    pub fn read(description: impl Into<String>) -> Self {
        PlannedAction {
            description: description.into(),
            mutates: false,
        }
    }

    /// An action that changes something outside the runner.
    pub fn write(description: impl Into<String>) -> Self {
        PlannedAction {
            description: description.into(),
            mutates: true,
        }
    }
}

impl Error {
    /// The step's work failed; the message says what differed.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::Transient(message.into())
    }

    /// A parameter is wrong; `path` is where, for example `checks[0].url`.
    pub fn invalid_param(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidParams(ParamError {
            path: path.into(),
            message: message.into(),
        })
    }

    /// A short description for messages.
    pub fn message(&self) -> String {
        match self {
            Error::InvalidParams(error) if error.path.is_empty() => error.message.clone(),
            Error::InvalidParams(error) => format!("{}: {}", error.path, error.message),
            Error::Denied(denial) => format!(
                "{} denied: {} ({})",
                denial.capability, denial.requested, denial.hint
            ),
            Error::Failed(message) | Error::Transient(message) | Error::Timeout(message) => {
                message.clone()
            }
            Error::Cancelled => "cancelled".to_owned(),
        }
    }
}

/// Sleep on the host for `duration`. Returns [`Error::Cancelled`] or
/// [`Error::Timeout`] when the run is cancelled or the step's time is up
/// first, so a waiting loop ends promptly with `?`.
pub fn sleep(duration: std::time::Duration) -> Result<(), Error> {
    let milliseconds = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    bindings::runbook::plugin::clock::sleep(milliseconds)
}

/// Time left before the step's timeout.
pub fn remaining() -> std::time::Duration {
    std::time::Duration::from_millis(bindings::runbook::plugin::clock::remaining())
}

/// Exports a [`Step`] implementation as the component's `describe`, `check`,
/// `plan`, `run` (of `runbook:plugin@0.2`) and `rollback`.
///
/// ```ignore
/// struct Hello;
/// impl runbook_sdk::Step for Hello { /* ... */ }
/// runbook_sdk::export_step!(Hello);
/// ```
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        struct __RunbookStepExport;

        impl $crate::bindings::Guest for __RunbookStepExport {
            fn describe() -> $crate::bindings::runbook::plugin::types::Descriptor {
                $crate::private::describe::<$step>(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    env!("CARGO_PKG_DESCRIPTION"),
                )
            }

            fn check(params: String) -> Result<(), $crate::Error> {
                let params = $crate::private::parse::<<$step as $crate::Step>::Params>(&params)?;
                <$step as $crate::Step>::check(&params)
            }

            fn plan(params: String) -> Result<Vec<$crate::PlannedAction>, $crate::Error> {
                let params = $crate::private::parse::<<$step as $crate::Step>::Params>(&params)?;
                <$step as $crate::Step>::check(&params)?;
                <$step as $crate::Step>::plan(&params)
            }

            fn run(
                params: String,
                state: Option<String>,
            ) -> Result<$crate::RunResult, $crate::Error> {
                let params = $crate::private::parse::<<$step as $crate::Step>::Params>(&params)?;
                <$step as $crate::Step>::check(&params)?;
                <$step as $crate::Step>::round(params, state)
            }

            fn rollback(
                params: String,
                outputs: Vec<(String, String)>,
            ) -> Result<String, $crate::Error> {
                let params = $crate::private::parse::<<$step as $crate::Step>::Params>(&params)?;
                <$step as $crate::Step>::rollback(params, &$crate::Outputs(outputs))
            }
        }

        $crate::bindings::export!(__RunbookStepExport with_types_in $crate::bindings);

        // What the plugin needs, written into the component at build time
        // so that `runbook audit` and `runbook lock` can read it without
        // running the plugin; the host checks it agrees with `describe`.
        #[allow(unsafe_code)]
        #[used]
        #[cfg_attr(target_family = "wasm", unsafe(link_section = "runbook:capabilities"))]
        static __RUNBOOK_CAPABILITIES: [u8; $crate::private::capabilities_len(
            <$step as $crate::Step>::CAPABILITIES,
            <$step as $crate::Step>::OPTIONAL_CAPABILITIES,
        )] = $crate::private::capabilities_section(
            <$step as $crate::Step>::CAPABILITIES,
            <$step as $crate::Step>::OPTIONAL_CAPABILITIES,
        );
    };
}

#[cfg(test)]
mod tests {
    use super::unresolved;

    #[test]
    fn placeholders_are_unresolved_and_real_values_are_not() {
        assert!(unresolved("<params.version>"));
        assert!(unresolved("v<steps.build.outputs.tag>-rc"));
        assert!(!unresolved("1.2.3"));
        assert!(!unresolved("https://registry.example.com"));
        assert!(!unresolved("a > b"));
    }
}
