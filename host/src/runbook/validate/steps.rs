//! Each step on its own: its id, what it does (a plugin, or a manual
//! checklist), and the order of its checks. The checks of its limits,
//! `for_each`, references and grants live in their own files.

use super::graph::StepGraph;
use super::references::{ReferenceCheck, condition};
use super::values::tree_from_toml;
use super::{Declared, StepContext, for_each, grants, is_identifier, limits};
use crate::diagnostic::{Diagnostics, Source, ValuePath, did_you_mean};
use crate::runbook::Code;
use crate::runbook::model::{RawKind, RawStep};
use crate::runbook::{Action, PluginSource, Step, StepId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Checks every step, in file order, after the graph of their `needs`.
pub(super) fn validate_steps(
    source: &Arc<Source>,
    raw: Vec<RawStep>,
    declared: &Declared<'_>,
    problems: &mut Diagnostics,
) -> Vec<Step> {
    let graph = StepGraph::new(source, &raw, problems);
    let for_each_steps: BTreeSet<String> = raw
        .iter()
        .filter(|step| step.for_each.is_some())
        .map(|step| step.id.clone())
        .collect();
    let mut steps = Vec::with_capacity(raw.len());
    for (index, raw_step) in raw.into_iter().enumerate() {
        // Ancestors matter only to steps that mention other steps; a long
        // chain would otherwise cost quadratic time here.
        let ancestors = if mentions_steps(&raw_step) {
            graph.ancestors(index)
        } else {
            BTreeSet::new()
        };
        let context = StepContext {
            declared,
            ancestors: &ancestors,
            for_each_steps: &for_each_steps,
        };
        let step = validate_step(source, index, raw_step, &context, problems);
        steps.push(Step {
            needs: graph.needs(index).iter().cloned().map(StepId).collect(),
            ..step
        });
    }
    if steps.is_empty() {
        problems.push(
            Code::NoSteps
                .diagnostic("the runbook has no steps")
                .at(source, &ValuePath::default().key("runbook"))
                .hint("add a `[[steps]]` table with `id` and `uses`"),
        );
    }
    steps
}

/// Whether the step's `if` or `with` may refer to another step.
fn mentions_steps(step: &RawStep) -> bool {
    step.condition
        .as_deref()
        .is_some_and(|text| text.contains("steps."))
        || step.with.to_string().contains("steps.")
}

/// Checks step `index`; its `needs` are left empty for the caller, who
/// has the graph.
fn validate_step(
    source: &Arc<Source>,
    index: usize,
    raw: RawStep,
    context: &StepContext<'_>,
    problems: &mut Diagnostics,
) -> Step {
    let path = ValuePath::step(index);
    check_id(source, &raw.id, &path, problems);
    let action = action(source, &raw, &path, context.declared.plugins, problems);
    let timeout = limits::timeout(
        source,
        raw.timeout.as_deref(),
        &path.key("timeout"),
        problems,
    );
    let memory_limit =
        limits::memory_limit(source, raw.memory.as_deref(), &path.key("memory"), problems);
    let check = ReferenceCheck {
        source,
        context,
        step_id: &raw.id,
        secret_grants: &raw.grants.secrets,
        allow_step_outputs: true,
        allow_secrets: true,
        allow_item: raw.for_each.is_some(),
        in_notify: false,
    };
    let with_path = path.key("with");
    let with = tree_from_toml(toml::Value::Table(raw.with), &with_path, source, problems);
    with.templates(&with_path, &mut |template, at| {
        check.check(template, at, problems)
    });
    let condition = raw
        .condition
        .as_ref()
        .and_then(|text| condition(&check, text, &path.key("if"), problems));
    let retries = limits::retries(source, raw.retries.as_ref(), &path.key("retries"), problems);
    let for_each = raw
        .for_each
        .as_ref()
        .and_then(|value| for_each::for_each(&check, value, &path.key("for_each"), problems));
    let grants = grants::validate_grants(&check, &raw.grants, &path.key("grants"), problems);
    Step {
        index,
        name: raw.name.unwrap_or_else(|| raw.id.clone()),
        id: StepId(raw.id),
        action,
        needs: Vec::new(),
        condition,
        retries,
        for_each,
        always: raw.always,
        on_failure: raw.on_failure,
        timeout,
        memory_limit,
        with,
        grants,
    }
}

/// A step id others can name in `needs` and `${{ steps.ID... }}`.
fn check_id(source: &Arc<Source>, id: &str, path: &ValuePath, problems: &mut Diagnostics) {
    if !is_identifier(id) {
        problems.push(
            Code::InvalidStepId
                .diagnostic(format!("step id `{id}` is not a valid id"))
                .at(source, &path.key("id"))
                .hint("ids are letters, digits, `_` and `-`, starting with a letter"),
        );
    }
}

/// What the step does: a manual step has a checklist and no plugin; any
/// other step uses a declared plugin and has no checklist.
fn action(
    source: &Arc<Source>,
    raw: &RawStep,
    path: &ValuePath,
    plugins: &BTreeMap<String, PluginSource>,
    problems: &mut Diagnostics,
) -> Action {
    let id = &raw.id;
    match (raw.kind.unwrap_or(RawKind::Plugin), &raw.uses) {
        (RawKind::Manual, None) => {
            if raw.checklist.is_empty() {
                problems.push(
                    Code::ManualWithoutChecklist
                        .diagnostic(format!("manual step `{id}` has no checklist"))
                        .at(source, &path.key("kind"))
                        .hint(
                            "list what the operator confirms: `checklist = [\"backup verified\"]`",
                        ),
                );
            }
            Action::Manual(raw.checklist.clone())
        }
        (RawKind::Manual, Some(_)) => {
            problems.push(
                Code::ManualWithPlugin
                    .diagnostic(format!("manual step `{id}` cannot also use a plugin"))
                    .at(source, &path.key("uses"))
                    .hint("drop `uses`, or drop `kind = \"manual\"`"),
            );
            Action::Manual(raw.checklist.clone())
        }
        (RawKind::Plugin, None) => {
            problems.push(
                Code::NoUses.diagnostic(format!("step `{id}` has no `uses`"))
                    .at(source, path)
                    .hint("name a plugin (`uses = \"smoke-test\"`), or make it `kind = \"manual\"` with a `checklist`"),
            );
            Action::Plugin(String::new())
        }
        (RawKind::Plugin, Some(uses)) => {
            if !raw.checklist.is_empty() {
                problems.push(
                    Code::ChecklistNotManual
                        .diagnostic(format!("step `{id}` has a checklist but is not manual"))
                        .at(source, &path.key("checklist"))
                        .hint("add `kind = \"manual\"`"),
                );
            }
            check_plugin(source, id, uses, path, plugins, problems);
            Action::Plugin(uses.clone())
        }
    }
}

/// `uses` names a plugin of `[plugins]`.
fn check_plugin(
    source: &Arc<Source>,
    id: &str,
    uses: &str,
    path: &ValuePath,
    plugins: &BTreeMap<String, PluginSource>,
    problems: &mut Diagnostics,
) {
    if plugins.contains_key(uses) {
        return;
    }
    problems.push(
        Code::UnknownPlugin
            .diagnostic(format!("step `{id}` uses unknown plugin `{uses}`"))
            .at(source, &path.key("uses"))
            .hint(plugin_hint(uses, plugins)),
    );
}

/// What to do about `uses`, which names no plugin of `plugins`: the
/// nearest name, the list, or how to declare it.
pub(super) fn plugin_hint(uses: &str, plugins: &BTreeMap<String, PluginSource>) -> String {
    match did_you_mean(uses, plugins.keys().map(String::as_str)) {
        Some(suggestion) => format!("did you mean `{suggestion}`?"),
        None if plugins.is_empty() => {
            format!("declare it: `[plugins]\n{uses} = \"path/to/{uses}.wasm\"`")
        }
        None => format!(
            "declared plugins: {}",
            plugins.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, codes_of, raw, source};

    /// A runbook with a `noop` plugin and the steps written as `steps`.
    fn runbook(steps: &str) -> String {
        format!("[runbook]\nname = \"r\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n{steps}")
    }

    /// What step `text` does, checked against plugins `noop` and `smoke`.
    fn action_of(text: &str) -> (Action, Vec<&'static str>) {
        let source = source(text);
        let step: RawStep = raw(text);
        let plugins = ["noop", "smoke"]
            .map(|name| {
                let plugin = PluginSource {
                    path: format!("{name}.wasm").into(),
                    sha256: None,
                    oci: None,
                };
                (name.to_owned(), plugin)
            })
            .into();
        let mut problems = Diagnostics::default();
        let action = action(
            &source,
            &step,
            &ValuePath::default(),
            &plugins,
            &mut problems,
        );
        (action, codes(&problems))
    }

    #[test]
    fn a_step_runs_a_declared_plugin_or_is_manual_with_a_checklist() {
        let (action, problems) = action_of("id = \"a\"\nuses = \"noop\"");
        assert!(matches!(action, Action::Plugin(name) if name == "noop"));
        assert!(problems.is_empty());
        let (action, problems) = action_of("id = \"a\"\nkind = \"manual\"\nchecklist = [\"ok\"]");
        assert!(matches!(action, Action::Manual(items) if items == ["ok"]));
        assert!(problems.is_empty());
    }

    #[test]
    fn each_mix_of_kind_uses_and_checklist_that_cannot_be_meant_is_reported() {
        let cases = [
            ("kind = \"manual\"", "ManualWithoutChecklist"),
            (
                "kind = \"manual\"\nuses = \"noop\"\nchecklist = [\"ok\"]",
                "ManualWithPlugin",
            ),
            ("checklist = [\"ok\"]", "NoUses"),
            (
                "uses = \"noop\"\nchecklist = [\"ok\"]",
                "ChecklistNotManual",
            ),
            ("uses = \"nope\"", "UnknownPlugin"),
        ];
        for (text, code) in cases {
            let (_, problems) = action_of(&format!("id = \"a\"\n{text}"));
            assert_eq!(problems, [code], "{text}");
        }
    }

    #[test]
    fn an_unknown_plugin_gets_the_nearest_name_or_the_list() {
        let source = source("");
        let mut problems = Diagnostics::default();
        let declared: BTreeMap<String, PluginSource> = [(
            "smoke-test".to_owned(),
            PluginSource {
                path: "s.wasm".into(),
                sha256: None,
                oci: None,
            },
        )]
        .into();
        let at = ValuePath::default();
        check_plugin(&source, "a", "smoke-tset", &at, &declared, &mut problems);
        check_plugin(&source, "a", "deploy", &at, &declared, &mut problems);
        check_plugin(&source, "a", "deploy", &at, &BTreeMap::new(), &mut problems);
        let hints: Vec<&str> = problems
            .0
            .iter()
            .map(|problem| problem.hint.as_deref().unwrap())
            .collect();
        assert_eq!(hints[0], "did you mean `smoke-test`?");
        assert_eq!(hints[1], "declared plugins: smoke-test");
        assert!(hints[2].starts_with("declare it:"), "{}", hints[2]);
    }

    #[test]
    fn a_step_id_must_be_an_identifier() {
        assert_eq!(
            codes_of(&runbook(
                "[[steps]]\nid = \"deploy api\"\nuses = \"noop\"\n"
            )),
            ["InvalidStepId"]
        );
    }

    #[test]
    fn a_runbook_without_steps_is_reported_at_its_header() {
        assert_eq!(codes_of(&runbook("")), ["NoSteps"]);
    }

    #[test]
    fn a_checked_step_keeps_what_it_wrote_and_defaults_the_rest() {
        let text = runbook(
            "[[steps]]\nid = \"a\"\nuses = \"noop\"\n\n[[steps]]\nid = \"b\"\nname = \"Bee\"\nuses = \"noop\"\nalways = true\non_failure = \"continue\"\ntimeout = \"5m\"\nmemory = \"128MiB\"\nif = \"steps.a.outcome == 'failed'\"\nwith.message = \"${{ steps.a.outputs.message }}\"\ngrants.secrets = [\"token\"]\n",
        );
        let runbook = crate::runbook::parse(source(&text)).unwrap();
        let (a, b) = (&runbook.steps[0], &runbook.steps[1]);
        assert_eq!(a.name, "a");
        assert_eq!(a.timeout, crate::runbook::DEFAULT_TIMEOUT);
        assert!(a.condition.is_none());
        assert_eq!(b.name, "Bee");
        assert_eq!(b.needs, [StepId("a".into())]);
        assert!(b.always);
        assert_eq!(b.on_failure, Some(crate::runbook::Policy::Continue));
        assert_eq!(b.timeout, std::time::Duration::from_secs(300));
        assert_eq!(b.memory_limit, 128 << 20);
        assert!(b.condition.is_some());
        assert_eq!(b.grants.secrets, ["token"]);
        assert_eq!(b.path(), ValuePath::step(1));
    }

    #[test]
    fn the_problems_of_one_step_come_in_the_order_of_its_keys_checks() {
        let text = runbook(
            "[[steps]]\nid = \"1\"\nuses = \"nope\"\ntimeout = \"x\"\nmemory = \"x\"\nwith.a = \"${{ params.x }}\"\nif = \"(\"\nretries = { attempts = 0 }\nfor_each = 1\ngrants.secrets = [\"a b\"]\n",
        );
        assert_eq!(
            codes_of(&text),
            [
                "InvalidStepId",
                "UnknownPlugin",
                "NotADuration",
                "NotAMemorySize",
                "UnknownParam",
                "Condition",
                "NoAttempts",
                "ForEachShape",
                "SecretName"
            ]
        );
    }

    #[test]
    fn only_a_step_that_mentions_steps_needs_its_ancestors() {
        let step = |text: &str| raw::<RawStep>(&format!("id = \"a\"\n{text}"));
        assert!(mentions_steps(&step("if = \"steps.b.outcome\"")));
        assert!(mentions_steps(&step(
            "with.x = [\"${{ steps.b.outputs.y }}\"]"
        )));
        assert!(!mentions_steps(&step("with.x = \"${{ params.y }}\"")));
    }
}
