//! Cassettes: a step's capability calls kept with the host's answers
//! (`runbook exec --record DIR`), and answered from them again
//! (`runbook plugin test`), so that a plugin is tested without the
//! services it talks to.
//!
//! Two seams, both in the capability layer:
//!
//! - each capability's host function passes its request through
//!   [`through`]: when the run records, the request as the plugin made it
//!   and what the host handed back (the answer, or the typed error or
//!   denial, already redacted) are kept as one [`Exchange`];
//! - after its grant check and before any I/O, each capability asks
//!   [`StepContext::replayed`]: when the run replays, the answer comes
//!   from the cassette instead of the network, a program, the cloud or
//!   the cluster.
//!   The grant checks run first either way, so a cassette cannot widen
//!   what a step is granted.
//!
//! The plugin runtime (`plugin`) hands each finished export call
//! to [`StepContext::finish_export`], which writes the step's cassette
//! (`DIR/STEP.json`). The format is documented in `docs/plugin-authors.md`.

use super::StepContext;
use super::kube::taped;
use super::secrets::SecretStore;
use crate::grant::{AwsGrant, CommandGrant, FsGrant, KubeGrant, StepGrants, StepId, UrlGrant};
use crate::redact::Redactor;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::{aws, command, http};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The version of the cassette format this host writes and reads.
pub const FORMAT: u32 = 1;

/// What a run does with capability calls beyond making them.
#[derive(Debug, Clone, Default)]
pub enum Tape {
    /// Nothing: calls are made.
    #[default]
    Off,
    /// Calls are made and kept, one cassette per step.
    Record(Arc<Recorder>),
    /// Calls are answered from a cassette, in order.
    Replay(Arc<Replay>),
}

/// One capability call and the host's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exchange {
    /// `http`, `aws`, `command`, `kube`.
    pub capability: String,
    /// The function of its interface: `send`, `call`, `run`, `get`, `wait`, ...
    pub method: String,
    /// The request as the plugin made it (secret handles stay handles).
    pub request: Value,
    /// What the host handed back.
    #[serde(flatten)]
    pub answer: Answer,
}

/// What the host handed back for one call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The call's result (`{"status": 200, "headers": ..., "body": ...}`).
    Response(Value),
    /// The typed error the plugin saw.
    Error(ErrorRecord),
}

/// A `runbook:plugin` error as a cassette keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorRecord {
    /// `invalid-params`.
    InvalidParams {
        /// Where in the parameters.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `denied`.
    Denied {
        /// Which capability.
        capability: String,
        /// What was asked.
        requested: String,
        /// What would grant it.
        hint: String,
    },
    /// `failed`.
    Failed {
        /// Why.
        message: String,
    },
    /// `transient`: worth a retry (a 503, a throttling error).
    Transient {
        /// Why.
        message: String,
    },
    /// `timeout`.
    Timeout {
        /// What did not end in time.
        message: String,
    },
    /// `cancelled`.
    Cancelled,
}

impl From<&PluginError> for ErrorRecord {
    fn from(error: &PluginError) -> Self {
        match error.clone() {
            PluginError::InvalidParams(error) => ErrorRecord::InvalidParams {
                path: error.path,
                message: error.message,
            },
            PluginError::Denied(denial) => ErrorRecord::Denied {
                capability: denial.capability,
                requested: denial.requested,
                hint: denial.hint,
            },
            PluginError::Failed(message) => ErrorRecord::Failed { message },
            PluginError::Transient(message) => ErrorRecord::Transient { message },
            PluginError::Timeout(message) => ErrorRecord::Timeout { message },
            PluginError::Cancelled => ErrorRecord::Cancelled,
        }
    }
}

impl From<ErrorRecord> for PluginError {
    fn from(error: ErrorRecord) -> Self {
        match error {
            ErrorRecord::InvalidParams { path, message } => {
                PluginError::InvalidParams(crate::wit::ParamError { path, message })
            }
            ErrorRecord::Denied {
                capability,
                requested,
                hint,
            } => PluginError::denied(&capability, requested, hint),
            ErrorRecord::Failed { message } => PluginError::Failed(message),
            ErrorRecord::Transient { message } => PluginError::Transient(message),
            ErrorRecord::Timeout { message } => PluginError::Timeout(message),
            ErrorRecord::Cancelled => PluginError::Cancelled,
        }
    }
}

/// A request a cassette can keep and answer: which capability and
/// function it is, what it is matched on, and its JSON forms.
pub trait Taped: Sized {
    /// The capability (`http`).
    const CAPABILITY: &'static str;
    /// The function of its interface (`send`).
    const METHOD: &'static str;
    /// What the host answers.
    type Answer;
    /// What a call is matched on: method and URL, service, action and
    /// region, program and arguments (secret handles without their nonce).
    fn target(&self) -> String;
    /// The request as a cassette keeps it.
    fn to_json(&self) -> Value;
    /// The request back from a cassette.
    fn from_json(value: Value) -> Result<Self, String>;
    /// The answer as a cassette keeps it.
    fn answer_to_json(answer: &Self::Answer) -> Value;
    /// The answer back from a cassette.
    fn answer_from_json(value: Value) -> Result<Self::Answer, String>;
}

