//! The one `bindgen!` of the host: Rust types and traits for the
//! `runbook:plugin` WIT package. Host imports are async, so a plugin that
//! sleeps or waits on HTTP holds no thread.

#![allow(missing_docs, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "step",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use self::runbook::plugin::types::{Capability, Denial, Error as PluginError, ParamError};

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
        }
    }
}
