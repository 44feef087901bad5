//! A step's grants, and a `[notify]` target's, with the environment's
//! values in them: HTTP prefixes
//! rendered and parsed, Kubernetes namespaces and AWS regions that name a
//! variable filled in.

use super::Plan;
use crate::diagnostic::{Diagnostic, Diagnostics, ValuePath};
use crate::grant::{CommandGrant, UrlGrant};
use crate::runbook::Code;
use crate::runbook::model::RawPort;
use crate::runbook::{Grants, NotifyTarget, Step, StepGrants};
use crate::template::Template;
use std::path::PathBuf;

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
        command: written
            .command
            .iter()
            .filter_map(|grant| command_grant(plan, grant, problems))
            .collect(),
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

/// A `grants.command` entry with the environment's values in its paths,
/// each path resolved against the runbook's folder and present on this
/// machine (the sandbox is built from the paths themselves).
fn command_grant(
    plan: &Plan,
    written: &crate::runbook::WrittenCommandGrant,
    problems: &mut Diagnostics,
) -> Option<CommandGrant> {
    let source = &plan.runbook.source;
    let base = source
        .path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut sound = true;
    let mut resolve = |text: &str, at: ValuePath, what: &str| -> Option<(String, PathBuf)> {
        let mut text = text.to_owned();
        let before = problems.0.len();
        fill_in(plan, &mut text, &at, problems);
        if problems.0.len() > before {
            sound = false;
            return None;
        }
        match base.join(&text).canonicalize() {
            Ok(path) if path == std::path::Path::new("/") => {
                sound = false;
                problems.push(
                    Code::CommandPath
                        .diagnostic(format!(
                            "`{text}` is the whole filesystem: the sandbox would hold nothing back"
                        ))
                        .at(source, &at)
                        .hint("grant the folders the program needs"),
                );
                None
            }
            Ok(path) => Some((text, path)),
            Err(error) => {
                sound = false;
                problems.push(
                    Code::CommandPath
                        .diagnostic(format!("cannot grant {what} `{text}`: {error}"))
                        .at(source, &at)
                        .hint("the sandbox is built from paths that exist on the machine that runs: install the program, or create the folder first"),
                );
                None
            }
        }
    };
    let program = resolve(&written.program, written.at.key("program"), "the program");
    let read: Vec<PathBuf> = (written.read.iter().enumerate())
        .filter_map(|(place, path)| resolve(path, written.at.key("read").index(place), "reading"))
        .map(|(_, path)| path)
        .collect();
    let write: Vec<PathBuf> = (written.write.iter().enumerate())
        .filter_map(|(place, path)| resolve(path, written.at.key("write").index(place), "writing"))
        .map(|(_, path)| path)
        .collect();
    if let Some((_, path)) = &program
        && !path.is_file()
    {
        problems.push(
            Code::CommandPath
                .diagnostic(format!(
                    "`{}` is not a program: {} is not a file",
                    written.program,
                    path.display()
                ))
                .at(source, &written.at.key("program"))
                .hint("name the program's file, e.g. `/usr/bin/kubectl`"),
        );
        return None;
    }
    let mut connect = Vec::new();
    for (place, port) in written.connect.iter().enumerate() {
        match port {
            RawPort::Number(port) => connect.push(*port),
            RawPort::Template(text) => {
                let at = written.at.key("connect").index(place);
                let mut text = text.clone();
                let before = problems.0.len();
                fill_in(plan, &mut text, &at, problems);
                if problems.0.len() > before {
                    sound = false;
                    continue;
                }
                match text.trim().parse::<u16>() {
                    Ok(port) if port != 0 => connect.push(port),
                    _ => {
                        sound = false;
                        problems.push(
                            Code::CommandPort
                                .diagnostic(format!("`{text}` is not a TCP port a program can connect to"))
                                .at(source, &at)
                                .hint("the value must be a port from 1 to 65535, e.g. `vars.db_port = 5432`"),
                        );
                    }
                }
            }
        }
    }
    let (rendered, program) = program?;
    if !sound {
        return None;
    }
    let path = std::path::absolute(base.join(&rendered)).unwrap_or_else(|_| program.clone());
    Some(CommandGrant {
        written: rendered,
        program,
        path,
        base: base.canonicalize().unwrap_or_else(|_| base.to_path_buf()),
        args: written.args.clone(),
        read,
        write,
        connect,
    })
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
    fn command_ports_may_name_the_environments_variables() {
        let runbook = with_grants(
            "db_port = 15432\nnot_a_port = \"postgres\"",
            "grants.command = [{ program = \"/bin/sh\", args = [], connect = [5432, \"${{ vars.db_port }}\"] }]",
        );
        let plan = bound(&runbook, Some("production"), &[]).unwrap();
        assert_eq!(plan.steps[0].grants.command[0].connect, [5432, 15432]);
        let wrong = with_grants(
            "not_a_port = \"postgres\"",
            "grants.command = [{ program = \"/bin/sh\", args = [], connect = [\"${{ vars.not_a_port }}\"] }]",
        );
        assert_eq!(
            codes(bound(&wrong, Some("production"), &[])),
            ["CommandPort"]
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
