//! What `export_step!` expands to call; not part of the public API.

use crate::bindings::runbook::plugin::types::Descriptor;
use crate::{Error, Step};

/// Builds the descriptor from the crate's metadata and the step's traits.
pub fn describe<S: Step>(name: &str, version: &str, description: &str) -> Descriptor {
    let schema = schemars::schema_for!(S::Params);
    Descriptor {
        name: name.to_owned(),
        version: version.to_owned(),
        description: description.to_owned(),
        params_schema: serde_json::to_string(&schema).unwrap_or_default(),
        capabilities: S::CAPABILITIES.to_vec(),
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
