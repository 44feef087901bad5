//! `notify`: posts a message to a Slack-compatible incoming webhook. The
//! webhook URL is usually itself the secret (`${{ secrets.SLACK_WEBHOOK }}`):
//! the host unseals it only for this request and only within the step's
//! `grants.http`. Typically a target of the runbook's `[notify]`, called at
//! each moment of the run with the host's `text` and `status`, or an
//! `always = true` step at the end of a runbook. With `format = "pagerduty"`
//! it speaks the PagerDuty Events API v2 instead: it pages (`trigger`) when
//! a step fails or the run rolls back, and `resolve`s that page when the
//! run ends well, one incident per run.

use runbook_sdk::http::Request;
use runbook_sdk::serde_json::{Value, json};
use runbook_sdk::{Capability, Deserialize, Error, JsonSchema, Outcome, PlannedAction, Step};

struct Notify;

/// Where to post and what.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The incoming webhook URL, or a sealed secret holding it.
    webhook: String,
    /// The message. Default: "RUNBOOK ENVIRONMENT: STATUS (run ID by OPERATOR)".
    #[serde(default)]
    text: Option<String>,
    /// The runbook's name, for the default message and the attachment.
    #[serde(default)]
    runbook: Option<String>,
    /// `${{ run.status }}`: colours the message (green, red, grey).
    #[serde(default)]
    status: Option<String>,
    /// `${{ run.id }}`.
    #[serde(default)]
    run: Option<String>,
    /// `${{ run.environment }}`.
    #[serde(default)]
    environment: Option<String>,
    /// `${{ run.operator }}`.
    #[serde(default)]
    operator: Option<String>,
    /// `${{ run.failed_step }}`.
    #[serde(default)]
    failed_step: Option<String>,
    /// Extra fields shown under the message, e.g. `{ version = "1.2.3" }`.
    #[serde(default)]
    fields: std::collections::BTreeMap<String, String>,
    /// Slack channel override (`#deploys`), for webhooks that allow it.
    #[serde(default)]
    channel: Option<String>,
    /// `slack` (default: an incoming webhook's message) or `pagerduty`
    /// (the Events API v2 at `webhook`:
    /// `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    format: Format,
    /// PagerDuty: the integration's routing key, usually a sealed secret
    /// (`${{ secrets.PAGERDUTY_KEY }}`).
    #[serde(default)]
    routing_key: Option<String>,
}

/// What the webhook speaks.
#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "lowercase")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Format {
    /// A Slack-compatible incoming webhook.
    #[default]
    Slack,
    /// The PagerDuty Events API v2.
    Pagerduty,
}

fn colour(status: Option<&str>) -> &'static str {
    match status {
        Some("succeeded") => "good",
        Some("failed" | "denied") => "danger",
        Some(_) => "warning",
        None => "#439FE0",
    }
}

fn message(params: &Params) -> Value {
    let status = params.status.as_deref();
    let text = params.text.clone().unwrap_or_else(|| {
        let mut text = params.runbook.clone().unwrap_or_else(|| "runbook".into());
        if let Some(environment) = params
            .environment
            .as_deref()
            .filter(|name| !name.is_empty())
        {
            text.push_str(&format!(" {environment}"));
        }
        text.push_str(&format!(": {}", status.unwrap_or("update")));
        if let Some(step) = params
            .failed_step
            .as_deref()
            .filter(|step| !step.is_empty())
        {
            text.push_str(&format!(" at step `{step}`"));
        }
        match (&params.run, &params.operator) {
            (Some(run), Some(operator)) => text.push_str(&format!(" (run {run} by {operator})")),
            (Some(run), None) => text.push_str(&format!(" (run {run})")),
            _ => {}
        }
        text
    });
    let mut fields: Vec<Value> = Vec::new();
    for (title, value) in [
        ("status", params.status.as_deref()),
        ("environment", params.environment.as_deref()),
        ("run", params.run.as_deref()),
        ("failed step", params.failed_step.as_deref()),
    ] {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            fields.push(json!({"title": title, "value": value, "short": true}));
        }
    }
    for (title, value) in &params.fields {
        fields.push(json!({"title": title, "value": value, "short": true}));
    }
    let mut body = json!({
        "text": text,
        "attachments": [{"color": colour(status), "fields": fields, "fallback": text}],
    });
    if let Some(channel) = &params.channel {
        body["channel"] = json!(channel);
    }
    body
}

