//! The host's bindings of the `runbook:plugin` WIT package: Rust types and
//! traits for the current contract (0.2), and [`v0_1`], the exports of
//! plugins built against 0.1.x, which the host keeps serving. Host imports
//! are async, so a plugin that sleeps or waits on HTTP holds no thread.

#![allow(missing_docs, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "step",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
    // Cassettes (`capability::tape`) keep requests and answers as JSON.
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use self::runbook::plugin::types::{
    Capability, Denial, Error as PluginError, Outcome, ParamError, Wait,
};

/// The exports of a plugin built against `runbook:plugin@0.1.x`, whose
/// `run` takes no state and cannot wait. Its imports are the current ones
/// under their 0.1 names (`capability::add_to_linker`): every 0.1
/// interface is the 0.2 one less functions added since, with the same
/// shapes. Its types are its own (0.2's `capability` has cases 0.1 does
/// not); what its exports return is turned into the current types here.
pub mod v0_1 {
    #![allow(missing_docs, dead_code, reason = "generated code")]

    wasmtime::component::bindgen!({
        world: "step",
        path: "../wit/0.1/plugin.wit",
        imports: { default: async },
        exports: { default: async },
    });

    use self::runbook::plugin::types as old;
    use super::runbook::plugin::types as current;

    impl From<old::Capability> for current::Capability {
        fn from(capability: old::Capability) -> Self {
            match capability {
                old::Capability::Http => current::Capability::Http,
                old::Capability::Kube => current::Capability::Kube,
                old::Capability::Aws => current::Capability::Aws,
                old::Capability::Secrets => current::Capability::Secrets,
                old::Capability::Fs => current::Capability::Fs,
            }
        }
    }

    impl From<old::Descriptor> for current::Descriptor {
        fn from(descriptor: old::Descriptor) -> Self {
            current::Descriptor {
                name: descriptor.name,
                version: descriptor.version,
                description: descriptor.description,
                params_schema: descriptor.params_schema,
                capabilities: descriptor
                    .capabilities
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                optional_capabilities: (descriptor.optional_capabilities.into_iter())
                    .map(Into::into)
                    .collect(),
                idempotent: descriptor.idempotent,
            }
        }
    }

    impl From<old::Error> for current::Error {
        fn from(error: old::Error) -> Self {
            match error {
                old::Error::InvalidParams(error) => {
                    current::Error::InvalidParams(current::ParamError {
                        path: error.path,
                        message: error.message,
                    })
                }
                old::Error::Denied(denial) => current::Error::Denied(current::Denial {
                    capability: denial.capability,
                    requested: denial.requested,
                    hint: denial.hint,
                }),
                old::Error::Failed(message) => current::Error::Failed(message),
                old::Error::Transient(message) => current::Error::Transient(message),
                old::Error::Timeout(message) => current::Error::Timeout(message),
                old::Error::Cancelled => current::Error::Cancelled,
            }
        }
    }

    impl From<old::PlannedAction> for current::PlannedAction {
        fn from(action: old::PlannedAction) -> Self {
            current::PlannedAction {
                description: action.description,
                mutates: action.mutates,
            }
        }
    }

    impl From<old::Outcome> for current::Outcome {
        fn from(outcome: old::Outcome) -> Self {
            current::Outcome {
                outputs: outcome.outputs,
                summary: outcome.summary,
            }
        }
    }
}

impl PluginError {
    /// A denial, with the hint that would grant it.
    pub fn denied(capability: &str, requested: impl Into<String>, hint: impl Into<String>) -> Self {
        PluginError::Denied(Denial {
            capability: capability.to_owned(),
            requested: requested.into(),
            hint: hint.into(),
        })
    }

    /// One line for the operator.
    pub fn describe(&self) -> String {
        match self {
            PluginError::InvalidParams(error) if error.path.is_empty() => {
                format!("invalid parameters: {}", error.message)
            }
            PluginError::InvalidParams(error) => {
                format!("invalid parameter `{}`: {}", error.path, error.message)
            }
            PluginError::Denied(denial) => format!(
                "{} denied: {}; {}",
                denial.capability, denial.requested, denial.hint
            ),
            PluginError::Failed(message) => message.clone(),
            PluginError::Transient(message) => format!("{message} (transient)"),
            PluginError::Timeout(message) => format!("timed out: {message}"),
            PluginError::Cancelled => "cancelled".to_owned(),
        }
    }
}

impl Capability {
    /// The name used in grants and reports.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Http => "http",
            Capability::Kube => "kube",
            Capability::Aws => "aws",
            Capability::Secrets => "secrets",
            Capability::Fs => "fs",
            Capability::Command => "command",
        }
    }
}
