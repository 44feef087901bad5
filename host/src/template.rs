//! `${{ ... }}` expressions in runbook strings: parsed once at validation,
//! evaluated against a scope at run time. Pure: no I/O, no secrets' values.

use std::fmt;
use std::ops::Range;

/// A reference an expression can make.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `params.NAME`: a runbook parameter.
    Param(String),
    /// `vars.NAME`: a variable of the chosen environment.
    Var(String),
    /// `steps.ID.outputs.KEY`: an output of an earlier step.
    StepOutput {
        /// The step's id.
        step: String,
        /// The output's key.
        key: String,
    },
    /// `secrets.NAME`: a sealed secret handle.
    Secret(String),
    /// `run.id`, `run.environment`, `run.operator`.
    Run(RunField),
}

/// The facts about the current run an expression can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunField {
    /// The run's id.
    Id,
    /// The environment's name.
    Environment,
    /// Who started the run.
    Operator,
}

impl fmt::Display for Reference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Param(name) => write!(formatter, "params.{name}"),
            Reference::Var(name) => write!(formatter, "vars.{name}"),
            Reference::StepOutput { step, key } => write!(formatter, "steps.{step}.outputs.{key}"),
            Reference::Secret(name) => write!(formatter, "secrets.{name}"),
            Reference::Run(RunField::Id) => formatter.write_str("run.id"),
            Reference::Run(RunField::Environment) => formatter.write_str("run.environment"),
            Reference::Run(RunField::Operator) => formatter.write_str("run.operator"),
        }
    }
}

/// A piece of a templated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as it is.
    Literal(String),
    /// An expression, with its byte range (the whole `${{ ... }}`) in the string.
    Expression(Reference, Range<usize>),
}

/// A string with zero or more `${{ ... }}` expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            let reference = parse_reference(text[body_start..body_start + close].trim()).map_err(
                |(message, hint)| TemplateError {
                    message,
                    hint,
                    range: start..end,
                },
            )?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expression(reference, start..end));
            rest = end;
        }
        literal.push_str(&text[rest..]);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Every reference in the string.
    pub fn references(&self) -> impl Iterator<Item = (&Reference, &Range<usize>)> {
        self.parts.iter().filter_map(|part| match part {
            Part::Expression(reference, range) => Some((reference, range)),
            Part::Literal(_) => None,
        })
    }

    /// The single reference when the string is nothing but one expression:
    /// its value then keeps its type (a number stays a number).
    pub fn sole_reference(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Expression(reference, _)] => Some(reference),
            _ => None,
        }
    }

    /// Whether the string has no expression.
    pub fn is_literal(&self) -> bool {
        self.references().next().is_none()
    }

    /// Renders the string, asking `lookup` for each reference's text.
    pub fn render<E>(
        &self,
        mut lookup: impl FnMut(&Reference) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Expression(reference, _) => out.push_str(&lookup(reference)?),
            }
        }
        Ok(out)
    }
}

const EXPECTED: &str = "write one of `params.NAME`, `vars.NAME`, `steps.ID.outputs.KEY`, `secrets.NAME`, `run.id`, `run.environment`, `run.operator`";

fn parse_reference(body: &str) -> Result<Reference, (String, String)> {
    if body.is_empty() {
        return Err(("empty expression".into(), EXPECTED.into()));
    }
    let segments: Vec<&str> = body.split('.').collect();
    if let Some(bad) = segments.iter().find(|segment| !is_name(segment)) {
        return Err((
            format!("`{body}` is not a reference (bad name `{bad}`)"),
            format!("names are letters, digits, `_` and `-`; {EXPECTED}"),
        ));
    }
    let reference = match segments.as_slice() {
        ["params", name] => Reference::Param((*name).into()),
        ["vars", name] => Reference::Var((*name).into()),
        ["secrets", name] => Reference::Secret((*name).into()),
        ["steps", step, "outputs", key] => Reference::StepOutput {
            step: (*step).into(),
            key: (*key).into(),
        },
        ["run", "id"] => Reference::Run(RunField::Id),
        ["run", "environment"] => Reference::Run(RunField::Environment),
        ["run", "operator"] => Reference::Run(RunField::Operator),
        _ => {
            return Err((format!("unknown reference `{body}`"), EXPECTED.into()));
        }
    };
    Ok(reference)
}

fn is_name(segment: &str) -> bool {
    !segment.is_empty()
        && segment.chars().all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        Template::parse(text)
            .expect("parses")
            .render(|reference| Ok::<_, ()>(format!("<{reference}>")))
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
    fn a_lone_expression_is_a_sole_reference() {
        let template = Template::parse("${{ vars.replicas }}").unwrap();
        assert_eq!(
            template.sole_reference(),
            Some(&Reference::Var("replicas".into()))
        );
        assert_eq!(
            Template::parse("x${{ vars.replicas }}")
                .unwrap()
                .sole_reference(),
            None
        );
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
