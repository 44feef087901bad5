//! Where each secret's value is read from, in the environment a plan
//! binds: every `[secrets.NAME]` with the environment's values in its
//! templates (a file's path joined to the runbook's folder), and every
//! other secret the steps use from the environment variable of its name.
//! Nothing is read here: the host reads the values before any step runs
//! (`engine::preflight`).

use super::{Plan, SecretSource};
use crate::diagnostic::{Diagnostics, ValuePath};
use crate::runbook::{Code, WrittenSource};
use crate::template::{Reference, Template};
use std::collections::BTreeMap;

/// The sources of every declared secret and of every secret used.
pub(super) fn bind_secrets(
    plan: &Plan,
    problems: &mut Diagnostics,
) -> BTreeMap<String, SecretSource> {
    let runbook = &plan.runbook;
    let base = runbook
        .source
        .path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut sources = BTreeMap::new();
    for (name, written) in &runbook.secrets {
        let mut render = |template: &Template, key: &str| -> Option<String> {
            let rendered = template
                .render(|reference| plan.static_value(reference).ok_or(()))
                .ok();
            if rendered.is_none() {
                problems.push(undefined(plan, name, template, &written.at.key(key)));
            }
            rendered
        };
        let bound = match &written.source {
            WrittenSource::Env { var } => Some(SecretSource::Env {
                var: match var {
                    Some(var) => render(var, "var"),
                    None => Some(name.clone()),
                }
                .unwrap_or_default(),
            }),
            WrittenSource::File { path } => render(path, "path").map(|path| SecretSource::File {
                path: base.join(path),
            }),
            WrittenSource::AwsSecretsManager { id, region, key } => {
                let id = render(id, "id");
                let region = render(region, "region");
                let key = match key {
                    Some(key) => render(key, "key").map(Some),
                    None => Some(None),
                };
                match (id, region, key) {
                    (Some(id), Some(region), Some(key)) => {
                        Some(SecretSource::AwsSecretsManager { id, region, key })
                    }
                    _ => None,
                }
            }
        };
        if let Some(bound) = bound {
            sources.insert(name.clone(), bound);
        }
    }
    for name in plan.secret_names() {
        sources
            .entry(name.clone())
            .or_insert(SecretSource::Env { var: name });
    }
    sources
}

/// A secret's source whose `template` at `at` names a value the chosen
/// environment does not define.
fn undefined(
    plan: &Plan,
    name: &str,
    template: &Template,
    at: &ValuePath,
) -> crate::diagnostic::Diagnostic {
    let environment = plan.environment.as_deref().unwrap_or("(none)");
    let missing = template
        .references()
        .map(|(reference, _)| reference)
        .find(|reference| plan.static_value(reference).is_none());
    let (what, hint) = match missing {
        Some(Reference::Var(var)) => (
            format!("variable `{var}`, which environment `{environment}` does not define"),
            format!("add `{var} = ...` under `[environments.{environment}.vars]`"),
        ),
        Some(reference) => (
            format!("`{reference}`, which has no value in this run"),
            "give it a value, or write the source without it".to_owned(),
        ),
        None => (
            "a value this run does not have".to_owned(),
            "write the source with `params`, `vars` or `run.environment`".to_owned(),
        ),
    };
    Code::SecretSourceUndefined
        .diagnostic(format!("the source of secret `{name}` refers to {what}"))
        .at(&plan.runbook.source, at)
        .hint(hint)
}

#[cfg(test)]
mod tests {
    use crate::runbook::SecretSource;
    use crate::runbook::bind::testing::{bound, codes, runbook};

    #[test]
    fn sources_get_the_environments_values_and_undeclared_secrets_their_own_variable() {
        let runbook = runbook(
            "[environments.production.vars]\nprefix = \"prod/api\"\nregion = \"eu-west-1\"\n\n[environments.staging.vars]\nregion = \"eu-west-1\"\n\n[secrets.DB]\nfrom = \"aws-secretsmanager\"\nid = \"${{ vars.prefix }}/db\"\nregion = \"${{ vars.region }}\"\nkey = \"password\"\n\n[secrets.TOKEN]\nfrom = \"file\"\npath = \"secrets/token\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\ngrants.secrets = [\"DB\", \"TOKEN\", \"HOOK\"]\n",
        );
        let plan = bound(&runbook, Some("production"), &[]).unwrap();
        assert_eq!(
            plan.secret_sources["DB"],
            SecretSource::AwsSecretsManager {
                id: "prod/api/db".into(),
                region: "eu-west-1".into(),
                key: Some("password".into()),
            }
        );
        assert_eq!(
            plan.secret_sources["TOKEN"],
            SecretSource::File {
                path: "./secrets/token".into()
            }
        );
        assert_eq!(
            plan.secret_sources["HOOK"],
            SecretSource::Env { var: "HOOK".into() }
        );
        assert_eq!(
            codes(bound(&runbook, Some("staging"), &[])),
            ["SecretSourceUndefined"]
        );
    }
}
