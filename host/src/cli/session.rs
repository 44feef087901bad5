//! What `exec` and `resume` share: everything checked before a run, the
//! gates (deploy window, lock, approvals), the run itself, and the
//! deployment record.

use super::{Cli, Failure, Output, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::{Confirmations, Executor, PendingRollback, Recorded, preflight};
use crate::events::{EventKind, EventSink, JsonStdout, Status};
use crate::journal::JournalError;
use crate::journal::{self, Journal, RunRecord};
use crate::plugin::PluginRuntime;
use crate::progress::Progress;
use crate::runbook::{self, Bindings, Plan, bind::bind};
use crate::state::{self, DeploymentRecord, LockError, LockHolder, RunLock};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The options of a run that `exec` and `resume` both take.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// `text` shows progress on stderr; `json` writes every event as a JSON line on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Where run state goes [default: `.runbook/` beside the runbook].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// At most this many steps at once [default: every ready step, up to 16].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,

    /// Run outside the deploy windows or in a freeze; needs `--reason` and
    /// the environment's emergency approvals. Recorded.
    #[arg(long, requires = "reason")]
    pub emergency: bool,

    /// Why the emergency (recorded in the run log and deployment record).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Wait for the lock when another run of this runbook and environment holds it.
    #[arg(long)]
    pub wait_lock: bool,

    /// Wait at the approval gate instead of stopping there.
    #[arg(long)]
    pub wait_approval: bool,

    /// Send AWS calls to this endpoint (an emulator such as moto) instead
    /// of AWS; overrides the environment's `aws_endpoint`.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint: Option<String>,

    /// Make Kubernetes calls through this kubeconfig context; overrides
    /// the environment's `kube_context` (default: the current context of
    /// `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,
}

/// A run that passed every check and is ready to go.
pub struct Prepared {
    /// The bound plan.
    pub plan: Plan,
    /// The wasm runtime.
    pub runtime: PluginRuntime,
    /// Loaded plugins.
    pub plugins: preflight::Plugins,
    /// The run's secrets.
    pub secrets: crate::capability::secrets::SecretStore,
    /// What approvals bind to.
    pub fingerprint: String,
    /// `.runbook/`.
    pub state_dir: PathBuf,
}

/// Loads, binds and checks a runbook: nothing runs if this fails.
pub async fn prepare(
    cli: &Cli,
    file: &Path,
    bindings: Bindings,
    options: &RunOptions,
) -> Result<Prepared, Failure> {
    let runbook = Arc::new(runbook::load(file)?);
    let plan = bind(runbook, bindings)?;
    let runtime = super::plugin_runtime(cli)?;
    let plugins = preflight::load_plugins(&runtime, &plan).await?;
    for warning in preflight::check_capabilities(&plan, &plugins)? {
        eprintln!("{warning}");
    }
    let secrets = preflight::load_secrets(&plan)?;
    preflight::check_params(&runtime, &plan, &plugins, &secrets).await?;
    let digests = plugins
        .iter()
        .map(|(name, plugin)| (name.clone(), plugin.digest.clone()))
        .collect();
    let fingerprint = crate::gates::fingerprint(&plan, &digests);
    Ok(Prepared {
        state_dir: state::state_dir(file, options.state_dir.as_deref()),
        plan,
        runtime,
        plugins,
        secrets,
        fingerprint,
    })
}

/// How this process takes part in the run.
pub enum Start {
    /// A new run.
    New,
    /// A later process of an existing run.
    Resume {
        /// What the journal says.
        record: Box<RunRecord>,
        /// Steps already finished, kept as they are.
        recorded: BTreeMap<String, Recorded>,
        /// A rollback an earlier process started and did not finish.
        rollback: Option<PendingRollback>,
        /// Interrupted steps to run again.
        rerun: Vec<String>,
        /// Interrupted steps to skip.
        skip: Vec<String>,
    },
}

