//! Run notifications (`[notify]`): which moments of the run are announced
//! and in what words (`Announcer`, pure), when a holding update is due
//! (`next_holding_update`), and sending each announcement to every
//! target, each call in its own sandbox with only the target's grants. An
//! announcement never fails or holds up the run: it goes out beside the
//! steps, a target that fails leaves a warning, and what is left when the
//! run ends goes out before `Executor::execute` returns.

use super::Executor;
use super::render::{RUN_KEY, Scope, StepOutcomes, StepOutputs, Unknown};
use crate::events::{Event, EventKind, EventWriter, Level, Status};
use crate::journal::{NotifiedRecord, WaitRecord};
use crate::runbook::{Moment, Notify, Plan, PlannedTarget, is_notify_target};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// Longest summary or message an announcement quotes, in characters: one
/// line in a channel, not a log.
const MAX_QUOTED: usize = 300;

/// What the targets are told of one moment.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Notice {
    /// Which moment.
    pub(super) moment: Moment,
    /// The step it is about, if any: the journal's `notified` carries it.
    pub(super) step: Option<String>,
    /// `started`, `running`, `failed`, `rolling_back`, `succeeded`,
    /// `rolled_back`, `cancelled` or `waiting`.
    pub(super) status: &'static str,
    /// One line, written by the host.
    pub(super) text: String,
    /// The step that failed, or that the run waits at, when there is one.
    pub(super) failed_step: Option<String>,
    /// How the run ended, for `${{ run.status }}` in a target's `with`
    /// (the end only; `running` otherwise).
    pub(super) run_status: Option<Status>,
}

impl Notice {
    /// An announcement with every key the host may add, to check a
    /// target's parameters before the run.
    pub(super) fn example(plan: &Plan) -> Self {
        Notice {
            moment: Moment::Failure,
            step: None,
            status: "failed",
            text: format!("{}: <step> failed: <why>", plan.runbook.name),
            failed_step: Some("<step>".to_owned()),
            run_status: None,
        }
    }
}

/// Adds to a target's rendered `with` the keys the host writes, unless
/// `with` sets them: `text`, `status`, `run`, `runbook`, `operator`,
/// `environment` (when the run has one) and `failed_step` (when there is
/// one). A plugin used as a target must accept them.
pub(super) fn add_host_keys(params: &mut serde_json::Value, plan: &Plan, notice: &Notice) {
    let serde_json::Value::Object(map) = params else {
        return;
    };
    let mut keys = vec![
        ("text", notice.text.clone()),
        ("status", notice.status.to_owned()),
        ("run", plan.run_id.clone()),
        ("runbook", plan.runbook.name.clone()),
        ("operator", plan.operator.clone()),
    ];
    if let Some(environment) = &plan.environment {
        keys.push(("environment", environment.clone()));
    }
    if let Some(step) = &notice.failed_step {
        keys.push(("failed_step", step.clone()));
    }
    for (key, value) in keys {
        map.entry(key).or_insert(serde_json::Value::String(value));
    }
}

/// When the next holding update is due: `every` after the last one, in
/// whichever process of the run sent it, or after the hold began when none
/// was sent.
pub(super) fn next_holding_update(
    last: Option<Timestamp>,
    holding_since: Timestamp,
    every: Duration,
) -> Timestamp {
    let every = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::MAX);
    last.unwrap_or(holding_since)
        .checked_add(every)
        .unwrap_or(Timestamp::MAX)
}

/// Hands the events announcements are made of to the announcing task. A
/// writer on the run's event sink, so that it sees what every step emits
/// (a milestone comes from inside a plugin call), already redacted; the
/// events of the targets themselves are left out.
pub(super) struct Tap {
    sender: UnboundedSender<Event>,
}

impl Tap {
    /// A tap that hands events to `sender`.
    pub(super) fn new(sender: UnboundedSender<Event>) -> Self {
        Tap { sender }
    }
}

