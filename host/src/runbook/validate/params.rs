//! `[params.NAME]`: each parameter's type, its default (of that type), and
//! its pattern (a string's only), which compiles and which a default
//! matches. The values themselves are checked when the runbook is bound.

use super::values::toml_to_json;
use crate::diagnostic::{Diagnostics, Source, ValuePath};
use crate::runbook::Code;
use crate::runbook::model::RawParam;
use crate::runbook::{ParamSpec, ParamType};
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
        let kind = param.kind.unwrap_or_default();
        let pattern = match (&param.pattern, kind) {
            (None, _) => None,
            (Some(pattern), ParamType::String) => compile(source, &path, name, pattern, problems),
            (Some(_), _) => {
                problems.push(
                    Code::PatternNotString
                        .diagnostic(format!(
                            "parameter `{name}` has `type = \"{}\"`; only a string parameter has a `pattern`",
                            kind.name()
                        ))
                        .at(source, &path.key("pattern"))
                        .hint(format!(
                            "remove `pattern`: a value that is not {} is refused already",
                            kind.described()
                        )),
                );
                None
            }
        };
        let default = param
            .default
            .as_ref()
            .and_then(|default| typed_default(source, &path, name, kind, default, problems));
        if let (Some(serde_json::Value::String(default)), Some(regex)) = (&default, &pattern)
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
                kind,
                default,
                pattern,
            },
        );
    }
    params
}

/// The default as a value of the parameter's type; one of another type is
/// reported and left out.
fn typed_default(
    source: &Arc<Source>,
    path: &ValuePath,
    name: &str,
    kind: ParamType,
    default: &toml::Value,
    problems: &mut Diagnostics,
) -> Option<serde_json::Value> {
    if kind.admits(default) {
        return Some(toml_to_json(default.clone()));
    }
    let hint = if kind == ParamType::String {
        // Without `type`, a parameter is a string: say how to declare the
        // type its default has.
        format!(
            "write `{}`, or declare the parameter's type: `type = \"{}\"`",
            kind.default_example(),
            suggested_type(default)
        )
    } else {
        format!("write `{}`", kind.default_example())
    };
    problems.push(
        Code::DefaultType
            .diagnostic(format!(
                "the default of parameter `{name}` is not {}",
                kind.described()
            ))
            .at(source, &path.key("default"))
            .hint(hint),
    );
    None
}

/// The type a default of the wrong type was probably meant to have.
fn suggested_type(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "number",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Array(_) => "list",
        _ => "string",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, raw, source};

    /// The `[params]` written as the TOML `text`, and its problems' codes.
    fn checked(text: &str) -> (BTreeMap<String, ParamSpec>, Vec<&'static str>) {
        let source = source(text);
        let mut problems = Diagnostics::default();
        let params = validate_params(&source, &raw(text), &mut problems);
        (params, codes(&problems))
    }

    #[test]
    fn a_pattern_must_match_the_whole_value() {
        let (params, problems) = checked("[version]\npattern = \"[0-9]+\"\ndefault = \"42\"");
        assert!(problems.is_empty());
        let pattern = params["version"].pattern.as_ref().unwrap();
        assert!(pattern.is_match("42"));
        assert!(!pattern.is_match("v42"), "anchored at the start");
        assert!(!pattern.is_match("42a"), "anchored at the end");
    }

    #[test]
    fn alternatives_are_anchored_as_a_whole() {
        let (params, _) = checked("[stage]\npattern = \"dev|prod\"");
        let pattern = params["stage"].pattern.as_ref().unwrap();
        assert!(pattern.is_match("prod"));
        assert!(!pattern.is_match("production"));
    }

    #[test]
    fn a_wrong_pattern_is_left_out_and_a_default_it_refuses_is_reported() {
        let (params, problems) = checked(
            "[a]\npattern = \"(\"\ndefault = \"x\"\n\n[b]\npattern = \"[a-z]+\"\ndefault = \"X\"\nrequired = true\ndescription = \"b\"",
        );
        assert_eq!(problems, ["InvalidPattern", "DefaultMismatch"]);
        assert!(params["a"].pattern.is_none());
        assert!(params["b"].required);
        assert_eq!(params["b"].default, Some(serde_json::json!("X")));
    }

    #[test]
    fn a_parameter_without_a_type_is_a_string_as_before() {
        let (params, problems) = checked("[version]\ndefault = \"1.0\"");
        assert!(problems.is_empty());
        assert_eq!(params["version"].kind, ParamType::String);
        assert_eq!(params["version"].default, Some(serde_json::json!("1.0")));
    }

    #[test]
    fn a_default_keeps_its_type() {
        let (params, problems) = checked(
            "[percentage]\ntype = \"integer\"\ndefault = 10\n\n[ratio]\ntype = \"number\"\ndefault = 0.5\n\n[whole]\ntype = \"number\"\ndefault = 2\n\n[dry_run]\ntype = \"boolean\"\ndefault = true\n\n[services]\ntype = \"list\"\ndefault = [\"api\", \"worker\"]",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(params["percentage"].kind, ParamType::Integer);
        assert_eq!(params["percentage"].default, Some(serde_json::json!(10)));
        assert_eq!(params["ratio"].default, Some(serde_json::json!(0.5)));
        assert_eq!(params["whole"].default, Some(serde_json::json!(2)));
        assert_eq!(params["dry_run"].default, Some(serde_json::json!(true)));
        assert_eq!(
            params["services"].default,
            Some(serde_json::json!(["api", "worker"]))
        );
    }

    #[test]
    fn a_default_of_another_type_is_reported_and_left_out() {
        let (params, problems) = checked(
            "[percentage]\ntype = \"integer\"\ndefault = \"10\"\n\n[services]\ntype = \"list\"\ndefault = [[\"api\"]]\n\n[untyped]\ndefault = 3",
        );
        assert_eq!(problems, ["DefaultType", "DefaultType", "DefaultType"]);
        assert!(params["percentage"].default.is_none());
        assert!(params["services"].default.is_none());
        assert!(params["untyped"].default.is_none());
    }

    #[test]
    fn the_default_of_an_untyped_parameter_says_how_to_declare_its_type() {
        let text = "[replicas]\ndefault = 3\n\n[percentage]\ntype = \"integer\"\ndefault = true";
        let mut problems = Diagnostics::default();
        validate_params(&source(text), &raw(text), &mut problems);
        let hints: Vec<&str> = problems
            .0
            .iter()
            .map(|problem| problem.hint.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            hints,
            [
                "write `default = 10`",
                "write `default = \"text\"`, or declare the parameter's type: `type = \"integer\"`",
            ]
        );
        assert_eq!(
            problems.0[1].message,
            "the default of parameter `replicas` is not a string"
        );
    }

    #[test]
    fn only_a_string_has_a_pattern() {
        let (params, problems) =
            checked("[percentage]\ntype = \"integer\"\npattern = \"[0-9]+\"\ndefault = 5");
        assert_eq!(problems, ["PatternNotString"]);
        assert!(params["percentage"].pattern.is_none());
        assert_eq!(params["percentage"].default, Some(serde_json::json!(5)));
    }

    #[test]
    fn an_unknown_type_is_refused_by_its_name() {
        let problems = crate::runbook::validate::testing::codes_of(
            "[runbook]\nname = \"r\"\n\n[params.x]\ntype = \"int\"\n\n[[steps]]\nid = \"a\"\nkind = \"manual\"\nchecklist = [\"x\"]\n",
        );
        assert_eq!(problems, ["Toml"]);
    }
}
