//! AWS CloudWatch: the latest datapoint of a metric statistic, read with
//! `GetMetricData` through the host's AWS capability (service
//! `monitoring`), which signs the call within the step's `grants.aws`.

use runbook_sdk::aws::{self, xml_elements, xml_text};
use runbook_sdk::serde_json::{Map, Value};
use runbook_sdk::{Deserialize, Error, HumanDuration, JsonSchema};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where CloudWatch is read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct CloudWatch {
    /// The region of the metrics, `us-east-1`.
    pub region: String,
}

/// One CloudWatch metric statistic, the CloudWatch form of a check's
/// `query` or `baseline`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
pub struct Metric {
    /// `AWS/ApplicationELB`, `AWS/Lambda`, or a custom namespace.
    pub namespace: String,
    /// `HTTPCode_Target_5XX_Count`, `Errors`, `Duration`.
    pub metric: String,
    /// `{ LoadBalancer = "app/web/123" }`.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// `Average` (default), `Sum`, `Minimum`, `Maximum`, `SampleCount`, or
    /// a percentile such as `p95`.
    #[serde(default)]
    pub stat: Option<String>,
    /// The period of one datapoint (default 1m; at least 1s).
    #[serde(default)]
    pub period: Option<HumanDuration>,
    /// How far back to look for the latest datapoint (default 5 periods).
    #[serde(default)]
    pub window: Option<HumanDuration>,
}

impl Metric {
    fn period(&self) -> Duration {
        self.period
            .map_or(Duration::from_secs(60), HumanDuration::get)
    }

    fn window(&self) -> Duration {
        self.window.map_or(self.period() * 5, HumanDuration::get)
    }

    fn stat(&self) -> &str {
        self.stat.as_deref().unwrap_or("Average")
    }

    /// Whether the metric is well formed, as `(path, message)` under `at`.
    pub fn check(&self, at: &str) -> Result<(), Error> {
        let period = self.period().as_secs();
        let valid =
            matches!(period, 1 | 5 | 10 | 30) || (period >= 60 && period.is_multiple_of(60));
        if !valid {
            return Err(Error::invalid_param(
                format!("{at}.period"),
                "CloudWatch periods are 1, 5, 10, 30 seconds or a multiple of 60",
            ));
        }
        if self.window() < self.period() {
            return Err(Error::invalid_param(
                format!("{at}.window"),
                "the window must hold at least one period",
            ));
        }
        let stat = self.stat();
        let known = ["Average", "Sum", "Minimum", "Maximum", "SampleCount"].contains(&stat)
            || stat
                .strip_prefix('p')
                .is_some_and(|rest| rest.parse::<f64>().is_ok_and(|p| p > 0.0 && p < 100.0));
        if !known {
            return Err(Error::invalid_param(
                format!("{at}.stat"),
                format!(
                    "`{stat}` is not a CloudWatch statistic: Average, Sum, Minimum, Maximum, SampleCount or a percentile like p95"
                ),
            ));
        }
        Ok(())
    }

    /// `AWS/Lambda Errors{FunctionName=api} Sum/1m`, for plans and messages.
    pub fn describe(&self) -> String {
        let dimensions: Vec<String> = self
            .dimensions
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!(
            "{} {}{{{}}} {}/{}",
            self.namespace,
            self.metric,
            dimensions.join(","),
            self.stat(),
            HumanDuration(self.period())
        )
    }

    /// The flattened Query-protocol parameters of `GetMetricData` for the
    /// window ending at `now` (seconds since the epoch).
    fn request(&self, now: u64) -> Value {
        let mut params = Map::new();
        let mut put = |key: &str, value: String| {
            params.insert(key.to_owned(), Value::String(value));
        };
        let query = "MetricDataQueries.member.1";
        put(&format!("{query}.Id"), "m1".into());
        put(&format!("{query}.ReturnData"), "true".into());
        let stat = format!("{query}.MetricStat");
        put(&format!("{stat}.Metric.Namespace"), self.namespace.clone());
        put(&format!("{stat}.Metric.MetricName"), self.metric.clone());
        for (index, (name, value)) in self.dimensions.iter().enumerate() {
            let at = format!("{stat}.Metric.Dimensions.member.{}", index + 1);
            put(&format!("{at}.Name"), name.clone());
            put(&format!("{at}.Value"), value.clone());
        }
        put(
            &format!("{stat}.Period"),
            self.period().as_secs().to_string(),
        );
        put(&format!("{stat}.Stat"), self.stat().to_owned());
        let start = now.saturating_sub(self.window().as_secs());
        put("StartTime", iso8601(start));
        put("EndTime", iso8601(now));
        put("ScanBy", "TimestampDescending".into());
        Value::Object(params)
    }
}

