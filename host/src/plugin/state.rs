//! The state of one step's `Store`: WASI with nothing ambient, the memory
//! cap, captured stdout/stderr, and the step's capability context.

use crate::capability::StepContext;
use crate::events::{EventKind, Level};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most bytes of stdout or stderr kept from one step.
pub const MAX_CAPTURED_BYTES: usize = 1024 * 1024;

/// The data of a step's `Store`.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Enforces the step's memory cap and remembers when it bit.
    pub limiter: MemoryLimiter,
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
        builder
            .stdout(LogStream::new(Arc::clone(&context), Level::Info))
            .stderr(LogStream::new(Arc::clone(&context), Level::Warn))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        StepState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
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

/// Refuses memory growth past the step's cap and notes that it did, so the
/// failure can be reported as a memory limit rather than a bare trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    /// Set when a growth was refused.
    pub exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter with a cap in bytes.
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            exceeded: false,
        }
    }

    /// The cap in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A plugin's stdout or stderr: complete lines become log events.
#[derive(Clone)]
struct LogStream {
    context: Arc<StepContext>,
    level: Level,
    buffer: Arc<Mutex<LineBuffer>>,
}

#[derive(Default)]
struct LineBuffer {
    pending: Vec<u8>,
    total: usize,
    truncated: bool,
}

impl LogStream {
    fn new(context: Arc<StepContext>, level: Level) -> Self {
        LogStream {
            context,
            level,
            buffer: Arc::default(),
        }
    }

    fn accept(&self, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut buffer = self
                .buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if buffer.total >= MAX_CAPTURED_BYTES {
                if !buffer.truncated {
                    buffer.truncated = true;
                    lines.push(format!(
                        "[output beyond {} KiB dropped]",
                        MAX_CAPTURED_BYTES >> 10
                    ));
                }
            } else {
                buffer.total += bytes.len();
                buffer.pending.extend_from_slice(bytes);
                while let Some(newline) = buffer.pending.iter().position(|byte| *byte == b'\n') {
                    let line: Vec<u8> = buffer.pending.drain(..=newline).collect();
                    lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                if buffer.pending.len() > 8 * 1024 {
                    let line: Vec<u8> = buffer.pending.drain(..).collect();
                    lines.push(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
        for message in lines {
            self.context.emit(EventKind::Log {
                level: self.level,
                message,
            });
        }
    }

    fn flush_pending(&self) {
        let pending = {
            let mut buffer = self
                .buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut buffer.pending)
        };
        if !pending.is_empty() {
            self.context.emit(EventKind::Log {
                level: self.level,
                message: String::from_utf8_lossy(&pending).trim_end().to_owned(),
            });
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
