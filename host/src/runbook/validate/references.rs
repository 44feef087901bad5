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
    /// Whether the value is in `[notify]`, whose announcements go out
    /// beside the steps: it may name no step (`step_id` is then the
    /// target's id).
    pub(super) in_notify: bool,
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
    pub(super) fn span_in_string(&self, at: &ValuePath, range: &Range<usize>) -> Range<usize> {
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
            Reference::StepOutput { .. } | Reference::StepOutcome(_) if self.in_notify => Some(
                Code::NotifyStepReference
                    .diagnostic(format!("`{reference}` cannot be used in `[notify]`"))
                    .hint("announcements go out beside the steps, not after one: use `params`, `vars`, `secrets` or `run` here; the host adds `status` and `failed_step` to each"),
            ),
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
        let (subject, this) = if self.in_notify {
            ("notify target", "target")
        } else {
            ("step", "step")
        };
        (!granted).then(|| {
            Code::SecretWithoutGrant
                .diagnostic(format!(
                    "{subject} `{}` uses secret `{name}` without a grant",
                    self.step_id
                ))
                .hint(format!(
                    "grant it to this {this}: `grants.secrets = [\"{name}\"]`"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{Scope, codes, source};

    /// The code of the problem with `reference` in the `with` of step
    /// `deploy`, granted `token`, in `scope`; `fixed` checks it as a value
    /// fixed before the run, `item` as in a step with `for_each`.
    fn problem(scope: &Scope, reference: &str, fixed: bool, item: bool) -> Option<&'static str> {
        let source = source("");
        let reference = Expr::parse(reference).unwrap();
        let reference = reference.references()[0].clone();
        scope.check(&source, "deploy", &["token".to_owned()], |check| {
            let mut check = *check;
            check.allow_item = item;
            if fixed {
                check = check.fixed_before_run();
            }
            check
                .problem(&reference)
                .map(|problem| problem.code.unwrap())
        })
    }

    #[test]
    fn parameters_must_be_declared_and_variables_defined_somewhere() {
        let scope = Scope::new(&["version"], &["region"]);
        assert_eq!(problem(&scope, "params.version", false, false), None);
        assert_eq!(
            problem(&scope, "params.verison", false, false),
            Some("UnknownParam")
        );
        assert_eq!(problem(&scope, "vars.region", true, false), None);
        assert_eq!(
            problem(&scope, "vars.zone", false, false),
            Some("UnknownVar")
        );
    }

    #[test]
    fn outputs_and_outcomes_are_only_of_needed_steps_and_never_in_fixed_values() {
        let mut scope = Scope::new(&[], &[]);
        scope.ancestors.insert("build".into());
        assert_eq!(
            problem(&scope, "steps.build.outputs.tag", false, false),
            None
        );
        assert_eq!(problem(&scope, "steps.build.outcome", false, false), None);
        assert_eq!(
            problem(&scope, "steps.test.outputs.tag", false, false),
            Some("StepNotNeeded")
        );
        assert_eq!(
            problem(&scope, "steps.test.outcome", true, false),
            Some("StepNotNeeded")
        );
        assert_eq!(
            problem(&scope, "steps.build.outputs.tag", true, false),
            Some("OutputBeforeRun")
        );
        // An outcome in a value fixed before the run passes here; binding
        // refuses it as a value not known before the run.
        assert_eq!(problem(&scope, "steps.build.outcome", true, false), None);
    }

    #[test]
    fn a_step_cannot_read_its_own_outputs_and_is_told_so() {
        let source = source("");
        let scope = Scope::new(&[], &[]);
        let expression = Expr::parse("steps.deploy.outputs.x").unwrap();
        let hint = scope.check(&source, "deploy", &[], |check| {
            check.problem(expression.references()[0]).unwrap().hint
        });
        assert_eq!(hint.as_deref(), Some("a step cannot read its own outputs"));
    }

    #[test]
    fn outputs_of_a_for_each_step_cannot_be_read_but_its_outcome_can() {
        let mut scope = Scope::new(&[], &[]);
        scope.ancestors.insert("fan".into());
        scope.for_each_steps.insert("fan".into());
        assert_eq!(
            problem(&scope, "steps.fan.outputs.x", false, false),
            Some("OutputOfForEach")
        );
        assert_eq!(problem(&scope, "steps.fan.outcome", false, false), None);
    }

    #[test]
    fn item_only_in_a_for_each_step_and_secrets_only_granted_and_only_in_with() {
        let scope = Scope::new(&[], &[]);
        assert_eq!(
            problem(&scope, "item", false, false),
            Some("ItemOutsideForEach")
        );
        assert_eq!(problem(&scope, "item.name", false, true), None);
        assert_eq!(problem(&scope, "secrets.token", false, false), None);
        assert_eq!(
            problem(&scope, "secrets.password", false, false),
            Some("SecretWithoutGrant")
        );
        assert_eq!(
            problem(&scope, "secrets.token", true, false),
            Some("SecretOutsideWith")
        );
        assert_eq!(problem(&scope, "run.operator", true, false), None);
    }

    #[test]
    fn a_problem_points_at_its_expression_or_at_the_whole_string_with_escapes() {
        let text = "a = \"x ${{ params.nope }} y\"\nb = \"\\u0078 ${{ params.nope }}\"\n";
        let source = source(text);
        let scope = Scope::new(&[], &[]);
        let mut problems = Diagnostics::default();
        scope.check(&source, "deploy", &[], |check| {
            for key in ["a", "b"] {
                let value: toml::Table = toml::from_str(text).unwrap();
                let template = Template::parse(value[key].as_str().unwrap()).unwrap();
                check.check(&template, &ValuePath::default().key(key), &mut problems);
            }
        });
        assert_eq!(codes(&problems), ["UnknownParam", "UnknownParam"]);
        let spans: Vec<&str> = problems
            .0
            .iter()
            .map(|problem| &text[problem.place.as_ref().unwrap().span.clone()])
            .collect();
        assert_eq!(
            spans,
            ["${{ params.nope }}", "\"\\u0078 ${{ params.nope }}\""]
        );
    }

    #[test]
    fn a_condition_is_one_expression_bare_or_wrapped_with_its_references_checked() {
        let source = source("if = \"x\"");
        let mut scope = Scope::new(&[], &[]);
        scope.ancestors.insert("migrate".into());
        let at = ValuePath::default().key("if");
        let mut problems = Diagnostics::default();
        let parsed = scope.check(&source, "restore", &[], |check| {
            [
                "steps.migrate.outcome == 'failed'",
                "${{ steps.migrate.outcome == 'failed' }}",
                "${{ steps.other.outcome }}",
                "${{ run.id }} and ${{ run.id }}",
                "steps.migrate.outcome ==",
            ]
            .map(|text| condition(check, text, &at, &mut problems).is_some())
        });
        assert_eq!(parsed, [true, true, true, false, false]);
        assert_eq!(
            codes(&problems),
            ["StepNotNeeded", "ConditionNotOneExpression", "Condition"]
        );
    }
}
