//! Synthetic request metrics for the sample service's `/metrics`: for each
//! track (`stable`, `canary`) the test sets an error rate and a latency, and
//! the counters and latency histogram grow at a steady request rate between
//! scrapes, as a real service's would under load. Prometheus then sees the
//! error rate and p95 latency the test chose.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// The application a track belongs to, as its `app` label: the track
/// without its role (`riskcast-canary` → `riskcast`, `ledger-blue` →
/// `ledger`); a track without one is its own application.
fn app_of(track: &str) -> &str {
    match track.rsplit_once('-') {
        Some((app, "stable" | "canary" | "blue" | "green")) => app,
        _ => track,
    }
}

/// Histogram bucket bounds, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests per second each track serves.
const RATE: f64 = 50.0;

/// The share of failed requests that fail in the database
/// (`db_errors_total`).
const DATABASE_SHARE: f64 = 0.1;

/// Database queries answer in this share of the request latency
/// (`db_query_duration_seconds`).
const QUERY_SHARE: f64 = 0.1;

/// CPU each track's pod uses, in cores, against a limit of one core.
const CPU_CORES: f64 = 0.3;

/// Memory each track's pod holds, against its limit of [`MEMORY_LIMIT`].
const MEMORY_BYTES: u64 = 200 << 20;

/// Each pod's memory limit.
const MEMORY_LIMIT: u64 = 512 << 20;

/// One track's behaviour and counters.
#[derive(Debug, Clone)]
struct Track {
    error_rate: f64,
    latency: Duration,
    ok: f64,
    errors: f64,
    sum: f64,
    /// Database queries per bucket (the last is +Inf), not cumulative.
    query_buckets: Vec<f64>,
    /// CPU seconds its pod has used.
    cpu: f64,
    /// The Kubernetes namespace and Deployment serving it, when one does:
    /// its pod's CPU is reported as cAdvisor and kube-state-metrics do.
    workload: Option<(String, String)>,
    /// Per bucket (the last is +Inf), not cumulative.
    buckets: Vec<f64>,
    since: Instant,
}

/// The tracks and their counters.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    tracks: BTreeMap<String, Track>,
}

impl Traffic {
    /// From now on, `track` fails `error_rate` (0 to 1) of its requests and
    /// answers in `latency`.
    pub fn set(&mut self, track: &str, error_rate: f64, latency: Duration) {
        let now = Instant::now();
        self.advance(now);
        let entry = self
            .tracks
            .entry(track.to_owned())
            .or_insert_with(|| Track {
                error_rate,
                latency,
                ok: 0.0,
                errors: 0.0,
                sum: 0.0,
                query_buckets: vec![0.0; BUCKETS.len() + 1],
                cpu: 0.0,
                workload: None,
                buckets: vec![0.0; BUCKETS.len() + 1],
                since: now,
            });
        entry.error_rate = error_rate.clamp(0.0, 1.0);
        entry.latency = latency;
    }

    /// `track` is served by Deployment `deployment` in `namespace`.
    pub fn place(&mut self, track: &str, namespace: &str, deployment: &str) {
        if let Some(entry) = self.tracks.get_mut(track) {
            entry.workload = Some((namespace.to_owned(), deployment.to_owned()));
        }
    }

    fn advance(&mut self, now: Instant) {
        for track in self.tracks.values_mut() {
            let seconds = now.duration_since(track.since).as_secs_f64();
            let requests = RATE * seconds;
            track.cpu += CPU_CORES * seconds;
            track.since = now;
            track.errors += requests * track.error_rate;
            track.ok += requests * (1.0 - track.error_rate);
            let seconds = track.latency.as_secs_f64();
            track.sum += requests * seconds;
            let bucket = BUCKETS
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(BUCKETS.len());
            track.buckets[bucket] += requests;
            let query = seconds * QUERY_SHARE;
            let bucket = BUCKETS
                .iter()
                .position(|bound| query <= *bound)
                .unwrap_or(BUCKETS.len());
            track.query_buckets[bucket] += requests;
        }
    }

