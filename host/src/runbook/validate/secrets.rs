//! `[secrets.NAME]`: where each declared secret's value comes from. The
//! name is a secret name, `from` names a source, each source has the keys
//! it needs and no other's, and its templates name only what is fixed
//! before the run (parameters, the environment's variables, `run.id`,
//! `run.environment`, `run.operator`): the host reads secrets before any
//! step runs. Whether a declared secret is used is a warning, given where
//! plugins are checked (`engine::preflight`).

use super::references::ReferenceCheck;
use super::{Declared, StepContext, is_identifier};
use crate::diagnostic::{Diagnostics, Source, ValuePath, did_you_mean};
use crate::runbook::model::RawSecret;
use crate::runbook::{Code, WrittenSecret, WrittenSource, secret_path};
use crate::template::{Reference, RunField, Template};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The sources `from` may name.
pub const SOURCES: [&str; 3] = ["env", "file", "aws-secretsmanager"];

/// Checks every `[secrets.NAME]`; a table with a problem is reported and
/// left out, so that the rest is still checked.
pub(super) fn validate_secrets(
    source: &Arc<Source>,
    raw: BTreeMap<String, RawSecret>,
    declared: &Declared<'_>,
    problems: &mut Diagnostics,
) -> BTreeMap<String, WrittenSecret> {
    let none = BTreeSet::new();
    let context = StepContext {
        declared,
        ancestors: &none,
        for_each_steps: &none,
    };
    let check = ReferenceCheck {
        source,
        context: &context,
        step_id: "",
        secret_grants: &[],
        allow_step_outputs: false,
        allow_secrets: false,
        allow_item: false,
        in_notify: false,
    };
    let mut secrets = BTreeMap::new();
    for (name, raw) in raw {
        let at = secret_path(&name);
        if !is_identifier(&name) {
            problems.push(
                Code::SecretName
                    .diagnostic(format!("`{name}` is not a secret name"))
                    .at(source, &at)
                    .hint("secret names are letters, digits, `_` and `-`"),
            );
            continue;
        }
        if let Some(written) = secret(&check, &name, raw, &at, problems) {
            secrets.insert(
                name,
                WrittenSecret {
                    source: written,
                    at,
                },
            );
        }
    }
    secrets
}

