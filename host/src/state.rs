//! Where a runbook's state lives (`.runbook/` beside it): run folders, the
//! index that lets `runbook resume RUN` find a run from anywhere, the lock
//! that allows one run per runbook and environment, and deployment records.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod postgres;
pub mod remote;

pub use remote::{BackendFile, Shared};

/// A runbook's state folder: `--state-dir` when given (a folder, or a
/// backend's URL: then this machine's mirror of it); else the mirror of
/// the backend the runbook's `[state]` names; else `.runbook/` beside it.
pub fn state_dir(
    runbook: &Path,
    given: Option<&Path>,
    backend: Option<&crate::runbook::StateBackend>,
) -> std::io::Result<PathBuf> {
    let backend = backend.map(|backend| BackendFile {
        backend: backend.backend.clone(),
        url: backend.url.clone(),
        lease_seconds: backend.lease.as_secs_f64(),
    });
    if let Some(given) = given {
        return given_dir(given, backend.as_ref());
    }
    if let Some(backend) = &backend {
        // One mirror per database reached, whichever way its URL is read.
        let url = remote::resolve_url(&backend.url)?;
        let dir = remote::mirror_dir(&postgres::shown(&url));
        remote::attach(&dir, backend)?;
        return Ok(dir);
    }
    Ok(runbook
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".runbook"))
}

/// Whether `--state-dir` names a backend rather than a folder.
pub fn is_backend_url(given: &Path) -> bool {
    let text = given.to_string_lossy();
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The folder `--state-dir` names: itself, or the mirror of the backend
/// its URL names (its lease from the runbook's `[state]`, when that names
/// the same backend).
pub fn given_dir(given: &Path, backend: Option<&BackendFile>) -> std::io::Result<PathBuf> {
    if !is_backend_url(given) {
        return Ok(given.to_path_buf());
    }
    let url = given.to_string_lossy().into_owned();
    let file = BackendFile {
        backend: "postgres".into(),
        lease_seconds: backend
            .filter(|backend| backend.url == url)
            .map_or(remote::DEFAULT_LEASE.as_secs_f64(), |backend| {
                backend.lease_seconds
            }),
        url,
    };
    let dir = remote::mirror_dir(&postgres::shown(&file.url));
    remote::attach(&dir, &file)?;
    Ok(dir)
}

/// The shared backend of the state folder a run folder is in
/// (`STATE/runs/RUN` or `STATE/pulled/RUN`), if it has one.
pub fn backend_of_run(run_dir: &Path) -> std::io::Result<Option<Shared>> {
    match run_dir.parent().and_then(Path::parent) {
        Some(state) => remote::of(state),
        None => Ok(None),
    }
}

/// Where a reader of a shared backend keeps its copy of a run:
/// `STATE/pulled/RUN` (the holder's own is `STATE/runs/RUN`, which a
/// reader never writes).
pub fn pulled_dir(state: &Path, run_id: &str) -> PathBuf {
    state.join("pulled").join(run_id)
}

/// A run's folder in a state folder, as it stands: for a shared backend,
/// this machine's copy brought up to date (`STATE/pulled/RUN`); the run
/// folder itself otherwise, or when the backend cannot be reached.
pub fn current_run_dir(state: &Path, run_id: &str) -> PathBuf {
    if let Ok(Some(shared)) = remote::of(state) {
        let pulled = pulled_dir(state, run_id);
        if let Ok(true) = remote::pull_into(&shared, run_id, &pulled) {
            return pulled;
        }
    }
    run_dir(state, run_id)
}

/// Appends one event to a run's journal from a process that does not run
/// it (`approve`, `confirm`; `unlock` holding its lock): for a run of a
/// shared backend, in one transaction after whatever the run's holder
/// committed last, then this machine's copy is brought up to date; else
/// to the file ([`crate::journal::append`], or
/// [`crate::journal::append_as_holder`] with `holding`).
pub fn append_event(
    journal: &Path,
    step: Option<&str>,
    kind: crate::events::EventKind,
    holding: bool,
) -> std::io::Result<()> {
    let run_dir = journal.parent().unwrap_or(Path::new("."));
    let Some(shared) = backend_of_run(run_dir)? else {
        return if holding {
            crate::journal::append_as_holder(journal, step, kind)
        } else {
            crate::journal::append(journal, step, kind)
        };
    };
    let line = crate::journal::line_of(step, kind)?;
    let record = crate::journal::read(journal).map_err(std::io::Error::other)?;
    let run = remote::RunSummary {
        run_id: record.run_id,
        runbook: record.runbook,
        environment: record.environment,
    };
    crate::fault::point("backend.append")?;
    shared.remote.append(&run, vec![line], Vec::new(), None)?;
    remote::pull_into(&shared, &run.run_id, run_dir)?;
    Ok(())
}

/// Brings a run of a shared backend into this machine's mirror for the
/// process that now holds its lock: `STATE/runs/RUN` becomes what the
/// backend holds. Nothing to do for a local state folder.
pub fn adopt(state: &Path, run_id: &str) -> std::io::Result<()> {
    if let Some(shared) = remote::of(state)? {
        remote::pull_into(&shared, run_id, &run_dir(state, run_id))?;
    }
    Ok(())
}

/// A run's folder: `STATE/runs/RUN`.
pub fn run_dir(state: &Path, run_id: &str) -> PathBuf {
    state.join("runs").join(run_id)
}

/// A run's journal.
pub fn journal_path(run_dir: &Path) -> PathBuf {
    run_dir.join("events.jsonl")
}

/// The per-user index of runs: `$RUNBOOK_INDEX_DIR`, else
/// `$XDG_STATE_HOME/runbook/runs`, else `~/.local/state/runbook/runs`.
pub fn index_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNBOOK_INDEX_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("runbook").join("runs")
}

