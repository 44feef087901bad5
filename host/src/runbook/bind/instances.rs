//! The plan's steps: one per step, or one per element of its `for_each`,
//! each needing every instance of the steps its step needs.

use super::{Plan, PlannedStep, grants};
use crate::diagnostic::Diagnostics;
use crate::runbook::{Code, ForEach, Step, StepId, for_each_label, for_each_problem};
use std::collections::BTreeMap;

/// Every step's instances, in file order, each with its grants resolved.
pub(super) fn plan_steps(plan: &Plan, problems: &mut Diagnostics) -> Vec<PlannedStep> {
    let mut planned: Vec<PlannedStep> = Vec::new();
    let mut instances_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for step in &plan.runbook.steps {
        let grants = grants::resolve(plan, step, problems);
        let items = items(plan, step, problems);
        let needs: Vec<usize> = step
            .needs
            .iter()
            .flat_map(|need| {
                instances_of
                    .get(need.0.as_str())
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let first = planned.len();
        for (position, item) in items.into_iter().enumerate() {
            let (id, name) = instance_name(step, item.as_ref(), position);
            planned.push(PlannedStep {
                index: step.index,
                id,
                name,
                item,
                needs: needs.clone(),
                grants: grants.clone(),
            });
        }
        instances_of.insert(step.id.0.as_str(), (first..planned.len()).collect());
    }
    planned
}

/// The elements the step runs for (`None`: it runs once, for no element).
/// A `for_each` expression must give a list that can run; else the step
/// has no instance and the problem is reported.
fn items(plan: &Plan, step: &Step, problems: &mut Diagnostics) -> Vec<Option<serde_json::Value>> {
    let template = match &step.for_each {
        None => return vec![None],
        Some(ForEach::Items(items)) => return items.iter().cloned().map(Some).collect(),
        Some(ForEach::Expression(template)) => template,
    };
    let at = step.path().key("for_each");
    let source = &plan.runbook.source;
    match template.value(|reference| plan.static_value(reference).ok_or(())) {
        Ok(serde_json::Value::Array(items)) => match for_each_problem(&step.id.0, &items) {
            None => items.into_iter().map(Some).collect(),
            Some((problem, _)) => {
                problems.push(problem.at(source, &at));
                Vec::new()
            }
        },
        Ok(other) => {
            problems.push(
                Code::ForEachNotAList
                    .diagnostic(format!("`for_each` gives {other}, not a list"))
                    .at(source, &at)
                    .hint("make the variable a list: `services = [\"api\", \"worker\"]`"),
            );
            Vec::new()
        }
        // A variable the chosen environment lacks (validation checked only
        // that some environment defines it), or a run field known only
        // later: without this the step would silently run for nothing.
        Err(()) => {
            problems.push(
                Code::ForEachUndefined
                    .diagnostic("`for_each` refers to a value the environment does not define")
                    .at(source, &at)
                    .hint("give every environment the variable, as a list: `services = [\"api\", \"worker\"]`"),
            );
            Vec::new()
        }
    }
}

/// The id and display name of the instance of `step` for `item`, the
/// element at `position`.
fn instance_name(
    step: &Step,
    item: Option<&serde_json::Value>,
    position: usize,
) -> (StepId, String) {
    match item {
        None => (step.id.clone(), step.name.clone()),
        Some(item) => {
            let label = for_each_label(item, position);
            (
                StepId(format!("{}[{label}]", step.id)),
                format!("{} [{}]", step.name, crate::template::as_text(item)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::runbook::bind::testing::{bound, codes, runbook};

    #[test]
    fn each_element_is_an_instance_and_a_later_step_needs_every_instance() {
        let runbook = runbook(
            "[[steps]]\nid = \"build\"\nuses = \"noop\"\n\n[[steps]]\nid = \"deploy\"\nname = \"Deploy\"\nuses = \"noop\"\nfor_each = [\"api\", { port = 80 }]\n\n[[steps]]\nid = \"verify\"\nuses = \"noop\"\n",
        );
        let plan = bound(&runbook, None, &[]).unwrap();
        let view: Vec<(&str, &str, &[usize])> = plan
            .steps
            .iter()
            .map(|step| {
                (
                    step.id.0.as_str(),
                    step.name.as_str(),
                    step.needs.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                ("build", "build", &[][..]),
                ("deploy[api]", "Deploy [api]", &[0][..]),
                ("deploy[1]", "Deploy [{\"port\":80}]", &[0][..]),
                ("verify", "verify", &[1, 2][..]),
            ]
        );
        assert_eq!(plan.steps[2].item, Some(serde_json::json!({"port": 80})));
        assert_eq!(plan.steps[2].index, 1);
    }

    #[test]
    fn a_for_each_expression_must_give_a_list() {
        let runbook = runbook(
            "[environments.production.vars]\nservices = \"api\"\n\n[[steps]]\nid = \"deploy\"\nuses = \"noop\"\nfor_each = \"${{ vars.services }}\"\n",
        );
        assert_eq!(
            codes(bound(&runbook, Some("production"), &[])),
            ["ForEachNotAList"]
        );
    }

    #[test]
    fn a_for_each_of_a_value_known_only_later_is_reported() {
        let runbook = runbook(
            "[[steps]]\nid = \"deploy\"\nuses = \"noop\"\nfor_each = \"${{ run.failed_step }}\"\n",
        );
        assert_eq!(codes(bound(&runbook, None, &[])), ["ForEachUndefined"]);
    }
}
