//! Checks a raw runbook into a [`Runbook`]: names, durations, templates and
//! references. Reports every problem it finds, each at its place in the file.
//! This file is the driver; each concern has its file in `validate/`, and
//! none of them does I/O beyond resolving `grants.fs` folders.

mod environments;
mod for_each;
mod grants;
mod graph;
mod limits;
mod params;
mod plugins;
mod references;
mod steps;
mod values;

pub use values::toml_to_json;

use super::model::RawRunbook;
use super::{Environment, ParamSpec, PluginSource, Policy, Runbook};
use crate::diagnostic::{Diagnostics, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Validates the raw model; every problem found is reported.
pub fn validate(source: Arc<Source>, raw: RawRunbook) -> Result<Runbook, Diagnostics> {
    let mut problems = Diagnostics::default();
    let params = params::validate_params(&source, &raw.params, &mut problems);
    let environments =
        environments::validate_environments(&source, raw.environments, &mut problems);
    let plugins = plugins::validate_plugins(&source, raw.plugins, &mut problems);
    let declared = Declared {
        params: &params,
        environments: &environments,
        plugins: &plugins,
    };
    let steps = steps::validate_steps(&source, raw.steps, &declared, &mut problems);
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

/// What the runbook declares outside its steps, already checked: what a
/// step's `uses` and references may name.
struct Declared<'a> {
    params: &'a BTreeMap<String, ParamSpec>,
    environments: &'a BTreeMap<String, Environment>,
    plugins: &'a BTreeMap<String, PluginSource>,
}

/// What one step's checks read of the rest of the runbook.
struct StepContext<'a> {
    /// Parameters, environments and plugins.
    declared: &'a Declared<'a>,
    /// Every step this one transitively needs: the steps whose outputs and
    /// outcomes it may read.
    ancestors: &'a BTreeSet<String>,
    /// Steps with `for_each`, whose outputs no step may read.
    for_each_steps: &'a BTreeSet<String>,
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
