//! The data of one call's `Store`: WASI with nothing ambient, the memory
//! cap across all its memories and tables, and the step's view of its
//! capabilities, on which every capability's host functions are
//! implemented.

use super::StepContext;
use super::log::LogBudget;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

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
    /// A fresh state: no environment, arguments, sockets or name lookups;
    /// the granted folders, read-only; stdout and stderr become the step's
    /// log lines.
    pub fn new(context: Arc<StepContext>, memory_limit: u64) -> Self {
        let mut builder = WasiCtxBuilder::new();
        super::fs::preopen(&mut builder, &context);
        let log_budget = Arc::new(LogBudget::default());
        super::log::capture_output(&mut builder, &context, &log_budget);
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // A recorded run keeps the times the plugin reads; a replay gives
        // them back in order.
        match &context.tape {
            super::tape::Tape::Off => {}
            super::tape::Tape::Record(_) => {
                let clock = super::tape::TapedClock::recording(context.clock_reads.clone());
                builder.wall_clock(clock.clone()).monotonic_clock(clock);
            }
            super::tape::Tape::Replay(replay) => {
                let clock = replay.clock();
                builder.wall_clock(clock.clone()).monotonic_clock(clock);
            }
        }
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
}
