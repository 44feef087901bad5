//! `k8s-apply`: server-side applies the manifests of a granted folder,
//! with image overrides, as one apply set: every object is labelled with
//! the set's name, what the previous apply of the set had and this one has
//! not is pruned, and the workloads are waited for. Before it changes
//! anything it checkpoints each object's live state and what it will
//! prune; a failure undoes what the step did, and `rollback` puts every
//! object back as it was (re-applied, re-created, or deleted when the run
//! created it).

mod live;
mod manifests;
mod record;

use manifests::{
    MANAGED_BY, Manifest, SET_LABEL, Target, group, is_cluster_scoped, rank, set_contents,
};
use record::{Record, Saved};
use runbook_sdk::kube::{self, PatchKind};
use runbook_sdk::serde_json::{self, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    Step, unresolved,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

struct Apply;

/// The folder to apply, and how.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The folder of manifests (`*.yaml`, `*.yml`, `*.json`; several YAML
    /// documents to a file), inside a folder of the step's
    /// `grants.fs.read`: `./k8s`.
    folder: String,
    /// The namespace of the objects whose manifests name none.
    namespace: String,
    /// The apply set's name. Every object gets the labels
    /// `runbook.dev/apply-set=NAME` and `app.kubernetes.io/managed-by=runbook`,
    /// by which the next apply of the set finds what to prune.
    name: String,
    /// Container name, or image repository, → the image to run instead:
    /// `{ web = "registry.example.com/shop/web:${{ params.version }}" }`.
    /// Applies to the pod templates of Deployments, StatefulSets,
    /// DaemonSets, Jobs and CronJobs.
    #[serde(default)]
    images: BTreeMap<String, String>,
    /// Delete what the previous apply of the set had and this one has not
    /// (default true).
    #[serde(default = "yes")]
    prune: bool,
    /// Wait for each Deployment, StatefulSet and DaemonSet applied to roll
    /// out (default true).
    #[serde(default = "yes")]
    wait: bool,
    /// How long each rollout may take (default 10m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

fn yes() -> bool {
    true
}

fn timeout(params: &Params) -> Duration {
    params
        .timeout
        .map_or(Duration::from_secs(600), HumanDuration::get)
}

/// Whether `text` is 1 to 63 bytes that `inner` allows, starting and
/// ending with a letter or digit: the shape Kubernetes gives label values
/// and RFC 1123 labels.
fn is_short_name(text: &str, inner: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|byte| inner(*byte))
}

/// Whether `text` is a label value: letters, digits, `-`, `_` and `.`.
fn is_label_value(text: &str) -> bool {
    is_short_name(text, |byte| {
        byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
    })
}

/// Whether `text` is a namespace's name (an RFC 1123 label): lower-case
/// letters, digits and `-`.
fn is_namespace_name(text: &str) -> bool {
    is_short_name(text, |byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'
    })
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.folder.trim().is_empty() {
        return Err(Error::invalid_param(
            "folder",
            "name the folder of manifests, like \"./k8s\"",
        ));
    }
    if !unresolved(&params.namespace) && !is_namespace_name(&params.namespace) {
        return Err(Error::invalid_param(
            "namespace",
            format!(
                "`{}` is not a namespace name: lower-case letters, digits and `-`, at most 63",
                params.namespace
            ),
        ));
    }
    if !unresolved(&params.name) && !is_label_value(&params.name) {
        return Err(Error::invalid_param(
            "name",
            format!(
                "`{}` cannot be a label value: 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit",
                params.name
            ),
        ));
    }
    for (key, image) in &params.images {
        if key.trim().is_empty() {
            return Err(Error::invalid_param(
                "images",
                "a key is a container name or an image repository",
            ));
        }
        if image.trim().is_empty() {
            return Err(Error::invalid_param(
                format!("images.{key}"),
                "give the image to run",
            ));
        }
    }
    Ok(())
}

/// The manifests, with the image overrides and the set's labels.
fn load(params: &Params) -> Result<Vec<Manifest>, Error> {
    let mut objects = manifests::read(&params.folder, &params.namespace)?;
    manifests::override_images(&mut objects, &params.images)?;
    manifests::label(&mut objects, &params.name);
    Ok(objects)
}

