//! A step's grants, and a `[notify]` target's, with the environment's
//! values in them: HTTP prefixes
//! rendered and parsed, Kubernetes namespaces and AWS regions that name a
//! variable filled in.

use super::Plan;
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::grant::UrlGrant;
use crate::runbook::Code;
use crate::runbook::{Grants, NotifyTarget, Step, StepGrants};
use crate::template::Template;

/// What `step` may touch, in the environment `plan` binds.
pub(super) fn resolve(plan: &Plan, step: &Step, problems: &mut Diagnostics) -> StepGrants {
    resolve_written(plan, &step.grants, &step.path().key("grants"), problems)
}

/// What the `[notify]` target may touch, in the environment `plan` binds:
/// resolved exactly as a step's grants are.
pub(super) fn resolve_target(
    plan: &Plan,
    target: &NotifyTarget,
    problems: &mut Diagnostics,
) -> StepGrants {
    resolve_written(plan, &target.grants, &target.path().key("grants"), problems)
}

/// The grants `written`, with the environment's values in them.
fn resolve_written(
    plan: &Plan,
    written: &Grants,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> StepGrants {
    let mut grants = StepGrants {
        http: http_grants(plan, &written.http, problems),
        secrets: written.secrets.clone(),
        fs_read: written.fs_read.clone(),
        aws: written.aws.clone(),
        kube: written.kube.clone(),
    };
    // Kubernetes namespaces and AWS regions may come from the
    // environment (`namespaces = ["${{ vars.namespace }}"]`).
    if let Some(kube) = &mut grants.kube {
        let at = at.key("kube").key("namespaces");
        for (position, namespace) in kube.namespaces.iter_mut().enumerate() {
            fill_in(plan, namespace, &at.index(position), problems);
        }
    }
    if let Some(aws) = &mut grants.aws {
        let at = at.key("aws").key("regions");
        for (position, region) in aws.regions.iter_mut().enumerate() {
            fill_in(plan, region, &at.index(position), problems);
        }
    }
    grants
}

/// `grants.http`, rendered: each a URL prefix without wildcards.
fn http_grants(
    plan: &Plan,
    written: &[(Template, ValuePath)],
    problems: &mut Diagnostics,
) -> Vec<UrlGrant> {
    let source = &plan.runbook.source;
    let mut grants = Vec::new();
    for (template, at) in written {
        let rendered = template.render(|reference| plan.static_value(reference).ok_or(()));
        let Ok(rendered) = rendered else {
            problems.push(undefined_value(plan, at));
            continue;
        };
        if rendered.contains('*') {
            // `UrlGrant::parse` would take `*` as a literal host or
            // path, and the grant would silently allow nothing.
            problems.push(
                Code::HttpWildcard.diagnostic(format!(
                    "`{rendered}` is not an HTTP grant: grants have no wildcards"
                ))
                .at(source, at)
                .hint("grant each host the step calls, e.g. \"https://api.example.com\"; a grant already allows every path below its own"),
            );
            continue;
        }
        match UrlGrant::parse(&rendered) {
            Ok(grant) => grants.push(grant),
            Err(error) => problems.push(
                Code::HttpGrant.diagnostic(format!("`{rendered}` is not an HTTP grant: {error}"))
                    .at(source, at)
                    .hint("write `scheme://host[:port][/path-prefix]`, e.g. \"https://api.example.com/v1\""),
            ),
        }
    }
    grants
}

/// Replaces `text`, the grant at `at`, by its rendering when it has
/// expressions.
fn fill_in(plan: &Plan, text: &mut String, at: &ValuePath, problems: &mut Diagnostics) {
    if !text.contains("${{") {
        return;
    }
    let rendered = Template::parse(text).ok().and_then(|template| {
        template
            .render(|reference| plan.static_value(reference).ok_or(()))
            .ok()
    });
    match rendered {
        Some(value) => *text = value,
        None => problems.push(undefined_value(plan, at)),
    }
}

/// A grant that names a value not known before the run: a variable the
/// environment lacks, or a run field known only later.
fn undefined_value(plan: &Plan, at: &ValuePath) -> Diagnostic {
    Code::GrantUndefined
        .diagnostic("this grant refers to a value the environment does not define")
        .at(&plan.runbook.source, at)
}

#[cfg(test)]
mod tests {
    use crate::runbook::bind::testing::{bound, codes, runbook};

    /// A runbook whose one step has `grants`, in an environment `vars`.
    fn with_grants(vars: &str, grants: &str) -> std::sync::Arc<crate::runbook::Runbook> {
        runbook(&format!(
            "[environments.production.vars]\n{vars}\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n{grants}\n"
        ))
    }

    #[test]
    fn http_grants_are_rendered_from_the_environment_and_parsed() {
        let runbook = with_grants(
            "api = \"https://api.example.com\"",
            "grants.http = [\"${{ vars.api }}/v1\", \"http://127.0.0.1:8080\"]",
        );
        let plan = bound(&runbook, Some("production"), &[]).unwrap();
        assert_eq!(
            plan.steps[0].grants.http_texts(),
            ["https://api.example.com/v1", "http://127.0.0.1:8080"]
        );
    }

    #[test]
    fn a_wildcard_a_wrong_url_and_an_unknown_value_are_each_reported() {
        let runbook = with_grants(
            "api = \"https://*.example.com\"",
            "grants.http = [\"${{ vars.api }}\", \"ftp://files.example.com\", \"https://${{ run.status }}\"]",
        );
        assert_eq!(
            codes(bound(&runbook, Some("production"), &[])),
            ["HttpWildcard", "HttpGrant", "GrantUndefined"]
        );
    }

    #[test]
    fn namespaces_and_regions_may_name_the_environments_variables() {
        let runbook = with_grants(
            "namespace = \"shop\"\nregion = \"eu-west-1\"",
            "grants.kube = { namespaces = [\"${{ vars.namespace }}\", \"kube-system\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }\ngrants.aws = { services = [\"rds\"], actions = [\"*\"], regions = [\"${{ vars.region }}\"] }",
        );
        let plan = bound(&runbook, Some("production"), &[]).unwrap();
        let grants = &plan.steps[0].grants;
        assert_eq!(
            grants.kube.as_ref().unwrap().namespaces,
            ["shop", "kube-system"]
        );
        assert_eq!(grants.aws.as_ref().unwrap().regions, ["eu-west-1"]);
    }

    #[test]
    fn a_namespace_or_region_the_environment_lacks_is_reported() {
        let runbook = runbook(
            "[environments.production.vars]\nnamespace = \"shop\"\n\n[environments.staging.vars]\nregion = \"eu-west-1\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\ngrants.kube = { namespaces = [\"${{ vars.namespace }}\"], resources = [\"v1/Pod\"], verbs = [\"get\"] }\ngrants.aws = { services = [\"rds\"], actions = [\"*\"], regions = [\"${{ vars.region }}\"] }\n",
        );
        assert_eq!(
            codes(bound(&runbook, Some("production"), &[])),
            ["GrantUndefined"]
        );
        assert_eq!(
            codes(bound(&runbook, Some("staging"), &[])),
            ["GrantUndefined"]
        );
    }
}
