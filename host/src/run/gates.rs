//! What a run must pass before its first step: the deploy window, the
//! promotion gate (an earlier success in another environment), the lock
//! of its runbook and environment, the operator's signature where the
//! environment takes only signed approvals, and the approvals bound to its
//! fingerprint. The rules themselves are in [`crate::gates`],
//! [`crate::promotion`] and [`crate::schedule`]; this module applies them,
//! and waits where asked.

use super::record::Recording;
use super::{Error, Interface, Notice, Options, Prepared};
use crate::events::SignatureRecord;
use crate::gates::{ApprovalCount, Counting};
use crate::journal::{self, JournalError};
use crate::promotion::{Asking, Verdict, Wording};
use crate::runbook::{Approvals, Plan};
use crate::signature::Role;
use crate::state::{self, LockError, LockHolder, RunLock};
use std::path::Path;
use std::time::Duration;

/// Whether a run may start now: closed outside its environment's deploy
/// windows or in a freeze, unless it is an emergency.
pub fn window(prepared: &Prepared, emergency: bool) -> Result<(), crate::schedule::Closed> {
    let Some(environment) = prepared.environment() else {
        return Ok(());
    };
    match environment.schedule.check(crate::schedule::now()) {
        Err(closed) if !emergency => Err(closed),
        _ => Ok(()),
    }
}

/// The refusal of a run outside its deploy windows.
pub fn closed(closed: &crate::schedule::Closed) -> Error {
    Error::refuse(
        format!("no deploys now: {}", closed.reason),
        match &closed.next_open {
            Some(next) => format!(
                "the next window opens {next}; `--detach` parks the run until then (`runbook worker` starts it); in an emergency, run with `--emergency --reason \"...\"`"
            ),
            None => "no window opens within a year; in an emergency, run with `--emergency --reason \"...\"`".into(),
        },
    )
}

/// How a new run passed its environment's promotion gate: shown by
/// `plan`, journaled and audited by `exec`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromotionGate {
    /// The environment the run is promoted from.
    pub from: String,
    /// What the gate asks, in words.
    pub requires: String,
    /// The run that satisfies it; `None` when an emergency overrode it.
    pub satisfied_by: Option<String>,
    /// How that run satisfies it; when overridden, what is missing.
    pub detail: String,
    /// The emergency reason that overrode a gate not met.
    pub overridden: Option<String>,
}

/// The promotion gate of a new run: the deployment records in
/// `state_dir` must show the success its environment `requires` (judged
/// at [`crate::schedule::now`], so `RUNBOOK_NOW` rehearses it). Refused,
/// saying what is missing and which run will satisfy it, unless
/// `emergency` gives a reason to go without. `None` when the environment
/// requires nothing. A resumed run is not checked again: it passed when
/// it started, and its staging run ageing past `within` since does not
/// make its remaining steps wrong.
pub fn promotion(
    prepared: &Prepared,
    state_dir: &Path,
    emergency: Option<&str>,
) -> Result<Option<PromotionGate>, Error> {
    let Some(requires) = prepared
        .environment()
        .and_then(|environment| environment.requires.as_ref())
    else {
        return Ok(None);
    };
    let plan = &prepared.plan;
    let asking = Asking {
        runbook: &plan.runbook.name,
        params: &plan.params,
    };
    let now = crate::schedule::now();
    let (records, unreadable) = state::read_records(state_dir);
    let verdict = crate::promotion::judge(requires, asking, &records, now);
    let wording = Wording {
        requires,
        asking,
        now,
    };
    let mut gate = PromotionGate {
        from: requires.environment.clone(),
        requires: wording.requirement(),
        satisfied_by: None,
        detail: String::new(),
        overridden: None,
    };
    if let Verdict::Met { run_id, succeeded } = &verdict {
        gate.detail = wording.met(run_id, *succeeded);
        gate.satisfied_by = Some(run_id.clone());
        return Ok(Some(gate));
    }
    let missing = wording.missing(&verdict).unwrap_or_default();
    let Some(reason) = emergency else {
        return Err(promotion_refused(
            plan,
            &wording,
            &verdict,
            &missing,
            &unreadable,
        ));
    };
    gate.detail = missing;
    gate.overridden = Some(reason.to_owned());
    Ok(Some(gate))
}

