//! `canary-shift`: moves traffic from stable to canary in stages (5% →
//! 10% → 25% → 50% → 100%), holding each stage while Prometheus checks
//! run. On a breach it sends all traffic back to stable and fails, so the
//! runbook's rollback runs; `rollback` always returns traffic to stable.
//! Each stage change and analysis round is one call, with a journaled wait
//! between them, so a long canary survives the process that started it.

mod router;

use router::Router;
use runbook_analysis::{Analysis, Hold, Next, Verdict};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    RunResult, Serialize, Step, Wait,
};

struct CanaryShift;

/// Where traffic is split, the stages, and what must hold at each.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// Istio, Gateway API or Service (blue/green).
    router: Router,
    /// The canary's share at each stage, in percent, rising to 100.
    #[serde(default = "default_stages")]
    stages: Vec<u32>,
    /// How long each stage below 100% is held (and analysed).
    #[serde(default)]
    hold: Option<HumanDuration>,
    /// A hold per stage below 100%, in order, instead of `hold` (the seeds'
    /// "5 minutes at 5%, 10 at 10%, 15 at 25%, 20 at 50%").
    #[serde(default)]
    holds: Vec<HumanDuration>,
    /// The checks run during each hold; none means holding only.
    #[serde(default)]
    analysis: Option<Analysis>,
    /// After the last stage: `promote` (default) leaves its weights;
    /// `stable` sends all traffic back to stable, for runbooks that then
    /// update the stable workload to the version the canary proved.
    #[serde(default)]
    finish: Finish,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "kebab-case")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Finish {
    #[default]
    Promote,
    Stable,
}

