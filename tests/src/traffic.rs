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

/// One track's behaviour and counters.
#[derive(Debug, Clone)]
struct Track {
    error_rate: f64,
    latency: Duration,
    ok: f64,
    errors: f64,
    sum: f64,
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
                buckets: vec![0.0; BUCKETS.len() + 1],
                since: now,
            });
        entry.error_rate = error_rate.clamp(0.0, 1.0);
        entry.latency = latency;
    }

    fn advance(&mut self, now: Instant) {
        for track in self.tracks.values_mut() {
            let requests = RATE * now.duration_since(track.since).as_secs_f64();
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
        text
    }
}
