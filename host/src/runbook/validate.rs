//! Checks a raw runbook into a [`Runbook`]: names, durations, templates and
//! references. Reports every problem it finds, each at its place in the file.

use super::model::{RawPluginSource, RawRunbook, RawStep};
use super::{
    DEFAULT_MEMORY, DEFAULT_TIMEOUT, Environment, ParamSpec, ParamTree, PluginSource, Runbook,
    Step, StepId, parse_memory,
};
use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath, relative_to};
use crate::template::{Reference, Template};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Validates the raw model; every problem found is reported.
pub fn validate(source: Arc<Source>, raw: RawRunbook) -> Result<Runbook, Diagnostics> {
    let mut problems = Diagnostics::default();
    let root = ValuePath::default();

    let params = validate_params(&source, &raw, &mut problems);
    let environments = raw
        .environments
        .into_iter()
        .map(|(name, environment)| {
            let vars = environment
                .vars
                .into_iter()
                .map(|(key, value)| (key, toml_to_json(value)))
                .collect();
            (
                name,
                Environment {
                    description: environment.description,
                    vars,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    let plugins = raw
        .plugins
        .into_iter()
        .map(|(name, plugin)| {
            let (path, sha256) = match plugin {
                RawPluginSource::Path(path) => (path, None),
                RawPluginSource::Pinned(pinned) => (pinned.path, pinned.sha256),
            };
            let path_in_file = root.key("plugins").key(&name);
            if let Some(digest) = &sha256
                && (digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()))
            {
                problems.push(
                    Diagnostic::new(format!("plugin `{name}` has a malformed sha256"))
                        .at(&source, &path_in_file.key("sha256"))
                        .hint("a sha256 is 64 hex digits; `runbook plugin inspect FILE` prints it"),
                );
            }
            let source_path = relative_to(&source.path, &path);
            (
                name,
                PluginSource {
                    path: source_path,
                    sha256: sha256.map(|digest| digest.to_ascii_lowercase()),
                },
            )
        })
        .collect::<BTreeMap<_, _>>();

    let mut steps = Vec::with_capacity(raw.steps.len());
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (index, raw_step) in raw.steps.into_iter().enumerate() {
        let step = validate_step(
            &source,
            index,
            raw_step,
            &StepContext {
                params: &params,
                environments: &environments,
                plugins: &plugins,
                earlier: &seen,
            },
            &mut problems,
        );
        if !seen.insert(step.id.0.clone()) {
            problems.push(
                Diagnostic::new(format!("step id `{}` is used twice", step.id))
                    .at(&source, &step.path().key("id"))
                    .hint("give every step its own id"),
            );
        }
        steps.push(step);
    }
    if steps.is_empty() {
        problems.push(
            Diagnostic::new("the runbook has no steps")
                .at(&source, &root.key("runbook"))
                .hint("add a `[[steps]]` table with `id` and `uses`"),
        );
    }

    problems.into_result(Runbook {
        name: raw.runbook.name,
        description: raw.runbook.description,
        source,
        params,
        environments,
        plugins,
        steps,
    })
}

fn validate_params(
    source: &Arc<Source>,
    raw: &RawRunbook,
    problems: &mut Diagnostics,
) -> BTreeMap<String, ParamSpec> {
    let mut params = BTreeMap::new();
    for (name, param) in &raw.params {
        let path = ValuePath::default().key("params").key(name);
        let pattern = param.pattern.as_ref().and_then(|pattern| {
            match Regex::new(&format!("^(?:{pattern})$")) {
                Ok(regex) => Some(regex),
                Err(error) => {
                    problems.push(
                        Diagnostic::new(format!("parameter `{name}` has an invalid pattern"))
                            .at(source, &path.key("pattern"))
                            .hint(error.to_string().lines().last().unwrap_or("").to_owned()),
                    );
                    None
                }
            }
        });
        if let (Some(default), Some(regex)) = (&param.default, &pattern)
            && !regex.is_match(default)
        {
            problems.push(
                Diagnostic::new(format!(
                    "the default of parameter `{name}` does not match its own pattern"
                ))
                .at(source, &path.key("default")),
            );
        }
        params.insert(
            name.clone(),
            ParamSpec {
                description: param.description.clone(),
                required: param.required,
                default: param.default.clone(),
                pattern,
            },
        );
    }
    params
}

struct StepContext<'a> {
    params: &'a BTreeMap<String, ParamSpec>,
    environments: &'a BTreeMap<String, Environment>,
    plugins: &'a BTreeMap<String, PluginSource>,
    earlier: &'a BTreeSet<String>,
}

fn validate_step(
    source: &Arc<Source>,
    index: usize,
    raw: RawStep,
    context: &StepContext<'_>,
    problems: &mut Diagnostics,
) -> Step {
    let path = ValuePath::step(index);
    if !is_identifier(&raw.id) {
        problems.push(
            Diagnostic::new(format!("step id `{}` is not a valid id", raw.id))
                .at(source, &path.key("id"))
                .hint("ids are letters, digits, `_` and `-`, starting with a letter"),
        );
    }
    if !context.plugins.contains_key(&raw.uses) {
        let known = context.plugins.keys().cloned().collect::<Vec<_>>();
        problems.push(
            Diagnostic::new(format!(
                "step `{}` uses unknown plugin `{}`",
                raw.id, raw.uses
            ))
            .at(source, &path.key("uses"))
            .hint(if known.is_empty() {
                format!(
                    "declare it: `[plugins]\n{} = \"path/to/{}.wasm\"`",
                    raw.uses, raw.uses
                )
            } else {
                format!("declared plugins: {}", known.join(", "))
            }),
        );
    }
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => humantime::parse_duration(text).unwrap_or_else(|error| {
            problems.push(
                Diagnostic::new(format!("`{text}` is not a duration: {error}"))
                    .at(source, &path.key("timeout"))
                    .hint("write it like \"90s\", \"2m\" or \"1h 30m\""),
            );
            DEFAULT_TIMEOUT
        }),
    };
    let memory_limit = match &raw.memory {
        None => DEFAULT_MEMORY,
        Some(text) => parse_memory(text).unwrap_or_else(|| {
            problems.push(
                Diagnostic::new(format!("`{text}` is not a memory size"))
                    .at(source, &path.key("memory"))
                    .hint("write it like \"64MiB\" or \"1GiB\""),
            );
            DEFAULT_MEMORY
        }),
    };

    let with_path = path.key("with");
    let with = tree_from_toml(toml::Value::Table(raw.with), &with_path, source, problems);
    let check = ReferenceCheck {
        source,
        context,
        step_id: &raw.id,
        secret_grants: &raw.grants.secrets,
        allow_step_outputs: true,
        allow_secrets: true,
    };
    with.templates(&with_path, &mut |template, at| {
        check.check(template, at, problems)
    });

    let grants_path = path.key("grants");
    let mut http_grants = Vec::new();
    for (position, text) in raw.grants.http.iter().enumerate() {
        let at = grants_path.key("http").index(position);
        match Template::parse(text) {
            Ok(template) => {
                ReferenceCheck {
                    allow_step_outputs: false,
                    allow_secrets: false,
                    ..check
                }
                .check(&template, &at, problems);
                http_grants.push((template, at));
            }
            Err(error) => problems.push(
                Diagnostic::new(error.message)
                    .at(source, &at)
                    .hint(error.hint),
            ),
        }
    }
    for (position, secret) in raw.grants.secrets.iter().enumerate() {
        if !is_identifier(secret) {
            problems.push(
                Diagnostic::new(format!("`{secret}` is not a secret name"))
                    .at(source, &grants_path.key("secrets").index(position))
                    .hint("secret names are letters, digits, `_` and `-`"),
            );
        }
    }

    Step {
        index,
        name: raw.name.unwrap_or_else(|| raw.id.clone()),
        id: StepId(raw.id),
        uses: raw.uses,
        timeout,
        memory_limit,
        with,
        http_grants,
        secret_grants: raw.grants.secrets,
    }
}

#[derive(Clone, Copy)]
struct ReferenceCheck<'a> {
    source: &'a Arc<Source>,
    context: &'a StepContext<'a>,
    step_id: &'a str,
    secret_grants: &'a [String],
    allow_step_outputs: bool,
    allow_secrets: bool,
}

