//! The sample service: the health and API endpoints the source runbooks
//! smoke-test, with state a test can change (healthy or not, slow or not)
//! and a record of every request it received.

use crate::http::{Request, Response, bind_loopback, serve};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the service answers, changeable while it runs.
#[derive(Debug, Clone)]
pub struct SampleState {
    /// `/health` says `healthy` (200) or `degraded` (503).
    pub healthy: bool,
    /// Workloads whose own endpoints (`/workloads/NAME/health`, ...) fail:
    /// what a blue/green runbook smoke-tests on the idle colour before it
    /// takes traffic. Any other workload's are healthy.
    pub unhealthy_workloads: std::collections::BTreeSet<String>,
    /// Extra latency on every answer.
    pub delay: Duration,
    /// The API key `/v1/decisions` requires in `X-API-Key`.
    pub api_key: Option<String>,
    /// The version `/health` reports.
    pub version: String,
    /// Requests received, in order.
    pub received: Vec<Request>,
    /// The bearer token `/admin/feature-flags` requires, when set.
    pub admin_token: Option<String>,
    /// Feature flags by key: `{"key", "percentage", "enabled"}`.
    pub flags: std::collections::BTreeMap<String, serde_json::Value>,
    /// JSON bodies posted to `/hooks/...` (a Slack-compatible webhook).
    pub webhooks: Vec<serde_json::Value>,
    /// Events posted to `/v2/enqueue` that the PagerDuty Events API v2
    /// would accept, in order.
    pub pages: Vec<serde_json::Value>,
    /// Incidents of Statuspage's API (`/v1/pages/PAGE_ID/incidents`), in
    /// the order they were opened, each as the API shows it: `id`,
    /// `page_id`, `name`, `status`, `metadata`, `components` and every
    /// `incident_updates` entry, newest last.
    pub incidents: Vec<serde_json::Value>,
    /// What `/metrics` reports: request counters and latency per track.
    pub traffic: crate::traffic::Traffic,
}

/// A running sample service.
pub struct SampleService {
    /// Where it listens.
    pub address: SocketAddr,
    state: Arc<Mutex<SampleState>>,
    task: tokio::task::JoinHandle<()>,
}

impl SampleService {
    /// Starts on a free loopback port.
    pub async fn start(api_key: Option<&str>) -> std::io::Result<Self> {
        Self::start_on(0, api_key).await
    }

