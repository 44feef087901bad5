//! `runbook validate`: everything `exec` checks before it runs a step, for
//! every environment, without running anything.

use super::{Cli, Failure, Output, exit};
use crate::diagnostic::Diagnostics;
use crate::engine::preflight;
use crate::runbook::{self, Bindings, bind::bind};
use std::path::PathBuf;
use std::sync::Arc;

/// `runbook validate FILE [--env NAME] [--set K=V...]`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The runbook file.
    file: PathBuf,

    /// Check only this environment [default: every environment].
    #[arg(short, long, value_name = "NAME")]
    env: Option<String>,

    /// A parameter value; parameters not given are checked as placeholders.
    #[arg(short, long = "set", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    set: Vec<(String, String)>,

    /// `json`: one JSON document on stdout, `{ "valid", "file", "steps",
    /// "environments", "problems": [{ "code", "message", "file", "line",
    /// "column", "hint" }], "warnings": [...] }`; the exit code is the same.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &ValidateArgs) -> Result<u8, Failure> {
    let runbook = match runbook::load(&args.file) {
        Ok(runbook) => Arc::new(runbook),
        Err(runbook::LoadError::Invalid(mut problems)) => {
            pin_hints(&mut problems).await;
            if args.output == Output::Json {
                return report_json(args, 0, &[], &problems, &[]);
            }
            return Err(Failure::Invalid(problems));
        }
        Err(error) => return Err(error.into()),
    };
    let environments: Vec<Option<String>> = match &args.env {
        Some(name) => vec![Some(name.clone())],
        None if runbook.environments.is_empty() => vec![None],
        None => runbook.environments.keys().cloned().map(Some).collect(),
    };
    // Validation calls each plugin's `describe` and `check` once: what the
    // cache lacks is compiled quickly, not optimised.
    let runtime = super::quick_plugin_runtime(cli)?;
    let mut problems = Diagnostics::default();
    let mut checked = Vec::new();
    let mut warned = Vec::new();
    for environment in environments {
        let plan = bind(
            Arc::clone(&runbook),
            Bindings {
                environment: environment.clone(),
                sets: args.set.clone(),
                operator: "validate".into(),
                run_id: "validate".into(),
                lenient: true,
            },
        );
        let plan = match plan {
            Ok(plan) => plan,
            Err(found) => {
                problems.0.extend(found.0);
                continue;
            }
        };
        let plugins = match preflight::load_plugins(&runtime, &plan).await {
            Ok(plugins) => plugins,
            Err(found) => {
                problems.0.extend(found.0);
                break;
            }
        };
        match preflight::check_capabilities(&plan, &plugins) {
            Ok(warnings) => {
                for warning in warnings {
                    if args.output == Output::Text {
                        eprintln!("{warning}");
                    }
                    if !warned.contains(&warning) {
                        warned.push(warning);
                    }
                }
            }
            Err(found) => problems.0.extend(found.0),
        }
        let secrets = crate::capability::secrets::SecretStore::new(Default::default());
        if let Err(found) = preflight::check_params(&runtime, &plan, &plugins, &secrets).await {
            problems.0.extend(found.0);
        }
        checked.push(environment.unwrap_or_else(|| "(no environment)".into()));
    }
    dedup(&mut problems);
    if args.output == Output::Json {
        return report_json(args, runbook.steps.len(), &checked, &problems, &warned);
    }
    if !problems.is_empty() {
        return Err(Failure::Invalid(problems));
    }
    outln!(
        "✓ {} is valid: {} step{}, checked for {}",
        args.file.display(),
        runbook.steps.len(),
        if runbook.steps.len() == 1 { "" } else { "s" },
        checked.join(", ")
    )?;
    Ok(exit::SUCCESS)
}

/// `--output json`: the verdict, every problem and warning, one document.
fn report_json(
    args: &ValidateArgs,
    steps: usize,
    checked: &[String],
    problems: &Diagnostics,
    warnings: &[String],
) -> Result<u8, Failure> {
    super::print_json(&serde_json::json!({
        "valid": problems.is_empty(),
        "file": args.file.display().to_string(),
        "steps": steps,
        "environments": checked,
        "problems": problems.0.iter().map(crate::diagnostic::Diagnostic::to_json).collect::<Vec<_>>(),
        "warnings": warnings,
    }))?;
    Ok(if problems.is_empty() {
        exit::SUCCESS
    } else {
        exit::INVALID
    })
}

/// The same problem found in several environments is reported once.
fn dedup(problems: &mut Diagnostics) {
    let mut seen = std::collections::BTreeSet::new();
    problems
        .0
        .retain(|diagnostic| seen.insert((diagnostic.message.clone(), diagnostic.location())));
}

/// A plugin in a registry named by its tag alone: the hint gives the
/// reference pinned to the digest the tag names now, asked of the registry
/// (when it answers within a few seconds).
async fn pin_hints(problems: &mut Diagnostics) {
    for problem in &mut problems.0 {
        if problem.code != Some(runbook::Code::OciUnpinned.name()) {
            continue;
        }
        let Some(reference) = crate::oci::Reference::find_in(&problem.message) else {
            continue;
        };
        let Some(tag) = reference.tag.clone() else {
            continue;
        };
        let resolved = match crate::oci::Client::new(&reference, "pull", false) {
            Ok(client) => {
                tokio::time::timeout(std::time::Duration::from_secs(10), client.resolve(&tag))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        problem.hint = Some(match resolved {
            Some(digest) => format!(
                "a tag can be moved to other bytes: pin the digest it names now, `{}`",
                reference.pinned(&digest)
            ),
            None => format!(
                "{} (the registry could not be asked for the digest now)",
                problem
                    .hint
                    .as_deref()
                    .unwrap_or("pin the manifest's digest")
            ),
        });
    }
}
