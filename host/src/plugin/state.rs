//! The state of one step's `Store`: WASI with nothing ambient, the memory
//! cap across all its memories and tables, the log budget that `log()`,
//! `progress()` and captured stdout/stderr share, and the step's capability
//! context.

use crate::capability::StepContext;
use crate::events::{EventKind, Level};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most bytes of log text kept from one call of a step's plugin: `log()`
/// and `progress()` messages and the lines it prints on stdout and stderr,
/// together.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// Most log events kept from one call of a step's plugin, counted like
/// [`MAX_LOG_BYTES`]: many tiny lines cost the journal more than their text.
pub const MAX_LOG_LINES: usize = 10_000;

/// Most linear memories one call's component may create (as the pooling
/// allocator's `max_memories_per_component`).
pub const MAX_MEMORIES: usize = 4;

/// The data of a step's `Store`.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Enforces the step's memory cap and remembers when it bit.
    pub limiter: MemoryLimiter,
    /// How much more the step may log in this call.
    pub log_budget: Arc<LogBudget>,
    /// What the step may do, and where its events go.
    pub context: Arc<StepContext>,
    /// The guest path of each open file descriptor, for the audit log.
    pub opened: std::collections::HashMap<u32, String>,
}

impl StepState {
    /// A fresh state: no environment, arguments, directories or sockets;
    /// stdout and stderr become the step's log lines.
    pub fn new(context: Arc<StepContext>, memory_limit: u64) -> Self {
        let mut builder = WasiCtxBuilder::new();
        // Granted folders, read-only. cap-std keeps every path (`..`,
        // symlinks) inside the folder.
        for grant in &context.grants.fs_read {
            if let Err(error) =
                builder.preopened_dir(&grant.host, &grant.guest, wasmtime_wasi::FsPerms::ReadOnly)
            {
                context.emit(EventKind::Denied {
                    capability: "fs".into(),
                    requested: format!("read {} ({error})", grant.written),
                    decision: crate::events::Decision::Denied,
                });
            }
        }
        let log_budget = Arc::new(LogBudget::default());
        builder
            .stdout(LogStream::new(
                Arc::clone(&context),
                Arc::clone(&log_budget),
                Level::Info,
            ))
            .stderr(LogStream::new(
                Arc::clone(&context),
                Arc::clone(&log_budget),
                Level::Warn,
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        StepState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            log_budget,
            context,
            opened: std::collections::HashMap::new(),
        }
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses growth past the step's cap and notes that it did, so the
/// failure can be reported as a memory limit rather than a bare trap.
///
/// The cap holds for the whole `Store`: every linear memory's bytes and
/// every table's elements (a pointer each, as wasmtime stores them) count
/// against one total, so a component cannot multiply it by declaring many
/// memories. With the pooling allocator each slot is capped too; without it
/// (where the address space cannot be reserved) this total is the only cap.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    /// Bytes granted so far to the store's memories and tables.
    used: u64,
    /// Set when a growth was refused.
    pub exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter with a cap in bytes.
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            used: 0,
            exceeded: false,
        }
    }

    /// The cap in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes granted so far across all memories and tables.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Grants `current -> desired` if the store's total stays within the cap.
    /// A growth past the memory's or table's own maximum fails in wasmtime
    /// whatever we answer, so it is let through uncounted. A granted growth
    /// that then fails (the operating system refused) stays counted: the
    /// total errs on the safe side, and wasmtime's failure notice does not
    /// say which growth it was.
    fn grow(&mut self, current: u64, desired: u64, maximum: Option<u64>) -> bool {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return true;
        }
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.limit {
            self.exceeded = true;
            return false;
        }
        self.used = total;
        true
    }
}

/// The bytes a table of `elements` takes, as [`MemoryLimiter`] counts them.
fn table_bytes(elements: usize) -> u64 {
    (elements as u64).saturating_mul(std::mem::size_of::<usize>() as u64)
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current as u64,
            desired as u64,
            maximum.map(|maximum| maximum as u64),
        ))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            table_bytes(current),
            table_bytes(desired),
            maximum.map(table_bytes),
        ))
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
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
    use wasmtime::{Engine, Instance, Memory, MemoryType, Module, Store};

    /// A core module with two memories and `grow(pages)`, which grows the
    /// first and then the second by `pages`, returning the second's old
    /// size or -1 (multi-memory, encoded by hand).
    const TWO_MEMORIES: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type (i32) -> i32
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x05, 0x05, 0x02, 0x00, 0x00, 0x00, 0x00, // two memories, 0 pages each
        0x07, 0x08, 0x01, 0x04, b'g', b'r', b'o', b'w', 0x00, 0x00, // export "grow"
        0x0a, 0x0d, 0x01, 0x0b, 0x00, // code: one body, no locals
        0x20, 0x00, 0x40, 0x00, 0x1a, // memory.grow 0 (local 0), drop
        0x20, 0x00, 0x40, 0x01, 0x0b, // memory.grow 1 (local 0), end
    ];

    const PAGE: u64 = 64 * 1024;

    /// A store on the on-demand allocator (no pooling slot caps a memory),
    /// limited to `limit` bytes.
    fn store(limit: u64) -> Store<MemoryLimiter> {
        let mut store = Store::new(&Engine::default(), MemoryLimiter::new(limit));
        store.limiter(|limiter| limiter);
        store
    }

    #[test]
    fn a_guest_cannot_multiply_the_cap_by_growing_several_memories() {
        let mut store = store(4 << 20);
        let module = Module::new(store.engine(), TWO_MEMORIES).unwrap();
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        // 3 MiB in the first memory fits; 3 more in the second do not.
        assert_eq!(grow.call(&mut store, 48).unwrap(), -1);
        assert!(store.data().exceeded);
        assert_eq!(store.data().used(), 48 * PAGE);
        // What is left of the cap is still there to use.
        assert_eq!(grow.call(&mut store, 8).unwrap(), 0);
        assert_eq!(store.data().used(), (48 + 8 + 8) * PAGE);
    }

    #[test]
    fn memories_and_tables_made_by_the_host_share_the_cap() {
        let mut store = store(1 << 20);
        let first = Memory::new(&mut store, MemoryType::new(8, None)).unwrap();
        let second = Memory::new(&mut store, MemoryType::new(4, None)).unwrap();
        assert!(first.grow(&mut store, 4).is_ok());
        assert!(second.grow(&mut store, 1).is_err(), "past 1 MiB in all");
        let table = wasmtime::Table::new(
            &mut store,
            wasmtime::TableType::new(wasmtime::RefType::FUNCREF, 0, None),
            wasmtime::Ref::Func(None),
        )
        .unwrap();
        assert!(
            table
                .grow(&mut store, 1024, wasmtime::Ref::Func(None))
                .is_err(),
            "the memories used the whole cap"
        );
    }

    #[test]
    fn a_component_with_more_memories_than_allowed_is_not_instantiated() {
        let mut five_memories = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        five_memories.extend([0x05, 0x0b, 0x05]);
        five_memories.extend([0x00; 10]);
        assert_eq!(MAX_MEMORIES, 4);
        let mut store = store(64 << 20);
        let module = Module::new(store.engine(), &five_memories).unwrap();
        assert!(Instance::new(&mut store, &module, &[]).is_err());
    }

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