fn default_stages() -> Vec<u32> {
    vec![5, 10, 25, 50, 100]
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.stages.is_empty() {
        return Err(Error::invalid_param(
            "stages",
            "give at least one stage, like [10, 50, 100]",
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
    if params.stages.contains(&0) && params.stages != [0] {
        return Err(Error::invalid_param(
            "stages",
            "0 sends all traffic home to stable: use `stages = [0]` alone, once the stable workload runs the version the canary proved",
        ));
    }
    if params.stages.iter().any(|stage| *stage > 100) {
        return Err(Error::invalid_param(
            "stages",
            "a stage is a percentage, at most 100",
        ));
    }
    if params.router.all_or_nothing() && params.stages != [100] && params.stages != [0] {
        return Err(Error::invalid_param(
            "stages",
            "a Service router switches all traffic at once: use `stages = [100]` (blue/green), or `[0]` to send it home to stable",
        ));
    }
    let (stable, canary) = params.router.names();
    if stable == canary && !runbook_sdk::unresolved(canary) {
        return Err(Error::invalid_param(
            "router.canary",
            format!(
                "`canary` is `{canary}`, as `stable` is: the new version would go where the traffic already is; name the other colour (for blue/green, compute it from the live one with a `k8s-read` step)"
            ),
        ));
    }
    if let Some(analysis) = &params.analysis {
        analysis.check("analysis.")?;
    }
    let held = params
        .stages
        .iter()
        .filter(|stage| (1..100).contains(*stage))
        .count();
    if held > 0 && params.hold.is_none() && params.holds.is_empty() {
        return Err(Error::invalid_param(
            "hold",
            "give how long each stage below 100% is held, like `hold = \"5m\"`",
        ));
    }
    if !params.holds.is_empty() && params.holds.len() != held {
        return Err(Error::invalid_param(
            "holds",
            format!("give one hold per stage below 100% ({held}), or use `hold`"),
        ));
    }
    Ok(())
}

/// Sends all traffic back to stable, saying how that went.
fn back_to_stable(router: &Router) -> String {
    match router.set(0) {
        Ok(()) => "all traffic is back on stable".into(),
        Err(error) => format!("returning traffic to stable FAILED: {}", error.message()),
    }
}

/// The plan of a Service router (blue/green): from the colour it serves
/// now, read from the cluster, to the new one; refused as the run would
/// be when the new colour already serves.
fn plan_switch(params: &Params) -> Result<Vec<PlannedAction>, Error> {
    let router = &params.router;
    let (stable, canary) = router.names();
    let live = router.live_colour()?.unwrap_or_default();
    let object = router.object();
    if params.stages == [0] {
        return Ok(vec![PlannedAction::write(format!(
            "send all traffic in {object} home to stable `{stable}` (`{live}` serves now)"
        ))]);
    }
    if runbook_sdk::unresolved(canary) {
        return Ok(vec![PlannedAction::write(format!(
            "switch {object} from `{live}` (serving now) to {canary}, known when the run gets here; refused then if that colour already serves"
        ))]);
    }
    if live == canary {
        return Err(router.live_target_refusal());
    }
    Ok(vec![PlannedAction::write(format!(
        "switch {object} from `{live}` to `{canary}`, all traffic at once"
    ))])
}

impl Step for CanaryShift {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Kube];
    // Only with `analysis` (HTTP for Prometheus, AWS for CloudWatch): a
    // blue/green switch needs neither.
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[Capability::Http, Capability::Aws];

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        if params.router.all_or_nothing() {
            return plan_switch(params);
        }
        let now = params.router.canary_weight()?;
        if params.stages == [0] {
            return Ok(vec![PlannedAction::write(format!(
                "send all traffic in {} home to stable (the canary has {now}%)",
                params.router.object()
            ))]);
        }
        let stages: Vec<String> = params
            .stages
            .iter()
            .map(|stage| format!("{stage}%"))
            .collect();
        let mut actions = vec![PlannedAction::write(format!(
            "shift traffic in {} from canary {now}% through {}{}",
            params.router.object(),
            stages.join(" → "),
            params
                .hold
                .map(|hold| format!(", holding {hold} at each stage below 100%"))
                .unwrap_or_default()
        ))];
        if now > 0 && !params.router.all_or_nothing() {
            actions.push(PlannedAction::read(format!(
                "WARNING: the canary already serves {now}% of the traffic (a run left it there): whatever the canary workload runs reaches those users before any analysis; send traffic home first with a `stages = [0]` step"
            )));
        }
        if let Some(analysis) = &params.analysis {
            actions.push(PlannedAction::read(format!(
                "analysis {}",
                analysis.describe()
            )));
        }
        Ok(actions)
    }

    /// One call per stage change or analysis round, with a journaled
    /// wait between them: a run killed during a long stage goes on from
    /// that stage, its analysis rounds kept.
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        let router = &params.router;
        let mut shift = match runbook_sdk::state::<Shift>(state.as_deref())? {
            Some(shift) => shift,
            None => match start(&params)? {
                Ok(shift) => shift,
                Err(done) => return Ok(RunResult::Done(done)),
            },
        };
        let count = params.stages.len();
        while let Some(stage) = params.stages.get(shift.position).copied() {
            let number = shift.position + 1;
            let fraction = number as f32 / count as f32;
            if !shift.entered {
                if let Err(error) = router.set(stage) {
                    let back = back_to_stable(router);
                    return Err(Error::failed(format!(
                        "setting canary {stage}% failed: {}; {back}",
                        error.message()
                    )));
                }
                runbook_sdk::log::info(format!("canary at {stage}% in {}", router.object()));
                runbook_sdk::log::milestone(format!(
                    "canary at {stage}% in {} (stage {number}/{count})",
                    router.object()
                ));
                runbook_sdk::log::progress(format!("canary {stage}%"), Some(fraction));
                if stage >= 100 {
                    break;
                }
                let now = runbook_analysis::now_ms();
                shift.entered = true;
                shift.hold = params.analysis.as_ref().map(|_| Hold::new(now));
                shift.until_ms = now.saturating_add(
                    u64::try_from(hold_of(&params, shift.position).as_millis()).unwrap_or(u64::MAX),
                );
            }
            let now = runbook_analysis::now_ms();
            let wait = match (&params.analysis, &mut shift.hold) {
                (Some(analysis), Some(hold)) => {
                    let next =
                        hold.round(analysis, hold_of(&params, shift.position), now, |round| {
                            runbook_sdk::log::progress(
                                format!("canary {stage}% · {}", round.summary()),
                                Some(fraction),
                            );
                        });
                    shift.last_values = hold.summary();
                    match next {
                        Ok(Next::After(wait)) => Some(wait),
                        Ok(Next::Passed) => None,
                        Err(Verdict::Breached(reason)) => {
                            let back = back_to_stable(router);
                            return Err(Error::failed(format!(
                                "canary at {stage}%: {reason}; {back}"
                            )));
                        }
                        Err(Verdict::Error(error)) => {
                            let back = back_to_stable(router);
                            return Err(Error::failed(format!(
                                "canary at {stage}% interrupted: {}; {back}",
                                error.message()
                            )));
                        }
                    }
                }
                _ => (now < shift.until_ms)
                    .then(|| std::time::Duration::from_millis(shift.until_ms - now)),
            };
            if let Some(wait) = wait {
                let rounds = shift.hold.as_ref().map(|hold| hold.rounds);
                let status = match rounds {
                    Some(rounds) => format!(
                        "canary {stage}% (stage {number}/{count}), analysis round {rounds}: {}",
                        shift.last_values
                    ),
                    None => format!("canary {stage}% (stage {number}/{count}), holding"),
                };
                return Ok(RunResult::Wait(Wait::after(wait, &shift, status)));
            }
            shift.position += 1;
            shift.entered = false;
            shift.hold = None;
        }
        finish(&params, &shift).map(RunResult::Done)
    }

    fn rollback(params: Params, _outputs: &Outputs) -> Result<String, Error> {
        params.router.set(0)?;
        Ok(format!(
            "all traffic in {} is back on stable",
            params.router.object()
        ))
    }
}

