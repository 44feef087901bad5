//! `requires` of `[environments.NAME]`, the promotion gate: it names
//! another environment of the runbook and declared parameters, its
//! durations read and `within` is no shorter than `soaked`, and no
//! environments require each other in a circle. Whether a run meets it is
//! the promotion rule's (`promotion.rs`) to say, at run time.

use super::limits::duration;
use crate::diagnostic::{Diagnostics, Source, ValuePath, did_you_mean};
use crate::runbook::model::RawRequires;
use crate::runbook::{Code, Environment, ParamSpec, Promotion};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What `requires` is checked against: the runbook's environments and
/// parameters.
pub(super) struct Names<'a> {
    /// Every environment the runbook declares.
    pub(super) environments: Vec<&'a str>,
    /// Every declared parameter.
    pub(super) params: &'a BTreeMap<String, ParamSpec>,
}

/// Checks the `requires` at `path` (`environments.NAME`); what is wrong is
/// reported and the rest kept, so that one typo reports only itself.
pub(super) fn requires(
    source: &Arc<Source>,
    path: &ValuePath,
    raw: RawRequires,
    names: &Names<'_>,
    problems: &mut Diagnostics,
) -> Promotion {
    let at = path.key("requires");
    if !names.environments.contains(&raw.environment.as_str()) {
        let hint = match did_you_mean(&raw.environment, names.environments.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!(
                "name one of this runbook's environments: {}",
                names.environments.join(", ")
            ),
        };
        problems.push(
            Code::UnknownRequiredEnvironment
                .diagnostic(format!(
                    "`requires` names environment `{}`, which this runbook does not declare",
                    raw.environment
                ))
                .at(source, &at.key("environment"))
                .hint(hint),
        );
    }
    for (position, name) in raw.same.iter().enumerate() {
        if !names.params.contains_key(name) {
            let hint = match did_you_mean(name, names.params.keys().map(String::as_str)) {
                Some(close) => format!("did you mean `{close}`?"),
                None if names.params.is_empty() => {
                    "declare it under `[params.NAME]` first".to_owned()
                }
                None => format!(
                    "name a parameter of `[params]`: {}",
                    names
                        .params
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            problems.push(
                Code::UnknownSameParam
                    .diagnostic(format!(
                        "`requires.same` names parameter `{name}`, which this runbook does not declare"
                    ))
                    .at(source, &at.key("same").index(position))
                    .hint(hint),
            );
        }
    }
    let hint = "write it like \"24h\", \"30m\" or \"7d\"";
    let soaked = raw.soaked.as_deref().map_or(Duration::ZERO, |text| {
        duration(
            source,
            text,
            &at.key("soaked"),
            Duration::ZERO,
            hint,
            problems,
        )
    });
    let within = raw.within.as_deref().map(|text| {
        duration(
            source,
            text,
            &at.key("within"),
            Duration::MAX,
            hint,
            problems,
        )
    });
    if let Some(limit) = within
        && limit < soaked
    {
        problems.push(
            Code::WithinShorterThanSoaked
                .diagnostic(format!(
                    "`requires.within` ({}) is shorter than `soaked` ({}): no run could ever be old enough and young enough",
                    raw.within.as_deref().unwrap_or_default(),
                    raw.soaked.as_deref().unwrap_or_default()
                ))
                .at(source, &at.key("within"))
                .hint("make `within` at least as long as `soaked`"),
        );
    }
    Promotion {
        environment: raw.environment,
        same: raw.same,
        soaked,
        within,
    }
}

/// Reports environments that require each other in a circle (one that
/// requires itself included): no run of any of them could ever start.
/// Each circle is reported once, at the `requires` of its first member
/// in name order.
pub(super) fn circles(
    source: &Arc<Source>,
    environments: &BTreeMap<String, Environment>,
    problems: &mut Diagnostics,
) {
    let next = |name: &str| {
        environments
            .get(name)
            .and_then(|environment| environment.requires.as_ref())
            .map(|requires| requires.environment.as_str())
    };
    for start in environments.keys() {
        let mut chain = vec![start.as_str()];
        let mut current = start.as_str();
        while let Some(required) = next(current) {
            if required == start {
                // Reported at the member first in name order, once.
                if chain.iter().all(|member| start.as_str() <= *member) {
                    chain.push(start);
                    problems.push(
                        Code::RequiresCircle
                            .diagnostic(format!(
                                "environments require each other in a circle ({}): no run of them could ever start",
                                chain.join(" requires ")
                            ))
                            .at(
                                source,
                                &ValuePath::default()
                                    .key("environments")
                                    .key(start)
                                    .key("requires")
                                    .key("environment"),
                            )
                            .hint("the environment deployed first must have no `requires`"),
                    );
                }
                break;
            }
            if chain.contains(&required) {
                // A circle that does not pass through `start`: its own
                // members report it.
                break;
            }
            chain.push(required);
            current = required;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::runbook::validate::testing::codes_of;

    /// A runbook with a `version` parameter, `staging`, and `production`
    /// whose `requires` is `requires`.
    fn runbook(requires: &str) -> String {
        format!(
            "[runbook]\nname = \"r\"\n\n[params.version]\nrequired = true\n\n[environments.staging]\n\n[environments.production]\nrequires = {requires}\n\n[plugins]\nnoop = \"noop.wasm\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n"
        )
    }

    #[test]
    fn a_requirement_of_staging_with_the_same_version_is_valid() {
        let text = runbook(
            "{ environment = \"staging\", same = [\"version\"], soaked = \"24h\", within = \"7d\" }",
        );
        let parsed = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", &text));
        let requires = parsed.unwrap().environments["production"]
            .requires
            .clone()
            .unwrap();
        assert_eq!(requires.environment, "staging");
        assert_eq!(requires.same, ["version"]);
        assert_eq!(requires.soaked.as_secs(), 24 * 3600);
        assert_eq!(
            requires.within.map(|within| within.as_secs()),
            Some(7 * 86_400)
        );
    }

    #[test]
    fn only_the_environment_is_needed_and_any_success_then_counts() {
        let text = runbook("{ environment = \"staging\" }");
        let parsed = crate::runbook::parse(crate::diagnostic::Source::new("r.toml", &text));
        let requires = parsed.unwrap().environments["production"]
            .requires
            .clone()
            .unwrap();
        assert!(requires.same.is_empty());
        assert_eq!(requires.soaked, std::time::Duration::ZERO);
        assert_eq!(requires.within, None);
    }

    #[test]
    fn unknown_names_and_wrong_durations_are_each_reported() {
        assert_eq!(
            codes_of(&runbook("{ environment = \"stagin\" }")),
            ["UnknownRequiredEnvironment"]
        );
        assert_eq!(
            codes_of(&runbook(
                "{ environment = \"staging\", same = [\"version\", \"commit\"] }"
            )),
            ["UnknownSameParam"]
        );
        assert_eq!(
            codes_of(&runbook(
                "{ environment = \"staging\", soaked = \"a day\", within = \"31d\" }"
            )),
            ["NotADuration", "DurationTooLong"]
        );
        assert_eq!(
            codes_of(&runbook(
                "{ environment = \"staging\", soaked = \"24h\", within = \"1h\" }"
            )),
            ["WithinShorterThanSoaked"]
        );
    }

    #[test]
    fn environments_that_require_each_other_are_reported_once() {
        let mut text = runbook("{ environment = \"staging\" }");
        text = text.replace(
            "[environments.staging]\n",
            "[environments.staging]\nrequires = { environment = \"production\" }\n",
        );
        assert_eq!(codes_of(&text), ["RequiresCircle"]);
        assert_eq!(
            codes_of(&runbook("{ environment = \"production\" }")),
            ["RequiresCircle"],
            "an environment that requires itself"
        );
    }
}
