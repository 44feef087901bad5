//! `runbook`: deployment runbooks whose every step is a sandboxed
//! WebAssembly component. The binary (`main.rs`, `cli/`) is a thin layer over
//! this library, which the tests and benchmarks use directly.

pub mod audit;
pub mod capability;
pub mod cli;
pub mod diagnostic;
pub mod engine;
pub mod events;
pub mod expression;
pub mod fault;
pub mod gates;
pub mod grant;
pub mod journal;
pub mod jsonl;
pub mod lockfile;
pub mod oci;
pub mod plugin;
pub mod progress;
pub mod promotion;
pub mod redact;
pub mod report;
pub mod run;
pub mod runbook;
pub mod scaffold;
pub mod schedule;
pub mod signature;
pub mod state;
pub mod template;
pub mod terminal;
pub mod wit;