    /// The Prometheus text exposition of every track's counters.
    pub fn render(&mut self) -> String {
        self.advance(Instant::now());
        let mut text = String::new();
        text.push_str(
            "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n",
        );
        for (name, track) in &self.tracks {
            let app = app_of(name);
            let _ = writeln!(
                text,
                "http_requests_total{{app=\"{app}\",track=\"{name}\",code=\"200\"}} {}",
                track.ok
            );
            let _ = writeln!(
                text,
                "http_requests_total{{app=\"{app}\",track=\"{name}\",code=\"500\"}} {}",
                track.errors
            );
        }
        text.push_str("# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n");
        for (name, track) in &self.tracks {
            let app = app_of(name);
            let mut cumulative = 0.0;
            for (index, bound) in BUCKETS.iter().enumerate() {
                cumulative += track.buckets[index];
                let _ = writeln!(
                    text,
                    "http_request_duration_seconds_bucket{{app=\"{app}\",track=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += track.buckets[BUCKETS.len()];
            let _ = writeln!(
                text,
                "http_request_duration_seconds_bucket{{app=\"{app}\",track=\"{name}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                text,
                "http_request_duration_seconds_sum{{app=\"{app}\",track=\"{name}\"}} {}",
                track.sum
            );
            let _ = writeln!(
                text,
                "http_request_duration_seconds_count{{app=\"{app}\",track=\"{name}\"}} {cumulative}"
            );
        }
        text.push_str("# HELP db_errors_total Database errors.\n# TYPE db_errors_total counter\n");
        for (name, track) in &self.tracks {
            let _ = writeln!(
                text,
                "db_errors_total{{app=\"{}\",track=\"{name}\"}} {}",
                app_of(name),
                track.errors * DATABASE_SHARE
            );
        }
        text.push_str("# HELP db_query_duration_seconds Database query latency.\n# TYPE db_query_duration_seconds histogram\n");
        for (name, track) in &self.tracks {
            let app = app_of(name);
            let mut cumulative = 0.0;
            for (index, bound) in BUCKETS.iter().enumerate() {
                cumulative += track.query_buckets[index];
                let _ = writeln!(
                    text,
                    "db_query_duration_seconds_bucket{{app=\"{app}\",track=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += track.query_buckets[BUCKETS.len()];
            let _ = writeln!(
                text,
                "db_query_duration_seconds_bucket{{app=\"{app}\",track=\"{name}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                text,
                "db_query_duration_seconds_count{{app=\"{app}\",track=\"{name}\"}} {cumulative}"
            );
            let _ = writeln!(
                text,
                "db_query_duration_seconds_sum{{app=\"{app}\",track=\"{name}\"}} {}",
                track.sum * QUERY_SHARE
            );
        }
        text.push_str("# HELP container_cpu_usage_seconds_total CPU used (cAdvisor).\n# TYPE container_cpu_usage_seconds_total counter\n");
        for track in self.tracks.values() {
            if let Some((namespace, deployment)) = &track.workload {
                let _ = writeln!(
                    text,
                    "container_cpu_usage_seconds_total{{namespace=\"{namespace}\",pod=\"{deployment}-0\",container=\"app\"}} {}",
                    track.cpu
                );
            }
        }
        text.push_str("# HELP container_memory_working_set_bytes Memory in use (cAdvisor).\n# TYPE container_memory_working_set_bytes gauge\n");
        for track in self.tracks.values() {
            if let Some((namespace, deployment)) = &track.workload {
                let _ = writeln!(
                    text,
                    "container_memory_working_set_bytes{{namespace=\"{namespace}\",pod=\"{deployment}-0\",container=\"app\"}} {MEMORY_BYTES}"
                );
            }
        }
        text.push_str("# HELP kube_pod_container_resource_limits Limits (kube-state-metrics).\n# TYPE kube_pod_container_resource_limits gauge\n");
        for track in self.tracks.values() {
            if let Some((namespace, deployment)) = &track.workload {
                let _ = writeln!(
                    text,
                    "kube_pod_container_resource_limits{{namespace=\"{namespace}\",pod=\"{deployment}-0\",container=\"app\",resource=\"cpu\",unit=\"core\"}} 1"
                );
                let _ = writeln!(
                    text,
                    "kube_pod_container_resource_limits{{namespace=\"{namespace}\",pod=\"{deployment}-0\",container=\"app\",resource=\"memory\",unit=\"byte\"}} {MEMORY_LIMIT}"
                );
            }
        }
        text
    }
}
