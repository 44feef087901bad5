//! Metric analysis for step plugins, in the source runbooks' words: checks
//! (a query and its limits, absolute or relative to a baseline query)
//! evaluated every `interval` over a hold period. A breach counts once it
//! has held `for` a while ("error rate above baseline by more than 10% for
//! more than 5 minutes"), or, without `for`, once a check has failed more
//! rounds than `failure_limit` (Argo Rollouts' analysis). Metrics come from
//! Prometheus or AWS CloudWatch, with one check shape for both.

pub mod cloudwatch;
pub mod prometheus;

use runbook_sdk::{Deserialize, Error, HumanDuration, JsonSchema, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use cloudwatch::{CloudWatch, Metric};

/// What to watch, and when it is bad.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct Analysis {
    /// The Prometheus server, `http://prometheus:9090` (or give
    /// `cloudwatch`).
    #[serde(default)]
    pub prometheus: Option<String>,
    /// AWS CloudWatch, `{ region = "us-east-1" }` (instead of
    /// `prometheus`).
    #[serde(default)]
    pub cloudwatch: Option<CloudWatch>,
    /// The checks, each evaluated every round.
    pub checks: Vec<Check>,
    /// Time between rounds (default 30s).
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Failed rounds a check without `for` may have before the analysis
    /// fails (default 0: the first failed round fails it).
    #[serde(default)]
    pub failure_limit: u32,
    /// What a round without data means for every check that does not say
    /// (default `wait`).
    #[serde(default)]
    pub no_data: NoData,
}

/// What a round in which a check's query returns nothing means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", rename_all = "snake_case")]
#[schemars(crate = "runbook_sdk::schemars")]
pub enum NoData {
    /// It neither passes nor fails; but a check that had no data in any
    /// round of the hold fails at its end (is the target scraped?).
    #[default]
    Wait,
    /// It fails like a breach (a series that must always exist).
    Fail,
    /// It passes (a series that exists only when something goes wrong).
    Pass,
}

/// A query: PromQL for Prometheus, a metric statistic for CloudWatch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", untagged)]
#[schemars(crate = "runbook_sdk::schemars")]
pub enum Query {
    /// PromQL giving one number (aggregate to one series).
    Promql(String),
    /// A CloudWatch metric statistic.
    Metric(Metric),
}

impl Query {
    fn describe(&self) -> String {
        match self {
            Query::Promql(promql) => promql.clone(),
            Query::Metric(metric) => metric.describe(),
        }
    }
}

/// How far above its baseline a value may go: `"10%"` of the baseline, or
/// a number in the value's own unit (`0.005`: half a percentage point of
/// an error rate).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", untagged)]
#[schemars(crate = "runbook_sdk::schemars")]
pub enum Increase {
    /// `"10%"`.
    Percent(String),
    /// `0.005`.
    Absolute(f64),
}

impl Increase {
    /// The highest value allowed over `baseline`, or why the limit is not
    /// one.
    fn limit(&self, baseline: f64) -> Result<f64, String> {
        match self {
            Increase::Absolute(by) => Ok(baseline + by),
            Increase::Percent(text) => {
                let percent = text
                    .trim()
                    .strip_suffix('%')
                    .and_then(|number| number.trim().parse::<f64>().ok())
                    .filter(|percent| percent.is_finite() && *percent >= 0.0)
                    .ok_or_else(|| {
                        format!("`{text}` is not a percentage: write it like \"10%\", or give a number in the metric's unit")
                    })?;
                Ok(baseline * (1.0 + percent / 100.0))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Increase::Percent(text) => format!("+{}", text.trim()),
            Increase::Absolute(by) => format!("+{}", show(*by)),
        }
    }
}

/// One query and its limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct Check {
    /// Used in messages and outputs: `error_rate`, `p95_latency`.
    pub name: String,
    /// What to measure.
    pub query: Query,
    /// Fails above this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Fails below this.
    #[serde(default)]
    pub min: Option<f64>,
    /// The baseline for `max_ratio` and `max_increase` (the stable
    /// version's error rate or p95), a query of the same kind.
    #[serde(default)]
    pub baseline: Option<Query>,
    /// Fails above `max_ratio` × the baseline ("2x normal").
    #[serde(default)]
    pub max_ratio: Option<f64>,
    /// Fails more than this above the baseline: `"10%"` or a number.
    #[serde(default)]
    pub max_increase: Option<Increase>,
    /// A failing round counts only once the check has failed every round
    /// for this long ("for more than 5 minutes"); one bad round does not
    /// fail. Without it, `failure_limit` counts failed rounds.
    #[serde(default, rename = "for")]
    pub sustained: Option<HumanDuration>,
    /// What a round without data means for this check (default: the
    /// analysis's `no_data`).
    #[serde(default)]
    pub no_data: Option<NoData>,
}

