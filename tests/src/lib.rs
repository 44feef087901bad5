//! The local test environment: a sample service that runbooks smoke-test,
//! usable in-process from tests and as the `sample-service` binary for the
//! README's demo. A small HTTP/1.1 server on loopback, no framework.

pub mod http;
pub mod sample;

pub use sample::{SampleService, SampleState};

/// The repository's top folder.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A built plugin component. Panics with the command to build it when it
/// is missing: a test that needs a plugin never passes without one.
pub fn plugin_path(crate_name: &str) -> std::path::PathBuf {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = workspace_root()
        .join("target/wasm32-wasip2/release")
        .join(&file);
    assert!(
        path.exists(),
        "plugin {} is not built: run `scripts/build-plugins` first",
        path.display()
    );
    path
}

pub mod counter;
pub use counter::Counter;

pub mod kube;
pub use kube::KubeEmulator;

pub mod process;

pub mod postgres;
pub use postgres::Postgres;

pub mod prometheus;
pub use prometheus::Prometheus;

pub mod traffic;

pub mod slow_rds;
pub use slow_rds::SlowRds;

pub mod ecs_rollout;
pub use ecs_rollout::EcsRollout;

pub mod registry;
pub use registry::Registry;

pub mod estate;
pub use estate::Estate;

pub mod moto;
pub use moto::Moto;
