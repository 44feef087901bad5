//! `[params.NAME]`: each parameter's pattern compiles, and its default
//! matches it. The values themselves are checked when the runbook is bound.

use crate::diagnostic::{Diagnostics, Source, ValuePath};
use crate::runbook::Code;
use crate::runbook::ParamSpec;
use crate::runbook::model::RawParam;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checks every declared parameter, in name order.
pub(super) fn validate_params(
    source: &Arc<Source>,
    raw: &BTreeMap<String, RawParam>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, ParamSpec> {
    let mut params = BTreeMap::new();
    for (name, param) in raw {
        let path = ValuePath::default().key("params").key(name);
        let pattern = param
            .pattern
            .as_ref()
            .and_then(|pattern| compile(source, &path, name, pattern, problems));
        if let (Some(default), Some(regex)) = (&param.default, &pattern)
            && !regex.is_match(default)
        {
            problems.push(
                Code::DefaultMismatch
                    .diagnostic(format!(
                        "the default of parameter `{name}` does not match its own pattern"
                    ))
                    .at(source, &path.key("default")),
            );
        }
        params.insert(
            name.clone(),
            ParamSpec {
                description: param.description.clone(),
                required: param.required,
                default: param.default.clone(),
                pattern,
            },
        );
    }
    params
}

/// The pattern, anchored so that it must match the whole value.
fn compile(
    source: &Arc<Source>,
    path: &ValuePath,
    name: &str,
    pattern: &str,
    problems: &mut Diagnostics,
) -> Option<Regex> {
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(regex) => Some(regex),
        Err(error) => {
            problems.push(
                Code::InvalidPattern
                    .diagnostic(format!("parameter `{name}` has an invalid pattern"))
                    .at(source, &path.key("pattern"))
                    // The regex error's last line says what is wrong; the
                    // lines above repeat the pattern.
                    .hint(error.to_string().lines().last().unwrap_or("").to_owned()),
            );
            None
        }
    }
}