impl Analysis {
    /// Problems with the parameters, as `(path, message)` under `prefix`.
    pub fn check(&self, prefix: &str) -> Result<(), Error> {
        let cloudwatch = match (&self.prometheus, &self.cloudwatch) {
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(_), Some(_)) => {
                return Err(Error::invalid_param(
                    format!("{prefix}cloudwatch"),
                    "read metrics from `prometheus` or `cloudwatch`, not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid_param(
                    format!("{prefix}prometheus"),
                    "say where the metrics are: `prometheus = \"http://prometheus:9090\"` or `cloudwatch = { region = \"us-east-1\" }`",
                ));
            }
        };
        if self.checks.is_empty() {
            return Err(Error::invalid_param(
                format!("{prefix}checks"),
                "name at least one check",
            ));
        }
        for (index, check) in self.checks.iter().enumerate() {
            check.check(&format!("{prefix}checks[{index}]"), cloudwatch)?;
        }
        Ok(())
    }

    /// Time between rounds.
    pub fn interval(&self) -> Duration {
        self.interval
            .map_or(Duration::from_secs(30), HumanDuration::get)
    }

    /// Where the metrics come from, for plans: `Prometheus` or
    /// `CloudWatch in us-east-1`.
    pub fn source(&self) -> String {
        match &self.cloudwatch {
            Some(cloudwatch) => format!("CloudWatch in {}", cloudwatch.region),
            None => "Prometheus".to_owned(),
        }
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

    /// Runs a query against the analysis's metric source.
    fn query(&self, query: &Query) -> Result<Option<f64>, Error> {
        match (query, &self.prometheus, &self.cloudwatch) {
            (Query::Promql(promql), Some(prometheus), _) => prometheus::query(prometheus, promql),
            (Query::Metric(metric), _, Some(cloudwatch)) => cloudwatch::query(cloudwatch, metric),
            (query, _, _) => Err(Error::invalid_param(
                "checks",
                format!(
                    "`{}` is not a query for {}",
                    query.describe(),
                    self.source()
                ),
            )),
        }
    }
}