/// What the shift keeps between its calls.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Shift {
    /// The canary's weight before the step.
    initial: u32,
    /// The stage being set or held, by its place in `stages`.
    position: usize,
    /// Whether that stage's weight is set and its hold begun.
    entered: bool,
    /// Its analysis so far, when it has checks.
    hold: Option<Hold>,
    /// When its hold ends (wall-clock milliseconds).
    until_ms: u64,
    /// The latest analysis values, for the summary.
    last_values: String,
}

/// The first call: the weight now, and the refusals that come before any
/// change; `Err` when the step is done at once (`stages = [0]`).
fn start(params: &Params) -> Result<Result<Shift, Outcome>, Error> {
    let router = &params.router;
    let initial = router.canary_weight()?;
    // Blue/green: switching to the colour that already serves would put a
    // version no one checked in front of every user (it was deployed onto
    // the live colour); sending traffic home is fine.
    if router.all_or_nothing() && initial == 100 && params.stages != [0] {
        return Err(router.live_target_refusal());
    }
    if params.stages == [0] {
        router.set(0)?;
        return Ok(Err(Outcome::new(format!(
            "all traffic in {} is home on stable (the canary had {initial}%)",
            router.object()
        ))
        .output("canary_weight", "0")
        .output("initial_canary_weight", initial.to_string())));
    }
    Ok(Ok(Shift {
        initial,
        position: 0,
        entered: false,
        hold: None,
        until_ms: 0,
        last_values: String::new(),
    }))
}

/// How long the stage at `position` is held.
fn hold_of(params: &Params, position: usize) -> std::time::Duration {
    params
        .holds
        .get(position)
        .copied()
        .or(params.hold)
        .map_or(std::time::Duration::ZERO, HumanDuration::get)
}

/// After the last stage: traffic where `finish` says, and the outcome.
fn finish(params: &Params, shift: &Shift) -> Result<Outcome, Error> {
    let count = params.stages.len();
    let mut last = params.stages.last().copied().unwrap_or(0);
    if params.finish == Finish::Stable {
        params.router.set(0)?;
        last = 0;
    }
    let mut summary = format!(
        "canary {}% → {}% in {count} {}",
        shift.initial,
        params.stages.last().copied().unwrap_or(0),
        if count == 1 { "stage" } else { "stages" }
    );
    if params.finish == Finish::Stable {
        summary.push_str(", then all traffic back to stable");
    }
    if !shift.last_values.is_empty() {
        summary.push_str(&format!("; last analysis: {}", shift.last_values));
    }
    Ok(Outcome::new(summary)
        .output("canary_weight", last.to_string())
        .output("initial_canary_weight", shift.initial.to_string()))
}

runbook_sdk::export_step!(CanaryShift);