impl ReferenceCheck<'_> {
    fn check(&self, template: &Template, at: &ValuePath, problems: &mut Diagnostics) {
        for (reference, range) in template.references() {
            if let Some((message, hint)) = self.problem(reference) {
                problems.push(
                    Diagnostic::new(message)
                        .at_span(self.source, self.span_in_string(at, range))
                        .hint(hint),
                );
            }
        }
    }

    /// The span of an expression inside a string value: exact when the
    /// string is written without escapes, else the whole string.
    fn span_in_string(
        &self,
        at: &ValuePath,
        range: &std::ops::Range<usize>,
    ) -> std::ops::Range<usize> {
        let whole = self.source.span_of(at).unwrap_or(0..0);
        let start = whole.start + 1 + range.start;
        let end = whole.start + 1 + range.end;
        match self.source.text.get(start..end) {
            Some(text) if text.starts_with("${{") && text.ends_with("}}") => start..end,
            _ => whole,
        }
    }

    fn problem(&self, reference: &Reference) -> Option<(String, String)> {
        let context = self.context;
        match reference {
            Reference::Param(name) if !context.params.contains_key(name) => Some((
                format!("unknown parameter `{name}` in `${{{{ {reference} }}}}`"),
                if context.params.is_empty() {
                    format!("declare it: `[params.{name}]`")
                } else {
                    format!(
                        "declared parameters: {}; or declare it: `[params.{name}]`",
                        context
                            .params
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            )),
            Reference::Var(name)
                if !context
                    .environments
                    .values()
                    .any(|environment| environment.vars.contains_key(name)) =>
            {
                Some((
                    format!("no environment defines variable `{name}`"),
                    format!("add `{name} = ...` under `[environments.NAME.vars]`"),
                ))
            }
            Reference::StepOutput { .. } if !self.allow_step_outputs => Some((
                format!("`{reference}` cannot be used in a grant"),
                "grants are fixed before the run starts; use `params` or `vars` here".into(),
            )),
            Reference::StepOutput { step, .. } if !context.earlier.contains(step) => Some((
                format!(
                    "`{reference}` refers to step `{step}`, which does not run before `{}`",
                    self.step_id
                ),
                if step == self.step_id {
                    "a step cannot read its own outputs".into()
                } else {
                    format!(
                        "only steps above `{}` in the file can be referenced",
                        self.step_id
                    )
                },
            )),
            Reference::Secret(_) if !self.allow_secrets => Some((
                format!("`{reference}` cannot be used here"),
                "secrets can be used only in a step's `with`".into(),
            )),
            Reference::Secret(name) if !self.secret_grants.contains(name) => Some((
                format!(
                    "step `{}` uses secret `{name}` without a grant",
                    self.step_id
                ),
                format!("grant it to this step: `grants.secrets = [\"{name}\"]`"),
            )),
            _ => None,
        }
    }
}

/// Converts the step's `with` table, parsing every string as a template.
fn tree_from_toml(
    value: toml::Value,
    path: &ValuePath,
    source: &Arc<Source>,
    problems: &mut Diagnostics,
) -> ParamTree {
    match value {
        toml::Value::String(text) => match Template::parse(&text) {
            Ok(template) => ParamTree::String(template),
            Err(error) => {
                problems.push(
                    Diagnostic::new(error.message)
                        .at(source, path)
                        .hint(error.hint),
                );
                ParamTree::Scalar(serde_json::Value::String(text))
            }
        },
        toml::Value::Array(items) => ParamTree::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| tree_from_toml(item, &path.index(index), source, problems))
                .collect(),
        ),
        toml::Value::Table(table) => ParamTree::Table(
            table
                .into_iter()
                .map(|(key, item)| {
                    let child = tree_from_toml(item, &path.key(&key), source, problems);
                    (key, child)
                })
                .collect(),
        ),
        other => ParamTree::Scalar(toml_to_json(other)),
    }
}

/// A TOML value as JSON; dates become their TOML text.
pub fn toml_to_json(value: toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text),
        toml::Value::Integer(number) => serde_json::Value::from(number),
        toml::Value::Float(number) => serde_json::Value::from(number),
        toml::Value::Boolean(flag) => serde_json::Value::Bool(flag),
        toml::Value::Datetime(date) => serde_json::Value::String(date.to_string()),
        toml::Value::Array(items) => items.into_iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .into_iter()
                .map(|(key, item)| (key, toml_to_json(item)))
                .collect(),
        ),
    }
}

/// Step ids and secret names: a letter, then letters, digits, `_`, `-`.
pub fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '-'
        })
}
