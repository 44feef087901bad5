//! What a step's `with` names that its grants must cover, checked where it
//! is known before the run, so that a URL outside `grants.http` is an error
//! of `validate` (and of `exec` and `plan` before the first step) rather
//! than a denial after the migration ran: every value of `with` (what its
//! `run` and its `rollback` receive) that is an `http(s)` URL against
//! `grants.http`, `with.namespace` against `grants.kube.namespaces` and
//! `with.region` against `grants.aws.regions`.
//!
//! A value is checked as far as the environment's variables, the
//! parameters given and the `for_each` element make it known. A value
//! that depends on a step's output, a secret or how the run goes is left
//! to the host's checks at run time, as is a URL whose path some grant
//! could still cover once the plugin or the run adds to it (a base such
//! as `http://prometheus:9090` granted as `.../api/v1/query`;
//! `http://h/flags/` + an output, against `http://h/flags`). A step
//! granted no URL (no Kubernetes, no AWS) is not checked here: the
//! need-versus-grant rules speak for it.

use super::Plan;
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::grant::{Refusal, StepGrants, StepId, UrlGrant};
use crate::runbook::{Code, ParamTree};
use crate::template::{Part, Reference, RunField, Template, as_text};
use std::collections::BTreeSet;
use url::Url;

/// Checks the `with` of every planned step against its grants. Each
/// problem is reported once, however many `for_each` elements share it.
/// `placeholders` are the parameters that stand for a value not given
/// (`validate`), whose text is no URL's.
pub(super) fn check(plan: &Plan, placeholders: &BTreeSet<String>, problems: &mut Diagnostics) {
    let source = &plan.runbook.source;
    let mut reported: Vec<(usize, String)> = Vec::new();
    for planned in &plan.steps {
        let step = plan.step(planned);
        let known = Known {
            plan,
            placeholders,
            item: planned.item.as_ref(),
        };
        let mut found = Vec::new();
        check_with(
            &known,
            &step.id,
            &step.with,
            &step.path().key("with"),
            &planned.grants,
            &mut found,
        );
        for (at, problem) in found {
            let key = (step.index, problem.message.clone());
            if reported.contains(&key) {
                continue;
            }
            reported.push(key);
            problems.push(problem.at(source, &at));
        }
    }
}

/// The problems of one step's `with` at `at`, each with its place.
fn check_with(
    known: &Known<'_>,
    step: &StepId,
    with: &ParamTree,
    at: &ValuePath,
    grants: &StepGrants,
    found: &mut Vec<(ValuePath, Diagnostic)>,
) {
    if !grants.http.is_empty() {
        with.templates(at, &mut |template, place| {
            let (text, complete) = known.text(template);
            if let Some(problem) = url_problem(step, &text, complete, &grants.http) {
                found.push((place.clone(), problem));
            }
        });
    }
    let ParamTree::Table(entries) = with else {
        return;
    };
    for (key, _, value) in entries {
        let ParamTree::String(template) = value else {
            continue;
        };
        let (text, complete) = known.text(template);
        if !complete {
            continue;
        }
        let problem = match key.as_str() {
            "namespace" => namespace_problem(step, &text, grants),
            "region" => region_problem(step, &text, grants),
            _ => None,
        };
        if let Some(problem) = problem {
            found.push((at.key(key), problem));
        }
    }
}

/// What is known of values before the run.
struct Known<'a> {
    plan: &'a Plan,
    placeholders: &'a BTreeSet<String>,
    item: Option<&'a serde_json::Value>,
}

