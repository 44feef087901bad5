//! Per-step overhead: instantiate a cached, pre-instantiated no-op plugin
//! in a fresh store with the full step state (WASI context, grants, log
//! capture, deadline, cancellation), call `run`, drop the store.
//!
//! Run: `cargo bench -p runbook --bench step` (after `scripts/build-plugins`).
//! Prints the median, p10 and p90 of the per-step time over batches.

use runbook::capability::RunAccess;
use runbook::plugin::{PluginRuntime, RuntimeOptions};
use runbook::runbook::{StepGrants, StepId};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCHES: usize = 30;
const PER_BATCH: usize = 2_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let cache = std::env::temp_dir().join("runbook-bench-cache");
        let plugins = PluginRuntime::new(RuntimeOptions {
            cache_dir: Some(cache),
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
        per_step.sort_by(|left, right| left.total_cmp(right));
        let at = |fraction: f64| per_step[((per_step.len() - 1) as f64 * fraction).round() as usize];
        println!(
            "per-step overhead (instantiate + run + drop, noop plugin, {BATCHES} batches of {PER_BATCH}): median {:.1} µs, p10 {:.1} µs, p90 {:.1} µs",
            at(0.5),
            at(0.1),
            at(0.9)
        );
    });
}
