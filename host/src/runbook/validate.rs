//! Checks a raw runbook into a [`Runbook`]: names, durations, templates and
//! references. Reports every problem it finds, each at its place in the file.

use super::model::{RawApprovals, RawEnvironment, RawKind, RawPluginSource, RawRunbook, RawStep};
use super::{
    Action, Approvals, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Environment, ForEach, MAX_ATTEMPTS,
    MAX_DURATION, MAX_FOR_EACH, MAX_MEMORY, ParamSpec, ParamTree, PluginSource, Policy,
    RetryPolicy, Runbook, Schedule, Step, StepId, for_each_problem, for_each_too_long,
    parse_memory,
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
            let path = root.key("environments").key(&name);
            let checked = validate_environment(&source, &path, environment, &mut problems);
            (name, checked)
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

    let graph = StepGraph::new(&source, &raw.steps, &mut problems);
    let for_each_steps: BTreeSet<String> = raw
        .steps
        .iter()
        .filter(|step| step.for_each.is_some())
        .map(|step| step.id.clone())
        .collect();
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (index, raw_step) in raw.steps.into_iter().enumerate() {
        // Ancestors matter only to steps that mention other steps; a long
        // chain would otherwise cost quadratic time here.
        let mentions_steps = raw_step
            .condition
            .as_deref()
            .is_some_and(|text| text.contains("steps."))
            || raw_step.with.to_string().contains("steps.");
        let ancestors = if mentions_steps {
            graph.ancestors(index)
        } else {
            BTreeSet::new()
        };
        let needs = graph.needs[index].clone();
        let step = validate_step(
            &source,
            index,
            raw_step,
            &StepContext {
                params: &params,
                environments: &environments,
                plugins: &plugins,
                ancestors: &ancestors,
                for_each_steps: &for_each_steps,
            },
            &mut problems,
        );
        steps.push(Step {
            needs: needs.into_iter().map(StepId).collect(),
            ..step
        });
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
        on_failure: raw.runbook.on_failure.unwrap_or(Policy::Rollback),
    })
}

fn validate_environment(
    source: &Arc<Source>,
    path: &ValuePath,
    environment: RawEnvironment,
    problems: &mut Diagnostics,
) -> Environment {
    let vars = environment
        .vars
        .into_iter()
        .map(|(key, value)| (key, toml_to_json(value)))
        .collect();
    let mut schedule = Schedule::new(environment.timezone.as_deref()).unwrap_or_else(|message| {
        problems.push(Diagnostic::new(message).at(source, &path.key("timezone")));
        Schedule::default()
    });
    for (position, window) in environment.windows.iter().enumerate() {
        if let Err(message) = schedule.add_window(&window.days, &window.from, &window.to) {
            problems.push(
                Diagnostic::new(format!("deploy window: {message}"))
                    .at(source, &path.key("windows").index(position))
                    .hint(
                        "write `{ days = [\"mon\", \"tue\"], from = \"09:00\", to = \"17:00\" }`",
                    ),
            );
        }
    }
    for (position, freeze) in environment.freezes.iter().enumerate() {
        if let Err(message) = schedule.add_freeze(
            &freeze.from.text(),
            &freeze.to.text(),
            freeze.reason.clone(),
        ) {
            problems.push(
                Diagnostic::new(format!("freeze: {message}"))
                    .at(source, &path.key("freezes").index(position))
                    .hint("write `{ from = \"2026-12-24\", to = \"2026-12-26\", reason = \"holidays\" }`"),
            );
        }
    }
    let mut approvals = |raw: Option<RawApprovals>, key: &str| {
        let raw = raw?;
        let mut from = raw.from.clone();
        from.sort();
        from.dedup();
        if raw.required == 0 || raw.required as usize > from.len() {
            problems.push(
                Diagnostic::new(format!(
                    "{key} requires {} approvals from {} distinct people",
                    raw.required,
                    from.len()
                ))
                .at(source, &path.key(key))
                .hint("`required` must be at least 1 and at most the number of people in `from`"),
            );
        }
        Some(Approvals {
            required: raw.required,
            from: raw.from,
        })
    };
    let regular = approvals(environment.approvals, "approvals");
    let emergency = approvals(environment.emergency_approvals, "emergency_approvals");
    Environment {
        aws_endpoint: environment.aws_endpoint,
        kube_context: environment.kube_context,
        description: environment.description,
        vars,
        approvals: regular,
        emergency_approvals: emergency,
        schedule,
    }
}

static EMPTY: String = String::new();