/// A body as a cassette keeps it: text when it is UTF-8 (editable), bytes
/// otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Body {
    /// UTF-8 text.
    Text(String),
    /// Anything else.
    Bytes {
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl Body {
    fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(text.to_owned()),
            Err(_) => Body::Bytes {
                bytes: bytes.to_vec(),
            },
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Text(text) => text.into_bytes(),
            Body::Bytes { bytes } => bytes,
        }
    }
}

/// `http.send`'s request, as a cassette keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HttpRequestRecord {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_file: Option<http::FileBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    basic_auth: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default)]
    follow_redirects: bool,
}

/// `http.send`'s answer, as a cassette keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HttpResponseRecord {
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default = "empty_body")]
    body: Body,
    #[serde(default)]
    elapsed_us: u64,
    #[serde(default)]
    final_url: String,
}

fn empty_body() -> Body {
    Body::Text(String::new())
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|error| error.to_string())
}

impl Taped for http::Request {
    const CAPABILITY: &'static str = "http";
    const METHOD: &'static str = "send";
    type Answer = http::Response;

    fn target(&self) -> String {
        format!(
            "{} {}",
            self.method.trim().to_ascii_uppercase(),
            without_nonces(&self.url)
        )
    }

    fn to_json(&self) -> Value {
        to_value(HttpRequestRecord {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self.headers.clone(),
            body: self.body.as_deref().map(Body::of),
            body_file: self.body_file.clone(),
            basic_auth: self.basic_auth.clone(),
            timeout_ms: self.timeout_ms,
            follow_redirects: self.follow_redirects,
        })
    }

    fn from_json(value: Value) -> Result<Self, String> {
        let record: HttpRequestRecord = from_value(value)?;
        Ok(http::Request {
            method: record.method,
            url: record.url,
            headers: record.headers,
            body: record.body.map(Body::into_bytes),
            body_file: record.body_file,
            basic_auth: record.basic_auth,
            timeout_ms: record.timeout_ms,
            follow_redirects: record.follow_redirects,
        })
    }

    fn answer_to_json(answer: &http::Response) -> Value {
        to_value(HttpResponseRecord {
            status: answer.status,
            headers: answer.headers.clone(),
            body: Body::of(&answer.body),
            elapsed_us: answer.elapsed_us,
            final_url: answer.final_url.clone(),
        })
    }

    fn answer_from_json(value: Value) -> Result<http::Response, String> {
        let record: HttpResponseRecord = from_value(value)?;
        Ok(http::Response {
            status: record.status,
            headers: record.headers,
            body: record.body.into_bytes(),
            elapsed_us: record.elapsed_us,
            final_url: record.final_url,
        })
    }
}

impl Taped for aws::Request {
    const CAPABILITY: &'static str = "aws";
    const METHOD: &'static str = "call";
    type Answer = aws::Response;

    fn target(&self) -> String {
        format!("{}:{} in {}", self.service, self.action, self.region)
    }

    fn to_json(&self) -> Value {
        to_value(self)
    }

    fn from_json(value: Value) -> Result<Self, String> {
        from_value(value)
    }

    fn answer_to_json(answer: &aws::Response) -> Value {
        to_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<aws::Response, String> {
        from_value(value)
    }
}

impl Taped for aws::RestRequest {
    const CAPABILITY: &'static str = "aws";
    const METHOD: &'static str = "send";
    type Answer = aws::RestResponse;

    fn target(&self) -> String {
        format!(
            "{}:{} in {} ({} {})",
            self.service,
            self.action,
            self.region,
            self.method.trim().to_ascii_uppercase(),
            without_nonces(&self.path)
        )
    }

    fn to_json(&self) -> Value {
        to_value(self)
    }

    fn from_json(value: Value) -> Result<Self, String> {
        from_value(value)
    }

    fn answer_to_json(answer: &aws::RestResponse) -> Value {
        to_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<aws::RestResponse, String> {
        from_value(value)
    }
}

impl Taped for command::Invocation {
    const CAPABILITY: &'static str = "command";
    const METHOD: &'static str = "run";
    type Answer = command::Outcome;

    fn target(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&without_nonces(arg));
        }
        line
    }

    fn to_json(&self) -> Value {
        to_value(self)
    }

    fn from_json(value: Value) -> Result<Self, String> {
        from_value(value)
    }

    fn answer_to_json(answer: &command::Outcome) -> Value {
        to_value(answer)
    }

    fn answer_from_json(value: Value) -> Result<command::Outcome, String> {
        from_value(value)
    }
}

