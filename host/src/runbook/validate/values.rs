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
                    let child = tree_from_toml(item, &path.key(&key), source, problems);
                    (key, child)
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