impl Known<'_> {
    /// The value of `reference` before the run: a parameter given (or its
    /// default), a variable, the environment's name, the `for_each`
    /// element. Not the run's id or operator, which differ per run, nor
    /// outputs, outcomes, secrets or the run's status.
    fn value(&self, reference: &Reference) -> Option<serde_json::Value> {
        match reference {
            Reference::Param(name) if self.placeholders.contains(name) => None,
            Reference::Param(_) | Reference::Var(_) | Reference::Run(RunField::Environment) => {
                self.plan.static_value(reference)
            }
            Reference::Item(key) => {
                let item = self.item?;
                Some(match key {
                    None => item.clone(),
                    Some(key) => item.get(key).cloned().unwrap_or(serde_json::Value::Null),
                })
            }
            _ => None,
        }
    }

    /// `template`'s text as far as it is known before the run, and
    /// whether that is all of it.
    fn text(&self, template: &Template) -> (String, bool) {
        let mut text = String::new();
        for part in &template.parts {
            match part {
                Part::Literal(literal) => text.push_str(literal),
                Part::Expression(expression, _) => {
                    match expression.evaluate(&mut |reference| self.value(reference).ok_or(())) {
                        Ok(value) => text.push_str(&as_text(&value)),
                        Err(()) => return (text, false),
                    }
                }
            }
        }
        (text, true)
    }
}

/// A URL no grant covers, when `text` (all of the value when `complete`,
/// else its beginning) is one and that can be told before the run. A
/// plugin may add to the path of a URL it is given (a base such as
/// `with.prometheus = "http://prometheus:9090"`, granted as
/// `http://prometheus:9090/api/v1/query`), so a value is outside only
/// when no grant could cover any path that begins with its own; one with
/// a query or fragment has its whole path.
fn url_problem(
    step: &StepId,
    text: &str,
    complete: bool,
    grants: &[UrlGrant],
) -> Option<Diagnostic> {
    let (scheme, rest) = text.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        || text.chars().any(char::is_whitespace)
    {
        return None;
    }
    // Known only in part, the host must be whole: a `/`, `?` or `#` after it.
    let host_end = rest.find(['/', '?', '#']);
    if !complete && host_end.is_none() {
        return None;
    }
    let whole_path = host_end.is_some_and(|at| rest[at..].contains(['?', '#']));
    let url = Url::parse(text)
        .ok()
        .filter(|url| url.host_str().is_some())?;
    let covered = if whole_path {
        grants.iter().any(|grant| grant.allows(&url))
    } else {
        grants.iter().any(|grant| grant.may_allow_below(&url))
    };
    if covered {
        return None;
    }
    let miss = UrlGrant::nearest(grants, &url);
    let (shown, path, narrowest) = if complete || whole_path {
        (
            if complete {
                text.to_owned()
            } else {
                format!("{text}…")
            },
            url.path().to_owned(),
            UrlGrant::narrowest(&url),
        )
    } else {
        (
            format!("{text}…"),
            format!("{}…", url.path()),
            UrlGrant::narrowest_below(&url),
        )
    };
    let explained = miss.explain(&url, Some(&path));
    let problem = Code::UrlNotGranted.diagnostic(format!(
        "`{shown}` is outside the `grants.http` of step `{step}`: {explained}"
    ));
    Some(if miss.refusal == Refusal::PathOnceDecoded {
        problem.hint("servers may route encoded dots and slashes (`%2e`, `%2f`, `%5c`) outside the grant; write the path without them")
    } else {
        problem.hint(format!(
            "if the step is meant to call it, add `grants.http = [\"{narrowest}\"]` to the step (a grant allows its path and every path below it)"
        ))
    })
}

/// `with.namespace` outside `grants.kube.namespaces`.
fn namespace_problem(step: &StepId, namespace: &str, grants: &StepGrants) -> Option<Diagnostic> {
    let grant = grants.kube.as_ref()?;
    if namespace.is_empty() || grant.allows_namespace(Some(namespace)) {
        return None;
    }
    let mut widened = grant.clone();
    widened.namespaces.push(namespace.to_owned());
    Some(
        Code::NamespaceNotGranted
            .diagnostic(format!(
                "namespace `{namespace}` is outside the `grants.kube` of step `{step}` (granted: {})",
                grant.namespaces.join(", ")
            ))
            .hint(format!(
                "if the step is meant to work there, add it: `grants.kube = {}`",
                widened.to_toml()
            )),
    )
}

