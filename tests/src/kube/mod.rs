//! A Kubernetes API-server emulator on loopback: no Kubernetes API server
//! can run on the test machines, so this one implements the parts of the
//! real HTTP API that `runbook`'s kube capability and `kubectl` use —
//! discovery, get/list/create/replace/patch/delete, server-side apply
//! with `managedFields`, `dryRun=All`, watch from a resourceVersion,
//! conflicts on a stale resourceVersion — and controllers that progress
//! Deployment and StatefulSet rollouts and run Jobs. It speaks plain HTTP
//! without authentication.

pub mod controller;
pub mod fields;
pub mod patch;
pub mod resources;
pub mod store;

use bytes::Bytes;
use controller::{Controllers, JobOutcome};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use patch::PatchFormat;
use resources::Resource;
use serde_json::Value;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{ApiError, Change, Selectors, Store};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    store: Mutex<Store>,
    controllers: Mutex<Controllers>,
    requests: Mutex<Vec<String>>,
}

/// A running emulator.
pub struct KubeEmulator {
    /// Where it listens.
    pub address: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeEmulator {
    /// Starts on a free loopback port, with the `default` namespace, and
    /// controllers ticking every 20 ms.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(0, Duration::from_millis(20)).await
    }

    /// Starts on a given port with a given controller tick.
    pub async fn start_on(port: u16, tick: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            controllers: Mutex::new(Controllers::default()),
            requests: Mutex::new(Vec::new()),
        });
        let mut emulator = KubeEmulator {
            address,
            shared: Arc::clone(&shared),
            tasks: Vec::new(),
        };
        emulator.apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}));
        let serving = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let ticking = Arc::clone(&shared);
        let controllers = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let mut store = ticking.store.lock().expect("store lock");
                ticking
                    .controllers
                    .lock()
                    .expect("controllers lock")
                    .tick(&mut store);
            }
        });
        emulator.tasks = vec![server, controllers];
        Ok(emulator)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig with one context, `emulator`, pointing here.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: emulator\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: operator\n    namespace: default\nusers:\n- name: operator\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Creates an object, or replaces it if it exists (seeding a test);
    /// workloads are settled at once (fully rolled out, revision 1, Jobs
    /// finished). Panics on a kind the emulator does not serve.
    pub fn apply(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let resource = resources::by_kind(&api_version, &kind)
            .unwrap_or_else(|| panic!("the emulator does not serve {api_version} {kind}"));
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut store = self.shared.store.lock().expect("store lock");
        let namespace = namespace
            .as_deref()
            .or(resource.namespaced.then_some("default"));
        let result = if store.get(resource, namespace, &name).is_ok() {
            store.replace(resource, namespace, &name, object, false)
        } else {
            store.create(resource, namespace, object, false)
        };
        let seeded =
            result.unwrap_or_else(|error| panic!("seeding {kind} {name}: {}", error.message));
        self.controllers().settle(&mut store);
        store.get(resource, namespace, &name).unwrap_or(seeded)
    }

    /// An object, if it exists.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = resources::by_kind(api_version, kind)?;
        self.shared
            .store
            .lock()
            .expect("store lock")
            .get(resource, namespace, name)
            .ok()
    }

    /// Pods of this image never become ready: a rollout to it stalls and
    /// then exceeds its progress deadline.
    pub fn break_image(&self, image: &str) {
        self.controllers().broken_images.insert(image.to_owned());
    }

    /// Ticks a stalled rollout waits before `ProgressDeadlineExceeded`.
    pub fn set_deadline_ticks(&self, ticks: u32) {
        self.controllers().deadline_ticks = ticks;
    }

    /// Jobs whose name starts with `prefix` end with this exit code and
    /// print these logs.
    pub fn job_outcome(&self, prefix: &str, exit_code: i32, logs: &str) {
        self.controllers().job_outcomes.push((
            prefix.to_owned(),
            JobOutcome {
                exit_code,
                logs: logs.to_owned(),
            },
        ));
    }

    /// Forgets every schema revision that alembic Jobs applied.
    pub fn forget_migrations(&self) {
        self.controllers().forget_migrations();
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    fn controllers(&self) -> std::sync::MutexGuard<'_, Controllers> {
        self.shared.controllers.lock().expect("controllers lock")
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn json_response(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("a valid response")
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

/// What a URL names.
struct Target {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(segments: &[&str]) -> Result<Target, ApiError> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::bad_request("not an API path")),
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..] => (Some((*namespace).to_owned()), {
            let mut all = vec![*plural];
            all.extend_from_slice(rest);
            all
        }),
        other => (None, other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
        _ => return Err(ApiError::bad_request("not a resource path")),
    };
    let resource = resources::by_plural(group, version, plural).ok_or_else(|| ApiError {
        code: 404,
        reason: "NotFound",
        message: format!(
            "the server could not find the requested resource ({group}/{version} {plural})"
        ),
    })?;
    Ok(Target {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

fn query_pairs(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(match &query {
            Some(query) => format!("{method} {path}?{query}"),
            None => format!("{method} {path}"),
        });
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return error_response(&ApiError::bad_request(error.to_string())),
    };
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["version"]) => return json_response(200, &resources::version()),
        (Method::GET, ["api"]) => return json_response(200, &resources::core_versions()),
        (Method::GET, ["apis"]) => return json_response(200, &resources::groups()),
        (Method::GET, ["api", version]) => {
            return match resources::resource_list("", version) {
                Some(list) => json_response(200, &list),
                None => error_response(&ApiError {
                    code: 404,
                    reason: "NotFound",
                    message: "no such version".into(),
                }),
            };
        }
        (Method::GET, ["apis", group, version]) => {
            return match resources::resource_list(group, version) {
                Some(list) => json_response(200, &list),
                None => error_response(&ApiError {
                    code: 404,
                    reason: "NotFound",
                    message: "no such group".into(),
                }),
            };
        }
        _ => {}
    }
    let target = match parse_target(&segments) {
        Ok(target) => target,
        Err(error) => return error_response(&error),
    };
    let params = query_pairs(query.as_deref());
    let dry_run = params.get("dryRun").is_some_and(|value| value == "All");
    let namespace = target.namespace.as_deref();
    let parsed_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("the body is not JSON: {error}")))
    };
    if target.subresource.as_deref() == Some("log") && method == Method::GET {
        let name = target.name.clone().unwrap_or_default();
        let logs = shared
            .controllers
            .lock()
            .expect("controllers lock")
            .logs
            .get(&(namespace.unwrap_or_default().to_owned(), name.clone()))
            .cloned();
        return match logs {
            Some(logs) => Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(logs)).boxed())
                .expect("a valid response"),
            None => error_response(&ApiError {
                code: 400,
                reason: "BadRequest",
                message: format!("container in pod \"{name}\" is waiting to start"),
            }),
        };
    }
    let outcome = {
        let mut store = shared.store.lock().expect("store lock");
        match (&method, &target.name) {
            (&Method::GET, None) if params.get("watch").is_some_and(|v| v == "true" || v == "1") => {
                drop(store);
                return watch(shared, &target, &params);
            }
            (&Method::GET, None) => Ok(store.list(
                target.resource,
                namespace,
                &Selectors::parse(params.get("labelSelector").map(String::as_str), params.get("fieldSelector").map(String::as_str)),
            )),
            (&Method::GET, Some(name)) => store.get(target.resource, namespace, name),
            (&Method::POST, None) => parsed_body().and_then(|object| store.create(target.resource, namespace, object, dry_run)),
            (&Method::PUT, Some(name)) => {
                parsed_body().and_then(|object| store.replace(target.resource, namespace, name, object, dry_run))
            }
            (&Method::PATCH, Some(name)) => match PatchFormat::from_content_type(&content_type) {
                Some(PatchFormat::Apply) => parsed_body().and_then(|body| {
                    let manager = params.get("fieldManager").map_or("", String::as_str);
                    store.apply(target.resource, namespace, name, &body, manager, dry_run)
                }),
                Some(format) => parsed_body().and_then(|patch| {
                    let patch = if target.subresource.as_deref() == Some("status") {
                        serde_json::json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
                    } else {
                        patch
                    };
                    store.patch(target.resource, namespace, name, format, &patch, dry_run)
                }),
                None => Err(ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type})"),
                }),
            },
            (&Method::DELETE, Some(name)) => store.delete(target.resource, namespace, name, dry_run),
            _ => Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: format!("{method} is not supported here"),
            }),
        }
    };
    match outcome {
        Ok(object) => {
            let status = if method == Method::POST { 201 } else { 200 };
            json_response(status, &object)
        }
        Err(error) => error_response(&error),
    }
}

