//! What must hold before a run's first step: the deploy window, and the
//! approvals of people other than the operator, bound to a fingerprint of
//! exactly what will run.

use crate::runbook::{Approvals, Environment, Plan};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The fingerprint of what a run will do: the runbook's text, the
/// environment, the parameters, each plugin's digest (the `[notify]`
/// targets' too) and the grants of each step and each target. An approval
/// counts only for the fingerprint it was given for.
pub fn fingerprint(plan: &Plan, plugin_digests: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    let mut field = |name: &str, value: &str| {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.len().to_le_bytes());
        hasher.update(value.as_bytes());
    };
    field("runbook", &plan.runbook.source.text);
    field("environment", plan.environment.as_deref().unwrap_or(""));
    // A value as text: a string as it is (so a runbook without typed
    // parameters keeps the fingerprint it had), anything else as JSON. The
    // runbook's text, hashed above, says which type each value has.
    for (key, value) in &plan.params {
        field(
            "param",
            &format!("{key}={}", crate::template::as_text(value)),
        );
    }
    for (name, digest) in plugin_digests {
        field("plugin", &format!("{name}={digest}"));
    }
    let grants_of = |grants: &crate::grant::StepGrants| {
        let http: Vec<&str> = grants.http.iter().map(|grant| grant.as_str()).collect();
        let folders: Vec<&str> = grants
            .fs_read
            .iter()
            .map(|grant| grant.written.as_str())
            .collect();
        format!(
            "http={:?} secrets={:?} fs={:?}",
            http, grants.secrets, folders
        )
    };
    for planned in &plan.steps {
        field(
            "step",
            &format!("{} {}", planned.id, grants_of(&planned.grants)),
        );
    }
    // Announcements call plugins too, with grants of their own: what they
    // may do is part of what is approved. (A runbook without `[notify]`
    // keeps the fingerprint it had.)
    for planned in &plan.targets {
        let plugin = &plan.target(planned).plugin;
        field(
            "notify",
            &format!(
                "{} uses={plugin} {}",
                planned.id,
                grants_of(&planned.grants)
            ),
        );
    }
    hex::encode(hasher.finalize())
}

/// The fingerprint of a rollback asked for after a run ended (`runbook
/// rollback`): the run's own fingerprint, its id and the steps to undo, in
/// order, under a distinct tag. An approval of the deploy therefore never
/// approves its rollback, nor an approval of one run's rollback another's.
pub fn rollback_fingerprint(run_fingerprint: &str, run_id: &str, steps: &[String]) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in [("rollback-of", run_fingerprint), ("run", run_id)]
        .into_iter()
        .chain(steps.iter().map(|step| ("undo", step.as_str())))
    {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.len().to_le_bytes());
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The approvals a run needs before its first step: a run started with
/// `--emergency` needs its environment's `emergency_approvals` (its
/// ordinary `approvals` when it has none); any other run its `approvals`.
/// `exec`, `resume` and `approve` all ask here, so an approver the gate
/// would count is never refused by `approve`, and the reverse.
pub fn rule(environment: &Environment, emergency: bool) -> Option<&Approvals> {
    if emergency {
        environment
            .emergency_approvals
            .as_ref()
            .or(environment.approvals.as_ref())
    } else {
        environment.approvals.as_ref()
    }
}

/// Which approvals count, which do not and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalCount {
    /// Distinct, allowed approvers of this fingerprint.
    pub valid: Vec<String>,
    /// Approvals that do not count, with the reason.
    pub ignored: Vec<(String, String)>,
    /// How many are needed.
    pub required: u32,
}

impl ApprovalCount {
    /// Whether enough people approved.
    pub fn is_met(&self) -> bool {
        self.valid.len() >= self.required as usize
    }
}