/// The steps' dependencies: explicit `needs`, or the step above.
struct StepGraph {
    needs: Vec<Vec<String>>,
    index_of: BTreeMap<String, usize>,
}

impl StepGraph {
    fn new(source: &Arc<Source>, steps: &[RawStep], problems: &mut Diagnostics) -> Self {
        let mut index_of = BTreeMap::new();
        for (index, step) in steps.iter().enumerate() {
            if index_of.insert(step.id.clone(), index).is_some() {
                problems.push(
                    Diagnostic::new(format!("step id `{}` is used twice", step.id))
                        .at(source, &ValuePath::step(index).key("id"))
                        .hint("give every step its own id"),
                );
            }
        }
        let mut needs = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            let declared = match &step.needs {
                Some(declared) => declared.clone(),
                None if index == 0 => Vec::new(),
                None => vec![steps[index - 1].id.clone()],
            };
            let mut known = Vec::new();
            for (position, need) in declared.into_iter().enumerate() {
                if index_of.contains_key(&need) {
                    if !known.contains(&need) {
                        known.push(need);
                    }
                } else {
                    let suggestion =
                        crate::diagnostic::did_you_mean(&need, index_of.keys().map(String::as_str));
                    problems.push(
                        Diagnostic::new(format!("step `{}` needs unknown step `{need}`", step.id))
                            .at(source, &ValuePath::step(index).key("needs").index(position))
                            .hint(match suggestion {
                                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                                None => "name the id of another step".to_owned(),
                            }),
                    );
                }
            }
            needs.push(known);
        }
        let duplicates = index_of.len() != steps.len();
        let graph = StepGraph { needs, index_of };
        if duplicates {
            // Ids are ambiguous: a cycle found now would be an artefact.
            return graph;
        }
        if let Some(cycle) = graph.cycle() {
            let first = graph.index_of[&cycle[0]];
            problems.push(
                Diagnostic::new(format!(
                    "the steps depend on each other in a cycle: {}",
                    cycle.join(" → ")
                ))
                .at(source, &ValuePath::step(first).key("needs"))
                .hint("remove one of these `needs` so that the steps can be ordered"),
            );
        }
        graph
    }

    /// A dependency cycle, as step ids from one back to itself.
    fn cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let ids: Vec<&String> = {
            let mut ids: Vec<Option<&String>> = vec![None; self.needs.len()];
            for (id, index) in &self.index_of {
                ids[*index] = Some(id);
            }
            let empty = &EMPTY;
            ids.into_iter().map(|id| id.unwrap_or(empty)).collect()
        };
        let mut marks = vec![Mark::New; self.needs.len()];
        fn visit(
            graph: &StepGraph,
            index: usize,
            marks: &mut Vec<Mark>,
            stack: &mut Vec<usize>,
            ids: &[&String],
        ) -> Option<Vec<String>> {
            marks[index] = Mark::Open;
            stack.push(index);
            for need in &graph.needs[index] {
                let next = graph.index_of[need];
                match marks[next] {
                    Mark::Open => {
                        let start = stack.iter().position(|found| *found == next).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|at| ids[*at].clone()).collect();
                        cycle.push(ids[next].clone());
                        return Some(cycle);
                    }
                    Mark::New => {
                        if let Some(cycle) = visit(graph, next, marks, stack, ids) {
                            return Some(cycle);
                        }
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks[index] = Mark::Done;
            None
        }
        for index in 0..self.needs.len() {
            if marks[index] == Mark::New {
                let mut stack = Vec::new();
                if let Some(cycle) = visit(self, index, &mut marks, &mut stack, &ids) {
                    return Some(cycle);
                }
            }
        }
        None
    }

    /// Every step this one transitively needs.
    fn ancestors(&self, index: usize) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut stack: Vec<&String> = self.needs[index].iter().collect();
        while let Some(id) = stack.pop() {
            if found.insert(id.clone()) {
                stack.extend(self.needs[self.index_of[id]].iter());
            }
        }
        found
    }
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
    ancestors: &'a BTreeSet<String>,
    for_each_steps: &'a BTreeSet<String>,
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
    let action = match (raw.kind.unwrap_or(RawKind::Plugin), &raw.uses) {
        (RawKind::Manual, None) => {
            if raw.checklist.is_empty() {
                problems.push(
                    Diagnostic::new(format!("manual step `{}` has no checklist", raw.id))
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
                Diagnostic::new(format!("manual step `{}` cannot also use a plugin", raw.id))
                    .at(source, &path.key("uses"))
                    .hint("drop `uses`, or drop `kind = \"manual\"`"),
            );
            Action::Manual(raw.checklist.clone())
        }
        (RawKind::Plugin, None) => {
            problems.push(
                Diagnostic::new(format!("step `{}` has no `uses`", raw.id))
                    .at(source, &path)
                    .hint("name a plugin (`uses = \"smoke-test\"`), or make it `kind = \"manual\"` with a `checklist`"),
            );
            Action::Plugin(String::new())
        }
        (RawKind::Plugin, Some(uses)) => {
            if !raw.checklist.is_empty() {
                problems.push(
                    Diagnostic::new(format!(
                        "step `{}` has a checklist but is not manual",
                        raw.id
                    ))
                    .at(source, &path.key("checklist"))
                    .hint("add `kind = \"manual\"`"),
                );
            }
            if !context.plugins.contains_key(uses) {
                let known = context.plugins.keys().cloned().collect::<Vec<_>>();
                let suggestion =
                    crate::diagnostic::did_you_mean(uses, known.iter().map(String::as_str));
                problems.push(
                    Diagnostic::new(format!("step `{}` uses unknown plugin `{uses}`", raw.id))
                        .at(source, &path.key("uses"))
                        .hint(match suggestion {
                            Some(suggestion) => format!("did you mean `{suggestion}`?"),
                            None if known.is_empty() => {
                                format!("declare it: `[plugins]\n{uses} = \"path/to/{uses}.wasm\"`")
                            }
                            None => format!("declared plugins: {}", known.join(", ")),
                        }),
                );
            }
            Action::Plugin(uses.clone())
        }
    };
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => parse_duration(text).unwrap_or_else(|(message, hint)| {
            problems.push(
                Diagnostic::new(message)
                    .at(source, &path.key("timeout"))
                    .hint(hint.unwrap_or("write it like \"90s\", \"2m\" or \"1h 30m\"")),
            );
            DEFAULT_TIMEOUT
        }),
    };
    let memory_limit = match &raw.memory {
        None => DEFAULT_MEMORY,
        Some(text) => match parse_memory(text) {
            Some(limit) if limit <= MAX_MEMORY => limit,
            Some(_) => {
                problems.push(
                    Diagnostic::new(format!(
                        "`{text}` is more than {} GiB, the most memory a step may have",
                        MAX_MEMORY >> 30
                    ))
                    .at(source, &path.key("memory")),
                );
                DEFAULT_MEMORY
            }
            None => {
                problems.push(
                    Diagnostic::new(format!("`{text}` is not a memory size"))
                        .at(source, &path.key("memory"))
                        .hint("write it like \"64MiB\" or \"1GiB\""),
                );
                DEFAULT_MEMORY
            }
        },
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
        allow_item: raw.for_each.is_some(),
    };
    with.templates(&with_path, &mut |template, at| {
        check.check(template, at, problems)
    });

    let condition = raw.condition.as_ref().and_then(|text| {
        let at = path.key("if");
        let parsed = if text.contains("${{") {
            Template::parse(text)
                .map_err(|error| (error.message, error.hint))
                .and_then(|template| {
                    template.sole_expression().cloned().ok_or((
                        "`if` must be one expression".to_owned(),
                        "write `if = \"${{ steps.migrate.outcome == 'failed' }}\"`".to_owned(),
                    ))
                })
        } else {
            crate::expression::Expr::parse(text)
        };
        match parsed {
            Ok(expression) => {
                for reference in expression.references() {
                    if let Some((message, hint)) = check.problem(reference) {
                        problems.push(Diagnostic::new(message).at(source, &at).hint(hint));
                    }
                }
                Some(expression)
            }
            Err((message, hint)) => {
                problems.push(
                    Diagnostic::new(format!("`if`: {message}"))
                        .at(source, &at)
                        .hint(hint),
                );
                None
            }
        }
    });

    let retries = match &raw.retries {
        None => RetryPolicy::default(),
        Some(retries) => {
            let at = path.key("retries");
            let mut duration =
                |text: &Option<String>, default: std::time::Duration, key: &str| match text {
                    None => default,
                    Some(text) => parse_duration(text).unwrap_or_else(|(message, hint)| {
                        problems.push(
                            Diagnostic::new(message)
                                .at(source, &at.key(key))
                                .hint(hint.unwrap_or("write it like \"2s\" or \"1m\"")),
                        );
                        default
                    }),
                };
            let defaults = RetryPolicy::default();
            let policy = RetryPolicy {
                attempts: retries.attempts.clamp(1, MAX_ATTEMPTS),
                backoff: duration(&retries.backoff, defaults.backoff, "backoff"),
                max: duration(&retries.max, defaults.max, "max"),
            };
            if retries.attempts == 0 {
                problems.push(
                    Diagnostic::new(
                        "`attempts` counts every try, the first included: it is at least 1",
                    )
                    .at(source, &at.key("attempts")),
                );
            }
            if retries.attempts > MAX_ATTEMPTS {
                problems.push(
                    Diagnostic::new(format!(
                        "`attempts` is {}; a step is tried at most {MAX_ATTEMPTS} times",
                        retries.attempts
                    ))
                    .at(source, &at.key("attempts"))
                    .hint("wait longer between tries instead: raise `backoff` and `max`"),
                );
            }
            policy
        }
    };

    let for_each = raw.for_each.as_ref().and_then(|value| {
        let at = path.key("for_each");
        match value {
            toml::Value::Array(items) => {
                if items.is_empty() {
                    problems.push(Diagnostic::new("`for_each` is an empty list").at(source, &at));
                }
                if items.len() > MAX_FOR_EACH {
                    // Refused before anything is copied, so a huge list
                    // costs only its parsing.
                    let (message, hint) = for_each_too_long(&raw.id, items.len());
                    problems.push(Diagnostic::new(message).at(source, &at).hint(hint));
                    return None;
                }
                let items: Vec<serde_json::Value> = items.iter().cloned().map(toml_to_json).collect();
                if let Some((message, hint, position)) = for_each_problem(&raw.id, &items) {
                    let at = position.map_or_else(|| at.clone(), |position| at.index(position));
                    problems.push(Diagnostic::new(message).at(source, &at).hint(hint));
                }
                Some(ForEach::Items(items))
            }
            toml::Value::String(text) => match Template::parse(text) {
                Ok(template) => {
                    check.fixed_before_run()
                    .check(&template, &at, problems);
                    Some(ForEach::Expression(template))
                }
                Err(error) => {
                    problems.push(Diagnostic::new(error.message).at(source, &at).hint(error.hint));
                    None
                }
            },
            _ => {
                problems.push(
                    Diagnostic::new("`for_each` is a list or an expression giving one")
                        .at(source, &at)
                        .hint("write `for_each = [\"api\", \"worker\"]` or `for_each = \"${{ vars.services }}\"`"),
                );
                None
            }
        }
    });

    let grants_path = path.key("grants");
    let mut http_grants = Vec::new();
    for (position, text) in raw.grants.http.iter().enumerate() {
        let at = grants_path.key("http").index(position);
        match Template::parse(text) {
            Ok(template) => {
                check.fixed_before_run().check(&template, &at, problems);
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

    let kube = raw
        .grants
        .kube
        .map(|grant| kube_grant(grant, source, &grants_path.key("kube"), problems));

    let fs_read = raw
        .grants
        .fs
        .read
        .iter()
        .enumerate()
        .filter_map(|(position, written)| {
            let at = grants_path.key("fs").key("read").index(position);
            match fs_grant(&source.path, written) {
                Ok(grant) => Some(grant),
                Err((message, hint)) => {
                    problems.push(Diagnostic::new(message).at(source, &at).hint(hint));
                    None
                }
            }
        })
        .collect();

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
        http_grants,
        secret_grants: raw.grants.secrets,
        fs_read,
        aws: raw.grants.aws.map(|grant| crate::grant::AwsGrant {
            services: grant.services,
            actions: grant.actions,
            regions: grant.regions,
        }),
        kube,
    }
}

/// A duration a runbook wrote, at most [`MAX_DURATION`]; else the message
/// and, when the default one does not fit, a hint.
fn parse_duration(text: &str) -> Result<std::time::Duration, (String, Option<&'static str>)> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        Ok(_) => Err((
            format!(
                "`{text}` is longer than {} days, the longest duration a runbook may set",
                MAX_DURATION.as_secs() / 86_400
            ),
            Some("a step that needs longer should be split, or be a manual step"),
        )),
        Err(error) => Err((format!("`{text}` is not a duration: {error}"), None)),
    }
}

