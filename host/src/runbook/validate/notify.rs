//! `[notify]`: how often a holding step is reported (`every`), which
//! moments are announced (`on`), and each target: its plugin, its `with`
//! (which may name no step: announcements go out beside the steps) and its
//! grants, checked as a step's are.

use super::references::ReferenceCheck;
use super::values::tree_from_toml;
use super::{Declared, StepContext, grants, limits, steps};
use crate::diagnostic::{Diagnostics, Source, ValuePath, did_you_mean};
use crate::runbook::model::{RawNotify, RawNotifyTarget};
use crate::runbook::{
    Code, DEFAULT_NOTIFY_TIMEOUT, MIN_NOTIFY_EVERY, Moment, Notify, NotifyTarget, notify_target_id,
    notify_target_path,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Checks `[notify]`; every problem is reported, and the part at fault
/// left out or given its default.
pub(super) fn validate_notify(
    source: &Arc<Source>,
    raw: RawNotify,
    declared: &Declared<'_>,
    problems: &mut Diagnostics,
) -> Notify {
    let at = ValuePath::default().key("notify");
    let every = raw
        .every
        .as_deref()
        .map(|text| holding_every(source, text, &at.key("every"), problems));
    let on = moments(source, raw.on.as_deref(), every.is_some(), &at, problems);
    let targets = raw
        .targets
        .into_iter()
        .enumerate()
        .map(|(index, target)| validate_target(source, index, target, declared, problems))
        .collect();
    Notify { every, on, targets }
}

/// `every` at `at`: a duration of at least [`MIN_NOTIFY_EVERY`].
fn holding_every(
    source: &Arc<Source>,
    text: &str,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> Duration {
    let hint = "write it like \"15m\" or \"1h\"";
    let every = limits::duration(source, text, at, MIN_NOTIFY_EVERY, hint, problems);
    if every < MIN_NOTIFY_EVERY {
        problems.push(
            Code::NotifyEveryTooShort
                .diagnostic(format!(
                    "`every` is `{text}`; holding updates are at least {} apart",
                    humantime::format_duration(MIN_NOTIFY_EVERY)
                ))
                .at(source, at)
                .hint("people read these: write `every = \"15m\"`, or leave `every` out for no holding updates"),
        );
        return MIN_NOTIFY_EVERY;
    }
    every
}

/// `on`: the moments named, or by default every moment (`holding` only
/// when `every` is set).
fn moments(
    source: &Arc<Source>,
    written: Option<&[String]>,
    has_every: bool,
    at: &ValuePath,
    problems: &mut Diagnostics,
) -> BTreeSet<Moment> {
    let Some(written) = written else {
        return Moment::ALL
            .into_iter()
            .filter(|moment| *moment != Moment::Holding || has_every)
            .collect();
    };
    let names = Moment::ALL.map(Moment::as_str);
    let mut on = BTreeSet::new();
    for (position, name) in written.iter().enumerate() {
        match Moment::named(name) {
            Some(moment) => {
                on.insert(moment);
            }
            None => {
                let listed = format!("the moments are {}", names.join(", "));
                let hint = match did_you_mean(name, names) {
                    Some(near) => format!("did you mean `{near}`? {listed}"),
                    None => listed,
                };
                problems.push(
                    Code::UnknownMoment
                        .diagnostic(format!("`{name}` is not a moment `[notify]` announces"))
                        .at(source, &at.key("on").index(position))
                        .hint(hint),
                );
            }
        }
    }
    if on.contains(&Moment::Holding) && !has_every {
        problems.push(
            Code::HoldingWithoutEvery
                .diagnostic("`on` announces `holding`, and `[notify]` has no `every`")
                .at(source, &at.key("on"))
                .hint("say how often a holding step is reported: `every = \"15m\"`"),
        );
    }
    on
}

/// Target `index`: a declared plugin, a timeout, a memory cap, its `with`
/// and its grants.
fn validate_target(
    source: &Arc<Source>,
    index: usize,
    raw: RawNotifyTarget,
    declared: &Declared<'_>,
    problems: &mut Diagnostics,
) -> NotifyTarget {
    let at = notify_target_path(index);
    let id = notify_target_id(index);
    if !declared.plugins.contains_key(&raw.uses) {
        problems.push(
            Code::UnknownPlugin
                .diagnostic(format!(
                    "notify target {index} uses unknown plugin `{}`",
                    raw.uses
                ))
                .at(source, &at.key("uses"))
                .hint(steps::plugin_hint(&raw.uses, declared.plugins)),
        );
    }
    let timeout = raw
        .timeout
        .as_deref()
        .map_or(DEFAULT_NOTIFY_TIMEOUT, |text| {
            let hint = "write it like \"30s\" or \"2m\"";
            limits::duration(
                source,
                text,
                &at.key("timeout"),
                DEFAULT_NOTIFY_TIMEOUT,
                hint,
                problems,
            )
        });
    let memory_limit =
        limits::memory_limit(source, raw.memory.as_deref(), &at.key("memory"), problems);
    // A target follows no step and reads none.
    let nothing: BTreeSet<String> = BTreeSet::new();
    let context = StepContext {
        declared,
        ancestors: &nothing,
        for_each_steps: &nothing,
    };
    let check = ReferenceCheck {
        source,
        context: &context,
        step_id: &id.0,
        secret_grants: &raw.grants.secrets,
        allow_step_outputs: true,
        allow_secrets: true,
        allow_item: false,
        in_notify: true,
    };
    let with_path = at.key("with");
    let with = tree_from_toml(toml::Value::Table(raw.with), &with_path, source, problems);
    with.templates(&with_path, &mut |template, place| {
        check.check(template, place, problems)
    });
    let grants = grants::validate_grants(&check, &raw.grants, &at.key("grants"), problems);
    NotifyTarget {
        index,
        id,
        plugin: raw.uses,
        timeout,
        memory_limit,
        with,
        grants,
    }
}

#[cfg(test)]
mod tests {
    use crate::runbook::validate::testing::codes_of;
    use crate::runbook::{Moment, notify_target_id};

    /// A runbook with one `noop` step, and `notify` after it.
    fn runbook(notify: &str) -> String {
        format!(
            "[runbook]\nname = \"r\"\n\n[params.version]\n\n[plugins]\nnoop = \"noop.wasm\"\nnotify = \"notify.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n\n{notify}"
        )
    }

    fn checked(notify: &str) -> crate::runbook::Notify {
        let text = runbook(notify);
        crate::runbook::parse(crate::diagnostic::Source::new("r.toml", text.as_str()))
            .unwrap_or_else(|problems| panic!("{problems}\n{text}"))
            .notify
            .expect("the runbook has `[notify]`")
    }

    #[test]
    fn a_target_is_checked_and_named_as_no_step_can_be() {
        let notify = checked(
            "[notify]\nevery = \"15m\"\n\n[[notify.targets]]\nuses = \"notify\"\nwith.webhook = \"${{ secrets.HOOK }}\"\nwith.text = \"${{ params.version }} by ${{ run.operator }}\"\ngrants.http = [\"https://hooks.example.com/\"]\ngrants.secrets = [\"HOOK\"]\n",
        );
        assert_eq!(notify.every, Some(std::time::Duration::from_secs(900)));
        let target = &notify.targets[0];
        assert_eq!(target.id, notify_target_id(0));
        assert_eq!(target.id.0, "notify.0");
        assert!(!crate::runbook::validate::is_identifier(&target.id.0));
        assert!(crate::runbook::is_notify_target(&target.id.0));
        assert!(!crate::runbook::is_notify_target("notify"));
        assert!(!crate::runbook::is_notify_target("notify[0]"));
        assert_eq!(target.plugin, "notify");
        assert_eq!(target.timeout, crate::runbook::DEFAULT_NOTIFY_TIMEOUT);
        assert_eq!(target.grants.secrets, ["HOOK"]);
    }

    #[test]
    fn every_moment_is_announced_by_default_and_holding_only_with_every() {
        let without = checked("[notify]\n\n[[notify.targets]]\nuses = \"notify\"\n");
        assert!(!without.announces(Moment::Holding));
        assert_eq!(without.on.len(), Moment::ALL.len() - 1);
        let with = checked("[notify]\nevery = \"1h\"\n\n[[notify.targets]]\nuses = \"notify\"\n");
        assert_eq!(with.on.len(), Moment::ALL.len());
        let chosen = checked("[notify]\non = [\"end\", \"failure\"]\n");
        assert_eq!(
            chosen.on.into_iter().collect::<Vec<_>>(),
            [Moment::Failure, Moment::End]
        );
    }

    #[test]
    fn each_mistake_in_notify_is_reported_with_its_own_code() {
        let text = runbook(
            "[notify]\nevery = \"30s\"\non = [\"start\", \"finish\", \"holding\"]\n\n[[notify.targets]]\nuses = \"slack\"\nwith.text = \"${{ steps.a.outcome }}\"\nwith.token = \"${{ secrets.TOKEN }}\"\n",
        );
        assert_eq!(
            codes_of(&text),
            [
                "NotifyEveryTooShort",
                "UnknownMoment",
                "UnknownPlugin",
                "NotifyStepReference",
                "SecretWithoutGrant"
            ]
        );
        let text = runbook("[notify]\non = [\"holding\"]\n");
        assert_eq!(codes_of(&text), ["HoldingWithoutEvery"]);
        let text = runbook("[notify]\nevery = \"soon\"\n");
        assert_eq!(codes_of(&text), ["NotADuration"]);
    }

    #[test]
    fn a_grant_of_a_target_may_not_name_a_step_either() {
        let text = runbook(
            "[notify]\n\n[[notify.targets]]\nuses = \"notify\"\ngrants.http = [\"https://${{ steps.a.outputs.host }}\"]\n",
        );
        assert_eq!(codes_of(&text), ["NotifyStepReference"]);
    }
}
