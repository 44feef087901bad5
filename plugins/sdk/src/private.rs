//! What `export_step!` expands to call; not part of the public API.

use crate::bindings::runbook::plugin::types::Descriptor;
use crate::{Error, Step};

/// The key of the parameters' JSON Schema under which
/// [`Step::NEEDED_WHEN`](crate::Step::NEEDED_WHEN) is written; the host
/// reads the same key.
pub const NEEDED_WHEN_KEY: &str = "x-runbook-needed-when";

/// The key under which [`Step::TRANSIENT`](crate::Step::TRANSIENT) is
/// written (`""`: no failure is transient); the host reads the same key.
pub const TRANSIENT_KEY: &str = "x-runbook-transient";

/// Builds the descriptor from the crate's metadata and the step's traits.
pub fn describe<S: Step>(name: &str, version: &str, description: &str) -> Descriptor {
    let mut schema = schemars::schema_for!(S::Params);
    if !S::NEEDED_WHEN.is_empty() {
        let needed: Vec<serde_json::Value> = S::NEEDED_WHEN
            .iter()
            .map(|needed| {
                serde_json::json!({
                    "capability": capability_name(needed.capability),
                    "param": needed.param,
                    "values": needed.values,
                    "or_absent": needed.or_absent,
                    "grant": needed.grant,
                })
            })
            .collect();
        schema.insert(NEEDED_WHEN_KEY.to_owned(), serde_json::Value::Array(needed));
    }
    schema.insert(
        TRANSIENT_KEY.to_owned(),
        serde_json::Value::String(S::TRANSIENT.to_owned()),
    );
    Descriptor {
        name: name.to_owned(),
        version: version.to_owned(),
        description: description.to_owned(),
        params_schema: serde_json::to_string(&schema).unwrap_or_default(),
        capabilities: S::CAPABILITIES.to_vec(),
        optional_capabilities: S::OPTIONAL_CAPABILITIES.to_vec(),
        idempotent: S::IDEMPOTENT,
    }
}

/// Parses the step's JSON parameters, naming the path of the first problem.
pub fn parse<P: serde::de::DeserializeOwned>(params: &str) -> Result<P, Error> {
    let mut deserializer = serde_json::Deserializer::from_str(params);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Error::invalid_param(path, strip_position(&error.into_inner().to_string()))
    })
}

/// serde_json appends "at line 1 column 57" to its messages; the position
/// in the host's JSON rendering means nothing to the operator, who is shown
/// the place in the runbook instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The name of the custom section in which a plugin's capabilities are
/// written at build time, so that they can be read without running it.
pub const CAPABILITIES_SECTION: &str = "runbook:capabilities";

const fn capability_name(capability: crate::Capability) -> &'static str {
    match capability {
        crate::Capability::Http => "http",
        crate::Capability::Kube => "kube",
        crate::Capability::Aws => "aws",
        crate::Capability::Secrets => "secrets",
        crate::Capability::Fs => "fs",
        crate::Capability::Command => "command",
    }
}

/// The length of [`capabilities_section`]'s bytes.
pub const fn capabilities_len(
    capabilities: &[crate::Capability],
    optional: &[crate::Capability],
) -> usize {
    let mut total = 0;
    let mut index = 0;
    while index < capabilities.len() + optional.len() {
        if index > 0 {
            total += 1;
        }
        if index < capabilities.len() {
            total += capability_name(capabilities[index]).len();
        } else {
            total += capability_name(optional[index - capabilities.len()]).len() + 1;
        }
        index += 1;
    }
    total
}

/// The capabilities' names, comma-separated, optional ones ending in `?`
/// (`kube,http?`), as the section holds them.
pub const fn capabilities_section<const N: usize>(
    capabilities: &[crate::Capability],
    optional: &[crate::Capability],
) -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut at = 0;
    let mut index = 0;
    while index < capabilities.len() + optional.len() {
        if index > 0 {
            bytes[at] = b',';
            at += 1;
        }
        let is_optional = index >= capabilities.len();
        let name = if is_optional {
            capability_name(optional[index - capabilities.len()]).as_bytes()
        } else {
            capability_name(capabilities[index]).as_bytes()
        };
        let mut offset = 0;
        while offset < name.len() {
            bytes[at] = name[offset];
            at += 1;
            offset += 1;
        }
        if is_optional {
            bytes[at] = b'?';
            at += 1;
        }
        index += 1;
    }
    bytes
}
