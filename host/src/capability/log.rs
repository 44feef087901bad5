//! Logging, the capability every step has: `log.log`, `log.progress`,
//! `log.milestone`, `log.checkpoint`, and what a plugin prints on stdout and stderr, all
//! drawn from one budget per call so a step's record stays small whatever
//! the plugin does. Granted to every step; nothing to check but the budget.

use super::{StepContext, StepState};
use crate::events::{EventKind, Level};
use crate::wit::PluginError;
use crate::wit::runbook::plugin::log;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Most bytes of log text kept from one call of a step's plugin: `log()`
/// and `progress()` messages and the lines it prints on stdout and stderr,
/// together.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// Most log events kept from one call of a step's plugin, counted like
/// [`MAX_LOG_BYTES`]: many tiny lines cost the journal more than their text.
pub const MAX_LOG_LINES: usize = 10_000;

/// Links `runbook:plugin/log`.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, HasSelf<StepState>>(linker, |state| state)
}

/// Makes the plugin's stdout and stderr the step's log lines (info and
/// warnings), drawing on the call's `budget`.
pub fn capture_output(
    builder: &mut wasmtime_wasi::WasiCtxBuilder,
    context: &Arc<StepContext>,
    budget: &Arc<LogBudget>,
) {
    builder
        .stdout(LogStream::new(
            Arc::clone(context),
            Arc::clone(budget),
            Level::Info,
        ))
        .stderr(LogStream::new(
            Arc::clone(context),
            Arc::clone(budget),
            Level::Warn,
        ));
}

impl log::Host for StepState {
    async fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(message, 8 * 1024);
        if self.log_budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Log {
                level: level.into(),
                message,
            });
        }
    }

    async fn progress(&mut self, message: String, fraction: Option<f32>) {
        let fraction = fraction
            .filter(|value| value.is_finite())
            .map(|value| value.clamp(0.0, 1.0));
        let message = truncate(message, 1024);
        if self.log_budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Progress { message, fraction });
        }
    }

    async fn milestone(&mut self, message: String) {
        let message = truncate(message, 1024);
        if self.log_budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Milestone { message });
        }
    }

    async fn checkpoint(&mut self, key: String, value: String) -> Result<(), PluginError> {
        self.record_checkpoint(key, value)
    }
}

impl StepState {
    /// `log.checkpoint`: durable before it returns, first value kept.
    fn record_checkpoint(&mut self, key: String, value: String) -> Result<(), PluginError> {
        const MAX_KEY: usize = 256;
        const MAX_VALUE: usize = 256 * 1024;
        const MAX_KEYS: usize = 64;
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(PluginError::Failed(format!(
                "a checkpoint's key is at most {MAX_KEY} bytes and its value {} KiB",
                MAX_VALUE / 1024
            )));
        }
        let context = &self.context;
        if context.dry_run {
            return Ok(());
        }
        let fresh = {
            let mut checkpoints = context
                .checkpoints
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if checkpoints.contains_key(&key) {
                false
            } else if checkpoints.len() >= MAX_KEYS {
                return Err(PluginError::Failed(format!(
                    "a step records at most {MAX_KEYS} checkpoints"
                )));
            } else {
                checkpoints.insert(key.clone(), value.clone());
                true
            }
        };
        if fresh {
            context.emit(EventKind::Checkpoint { key, value });
        }
        match context.events.failure() {
            None => Ok(()),
            Some(failure) => Err(PluginError::Failed(format!(
                "the checkpoint could not be recorded, so nothing may change: {failure}"
            ))),
        }
    }
}

impl From<log::Level> for crate::events::Level {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Trace => crate::events::Level::Trace,
            log::Level::Debug => crate::events::Level::Debug,
            log::Level::Info => crate::events::Level::Info,
            log::Level::Warn => crate::events::Level::Warn,
            log::Level::Error => crate::events::Level::Error,
        }
    }
}

/// Cuts a guest-provided string to at most `limit` bytes on a char boundary.
pub fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [truncated]");
    }
    text
}

