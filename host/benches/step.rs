//! Per-step overhead: instantiate a cached, pre-instantiated no-op plugin
//! in a fresh store with the full step state (WASI context, grants, log
//! capture, deadline, cancellation), call `run`, drop the store.
//!
//! Run: `cargo bench -p runbook --bench step` (after `scripts/build-plugins`).
//! Prints the median, p10 and p90 of the per-step time over batches, with
//! the engine's defaults. `cargo bench -p runbook --bench step -- --knobs`
//! also measures each engine setting changed alone ([`EngineTuning`]), the
//! variants taking turns over three rounds so that the machine's drift
//! falls on all of them alike.

use runbook::capability::RunAccess;
use runbook::plugin::{Compiler, EngineTuning, PluginRuntime, RuntimeOptions};
use runbook::runbook::{StepGrants, StepId};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCHES: usize = 30;
const PER_BATCH: usize = 2_000;
const ROUNDS: usize = 3;

fn main() {
    let knobs = std::env::args().any(|arg| arg == "--knobs");
    let defaults = EngineTuning::default();
    let mut variants: Vec<(&str, EngineTuning)> = vec![("defaults", defaults.clone())];
    if knobs {
        variants.extend([
            (
                "copy-on-write memory images off",
                EngineTuning {
                    memory_init_cow: false,
                    ..defaults.clone()
                },
            ),
            (
                "lazy tables off",
                EngineTuning {
                    table_lazy_init: false,
                    ..defaults.clone()
                },
            ),
            (
                "memory slots not kept resident (madvise reset)",
                EngineTuning {
                    keep_resident: 0,
                    ..defaults.clone()
                },
            ),
            (
                "1 MiB of each memory slot kept resident",
                EngineTuning {
                    keep_resident: 1 << 20,
                    ..defaults.clone()
                },
            ),
            (
                "2 MiB of each memory slot kept resident",
                EngineTuning {
                    keep_resident: 2 << 20,
                    ..defaults.clone()
                },
            ),
            (
                "16 MiB of each memory slot kept resident",
                EngineTuning {
                    keep_resident: 16 << 20,
                    ..defaults.clone()
                },
            ),
            (
                "pagemap scan off",
                EngineTuning {
                    pagemap_scan: false,
                    ..defaults.clone()
                },
            ),
            (
                "pool of 8 instances",
                EngineTuning {
                    pool_instances: 8,
                    ..defaults.clone()
                },
            ),
            (
                "pool of 1,000 instances",
                EngineTuning {
                    pool_instances: 1_000,
                    ..defaults.clone()
                },
            ),
            (
                "baseline compiler (Winch) instead of Cranelift",
                EngineTuning {
                    compiler: Compiler::Winch,
                    ..defaults.clone()
                },
            ),
            (
                "no pool (instances mapped on demand)",
                EngineTuning {
                    pooling: false,
                    ..defaults.clone()
                },
            ),
        ]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let rounds = if knobs { ROUNDS } else { 1 };
        let mut measured: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (slot, (_, tuning)) in variants.iter().enumerate() {
                measured[slot].extend(measure(tuning.clone()).await);
            }
        }
        for ((name, _), mut per_step) in variants.iter().zip(measured) {
            per_step.sort_by(|left, right| left.total_cmp(right));
            let at = |fraction: f64| {
                per_step[((per_step.len() - 1) as f64 * fraction).round() as usize]
            };
            println!(
                "per-step overhead, {name} (instantiate + run + drop, noop plugin, {} batches of {PER_BATCH}): median {:.1} µs, p10 {:.1} µs, p90 {:.1} µs",
                per_step.len(),
                at(0.5),
                at(0.1),
                at(0.9)
            );
        }
    });
}

/// The per-step time of each batch, in µs, with the engine set up so.
async fn measure(tuning: EngineTuning) -> Vec<f64> {
    let cache = std::env::temp_dir().join("runbook-bench-cache");
    let plugins = PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(cache),
        tuning,
        ..Default::default()
    })
    .expect("runtime");
    let path = runbook_testenv::plugin_path("noop");
    let plugin = plugins.load(&path, None).await.expect("noop loads");
    let access = RunAccess::bare(plugins.http_client());
    let grants = StepGrants {
        http: vec![runbook::capability::http::UrlGrant::parse("http://127.0.0.1:8080").unwrap()],
        secrets: vec![],
        fs_read: vec![],
        aws: None,
        kube: None,
        command: vec![],
    };
    let step = || {
        Arc::new(access.for_step(
            StepId("bench".into()),
            grants.clone(),
            tokio::time::Instant::now() + Duration::from_secs(60),
            &tokio_util::sync::CancellationToken::new(),
            false,
            Default::default(),
        ))
    };
    let params = r#"{"message":"hi"}"#;
    for _ in 0..500 {
        let outcome = plugins.run(&plugin, step(), 64 << 20, params, None).await;
        assert!(matches!(outcome, Ok(Ok(_))));
    }
    let mut per_step = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..PER_BATCH {
            let outcome = plugins.run(&plugin, step(), 64 << 20, params, None).await;
            debug_assert!(matches!(outcome, Ok(Ok(_))));
        }
        per_step.push(started.elapsed().as_secs_f64() * 1e6 / PER_BATCH as f64);
    }
    per_step
}
