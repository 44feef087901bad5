//! `${{ ... }}` expressions in runbook strings: parsed once at validation,
//! evaluated against a scope at run time. Pure: no I/O, no secrets' values.

use std::ops::Range;

pub use crate::expression::{Expr, Reference, RunField};

/// A piece of a templated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text copied as it is.
    Literal(String),
    /// An expression, with its byte range (the whole `${{ ... }}`) in the string.
    Expression(Expr, Range<usize>),
}

/// A string with zero or more `${{ ... }}` expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The pieces in order.
    pub parts: Vec<Part>,
}

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: String,
    /// Where in the string.
    pub range: Range<usize>,
}

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

impl Template {
    /// Parses a string. `$${{` writes a literal `${{`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = 0;
        while let Some(found) = text[rest..].find(OPEN) {
            let start = rest + found;
            if start > 0 && text[..start].ends_with('$') {
                literal.push_str(&text[rest..start - 1]);
                literal.push_str(OPEN);
                rest = start + OPEN.len();
                continue;
            }
            literal.push_str(&text[rest..start]);
            let body_start = start + OPEN.len();
            let Some(close) = text[body_start..].find(CLOSE) else {
                return Err(TemplateError {
                    message: "`${{` is not closed".into(),
                    hint: "close the expression with `}}`, as in `${{ params.version }}`".into(),
                    range: start..text.len(),
                });
            };
            let end = body_start + close + CLOSE.len();
            let expression = Expr::parse(text[body_start..body_start + close].trim()).map_err(
                |(message, hint)| TemplateError {
                    message,
                    hint,
                    range: start..end,
                },
            )?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expression(expression, start..end));
            rest = end;
        }
        literal.push_str(&text[rest..]);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Every reference in the string, with the range of its expression.
    pub fn references(&self) -> impl Iterator<Item = (&Reference, &Range<usize>)> {
        self.parts.iter().flat_map(|part| match part {
            Part::Expression(expression, range) => expression
                .references()
                .into_iter()
                .map(|reference| (reference, range))
                .collect::<Vec<_>>(),
            Part::Literal(_) => Vec::new(),
        })
    }

    /// The expression when the string is nothing but one: its value then
    /// keeps its type (a number stays a number).
    pub fn sole_expression(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expression(expression, _)] => Some(expression),
            _ => None,
        }
    }

    /// Whether the string has no expression.
    pub fn is_literal(&self) -> bool {
        self.references().next().is_none()
    }

    /// Renders the string, asking `lookup` for each reference's value;
    /// values inside longer text are written as text.
    pub fn render<E>(
        &self,
        mut lookup: impl FnMut(&Reference) -> Result<serde_json::Value, E>,
    ) -> Result<String, E> {
        self.render_with(|expression| expression.evaluate(&mut lookup))
    }

    /// The string's value: a lone expression keeps its type, anything else
    /// is text.
    pub fn value<E>(
        &self,
        mut lookup: impl FnMut(&Reference) -> Result<serde_json::Value, E>,
    ) -> Result<serde_json::Value, E> {
        self.value_with(|expression| expression.evaluate(&mut lookup))
    }

    /// As [`Template::value`], with `evaluate` giving each expression's
    /// value (a caller that must see a whole expression, not only its
    /// references).
    pub fn value_with<E>(
        &self,
        mut evaluate: impl FnMut(&Expr) -> Result<serde_json::Value, E>,
    ) -> Result<serde_json::Value, E> {
        match self.sole_expression() {
            Some(expression) => evaluate(expression),
            None => self.render_with(evaluate).map(serde_json::Value::String),
        }
    }

    fn render_with<E>(
        &self,
        mut evaluate: impl FnMut(&Expr) -> Result<serde_json::Value, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Expression(expression, _) => out.push_str(&as_text(&evaluate(expression)?)),
            }
        }
        Ok(out)
    }
}

/// A value as it reads inside a longer string.
pub fn as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        Template::parse(text)
            .expect("parses")
            .render(|reference| Ok::<_, ()>(format!("<{reference}>").into()))
            .expect("renders")
    }

    #[test]
    fn a_string_without_expressions_is_literal() {
        let template = Template::parse("plain text").unwrap();
        assert!(template.is_literal());
        assert_eq!(render("plain text"), "plain text");
    }

    #[test]
    fn every_kind_of_reference_parses() {
        assert_eq!(
            render(
                "${{ params.version }}|${{vars.base_url}}|${{ steps.push.outputs.digest }}|${{ secrets.KEY }}|${{ run.id }}"
            ),
            "<params.version>|<vars.base_url>|<steps.push.outputs.digest>|<secrets.KEY>|<run.id>"
        );
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let template = Template::parse("${{ vars.replicas }}").unwrap();
        let value = template
            .value(|_| Ok::<_, ()>(serde_json::json!(3)))
            .unwrap();
        assert_eq!(value, serde_json::json!(3));
        let text = Template::parse("x${{ vars.replicas }}").unwrap();
        let value = text.value(|_| Ok::<_, ()>(serde_json::json!(3))).unwrap();
        assert_eq!(value, serde_json::json!("x3"));
    }

    #[test]
    fn a_doubled_dollar_escapes_an_expression() {
        assert_eq!(
            render("$${{ not.an.expression }}"),
            "${{ not.an.expression }}"
        );
    }

    #[test]
    fn an_unclosed_expression_is_rejected_with_its_range() {
        let error = Template::parse("url ${{ params.x").unwrap_err();
        assert_eq!(error.range, 4..16);
        assert!(error.message.contains("not closed"));
    }

    #[test]
    fn an_unknown_root_is_rejected_with_a_hint() {
        let error = Template::parse("${{ env.HOME }}").unwrap_err();
        assert!(error.message.contains("unknown reference `env.HOME`"));
        assert!(error.hint.contains("params.NAME"));
    }

    #[test]
    fn ranges_cover_the_whole_expression() {
        let template = Template::parse("a ${{ params.x }} b").unwrap();
        let (_, range) = template.references().next().unwrap();
        assert_eq!(range, &(2..17));
    }
}
