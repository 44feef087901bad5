//! The parameters' values: `--set` first, then each default. A value must
//! match its parameter's pattern; a required one without a value is an
//! error, except to `validate`, which checks placeholders instead.

use super::{Bindings, names};
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::runbook::Code;
use crate::runbook::{ParamSpec, Runbook};
use std::collections::BTreeMap;

/// Every parameter's value; `--set` for an undeclared one is reported.
pub(super) fn bind_params(
    runbook: &Runbook,
    bindings: &Bindings,
    problems: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (key, value) in &bindings.sets {
        if runbook.params.contains_key(key) {
            params.insert(key.clone(), value.clone());
        } else {
            problems.push(
                Code::UnknownSet
                    .diagnostic(format!(
                        "`--set {key}=...` names no parameter of this runbook"
                    ))
                    .hint(if runbook.params.is_empty() {
                        "this runbook takes no parameters".to_owned()
                    } else {
                        format!("its parameters are: {}", names(runbook.params.keys()))
                    }),
            );
        }
    }
    for (name, spec) in &runbook.params {
        let path = ValuePath::default().key("params").key(name);
        let given = params.get(name).cloned();
        match given {
            Some(value) => check_pattern(runbook, name, spec, &value, &path, problems),
            None => {
                if let Some(value) = unset(name, spec, bindings.lenient) {
                    params.insert(name.clone(), value);
                } else {
                    problems.push(missing(runbook, name, spec, &path));
                }
            }
        }
    }
    params
}

/// A given value must match the parameter's pattern.
fn check_pattern(
    runbook: &Runbook,
    name: &str,
    spec: &ParamSpec,
    value: &str,
    path: &ValuePath,
    problems: &mut Diagnostics,
) {
    let Some(pattern) = &spec.pattern else {
        return;
    };
    if pattern.is_match(value) {
        return;
    }
    // Shown as the runbook wrote it, without the anchors validation added.
    let shown = pattern.as_str();
    let shown = shown
        .strip_prefix("^(?:")
        .and_then(|rest| rest.strip_suffix(")$"))
        .unwrap_or(shown);
    problems.push(
        Code::ParamMismatch
            .diagnostic(format!(
                "parameter `{name}` = `{value}` does not match its pattern `{shown}`"
            ))
            .at(&runbook.source, &path.key("pattern")),
    );
}

/// The value of a parameter not given: its default; else a placeholder
/// when `lenient`; else empty when it is optional. `None`: it is required.
fn unset(name: &str, spec: &ParamSpec, lenient: bool) -> Option<String> {
    match &spec.default {
        Some(default) => Some(default.clone()),
        None if lenient => Some(format!("<params.{name}>")),
        None if spec.required => None,
        None => Some(String::new()),
    }
}

/// A required parameter that was not given.
fn missing(runbook: &Runbook, name: &str, spec: &ParamSpec, path: &ValuePath) -> Diagnostic {
    let described = spec
        .description
        .as_ref()
        .map(|description| format!(" ({description})"))
        .unwrap_or_default();
    Code::MissingParam
        .diagnostic(format!("missing required parameter `{name}`"))
        .at(&runbook.source, path)
        .hint(format!("pass it with `--set {name}=VALUE`{described}"))
}
