//! `lambda-alias`: a canary at a Lambda alias. Publishes `$LATEST` as a
//! new version (or takes a published one), then moves an alias onto it in
//! stages through the alias's weighted routing (`AdditionalVersionWeights`),
//! holding each stage below 100% while CloudWatch or Prometheus checks run,
//! through the host's AWS capability (Lambda's REST-JSON API). The alias
//! found before is checkpointed before anything changes; a breach puts it
//! back and fails the step, and `rollback` always puts it back. Each stage
//! change and analysis round is one call, with a journaled wait between.

use runbook_analysis::{Analysis, Hold, Next, Verdict};
use runbook_sdk::aws;
use runbook_sdk::serde_json::{self, Map, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    RunResult, Serialize, Step, Wait, unresolved,
};
use std::collections::BTreeMap;
use std::time::Duration;

struct LambdaAlias;

/// The function, its alias, the version to move it to, and the stages.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The function's AWS region.
    region: String,
    /// The function's name (`api`) or ARN.
    function: String,
    /// The alias to move (`live`).
    alias: String,
    /// A published version to move the alias to (`"7"`); without it, the
    /// step publishes `$LATEST` as a new version.
    #[serde(default)]
    version: Option<String>,
    /// Publish `$LATEST` only if its code has this SHA-256 (base64, as
    /// Lambda's `CodeSha256` says it); not with `version`.
    #[serde(default)]
    code_sha256: Option<String>,
    /// The description of the version the step publishes; not with
    /// `version`.
    #[serde(default)]
    description: Option<String>,
    /// The new version's share of the alias's traffic at each stage, in
    /// percent, rising to 100 (`[10, 50, 100]`).
    stages: Vec<u32>,
    /// How long each stage below 100% is held (and analysed).
    #[serde(default)]
    hold: Option<HumanDuration>,
    /// The checks run during each hold; none means holding only.
    #[serde(default)]
    analysis: Option<Analysis>,
}

/// Lambda's API version, the first segment of its paths.
const API: &str = "/2015-03-31";

/// The longest one stage may be held: an alias split for longer than a
/// day is no longer a canary but a split someone forgot.
const MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);

/// An alias's routing as Lambda has it (or should): the version it points
/// at and the other versions' shares. It reads `GetAlias` and
/// `UpdateAlias` answers (their other fields ignored), and it is the
/// `previous` output, in Lambda's own shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "PascalCase")]
struct Routing {
    /// The version the alias points at (`"3"`, or `$LATEST`).
    function_version: String,
    /// The other versions' shares; `None` where Lambda reports no routing
    /// configuration.
    #[serde(default)]
    routing_config: Option<RoutingConfig>,
}

/// An alias's `RoutingConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(crate = "runbook_sdk::serde", rename_all = "PascalCase")]
struct RoutingConfig {
    /// Each other version and its share of the traffic, 0 to 1.
    #[serde(default)]
    additional_version_weights: BTreeMap<String, f64>,
}

impl Routing {
    /// All traffic on `version`.
    fn on(version: &str) -> Self {
        Routing {
            function_version: version.to_owned(),
            routing_config: None,
        }
    }

    /// `share` percent of the traffic on `new`, the rest on `old`.
    fn split(old: &str, new: &str, share: u32) -> Self {
        Routing {
            function_version: old.to_owned(),
            routing_config: Some(RoutingConfig {
                additional_version_weights: BTreeMap::from([(
                    new.to_owned(),
                    f64::from(share) / 100.0,
                )]),
            }),
        }
    }

