//! A shared state backend, and the local folder that mirrors it.
//!
//! Every process works in a state folder (`.runbook/`, or the mirror of a
//! backend). With the `local` backend the folder is the state. With a
//! shared backend ([`Remote`]; PostgreSQL today) the backend is: the
//! folder holds a `backend.json` naming it, the run the process holds, and
//! copies of the others, pulled when they are read. What a shared backend
//! keeps:
//!
//! - each run's journal and audit lines, appended by the lock's holder
//!   with its fencing token ([`Mirror`], a writer beside the journal: every
//!   line the run makes durable is committed there before the run goes
//!   on), and by anyone for approvals, confirmations and decisions
//!   ([`Remote::append`] without a fence);
//! - the locks, as leases that a holder renews ([`Lease`]) and that expire
//!   when it dies, each taking a new fencing token;
//! - the deployment records that the promotion gate reads.

use super::{LockHolder, LockState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A run, as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Its id.
    pub run_id: String,
    /// Its runbook's name.
    pub runbook: String,
    /// Its environment.
    pub environment: Option<String>,
}

/// A run's lines from a position on.
#[derive(Debug, Clone)]
pub struct RunLines {
    /// Which run.
    pub summary: RunSummary,
    /// Its journal's lines.
    pub journal: Vec<String>,
    /// Its audit log's lines.
    pub audit: Vec<String>,
}

/// The proof that a process holds a lock: its key and the token the
/// backend gave when it was taken. A later holder has a greater token;
/// writes with an older one are refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// The lock (`RUNBOOK@ENV`).
    pub key: String,
    /// The fencing token.
    pub token: i64,
    /// How long the lease lasts without renewal.
    pub ttl: Duration,
}

/// The answer to taking a lease.
#[derive(Debug, Clone)]
pub enum LeaseTaken {
    /// Taken, with its fencing token; `left` names the previous holder.
    Taken {
        /// The fencing token.
        token: i64,
        /// Who held it before (released, or expired).
        left: Option<LockHolder>,
    },
    /// Another's lease is live.
    Held(Option<LockHolder>),
}

/// What a shared state backend does. Every method is one transaction.
pub trait Remote: Send + Sync {
    /// Where it is, without its password.
    fn describe(&self) -> String;
    /// Takes the lease `key` for `ttl` unless a live one is held.
    fn acquire(&self, key: &str, ttl: Duration) -> std::io::Result<LeaseTaken>;
    /// Names the holder; false when the lease was lost meanwhile.
    fn claim(&self, fence: &Fence, holder: &LockHolder) -> std::io::Result<bool>;
    /// Extends the lease; false when it was lost.
    fn renew(&self, fence: &Fence, ttl: Duration) -> std::io::Result<bool>;
    /// Ends the lease (the holder's name stays, for the next to read).
    fn release(&self, fence: &Fence) -> std::io::Result<()>;
    /// Forgets the holder's name, holding the lease (`runbook unlock`).
    fn clear(&self, fence: &Fence) -> std::io::Result<()>;
    /// Who holds `key`, or last held it.
    fn peek(&self, key: &str) -> std::io::Result<LockState>;
    /// Appends lines to a run, in one transaction; with a fence, only
    /// while that lease is live.
    fn append(
        &self,
        run: &RunSummary,
        journal: Vec<String>,
        audit: Vec<String>,
        fence: Option<&Fence>,
    ) -> std::io::Result<()>;
    /// A run's lines from the given (journal, audit) positions on; `None`
    /// when the backend has no such run.
    fn pull(&self, run_id: &str, from: (usize, usize)) -> std::io::Result<Option<RunLines>>;
    /// Every run with its (journal, audit) line counts.
    fn runs(&self) -> std::io::Result<Vec<(RunSummary, (usize, usize))>>;
    /// Writes a deployment record (JSON).
    fn put_record(&self, run_id: &str, record: String) -> std::io::Result<()>;
    /// Every deployment record: (run, JSON).
    fn records(&self) -> std::io::Result<Vec<(String, String)>>;
    /// One run's deployment record (JSON), when it has one.
    fn record(&self, run_id: &str) -> std::io::Result<Option<String>>;
}

/// A state folder's `backend.json`: which backend it mirrors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendFile {
    /// `postgres`.
    pub backend: String,
    /// The URL, with `${{ env.NAME }}` and `${{ secrets.NAME }}` parts
    /// left as written: each process reads them from its own environment,
    /// and no password is written here.
    pub url: String,
    /// How long a lease lasts without renewal, in seconds.
    pub lease_seconds: f64,
}

