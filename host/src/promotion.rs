//! The promotion rule: whether the deployment records show the earlier
//! success a run needs (`requires` of its environment), which run that is,
//! or what is missing, in the words of the refusal. Pure: the caller reads
//! the records and the clock (`run::gates::promotion`).

use crate::runbook::Promotion;
use crate::state::DeploymentRecord;
use crate::template::as_text;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

/// The run a promotion is asked for: its runbook and its parameters.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    /// The runbook's name, as records carry it.
    pub runbook: &'a str,
    /// The run's parameter values; those `same` names must match.
    pub params: &'a BTreeMap<String, serde_json::Value>,
}

/// Whether two runs' values of one parameter are the same: compared as
/// text, so that a value a record kept as a string before its parameter
/// had a type (`"10"`) is the same as the typed one (`10`). Absent in both
/// counts as the same.
fn same_value(recorded: Option<&serde_json::Value>, asked: Option<&serde_json::Value>) -> bool {
    match (recorded, asked) {
        (Some(recorded), Some(asked)) => recorded == asked || as_text(recorded) == as_text(asked),
        (None, None) => true,
        _ => false,
    }
}

/// What the records say of a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This run satisfies it: the newest one that does.
    Met {
        /// The run.
        run_id: String,
        /// When it succeeded.
        succeeded: Timestamp,
    },
    /// No run with these values succeeded and stands: these failed (with
    /// their status) or were rolled back since.
    NoSuccess {
        /// Runs that ended otherwise: id and status.
        failed: Vec<(String, String)>,
        /// Runs that succeeded and were rolled back since.
        rolled_back: Vec<String>,
    },
    /// A run succeeded, too recently: the one that soaks first.
    NotSoaked {
        /// The run.
        run_id: String,
        /// When it succeeded.
        succeeded: Timestamp,
        /// When it has soaked long enough.
        eligible: Timestamp,
    },
    /// Every success is older than `within`: the newest.
    TooOld {
        /// The run.
        run_id: String,
        /// When it succeeded.
        succeeded: Timestamp,
    },
}

/// Judges `records` (in any order) against `requires` at `now`. A record
/// counts when it is of the same runbook, in the required environment,
/// with the same values of every `same` parameter (absent in both counts
/// as the same), ended `succeeded`, was not rolled back since, and has a
/// readable end time.
pub fn judge(
    requires: &Promotion,
    asking: Asking<'_>,
    records: &[DeploymentRecord],
    now: Timestamp,
) -> Verdict {
    let matching = records.iter().filter(|record| {
        record.runbook == asking.runbook
            && record.environment.as_deref() == Some(requires.environment.as_str())
            && requires
                .same
                .iter()
                .all(|name| same_value(record.params.get(name), asking.params.get(name)))
    });
    let mut failed = Vec::new();
    let mut rolled_back = Vec::new();
    // Successes that stand, newest first.
    let mut successes: Vec<(Timestamp, &str)> = Vec::new();
    for record in matching {
        if record.status != "succeeded" && record.status != "rolled_back" {
            failed.push((record.run_id.clone(), record.status.clone()));
        } else if record.rolled_back() {
            rolled_back.push(record.run_id.clone());
        } else if let Ok(finished) = record.finished.parse::<Timestamp>() {
            successes.push((finished, &record.run_id));
        }
    }
    successes.sort_by(|a, b| b.cmp(a));
    let soaked = signed(requires.soaked);
    let within = requires.within.map(signed);
    let age = |succeeded: Timestamp| now.duration_since(succeeded);
    if let Some((succeeded, run_id)) = successes.iter().find(|(succeeded, _)| {
        age(*succeeded) >= soaked && within.is_none_or(|within| age(*succeeded) <= within)
    }) {
        return Verdict::Met {
            run_id: (*run_id).to_owned(),
            succeeded: *succeeded,
        };
    }
    // The one that soaks first is the oldest of those too young.
    if let Some((succeeded, run_id)) = successes
        .iter()
        .rev()
        .find(|(succeeded, _)| age(*succeeded) < soaked)
    {
        return Verdict::NotSoaked {
            run_id: (*run_id).to_owned(),
            succeeded: *succeeded,
            eligible: succeeded.checked_add(soaked).unwrap_or(Timestamp::MAX),
        };
    }
    match successes.first() {
        Some((succeeded, run_id)) => Verdict::TooOld {
            run_id: (*run_id).to_owned(),
            succeeded: *succeeded,
        },
        None => {
            failed.sort();
            rolled_back.sort();
            Verdict::NoSuccess {
                failed,
                rolled_back,
            }
        }
    }
}