impl Check {
    fn check(&self, at: &str, cloudwatch: bool) -> Result<(), Error> {
        let relative = self.max_ratio.is_some() || self.max_increase.is_some();
        if self.max.is_none() && self.min.is_none() && !relative {
            return Err(Error::invalid_param(
                at,
                "give `max`, `min`, or `max_ratio` or `max_increase` with `baseline`",
            ));
        }
        if relative != self.baseline.is_some() {
            return Err(Error::invalid_param(
                at,
                "`max_ratio` and `max_increase` compare with a `baseline`: give both or neither",
            ));
        }
        if let Some(increase) = &self.max_increase {
            increase
                .limit(1.0)
                .map_err(|message| Error::invalid_param(format!("{at}.max_increase"), message))?;
        }
        if self.sustained.is_some_and(|held| held.get().is_zero()) {
            return Err(Error::invalid_param(
                format!("{at}.for"),
                "a breach must hold for some time: leave `for` out to fail at once",
            ));
        }
        for (key, query) in [
            ("query", Some(&self.query)),
            ("baseline", self.baseline.as_ref()),
        ] {
            match (query, cloudwatch) {
                (Some(Query::Metric(metric)), true) => metric.check(&format!("{at}.{key}"))?,
                (Some(Query::Promql(_)), false) | (None, _) => {}
                (Some(Query::Promql(_)), true) => {
                    return Err(Error::invalid_param(
                        format!("{at}.{key}"),
                        "with `cloudwatch`, a query is a metric: `{ namespace = \"AWS/Lambda\", metric = \"Errors\", dimensions = { FunctionName = \"api\" }, stat = \"Sum\" }`",
                    ));
                }
                (Some(Query::Metric(_)), false) => {
                    return Err(Error::invalid_param(
                        format!("{at}.{key}"),
                        "with `prometheus`, a query is PromQL text",
                    ));
                }
            }
        }
        Ok(())
    }

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
        if let Some(increase) = &self.max_increase {
            limits.push(format!("≤ baseline {}", increase.describe()));
        }
        let sustained = self
            .sustained
            .map(|held| format!(" for {held}"))
            .unwrap_or_default();
        format!("{} {}{sustained}", self.name, limits.join(" and "))
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
        let baseline = baseline?;
        if let Some(ratio) = self.max_ratio
            && value > ratio * baseline
        {
            return Some(format!(
                "{} = {} is above {ratio}× the baseline {}",
                self.name,
                show(value),
                show(baseline)
            ));
        }
        if let Some(increase) = &self.max_increase
            && let Ok(limit) = increase.limit(baseline)
            && value > limit
        {
            return Some(format!(
                "{} = {} is more than {} above the baseline {}",
                self.name,
                show(value),
                increase.describe().trim_start_matches('+'),
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
        let value = analysis.query(&check.query)?;
        let baseline = match &check.baseline {
            Some(baseline) => analysis.query(baseline)?,
            None => None,
        };
        let no_data = check.no_data.unwrap_or(analysis.no_data);
        let reason = match value {
            Some(value) => check.judge(value, baseline),
            None if no_data == NoData::Fail => Some(format!("`{}` returned no data", check.name)),
            None => None,
        };
        if let Some(reason) = reason {
            round.failed.push((check.name.clone(), reason));
        }
        round.values.insert(check.name.clone(), value);
    }
    Ok(round)
}

/// Where a hold stands between two rounds: when it began, and for each
/// check since when it has failed and how often. It is plain data (JSON),
/// so a step that holds for hours keeps it as its wait state and goes on
/// from it in another call, or another process. Times are wall-clock
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
pub struct Hold {
    /// When the hold began.
    pub started_ms: u64,
    /// Rounds evaluated so far.
    pub rounds: u32,
    failures: BTreeMap<String, u32>,
    failing_since_ms: BTreeMap<String, u64>,
    with_data: BTreeMap<String, bool>,
    /// The latest value of each check, `None` without data.
    pub last: BTreeMap<String, Option<f64>>,
}

/// Why an analysis failed.
#[derive(Debug)]
pub enum Verdict {
    /// A check's breach held `for` its duration, or it failed more rounds
    /// than the limit allows.
    Breached(String),
    /// The step could not go on (cancelled, timed out, the source down).
    Error(Error),
}

impl From<Error> for Verdict {
    fn from(error: Error) -> Self {
        Verdict::Error(error)
    }
}

/// What comes after a round that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Evaluate again after this long.
    After(Duration),
    /// The hold is over, every check within its limits.
    Passed,
}

/// Now, in wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Hold {
    /// A hold that begins at `now_ms`, with no rounds yet.
    pub fn new(now_ms: u64) -> Self {
        Hold {
            started_ms: now_ms,
            ..Hold::default()
        }
    }

    /// Evaluates one round of `analysis` at `now_ms`, hands it to `report`,
    /// and says when the next one is due, or that the hold of `duration`
    /// passed; fails at the first breach that counts. A breach still short
    /// of its `for` when the time is up keeps the hold going until it
    /// clears or counts: the end of a hold does not let through what one
    /// more minute would have failed.
    pub fn round(
        &mut self,
        analysis: &Analysis,
        duration: Duration,
        now_ms: u64,
        report: impl FnOnce(&Round),
    ) -> Result<Next, Verdict> {
        let round = evaluate(analysis)?;
        self.rounds += 1;
        report(&round);
        let pending = self.judge(analysis, &round, now_ms)?;
        self.last = round.values;
        let elapsed = Duration::from_millis(now_ms.saturating_sub(self.started_ms));
        match pending {
            _ if elapsed < duration => {
                return Ok(Next::After(analysis.interval().min(duration - elapsed)));
            }
            Some(left) => {
                runbook_sdk::log::info(format!(
                    "the hold is over, but a breach is {} short of counting: watching until it clears or counts",
                    HumanDuration(left)
                ));
                return Ok(Next::After(analysis.interval().min(left)));
            }
            None => {}
        }
        if let Some((name, _)) = self
            .with_data
            .iter()
            .find(|(name, seen)| !**seen && no_data_of(analysis, name) == NoData::Wait)
        {
            return Err(Verdict::Breached(format!(
                "`{name}` returned no data in {} rounds: are the metrics there? (a query on a series that may not exist yet can end in `or vector(0)`, or say `no_data = \"pass\"`)",
                self.rounds
            )));
        }
        Ok(Next::Passed)
    }