    /// The other versions that get a share, and their shares (0 to 1).
    fn weights(&self) -> BTreeMap<String, f64> {
        self.routing_config
            .as_ref()
            .map(|config| {
                config
                    .additional_version_weights
                    .iter()
                    .filter(|(_, weight)| **weight > 0.0)
                    .map(|(version, weight)| (version.clone(), *weight))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether some traffic goes to another version than the alias's.
    fn is_split(&self) -> bool {
        !self.weights().is_empty()
    }

    /// Whether two routings send traffic alike: no routing configuration
    /// and an empty one are the same, and shares are compared to a
    /// millionth.
    fn same(&self, other: &Routing) -> bool {
        let shares = |routing: &Routing| -> Vec<(String, i64)> {
            routing
                .weights()
                .into_iter()
                .map(|(version, weight)| (version, (weight * 1e6).round() as i64))
                .collect()
        };
        self.function_version == other.function_version && shares(self) == shares(other)
    }

    /// `v3`, or `v3 with 10% on v4`.
    fn describe(&self) -> String {
        let mut text = version_label(&self.function_version);
        let others: Vec<String> = self
            .weights()
            .iter()
            .map(|(version, weight)| {
                format!(
                    "{}% on {}",
                    runbook_analysis::show(weight * 100.0),
                    version_label(version)
                )
            })
            .collect();
        if !others.is_empty() {
            text.push_str(" with ");
            text.push_str(&others.join(", "));
        }
        text
    }

    /// As JSON, Lambda's shape: the `previous` output.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The body of an `UpdateAlias` that sets exactly this routing. The
    /// weights are always sent, empty to clear a split: an `UpdateAlias`
    /// whose `RoutingConfig` is left out or null leaves the split the
    /// alias has (moto's, at least).
    fn update_body(&self) -> Value {
        serde_json::json!({
            "FunctionVersion": self.function_version,
            "RoutingConfig": { "AdditionalVersionWeights": self.weights() },
        })
    }
}

/// `v7` for a published version; anything else (`$LATEST`) as it is.
fn version_label(version: &str) -> String {
    if !version.is_empty() && version.bytes().all(|byte| byte.is_ascii_digit()) {
        format!("v{version}")
    } else {
        version.to_owned()
    }
}

/// An alias from a `GetAlias` or `UpdateAlias` answer.
fn parse_routing(body: &str, action: &str) -> Result<Routing, Error> {
    serde_json::from_str(body).map_err(|error| {
        Error::failed(format!(
            "lambda:{action} answered an alias this step cannot read ({error}): {body}"
        ))
    })
}

impl Params {
    /// `/2015-03-31/functions/api`.
    fn function_path(&self) -> String {
        format!("{API}/functions/{}", self.function.trim())
    }

    /// `/2015-03-31/functions/api/aliases/live`.
    fn alias_path(&self) -> String {
        format!("{}/aliases/{}", self.function_path(), self.alias.trim())
    }

    /// `alias live of api`, for messages.
    fn subject(&self) -> String {
        format!("alias {} of {}", self.alias.trim(), self.function.trim())
    }

    /// `10% → 50% → 100%`.
    fn stages_text(&self) -> String {
        self.stages
            .iter()
            .map(|stage| format!("{stage}%"))
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// How long each stage below 100% is held.
    fn hold(&self) -> Duration {
        self.hold.map_or(Duration::ZERO, HumanDuration::get)
    }

    /// Whether a stage below 100% is held.
    fn holds(&self) -> bool {
        self.stages.iter().any(|stage| *stage < 100)
    }

    /// The alias as Lambda has it now.
    fn routing(&self) -> Result<Routing, Error> {
        let reply = aws::rest(
            "lambda",
            &self.region,
            "GetAlias",
            "GET",
            &self.alias_path(),
        )
        .send()?;
        parse_routing(&reply.body, "GetAlias")
    }

    /// Sets the alias to `wanted`, and checks that Lambda answered with it.
    fn set(&self, wanted: &Routing) -> Result<(), Error> {
        let reply = aws::rest(
            "lambda",
            &self.region,
            "UpdateAlias",
            "PUT",
            &self.alias_path(),
        )
        .json(&wanted.update_body())
        .send()?;
        let now = parse_routing(&reply.body, "UpdateAlias")?;
        if now.same(wanted) {
            Ok(())
        } else {
            Err(Error::failed(format!(
                "Lambda answered that {} is on {} after it was set to {}",
                self.subject(),
                now.describe(),
                wanted.describe()
            )))
        }
    }

    /// The function's configuration: of `$LATEST`, or of `qualifier` (a
    /// published version; Lambda's `ResourceNotFoundException` when there
    /// is no such version).
    fn configuration(&self, qualifier: Option<&str>) -> Result<Value, Error> {
        let mut request = aws::rest(
            "lambda",
            &self.region,
            "GetFunction",
            "GET",
            &self.function_path(),
        );
        if let Some(qualifier) = qualifier {
            request = request.query("Qualifier", qualifier);
        }
        let reply = request.send()?;
        let function: Value = serde_json::from_str(&reply.body).map_err(|error| {
            Error::failed(format!(
                "lambda:GetFunction of {} answered something other than JSON ({error})",
                self.function
            ))
        })?;
        Ok(function["Configuration"].clone())
    }

    /// Publishes `$LATEST` as a version; its number. When `$LATEST` has
    /// not changed since it was last published, Lambda (and moto) answers
    /// with that version instead of a new one.
    fn publish(&self) -> Result<String, Error> {
        let mut body = Map::new();
        if let Some(sha256) = &self.code_sha256 {
            body.insert("CodeSha256".into(), Value::from(sha256.trim()));
        }
        if let Some(description) = &self.description {
            body.insert("Description".into(), Value::from(description.as_str()));
        }
        let reply = aws::rest(
            "lambda",
            &self.region,
            "PublishVersion",
            "POST",
            &format!("{}/versions", self.function_path()),
        )
        .json(&Value::Object(body))
        .send()?;
        let published: Value = serde_json::from_str(&reply.body).unwrap_or_default();
        match published["Version"].as_str() {
            Some(version) if !version.is_empty() && version != "$LATEST" => Ok(version.to_owned()),
            _ => Err(Error::failed(format!(
                "lambda:PublishVersion of {} answered no version number: {}",
                self.function, reply.body
            ))),
        }
    }
}

/// Lambda splits an alias's traffic only between published versions: an
/// alias on `$LATEST` can only be moved all at once.
fn refuse_latest(params: &Params, routing: &Routing) -> Result<(), Error> {
    if routing.function_version == "$LATEST" && params.holds() {
        return Err(Error::failed(format!(
            "{} points at $LATEST, whose traffic Lambda does not split by weight: move it all at once with `stages = [100]`, or point it at a published version first",
            params.subject()
        )));
    }
    Ok(())
}

/// What the parameters' types cannot say: names given, a version that is
/// a published one, stages rising to 100, a hold for the stages below it.
fn check_params(params: &Params) -> Result<(), Error> {
    for (key, value, missing) in [
        ("region", &params.region, "give the function's region"),
        (
            "function",
            &params.function,
            "give the function's name or ARN",
        ),
        ("alias", &params.alias, "give the alias to move"),
    ] {
        if value.trim().is_empty() {
            return Err(Error::invalid_param(key, missing));
        }
        if value.contains('/') && !unresolved(value) {
            return Err(Error::invalid_param(
                key,
                format!("`{value}` has a `/`, which no Lambda name, ARN or region has"),
            ));
        }
    }
    if let Some(version) = &params.version
        && !unresolved(version)
        && (version.is_empty() || !version.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Err(Error::invalid_param(
            "version",
            format!(
                "`{version}` is not a published version: give its number, like \"7\" (Lambda splits an alias's traffic only between published versions)"
            ),
        ));
    }
    if params.version.is_some() {
        for (key, given) in [
            ("code_sha256", params.code_sha256.is_some()),
            ("description", params.description.is_some()),
        ] {
            if given {
                return Err(Error::invalid_param(
                    key,
                    "it is for the version the step publishes: leave it out with `version`, which names one published already",
                ));
            }
        }
    }
    let Some(last) = params.stages.last() else {
        return Err(Error::invalid_param(
            "stages",
            "give at least one stage, like [10, 50, 100]",
        ));
    };
    if let Some(index) = params
        .stages
        .iter()
        .position(|stage| !(1..=100).contains(stage))
    {
        return Err(Error::invalid_param(
            format!("stages[{index}]"),
            "a stage is the new version's share of the traffic in percent, 1 to 100",
        ));
    }
    for (index, pair) in params.stages.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            return Err(Error::invalid_param(
                format!("stages[{}]", index + 1),
                "stages must rise",
            ));
        }
    }
    if *last != 100 {
        return Err(Error::invalid_param(
            "stages",
            "the last stage is 100: the alias ends on the new version",
        ));
    }
    match params.hold {
        None if params.holds() => {
            return Err(Error::invalid_param(
                "hold",
                "give how long each stage below 100% is held, like `hold = \"5m\"`",
            ));
        }
        Some(hold) if params.holds() && hold.get().is_zero() => {
            return Err(Error::invalid_param(
                "hold",
                "a hold of 0 gives the new version more traffic before anything was watched: hold each stage for some time",
            ));
        }
        Some(hold) if hold.get() > MAX_HOLD => {
            return Err(Error::invalid_param(
                "hold",
                "a stage is held at most 24h: an alias split for longer is no canary any more",
            ));
        }
        _ => {}
    }
    if let Some(analysis) = &params.analysis {
        if !params.holds() {
            return Err(Error::invalid_param(
                "analysis",
                "the analysis runs while a stage below 100% is held, and there is none: add one (`stages = [10, 100]`) or leave `analysis` out",
            ));
        }
        analysis.check("analysis.")?;
    }
    Ok(())
}

/// What the shift keeps between its calls.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Shift {
    /// The alias before the step: where a breach puts it back.
    previous: Routing,
    /// The version the alias moves to.
    version: String,
    /// The stage being set or held, by its place in `stages`.
    position: usize,
    /// Whether that stage's routing is set and its hold begun.
    entered: bool,
    /// Its analysis so far, when it has checks.
    hold: Option<Hold>,
    /// When its hold ends (wall-clock milliseconds).
    until_ms: u64,
    /// The latest analysis values, for the summary.
    last_values: String,
}

/// How the first call begins: a shift to make, or nothing to do.
enum Start {
    /// The alias moves through the stages from here.
    Shift(Box<Shift>),
    /// The alias is on the version already.
    Done(Outcome),
}

/// The first call: reads and checkpoints the alias, then publishes (or
/// checks) the version to move it to. Nothing is changed but the new
/// version; a call redone after a crash publishes nothing new, as Lambda
/// answers an unchanged `$LATEST` with the version it published before.
fn start(params: &Params) -> Result<Start, Error> {
    let before = params.routing()?;
    refuse_latest(params, &before)?;
    // What to restore, durable before anything changes.
    runbook_sdk::log::checkpoint("previous", before.to_json())?;
    let version = match &params.version {
        Some(version) => {
            params.configuration(Some(version.as_str()))?;
            version.clone()
        }
        None => {
            if let Some(expected) = &params.code_sha256 {
                let latest = params.configuration(None)?;
                let found = latest["CodeSha256"].as_str().unwrap_or_default();
                if found != expected.trim() {
                    return Err(Error::failed(format!(
                        "$LATEST of {} has code sha256 {found}, not the {} the runbook names: nothing was published, and {} is unchanged",
                        params.function.trim(),
                        expected.trim(),
                        params.subject()
                    )));
                }
            }
            let version = params.publish()?;
            runbook_sdk::log::info(format!(
                "$LATEST of {} published as {}",
                params.function.trim(),
                version_label(&version)
            ));
            version
        }
    };
    let mut position = 0;
    if version == before.function_version {
        if !before.is_split() {
            return Ok(Start::Done(
                Outcome::new(format!(
                    "{} already on {}",
                    params.subject(),
                    version_label(&version)
                ))
                .output("previous", before.to_json())
                .output("version", version),
            ));
        }
        // The alias's own version already, with a share elsewhere: only
        // the last stage is left, which takes that share back.
        position = params.stages.len().saturating_sub(1);
    }
    Ok(Start::Shift(Box::new(Shift {
        previous: before,
        version,
        position,
        entered: false,
        hold: None,
        until_ms: 0,
        last_values: String::new(),
    })))
}

/// Puts the alias back as it was before the step, saying how that went.
fn put_back(params: &Params, previous: &Routing) -> String {
    match params.set(previous) {
        Ok(()) => format!("{} is back on {}", params.subject(), previous.describe()),
        Err(error) => format!(
            "putting {} back on {} FAILED: {}",
            params.subject(),
            previous.describe(),
            error.message()
        ),
    }
}

/// After the last stage: the outcome.
fn finish(params: &Params, shift: &Shift) -> Outcome {
    let mut summary = format!(
        "{} on {} (was {}) through {}",
        params.subject(),
        version_label(&shift.version),
        shift.previous.describe(),
        params.stages_text()
    );
    if !shift.last_values.is_empty() {
        summary.push_str(&format!("; last analysis: {}", shift.last_values));
    }
    Outcome::new(summary)
        .output("previous", shift.previous.to_json())
        .output("version", shift.version.clone())
}

impl Step for LambdaAlias {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws];
    /// HTTP only for an analysis that reads Prometheus (CloudWatch is
    /// read through `aws`).
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[Capability::Http];

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let target = params
            .version
            .as_deref()
            .map_or_else(|| "the version it publishes".to_owned(), version_label);
        let mut actions = Vec::new();
        if params.version.is_none() {
            let guard = params
                .code_sha256
                .as_deref()
                .map(|sha256| format!(", if its code is sha256 {}", sha256.trim()))
                .unwrap_or_default();
            actions.push(PlannedAction::write(format!(
                "publish a version of {} from $LATEST{guard}",
                params.function.trim()
            )));
        }
        let known = ![&params.region, &params.function, &params.alias]
            .iter()
            .any(|value| unresolved(value));
        let mut warnings = Vec::new();
        let from = if known {
            let now = params.routing()?;
            refuse_latest(params, &now)?;
            if let Some(version) = &params.version
                && *version == now.function_version
                && !now.is_split()
            {
                return Ok(vec![PlannedAction::read(format!(
                    "{} already on {}",
                    params.subject(),
                    version_label(version)
                ))]);
            }
            if now.is_split() {
                warnings.push(PlannedAction::read(format!(
                    "WARNING: {} already splits its traffic ({}), as a shift cut short leaves it: the first stage replaces that split",
                    params.subject(),
                    now.describe()
                )));
            }
            now.describe()
        } else {
            "the version it is on".to_owned()
        };
        let holding = match params.hold {
            Some(hold) if params.holds() => {
                format!(", holding {hold} at each stage below 100%")
            }
            _ => String::new(),
        };
        actions.push(PlannedAction::write(format!(
            "shift {} from {from} to {target} through {}{holding}",
            params.subject(),
            params.stages_text()
        )));
        actions.extend(warnings);
        if let Some(analysis) = &params.analysis {
            actions.push(PlannedAction::read(format!(
                "analysis ({}) {}",
                analysis.source(),
                analysis.describe()
            )));
        }
        Ok(actions)
    }

    /// One call per stage change or analysis round, with a journaled wait
    /// between them: a run killed during a long stage goes on from that
    /// stage, its analysis rounds kept.
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        let mut shift = match runbook_sdk::state::<Shift>(state.as_deref())? {
            Some(shift) => shift,
            None => match start(&params)? {
                Start::Shift(shift) => *shift,
                Start::Done(outcome) => return Ok(RunResult::Done(outcome)),
            },
        };
        let count = params.stages.len();
        let label = version_label(&shift.version);
        while let Some(stage) = params.stages.get(shift.position).copied() {
            let number = shift.position + 1;
            let fraction = number as f32 / count as f32;
            let at = format!("{} at {stage}% on {label}", params.subject());
            if !shift.entered {
                let wanted = if stage >= 100 {
                    Routing::on(&shift.version)
                } else {
                    Routing::split(&shift.previous.function_version, &shift.version, stage)
                };
                if let Err(error) = params.set(&wanted) {
                    if matches!(error, Error::Denied(_)) {
                        // Refused by the host: this call changed nothing,
                        // and putting the alias back would be refused too.
                        return Err(error);
                    }
                    let back = put_back(&params, &shift.previous);
                    return Err(Error::failed(format!(
                        "setting {at} failed: {}; {back}",
                        error.message()
                    )));
                }
                runbook_sdk::log::milestone(format!("{at} (stage {number}/{count})"));
                runbook_sdk::log::progress(format!("{stage}% on {label}"), Some(fraction));
                if stage >= 100 {
                    break;
                }
                let now = runbook_analysis::now_ms();
                shift.entered = true;
                shift.hold = params.analysis.as_ref().map(|_| Hold::new(now));
                shift.until_ms = now
                    .saturating_add(u64::try_from(params.hold().as_millis()).unwrap_or(u64::MAX));
            }
            let now = runbook_analysis::now_ms();
            let wait = match (&params.analysis, &mut shift.hold) {
                (Some(analysis), Some(hold)) => {
                    let next = hold.round(analysis, params.hold(), now, |round| {
                        runbook_sdk::log::progress(
                            format!("{stage}% on {label} · {}", round.summary()),
                            Some(fraction),
                        );
                    });
                    shift.last_values = hold.summary();
                    match next {
                        Ok(Next::After(wait)) => Some(wait),
                        Ok(Next::Passed) => None,
                        Err(Verdict::Breached(reason)) => {
                            let back = put_back(&params, &shift.previous);
                            return Err(Error::failed(format!("{at}: {reason}; {back}")));
                        }
                        Err(Verdict::Error(error)) => {
                            let back = put_back(&params, &shift.previous);
                            return Err(Error::failed(format!(
                                "{at} interrupted: {}; {back}",
                                error.message()
                            )));
                        }
                    }
                }
                _ => (now < shift.until_ms).then(|| Duration::from_millis(shift.until_ms - now)),
            };
            if let Some(wait) = wait {
                let status = match shift.hold.as_ref().map(|hold| hold.rounds) {
                    Some(rounds) => format!(
                        "{stage}% on {label} (stage {number}/{count}), analysis round {rounds}: {}",
                        shift.last_values
                    ),
                    None => format!("{stage}% on {label} (stage {number}/{count}), holding"),
                };
                return Ok(RunResult::Wait(Wait::after(wait, &shift, status)));
            }
            shift.position += 1;
            shift.entered = false;
            shift.hold = None;
        }
        Ok(RunResult::Done(finish(&params, &shift)))
    }

    /// Puts the alias back on the version and routing the run found
    /// (`previous`, checkpointed before any change), whatever it is on now.
    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let Some(recorded) = outputs.get("previous").filter(|text| !text.is_empty()) else {
            return Ok("nothing to undo: the run recorded no alias, so it changed none".to_owned());
        };
        let previous: Routing = serde_json::from_str(recorded).map_err(|error| {
            Error::failed(format!(
                "cannot read the alias the run recorded ({error}); set {} back by hand to {recorded}",
                params.subject()
            ))
        })?;
        if params.routing()?.same(&previous) {
            return Ok(format!(
                "{} already on {}",
                params.subject(),
                previous.describe()
            ));
        }
        params.set(&previous)?;
        Ok(format!(
            "{} back on {}",
            params.subject(),
            previous.describe()
        ))
    }
}

