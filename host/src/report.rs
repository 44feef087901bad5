//! `runbook report RUN`: one run as a page people look at, read back from
//! its journal and its audit log. [`build`] gathers what happened (the
//! header, each step's bars on a time axis, its logs, capability calls and
//! outputs, the waits and rollbacks, the metric rounds of canaries and
//! gates, the audit verdict) into a [`Report`]; [`html`] draws it as one
//! self-contained page (inline CSS and SVG, no script, nothing fetched)
//! and [`markdown`] writes the same content as Markdown.
//!
//! Every text of the journal may hold anything a plugin logged: it is
//! passed through [`crate::terminal::text`] (control characters shown as
//! `\u{1b}`) and escaped for HTML (or Markdown) before it is written.
//! Secret values were redacted before the journal was written.

use crate::audit;
use crate::journal::{self, JournalError, RunRecord};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::Path;

/// Each step's metrics and their `(min, max)` limits, by step then metric.
type Limits = BTreeMap<String, BTreeMap<String, (Option<f64>, Option<f64>)>>;

/// A metric's name and its value in one round (`None`: no data).
type MetricValue = (String, Option<f64>);

/// A stretch of time, in milliseconds from the run's first event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Span {
    /// Its start.
    pub start: f64,
    /// Its end.
    pub end: f64,
}

impl Span {
    /// How long.
    pub fn length(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// Time spent waiting: between a step's rounds, parked, for a person.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    /// When.
    pub span: Span,
    /// For what, in words.
    pub what: String,
}

/// A step's undo.
#[derive(Debug, Clone, Default)]
pub struct Rollback {
    /// When.
    pub span: Span,
    /// `rolled_back`, `failed`, or `running` when it never ended.
    pub status: String,
    /// What the plugin said.
    pub summary: String,
}

/// A log line, a progress message, a milestone or a retry.
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// When.
    pub at: f64,
    /// `info`, `warn`, `progress`, `milestone`, `retry`, ...
    pub level: String,
    /// The text.
    pub message: String,
}

/// One capability call (`capability_call`).
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// When.
    pub at: f64,
    /// The step (or `[notify]` target) that made it.
    pub step: String,
    /// `http`, `kube`, `aws`, ...
    pub capability: String,
    /// What was asked.
    pub requested: String,
    /// `allowed`, `denied` or `held_back`.
    pub decision: String,
    /// The grant that allowed it.
    pub grant: Option<String>,
    /// What came of it.
    pub outcome: String,
    /// Whether it did what was asked.
    pub ok: bool,
}

/// One step as the report shows it.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its plugin (`manual` for a manual step).
    pub plugin: String,
    /// How it ended: a journal status, or `interrupted`, `running`.
    pub status: String,
    /// Its last summary.
    pub summary: String,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// Each time it ran (one per process that ran it).
    pub runs: Vec<Span>,
    /// Its waits.
    pub waits: Vec<Wait>,
    /// Its undo, when a rollback reached it.
    pub rollback: Option<Rollback>,
    /// Its log lines, progress and milestones.
    pub lines: Vec<Line>,
    /// Its capability calls.
    pub calls: Vec<Call>,
    /// What it recorded for its rollback.
    pub checkpoints: Vec<(String, String)>,
    /// Who confirmed it (manual steps), or decided its failure.
    pub people: Vec<String>,
}

impl StepReport {
    /// Whether it started at all (a skipped step did not).
    pub fn ran(&self) -> bool {
        !self.runs.is_empty()
    }

    /// When it ran, as the page says it: `+2ms to +3ms (1ms)`, or `did
    /// not run`.
    pub fn when(&self) -> String {
        self.span().map_or_else(
            || "did not run".to_owned(),
            |span| {
                format!(
                    "{} to {} ({})",
                    offset(span.start),
                    offset(span.end),
                    duration(span.length())
                )
            },
        )
    }

    /// Its plugin, or `-` for a manual step.
    pub fn plugin_or_dash(&self) -> &str {
        if self.plugin.is_empty() {
            "-"
        } else {
            &self.plugin
        }
    }

    /// From its first start to its last end.
    pub fn span(&self) -> Option<Span> {
        let first = self.runs.first()?;
        let last = self.runs.last()?;
        Some(Span {
            start: first.start,
            end: last.end,
        })
    }
}

/// One metric of a step's analysis over its rounds.
#[derive(Debug, Clone, Default)]
pub struct Metric {
    /// The step.
    pub step: String,
    /// The check's name (`error_rate`).
    pub name: String,
    /// Fails above this, when known.
    pub max: Option<f64>,
    /// Fails below this, when known.
    pub min: Option<f64>,
    /// Each round: its label (`round 2/5`, `canary 10%`) and value
    /// (`None`: no data).
    pub rounds: Vec<(String, Option<f64>)>,
}

impl Metric {
    /// Whether `value` breaks a known limit.
    pub fn breaks(&self, value: f64) -> bool {
        self.max.is_some_and(|max| value > max) || self.min.is_some_and(|min| value < min)
    }
}

/// A moment on the run's row: an approval, a confirmation, a decision.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// When.
    pub at: f64,
    /// What, in words.
    pub what: String,
}

/// What `runbook audit verify` says of the run's audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditVerdict {
    /// The chain is intact.
    pub intact: bool,
    /// Its records.
    pub records: u64,
    /// Why it is not intact, or a note.
    pub detail: String,
    /// The run's last process recorded the final head.
    pub closed: bool,
}

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The run's id.
    pub run_id: String,
    /// The runbook's name.
    pub runbook: String,
    /// The runbook file.
    pub file: String,
    /// The environment.
    pub environment: Option<String>,
    /// Who started it.
    pub operator: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
    /// How it stands.
    pub status: String,
    /// Its first event (RFC 3339).
    pub started: String,
    /// Its last `run_finished`, when it has one.
    pub ended: Option<String>,
    /// From its first event to its last.
    pub duration_ms: f64,
    /// Who approved it (labelled signed, with the key, or unsigned), and
    /// when.
    pub approvals: Vec<(String, f64)>,
    /// Emergency, promotion, resumes, rollbacks asked, decisions: label
    /// and text.
    pub facts: Vec<(String, String)>,
    /// Each process of the run.
    pub processes: Vec<Span>,
    /// The run's waits between processes (approvals, parked, a person).
    pub waits: Vec<Wait>,
    /// Approvals, confirmations and decisions on the run's row.
    pub marks: Vec<Mark>,
    /// Every step the journal names, in the order each first appears.
    pub steps: Vec<StepReport>,
    /// The metrics of analysis rounds.
    pub metrics: Vec<Metric>,
    /// Calls made by `[notify]` targets.
    pub announcements: Vec<Call>,
    /// The audit log's verdict.
    pub audit: AuditVerdict,
}

