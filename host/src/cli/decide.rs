//! `runbook decide RUN retry|skip|rollback|abort`: the choice a person
//! makes for a run that paused at a failed step (`on_failure = "ask"`),
//! and the run going on with it. The choice is journaled and audited by
//! the process that carries it out, under the run's lock.

use super::session::RunOptions;
use super::{Cli, Failure};
use crate::events::Choice;
use crate::run::resume;

/// What happens to the failed step.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Pick {
    /// Run the failed step again.
    Retry,
    /// Treat the failed step as done and go on: the steps after it run.
    Skip,
    /// Undo what the run did, newest first, as `on_failure = "rollback"` would.
    Rollback,
    /// End the run as it stands, undoing nothing.
    Abort,
}

impl From<Pick> for Choice {
    fn from(pick: Pick) -> Self {
        match pick {
            Pick::Retry => Choice::Retry,
            Pick::Skip => Choice::Skip,
            Pick::Rollback => Choice::Rollback,
            Pick::Abort => Choice::Abort,
        }
    }
}

/// `runbook decide RUN CHOICE [--as NAME] [--note TEXT]`
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The run's id (`runbook runs` shows the runs waiting for a decision).
    run: String,

    /// What happens to the failed step.
    #[arg(value_enum)]
    choice: Pick,

    /// Who decides [default: $RUNBOOK_OPERATOR, else $USER].
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,

    /// Why, in a few words: kept in the run log and the audit log.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,

    #[command(flatten)]
    options: RunOptions,
}

/// Records the decision and goes on with the run in this process.
pub async fn run(cli: &Cli, args: &DecideArgs) -> Result<u8, Failure> {
    let operator = args
        .name
        .clone()
        .or_else(|| std::env::var("RUNBOOK_OPERATOR").ok())
        .or_else(|| std::env::var("USER").ok());
    let request = resume::Request {
        run: args.run.clone(),
        rerun: Vec::new(),
        skip: Vec::new(),
        operator: operator.clone(),
        decision: Some(resume::Decision {
            choice: args.choice.into(),
            by: operator.unwrap_or_else(|| "unknown".to_owned()),
            note: args.note.clone().unwrap_or_default(),
        }),
    };
    super::resume::go_on(cli, &request, &args.options).await
}