runbook_sdk::export_step!(LambdaAlias);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(with: Value) -> Params {
        let mut base = serde_json::json!({
            "region": "us-east-1",
            "function": "api",
            "alias": "live",
            "stages": [10, 50, 100],
            "hold": "5m",
        });
        for (key, value) in with.as_object().unwrap() {
            base[key] = value.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn refusal(with: Value) -> String {
        check_params(&params(with)).unwrap_err().message()
    }

    #[test]
    fn an_alias_is_read_from_lambdas_answer_and_kept_in_its_shape() {
        let answer = r#"{"AliasArn": "arn:aws:lambda:us-east-1:123456789012:function:api:live", "Description": "", "FunctionVersion": "1", "Name": "live", "RevisionId": "e2f1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}}}"#;
        let found = parse_routing(answer, "GetAlias").unwrap();
        assert_eq!(found, Routing::split("1", "2", 25));
        assert_eq!(found.describe(), "v1 with 25% on v2");
        assert_eq!(
            found.to_json(),
            r#"{"FunctionVersion":"1","RoutingConfig":{"AdditionalVersionWeights":{"2":0.25}}}"#
        );
        let unsplit = parse_routing(
            r#"{"FunctionVersion": "1", "RoutingConfig": null}"#,
            "GetAlias",
        )
        .unwrap();
        assert_eq!(unsplit.describe(), "v1");
        assert_eq!(
            unsplit.to_json(),
            r#"{"FunctionVersion":"1","RoutingConfig":null}"#
        );
        assert!(parse_routing("{}", "GetAlias").is_err());
    }

    #[test]
    fn no_routing_configuration_and_an_empty_one_route_alike() {
        let empty = parse_routing(
            r#"{"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {}}}"#,
            "UpdateAlias",
        )
        .unwrap();
        assert!(empty.same(&Routing::on("2")));
        assert!(!empty.is_split());
        assert!(!Routing::on("1").same(&Routing::on("2")));
        assert!(!Routing::split("1", "2", 10).same(&Routing::split("1", "2", 50)));
        assert!(Routing::split("1", "2", 10).is_split());
    }

    #[test]
    fn every_update_sends_the_weights_so_that_a_split_is_cleared() {
        assert_eq!(
            Routing::on("2").update_body(),
            serde_json::json!({"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {}}})
        );
        assert_eq!(
            Routing::split("1", "2", 10).update_body(),
            serde_json::json!({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}}})
        );
        assert_eq!(Routing::split("3", "4", 10).describe(), "v3 with 10% on v4");
        assert_eq!(version_label("$LATEST"), "$LATEST");
    }

    #[test]
    fn stages_rise_to_100_and_are_held() {
        assert!(check_params(&params(serde_json::json!({}))).is_ok());
        assert!(check_params(&params(serde_json::json!({"stages": [100], "hold": null}))).is_ok());
        assert_eq!(
            refusal(serde_json::json!({"stages": [50, 10, 100]})),
            "stages[1]: stages must rise"
        );
        assert!(refusal(serde_json::json!({"stages": [10, 50]})).contains("the last stage is 100"));
        assert!(refusal(serde_json::json!({"stages": [0, 100]})).starts_with("stages[0]:"));
        assert!(refusal(serde_json::json!({"stages": []})).starts_with("stages:"));
        assert!(refusal(serde_json::json!({"hold": null})).starts_with("hold:"));
        assert!(refusal(serde_json::json!({"hold": "0s"})).starts_with("hold:"));
        assert!(refusal(serde_json::json!({"hold": "25h"})).contains("at most 24h"));
    }

    #[test]
    fn a_version_is_a_published_one_and_goes_without_publishing_options() {
        assert!(check_params(&params(serde_json::json!({"version": "7"}))).is_ok());
        assert!(
            check_params(&params(
                serde_json::json!({"version": "<steps.build.outputs.version>"})
            ))
            .is_ok()
        );
        assert!(refusal(serde_json::json!({"version": "$LATEST"})).starts_with("version:"));
        assert!(
            refusal(serde_json::json!({"version": "7", "code_sha256": "abc="}))
                .starts_with("code_sha256:")
        );
        assert!(refusal(serde_json::json!({"function": " "})).starts_with("function:"));
    }
}