/// Passes the gates and runs. Returns the exit code. `lock` is the run's
/// lock when the caller took it already.
pub async fn drive(
    cli: &Cli,
    prepared: Prepared,
    options: &RunOptions,
    start: Start,
    lock: Option<RunLock>,
) -> Result<u8, Failure> {
    let Prepared {
        plan,
        runtime,
        plugins,
        secrets,
        fingerprint,
        state_dir,
    } = prepared;
    let environment = plan
        .environment
        .as_ref()
        .and_then(|name| plan.runbook.environments.get(name));

    // The deploy window.
    if let Some(environment) = environment
        && let Err(closed) = environment.schedule.check(crate::schedule::now())
        && !options.emergency
    {
        let mut diagnostic = Diagnostic::new(format!("no deploys now: {}", closed.reason));
        diagnostic = diagnostic.hint(match &closed.next_open {
            Some(next) => format!("the next window opens {next}; in an emergency, run with `--emergency --reason \"...\"`"),
            None => "no window opens within a year; in an emergency, run with `--emergency --reason \"...\"`".into(),
        });
        return Err(Failure::Invalid(Diagnostics(vec![diagnostic])));
    }

    // One run per runbook and environment (a resume took the lock before
    // it read the journal).
    let _lock = match lock {
        Some(lock) => lock,
        None => take_lock(&plan, &state_dir, options).await?,
    };

    // The journal and the operator's view.
    let run_dir = state::run_dir(&state_dir, &plan.run_id);
    let journal_path = state::journal_path(&run_dir);
    let events = EventSink::new();
    events.set_redactor(secrets.redactor());
    events.add(
        Journal::open(&journal_path)
            .with_context(|| format!("cannot open the run journal {}", journal_path.display()))?,
    );
    state::index_run(&plan.run_id, &run_dir);
    let (audit_log, audit_head) =
        crate::audit::AuditLog::open(&crate::audit::path(&run_dir), &plan.run_id)
            .with_context(|| format!("cannot open the audit log in {}", run_dir.display()))?;
    events.add(audit_log);
    match options.output {
        Output::Text => events.add(Progress::stderr(cli.verbose)),
        Output::Json => events.add(JsonStdout),
    }
    // A run started with `--emergency` stays one when resumed without it:
    // its approvals come from the emergency approvers.
    let emergency = options.emergency
        || matches!(&start, Start::Resume { record, .. }
            if record.emergency.is_some());

    let (recorded, rollback, checkpoints, mut approvals, confirmations_given) = match start {
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
                plan_hash: Some(fingerprint.clone()),
                emergency: options
                    .emergency
                    .then(|| options.reason.clone().unwrap_or_default()),
            });
            (
                BTreeMap::new(),
                None,
                BTreeMap::new(),
                Vec::new(),
                BTreeMap::new(),
            )
        }
        Start::Resume {
            record,
            recorded,
            rollback,
            rerun,
            skip,
        } => {
            events.emit(EventKind::RunResumed {
                operator: std::env::var("RUNBOOK_OPERATOR")
                    .or_else(|_| std::env::var("USER"))
                    .unwrap_or_else(|_| plan.operator.clone()),
                plan_hash: Some(fingerprint.clone()),
                rerun,
                skip,
            });
            (
                recorded,
                rollback,
                record
                    .steps
                    .iter()
                    .filter(|(_, step)| !step.checkpoints.is_empty())
                    .map(|(id, step)| (id.clone(), step.checkpoints.clone()))
                    .collect(),
                record.approvals.clone(),
                record.confirmations.clone(),
            )
        }
    };
    if options.emergency {
        events.emit(EventKind::Log {
            level: crate::events::Level::Warn,
            message: format!(
                "emergency run: {}",
                options.reason.clone().unwrap_or_default()
            ),
        });
    }

    // Approvals, bound to the fingerprint.
    let rule = environment
        .and_then(|environment| crate::gates::rule(environment, emergency))
        .cloned();
    let cancel = CancellationToken::new();
    let abort = CancellationToken::new();
    spawn_signal_handler(cancel.clone(), abort.clone());
    let mut approved_by = Vec::new();
    if let Some(rule) = &rule {
        loop {
            let counted = crate::gates::count(rule, &approvals, &fingerprint, &plan.operator);
            if counted.is_met() {
                approved_by = counted.valid;
                break;
            }
            let waiting = format!(
                "run {} needs {} approval{} from {} ({} so far{}): `runbook approve {} --as NAME`",
                plan.run_id,
                rule.required,
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
            );
            if !options.wait_approval {
                events.emit(EventKind::RunFinished {
                    status: Status::Waiting,
                    elapsed_ms: 0.0,
                    failed_step: None,
                });
                events.finish();
                eprintln!("⏸ {waiting}, then `runbook resume {}`", plan.run_id);
                return Ok(exit::WAITING);
            }
            eprintln!("⏸ {waiting}");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => return Ok(exit::CANCELLED),
            }
            approvals = journal::read(&journal_path)
                .map(|record| record.approvals)
                .unwrap_or_default();
        }
    }

    let parallel = options.parallel.unwrap_or(16).max(1);
    let executor = Executor {
        runtime: &runtime,
        plugins: &plugins,
        events: events.clone(),
        secrets,
        cancel,
        abort,
        parallel,
        recorded,
        rollback,
        checkpoints,
        aws: Some(crate::capability::aws::AwsAccess::from_environment(
            options
                .aws_endpoint
                .clone()
                .or_else(|| environment.and_then(|environment| environment.aws_endpoint.clone()))
                .and_then(|endpoint| url::Url::parse(&endpoint).ok()),
        )),
        kube: Some(crate::capability::kube::KubeAccess::new(
            options
                .kube_context
                .clone()
                .or_else(|| environment.and_then(|environment| environment.kube_context.clone())),
        )),
        confirmations: Confirmations {
            given: confirmations_given,
            ask: (options.output == Output::Text
                && std::io::IsTerminal::is_terminal(&std::io::stdin()))
            .then(|| {
                std::sync::Arc::new(TerminalChecklist) as std::sync::Arc<dyn crate::engine::Ask>
            }),
            operator: plan.operator.clone(),
        },
    };
    let report = executor.execute(&plan).await;
    let (records, hash) = audit_head.get();
    events.emit(EventKind::AuditHead { records, hash });
    events.finish();

    if let Some(reason) = report.unrecorded.as_ref().or(events.failure().as_ref()) {
        // Nothing after the failure is on disk: no record, no claim of
        // success. What the journal holds is what is known.
        let completed: Vec<String> = journal::read(&journal_path)
            .map(|record| {
                record
                    .order
                    .iter()
                    .filter(|id| record.steps[*id].status == Some(Status::Succeeded))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let message = format!(
            "the run stopped: {reason}. No step was started after that. Completed steps, as the journal records them: {}. A step that was running when it happened may or may not have taken effect; `resume` will ask.",
            if completed.is_empty() {
                "none".to_owned()
            } else {
                completed
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        match options.output {
            Output::Text => {
                eprintln!("✗ {message}");
                eprintln!(
                    "  free the disk (or fix the error), then `runbook resume {}`",
                    plan.run_id
                );
            }
            // A closed stdout ends this output quietly; the exit code
            // still says what happened.
            Output::Json => {
                if let Err(Failure::Internal(error)) = super::print_json_line(
                    &serde_json::json!({"event": "run_unrecorded", "reason": reason, "run_id": plan.run_id, "completed": completed}),
                ) {
                    eprintln!("error: {error:#}");
                }
            }
        }
        return Ok(exit::INTERNAL);
    }

    let record = journal::read(&journal_path).ok();
    let mut deployment_path = None;
    if report.status != Status::Waiting {
        let mut deployment = match &record {
            Some(record) => DeploymentRecord::from_journal(record, &journal_path),
            None => DeploymentRecord::from_journal(&journal::RunRecord::default(), &journal_path),
        };
        deployment.finished = jiff::Timestamp::now().to_string();
        deployment.runbook = plan.runbook.name.clone();
        deployment.run_id = plan.run_id.clone();
        deployment.approvals = approved_by;
        deployment.status = report.status.as_str().to_owned();
        // A resumed emergency run keeps the reason its start recorded.
        if options.emergency {
            deployment.emergency = Some(options.reason.clone().unwrap_or_default());
        }
        deployment.logs = std::fs::canonicalize(&journal_path)
            .unwrap_or(journal_path.clone())
            .display()
            .to_string();
        match state::write_record(&state_dir, &deployment) {
            Ok(path) => deployment_path = Some(path),
            Err(error) => eprintln!(
                "error: cannot write the deployment record: {error}; the run is recorded in its journal, and `runbook resume {}` writes the record once the disk is fixed",
                plan.run_id
            ),
        }
        // A closed stdout ends the output quietly, not the run's exit code.
        if options.output == Output::Json
            && let Err(Failure::Internal(error)) = super::print_json_line(
                &serde_json::json!({"event": "deployment_record", "record": deployment}),
            )
        {
            eprintln!("error: {error:#}");
        }
    }
    if options.output == Output::Text {
        eprintln!("  run log: {}", journal_path.display());
        if let Some(path) = deployment_path {
            eprintln!("  deployment record: {}", path.display());
        }
        if !report.rollback_failures.is_empty() {
            eprintln!(
                "  ROLLBACK FAILED for {}: check these by hand",
                report.rollback_failures.join(", ")
            );
        }
        if report.status == Status::Waiting
            || (report.status.is_failure()
                && report.status != Status::Denied
                && !report.rolled_back)
        {
            eprintln!("  resume with `runbook resume {}`", plan.run_id);
        }
    }
    Ok(match report.status {
        Status::Succeeded | Status::Skipped | Status::RolledBack => exit::SUCCESS,
        Status::Failed => exit::STEP_FAILED,
        Status::Denied => exit::DENIED,
        Status::Cancelled => exit::CANCELLED,
        Status::Waiting => exit::WAITING,
    })
}

/// Ticks a manual step's checklist on the operator's terminal, one item
/// at a time, as on the paper checklist.
struct TerminalChecklist;

impl crate::engine::Ask for TerminalChecklist {
    fn tick(&self, step: &str, items: &[String]) -> Result<Vec<String>, String> {
        eprintln!(
            "\nManual step `{step}`: tick each item (y to tick, anything else stops the run)"
        );
        let mut ticked = Vec::new();
        for item in items {
            let item_text = crate::terminal::text(item);
            eprint!("  [ ] {item_text} — done? [y/N] ");
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err()
                || !line.trim().eq_ignore_ascii_case("y")
            {
                return Err(item.clone());
            }
            eprintln!("  [x] {item_text}");
            ticked.push(item.clone());
        }
        Ok(ticked)
    }
}

/// Takes the lock of the plan's runbook and environment for this process
/// (waiting for it with `--wait-lock`), and writes this run as its holder.
/// A lock that a dead process left is free; but when that process's run
/// is unfinished, a new run is refused: it must be resumed or abandoned
/// (`runbook unlock`) first.
pub async fn take_lock(
    plan: &Plan,
    state_dir: &Path,
    options: &RunOptions,
) -> Result<RunLock, Failure> {
    let path = state::lock_path(state_dir, &plan.runbook.name, plan.environment.as_deref());
    let mut waiting = false;
    let mut lock = loop {
        match RunLock::acquire(&path) {
            Ok(lock) => break lock,
            Err(LockError::Held(current)) if options.wait_lock => {
                if !waiting {
                    eprintln!("waiting: {}", LockError::Held(current));
                    waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error @ LockError::Held(_)) => {
                return Err(Failure::Invalid(Diagnostics(vec![
                    Diagnostic::new(error.to_string()).hint("wait for it with `--wait-lock`"),
                ])));
            }
            Err(error) => return Err(Failure::Internal(error.into())),
        }
    };
    if let Some(left) = lock.left_by().cloned() {
        if left.run_id == plan.run_id {
            eprintln!(
                "note: taking over the lock that this run's earlier process {} left when it died",
                left.pid
            );
        } else if let Some(state) = unfinished(state_dir, &left.run_id) {
            return Err(Failure::Invalid(Diagnostics(vec![
                Diagnostic::new(format!(
                    "run {} by {} died unfinished ({state}); its process {} on {} is gone",
                    left.run_id, left.operator, left.pid, left.host
                ))
                .hint(format!(
                    "continue it with `runbook resume {}`; or, if it is to be abandoned, `runbook unlock {}{}` and start anew",
                    left.run_id,
                    plan.runbook.source.path.display(),
                    plan.environment
                        .as_ref()
                        .map(|name| format!(" --env {name}"))
                        .unwrap_or_default()
                )),
            ])));
        }
    }
    let holder = LockHolder {
        run_id: plan.run_id.clone(),
        operator: plan.operator.clone(),
        since: jiff::Timestamp::now().to_string(),
        pid: std::process::id(),
        host: state::hostname(),
    };
    lock.claim(&holder).map_err(|source| {
        Failure::Internal(
            LockError::Io {
                path: path.clone(),
                source,
            }
            .into(),
        )
    })?;
    Ok(lock)
}

/// How a run that a dead process left stands, when it is unfinished: it
/// has a journal, and the journal has no end.
pub fn unfinished(state_dir: &Path, run_id: &str) -> Option<String> {
    let journal = state::journal_path(&state::run_dir(state_dir, run_id));
    let record = match journal::read(&journal) {
        Ok(record) => record,
        // It died before its run started: nothing to continue.
        Err(JournalError::NoStart(_) | JournalError::Read { .. }) => return None,
        Err(error) => return Some(error.to_string()),
    };
    if record.finished.is_some() {
        return None;
    }
    if let Some(rollback) = record
        .rollback
        .as_ref()
        .filter(|rollback| !rollback.finished)
    {
        return Some(format!("its rollback ({}) was cut short", rollback.reason));
    }
    let running: Vec<&String> = record
        .order
        .iter()
        .filter(|id| record.steps[*id].interrupted)
        .collect();
    Some(match running.as_slice() {
        [] => "between steps".to_owned(),
        ids => format!(
            "during {}",
            ids.iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// First Ctrl-C or SIGTERM: running steps stop, then the failure policy
/// applies (a rollback, say). Second: the rollback stops too.
fn spawn_signal_handler(cancel: CancellationToken, abort: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for round in 0..2 {
            #[cfg(unix)]
            {
                let term = async {
                    match terminate.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if round == 0 {
                eprintln!(
                    "\ninterrupted: stopping the running steps, then following the failure policy (interrupt again to stop that too)"
                );
                cancel.cancel();
            } else {
                eprintln!("\ninterrupted again: stopping the rollback");
                abort.cancel();
            }
        }
    });
}