impl EventWriter for Tap {
    fn write(&mut self, event: &Event, _line: &str) {
        let from_target = event
            .step
            .as_ref()
            .is_some_and(|step| is_notify_target(&step.0));
        let wanted = matches!(
            event.kind,
            EventKind::Milestone { .. }
                | EventKind::StepWaiting { .. }
                | EventKind::StepFinished { .. }
                | EventKind::RollbackStarted { .. }
                | EventKind::DecisionNeeded { .. }
                | EventKind::RunFinished { .. }
        );
        if wanted && !from_target {
            // The announcing task is gone once the run ended: nothing to do.
            let _ = self.sender.send(event.clone());
        }
    }
}

/// A step that waits between its rounds, as a holding update tells it.
#[derive(Debug, Clone)]
struct Hold {
    round: u32,
    status: String,
    wake_at: String,
    /// When this process saw it begin to hold.
    since: Timestamp,
}

/// Decides what is announced, and in what words, from the run's events
/// and the time: pure, so that a test drives it.
#[derive(Debug)]
pub(super) struct Announcer {
    on: BTreeSet<Moment>,
    every: Option<Duration>,
    /// `RUNBOOK ENVIRONMENT`: every text but the start's begins with it.
    subject: String,
    /// The start's text, until it is announced; `None` when an earlier
    /// process of the run announced it.
    start: Option<String>,
    /// The first step that failed.
    failed_step: Option<String>,
    /// What each finished step said, on one line.
    summaries: BTreeMap<String, String>,
    /// The steps that wait between their rounds now.
    holding: BTreeMap<String, Hold>,
    /// When the last holding update went out.
    last_holding: Option<Timestamp>,
    /// The step the run was last announced waiting at (`""`: the run).
    waiting_announced: Option<String>,
}

impl Announcer {
    /// The announcer of `plan`'s `notify`, after what earlier processes of
    /// the run announced.
    pub(super) fn new(plan: &Plan, notify: &Notify, notified: &NotifiedRecord) -> Self {
        let name = &plan.runbook.name;
        let subject = match &plan.environment {
            Some(environment) => format!("{name} {environment}"),
            None => name.clone(),
        };
        let started_in = plan
            .environment
            .as_ref()
            .map(|environment| format!(" in {environment}"))
            .unwrap_or_default();
        let start = (notify.announces(Moment::Start) && !notified.started).then(|| {
            format!(
                "{name}: started{started_in} by {} (run {})",
                plan.operator, plan.run_id
            )
        });
        Announcer {
            on: notify.on.clone(),
            every: notify.every,
            subject,
            start,
            failed_step: None,
            summaries: BTreeMap::new(),
            holding: BTreeMap::new(),
            last_holding: notified
                .last_holding
                .as_deref()
                .and_then(|time| time.parse().ok()),
            waiting_announced: notified.waiting.clone(),
        }
    }

    /// The start's announcement, once.
    pub(super) fn start(&mut self) -> Option<Notice> {
        let text = self.start.take()?;
        Some(Notice {
            moment: Moment::Start,
            step: None,
            status: "started",
            text,
            failed_step: None,
            run_status: None,
        })
    }

    /// A step that an earlier process of the run left waiting between its
    /// rounds: it holds from `now` until it finishes.
    pub(super) fn holds(&mut self, step: &str, wait: &WaitRecord, now: Timestamp) {
        let hold = Hold {
            round: wait.round,
            status: wait.status.clone(),
            wake_at: wait.wake_at.clone(),
            since: now,
        };
        self.holding.insert(step.to_owned(), hold);
    }

