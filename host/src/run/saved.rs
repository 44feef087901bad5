//! A saved plan: `runbook plan --out plan.json` keeps what the reviewer
//! read (the runbook's text, the environment, the parameters, every
//! plugin's digest, every grant, the fingerprint approvals bind to, who
//! planned it and when), and `runbook exec plan.json` runs exactly that, or
//! refuses, saying what changed since. Nothing here touches the terminal.
//!
//! A saved plan is not a second source of truth: it is applied by binding
//! the runbook file it names again, with its environment and parameters,
//! and comparing what that gives with what was saved (the text, each
//! plugin's bytes, each parameter, each grant, the fingerprint). Only when
//! every one is the same does the run start.

use super::execute::{GrantsView, NotifyView, PlannedStepView};
use super::gates::PromotionGate;
use super::{Error, Prepared};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::events::SavedPlanRef;
use crate::runbook::{Action, Bindings, Plan};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `format` of the saved plans this version writes and reads.
pub const FORMAT: &str = "runbook-plan/1";

/// A reviewed plan, as `runbook plan --out` writes it (docs/scripting.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`FORMAT`].
    pub format: String,
    /// The runbook it was made from.
    pub runbook: SavedRunbook,
    /// The environment, `null` for a runbook without environments.
    pub environment: Option<String>,
    /// Every parameter's value as bound (defaults included), as JSON of
    /// its type.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Each plugin a step or `[notify]` target uses, by its name in
    /// `[plugins]`.
    pub plugins: BTreeMap<String, SavedPlugin>,
    /// Each step as bound, in order: its grants, and what its plugin said
    /// it would do.
    pub steps: Vec<SavedStep>,
    /// Each `[notify]` target and its grants.
    #[serde(default)]
    pub notify: Vec<SavedTarget>,
    /// How the environment's promotion gate was passed when planned, if
    /// it has one (as `runbook plan --output json` shows it); for readers.
    #[serde(default)]
    pub promotion: Option<serde_json::Value>,
    /// The fingerprint approvals bind to ([`crate::gates::fingerprint`]).
    pub fingerprint: String,
    /// Who made the plan.
    pub made_by: String,
    /// When (RFC 3339).
    pub made_at: String,
    /// The `runbook` version that made it.
    #[serde(default)]
    pub made_with: String,
}

/// The runbook a plan was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedRunbook {
    /// Its `[runbook] name`.
    pub name: String,
    /// The file, absolute: a saved plan runs only the file it was made
    /// from, which must still be there.
    pub path: String,
    /// The sha256 of its text, hex.
    pub sha256: String,
    /// Its whole text, to show what changed since.
    pub text: String,
}

/// A plugin as planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlugin {
    /// The component file, absolute.
    pub path: String,
    /// The sha256 of its bytes, hex.
    pub sha256: String,
    /// Its version, for people.
    #[serde(default)]
    pub version: String,
}

/// A step as planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedStep {
    /// Its id (`ID[ITEM]` for an element of `for_each`).
    pub step: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its plugin's name and version, or `manual`.
    #[serde(default)]
    pub plugin: String,
    /// Its plugin's sha256 (empty for a manual step).
    #[serde(default)]
    pub digest: String,
    /// What it is granted, as bound (`http`, `secrets`, `fs_read`, `kube`,
    /// `aws`, `command`).
    pub grants: serde_json::Value,
    /// What its plugin said it would do (`description`, `mutates`).
    #[serde(default)]
    pub actions: Vec<serde_json::Value>,
    /// Writes held back while planning.
    #[serde(default)]
    pub intercepted: Vec<String>,
    /// Why it could not be planned.
    #[serde(default)]
    pub error: Option<String>,
    /// Why it will not run (its `if` is false before the run).
    #[serde(default)]
    pub skipped: Option<String>,
}

/// A `[notify]` target as planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTarget {
    /// Its id (`notify.0`).
    pub target: String,
    /// Its plugin's name and version.
    #[serde(default)]
    pub plugin: String,
    /// Its plugin's sha256.
    #[serde(default)]
    pub digest: String,
    /// What it is granted, as bound.
    pub grants: serde_json::Value,
}

