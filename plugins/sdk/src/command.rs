//! Programs on the host, for what no Wasm step reaches (`alembic upgrade
//! head`, `kubectl rollout status`, `psql -c ...`). The host runs only the
//! programs and argument patterns the step's `grants.command` names,
//! confined by Landlock, with no inherited environment and within a
//! deadline; its output becomes the step's log and every run an audit
//! record. Environment values may hold sealed secret handles
//! (`${{ secrets.db_url }}`): the host puts the secret in, on the host only.

use crate::Error;
use crate::bindings::runbook::plugin::command as host;
use std::time::Duration;

pub use host::Outcome;

/// A program to run: build it, then [`Command::run`].
#[derive(Debug, Clone)]
pub struct Command {
    invocation: host::Invocation,
}

impl Command {
    /// The program at `program`, as the grant names it (`/usr/bin/alembic`).
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            invocation: host::Invocation {
                program: program.into(),
                args: Vec::new(),
                env: Vec::new(),
                dir: None,
                stdin: None,
                timeout_ms: None,
            },
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.invocation.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.invocation
            .args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the program has no other but a
    /// minimal `PATH`, `HOME`, `TMPDIR` and `LANG`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.invocation.env.push((name.into(), value.into()));
        self
    }

    /// Runs in `dir`, a path the grant lets it read or write (default: its
    /// scratch folder).
    pub fn dir(mut self, dir: impl Into<String>) -> Self {
        self.invocation.dir = Some(dir.into());
        self
    }

    /// Writes `input` to its standard input (default: closed at once).
    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.invocation.stdin = Some(input.into());
        self
    }

    /// Stops it (and all it started) after `timeout`; the step's own
    /// deadline applies anyway.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.invocation.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The program line, as messages show it.
    pub fn line(&self) -> String {
        std::iter::once(self.invocation.program.as_str())
            .chain(self.invocation.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it to its end. A program that ran and exited with any code is
    /// `Ok` (read [`Outcome::exit_code`]); errors are denials, its deadline
    /// and a program that could not start.
    pub fn run(&self) -> Result<Outcome, Error> {
        host::run(&self.invocation)
    }
}
