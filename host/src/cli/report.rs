//! `runbook report RUN [--html | --markdown] [-o FILE]`: one run as a
//! self-contained page (or Markdown), built by [`crate::report`] from the
//! run's journal and audit log.

use super::{Cli, Failure, exit};
use crate::{report, state};
use anyhow::Context;
use std::path::PathBuf;

/// `runbook report RUN`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's id.
    run: String,
    /// An HTML page: inline CSS and SVG, no script, nothing fetched (the default).
    #[arg(long, conflicts_with = "markdown")]
    html: bool,
    /// Markdown instead, the timeline as a table of offsets.
    #[arg(long)]
    markdown: bool,
    /// Write it to FILE [default: stdout].
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: Option<PathBuf>,
    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
}

/// Writes the report.
pub fn run(_cli: &Cli, args: &ReportArgs) -> Result<u8, Failure> {
    let dir = state::find_run(&args.run, args.state_dir.as_deref())
        .map_err(|error| Failure::Internal(error.into()))?;
    let built = report::build(&dir)
        .with_context(|| format!("reading run {}", args.run))
        .map_err(Failure::Internal)?;
    let page = if args.markdown && !args.html {
        report::markdown(&built)
    } else {
        report::html(&built)
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &page)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(Failure::Internal)?;
            eprintln!(
                "report of run {} written to {}",
                crate::terminal::text(&args.run),
                crate::terminal::text(&path.display().to_string())
            );
        }
        None => super::print_text(page.trim_end_matches('\n'))?,
    }
    Ok(exit::SUCCESS)
}
