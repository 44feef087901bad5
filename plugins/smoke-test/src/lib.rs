//! Smoke tests over HTTP: each check sends one request through the host and
//! compares status, JSON fields, body text and latency. With `retry_for`,
//! failing checks are retried until they pass or the time is up.

use runbook_sdk::http::{Request, Response};
use runbook_sdk::serde;
use runbook_sdk::serde_json::{self, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, PlannedAction, Step, log,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct SmokeTest;

/// Smoke-test parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The checks, run in order.
    checks: Vec<Check>,
    /// Keep retrying failing checks for this long ("60s"); by default a
    /// failing check fails the step at once.
    #[serde(default)]
    retry_for: Option<HumanDuration>,
    /// Pause between attempts (default "2s").
    #[serde(default)]
    interval: Option<HumanDuration>,
    /// Timeout of each request (default "10s").
    #[serde(default)]
    request_timeout: Option<HumanDuration>,
}

/// One HTTP check.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Check {
    /// Name used in messages and as the output key (default `check-N`).
    #[serde(default)]
    name: Option<String>,
    /// HTTP method (default GET).
    #[serde(default)]
    method: Option<String>,
    /// The URL; it must be granted to the step in `grants.http`.
    url: String,
    /// Request headers; values may hold `${{ secrets.NAME }}`.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Request body as text.
    #[serde(default)]
    body: Option<String>,
    /// Request body as JSON (sets content-type).
    #[serde(default)]
    json: Option<Value>,
    /// Expected status: a number or a list of numbers (default 200).
    #[serde(default)]
    expect_status: Option<ExpectStatus>,
    /// Fields the JSON response must have, with their values. Keys may be
    /// dotted paths (`"checks.database"`); objects match as subsets.
    #[serde(default)]
    expect_json: Option<serde_json::Map<String, Value>>,
    /// Text the body must contain.
    #[serde(default)]
    expect_body_contains: Option<String>,
    /// The response must arrive within this long ("500ms").
    #[serde(default)]
    max_latency: Option<HumanDuration>,
    /// Follow redirects (each must be granted too).
    #[serde(default)]
    follow_redirects: bool,
}

/// One status or several acceptable ones.
#[derive(Debug, JsonSchema)]
#[schemars(crate = "runbook_sdk::schemars", untagged)]
enum ExpectStatus {
    One(u16),
    Any(Vec<u16>),
}

impl<'de> Deserialize<'de> for ExpectStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let status = |value: &Value| {
            value
                .as_u64()
                .and_then(|number| u16::try_from(number).ok())
                .filter(|number| (100..600).contains(number))
        };
        match &value {
            Value::Array(items) => items
                .iter()
                .map(status)
                .collect::<Option<Vec<u16>>>()
                .map(ExpectStatus::Any),
            single => status(single).map(ExpectStatus::One),
        }
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected an HTTP status such as 200 or a list such as [200, 204], got {value}"
            ))
        })
    }
}

impl ExpectStatus {
    fn accepts(&self, status: u16) -> bool {
        match self {
            ExpectStatus::One(expected) => *expected == status,
            ExpectStatus::Any(expected) => expected.contains(&status),
        }
    }

    fn describe(&self) -> String {
        match self {
            ExpectStatus::One(expected) => expected.to_string(),
            ExpectStatus::Any(expected) => expected
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

impl Check {
    fn name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("check-{}", index + 1))
    }

    fn method(&self) -> String {
        self.method
            .clone()
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase()
    }

    fn expected_status(&self) -> ExpectStatus {
        match &self.expect_status {
            Some(ExpectStatus::One(status)) => ExpectStatus::One(*status),
            Some(ExpectStatus::Any(statuses)) => ExpectStatus::Any(statuses.clone()),
            None => ExpectStatus::One(200),
        }
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "{} {}, expect {}",
            self.method(),
            self.url,
            self.expected_status().describe()
        );
        if let Some(fields) = &self.expect_json {
            for (key, value) in fields {
                text.push_str(&format!(", {key} = {value}"));
            }
        }
        if let Some(needle) = &self.expect_body_contains {
            text.push_str(&format!(", body contains {needle:?}"));
        }
        if let Some(latency) = &self.max_latency {
            text.push_str(&format!(", within {latency}"));
        }
        text
    }