    /// About how many rounds a hold of `duration` takes: for `round 3/20`.
    pub fn expected_rounds(analysis: &Analysis, duration: Duration) -> u32 {
        let interval = analysis.interval().as_millis().max(1);
        u32::try_from(duration.as_millis().div_ceil(interval) + 1).unwrap_or(u32::MAX)
    }

    /// Takes one round into account at `now_ms`: a breach that counts is
    /// an error; otherwise, how long the longest breach still pending has
    /// to hold before it counts, if one is.
    fn judge(
        &mut self,
        analysis: &Analysis,
        round: &Round,
        now_ms: u64,
    ) -> Result<Option<Duration>, Verdict> {
        for (name, value) in &round.values {
            *self.with_data.entry(name.clone()).or_default() |= value.is_some();
        }
        let failed: BTreeMap<&str, &str> = round
            .failed
            .iter()
            .map(|(name, reason)| (name.as_str(), reason.as_str()))
            .collect();
        let mut pending = None;
        for check in &analysis.checks {
            let Some(reason) = failed.get(check.name.as_str()) else {
                self.failing_since_ms.remove(&check.name);
                continue;
            };
            let failures = self.failures.entry(check.name.clone()).or_default();
            *failures += 1;
            let since = *self
                .failing_since_ms
                .entry(check.name.clone())
                .or_insert(now_ms);
            match check.sustained {
                Some(held) => {
                    let failing = Duration::from_millis(now_ms.saturating_sub(since));
                    if failing >= held.get() {
                        return Err(Verdict::Breached(format!(
                            "{reason}, failing for {} (limit {held})",
                            HumanDuration(failing)
                        )));
                    }
                    let left = held.get() - failing;
                    pending = Some(pending.map_or(left, |other: Duration| other.max(left)));
                }
                None if *failures > analysis.failure_limit => {
                    return Err(Verdict::Breached(format!(
                        "{reason} ({failures} failed round{} of {}, limit {})",
                        if *failures == 1 { "" } else { "s" },
                        self.rounds,
                        analysis.failure_limit
                    )));
                }
                None => {}
            }
        }
        Ok(pending)
    }

    /// `error_rate=0.004 p95=0.12`: the latest round's values.
    pub fn summary(&self) -> String {
        Round {
            values: self.last.clone(),
            failed: Vec::new(),
        }
        .summary()
    }

    /// The latest value of each check, for outputs.
    pub fn outputs(&self) -> Vec<(String, String)> {
        self.last
            .iter()
            .map(|(name, value)| (name.clone(), value.map_or_else(|| "no data".into(), show)))
            .collect()
    }
}

/// What a round without data means for the check called `name`.
fn no_data_of(analysis: &Analysis, name: &str) -> NoData {
    analysis
        .checks
        .iter()
        .find(|check| check.name == name)
        .and_then(|check| check.no_data)
        .unwrap_or(analysis.no_data)
}

