//! `lb-weights`: traffic at the load balancer. Sets the weights of an
//! Application Load Balancer listener's forward action between its target
//! groups (blue/green: `100/0` then `0/100`; a canary: `90/10`), through
//! the host's AWS capability (ELBv2, Query protocol). The weights it found
//! are checkpointed before it changes anything, and `rollback` puts them
//! back.

use runbook_sdk::aws::{self, xml_elements, xml_text};
use runbook_sdk::serde_json::{self, Map, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, JsonSchema, Outcome, Outputs, PlannedAction, Step,
};

struct LbWeights;

/// The listener and the weights to give its target groups.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The AWS region.
    region: String,
    /// The listener's ARN.
    listener: String,
    /// Each target group's ARN and weight (0 to 999), e.g.
    /// `[{ arn = "${{ vars.blue }}", weight = 90 }, { arn = "${{ vars.green }}", weight = 10 }]`.
    /// Target groups left out get no traffic.
    target_groups: Vec<Weighted>,
}

/// One target group and its share.
#[derive(Deserialize, JsonSchema, Clone, PartialEq, Eq, Debug)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Weighted {
    /// The target group's ARN.
    arn: String,
    /// Its relative weight, 0 to 999.
    weight: u16,
}

/// The most target groups one forward action may have.
const MAX_TARGET_GROUPS: usize = 5;

/// The most weight one target group may have.
const MAX_WEIGHT: u16 = 999;

/// The target groups of the listener's forward action and their weights,
/// as ELBv2 describes them.
fn current(params: &Params) -> Result<Vec<Weighted>, Error> {
    let reply = aws::query(
        "elasticloadbalancing",
        &params.region,
        "DescribeListeners",
        &serde_json::json!({ "ListenerArns.member.1": params.listener }),
    )?;
    let Some(actions) = xml_elements(&reply.body, "DefaultActions")
        .into_iter()
        .next()
    else {
        return Err(Error::failed(format!(
            "listener {} was not found or has no default action",
            params.listener
        )));
    };
    if let Some(groups) = xml_elements(actions, "TargetGroups").into_iter().next() {
        return Ok(xml_elements(groups, "member")
            .into_iter()
            .map(|member| Weighted {
                arn: xml_text(member, "TargetGroupArn").unwrap_or_default(),
                weight: xml_text(member, "Weight")
                    .and_then(|weight| weight.parse().ok())
                    .unwrap_or(1),
            })
            .collect());
    }
    // A plain forward to one target group carries all the traffic.
    match xml_text(actions, "TargetGroupArn") {
        Some(arn) => Ok(vec![Weighted { arn, weight: 1 }]),
        None => Err(Error::failed(format!(
            "listener {}'s default action does not forward to target groups: set its weights only on a forward action",
            params.listener
        ))),
    }
}

