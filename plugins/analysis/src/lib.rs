//! Prometheus analysis for step plugins: checks (a query and its
//! thresholds, absolute or relative to a baseline query), evaluated every
//! `interval` over a hold period, with a failure limit, as Argo Rollouts'
//! analysis and the source runbooks' "abort when the error rate exceeds 2%
//! or latency 3x the baseline" do.

use runbook_sdk::http::Request;
use runbook_sdk::serde_json::Value;
use runbook_sdk::{Deserialize, Error, HumanDuration, JsonSchema};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to watch, and when it is bad.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct Analysis {
    /// The Prometheus server, `http://prometheus:9090`.
    pub prometheus: String,
    /// The checks, each evaluated every round.
    pub checks: Vec<Check>,
    /// Time between rounds (default 30s).
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Failed rounds a check may have before the analysis fails (default 0:
    /// the first failed round fails it).
    #[serde(default)]
    pub failure_limit: u32,
    /// A check that never returns data fails the analysis (default true).
    /// Queries on series that may not exist yet should end in `or vector(0)`.
    #[serde(default = "yes")]
    pub fail_without_data: bool,
}

fn yes() -> bool {
    true
}

/// One query and its thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct Check {
    /// Used in messages and outputs: `error_rate`, `p95_latency`.
    pub name: String,
    /// PromQL giving one number (aggregate to one series).
    pub query: String,
    /// Fails above this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Fails below this.
    #[serde(default)]
    pub min: Option<f64>,
    /// PromQL of the baseline for `max_ratio` (the stable version's p95).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Fails above `max_ratio` × the baseline's value.
    #[serde(default)]
    pub max_ratio: Option<f64>,
}

impl Analysis {
    /// Problems with the parameters, as `(path, message)` under `prefix`.
    pub fn check(&self, prefix: &str) -> Result<(), Error> {
        if self.checks.is_empty() {
            return Err(Error::invalid_param(
                format!("{prefix}checks"),
                "name at least one check",
            ));
        }
        for (index, check) in self.checks.iter().enumerate() {
            let at = format!("{prefix}checks[{index}]");
            if check.max.is_none() && check.min.is_none() && check.max_ratio.is_none() {
                return Err(Error::invalid_param(
                    at,
                    "give `max`, `min` or `max_ratio` (with `baseline`)",
                ));
            }
            if check.max_ratio.is_some() != check.baseline.is_some() {
                return Err(Error::invalid_param(
                    at,
                    "`max_ratio` and `baseline` go together",
                ));
            }
        }
        Ok(())
    }

    /// Time between rounds.
    pub fn interval(&self) -> Duration {
        self.interval
            .map_or(Duration::from_secs(30), HumanDuration::get)
    }

    /// What a hold would do, in words, for plans.
    pub fn describe(&self) -> String {
        let checks: Vec<String> = self.checks.iter().map(Check::describe).collect();
        format!(
            "every {}: {} (failure limit {})",
            HumanDuration(self.interval()),
            checks.join(", "),
            self.failure_limit
        )
    }
}

impl Check {
    fn describe(&self) -> String {
        let mut limits = Vec::new();
        if let Some(max) = self.max {
            limits.push(format!("≤ {max}"));
        }
        if let Some(min) = self.min {
            limits.push(format!("≥ {min}"));
        }
        if let Some(ratio) = self.max_ratio {
            limits.push(format!("≤ {ratio}× baseline"));
        }
        format!("{} {}", self.name, limits.join(" and "))
    }

    /// Why `value` fails this check, if it does.
    fn judge(&self, value: f64, baseline: Option<f64>) -> Option<String> {
        if let Some(max) = self.max
            && value > max
        {
            return Some(format!("{} = {} is above {max}", self.name, show(value)));
        }
        if let Some(min) = self.min
            && value < min
        {
            return Some(format!("{} = {} is below {min}", self.name, show(value)));
        }
        if let (Some(ratio), Some(baseline)) = (self.max_ratio, baseline)
            && value > ratio * baseline
        {
            return Some(format!(
                "{} = {} is above {ratio}× the baseline {}",
                self.name,
                show(value),
                show(baseline)
            ));
        }
        None
    }
}

/// A number as operators read it: at most 4 significant digits.
pub fn show(value: f64) -> String {
    if value == 0.0 || (1e-6..1e6).contains(&value.abs()) {
        let magnitude = value.abs().log10().floor() as i32;
        let decimals = usize::try_from((3 - magnitude).max(0)).unwrap_or(0);
        let text = format!("{value:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    } else {
        format!("{value:.3e}")
    }
}

/// Runs an instant query; `None` when it returns no series (or NaN).
pub fn query(prometheus: &str, promql: &str) -> Result<Option<f64>, Error> {
    let url = format!(
        "{}/api/v1/query?query={}",
        prometheus.trim_end_matches('/'),
        runbook_sdk::http::encode_component(promql)
    );
    let response = Request::get(url).timeout(Duration::from_secs(30)).send()?;
    let body = response.json().map_err(|_| {
        Error::transient(format!(
            "Prometheus answered {} without JSON",
            response.status
        ))
    })?;
    if body["status"] != "success" {
        let message = body["error"].as_str().unwrap_or("no error message");
        return Err(if response.status == 400 {
            Error::failed(format!(
                "Prometheus rejected the query `{promql}`: {message}"
            ))
        } else {
            Error::transient(format!(
                "Prometheus answered {}: {message}",
                response.status
            ))
        });
    }
    let sample = match body["data"]["resultType"].as_str() {
        Some("scalar") => body["data"]["result"].get(1).cloned(),
        _ => body["data"]["result"]
            .get(0)
            .and_then(|series| series["value"].get(1))
            .cloned(),
    };
    Ok(sample
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|value| value.is_finite()))
}