/// A whole hold inside one call: rounds every `interval` for `duration`
/// (at least one), sleeping on the host between them, `report` after
/// each. For a hold short enough not to need rounds of its own.
pub fn hold(
    analysis: &Analysis,
    duration: Duration,
    mut report: impl FnMut(&Round),
) -> Result<Hold, Verdict> {
    let mut hold = Hold::new(now_ms());
    loop {
        match hold.round(analysis, duration, now_ms(), &mut report)? {
            Next::After(wait) => runbook_sdk::sleep(wait)?,
            Next::Passed => return Ok(hold),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: Option<f64>, ratio: Option<f64>) -> Check {
        Check {
            name: "p95".into(),
            query: Query::Promql("q".into()),
            max,
            min: None,
            baseline: ratio.map(|_| Query::Promql("b".into())),
            max_ratio: ratio,
            max_increase: None,
            sustained: None,
            no_data: None,
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
    fn an_increase_is_a_percentage_of_the_baseline_or_a_number_in_its_unit() {
        let mut relative = check(None, None);
        relative.baseline = Some(Query::Promql("b".into()));
        relative.max_increase = Some(Increase::Percent("10%".into()));
        assert_eq!(relative.judge(0.105, Some(0.1)), None);
        assert_eq!(
            relative.judge(0.12, Some(0.1)).unwrap(),
            "p95 = 0.12 is more than 10% above the baseline 0.1"
        );
        relative.max_increase = Some(Increase::Absolute(0.005));
        assert_eq!(relative.judge(0.014, Some(0.01)), None);
        assert!(relative.judge(0.016, Some(0.01)).is_some());
        // No baseline data: nothing to compare with.
        assert_eq!(relative.judge(5.0, None), None);
        assert!(Increase::Percent("ten".into()).limit(1.0).is_err());
        assert!(relative.check("c", false).is_ok());
    }

    fn analysis(check: Check) -> Analysis {
        Analysis {
            prometheus: Some("http://p".into()),
            cloudwatch: None,
            checks: vec![check],
            interval: None,
            failure_limit: 0,
            no_data: NoData::Wait,
        }
    }

    fn round(failing: bool) -> Round {
        Round {
            values: [("p95".to_owned(), Some(1.0))].into(),
            failed: if failing {
                vec![("p95".into(), "p95 = 1 is above 0.5".into())]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_breach_counts_only_once_it_has_held_for_its_duration() {
        let mut sustained = check(Some(0.5), None);
        sustained.sustained = Some(HumanDuration(Duration::from_secs(30)));
        let analysis = analysis(sustained);
        let mut hold = Hold::new(1_000_000);
        let at = |seconds: u64| 1_000_000 + seconds * 1000;
        // A spike of two rounds, then health: never counts.
        assert_eq!(
            hold.judge(&analysis, &round(true), at(0)).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            hold.judge(&analysis, &round(true), at(10)).unwrap(),
            Some(Duration::from_secs(20))
        );
        assert_eq!(hold.judge(&analysis, &round(false), at(20)).unwrap(), None);
        // A breach that holds: it counts when it has lasted 30s, also when
        // the hold went through JSON between rounds (another process).
        assert!(
            hold.judge(&analysis, &round(true), at(30))
                .unwrap()
                .is_some()
        );
        let text = runbook_sdk::serde_json::to_string(&hold).unwrap();
        let mut hold: Hold = runbook_sdk::serde_json::from_str(&text).unwrap();
        assert!(
            hold.judge(&analysis, &round(true), at(50))
                .unwrap()
                .is_some()
        );
        match hold.judge(&analysis, &round(true), at(60)) {
            Err(Verdict::Breached(reason)) => {
                assert_eq!(reason, "p95 = 1 is above 0.5, failing for 30s (limit 30s)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_for_the_failure_limit_counts_rounds() {
        let mut analysis = analysis(check(Some(0.5), None));
        analysis.failure_limit = 1;
        let mut hold = Hold::new(0);
        assert_eq!(hold.judge(&analysis, &round(true), 0).unwrap(), None);
        assert!(hold.judge(&analysis, &round(true), 0).is_err());
    }

    #[test]
    fn a_source_and_queries_of_its_kind_are_required() {
        let mut analysis = analysis(check(Some(1.0), None));
        assert!(analysis.check("").is_ok());
        analysis.cloudwatch = Some(CloudWatch {
            region: "us-east-1".into(),
        });
        assert!(analysis.check("").is_err(), "both sources");
        analysis.prometheus = None;
        assert!(analysis.check("").is_err(), "PromQL for CloudWatch");
        analysis.cloudwatch = None;
        assert!(analysis.check("").is_err(), "no source");
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
