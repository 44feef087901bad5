//! Failpoints: named places at every durable write and between each effect
//! and its record, where a test can make the process crash or the write
//! fail, as a power cut, a `kill -9` or a full disk would.
//!
//! They exist only in builds with the `failpoints` feature (`scripts/test`
//! builds the binary the tests run with it); in any other build
//! [`point`] is an empty inline function. In a failpoints build:
//!
//! - `RUNBOOK_FAILPOINTS="journal.sync=crash@3;audit.write=enospc"` makes
//!   the third pass through `journal.sync` end the process with exit code
//!   137 (no destructor, no flush: what a kill leaves) and every pass through
//!   `audit.write` fail with "No space left on device". Actions: `crash`,
//!   `enospc`, `eio`; `@N` picks the Nth pass only, `@N+` every pass from
//!   the Nth on.
//! - `RUNBOOK_FAILPOINT_TRACE=FILE` appends `NAME N` for every pass, so a
//!   test can list every place a run could fail and then fail it at each.

/// Passes a failpoint: `Ok` unless a test asked for a failure here.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}

/// Passes a failpoint: `Ok` unless a test asked for a failure here.
#[cfg(feature = "failpoints")]
pub fn point(name: &'static str) -> std::io::Result<()> {
    armed::hit(name, true)
}

/// Passes a place where the machine, not a write, can fail (a kernel
/// without Landlock): `Ok` unless a test asked for a failure here. Not
/// traced: the sweeps break every durable write, and this is none.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn machine(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}

/// Passes a place where the machine, not a write, can fail (a kernel
/// without Landlock): `Ok` unless a test asked for a failure here. Not
/// traced: the sweeps break every durable write, and this is none.
#[cfg(feature = "failpoints")]
pub fn machine(name: &'static str) -> std::io::Result<()> {
    armed::hit(name, false)
}

/// Whether this build has failpoints.
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    #[derive(Debug, Clone, Copy)]
    enum Action {
        Crash,
        Enospc,
        Eio,
    }

    #[derive(Debug, Clone, Copy)]
    enum When {
        Always,
        Nth(u64),
        From(u64),
    }

    struct Config {
        rules: BTreeMap<String, (Action, When)>,
        trace: Option<std::path::PathBuf>,
    }

    fn config() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let mut rules = BTreeMap::new();
            let spec = std::env::var("RUNBOOK_FAILPOINTS").unwrap_or_default();
            for rule in spec.split(';').filter(|rule| !rule.trim().is_empty()) {
                let Some((name, action)) = rule.split_once('=') else {
                    continue;
                };
                let (action, when) = match action.split_once('@') {
                    Some((action, count)) => {
                        let when = match count.strip_suffix('+') {
                            Some(from) => When::From(from.parse().unwrap_or(1)),
                            None => When::Nth(count.parse().unwrap_or(1)),
                        };
                        (action, when)
                    }
                    None => (action, When::Always),
                };
                let action = match action.trim() {
                    "crash" => Action::Crash,
                    "enospc" => Action::Enospc,
                    "eio" => Action::Eio,
                    _ => continue,
                };
                rules.insert(name.trim().to_owned(), (action, when));
            }
            Config {
                rules,
                trace: std::env::var_os("RUNBOOK_FAILPOINT_TRACE").map(Into::into),
            }
        })
    }

    pub(super) fn hit(name: &'static str, traced: bool) -> std::io::Result<()> {
        static HITS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
        let config = config();
        if config.rules.is_empty() && config.trace.is_none() {
            return Ok(());
        }
        let hit = {
            let mut hits = HITS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = hits.entry(name).or_default();
            *count += 1;
            *count
        };
        if traced
            && let Some(trace) = &config.trace
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(trace)
        {
            let _ = writeln!(file, "{name} {hit}");
        }
        let Some((action, when)) = config.rules.get(name) else {
            return Ok(());
        };
        let fires = match when {
            When::Always => true,
            When::Nth(nth) => hit == *nth,
            When::From(from) => hit >= *from,
        };
        if !fires {
            return Ok(());
        }
        match action {
            // Exit at once: no destructor runs and no buffer is flushed,
            // as after a kill.
            Action::Crash => std::process::exit(137),
            Action::Enospc => Err(std::io::Error::from_raw_os_error(28)),
            Action::Eio => Err(std::io::Error::from_raw_os_error(5)),
        }
    }
}