/// What one round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Each check's value, `None` without data.
    pub values: BTreeMap<String, Option<f64>>,
    /// The checks that failed and why.
    pub failed: Vec<(String, String)>,
}

impl Round {
    /// `error_rate=0.004 p95=0.12`, for progress lines.
    pub fn summary(&self) -> String {
        self.values
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}={}", show(*value)),
                None => format!("{name}=no data"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Evaluates every check once.
pub fn evaluate(analysis: &Analysis) -> Result<Round, Error> {
    let mut round = Round::default();
    for check in &analysis.checks {
        let value = query(&analysis.prometheus, &check.query)?;
        let baseline = match &check.baseline {
            Some(baseline) => query(&analysis.prometheus, baseline)?,
            None => None,
        };
        if let Some(value) = value
            && let Some(reason) = check.judge(value, baseline)
        {
            round.failed.push((check.name.clone(), reason));
        }
        round.values.insert(check.name.clone(), value);
    }
    Ok(round)
}

/// Analysis over time: counts each check's failed rounds.
#[derive(Debug)]
pub struct Monitor<'a> {
    analysis: &'a Analysis,
    failures: BTreeMap<String, u32>,
    with_data: BTreeMap<String, bool>,
    /// Rounds evaluated so far.
    pub rounds: u32,
    /// The latest round.
    pub last: Round,
}

/// Why an analysis failed.
#[derive(Debug)]
pub enum Verdict {
    /// A check failed more rounds than the limit allows.
    Breached(String),
    /// The step could not go on (cancelled, timed out, Prometheus down).
    Error(Error),
}

impl From<Error> for Verdict {
    fn from(error: Error) -> Self {
        Verdict::Error(error)
    }
}

impl<'a> Monitor<'a> {
    /// A monitor with no rounds yet.
    pub fn new(analysis: &'a Analysis) -> Self {
        Monitor {
            analysis,
            failures: BTreeMap::new(),
            with_data: BTreeMap::new(),
            rounds: 0,
            last: Round::default(),
        }
    }

    /// Evaluates rounds every `interval` for `duration` (at least one
    /// round), calling `report` after each; fails at the first breach.
    pub fn hold(
        &mut self,
        duration: Duration,
        mut report: impl FnMut(&Round),
    ) -> Result<(), Verdict> {
        let started = Instant::now();
        loop {
            let round = evaluate(self.analysis)?;
            self.rounds += 1;
            for (name, value) in &round.values {
                *self.with_data.entry(name.clone()).or_default() |= value.is_some();
            }
            report(&round);
            for (name, reason) in &round.failed {
                let failures = self.failures.entry(name.clone()).or_default();
                *failures += 1;
                if *failures > self.analysis.failure_limit {
                    self.last = round.clone();
                    return Err(Verdict::Breached(format!(
                        "{reason} ({failures} failed round{} of {}, limit {})",
                        if *failures == 1 { "" } else { "s" },
                        self.rounds,
                        self.analysis.failure_limit
                    )));
                }
            }
            self.last = round;
            let elapsed = started.elapsed();
            if elapsed >= duration {
                break;
            }
            runbook_sdk::sleep(self.analysis.interval().min(duration - elapsed))?;
        }
        if self.analysis.fail_without_data
            && let Some((name, _)) = self.with_data.iter().find(|(_, seen)| !**seen)
        {
            return Err(Verdict::Breached(format!(
                "`{name}` returned no data in {} rounds: is Prometheus scraping the target? (a query on a series that may not exist yet can end in `or vector(0)`)",
                self.rounds
            )));
        }
        Ok(())
    }

    /// The latest value of each check, for outputs.
    pub fn outputs(&self) -> Vec<(String, String)> {
        self.last
            .values
            .iter()
            .map(|(name, value)| (name.clone(), value.map_or_else(|| "no data".into(), show)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: Option<f64>, ratio: Option<f64>) -> Check {
        Check {
            name: "p95".into(),
            query: "q".into(),
            max,
            min: None,
            baseline: ratio.map(|_| "b".into()),
            max_ratio: ratio,
        }
    }

    #[test]
    fn a_value_above_its_maximum_or_ratio_fails_and_says_by_how_much() {
        assert_eq!(
            check(Some(0.02), None).judge(0.05, None).unwrap(),
            "p95 = 0.05 is above 0.02"
        );
        assert_eq!(check(Some(0.02), None).judge(0.01, None), None);
        assert_eq!(
            check(None, Some(3.0)).judge(0.4, Some(0.1)).unwrap(),
            "p95 = 0.4 is above 3× the baseline 0.1"
        );
        assert_eq!(check(None, Some(3.0)).judge(0.2, Some(0.1)), None);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(show(0.02), "0.02");
        assert_eq!(show(120.0), "120");
        assert_eq!(show(0.0005), "0.0005");
        assert_eq!(show(0.04987), "0.04987");
        assert_eq!(show(1234.6), "1235");
        assert_eq!(show(0.0000001), "1.000e-7");
    }
}
