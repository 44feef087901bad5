//! Integration tests of the host: the sandbox against misbehaving plugins,
//! the smoke-test plugin against a real local HTTP server, the runbook
//! format's diagnostics, and the `runbook` binary as an operator uses it.

mod apply;
mod architecture;
mod audit;
mod aws;
mod canary;
mod cli;
mod command;
mod decide;
mod dns;
mod durable;
mod ecs;
mod engine;
mod faults;
mod files;
mod flags;
mod format;
mod hints;
mod jobs;
mod kube;
mod lambda;
mod lb;
mod live;
mod metrics;
mod notify;
mod operations;
mod params;
mod plan_apply;
mod promotion;
mod registry;
mod report;
mod rollback;
mod rollout;
mod sandbox;
mod schema;
mod secret_sources;
mod secrets;
mod seeds;
mod shared_state;
mod signatures;
mod site;
mod smoke;
mod snapshots;
mod support;
