//! `notify`: tells people how the run goes. By default it posts a message
//! to a Slack-compatible incoming webhook, whose URL is usually itself the
//! secret (`${{ secrets.SLACK_WEBHOOK }}`): the host unseals it only for
//! this request and only within the step's `grants.http`. With `body` it
//! sends a JSON request of the runbook's own (Opsgenie, an in-house API).
//! `format = "pagerduty"` speaks the PagerDuty Events API v2 and
//! `format = "statuspage"` Statuspage.io's incidents: each pages (opens an
//! incident) when a step fails or the run rolls back and resolves it when
//! the run ends well, one incident per run. `format = "email"` sends an
//! email through Amazon SES within `grants.aws`. Typically a target of the
//! runbook's `[notify]`, called at each moment of the run with the host's
//! `text` and `status`, or an `always = true` step at the end of a runbook.

use runbook_sdk::http::{Request, Response};
use runbook_sdk::serde_json::{Map, Value, json};
use runbook_sdk::{
    Capability, Deserialize, Error, JsonSchema, NeededWhen, Outcome, PlannedAction, Step, aws,
};
use std::collections::BTreeMap;

struct Notify;

/// Where to send and what.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// Where to send: the incoming webhook's URL, or a sealed secret
    /// holding it; PagerDuty's Events API; Statuspage's incidents URL
    /// (`https://api.statuspage.io/v1/pages/PAGE_ID/incidents`); where a
    /// `body` goes. Not for `email`.
    #[serde(default)]
    webhook: Option<String>,
    /// The message. Default: "RUNBOOK ENVIRONMENT: STATUS (run ID by OPERATOR)".
    #[serde(default)]
    text: Option<String>,
    /// The runbook's name, for the default message and the attachment.
    #[serde(default)]
    runbook: Option<String>,
    /// `${{ run.status }}`: colours the message (green, red, grey), and
    /// says whether to page or resolve.
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
    fields: BTreeMap<String, String>,
    /// Slack channel override (`#deploys`), for webhooks that allow it.
    #[serde(default)]
    channel: Option<String>,
    /// `slack` (default: an incoming webhook's message, or the `body`
    /// given), `pagerduty` (the Events API v2 at `webhook`:
    /// `https://events.pagerduty.com/v2/enqueue`), `statuspage` (a
    /// Statuspage.io incident) or `email` (through Amazon SES).
    #[serde(default)]
    format: Format,
    /// Send only when `status` is one of these (`["failed"]`); default
    /// at every status.
    #[serde(default)]
    statuses: Vec<String>,
    /// PagerDuty: the integration's routing key, usually a sealed secret
    /// (`${{ secrets.PAGERDUTY_KEY }}`).
    #[serde(default)]
    routing_key: Option<String>,
    /// A request of your own instead of the Slack message: a JSON body
    /// (a TOML table, or JSON text) sent to `webhook`, in which `{text}`,
    /// `{subject}`, `{status}`, `{run}`, `{runbook}`, `{environment}`,
    /// `{operator}` and `{failed_step}` stand for the announcement's words.
    #[serde(default)]
    body: Option<Value>,
    /// With `body`: `POST` (default), `PUT` or `PATCH`.
    #[serde(default)]
    method: Option<String>,
    /// Headers sent with every request (not `email`); values may hold
    /// sealed secrets (`Authorization = "GenieKey ${{ secrets.KEY }}"`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Statuspage: the API key, usually a sealed secret, sent as
    /// `Authorization: OAuth KEY`.
    #[serde(default)]
    api_key: Option<String>,
    /// Statuspage: the ids of the components the incident affects.
    #[serde(default)]
    components: Vec<String>,
    /// Statuspage: what those components show while the incident is open
    /// (default `degraded_performance`); resolving sets them `operational`.
    #[serde(default)]
    component_status: Option<ComponentStatus>,
    /// Email: the sender, an address or domain SES has verified
    /// (`deploys@example.com`, `Deploys <deploys@example.com>`).
    #[serde(default)]
    from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    to: Vec<String>,
    /// Email: who gets a copy.
    #[serde(default)]
    cc: Vec<String>,
    /// Email: the subject; Statuspage: the incident's name; with `body`:
    /// `{subject}`. May use the placeholders `body` does. Default
    /// "RUNBOOK ENVIRONMENT: STATUS at step STEP".
    #[serde(default)]
    subject: Option<String>,
    /// Email: the SES region (`us-east-1`).
    #[serde(default)]
    region: Option<String>,
}