    /// What `event`, seen at `now`, announces, if anything; it also notes
    /// what later announcements need (the steps that hold, what steps said).
    pub(super) fn observe(&mut self, event: &Event, now: Timestamp) -> Option<Notice> {
        let step = event.step.as_ref().map(|id| id.0.clone());
        match &event.kind {
            EventKind::Milestone { message } => {
                let text = format!(
                    "{}: {}",
                    step.as_deref().unwrap_or("run"),
                    one_line(message)
                );
                self.notice(Moment::Stage, step, "running", text, None)
            }
            EventKind::StepWaiting {
                round,
                status,
                wake_at,
                parked,
                ..
            } => {
                let step = step?;
                if *parked {
                    // This process ends here: it holds nothing.
                    self.holding.remove(&step);
                    return None;
                }
                let since = self.holding.get(&step).map_or(now, |hold| hold.since);
                let hold = Hold {
                    round: *round,
                    status: one_line(status),
                    wake_at: wake_at.clone(),
                    since,
                };
                self.holding.insert(step, hold);
                None
            }
            EventKind::StepFinished {
                status, summary, ..
            } => {
                let step = step?;
                self.holding.remove(&step);
                let summary = one_line(summary);
                self.summaries.insert(step.clone(), summary.clone());
                if !matches!(status, Status::Failed | Status::Denied) {
                    return None;
                }
                self.failed_step.get_or_insert_with(|| step.clone());
                let text = format!("{step} failed: {summary}");
                self.notice(
                    Moment::Failure,
                    Some(step.clone()),
                    "failed",
                    text,
                    Some(step),
                )
            }
            EventKind::DecisionNeeded { failure, .. } => {
                // Why the run is about to wait, better said than by the
                // step's failure alone.
                let why = format!(
                    "it failed ({}); a person decides: retry, skip, rollback or abort",
                    one_line(failure)
                );
                self.summaries.insert(step?, why);
                None
            }
            EventKind::RollbackStarted { steps, .. } => {
                let text = format!(
                    "rolling back {} step{}: {}",
                    steps.len(),
                    if steps.len() == 1 { "" } else { "s" },
                    steps.join(" ← ")
                );
                let failed_step = self.failed_step.clone();
                self.notice(Moment::Rollback, None, "rolling_back", text, failed_step)
            }
            EventKind::RunFinished {
                status,
                elapsed_ms,
                failed_step,
            } => {
                self.holding.clear();
                if *status == Status::Waiting {
                    return self.waiting(failed_step.as_deref());
                }
                let elapsed = elapsed(*elapsed_ms);
                let (word, text) = match (status, failed_step) {
                    (Status::Succeeded, _) => ("succeeded", format!("succeeded in {elapsed}")),
                    (Status::RolledBack, _) => ("rolled_back", format!("rolled back in {elapsed}")),
                    (Status::Cancelled, _) => ("cancelled", format!("cancelled after {elapsed}")),
                    (_, Some(step)) => ("failed", format!("failed at step {step} after {elapsed}")),
                    (_, None) => ("failed", format!("failed after {elapsed}")),
                };
                let failed_step = failed_step.clone().or_else(|| self.failed_step.clone());
                let mut notice = self.notice(Moment::End, None, word, text, failed_step)?;
                notice.run_status = Some(*status);
                Some(notice)
            }
            _ => None,
        }
    }

    /// When the next holding update is due, while a step holds and
    /// `[notify]` asks for them.
    pub(super) fn next_holding(&self) -> Option<Timestamp> {
        let every = self.every.filter(|_| self.on.contains(&Moment::Holding))?;
        let since = self.holding.values().map(|hold| hold.since).min()?;
        Some(next_holding_update(self.last_holding, since, every))
    }

    /// The holding updates due at `now`: one for each step that holds.
    pub(super) fn holding_updates(&mut self, now: Timestamp) -> Vec<Notice> {
        if self.next_holding().is_none_or(|due| due > now) {
            return Vec::new();
        }
        self.last_holding = Some(now);
        let holds: Vec<(String, Hold)> = self
            .holding
            .iter()
            .map(|(step, hold)| (step.clone(), hold.clone()))
            .collect();
        let mut notices = Vec::new();
        for (step, hold) in holds {
            let next = hold
                .wake_at
                .parse::<Timestamp>()
                .map(|wake| wake.strftime("%H:%M UTC").to_string())
                .unwrap_or_else(|_| hold.wake_at.clone());
            let text = format!(
                "{step} holding: {} (round {}), next round at {next}",
                hold.status, hold.round
            );
            notices.extend(self.notice(Moment::Holding, Some(step), "running", text, None));
        }
        notices
    }

