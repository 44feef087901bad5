//! What a run leaves: the journal and the audit log its events go to
//! (with the caller's views beside them), the run index, the events that
//! mark its start, and at its end the deployment record, or, when the run
//! could no longer be recorded, what the journal holds.

use super::resume::Earlier;
use super::{Error, Interface, Options, Prepared, Start};
use crate::audit::{AuditHead, AuditLog};
use crate::engine::RunReport;
use crate::events::{EventKind, EventSink, Level, Status};
use crate::journal::{self, Journal, RunRecord};
use crate::runbook::Plan;
use crate::state::{self, DeploymentRecord};
use std::path::{Path, PathBuf};

/// Where a run's events are written.
pub struct Recording {
    /// Every event goes here: the journal, the audit log, the caller's
    /// views; secret values are redacted before any of them.
    pub events: EventSink,
    /// The journal.
    pub journal: PathBuf,
    /// The audit log's record count and head hash, for the run's end.
    audit_head: AuditHead,
}

/// Opens the run's journal and audit log, indexes the run, and adds the
/// caller's views of its events.
pub fn open(
    prepared: &Prepared,
    state_dir: &Path,
    index_dir: &Path,
    lease: Option<&state::remote::Lease>,
    interface: &dyn Interface,
) -> Result<Recording, Error> {
    let plan = &prepared.plan;
    let run_dir = state::run_dir(state_dir, &plan.run_id);
    let journal = state::journal_path(&run_dir);
    let events = EventSink::new();
    events.set_redactor(prepared.secrets.redactor());
    let journal_file = Journal::open(&journal).map_err(|source| Error::Journal {
        path: journal.clone(),
        source,
    })?;
    state::index_run(index_dir, &plan.run_id, &run_dir);
    let (mut audit_log, audit_head) = AuditLog::open(&crate::audit::path(&run_dir), &plan.run_id)
        .map_err(|source| Error::AuditLog {
        run_dir: run_dir.clone(),
        source,
    })?;
    // A shared backend's copy of every line first: it is synced last,
    // after the journal and the audit log here.
    if let Some(lease) = lease {
        events.add(state::remote::Mirror::new(
            lease.shared().clone(),
            lease.fence().clone(),
            state::remote::RunSummary {
                run_id: plan.run_id.clone(),
                runbook: plan.runbook.name.clone(),
                environment: plan.environment.clone(),
            },
            audit_log.tee(),
        ));
    }
    events.add(journal_file);
    // `[notify]` targets start no step: their records name their plugin
    // from the plan.
    for planned in &plan.targets {
        if let Some(plugin) = prepared.plugins.get(&plan.target(planned).plugin) {
            audit_log.know_digest(&planned.id.0, &plugin.digest);
        }
    }
    events.add(audit_log);
    interface.watch(&events);
    Ok(Recording {
        events,
        journal,
        audit_head,
    })
}

/// Records that this process starts the run, or continues it, and returns
/// what earlier processes of the run left.
pub fn start(
    recording: &Recording,
    prepared: &Prepared,
    start: &Start,
    options: &Options,
) -> Earlier {
    let plan = &prepared.plan;
    let events = &recording.events;
    let earlier = match start {
        Start::New => {
            events.emit(EventKind::RunStarted {
                run_id: plan.run_id.clone(),
                runbook: plan.runbook.name.clone(),
                file: std::fs::canonicalize(&plan.runbook.source.path)
                    .unwrap_or_else(|_| plan.runbook.source.path.clone())
                    .display()
                    .to_string(),
                environment: plan.environment.clone(),
                operator: plan.operator.clone(),
                params: plan.params.clone(),
                steps: plan.steps.len(),
                plan_hash: Some(prepared.fingerprint.clone()),
                emergency: options.emergency.clone(),
                saved_plan: prepared.saved_plan.clone(),
            });
            Earlier::default()
        }
        Start::Resume(resumption) => {
            match &resumption.asked {
                Some(asked) => events.emit(EventKind::RollbackRequested {
                    operator: asked.operator.clone(),
                    plan_hash: asked.plan_hash.clone(),
                    steps: asked.steps.clone(),
                    emergency: asked.emergency.clone(),
                    forced_over: asked.forced_over.clone(),
                }),
                None => events.emit(EventKind::RunResumed {
                    operator: resumption.operator.clone(),
                    plan_hash: Some(prepared.fingerprint.clone()),
                    rerun: resumption.rerun.clone(),
                    skip: resumption.skip.clone(),
                }),
            }
            if let Some((step, decision)) = &resumption.decision {
                events.emit_for(
                    Some(&crate::grant::StepId(step.clone())),
                    EventKind::Decided {
                        choice: decision.choice,
                        by: decision.by.clone(),
                        how: "command".to_owned(),
                        note: decision.note.clone(),
                    },
                );
            }
            Earlier::of(resumption)
        }
    };
    if let Some(reason) = &options.emergency {
        let what = match start {
            Start::Resume(resumption) if resumption.record.rollback_request.is_some() => {
                "emergency rollback"
            }
            _ => "emergency run",
        };
        events.emit(EventKind::Log {
            level: Level::Warn,
            message: format!("{what}: {reason}"),
        });
    }
    earlier
}

/// Records the operator's signature of the plan, before anything runs:
/// durably, in the journal (where `approve` and `audit verify` read it)
/// and the audit log.
pub fn operator_signed(
    recording: &Recording,
    prepared: &Prepared,
    signature: crate::events::SignatureRecord,
) {
    recording.events.emit(EventKind::OperatorSigned {
        by: prepared.plan.operator.clone(),
        plan_hash: prepared.fingerprint.clone(),
        signature,
    });
}