/// What the webhook speaks.
#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "lowercase")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Format {
    /// A Slack-compatible incoming webhook, or a request of one's own
    /// (`body`).
    #[default]
    Slack,
    /// The PagerDuty Events API v2.
    Pagerduty,
    /// Statuspage.io's incidents API.
    Statuspage,
    /// An email through Amazon SES.
    Email,
}

impl Format {
    /// The name a runbook writes.
    fn name(self) -> &'static str {
        match self {
            Format::Slack => "slack",
            Format::Pagerduty => "pagerduty",
            Format::Statuspage => "statuspage",
            Format::Email => "email",
        }
    }
}

/// What a Statuspage component shows while the run's incident is open.
#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "snake_case")]
#[schemars(crate = "runbook_sdk::schemars")]
enum ComponentStatus {
    /// Slower than usual.
    #[default]
    DegradedPerformance,
    /// Failing for some.
    PartialOutage,
    /// Down.
    MajorOutage,
    /// Being worked on.
    UnderMaintenance,
}

impl ComponentStatus {
    /// As Statuspage's API writes it.
    fn as_str(self) -> &'static str {
        match self {
            ComponentStatus::DegradedPerformance => "degraded_performance",
            ComponentStatus::PartialOutage => "partial_outage",
            ComponentStatus::MajorOutage => "major_outage",
            ComponentStatus::UnderMaintenance => "under_maintenance",
        }
    }
}

/// The statuses a run's moments and endings have, for `statuses`.
const STATUSES: &[&str] = &[
    "started",
    "running",
    "waiting",
    "failed",
    "denied",
    "rolling_back",
    "succeeded",
    "rolled_back",
    "cancelled",
];

/// The most recipients SES takes for one email (`to` and `cc` together).
const MAX_RECIPIENTS: usize = 50;

/// The grant an email needs, for hints and the host's refusal.
const EMAIL_GRANT: &str =
    "grants.aws = { services = [\"email\"], actions = [\"SendEmail\"], regions = [\"us-east-1\"] }";

fn colour(status: Option<&str>) -> &'static str {
    match status {
        Some("succeeded") => "good",
        Some("failed" | "denied") => "danger",
        Some(_) => "warning",
        None => "#439FE0",
    }
}

/// `value` unless it is empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// Whether `text` holds a sealed secret's handle.
fn sealed(text: &str) -> bool {
    text.contains("@@")
}

/// The message: `text`, or "RUNBOOK ENVIRONMENT: STATUS at step `STEP`
/// (run ID by OPERATOR)".
fn text(params: &Params) -> String {
    if let Some(text) = &params.text {
        return text.clone();
    }
    let mut text = params.runbook.clone().unwrap_or_else(|| "runbook".into());
    if let Some(environment) = given(&params.environment) {
        text.push_str(&format!(" {environment}"));
    }
    text.push_str(&format!(
        ": {}",
        params.status.as_deref().unwrap_or("update")
    ));
    if let Some(step) = given(&params.failed_step) {
        text.push_str(&format!(" at step `{step}`"));
    }
    match (&params.run, &params.operator) {
        (Some(run), Some(operator)) => text.push_str(&format!(" (run {run} by {operator})")),
        (Some(run), None) => text.push_str(&format!(" (run {run})")),
        _ => {}
    }
    text
}

/// What each `{name}` of a `subject` or a `body` stands for.
fn placeholders(params: &Params) -> Vec<(&'static str, String)> {
    let fact = |value: &Option<String>| value.clone().unwrap_or_default();
    vec![
        ("text", text(params)),
        ("status", fact(&params.status)),
        ("run", fact(&params.run)),
        (
            "runbook",
            params.runbook.clone().unwrap_or_else(|| "runbook".into()),
        ),
        ("environment", fact(&params.environment)),
        ("operator", fact(&params.operator)),
        ("failed_step", fact(&params.failed_step)),
    ]
}