/// A runbook's duration, at most 30 days, as a span of the clock.
fn signed(duration: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// What a requirement asks, and of which values, in the refusal's words.
#[derive(Debug, Clone)]
pub struct Wording<'a> {
    /// The requirement.
    pub requires: &'a Promotion,
    /// The run asking.
    pub asking: Asking<'a>,
    /// The time it is judged at.
    pub now: Timestamp,
}

impl Wording<'_> {
    /// ` with version=1.2.3`, the values that must be the same, or nothing.
    pub fn values(&self) -> String {
        let values: Vec<String> = self
            .requires
            .same
            .iter()
            .map(|name| {
                let value = self
                    .asking
                    .params
                    .get(name)
                    .map_or_else(|| "(unset)".to_owned(), as_text);
                format!("{name}={value}")
            })
            .collect();
        if values.is_empty() {
            String::new()
        } else {
            format!(" with {}", values.join(" "))
        }
    }

    /// The whole requirement: `a run of `api` in `staging` with
    /// version=1.2.3 that succeeded at least 24h and at most 7d ago`.
    pub fn requirement(&self) -> String {
        let requires = self.requires;
        let when = match (requires.soaked.is_zero(), requires.within) {
            (true, None) => String::new(),
            (true, Some(within)) => format!(" at most {} ago", span(signed(within))),
            (false, None) => format!(" at least {} ago", span(signed(requires.soaked))),
            (false, Some(within)) => format!(
                " at least {} and at most {} ago",
                span(signed(requires.soaked)),
                span(signed(within))
            ),
        };
        format!(
            "a run of `{}` in `{}`{} that succeeded{when} and was not rolled back",
            self.asking.runbook,
            requires.environment,
            self.values()
        )
    }

    /// Why nothing satisfies the requirement, naming the run that will or
    /// did; `None` when a run satisfies it.
    pub fn missing(&self, verdict: &Verdict) -> Option<String> {
        let environment = &self.requires.environment;
        let values = self.values();
        let ago = |succeeded: &Timestamp| span(self.now.duration_since(*succeeded));
        Some(match verdict {
            Verdict::Met { .. } => return None,
            Verdict::NoSuccess {
                failed,
                rolled_back,
            } => {
                let mut seen: Vec<String> = failed
                    .iter()
                    .map(|(run_id, status)| format!("run {run_id} {status}"))
                    .collect();
                seen.extend(
                    rolled_back
                        .iter()
                        .map(|run_id| format!("run {run_id} was rolled back")),
                );
                let seen = if seen.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", seen.join("; "))
                };
                format!("no run in `{environment}`{values} succeeded{seen}")
            }
            Verdict::NotSoaked {
                run_id,
                succeeded,
                eligible,
            } => format!(
                "run {run_id} in `{environment}`{values} succeeded {} ago; `soaked` needs {}: it is eligible at {}",
                ago(succeeded),
                span(signed(self.requires.soaked)),
                clock_from(*eligible)
            ),
            Verdict::TooOld { run_id, succeeded } => format!(
                "the newest run in `{environment}`{values} that succeeded, {run_id}, is {} old; `within` allows {}",
                ago(succeeded),
                span(signed(self.requires.within.unwrap_or_default()))
            ),
        })
    }

    /// How the run that satisfies the requirement does:
    /// `run X in `staging` with version=1.2.3 succeeded 26h ago`.
    pub fn met(&self, run_id: &str, succeeded: Timestamp) -> String {
        format!(
            "run {run_id} in `{}`{} succeeded {} ago, at {}",
            self.requires.environment,
            self.values(),
            span(self.now.duration_since(succeeded)),
            clock(succeeded)
        )
    }
}