/// What a kept request is matched on, whatever its capability.
fn target_of(exchange: &Exchange) -> Result<String, String> {
    fn of<Q: Taped>(request: &Value) -> Result<String, String> {
        Q::from_json(request.clone()).map(|request| request.target())
    }
    match (exchange.capability.as_str(), exchange.method.as_str()) {
        ("http", "send") => of::<http::Request>(&exchange.request),
        ("aws", "call") => of::<aws::Request>(&exchange.request),
        ("aws", "send") => of::<aws::RestRequest>(&exchange.request),
        ("command", "run") => of::<command::Invocation>(&exchange.request),
        ("kube", "get") => of::<taped::Get>(&exchange.request),
        ("kube", "list") => of::<taped::List>(&exchange.request),
        ("kube", "create") => of::<taped::Create>(&exchange.request),
        ("kube", "patch") => of::<taped::Patch>(&exchange.request),
        ("kube", "delete") => of::<taped::Delete>(&exchange.request),
        ("kube", "logs") => of::<taped::Logs>(&exchange.request),
        ("kube", "wait") => of::<taped::Wait>(&exchange.request),
        (capability, method) => Err(format!(
            "`{capability}.{method}` calls are not replayed by this host"
        )),
    }
}

/// Makes a capability call through the run's tape: kept when the run
/// records; when it replays, noted if the host answered it itself (a
/// denial, a request it refused) before asking the cassette.
pub async fn through<Q, F>(
    context: &StepContext,
    request: Q,
    make: impl FnOnce(Q) -> F,
) -> Result<Q::Answer, PluginError>
where
    Q: Taped,
    F: Future<Output = Result<Q::Answer, PluginError>>,
{
    match &context.tape {
        Tape::Off => make(request).await,
        Tape::Record(_) => {
            let kept = request.to_json();
            let result = make(request).await;
            let answer = match &result {
                Ok(answer) => Answer::Response(Q::answer_to_json(answer)),
                Err(error) => Answer::Error(error.into()),
            };
            if let Ok(mut exchanges) = context.exchanges.lock() {
                exchanges.push(Exchange {
                    capability: Q::CAPABILITY.to_owned(),
                    method: Q::METHOD.to_owned(),
                    request: kept,
                    answer,
                });
            }
            result
        }
        Tape::Replay(replay) => {
            let target = request.target();
            let before = replay.answered();
            let result = make(request).await;
            if replay.answered() == before
                && let Err(error) = &result
            {
                replay.answered_by_host(Q::CAPABILITY, Q::METHOD, &target, error);
            }
            result
        }
    }
}

impl StepContext {
    /// When the run replays a cassette, its answer to this call (or the
    /// error that says the cassette holds no such call); `None` when the
    /// call is to be made. Asked after the grant check, before any I/O.
    pub fn replayed<Q: Taped>(&self, request: &Q) -> Option<Result<Q::Answer, PluginError>> {
        let Tape::Replay(replay) = &self.tape else {
            return None;
        };
        Some(replay.answer::<Q>(&request.target()))
    }

    /// Whether the run replays a cassette (a sleep is then not waited).
    pub fn replaying(&self) -> bool {
        matches!(self.tape, Tape::Replay(_))
    }

    /// One export call of the step's plugin ended: when the run records,
    /// it goes into the step's cassette with the calls it made.
    pub fn finish_export(&self, plugin: &PluginInfo, call: ExportCall) {
        let Tape::Record(recorder) = &self.tape else {
            return;
        };
        let exchanges = self
            .exchanges
            .lock()
            .map(|mut exchanges| std::mem::take(&mut *exchanges))
            .unwrap_or_default();
        let clock = self
            .clock_reads
            .lock()
            .map(|mut reads| std::mem::take(&mut *reads))
            .unwrap_or_default();
        recorder.keep(self, plugin, call, exchanges, clock);
    }
}

/// The plugin a cassette was recorded with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The component's sha256.
    pub digest: String,
}

/// One call of an export, before its exchanges are added.
#[derive(Debug, Clone)]
pub struct ExportCall {
    /// `check`, `plan`, `run` or `rollback`.
    pub export: Export,
    /// The parameters, JSON text.
    pub params: String,
    /// `run`'s state after a wait.
    pub state: Option<String>,
    /// `rollback`'s outputs.
    pub outputs: Option<Vec<(String, String)>>,
    /// How it ended.
    pub result: Ended,
}

/// A plugin's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Export {
    /// `check(params)`.
    Check,
    /// `plan(params)`.
    Plan,
    /// `run(params, state)`.
    Run,
    /// `rollback(params, outputs)`.
    Rollback,
}

impl Export {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Export::Check => "check",
            Export::Plan => "plan",
            Export::Run => "run",
            Export::Rollback => "rollback",
        }
    }
}