/// Remembers where a run's folder is, in the index `dir` (usually
/// [`index_dir`]), so that `resume`, `approve` and `confirm` find it from
/// any directory. Best effort: without it, they search the current
/// directory.
pub fn index_run(dir: &Path, run_id: &str, run_dir: &Path) {
    let absolute = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = write_atomically(
            &dir.join(run_id),
            absolute.display().to_string().as_bytes(),
            "index.write",
        );
    }
}

/// Why a run could not be found.
#[derive(Debug, thiserror::Error)]
#[error("no run `{run_id}` found (looked in {})", .searched.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "))]
pub struct RunNotFound {
    /// The id asked for.
    pub run_id: String,
    /// Where it looked.
    pub searched: Vec<PathBuf>,
}

/// Finds a run's folder: in `--state-dir`, the index, or `.runbook/` folders
/// in and below the current directory.
pub fn find_run(run_id: &str, state: Option<&Path>) -> Result<PathBuf, RunNotFound> {
    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    if let Some(state) = state {
        let state = given_dir(state, None).unwrap_or_else(|_| state.to_path_buf());
        // A shared backend answers for its runs, wherever they started.
        if let Ok(Some(shared)) = remote::of(&state) {
            let pulled = pulled_dir(&state, run_id);
            match remote::pull_into(&shared, run_id, &pulled) {
                Ok(true) => return Ok(pulled),
                Ok(false) => searched.push(PathBuf::from(shared.remote.describe())),
                Err(error) => searched.push(PathBuf::from(format!(
                    "{} ({error})",
                    shared.remote.describe()
                ))),
            }
        }
        candidates.push(run_dir(&state, run_id));
    }
    if let Ok(indexed) = std::fs::read_to_string(index_dir().join(run_id)) {
        candidates.push(PathBuf::from(indexed.trim()));
    }
    candidates.push(run_dir(Path::new(".runbook"), run_id));
    for level in [".", "*"] {
        let pattern = Path::new(level);
        if let Ok(entries) = std::fs::read_dir(pattern) {
            for entry in entries.flatten() {
                let dir = entry.path();
                if dir.is_dir() {
                    candidates.push(run_dir(&dir.join(".runbook"), run_id));
                }
            }
        }
    }
    for candidate in candidates {
        if journal_path(&candidate).exists() {
            // A copy of a shared backend's run: read it afresh.
            if let Some(state) = candidate.parent().and_then(Path::parent)
                && let Ok(Some(shared)) = remote::of(state)
            {
                let pulled = pulled_dir(state, run_id);
                if let Ok(true) = remote::pull_into(&shared, run_id, &pulled) {
                    return Ok(pulled);
                }
            }
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    searched.truncate(4);
    Err(RunNotFound {
        run_id: run_id.to_owned(),
        searched,
    })
}

/// Every run in a state folder, newest first. For a shared backend,
/// every run it holds, each brought up to date in `STATE/pulled/`.
pub fn list_runs(state: &Path) -> Vec<PathBuf> {
    let state = &given_dir(state, None).unwrap_or_else(|_| state.to_path_buf());
    if let Ok(Some(shared)) = remote::of(state) {
        return list_shared_runs(state, &shared).unwrap_or_default();
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| journal_path(path).exists())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs.reverse();
    runs
}

fn list_shared_runs(state: &Path, shared: &Shared) -> std::io::Result<Vec<PathBuf>> {
    let mut runs = Vec::new();
    for (summary, counts) in shared.remote.runs()? {
        let dir = pulled_dir(state, &summary.run_id);
        let counted = dir.join("lines");
        let known = std::fs::read_to_string(&counted).unwrap_or_default();
        let current = format!("{} {}", counts.0, counts.1);
        if known.trim() != current || !journal_path(&dir).exists() {
            remote::pull_into(shared, &summary.run_id, &dir)?;
            let _ = std::fs::write(&counted, &current);
        }
        runs.push(dir);
    }
    runs.sort();
    runs.reverse();
    Ok(runs)
}

/// Who holds a runbook's lock for an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    /// The run.
    pub run_id: String,
    /// Who started it.
    pub operator: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// The process holding it.
    pub pid: u32,
    /// The machine.
    pub host: String,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{}", describe_holder(.0.as_ref()))]
    Held(Option<LockHolder>),
    /// The lock file could not be opened or written.
    #[error("cannot write the lock file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shared backend could not be asked.
    #[error("cannot take the lock `{key}` in the state backend")]
    Backend {
        /// The lock.
        key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn describe_holder(holder: Option<&LockHolder>) -> String {
    match holder {
        Some(holder) => format!(
            "run {} by {} holds the lock for this runbook and environment since {} (process {} on {})",
            holder.run_id, holder.operator, holder.since, holder.pid, holder.host
        ),
        None => "another process is taking the lock for this runbook and environment".into(),
    }
}

/// One run per (runbook, environment). In a local state folder the lock
/// is an `flock` on `STATE/locks/RUNBOOK@ENV.lock`, held for the life of
/// the process: the kernel releases it when the process ends, however it
/// ends, and two processes can never both hold it. The file's text names
/// the last holder (for messages, and so that the next run sees a run
/// that died unfinished); it is written after the lock is taken and stays
/// when the lock is released: whether that run is over is its journal's
/// to say. The file itself is never removed, so every process locks the
/// same file.
///
/// With a shared backend the lock is a lease of the same name
/// ([`remote::Lease`]): renewed while the process lives, expired when it
/// died, paused or lost the backend for longer than the lease lasts, and
/// each taking a greater fencing token that the run's writes carry.
#[derive(Debug)]
pub struct RunLock {
    held: Held,
    left: Option<LockHolder>,
}

#[derive(Debug)]
enum Held {
    File(std::fs::File),
    Lease(remote::Lease),
}

/// The lock file of a runbook and environment.
pub fn lock_path(state: &Path, runbook: &str, environment: Option<&str>) -> PathBuf {
    state.join("locks").join(format!(
        "{runbook}@{}.lock",
        environment.unwrap_or("default")
    ))
}

/// Who holds a lock, or who last held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// A live process holds it (its holder, when it has written its name).
    Held(Option<LockHolder>),
    /// Free; a process that died holding it left its name behind.
    Free(Option<LockHolder>),
}

/// The shared backend of a lock file's state folder, and the lease's key.
fn shared_lock(path: &Path) -> Result<Option<(Shared, String)>, LockError> {
    let key = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    match path.parent().and_then(Path::parent).map(remote::of) {
        Some(Ok(Some(shared))) => Ok(Some((shared, key))),
        Some(Err(source)) => Err(LockError::Backend { key, source }),
        _ => Ok(None),
    }
}

impl RunLock {
    /// Takes the lock, or says who holds it. The caller then looks at
    /// [`RunLock::left_by`] (a run that died holding it) and writes its
    /// own name with [`RunLock::claim`].
    pub fn acquire(path: &Path) -> Result<RunLock, LockError> {
        if let Some((shared, key)) = shared_lock(path)? {
            let backend = |source| LockError::Backend {
                key: key.clone(),
                source,
            };
            crate::fault::point("lock.take").map_err(backend)?;
            return match shared.remote.acquire(&key, shared.lease).map_err(backend)? {
                remote::LeaseTaken::Taken { token, left } => Ok(RunLock {
                    held: Held::Lease(remote::Lease::hold(shared, &key, token)),
                    left,
                }),
                remote::LeaseTaken::Held(mut holder) => {
                    // The holder names itself just after it takes the
                    // lease: give it a moment, for the message.
                    for _ in 0..20 {
                        if holder.is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        holder = match shared.remote.peek(&key) {
                            Ok(LockState::Held(holder)) => holder,
                            _ => break,
                        };
                    }
                    Err(LockError::Held(holder))
                }
            };
        }
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its name just after it takes the lock:
                // give it a moment, for the message.
                let mut holder = Self::read_holder(path);
                for _ in 0..20 {
                    if holder.is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    holder = Self::read_holder(path);
                }
                return Err(LockError::Held(holder));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        Ok(RunLock {
            left: Self::read_holder(path),
            held: Held::File(file),
        })
    }

    /// The last holder's name, left when its process released the lock or
    /// died: the caller asks that run's journal whether it is over.
    pub fn left_by(&self) -> Option<&LockHolder> {
        self.left.as_ref()
    }

    /// The lease, when the lock is one of a shared backend.
    pub fn lease(&self) -> Option<&remote::Lease> {
        match &self.held {
            Held::Lease(lease) => Some(lease),
            Held::File(_) => None,
        }
    }

    /// Writes who holds the lock, for the messages of those who wait.
    pub fn claim(&mut self, holder: &LockHolder) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        crate::fault::point("lock.write")?;
        match &mut self.held {
            Held::Lease(lease) => {
                if !lease.shared().remote.claim(lease.fence(), holder)? {
                    return Err(std::io::Error::other(
                        "the lease was lost before its holder could be named",
                    ));
                }
            }
            Held::File(file) => {
                let text = serde_json::to_string_pretty(holder).map_err(std::io::Error::other)?;
                file.set_len(0)?;
                file.rewind()?;
                file.write_all(text.as_bytes())?;
                file.sync_data()?;
            }
        }
        self.left = None;
        Ok(())
    }

    /// Empties the holder's name while still holding the lock: what
    /// `unlock` does with the name a dead process left.
    pub fn clear(&mut self) -> std::io::Result<()> {
        match &mut self.held {
            Held::Lease(lease) => lease.shared().remote.clear(lease.fence())?,
            Held::File(file) => {
                file.set_len(0)?;
                file.sync_data()?;
            }
        }
        self.left = None;
        Ok(())
    }

    /// Whether the lock at `path` is held, and by whom.
    pub fn state(path: &Path) -> Result<LockState, LockError> {
        if let Some((shared, key)) = shared_lock(path)? {
            return shared
                .remote
                .peek(&key)
                .map_err(|source| LockError::Backend { key, source });
        }
        if !path.exists() {
            return Ok(LockState::Free(None));
        }
        match Self::acquire(path) {
            Ok(lock) => Ok(LockState::Free(lock.left.clone())),
            Err(LockError::Held(holder)) => Ok(LockState::Held(holder)),
            Err(error) => Err(error),
        }
    }

    fn read_holder(path: &Path) -> Option<LockHolder> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// The record of one deployment, in the shape the source runbooks keep by
/// hand, written to `.runbook/deployments/RUN.json`. The promotion gate
/// reads them back ([`read_records`]): a record says which runbook ran in
/// which environment, with which parameters, how it ended and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// When the run started.
    pub timestamp: String,
    /// When it ended.
    pub finished: String,
    /// The runbook's name.
    pub runbook: String,
    /// The environment.
    pub environment: Option<String>,
    /// `params.version`, when the runbook has one.
    pub version: Option<String>,
    /// `params.commit`, when the runbook has one.
    pub commit: Option<String>,
    /// `params.strategy`, when the runbook has one.
    pub strategy: Option<String>,
    /// Every parameter's value, as JSON of its type (a string for a
    /// parameter without `type`). Records written before it was kept have
    /// none; [`read_records`] then takes `version`, `commit` and
    /// `strategy`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Who ran it.
    pub operator: String,
    /// Who approved it (principals, where approvals are signed).
    pub approvals: Vec<String>,
    /// The approvals were counted without signatures (`--as`): who
    /// approved is self-declared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned_approvals: bool,
    /// Where the environment takes only signed approvals: the operator's
    /// signature of the plan, then each counted approver's, as evidence
    /// `runbook audit verify` checks again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<crate::events::SignatureRecord>,
    /// How it ended: `succeeded`, `failed`, ...; `rolled_back` once a
    /// later rollback undid it.
    pub status: String,
    /// Whether an emergency override was used, and why.
    pub emergency: Option<String>,
    /// The run.
    pub run_id: String,
    /// The run's journal: the verification logs.
    pub logs: String,
    /// Each step: id, status, summary, whether it was rolled back.
    pub steps: Vec<serde_json::Value>,
    /// When the run was rolled back after it ended (`runbook rollback`):
    /// who asked, when, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackAsked>,
}

/// A rollback asked for after a run ended, in its deployment record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackAsked {
    /// Who asked.
    pub operator: String,
    /// When.
    pub asked: String,
    /// The steps undone, newest first.
    pub steps: Vec<String>,
    /// Who approved the rollback.
    pub approvals: Vec<String>,
    /// The rollback's approvals were counted without signatures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned_approvals: bool,
    /// The signatures of the rollback: its operator's, then each counted
    /// approver's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<crate::events::SignatureRecord>,
    /// Why, when it was an emergency (past the `rollback_window`).
    pub emergency: Option<String>,
    /// The later run it went over with `--force`.
    pub forced_over: Option<String>,
}

