//! `notify`: posts a message to a Slack-compatible incoming webhook. The
//! webhook URL is usually itself the secret (`${{ secrets.SLACK_WEBHOOK }}`):
//! the host unseals it only for this request and only within the step's
//! `grants.http`. Typically a target of the runbook's `[notify]`, called at
//! each moment of the run with the host's `text` and `status`, or an
//! `always = true` step at the end of a runbook.

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

impl Step for Notify {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Http, Capability::Secrets];

    /// The webhook is a sealed secret or an http(s) URL.
    fn check(params: &Params) -> Result<(), Error> {
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
        Ok(vec![PlannedAction::write(format!(
            "post to the webhook: {}",
            message(params)["text"].as_str().unwrap_or_default()
        ))])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let body = message(&params);
        let response = Request::post(&params.webhook).json(&body).send()?;
        match response.status {
            200..=299 => Ok(Outcome::new(format!(
                "posted: {}",
                body["text"].as_str().unwrap_or_default()
            ))),
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
}

runbook_sdk::export_step!(Notify);
