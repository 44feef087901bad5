//! A step's `for_each`: a literal list, checked here element by element, or
//! an expression giving one, whose value is checked when the runbook is
//! bound.

use super::references::ReferenceCheck;
use super::values::toml_to_json;
use crate::diagnostic::{Diagnostics, ValuePath};
use crate::runbook::{Code, ForEach, MAX_FOR_EACH, for_each_problem, for_each_too_long};
use crate::template::Template;

/// The step's `for_each` at `at`. The expression form may refer only to
/// what is fixed before the run; a wrong one is reported and dropped.
pub(super) fn for_each(
    check: &ReferenceCheck<'_>,
    value: &toml::Value,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Option<ForEach> {
    let source = check.source;
    match value {
        toml::Value::Array(items) => items_of(check, items, at, problems),
        toml::Value::String(text) => match Template::parse(text) {
            Ok(template) => {
                check.fixed_before_run().check(&template, at, problems);
                Some(ForEach::Expression(template))
            }
            Err(error) => {
                problems.push(
                    Code::Expression
                        .diagnostic(error.message)
                        .at(source, at)
                        .hint(error.hint),
                );
                None
            }
        },
        _ => {
            problems.push(
                Code::ForEachShape.diagnostic("`for_each` is a list or an expression giving one")
                    .at(source, at)
                    .hint("write `for_each = [\"api\", \"worker\"]` or `for_each = \"${{ vars.services }}\"`"),
            );
            None
        }
    }
}

/// A literal list: not empty, not too long, no two elements under one name.
/// A list too long is dropped; the others are kept.
fn items_of(
    check: &ReferenceCheck<'_>,
    items: &[toml::Value],
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Option<ForEach> {
    let source = check.source;
    if items.is_empty() {
        problems.push(
            Code::ForEachEmpty
                .diagnostic("`for_each` is an empty list")
                .at(source, at),
        );
    }
    if items.len() > MAX_FOR_EACH {
        // Refused before anything is copied, so a huge list costs only
        // its parsing.
        problems.push(for_each_too_long(check.step_id, items.len()).at(source, at));
        return None;
    }
    let items: Vec<serde_json::Value> = items.iter().cloned().map(toml_to_json).collect();
    if let Some((problem, position)) = for_each_problem(check.step_id, &items) {
        let at = position.map_or_else(|| at.clone(), |position| at.index(position));
        problems.push(problem.at(source, &at));
    }
    Some(ForEach::Items(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{Scope, codes, source};

    /// The `for_each` written as `value`, and the codes of its problems.
    fn check_for_each(value: &str, scope: &Scope) -> (Option<ForEach>, Vec<&'static str>) {
        let text = format!("for_each = {value}");
        let source = source(&text);
        let table: toml::Table = toml::from_str(&text).unwrap();
        let mut problems = Diagnostics::default();
        let at = ValuePath::default().key("for_each");
        let checked = scope.check(&source, "deploy", &[], |check| {
            for_each(check, &table["for_each"], &at, &mut problems)
        });
        (checked, codes(&problems))
    }

    #[test]
    fn a_list_of_distinct_elements_is_kept_as_json() {
        let (checked, problems) =
            check_for_each("[\"api\", 2, { name = \"x\" }]", &Scope::default());
        assert!(problems.is_empty());
        let Some(ForEach::Items(items)) = checked else {
            panic!("{checked:?}")
        };
        assert_eq!(items[1], serde_json::json!(2));
        assert_eq!(items[2], serde_json::json!({"name": "x"}));
    }

    #[test]
    fn an_empty_list_and_a_repeat_are_reported_but_kept() {
        let (checked, problems) = check_for_each("[]", &Scope::default());
        assert!(matches!(checked, Some(ForEach::Items(items)) if items.is_empty()));
        assert_eq!(problems, ["ForEachEmpty"]);
        // `5`, not a name, runs under its position, as `deploy[1]`, like
        // the element `"1"`.
        let (_, problems) = check_for_each("[\"1\", 5]", &Scope::default());
        assert_eq!(problems, ["ForEachRepeat"]);
    }

    #[test]
    fn a_list_too_long_is_dropped_before_it_is_copied() {
        let list = format!("[{}]", vec!["0"; MAX_FOR_EACH + 1].join(", "));
        let (checked, problems) = check_for_each(&list, &Scope::default());
        assert!(checked.is_none());
        assert_eq!(problems, ["ForEachTooLong"]);
    }

    #[test]
    fn an_expression_may_name_only_what_is_fixed_before_the_run() {
        let mut scope = Scope::new(&[], &["services"]);
        scope.ancestors.insert("list".into());
        let (checked, problems) = check_for_each("\"${{ vars.services }}\"", &scope);
        assert!(matches!(checked, Some(ForEach::Expression(_))));
        assert!(problems.is_empty());
        let (_, problems) = check_for_each("\"${{ steps.list.outputs.names }}\"", &scope);
        assert_eq!(problems, ["OutputBeforeRun"]);
        let (checked, problems) = check_for_each("\"${{ vars.services\"", &scope);
        assert!(checked.is_none());
        assert_eq!(problems, ["Expression"]);
    }

    #[test]
    fn anything_else_is_neither_a_list_nor_an_expression() {
        for value in ["3", "true", "{ a = 1 }"] {
            let (checked, problems) = check_for_each(value, &Scope::default());
            assert!(checked.is_none());
            assert_eq!(problems, ["ForEachShape"], "{value}");
        }
    }
}