    /// Sends the request and compares; `Err` holds what differed.
    fn run(&self, timeout: Duration) -> Result<Response, Failure> {
        let mut request = Request::new(self.method(), &self.url)
            .timeout(timeout)
            .follow_redirects(self.follow_redirects);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(json) = &self.json {
            request = request.json(json);
        } else if let Some(body) = &self.body {
            request = request.body(body.as_bytes().to_vec());
        }
        let response = request.send().map_err(|error| match error {
            Error::Denied(_) | Error::Cancelled | Error::InvalidParams(_) => Failure::Fatal(error),
            // No answer at all: the service may come back.
            other => Failure::Unavailable(other.message()),
        })?;
        let expected = self.expected_status();
        if !expected.accepts(response.status) {
            let body = response.text();
            let excerpt: String = body.chars().take(200).collect();
            let failure = if response.status >= 500 {
                Failure::Unavailable
            } else {
                Failure::Retry
            };
            return Err(failure(format!(
                "expected status {}, got {}{}",
                expected.describe(),
                response.status,
                if excerpt.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (body: {})", excerpt.trim())
                }
            )));
        }
        if let Some(fields) = &self.expect_json {
            let actual = response.json().map_err(|_| {
                Failure::Retry(format!(
                    "expected a JSON body, got {:?}",
                    response.text().chars().take(120).collect::<String>()
                ))
            })?;
            for (key, expected) in fields {
                let found = lookup(&actual, key);
                match found {
                    None => {
                        return Err(Failure::Retry(format!(
                            "expected JSON field `{key}` = {expected}, but the field is missing"
                        )));
                    }
                    Some(found) if !matches_subset(expected, found) => {
                        return Err(Failure::Retry(format!(
                            "expected JSON field `{key}` = {expected}, got {found}"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(needle) = &self.expect_body_contains
            && !response.text().contains(needle.as_str())
        {
            return Err(Failure::Retry(format!(
                "expected the body to contain {needle:?}, it does not"
            )));
        }
        if let Some(limit) = &self.max_latency
            && response.elapsed > limit.get()
        {
            return Err(Failure::Retry(format!(
                "took {} ms, more than max_latency {limit}",
                response.elapsed.as_millis()
            )));
        }
        Ok(response)
    }
}

/// Why a check did not pass.
enum Failure {
    /// Worth another attempt within `retry_for`.
    Retry(String),
    /// The service did not answer, or answered 5xx: worth another attempt
    /// within `retry_for`, and, if it lasts past it, a transient failure
    /// that the step's `retries` may try again later.
    Unavailable(String),
    /// No point retrying (denied, cancelled).
    Fatal(Error),
}

/// `a.b.c` into nested objects; a key with a dot that exists as written wins.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(found) = value.get(path) {
        return Some(found);
    }
    path.split('.')
        .try_fold(value, |current, part| match current {
            Value::Array(items) => part
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            other => other.get(part),
        })
}

/// Equality where expected objects may omit fields and numbers compare by value.
fn matches_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => expected.iter().all(|(key, value)| {
            actual
                .get(key)
                .is_some_and(|found| matches_subset(value, found))
        }),
        (Value::Array(expected), Value::Array(actual)) => {
            expected.len() == actual.len()
                && expected
                    .iter()
                    .zip(actual)
                    .all(|(left, right)| matches_subset(left, right))
        }
        (Value::Number(expected), Value::Number(actual)) => expected.as_f64() == actual.as_f64(),
        _ => expected == actual,
    }
}

impl Step for SmokeTest {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Http];
    /// A check's headers or body may hold a secret (`X-API-Key`).
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[Capability::Secrets];
    const TRANSIENT: &'static str = "checks that still fail when `retry_for` ends only because the service did not answer (a refused or lost connection, a timeout) or answered 5xx";
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        validate(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        Ok(params
            .checks
            .iter()
            .map(|check| {
                let description = check.describe();
                if matches!(check.method().as_str(), "GET" | "HEAD") {
                    PlannedAction::read(description)
                } else {
                    PlannedAction::write(description)
                }
            })
            .collect())
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let started = Instant::now();
        let retry_for = params.retry_for.map(HumanDuration::get).unwrap_or_default();
        let interval = params
            .interval
            .map_or(Duration::from_secs(2), HumanDuration::get);
        let timeout = params
            .request_timeout
            .map_or(Duration::from_secs(10), HumanDuration::get);
        let total = params.checks.len();
        let mut passed: BTreeMap<usize, String> = BTreeMap::new();
        let mut attempt = 1;
        loop {
            let mut failures = Vec::new();
            let mut all_unavailable = true;
            for (index, check) in params.checks.iter().enumerate() {
                if passed.contains_key(&index) {
                    continue;
                }
                let name = check.name(index);
                match check.run(timeout) {
                    Ok(response) => {
                        let line = format!(
                            "{} in {:.1} ms",
                            response.status,
                            response.elapsed.as_secs_f64() * 1000.0
                        );
                        log::info(format!(
                            "✓ {name}: {} {} → {line}",
                            check.method(),
                            check.url
                        ));
                        passed.insert(index, line);
                    }
                    Err(Failure::Fatal(error)) => return Err(error),
                    Err(Failure::Retry(reason)) => {
                        all_unavailable = false;
                        failures.push(format!(
                            "check `{name}` ({} {}): {reason}",
                            check.method(),
                            check.url
                        ));
                    }
                    Err(Failure::Unavailable(reason)) => failures.push(format!(
                        "check `{name}` ({} {}): {reason}",
                        check.method(),
                        check.url
                    )),
                }
            }
            log::progress(
                format!("{} of {total} checks passed", passed.len()),
                Some(passed.len() as f32 / total.max(1) as f32),
            );
            if failures.is_empty() {
                break;
            }
            let waited = started.elapsed();
            if waited + interval > retry_for {
                let retried = if attempt > 1 {
                    format!(
                        " after {attempt} attempts over {:.1}s",
                        waited.as_secs_f64()
                    )
                } else {
                    String::new()
                };
                let message = format!(
                    "{} of {total} checks failed{retried}:\n{}",
                    failures.len(),
                    failures.join("\n")
                );
                // A service that never answered, or answered 5xx, may be
                // back later: the step's `retries` may try again. A wrong
                // answer (a 404, a missing field) would only repeat.
                return Err(if all_unavailable {
                    Error::transient(message)
                } else {
                    Error::failed(message)
                });
            }
            log::warn(format!(
                "attempt {attempt}: {} of {total} checks failed; retrying in {}\n{}",
                failures.len(),
                HumanDuration(interval),
                failures.join("\n")
            ));
            runbook_sdk::sleep(interval)?;
            attempt += 1;
        }
        let mut outcome = Outcome::new(format!(
            "{total} check{} passed{}",
            if total == 1 { "" } else { "s" },
            if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            }
        ));
        for (index, line) in passed {
            outcome = outcome.output(params.checks[index].name(index), line);
        }
        Ok(outcome)
    }
}