/// How an export call ended, as a cassette keeps it and a replay compares it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// `check` passed.
    Checked,
    /// `plan`'s actions.
    Planned(Vec<PlannedRecord>),
    /// `run` is done.
    Done {
        /// Its outputs.
        outputs: BTreeMap<String, String>,
        /// Its summary.
        summary: String,
    },
    /// `run` asks to be called again.
    Wait {
        /// After this long.
        after_ms: u64,
        /// With this state.
        state: String,
        /// Its status line.
        status: String,
    },
    /// `rollback` undid the step.
    RolledBack {
        /// Its summary.
        summary: String,
    },
    /// The plugin returned an error.
    Error(ErrorRecord),
    /// The call did not return: a trap, a timeout, the memory cap.
    Crashed(String),
}

/// One action of `plan`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedRecord {
    /// What it would do.
    pub description: String,
    /// Whether it changes anything.
    pub mutates: bool,
}

/// One export call in a cassette.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    /// Which export.
    pub export: Export,
    /// `run`'s state after a wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `rollback`'s outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
    /// The capability calls it made, in order.
    #[serde(default)]
    pub host_calls: Vec<Exchange>,
    /// The times it read, in order, so that a replay reads the same
    /// (a plugin that keeps the time in its wait state, or measures).
    #[serde(default, skip_serializing_if = "ClockReads::is_empty")]
    pub clock: ClockReads,
    /// How it ended.
    pub result: Ended,
}

/// The clock readings of one export call: the wall clock (nanoseconds
/// since the Unix epoch) and the monotonic clock (nanoseconds), each in
/// the order the plugin read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockReads {
    /// `wasi:clocks/wall-clock.now`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wall_ns: Vec<u128>,
    /// `wasi:clocks/monotonic-clock.now`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monotonic_ns: Vec<u64>,
}

impl ClockReads {
    /// Whether the call read no clock.
    pub fn is_empty(&self) -> bool {
        self.wall_ns.is_empty() && self.monotonic_ns.is_empty()
    }
}

/// The clocks a step's WASI sees: the system's, kept when the run
/// records; the recorded readings, in order, when it replays (then
/// running on from the last one as time passes, so that a plugin waiting
/// for time to pass is not stuck).
#[derive(Clone)]
pub struct TapedClock {
    reads: Arc<Mutex<ClockReads>>,
    replay: Option<Arc<Mutex<ReplayedClock>>>,
}

#[derive(Debug, Default)]
struct ReplayedClock {
    recorded: ClockReads,
    wall_next: usize,
    monotonic_next: usize,
    /// When the recorded readings ran out, and the last of each.
    wall_after: Option<(std::time::Instant, u128)>,
    monotonic_after: Option<(std::time::Instant, u64)>,
}

impl TapedClock {
    /// The clock of a step whose run records into `reads`.
    pub fn recording(reads: Arc<Mutex<ClockReads>>) -> Self {
        TapedClock {
            reads,
            replay: None,
        }
    }

    /// The clock of a replay of `recorded`.
    pub fn replaying(recorded: ClockReads) -> Self {
        TapedClock {
            reads: Arc::default(),
            replay: Some(Arc::new(Mutex::new(ReplayedClock {
                recorded,
                ..ReplayedClock::default()
            }))),
        }
    }
}

impl wasmtime_wasi::HostWallClock for TapedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        let nanos = match &self.replay {
            Some(replay) => {
                let mut replay = replay
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let replay = &mut *replay;
                match replay.recorded.wall_ns.get(replay.wall_next) {
                    Some(recorded) => {
                        replay.wall_next += 1;
                        *recorded
                    }
                    None => {
                        let last = replay
                            .recorded
                            .wall_ns
                            .last()
                            .copied()
                            .unwrap_or_else(system_wall_ns);
                        let (since, from) = *replay
                            .wall_after
                            .get_or_insert((std::time::Instant::now(), last));
                        from + since.elapsed().as_nanos()
                    }
                }
            }
            None => {
                let now = system_wall_ns();
                self.reads
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .wall_ns
                    .push(now);
                now
            }
        };
        let seconds = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        std::time::Duration::new(seconds, (nanos % 1_000_000_000) as u32)
    }
}

impl wasmtime_wasi::HostMonotonicClock for TapedClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        match &self.replay {
            Some(replay) => {
                let mut replay = replay
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let replay = &mut *replay;
                match replay.recorded.monotonic_ns.get(replay.monotonic_next) {
                    Some(recorded) => {
                        replay.monotonic_next += 1;
                        *recorded
                    }
                    None => {
                        let last = replay.recorded.monotonic_ns.last().copied().unwrap_or(0);
                        let (since, from) = *replay
                            .monotonic_after
                            .get_or_insert((std::time::Instant::now(), last));
                        from.saturating_add(
                            u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        )
                    }
                }
            }
            None => {
                let now = monotonic_ns();
                self.reads
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .monotonic_ns
                    .push(now);
                now
            }
        }
    }
}

fn system_wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
}

