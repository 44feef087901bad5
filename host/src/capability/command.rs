//! The host side of `runbook:plugin/command`: programs on the host, for the
//! long tail a Wasm step cannot reach (`alembic upgrade head`, `kubectl
//! rollout status`, `psql`), run as few peers run them: the exact program
//! and argument patterns the step grants, nothing of the host's
//! environment, confined by Landlock ([`sandbox`]), within a deadline and
//! limits, its output the step's log, and every run one audit record.
//!
//! Where the kernel has no Landlock, command steps are refused unless the
//! operator allowed unconfined commands (`--allow-unconfined-commands`);
//! each such run says so in the audit log.

pub mod sandbox;

use super::{Capability, StepContext, StepState};
use crate::events::{EventKind, Level};
pub use crate::grant::CommandGrant as Grant;
use crate::grant::CommandGrant;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::command::{self as wit_command, Host, Invocation, Outcome};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Programs on the host, in a sandbox, within granted programs and
/// arguments.
pub const CAPABILITY: Capability = Capability {
    name: "command",
    used_through: &["command"],
    grant_key: "grants.command",
    example: "grants.command = [{ program = \"/usr/bin/alembic\", args = [\"upgrade\", \"*\"], read = [\"./db\"], connect = [5432] }]",
    refused_without_grant: Some("no program"),
    granted: |grants| !grants.command.is_empty(),
    add_to_linker,
};

/// Links `runbook:plugin/command`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepState>) -> wasmtime::Result<()> {
    wit_command::add_to_linker::<_, wasmtime::component::HasSelf<StepState>>(linker, |state| state)
}

/// The most of each output stream kept for the plugin.
pub const MAX_OUTPUT: usize = 1 << 20;

/// The most lines of each stream written to the step's log per run.
const MAX_LOG_LINES: usize = 2_000;

/// How long the output of a finished program may still take to drain
/// (a leftover process holding the pipe is killed with the rest).
const DRAIN: Duration = Duration::from_secs(2);

/// Whether and how the run's command steps are confined: decided once per
/// run.
#[derive(Debug, Clone)]
pub struct CommandAccess {
    /// `Ok` when Landlock can confine programs; else why not.
    pub landlock: Result<(), String>,
    /// The operator allowed programs to run unconfined where Landlock is
    /// missing (`--allow-unconfined-commands`).
    pub allow_unconfined: bool,
    /// The limits of every program.
    pub limits: sandbox::Limits,
}

impl CommandAccess {
    /// What this machine can do, and what the operator allowed.
    pub fn detect(allow_unconfined: bool) -> Self {
        CommandAccess {
            landlock: sandbox::landlock_available(),
            allow_unconfined,
            limits: sandbox::Limits::default(),
        }
    }

    /// Access that runs nothing: for tools that only inspect.
    pub fn none() -> Self {
        CommandAccess {
            landlock: Err("command steps do not run here".to_owned()),
            allow_unconfined: false,
            limits: sandbox::Limits::default(),
        }
    }
}

/// A program line for messages and the audit log: `run /usr/bin/alembic upgrade head`.
fn described(invocation: &Invocation) -> String {
    let mut line = format!("run {}", quoted(&invocation.program));
    for arg in &invocation.args {
        line.push(' ');
        line.push_str(&quoted(arg));
    }
    line
}