impl DeploymentRecord {
    /// The record of a finished run, rebuilt from its journal.
    pub fn from_journal(record: &crate::journal::RunRecord, journal: &Path) -> Self {
        // A rollback's approvals are its own (below); the others are the
        // run's. Rebuilt from the journal, its signatures are as recorded
        // (the gate checked them when it counted).
        let of_rollback = |approval: &&crate::journal::Approval| {
            record
                .rollback_request
                .as_ref()
                .is_some_and(|asked| asked.plan_hash == approval.plan_hash)
        };
        let (rollback_approvals, run_approvals): (Vec<&crate::journal::Approval>, Vec<_>) =
            record.approvals.iter().partition(of_rollback);
        let signatures = |approvals: &[&crate::journal::Approval], operator: bool| {
            let operator = operator
                .then_some(record.operator_signature.as_ref())
                .flatten();
            operator
                .into_iter()
                .chain(
                    approvals
                        .iter()
                        .filter_map(|approval| approval.signature.as_ref()),
                )
                .cloned()
                .collect::<Vec<_>>()
        };
        let unsigned = |approvals: &[&crate::journal::Approval]| {
            approvals
                .iter()
                .any(|approval| approval.signature.is_none())
        };
        DeploymentRecord {
            timestamp: record.started.clone(),
            finished: record.finished_at.clone(),
            runbook: record.runbook.clone(),
            environment: record.environment.clone(),
            version: record.params.get("version").map(crate::template::as_text),
            commit: record.params.get("commit").map(crate::template::as_text),
            strategy: record.params.get("strategy").map(crate::template::as_text),
            params: record.params.clone(),
            operator: record.operator.clone(),
            approvals: run_approvals
                .iter()
                .map(|approval| approval.by.clone())
                .collect(),
            unsigned_approvals: unsigned(&run_approvals),
            signatures: signatures(&run_approvals, record.rollback_request.is_none()),
            status: record
                .finished
                .map_or("unknown", |status| status.as_str())
                .to_owned(),
            emergency: record.emergency.clone(),
            run_id: record.run_id.clone(),
            logs: journal.display().to_string(),
            steps: record
                .order
                .iter()
                .map(|id| {
                    let step = &record.steps[id];
                    serde_json::json!({
                        "id": id,
                        "status": step.status.map(|status| status.as_str()),
                        "summary": step.summary,
                        "rolled_back": step.rolled_back,
                    })
                })
                .collect(),
            rollback: record.rollback_request.as_ref().map(|asked| RollbackAsked {
                operator: asked.operator.clone(),
                asked: asked.time.clone(),
                steps: asked.steps.clone(),
                approvals: rollback_approvals
                    .iter()
                    .map(|approval| approval.by.clone())
                    .collect(),
                unsigned_approvals: unsigned(&rollback_approvals),
                signatures: signatures(&rollback_approvals, true),
                emergency: asked.emergency.clone(),
                forced_over: asked.forced_over.clone(),
            }),
        }
    }