/// Nanoseconds since this process first asked.
fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One step's cassette: `DIR/STEP.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cassette {
    /// The format's version ([`FORMAT`]).
    pub cassette: u32,
    /// The step's id.
    pub step: String,
    /// The plugin it was recorded with.
    pub plugin: PluginInfo,
    /// The step's `with` parameters, rendered (secrets as handles).
    pub params: Value,
    /// The step's grants, resolved.
    pub grants: GrantsRecord,
    /// Every export call, in order.
    pub calls: Vec<CallRecord>,
    /// The folder the cassette was read from: a granted folder that is not
    /// where it was recorded (another machine, another checkout) is looked
    /// for there, as the runbook wrote it.
    #[serde(skip)]
    pub folder: Option<PathBuf>,
}

impl Cassette {
    /// Reads a cassette file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
        let mut cassette: Cassette = serde_json::from_str(&text)
            .map_err(|error| format!("`{}` is not a cassette: {error}", path.display()))?;
        cassette.folder = path.parent().map(Path::to_path_buf);
        if cassette.cassette != FORMAT {
            return Err(format!(
                "`{}` is a cassette of format {}; this host reads format {FORMAT}",
                path.display(),
                cassette.cassette
            ));
        }
        Ok(cassette)
    }

    /// The parameters as the plugin gets them, secret handles sealed for
    /// `secrets`.
    pub fn params_for(&self, secrets: &SecretStore) -> String {
        let text = match &self.params {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        with_nonces(&text, secrets)
    }
}

/// A step's grants as a cassette keeps them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GrantsRecord {
    /// `grants.http`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// `grants.secrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// `grants.fs`: as written, the host folder, the guest path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<(String, PathBuf, String)>,
    /// `grants.aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsGrantRecord>,
    /// `grants.kube`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeGrantRecord>,
    /// `grants.command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<CommandGrantRecord>,
}

/// `grants.aws`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AwsGrantRecord {
    /// Services.
    pub services: Vec<String>,
    /// Actions.
    pub actions: Vec<String>,
    /// Regions.
    pub regions: Vec<String>,
}

/// `grants.kube`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubeGrantRecord {
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Resources.
    pub resources: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

/// One entry of `grants.command`, resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandGrantRecord {
    /// As written.
    pub written: String,
    /// The program, links resolved.
    pub program: PathBuf,
    /// The path executed.
    pub path: PathBuf,
    /// Argument patterns.
    pub args: Vec<String>,
    /// The runbook's folder.
    pub base: PathBuf,
    /// Readable paths.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Writable paths.
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// TCP ports.
    #[serde(default)]
    pub connect: Vec<u16>,
}

impl From<&StepGrants> for GrantsRecord {
    fn from(grants: &StepGrants) -> Self {
        GrantsRecord {
            http: grants.http_texts(),
            secrets: grants.secrets.clone(),
            fs: grants
                .fs_read
                .iter()
                .map(|grant| {
                    (
                        grant.written.clone(),
                        grant.host.clone(),
                        grant.guest.clone(),
                    )
                })
                .collect(),
            aws: grants.aws.as_ref().map(|grant| AwsGrantRecord {
                services: grant.services.clone(),
                actions: grant.actions.clone(),
                regions: grant.regions.clone(),
            }),
            kube: grants.kube.as_ref().map(|grant| KubeGrantRecord {
                namespaces: grant.namespaces.clone(),
                resources: grant.resources.clone(),
                verbs: grant.verbs.clone(),
            }),
            command: grants
                .command
                .iter()
                .map(|grant| CommandGrantRecord {
                    written: grant.written.clone(),
                    program: grant.program.clone(),
                    path: grant.path.clone(),
                    args: grant.args.clone(),
                    base: grant.base.clone(),
                    read: grant.read.clone(),
                    write: grant.write.clone(),
                    connect: grant.connect.clone(),
                })
                .collect(),
        }
    }
}

impl GrantsRecord {
    /// The grants a replay gives the step: exactly these.
    pub fn to_grants(&self) -> Result<StepGrants, String> {
        Ok(StepGrants {
            http: self
                .http
                .iter()
                .map(|text| {
                    UrlGrant::parse(text).map_err(|error| format!("grant `{text}`: {error}"))
                })
                .collect::<Result<_, _>>()?,
            secrets: self.secrets.clone(),
            fs_read: self
                .fs
                .iter()
                .map(|(written, host, guest)| FsGrant {
                    written: written.clone(),
                    host: host.clone(),
                    guest: guest.clone(),
                })
                .collect(),
            aws: self.aws.as_ref().map(|grant| AwsGrant {
                services: grant.services.clone(),
                actions: grant.actions.clone(),
                regions: grant.regions.clone(),
            }),
            kube: self.kube.as_ref().map(|grant| KubeGrant {
                namespaces: grant.namespaces.clone(),
                resources: grant.resources.clone(),
                verbs: grant.verbs.clone(),
            }),
            command: self
                .command
                .iter()
                .map(|grant| CommandGrant {
                    written: grant.written.clone(),
                    program: grant.program.clone(),
                    path: grant.path.clone(),
                    args: grant.args.clone(),
                    base: grant.base.clone(),
                    read: grant.read.clone(),
                    write: grant.write.clone(),
                    connect: grant.connect.clone(),
                })
                .collect(),
        })
    }
}

