//! Runs that wait for a step's next round: which are due, and going on
//! with them. `runbook worker` (what a systemd unit or a Kubernetes
//! Deployment runs) takes every due run of its state folders through
//! here; `runbook resume RUN` goes on with one.

use super::{Ended, Error, Interface, Options, resume};
use crate::journal::{self, RunRecord};
use crate::plugin::PluginRuntime;
use crate::state;
use std::path::{Path, PathBuf};

/// A run that waits: for a step's next round, for its deploy window, or
/// at a gate a person opens (its approvals, a manual step's checklist).
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The run's id.
    pub run_id: String,
    /// The runbook's name.
    pub runbook: String,
    /// The environment.
    pub environment: Option<String>,
    /// The step that waits; empty when the run waits before its steps.
    pub step: String,
    /// When it is due; a gate a person opens is due at once, and tried
    /// again whenever someone approves or confirms.
    pub wake_at: jiff::Timestamp,
    /// What it waits for, in words.
    pub status: String,
    /// Parked (its process ended on purpose), rather than left mid-wait by
    /// a process that died.
    pub parked: bool,
    /// Changes whenever going on could come out differently: the wake-up
    /// time of a wait, or the approvals and confirmations given so far.
    /// Once tried, a run is not tried again until it changes.
    pub generation: String,
    /// The state folder it lives in.
    pub state_dir: PathBuf,
}

impl Waiting {
    /// Whether it is due at `now`.
    pub fn due(&self, now: jiff::Timestamp) -> bool {
        self.wake_at <= now
    }

    fn of(record: &RunRecord, state_dir: &Path) -> Option<Self> {
        let run =
            |step: &str, wake_at: jiff::Timestamp, status: String, generation: String| Waiting {
                run_id: record.run_id.clone(),
                runbook: record.runbook.clone(),
                environment: record.environment.clone(),
                step: step.to_owned(),
                wake_at,
                status,
                parked: record.finished.is_some(),
                generation,
                state_dir: state_dir.to_path_buf(),
            };
        if let Some((step, wait)) = record.parked().or_else(|| record.waiting_step()) {
            let wake_at: jiff::Timestamp = wait.wake_at.parse().ok()?;
            return Some(run(
                step,
                wake_at,
                wait.status.clone(),
                wait.wake_at.clone(),
            ));
        }
        // Stopped at its approval gate or at a manual step: worth another
        // try once someone has approved or confirmed since. A run that
        // waits for a person's choice at a failed step goes on only with
        // `runbook decide`.
        if record.finished != Some(crate::events::Status::Waiting)
            || record.awaiting_decision().is_some()
            || record.abandoned
            || record.rollback.is_some()
        {
            return None;
        }
        let waiting_step = record
            .order
            .iter()
            .find(|id| record.steps[*id].status == Some(crate::events::Status::Waiting));
        let status = match waiting_step {
            Some(step) => format!("the confirmation of `{step}`"),
            None => "approvals".to_owned(),
        };
        Some(run(
            waiting_step.map_or("", String::as_str),
            jiff::Timestamp::UNIX_EPOCH,
            status,
            format!(
                "approvals:{} confirmations:{}",
                record.approvals.len(),
                record.confirmations.len()
            ),
        ))
    }
}

/// The runs of `state_dir` that wait, soonest due first. A run whose journal cannot be read is left out (`runbook runs`
/// shows it).
pub fn waiting(state_dir: &Path) -> Vec<Waiting> {
    let mut found: Vec<Waiting> = state::list_runs(state_dir)
        .iter()
        .filter_map(|run_dir| journal::read(&state::journal_path(run_dir)).ok())
        .filter_map(|record| Waiting::of(&record, state_dir))
        .collect();
    found.sort_by_key(|waiting| waiting.wake_at);
    found
}

/// Goes on with a waiting run, as `runbook resume` would: it takes the
/// run's lock (refused while another process carries the run), waits
/// until the step is due, and runs on until the run ends or parks again.
pub async fn go_on(
    runtime: &PluginRuntime,
    waiting: &Waiting,
    connections: impl FnOnce(&super::Prepared) -> super::Connections,
    options: &Options,
    interface: &dyn Interface,
) -> Result<Ended, Error> {
    let request = resume::Request {
        run: waiting.run_id.clone(),
        rerun: Vec::new(),
        skip: Vec::new(),
        operator: None,
        decision: None,
    };
    let options = Options {
        state_dir: Some(waiting.state_dir.clone()),
        ..options.clone()
    };
    let (prepared, start) = resume::prepare(runtime, &request, &options, interface).await?;
    let connections = connections(&prepared);
    super::run(runtime, prepared, start, connections, &options, interface).await
}