/// The refusal of a run whose promotion gate is not met: what is missing,
/// and what to do: deploy to the earlier environment, or wait until the
/// run that will satisfy it has soaked.
fn promotion_refused(
    plan: &Plan,
    wording: &Wording<'_>,
    verdict: &Verdict,
    missing: &str,
    unreadable: &[std::path::PathBuf],
) -> Error {
    let requires = wording.requires;
    let environment = plan.environment.as_deref().unwrap_or_default();
    let first = match verdict {
        Verdict::NotSoaked { eligible, .. } => {
            format!("run again from {}", crate::promotion::clock_from(*eligible))
        }
        _ => format!(
            "deploy it to `{}` {}: `runbook exec {} --env {}{}`",
            requires.environment,
            if matches!(verdict, Verdict::TooOld { .. }) {
                "again"
            } else {
                "first"
            },
            plan.runbook.source.path.display(),
            requires.environment,
            requires
                .same
                .iter()
                .filter_map(|name| {
                    let value = crate::template::as_text(plan.params.get(name)?);
                    Some(format!(" --set {name}={value}"))
                })
                .collect::<String>()
        ),
    };
    let mut hint = format!(
        "{first}; `{environment}` needs {}; in an emergency, run with `--emergency --reason \"...\"`",
        wording.requirement()
    );
    if !unreadable.is_empty() {
        hint.push_str(&format!(
            "; these deployment records could not be read: {}",
            unreadable
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Error::refuse(
        format!(
            "`{environment}` is deployed only after `{}`: {missing}",
            requires.environment
        ),
        hint,
    )
}

/// Takes the lock of the plan's runbook and environment for this process
/// (waiting for it with [`Options::wait_lock`], until interrupted), and writes this run as its holder. A lock
/// that a dead process left is free; but when that process's run is
/// unfinished, a new run is refused: it must be resumed or abandoned
/// (`runbook unlock`) first.
pub async fn take_lock(
    plan: &Plan,
    state_dir: &Path,
    options: &Options,
    interface: &dyn Interface,
) -> Result<RunLock, Error> {
    let path = state::lock_path(state_dir, &plan.runbook.name, plan.environment.as_deref());
    let mut waiting = false;
    let mut lock = loop {
        match RunLock::acquire(&path) {
            Ok(lock) => break lock,
            Err(LockError::Held(current)) if options.wait_lock => {
                if !waiting {
                    interface.notice(Notice::LockHeld(LockError::Held(current).to_string()));
                    waiting = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = options.cancel.cancelled() => return Err(Error::Interrupted),
                }
            }
            Err(error @ LockError::Held(_)) => {
                return Err(Error::refuse(
                    error.to_string(),
                    "wait for it with `--wait-lock`",
                ));
            }
            Err(error) => return Err(Error::Lock(error)),
        }
    };
    if let Some(left) = lock.left_by().cloned() {
        if left.run_id == plan.run_id {
            // Only a process that died mid-run is taken over; one that
            // ended (or stopped at a gate) simply left its name.
            if unfinished(state_dir, &left.run_id).is_some_and(|state| !state.starts_with(PARKED)) {
                interface.notice(Notice::LockTakenOver { pid: left.pid });
            }
        } else if let Some(state) = unfinished(state_dir, &left.run_id) {
            return Err(left_unfinished(plan, &left, &state));
        }
    }
    let holder = LockHolder {
        run_id: plan.run_id.clone(),
        operator: plan.operator.clone(),
        since: jiff::Timestamp::now().to_string(),
        pid: std::process::id(),
        host: state::hostname(),
    };
    lock.claim(&holder)
        .map_err(|source| Error::Lock(LockError::Io { path, source }))?;
    Ok(lock)
}

/// How [`unfinished`] begins the state of a parked run.
const PARKED: &str = "parked";

/// The refusal of a new run while the lock's last holder, whose process
/// died or parked the run, left its run unfinished.
fn left_unfinished(plan: &Plan, left: &LockHolder, state: &str) -> Error {
    let message = if state.starts_with(PARKED) {
        format!(
            "run {} by {} is {state}: it is not over, and holds this runbook and environment until it is",
            left.run_id, left.operator
        )
    } else {
        format!(
            "run {} by {} died unfinished ({state}); its process {} on {} is gone",
            left.run_id, left.operator, left.pid, left.host
        )
    };
    Error::refuse(
        message,
        format!(
            "continue it with `runbook resume {}`; or, if it is to be abandoned, `runbook unlock {}{}` and start anew",
            left.run_id,
            plan.runbook.source.path.display(),
            plan.environment
                .as_ref()
                .map(|name| format!(" --env {name}"))
                .unwrap_or_default()
        ),
    )
}

/// How a run that a dead process left stands, when it is unfinished: it
/// has a journal, and the journal has no end.
pub fn unfinished(state_dir: &Path, run_id: &str) -> Option<String> {
    let journal = state::journal_path(&state::current_run_dir(state_dir, run_id));
    let record = match journal::read(&journal) {
        Ok(record) => record,
        // It died before its run started: nothing to continue.
        Err(JournalError::NoStart(_) | JournalError::Read { .. }) => return None,
        Err(error) => return Some(error.to_string()),
    };
    // A parked run is not over: its step goes on when its wait is due, and
    // no other run of the runbook and environment may start meanwhile.
    if let Some((step, wait)) = record.parked() {
        return Some(if step.is_empty() {
            format!(
                "{PARKED} until {}, waiting for {}",
                wait.wake_at, wait.status
            )
        } else {
            format!(
                "{PARKED} at `{step}` until {} ({})",
                wait.wake_at, wait.status
            )
        });
    }
    if record.finished.is_some() {
        return None;
    }
    if let Some(asked) = record
        .rollback_request
        .as_ref()
        .filter(|_| record.rollback.is_none())
    {
        return Some(format!(
            "its rollback, asked by {}, had not begun",
            asked.operator
        ));
    }
    if let Some(rollback) = record
        .rollback
        .as_ref()
        .filter(|rollback| !rollback.finished)
    {
        return Some(format!("its rollback ({}) was cut short", rollback.reason));
    }
    let running: Vec<String> = record
        .order
        .iter()
        .filter(|id| record.steps[*id].interrupted)
        .map(|id| format!("`{id}`"))
        .collect();
    Some(match running.as_slice() {
        [] => "between steps".to_owned(),
        ids => format!("during {}", ids.join(", ")),
    })
}

/// How the approval gate was passed, or not.
#[derive(Debug)]
pub enum Approval {
    /// Enough valid approvals (none, when the environment asks for none):
    /// who gave them, and their signatures where they are signed.
    Given(ApprovalCount),
    /// Not enough, and the run does not wait: who may approve, and how.
    Waiting(String),
}

/// The operator's signature of the plan, made before anything runs where
/// the approvals the run needs name an `allowed_signers` file: with
/// [`Options::signing_key`] (`--key`, `$RUNBOOK_SIGNING_KEY`), whose key
/// must be in that file. Refused when no key was given, or when it cannot
/// sign as someone the file lists. `None` where approvals are not signed.
pub fn operator_signature(
    prepared: &Prepared,
    emergency: bool,
    options: &Options,
) -> Result<Option<SignatureRecord>, Error> {
    let Some(rule) = prepared
        .environment()
        .and_then(|environment| crate::gates::rule(environment, emergency))
    else {
        return Ok(None);
    };
    let Some(signers) = &rule.signers else {
        return Ok(None);
    };
    let plan = &prepared.plan;
    let environment = plan.environment.as_deref().unwrap_or_default();
    let Some(key) = &options.signing_key else {
        return Err(Error::refuse(
            format!(
                "`{environment}` takes only signed approvals, and the operator signs the plan too: no signing key was given"
            ),
            format!(
                "pass `--key ~/.ssh/id_ed25519` (or set RUNBOOK_SIGNING_KEY) with a key that {} lists; a public key whose private half is in ssh-agent does too",
                signers.written
            ),
        ));
    };
    let operator = plan.operator.as_str();
    let signed = crate::gates::sign_plan(
        signers,
        key,
        &crate::gates::Signing {
            role: Role::Operator,
            run_id: &plan.run_id,
            fingerprint: &prepared.fingerprint,
            parts: &prepared.parts,
        },
        |key| crate::gates::operator_principal(signers, key, operator),
    )
    .map_err(|(message, hint)| Error::refuse(message, hint))?;
    Ok(Some(signed))
}

/// Counts the approvals bound to the run's fingerprint against the
/// environment's rule (the emergency one for an emergency run), their
/// signatures against its `allowed_signers` where it names one. With
/// [`Options::wait_approval`], waits for them, reading the journal each
/// second (`runbook approve` appends them there) until interrupted.
pub async fn approvals(
    prepared: &Prepared,
    emergency: bool,
    mut given: Vec<journal::Approval>,
    operator_signature: Option<SignatureRecord>,
    recording: &Recording,
    options: &Options,
    interface: &dyn Interface,
) -> Result<Approval, Error> {
    let plan = &prepared.plan;
    let Some(rule) = prepared
        .environment()
        .and_then(|environment| crate::gates::rule(environment, emergency))
    else {
        return Ok(Approval::Given(ApprovalCount::default()));
    };
    loop {
        let counting = Counting {
            run_id: &plan.run_id,
            fingerprint: &prepared.fingerprint,
            parts: &prepared.parts,
            operator: &plan.operator,
            operator_signature: operator_signature.as_ref(),
            at: jiff::Timestamp::now(),
        };
        let counted = crate::gates::count(rule, &given, &counting);
        if counted.is_met() {
            return Ok(Approval::Given(counted));
        }
        let waiting = waiting_for(plan, rule, &counted);
        if !options.wait_approval {
            return Ok(Approval::Waiting(waiting));
        }
        interface.notice(Notice::AwaitingApprovals(waiting));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = options.cancel.cancelled() => return Err(Error::Interrupted),
        }
        given = journal::read(&recording.journal)
            .map(|record| record.approvals)
            .unwrap_or_default();
    }
}

/// Who must approve a waiting run, how many so far, which approvals do
/// not count and why, and the command that approves.
fn waiting_for(plan: &Plan, rule: &Approvals, counted: &ApprovalCount) -> String {
    let how = match &rule.signers {
        Some(_) => "--key ~/.ssh/id_ed25519",
        None => "--as NAME",
    };
    format!(
        "run {} needs {} {}approval{} from {} ({} so far{}): `runbook approve {} {how}`",
        plan.run_id,
        rule.required,
        if rule.signers.is_some() {
            "signed "
        } else {
            ""
        },
        if rule.required == 1 { "" } else { "s" },
        rule.from.join(", "),
        counted.valid.len(),
        if counted.ignored.is_empty() {
            String::new()
        } else {
            format!(
                "; not counted: {}",
                counted
                    .ignored
                    .iter()
                    .map(|(who, why)| format!("{who} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        plan.run_id
    )
}