/// `with.region` outside `grants.aws.regions`.
fn region_problem(step: &StepId, region: &str, grants: &StepGrants) -> Option<Diagnostic> {
    let grant = grants.aws.as_ref()?;
    if region.is_empty() || grant.regions.iter().any(|granted| granted == region) {
        return None;
    }
    let mut widened = grant.clone();
    widened.regions.push(region.to_owned());
    Some(
        Code::RegionNotGranted
            .diagnostic(format!(
                "region `{region}` is outside the `grants.aws` of step `{step}` (granted: {})",
                grant.regions.join(", ")
            ))
            .hint(format!(
                "if the step is meant to call it, add it: `grants.aws = {}`",
                widened.to_toml()
            )),
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostic::Diagnostics;
    use crate::runbook::bind::testing::{bound, codes, runbook};
    use crate::runbook::bind::{Bindings, Plan, bind};

    /// The problems binding `rest` (after `[plugins]`) reports in
    /// `production`, when the runbook has environments.
    fn problems(rest: &str) -> Vec<String> {
        let runbook = runbook(rest);
        let environment = (!runbook.environments.is_empty()).then_some("production");
        match bound(&runbook, environment, &[]) {
            Ok(_) => Vec::new(),
            Err(found) => found
                .0
                .iter()
                .map(|problem| {
                    format!(
                        "{}: {} [{}]",
                        problem.code.unwrap_or_default(),
                        problem.message,
                        problem.hint.clone().unwrap_or_default()
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_literal_url_that_differs_from_its_grant_only_by_path_is_named_with_the_exact_grant() {
        let found = problems(
            "[[steps]]\nid = \"flag\"\nuses = \"noop\"\nwith.url = \"http://h:8080/admin/feature-flags\"\ngrants.http = [\"http://h:8080/admin/feature-flag\"]\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("UrlNotGranted: `http://h:8080/admin/feature-flags` is outside the `grants.http` of step `flag`: scheme, host and port are granted (`http://h:8080/admin/feature-flag`), only the path differs: `/admin/feature-flags` is not under `/admin/feature-flag`"), "{found:?}");
        assert!(
            found[0].contains("add `grants.http = [\"http://h:8080/admin/feature-flags\"]`"),
            "{found:?}"
        );
        assert!(!found[0].contains("[\"http://h:8080\"]"), "{found:?}");
    }

    #[test]
    fn urls_from_the_environment_and_nested_in_with_are_checked() {
        let found = problems(
            "[environments.production.vars]\nbase = \"http://h:8080\"\n\n[[steps]]\nid = \"smoke\"\nuses = \"noop\"\nwith.checks = [{ url = \"${{ vars.base }}/health\" }, { url = \"${{ vars.base }}/admin\" }]\nwith.rollback_url = \"http://h:9090/undo?x=1\"\ngrants.http = [\"${{ vars.base }}/health\"]\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("`http://h:8080/admin` is outside"),
            "{found:?}"
        );
        assert!(found[1].contains("the port is 9090, not 8080"), "{found:?}");
        assert!(
            found[1].contains("`grants.http = [\"http://h:9090/undo\"]`"),
            "{found:?}"
        );
    }

    #[test]
    fn urls_granted_or_known_only_at_run_time_are_left_alone() {
        for with in [
            // Granted, on a segment boundary, default port implied.
            "with.url = \"https://api.example.com:443/v1/x?y=1\"",
            // Depends on an output, a secret, the run.
            "with.url = \"${{ steps.first.outputs.message }}\"",
            "with.url = \"${{ secrets.HOOK }}\"",
            "with.url = \"https://api.example.com/v1/${{ run.id }}\"",
            // A base the plugin adds to, and a beginning that could
            // still be granted.
            "with.prometheus = \"https://api.example.com\"",
            "with.base = \"https://api.example.com/\"",
            "with.url = \"https://api.example.com/v${{ steps.first.outputs.message }}\"",
            // Not a URL, or a URL inside text.
            "with.text = \"see https://elsewhere/x\"",
            "with.url = \"ftp://elsewhere/x\"",
        ] {
            let found = problems(&format!(
                "[[steps]]\nid = \"first\"\nuses = \"noop\"\n\n[[steps]]\nid = \"second\"\nuses = \"noop\"\n{with}\ngrants.http = [\"https://api.example.com/v1\"]\ngrants.secrets = [\"HOOK\"]\n"
            ));
            assert!(found.is_empty(), "{with}: {found:?}");
        }
    }

    #[test]
    fn a_known_beginning_no_grant_could_cover_is_reported_with_its_folder() {
        let found = problems(
            "[[steps]]\nid = \"first\"\nuses = \"noop\"\n\n[[steps]]\nid = \"second\"\nuses = \"noop\"\nwith.url = \"https://api.example.com/v2/flags/${{ steps.first.outputs.message }}\"\ngrants.http = [\"https://api.example.com/v1\"]\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("`https://api.example.com/v2/flags/…` is outside"),
            "{found:?}"
        );
        assert!(
            found[0].contains("`grants.http = [\"https://api.example.com/v2/flags\"]`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_known_beginning_on_another_host_is_reported() {
        let found = problems(
            "[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.url = \"https://elsewhere/${{ run.id }}\"\ngrants.http = [\"https://api.example.com/v1\"]\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("no grant is for host `elsewhere`"),
            "{found:?}"
        );
        assert!(
            found[0].contains("`grants.http = [\"https://elsewhere\"]`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_step_granted_no_url_is_not_checked() {
        assert!(
            problems(
                "[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.message = \"http://elsewhere/x\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn each_for_each_element_is_checked_and_a_shared_problem_reported_once() {
        let found = problems(
            "[[steps]]\nid = \"smoke\"\nuses = \"noop\"\nfor_each = [\"health\", \"admin\", \"metrics\"]\nwith.url = \"http://h/${{ item }}\"\nwith.docs = \"http://docs/x\"\ngrants.http = [\"http://h/health\"]\n",
        );
        let urls: Vec<&str> = found
            .iter()
            .map(|problem| problem.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(
            urls,
            ["http://docs/x", "http://h/admin", "http://h/metrics"],
            "{found:?}"
        );
    }

    #[test]
    fn a_parameter_validate_does_not_know_is_not_a_url() {
        let runbook = runbook(
            "[params.base]\nrequired = true\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.url = \"${{ params.base }}/x\"\ngrants.http = [\"http://h\"]\n",
        );
        let lenient = |sets: Vec<(String, String)>| -> Result<Plan, Diagnostics> {
            bind(
                std::sync::Arc::clone(&runbook),
                Bindings {
                    environment: None,
                    sets,
                    operator: "validate".into(),
                    run_id: "validate".into(),
                    lenient: true,
                },
            )
        };
        assert!(lenient(Vec::new()).is_ok());
        assert_eq!(
            codes(lenient(vec![("base".into(), "http://elsewhere".into())])),
            ["UrlNotGranted"]
        );
        assert_eq!(
            codes(bound(&runbook, None, &[("base", "http://elsewhere")])),
            ["UrlNotGranted"]
        );
        assert!(bound(&runbook, None, &[("base", "http://h")]).is_ok());
    }

    #[test]
    fn a_namespace_or_region_outside_the_grants_is_named_with_the_grant_to_add() {
        let found = problems(
            "[environments.production.vars]\nnamespace = \"payments\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.namespace = \"${{ vars.namespace }}\"\nwith.region = \"eu-west-1\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }\ngrants.aws = { services = [\"rds\"], actions = [\"Describe*\"], regions = [\"us-east-1\"] }\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("NamespaceNotGranted: namespace `payments` is outside the `grants.kube` of step `a` (granted: shop)"),
            "{found:?}"
        );
        assert!(
            found[0].contains("`grants.kube = { namespaces = [\"shop\", \"payments\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("RegionNotGranted: region `eu-west-1` is outside the `grants.aws` of step `a` (granted: us-east-1)"),
            "{found:?}"
        );
        assert!(
            found[1].contains("regions = [\"us-east-1\", \"eu-west-1\"]"),
            "{found:?}"
        );
        // Granted, everywhere, or not known before the run: nothing.
        assert!(problems("[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.namespace = \"anything\"\ngrants.kube = { namespaces = [\"*\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }\n").is_empty());
        assert!(problems("[[steps]]\nid = \"first\"\nuses = \"noop\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\nwith.namespace = \"${{ steps.first.outputs.message }}\"\ngrants.kube = { namespaces = [\"shop\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }\n").is_empty());
    }
}