const HANDLE_PREFIX: &str = "@@runbook-secret/";
const HANDLE_SUFFIX: &str = "@@";

/// `text` with every secret handle's per-run nonce dropped
/// (`@@runbook-secret/NAME@@`): a cassette's handles name the secret and
/// hold nothing of a run.
pub fn without_nonces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(HANDLE_PREFIX) {
        out.push_str(&rest[..start + HANDLE_PREFIX.len()]);
        let after = &rest[start + HANDLE_PREFIX.len()..];
        let Some(end) = after.find(HANDLE_SUFFIX) else {
            out.push_str(after);
            return out;
        };
        let inner = &after[..end];
        out.push_str(inner.split_once('/').map_or(inner, |(name, _)| name));
        out.push_str(HANDLE_SUFFIX);
        rest = &after[end + HANDLE_SUFFIX.len()..];
    }
    out.push_str(rest);
    out
}

/// `text` with each cassette handle (`@@runbook-secret/NAME@@`) sealed
/// again for `secrets`' run.
pub fn with_nonces(text: &str, secrets: &SecretStore) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(HANDLE_PREFIX) {
        out.push_str(&rest[..start]);
        let after = &rest[start + HANDLE_PREFIX.len()..];
        let Some(end) = after.find(HANDLE_SUFFIX) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let name = name.split_once('/').map_or(name, |(name, _)| name);
        out.push_str(&secrets.handle(name));
        rest = &after[end + HANDLE_SUFFIX.len()..];
    }
    out.push_str(rest);
    out
}

/// Keeps every step's cassette of a recorded run, written to its folder
/// after each export call (so a run that dies leaves what it did).
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    cassettes: Mutex<BTreeMap<StepId, Cassette>>,
}

impl Recorder {
    /// A recorder writing into `dir` (made if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Recorder {
            dir: dir.into(),
            cassettes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where a step's cassette goes: its id, with anything but letters,
    /// digits, `-`, `_` and `.` as `_` (`deploy[0]` → `deploy_0_.json`).
    pub fn path_of(&self, step: &StepId) -> PathBuf {
        let name: String = step
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }

    fn keep(
        &self,
        context: &StepContext,
        plugin: &PluginInfo,
        call: ExportCall,
        host_calls: Vec<Exchange>,
        clock: ClockReads,
    ) {
        let Ok(mut cassettes) = self.cassettes.lock() else {
            return;
        };
        let params = serde_json::from_str(&call.params).unwrap_or(Value::String(call.params));
        let cassette = cassettes
            .entry(context.step_id.clone())
            .or_insert_with(|| Cassette {
                cassette: FORMAT,
                step: context.step_id.0.clone(),
                plugin: plugin.clone(),
                params: params.clone(),
                grants: GrantsRecord::from(&context.grants),
                calls: Vec::new(),
                folder: None,
            });
        cassette.params = params;
        cassette.calls.push(CallRecord {
            export: call.export,
            state: call.state,
            outputs: call.outputs.map(|outputs| outputs.into_iter().collect()),
            host_calls,
            clock,
            result: call.result,
        });
        let text = sealed_json(cassette, &context.redactor);
        let path = self.path_of(&context.step_id);
        if let Err(error) = write_file(&path, &text) {
            context.emit(crate::events::EventKind::Log {
                level: crate::events::Level::Warn,
                message: format!("cannot write the cassette `{}`: {error}", path.display()),
            });
        }
    }
}