    /// The run stops waiting at `step` (`None`: before its steps): said
    /// once, until something else is announced.
    fn waiting(&mut self, step: Option<&str>) -> Option<Notice> {
        let key = step.unwrap_or_default().to_owned();
        if self.waiting_announced.as_deref() == Some(key.as_str()) {
            return None;
        }
        let why = step
            .and_then(|step| self.summaries.get(step))
            .filter(|why| !why.is_empty())
            .map(|why| format!(": {why}"))
            .unwrap_or_default();
        let text = match step {
            Some(step) => format!("waiting at step {step}{why}"),
            None => format!("waiting{why}"),
        };
        let step = step.map(str::to_owned);
        let notice = self.notice(Moment::Waiting, step.clone(), "waiting", text, step)?;
        self.waiting_announced = Some(key);
        Some(notice)
    }

    /// The announcement of `moment`, when `[notify]` announces it.
    fn notice(
        &mut self,
        moment: Moment,
        step: Option<String>,
        status: &'static str,
        text: String,
        failed_step: Option<String>,
    ) -> Option<Notice> {
        if !self.on.contains(&moment) {
            return None;
        }
        // As the journal reads it back: a wait is announced again once
        // something other than a holding update was.
        if !matches!(moment, Moment::Holding | Moment::Waiting) {
            self.waiting_announced = None;
        }
        Some(Notice {
            moment,
            step,
            status,
            text: format!("{}: {text}", self.subject),
            failed_step,
            run_status: None,
        })
    }
}

/// `text` on one line of at most `MAX_QUOTED` characters.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_QUOTED {
        return line;
    }
    let cut: String = line.chars().take(MAX_QUOTED).collect();
    format!("{cut}…")
}

/// A run's duration as an announcement says it: `12s`, `4m12s`, `2h5m`.
fn elapsed(milliseconds: f64) -> String {
    let total = Duration::try_from_secs_f64(milliseconds / 1000.0)
        .unwrap_or_default()
        .as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m"),
    }
}

/// How long from now until `at`; nothing when it is past.
fn until(at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
}

/// Sleeps `pause`, or forever without one.
async fn sleep_or_never(pause: Option<Duration>) {
    match pause {
        Some(pause) => tokio::time::sleep(pause).await,
        None => std::future::pending().await,
    }
}