/// The saved plan of a prepared run and its dry execute (`runbook plan`).
pub fn of(
    prepared: &Prepared,
    views: &[PlannedStepView],
    notify: Option<&NotifyView>,
    promotion: Option<&PromotionGate>,
) -> SavedPlan {
    let plan = &prepared.plan;
    let source = &plan.runbook.source;
    let plugins = prepared
        .plugins
        .iter()
        .map(|(name, plugin)| {
            (
                name.clone(),
                SavedPlugin {
                    path: absolute(&plugin.path),
                    sha256: plugin.digest.clone(),
                    version: plugin.descriptor.version.clone(),
                },
            )
        })
        .collect();
    let steps = views
        .iter()
        .map(|view| SavedStep {
            step: view.step.clone(),
            name: view.name.clone(),
            plugin: view.plugin.clone(),
            digest: view.digest.clone(),
            grants: json(&view.grants),
            actions: view.actions.iter().map(json).collect(),
            intercepted: view.intercepted.clone(),
            error: view.error.clone(),
            skipped: view.skipped.clone(),
        })
        .collect();
    let notify = notify
        .map(|notify| {
            notify
                .targets
                .iter()
                .map(|target| SavedTarget {
                    target: target.target.clone(),
                    plugin: target.plugin.clone(),
                    digest: target.digest.clone(),
                    grants: json(&target.grants),
                })
                .collect()
        })
        .unwrap_or_default();
    SavedPlan {
        format: FORMAT.to_owned(),
        runbook: SavedRunbook {
            name: plan.runbook.name.clone(),
            path: absolute(&source.path),
            sha256: sha256(source.text.as_bytes()),
            text: source.text.clone(),
        },
        environment: plan.environment.clone(),
        params: plan.params.clone(),
        plugins,
        steps,
        notify,
        promotion: promotion.map(json),
        fingerprint: prepared.fingerprint.clone(),
        made_by: plan.operator.clone(),
        made_at: jiff::Timestamp::now().to_string(),
        made_with: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Whether the file given to `exec` is a saved plan rather than a
/// runbook: it ends in `.json`, or its first character that is not white
/// space is `{` (which no TOML document starts with).
pub fn looks_like(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("json"))
    {
        return true;
    }
    use std::io::Read;
    let mut start = [0_u8; 512];
    let Ok(read) = std::fs::File::open(path).and_then(|mut file| file.read(&mut start)) else {
        return false;
    };
    start[..read]
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{')
}

/// A saved plan read from `path`, with the reference its run records.
pub fn read(path: &Path) -> Result<(SavedPlan, SavedPlanRef), Error> {
    let bytes = std::fs::read(path).map_err(|error| {
        Error::refuse(
            format!("cannot read the saved plan {}: {error}", path.display()),
            "make one with `runbook plan FILE --env NAME --set K=V --out plan.json`",
        )
    })?;
    let saved: SavedPlan = serde_json::from_slice(&bytes).map_err(|error| {
        Error::refuse(
            format!("{} is not a saved plan: {error}", path.display()),
            "`runbook exec` takes a runbook (TOML) or a plan saved by `runbook plan --out FILE` (JSON)",
        )
    })?;
    if saved.format != FORMAT {
        return Err(Error::refuse(
            format!(
                "{} is a saved plan of format `{}`, which this runbook does not read (it reads `{FORMAT}`)",
                path.display(),
                saved.format
            ),
            "plan again with this runbook: `runbook plan FILE ... --out plan.json`",
        ));
    }
    let reference = SavedPlanRef {
        file: absolute(path),
        sha256: sha256(&bytes),
        made_by: saved.made_by.clone(),
        made_at: saved.made_at.clone(),
    };
    Ok((saved, reference))
}

impl SavedPlan {
    /// The runbook file to bind again.
    pub fn runbook_path(&self) -> PathBuf {
        PathBuf::from(&self.runbook.path)
    }

    /// The bindings the plan was made with, for `operator` and a new run:
    /// each parameter as the text `--set` would give (as `resume` binds
    /// again), which binds to the same typed value.
    pub fn bindings(&self, operator: String, run_id: String) -> Bindings {
        Bindings {
            environment: self.environment.clone(),
            sets: self
                .params
                .iter()
                .map(|(key, value)| (key.clone(), crate::template::as_text(value)))
                .collect(),
            operator,
            run_id,
            lenient: false,
        }
    }

    /// The command that makes a new plan from the same file and bindings.
    fn plan_again(&self) -> String {
        let mut command = format!("runbook plan {}", self.runbook.path);
        if let Some(environment) = &self.environment {
            command.push_str(&format!(" --env {environment}"));
        }
        for (key, value) in &self.params {
            command.push_str(&format!(" --set {key}={}", crate::template::as_text(value)));
        }
        command.push_str(" --out PLAN.json");
        command
    }

    /// Before binding: the runbook file is still there with the same
    /// text, and every plugin file with the same bytes. Refused with every
    /// difference (a changed runbook may no longer bind, a changed plugin
    /// may no longer load: they are told as what changed, not as that).
    pub fn check_files(&self) -> Result<(), Error> {
        let mut problems = Diagnostics::default();
        let path = self.runbook_path();
        match std::fs::read(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => problems.push(
                Diagnostic::new(format!(
                    "the runbook this plan was made from, {}, no longer exists",
                    path.display()
                ))
                .hint("a saved plan runs only the file it was made from: put it back, or plan again where it is now"),
            ),
            Err(error) => problems.push(Diagnostic::new(format!(
                "cannot read the runbook this plan was made from, {}: {error}",
                path.display()
            ))),
            Ok(bytes) => {
                if let Some(problem) = self.text_changed(&String::from_utf8_lossy(&bytes)) {
                    problems.push(problem);
                    // What the change does to the plan, where the new text
                    // still binds: a parameter's value, a grant.
                    self.bound_differences(&path, &mut problems);
                }
            }
        }
        for (name, plugin) in &self.plugins {
            match std::fs::read(&plugin.path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => problems.push(
                    Diagnostic::new(format!(
                        "plugin `{name}`'s file {} no longer exists",
                        plugin.path
                    ))
                    .hint("a saved plan runs only the plugins it was made with"),
                ),
                Err(error) => problems.push(Diagnostic::new(format!(
                    "cannot read plugin `{name}`'s file {}: {error}",
                    plugin.path
                ))),
                Ok(bytes) => {
                    let now = sha256(&bytes);
                    if now != plugin.sha256 {
                        problems.push(Diagnostic::new(format!(
                            "plugin `{name}` changed since the plan was saved: {} had sha256 {}, it has {now} now",
                            plugin.path, plugin.sha256
                        )));
                    }
                }
            }
        }
        self.refuse_if_any(problems)
    }

    /// After binding: the bound run is the saved one. Refused with every
    /// difference: the text, a plugin, a parameter, a step's or target's
    /// grants, the fingerprint.
    pub fn compare(&self, prepared: &Prepared) -> Result<(), Error> {
        let plan = &prepared.plan;
        let mut problems = Diagnostics::default();
        if let Some(problem) = self.text_changed(&plan.runbook.source.text) {
            problems.push(problem);
        }
        self.compare_bound(plan, &mut problems);
        let digests: BTreeMap<String, String> = prepared
            .plugins
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.digest.clone()))
            .collect();
        let saved_digests: BTreeMap<String, String> = self
            .plugins
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.sha256.clone()))
            .collect();
        for name in keys(&saved_digests, &digests) {
            match (saved_digests.get(name), digests.get(name)) {
                (Some(was), Some(now)) if was != now => problems.push(Diagnostic::new(format!(
                    "plugin `{name}` changed since the plan was saved: sha256 {was}, now {now}"
                ))),
                (Some(_), None) => problems.push(Diagnostic::new(format!(
                    "plugin `{name}` is no longer used"
                ))),
                (None, Some(_)) => problems.push(Diagnostic::new(format!(
                    "plugin `{name}` is used now, and was not when the plan was saved"
                ))),
                _ => {}
            }
        }
        if prepared.fingerprint != self.fingerprint {
            problems.push(Diagnostic::new(format!(
                "the plan's fingerprint was {}, it is {} now",
                self.fingerprint, prepared.fingerprint
            )));
        }
        self.refuse_if_any(problems)
    }

    /// The runbook at `path`, whose text changed, bound as the plan was:
    /// how its parameters and grants differ from the saved ones. Nothing
    /// is added when it no longer binds but that it does not.
    fn bound_differences(&self, path: &Path, problems: &mut Diagnostics) {
        let bound = crate::runbook::load(path)
            .map_err(|error| error.to_string())
            .and_then(|runbook| {
                crate::runbook::bind::bind(
                    std::sync::Arc::new(runbook),
                    self.bindings(self.made_by.clone(), "plan".to_owned()),
                )
                .map_err(|refused| {
                    refused
                        .0
                        .first()
                        .map(|problem| problem.message.clone())
                        .unwrap_or_default()
                })
            });
        match bound {
            Ok(plan) => self.compare_bound(&plan, problems),
            Err(why) => problems.push(Diagnostic::new(format!(
                "the changed runbook no longer binds with the plan's environment and parameters: {why}"
            ))),
        }
    }

    /// What binding decides: the environment, each parameter's value,
    /// each step's and `[notify]` target's grants.
    fn compare_bound(&self, plan: &Plan, problems: &mut Diagnostics) {
        if plan.environment != self.environment {
            problems.push(Diagnostic::new(format!(
                "the environment was `{}`, it is `{}` now",
                self.environment.as_deref().unwrap_or("none"),
                plan.environment.as_deref().unwrap_or("none")
            )));
        }
        for key in keys(&self.params, &plan.params) {
            let (was, now) = (self.params.get(key), plan.params.get(key));
            if was != now {
                problems.push(Diagnostic::new(format!(
                    "parameter `{key}` was {}, it is {} now",
                    shown(was),
                    shown(now)
                )));
            }
        }
        let saved_steps: Vec<(String, serde_json::Value)> = self
            .steps
            .iter()
            .map(|step| (step.step.clone(), step.grants.clone()))
            .collect();
        compare_grants("step", &saved_steps, &step_grants(plan), problems);
        let saved_targets: Vec<(String, serde_json::Value)> = self
            .notify
            .iter()
            .map(|target| (target.target.clone(), target.grants.clone()))
            .collect();
        compare_grants(
            "notify target",
            &saved_targets,
            &target_grants(plan),
            problems,
        );
    }

    /// `problems`, each with the hint to plan again, as a refusal.
    fn refuse_if_any(&self, problems: Diagnostics) -> Result<(), Error> {
        if problems.is_empty() {
            return Ok(());
        }
        let hint = format!(
            "the saved plan is not what would run now, so nothing ran; review the change, then plan again: `{}`",
            self.plan_again()
        );
        Err(Error::Refused(Diagnostics(
            problems
                .0
                .into_iter()
                .map(|problem| {
                    if problem.hint.is_some() {
                        problem
                    } else {
                        problem.hint(hint.clone())
                    }
                })
                .collect(),
        )))
    }

    /// How the runbook's text `now` differs from the saved one: its
    /// sha256, and the lines that changed.
    fn text_changed(&self, now: &str) -> Option<Diagnostic> {
        let digest = sha256(now.as_bytes());
        if digest == self.runbook.sha256 && now == self.runbook.text {
            return None;
        }
        Some(Diagnostic::new(format!(
            "the runbook {} changed since the plan was saved (sha256 {}, now {digest}): {}",
            self.runbook.path,
            self.runbook.sha256,
            changed_lines(&self.runbook.text, now)
        )))
    }
}

