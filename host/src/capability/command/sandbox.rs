//! Starting a granted program in a sandbox, and ending it with every
//! process it started.
//!
//! - **Landlock** (Linux): the program reads and runs only the system's
//!   folders ([`SYSTEM_READ`]) and its grant's `read` paths, writes only its
//!   scratch folder and its grant's `write` paths, connects over TCP only to
//!   its grant's ports, and cannot signal or reach abstract sockets outside
//!   its sandbox. The rules are put on a thread of its own, made for this one
//!   program, which then starts it: the program inherits them, the host's
//!   other threads never have them, and the thread ends.
//! - **Limits**, set in the child before `exec`: memory (`RLIMIT_DATA`),
//!   file size, no core dumps; and a process count (`pids.max`) through a
//!   cgroup of its own when the machine lets the host make one.
//! - **A process group of its own** and that cgroup: at its deadline, at
//!   Ctrl-C or when it ends, everything it started is killed.
//! - **Nothing inherited**: no environment but what the step gives, standard
//!   input closed or given, a fresh scratch folder as `HOME` and `TMPDIR`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Folders (and files) every confined program may read and run: the
/// system's programs and libraries, and the few files of `/etc` that
/// programs read to start (the dynamic linker's cache, time zones,
/// certificates, name resolution) — not the rest of `/etc` (`/etc/shadow`).
/// Missing ones are skipped.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/python3.12",
    "/etc/python3.13",
    "/etc/postgresql-common",
    "/usr/share/zoneinfo",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/sys/kernel/mm/transparent_hugepage",
    "/dev/urandom",
    "/dev/random",
];

/// Device files every confined program may write (and read).
pub const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

/// What a confined program may not exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of data memory (heap and private writable mappings).
    pub memory: u64,
    /// Processes and threads at once (through a cgroup).
    pub processes: u64,
    /// Bytes of any one file it writes.
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 4 << 30,
            processes: 512,
            file_size: 4 << 30,
        }
    }
}

/// A program to start, and what it may touch.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program's path, links resolved: what Landlock lets it run.
    pub program: PathBuf,
    /// The path executed (links kept: the name the program sees).
    pub path: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory; `None` for the scratch folder.
    pub dir: Option<PathBuf>,
    /// Paths it may read and run.
    pub read: Vec<PathBuf>,
    /// Paths it may write.
    pub write: Vec<PathBuf>,
    /// TCP ports it may connect to.
    pub connect: Vec<u16>,
    /// Its limits.
    pub limits: Limits,
    /// Whether to put it under Landlock (`false` only when the operator
    /// allowed unconfined commands on a machine without Landlock).
    pub confine: bool,
}

/// A started program.
#[derive(Debug)]
pub struct Started {
    /// The child, with its standard streams piped.
    pub child: tokio::process::Child,
    /// Its process group: every process it starts, unless one leaves it.
    pub group: Option<rustix::process::Pid>,
    /// Its cgroup, when one could be made: every process, even one that
    /// left the group.
    pub cgroup: Option<Cgroup>,
    /// Its `HOME`, `TMPDIR` and default working directory, removed after.
    pub scratch: tempfile::TempDir,
    /// How it is held, for the audit log: `landlock (fully enforced);
    /// processes ≤ 512 (cgroup); memory ≤ 4 GiB`.
    pub confinement: String,
}

/// Whether this kernel can confine programs: Landlock with filesystem and
/// TCP rules (ABI 4 or later). The reason, when it cannot.
pub fn landlock_available() -> Result<(), String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    };
    if let Err(error) = crate::fault::machine("landlock.detect") {
        return Err(format!("Landlock could not be checked: {error}"));
    }
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V4))
        .and_then(|ruleset| ruleset.handle_access(AccessNet::from_all(ABI::V4)))
        .and_then(Ruleset::create)
        .map(drop)
        .map_err(|error| {
            format!("this kernel has no Landlock with filesystem and network rules (ABI 4, Linux 6.7 or later): {error}")
        })
}

/// Starts `spec`'s program, confined, within the runtime `runtime`.
pub fn start(spec: Spec, runtime: tokio::runtime::Handle) -> std::io::Result<Started> {
    let scratch = tempfile::Builder::new()
        .prefix("runbook-command-")
        .tempdir()?;
    let mut spec = spec;
    for name in ["HOME", "TMPDIR"] {
        if !spec.env.iter().any(|(given, _)| given == name) {
            spec.env
                .push((name.to_owned(), scratch.path().display().to_string()));
        }
    }
    let cgroup = Cgroup::create(spec.limits.processes);
    let mut confinement = Vec::new();
    let thread_scratch = scratch.path().to_path_buf();
    let procs = cgroup.as_ref().and_then(Cgroup::procs_path);
    let limits = spec.limits;
    let confine = spec.confine;
    // A thread made for this program alone: Landlock rules bind the thread
    // that asks for them and what it starts, so no other thread of the
    // host (a pooled one reused for the next step) ever carries them.
    let spawned = std::thread::Builder::new()
        .name("runbook-command".into())
        .spawn(
            move || -> std::io::Result<(tokio::process::Child, String)> {
                let _runtime = runtime.enter();
                // Opened before the rules exist: the program may not write to
                // any cgroup file, only be moved into its own.
                let procs = match procs {
                    Some(path) => Some(rustix::fs::open(
                        path.as_c_str(),
                        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )?),
                    None => None,
                };
                let enforced = if confine {
                    restrict_this_thread(&spec, &thread_scratch)?
                } else {
                    "not confined (--allow-unconfined-commands)".to_owned()
                };
                let mut command = tokio::process::Command::new(&spec.path);
                command
                    .args(&spec.args)
                    .env_clear()
                    .envs(spec.env.iter().map(|(name, value)| (name, value)))
                    .current_dir(spec.dir.as_deref().unwrap_or(&thread_scratch))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true);
                #[allow(unsafe_code)]
                // SAFETY: the closure runs in the child between fork and exec,
                // where only async-signal-safe calls are allowed: it makes
                // system calls only (setrlimit, write), on values
                // built before the fork, and allocates nothing.
                unsafe {
                    command.pre_exec(move || in_child(limits, procs.as_ref()));
                }
                Ok((command.spawn()?, enforced))
            },
        )?
        .join()
        .map_err(|_| std::io::Error::other("the thread starting the program panicked"))?;
    let (child, enforced) = spawned?;
    confinement.push(enforced);
    confinement.push(match &cgroup {
        Some(_) => format!("processes ≤ {} (cgroup)", limits.processes),
        None => "processes not limited (no cgroup could be made)".to_owned(),
    });
    confinement.push(format!("memory ≤ {} MiB", limits.memory >> 20));
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    Ok(Started {
        child,
        group,
        cgroup,
        scratch,
        confinement: confinement.join("; "),
    })
}

