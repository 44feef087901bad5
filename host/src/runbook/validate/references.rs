//! What a step's expressions may refer to: declared parameters, variables
//! some environment defines, outputs and outcomes of steps it needs, `item`
//! in a `for_each` step, and secrets it is granted. Also the step's `if`,
//! which is one such expression.

use super::StepContext;
use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath};
use crate::expression::Expr;
use crate::template::{Reference, Template};
use std::ops::Range;
use std::sync::Arc;

/// What is wrong with a reference, and what to do about it.
type Problem = (String, String);

/// The references one value of a step may make.
#[derive(Clone, Copy)]
pub(super) struct ReferenceCheck<'a> {
    /// The runbook, to point at the expression.
    pub(super) source: &'a Arc<Source>,
    /// What the rest of the runbook declares.
    pub(super) context: &'a StepContext<'a>,
    /// The step's id.
    pub(super) step_id: &'a str,
    /// The secrets the step is granted.
    pub(super) secret_grants: &'a [String],
    /// Whether the value is known only at run time (`with`, `if`), so that
    /// it may read steps' outputs.
    pub(super) allow_step_outputs: bool,
    /// Whether secrets may appear: only in `with`, where the host can
    /// redact them.
    pub(super) allow_secrets: bool,
    /// Whether the step has `for_each`, so that `item` is known.
    pub(super) allow_item: bool,
}

impl ReferenceCheck<'_> {
    /// The check for values fixed before the run starts (grants,
    /// `for_each`): no step outputs, secrets or `item`.
    pub(super) fn fixed_before_run(self) -> Self {
        ReferenceCheck {
            allow_step_outputs: false,
            allow_secrets: false,
            allow_item: false,
            ..self
        }
    }

    /// Reports each reference of `template`, the string at `at`, that this
    /// value may not make, pointing at its expression.
    pub(super) fn check(&self, template: &Template, at: &ValuePath, problems: &mut Diagnostics) {
        for (reference, range) in template.references() {
            if let Some((message, hint)) = self.problem(reference) {
                problems.push(
                    Diagnostic::new(message)
                        .at_span(self.source, self.span_in_string(at, range))
                        .hint(hint),
                );
            }
        }
    }

    /// The span of an expression inside a string value: exact when the
    /// string is written without escapes, else the whole string.
    fn span_in_string(&self, at: &ValuePath, range: &Range<usize>) -> Range<usize> {
        let whole = self.source.span_of(at).unwrap_or(0..0);
        let start = whole.start + 1 + range.start;
        let end = whole.start + 1 + range.end;
        match self.source.text.get(start..end) {
            Some(text) if text.starts_with("${{") && text.ends_with("}}") => start..end,
            _ => whole,
        }
    }

    /// Why this value may not make `reference`, if it may not.
    pub(super) fn problem(&self, reference: &Reference) -> Option<Problem> {
        match reference {
            Reference::Param(name) => self.param_problem(reference, name),
            Reference::Var(name) => self.var_problem(name),
            Reference::StepOutput { step, .. } => self.output_problem(reference, step),
            Reference::StepOutcome(step) => self.step_problem(reference, step),
            Reference::Item(_) if !self.allow_item => Some((
                format!("`{reference}` is only known in a step with `for_each`"),
                "add `for_each = [...]` to this step".into(),
            )),
            Reference::Secret(name) => self.secret_problem(reference, name),
            Reference::Item(_) | Reference::Run(_) => None,
        }
    }

    /// A parameter the runbook does not declare.
    fn param_problem(&self, reference: &Reference, name: &str) -> Option<Problem> {
        let params = self.context.declared.params;
        if params.contains_key(name) {
            return None;
        }
        let hint = if params.is_empty() {
            format!("declare it: `[params.{name}]`")
        } else {
            format!(
                "declared parameters: {}; or declare it: `[params.{name}]`",
                params.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        Some((
            format!("unknown parameter `{name}` in `${{{{ {reference} }}}}`"),
            hint,
        ))
    }

    /// A variable no environment defines; whether the chosen one does is
    /// checked when the runbook is bound.
    fn var_problem(&self, name: &str) -> Option<Problem> {
        let defined = self
            .context
            .declared
            .environments
            .values()
            .any(|environment| environment.vars.contains_key(name));
        (!defined).then(|| {
            (
                format!("no environment defines variable `{name}`"),
                format!("add `{name} = ...` under `[environments.NAME.vars]`"),
            )
        })
    }

    /// An output: known only at run time, of a step this one needs, which
    /// runs once.
    fn output_problem(&self, reference: &Reference, step: &str) -> Option<Problem> {
        if !self.allow_step_outputs {
            return Some((
                format!("`{reference}` cannot be used in a grant"),
                "grants are fixed before the run starts; use `params` or `vars` here".into(),
            ));
        }
        self.step_problem(reference, step).or_else(|| {
            self.context.for_each_steps.contains(step).then(|| {
                (
                    format!(
                        "step `{step}` runs once per `for_each` element: its outputs cannot be referenced"
                    ),
                    "refer to `steps.ID.outcome`, or split the step".into(),
                )
            })
        })
    }

    /// An output or outcome of a step this one does not need, so that it
    /// may not have run yet.
    fn step_problem(&self, reference: &Reference, step: &str) -> Option<Problem> {
        if self.context.ancestors.contains(step) {
            return None;
        }
        let hint = if step == self.step_id {
            "a step cannot read its own outputs".into()
        } else {
            format!(
                "add `needs = [\"{step}\"]` to step `{}` (steps without `needs` follow the step above)",
                self.step_id
            )
        };
        Some((
            format!(
                "`{reference}` refers to step `{step}`, which `{}` does not need",
                self.step_id
            ),
            hint,
        ))
    }

    /// A secret outside `with`, or one the step is not granted.
    fn secret_problem(&self, reference: &Reference, name: &str) -> Option<Problem> {
        if !self.allow_secrets {
            return Some((
                format!("`{reference}` cannot be used here"),
                "secrets can be used only in a step's `with`".into(),
            ));
        }
        let granted = self.secret_grants.iter().any(|secret| secret == name);
        (!granted).then(|| {
            (
                format!(
                    "step `{}` uses secret `{name}` without a grant",
                    self.step_id
                ),
                format!("grant it to this step: `grants.secrets = [\"{name}\"]`"),
            )
        })
    }
}

/// The step's `if` at `at`: one expression, bare or as `${{ ... }}`, whose
/// references `check` allows. A condition that does not parse is reported
/// and dropped.
pub(super) fn condition(
    check: &ReferenceCheck<'_>,
    text: &str,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Option<Expr> {
    let source = check.source;
    match parse_condition(text) {
        Ok(expression) => {
            for reference in expression.references() {
                if let Some((message, hint)) = check.problem(reference) {
                    problems.push(Diagnostic::new(message).at(source, at).hint(hint));
                }
            }
            Some(expression)
        }
        Err((message, hint)) => {
            problems.push(
                Diagnostic::new(format!("`if`: {message}"))
                    .at(source, at)
                    .hint(hint),
            );
            None
        }
    }
}

/// An `if` as an expression: written bare (`steps.a.outcome == 'failed'`),
/// or as a string that is one `${{ ... }}` and nothing else.
fn parse_condition(text: &str) -> Result<Expr, Problem> {
    if !text.contains("${{") {
        return Expr::parse(text);
    }
    let template = Template::parse(text).map_err(|error| (error.message, error.hint))?;
    template.sole_expression().cloned().ok_or((
        "`if` must be one expression".to_owned(),
        "write `if = \"${{ steps.migrate.outcome == 'failed' }}\"`".to_owned(),
    ))
}