    /// Starts on a given loopback port.
    pub async fn start_on(port: u16, api_key: Option<&str>) -> std::io::Result<Self> {
        let (listener, address) = bind_loopback(port).await?;
        let state = Arc::new(Mutex::new(SampleState {
            healthy: true,
            unhealthy_workloads: Default::default(),
            delay: Duration::ZERO,
            api_key: api_key.map(str::to_owned),
            version: "1.0.0".into(),
            received: Vec::new(),
            admin_token: None,
            flags: std::collections::BTreeMap::new(),
            webhooks: Vec::new(),
            pages: Vec::new(),
            incidents: Vec::new(),
            traffic: crate::traffic::Traffic::default(),
        }));
        let shared = Arc::clone(&state);
        let base = format!("http://{address}");
        let task = tokio::spawn(serve(listener, move |request| {
            let shared = Arc::clone(&shared);
            let base = base.clone();
            async move { handle(&shared, &base, request) }
        }));
        Ok(SampleService {
            address,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes what the service answers.
    pub fn update(&self, change: impl FnOnce(&mut SampleState)) {
        change(&mut self.state.lock().expect("state lock"));
    }

    /// A copy of the current state, with the requests received.
    pub fn state(&self) -> SampleState {
        self.state.lock().expect("state lock").clone()
    }
}

impl Drop for SampleService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle(shared: &Mutex<SampleState>, base: &str, mut request: Request) -> Response {
    let mut state = shared.lock().expect("state lock");
    state.received.push(request.clone());
    let delay = state.delay;
    // `/workloads/NAME/...`: the same endpoints, reaching one workload
    // only (a colour's own Service), healthy unless it is listed.
    let mut healthy = state.healthy;
    if let Some(rest) = request.path.strip_prefix("/workloads/")
        && let Some((workload, path)) = rest.split_once('/')
    {
        healthy = !state.unhealthy_workloads.contains(workload);
        request.path = format!("/{path}");
    }
    let mut response = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/health") => {
            if healthy {
                Response::json(
                    200,
                    json!({"status": "healthy", "version": state.version, "checks": {"database": "ok"}}),
                )
            } else {
                Response::json(
                    503,
                    json!({"status": "degraded", "version": state.version, "checks": {"database": "down"}}),
                )
            }
        }
        // The API platform's full health check (seed 001).
        ("GET", "/v1/health") => {
            let status = if healthy { "healthy" } else { "unhealthy" };
            let database = if healthy { "healthy" } else { "unhealthy" };
            Response::json(
                if healthy { 200 } else { 503 },
                json!({"status": status, "version": state.version, "services": {
                    "database": {"status": database, "latency": 5},
                    "redis": {"status": "healthy", "latency": 2},
                    "elasticsearch": {"status": "healthy", "latency": 10},
                }}),
            )
        }
        ("GET", "/health/live") => Response::json(
            200,
            json!({"status": "ok", "timestamp": "2025-01-17T14:00:00Z"}),
        ),
        ("GET", "/health/ready" | "/ready") => {
            if healthy {
                Response::json(
                    200,
                    json!({"status": "ready", "checks": {"database": "connected", "redis": "connected", "elasticsearch": "connected"}}),
                )
            } else {
                Response::json(
                    503,
                    json!({"status": "not ready", "checks": {"database": "disconnected", "redis": "connected", "elasticsearch": "connected"}}),
                )
            }
        }
        // The API platform's critical endpoints (seed 001, "Test critical
        // endpoints"): a login, and a user list behind the bearer token
        // the login would give (the API key here).
        ("POST", "/v1/auth/login") => {
            match serde_json::from_slice::<serde_json::Value>(&request.body) {
                Ok(login) if login["email"].is_string() && login["password"].is_string() => {
                    Response::json(200, json!({"token": "local-session", "expiresIn": 3600}))
                }
                _ => Response::json(400, json!({"error": "email and password are required"})),
            }
        }
        ("GET", "/v1/users") => {
            let bearer = request
                .headers
                .get("authorization")
                .and_then(|value| value.strip_prefix("Bearer "));
            match (&state.api_key, bearer) {
                (Some(expected), Some(given)) if expected == given => Response::json(
                    200,
                    json!({"users": [{"id": 1, "email": "test@example.com"}], "count": 1}),
                ),
                (None, _) => Response::json(200, json!({"users": [], "count": 0})),
                _ => Response::json(401, json!({"error": "missing or wrong bearer token"})),
            }
        }
        ("GET", "/v1/decisions") => {
            let given = request.headers.get("x-api-key");
            match (&state.api_key, given) {
                (Some(expected), Some(given)) if expected == given => {
                    Response::json(200, json!({"decisions": [], "count": 0}))
                }
                (None, _) => Response::json(200, json!({"decisions": [], "count": 0})),
                _ => Response::json(401, json!({"error": "missing or wrong X-API-Key"})),
            }
        }
        // Echoes the request's headers and body: a server that reflects
        // what it gets, for tests that secrets are scrubbed on the way back.
        (_, "/echo") => Response::json(
            200,
            json!({
                "headers": request.headers,
                "body": String::from_utf8_lossy(&request.body),
            }),
        ),
        ("GET", "/redirect") => {
            let to = request
                .query
                .as_deref()
                .and_then(|query| query.strip_prefix("to="))
                .map(percent_decode)
                .unwrap_or_else(|| format!("{base}/health"));
            Response::redirect(&to)
        }
        ("GET", "/metrics") => Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; version=0.0.4".into())],
            body: state.traffic.render().into_bytes(),
            delay: std::time::Duration::ZERO,
        },
        (_, path) if path.starts_with("/admin/feature-flags") => {
            feature_flags(&mut state, &request)
        }
        ("POST", "/v2/enqueue") => enqueue(&mut state, &request),
        (_, path) if path.starts_with("/v1/pages/") => statuspage(&mut state, &request),
        ("POST", path) if path.starts_with("/hooks/") => {
            match serde_json::from_slice::<serde_json::Value>(&request.body) {
                Ok(message) if message.get("text").is_some() || message.get("blocks").is_some() => {
                    state.webhooks.push(message);
                    Response::text(200, "ok")
                }
                Ok(_) => Response::text(400, "no_text"),
                Err(_) => Response::text(400, "invalid_payload"),
            }
        }
        _ => Response::text(404, "not found"),
    };
    response.delay = delay;
    response
}