/// Puts this thread under the program's Landlock rules; what they are,
/// in words.
fn restrict_this_thread(spec: &Spec, scratch: &Path) -> std::io::Result<String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let failed = |error: landlock::RulesetError| {
        std::io::Error::other(format!("cannot build the Landlock rules: {error}"))
    };
    let read = AccessFs::from_read(abi);
    let write = AccessFs::from_all(abi);
    let mut writable: Vec<PathBuf> = spec.write.clone();
    writable.push(scratch.to_path_buf());
    let mut readable: Vec<PathBuf> = spec.read.clone();
    readable.push(spec.program.clone());
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|ruleset| ruleset.handle_access(AccessNet::from_all(abi)))
        .and_then(|ruleset| ruleset.scope(Scope::from_all(abi)))
        .and_then(Ruleset::create)
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(SYSTEM_READ, read)))
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(SYSTEM_WRITE, write)))
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(&readable, read)))
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(&writable, write)))
        .and_then(|ruleset| {
            ruleset.add_rules(
                spec.connect
                    .iter()
                    .map(|port| Ok(NetPort::new(*port, AccessNet::ConnectTcp))),
            )
        })
        .and_then(|ruleset| ruleset.restrict_self())
        .map_err(failed)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("landlock (fully enforced)".to_owned()),
        RulesetStatus::PartiallyEnforced => {
            Ok("landlock (partly enforced: this kernel lacks some rules)".to_owned())
        }
        RulesetStatus::NotEnforced => Err(std::io::Error::other(
            "Landlock did not enforce the rules on this kernel",
        )),
    }
}

/// In the child, before `exec`: limits, and into the cgroup through
/// `procs`, its `cgroup.procs` opened before the fork. Only system calls on
/// values made before the fork (see the SAFETY note at the call).
fn in_child(limits: Limits, procs: Option<&std::os::fd::OwnedFd>) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cap = |value: u64| Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    setrlimit(Resource::Data, cap(limits.memory))?;
    setrlimit(Resource::Fsize, cap(limits.file_size))?;
    setrlimit(Resource::Core, cap(0))?;
    if let Some(procs) = procs {
        // `0` moves the writer itself, for cgroup v1 and v2 alike.
        rustix::io::write(procs, b"0")?;
    }
    Ok(())
}

/// Kills every process of a started program: its process group, and
/// everything in its cgroup (which a process cannot leave).
pub fn kill_all(group: Option<rustix::process::Pid>, cgroup: Option<&Cgroup>) {
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
}

/// A `pids` cgroup made for one program: its `pids.max` caps the processes
/// and threads it can have at once, a fork bomb included; the host can kill
/// everything in it; removed when dropped.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// A fresh cgroup with at most `max` processes, where the machine has a
    /// writable `pids` controller (cgroup v1 or v2); `None` otherwise.
    fn create(max: u64) -> Option<Cgroup> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "runbook-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let candidates = [
            // cgroup v1: the pids hierarchy.
            PathBuf::from("/sys/fs/cgroup/pids"),
            // cgroup v2: the unified hierarchy, when it delegates `pids`.
            PathBuf::from("/sys/fs/cgroup"),
        ];
        for root in candidates {
            let v2 = root.join("cgroup.subtree_control");
            if v2.exists()
                && !std::fs::read_to_string(&v2)
                    .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "pids"))
            {
                continue;
            }
            if !root.join("cgroup.procs").exists() {
                continue;
            }
            let path = root.join(&name);
            if std::fs::create_dir(&path).is_err() {
                continue;
            }
            let cgroup = Cgroup { path };
            if std::fs::write(cgroup.path.join("pids.max"), max.to_string()).is_ok() {
                return Some(cgroup);
            }
        }
        None
    }

    /// `cgroup.procs`, for the child to move itself into.
    fn procs_path(&self) -> Option<CString> {
        CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()
    }

    /// The processes in it now.
    fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|text| {
                text.lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills every process in it, again until none is left (a fork bomb
    /// forks while it is being killed), for at most a second.
    fn kill_all(&self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let members = self.members();
            if members.is_empty() || std::time::Instant::now() > until {
                return;
            }
            for pid in members {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        // Removal fails while a killed process is still being reaped:
        // try a little longer.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
