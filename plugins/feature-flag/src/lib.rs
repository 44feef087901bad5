//! `feature-flag`: sets a flag's rollout percentage, or enables or
//! disables it, through an HTTP flag service. By default it speaks the
//! admin API of the source runbooks (`POST URL` with `{"key",
//! "percentage"}` or `{"key", "enabled"}`, `GET URL/KEY` to read a flag);
//! `request` templates fit other services. It reads the flag before and
//! after the change, and rollback puts back the value it found.

use runbook_sdk::http::Request;
use runbook_sdk::serde_json::{Value, json};
use runbook_sdk::{
    Capability, Deserialize, Error, JsonSchema, Outcome, Outputs, PlannedAction, Step,
};
use std::collections::BTreeMap;

struct FeatureFlag;

/// Which flag, what value, and how to reach the flag service.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// Where changes are sent, e.g. `https://api.example.com/admin/feature-flags`.
    url: String,
    /// The flag's key.
    key: String,
    /// Set the rollout percentage (0 to 100).
    #[serde(default)]
    percentage: Option<u8>,
    /// Enable or disable the flag.
    #[serde(default)]
    enabled: Option<bool>,
    /// Sent as `Authorization: Bearer TOKEN`; use `${{ secrets.NAME }}`.
    #[serde(default)]
    token: Option<String>,
    /// Extra headers (values may hold secrets).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Where the current value is read; default `URL/KEY`. `none` to skip
    /// reading (rollback then cannot restore).
    #[serde(default)]
    read_url: Option<String>,
    /// For other flag services: the method (default `POST`) and a JSON body
    /// template in which `"{key}"`, `"{percentage}"` and `"{enabled}"` are
    /// replaced.
    #[serde(default)]
    request: Option<RequestTemplate>,
}

#[derive(Deserialize, JsonSchema, Clone)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct RequestTemplate {
    #[serde(default)]
    method: Option<String>,
    body: Value,
}

/// A flag's value as far as this plugin cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlagValue {
    percentage: Option<u64>,
    enabled: Option<bool>,
}

impl std::fmt::Display for FlagValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.percentage, self.enabled) {
            (Some(percentage), Some(enabled)) => write!(
                formatter,
                "{percentage}% ({})",
                if enabled { "enabled" } else { "disabled" }
            ),
            (Some(percentage), None) => write!(formatter, "{percentage}%"),
            (None, Some(true)) => write!(formatter, "enabled"),
            (None, Some(false)) => write!(formatter, "disabled"),
            (None, None) => write!(formatter, "unknown"),
        }
    }
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.percentage.is_none() && params.enabled.is_none() {
        return Err(Error::invalid_param("", "set `percentage` or `enabled`"));
    }
    if params.percentage.is_some_and(|value| value > 100) {
        return Err(Error::invalid_param(
            "percentage",
            "a percentage is 0 to 100",
        ));
    }
    Ok(())
}

fn with_auth(mut request: Request, params: &Params) -> Request {
    if let Some(token) = &params.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in &params.headers {
        request = request.header(name, value);
    }
    request
}

fn read_url(params: &Params) -> Option<String> {
    match params.read_url.as_deref() {
        Some("none") => None,
        Some(url) => Some(url.to_owned()),
        None => Some(format!(
            "{}/{}",
            params.url.trim_end_matches('/'),
            params.key
        )),
    }
}

/// The flag as the service has it; `Ok(None)` when it does not exist yet
/// (404) or cannot be read.
fn read(params: &Params) -> Result<Option<FlagValue>, Error> {
    let Some(url) = read_url(params) else {
        return Ok(None);
    };
    let response = with_auth(Request::get(&url), params).send()?;
    match response.status {
        200 => {
            let flag = response.json()?;
            Ok(Some(FlagValue {
                percentage: flag.get("percentage").and_then(Value::as_u64),
                enabled: flag.get("enabled").and_then(Value::as_bool),
            }))
        }
        404 => Ok(None),
        401 | 403 => Err(Error::failed(format!(
            "the flag service refused to read `{}` ({}): check the token",
            params.key, response.status
        ))),
        status => Err(Error::transient(format!(
            "reading flag `{}`: {status} {}",
            params.key,
            response.text()
        ))),
    }
}