/// A time as the refusal shows it: `2026-11-23 14:05 UTC`.
pub fn clock(time: Timestamp) -> String {
    time.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// A time from which something holds, as the refusal shows it: rounded up
/// to the minute, so that a run started at the minute shown passes.
pub fn clock_from(time: Timestamp) -> String {
    let rounding = jiff::TimestampRound::new()
        .smallest(jiff::Unit::Minute)
        .mode(jiff::RoundMode::Ceil);
    clock(time.round(rounding).unwrap_or(time))
}

/// A span in its two largest units: `9d 2h`, `26h`, `3h 12m`, `42s`;
/// in hours below two days, as soak times are written (`24h`).
pub fn span(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    if seconds < 0 {
        // A record from the future of `RUNBOOK_NOW`.
        return format!("-{}", span(SignedDuration::from_secs(-seconds)));
    }
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let first = usize::from(seconds < 2 * 86_400);
    let parts: Vec<String> = units[first..]
        .iter()
        .scan(seconds, |left, (size, unit)| {
            let count = *left / size;
            *left %= size;
            Some((count, unit))
        })
        .skip_while(|(count, _)| *count == 0)
        .take(2)
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOUR: u64 = 3_600;

    fn requires() -> Promotion {
        Promotion {
            environment: "staging".into(),
            same: vec!["version".into()],
            soaked: Duration::from_secs(24 * HOUR),
            within: Some(Duration::from_secs(7 * 24 * HOUR)),
        }
    }

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    /// A record of `api` in `environment` with `version` that ended with
    /// `status` `hours` before [`now`].
    fn record(
        run_id: &str,
        environment: &str,
        version: &str,
        status: &str,
        hours: i64,
    ) -> DeploymentRecord {
        let mut record = DeploymentRecord::from_journal(
            &crate::journal::RunRecord::default(),
            std::path::Path::new("events.jsonl"),
        );
        record.run_id = run_id.into();
        record.runbook = "api".into();
        record.environment = Some(environment.into());
        record.params = [("version".to_owned(), serde_json::Value::from(version))].into();
        record.status = status.into();
        record.finished = (now() - SignedDuration::from_hours(hours)).to_string();
        record
    }

    fn params(version: &str) -> BTreeMap<String, serde_json::Value> {
        [("version".to_owned(), serde_json::Value::from(version))].into()
    }

    fn judged(records: &[DeploymentRecord], version: &str) -> (Verdict, Option<String>) {
        let requires = requires();
        let params = params(version);
        let asking = Asking {
            runbook: "api",
            params: &params,
        };
        let verdict = judge(&requires, asking, records, now());
        let wording = Wording {
            requires: &requires,
            asking,
            now: now(),
        };
        let missing = wording.missing(&verdict);
        (verdict, missing)
    }

    #[test]
    fn a_staging_success_that_soaked_and_is_recent_enough_satisfies_it() {
        let records = [
            record("old", "staging", "1.2.3", "succeeded", 30),
            record("newer", "staging", "1.2.3", "succeeded", 26),
            record("young", "staging", "1.2.3", "succeeded", 2),
        ];
        let (verdict, missing) = judged(&records, "1.2.3");
        assert!(
            matches!(&verdict, Verdict::Met { run_id, .. } if run_id == "newer"),
            "the newest that qualifies: {verdict:?}"
        );
        assert_eq!(missing, None);
    }

    #[test]
    fn without_a_staging_success_of_this_version_it_says_what_is_missing() {
        let records = [
            record("other-version", "staging", "1.2.2", "succeeded", 30),
            record("production", "production", "1.2.3", "succeeded", 30),
            record("broken", "staging", "1.2.3", "failed", 30),
        ];
        let (verdict, missing) = judged(&records, "1.2.3");
        assert!(matches!(verdict, Verdict::NoSuccess { .. }), "{verdict:?}");
        assert_eq!(
            missing.unwrap(),
            "no run in `staging` with version=1.2.3 succeeded (run broken failed)"
        );
    }

    #[test]
    fn a_rolled_back_success_does_not_count() {
        let mut undone = record("undone", "staging", "1.2.3", "rolled_back", 30);
        let mut stepped = record("stepped", "staging", "1.2.3", "succeeded", 30);
        stepped.steps = vec![serde_json::json!({"id": "deploy", "rolled_back": true})];
        undone.steps.clear();
        let (verdict, missing) = judged(&[undone, stepped], "1.2.3");
        assert_eq!(
            verdict,
            Verdict::NoSuccess {
                failed: Vec::new(),
                rolled_back: vec!["stepped".into(), "undone".into()]
            }
        );
        assert!(missing.unwrap().contains("run undone was rolled back"));
    }

    #[test]
    fn a_success_too_recent_says_when_it_is_eligible() {
        let records = [
            record("newest", "staging", "1.2.3", "succeeded", 1),
            record("first", "staging", "1.2.3", "succeeded", 3),
        ];
        let (verdict, missing) = judged(&records, "1.2.3");
        assert!(
            matches!(&verdict, Verdict::NotSoaked { run_id, .. } if run_id == "first"),
            "the one that soaks first: {verdict:?}"
        );
        assert_eq!(
            missing.unwrap(),
            "run first in `staging` with version=1.2.3 succeeded 3h ago; `soaked` needs 24h: it is eligible at 2026-11-24 09:00 UTC"
        );
    }

    #[test]
    fn only_successes_older_than_within_are_refused_naming_the_newest() {
        let records = [
            record("ancient", "staging", "1.2.3", "succeeded", 20 * 24),
            record("stale", "staging", "1.2.3", "succeeded", 9 * 24 + 2),
        ];
        let (verdict, missing) = judged(&records, "1.2.3");
        assert!(
            matches!(&verdict, Verdict::TooOld { run_id, .. } if run_id == "stale"),
            "{verdict:?}"
        );
        assert_eq!(
            missing.unwrap(),
            "the newest run in `staging` with version=1.2.3 that succeeded, stale, is 9d 2h old; `within` allows 7d"
        );
    }

    #[test]
    fn a_typed_value_is_the_same_as_the_string_an_older_record_kept() {
        let text = |value: &str| Some(serde_json::Value::from(value));
        let number = serde_json::json!(10);
        assert!(same_value(text("10").as_ref(), Some(&number)));
        assert!(same_value(Some(&number), Some(&number)));
        assert!(!same_value(text("11").as_ref(), Some(&number)));
        assert!(same_value(None, None));
        assert!(!same_value(None, Some(&number)));
        let list = serde_json::json!(["api", "worker"]);
        assert!(same_value(Some(&list), Some(&list)));
        assert!(!same_value(Some(&list), Some(&serde_json::json!(["api"]))));
    }

    #[test]
    fn the_requirement_reads_as_a_sentence() {
        let requires = requires();
        let params = params("1.2.3");
        let wording = Wording {
            requires: &requires,
            asking: Asking {
                runbook: "api",
                params: &params,
            },
            now: now(),
        };
        assert_eq!(
            wording.requirement(),
            "a run of `api` in `staging` with version=1.2.3 that succeeded at least 24h and at most 7d ago and was not rolled back"
        );
    }

    #[test]
    fn an_eligible_time_is_shown_rounded_up_to_the_minute() {
        let time: Timestamp = "2026-11-24T09:00:01Z".parse().unwrap();
        assert_eq!(clock_from(time), "2026-11-24 09:01 UTC");
        assert_eq!(clock(time), "2026-11-24 09:00 UTC");
        assert_eq!(clock_from(now()), "2026-11-23 12:00 UTC");
    }

    #[test]
    fn spans_show_their_two_largest_units() {
        let span = |seconds| span(SignedDuration::from_secs(seconds));
        assert_eq!(span(0), "0s");
        assert_eq!(span(42), "42s");
        assert_eq!(span(3 * 3_600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(span(9 * 86_400 + 2 * 3_600 + 59), "9d 2h");
        assert_eq!(span(86_400 + 30), "24h");
        assert_eq!(span(2 * 86_400 + 30), "2d");
        assert_eq!(span(-90), "-1m 30s");
    }
}
