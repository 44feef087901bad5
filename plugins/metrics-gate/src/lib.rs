//! `metrics-gate`: post-deploy monitoring as a step. Evaluates Prometheus
//! or CloudWatch checks every `interval` for `duration`, one round per
//! call with a journaled wait between rounds; fails as soon as a breach
//! counts: once it has held `for` its duration, or once a check
//! without `for` fails more rounds than `failure_limit` allows. Changes nothing, so there is
//! nothing to roll back: its failure makes the runbook's rollback run.

use runbook_analysis::{Analysis, Hold, Next, Verdict};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, PlannedAction, RunResult,
    Serialize, Step, Wait,
};
use std::time::Duration;

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

    /// One analysis round per call: between rounds the step waits on the
    /// host, journaled, so a process killed during a 24-hour soak goes on
    /// at its next round with the rounds before kept, and a long soak can
    /// park (`exec --detach`, `runbook worker`).
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        let analysis = params.analysis();
        let state: Option<Soak> = runbook_sdk::state(state.as_deref())?;
        let mut hold = match state {
            None if params.initial_delay.is_some() => {
                let delay = params.initial_delay.unwrap_or_default();
                return Ok(RunResult::Wait(Wait::after(
                    delay.get(),
                    &Soak { hold: None },
                    format!("waiting {delay} before the first round"),
                )));
            }
            None | Some(Soak { hold: None }) => Hold::new(runbook_analysis::now_ms()),
            Some(Soak { hold: Some(hold) }) => hold,
        };
        let duration = params.duration.get();
        let expected = Hold::expected_rounds(&analysis, duration);
        let now = runbook_analysis::now_ms();
        let elapsed = Duration::from_millis(now.saturating_sub(hold.started_ms));
        let fraction = (elapsed.as_secs_f32() / duration.as_secs_f32().max(0.001)).min(1.0);
        let number = hold.rounds + 1;
        let next = hold.round(&analysis, duration, now, |round| {
            runbook_sdk::log::progress(
                format!("round {number}/{expected}: {}", round.summary()),
                Some(fraction),
            );
            for (_, reason) in &round.failed {
                runbook_sdk::log::warn(reason);
            }
        });
        match next {
            Ok(Next::After(wait)) => {
                let status = format!("soak round {}/{expected}: {}", hold.rounds, hold.summary());
                Ok(RunResult::Wait(Wait::after(
                    wait,
                    &Soak { hold: Some(hold) },
                    status,
                )))
            }
            Ok(Next::Passed) => {
                let mut outcome = Outcome::new(format!(
                    "{} rounds over {}, all within limits: {}",
                    hold.rounds,
                    params.duration,
                    hold.summary()
                ))
                .output("rounds", hold.rounds.to_string());
                for (name, value) in hold.outputs() {
                    outcome = outcome.output(name, value);
                }
                Ok(RunResult::Done(outcome))
            }
            Err(Verdict::Breached(reason)) => Err(Error::failed(format!(
                "{reason} (round {} of the soak)",
                hold.rounds
            ))),
            Err(Verdict::Error(error)) => Err(error),
        }
    }
}

/// What the gate keeps between its rounds.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Soak {
    /// The hold, once its first round began (none during `initial_delay`).
    hold: Option<Hold>,
}

runbook_sdk::export_step!(MetricsGate);