/// Sends a change; `percentage`/`enabled` as given.
fn write(params: &Params, percentage: Option<u64>, enabled: Option<bool>) -> Result<(), Error> {
    let body = match &params.request {
        Some(template) => fill(&template.body, &params.key, percentage, enabled),
        None => {
            let mut body = json!({"key": params.key});
            if let Some(percentage) = percentage {
                body["percentage"] = json!(percentage);
            }
            if let Some(enabled) = enabled {
                body["enabled"] = json!(enabled);
            }
            body
        }
    };
    let method = params
        .request
        .as_ref()
        .and_then(|template| template.method.clone())
        .unwrap_or_else(|| "POST".into());
    let response = with_auth(Request::new(method, &params.url), params)
        .json(&body)
        .send()?;
    match response.status {
        200..=299 => Ok(()),
        500..=599 => Err(Error::transient(format!(
            "the flag service answered {}: {}",
            response.status,
            response.text()
        ))),
        status => Err(Error::failed(format!(
            "the flag service refused the change of `{}` ({status}): {}",
            params.key,
            response.text()
        ))),
    }
}

/// Replaces `"{key}"`, `"{percentage}"`, `"{enabled}"` in a body template.
fn fill(template: &Value, key: &str, percentage: Option<u64>, enabled: Option<bool>) -> Value {
    match template {
        Value::String(text) if text == "{percentage}" => {
            percentage.map_or(Value::Null, |value| json!(value))
        }
        Value::String(text) if text == "{enabled}" => {
            enabled.map_or(Value::Null, |value| json!(value))
        }
        Value::String(text) => json!(text.replace("{key}", key)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| fill(item, key, percentage, enabled))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| {
                    (
                        name.replace("{key}", key),
                        fill(value, key, percentage, enabled),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn wanted(params: &Params) -> FlagValue {
    FlagValue {
        percentage: params.percentage.map(u64::from),
        enabled: params.enabled,
    }
}

/// Whether the flag as read has what was asked.
fn holds(found: FlagValue, asked: FlagValue) -> bool {
    asked
        .percentage
        .is_none_or(|value| found.percentage == Some(value))
        && asked
            .enabled
            .is_none_or(|value| found.enabled == Some(value))
}

impl Step for FeatureFlag {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Http, Capability::Secrets];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let current = read(params)?;
        let asked = wanted(params);
        Ok(vec![match current {
            Some(found) if holds(found, asked) => {
                PlannedAction::read(format!("flag `{}` is already {found}", params.key))
            }
            Some(found) => {
                PlannedAction::write(format!("set flag `{}`: {found} → {asked}", params.key))
            }
            None => PlannedAction::write(format!(
                "set flag `{}` to {asked} (it does not exist yet)",
                params.key
            )),
        }])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let before = read(&params)?;
        let asked = wanted(&params);
        write(&params, asked.percentage, asked.enabled)?;
        if let Some(after) = read(&params)?
            && !holds(after, asked)
        {
            return Err(Error::failed(format!(
                "flag `{}` reads {after} after setting it to {asked}",
                params.key
            )));
        }
        let mut outcome = Outcome::new(match before {
            Some(before) => format!("flag `{}`: {before} → {asked}", params.key),
            None => format!("flag `{}` set to {asked}", params.key),
        });
        if let Some(before) = before {
            if let Some(percentage) = before.percentage {
                outcome = outcome.output("previous_percentage", percentage.to_string());
            }
            if let Some(enabled) = before.enabled {
                outcome = outcome.output("previous_enabled", enabled.to_string());
            }
        }
        if let Some(percentage) = asked.percentage {
            outcome = outcome.output("percentage", percentage.to_string());
        }
        Ok(outcome)
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let percentage = outputs
            .get("previous_percentage")
            .and_then(|text| text.parse().ok());
        let enabled = outputs
            .get("previous_enabled")
            .and_then(|text| text.parse().ok());
        let restored = if percentage.is_none() && enabled.is_none() {
            // The flag did not exist before the run: switch it off.
            FlagValue {
                percentage: params.percentage.map(|_| 0),
                enabled: Some(false),
            }
        } else {
            FlagValue {
                percentage,
                enabled,
            }
        };
        write(&params, restored.percentage, restored.enabled)?;
        Ok(format!("flag `{}` back to {restored}", params.key))
    }
}

runbook_sdk::export_step!(FeatureFlag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_template_gets_the_key_and_the_values_with_their_types() {
        let template = json!({"flag": "{key}", "rollout": {"percent": "{percentage}", "on": "{enabled}"}, "env": "prod"});
        assert_eq!(
            fill(&template, "new_feature", Some(25), Some(true)),
            json!({"flag": "new_feature", "rollout": {"percent": 25, "on": true}, "env": "prod"})
        );
    }

    #[test]
    fn a_flag_holds_when_every_asked_field_matches() {
        let found = FlagValue {
            percentage: Some(10),
            enabled: Some(true),
        };
        assert!(holds(
            found,
            FlagValue {
                percentage: Some(10),
                enabled: None
            }
        ));
        assert!(!holds(
            found,
            FlagValue {
                percentage: Some(50),
                enabled: None
            }
        ));
        assert!(!holds(
            found,
            FlagValue {
                percentage: None,
                enabled: Some(false)
            }
        ));
    }
}