impl Executor<'_> {
    /// Announces the run's moments to the targets of `notify`, from the
    /// events `events` hands over, until `ended` fires; then what is left,
    /// before it returns. Holding updates go out every `every` while a
    /// step holds. Runs beside the steps: nothing here fails the run.
    pub(super) async fn announce(
        &self,
        plan: &Plan,
        notify: &Notify,
        mut events: UnboundedReceiver<Event>,
        ended: &CancellationToken,
    ) {
        let mut announcer = Announcer::new(plan, notify, &self.notified);
        // Steps an earlier process left waiting between rounds hold until
        // they are called again (a rollback to carry out runs none).
        if self.rollback.is_none() {
            let now = Timestamp::now();
            for (step, wait) in &self.waits {
                let finished = self
                    .recorded
                    .get(step)
                    .is_some_and(|recorded| recorded.status != Status::Waiting);
                let planned = plan.steps.iter().any(|planned| planned.id.0 == *step);
                if planned && !finished {
                    announcer.holds(step, wait, now);
                }
            }
        }
        if let Some(notice) = announcer.start() {
            self.send(plan, &notice).await;
        }
        loop {
            let pause = announcer.next_holding().map(until);
            tokio::select! {
                biased;
                event = events.recv() => {
                    let Some(event) = event else { break };
                    if let Some(notice) = announcer.observe(&event, Timestamp::now()) {
                        self.send(plan, &notice).await;
                    }
                }
                () = ended.cancelled() => break,
                () = sleep_or_never(pause) => {
                    for notice in announcer.holding_updates(Timestamp::now()) {
                        self.send(plan, &notice).await;
                    }
                }
            }
        }
        // The run is over: what it left to announce goes out now, each call
        // bounded by its target's timeout.
        while let Ok(event) = events.try_recv() {
            if let Some(notice) = announcer.observe(&event, Timestamp::now()) {
                self.send(plan, &notice).await;
            }
        }
    }

    /// Sends `notice` to every target, one after another, and journals
    /// that it went out. A target that fails, is denied or times out leaves
    /// a warning; the run goes on.
    async fn send(&self, plan: &Plan, notice: &Notice) {
        let mut ok = 0;
        for planned in &plan.targets {
            match self.send_to(plan, planned, notice).await {
                Ok(()) => ok += 1,
                Err(error) => {
                    let target = plan.target(planned);
                    self.access.events.emit_for(
                        Some(&planned.id),
                        EventKind::Log {
                            level: Level::Warn,
                            message: format!(
                                "notify target {} ({}): {error}",
                                target.index, target.plugin
                            ),
                        },
                    );
                }
            }
        }
        let step = notice.step.clone().map(crate::grant::StepId);
        self.access.events.emit_for(
            step.as_ref(),
            EventKind::Notified {
                moment: notice.moment.as_str().to_owned(),
                targets: plan.targets.len(),
                ok,
            },
        );
    }

    /// Calls one target's plugin with `notice`, as a step's `run` is
    /// called: a fresh sandbox with only the target's grants, its timeout,
    /// its memory cap; only a second interrupt stops it, as an `always`
    /// step.
    async fn send_to(
        &self,
        plan: &Plan,
        planned: &PlannedTarget,
        notice: &Notice,
    ) -> Result<(), String> {
        let target = plan.target(planned);
        let plugin = self
            .plugins
            .get(&target.plugin)
            .ok_or_else(|| format!("its plugin `{}` is not loaded", target.plugin))?;
        let params = self.target_params(plan, planned, notice)?;
        let deadline = tokio::time::Instant::now() + target.timeout;
        let context = Arc::new(self.access.for_step(
            planned.id.clone(),
            planned.grants.clone(),
            deadline,
            &self.abort,
            false,
            Default::default(),
        ));
        let called = self
            .runtime
            .run(plugin, context, target.memory_limit, &params, None)
            .await;
        match called {
            Ok(Ok(crate::wit::RunResult::Done(_))) => Ok(()),
            Ok(Ok(crate::wit::RunResult::Wait(_))) => Err(
                "it asked to be called again later; an announcement goes out at once or not at all"
                    .to_owned(),
            ),
            Ok(Err(error)) => Err(error.describe()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// A target's parameters for `notice`: its `with`, rendered (with
    /// `run.status` and `run.failed_step` as the notice has them), and the
    /// keys the host adds.
    fn target_params(
        &self,
        plan: &Plan,
        planned: &PlannedTarget,
        notice: &Notice,
    ) -> Result<String, String> {
        let target = plan.target(planned);
        let mut outcomes = StepOutcomes::new();
        if let Some(status) = notice.run_status {
            outcomes.insert(RUN_KEY.to_owned(), status);
        }
        let failed_step = notice.failed_step.clone().unwrap_or_default();
        let outputs: StepOutputs = BTreeMap::from([(
            RUN_KEY.to_owned(),
            BTreeMap::from([("failed_step".to_owned(), failed_step)]),
        )]);
        let scope = Scope {
            plan,
            outputs: &outputs,
            secrets: &self.access.secrets,
            unknown: Unknown::Fail,
            outcomes: &outcomes,
            item: None,
        };
        let mut params = scope
            .render(&target.with)
            .map_err(|error| format!("cannot render its parameters: {error}"))?;
        add_host_keys(&mut params, plan, notice);
        Ok(params.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::StepId;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn plan(notify: &str) -> Plan {
        let text = format!(
            "[runbook]\nname = \"deploy\"\n\n[environments.production]\n\n[plugins]\nnoop = \"noop.wasm\"\nnotify = \"notify.wasm\"\n\n[[steps]]\nid = \"soak\"\nuses = \"noop\"\n\n{notify}\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"https://hooks.example.com/x\"\ngrants.http = [\"https://hooks.example.com/\"]\n"
        );
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", text))
            .unwrap_or_else(|problems| panic!("{problems}"));
        crate::runbook::bind::bind(
            Arc::new(runbook),
            crate::runbook::Bindings {
                environment: Some("production".into()),
                sets: Vec::new(),
                operator: "alice".into(),
                run_id: "R".into(),
                lenient: false,
            },
        )
        .unwrap()
    }

    fn new_announcer(plan: &Plan, notified: &NotifiedRecord) -> Announcer {
        Announcer::new(plan, plan.runbook.notify.as_ref().unwrap(), notified)
    }

    fn event(step: Option<&str>, kind: EventKind) -> Event {
        Event {
            time: "t".into(),
            step: step.map(|id| StepId(id.into())),
            kind,
        }
    }

    fn waiting(round: u32, parked: bool) -> EventKind {
        EventKind::StepWaiting {
            round,
            status: format!("soak round {round}/96"),
            wake_at: "2026-11-22T10:30:00Z".into(),
            state: "{}".into(),
            parked,
        }
    }

    fn finished(status: Status, summary: &str) -> EventKind {
        EventKind::StepFinished {
            status,
            summary: summary.into(),
            outputs: BTreeMap::new(),
            elapsed_ms: 1.0,
        }
    }

    #[test]
    fn a_holding_update_is_due_every_after_the_last_or_after_the_hold_began() {
        let every = Duration::from_secs(15 * 60);
        let began = at("2026-11-22T10:00:00Z");
        assert_eq!(
            next_holding_update(None, began, every),
            at("2026-11-22T10:15:00Z")
        );
        // The last update, in whichever process sent it, sets the pace.
        let last = at("2026-11-22T09:55:00Z");
        assert_eq!(
            next_holding_update(Some(last), began, every),
            at("2026-11-22T10:10:00Z")
        );
        assert_eq!(
            next_holding_update(Some(began), began, Duration::MAX),
            Timestamp::MAX
        );
    }

    #[test]
    fn a_holding_step_is_reported_once_per_every_whatever_its_rounds() {
        let plan = plan("[notify]\nevery = \"15m\"");
        let mut announcer = new_announcer(&plan, &NotifiedRecord::default());
        assert_eq!(announcer.next_holding(), None, "nothing holds yet");
        let began = at("2026-11-22T10:00:00Z");
        for round in 1..=3 {
            let now = began
                .checked_add(jiff::SignedDuration::from_mins(round))
                .unwrap();
            assert_eq!(
                announcer.observe(&event(Some("soak"), waiting(round as u32, false)), now),
                None
            );
        }
        assert_eq!(announcer.next_holding(), Some(at("2026-11-22T10:16:00Z")));
        assert!(
            announcer
                .holding_updates(at("2026-11-22T10:10:00Z"))
                .is_empty()
        );
        let updates = announcer.holding_updates(at("2026-11-22T10:16:00Z"));
        assert_eq!(updates.len(), 1);
        assert_eq!(
            updates[0].text,
            "deploy production: soak holding: soak round 3/96 (round 3), next round at 10:30 UTC"
        );
        assert_eq!(
            (updates[0].moment, updates[0].status),
            (Moment::Holding, "running")
        );
        assert!(
            announcer
                .holding_updates(at("2026-11-22T10:20:00Z"))
                .is_empty()
        );
        assert_eq!(announcer.next_holding(), Some(at("2026-11-22T10:31:00Z")));
        // Once the step is done, nothing holds.
        announcer.observe(
            &event(Some("soak"), finished(Status::Succeeded, "96 rounds")),
            began,
        );
        assert_eq!(announcer.next_holding(), None);
    }

    #[test]
    fn the_pace_of_holding_updates_survives_a_new_process() {
        let plan = plan("[notify]\nevery = \"15m\"");
        let notified = NotifiedRecord {
            started: true,
            last_holding: Some("2026-11-22T10:15:00Z".into()),
            waiting: None,
        };
        let mut announcer = new_announcer(&plan, &notified);
        assert_eq!(
            announcer.start(),
            None,
            "a resumed run is not started again"
        );
        let wait = WaitRecord {
            round: 7,
            status: "soak round 7/96".into(),
            wake_at: "2026-11-22T10:40:00Z".into(),
            state: String::new(),
            parked: true,
        };
        announcer.holds("soak", &wait, at("2026-11-22T10:20:00Z"));
        assert_eq!(announcer.next_holding(), Some(at("2026-11-22T10:30:00Z")));
        // A hold that parks the run ends this process's hold.
        announcer.observe(
            &event(Some("soak"), waiting(8, true)),
            at("2026-11-22T10:21:00Z"),
        );
        assert_eq!(announcer.next_holding(), None);
    }

    #[test]
    fn each_moment_has_its_words_and_status() {
        let plan = plan("[notify]");
        let mut announcer = new_announcer(&plan, &NotifiedRecord::default());
        let now = at("2026-11-22T10:00:00Z");
        let start = announcer.start().unwrap();
        assert_eq!(start.text, "deploy: started in production by alice (run R)");
        assert_eq!(start.status, "started");
        assert_eq!(announcer.start(), None);
        let stage = announcer
            .observe(
                &event(
                    Some("traffic"),
                    EventKind::Milestone {
                        message: "canary at 10%\n(stage 1/3)".into(),
                    },
                ),
                now,
            )
            .unwrap();
        assert_eq!(
            stage.text,
            "deploy production: traffic: canary at 10% (stage 1/3)"
        );
        assert_eq!((stage.moment, stage.status), (Moment::Stage, "running"));
        let failure = announcer
            .observe(
                &event(Some("migrate"), finished(Status::Failed, "exit code 1")),
                now,
            )
            .unwrap();
        assert_eq!(
            failure.text,
            "deploy production: migrate failed: exit code 1"
        );
        assert_eq!(failure.failed_step.as_deref(), Some("migrate"));
        let rollback = announcer
            .observe(
                &event(
                    None,
                    EventKind::RollbackStarted {
                        reason: "a step failed".into(),
                        steps: vec!["b".into(), "a".into()],
                        whole_run: true,
                    },
                ),
                now,
            )
            .unwrap();
        assert_eq!(
            rollback.text,
            "deploy production: rolling back 2 steps: b ← a"
        );
        assert_eq!(rollback.status, "rolling_back");
        assert_eq!(rollback.failed_step.as_deref(), Some("migrate"));
        let end = announcer
            .observe(
                &event(
                    None,
                    EventKind::RunFinished {
                        status: Status::Failed,
                        elapsed_ms: 252_000.0,
                        failed_step: Some("migrate".into()),
                    },
                ),
                now,
            )
            .unwrap();
        assert_eq!(
            end.text,
            "deploy production: failed at step migrate after 4m12s"
        );
        assert_eq!(
            (end.moment, end.status, end.run_status),
            (Moment::End, "failed", Some(Status::Failed))
        );
        // A step that succeeds announces nothing of itself.
        assert_eq!(
            announcer.observe(&event(Some("a"), finished(Status::Succeeded, "ok")), now),
            None
        );
    }

    #[test]
    fn a_run_that_waits_says_why_once_and_not_that_it_ended() {
        let plan = plan("[notify]");
        let mut announcer = new_announcer(&plan, &NotifiedRecord::default());
        let now = at("2026-11-22T10:00:00Z");
        let parked = "parked: waits until 2026-11-22T12:00:00Z (soak round 1/96);\n`runbook worker` goes on then";
        announcer.observe(&event(Some("soak"), finished(Status::Waiting, parked)), now);
        let waits = event(
            None,
            EventKind::RunFinished {
                status: Status::Waiting,
                elapsed_ms: 1.0,
                failed_step: Some("soak".into()),
            },
        );
        let notice = announcer.observe(&waits, now).unwrap();
        assert_eq!(notice.moment, Moment::Waiting);
        assert_eq!(notice.status, "waiting");
        assert_eq!(
            notice.text,
            "deploy production: waiting at step soak: parked: waits until 2026-11-22T12:00:00Z (soak round 1/96); `runbook worker` goes on then"
        );
        // A failure a person must decide on says so.
        announcer.observe(
            &event(
                Some("gate"),
                EventKind::DecisionNeeded {
                    failure: "error rate 3%".into(),
                    choices: crate::events::Choice::ALL.to_vec(),
                },
            ),
            now,
        );
        let decide = event(
            None,
            EventKind::RunFinished {
                status: Status::Waiting,
                elapsed_ms: 1.0,
                failed_step: Some("gate".into()),
            },
        );
        assert_eq!(
            announcer.observe(&decide, now).unwrap().text,
            "deploy production: waiting at step gate: it failed (error rate 3%); a person decides: retry, skip, rollback or abort"
        );
        // The next process, parked at the same step again, says nothing new.
        let notified = NotifiedRecord {
            started: true,
            last_holding: None,
            waiting: Some("soak".into()),
        };
        let mut next = new_announcer(&plan, &notified);
        assert_eq!(next.observe(&waits, now), None);
    }

    #[test]
    fn only_the_moments_of_on_are_announced() {
        let plan = plan("[notify]\non = [\"end\"]");
        let mut announcer = new_announcer(&plan, &NotifiedRecord::default());
        let now = at("2026-11-22T10:00:00Z");
        assert_eq!(announcer.start(), None);
        assert_eq!(
            announcer.observe(
                &event(
                    Some("a"),
                    EventKind::Milestone {
                        message: "x".into()
                    }
                ),
                now
            ),
            None
        );
        assert_eq!(
            announcer.observe(&event(Some("a"), finished(Status::Failed, "x")), now),
            None
        );
        let end = event(
            None,
            EventKind::RunFinished {
                status: Status::Succeeded,
                elapsed_ms: 12_400.0,
                failed_step: None,
            },
        );
        assert_eq!(
            announcer.observe(&end, now).unwrap().text,
            "deploy production: succeeded in 12s"
        );
    }

    #[test]
    fn the_host_adds_its_keys_unless_with_sets_them() {
        let plan = plan("[notify]");
        let notice = Notice::example(&plan);
        let mut params = serde_json::json!({"webhook": "w", "text": "mine"});
        add_host_keys(&mut params, &plan, &notice);
        assert_eq!(params["text"], "mine");
        assert_eq!(params["status"], "failed");
        assert_eq!(params["run"], "R");
        assert_eq!(params["runbook"], "deploy");
        assert_eq!(params["environment"], "production");
        assert_eq!(params["operator"], "alice");
        assert_eq!(params["failed_step"], "<step>");
    }

    #[test]
    fn durations_are_said_in_hours_minutes_and_seconds() {
        assert_eq!(elapsed(850.0), "0s");
        assert_eq!(elapsed(252_000.0), "4m12s");
        assert_eq!(elapsed(7_500_000.0), "2h5m");
    }
}
