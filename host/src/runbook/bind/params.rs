//! The parameters' values: `--set` first, then each default. A `--set`
//! value is parsed to its parameter's type, and a string must match its
//! parameter's pattern; a required one without a value is an error, except
//! to `validate`, which checks placeholders of the type instead.

use super::{Bindings, names};
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::runbook::Code;
use crate::runbook::{ParamSpec, Runbook};
use serde_json::Value;
use std::collections::BTreeMap;

/// Every parameter's value, of its type; `--set` for an undeclared one,
/// or of a value not of its type, is reported.
pub(super) fn bind_params(
    runbook: &Runbook,
    bindings: &Bindings,
    problems: &mut Diagnostics,
) -> BTreeMap<String, Value> {
    // The text each parameter was given; a later `--set` wins.
    let mut given: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in &bindings.sets {
        if runbook.params.contains_key(key) {
            given.insert(key.as_str(), value.as_str());
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
    let mut params = BTreeMap::new();
    for (name, spec) in &runbook.params {
        let path = ValuePath::default().key("params").key(name);
        let value = match given.get(name.as_str()) {
            Some(text) => match spec.kind.parse(text) {
                Ok(value) => {
                    if let Value::String(text) = &value {
                        check_pattern(runbook, name, spec, text, &path, problems);
                    }
                    value
                }
                Err(why) => {
                    problems.push(
                        Code::ParamNotOfType
                            .diagnostic(format!("parameter `{name}` = `{text}` {why}"))
                            .at(&runbook.source, &path.key("type"))
                            .hint(spec.kind.hint(name)),
                    );
                    // A value of the type stands in, so that what uses it
                    // reports nothing that follows from this problem.
                    spec.kind.placeholder(name)
                }
            },
            None => match unset(name, spec, bindings.lenient) {
                Some(value) => value,
                None => {
                    problems.push(missing(runbook, name, spec, &path));
                    continue;
                }
            },
        };
        params.insert(name.clone(), value);
    }
    params
}

/// A given string must match the parameter's pattern.
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

/// The value of a parameter not given: its default; else a placeholder of
/// its type when `lenient`; else its type's empty value when it is
/// optional (`""` for a string, as before types). `None`: it is required.
fn unset(name: &str, spec: &ParamSpec, lenient: bool) -> Option<Value> {
    match &spec.default {
        Some(default) => Some(default.clone()),
        None if lenient => Some(spec.kind.placeholder(name)),
        None if spec.required => None,
        None => Some(spec.kind.unset()),
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

    const TYPED: &str = "[params.percentage]\ntype = \"integer\"\nrequired = true\n\n[params.ratio]\ntype = \"number\"\ndefault = 0.5\n\n[params.dry_run]\ntype = \"boolean\"\n\n[params.services]\ntype = \"list\"\ndefault = [\"api\", \"worker\"]\n\n[params.version]\ndefault = \"1.0\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";

    #[test]
    fn a_set_value_is_parsed_to_its_type() {
        let runbook = runbook(TYPED);
        let plan = bound(
            &runbook,
            None,
            &[
                ("percentage", "10"),
                ("ratio", "0.25"),
                ("dry_run", "true"),
                ("services", "api, worker, jobs"),
                ("version", "10"),
            ],
        )
        .unwrap();
        assert_eq!(plan.params["percentage"], serde_json::json!(10));
        assert_eq!(plan.params["ratio"], serde_json::json!(0.25));
        assert_eq!(plan.params["dry_run"], serde_json::json!(true));
        assert_eq!(
            plan.params["services"],
            serde_json::json!(["api", "worker", "jobs"])
        );
        assert_eq!(
            plan.params["version"],
            serde_json::json!("10"),
            "a parameter without `type` stays a string"
        );
        let listed = bound(
            &runbook,
            None,
            &[("percentage", "1"), ("services", r#"["api", 2]"#)],
        )
        .unwrap();
        assert_eq!(listed.params["services"], serde_json::json!(["api", 2]));
    }

    #[test]
    fn defaults_keep_their_type_and_optional_typed_parameters_are_null() {
        let plan = bound(&runbook(TYPED), None, &[("percentage", "5")]).unwrap();
        assert_eq!(plan.params["ratio"], serde_json::json!(0.5));
        assert_eq!(
            plan.params["services"],
            serde_json::json!(["api", "worker"])
        );
        assert_eq!(plan.params["dry_run"], Value::Null);
        assert_eq!(plan.params["version"], "1.0");
    }

    #[test]
    fn a_set_value_not_of_the_type_is_reported_at_the_type_with_an_example() {
        let problems = bound(
            &runbook(TYPED),
            None,
            &[("percentage", "ten"), ("dry_run", "yes")],
        )
        .unwrap_err();
        assert_eq!(problems.0.len(), 2, "{problems}");
        let dry_run = &problems.0[0];
        assert_eq!(dry_run.code, Some("ParamNotOfType"));
        assert_eq!(
            dry_run.message,
            "parameter `dry_run` = `yes` is not `true` or `false`"
        );
        let percentage = &problems.0[1];
        assert_eq!(percentage.code, Some("ParamNotOfType"));
        assert_eq!(
            percentage.message,
            "parameter `percentage` = `ten` is not an integer"
        );
        assert_eq!(
            percentage.hint.as_deref(),
            Some("expected an integer, e.g. `--set percentage=10`")
        );
        let rendered = percentage.to_string();
        assert!(rendered.contains("r.toml:"), "{rendered}");
        assert!(rendered.contains("type = \"integer\""), "{rendered}");
    }

    #[test]
    fn validate_checks_a_placeholder_of_each_type() {
        let runbook = runbook(&TYPED.replace("default = [\"api\", \"worker\"]", ""));
        let bindings = Bindings {
            lenient: true,
            ..Bindings::default()
        };
        let mut problems = Diagnostics::default();
        let params = bind_params(&runbook, &bindings, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(params["percentage"], serde_json::json!(0));
        assert_eq!(params["dry_run"], serde_json::json!(false));
        assert_eq!(params["services"], serde_json::json!(["<params.services>"]));
        assert_eq!(params["ratio"], serde_json::json!(0.5));
    }

    fn runbook_without_params() -> std::sync::Arc<Runbook> {
        runbook("[[steps]]\nid = \"a\"\nuses = \"noop\"\n")
    }
}