/// The share of traffic each weight gives, in percent, as people say it.
fn shares(groups: &[Weighted]) -> String {
    let total: u32 = groups.iter().map(|group| u32::from(group.weight)).sum();
    groups
        .iter()
        .map(|group| {
            let percent = (u32::from(group.weight) * 100 + total / 2)
                .checked_div(total)
                .unwrap_or(0);
            format!("{} {percent}%", name_of(&group.arn))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A target group's name, from its ARN (`…:targetgroup/blue/abc123`).
fn name_of(arn: &str) -> &str {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
}

/// Whether two sets of weights send traffic the same way, whatever their
/// order.
fn same(a: &[Weighted], b: &[Weighted]) -> bool {
    let sorted = |groups: &[Weighted]| {
        let mut groups: Vec<(String, u16)> = groups
            .iter()
            .filter(|group| group.weight > 0)
            .map(|group| (group.arn.clone(), group.weight))
            .collect();
        groups.sort();
        groups
    };
    sorted(a) == sorted(b)
}

/// Points the listener's default action at `groups` with their weights.
fn set(params: &Params, groups: &[Weighted]) -> Result<(), Error> {
    let mut query = Map::new();
    query.insert("ListenerArn".into(), Value::from(params.listener.clone()));
    query.insert(
        "DefaultActions.member.1.Type".into(),
        Value::from("forward"),
    );
    for (index, group) in groups.iter().enumerate() {
        let key = format!(
            "DefaultActions.member.1.ForwardConfig.TargetGroups.member.{}",
            index + 1
        );
        query.insert(
            format!("{key}.TargetGroupArn"),
            Value::from(group.arn.clone()),
        );
        query.insert(
            format!("{key}.Weight"),
            Value::from(group.weight.to_string()),
        );
    }
    aws::query(
        "elasticloadbalancing",
        &params.region,
        "ModifyListener",
        &Value::Object(query),
    )?;
    Ok(())
}

impl Step for LbWeights {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        let groups = &params.target_groups;
        if groups.is_empty() || groups.len() > MAX_TARGET_GROUPS {
            return Err(Error::invalid_param(
                "target_groups",
                format!("give 1 to {MAX_TARGET_GROUPS} target groups with their weights"),
            ));
        }
        if let Some(index) = groups.iter().position(|group| group.weight > MAX_WEIGHT) {
            return Err(Error::invalid_param(
                format!("target_groups[{index}].weight"),
                format!("a weight is 0 to {MAX_WEIGHT}"),
            ));
        }
        if groups.iter().all(|group| group.weight == 0) {
            return Err(Error::invalid_param(
                "target_groups",
                "every weight is 0: at least one target group must take traffic",
            ));
        }
        for (index, group) in groups.iter().enumerate() {
            if groups[..index]
                .iter()
                .any(|earlier| earlier.arn == group.arn)
            {
                return Err(Error::invalid_param(
                    format!("target_groups[{index}].arn"),
                    format!("`{}` is listed twice", group.arn),
                ));
            }
        }
        Ok(())
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let before = current(params)?;
        Ok(vec![if same(&before, &params.target_groups) {
            PlannedAction::read(format!(
                "listener already sends {}",
                shares(&params.target_groups)
            ))
        } else {
            PlannedAction::write(format!(
                "listener traffic from {} to {}",
                shares(&before),
                shares(&params.target_groups)
            ))
        }])
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let before = current(&params)?;
        let previous = serde_json::to_string(
            &before
                .iter()
                .map(|group| serde_json::json!({ "arn": group.arn, "weight": group.weight }))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        // What to restore, durable before anything changes.
        runbook_sdk::log::checkpoint("previous", &previous)?;
        if !same(&before, &params.target_groups) {
            set(&params, &params.target_groups)?;
        }
        let after = current(&params)?;
        if !same(&after, &params.target_groups) {
            return Err(Error::failed(format!(
                "the listener sends {} after the change, not {}",
                shares(&after),
                shares(&params.target_groups)
            )));
        }
        Ok(Outcome::new(format!("listener sends {}", shares(&after)))
            .output("weights", shares(&after)))
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let previous: Vec<Weighted> = outputs
            .get("previous")
            .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(|group| {
                        Some(Weighted {
                            arn: group["arn"].as_str()?.to_owned(),
                            weight: u16::try_from(group["weight"].as_u64()?).ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if previous.is_empty() {
            return Err(Error::failed(
                "the run recorded no weights to go back to; set the listener by hand",
            ));
        }
        set(&params, &previous)?;
        Ok(format!("listener back to {}", shares(&previous)))
    }
}

runbook_sdk::export_step!(LbWeights);

#[cfg(test)]
mod tests {
    use super::{Weighted, name_of, same, shares};

    fn group(name: &str, weight: u16) -> Weighted {
        Weighted {
            arn: format!("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/{name}/abc"),
            weight,
        }
    }

    #[test]
    fn weights_are_said_as_shares_of_traffic() {
        assert_eq!(
            shares(&[group("blue", 90), group("green", 10)]),
            "blue 90%, green 10%"
        );
        assert_eq!(shares(&[group("blue", 1)]), "blue 100%");
        assert_eq!(
            shares(&[group("blue", 1), group("green", 2)]),
            "blue 33%, green 67%"
        );
        assert_eq!(name_of("not-an-arn"), "not-an-arn");
    }

    #[test]
    fn the_same_traffic_is_the_same_in_any_order_and_without_zero_weights() {
        assert!(same(
            &[group("blue", 90), group("green", 10)],
            &[group("green", 10), group("blue", 90)]
        ));
        assert!(same(
            &[group("blue", 5)],
            &[group("blue", 5), group("green", 0)]
        ));
        assert!(!same(&[group("blue", 90)], &[group("blue", 100)]));
    }
}
