//! One Kubernetes call from a step: the grant check before anything else,
//! and the one `CapabilityCall` event that records it (refused, or how it
//! went).

use crate::capability::StepContext;
use crate::capability::tape::Taped;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::kube::ObjectRef;
use std::ops::ControlFlow;

/// One call the step's grant allowed: what it asks, recorded once at the
/// end by [`Call::finish`].
pub(super) struct Call<'a> {
    /// The calling step.
    pub(super) context: &'a StepContext,
    record: crate::capability::Call<'a>,
}

impl<'a> Call<'a> {
    /// Checks the grant; a refusal is evented and returned as `denied`.
    pub(super) fn begin(
        context: &'a StepContext,
        verb: &'static str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
        requested: String,
    ) -> Result<Self, PluginError> {
        let record = context
            .call("kube", format!("{verb} {requested}"))
            .sent_as_dry_run(context.dry_run && is_write(verb));
        let refusal = match &context.grants.kube {
            None => Some((
                "no Kubernetes grant".to_owned(),
                format!(
                    "step `{}` has no Kubernetes grant; if intended, add `grants.kube = {{ namespaces = [\"{}\"], resources = [\"{api_version}/{kind}\"], verbs = [\"{verb}\"] }}`",
                    context.step_id,
                    namespace.unwrap_or("*"),
                ),
            )),
            Some(grant) => refusal(grant, verb, namespace, api_version, kind),
        };
        if let Some((reason, hint)) = refusal {
            return Err(record.deny(reason, hint));
        }
        Ok(Call { context, record })
    }

    /// [`Call::begin`] for a call on one object.
    pub(super) fn on_object(
        context: &'a StepContext,
        verb: &'static str,
        object: &ObjectRef,
    ) -> Result<Self, PluginError> {
        Self::begin(
            context,
            verb,
            object.namespace.as_deref(),
            &object.api_version,
            &object.kind,
            describe(object),
        )
    }

    /// In a replay, the cassette's answer to `request` (recorded as
    /// answered from it) as `Break`; otherwise the call, to be made.
    /// Asked once the grant allowed the call, before any I/O.
    pub(super) fn replay<Q: Taped>(
        self,
        request: &Q,
    ) -> ControlFlow<Result<Q::Answer, PluginError>, Self> {
        let Some(answer) = self.context.replayed(request) else {
            return ControlFlow::Continue(self);
        };
        let outcome = match &answer {
            Ok(_) => "answered (from the cassette)".to_owned(),
            Err(error) => format!("{} (from the cassette)", error.describe()),
        };
        self.record.finish(None, outcome, answer.is_ok());
        ControlFlow::Break(answer)
    }

    /// Runs `work` unless the run is cancelled or `deadline` passes first.
    pub(super) async fn bounded<T>(
        &self,
        deadline: tokio::time::Instant,
        work: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        tokio::select! {
            result = work => result,
            () = self.context.cancel.cancelled() => Err(PluginError::Cancelled),
            () = tokio::time::sleep_until(deadline) => Err(PluginError::Timeout("the Kubernetes call did not finish in time".into())),
        }
    }

    /// Records the call's end and passes its result through.
    pub(super) fn finish<T>(
        self,
        result: Result<T, PluginError>,
        outcome: impl FnOnce(&T) -> String,
    ) -> Result<T, PluginError> {
        let outcome = match &result {
            Ok(value) => outcome(value),
            Err(error) => error.describe(),
        };
        self.record.finish(None, outcome, result.is_ok());
        result
    }
}

/// Whether `verb` changes the cluster (and so is sent with `dryRun=All`
/// while planning).
fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "patch" | "delete")
}

/// Why `grant` does not allow the call, and the hint: what differs (the
/// resource, verb or namespace) and the grant with just that added.
fn refusal(
    grant: &crate::grant::KubeGrant,
    verb: &str,
    namespace: Option<&str>,
    api_version: &str,
    kind: &str,
) -> Option<(String, String)> {
    let missing = grant.missing(verb, namespace, api_version, kind);
    if missing.is_empty() {
        return None;
    }
    let reason = missing.join("; ");
    let widened = grant.widened(verb, namespace, api_version, kind);
    let hint = format!(
        "{reason}; if intended, add {} to the step's `grants.kube`: `grants.kube = {}`",
        if missing.len() == 1 { "it" } else { "them" },
        widened.to_toml()
    );
    Some((reason, hint))
}

/// An object as the audit names it: `apps/v1/Deployment shop/api`.
pub(super) fn describe(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!(
            "{}/{} {namespace}/{}",
            object.api_version, object.kind, object.name
        ),
        None => format!("{}/{} {}", object.api_version, object.kind, object.name),
    }
}

#[cfg(test)]
mod tests {
    use crate::grant::KubeGrant;

    fn grant() -> KubeGrant {
        KubeGrant {
            namespaces: vec!["riskcast-prod".into()],
            resources: vec!["apps/v1/Deployment".into()],
            verbs: vec!["get".into(), "patch".into(), "watch".into()],
        }
    }

    #[test]
    fn a_call_inside_the_grant_is_allowed() {
        assert_eq!(
            grant().refuses("patch", Some("riskcast-prod"), "apps/v1", "Deployment"),
            None
        );
    }

    #[test]
    fn another_namespace_verb_or_resource_is_refused_and_named() {
        let refused = |verb, namespace, api_version, kind| {
            grant().refuses(verb, namespace, api_version, kind).unwrap()
        };
        assert!(
            refused("get", Some("kube-system"), "apps/v1", "Deployment")
                .contains("namespace `kube-system`")
        );
        assert!(
            refused("delete", Some("riskcast-prod"), "apps/v1", "Deployment")
                .contains("verb `delete`")
        );
        assert!(
            refused("get", Some("riskcast-prod"), "v1", "Secret").contains("resource `v1/Secret`")
        );
        assert!(refused("get", None, "apps/v1", "Deployment").contains("namespaces = [\"*\"]"));
    }

    #[test]
    fn the_hint_names_what_differs_and_the_grant_with_just_that_added() {
        let (reason, hint) = super::refusal(
            &grant(),
            "delete",
            Some("riskcast-prod"),
            "apps/v1",
            "Deployment",
        )
        .unwrap();
        assert_eq!(
            reason,
            "verb `delete` is not granted (granted: get, patch, watch)"
        );
        assert!(
            hint.ends_with("if intended, add it to the step's `grants.kube`: `grants.kube = { namespaces = [\"riskcast-prod\"], resources = [\"apps/v1/Deployment\"], verbs = [\"get\", \"patch\", \"watch\", \"delete\"] }`"),
            "{hint}"
        );
        let (reason, hint) =
            super::refusal(&grant(), "get", Some("payments"), "v1", "Secret").unwrap();
        assert_eq!(
            reason,
            "resource `v1/Secret` is not granted (granted: apps/v1/Deployment); namespace `payments` is not granted (granted: riskcast-prod)"
        );
        assert!(
            hint.contains("add them to the step's `grants.kube`: `grants.kube = { namespaces = [\"riskcast-prod\", \"payments\"], resources = [\"apps/v1/Deployment\", \"v1/Secret\"], verbs = [\"get\", \"patch\", \"watch\"] }`"),
            "{hint}"
        );
        let (_, hint) = super::refusal(&grant(), "list", None, "apps/v1", "Deployment").unwrap();
        assert!(hint.contains("namespaces = [\"*\"], resources"), "{hint}");
        assert!(
            super::refusal(
                &grant(),
                "get",
                Some("riskcast-prod"),
                "apps/v1",
                "Deployment"
            )
            .is_none()
        );
    }
}