/// `grants.kube`, each verb and resource checked so that a typo is an
/// error here rather than a denial in the middle of a deploy.
fn kube_grant(
    raw: crate::runbook::model::RawKubeGrant,
    source: &Arc<Source>,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> crate::grant::KubeGrant {
    use crate::grant::VERBS;
    for (position, verb) in raw.verbs.iter().enumerate() {
        if !VERBS.contains(&verb.as_str()) {
            let hint = match crate::diagnostic::did_you_mean(verb, VERBS.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? verbs are {}", VERBS.join(", ")),
                None => format!("verbs are {}", VERBS.join(", ")),
            };
            problems.push(
                Diagnostic::new(format!("`{verb}` is not a Kubernetes verb"))
                    .at(source, &at.key("verbs").index(position))
                    .hint(hint),
            );
        }
    }
    for (position, resource) in raw.resources.iter().enumerate() {
        let parts: Vec<&str> = resource.split('/').collect();
        let well_formed = matches!(parts.len(), 2 | 3)
            && parts.iter().all(|part| !part.is_empty())
            && parts
                .last()
                .is_some_and(|kind| kind.starts_with(|c: char| c.is_ascii_uppercase()));
        if !well_formed {
            problems.push(
                Diagnostic::new(format!("`{resource}` is not GROUP/VERSION/Kind"))
                    .at(source, &at.key("resources").index(position))
                    .hint("write `apps/v1/Deployment`, or `v1/Service` for the core group"),
            );
        }
    }
    if raw.namespaces.is_empty() {
        problems.push(
            Diagnostic::new("`grants.kube.namespaces` is empty: the grant allows nothing")
                .at(source, &at.key("namespaces"))
                .hint("name the namespaces, or `\"*\"` for all of them"),
        );
    }
    crate::grant::KubeGrant {
        namespaces: raw.namespaces,
        resources: raw.resources,
        verbs: raw.verbs,
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
    allow_item: bool,
}

impl ReferenceCheck<'_> {
    /// The check for values fixed before the run starts (grants,
    /// `for_each`): no step outputs, secrets or `item`.
    fn fixed_before_run(self) -> Self {
        ReferenceCheck {
            allow_step_outputs: false,
            allow_secrets: false,
            allow_item: false,
            ..self
        }
    }

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
            Reference::StepOutput { step, .. } | Reference::StepOutcome(step)
                if !context.ancestors.contains(step) =>
            {
                Some((
                    format!(
                        "`{reference}` refers to step `{step}`, which `{}` does not need",
                        self.step_id
                    ),
                    if step == self.step_id {
                        "a step cannot read its own outputs".into()
                    } else {
                        format!(
                            "add `needs = [\"{step}\"]` to step `{}` (steps without `needs` follow the step above)",
                            self.step_id
                        )
                    },
                ))
            }
            Reference::StepOutput { step, .. } if context.for_each_steps.contains(step) => Some((
                format!(
                    "step `{step}` runs once per `for_each` element: its outputs cannot be referenced"
                ),
                "refer to `steps.ID.outcome`, or split the step".into(),
            )),
            Reference::Item(_) if !self.allow_item => Some((
                format!("`{reference}` is only known in a step with `for_each`"),
                "add `for_each = [...]` to this step".into(),
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

/// Checks a `grants.fs.read` entry: relative, without `..`, an existing
/// folder that stays inside the runbook's folder after symlinks.
fn fs_grant(runbook: &std::path::Path, written: &str) -> Result<super::FsGrant, (String, String)> {
    let hint = "write a folder relative to the runbook, inside its folder: `grants.fs.read = [\"./dist\"]`".to_owned();
    let relative = std::path::Path::new(written);
    if relative.is_absolute() {
        return Err((format!("`{written}` is an absolute path"), hint));
    }
    if relative
        .components()
        .any(|part| matches!(part, std::path::Component::ParentDir))
    {
        return Err((format!("`{written}` climbs out with `..`"), hint));
    }
    let base = runbook
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let host = base
        .join(relative)
        .canonicalize()
        .map_err(|error| (format!("cannot grant `{written}`: {error}"), hint.clone()))?;
    let root = base.canonicalize().map_err(|error| {
        (
            format!("cannot resolve the runbook's folder: {error}"),
            hint.clone(),
        )
    })?;
    if !host.starts_with(&root) {
        return Err((
            format!(
                "`{written}` leads outside the runbook's folder (to {}) through a symlink",
                host.display()
            ),
            hint,
        ));
    }
    if !host.is_dir() {
        return Err((format!("`{written}` is not a folder"), hint));
    }
    let guest = format!(
        "/{}",
        relative
            .components()
            .filter_map(|part| match part {
                std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    );
    Ok(super::FsGrant {
        written: written.to_owned(),
        host,
        guest,
    })
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
