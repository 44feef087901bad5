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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::bind::testing::{bound, codes, runbook};

    const PARAMS: &str = "[params.version]\nrequired = true\npattern = \"[0-9]+\\\\.[0-9]+\"\ndescription = \"the release\"\n\n[params.region]\ndefault = \"eu\"\n\n[params.note]\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";

    #[test]
    fn set_values_then_defaults_then_empty_for_optional_ones() {
        let runbook = runbook(PARAMS);
        let plan = bound(&runbook, None, &[("version", "1.0"), ("version", "1.2")]).unwrap();
        assert_eq!(plan.params["version"], "1.2", "a later --set wins");
        assert_eq!(plan.params["region"], "eu");
        assert_eq!(plan.params["note"], "");
    }

    #[test]
    fn validate_checks_a_placeholder_where_a_run_needs_a_value() {
        let runbook = runbook(PARAMS);
        let bindings = Bindings {
            lenient: true,
            ..Bindings::default()
        };
        let mut problems = Diagnostics::default();
        let params = bind_params(&runbook, &bindings, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(params["version"], "<params.version>");
        assert_eq!(params["region"], "eu");
    }

    #[test]
    fn a_missing_required_parameter_is_reported_with_its_description() {
        let problems = bound(&runbook(PARAMS), None, &[]).unwrap_err();
        assert_eq!(problems.0[0].code, Some("MissingParam"));
        assert_eq!(
            problems.0[0].hint.as_deref(),
            Some("pass it with `--set version=VALUE` (the release)")
        );
    }

    #[test]
    fn a_value_must_match_the_pattern_shown_as_written() {
        let problems = bound(&runbook(PARAMS), None, &[("version", "latest")]).unwrap_err();
        assert_eq!(problems.0[0].code, Some("ParamMismatch"));
        assert!(
            problems.0[0]
                .message
                .ends_with("its pattern `[0-9]+\\.[0-9]+`"),
            "{}",
            problems.0[0].message
        );
    }

    #[test]
    fn a_set_for_an_undeclared_parameter_is_reported_with_the_declared_ones() {
        let runbook = runbook(PARAMS);
        let problems = bound(&runbook, None, &[("version", "1.0"), ("verison", "1")]).unwrap_err();
        assert_eq!(problems.0[0].code, Some("UnknownSet"));
        assert_eq!(
            problems.0[0].hint.as_deref(),
            Some("its parameters are: `note`, `region`, `version`")
        );
        let none = runbook_without_params();
        assert_eq!(codes(bound(&none, None, &[("x", "1")])), ["UnknownSet"]);
    }

    fn runbook_without_params() -> std::sync::Arc<Runbook> {
        runbook("[[steps]]\nid = \"a\"\nuses = \"noop\"\n")
    }
}