    /// Whether the run was undone after it ended: its status says so, or
    /// one of its steps was rolled back (a step that ran again after its
    /// rollback is not). A run that failed and rolled back has failed too.
    pub fn rolled_back(&self) -> bool {
        self.status == "rolled_back"
            || self.steps.iter().any(|step| {
                step.get("rolled_back")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            })
    }
}

/// The deployment records of a state folder that can be read, and the
/// files that cannot (damaged, or not a record).
pub fn read_records(state: &Path) -> (Vec<DeploymentRecord>, Vec<PathBuf>) {
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    let texts: Vec<(PathBuf, Option<String>)> = match remote::of(state) {
        Ok(Some(shared)) => match shared.remote.records() {
            Ok(records) => records
                .into_iter()
                .map(|(run_id, text)| {
                    (
                        PathBuf::from(format!("{}#{run_id}", shared.remote.describe())),
                        Some(text),
                    )
                })
                .collect(),
            Err(error) => {
                unreadable.push(PathBuf::from(format!(
                    "{} ({error})",
                    shared.remote.describe()
                )));
                return (records, unreadable);
            }
        },
        Err(error) => {
            unreadable.push(PathBuf::from(format!("{} ({error})", state.display())));
            return (records, unreadable);
        }
        Ok(None) => {
            let Ok(entries) = std::fs::read_dir(state.join("deployments")) else {
                return (records, unreadable);
            };
            entries
                .flatten()
                .map(|entry| entry.path())
                // Not a temporary file of a write in progress, nor another's.
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "json")
                })
                .map(|path| {
                    let text = std::fs::read_to_string(&path).ok();
                    (path, text)
                })
                .collect()
        }
    };
    for (path, text) in texts {
        let parsed = text.and_then(|text| serde_json::from_str::<DeploymentRecord>(&text).ok());
        match parsed {
            Some(mut record) => {
                if record.params.is_empty() {
                    let known = [
                        ("version", &record.version),
                        ("commit", &record.commit),
                        ("strategy", &record.strategy),
                    ];
                    record.params = known
                        .into_iter()
                        .filter_map(|(key, value)| {
                            Some((key.to_owned(), serde_json::Value::String(value.clone()?)))
                        })
                        .collect();
                }
                records.push(record);
            }
            None => unreadable.push(path),
        }
    }
    (records, unreadable)
}

