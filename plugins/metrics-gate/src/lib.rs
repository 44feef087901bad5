//! `metrics-gate`: post-deploy monitoring as a step. Evaluates Prometheus
//! or CloudWatch checks every `interval` for `duration`; fails as soon as a
//! breach counts: once it has held `for` its duration, or once a check
//! without `for` fails more rounds than `failure_limit` allows. Changes nothing, so there is
//! nothing to roll back: its failure makes the runbook's rollback run.

use runbook_analysis::{Analysis, Monitor, Verdict};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, PlannedAction, Step,
};

struct MetricsGate;

/// What to watch and for how long.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// How long to watch.
    duration: HumanDuration,
    /// Wait this long before the first round (metrics of a new version).
    #[serde(default)]
    initial_delay: Option<HumanDuration>,
    /// The Prometheus server, `http://prometheus:9090` (or give
    /// `cloudwatch`).
    #[serde(default)]
    prometheus: Option<String>,
    /// AWS CloudWatch, `{ region = "us-east-1" }` (instead of `prometheus`).
    #[serde(default)]
    cloudwatch: Option<runbook_analysis::CloudWatch>,
    /// The checks, each evaluated every round.
    checks: Vec<runbook_analysis::Check>,
    /// Time between rounds (default 30s).
    #[serde(default)]
    interval: Option<HumanDuration>,
    /// Failed rounds a check without `for` may have before the gate fails
    /// (default 0).
    #[serde(default)]
    failure_limit: u32,
    /// What a round without data means: `wait` (default), `fail`, `pass`.
    #[serde(default)]
    no_data: runbook_analysis::NoData,
}

impl Params {
    fn analysis(&self) -> Analysis {
        Analysis {
            prometheus: self.prometheus.clone(),
            cloudwatch: self.cloudwatch.clone(),
            checks: self.checks.clone(),
            interval: self.interval,
            failure_limit: self.failure_limit,
            no_data: self.no_data,
        }
    }
}

impl Step for MetricsGate {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[];
    /// HTTP for Prometheus, AWS for CloudWatch.
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[Capability::Http, Capability::Aws];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        params.analysis().check("")
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let analysis = params.analysis();
        Ok(vec![PlannedAction::read(format!(
            "watch {} for {}, {}",
            analysis.source(),
            params.duration,
            analysis.describe()
        ))])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let analysis = params.analysis();
        if let Some(delay) = params.initial_delay {
            runbook_sdk::log::progress(
                format!("waiting {delay} before the first round"),
                Some(0.0),
            );
            runbook_sdk::sleep(delay.get())?;
        }
        let started = std::time::Instant::now();
        let total = params.duration.get().as_secs_f32().max(0.001);
        let mut monitor = Monitor::new(&analysis);
        let held = monitor.hold(params.duration.get(), |round| {
            let fraction = (started.elapsed().as_secs_f32() / total).min(1.0);
            runbook_sdk::log::progress(round.summary(), Some(fraction));
            if !round.failed.is_empty() {
                for (_, reason) in &round.failed {
                    runbook_sdk::log::warn(reason);
                }
            }
        });
        match held {
            Ok(()) => {
                let mut outcome = Outcome::new(format!(
                    "{} rounds over {}, all within limits: {}",
                    monitor.rounds,
                    params.duration,
                    monitor.last.summary()
                ))
                .output("rounds", monitor.rounds.to_string());
                for (name, value) in monitor.outputs() {
                    outcome = outcome.output(name, value);
                }
                Ok(outcome)
            }
            Err(Verdict::Breached(reason)) => Err(Error::failed(reason)),
            Err(Verdict::Error(error)) => Err(error),
        }
    }
}

runbook_sdk::export_step!(MetricsGate);
