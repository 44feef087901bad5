//! What the operator sees while a run goes: one line per finished step,
//! plugin logs beneath it, and on a terminal a live line per running step
//! with its elapsed time and latest progress message.

use crate::events::{Decision, Event, EventKind, EventWriter, Level, Status};
use crate::terminal;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The live display, for [`pause`]: the newest one drawn on a terminal.
static CURRENT: Mutex<std::sync::Weak<Mutex<Screen>>> = Mutex::new(std::sync::Weak::new());

/// Keeps the live progress lines off the terminal while a question is on
/// it (a checklist, a guided-failure choice), so the question stays
/// visible; they come back when it is dropped.
pub struct Paused {
    screen: Option<Arc<Mutex<Screen>>>,
}

/// Clears the live progress lines and keeps them off until the returned
/// guard is dropped. Without a live display it does nothing.
pub fn pause() -> Paused {
    let screen = CURRENT.lock().ok().and_then(|current| current.upgrade());
    if let Some(screen) = &screen
        && let Ok(mut screen) = screen.lock()
    {
        screen.redraw(&[]);
        screen.paused = true;
        screen.redraw(&[]);
    }
    Paused { screen }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(screen) = &self.screen
            && let Ok(mut screen) = screen.lock()
        {
            screen.paused = false;
            screen.redraw(&[]);
        }
    }
}

/// Draws events on stderr for a person.
pub struct Progress {
    shared: Arc<Mutex<Screen>>,
    stop: Arc<AtomicBool>,
}

struct Screen {
    live: bool,
    /// A question is on the terminal: no live lines are drawn (they would
    /// be drawn over it), finished lines still are.
    paused: bool,
    color: bool,
    verbose: bool,
    running: BTreeMap<String, Running>,
    drawn: usize,
    frame: usize,
}