/// One `[secrets.NAME]` at `at`, checked; `None` when it cannot be read.
fn secret(
    check: &ReferenceCheck<'_>,
    name: &str,
    raw: RawSecret,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Option<WrittenSource> {
    let source = check.source;
    let from = raw.from.as_deref().unwrap_or("env");
    if !SOURCES.contains(&from) {
        let hint = match did_you_mean(from, SOURCES) {
            Some(close) => format!("did you mean `{close}`? A secret comes from `env`, `file` or `aws-secretsmanager`"),
            None => "a secret comes from `env` (an environment variable), `file` or `aws-secretsmanager`".to_owned(),
        };
        problems.push(
            Code::UnknownSecretSource
                .diagnostic(format!(
                    "secret `{name}` comes from `{from}`, which is no source of secrets"
                ))
                .at(source, &at.key("from"))
                .hint(hint),
        );
        return None;
    }
    let before = problems.0.len();
    let given = [
        ("var", raw.var.is_some()),
        ("path", raw.path.is_some()),
        ("id", raw.id.is_some()),
        ("region", raw.region.is_some()),
        ("key", raw.key.is_some()),
    ];
    let allowed: &[&str] = match from {
        "env" => &["var"],
        "file" => &["path"],
        _ => &["id", "region", "key"],
    };
    for (key, _) in given
        .iter()
        .filter(|(key, present)| *present && !allowed.contains(key))
    {
        let hint = match (from, *key) {
            ("file", "key") => "a file holds the secret's text itself: remove `key`, or keep the secret in AWS Secrets Manager as a JSON object".to_owned(),
            _ => format!(
                "a secret from `{from}` takes {}",
                allowed
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        problems.push(
            Code::SecretSourceKey
                .diagnostic(format!(
                    "secret `{name}` comes from `{from}`, which has no `{key}`"
                ))
                .at(source, &at.key(*key))
                .hint(hint),
        );
    }
    let mut required = |key: &str, value: Option<String>, example: &str| -> Option<Template> {
        let Some(value) = value else {
            problems.push(
                Code::SecretSourceMissingKey
                    .diagnostic(format!(
                        "secret `{name}` comes from `{from}` but has no `{key}`"
                    ))
                    .at(source, &at.key("from"))
                    .hint(format!("add `{key} = {example}` under `[secrets.{name}]`")),
            );
            return None;
        };
        template(check, &value, &at.key(key), problems)
    };
    let written = match from {
        "env" => WrittenSource::Env {
            var: raw
                .var
                .and_then(|var| template(check, &var, &at.key("var"), problems)),
        },
        "file" => WrittenSource::File {
            path: required("path", raw.path, "\"/run/secrets/token\"")?,
        },
        _ => {
            let id = required("id", raw.id, "\"prod/api/db\"");
            let region = required("region", raw.region, "\"us-east-1\"");
            let key = raw
                .key
                .and_then(|key| template(check, &key, &at.key("key"), problems));
            WrittenSource::AwsSecretsManager {
                id: id?,
                region: region?,
                key,
            }
        }
    };
    (problems.0.len() == before).then_some(written)
}

/// The string at `at` as a template whose references are fixed before
/// the run; a problem is reported, and `None` returned when it does not
/// parse.
fn template(
    check: &ReferenceCheck<'_>,
    text: &str,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Option<Template> {
    let template = match Template::parse(text) {
        Ok(template) => template,
        Err(error) => {
            problems.push(
                Code::Expression
                    .diagnostic(error.message)
                    .at(check.source, at)
                    .hint(error.hint),
            );
            return None;
        }
    };
    for (reference, range) in template.references() {
        let fixed = matches!(
            reference,
            Reference::Param(_)
                | Reference::Var(_)
                | Reference::Run(RunField::Id | RunField::Environment | RunField::Operator)
        );
        let problem = if fixed {
            check.problem(reference)
        } else {
            Some(
                Code::SecretSourceNotFixed
                    .diagnostic(format!(
                        "`{reference}` cannot be used in a secret's source: secrets are read before any step runs"
                    ))
                    .hint("use `params`, `vars`, `run.environment`, `run.id` or `run.operator` here"),
            )
        };
        if let Some(problem) = problem {
            problems.push(problem.at_span(check.source, check.span_in_string(at, range)));
        }
    }
    Some(template)
}

#[cfg(test)]
mod tests {
    use super::super::testing::codes_of;

    fn runbook(secrets: &str) -> String {
        format!(
            "[runbook]\nname = \"r\"\n\n[params.prefix]\ndefault = \"prod\"\n\n[environments.production.vars]\nregion = \"eu-west-1\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n{secrets}\n[[steps]]\nid = \"a\"\nuses = \"noop\"\ngrants.secrets = [\"DB\"]\n"
        )
    }

    #[test]
    fn each_source_with_its_keys_is_taken() {
        let text = runbook(
            "[secrets.DB]\nfrom = \"aws-secretsmanager\"\nid = \"${{ params.prefix }}/db\"\nregion = \"${{ vars.region }}\"\nkey = \"password\"\n\n[secrets.TOKEN]\nfrom = \"file\"\npath = \"/run/secrets/token\"\n\n[secrets.HOOK]\nvar = \"SLACK_URL\"\n",
        );
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", text))
            .unwrap_or_else(|problems| panic!("{problems}"));
        assert_eq!(runbook.secrets["DB"].source.kind(), "aws-secretsmanager");
        assert_eq!(runbook.secrets["TOKEN"].source.kind(), "file");
        assert_eq!(runbook.secrets["HOOK"].source.kind(), "env");
    }

    #[test]
    fn an_unknown_source_a_missing_key_and_a_key_of_another_source_are_each_reported() {
        assert_eq!(
            codes_of(&runbook("[secrets.DB]\nfrom = \"vault\"\n")),
            ["UnknownSecretSource"]
        );
        assert_eq!(
            codes_of(&runbook(
                "[secrets.DB]\nfrom = \"aws-secretsmanager\"\nregion = \"us-east-1\"\n"
            )),
            ["SecretSourceMissingKey"]
        );
        assert_eq!(
            codes_of(&runbook(
                "[secrets.DB]\nfrom = \"file\"\npath = \"db\"\nkey = \"password\"\n"
            )),
            ["SecretSourceKey"]
        );
        assert_eq!(
            codes_of(&runbook(
                "[secrets.\"D B\"]\nfrom = \"file\"\npath = \"db\"\n"
            )),
            ["SecretName"]
        );
    }

    #[test]
    fn a_source_names_only_what_is_fixed_before_the_run() {
        assert_eq!(
            codes_of(&runbook(
                "[secrets.DB]\nfrom = \"file\"\npath = \"${{ steps.a.outputs.path }}\"\n"
            )),
            ["SecretSourceNotFixed"]
        );
        assert_eq!(
            codes_of(&runbook(
                "[secrets.DB]\nfrom = \"aws-secretsmanager\"\nid = \"${{ params.nope }}/db\"\nregion = \"${{ vars.nowhere }}\"\n"
            )),
            ["UnknownParam", "UnknownVar"]
        );
        assert!(
            codes_of(&runbook(
                "[secrets.DB]\nfrom = \"aws-secretsmanager\"\nid = \"${{ run.environment }}/db\"\nregion = \"us-east-1\"\n"
            ))
            .is_empty()
        );
    }
}
