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
        assert_eq!(params["b"].default.as_deref(), Some("X"));
    }
}