/// Each step's grants as bound, in order.
fn step_grants(plan: &Plan) -> Vec<(String, serde_json::Value)> {
    plan.steps
        .iter()
        .map(|planned| {
            // A manual step is shown without grants, as `plan` shows it.
            let grants = match &plan.step(planned).action {
                Action::Manual(_) => GrantsView::default(),
                Action::Plugin(_) => GrantsView::of(&planned.grants),
            };
            (planned.id.0.clone(), json(&grants))
        })
        .collect()
}

/// Each `[notify]` target's grants as bound, in order.
fn target_grants(plan: &Plan) -> Vec<(String, serde_json::Value)> {
    plan.targets
        .iter()
        .map(|planned| (planned.id.0.clone(), json(&GrantsView::of(&planned.grants))))
        .collect()
}

/// The differences between saved and bound grants of `what` (steps or
/// targets), by id.
fn compare_grants(
    what: &str,
    saved: &[(String, serde_json::Value)],
    now: &[(String, serde_json::Value)],
    problems: &mut Diagnostics,
) {
    let saved_map: BTreeMap<&str, &serde_json::Value> = saved
        .iter()
        .map(|(id, grants)| (id.as_str(), grants))
        .collect();
    let now_map: BTreeMap<&str, &serde_json::Value> = now
        .iter()
        .map(|(id, grants)| (id.as_str(), grants))
        .collect();
    for (id, was) in &saved_map {
        match now_map.get(id) {
            None => problems.push(Diagnostic::new(format!(
                "{what} `{id}` was in the plan and is not now"
            ))),
            Some(now) if now != was => problems.push(Diagnostic::new(format!(
                "{what} `{id}`'s grants changed: they were {}, they are {} now",
                grants_text(was),
                grants_text(now)
            ))),
            Some(_) => {}
        }
    }
    for id in now_map.keys().filter(|id| !saved_map.contains_key(*id)) {
        problems.push(Diagnostic::new(format!(
            "{what} `{id}` is new since the plan was saved"
        )));
    }
    let saved_order: Vec<&str> = saved.iter().map(|(id, _)| id.as_str()).collect();
    let now_order: Vec<&str> = now.iter().map(|(id, _)| id.as_str()).collect();
    if saved_map.len() == now_map.len()
        && saved_map.keys().all(|id| now_map.contains_key(id))
        && saved_order != now_order
    {
        problems.push(Diagnostic::new(format!(
            "the {what}s run in another order: {} then, {} now",
            saved_order.join(", "),
            now_order.join(", ")
        )));
    }
}

