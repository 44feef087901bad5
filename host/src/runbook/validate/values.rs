//! TOML values into the checked model: a step's `with` table as a tree of
//! templates, and any value as JSON.

use crate::diagnostic::{Diagnostics, Source, ValuePath};
use crate::runbook::Code;
use crate::runbook::ParamTree;
use crate::template::Template;
use std::sync::Arc;

/// Converts the step's `with` table, parsing every string as a template; a
/// string that does not parse is reported and kept as plain text.
pub(super) fn tree_from_toml(
    value: toml::Value,
    path: &ValuePath,
    source: &Arc<Source>,
    problems: &mut Diagnostics,
) -> ParamTree {
    match value {
        toml::Value::String(text) => match Template::parse(&text) {
            Ok(template) => ParamTree::String(template),
            Err(error) => {
                problems.push(
                    Code::Expression
                        .diagnostic(error.message)
                        .at(source, path)
                        .hint(error.hint),
                );
                ParamTree::Scalar(serde_json::Value::String(text))
            }
        },
        toml::Value::Array(items) => ParamTree::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| tree_from_toml(item, &path.index(index), source, problems))
                .collect(),
        ),
        toml::Value::Table(table) => ParamTree::Table(
            table
                .into_iter()
                .map(|(key, item)| {
                    let at = path.key(&key);
                    let template = match Template::parse(&key) {
                        Ok(template) => (!template.is_literal()).then_some(template),
                        Err(error) => {
                            problems.push(
                                Code::Expression
                                    .diagnostic(error.message)
                                    .at(source, &at)
                                    .hint(error.hint),
                            );
                            None
                        }
                    };
                    let child = tree_from_toml(item, &at, source, problems);
                    (key, template, child)
                })
                .collect(),
        ),
        other => ParamTree::Scalar(toml_to_json(other)),
    }
}

/// A TOML value as JSON; dates become their TOML text.
pub fn toml_to_json(value: toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text),
        toml::Value::Integer(number) => serde_json::Value::from(number),
        toml::Value::Float(number) => serde_json::Value::from(number),
        toml::Value::Boolean(flag) => serde_json::Value::Bool(flag),
        toml::Value::Datetime(date) => serde_json::Value::String(date.to_string()),
        toml::Value::Array(items) => items.into_iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .into_iter()
                .map(|(key, item)| (key, toml_to_json(item)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, source};

    #[test]
    fn every_string_of_a_tree_is_a_template_and_a_bad_one_stays_text() {
        let text =
            "url = \"${{ params.base }}/health\"\nchecks = [{ status = 200, body = \"${{\" }]\n";
        let source = source(text);
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut problems = Diagnostics::default();
        let tree = tree_from_toml(
            toml::Value::Table(table),
            &ValuePath::default(),
            &source,
            &mut problems,
        );
        assert_eq!(codes(&problems), ["Expression"]);
        let place = problems.0[0].place.as_ref().unwrap();
        assert_eq!(&text[place.span.clone()], "\"${{\"");
        let mut paths = Vec::new();
        tree.templates(&ValuePath::default(), &mut |_, at| {
            paths.push(at.to_string())
        });
        assert_eq!(paths, ["url"], "the bad string is no template");
    }

    #[test]
    fn toml_values_become_json_with_dates_as_their_text() {
        let value: toml::Table = toml::from_str(
            "a = 1\nb = 1.5\nc = true\nd = 2026-12-24T10:00:00Z\ne = [{ f = \"g\" }]",
        )
        .unwrap();
        assert_eq!(
            toml_to_json(toml::Value::Table(value)),
            serde_json::json!({"a": 1, "b": 1.5, "c": true, "d": "2026-12-24T10:00:00Z", "e": [{"f": "g"}]})
        );
    }
}
