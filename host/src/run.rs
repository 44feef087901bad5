//! The run as a library, as cargo's `ops` is to its commands: everything
//! between the parsed command line and what is printed. [`prepare`] loads,
//! binds and checks; [`gates`] holds the deploy window, the promotion
//! gate, the lock and the approvals; [`execute`] runs the steps (or plans them, a dry execute);
//! [`record`] keeps the journal, audit log, run index and deployment
//! record; [`resume`] decides how a stopped run goes on; [`worker`] finds
//! the runs whose step waits for its next round, and goes on with them. `exec`, `resume`,
//! `plan` and the tests all come through here, so they run one pipeline.
//! Nothing here touches the terminal: what the operator should see comes
//! back as values, or goes to the [`Interface`] the caller supplies.

pub mod execute;
pub mod gates;
pub mod prepare;
pub mod record;
pub mod resume;
pub mod rollback;
pub mod saved;
pub mod worker;

pub use execute::Connections;
pub use prepare::{Prepared, Secrets, prepare};
pub use record::Finished;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::Ask;
use crate::events::EventSink;
use crate::plugin::PluginRuntime;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a run needs from whoever started it: the CLI supplies one that
/// draws on the terminal, the tests one that records.
pub trait Interface: Send + Sync {
    /// Something the operator should know now: a warning before the run,
    /// or why it waits.
    fn notice(&self, notice: Notice);
    /// Adds the writers that show the run's events as they happen
    /// (progress on stderr, JSON lines on stdout, a test's recorder).
    fn watch(&self, events: &EventSink);
    /// Who ticks a manual step's checklist now; without one, the step
    /// waits for `runbook confirm`.
    fn ask(&self) -> Option<Arc<dyn Ask>>;
}

/// What the operator should know while a run is prepared, or waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A step is granted more than its plugin asks for (the whole line,
    /// with the file and line).
    WiderGrant(String),
    /// Another run holds the lock, and this one waits for it (`--wait-lock`).
    LockHeld(String),
    /// This run's earlier process died holding the lock, and this one takes
    /// it over.
    LockTakenOver {
        /// The dead process.
        pid: u32,
    },
    /// The run waits for approvals (`--wait-approval`): who may give them,
    /// and how. Repeated while it waits.
    AwaitingApprovals(String),
    /// A crash cut the journal's last record short, and it was dropped.
    JournalTornTail,
    /// A crash left a finished run without its deployment record, which is
    /// written now.
    RecordWritten(PathBuf),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::WiderGrant(line) | Notice::LockHeld(line) | Notice::AwaitingApprovals(line) => {
                formatter.write_str(line)
            }
            Notice::LockTakenOver { pid } => write!(
                formatter,
                "taking over the lock that this run's earlier process {pid} left when it died"
            ),
            Notice::JournalTornTail => formatter
                .write_str("the journal's last record was cut short by the crash and was dropped"),
            Notice::RecordWritten(path) => write!(
                formatter,
                "the run's deployment record was missing and is written now: {}",
                path.display()
            ),
        }
    }
}

/// How a run is carried out, whatever started it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where run state goes; `None` for `.runbook/` beside the runbook (a
    /// resumed run keeps the folder it started in).
    pub state_dir: Option<PathBuf>,
    /// The per-user index of runs ([`crate::state::index_dir`]), which
    /// lets `resume`, `approve` and `confirm` find a run from anywhere.
    pub index_dir: PathBuf,
    /// At most this many steps at once (at least one).
    pub parallel: usize,
    /// Why this is an emergency run (`--emergency --reason`), which may
    /// run outside the deploy windows, or without the earlier success its
    /// promotion gate asks for, with the emergency approvers.
    pub emergency: Option<String>,
    /// Wait for the lock when another run holds it, instead of refusing.
    pub wait_lock: bool,
    /// Wait at the approval gate, instead of stopping there.
    pub wait_approval: bool,
    /// The operator's key (`--key`, `$RUNBOOK_SIGNING_KEY`): a private
    /// key file, or a public key whose private half is in ssh-agent. A run
    /// whose approvals name an `allowed_signers` file (and a rollback of
    /// one asked after the end) is signed with it before anything runs,
    /// and refused without it.
    pub signing_key: Option<PathBuf>,
    /// A step's wait this long or longer parks the run: the process ends,
    /// and `runbook worker` or `runbook resume` goes on when it is due.
    /// `Some(ZERO)` parks at the first wait (`--detach`); `None` waits in
    /// this process however long.
    pub park_after: Option<std::time::Duration>,
    /// First interrupt: running steps stop, then the failure policy applies.
    pub cancel: CancellationToken,
    /// Second interrupt: the rollback and `always` steps stop too.
    pub abort: CancellationToken,
    /// Where the host's own AWS calls go (reading secrets from AWS Secrets
    /// Manager before a resumed run's steps) instead of the environment's
    /// `aws_endpoint` (`--aws-endpoint`); steps' calls go where
    /// [`Connections`] says.
    pub aws_endpoint: Option<String>,
}

