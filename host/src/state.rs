//! Where a runbook's state lives (`.runbook/` beside it): run folders, the
//! index that lets `runbook resume RUN` find a run from anywhere, the lock
//! that allows one run per runbook and environment, and deployment records.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A runbook's state folder: `.runbook/` beside it, unless given.
pub fn state_dir(runbook: &Path, given: Option<&Path>) -> PathBuf {
    match given {
        Some(dir) => dir.to_path_buf(),
        None => runbook
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(".runbook"),
    }
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

/// Remembers where a run's folder is, so that `resume`, `approve` and
/// `confirm` find it from any directory. Best effort: without it, they
/// search the current directory.
pub fn index_run(run_id: &str, run_dir: &Path) {
    let dir = index_dir();
    let absolute = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(run_id), absolute.display().to_string());
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
        candidates.push(run_dir(state, run_id));
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

/// Every run in a state folder, newest first.
pub fn list_runs(state: &Path) -> Vec<PathBuf> {
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
    /// Another live run holds it.
    #[error("run {} by {} holds the lock for this runbook and environment since {} (process {} on {})", .0.run_id, .0.operator, .0.since, .0.pid, .0.host)]
    Held(LockHolder),
    /// A run that died left it.
    #[error("run {} by {} left the lock since {}, and its process {} is gone", .0.run_id, .0.operator, .0.since, .0.pid)]
    Stale(LockHolder),
    /// The lock file could not be written.
    #[error("cannot write the lock file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One run per (runbook, environment): held while the run goes, released on drop.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// The lock file of a runbook and environment.
pub fn lock_path(state: &Path, runbook: &str, environment: Option<&str>) -> PathBuf {
    state.join("locks").join(format!(
        "{runbook}@{}.lock",
        environment.unwrap_or("default")
    ))
}

impl RunLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(path: &Path, holder: &LockHolder) -> Result<RunLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(holder).unwrap_or_default();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok(RunLock {
                    path: path.to_path_buf(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let current = Self::holder(path).unwrap_or(LockHolder {
                    run_id: "unknown".into(),
                    operator: "unknown".into(),
                    since: "unknown".into(),
                    pid: 0,
                    host: "unknown".into(),
                });
                if current.host == hostname() && !process_alive(current.pid) {
                    Err(LockError::Stale(current))
                } else {
                    Err(LockError::Held(current))
                }
            }
            Err(error) => Err(io(error)),
        }
    }

    /// Who holds the lock at `path`, if anyone.
    pub fn holder(path: &Path) -> Option<LockHolder> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Removes a lock left by a dead process (`runbook unlock`).
    pub fn break_stale(path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a process still runs (Linux: its /proc entry exists).
pub fn process_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// The record of one deployment, in the shape the source runbooks keep by
/// hand, written to `.runbook/deployments/RUN.json`.
#[derive(Debug, Clone, Serialize)]
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
    /// Who ran it.
    pub operator: String,
    /// Who approved it.
    pub approvals: Vec<String>,
    /// How it ended.
    pub status: String,
    /// Whether an emergency override was used, and why.
    pub emergency: Option<String>,
    /// The run.
    pub run_id: String,
    /// The run's journal: the verification logs.
    pub logs: String,
    /// Each step: id, status, summary.
    pub steps: Vec<serde_json::Value>,
}

impl DeploymentRecord {
    /// The record of a finished run, rebuilt from its journal.
    pub fn from_journal(record: &crate::journal::RunRecord, journal: &Path) -> Self {
        DeploymentRecord {
            timestamp: record.started.clone(),
            finished: record
                .events
                .iter()
                .rev()
                .find(|event| {
                    event.get("event").and_then(|kind| kind.as_str()) == Some("run_finished")
                })
                .and_then(|event| event.get("time").and_then(|time| time.as_str()))
                .unwrap_or_default()
                .to_owned(),
            runbook: record.runbook.clone(),
            environment: record.environment.clone(),
            version: record.params.get("version").cloned(),
            commit: record.params.get("commit").cloned(),
            strategy: record.params.get("strategy").cloned(),
            operator: record.operator.clone(),
            approvals: record
                .approvals
                .iter()
                .map(|(who, _)| who.clone())
                .collect(),
            status: record
                .finished
                .map_or("unknown", |status| status.as_str())
                .to_owned(),
            emergency: None,
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
        }
    }
}

/// Writes a deployment record; returns its path.
pub fn write_record(state: &Path, record: &DeploymentRecord) -> std::io::Result<PathBuf> {
    let dir = state.join("deployments");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", record.run_id));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(record).map_err(std::io::Error::other)?,
    )?;
    Ok(path)
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
        let first = RunLock::acquire(&path, &holder(std::process::id())).unwrap();
        match RunLock::acquire(&path, &holder(std::process::id())) {
            Err(LockError::Held(current)) => assert_eq!(current.operator, "alice"),
            other => panic!("expected held, got {other:?}"),
        }
        drop(first);
        assert!(RunLock::acquire(&path, &holder(std::process::id())).is_ok());
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_reported_stale_not_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "api", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string(&holder(999_999_999)).unwrap()).unwrap();
        assert!(matches!(
            RunLock::acquire(&path, &holder(1)),
            Err(LockError::Stale(_))
        ));
        assert!(path.exists(), "a stale lock must be broken explicitly");
    }
}