/// What the cluster has before the step changes anything.
struct Survey {
    /// Each manifest's live object (`None`: absent), in manifest order.
    live: Vec<Option<Value>>,
    /// The objects of the previous apply of the set that this one does
    /// not have, with their live state, in the order of applying.
    prunable: Vec<(Target, Value)>,
}

/// Reads the live objects and, when pruning, the set's previous members.
fn survey(params: &Params, manifests: &[Manifest]) -> Result<Survey, Error> {
    let mut live = Vec::with_capacity(manifests.len());
    for manifest in manifests {
        live.push(kube::get(&manifest.target.reference())?);
    }
    let prunable = if params.prune {
        previous_members(params, manifests)?
    } else {
        Vec::new()
    };
    Ok(Survey { live, prunable })
}

/// The most `list` calls looking for the set's previous members.
const MAX_LISTS: usize = 200;

/// The objects labelled as members of the set that this apply does not
/// have (and that no other object controls). It lists the kinds of the
/// folder in the set's namespaces, then also the kinds and namespaces the
/// members found say the set had (their annotations), so that a kind the
/// folder no longer has is found too.
fn previous_members(
    params: &Params,
    manifests: &[Manifest],
) -> Result<Vec<(Target, Value)>, Error> {
    let selector = format!(
        "{}={},{SET_LABEL}={}",
        MANAGED_BY.0, MANAGED_BY.1, params.name
    );
    // (group, kind) → the apiVersion to list it at: the folder's first.
    let mut kinds: BTreeMap<(String, String), String> = BTreeMap::new();
    for manifest in manifests {
        let target = &manifest.target;
        kinds
            .entry((group(&target.api_version).to_owned(), target.kind.clone()))
            .or_insert_with(|| target.api_version.clone());
    }
    let mut namespaces: BTreeSet<String> = manifests
        .iter()
        .filter_map(|manifest| manifest.target.namespace.clone())
        .collect();
    namespaces.insert(params.namespace.clone());
    let mut listed: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    let mut found: Vec<(Target, Value)> = Vec::new();
    loop {
        let mut scopes = Vec::new();
        for ((_, kind), api_version) in &kinds {
            let places: Vec<Option<String>> = if is_cluster_scoped(kind) {
                vec![None]
            } else {
                namespaces.iter().cloned().map(Some).collect()
            };
            for namespace in places {
                let scope = (api_version.clone(), kind.clone(), namespace);
                if !listed.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        if scopes.is_empty() {
            break;
        }
        if listed.len() + scopes.len() > MAX_LISTS {
            return Err(Error::failed(format!(
                "the set `{}` spans more than {MAX_LISTS} kinds and namespaces: split it",
                params.name
            )));
        }
        for (api_version, kind, namespace) in scopes {
            let items = kube::list(
                &api_version,
                &kind,
                namespace.as_deref(),
                Some(selector.as_str()),
            )?;
            for item in items {
                let (more_kinds, more_namespaces) = set_contents(&item);
                for (more_version, more_kind) in more_kinds {
                    kinds
                        .entry((group(&more_version).to_owned(), more_kind))
                        .or_insert(more_version);
                }
                namespaces.extend(more_namespaces);
                let text = |pointer: &str| {
                    item.pointer(pointer)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                let Some(name) = text("/metadata/name") else {
                    continue;
                };
                let target = Target {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: text("/metadata/namespace").or_else(|| namespace.clone()),
                    name,
                };
                if !found.iter().any(|(seen, _)| seen.same_object(&target)) {
                    found.push((target, item));
                }
            }
            listed.insert((api_version, kind, namespace));
        }
    }
    let mut prunable: Vec<(Target, Value)> = found
        .into_iter()
        .filter(|(target, object)| {
            !live::controlled(object)
                && !manifests
                    .iter()
                    .any(|manifest| manifest.target.same_object(target))
        })
        .collect();
    prunable.sort_by_key(|(target, _)| rank(&target.kind));
    Ok(prunable)
}

/// What is saved before the step changes anything.
fn record_of(manifests: &[Manifest], survey: &Survey) -> Record {
    Record {
        objects: manifests
            .iter()
            .zip(&survey.live)
            .map(|(manifest, current)| Saved {
                target: manifest.target.clone(),
                before: current.as_ref().map(live::kept),
            })
            .collect(),
        pruned: survey
            .prunable
            .iter()
            .map(|(target, object)| Saved {
                target: target.clone(),
                before: Some(live::kept(object)),
            })
            .collect(),
        unreadable: Vec::new(),
    }
}

/// How far the step got: indices into the record's `objects` applied and
/// `pruned` deleted.
#[derive(Default)]
struct Progress {
    applied: Vec<usize>,
    pruned: Vec<usize>,
}

/// What the step did.
#[derive(Default)]
struct Changes {
    created: Vec<Target>,
    updated: Vec<Target>,
    unchanged: Vec<Target>,
    rolled_out: Vec<Target>,
    pruned: Vec<Target>,
}

/// `Kind ns/name, Kind ns/name`.
fn named(targets: &[Target]) -> String {
    targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `["Kind/ns/name", ...]`, for an output.
fn labels(targets: &[&Target]) -> String {
    let labels: Vec<String> = targets.iter().map(|target| target.label()).collect();
    serde_json::to_string(&labels).unwrap_or_default()
}

/// `error`'s message with `reword` applied (its kind kept).
fn reworded(error: Error, reword: impl FnOnce(&str) -> String) -> Error {
    match error {
        Error::Failed(message) => Error::Failed(reword(&message)),
        Error::Transient(message) => Error::Transient(reword(&message)),
        Error::Timeout(message) => Error::Timeout(reword(&message)),
        other => other,
    }
}

/// Applies, waits, prunes; `progress` says how far it got when it fails.
fn change(
    params: &Params,
    manifests: &[Manifest],
    survey: &Survey,
    progress: &mut Progress,
) -> Result<Changes, Error> {
    let mut changes = Changes::default();
    let total = manifests.len() as f32;
    for (index, (manifest, before)) in manifests.iter().zip(&survey.live).enumerate() {
        let target = &manifest.target;
        runbook_sdk::log::progress(format!("applying {target}"), Some(index as f32 / total));
        let after = kube::patch(&target.reference(), PatchKind::Apply, &manifest.body)?;
        progress.applied.push(index);
        let (verb, list) = match before {
            None => ("created", &mut changes.created),
            Some(before) if live::same(before, &after) => ("unchanged", &mut changes.unchanged),
            Some(_) => ("updated", &mut changes.updated),
        };
        runbook_sdk::log::info(format!("{target} {verb}"));
        list.push(target.clone());
    }
    if params.wait {
        for manifest in manifests
            .iter()
            .filter(|manifest| live::rolls_out(&manifest.target.kind))
        {
            let target = &manifest.target;
            runbook_sdk::log::progress(format!("waiting for {target} to roll out"), None);
            kube::wait_rollout(&target.reference(), timeout(params)).map_err(|error| {
                reworded(error, |message| {
                    format!("{target} did not roll out: {message}")
                })
            })?;
            changes.rolled_out.push(target.clone());
        }
    }
    // Pruned last, once the new objects serve: a Deployment renamed in
    // the folder takes over before the old one goes.
    for (index, (target, _)) in survey.prunable.iter().enumerate().rev() {
        kube::delete(&target.reference())?;
        progress.pruned.push(index);
        runbook_sdk::log::info(format!("{target} pruned"));
        changes.pruned.push(target.clone());
    }
    Ok(changes)
}

/// What putting objects back did, and what it could not do.
#[derive(Default)]
struct Report {
    done: Vec<String>,
    failed: Vec<String>,
}

impl Report {
    /// `done` as one line.
    fn done(&self) -> String {
        if self.done.is_empty() {
            "nothing needed putting back".to_owned()
        } else {
            self.done.join("; ")
        }
    }
}

/// Puts objects back as `record` saved them, those of `objects` and
/// `pruned` (indices into it), or all when `None`: deleted objects are
/// re-created first, then changed ones re-applied as they were, then the
/// objects the step created deleted; then the workloads put back are
/// waited for. Goes on after a failure, and reports each.
fn restore(params: &Params, record: &Record, only: Option<&Progress>) -> Report {
    let mut report = Report {
        failed: record.unreadable.clone(),
        ..Report::default()
    };
    let chosen = |all: &[Saved], indices: Option<&Vec<usize>>| -> Vec<Saved> {
        match indices {
            None => all.to_vec(),
            Some(indices) => {
                let mut indices = indices.clone();
                indices.sort_unstable();
                indices
                    .into_iter()
                    .filter_map(|index| all.get(index).cloned())
                    .collect()
            }
        }
    };
    let objects = chosen(
        record.objects.as_slice(),
        only.map(|progress| &progress.applied),
    );
    let pruned = chosen(
        record.pruned.as_slice(),
        only.map(|progress| &progress.pruned),
    );
    let mut to_wait: Vec<Target> = Vec::new();
    for saved in &pruned {
        let Some(before) = &saved.before else {
            continue;
        };
        let target = &saved.target;
        match kube::get(&target.reference()) {
            Ok(Some(_)) => {}
            Ok(None) => match kube::patch(
                &target.reference(),
                PatchKind::Apply,
                &live::applicable(target, before, true),
            ) {
                Ok(_) => {
                    report.done.push(format!("re-created {target}"));
                    to_wait.push(target.clone());
                }
                Err(error) => report
                    .failed
                    .push(format!("{target}: not re-created: {}", error.message())),
            },
            Err(error) => report
                .failed
                .push(format!("{target}: not re-created: {}", error.message())),
        }
    }
    for saved in &objects {
        let Some(before) = &saved.before else {
            continue;
        };
        let target = &saved.target;
        let current = match kube::get(&target.reference()) {
            Ok(current) => current,
            Err(error) => {
                report
                    .failed
                    .push(format!("{target}: not put back: {}", error.message()));
                continue;
            }
        };
        if current
            .as_ref()
            .is_some_and(|current| live::same(current, before))
        {
            continue;
        }
        let recreate = current.is_none();
        match kube::patch(
            &target.reference(),
            PatchKind::Apply,
            &live::applicable(target, before, recreate),
        ) {
            Ok(_) => {
                report.done.push(if recreate {
                    format!("re-created {target}")
                } else {
                    format!("restored {target}")
                });
                to_wait.push(target.clone());
            }
            Err(error) => report
                .failed
                .push(format!("{target}: not put back: {}", error.message())),
        }
    }
    for saved in objects.iter().rev().filter(|saved| saved.before.is_none()) {
        let target = &saved.target;
        match kube::delete(&target.reference()) {
            Ok(true) => report
                .done
                .push(format!("deleted {target} (the run created it)")),
            Ok(false) => {}
            Err(error) => report
                .failed
                .push(format!("{target}: not deleted: {}", error.message())),
        }
    }
    if params.wait {
        for target in to_wait
            .iter()
            .filter(|target| live::rolls_out(&target.kind))
        {
            if let Err(error) = kube::wait_rollout(&target.reference(), timeout(params)) {
                report.failed.push(format!(
                    "{target}: put back, but did not roll out: {}",
                    error.message()
                ));
            }
        }
    }
    report
}

/// `error`, saying what was undone before the step failed.
fn with_undone(error: Error, report: &Report) -> Error {
    let note = if report.failed.is_empty() {
        format!("undone: {}", report.done())
    } else {
        format!(
            "undone: {}; NOT undone: {}",
            report.done(),
            report.failed.join("; ")
        )
    };
    match error {
        Error::Denied(mut denial) => {
            denial.hint = format!("{}; {note}", denial.hint);
            Error::Denied(denial)
        }
        other => reworded(other, |message| format!("{message}; {note}")),
    }
}

fn outcome(changes: &Changes, set: &str) -> Outcome {
    let applied: Vec<&Target> = changes
        .created
        .iter()
        .chain(&changes.updated)
        .chain(&changes.unchanged)
        .collect();
    let counts: Vec<String> = [
        (changes.created.len(), "created"),
        (changes.updated.len(), "updated"),
        (changes.unchanged.len(), "unchanged"),
    ]
    .iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, word)| format!("{count} {word}"))
    .collect();
    let mut words = vec![format!(
        "applied {} object{} of set `{set}` ({})",
        applied.len(),
        if applied.len() == 1 { "" } else { "s" },
        counts.join(", ")
    )];
    if !changes.rolled_out.is_empty() {
        words.push(format!("rolled out {}", named(&changes.rolled_out)));
    }
    if !changes.pruned.is_empty() {
        words.push(format!("pruned {}", named(&changes.pruned)));
    }
    let created: Vec<&Target> = changes.created.iter().collect();
    let pruned: Vec<&Target> = changes.pruned.iter().collect();
    Outcome::new(words.join("; "))
        .output("applied", labels(&applied))
        .output("created", labels(&created))
        .output("pruned", labels(&pruned))
}

impl Step for Apply {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Kube, Capability::Fs];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        if unresolved(&params.folder) {
            return Ok(vec![PlannedAction::write(format!(
                "apply the manifests of {} (read when the run gets here)",
                params.folder
            ))]);
        }
        let manifests = load(params)?;
        if unresolved(&params.namespace) || unresolved(&params.name) {
            return Ok(manifests
                .iter()
                .map(|manifest| {
                    PlannedAction::write(format!(
                        "apply {} (compared with the cluster when the run gets here)",
                        manifest.target
                    ))
                })
                .collect());
        }
        let survey = survey(params, &manifests)?;
        let mut actions = Vec::new();
        for (manifest, current) in manifests.iter().zip(&survey.live) {
            let target = &manifest.target;
            actions.push(match current {
                None => PlannedAction::write(format!("create {target}")),
                Some(_) if manifest.unresolved_image => PlannedAction::write(format!(
                    "update {target} (its image is known when the run gets here)"
                )),
                Some(current) => {
                    // Sent with dryRun=All while planning: the server says
                    // what the apply would make of the object.
                    let after = kube::patch(&target.reference(), PatchKind::Apply, &manifest.body)?;
                    let differences = live::differences(current, &after);
                    if differences.is_empty() {
                        PlannedAction::read(format!("unchanged {target}"))
                    } else {
                        PlannedAction::write(format!(
                            "update {target} ({})",
                            live::some_of(&differences)
                        ))
                    }
                }
            });
        }
        if params.wait {
            for manifest in manifests
                .iter()
                .filter(|manifest| live::rolls_out(&manifest.target.kind))
            {
                actions.push(PlannedAction::read(format!(
                    "wait up to {} for {} to roll out",
                    HumanDuration(timeout(params)),
                    manifest.target
                )));
            }
        }
        for (target, _) in survey.prunable.iter().rev() {
            actions.push(PlannedAction::write(format!(
                "prune {target} (the previous apply of set `{}` had it, this one has not)",
                params.name
            )));
        }
        Ok(actions)
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let manifests = load(&params)?;
        let survey = survey(&params, &manifests)?;
        let record = record_of(&manifests, &survey);
        // On disk before anything changes: what `rollback` puts back.
        for (key, value) in record::checkpoints(&record)? {
            runbook_sdk::log::checkpoint(key, value)?;
        }
        let mut progress = Progress::default();
        match change(&params, &manifests, &survey, &mut progress) {
            Ok(changes) => Ok(outcome(&changes, &params.name)),
            Err(Error::Cancelled) => Err(Error::Cancelled),
            Err(error) => {
                let report = restore(&params, &record, Some(&progress));
                Err(with_undone(error, &report))
            }
        }
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let Some(record) = record::read(outputs)? else {
            return Ok("nothing to undo: the step recorded nothing, so it changed nothing".into());
        };
        let report = restore(&params, &record, None);
        if report.failed.is_empty() {
            Ok(report.done())
        } else {
            Err(Error::failed(format!(
                "rollback incomplete: {}; done: {}",
                report.failed.join("; "),
                report.done()
            )))
        }
    }
}

runbook_sdk::export_step!(Apply);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_and_namespaces_are_checked_as_kubernetes_checks_them() {
        assert!(is_label_value("web"));
        assert!(is_label_value("shop.web_2-a"));
        assert!(!is_label_value("-web"));
        assert!(!is_label_value(""));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_namespace_name("shop-1"));
        assert!(!is_namespace_name("Shop"));
        assert!(!is_namespace_name("shop."));
    }

    #[test]
    fn an_error_says_what_was_undone() {
        let report = Report {
            done: vec!["restored Deployment shop/web".into()],
            failed: vec!["ConfigMap shop/a: not deleted: gone".into()],
        };
        let error = with_undone(
            Error::failed("Deployment shop/web did not roll out"),
            &report,
        );
        assert_eq!(
            error.message(),
            "Deployment shop/web did not roll out; undone: restored Deployment shop/web; NOT undone: ConfigMap shop/a: not deleted: gone"
        );
        assert!(matches!(
            with_undone(Error::Cancelled, &Report::default()),
            Error::Cancelled
        ));
    }
}