/// An argument as a shell would need it to read it back.
fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Runs a program within the step's grant.
pub async fn run(context: &StepContext, invocation: Invocation) -> Result<Outcome, PluginError> {
    let requested = described(&invocation);
    let record = context.call("command", requested.clone());
    let grant = match CommandGrant::find(
        &context.grants.command,
        &invocation.program,
        &invocation.args,
    ) {
        Ok(grant) => grant.clone(),
        Err(reason) => {
            let hint = if context.grants.command.is_empty() {
                format!(
                    "{} has no command grant; if intended, add `grants.command = [{{ program = \"{}\", args = [{}] }}]`",
                    context.step_id.subject(),
                    invocation.program,
                    invocation
                        .args
                        .iter()
                        .map(|arg| format!("\"{}\"", arg.replace('"', "\\\"")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!("{reason}; if intended, add an entry to the step's `grants.command`")
            };
            return Err(record.deny(reason, hint));
        }
    };
    let granted = Some(grant.describe());
    let env = environment(context, &invocation, &requested)?;
    let dir = match &invocation.dir {
        None => None,
        Some(dir) => {
            // Relative to the runbook, as the grant's paths are; links and
            // `..` resolved before it is compared with them.
            let joined = grant.base.join(dir);
            let path = joined.canonicalize().unwrap_or(joined);
            let path = path.as_path();
            let inside = grant
                .read
                .iter()
                .chain(&grant.write)
                .any(|granted| path.starts_with(granted));
            if !inside {
                return Err(record.deny(
                    format!("working directory `{dir}` is not a granted path"),
                    format!(
                        "run it in a folder of the grant's `read` or `write` ({}), or in its scratch folder (no `dir`)",
                        grant
                            .read
                            .iter()
                            .chain(&grant.write)
                            .map(|path| path.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Some(path.to_path_buf())
        }
    };
    if context.dry_run {
        return Err(record.hold_back(
            granted,
            "`plan` runs nothing: commands are recorded, not run",
        ));
    }
    if let Some(answer) = context.replayed(&invocation) {
        let outcome = match &answer {
            Ok(outcome) => format!("exit {:?} (from the cassette)", outcome.exit_code),
            Err(error) => format!("{} (from the cassette)", error.describe()),
        };
        record.finish(granted, outcome, answer.is_ok());
        return answer;
    }
    let none = CommandAccess::none();
    let access = context.command.as_deref().unwrap_or(&none);
    let confine = match &access.landlock {
        Ok(()) => true,
        Err(_) if access.allow_unconfined => false,
        Err(why) => {
            return Err(record.deny(
                format!("cannot confine the program: {why}"),
                "command steps run only inside Landlock; on a machine without it, an operator may accept running them unconfined with `--allow-unconfined-commands` (recorded in the audit log)",
            ));
        }
    };
    let spec = sandbox::Spec {
        program: grant.program.clone(),
        path: grant.path.clone(),
        args: invocation.args.clone(),
        env,
        dir,
        read: grant.read.clone(),
        write: grant.write.clone(),
        connect: grant.connect.clone(),
        limits: access.limits,
        confine,
    };
    let timeout = invocation.timeout_ms.map(Duration::from_millis);
    let deadline = match timeout {
        Some(timeout) => (tokio::time::Instant::now() + timeout).min(context.deadline),
        None => context.deadline,
    };
    let started = std::time::Instant::now();
    let mut running = match sandbox::start(spec, tokio::runtime::Handle::current()) {
        Ok(running) => running,
        Err(error) => {
            let reason = format!("could not start: {error}");
            record.finish(granted, reason.clone(), false);
            return Err(PluginError::Failed(format!("{requested}: {reason}")));
        }
    };
    let confinement = running.confinement.clone();
    let guard = Guard {
        record: Some(record),
        granted,
        group: running.group,
        cgroup: running.cgroup.take(),
        confinement: confinement.clone(),
    };
    let mut stdin = running.child.stdin.take();
    let stdout = running.child.stdout.take();
    let stderr = running.child.stderr.take();
    let input = invocation.stdin.clone().unwrap_or_default();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        }
        drop(stdin);
    };
    let kept_out = std::sync::Mutex::new(Kept::default());
    let kept_err = std::sync::Mutex::new(Kept::default());
    let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
    let waited = async {
        let ended = tokio::select! {
            status = running.child.wait() => Ended::Exited(status),
            () = tokio::time::sleep_until(deadline) => Ended::Deadline,
            () = context.cancel.cancelled() => Ended::Cancelled,
        };
        // Whatever it left behind ends with it: the pipes close, and no
        // process outlives its step.
        guard.kill();
        let _ = ended_tx.send(true);
        ended
    };
    let ((), ended, (), ()) = tokio::join!(
        feed,
        waited,
        drain(
            read_stream(context, stdout, Level::Info, &kept_out),
            ended_rx.clone()
        ),
        drain(
            read_stream(context, stderr, Level::Warn, &kept_err),
            ended_rx
        ),
    );
    let (stdout, out_cut) = kept_out.into_inner().unwrap_or_default().text();
    let (stderr, err_cut) = kept_err.into_inner().unwrap_or_default().text();
    // The exit status of a killed program, reaped.
    let status = match ended {
        Ended::Exited(ref status) => status.as_ref().ok().copied(),
        Ended::Deadline | Ended::Cancelled => running.child.wait().await.ok(),
    };
    let elapsed = started.elapsed();
    let (exit_code, signal) = match status {
        Some(status) => {
            use std::os::unix::process::ExitStatusExt;
            (status.code(), status.signal())
        }
        None => (None, None),
    };
    let refused = permission_errors(&stderr);
    let mut outcome_text = match (exit_code, signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    };
    outcome_text.push_str(&format!("; {confinement}"));
    if refused > 0 {
        outcome_text.push_str(&format!(
            "; {refused} access error(s) in its output (\"Permission denied\", \"Operation not permitted\"): what the sandbox refused"
        ));
    }
    match ended {
        Ended::Deadline => {
            let why = format!("{outcome_text}; stopped at its deadline");
            guard.finish(why, false);
            let limit = timeout.map_or_else(
                || "the step's timeout".to_owned(),
                |timeout| humantime::format_duration(timeout).to_string(),
            );
            return Err(PluginError::Timeout(format!(
                "{requested} ran past {limit}: it and every process it started were killed"
            )));
        }
        Ended::Cancelled => {
            guard.finish(format!("{outcome_text}; stopped by the operator"), false);
            return Err(PluginError::Cancelled);
        }
        Ended::Exited(_) => {}
    }
    guard.finish(outcome_text, exit_code == Some(0));
    Ok(Outcome {
        exit_code,
        signal,
        stdout: context.redactor.apply(&stdout).into_owned(),
        stderr: context.redactor.apply(&stderr).into_owned(),
        truncated: out_cut || err_cut,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    })
}

/// A started program while the host function waits for it. If the call is
/// dropped before its end (the step's deadline or a cancellation caught
/// outside this function), every process the program started is killed and
/// the run is recorded all the same: the audit log misses no program.
struct Guard<'a> {
    record: Option<super::Call<'a>>,
    granted: Option<String>,
    group: Option<rustix::process::Pid>,
    cgroup: Option<sandbox::Cgroup>,
    confinement: String,
}

impl Guard<'_> {
    /// Kills every process the program started.
    fn kill(&self) {
        sandbox::kill_all(self.group, self.cgroup.as_ref());
    }

    /// Records how the run ended.
    fn finish(mut self, outcome: String, ok: bool) {
        if let Some(record) = self.record.take() {
            record.finish(self.granted.take(), outcome, ok);
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.kill();
        if let Some(record) = self.record.take() {
            record.finish(
                self.granted.take(),
                format!(
                    "stopped with its step (cancelled or out of time): it and every process it started were killed; {}",
                    self.confinement
                ),
                false,
            );
        }
    }
}

/// How the wait for a program ended.
enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Deadline,
    Cancelled,
}

/// The program's environment: a minimal `PATH`, `HOME` and `TMPDIR`
/// (the scratch folder, set by the sandbox when not given), `LANG`, then
/// the step's variables, whose sealed secret handles are opened here for
/// granted secrets only.
fn environment(
    context: &StepContext,
    invocation: &Invocation,
    requested: &str,
) -> Result<Vec<(String, String)>, PluginError> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for (name, value) in &invocation.env {
        let bad_name = name.is_empty()
            || name.contains('=')
            || name.contains('\0')
            || name.starts_with(|c: char| c.is_ascii_digit());
        if bad_name || value.contains('\0') {
            return Err(PluginError::InvalidParams(crate::wit::ParamError {
                path: format!("env.{name}"),
                message: "not an environment variable: a name of letters, digits and `_`, and a value without NUL".into(),
            }));
        }
        let value = super::http::unseal_to(context, value, &format!("`{name}` of {requested}"))?;
        env.retain(|(existing, _)| existing != name);
        env.push((name.clone(), value));
    }
    Ok(env)
}

/// What is kept of one output stream.
#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    cut: bool,
}

impl Kept {
    fn text(self) -> (String, bool) {
        (String::from_utf8_lossy(&self.bytes).into_owned(), self.cut)
    }
}

/// Reads one output stream of the program: each line to the step's log
/// (the first [`MAX_LOG_LINES`]), and the first [`MAX_OUTPUT`] bytes kept
/// in `kept`.
async fn read_stream<R>(
    context: &StepContext,
    stream: Option<R>,
    level: Level,
    kept: &std::sync::Mutex<Kept>,
) where
    R: tokio::io::AsyncRead + Unpin,
{
    let Some(stream) = stream else {
        return;
    };
    let mut reader = tokio::io::BufReader::new(stream);
    let mut lines = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line without an end is read up to 64 KiB at a time.
        let read = match (&mut reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Ok(mut kept) = kept.lock() {
            if kept.bytes.len() + read <= MAX_OUTPUT {
                kept.bytes.extend_from_slice(&line);
            } else {
                kept.cut = true;
            }
        }
        if lines < MAX_LOG_LINES {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.is_empty() {
                context.emit(EventKind::Log {
                    level,
                    message: text.to_owned(),
                });
            }
            lines += 1;
            if lines == MAX_LOG_LINES {
                context.emit(EventKind::Log {
                    level: Level::Warn,
                    message: format!(
                        "… more output than {MAX_LOG_LINES} lines: the rest is not logged"
                    ),
                });
            }
        }
    }
}

/// Reads a stream to its end, or for at most [`DRAIN`] once the program
/// ended (a process that escaped every kill may still hold the pipe).
async fn drain(
    reading: impl std::future::Future<Output = ()>,
    mut ended: tokio::sync::watch::Receiver<bool>,
) {
    tokio::pin!(reading);
    tokio::select! {
        () = &mut reading => return,
        _ = ended.wait_for(|ended| *ended) => {}
    }
    let _ = tokio::time::timeout(DRAIN, reading).await;
}

/// Lines of `stderr` that report an access refused, which is how a program
/// meets the sandbox's walls.
fn permission_errors(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|line| {
            line.contains("Permission denied") || line.contains("Operation not permitted")
        })
        .count()
}

impl Host for StepState {
    async fn run(&mut self, invocation: Invocation) -> Result<Outcome, PluginError> {
        let context = &self.context;
        super::tape::through(context, invocation, |invocation| run(context, invocation)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_line_quotes_what_a_shell_would_split() {
        let invocation = Invocation {
            program: "/usr/bin/psql".into(),
            args: vec!["-c".into(), "select 1".into(), "it's".into(), "".into()],
            env: Vec::new(),
            dir: None,
            stdin: None,
            timeout_ms: None,
        };
        assert_eq!(
            described(&invocation),
            r"run /usr/bin/psql -c 'select 1' 'it'\''s' ''"
        );
    }

    #[test]
    fn refusals_are_counted_from_the_programs_own_words() {
        assert_eq!(
            permission_errors(
                "cat: /etc/shadow: Permission denied\nok\nbash: x: Operation not permitted\n"
            ),
            2
        );
    }
}
