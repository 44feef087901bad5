//! What bounds one run of a step: its `timeout`, its `memory` and its
//! `retries`. Each is at most a fixed ceiling, so that a typo cannot ask
//! for a year or a terabyte.

use crate::diagnostic::{Diagnostic, Diagnostics, Source, ValuePath};
use crate::runbook::model::RawRetries;
use crate::runbook::{
    Code, DEFAULT_MEMORY, DEFAULT_TIMEOUT, MAX_ATTEMPTS, MAX_DURATION, MAX_MEMORY, RetryPolicy,
    parse_memory,
};
use std::sync::Arc;
use std::time::Duration;

/// The step's `timeout` at `at`; a wrong one is reported and the default
/// used.
pub(super) fn timeout(
    source: &Arc<Source>,
    text: Option<&str>,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Duration {
    text.map_or(DEFAULT_TIMEOUT, |text| {
        let hint = "write it like \"90s\", \"2m\" or \"1h 30m\"";
        duration(source, text, at, DEFAULT_TIMEOUT, hint, problems)
    })
}

/// The step's `memory` at `at`, in bytes; a wrong one is reported and the
/// default used.
pub(super) fn memory_limit(
    source: &Arc<Source>,
    text: Option<&str>,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> u64 {
    let Some(text) = text else {
        return DEFAULT_MEMORY;
    };
    match parse_memory(text) {
        Some(limit) if limit <= MAX_MEMORY => limit,
        Some(_) => {
            problems.push(
                Code::MemoryTooLarge
                    .diagnostic(format!(
                        "`{text}` is more than {} GiB, the most memory a step may have",
                        MAX_MEMORY >> 30
                    ))
                    .at(source, at),
            );
            DEFAULT_MEMORY
        }
        None => {
            problems.push(
                Code::NotAMemorySize
                    .diagnostic(format!("`{text}` is not a memory size"))
                    .at(source, at)
                    .hint("write it like \"64MiB\" or \"1GiB\""),
            );
            DEFAULT_MEMORY
        }
    }
}

/// The step's `retries` at `at`. Attempts out of bounds are reported and
/// clamped; a wrong pause is reported and its default used.
pub(super) fn retries(
    source: &Arc<Source>,
    raw: Option<&RawRetries>,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> RetryPolicy {
    let Some(raw) = raw else {
        return RetryPolicy::default();
    };
    let defaults = RetryPolicy::default();
    let mut pause = |text: &Option<String>, default: Duration, key: &str| {
        text.as_deref().map_or(default, |text| {
            let hint = "write it like \"2s\" or \"1m\"";
            duration(source, text, &at.key(key), default, hint, problems)
        })
    };
    let policy = RetryPolicy {
        attempts: raw.attempts.clamp(1, MAX_ATTEMPTS),
        backoff: pause(&raw.backoff, defaults.backoff, "backoff"),
        max: pause(&raw.max, defaults.max, "max"),
    };
    if raw.attempts == 0 {
        problems.push(
            Code::NoAttempts
                .diagnostic("`attempts` counts every try, the first included: it is at least 1")
                .at(source, &at.key("attempts")),
        );
    }
    if raw.attempts > MAX_ATTEMPTS {
        problems.push(
            Code::TooManyAttempts
                .diagnostic(format!(
                    "`attempts` is {}; a step is tried at most {MAX_ATTEMPTS} times",
                    raw.attempts
                ))
                .at(source, &at.key("attempts"))
                .hint("wait longer between tries instead: raise `backoff` and `max`"),
        );
    }
    policy
}

/// The duration at `at`; a wrong one is reported, with `hint` unless a
/// better one is known, and `fallback` used.
pub(super) fn duration(
    source: &Arc<Source>,
    text: &str,
    at: &ValuePath,
    fallback: Duration,
    hint: &'static str,
    problems: &mut Diagnostics,
) -> Duration {
    parse_duration(text).unwrap_or_else(|problem| {
        let problem = match problem.hint {
            Some(_) => problem,
            None => problem.hint(hint),
        };
        problems.push(problem.at(source, at));
        fallback
    })
}

/// A duration a runbook wrote, at most [`MAX_DURATION`]; else the problem,
/// without its place, and with a hint only when the caller's would not fit.
pub(super) fn parse_duration(text: &str) -> Result<Duration, Diagnostic> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        Ok(_) => Err(Code::DurationTooLong
            .diagnostic(format!(
                "`{text}` is longer than {} days, the longest duration a runbook may set",
                MAX_DURATION.as_secs() / 86_400
            ))
            .hint("a step that needs longer should be split, or be a manual step")),
        Err(error) => {
            Err(Code::NotADuration.diagnostic(format!("`{text}` is not a duration: {error}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::validate::testing::{codes, raw, source};

    #[test]
    fn durations_are_human_and_at_most_thirty_days() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30days").unwrap(), MAX_DURATION);
        let long = parse_duration("31days").unwrap_err();
        assert_eq!(long.code, Some("DurationTooLong"));
        assert!(long.hint.is_some(), "its own hint replaces the caller's");
        let wrong = parse_duration("soon").unwrap_err();
        assert_eq!(wrong.code, Some("NotADuration"));
        assert!(wrong.hint.is_none(), "the caller's hint fits");
    }

    #[test]
    fn a_timeout_defaults_and_a_wrong_one_falls_back_with_the_callers_hint() {
        let source = source("timeout = \"soon\"");
        let at = ValuePath::default().key("timeout");
        let mut problems = Diagnostics::default();
        assert_eq!(timeout(&source, None, &at, &mut problems), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout(&source, Some("2m"), &at, &mut problems),
            Duration::from_secs(120)
        );
        assert_eq!(
            timeout(&source, Some("soon"), &at, &mut problems),
            DEFAULT_TIMEOUT
        );
        assert_eq!(codes(&problems), ["NotADuration"]);
        assert!(problems.0[0].hint.as_deref().unwrap().contains("\"90s\""));
    }

    #[test]
    fn memory_is_a_size_up_to_four_gibibytes() {
        let source = source("");
        let at = ValuePath::default().key("memory");
        let mut problems = Diagnostics::default();
        let mut limit = |text| memory_limit(&source, text, &at, &mut problems);
        assert_eq!(limit(None), DEFAULT_MEMORY);
        assert_eq!(limit(Some("128MiB")), 128 << 20);
        assert_eq!(limit(Some("4GiB")), MAX_MEMORY);
        assert_eq!(limit(Some("5GiB")), DEFAULT_MEMORY);
        assert_eq!(limit(Some("plenty")), DEFAULT_MEMORY);
        assert_eq!(codes(&problems), ["MemoryTooLarge", "NotAMemorySize"]);
    }

    #[test]
    fn attempts_are_clamped_to_one_to_ten_and_each_wrong_part_is_reported() {
        let source = source("");
        let at = ValuePath::default().key("retries");
        let mut problems = Diagnostics::default();
        let mut policy = |text: &str| {
            let raw: RawRetries = raw(text);
            retries(&source, Some(&raw), &at, &mut problems)
        };
        let given = policy("attempts = 3\nbackoff = \"2s\"\nmax = \"1m\"");
        assert_eq!(
            given,
            RetryPolicy {
                attempts: 3,
                backoff: Duration::from_secs(2),
                max: Duration::from_secs(60),
            }
        );
        assert_eq!(policy("attempts = 0").attempts, 1);
        let many = policy("attempts = 50\nmax = \"later\"");
        assert_eq!(many.attempts, MAX_ATTEMPTS);
        assert_eq!(many.max, RetryPolicy::default().max);
        assert_eq!(
            codes(&problems),
            ["NoAttempts", "NotADuration", "TooManyAttempts"]
        );
        assert_eq!(
            retries(&source, None, &at, &mut problems),
            RetryPolicy::default()
        );
    }
}