/// The PagerDuty Events API v2 (`POST /v2/enqueue`), as documented: a
/// routing key; `event_action` `trigger`, `acknowledge` or `resolve`; a
/// `dedup_key` for the last two; for `trigger`, a `payload` with `summary`
/// (at most 1024 characters), `source` and a `severity` of `critical`,
/// `error`, `warning` or `info`. 202 with the dedup key, else 400.
fn enqueue(state: &mut SampleState, request: &Request) -> Response {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
        return Response::json(
            400,
            serde_json::json!({"status": "invalid event", "message": "Event object is invalid"}),
        );
    };
    let text = |value: &serde_json::Value| value.as_str().filter(|text| !text.is_empty()).is_some();
    let action = event["event_action"].as_str().unwrap_or_default();
    let payload = &event["payload"];
    let problem = if !text(&event["routing_key"]) {
        Some("'routing_key' is missing or blank")
    } else if !matches!(action, "trigger" | "acknowledge" | "resolve") {
        Some("'event_action' is invalid")
    } else if action != "trigger" && !text(&event["dedup_key"]) {
        Some("'dedup_key' is required for acknowledge and resolve")
    } else if action == "trigger"
        && !(text(&payload["summary"])
            && payload["summary"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .count()
                <= 1024
            && text(&payload["source"])
            && matches!(
                payload["severity"].as_str(),
                Some("critical" | "error" | "warning" | "info")
            ))
    {
        Some("'payload' needs a summary of at most 1024 characters, a source and a severity")
    } else {
        None
    };
    if let Some(message) = problem {
        return Response::json(
            400,
            serde_json::json!({"status": "invalid event", "message": "Event object is invalid", "errors": [message]}),
        );
    }
    let dedup_key = event["dedup_key"].clone();
    state.pages.push(event);
    Response::json(
        202,
        serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

/// Statuspage.io's incidents API, as documented, for one page or many:
/// `POST /v1/pages/PAGE/incidents` opens one (`{"incident": {"name", ...}}`,
/// 201), `GET /v1/pages/PAGE/incidents` and `.../incidents/unresolved`
/// list them, `PATCH` (or `PUT`) `.../incidents/ID` changes one; a `body`
/// adds an incident update. Every request needs `Authorization: OAuth
/// KEY` (401 without). A name is required and at most 255 characters; a
/// status is `investigating`, `identified`, `monitoring` or `resolved`;
/// metadata's top-level values must be objects; a component's status is
/// one of Statuspage's five. Else 422, as the API answers.
fn statuspage(state: &mut SampleState, request: &Request) -> Response {
    let authorized = request
        .headers
        .get("authorization")
        .and_then(|value| value.strip_prefix("OAuth "))
        .is_some_and(|key| !key.trim().is_empty());
    if !authorized {
        return Response::json(401, json!({"error": "Could not authenticate"}));
    }
    let rest = request.path.trim_start_matches("/v1/pages/");
    let segments: Vec<&str> = rest.split('/').filter(|part| !part.is_empty()).collect();
    let (page, tail) = match segments.as_slice() {
        [page, "incidents", tail @ ..] => (page.to_string(), tail.to_vec()),
        _ => return Response::json(404, json!({"error": "Not found"})),
    };
    let of_page = |incident: &&serde_json::Value| incident["page_id"] == page.as_str();
    match (request.method.as_str(), tail.as_slice()) {
        // Newest first, as Statuspage lists them.
        ("GET", []) => {
            let listed: Vec<&serde_json::Value> =
                state.incidents.iter().rev().filter(of_page).collect();
            Response::json(200, json!(listed))
        }
        ("GET", ["unresolved"]) => {
            let listed: Vec<&serde_json::Value> = state
                .incidents
                .iter()
                .rev()
                .filter(of_page)
                .filter(|incident| incident["status"] != "resolved")
                .collect();
            Response::json(200, json!(listed))
        }
        ("POST", []) => {
            let Some(change) = incident_change(request) else {
                return unprocessable("the body must be JSON with an `incident` object");
            };
            let name = change["name"].as_str().unwrap_or_default();
            if name.trim().is_empty() || name.chars().count() > 255 {
                return unprocessable("name is required and at most 255 characters");
            }
            let id = format!("inc{:09}", state.incidents.len() + 1);
            let mut incident = json!({
                "id": id,
                "page_id": page,
                "name": name,
                "status": "investigating",
                "metadata": {},
                "components": [],
                "incident_updates": [],
                "resolved_at": null,
            });
            if let Err(problem) = apply_incident_change(&mut incident, &change) {
                return unprocessable(problem);
            }
            state.incidents.push(incident.clone());
            Response::json(201, incident)
        }
        ("PATCH" | "PUT", [id]) => {
            let Some(change) = incident_change(request) else {
                return unprocessable("the body must be JSON with an `incident` object");
            };
            let Some(incident) = state
                .incidents
                .iter_mut()
                .find(|incident| incident["page_id"] == page.as_str() && incident["id"] == *id)
            else {
                return Response::json(404, json!({"error": "Not found"}));
            };
            let mut changed = incident.clone();
            if let Some(name) = change["name"].as_str() {
                changed["name"] = json!(name);
            }
            if let Err(problem) = apply_incident_change(&mut changed, &change) {
                return unprocessable(problem);
            }
            *incident = changed.clone();
            Response::json(200, changed)
        }
        _ => Response::json(405, json!({"error": "Method not allowed"})),
    }
}

/// The `incident` object of a Statuspage request's body.
fn incident_change(request: &Request) -> Option<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    body.get("incident")
        .filter(|incident| incident.is_object())
        .cloned()
}

/// Applies what a create or update says beyond the name: status,
/// metadata, components, and an incident update for a `body`.
fn apply_incident_change(
    incident: &mut serde_json::Value,
    change: &serde_json::Value,
) -> Result<(), &'static str> {
    if let Some(status) = change.get("status") {
        match status.as_str() {
            Some("investigating" | "identified" | "monitoring" | "resolved") => {
                incident["status"] = status.clone();
            }
            _ => return Err("status is investigating, identified, monitoring or resolved"),
        }
    }
    if let Some(metadata) = change.get("metadata") {
        let Some(entries) = metadata.as_object() else {
            return Err("metadata must be an object");
        };
        if entries.values().any(|value| !value.is_object()) {
            return Err("metadata's top-level values must be objects");
        }
        incident["metadata"] = metadata.clone();
    }
    if let Some(components) = change.get("components") {
        let Some(entries) = components.as_object() else {
            return Err("components maps component ids to statuses");
        };
        let mut shown = incident["components"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (id, status) in entries {
            let known = [
                "operational",
                "under_maintenance",
                "degraded_performance",
                "partial_outage",
                "major_outage",
            ];
            if !status
                .as_str()
                .is_some_and(|status| known.contains(&status))
            {
                return Err(
                    "a component's status is operational, under_maintenance, degraded_performance, partial_outage or major_outage",
                );
            }
            shown.retain(|component| component["id"] != id.as_str());
            shown.push(json!({"id": id, "status": status}));
        }
        incident["components"] = json!(shown);
    }
    if incident["status"] == "resolved" && incident["resolved_at"].is_null() {
        incident["resolved_at"] = json!("resolved");
    }
    if let Some(body) = change.get("body").and_then(serde_json::Value::as_str) {
        let status = incident["status"].clone();
        if let Some(updates) = incident["incident_updates"].as_array_mut() {
            updates.push(json!({"status": status, "body": body}));
        }
    }
    Ok(())
}

/// A request Statuspage's API refuses as it does: 422 with the reason.
fn unprocessable(problem: &str) -> Response {
    Response::json(422, json!({"error": [problem]}))
}

/// The admin API of the source runbooks: `POST /admin/feature-flags` with
/// `{"key", "percentage"}` or `{"key", "enabled"}` and a bearer token;
/// `GET /admin/feature-flags/KEY` reads one flag.
fn feature_flags(state: &mut SampleState, request: &Request) -> Response {
    if let Some(token) = &state.admin_token
        && request.headers.get("authorization") != Some(&format!("Bearer {token}"))
    {
        return Response::json(401, json!({"error": "missing or wrong bearer token"}));
    }
    match (
        request.method.as_str(),
        request.path.strip_prefix("/admin/feature-flags"),
    ) {
        ("GET", Some(rest)) if rest.len() > 1 => match state.flags.get(&rest[1..]) {
            Some(flag) => Response::json(200, flag.clone()),
            None => Response::json(404, json!({"error": format!("no flag `{}`", &rest[1..])})),
        },
        ("GET", Some("" | "/")) => Response::json(
            200,
            json!({"flags": state.flags.values().collect::<Vec<_>>()}),
        ),
        ("POST", Some("" | "/")) => {
            let Ok(change) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
                return Response::json(400, json!({"error": "the body is not JSON"}));
            };
            let Some(key) = change["key"].as_str() else {
                return Response::json(400, json!({"error": "`key` is required"}));
            };
            let flag = state
                .flags
                .entry(key.to_owned())
                .or_insert_with(|| json!({"key": key, "percentage": 0, "enabled": false}));
            if let Some(percentage) = change.get("percentage") {
                match percentage.as_u64().filter(|value| *value <= 100) {
                    Some(value) => {
                        flag["percentage"] = json!(value);
                        flag["enabled"] = json!(value > 0);
                    }
                    None => {
                        return Response::json(400, json!({"error": "`percentage` is 0 to 100"}));
                    }
                }
            }
            if let Some(enabled) = change.get("enabled").and_then(serde_json::Value::as_bool) {
                flag["enabled"] = json!(enabled);
                if !enabled {
                    flag["percentage"] = json!(0);
                }
            }
            Response::json(200, flag.clone())
        }
        _ => Response::text(405, "method not allowed"),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[index + 1..index + 3], 16)
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