struct Running {
    name: String,
    plugin: String,
    started: Instant,
    message: String,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Progress {
    /// A reporter on stderr; live redraws only when stderr is a terminal.
    pub fn stderr(verbose: bool) -> Self {
        use std::io::IsTerminal;
        let live = std::io::stderr().is_terminal();
        let color = live && std::env::var_os("NO_COLOR").is_none();
        let shared = Arc::new(Mutex::new(Screen {
            live,
            paused: false,
            color,
            verbose,
            running: BTreeMap::new(),
            drawn: 0,
            frame: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        if live && let Ok(mut current) = CURRENT.lock() {
            *current = Arc::downgrade(&shared);
        }
        if live {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let _ = std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        if let Ok(mut screen) = shared.lock() {
                            screen.frame += 1;
                            screen.redraw(&[]);
                        }
                    }
                });
        }
        Progress { shared, stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Screen {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Clears the live lines, prints `lines` for good, draws the live lines again.
    fn redraw(&mut self, lines: &[String]) {
        let mut out = String::new();
        if self.live && self.drawn > 0 {
            out.push_str(&format!("\x1b[{}F\x1b[0J", self.drawn));
        }
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        self.drawn = 0;
        if self.live && !self.paused {
            let width = terminal_width();
            for running in self.running.values() {
                let spinner = SPINNER[self.frame % SPINNER.len()];
                let mut line = format!(
                    "  {} {} {} {:>6}  {}",
                    self.paint("36", spinner),
                    running.name,
                    self.paint("2", &format!("({})", running.plugin)),
                    format_elapsed(running.started.elapsed()),
                    running.message
                );
                truncate_visible(&mut line, width);
                out.push_str(&line);
                out.push('\n');
                self.drawn += 1;
            }
        }
        let stderr = std::io::stderr();
        let mut lock = stderr.lock();
        let _ = lock.write_all(out.as_bytes());
        let _ = lock.flush();
    }
}

impl EventWriter for Progress {
    fn write(&mut self, event: &Event, _line: &str) {
        let Ok(mut screen) = self.shared.lock() else {
            return;
        };
        // Everything below draws only filtered text; the colours added by
        // `paint` are the only control sequences that reach the terminal.
        let event = &for_terminal(event);
        let step = event
            .step
            .as_ref()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let mut lines = Vec::new();
        match &event.kind {
            EventKind::RunStarted {
                run_id,
                runbook,
                environment,
                steps,
                ..
            } => {
                let environment = environment
                    .as_ref()
                    .map(|name| format!(" · env {name}"))
                    .unwrap_or_default();
                lines.push(format!(
                    "{} {runbook}{environment} · {steps} step{} · run {run_id}",
                    screen.paint("1", "▶"),
                    if *steps == 1 { "" } else { "s" }
                ));
            }
            EventKind::StepStarted { name, plugin, .. } => {
                if !screen.live {
                    lines.push(format!("  → {name} ({plugin})"));
                }
                screen.running.insert(
                    step.clone(),
                    Running {
                        name: name.clone(),
                        plugin: plugin.clone(),
                        started: Instant::now(),
                        message: String::new(),
                    },
                );
            }
            EventKind::Log { level, message } => {
                if *level >= Level::Info || screen.verbose {
                    let marker = match level {
                        Level::Warn => screen.paint("33", "│ warning:"),
                        Level::Error => screen.paint("31", "│ error:"),
                        _ => screen.paint("2", "│"),
                    };
                    for line in message.lines() {
                        lines.push(format!("      {marker} {line}"));
                    }
                }
            }
            EventKind::Progress { message, fraction } => {
                let text = match fraction {
                    Some(fraction) => format!("{message} ({:.0}%)", fraction * 100.0),
                    None => message.clone(),
                };
                if screen.live {
                    if let Some(running) = screen.running.get_mut(&step) {
                        running.message = text;
                    }
                } else {
                    lines.push(format!("      … {text}"));
                }
            }
            EventKind::CapabilityCall {
                capability,
                requested,
                decision,
                outcome,
                ok,
                duration_ms,
                ..
            } => match decision {
                Decision::Denied => lines.push(format!(
                    "      {} {requested}: {outcome}",
                    screen.paint("31", "✗ denied")
                )),
                Decision::HeldBack => lines.push(format!(
                    "      {} {capability}: {requested} (dry run)",
                    screen.paint("2", "⊘ not sent")
                )),
                Decision::Allowed if screen.verbose || !ok => lines.push(format!(
                    "      {} {requested} → {outcome} in {duration_ms:.1} ms",
                    screen.paint("2", capability)
                )),
                Decision::Allowed => {}
            },
            EventKind::StepFinished {
                status,
                summary,
                elapsed_ms,
                ..
            } => {
                let running = screen.running.remove(&step);
                let name = running.map_or_else(|| step.clone(), |running| running.name);
                let elapsed = format_elapsed(Duration::from_secs_f64(elapsed_ms / 1000.0));
                let (mark, code) = match status {
                    Status::Succeeded | Status::RolledBack => ("✓", "32"),
                    Status::Skipped => ("-", "2"),
                    Status::Waiting => ("⏸", "33"),
                    Status::Cancelled => ("⊘", "33"),
                    Status::Failed | Status::Denied => ("✗", "31"),
                };
                let summary = summary.replace('\n', "\n      ");
                lines.push(format!(
                    "  {} {name} {elapsed:>6}  {summary}",
                    screen.paint(code, mark)
                ));
            }
            EventKind::RunFinished {
                status,
                elapsed_ms,
                failed_step,
            } => {
                let elapsed = format_elapsed(Duration::from_secs_f64(elapsed_ms / 1000.0));
                let line = match (status, failed_step) {
                    (Status::Succeeded, _) => {
                        screen.paint("32;1", &format!("✓ run succeeded in {elapsed}"))
                    }
                    (Status::RolledBack, _) => {
                        screen.paint("32;1", &format!("↶ run rolled back in {elapsed}"))
                    }
                    (Status::Waiting, Some(step)) => {
                        screen.paint("33;1", &format!("⏸ run waits at step `{step}`"))
                    }
                    (Status::Waiting, None) => screen.paint("33;1", "⏸ run waits for approvals"),
                    (Status::Cancelled, _) => {
                        screen.paint("33;1", &format!("⊘ run cancelled after {elapsed}"))
                    }
                    (_, Some(step)) => screen.paint(
                        "31;1",
                        &format!("✗ run failed at step `{step}` after {elapsed}"),
                    ),
                    (_, None) => screen.paint("31;1", &format!("✗ run failed after {elapsed}")),
                };
                lines.push(line);
            }
            EventKind::Milestone { message } => {
                lines.push(format!("      {} {message}", screen.paint("1", "◆")));
            }
            EventKind::StepWaiting {
                status,
                wake_at,
                parked,
                ..
            } => {
                let next = wake_at
                    .parse::<jiff::Timestamp>()
                    .map(|wake| wake.strftime("%H:%M:%S UTC").to_string())
                    .unwrap_or_else(|_| wake_at.clone());
                let text = format!("{status}; next round at {next}");
                if *parked {
                    lines.push(format!("      {} {text}", screen.paint("33", "⏸ parked:")));
                } else if screen.live {
                    if let Some(running) = screen.running.get_mut(&step) {
                        running.message = text;
                    }
                } else {
                    lines.push(format!("      ⏳ {text}"));
                }
            }
            EventKind::StepRetry {
                attempt,
                delay_ms,
                reason,
            } => lines.push(format!(
                "      {} try {attempt} failed ({reason}); trying again in {}",
                screen.paint("33", "↻"),
                format_elapsed(Duration::from_millis(*delay_ms))
            )),
            EventKind::RollbackStarted { reason, steps, .. } => lines.push(screen.paint(
                "33;1",
                &format!(
                    "↶ rolling back {} step{} ({reason}): {}",
                    steps.len(),
                    if steps.len() == 1 { "" } else { "s" },
                    steps.join(" ← ")
                ),
            )),
            EventKind::StepRolledBack { status, summary } => {
                let (mark, code) = if *status == Status::RolledBack {
                    ("↶", "33")
                } else {
                    ("✗ ROLLBACK FAILED", "31;1")
                };
                lines.push(format!("  {} {step}  {summary}", screen.paint(code, mark)));
            }
            EventKind::RollbackFinished { failed } => {
                if *failed > 0 {
                    lines.push(screen.paint(
                        "31;1",
                        &format!(
                            "✗ {failed} step{} could not be rolled back",
                            if *failed == 1 { "" } else { "s" }
                        ),
                    ));
                }
            }
            EventKind::RunResumed {
                operator,
                rerun,
                skip,
                ..
            } => {
                let mut line = format!("{} resumed by {operator}", screen.paint("1", "▶"));
                if !rerun.is_empty() {
                    line.push_str(&format!("; running again: {}", rerun.join(", ")));
                }
                if !skip.is_empty() {
                    line.push_str(&format!("; skipping: {}", skip.join(", ")));
                }
                lines.push(line);
            }
            EventKind::RollbackRequested {
                operator,
                emergency,
                forced_over,
                ..
            } => {
                let mut line = format!("{} rollback asked by {operator}", screen.paint("1", "↶"));
                if let Some(later) = forced_over {
                    line.push_str(&format!("; forced over the later run {later}"));
                }
                if let Some(reason) = emergency {
                    line.push_str(&format!("; emergency: {reason}"));
                }
                lines.push(line);
            }
            EventKind::RunWaiting { until, reason } => {
                let at = until
                    .parse::<jiff::Timestamp>()
                    .map(|at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|_| until.clone());
                lines.push(format!(
                    "{} parked until {at}: waits for {reason}",
                    screen.paint("33;1", "⏸")
                ));
            }
            EventKind::Confirmed { by, .. } => lines.push(format!("      ✓ confirmed by {by}")),
            EventKind::DecisionNeeded { .. } => lines.push(format!(
                "      {} retry, skip, rollback or abort?",
                screen.paint("33;1", "⏸ waiting for a decision:")
            )),
            EventKind::Decided {
                choice, by, note, ..
            } => {
                let mut line = format!("      ✓ {by} chose {}", choice.as_str());
                if !note.is_empty() {
                    line.push_str(&format!(" ({note})"));
                }
                lines.push(line);
            }
            EventKind::Approved { by, signature, .. } => lines.push(match signature {
                Some(signature) => format!("  ✓ approved by {by} (signed, {})", signature.key),
                None => format!("  ✓ approved by {by} (unsigned)"),
            }),
            EventKind::OperatorSigned { signature, .. } => lines.push(format!(
                "  ✓ plan signed by the operator, {} ({})",
                signature.principal, signature.key
            )),
            EventKind::PromotionChecked {
                detail, overridden, ..
            } => lines.push(match overridden {
                None => format!("  ✓ promoted from {detail}"),
                Some(reason) => screen.paint(
                    "33",
                    &format!("  ⚠ promotion gate overridden (emergency: {reason}): {detail}"),
                ),
            }),
            // A target that failed said so in a warning; the rest is
            // detail.
            EventKind::Notified {
                moment,
                targets,
                ok,
            } => {
                if screen.verbose {
                    lines.push(format!(
                        "      {} {moment}: {ok} of {targets} target{} took it",
                        screen.paint("2", "✉ announced"),
                        if *targets == 1 { "" } else { "s" }
                    ));
                }
            }
            EventKind::AuditHead { .. }
            | EventKind::RollbackStepStarted { .. }
            | EventKind::Checkpoint { .. }
            | EventKind::RunAbandoned { .. } => {}
        }
        if !lines.is_empty()
            || matches!(
                event.kind,
                EventKind::StepStarted { .. } | EventKind::Progress { .. }
            )
        {
            screen.redraw(&lines);
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut screen) = self.shared.lock() {
            screen.running.clear();
            screen.redraw(&[]);
        }
    }
}

/// A copy of `event` whose every string (see [`Event::map_texts`]) has
/// passed [`terminal::text`]: the one place where event text is made safe
/// to draw.
fn for_terminal(event: &Event) -> Event {
    let mut event = event.clone();
    event.map_texts(|text| {
        if let std::borrow::Cow::Owned(clean) = terminal::text(text) {
            *text = clean;
        }
    });
    event
}

/// `850ms`, `12.3s`, `4m05s`.
pub fn format_elapsed(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 1.0 {
        format!("{}ms", elapsed.as_millis())
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{}m{:02}s", elapsed.as_secs() / 60, elapsed.as_secs() % 60)
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse().ok())
        .unwrap_or(100)
}

/// Cuts a line to `width` visible characters, ignoring colour codes.
fn truncate_visible(line: &mut String, width: usize) {
    let mut visible = 0;
    let mut in_escape = false;
    for (index, character) in line.char_indices() {
        if in_escape {
            in_escape = character != 'm';
            continue;
        }
        if character == '\x1b' {
            in_escape = true;
            continue;
        }
        visible += 1;
        if visible > width.saturating_sub(1) {
            line.truncate(index);
            line.push('…');
            line.push_str("\x1b[0m");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_of_an_event_is_filtered_before_it_is_drawn() {
        let forged = "\u{1b}[2K\r\u{9b}\u{202e}x".to_owned();
        let kinds = [
            EventKind::Log {
                level: Level::Info,
                message: forged.clone(),
            },
            EventKind::Progress {
                message: forged.clone(),
                fraction: None,
            },
            EventKind::CapabilityCall {
                capability: forged.clone(),
                requested: forged.clone(),
                decision: Decision::Denied,
                grant: Some(forged.clone()),
                outcome: forged.clone(),
                ok: false,
                dry_run: false,
                duration_ms: 0.0,
            },
            EventKind::CapabilityCall {
                capability: forged.clone(),
                requested: forged.clone(),
                decision: Decision::Allowed,
                grant: None,
                outcome: forged.clone(),
                ok: false,
                dry_run: true,
                duration_ms: 0.0,
            },
            EventKind::StepRetry {
                attempt: 1,
                delay_ms: 0,
                reason: forged.clone(),
            },
            EventKind::StepFinished {
                status: Status::Failed,
                summary: forged.clone(),
                outputs: [(forged.clone(), forged.clone())].into(),
                elapsed_ms: 0.0,
            },
            EventKind::StepRolledBack {
                status: Status::Failed,
                summary: forged.clone(),
            },
        ];
        for kind in kinds {
            let event = Event {
                time: String::new(),
                step: Some(crate::runbook::StepId(forged.clone())),
                kind,
            };
            let drawn = for_terminal(&event);
            // Serialized, a raw control character shows as `\u001b`; a
            // filtered one as the text `\u{1b}`.
            let json = serde_json::to_string(&drawn).unwrap();
            assert!(!json.contains("\\u001b") && !json.contains("\\r"), "{json}");
            assert!(
                !json.contains('\u{9b}') && !json.contains('\u{202e}'),
                "{json}"
            );
            assert!(json.contains("\\\\u{1b}[2K"), "{json}");
        }
    }

    #[test]
    fn elapsed_times_read_naturally() {
        assert_eq!(format_elapsed(Duration::from_millis(850)), "850ms");
        assert_eq!(format_elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_elapsed(Duration::from_secs(245)), "4m05s");
    }
}