/// What one call of a step's plugin may still log: `log()`, `progress()`
/// and captured stdout/stderr draw on the same budget, so the run log of a
/// step stays small whatever the plugin does. What is refused is counted
/// and reported once, by [`LogBudget::report`], when the call ends.
#[derive(Debug, Default)]
pub struct LogBudget {
    counts: Mutex<LogCounts>,
}

#[derive(Debug, Default)]
struct LogCounts {
    bytes: usize,
    lines: usize,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl LogBudget {
    /// Whether a line of `bytes` may still be logged; counts it either way.
    pub fn admit(&self, bytes: usize) -> bool {
        let mut counts = self.lock();
        if counts.lines < MAX_LOG_LINES && counts.bytes.saturating_add(bytes) <= MAX_LOG_BYTES {
            counts.lines += 1;
            counts.bytes += bytes;
            true
        } else {
            counts.dropped_lines += 1;
            counts.dropped_bytes += bytes as u64;
            false
        }
    }

    /// Whether the budget is spent, so output can be counted as dropped
    /// without splitting it into lines.
    fn exhausted(&self) -> bool {
        let counts = self.lock();
        counts.lines >= MAX_LOG_LINES || counts.bytes >= MAX_LOG_BYTES
    }

    /// Counts output dropped unread: `bytes` holding `lines` line ends.
    fn drop_unread(&self, bytes: usize, lines: usize) {
        let mut counts = self.lock();
        counts.dropped_bytes += bytes as u64;
        counts.dropped_lines += lines as u64;
    }

    /// Records one warning saying how much was dropped, if anything was.
    pub fn report(&self, context: &StepContext) {
        let (lines, bytes) = {
            let counts = self.lock();
            (counts.dropped_lines, counts.dropped_bytes)
        };
        if lines == 0 && bytes == 0 {
            return;
        }
        context.emit(EventKind::Log {
            level: Level::Warn,
            message: format!(
                "[{lines} log line{} ({bytes} bytes) dropped: a step may log {} KiB in {MAX_LOG_LINES} lines per call]",
                if lines == 1 { "" } else { "s" },
                MAX_LOG_BYTES >> 10
            ),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A plugin's stdout or stderr: complete lines become log events, as far
/// as the call's [`LogBudget`] allows.
#[derive(Clone)]
struct LogStream {
    context: Arc<StepContext>,
    budget: Arc<LogBudget>,
    level: Level,
    pending: Arc<Mutex<Vec<u8>>>,
}

/// Longest unfinished line kept before it is logged as it is.
const MAX_PENDING_LINE: usize = 8 * 1024;

impl LogStream {
    fn new(context: Arc<StepContext>, budget: Arc<LogBudget>, level: Level) -> Self {
        LogStream {
            context,
            budget,
            level,
            pending: Arc::default(),
        }
    }

    fn accept(&self, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.budget.exhausted() {
                let ends = bytes.iter().filter(|byte| **byte == b'\n').count();
                self.budget.drop_unread(bytes.len(), ends);
                return;
            }
            pending.extend_from_slice(bytes);
            while let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=newline).collect();
                lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if pending.len() > MAX_PENDING_LINE {
                let line: Vec<u8> = pending.drain(..).collect();
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        for message in lines {
            self.emit(message);
        }
    }

    fn emit(&self, message: String) {
        // The line end counts: a million empty lines are not free.
        if self.budget.admit(message.len() + 1) {
            self.context.emit(EventKind::Log {
                level: self.level,
                message,
            });
        }
    }

    fn flush_pending(&self) {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !pending.is_empty() {
            self.emit(String::from_utf8_lossy(&pending).trim_end().to_owned());
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_pending();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_counts_lines_and_bytes_and_what_it_dropped() {
        let budget = LogBudget::default();
        assert!(budget.admit(MAX_LOG_BYTES - 10));
        assert!(!budget.admit(11), "past the bytes");
        assert!(budget.admit(10));
        assert!(budget.exhausted());
        budget.drop_unread(100, 3);
        let counts = budget.lock();
        assert_eq!((counts.dropped_lines, counts.dropped_bytes), (4, 111));
        drop(counts);

        let budget = LogBudget::default();
        for _ in 0..MAX_LOG_LINES {
            assert!(budget.admit(1));
        }
        assert!(!budget.admit(1), "past the lines");
    }
}
