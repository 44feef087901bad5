//! What a step's expressions may refer to: declared parameters, variables
//! some environment defines, outputs and outcomes of steps it needs, `item`
//! in a `for_each` step, and secrets it is granted. Also the step's `if`,
//! which is one such expression.

use super::StepContext;
use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath};
use crate::expression::Expr;
use crate::runbook::Code;
use crate::template::{Reference, Template};
use std::ops::Range;
use std::sync::Arc;

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
            if let Some(problem) = self.problem(reference) {
                let span = self.span_in_string(at, range);
                problems.push(problem.at_span(self.source, span));
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

    /// Why this value may not make `reference`, if it may not, without
    /// its place.
    pub(super) fn problem(&self, reference: &Reference) -> Option<Diagnostic> {
        match reference {
            Reference::Param(name) => self.param_problem(reference, name),
            Reference::Var(name) => self.var_problem(name),
            Reference::StepOutput { step, .. } => self.output_problem(reference, step),
            Reference::StepOutcome(step) => self.step_problem(reference, step),
            Reference::Item(_) if !self.allow_item => Some(
                Code::ItemOutsideForEach
                    .diagnostic(format!(
                        "`{reference}` is only known in a step with `for_each`"
                    ))
                    .hint("add `for_each = [...]` to this step"),
            ),
            Reference::Secret(name) => self.secret_problem(reference, name),
            Reference::Item(_) | Reference::Run(_) => None,
        }
    }

    /// A parameter the runbook does not declare.
    fn param_problem(&self, reference: &Reference, name: &str) -> Option<Diagnostic> {
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
        Some(
            Code::UnknownParam
                .diagnostic(format!(
                    "unknown parameter `{name}` in `${{{{ {reference} }}}}`"
                ))
                .hint(hint),
        )
    }

    /// A variable no environment defines; whether the chosen one does is
    /// checked when the runbook is bound.
    fn var_problem(&self, name: &str) -> Option<Diagnostic> {
        let defined = self
            .context
            .declared
            .environments
            .values()
            .any(|environment| environment.vars.contains_key(name));
        (!defined).then(|| {
            Code::UnknownVar
                .diagnostic(format!("no environment defines variable `{name}`"))
                .hint(format!(
                    "add `{name} = ...` under `[environments.NAME.vars]`"
                ))
        })
    }

    /// An output: known only at run time, of a step this one needs, which
    /// runs once.
    fn output_problem(&self, reference: &Reference, step: &str) -> Option<Diagnostic> {
        if !self.allow_step_outputs {
            return Some(
                Code::OutputBeforeRun
                    .diagnostic(format!("`{reference}` cannot be used in a grant"))
                    .hint("grants are fixed before the run starts; use `params` or `vars` here"),
            );
        }
        self.step_problem(reference, step).or_else(|| {
            self.context.for_each_steps.contains(step).then(|| {
                Code::OutputOfForEach
                    .diagnostic(format!(
                        "step `{step}` runs once per `for_each` element: its outputs cannot be referenced"
                    ))
                    .hint("refer to `steps.ID.outcome`, or split the step")
            })
        })
    }

    /// An output or outcome of a step this one does not need, so that it
    /// may not have run yet.
    fn step_problem(&self, reference: &Reference, step: &str) -> Option<Diagnostic> {
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
        Some(
            Code::StepNotNeeded
                .diagnostic(format!(
                    "`{reference}` refers to step `{step}`, which `{}` does not need",
                    self.step_id
                ))
                .hint(hint),
        )
    }

    /// A secret outside `with`, or one the step is not granted.
    fn secret_problem(&self, reference: &Reference, name: &str) -> Option<Diagnostic> {
        if !self.allow_secrets {
            return Some(
                Code::SecretOutsideWith
                    .diagnostic(format!("`{reference}` cannot be used here"))
                    .hint("secrets can be used only in a step's `with`"),
            );
        }
        let granted = self.secret_grants.iter().any(|secret| secret == name);
        (!granted).then(|| {
            Code::SecretWithoutGrant
                .diagnostic(format!(
                    "step `{}` uses secret `{name}` without a grant",
                    self.step_id
                ))
                .hint(format!(
                    "grant it to this step: `grants.secrets = [\"{name}\"]`"
                ))
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
    match parse_condition(text) {
        Ok(expression) => {
            for reference in expression.references() {
                if let Some(problem) = check.problem(reference) {
                    problems.push(problem.at(check.source, at));
                }
            }
            Some(expression)
        }
        Err(problem) => {
            problems.push(problem.at(check.source, at));
            None
        }
    }
}

/// An `if` as an expression: written bare (`steps.a.outcome == 'failed'`),
/// or as a string that is one `${{ ... }}` and nothing else. A problem
/// comes without its place.
fn parse_condition(text: &str) -> Result<Expr, Diagnostic> {
    let not_parsed = |(message, hint): (String, String)| {
        Code::Condition
            .diagnostic(format!("`if`: {message}"))
            .hint(hint)
    };
    if !text.contains("${{") {
        return Expr::parse(text).map_err(not_parsed);
    }
    let template =
        Template::parse(text).map_err(|error| not_parsed((error.message, error.hint)))?;
    template.sole_expression().cloned().ok_or_else(|| {
        Code::ConditionNotOneExpression
            .diagnostic("`if`: `if` must be one expression")
            .hint("write `if = \"${{ steps.migrate.outcome == 'failed' }}\"`")
    })
}