fn validate(params: &Params) -> Result<(), Error> {
    if params.checks.is_empty() {
        return Err(Error::invalid_param("checks", "give at least one check"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (index, check) in params.checks.iter().enumerate() {
        if !names.insert(check.name(index)) {
            return Err(Error::invalid_param(
                format!("checks[{index}].name"),
                format!("two checks are named `{}`", check.name(index)),
            ));
        }
        if check.body.is_some() && check.json.is_some() {
            return Err(Error::invalid_param(
                format!("checks[{index}]"),
                "give `body` or `json`, not both",
            ));
        }
    }
    Ok(())
}

runbook_sdk::export_step!(SmokeTest);

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_sdk::serde_json::json;

    #[test]
    fn dotted_paths_reach_nested_fields() {
        let value = json!({"checks": {"database": "ok"}, "items": [1, 2]});
        assert_eq!(lookup(&value, "checks.database"), Some(&json!("ok")));
        assert_eq!(lookup(&value, "items.1"), Some(&json!(2)));
        assert_eq!(lookup(&value, "missing.field"), None);
    }

    #[test]
    fn expected_objects_match_as_subsets_and_numbers_by_value() {
        assert!(matches_subset(
            &json!({"status": "healthy"}),
            &json!({"status": "healthy", "version": "1"})
        ));
        assert!(!matches_subset(
            &json!({"status": "healthy"}),
            &json!({"status": "degraded"})
        ));
        assert!(matches_subset(&json!(200), &json!(200.0)));
    }
}