/// Counts recorded approvals `(who, fingerprint)` against a rule.
pub fn count(
    rule: &Approvals,
    recorded: &[(String, String)],
    fingerprint: &str,
    operator: &str,
) -> ApprovalCount {
    let mut valid: Vec<String> = Vec::new();
    let mut ignored = Vec::new();
    for (who, approved) in recorded {
        let reason = if who == operator {
            Some("the operator who started the run cannot approve it")
        } else if !rule.from.contains(who) {
            Some("not among the environment's approvers")
        } else if approved != fingerprint {
            Some(
                "given for a different plan (the runbook, parameters, plugins or grants changed since)",
            )
        } else if valid.contains(who) {
            Some("already counted")
        } else {
            None
        };
        match reason {
            Some(reason) => ignored.push((who.clone(), reason.to_owned())),
            None => valid.push(who.clone()),
        }
    }
    ApprovalCount {
        valid,
        ignored,
        required: rule.required,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Approvals {
        Approvals {
            required: 2,
            from: vec!["alice".into(), "bob".into(), "carol".into()],
        }
    }

    fn approvals(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(who, hash)| ((*who).to_owned(), (*hash).to_owned()))
            .collect()
    }

    #[test]
    fn two_distinct_approvers_meet_a_two_person_rule() {
        let counted = count(
            &rule(),
            &approvals(&[("bob", "h"), ("carol", "h")]),
            "h",
            "alice",
        );
        assert!(counted.is_met());
    }

    #[test]
    fn the_operator_cannot_approve_their_own_run() {
        let counted = count(
            &rule(),
            &approvals(&[("alice", "h"), ("bob", "h")]),
            "h",
            "alice",
        );
        assert!(!counted.is_met());
        assert_eq!(counted.ignored[0].0, "alice");
    }

    #[test]
    fn the_same_person_twice_counts_once() {
        let counted = count(
            &rule(),
            &approvals(&[("bob", "h"), ("bob", "h")]),
            "h",
            "alice",
        );
        assert_eq!(counted.valid, ["bob"]);
        assert!(!counted.is_met());
    }

    #[test]
    fn an_approval_of_a_changed_plan_no_longer_counts() {
        let counted = count(
            &rule(),
            &approvals(&[("bob", "old"), ("carol", "new")]),
            "new",
            "alice",
        );
        assert_eq!(counted.valid, ["carol"]);
        assert!(counted.ignored[0].1.contains("different plan"));
    }

    #[test]
    fn an_emergency_run_is_approved_by_the_emergency_approvers() {
        let mut environment = Environment {
            description: None,
            vars: Default::default(),
            approvals: Some(rule()),
            emergency_approvals: Some(Approvals {
                required: 1,
                from: vec!["eve".into()],
            }),
            schedule: Default::default(),
            aws_endpoint: None,
            kube_context: None,
            requires: None,
            rollback_window: None,
            on_failure: None,
        };
        assert_eq!(super::rule(&environment, true).unwrap().from, ["eve"]);
        assert_eq!(super::rule(&environment, false), Some(&rule()));
        environment.emergency_approvals = None;
        assert_eq!(super::rule(&environment, true), Some(&rule()));
    }

    #[test]
    fn an_approval_of_a_deploy_does_not_approve_its_rollback() {
        let steps = vec!["deploy".to_owned(), "migrate".to_owned()];
        let rollback = rollback_fingerprint("h", "run-1", &steps);
        assert_ne!(rollback, "h");
        let counted = count(&rule(), &approvals(&[("bob", "h")]), &rollback, "alice");
        assert!(counted.valid.is_empty());
        assert_ne!(rollback, rollback_fingerprint("h", "run-2", &steps));
        assert_ne!(
            rollback,
            rollback_fingerprint("h", "run-1", &["deploy".to_owned()])
        );
        assert_eq!(rollback, rollback_fingerprint("h", "run-1", &steps));
    }

    /// `text` bound with `sets`.
    fn plan_of(text: &str, sets: Vec<(String, String)>) -> Plan {
        let runbook = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", text))
            .unwrap_or_else(|problems| panic!("{problems}"));
        crate::runbook::bind::bind(
            std::sync::Arc::new(runbook),
            crate::runbook::Bindings {
                sets,
                operator: "alice".into(),
                run_id: "run-1".into(),
                ..crate::runbook::Bindings::default()
            },
        )
        .unwrap_or_else(|problems| panic!("{problems}"))
    }

    #[test]
    fn typed_values_written_back_as_text_bind_to_the_same_fingerprint() {
        // `runbook resume` binds the journal's values again as `--set`
        // text: the fingerprint its approvals are bound to must not move.
        let text = "[runbook]\nname = \"r\"\n\n[params.version]\n\n[params.percentage]\ntype = \"integer\"\n\n[params.ratio]\ntype = \"number\"\n\n[params.dry_run]\ntype = \"boolean\"\n\n[params.services]\ntype = \"list\"\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
        let given = [
            ("version", "1.2.3"),
            ("percentage", "10"),
            ("ratio", "0.5"),
            ("dry_run", "true"),
            ("services", "api, worker"),
        ];
        let first = plan_of(
            text,
            given
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        );
        let again = plan_of(
            text,
            first
                .params
                .iter()
                .map(|(key, value)| (key.clone(), crate::template::as_text(value)))
                .collect(),
        );
        assert_eq!(first.params, again.params);
        let digests = BTreeMap::new();
        assert_eq!(fingerprint(&first, &digests), fingerprint(&again, &digests));
        let other = plan_of(text, vec![("percentage".to_owned(), "11".to_owned())]);
        assert_ne!(fingerprint(&first, &digests), fingerprint(&other, &digests));
    }

    #[test]
    fn strangers_do_not_count() {
        let counted = count(&rule(), &approvals(&[("mallory", "h")]), "h", "alice");
        assert!(counted.valid.is_empty());
    }
}
