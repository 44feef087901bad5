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