/// Writes a deployment record; returns its path.
pub fn write_record(state: &Path, record: &DeploymentRecord) -> std::io::Result<PathBuf> {
    let dir = state.join("deployments");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", record.run_id));
    let text = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    if let Some(shared) = remote::of(state)? {
        crate::fault::point("record.write")?;
        shared.remote.put_record(&record.run_id, text.clone())?;
    }
    write_atomically(&path, text.as_bytes(), "record.write")?;
    Ok(path)
}

/// The deployment record of one run, as written (its status, for a
/// resumed run whose record a crash may have left stale).
pub fn read_record(state: &Path, run_id: &str) -> Option<serde_json::Value> {
    let text = match remote::of(state) {
        Ok(Some(shared)) => shared.remote.record(run_id).ok()??,
        Ok(None) => {
            std::fs::read_to_string(state.join("deployments").join(format!("{run_id}.json")))
                .ok()?
        }
        Err(_) => return None,
    };
    serde_json::from_str(&text).ok()
}

/// Writes a whole file or nothing: a temporary file beside it, fsync'd,
/// then renamed over it. A crash leaves the old file or the new one,
/// never half of one. `point` names its failpoint.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    point: &'static str,
) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        crate::fault::point(point)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32) -> LockHolder {
        LockHolder {
            run_id: "r1".into(),
            operator: "alice".into(),
            since: "2026-11-22T10:00:00Z".into(),
            pid,
            host: hostname(),
        }
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "api", Some("prod"));
        let mut first = RunLock::acquire(&path).unwrap();
        first.claim(&holder(std::process::id())).unwrap();
        match RunLock::acquire(&path) {
            Err(LockError::Held(Some(current))) => assert_eq!(current.operator, "alice"),
            other => panic!("expected held, got {other:?}"),
        }
        drop(first);
        let second = RunLock::acquire(&path).unwrap();
        assert_eq!(
            second.left_by().map(|holder| holder.operator.as_str()),
            Some("alice"),
            "the last holder's name stays, for the next run to ask its journal"
        );
    }

    #[test]
    fn a_lock_whose_holder_died_is_free_and_names_the_dead_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "api", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string(&holder(999_999_999)).unwrap()).unwrap();
        let lock = RunLock::acquire(&path).unwrap();
        assert_eq!(lock.left_by().map(|holder| holder.pid), Some(999_999_999));
    }

    #[test]
    fn records_are_read_back_with_their_params_and_older_ones_from_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = DeploymentRecord::from_journal(
            &crate::journal::RunRecord {
                run_id: "new".into(),
                runbook: "api".into(),
                params: [("version".to_owned(), serde_json::Value::from("1.2.3"))].into(),
                ..Default::default()
            },
            Path::new("events.jsonl"),
        );
        write_record(dir.path(), &record).unwrap();
        // A record written before `params` was kept.
        record.run_id = "old".into();
        record.version = Some("1.0.0".into());
        let mut old = serde_json::to_value(&record).unwrap();
        old.as_object_mut().unwrap().remove("params");
        let deployments = dir.path().join("deployments");
        std::fs::write(deployments.join("old.json"), old.to_string()).unwrap();
        std::fs::write(deployments.join("torn.json"), "{\"run_id\": ").unwrap();
        std::fs::write(deployments.join("x.tmp-1"), "{").unwrap();
        let (mut records, unreadable) = read_records(dir.path());
        records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(records[0].params["version"], "1.2.3");
        assert_eq!(records[1].params["version"], "1.0.0");
        assert_eq!(unreadable, [deployments.join("torn.json")]);
    }

    #[test]
    fn a_record_is_rolled_back_by_its_status_or_a_step_rolled_back() {
        let mut record = DeploymentRecord::from_journal(
            &crate::journal::RunRecord::default(),
            Path::new("events.jsonl"),
        );
        record.status = "succeeded".into();
        record.steps = vec![serde_json::json!({"id": "a", "rolled_back": false})];
        assert!(!record.rolled_back());
        record.steps = vec![serde_json::json!({"id": "a", "rolled_back": true})];
        assert!(record.rolled_back());
        record.steps.clear();
        record.status = "rolled_back".into();
        assert!(record.rolled_back());
    }

    #[test]
    fn an_empty_or_torn_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "api", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for text in ["", "{\"run_id\": \"r"] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(RunLock::state(&path).unwrap(), LockState::Free(None));
            let mut lock = RunLock::acquire(&path).unwrap();
            lock.claim(&holder(1)).unwrap();
        }
    }
}