/// Grants as one line: only the kinds given.
fn grants_text(grants: &serde_json::Value) -> String {
    let Some(kinds) = grants.as_object() else {
        return grants.to_string();
    };
    let given: Vec<String> = kinds
        .iter()
        .filter(|(_, value)| {
            !(value.is_null() || value.as_array().is_some_and(|list| list.is_empty()))
        })
        .map(|(kind, value)| format!("{kind} = {value}"))
        .collect();
    if given.is_empty() {
        "none".to_owned()
    } else {
        given.join(", ")
    }
}

/// Where two texts differ, by line: the first and last lines that differ
/// in the old text, and up to a few of the lines removed and added.
pub fn changed_lines(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let prefix = old_lines
        .iter()
        .zip(&new_lines)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = old_lines[prefix..]
        .iter()
        .rev()
        .zip(new_lines[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let removed = &old_lines[prefix..old_lines.len() - suffix];
    let added = &new_lines[prefix..new_lines.len() - suffix];
    if removed.is_empty() && added.is_empty() {
        return "only its line endings or its last newline differ".to_owned();
    }
    let first = prefix + 1;
    let place = match removed.len() {
        0 => format!("lines added after line {prefix}"),
        1 => format!("line {first} changed"),
        count => format!("lines {first}-{} changed", prefix + count),
    };
    const SHOWN: usize = 6;
    let mut text = place;
    for (sign, lines) in [("-", removed), ("+", added)] {
        for line in lines.iter().take(SHOWN) {
            text.push_str(&format!("\n    {sign} {line}"));
        }
        if lines.len() > SHOWN {
            text.push_str(&format!("\n    {sign} … {} more", lines.len() - SHOWN));
        }
    }
    text
}

/// The keys of both maps, once each, in order.
fn keys<'a, V>(a: &'a BTreeMap<String, V>, b: &'a BTreeMap<String, V>) -> BTreeSet<&'a str> {
    a.keys().chain(b.keys()).map(String::as_str).collect()
}

/// A parameter's value for a message.
fn shown(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "not set".to_owned(),
        Some(value) => format!("`{}`", crate::template::as_text(value)),
    }
}

/// `value` as JSON (the views serialize infallibly).
fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// A path, absolute where it can be made so.
fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The sha256 of `bytes`, hex.
fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_lines_are_named() {
        let old = "a\nb\nc\nd\n";
        assert_eq!(
            changed_lines(old, "a\nB\nc\nd\n"),
            "line 2 changed\n    - b\n    + B"
        );
        assert_eq!(
            changed_lines(old, "a\nx\ny\nd\n"),
            "lines 2-3 changed\n    - b\n    - c\n    + x\n    + y"
        );
        assert_eq!(
            changed_lines(old, "a\nb\nnew\nc\nd\n"),
            "lines added after line 2\n    + new"
        );
        assert_eq!(
            changed_lines(old, "a\nb\nc\nd"),
            "only its line endings or its last newline differ"
        );
    }

    #[test]
    fn a_saved_plan_is_told_from_a_runbook() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("deploy.toml");
        std::fs::write(&toml, "[runbook]\nname = \"x\"\n").unwrap();
        assert!(!looks_like(&toml));
        let plan = dir.path().join("reviewed");
        std::fs::write(&plan, "\n  {\"format\": \"runbook-plan/1\"}").unwrap();
        assert!(looks_like(&plan));
        assert!(looks_like(&dir.path().join("missing.json")));
        assert!(!looks_like(&dir.path().join("missing.toml")));
    }

    #[test]
    fn grants_are_shown_by_kind_given() {
        let grants = serde_json::json!({"http": ["http://a"], "secrets": [], "kube": null});
        assert_eq!(grants_text(&grants), "http = [\"http://a\"]");
        assert_eq!(grants_text(&serde_json::json!({"http": []})), "none");
    }
}