impl Report {
    /// The steps that ran, in the order they first started.
    pub fn ran(&self) -> Vec<&StepReport> {
        let mut ran: Vec<&StepReport> = self.steps.iter().filter(|step| step.ran()).collect();
        ran.sort_by(|left, right| {
            let start = |step: &StepReport| step.runs.first().map_or(0.0, |run| run.start);
            start(left).total_cmp(&start(right))
        });
        ran
    }
}

fn text(event: &Value, key: &str) -> String {
    event
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn micros(time: &str) -> Option<i64> {
    time.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_microsecond)
}

/// Reads run `run_dir`'s journal and audit log into a [`Report`].
pub fn build(run_dir: &Path) -> Result<Report, JournalError> {
    let mut events = Vec::new();
    let record = journal::replay(&crate::state::journal_path(run_dir), |event| {
        events.push(event.clone());
        ControlFlow::Continue(())
    })?;
    let audit_path = audit::path(run_dir);
    let verdict = match audit::verify(&audit_path, &record.run_id, &record.audit) {
        Ok(records) => AuditVerdict {
            intact: true,
            records,
            detail: if record.audit.closed {
                String::new()
            } else {
                "the run's last process has not recorded its final head (still running, or it died): records cut from its end could not be noticed".into()
            },
            closed: record.audit.closed,
        },
        Err(tampered) => AuditVerdict {
            intact: false,
            records: audit::read(&audit_path).len() as u64,
            detail: tampered.to_string(),
            closed: record.audit.closed,
        },
    };
    let limits = limits_in_runbook(Path::new(&record.file));
    let mut report = from_events(&record, &events, &limits);
    report.audit = verdict;
    Ok(report)
}

/// A step being read.
#[derive(Default)]
struct Open {
    run: Option<f64>,
    wait: Option<(f64, String)>,
    rollback: Option<f64>,
}

