//! `runbook lock FILE`: records each plugin's digest and what it may do in
//! `runbook.lock`. A plugin that now asks for more than it was locked with
//! is shown as a capability diff and needs `--accept-new-capabilities`.

use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::preflight;
use crate::lockfile::{self, Lockfile};
use std::path::PathBuf;

/// `runbook lock FILE [--accept-new-capabilities]`
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The runbook whose plugins to lock.
    file: PathBuf,
    /// Accept plugins that ask for more capabilities or interfaces than
    /// they were locked with (the diff is shown either way).
    #[arg(long)]
    accept_new_capabilities: bool,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &LockArgs) -> Result<u8, Failure> {
    let runbook = crate::runbook::load(&args.file)?;
    let runtime = super::plugin_runtime(cli)?;
    let plugins = preflight::load_runbook_plugins(&runtime, &runbook).await?;
    let previous = Lockfile::load(&args.file)
        .map_err(|error| Failure::Internal(error.into()))?
        .unwrap_or_default();
    let mut next = previous.clone();
    let mut widened = Vec::new();
    for (name, plugin) in &plugins {
        let written = runbook
            .plugins
            .get(name)
            .map(|source| {
                source
                    .path
                    .strip_prefix(args.file.parent().unwrap_or(std::path::Path::new("")))
                    .unwrap_or(&source.path)
                    .display()
                    .to_string()
            })
            .unwrap_or_default();
        let entry = preflight::locked_entry(&written, plugin);
        match previous.plugins.get(name) {
            None => outln!(
                "+ {name} {} sha256 {} ({})",
                entry.version,
                entry.sha256,
                list(&entry.capabilities)
            )?,
            Some(locked) if locked == &entry => outln!("= {name} {} unchanged", entry.version)?,
            Some(locked) => {
                let added = lockfile::widening(locked, &entry);
                outln!(
                    "~ {name} {} → {}: sha256 {} → {}",
                    locked.version,
                    entry.version,
                    locked.sha256,
                    entry.sha256
                )?;
                for addition in &added {
                    outln!("    + asks for {addition}")?;
                }
                if !added.is_empty() {
                    widened.push(name.clone());
                }
            }
        }
        next.plugins.insert(name.clone(), entry);
    }
    if !widened.is_empty() && !args.accept_new_capabilities {
        return Err(Failure::Invalid(Diagnostics(vec![
            Diagnostic::new(format!(
                "{} ask{} for more than {} approved; nothing was written",
                widened.join(", "),
                if widened.len() == 1 { "s" } else { "" },
                lockfile::FILE_NAME
            ))
            .hint("review the capability diff above; accept it with `--accept-new-capabilities`"),
        ])));
    }
    let path = lockfile::path_for(&args.file);
    std::fs::write(&path, next.render()).map_err(|error| Failure::Internal(error.into()))?;
    outln!("wrote {}", path.display())?;
    Ok(exit::SUCCESS)
}

fn list(items: &std::collections::BTreeSet<String>) -> String {
    if items.is_empty() {
        "needs nothing".into()
    } else {
        format!(
            "needs {}",
            items.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}