/// The latest datapoint of `metric` in its window; `None` when there is
/// none.
pub fn query(cloudwatch: &CloudWatch, metric: &Metric) -> Result<Option<f64>, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let reply = aws::query(
        "monitoring",
        &cloudwatch.region,
        "GetMetricData",
        &metric.request(now),
    )?;
    latest(&reply.body)
}

/// The newest value of the one result of a `GetMetricData` answer (one
/// query is asked): values come newest first (`TimestampDescending`), but
/// the timestamps decide, so an answer in another order reads the same.
fn latest(xml: &str) -> Result<Option<f64>, Error> {
    let Some(result) = xml_elements(xml, "MetricDataResults").into_iter().next() else {
        return Ok(None);
    };
    if let Some(code) = xml_text(result, "StatusCode")
        && code != "Complete"
        && code != "PartialData"
    {
        return Err(Error::transient(format!(
            "CloudWatch answered the query with status {code}"
        )));
    }
    let values = member_texts(result, "Values");
    let times = member_texts(result, "Timestamps");
    let mut points: Vec<(String, f64)> = times
        .into_iter()
        .zip(values)
        .filter_map(|(time, value)| Some((time, value.parse::<f64>().ok()?)))
        .filter(|(_, value)| value.is_finite())
        .collect();
    // ISO 8601 times in one zone sort as text.
    points.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(points.first().map(|(_, value)| *value))
}

/// The texts of the `<member>`s of the first `<list>` element.
fn member_texts(xml: &str, list: &str) -> Vec<String> {
    xml_elements(xml, list)
        .into_iter()
        .next()
        .map(|inner| {
            xml_elements(inner, "member")
                .into_iter()
                .map(|text| text.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `2026-12-01T08:30:00Z` from seconds since the epoch (proleptic
/// Gregorian calendar, as CloudWatch reads it).
fn iso8601(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_cloudwatch_reads_them() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_113_845), "2026-12-01T08:30:45Z");
    }

    fn metric(stat: Option<&str>, period: u64) -> Metric {
        Metric {
            namespace: "AWS/Lambda".into(),
            metric: "Errors".into(),
            dimensions: [("FunctionName".to_owned(), "api".to_owned())].into(),
            stat: stat.map(str::to_owned),
            period: Some(HumanDuration(Duration::from_secs(period))),
            window: None,
        }
    }

    #[test]
    fn the_request_names_the_metric_its_statistic_and_window() {
        let request = metric(Some("Sum"), 60).request(1_796_113_845);
        let at = |key: &str| request[key].as_str().unwrap().to_owned();
        assert_eq!(
            at("MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Name"),
            "FunctionName"
        );
        assert_eq!(at("MetricDataQueries.member.1.MetricStat.Stat"), "Sum");
        assert_eq!(at("MetricDataQueries.member.1.MetricStat.Period"), "60");
        assert_eq!(at("StartTime"), "2026-12-01T08:25:45Z");
        assert_eq!(at("EndTime"), "2026-12-01T08:30:45Z");
    }

    #[test]
    fn statistics_and_periods_are_checked() {
        assert!(metric(Some("p99.9"), 60).check("m").is_ok());
        assert!(metric(Some("Median"), 60).check("m").is_err());
        assert!(metric(None, 90).check("m").is_err());
        assert!(metric(None, 10).check("m").is_ok());
        assert!(metric(None, 7).check("m").is_err());
    }

    #[test]
    fn the_newest_datapoint_is_read_whatever_the_order() {
        let xml = "<GetMetricDataResponse><GetMetricDataResult><MetricDataResults><member>\
            <Id>m1</Id><StatusCode>Complete</StatusCode>\
            <Timestamps><member>2026-12-01T08:00:00Z</member><member>2026-12-01T08:02:00Z</member></Timestamps>\
            <Values><member>1.5</member><member>4.0</member></Values>\
            </member></MetricDataResults></GetMetricDataResult></GetMetricDataResponse>";
        assert_eq!(latest(xml).unwrap(), Some(4.0));
        let empty = "<MetricDataResults><member><Id>m1</Id><StatusCode>Complete</StatusCode><Timestamps/><Values/></member></MetricDataResults>";
        assert_eq!(latest(empty).unwrap(), None);
    }
}