/// The report of a run from its record and its events, with the metric
/// limits the runbook states (step -> check -> (max, min)).
pub fn from_events(record: &RunRecord, events: &[Value], limits: &Limits) -> Report {
    let origin = events
        .iter()
        .find_map(|event| micros(&text(event, "time")))
        .unwrap_or_default();
    let mut report = Report {
        run_id: record.run_id.clone(),
        runbook: record.runbook.clone(),
        file: record.file.clone(),
        environment: record.environment.clone(),
        operator: record.operator.clone(),
        params: record
            .params
            .iter()
            .map(|(key, value)| (key.clone(), crate::template::as_text(value)))
            .collect(),
        status: run_status(record),
        started: record.started.clone(),
        ended: (record.finished.is_some() && !record.finished_at.is_empty())
            .then(|| record.finished_at.clone()),
        ..Report::default()
    };
    if let Some(reason) = &record.emergency {
        report.facts.push((
            "emergency".into(),
            format!("started with --emergency: {reason}"),
        ));
    }
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut process: Option<f64> = None;
    let mut run_wait: Option<(f64, String)> = None;
    // What happened while the run waited between processes.
    let mut between: Vec<&'static str> = Vec::new();
    let mut now = 0.0_f64;
    // Breach reasons: step -> check -> (max, min) read from the messages.
    let mut breaches: Limits = BTreeMap::new();
    let mut metrics: Vec<Metric> = Vec::new();
    for event in events {
        if let Some(at) = micros(&text(event, "time")) {
            now = now.max((at - origin) as f64 / 1000.0);
        }
        let at = now;
        let kind = text(event, "event");
        let step = event.get("step").and_then(Value::as_str).map(str::to_owned);
        let Some(id) = step else {
            match kind.as_str() {
                "run_started" | "run_resumed" => {
                    if let Some((start, what)) = run_wait.take() {
                        let what = if between.is_empty() {
                            what
                        } else {
                            format!("{what}: {}", between.join(", "))
                        };
                        report.waits.push(Wait {
                            span: Span { start, end: at },
                            what,
                        });
                    }
                    between.clear();
                    if let Some(start) = process.take() {
                        report.processes.push(Span { start, end: at });
                    }
                    process = Some(at);
                    if kind == "run_resumed" {
                        report.facts.push((
                            "resumed".into(),
                            format!("by {} at {}", text(event, "operator"), offset(at)),
                        ));
                    }
                }
                "run_finished" => {
                    if let Some(start) = process.take() {
                        report.processes.push(Span { start, end: at });
                    }
                    if text(event, "status") == "waiting" && run_wait.is_none() {
                        run_wait = Some((at, "waits".to_owned()));
                    }
                }
                "run_waiting" => {
                    run_wait = Some((
                        at,
                        format!(
                            "parked until {}: {}",
                            text(event, "until"),
                            text(event, "reason")
                        ),
                    ));
                }
                "approved" => {
                    // Signed or not, as every view of an approval says.
                    let by = match event
                        .get("signature")
                        .and_then(|signature| signature.get("key"))
                        .and_then(Value::as_str)
                    {
                        Some(key) => format!("{} (signed, {key})", text(event, "by")),
                        None => format!("{} (unsigned)", text(event, "by")),
                    };
                    report.approvals.push((by.clone(), at));
                    report.marks.push(Mark {
                        at,
                        what: format!("approved by {by}"),
                    });
                    between.push("approvals");
                }
                "operator_signed" => {
                    let signature = event.get("signature");
                    let field = |name: &str| {
                        signature
                            .and_then(|signature| signature.get(name))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    report.facts.push((
                        "signed".into(),
                        format!(
                            "by the operator, {} with key {}, at {}",
                            field("principal"),
                            field("key"),
                            offset(at)
                        ),
                    ));
                }
                "promotion_checked" => {
                    let line = match event.get("overridden").and_then(Value::as_str) {
                        Some(reason) => format!(
                            "gate from {} overridden (emergency: {reason}): {}",
                            text(event, "from"),
                            text(event, "detail")
                        ),
                        None => format!(
                            "from {}: {}{}",
                            text(event, "from"),
                            text(event, "detail"),
                            event
                                .get("satisfied_by")
                                .and_then(Value::as_str)
                                .map(|run| format!(" (run {run})"))
                                .unwrap_or_default()
                        ),
                    };
                    report.facts.push(("promotion".into(), line));
                }
                "rollback_requested" => {
                    let mut line = format!(
                        "asked by {} at {}: {}",
                        text(event, "operator"),
                        offset(at),
                        strings(event, "steps").join(" ← ")
                    );
                    if let Some(reason) = event.get("emergency").and_then(Value::as_str) {
                        line.push_str(&format!(" (emergency: {reason})"));
                    }
                    if let Some(later) = event.get("forced_over").and_then(Value::as_str) {
                        line.push_str(&format!(" (--force over the later run {later})"));
                    }
                    report.facts.push(("rollback".into(), line));
                }
                "rollback_started" => {
                    report.facts.push((
                        "rollback".into(),
                        format!(
                            "started at {}: {} ({})",
                            offset(at),
                            text(event, "reason"),
                            strings(event, "steps").join(" ← ")
                        ),
                    ));
                }
                "rollback_finished" => {
                    let failed = event.get("failed").and_then(Value::as_u64).unwrap_or(0);
                    report.facts.push((
                        "rollback".into(),
                        if failed == 0 {
                            format!("finished at {}: every step undone", offset(at))
                        } else {
                            format!(
                                "finished at {}: {failed} steps could not be undone",
                                offset(at)
                            )
                        },
                    ));
                }
                "run_abandoned" => report.facts.push((
                    "abandoned".into(),
                    format!("by {} ({})", text(event, "by"), text(event, "state")),
                )),
                _ => {}
            }
            continue;
        };
        let known = index.contains_key(&id);
        if !known && !matches!(kind.as_str(), "step_started" | "step_finished") {
            if kind == "capability_call" {
                report.announcements.push(call(event, &id, at));
            }
            continue;
        }
        let position = *index.entry(id.clone()).or_insert_with(|| {
            report.steps.push(StepReport {
                id: id.clone(),
                name: id.clone(),
                ..StepReport::default()
            });
            report.steps.len() - 1
        });
        let step = &mut report.steps[position];
        let state = open.entry(id.clone()).or_default();
        // A wait ends with the step's next sign of life, except the
        // `step_finished` that parks it and the announcement of the wait.
        let parks = kind == "step_finished" && text(event, "status") == "waiting";
        if !parks
            && kind != "notified"
            && let Some((start, what)) = state.wait.take()
        {
            step.waits.push(Wait {
                span: Span { start, end: at },
                what,
            });
        }
        match kind.as_str() {
            "step_started" => {
                if let Some(start) = state.run.take() {
                    step.runs.push(Span { start, end: at });
                }
                state.run = Some(at);
                step.name = text(event, "name");
                step.plugin = text(event, "plugin");
                step.status = "running".into();
            }
            "step_finished" => {
                if let Some(start) = state.run.take() {
                    step.runs.push(Span { start, end: at });
                }
                step.status = text(event, "status");
                step.summary = text(event, "summary");
                if let Some(outputs) = event.get("outputs").and_then(Value::as_object) {
                    for (key, value) in outputs {
                        step.outputs
                            .insert(key.clone(), value.as_str().unwrap_or("").to_owned());
                    }
                }
                if parks && state.wait.is_none() {
                    let what = if step.plugin == "manual" {
                        "waits for a person to confirm".to_owned()
                    } else {
                        "parked".to_owned()
                    };
                    state.wait = Some((at, what));
                }
                if step.status != "succeeded" {
                    collect_breaches(&id, &step.summary, &mut breaches);
                }
            }
            "step_waiting" => {
                let parked = event.get("parked").and_then(Value::as_bool) == Some(true);
                state.wait = Some((
                    at,
                    format!(
                        "round {}: {}{}",
                        event.get("round").and_then(Value::as_u64).unwrap_or(0),
                        text(event, "status"),
                        if parked { " (parked)" } else { "" }
                    ),
                ));
            }
            "log" => {
                let message = text(event, "message");
                collect_breaches(&id, &message, &mut breaches);
                step.lines.push(Line {
                    at,
                    level: text(event, "level"),
                    message,
                });
            }
            "progress" | "milestone" => {
                let message = text(event, "message");
                if kind == "progress"
                    && let Some((label, values)) = metric_values(&message)
                {
                    for (name, value) in values {
                        let found = metrics
                            .iter()
                            .position(|metric| metric.step == id && metric.name == name);
                        let position = found.unwrap_or_else(|| {
                            metrics.push(Metric {
                                step: id.clone(),
                                name: name.clone(),
                                ..Metric::default()
                            });
                            metrics.len() - 1
                        });
                        metrics[position].rounds.push((label.clone(), value));
                    }
                }
                step.lines.push(Line {
                    at,
                    level: kind.clone(),
                    message,
                });
            }
            "step_retry" => step.lines.push(Line {
                at,
                level: "retry".into(),
                message: format!(
                    "try {} failed, trying again in {}: {}",
                    event.get("attempt").and_then(Value::as_u64).unwrap_or(0),
                    duration(event.get("delay_ms").and_then(Value::as_f64).unwrap_or(0.0)),
                    text(event, "reason")
                ),
            }),
            "capability_call" => step.calls.push(call(event, &id, at)),
            "checkpoint" => step
                .checkpoints
                .push((text(event, "key"), text(event, "value"))),
            "rollback_step_started" => state.rollback = Some(at),
            "step_rolled_back" => {
                let start = state.rollback.take().unwrap_or(at);
                step.rollback = Some(Rollback {
                    span: Span { start, end: at },
                    status: text(event, "status"),
                    summary: text(event, "summary"),
                });
            }
            "decision_needed" => {
                state.wait = Some((at, "waits for a decision (runbook decide)".into()));
            }
            "decided" => {
                let mut line = format!(
                    "{} chose {} ({})",
                    text(event, "by"),
                    text(event, "choice"),
                    text(event, "how")
                );
                let note = text(event, "note");
                if !note.is_empty() {
                    line.push_str(&format!(": {note}"));
                }
                step.people.push(line.clone());
                report.marks.push(Mark {
                    at,
                    what: format!("{id}: {line}"),
                });
                between.push("a decision");
            }
            "confirmed" => {
                let line = format!(
                    "confirmed by {}: {}",
                    text(event, "by"),
                    strings(event, "items").join("; ")
                );
                step.people.push(line.clone());
                report.marks.push(Mark {
                    at,
                    what: format!("{id}: {line}"),
                });
                between.push("a confirmation");
            }
            _ => {}
        }
    }
    // What never ended ends with the journal.
    let end = now;
    for step in &mut report.steps {
        let Some(state) = open.get_mut(&step.id) else {
            continue;
        };
        if let Some(start) = state.run.take() {
            step.runs.push(Span { start, end });
            if record.finished.is_some() {
                step.status = "interrupted".into();
            }
        }
        if let Some((start, what)) = state.wait.take() {
            step.waits.push(Wait {
                span: Span { start, end },
                what,
            });
        }
        if let Some(start) = state.rollback.take() {
            step.rollback = Some(Rollback {
                span: Span { start, end },
                status: "interrupted".into(),
                summary: String::new(),
            });
        }
    }
    if let Some(start) = process.take() {
        report.processes.push(Span { start, end });
    }
    if let Some((start, what)) = run_wait.take() {
        report.waits.push(Wait {
            span: Span { start, end },
            what,
        });
    }
    for metric in &mut metrics {
        let stated = limits
            .get(&metric.step)
            .or_else(|| limits.get(base_id(&metric.step)))
            .and_then(|checks| checks.get(&metric.name))
            .copied()
            .unwrap_or_default();
        let read = breaches
            .get(&metric.step)
            .and_then(|checks| checks.get(&metric.name))
            .copied()
            .unwrap_or_default();
        metric.max = stated.0.or(read.0);
        metric.min = stated.1.or(read.1);
    }
    report.metrics = metrics;
    report.duration_ms = end;
    report
}

fn run_status(record: &RunRecord) -> String {
    if record.abandoned {
        return "abandoned".into();
    }
    if let Some((step, _)) = record.awaiting_decision() {
        return format!("waiting for a decision on `{step}`");
    }
    if let Some((step, wait)) = record.parked() {
        return if step.is_empty() {
            format!("waiting: {}", wait.status)
        } else {
            format!("waiting at `{step}`: {}", wait.status)
        };
    }
    match record.finished {
        Some(status) => status.as_str().to_owned(),
        None => "running or interrupted".into(),
    }
}

fn strings(event: &Value, key: &str) -> Vec<String> {
    event
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn call(event: &Value, step: &str, at: f64) -> Call {
    Call {
        at,
        step: step.to_owned(),
        capability: text(event, "capability"),
        requested: text(event, "requested"),
        decision: text(event, "decision"),
        grant: event
            .get("grant")
            .and_then(Value::as_str)
            .map(str::to_owned),
        outcome: text(event, "outcome"),
        ok: event.get("ok").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// A `for_each` instance's id without its item (`deploy[api]` → `deploy`).
fn base_id(id: &str) -> &str {
    id.split('[').next().unwrap_or(id)
}

/// The metric values of an analysis round's progress message: metrics-gate
/// writes `round 2/5: error_rate=0.0013 p95=0.17`, canary-shift `canary
/// 10% · error_rate=0.0013 p95=0.17`; a check without data is
/// `name=no data`. Anything else is not a round.
pub fn metric_values(message: &str) -> Option<(String, Vec<MetricValue>)> {
    let (label, rest) = message
        .split_once(" · ")
        .or_else(|| message.split_once(": "))?;
    let mut values = Vec::new();
    let mut tokens = rest.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        let (name, value) = token.split_once('=')?;
        if name.is_empty() {
            return None;
        }
        let value = if value == "no" && tokens.peek() == Some(&"data") {
            tokens.next();
            None
        } else {
            Some(
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite())?,
            )
        };
        values.push((name.to_owned(), value));
    }
    (!values.is_empty()).then(|| (label.trim().to_owned(), values))
}

/// Limits read from a breach the analysis reported: `error_rate = 0.0013
/// is above 0.001`, `free = 3 is below 10`.
fn collect_breaches(step: &str, message: &str, into: &mut Limits) {
    for (marker, above) in [(" is above ", true), (" is below ", false)] {
        let mut rest = message;
        while let Some(found) = rest.find(marker) {
            let before = &rest[..found];
            let after = &rest[found + marker.len()..];
            rest = after;
            let Some((name, _value)) = before.rsplit_once(" = ") else {
                continue;
            };
            let name = name.rsplit([' ', ':', '(']).next().unwrap_or(name);
            let token: String = after
                .chars()
                .take_while(|character| {
                    character.is_ascii_digit() || matches!(character, '.' | '-' | 'e' | '+')
                })
                .collect();
            // `above 3× the baseline 0.2` is relative, not a limit.
            if after[token.len()..].starts_with('×') {
                continue;
            }
            let Ok(limit) = token.trim_end_matches(['.', 'e', '+', '-']).parse::<f64>() else {
                continue;
            };
            let entry = into
                .entry(step.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default();
            if above {
                entry.0 = Some(limit);
            } else {
                entry.1 = Some(limit);
            }
        }
    }
}

/// The literal `max` and `min` of each check the runbook gives a step
/// (`with.checks`, as metrics-gate takes them, or `with.analysis.checks`,
/// as canary-shift and lambda-alias do): step -> check -> (max, min).
/// Empty when the file is gone or unreadable.
pub fn limits_in_runbook(file: &Path) -> Limits {
    let mut limits = BTreeMap::new();
    let Ok(source) = std::fs::read_to_string(file) else {
        return limits;
    };
    let Ok(table) = toml::from_str::<toml::Table>(&source) else {
        return limits;
    };
    let number = |value: Option<&toml::Value>| match value? {
        toml::Value::Integer(integer) => Some(*integer as f64),
        toml::Value::Float(float) => Some(*float),
        toml::Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    for step in table
        .get("steps")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = step.get("id").and_then(toml::Value::as_str) else {
            continue;
        };
        let Some(with) = step.get("with") else {
            continue;
        };
        let checks = with
            .get("checks")
            .or_else(|| {
                with.get("analysis")
                    .and_then(|analysis| analysis.get("checks"))
            })
            .and_then(toml::Value::as_array);
        for check in checks.into_iter().flatten() {
            let Some(name) = check.get("name").and_then(toml::Value::as_str) else {
                continue;
            };
            let max = number(check.get("max"));
            let min = number(check.get("min"));
            if max.is_some() || min.is_some() {
                limits
                    .entry(id.to_owned())
                    .or_insert_with(BTreeMap::new)
                    .insert(name.to_owned(), (max, min));
            }
        }
    }
    limits
}

/// `+1.234s`: an offset from the run's start.
pub fn offset(ms: f64) -> String {
    format!("+{}", duration(ms))
}

/// `405ms`, `1.2s`, `3m04s`, `2h05m`.
pub fn duration(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < 1_000.0 {
        format!("{}ms", ms.round() as u64)
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1_000.0)
    } else if ms < 3_600_000.0 {
        let seconds = (ms / 1_000.0).round() as u64;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        let minutes = (ms / 60_000.0).round() as u64;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// A number as an operator reads it: at most 4 significant digits.
fn number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    if !value.is_finite() {
        return value.to_string();
    }
    if (1e-6..1e6).contains(&value.abs()) {
        let magnitude = value.abs().log10().floor() as i32;
        let decimals = usize::try_from((3 - magnitude).max(0)).unwrap_or(0);
        let text = format!("{value:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    } else {
        format!("{value:.3e}")
    }
}

/// Text for HTML, control characters made visible first.
pub fn escape(raw: &str) -> String {
    let visible = crate::terminal::text(raw);
    let mut out = String::with_capacity(visible.len());
    for character in visible.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The colour of a status, on a bar and a badge.
fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#2e7d32",
        "failed" => "#c62828",
        "denied" => "#8e0000",
        "cancelled" => "#616161",
        "skipped" => "#bdbdbd",
        "waiting" => "#f9a825",
        "rolled_back" => "#6a1b9a",
        "interrupted" => "#ef6c00",
        _ => "#1565c0",
    }
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#212121;margin:24px;max-width:1160px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}
pre{background:#f5f5f5;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:4px 0;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
code{font:12px ui-monospace,Menlo,Consolas,monospace}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-size:12px}
.swatch{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #9e9e9e}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
.step{border-left:4px solid #e0e0e0;padding-left:12px;margin:12px 0}
.muted{color:#757575}
.warn{color:#e65100}.error{color:#c62828}
svg text{font:11px system-ui,sans-serif;fill:#424242}
";

fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge\" style=\"background:{}\">{}</span>",
        colour(status),
        escape(status)
    )
}

/// The report as one self-contained HTML page.
pub fn html(report: &Report) -> String {
    let mut page = String::new();
    let title = format!(
        "{} · {} · run {}",
        report.runbook,
        report.environment.as_deref().unwrap_or("-"),
        report.run_id
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    header_html(&mut page, report);
    page.push_str("<h2>Timeline</h2>\n");
    timeline_svg(&mut page, report);
    legend_html(&mut page);
    if !report.metrics.is_empty() {
        page.push_str("<h2>Analysis rounds</h2>\n");
        for metric in &report.metrics {
            chart_svg(&mut page, metric);
        }
    }
    page.push_str("<h2>Steps</h2>\n");
    for step in &report.steps {
        step_html(&mut page, step);
    }
    if !report.announcements.is_empty() {
        page.push_str("<h2>Announcements</h2>\n");
        calls_html(&mut page, &report.announcements, true);
    }
    audit_html(&mut page, report);
    let _ = write!(
        page,
        "<p class=\"muted\">Written by <code>runbook report</code> from the run's journal and audit log.</p>\n</body>\n</html>\n"
    );
    page
}

fn header_html(page: &mut String, report: &Report) {
    let _ = write!(
        page,
        "<h1>{} <span class=\"muted\">· {}</span></h1>\n<p>{} run <code>{}</code></p>\n<table class=\"facts\">\n",
        escape(&report.runbook),
        escape(report.environment.as_deref().unwrap_or("no environment")),
        badge(&report.status),
        escape(&report.run_id)
    );
    let mut row = |label: &str, value: String| {
        let _ = writeln!(page, "<tr><th>{}</th><td>{value}</td></tr>", escape(label));
    };
    row(
        "runbook",
        format!(
            "{} (<code>{}</code>)",
            escape(&report.runbook),
            escape(&report.file)
        ),
    );
    row(
        "environment",
        escape(report.environment.as_deref().unwrap_or("-")),
    );
    row("run", format!("<code>{}</code>", escape(&report.run_id)));
    row("operator", escape(&report.operator));
    row(
        "parameters",
        if report.params.is_empty() {
            "none".into()
        } else {
            report
                .params
                .iter()
                .map(|(key, value)| format!("<code>{}={}</code>", escape(key), escape(value)))
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    row("status", escape(&report.status));
    row("started", escape(&report.started));
    row(
        "ended",
        escape(report.ended.as_deref().unwrap_or("not ended")),
    );
    row("duration", escape(&duration(report.duration_ms)));
    row(
        "approvals",
        if report.approvals.is_empty() {
            "none".into()
        } else {
            report
                .approvals
                .iter()
                .map(|(who, at)| format!("{} at {}", escape(who), escape(&offset(*at))))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    for step in &report.steps {
        for person in &step.people {
            row(
                "confirmation",
                format!("{}: {}", escape(&step.id), escape(person)),
            );
        }
    }
    for (label, value) in &report.facts {
        row(label, escape(value));
    }
    page.push_str("</table>\n");
}

const WIDTH: f64 = 1100.0;
const LABELS: f64 = 190.0;
const ROW: f64 = 24.0;
const TOP: f64 = 30.0;

fn timeline_svg(page: &mut String, report: &Report) {
    let ran = report.ran();
    let rows = ran.len() + 1;
    let height = TOP + ROW * rows as f64 + 10.0;
    let plot = WIDTH - LABELS - 20.0;
    let span = report.duration_ms.max(1.0);
    let x = |ms: f64| LABELS + (ms / span).clamp(0.0, 1.0) * plot;
    let width = |range: Span| ((range.length() / span) * plot).max(3.0);
    let _ = writeln!(
        page,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"timeline of the run\">\n\
         <defs>\n\
         <pattern id=\"hatch-wait\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fff8e1\"/><rect width=\"3\" height=\"6\" fill=\"#f9a825\"/></pattern>\n\
         <pattern id=\"hatch-rollback\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(-45)\"><rect width=\"6\" height=\"6\" fill=\"#f3e5f5\"/><rect width=\"3\" height=\"6\" fill=\"#6a1b9a\"/></pattern>\n\
         </defs>"
    );
    // The axis: six ticks.
    for tick in 0..=5_u32 {
        let ms = span * f64::from(tick) / 5.0;
        let at = x(ms);
        let _ = writeln!(
            page,
            "<line x1=\"{at:.1}\" y1=\"{:.1}\" x2=\"{at:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/><text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP - 6.0,
            height - 6.0,
            TOP - 12.0,
            escape(&offset(ms))
        );
    }
    // The run's row: its processes, its waits between them, approvals.
    let y = TOP;
    let _ = writeln!(
        page,
        "<text x=\"4\" y=\"{:.1}\">run</text>",
        y + ROW / 2.0 + 4.0
    );
    for process in &report.processes {
        let _ = writeln!(
            page,
            "<rect class=\"process\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"#90a4ae\"><title>process {} to {}</title></rect>",
            x(process.start),
            y + ROW / 2.0 - 3.0,
            width(*process),
            escape(&offset(process.start)),
            escape(&offset(process.end))
        );
    }
    for wait in &report.waits {
        let _ = writeln!(
            page,
            "<rect class=\"wait\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"url(#hatch-wait)\" stroke=\"#f9a825\"><title>{}: {} for {}</title></rect>",
            x(wait.span.start),
            y + 5.0,
            width(wait.span),
            escape(&offset(wait.span.start)),
            escape(&wait.what),
            escape(&duration(wait.span.length()))
        );
    }
    for mark in &report.marks {
        let at = x(mark.at);
        let middle = y + ROW / 2.0;
        let _ = writeln!(
            page,
            "<path class=\"mark\" d=\"M{at:.1} {:.1} l5 6 l-5 6 l-5 -6 z\" fill=\"#1565c0\"><title>{}: {}</title></path>",
            middle - 6.0,
            escape(&offset(mark.at)),
            escape(&mark.what)
        );
    }
    for (row, step) in ran.iter().enumerate() {
        let y = TOP + ROW * (row + 1) as f64;
        let label: String = step.id.chars().take(28).collect();
        let _ = writeln!(
            page,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + ROW / 2.0 + 4.0,
            escape(&label)
        );
        let total = step.span().map(|span| span.length()).unwrap_or_default();
        let _ = writeln!(
            page,
            "<g class=\"bar\" data-step=\"{}\" data-status=\"{}\"><title>{} ({}): {} in {}</title>",
            escape(&step.id),
            escape(&step.status),
            escape(&step.id),
            escape(&step.plugin),
            escape(&step.status),
            escape(&duration(total))
        );
        for run in &step.runs {
            let _ = writeln!(
                page,
                "<rect class=\"run\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" rx=\"2\" fill=\"{}\"/>",
                x(run.start),
                y + 5.0,
                width(*run),
                colour(&step.status)
            );
        }
        for wait in &step.waits {
            let _ = writeln!(
                page,
                "<rect class=\"wait\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"url(#hatch-wait)\" stroke=\"#f9a825\"><title>{}</title></rect>",
                x(wait.span.start),
                y + 5.0,
                width(wait.span),
                escape(&format!(
                    "{} for {}",
                    wait.what,
                    duration(wait.span.length())
                ))
            );
        }
        if let Some(rollback) = &step.rollback {
            let _ = writeln!(
                page,
                "<rect class=\"rollback\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"url(#hatch-rollback)\" stroke=\"#6a1b9a\"><title>{}</title></rect>",
                x(rollback.span.start),
                y + 5.0,
                width(rollback.span),
                escape(&format!(
                    "rollback {}: {}",
                    rollback.status, rollback.summary
                ))
            );
        }
        page.push_str("</g>\n");
    }
    page.push_str("</svg>\n");
}

fn legend_html(page: &mut String) {
    page.push_str("<p class=\"muted\">");
    for status in [
        "succeeded",
        "failed",
        "denied",
        "cancelled",
        "waiting",
        "interrupted",
    ] {
        let _ = write!(
            page,
            "<span class=\"swatch\" style=\"background:{}\"></span>{status}",
            colour(status)
        );
    }
    page.push_str(
        "<span class=\"swatch\" style=\"background:repeating-linear-gradient(45deg,#f9a825 0 3px,#fff8e1 3px 6px)\"></span>waiting (rounds, parked, a person)\
         <span class=\"swatch\" style=\"background:repeating-linear-gradient(-45deg,#6a1b9a 0 3px,#f3e5f5 3px 6px)\"></span>rollback\
         <span class=\"swatch\" style=\"background:#1565c0;transform:rotate(45deg);width:9px;height:9px\"></span>approval, confirmation, decision</p>\n",
    );
}

fn chart_svg(page: &mut String, metric: &Metric) {
    let (width, height, left, bottom, top) = (560.0, 180.0, 60.0, 34.0, 14.0);
    let values: Vec<f64> = metric
        .rounds
        .iter()
        .filter_map(|(_, value)| *value)
        .collect();
    let mut low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for limit in [metric.max, metric.min].into_iter().flatten() {
        low = low.min(limit);
        high = high.max(limit);
    }
    if !low.is_finite() || !high.is_finite() {
        low = 0.0;
        high = 1.0;
    }
    low = low.min(0.0);
    if high <= low {
        high = low + 1.0;
    }
    high += (high - low) * 0.1;
    let plot_width = width - left - 16.0;
    let plot_height = height - top - bottom;
    let count = metric.rounds.len().max(1);
    let x = |index: usize| {
        if count == 1 {
            left + plot_width / 2.0
        } else {
            left + plot_width * index as f64 / (count - 1) as f64
        }
    };
    let y = |value: f64| top + plot_height * (1.0 - (value - low) / (high - low));
    let limits = [
        metric.max.map(|max| format!("max {}", number(max))),
        metric.min.map(|min| format!("min {}", number(min))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let _ = writeln!(
        page,
        "<h3>{} · <code>{}</code> <span class=\"muted\">{}</span></h3>",
        escape(&metric.step),
        escape(&metric.name),
        escape(&if limits.is_empty() {
            "(no limit known)".to_owned()
        } else {
            limits.join(", ")
        })
    );
    let _ = writeln!(
        page,
        "<svg class=\"chart\" data-step=\"{}\" data-metric=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">",
        escape(&metric.step),
        escape(&metric.name)
    );
    let _ = writeln!(
        page,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#9e9e9e\"/><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#9e9e9e\"/>",
        top + plot_height,
        top + plot_height,
        left + plot_width,
        top + plot_height
    );
    for value in [low, (low + high) / 2.0, high] {
        let _ = writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y(value) + 4.0,
            escape(&number(value))
        );
    }
    for (limit, name) in [(metric.max, "max"), (metric.min, "min")] {
        let Some(limit) = limit else { continue };
        let _ = writeln!(
            page,
            "<line class=\"limit\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#c62828\" stroke-dasharray=\"5 4\"/><text x=\"{1:.1}\" y=\"{2:.1}\" text-anchor=\"end\" style=\"fill:#c62828\">{name} {3}</text>",
            y(limit),
            left + plot_width,
            y(limit) - 4.0,
            escape(&number(limit))
        );
    }
    let points: Vec<String> = metric
        .rounds
        .iter()
        .enumerate()
        .filter_map(|(index, (_, value))| {
            value.map(|value| format!("{:.1},{:.1}", x(index), y(value)))
        })
        .collect();
    if points.len() > 1 {
        let _ = writeln!(
            page,
            "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    for (index, (label, value)) in metric.rounds.iter().enumerate() {
        match value {
            Some(value) => {
                let _ = writeln!(
                    page,
                    "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"><title>{}: {}</title></circle>",
                    x(index),
                    y(*value),
                    if metric.breaks(*value) {
                        "#c62828"
                    } else {
                        "#1565c0"
                    },
                    escape(label),
                    escape(&number(*value))
                );
            }
            None => {
                let _ = writeln!(
                    page,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">?<title>{}: no data</title></text>",
                    x(index),
                    top + plot_height - 4.0,
                    escape(label)
                );
            }
        }
        if count <= 12 || index == 0 || index + 1 == count {
            let _ = writeln!(
                page,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x(index),
                top + plot_height + 16.0,
                escape(&short_label(label))
            );
        }
    }
    page.push_str("</svg>\n");
}

/// `max 0.001, min 0`, or `unknown`.
fn limits_text(metric: &Metric) -> String {
    let limits = [
        metric.max.map(|max| format!("max {}", number(max))),
        metric.min.map(|min| format!("min {}", number(min))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    if limits.is_empty() {
        "unknown".to_owned()
    } else {
        limits.join(", ")
    }
}

/// `round 2/5` → `2/5`, `canary 10%` → `10%`: what fits under a point.
fn short_label(label: &str) -> String {
    label
        .rsplit(' ')
        .next()
        .unwrap_or(label)
        .chars()
        .take(10)
        .collect()
}

fn step_html(page: &mut String, step: &StepReport) {
    let elapsed = format!(" · {}", step.when());
    let _ = writeln!(
        page,
        "<section class=\"step\" id=\"step-{}\" style=\"border-color:{}\">\n<h3><code>{}</code> {} <span class=\"muted\">{}{}</span></h3>",
        escape(&step.id),
        colour(&step.status),
        escape(&step.id),
        badge(&step.status),
        escape(step.plugin_or_dash()),
        escape(&elapsed)
    );
    if step.name != step.id && !step.name.is_empty() {
        let _ = writeln!(page, "<p>{}</p>", escape(&step.name));
    }
    if !step.summary.is_empty() {
        let _ = writeln!(
            page,
            "<pre class=\"summary\">{}</pre>",
            escape(&step.summary)
        );
    }
    for person in &step.people {
        let _ = writeln!(page, "<p>{}</p>", escape(person));
    }
    if !step.waits.is_empty() {
        page.push_str("<p>Waits:</p>\n<ul>\n");
        for wait in &step.waits {
            let _ = writeln!(
                page,
                "<li>{}: {} ({})</li>",
                escape(&offset(wait.span.start)),
                escape(&wait.what),
                escape(&duration(wait.span.length()))
            );
        }
        page.push_str("</ul>\n");
    }
    if let Some(rollback) = &step.rollback {
        let _ = writeln!(
            page,
            "<p>Rollback at {}: {} {}</p>",
            escape(&offset(rollback.span.start)),
            badge(&rollback.status),
            escape(&rollback.summary)
        );
    }
    if !step.outputs.is_empty() {
        page.push_str("<table class=\"outputs\"><tr><th>output</th><th>value</th></tr>\n");
        for (key, value) in &step.outputs {
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(key),
                escape(value)
            );
        }
        page.push_str("</table>\n");
    }
    if !step.checkpoints.is_empty() {
        page.push_str("<table class=\"checkpoints\"><tr><th>checkpoint</th><th>value</th></tr>\n");
        for (key, value) in &step.checkpoints {
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(key),
                escape(value)
            );
        }
        page.push_str("</table>\n");
    }
    if !step.calls.is_empty() {
        calls_html(page, &step.calls, false);
    }
    if !step.lines.is_empty() {
        page.push_str("<pre class=\"log\">");
        for line in &step.lines {
            let class = match line.level.as_str() {
                "warn" | "retry" => "warn",
                "error" => "error",
                _ => "",
            };
            let _ = writeln!(
                page,
                "<span class=\"{class}\">{:>9} [{}] {}</span>",
                escape(&offset(line.at)),
                escape(&line.level),
                escape(&line.message)
            );
        }
        page.push_str("</pre>\n");
    }
    page.push_str("</section>\n");
}

fn calls_html(page: &mut String, calls: &[Call], with_step: bool) {
    page.push_str("<table class=\"calls\"><tr><th>at</th>");
    if with_step {
        page.push_str("<th>by</th>");
    }
    page.push_str("<th>capability</th><th>requested</th><th>decision</th><th>outcome</th></tr>\n");
    for call in calls {
        let _ = write!(page, "<tr><td>{}</td>", escape(&offset(call.at)));
        if with_step {
            let _ = write!(page, "<td><code>{}</code></td>", escape(&call.step));
        }
        let decision_class = if call.decision == "denied" { "bad" } else { "" };
        let _ = writeln!(
            page,
            "<td>{}</td><td><code>{}</code>{}</td><td class=\"{decision_class}\">{}</td><td class=\"{}\">{}</td></tr>",
            escape(&call.capability),
            escape(&call.requested),
            call.grant
                .as_ref()
                .map(|grant| format!("<br><span class=\"muted\">grant {}</span>", escape(grant)))
                .unwrap_or_default(),
            escape(&call.decision),
            if call.ok { "ok" } else { "bad" },
            escape(&call.outcome)
        );
    }
    page.push_str("</table>\n");
}

fn audit_html(page: &mut String, report: &Report) {
    page.push_str("<h2>Audit log</h2>\n");
    if report.audit.intact {
        let _ = writeln!(
            page,
            "<p class=\"audit ok\" data-intact=\"true\">✓ chain intact: {} records, each chained to the one before.</p>",
            report.audit.records
        );
    } else {
        let _ = writeln!(
            page,
            "<p class=\"audit bad\" data-intact=\"false\">✗ chain broken ({} records): {}</p>",
            report.audit.records,
            escape(&report.audit.detail)
        );
    }
    if report.audit.intact && !report.audit.detail.is_empty() {
        let _ = writeln!(
            page,
            "<p class=\"muted\">note: {}</p>",
            escape(&report.audit.detail)
        );
    }
}

/// Text for a Markdown table cell or line: control characters made
/// visible, HTML and the table's pipes escaped, lines joined.
fn md(raw: &str) -> String {
    escape(raw)
        .replace('|', "\\|")
        .replace('`', "\\`")
        .replace('*', "\\*")
        .replace('_', "\\_")
        .replace('[', "\\[")
        .replace('\n', " / ")
}

/// Text for a fenced block: a fence longer than any run of backticks in it.
fn fenced(raw: &str) -> String {
    let visible = crate::terminal::text(raw).into_owned();
    let mut longest = 0;
    let mut run = 0;
    for character in visible.chars() {
        if character == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}\n{visible}\n{fence}\n")
}

/// The report as Markdown: the same content, the timeline as a table.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} · {} · run {}\n",
        md(&report.runbook),
        md(report.environment.as_deref().unwrap_or("-")),
        md(&report.run_id)
    );
    out.push_str("| | |\n|---|---|\n");
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "| {} | {value} |", md(label));
    };
    row(
        "runbook",
        format!("{} ({})", md(&report.runbook), md(&report.file)),
    );
    row(
        "environment",
        md(report.environment.as_deref().unwrap_or("-")),
    );
    row("run", md(&report.run_id));
    row("operator", md(&report.operator));
    row(
        "parameters",
        if report.params.is_empty() {
            "none".into()
        } else {
            report
                .params
                .iter()
                .map(|(key, value)| md(&format!("{key}={value}")))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    row("status", md(&report.status));
    row("started", md(&report.started));
    row("ended", md(report.ended.as_deref().unwrap_or("not ended")));
    row("duration", md(&duration(report.duration_ms)));
    row(
        "approvals",
        if report.approvals.is_empty() {
            "none".into()
        } else {
            report
                .approvals
                .iter()
                .map(|(who, at)| md(&format!("{who} at {}", offset(*at))))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    for step in &report.steps {
        for person in &step.people {
            row("confirmation", md(&format!("{}: {person}", step.id)));
        }
    }
    for (label, value) in &report.facts {
        row(label, md(value));
    }
    out.push_str("\n## Timeline\n\n| step | plugin | status | start | end | duration | waits | rollback |\n|---|---|---|---|---|---|---|---|\n");
    for step in report.ran() {
        let span = step.span().unwrap_or_default();
        let waits = step
            .waits
            .iter()
            .map(|wait| {
                md(&format!(
                    "{}–{} {}",
                    offset(wait.span.start),
                    offset(wait.span.end),
                    wait.what
                ))
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let rollback = step
            .rollback
            .as_ref()
            .map(|rollback| {
                md(&format!(
                    "{}–{} {}",
                    offset(rollback.span.start),
                    offset(rollback.span.end),
                    rollback.status
                ))
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {waits} | {rollback} |",
            md(&step.id),
            md(&step.plugin),
            md(&step.status),
            offset(span.start),
            offset(span.end),
            duration(span.length())
        );
    }
    if !report.waits.is_empty() || !report.marks.is_empty() {
        out.push_str("\nThe run:\n\n");
        for wait in &report.waits {
            let _ = writeln!(
                out,
                "- {}–{}: {}",
                offset(wait.span.start),
                offset(wait.span.end),
                md(&wait.what)
            );
        }
        for mark in &report.marks {
            let _ = writeln!(out, "- {}: {}", offset(mark.at), md(&mark.what));
        }
    }
    if !report.metrics.is_empty() {
        out.push_str("\n## Analysis rounds\n");
        for metric in &report.metrics {
            let _ = writeln!(
                out,
                "\n### {} · {}\n\nlimit: {}\n\n| round | value | within |\n|---|---|---|",
                md(&metric.step),
                md(&metric.name),
                limits_text(metric)
            );
            for (label, value) in &metric.rounds {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    md(label),
                    value.map_or_else(|| "no data".to_owned(), number),
                    match value {
                        Some(value) if metric.breaks(*value) => "✗",
                        Some(_) if metric.max.is_some() || metric.min.is_some() => "✓",
                        _ => "",
                    }
                );
            }
        }
    }
    out.push_str("\n## Steps\n");
    for step in &report.steps {
        let when = step.when();
        let _ = writeln!(
            out,
            "\n### {} — {}\n\n{} · {}\n",
            md(&step.id),
            md(&step.status),
            md(step.plugin_or_dash()),
            md(&when)
        );
        if !step.summary.is_empty() {
            out.push_str(&fenced(&step.summary));
        }
        for person in &step.people {
            let _ = writeln!(out, "\n{}", md(person));
        }
        if let Some(rollback) = &step.rollback {
            let _ = writeln!(
                out,
                "\nRollback at {}: {} — {}",
                offset(rollback.span.start),
                md(&rollback.status),
                md(&rollback.summary)
            );
        }
        if !step.outputs.is_empty() {
            out.push_str("\n| output | value |\n|---|---|\n");
            for (key, value) in &step.outputs {
                let _ = writeln!(out, "| {} | {} |", md(key), md(value));
            }
        }
        if !step.calls.is_empty() {
            out.push_str(
                "\n| at | capability | requested | decision | outcome |\n|---|---|---|---|---|\n",
            );
            for call in &step.calls {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    offset(call.at),
                    md(&call.capability),
                    md(&call.requested),
                    md(&call.decision),
                    md(&call.outcome)
                );
            }
        }
        if !step.lines.is_empty() {
            let lines = step
                .lines
                .iter()
                .map(|line| format!("{:>9} [{}] {}", offset(line.at), line.level, line.message))
                .collect::<Vec<_>>()
                .join("\n");
            out.push('\n');
            out.push_str(&fenced(&lines));
        }
    }
    out.push_str("\n## Audit log\n\n");
    if report.audit.intact {
        let _ = writeln!(
            out,
            "✓ chain intact: {} records, each chained to the one before.",
            report.audit.records
        );
    } else {
        let _ = writeln!(
            out,
            "✗ chain broken ({} records): {}",
            report.audit.records,
            md(&report.audit.detail)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn numbers_read_as_an_operator_reads_them() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.0005), "0.0005");
        assert_eq!(number(0.04975), "0.04975");
        assert_eq!(number(200.0), "200");
        assert_eq!(number(-3.25), "-3.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1.5e9), "1.500e9");
    }
}
