//! `kube.wait`: the host waits, so plugins never poll. A get, then a watch
//! from that resourceVersion filtered to the one object, started again
//! whenever the stream ends; each version seen is judged by
//! [`progress_of`] until the condition holds, fails, or time runs out.

use super::access::{api_for_object, from_kube_error};
use super::call::{Call, describe};
use super::rollout::{Progress, rollout_progress, status_condition};
use super::verbs::to_json;
use crate::capability::StepContext;
use crate::events::EventKind;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::{Condition, ObjectRef};
use futures_util::StreamExt;
use kube::api::{WatchEvent, WatchParams};
use serde_json::Value;
use std::time::Duration;

/// Waits on the host, watching the object, until the condition holds.
pub(super) async fn wait(
    call: Call<'_>,
    object: &ObjectRef,
    condition: &Condition,
    timeout: Duration,
) -> Result<String, PluginError> {
    let context = call.context;
    let deadline = context.deadline_for(Some(timeout));
    let result = call
        .bounded(deadline, watch_until(context, object, condition))
        .await;
    let result = match result {
        Err(PluginError::Timeout(_)) => Err(PluginError::Timeout(format!(
            "{} did not reach {} within {}",
            describe(object),
            condition_text(condition),
            humantime::format_duration(timeout)
        ))),
        other => other,
    };
    call.finish(result, |_| format!("{} reached", condition_text(condition)))
}

/// A condition as the audit and a cassette name it.
pub(super) fn condition_text(condition: &Condition) -> String {
    match condition {
        Condition::RolloutComplete => "rollout complete".into(),
        Condition::StatusCondition((kind, status)) => format!("condition {kind}={status}"),
        Condition::Deleted => "deleted".into(),
    }
}

/// Whether `condition` holds for the object as it is now (`None`: gone).
pub(super) fn progress_of(kind: &str, condition: &Condition, object: Option<&Value>) -> Progress {
    match (condition, object) {
        (Condition::Deleted, None) => Progress::Done,
        (Condition::Deleted, Some(_)) => Progress::Waiting("still exists".into()),
        (_, None) => Progress::Failed(format!("the {kind} does not exist")),
        (Condition::RolloutComplete, Some(object)) => rollout_progress(kind, object),
        (Condition::StatusCondition((wanted, value)), Some(object)) => {
            if status_condition(object, wanted)
                .and_then(|found| found.get("status"))
                .and_then(Value::as_str)
                == Some(value.as_str())
            {
                return Progress::Done;
            }
            if wanted != "Failed"
                && let Some(failed) = status_condition(object, "Failed")
                && failed.get("status").and_then(Value::as_str) == Some("True")
            {
                let message = failed
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                return Progress::Failed(format!("the {kind} failed: {message}"));
            }
            Progress::Waiting(format!("waiting for condition {wanted}={value}"))
        }
    }
}

/// The watch loop: a fresh get, then a watch from its resourceVersion,
/// again from a fresh get whenever the stream ends or the server says the
/// version is gone.
async fn watch_until(
    context: &StepContext,
    object: &ObjectRef,
    condition: &Condition,
) -> Result<String, PluginError> {
    let api = api_for_object(context, object).await?;
    let mut judge = Judge {
        context,
        object,
        condition,
        last_said: String::new(),
    };
    loop {
        let current = api
            .get_opt(&object.name)
            .await
            .map_err(|error| from_kube_error(error, "get"))?;
        let revision = current
            .as_ref()
            .and_then(|found| found.metadata.resource_version.clone())
            .unwrap_or_else(|| "0".into());
        let mut seen = current.map(|found| serde_json::to_value(found).unwrap_or_default());
        if let Some(settled) = judge.settle(seen.as_ref(), true) {
            return settled;
        }
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", object.name))
            .timeout(290);
        let mut stream = match api.watch(&params, &revision).await {
            Ok(stream) => stream.boxed(),
            Err(error) => return Err(from_kube_error(error, "watch")),
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(found) | WatchEvent::Modified(found)) => {
                    seen = Some(serde_json::to_value(found).unwrap_or_default());
                }
                Ok(WatchEvent::Deleted(_)) => seen = None,
                Ok(WatchEvent::Bookmark(_)) => continue,
                // 410 Gone and friends: start again from a fresh get.
                Ok(WatchEvent::Error(_)) | Err(_) => break,
            }
            if let Some(settled) = judge.settle(seen.as_ref(), false) {
                return settled;
            }
        }
    }
}

/// Judges each version of the object a wait sees, and remembers what it
/// last told the operator.
struct Judge<'a> {
    context: &'a StepContext,
    object: &'a ObjectRef,
    condition: &'a Condition,
    last_said: String,
}

impl Judge<'_> {
    /// The end of a wait, if the object as seen ends it; otherwise says
    /// what it waits for (once per change). A plan changed nothing, so
    /// while planning the first look ends the wait.
    fn settle(
        &mut self,
        seen: Option<&Value>,
        first_look: bool,
    ) -> Option<Result<String, PluginError>> {
        let context = self.context;
        let found = || seen.map_or_else(|| "null".into(), |found| to_json(context, found));
        match progress_of(&self.object.kind, self.condition, seen) {
            Progress::Done => Some(Ok(found())),
            Progress::Failed(reason) => Some(Err(PluginError::Failed(reason))),
            Progress::Waiting(_) if context.dry_run && first_look => Some(Ok(found())),
            Progress::Waiting(reason) => {
                if reason != self.last_said {
                    context.emit(EventKind::Progress {
                        message: format!("{}: {reason}", self.object.name),
                        fraction: None,
                    });
                    self.last_said = reason;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn waiting_for_a_condition_stops_early_when_the_object_failed() {
        let job = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "backoff limit"}]}});
        let complete = Condition::StatusCondition(("Complete".into(), "True".into()));
        assert!(
            matches!(progress_of("Job", &complete, Some(&job)), Progress::Failed(reason) if reason.contains("backoff limit"))
        );
        assert_eq!(
            progress_of("Job", &Condition::Deleted, None),
            Progress::Done
        );
    }
}