/// Records how the run passed its promotion gate, or that an emergency
/// overrode it: in the journal (`show`) and the audit log.
pub fn promotion(recording: &Recording, gate: super::gates::PromotionGate) {
    recording.events.emit(EventKind::PromotionChecked {
        from: gate.from,
        requires: gate.requires,
        satisfied_by: gate.satisfied_by,
        detail: gate.detail,
        overridden: gate.overridden,
    });
}

/// Records that the run parks before its first step until `until` (its
/// deploy window opens), durably: `runbook worker` starts it then.
pub fn park(recording: &Recording, until: &str, reason: &str) {
    recording.events.emit(EventKind::RunWaiting {
        until: until.to_owned(),
        reason: reason.to_owned(),
    });
    stop_at_gate(recording);
}

/// Records that the run stops at a gate (its approvals, its window): it
/// ends `waiting`, and a later process goes on from there.
pub fn stop_at_gate(recording: &Recording) {
    recording.events.emit(EventKind::RunFinished {
        status: Status::Waiting,
        elapsed_ms: 0.0,
        failed_step: None,
    });
    recording.events.finish();
}

/// How a run that ran ended, and what was recorded of it.
#[derive(Debug)]
pub struct Finished {
    /// The run's id.
    pub run_id: String,
    /// How the steps went.
    pub report: RunReport,
    /// The journal (the run log).
    pub journal: PathBuf,
    /// Set when the journal or audit log could no longer be written: the
    /// run stopped before its next step, and `resume` continues it.
    pub unrecorded: Option<Unrecorded>,
    /// The deployment record, for a run that ended (not one that waits,
    /// nor one that could not be recorded).
    pub deployment: Option<Deployment>,
}

/// A run that stopped because it could no longer be recorded.
#[derive(Debug)]
pub struct Unrecorded {
    /// Why its journal or audit log could not be written.
    pub reason: String,
    /// The steps the journal records as succeeded, in the order they
    /// started: nothing after the failure is on disk, so this is what is
    /// known.
    pub completed: Vec<String>,
}

/// The deployment record of a run that ended.
#[derive(Debug)]
pub struct Deployment {
    /// The record.
    pub record: DeploymentRecord,
    /// Where it was written, or why it could not be (the journal still
    /// holds the run, and `resume` writes the record later).
    pub written: std::io::Result<PathBuf>,
}

/// Ends the run's record: the audit log's head into the journal, then the
/// deployment record.
pub fn finish(
    recording: Recording,
    plan: &Plan,
    report: RunReport,
    approved: crate::gates::ApprovalCount,
    options: &Options,
    state_dir: &Path,
) -> Finished {
    let (records, hash) = recording.audit_head.get();
    let events = &recording.events;
    events.emit(EventKind::AuditHead { records, hash });
    events.finish();
    let mut finished = Finished {
        run_id: plan.run_id.clone(),
        journal: recording.journal.clone(),
        unrecorded: None,
        deployment: None,
        report,
    };
    if let Some(reason) = finished.report.unrecorded.clone().or(events.failure()) {
        // Nothing after the failure is on disk: no record, no claim of
        // success. What the journal holds is what is known.
        finished.unrecorded = Some(Unrecorded {
            reason,
            completed: completed_steps(&recording.journal),
        });
    } else if finished.report.status != Status::Waiting {
        let record = deployment_record(&finished, plan, approved, options);
        finished.deployment = Some(Deployment {
            written: state::write_record(state_dir, &record),
            record,
        });
    }
    finished
}

/// The steps the journal records as succeeded.
fn completed_steps(journal: &Path) -> Vec<String> {
    journal::read(journal)
        .map(|record| {
            record
                .order
                .iter()
                .filter(|id| record.steps[*id].status == Some(Status::Succeeded))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The deployment record of a run that ended, from its journal.
fn deployment_record(
    finished: &Finished,
    plan: &Plan,
    approved: crate::gates::ApprovalCount,
    options: &Options,
) -> DeploymentRecord {
    let journal = &finished.journal;
    let record = journal::read(journal).unwrap_or_else(|_| RunRecord::default());
    let mut deployment = DeploymentRecord::from_journal(&record, journal);
    deployment.finished = jiff::Timestamp::now().to_string();
    deployment.runbook = plan.runbook.name.clone();
    deployment.run_id = plan.run_id.clone();
    deployment.status = finished.report.status.as_str().to_owned();
    match &mut deployment.rollback {
        // The deploy's approvals stay; the rollback's are its own, as is
        // its emergency.
        Some(rollback) => {
            rollback.unsigned_approvals = approved.unsigned && !approved.valid.is_empty();
            rollback.signatures = signatures_of(&approved);
            rollback.approvals = approved.valid;
        }
        None => {
            deployment.unsigned_approvals = approved.unsigned && !approved.valid.is_empty();
            deployment.signatures = signatures_of(&approved);
            deployment.approvals = approved.valid;
            // A resumed emergency run keeps the reason its start recorded.
            if let Some(reason) = &options.emergency {
                deployment.emergency = Some(reason.clone());
            }
        }
    }
    deployment.logs = std::fs::canonicalize(journal)
        .unwrap_or_else(|_| journal.clone())
        .display()
        .to_string();
    deployment
}

/// The signatures the approval gate found to hold: the operator's, then
/// each counted approver's.
fn signatures_of(approved: &crate::gates::ApprovalCount) -> Vec<crate::events::SignatureRecord> {
    approved
        .operator_signature
        .iter()
        .chain(&approved.signatures)
        .cloned()
        .collect()
}