/// What a PagerDuty event does for a run's `status`: page, resolve the
/// page, or nothing (starts, stages and holds wake no one).
fn pagerduty_action(status: Option<&str>) -> Option<(&'static str, &'static str)> {
    match status? {
        "failed" | "denied" => Some(("trigger", "critical")),
        "rolling_back" => Some(("trigger", "error")),
        "succeeded" | "rolled_back" | "cancelled" => Some(("resolve", "info")),
        _ => None,
    }
}

/// The PagerDuty Events API v2 event for the message, if the status calls
/// for one: one incident per run (its dedup key), triggered on failure and
/// resolved at a good end.
fn pagerduty_event(params: &Params) -> Option<Value> {
    let (action, severity) = pagerduty_action(params.status.as_deref())?;
    let runbook = params.runbook.as_deref().unwrap_or("runbook");
    let dedup_key = format!(
        "runbook/{runbook}/{}/{}",
        params.environment.as_deref().unwrap_or("-"),
        params.run.as_deref().unwrap_or("-")
    );
    let mut event = json!({
        "routing_key": params.routing_key.clone().unwrap_or_default(),
        "event_action": action,
        "dedup_key": dedup_key,
    });
    if action == "trigger" {
        let summary: String = message(params)["text"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(1024)
            .collect();
        let mut details = runbook_sdk::serde_json::Map::new();
        for (key, value) in [
            ("status", params.status.as_deref()),
            ("run", params.run.as_deref()),
            ("environment", params.environment.as_deref()),
            ("operator", params.operator.as_deref()),
            ("failed_step", params.failed_step.as_deref()),
        ] {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                details.insert(key.to_owned(), json!(value));
            }
        }
        for (key, value) in &params.fields {
            details.insert(key.clone(), json!(value));
        }
        event["payload"] = json!({
            "summary": summary,
            "source": format!("runbook {runbook}"),
            "severity": severity,
            "custom_details": details,
        });
    }
    Some(event)
}

/// Posts `body` to the webhook; `said` when the service took it.
fn post(params: &Params, body: &Value, said: String) -> Result<Outcome, Error> {
    let response = Request::post(&params.webhook).json(body).send()?;
    match response.status {
        200..=299 => Ok(Outcome::new(said)),
        429 | 500..=599 => Err(Error::transient(format!(
            "the webhook answered {}: {}",
            response.status,
            response.text()
        ))),
        status => Err(Error::failed(format!(
            "the webhook refused the message ({status}): {}",
            response.text()
        ))),
    }
}

impl Step for Notify {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Http, Capability::Secrets];

    /// The webhook is a sealed secret or an http(s) URL; PagerDuty needs
    /// its routing key.
    fn check(params: &Params) -> Result<(), Error> {
        if params.format == Format::Pagerduty && params.routing_key.is_none() {
            return Err(Error::invalid_param(
                "routing_key",
                "`format = \"pagerduty\"` needs the integration's routing key: `routing_key = \"${{ secrets.PAGERDUTY_KEY }}\"`",
            ));
        }
        let webhook = params.webhook.trim();
        let sealed = webhook.starts_with("@@") && webhook.ends_with("@@");
        let url = webhook.starts_with("https://") || webhook.starts_with("http://");
        if sealed || url || runbook_sdk::unresolved(webhook) {
            Ok(())
        } else {
            Err(Error::invalid_param(
                "webhook",
                "give the incoming webhook's http(s) URL, or the secret that holds it: `webhook = \"${{ secrets.SLACK_WEBHOOK }}\"`",
            ))
        }
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let text = message(params)["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(vec![match params.format {
            Format::Slack => PlannedAction::write(format!("post to the webhook: {text}")),
            Format::Pagerduty => match pagerduty_event(params) {
                Some(event) => PlannedAction::write(format!(
                    "PagerDuty {}: {text}",
                    event["event_action"].as_str().unwrap_or_default()
                )),
                None => PlannedAction::read(format!("no page for: {text}")),
            },
        }])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        match params.format {
            Format::Slack => {
                let body = message(&params);
                let said = format!("posted: {}", body["text"].as_str().unwrap_or_default());
                post(&params, &body, said)
            }
            Format::Pagerduty => match pagerduty_event(&params) {
                Some(event) => {
                    let said = format!(
                        "PagerDuty {} ({})",
                        event["event_action"].as_str().unwrap_or_default(),
                        event["dedup_key"].as_str().unwrap_or_default()
                    );
                    post(&params, &event, said)
                }
                None => Ok(Outcome::new(format!(
                    "no page for status `{}`",
                    params.status.as_deref().unwrap_or("none")
                ))),
            },
        }
    }
}

runbook_sdk::export_step!(Notify);
