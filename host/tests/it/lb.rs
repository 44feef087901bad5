//! The `lb-weights` plugin against moto_server's ELBv2: a listener's
//! forward action shifted between a blue and a green target group, read
//! back from the API after `run` and after `rollback`; `plan` says the
//! shift and sends nothing.

use crate::support::{RunOptions, TestRunbook, run};
use runbook::events::Status;
use runbook_testenv::Moto;
use runbook_testenv::moto::query_at;

/// The first `<tag>` text of an XML reply.
fn first(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    xml[start..start + xml[start..].find('<').unwrap()].to_owned()
}

/// An application load balancer whose listener forwards to `blue`, and a
/// `green` target group beside it: moto, the listener and both groups.
struct Estate {
    moto: Moto,
    listener: String,
    blue: String,
    green: String,
}

fn estate() -> Estate {
    let moto = Moto::start();
    let ec2 = |action: &str, params: &[(&str, &str)]| {
        query_at(&moto.url, "ec2", "2016-11-15", action, params)
    };
    let elb = |action: &str, params: &[(&str, &str)]| {
        query_at(
            &moto.url,
            "elasticloadbalancing",
            "2015-12-01",
            action,
            params,
        )
    };
    let vpc = first(&ec2("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]), "vpcId");
    let subnet = |cidr: &str, zone: &str| {
        first(
            &ec2(
                "CreateSubnet",
                &[
                    ("VpcId", &vpc),
                    ("CidrBlock", cidr),
                    ("AvailabilityZone", zone),
                ],
            ),
            "subnetId",
        )
    };
    let (a, b) = (
        subnet("10.0.1.0/24", "us-east-1a"),
        subnet("10.0.2.0/24", "us-east-1b"),
    );
    let balancer = first(
        &elb(
            "CreateLoadBalancer",
            &[
                ("Name", "web"),
                ("Subnets.member.1", &a),
                ("Subnets.member.2", &b),
            ],
        ),
        "LoadBalancerArn",
    );
    let group = |name: &str| {
        first(
            &elb(
                "CreateTargetGroup",
                &[
                    ("Name", name),
                    ("Protocol", "HTTP"),
                    ("Port", "80"),
                    ("VpcId", &vpc),
                ],
            ),
            "TargetGroupArn",
        )
    };
    let (blue, green) = (group("blue"), group("green"));
    let listener = first(
        &elb(
            "CreateListener",
            &[
                ("LoadBalancerArn", &balancer),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &blue),
            ],
        ),
        "ListenerArn",
    );
    Estate {
        moto,
        listener,
        blue,
        green,
    }
}

impl Estate {
    /// The listener's weights as ELBv2 describes them: `(group, weight)`.
    fn weights(&self) -> Vec<(String, u32)> {
        let reply = query_at(
            &self.moto.url,
            "elasticloadbalancing",
            "2015-12-01",
            "DescribeListeners",
            &[("ListenerArns.member.1", &self.listener)],
        );
        let mut found = Vec::new();
        let mut rest = reply.as_str();
        while let Some(at) = rest.find("<TargetGroupArn>") {
            rest = &rest[at..];
            let arn = first(rest, "TargetGroupArn");
            let name = if arn == self.blue {
                "blue"
            } else if arn == self.green {
                "green"
            } else {
                "other"
            };
            let after = &rest["<TargetGroupArn>".len()..];
            let weight = after
                .find("<Weight>")
                .filter(|weight| {
                    after
                        .find("<TargetGroupArn>")
                        .is_none_or(|next| *weight < next)
                })
                .map(|_| first(after, "Weight").parse().unwrap())
                .unwrap_or(1);
            found.push((name.to_owned(), weight));
            rest = after;
        }
        found
    }

    fn runbook(&self, blue: u16, green: u16) -> String {
        format!(
            "[runbook]\nname = \"shift\"\n\n[[steps]]\nid = \"shift\"\nuses = \"lb-weights\"\nwith.region = \"us-east-1\"\nwith.listener = \"{}\"\nwith.target_groups = [{{ arn = \"{}\", weight = {blue} }}, {{ arn = \"{}\", weight = {green} }}]\ngrants.aws = {{ services = [\"elasticloadbalancing\"], actions = [\"DescribeListeners\", \"ModifyListener\"], regions = [\"us-east-1\"] }}\n",
            self.listener, self.blue, self.green
        )
    }

    fn options(&self) -> RunOptions {
        crate::support::aws_at(&self.moto.url)
    }
}

fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter()
        .map(|(name, weight)| ((*name).to_owned(), *weight))
        .collect()
}

#[tokio::test]
async fn a_canary_shift_at_the_listener_is_undone_by_rollback() {
    let estate = tokio::task::spawn_blocking(estate).await.unwrap();
    assert_eq!(estate.weights()[0].0, "blue");

    // Shift, then fail a later step: the rollback puts the weights back.
    let body = format!(
        "{}\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        estate.runbook(90, 10)
    );
    let finished = run(&body, estate.options()).await;
    let (status, summary, outputs) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(finished.report.status, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished.log().contains("listener back to blue 100%"),
        "{}",
        finished.log()
    );
    assert_eq!(outputs["weights"], "blue 90%, green 10%");
    assert!(outputs["previous"].contains(&estate.blue), "{outputs:?}");
    let weights = estate.weights();
    assert!(
        weights == pairs(&[("blue", 1)]) || weights == pairs(&[("blue", 1), ("green", 0)]),
        "{weights:?}"
    );

    // A shift that succeeds stays.
    let finished = run(&estate.runbook(0, 100), estate.options()).await;
    let (status, summary, _) = finished.step("shift");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "listener sends blue 0%, green 100%");
    assert_eq!(estate.weights(), pairs(&[("blue", 0), ("green", 100)]));
}

#[tokio::test]
async fn plan_says_the_shift_and_sends_nothing() {
    let estate = tokio::task::spawn_blocking(estate).await.unwrap();
    let file = TestRunbook::new(&estate.runbook(90, 10));
    let output = crate::support::plan_with_aws(&file.path, &estate.moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("listener traffic from blue 100% to blue 90%, green 10%"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(estate.weights()[0], ("blue".to_owned(), 1));
    assert_eq!(estate.weights().len(), 1);
}

#[test]
fn weights_out_of_range_or_all_zero_are_refused_by_validate() {
    for (blue, green, wanted) in [
        (1000, 0, "target_groups[0].weight"),
        (0, 0, "every weight is 0"),
    ] {
        let body = format!(
            "[runbook]\nname = \"shift\"\n\n[[steps]]\nid = \"shift\"\nuses = \"lb-weights\"\nwith.region = \"us-east-1\"\nwith.listener = \"arn:l\"\nwith.target_groups = [{{ arn = \"arn:b\", weight = {blue} }}, {{ arn = \"arn:g\", weight = {green} }}]\ngrants.aws = {{ services = [\"elasticloadbalancing\"], actions = [\"DescribeListeners\", \"ModifyListener\"], regions = [\"us-east-1\"] }}\n"
        );
        let file = TestRunbook::new(&body);
        let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(wanted), "{said}");
    }
}