/// `template` with each `{name}` of `values` replaced, in one pass (a
/// value that itself holds `{status}` stays as it is); other braces are
/// kept as written.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            values
                .iter()
                .find(|(name, _)| *name == &after[..close])
                .map(|(_, value)| (value, close))
        });
        match known {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `value` with the placeholders of every string in it filled; keys are
/// kept as written.
fn fill_json(value: &Value, values: &[(&str, String)]) -> Value {
    match value {
        Value::String(text) => Value::String(fill(text, values)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| fill_json(item, values)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), fill_json(item, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The email's subject or the incident's name: `subject` with its
/// placeholders filled, or "RUNBOOK ENVIRONMENT: STATUS", with "at step
/// STEP" when the run failed or waits there.
fn subject(params: &Params) -> String {
    if let Some(subject) = &params.subject {
        return fill(subject, &placeholders(params));
    }
    let status = params.status.as_deref().unwrap_or("update");
    let mut subject = params.runbook.clone().unwrap_or_else(|| "runbook".into());
    if let Some(environment) = given(&params.environment) {
        subject.push_str(&format!(" {environment}"));
    }
    subject.push_str(&format!(": {}", status.replace('_', " ")));
    if let Some(step) = given(&params.failed_step)
        && matches!(status, "failed" | "denied" | "waiting")
    {
        subject.push_str(&format!(" at step {step}"));
    }
    subject
}

/// The facts shown under the message: the run's, then `fields`.
fn facts(params: &Params) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    for (title, value) in [
        ("status", &params.status),
        ("environment", &params.environment),
        ("run", &params.run),
        ("failed step", &params.failed_step),
    ] {
        if let Some(value) = given(value) {
            facts.push((title.to_owned(), value.to_owned()));
        }
    }
    for (title, value) in &params.fields {
        facts.push((title.clone(), value.clone()));
    }
    facts
}

fn message(params: &Params) -> Value {
    let text = text(params);
    let fields: Vec<Value> = facts(params)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value, "short": true}))
        .collect();
    let mut body = json!({
        "text": text,
        "attachments": [{"color": colour(params.status.as_deref()), "fields": fields, "fallback": text}],
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

/// The run's one incident, as PagerDuty's dedup key and Statuspage's
/// incident metadata carry it: `runbook/RUNBOOK/ENVIRONMENT/RUN`.
fn incident_key(params: &Params) -> String {
    format!(
        "runbook/{}/{}/{}",
        params.runbook.as_deref().unwrap_or("runbook"),
        params.environment.as_deref().unwrap_or("-"),
        params.run.as_deref().unwrap_or("-")
    )
}

/// The PagerDuty Events API v2 event for the message, if the status calls
/// for one: one incident per run (its dedup key), triggered on failure and
/// resolved at a good end.
fn pagerduty_event(params: &Params) -> Option<Value> {
    let (action, severity) = pagerduty_action(params.status.as_deref())?;
    let runbook = params.runbook.as_deref().unwrap_or("runbook");
    let mut event = json!({
        "routing_key": params.routing_key.clone().unwrap_or_default(),
        "event_action": action,
        "dedup_key": incident_key(params),
    });
    if action == "trigger" {
        let summary: String = text(params).chars().take(1024).collect();
        let mut details = Map::new();
        for (key, value) in [
            ("status", &params.status),
            ("run", &params.run),
            ("environment", &params.environment),
            ("operator", &params.operator),
            ("failed_step", &params.failed_step),
        ] {
            if let Some(value) = given(value) {
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

/// What a Statuspage incident does for a run's `status`, as a PagerDuty
/// event does: `true` opens the run's incident (or adds to it), `false`
/// resolves it; nothing for starts, stages and holds.
fn opens_incident(status: Option<&str>) -> Option<bool> {
    pagerduty_action(status).map(|(action, _)| action == "trigger")
}

/// `webhook`, which `check` made sure of for every format but `email`.
fn webhook(params: &Params) -> &str {
    params.webhook.as_deref().unwrap_or_default().trim()
}

/// The webhook as a plan shows it: the URL, or "the webhook" when it is
/// (or holds) a secret.
fn shown_webhook(params: &Params) -> String {
    let webhook = webhook(params);
    if sealed(webhook) {
        "the webhook".to_owned()
    } else {
        webhook.to_owned()
    }
}

/// The method of a `body` request.
fn method(params: &Params) -> String {
    params
        .method
        .as_deref()
        .unwrap_or("POST")
        .to_ascii_uppercase()
}

/// The `body` template as JSON: a table as it is, text parsed.
fn body_template(body: &Value) -> Result<Value, Error> {
    match body {
        Value::String(text) => runbook_sdk::serde_json::from_str(text).map_err(|error| {
            Error::invalid_param(
                "body",
                format!(
                    "the body is not JSON ({error}): write it as a TOML table, or as JSON text: `body = '''{{\"text\": \"{{text}}\"}}'''`"
                ),
            )
        }),
        other => Ok(other.clone()),
    }
}

/// The `body` to send: the template with its placeholders filled.
fn request_body(params: &Params, template: &Value) -> Result<Value, Error> {
    let mut values = placeholders(params);
    values.push(("subject", subject(params)));
    Ok(fill_json(&body_template(template)?, &values))
}

/// A request to `url` with the `headers` given and, when there is one, a
/// JSON body (unless the headers name their own content type).
fn request(params: &Params, method: &str, url: &str, body: Option<&Value>) -> Request {
    let mut request = Request::new(method, url);
    for (name, value) in &params.headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        let typed = params
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("content-type"));
        if !typed {
            request = request.header("content-type", "application/json");
        }
        request = request.body(body.to_string());
    }
    request
}

/// Sends `request` to `service`: the response when it took it; a 429 or
/// a 5xx is transient, any other refusal a failure.
fn send(request: Request, service: &str) -> Result<Response, Error> {
    let response = request.send()?;
    match response.status {
        200..=299 => Ok(response),
        429 | 500..=599 => Err(Error::transient(format!(
            "{service} answered {}: {}",
            response.status,
            response.text()
        ))),
        status => Err(Error::failed(format!(
            "{service} refused the message ({status}): {}",
            response.text()
        ))),
    }
}

/// A request to Statuspage's API, with the page's key.
fn statuspage_request(params: &Params, method: &str, url: &str, body: Option<&Value>) -> Request {
    let key = params.api_key.as_deref().unwrap_or_default();
    request(params, method, url, body).header("authorization", format!("OAuth {key}"))
}

/// The components' statuses, as an incident sets them.
fn component_statuses(params: &Params, status: &str) -> Value {
    Value::Object(
        params
            .components
            .iter()
            .map(|component| (component.clone(), json!(status)))
            .collect(),
    )
}

/// The id of the run's open incident on the page, if there is one: the
/// unresolved incident whose metadata carries the run's key.
fn open_incident(params: &Params, incidents: &str, key: &str) -> Result<Option<String>, Error> {
    let url = format!("{incidents}/unresolved");
    let listed = send(statuspage_request(params, "GET", &url, None), "Statuspage")?.json()?;
    Ok(listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|incident| incident["metadata"]["runbook"]["key"] == key)
        .and_then(|incident| incident["id"].as_str())
        .map(str::to_owned))
}

/// Opens the run's incident on Statuspage when a step fails or the run
/// rolls back (or adds the news to the one open), and resolves it at a
/// good end, setting `components` as it goes.
fn statuspage(params: &Params) -> Result<Outcome, Error> {
    let Some(opens) = opens_incident(params.status.as_deref()) else {
        return Ok(Outcome::new(format!(
            "no incident for status `{}`",
            params.status.as_deref().unwrap_or("none")
        )));
    };
    let incidents = webhook(params).trim_end_matches('/').to_owned();
    let key = incident_key(params);
    let open = open_incident(params, &incidents, &key)?;
    let affected = params.component_status.unwrap_or_default().as_str();
    match (opens, open) {
        (true, None) => {
            let mut incident = json!({
                "name": subject(params),
                "status": "investigating",
                "body": text(params),
                "metadata": {"runbook": {"key": key}},
            });
            if !params.components.is_empty() {
                incident["component_ids"] = json!(params.components);
                incident["components"] = component_statuses(params, affected);
            }
            let body = json!({ "incident": incident });
            let request = statuspage_request(params, "POST", &incidents, Some(&body));
            let created = send(request, "Statuspage")?.json()?;
            let id = created["id"].as_str().unwrap_or_default().to_owned();
            Ok(
                Outcome::new(format!("Statuspage incident {id} opened ({key})"))
                    .output("incident", id),
            )
        }
        (false, None) => Ok(Outcome::new(format!(
            "no open Statuspage incident to resolve ({key})"
        ))),
        (opens, Some(id)) => {
            // By the second news of a failure the run knows what broke.
            let (status, components) = if opens {
                ("identified", affected)
            } else {
                ("resolved", "operational")
            };
            let mut incident = json!({"status": status, "body": text(params)});
            if !params.components.is_empty() {
                incident["components"] = component_statuses(params, components);
            }
            let body = json!({ "incident": incident });
            let url = format!("{incidents}/{id}");
            send(
                statuspage_request(params, "PATCH", &url, Some(&body)),
                "Statuspage",
            )?;
            Ok(
                Outcome::new(format!("Statuspage incident {id} {status} ({key})"))
                    .output("incident", id),
            )
        }
    }
}

/// Who an email goes to, in words: "a@example.com, b@example.com (cc
/// c@example.com)".
fn recipients(params: &Params) -> String {
    let mut said = params.to.join(", ");
    if !params.cc.is_empty() {
        said.push_str(&format!(" (cc {})", params.cc.join(", ")));
    }
    said
}

/// The email's text: the message, then the run's facts and `fields`,
/// one a line.
fn email_body(params: &Params) -> String {
    let mut body = text(params);
    let facts = facts(params);
    if !facts.is_empty() {
        body.push_str("\n\n");
        for (title, value) in facts {
            body.push_str(&format!("{title}: {value}\n"));
        }
    }
    body
}

/// Sends the email through SES (`SendEmail`, the Query API), within
/// `grants.aws`.
fn email(params: &Params) -> Result<Outcome, Error> {
    let region = params.region.as_deref().unwrap_or_default();
    let from = params.from.as_deref().unwrap_or_default();
    let subject = subject(params);
    let mut query = Map::new();
    query.insert("Source".to_owned(), json!(from));
    for (list, addresses) in [("ToAddresses", &params.to), ("CcAddresses", &params.cc)] {
        for (index, address) in addresses.iter().enumerate() {
            query.insert(
                format!("Destination.{list}.member.{}", index + 1),
                json!(address),
            );
        }
    }
    query.insert("Message.Subject.Data".to_owned(), json!(subject));
    query.insert("Message.Subject.Charset".to_owned(), json!("UTF-8"));
    query.insert(
        "Message.Body.Text.Data".to_owned(),
        json!(email_body(params)),
    );
    query.insert("Message.Body.Text.Charset".to_owned(), json!("UTF-8"));
    let reply = aws::query("email", region, "SendEmail", &Value::Object(query)).map_err(
        |error| match error {
            Error::Failed(message) if message.contains("MessageRejected") => Error::failed(format!(
                "{message}; SES sends only from an address or domain it has verified: verify `{from}` in SES in {region}"
            )),
            other => other,
        },
    )?;
    let id = aws::xml_text(&reply.body, "MessageId").unwrap_or_default();
    Ok(Outcome::new(format!("emailed {}: {subject}", recipients(params))).output("message_id", id))
}

/// Whether `status` is one `statuses` sends at.
fn sends_now(params: &Params) -> bool {
    params.statuses.is_empty()
        || params
            .statuses
            .iter()
            .any(|wanted| Some(wanted.as_str()) == params.status.as_deref())
}

/// Refuses a parameter the format does not read, rather than leaving it
/// silently unused.
fn check_misplaced(params: &Params) -> Result<(), Error> {
    use Format::{Email, Pagerduty, Slack, Statuspage};
    let format = params.format;
    let own = params.body.is_some();
    // (name, given, read by this format)
    let parameters = [
        ("webhook", params.webhook.is_some(), format != Email),
        ("headers", !params.headers.is_empty(), format != Email),
        (
            "routing_key",
            params.routing_key.is_some(),
            format == Pagerduty,
        ),
        ("api_key", params.api_key.is_some(), format == Statuspage),
        (
            "components",
            !params.components.is_empty(),
            format == Statuspage,
        ),
        (
            "component_status",
            params.component_status.is_some(),
            format == Statuspage,
        ),
        ("from", params.from.is_some(), format == Email),
        ("to", !params.to.is_empty(), format == Email),
        ("cc", !params.cc.is_empty(), format == Email),
        ("region", params.region.is_some(), format == Email),
        (
            "subject",
            params.subject.is_some(),
            matches!(format, Email | Statuspage) || (format == Slack && own),
        ),
        ("channel", params.channel.is_some(), format == Slack && !own),
        ("body", own, format == Slack),
        ("method", params.method.is_some(), format == Slack && own),
    ];
    let Some((name, _, _)) = parameters
        .iter()
        .find(|(_, written, read)| *written && !*read)
    else {
        return Ok(());
    };
    let why = match (*name, format) {
        ("subject" | "method", Slack) => "it goes with `body`, a request of your own".to_owned(),
        ("channel", Slack) => {
            "a request of your own (`body`) has no channel: say it in the body".to_owned()
        }
        _ => format!("`format = \"{}\"` does not use it", format.name()),
    };
    Err(Error::invalid_param(
        *name,
        format!("`{name}` is not used here: {why}"),
    ))
}

/// The webhook is there, and an http(s) URL or (`may_be_secret`) a sealed
/// secret.
fn check_webhook(params: &Params, may_be_secret: bool) -> Result<(), Error> {
    let hint = "give the incoming webhook's http(s) URL, or the secret that holds it: `webhook = \"${{ secrets.SLACK_WEBHOOK }}\"`";
    let Some(webhook) = params.webhook.as_deref().map(str::trim) else {
        return Err(Error::invalid_param("webhook", hint));
    };
    let secret = webhook.starts_with("@@") && webhook.ends_with("@@");
    if secret && !may_be_secret {
        return Err(Error::invalid_param(
            "webhook",
            "Statuspage's incidents URL is no secret, its API key is: `webhook = \"https://api.statuspage.io/v1/pages/PAGE_ID/incidents\"` and `api_key = \"${{ secrets.STATUSPAGE_KEY }}\"`",
        ));
    }
    let url = webhook.starts_with("https://") || webhook.starts_with("http://");
    if secret || url || runbook_sdk::unresolved(webhook) {
        Ok(())
    } else {
        Err(Error::invalid_param("webhook", hint))
    }
}

/// A request of one's own: its body is JSON, its method carries a body.
fn check_request(params: &Params) -> Result<(), Error> {
    if let Some(body) = &params.body {
        let unknown = body.as_str().is_some_and(runbook_sdk::unresolved);
        if let Err(error) = body_template(body)
            && !unknown
        {
            return Err(error);
        }
    }
    if let Some(method) = &params.method
        && !matches!(
            method.to_ascii_uppercase().as_str(),
            "POST" | "PUT" | "PATCH"
        )
    {
        return Err(Error::invalid_param(
            "method",
            format!("`{method}` is not a method that sends a body: write `POST`, `PUT` or `PATCH`"),
        ));
    }
    Ok(())
}

/// `address`, at `path`, reads as an email address and is no secret.
fn check_address(path: &str, address: &str) -> Result<(), Error> {
    if sealed(address) {
        return Err(Error::invalid_param(
            path,
            "an email address cannot be a secret: the host unseals secrets only in HTTP requests, so write the address itself",
        ));
    }
    if address.contains('@') || runbook_sdk::unresolved(address) {
        Ok(())
    } else {
        Err(Error::invalid_param(
            path,
            format!(
                "`{address}` is not an email address: write `name@example.com` or `Name <name@example.com>`"
            ),
        ))
    }
}

/// An email has a sender, recipients (at most [`MAX_RECIPIENTS`]) and a
/// region, and no secret in what SES is sent.
fn check_email(params: &Params) -> Result<(), Error> {
    let Some(from) = params.from.as_deref() else {
        return Err(Error::invalid_param(
            "from",
            "`format = \"email\"` needs the sender, an address or domain SES has verified: `from = \"deploys@example.com\"`",
        ));
    };
    if params.to.is_empty() {
        return Err(Error::invalid_param(
            "to",
            "`format = \"email\"` needs whom to write to: `to = [\"oncall@example.com\"]`",
        ));
    }
    if params.region.is_none() {
        return Err(Error::invalid_param(
            "region",
            format!(
                "`format = \"email\"` sends through SES in one region, which `grants.aws` grants: `region = \"us-east-1\"` with `{EMAIL_GRANT}`"
            ),
        ));
    }
    check_address("from", from)?;
    for (list, addresses) in [("to", &params.to), ("cc", &params.cc)] {
        for (index, address) in addresses.iter().enumerate() {
            check_address(&format!("{list}[{index}]"), address)?;
        }
    }
    if params.to.len() + params.cc.len() > MAX_RECIPIENTS {
        return Err(Error::invalid_param(
            "to",
            format!(
                "SES sends one email to at most {MAX_RECIPIENTS} recipients (`to` and `cc` together)"
            ),
        ));
    }
    if params.subject.as_deref().is_some_and(sealed) {
        return Err(Error::invalid_param(
            "subject",
            "the subject cannot hold a secret: the host unseals secrets only in HTTP requests",
        ));
    }
    Ok(())
}

impl Step for Notify {
    type Params = Params;
    // What it needs depends on `format`: HTTP for the webhooks, AWS for
    // email (`NEEDED_WHEN`); secrets travel in HTTP requests only.
    const CAPABILITIES: &'static [Capability] = &[];
    const OPTIONAL_CAPABILITIES: &'static [Capability] =
        &[Capability::Http, Capability::Secrets, Capability::Aws];
    const NEEDED_WHEN: &'static [NeededWhen] = &[
        NeededWhen {
            capability: Capability::Http,
            param: "format",
            values: &["slack"],
            or_absent: true,
            grant: "grants.http = [\"https://hooks.slack.com/services/\"]",
        },
        NeededWhen {
            capability: Capability::Http,
            param: "format",
            values: &["pagerduty"],
            or_absent: false,
            grant: "grants.http = [\"https://events.pagerduty.com/v2/enqueue\"]",
        },
        NeededWhen {
            capability: Capability::Http,
            param: "format",
            values: &["statuspage"],
            or_absent: false,
            grant: "grants.http = [\"https://api.statuspage.io/v1/pages/PAGE_ID/incidents\"]",
        },
        NeededWhen {
            capability: Capability::Aws,
            param: "format",
            values: &["email"],
            or_absent: false,
            grant: EMAIL_GRANT,
        },
    ];

    /// Each format has what it needs (a webhook that is a sealed secret
    /// or an http(s) URL; PagerDuty's routing key; Statuspage's API key;
    /// an email's sender, recipients and region), and nothing it does not
    /// read.
    fn check(params: &Params) -> Result<(), Error> {
        check_misplaced(params)?;
        for (index, status) in params.statuses.iter().enumerate() {
            if !STATUSES.contains(&status.as_str()) && !runbook_sdk::unresolved(status) {
                return Err(Error::invalid_param(
                    format!("statuses[{index}]"),
                    format!(
                        "`{status}` is not a status of a run: they are {}",
                        STATUSES.join(", ")
                    ),
                ));
            }
        }
        match params.format {
            Format::Slack => {
                check_webhook(params, true)?;
                check_request(params)
            }
            Format::Pagerduty => {
                if params.routing_key.is_none() {
                    return Err(Error::invalid_param(
                        "routing_key",
                        "`format = \"pagerduty\"` needs the integration's routing key: `routing_key = \"${{ secrets.PAGERDUTY_KEY }}\"`",
                    ));
                }
                check_webhook(params, true)
            }
            Format::Statuspage => {
                if params.api_key.is_none() {
                    return Err(Error::invalid_param(
                        "api_key",
                        "`format = \"statuspage\"` needs the page's API key: `api_key = \"${{ secrets.STATUSPAGE_KEY }}\"`",
                    ));
                }
                check_webhook(params, false)
            }
            Format::Email => check_email(params),
        }
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let text = text(params);
        if !sends_now(params) {
            return Ok(vec![PlannedAction::read(format!(
                "nothing to send for status `{}`: {text}",
                params.status.as_deref().unwrap_or("none")
            ))]);
        }
        Ok(vec![match params.format {
            Format::Slack => match &params.body {
                None => PlannedAction::write(format!("post to the webhook: {text}")),
                Some(template) => PlannedAction::write(format!(
                    "{} to {}: {}",
                    method(params),
                    shown_webhook(params),
                    request_body(params, template)?
                )),
            },
            Format::Pagerduty => match pagerduty_event(params) {
                Some(event) => PlannedAction::write(format!(
                    "PagerDuty {}: {text}",
                    event["event_action"].as_str().unwrap_or_default()
                )),
                None => PlannedAction::read(format!("no page for: {text}")),
            },
            Format::Statuspage => match opens_incident(params.status.as_deref()) {
                Some(true) => PlannedAction::write(format!(
                    "Statuspage: open the run's incident \"{}\", or add to the one open: {text}",
                    subject(params)
                )),
                Some(false) => PlannedAction::write(format!(
                    "Statuspage: resolve the run's incident, if one is open: {text}"
                )),
                None => PlannedAction::read(format!("no incident for: {text}")),
            },
            Format::Email => PlannedAction::write(format!(
                "email \"{}\" from {} to {} through SES in {}: {text}",
                subject(params),
                params.from.as_deref().unwrap_or_default(),
                recipients(params),
                params.region.as_deref().unwrap_or_default()
            )),
        }])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        if !sends_now(&params) {
            return Ok(Outcome::new(format!(
                "nothing to send for status `{}`",
                params.status.as_deref().unwrap_or("none")
            )));
        }
        match params.format {
            Format::Slack => match &params.body {
                None => {
                    let body = message(&params);
                    let said = format!("posted: {}", body["text"].as_str().unwrap_or_default());
                    send(
                        request(&params, "POST", webhook(&params), Some(&body)),
                        "the webhook",
                    )?;
                    Ok(Outcome::new(said))
                }
                Some(template) => {
                    let body = request_body(&params, template)?;
                    let method = method(&params);
                    let response = send(
                        request(&params, &method, webhook(&params), Some(&body)),
                        "the webhook",
                    )?;
                    Ok(Outcome::new(format!(
                        "{method} to {}: {}",
                        shown_webhook(&params),
                        response.status
                    )))
                }
            },
            Format::Pagerduty => match pagerduty_event(&params) {
                Some(event) => {
                    let said = format!(
                        "PagerDuty {} ({})",
                        event["event_action"].as_str().unwrap_or_default(),
                        event["dedup_key"].as_str().unwrap_or_default()
                    );
                    send(
                        request(&params, "POST", webhook(&params), Some(&event)),
                        "the webhook",
                    )?;
                    Ok(Outcome::new(said))
                }
                None => Ok(Outcome::new(format!(
                    "no page for status `{}`",
                    params.status.as_deref().unwrap_or("none")
                ))),
            },
            Format::Statuspage => statuspage(&params),
            Format::Email => email(&params),
        }
    }
}

runbook_sdk::export_step!(Notify);

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(&'static str, String)> {
        vec![
            ("text", "it {status} broke".into()),
            ("status", "failed".into()),
        ]
    }

    #[test]
    fn placeholders_are_filled_once_and_other_braces_kept() {
        assert_eq!(
            fill("{status}: {text} {unknown} {", &values()),
            "failed: it {status} broke {unknown} {"
        );
        let body =
            json!({"incident": {"name": "{text}", "tags": ["{status}", 3]}, "{status}": true});
        assert_eq!(
            fill_json(&body, &values()),
            json!({"incident": {"name": "it {status} broke", "tags": ["failed", 3]}, "{status}": true})
        );
    }
}
