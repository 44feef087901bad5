//! A step's `grants`: HTTP prefixes (templates, rendered when the runbook is
//! bound), secret names, Kubernetes verbs and resources, folders to read,
//! and AWS calls. Each is checked here so that a typo is an error before
//! the run rather than a denial in the middle of a deploy.

use super::is_identifier;
use super::references::ReferenceCheck;
use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath, did_you_mean};
use crate::grant::{AwsGrant, KubeGrant, VERBS};
use crate::runbook::model::{RawCommandGrant, RawPort};
use crate::runbook::model::{RawGrants, RawKubeGrant};
use crate::runbook::{Code, FsGrant, Grants, WrittenCommandGrant};
use crate::template::Template;
use std::path::{Component, Path};
use std::sync::Arc;

/// Checks the grants at `at` of the step `check` is for; every problem is
/// reported and the grant at fault left out.
pub(super) fn validate_grants(
    check: &ReferenceCheck<'_>,
    raw: &RawGrants,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Grants {
    let source = check.source;
    let http = http_grants(check, &raw.http, &at.key("http"), problems);
    secret_grants(source, &raw.secrets, &at.key("secrets"), problems);
    let kube = raw
        .kube
        .as_ref()
        .map(|grant| kube_grant(grant, source, &at.key("kube"), problems));
    let fs_read = fs_grants(source, &raw.fs.read, &at.key("fs").key("read"), problems);
    Grants {
        http,
        secrets: raw.secrets.clone(),
        fs_read,
        aws: raw.aws.as_ref().map(|grant| AwsGrant {
            services: grant.services.clone(),
            actions: grant.actions.clone(),
            regions: grant.regions.clone(),
        }),
        kube,
        command: command_grants(check, &raw.command, &at.key("command"), problems),
    }
}

/// `grants.command`: each program a path (no `$PATH` search: the grant
/// names exactly what runs), `**` only as the last pattern, real ports.
/// The paths are resolved when the plan is bound, where they may name the
/// environment's values.
fn command_grants(
    check: &ReferenceCheck<'_>,
    written: &[RawCommandGrant],
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Vec<WrittenCommandGrant> {
    let source = check.source;
    let mut grants = Vec::new();
    for (position, raw) in written.iter().enumerate() {
        let at = at.index(position);
        let mut sound = true;
        if !raw.program.contains('/') {
            sound = false;
            let program = if raw.program.is_empty() {
                "an empty program".to_owned()
            } else {
                format!("`{}`", raw.program)
            };
            problems.push(
                Code::CommandProgram
                    .diagnostic(format!("{program} is not a path: a granted program is named by its path, never looked up in `$PATH`"))
                    .at(source, &at.key("program"))
                    .hint(format!("write the full path, e.g. `program = \"/usr/bin/{}\"` (`command -v {}` prints it), or `./` and a path relative to the runbook", raw.program.trim(), raw.program.trim())),
            );
        }
        if let Some((_, before_last)) = raw.args.split_last()
            && let Some(place) = before_last
                .iter()
                .position(|pattern| pattern == crate::grant::ANY_FURTHER_ARGS)
        {
            sound = false;
            problems.push(
                Code::CommandArgs
                    .diagnostic("`**` allows any further arguments, so it can only be the last pattern")
                    .at(source, &at.key("args").index(place))
                    .hint("use `*` for one argument of any text; end the list with `**` to allow any further arguments"),
            );
        }
        for (place, port) in raw.connect.iter().enumerate() {
            let at = at.key("connect").index(place);
            match port {
                RawPort::Number(0) => {
                    sound = false;
                    problems.push(
                        Code::CommandPort
                            .diagnostic("port 0 is not a port a program can connect to")
                            .at(source, &at)
                            .hint("name the TCP port of the service, e.g. `connect = [5432]`"),
                    );
                }
                RawPort::Number(_) => {}
                RawPort::Template(text) => match Template::parse(text) {
                    Ok(template) => check.fixed_before_run().check(&template, &at, problems),
                    Err(error) => {
                        sound = false;
                        problems.push(
                            Code::Expression
                                .diagnostic(error.message)
                                .at(source, &at)
                                .hint(error.hint),
                        );
                    }
                },
            }
        }
        for (key, paths) in [("read", &raw.read), ("write", &raw.write)] {
            for (place, path) in paths.iter().enumerate() {
                if Path::new(path) == Path::new("/") {
                    sound = false;
                    problems.push(
                        Code::CommandPath
                            .diagnostic(format!("`{key} = [\"/\"]` grants the whole filesystem: the sandbox would hold nothing back"))
                            .at(source, &at.key(key).index(place))
                            .hint("grant the folders the program needs (its installation, its configuration, the files it works on)"),
                    );
                }
            }
        }
        if sound {
            grants.push(WrittenCommandGrant {
                program: raw.program.clone(),
                args: raw.args.clone(),
                read: raw.read.clone(),
                write: raw.write.clone(),
                connect: raw.connect.clone(),
                at,
            });
        }
    }
    grants
}

/// `grants.http`: templates that may refer only to what is fixed before the
/// run starts.
fn http_grants(
    check: &ReferenceCheck<'_>,
    written: &[String],
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Vec<(Template, ValuePath)> {
    let mut grants = Vec::new();
    for (position, text) in written.iter().enumerate() {
        let at = at.index(position);
        match Template::parse(text) {
            Ok(template) => {
                check.fixed_before_run().check(&template, &at, problems);
                grants.push((template, at));
            }
            Err(error) => problems.push(
                Code::Expression
                    .diagnostic(error.message)
                    .at(check.source, &at)
                    .hint(error.hint),
            ),
        }
    }
    grants
}

/// `grants.secrets`: names, as the secret store knows them.
fn secret_grants(
    source: &Arc<Source>,
    names: &[String],
    at: &ValuePath,
    problems: &mut Diagnostics,
) {
    for (position, secret) in names.iter().enumerate() {
        if !is_identifier(secret) {
            problems.push(
                Code::SecretName
                    .diagnostic(format!("`{secret}` is not a secret name"))
                    .at(source, &at.index(position))
                    .hint("secret names are letters, digits, `_` and `-`"),
            );
        }
    }
}

/// `grants.kube`: known verbs, `GROUP/VERSION/Kind` resources, and at least
/// one namespace.
fn kube_grant(
    raw: &RawKubeGrant,
    source: &Arc<Source>,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> KubeGrant {
    for (position, verb) in raw.verbs.iter().enumerate() {
        if !VERBS.contains(&verb.as_str()) {
            let hint = match did_you_mean(verb, VERBS.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? verbs are {}", VERBS.join(", ")),
                None => format!("verbs are {}", VERBS.join(", ")),
            };
            problems.push(
                Code::KubeVerb
                    .diagnostic(format!("`{verb}` is not a Kubernetes verb"))
                    .at(source, &at.key("verbs").index(position))
                    .hint(hint),
            );
        }
    }
    for (position, resource) in raw.resources.iter().enumerate() {
        if !is_resource(resource) {
            problems.push(
                Code::KubeResource
                    .diagnostic(format!("`{resource}` is not GROUP/VERSION/Kind"))
                    .at(source, &at.key("resources").index(position))
                    .hint("write `apps/v1/Deployment`, or `v1/Service` for the core group"),
            );
        }
    }
    if raw.namespaces.is_empty() {
        problems.push(
            Code::KubeNoNamespace
                .diagnostic("`grants.kube.namespaces` is empty: the grant allows nothing")
                .at(source, &at.key("namespaces"))
                .hint("name the namespaces, or `\"*\"` for all of them"),
        );
    }
    KubeGrant {
        namespaces: raw.namespaces.clone(),
        resources: raw.resources.clone(),
        verbs: raw.verbs.clone(),
    }
}

/// Whether `resource` is `GROUP/VERSION/Kind` or `VERSION/Kind`, the kind
/// capitalised as Kubernetes writes kinds.
fn is_resource(resource: &str) -> bool {
    let parts: Vec<&str> = resource.split('/').collect();
    matches!(parts.len(), 2 | 3)
        && parts.iter().all(|part| !part.is_empty())
        && parts
            .last()
            .is_some_and(|kind| kind.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// `grants.fs.read`: each entry resolved, or reported and left out.
fn fs_grants(
    source: &Arc<Source>,
    written: &[String],
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Vec<FsGrant> {
    let mut grants = Vec::new();
    for (position, written) in written.iter().enumerate() {
        match fs_grant(&source.path, written) {
            Ok(grant) => grants.push(grant),
            Err(problem) => problems.push(problem.at(source, &at.index(position))),
        }
    }
    grants
}

/// Checks a `grants.fs.read` entry: relative, without `..`, an existing
/// folder that stays inside the runbook's folder after symlinks. A problem
/// comes without its place.
fn fs_grant(runbook: &Path, written: &str) -> Result<FsGrant, Diagnostic> {
    let problem = |code: Code, message: String| {
        code.diagnostic(message).hint(
            "write a folder relative to the runbook, inside its folder: `grants.fs.read = [\"./dist\"]`",
        )
    };
    let relative = Path::new(written);
    if relative.is_absolute() {
        let message = format!("`{written}` is an absolute path");
        return Err(problem(Code::FsAbsolute, message));
    }
    if relative
        .components()
        .any(|part| matches!(part, Component::ParentDir))
    {
        let message = format!("`{written}` climbs out with `..`");
        return Err(problem(Code::FsClimbs, message));
    }
    let base = runbook
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let host = base.join(relative).canonicalize().map_err(|error| {
        let message = format!("cannot grant `{written}`: {error}");
        problem(Code::FsMissing, message)
    })?;
    // Fails only if the folder went away since `host` was resolved in it:
    // the same kind of problem.
    let root = base.canonicalize().map_err(|error| {
        let message = format!("cannot resolve the runbook's folder: {error}");
        problem(Code::FsMissing, message)
    })?;
    if !host.starts_with(&root) {
        let message = format!(
            "`{written}` leads outside the runbook's folder (to {}) through a symlink",
            host.display()
        );
        return Err(problem(Code::FsSymlinkEscape, message));
    }
    if !host.is_dir() {
        let message = format!("`{written}` is not a folder");
        return Err(problem(Code::FsNotAFolder, message));
    }
    Ok(FsGrant {
        written: written.to_owned(),
        guest: guest_path(relative),
        host,
    })
}

/// Where the plugin sees a granted folder: its path below the runbook's
/// folder, from `/`.
fn guest_path(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{Scope, codes, raw, source};

    /// The grants written as the TOML `text` of a step's `grants` table,
    /// checked for step `deploy` of a runbook in the current folder.
    fn checked(text: &str) -> (Grants, Vec<&'static str>) {
        let source = source(text);
        let raw: RawGrants = raw(text);
        let mut problems = Diagnostics::default();
        let grants = Scope::new(&[], &["host"]).check(&source, "deploy", &[], |check| {
            validate_grants(check, &raw, &ValuePath::default(), &mut problems)
        });
        (grants, codes(&problems))
    }

    #[test]
    fn http_grants_stay_templates_that_name_only_values_fixed_before_the_run() {
        let (grants, problems) =
            checked("http = [\"https://${{ vars.host }}\", \"https://${{ item }}\", \"${{\"]");
        assert_eq!(
            grants.http.len(),
            2,
            "the one that does not parse is left out"
        );
        assert_eq!(problems, ["ItemOutsideForEach", "Expression"]);
    }

    #[test]
    fn secret_names_are_identifiers() {
        let (_, problems) = checked("secrets = [\"api-token\", \"API_KEY\", \"a b\", \"\"]");
        assert_eq!(problems, ["SecretName", "SecretName"]);
    }

    #[test]
    fn a_kube_grant_has_known_verbs_whole_resources_and_a_namespace() {
        let (grants, problems) = checked(
            "kube = { namespaces = [\"shop\"], resources = [\"apps/v1/Deployment\", \"v1/Service\"], verbs = [\"get\", \"patch\"] }",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(grants.kube.unwrap().namespaces, ["shop"]);
        let (_, problems) = checked(
            "kube = { namespaces = [], resources = [\"v1/service\", \"apps//Deployment\", \"a/b/c/D\"], verbs = [\"patsh\"] }",
        );
        assert_eq!(
            problems,
            [
                "KubeVerb",
                "KubeResource",
                "KubeResource",
                "KubeResource",
                "KubeNoNamespace"
            ]
        );
    }

    #[test]
    fn resources_are_version_and_kind_with_or_without_a_group() {
        assert!(is_resource("v1/ConfigMap"));
        assert!(is_resource("batch/v1/Job"));
        for bad in [
            "Deployment",
            "v1/",
            "/v1/Job",
            "apps/v1/deployment",
            "a/b/c/D",
        ] {
            assert!(!is_resource(bad), "{bad}");
        }
    }

    #[test]
    fn an_aws_grant_is_taken_as_written() {
        let (grants, problems) = checked(
            "aws = { services = [\"rds\"], actions = [\"Describe*\"], regions = [\"${{ vars.region }}\"] }",
        );
        assert!(problems.is_empty());
        assert_eq!(grants.aws.unwrap().regions, ["${{ vars.region }}"]);
    }

    #[test]
    fn a_folder_is_granted_relative_to_the_runbook_and_seen_from_the_root() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(folder.path().join("site/dist")).unwrap();
        let runbook = folder.path().join("r.toml");
        let grant = fs_grant(&runbook, "./site/dist").unwrap();
        assert_eq!(grant.guest, "/site/dist");
        assert_eq!(
            grant.host,
            folder.path().join("site/dist").canonicalize().unwrap()
        );
        assert_eq!(grant.written, "./site/dist");
        assert_eq!(fs_grant(&runbook, ".").unwrap().guest, "/");
    }

    #[test]
    fn a_folder_outside_the_runbooks_or_not_a_folder_is_refused() {
        let folder = tempfile::tempdir().unwrap();
        let inside = folder.path().join("runbooks");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("notes.txt"), "").unwrap();
        std::os::unix::fs::symlink(folder.path(), inside.join("up")).unwrap();
        let runbook = inside.join("r.toml");
        let code = |written| fs_grant(&runbook, written).unwrap_err().code.unwrap();
        assert_eq!(code("/etc"), "FsAbsolute");
        assert_eq!(code("dist/../../x"), "FsClimbs");
        assert_eq!(code("missing"), "FsMissing");
        assert_eq!(code("up"), "FsSymlinkEscape");
        assert_eq!(code("notes.txt"), "FsNotAFolder");
    }
}