/// The name of a mirror's backend file.
pub const BACKEND_FILE: &str = "backend.json";

/// The default lease: long enough that a busy machine renews it in time
/// (every third of it), short enough that a dead holder's run can be
/// taken over soon.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A connected backend and its lease length.
#[derive(Clone)]
pub struct Shared {
    /// The connection.
    pub remote: Arc<dyn Remote>,
    /// How long a lease lasts.
    pub lease: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shared")
            .field("remote", &self.remote.describe())
            .field("lease", &self.lease)
            .finish()
    }
}

/// Fills the `${{ env.NAME }}` and `${{ secrets.NAME }}` parts of a
/// backend URL from the environment (a secret's value is its variable's,
/// as for steps).
pub fn resolve_url(url: &str) -> Result<String, std::io::Error> {
    let pattern = regex::Regex::new(r"\$\{\{\s*(env|secrets)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
        .expect("a valid pattern");
    let mut missing = Vec::new();
    let resolved = pattern.replace_all(url, |captures: &regex::Captures| {
        let name = &captures[2];
        match std::env::var(name) {
            Ok(value) if &captures[1] == "secrets" => {
                percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            }
            Ok(value) => value,
            Err(_) => {
                missing.push(format!("{}.{name}", &captures[1]));
                String::new()
            }
        }
    });
    if missing.is_empty() {
        Ok(resolved.into_owned())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the state backend's URL reads {}, which this shell's environment does not set",
                missing.join(", ")
            ),
        ))
    }
}

/// Connects to the backend a `backend.json` names (once per process and
/// URL).
pub fn connect(file: &BackendFile) -> std::io::Result<Shared> {
    static CONNECTED: OnceLock<Mutex<BTreeMap<String, Arc<dyn Remote>>>> = OnceLock::new();
    let lease = Duration::from_secs_f64(file.lease_seconds.max(1.0));
    let mut connected = CONNECTED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(remote) = connected.get(&file.url) {
        return Ok(Shared {
            remote: remote.clone(),
            lease,
        });
    }
    let remote: Arc<dyn Remote> = match file.backend.as_str() {
        "postgres" => {
            let url = resolve_url(&file.url)?;
            Arc::new(super::postgres::Postgres::new(&url, None)?)
        }
        other => {
            return Err(std::io::Error::other(format!(
                "unknown state backend `{other}` (known: local, postgres)"
            )));
        }
    };
    connected.insert(file.url.clone(), remote.clone());
    Ok(Shared { remote, lease })
}

/// The backend a state folder mirrors, when it mirrors one: `Ok(None)` for
/// a local state folder.
pub fn of(state: &Path) -> std::io::Result<Option<Shared>> {
    let path = state.join(BACKEND_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let file: BackendFile = serde_json::from_str(&text).map_err(|error| {
        std::io::Error::other(format!("{} is not a backend file: {error}", path.display()))
    })?;
    connect(&file).map(Some)
}

/// The mirror folder of a backend on this machine:
/// `$XDG_CACHE_HOME/runbook/state/HASH` (else `~/.cache/...`), one per
/// URL as written.
pub fn mirror_dir(url: &str) -> PathBuf {
    use sha2::Digest;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let hash = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    base.join("runbook").join("state").join(&hash[..16])
}

/// Makes `state` the mirror of `file`'s backend (writes its
/// `backend.json`), refusing a folder that mirrors another or holds local
/// runs of its own.
pub fn attach(state: &Path, file: &BackendFile) -> std::io::Result<()> {
    let path = state.join(BACKEND_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(existing) = serde_json::from_str::<BackendFile>(&text)
            && existing.backend == file.backend
            && same_database(&existing.url, &file.url)
        {
            if existing.lease_seconds != file.lease_seconds && existing.url == file.url {
                // A new lease length: the runbook's word is the latest.
                super::write_atomically(&path, &to_json(file)?, "backend.write")?;
            }
            return Ok(());
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the state folder {} mirrors another backend ({}); pass another `--state-dir`",
                state.display(),
                text.trim()
            ),
        ));
    }
    std::fs::create_dir_all(state)?;
    if state.join("runs").is_dir() || state.join("deployments").is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the state folder {} holds local runs: copy them into the backend with `runbook state migrate --from {} --to URL`, or pass another `--state-dir`",
                state.display(),
                state.display()
            ),
        ));
    }
    super::write_atomically(&path, &to_json(file)?, "backend.write")
}

