//! A step's grants with the environment's values in them: HTTP prefixes
//! rendered and parsed, Kubernetes namespaces and AWS regions that name a
//! variable filled in.

use super::Plan;
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::grant::UrlGrant;
use crate::runbook::Code;
use crate::runbook::{Step, StepGrants};
use crate::template::Template;

/// What `step` may touch, in the environment `plan` binds.
pub(super) fn resolve(plan: &Plan, step: &Step, problems: &mut Diagnostics) -> StepGrants {
    let mut grants = StepGrants {
        http: http_grants(plan, step, problems),
        secrets: step.secret_grants.clone(),
        fs_read: step.fs_read.clone(),
        aws: step.aws.clone(),
        kube: step.kube.clone(),
    };
    // Kubernetes namespaces and AWS regions may come from the
    // environment (`namespaces = ["${{ vars.namespace }}"]`).
    let at = step.path().key("grants");
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
fn http_grants(plan: &Plan, step: &Step, problems: &mut Diagnostics) -> Vec<UrlGrant> {
    let source = &plan.runbook.source;
    let mut grants = Vec::new();
    for (template, at) in &step.http_grants {
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