/// A cassette as written: pretty JSON, secret values redacted and secret
/// handles without their run's nonce.
pub fn sealed_json(cassette: &Cassette, redactor: &Redactor) -> String {
    let text = serde_json::to_string_pretty(cassette).unwrap_or_default();
    let text = without_nonces(&redactor.apply(&text));
    text + "\n"
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// One export call's expected capability calls, answered in order.
#[derive(Debug, Default)]
pub struct Replay {
    state: Mutex<ReplayState>,
    /// The clock readings the call made when it was recorded.
    clock: ClockReads,
}

#[derive(Debug, Default)]
struct ReplayState {
    expected: Vec<Expected>,
    answered: usize,
    problems: Vec<String>,
}

#[derive(Debug)]
struct Expected {
    exchange: Exchange,
    target: String,
    used: bool,
}

impl Expected {
    fn name(&self) -> String {
        format!(
            "{}.{} `{}`",
            self.exchange.capability, self.exchange.method, self.target
        )
    }
}

impl Replay {
    /// A replay of these calls; a kept call whose request cannot be read
    /// is refused, naming it.
    pub fn new(host_calls: &[Exchange]) -> Result<Self, String> {
        let expected = host_calls
            .iter()
            .enumerate()
            .map(|(index, exchange)| {
                let target = target_of(exchange)
                    .map_err(|error| format!("host call {} of the cassette: {error}", index + 1))?;
                Ok(Expected {
                    exchange: exchange.clone(),
                    target: without_nonces(&target),
                    used: false,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Replay {
            state: Mutex::new(ReplayState {
                expected,
                ..ReplayState::default()
            }),
            clock: ClockReads::default(),
        })
    }

    /// The replay reads the clock as the call did when it was recorded.
    pub fn with_clock(mut self, clock: ClockReads) -> Self {
        self.clock = clock;
        self
    }

    /// The clock a replayed call's WASI sees.
    pub fn clock(&self) -> TapedClock {
        TapedClock::replaying(self.clock.clone())
    }

    fn answered(&self) -> usize {
        self.state.lock().map(|state| state.answered).unwrap_or(0)
    }

    /// What went wrong: calls the cassette does not hold, answers it
    /// could not give, and (once the export returned) expectations left
    /// unused.
    pub fn problems(&self) -> Vec<String> {
        let Ok(state) = self.state.lock() else {
            return vec!["the replay's state was poisoned".into()];
        };
        let mut problems = state.problems.clone();
        for expected in state.expected.iter().filter(|expected| !expected.used) {
            problems.push(format!(
                "expected {} was never made (the cassette holds it; the plugin did not call it)",
                expected.name()
            ));
        }
        problems
    }

    fn answer<Q: Taped>(&self, target: &str) -> Result<Q::Answer, PluginError> {
        let target = without_nonces(target);
        let Ok(mut state) = self.state.lock() else {
            return Err(PluginError::Failed(
                "the replay's state was poisoned".into(),
            ));
        };
        state.answered += 1;
        let found = state.expected.iter_mut().find(|expected| {
            !expected.used
                && expected.exchange.capability == Q::CAPABILITY
                && expected.exchange.method == Q::METHOD
                && expected.target == target
        });
        let Some(expected) = found else {
            let closest = closest(&state.expected, Q::CAPABILITY, Q::METHOD, &target)
                .map(|closest| format!("; the closest expected call is {closest}"))
                .unwrap_or_else(|| "; the cassette expects no further calls".into());
            let problem = format!(
                "unexpected call {}.{} `{target}`: the cassette does not hold it{closest}",
                Q::CAPABILITY,
                Q::METHOD
            );
            state.problems.push(problem.clone());
            return Err(PluginError::Failed(format!("replay: {problem}")));
        };
        expected.used = true;
        let name = expected.name();
        match expected.exchange.answer.clone() {
            Answer::Error(error) => Err(error.into()),
            Answer::Response(value) => Q::answer_from_json(value).map_err(|error| {
                let problem = format!("the cassette's answer to {name} cannot be read: {error}");
                state.problems.push(problem.clone());
                PluginError::Failed(format!("replay: {problem}"))
            }),
        }
    }

    /// The host answered a call itself, before asking the cassette (its
    /// grant check denied it, the request was malformed): a kept error
    /// for that call is its record, and is used up. One that differs is
    /// a problem.
    fn answered_by_host(&self, capability: &str, method: &str, target: &str, error: &PluginError) {
        let target = without_nonces(target);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let found = state.expected.iter_mut().find(|expected| {
            !expected.used
                && expected.exchange.capability == capability
                && expected.exchange.method == method
                && expected.target == target
        });
        let Some(expected) = found else {
            return;
        };
        let Answer::Error(kept) = &expected.exchange.answer else {
            // The cassette answered it, the host did not let it through:
            // the expectation stays unused and is reported so.
            let problem = format!(
                "{} was answered by the host before the cassette: {}",
                expected.name(),
                error.describe()
            );
            state.problems.push(problem);
            return;
        };
        expected.used = true;
        let seen = ErrorRecord::from(error);
        if *kept != seen {
            let problem = format!(
                "{}: the cassette holds the error {}, the host gave {}",
                expected.name(),
                serde_json::to_string(kept).unwrap_or_default(),
                serde_json::to_string(&seen).unwrap_or_default()
            );
            state.problems.push(problem);
        }
    }
}

/// The expected call nearest to an unexpected one: the unused calls of
/// the same capability and function first, then the next unused call.
fn closest(expected: &[Expected], capability: &str, method: &str, target: &str) -> Option<String> {
    let unused = || expected.iter().filter(|expected| !expected.used);
    unused()
        .filter(|expected| {
            expected.exchange.capability == capability && expected.exchange.method == method
        })
        .min_by_key(|expected| distance(&expected.target, target))
        .or_else(|| unused().next())
        .map(Expected::name)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(row[j + 1])
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

    #[test]
    fn a_recorded_clock_keeps_each_reading_and_a_replay_gives_them_back_then_runs_on() {
        let reads = Arc::new(Mutex::new(ClockReads::default()));
        let recording = TapedClock::recording(reads.clone());
        let first = HostWallClock::now(&recording);
        let second = HostMonotonicClock::now(&recording);
        let kept = reads.lock().unwrap().clone();
        assert_eq!(kept.wall_ns, vec![first.as_nanos()]);
        assert_eq!(kept.monotonic_ns, vec![second]);
        let replaying = TapedClock::replaying(ClockReads {
            wall_ns: vec![1_000_000_000_123, 1_000_000_000_456],
            monotonic_ns: vec![7],
        });
        assert_eq!(HostWallClock::now(&replaying).as_nanos(), 1_000_000_000_123);
        assert_eq!(HostWallClock::now(&replaying).as_nanos(), 1_000_000_000_456);
        // Past the recording, time runs on from the last reading.
        assert!(HostWallClock::now(&replaying).as_nanos() >= 1_000_000_000_456);
        assert_eq!(HostMonotonicClock::now(&replaying), 7);
        assert!(HostMonotonicClock::now(&replaying) >= 7);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_lose_their_nonce_and_get_the_replays_back() {
        let text = "Bearer @@runbook-secret/TOKEN/abc123@@ and @@runbook-secret/KEY/ff@@";
        let kept = without_nonces(text);
        assert_eq!(
            kept,
            "Bearer @@runbook-secret/TOKEN@@ and @@runbook-secret/KEY@@"
        );
        let store = SecretStore::new(BTreeMap::from([
            ("TOKEN".to_owned(), "t".to_owned()),
            ("KEY".to_owned(), "k".to_owned()),
        ]));
        let sealed = with_nonces(&kept, &store);
        assert_eq!(
            sealed,
            format!(
                "Bearer {} and {}",
                store.handle("TOKEN"),
                store.handle("KEY")
            )
        );
        assert_eq!(without_nonces(&sealed), kept);
    }

    #[test]
    fn an_exchange_reads_back_as_written() {
        let request = http::Request {
            method: "get".into(),
            url: "http://h/health".into(),
            headers: vec![("X-Key".into(), "@@runbook-secret/KEY/1@@".into())],
            body: None,
            body_file: None,
            basic_auth: None,
            timeout_ms: Some(100),
            follow_redirects: true,
        };
        let exchange = Exchange {
            capability: "http".into(),
            method: "send".into(),
            request: request.to_json(),
            answer: Answer::Error(ErrorRecord::Transient {
                message: "503".into(),
            }),
        };
        let text = serde_json::to_string(&exchange).unwrap();
        assert!(
            text.contains(r#""error":{"kind":"transient","message":"503"}"#),
            "{text}"
        );
        let back: Exchange = serde_json::from_str(&text).unwrap();
        assert_eq!(back, exchange);
        assert_eq!(target_of(&back).unwrap(), "GET http://h/health");
    }

    #[test]
    fn a_call_the_cassette_does_not_hold_names_the_closest() {
        let exchange = |url: &str| Exchange {
            capability: "http".into(),
            method: "send".into(),
            request: serde_json::json!({"method": "GET", "url": url}),
            answer: Answer::Response(serde_json::json!({"status": 200})),
        };
        let replay =
            Replay::new(&[exchange("http://h/health"), exchange("http://h/other")]).unwrap();
        let Err(error) = replay.answer::<http::Request>("GET http://h/healthz") else {
            panic!("answered");
        };
        let message = error.describe();
        assert!(message.contains("`GET http://h/healthz`"), "{message}");
        assert!(
            message.contains("closest expected call is http.send `GET http://h/health`"),
            "{message}"
        );
        let answered = replay
            .answer::<http::Request>("GET http://h/health")
            .unwrap();
        assert_eq!(answered.status, 200);
        let problems = replay.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[1].contains("`GET http://h/other` was never made"),
            "{problems:?}"
        );
    }

    #[test]
    fn no_secret_value_reaches_a_written_cassette() {
        let secret = "s3cr3t-value";
        let redactor = Redactor::new([secret.to_owned()]);
        let cassette = Cassette {
            cassette: FORMAT,
            step: "s".into(),
            plugin: PluginInfo::default(),
            params: serde_json::json!({"token": "@@runbook-secret/T/abcdef@@"}),
            grants: GrantsRecord::default(),
            folder: None,
            calls: vec![CallRecord {
                export: Export::Run,
                state: None,
                outputs: None,
                clock: ClockReads::default(),
                host_calls: vec![Exchange {
                    capability: "http".into(),
                    method: "send".into(),
                    request: serde_json::json!({"method": "GET", "url": "http://h/"}),
                    answer: Answer::Response(serde_json::json!({
                        "status": 200,
                        "body": format!("echo: {secret} \"{secret}\""),
                    })),
                }],
                result: Ended::Done {
                    outputs: BTreeMap::from([("echo".to_owned(), secret.to_owned())]),
                    summary: format!("saw {secret}"),
                },
            }],
        };
        let text = sealed_json(&cassette, &redactor);
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("@@runbook-secret/T@@"), "{text}");
        assert!(!text.contains("abcdef"), "{text}");
        let back: Cassette = serde_json::from_str(&text).unwrap();
        assert_eq!(back.calls.len(), 1);
    }
}