/// How this process takes part in the run.
pub enum Start {
    /// A new run.
    New,
    /// A later process of a run that stopped ([`resume::prepare`]).
    Resume(Box<resume::Resumption>),
}

/// How a call of [`run`] ended.
#[derive(Debug)]
pub enum Ended {
    /// The run stopped at the approval gate (without
    /// [`Options::wait_approval`]); `resume` continues it.
    AwaitingApprovals {
        /// The run's id.
        run_id: String,
        /// Who may approve it, and how.
        waiting: String,
    },
    /// The run parked before its first step, until its deploy window
    /// opens (`--detach`); `runbook worker` starts it then.
    Parked {
        /// The run's id.
        run_id: String,
        /// When the window opens (RFC 3339).
        until: String,
        /// What it waits for.
        reason: String,
    },
    /// The steps ran: how it went, and what was recorded.
    Ran(Box<Finished>),
}

/// Why a run was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runbook, its bindings, the state of earlier runs or a gate
    /// refuse the run: nothing ran.
    #[error("{0}")]
    Refused(Diagnostics),
    /// The runbook file cannot be read.
    #[error(transparent)]
    Runbook(crate::runbook::LoadError),
    /// The run's journal cannot be opened.
    #[error("cannot open the run journal {}", path.display())]
    Journal {
        /// The journal.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The run's audit log cannot be opened.
    #[error("cannot open the audit log in {}", run_dir.display())]
    AuditLog {
        /// The run's folder.
        run_dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal of the run to resume cannot be read.
    #[error(transparent)]
    JournalRead(crate::journal::JournalError),
    /// The lock cannot be taken or written.
    #[error(transparent)]
    Lock(crate::state::LockError),
    /// The state folder or its backend cannot be used.
    #[error("cannot use the state folder: {0}")]
    State(std::io::Error),
    /// Interrupted (Ctrl-C, SIGTERM) before the first step: no step ran.
    #[error("interrupted before the first step")]
    Interrupted,
    /// A step's parameters cannot be rendered for planning.
    #[error("step `{step}`: {reason}")]
    Render {
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// A refusal with one diagnostic and the hint that says what to do.
    pub fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Refused(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
    }

    /// A state folder or backend that cannot be used: a refusal when it
    /// is how it was named (a variable its URL reads is not set, a folder
    /// that mirrors another backend), else the machine's failure.
    pub fn state(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::InvalidInput {
            Error::refuse(
                error.to_string(),
                "set it in this shell, or pass `--state-dir DIR` (or `--state URL`)",
            )
        } else {
            Error::State(error)
        }
    }
}

impl From<Diagnostics> for Error {
    fn from(diagnostics: Diagnostics) -> Self {
        Error::Refused(diagnostics)
    }
}

impl From<crate::runbook::LoadError> for Error {
    fn from(error: crate::runbook::LoadError) -> Self {
        match error {
            crate::runbook::LoadError::Invalid(diagnostics) => Error::Refused(diagnostics),
            other => Error::Runbook(other),
        }
    }
}

/// Passes the gates, runs the prepared plan and records it: the deploy
/// window, the promotion gate (a new run only), the lock (a resume holds
/// it already), the journal, the approvals, the steps, the deployment
/// record.
pub async fn run(
    runtime: &PluginRuntime,
    prepared: Prepared,
    start: Start,
    connections: Connections,
    options: &Options,
    interface: &dyn Interface,
) -> Result<Ended, Error> {
    let plan = &prepared.plan;
    // A run started with `--emergency` stays one when resumed without it:
    // its approvals come from the emergency approvers. So does a rollback
    // asked with `--emergency`; the deploy's emergency is not its own.
    let emergency = options.emergency.is_some()
        || matches!(&start, Start::Resume(resumption) if resumption.record.approving_as_emergency());
    if options.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    // A rollback asked after the run ended undoes a change: the deploy
    // windows, which hold back changes, do not hold it back.
    let undoing =
        matches!(&start, Start::Resume(resumption) if resumption.record.rollback_request.is_some());
    let closed = if undoing {
        None
    } else {
        gates::window(&prepared, options.emergency.is_some()).err()
    };
    // Closed: refused, unless a new run was asked to park (`--detach`)
    // and the window opens within a year: it then waits for it, as a
    // step waits for its next round.
    let park_for_window = closed.as_ref().filter(|closed| {
        matches!(start, Start::New)
            && options.park_after == Some(std::time::Duration::ZERO)
            && closed.opens_at.is_some()
    });
    if let Some(closed) = &closed
        && park_for_window.is_none()
    {
        return Err(gates::closed(closed));
    }
    // The operator signs the plan before anything is recorded, where the
    // approvals are signed: a new run, or a rollback asked after the end.
    // A resumed run keeps the signature its start recorded.
    let signs_now = match &start {
        Start::New => true,
        Start::Resume(resumption) => resumption.asked.is_some(),
    };
    let operator_signature = if signs_now {
        gates::operator_signature(&prepared, emergency, options)?
    } else {
        None
    };
    // One run per runbook and environment; a resume took the lock before
    // it read the journal, and `start` holds it to the end. A resume
    // passed the promotion gate when its run started.
    let (state_dir, _lock, promotion) = match &start {
        Start::New => {
            let state_dir = crate::state::state_dir(
                &plan.runbook.source.path,
                options.state_dir.as_deref(),
                plan.runbook.state.as_ref(),
            )
            .map_err(Error::state)?;
            let promotion = gates::promotion(&prepared, &state_dir, options.emergency.as_deref())?;
            let lock = gates::take_lock(plan, &state_dir, options, interface).await?;
            (state_dir, Some(lock), promotion)
        }
        Start::Resume(resumption) => (resumption.state_dir.clone(), None, None),
    };
    let lease = match (&start, &_lock) {
        (_, Some(lock)) => lock.lease(),
        (Start::Resume(resumption), None) => resumption.lock().lease(),
        _ => None,
    };
    let recording = record::open(&prepared, &state_dir, &options.index_dir, lease, interface)?;
    let mut earlier = record::start(&recording, &prepared, &start, options);
    if let Some(signature) = operator_signature {
        record::operator_signed(&recording, &prepared, signature.clone());
        earlier.operator_signature = Some(signature);
    }
    if let Some(gate) = promotion {
        record::promotion(&recording, gate);
    }
    if let Some(closed) = park_for_window {
        let until = closed.opens_at.map(|at| at.to_string()).unwrap_or_default();
        let reason = format!(
            "the deploy window, which opens {}",
            closed.next_open.clone().unwrap_or_default()
        );
        record::park(&recording, &until, &reason);
        let run_id = plan.run_id.clone();
        return Ok(Ended::Parked {
            run_id,
            until,
            reason,
        });
    }
    let approved = match gates::approvals(
        &prepared,
        emergency,
        earlier.approvals.clone(),
        earlier.operator_signature.clone(),
        &recording,
        options,
        interface,
    )
    .await?
    {
        gates::Approval::Given(approved) => approved,
        gates::Approval::Waiting(waiting) => {
            record::stop_at_gate(&recording);
            let run_id = plan.run_id.clone();
            return Ok(Ended::AwaitingApprovals { run_id, waiting });
        }
    };
    let report = execute::execute(
        runtime,
        &prepared,
        earlier,
        connections,
        &recording.events,
        options,
        interface,
    )
    .await;
    let finished = record::finish(recording, plan, report, approved, options, &state_dir);
    Ok(Ended::Ran(Box::new(finished)))
}

/// A new run id: UTC time and a random suffix, sortable and unique enough.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S");
    let mut bytes = [0_u8; 3];
    let _ = getrandom::fill(&mut bytes);
    format!("{now}-{}", hex::encode(bytes))
}