fn watch(shared: &Shared, target: &Target, params: &BTreeMap<String, String>) -> Response<Body> {
    let selectors = Selectors::parse(
        params.get("labelSelector").map(String::as_str),
        params.get("fieldSelector").map(String::as_str),
    );
    let from = params
        .get("resourceVersion")
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|revision| *revision > 0);
    let resource = target.resource;
    let namespace = target.namespace.clone();
    let (past, mut live) = {
        let store = shared.store.lock().expect("store lock");
        match from {
            Some(revision) => store.watch_from(revision),
            None => store.watch_now(resource, namespace.as_deref()),
        }
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|text| text.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let relevant = move |change: &Change| {
        change.key.api_version == resource.api_version()
            && change.key.kind == resource.kind
            && namespace
                .as_deref()
                .is_none_or(|namespace| change.key.namespace == namespace)
            && selectors.matches(&change.object)
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let line = |change: &Change| {
            let mut text =
                serde_json::json!({"type": change.kind, "object": change.object}).to_string();
            text.push('\n');
            Bytes::from(text)
        };
        let mut last = 0;
        for change in past.iter().filter(|change| relevant(change)) {
            last = last.max(change.revision);
            if sender.send(line(change)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(change) if change.revision > last && relevant(&change) => {
                        last = change.revision;
                        if sender.send(line(&change)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too far behind or closed: end the stream, the client re-lists.
                    Err(_) => return,
                },
                () = tokio::time::sleep_until(deadline) => return,
                () = sender.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response")
}