/// Whether two URLs as written reach the same database.
fn same_database(one: &str, other: &str) -> bool {
    one == other
        || matches!(
            (resolve_url(one), resolve_url(other)),
            (Ok(one), Ok(other)) if super::postgres::shown(&one) == super::postgres::shown(&other)
        )
}

fn to_json(file: &BackendFile) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(file).map_err(std::io::Error::other)
}

/// A lease held on a shared backend, renewed by a thread every third of
/// its length until it is dropped (released) or lost.
pub struct Lease {
    shared: Shared,
    fence: Fence,
    lost: Arc<AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Lease")
            .field("fence", &self.fence)
            .finish()
    }
}

impl Lease {
    /// Starts renewing a lease just taken.
    pub fn hold(shared: Shared, key: &str, token: i64) -> Lease {
        let fence = Fence {
            key: key.to_owned(),
            token,
            ttl: shared.lease,
        };
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let renewing = (shared.clone(), fence.clone(), lost.clone());
        let _ = std::thread::Builder::new()
            .name("runbook-lease".into())
            .spawn(move || {
                let (shared, fence, lost) = renewing;
                let every = shared.lease / 3;
                loop {
                    match stopped.recv_timeout(every) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    // A failed renewal (the server away) is tried again;
                    // a refused one means another holds the lock now.
                    if let Ok(false) = shared.remote.renew(&fence, shared.lease) {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            });
        Lease {
            shared,
            fence,
            lost,
            stop: Some(stop),
        }
    }

    /// The fence its writes carry.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The backend.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Whether a renewal found it taken by another.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if !self.is_lost() {
            let _ = self.shared.remote.release(&self.fence);
        }
    }
}

/// The writer that commits a run's journal and audit lines to the shared
/// backend at every durable event, fenced by the run's lease. It is added
/// to the event sink before the journal and the audit log, so its sync
/// comes after theirs; a failed commit (the lease lost, the server away)
/// stops the run before its next step, as a full disk does.
pub struct Mirror {
    shared: Shared,
    fence: Fence,
    run: RunSummary,
    journal: Vec<String>,
    audit: Arc<Mutex<Vec<String>>>,
    failure: Option<String>,
}

impl Mirror {
    /// A mirror of `run`'s lines, holding `fence`; `audit` is where the
    /// audit log tees its lines.
    pub fn new(
        shared: Shared,
        fence: Fence,
        run: RunSummary,
        audit: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Mirror {
            shared,
            fence,
            run,
            journal: Vec::new(),
            audit,
            failure: None,
        }
    }

    fn commit(&mut self) -> std::io::Result<()> {
        let audit = std::mem::take(
            &mut *self
                .audit
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if self.journal.is_empty() && audit.is_empty() {
            return Ok(());
        }
        crate::fault::point("backend.append")?;
        let journal = std::mem::take(&mut self.journal);
        self.shared
            .remote
            .append(&self.run, journal, audit, Some(&self.fence))
    }
}

impl crate::events::EventWriter for Mirror {
    fn write(&mut self, _event: &crate::events::Event, line: &str) {
        if self.failure.is_none() {
            self.journal.push(line.to_owned());
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if let Some(failure) = &self.failure {
            return Err(std::io::Error::other(failure.clone()));
        }
        self.commit().map_err(|error| {
            let failure = format!(
                "cannot write the run to the state backend {}: {error}",
                self.shared.remote.describe()
            );
            self.failure = Some(failure.clone());
            std::io::Error::other(failure)
        })
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn finish(&mut self) {
        let _ = self.sync();
    }

    fn is_record(&self) -> bool {
        true
    }
}

/// Makes the run folder `dir` hold what the backend holds of `run_id`
/// (its journal and audit log, whole files put in place by rename: a
/// process writing the old ones keeps its own). False when the backend has
/// no such run.
pub fn pull_into(shared: &Shared, run_id: &str, dir: &Path) -> std::io::Result<bool> {
    let Some(lines) = shared.remote.pull(run_id, (0, 0))? else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir)?;
    for (name, lines) in [
        ("events.jsonl", &lines.journal),
        ("audit.jsonl", &lines.audit),
    ] {
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        super::write_atomically(&dir.join(name), text.as_bytes(), "mirror.write")?;
    }
    Ok(true)
}
