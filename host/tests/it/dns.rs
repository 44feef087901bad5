//! The `dns-record` plugin and the `aws` capability's REST-XML protocol
//! against moto_server's Route 53: a record created, changed and read back
//! from the API after `run` and after `rollback`; `plan` says the change
//! and sends nothing; a call outside `grants.aws` is denied and recorded.

use crate::support::{RunOptions, TestRunbook, run};
use runbook::events::{Decision, Status};
use runbook_testenv::Moto;

/// The first `<tag>` text of an XML reply.
fn first(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    xml[start..start + xml[start..].find('<').unwrap()].to_owned()
}

/// Every action the step may need.
const ALL_ACTIONS: &str = r#"["ListHostedZonesByName", "ListResourceRecordSets", "ChangeResourceRecordSets", "GetChange"]"#;

/// A later step that fails, so that the run rolls back.
const FAILING_STEP: &str = "\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";

/// The hosted zone `example.com.` in a fresh moto_server.
struct Zone {
    moto: Moto,
    id: String,
}

fn zone() -> Zone {
    let moto = Moto::start();
    let created = moto.route53(
        "POST",
        "/2013-04-01/hostedzone",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>example.com.</Name><CallerReference>runbook-test</CallerReference></CreateHostedZoneRequest>",
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let id = first(&created, "Id")
        .trim_start_matches("/hostedzone/")
        .to_owned();
    Zone { moto, id }
}

impl Zone {
    /// Sets A record `name` directly, as it was before the runbook ran.
    fn seed(&self, name: &str, ttl: u32, values: &[&str]) {
        let records: String = values
            .iter()
            .map(|value| format!("<ResourceRecord><Value>{value}</Value></ResourceRecord>"))
            .collect();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Changes><Change><Action>UPSERT</Action><ResourceRecordSet><Name>{name}</Name><Type>A</Type><TTL>{ttl}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        let answer = self.moto.route53(
            "POST",
            &format!("/2013-04-01/hostedzone/{}/rrset/", self.id),
            &body,
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// A record `name` (with its final dot) as Route 53 lists it: its TTL
    /// and values, or `None` when there is none.
    fn record(&self, name: &str) -> Option<(u32, Vec<String>)> {
        let listed = self.moto.route53(
            "GET",
            &format!(
                "/2013-04-01/hostedzone/{}/rrset?name={name}&type=A",
                self.id
            ),
            "",
        );
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        listed
            .split("<ResourceRecordSet>")
            .skip(1)
            .find(|set| set.starts_with(&format!("<Name>{name}</Name><Type>A</Type>")))
            .map(|set| {
                let ttl: u32 = first(set, "TTL").parse().unwrap();
                let values: Vec<String> = set
                    .split("<Value>")
                    .skip(1)
                    .map(|rest| rest[..rest.find('<').unwrap()].to_owned())
                    .collect();
                (ttl, values)
            })
    }

    /// A runbook whose step `dns` sets A record `name` in this zone,
    /// granted `actions` of Route 53.
    fn runbook(&self, name: &str, ttl: u32, values: &[&str], actions: &str) -> String {
        let values = values
            .iter()
            .map(|value| format!("\"{value}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[runbook]\nname = \"dns\"\n\n[[steps]]\nid = \"dns\"\nuses = \"dns-record\"\nwith.zone_id = \"{}\"\nwith.name = \"{name}\"\nwith.type = \"A\"\nwith.ttl = {ttl}\nwith.values = [{values}]\ngrants.aws = {{ services = [\"route53\"], actions = {actions}, regions = [\"us-east-1\"] }}\n",
            self.id
        )
    }

    fn options(&self) -> RunOptions {
        crate::support::aws_at(&self.moto.url)
    }
}

async fn new_zone() -> Zone {
    tokio::task::spawn_blocking(zone).await.unwrap()
}

fn values(list: &[&str]) -> Vec<String> {
    list.iter().map(|value| (*value).to_owned()).collect()
}

#[tokio::test]
async fn a_new_record_is_created_and_waited_for_until_route53_serves_it() {
    let zone = new_zone().await;
    let body = zone.runbook("api.example.com", 60, &["192.0.2.10"], ALL_ACTIONS);
    let finished = run(&body, zone.options()).await;
    let (status, summary, outputs) = finished.step("dns");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(outputs["previous"], "", "{outputs:?}");
    assert!(!outputs["change_id"].is_empty(), "{outputs:?}");
    assert!(!outputs["change_id"].starts_with('/'), "{outputs:?}");
    assert_eq!(outputs["zone_id"], zone.id);
    assert!(
        summary.starts_with("created api.example.com. A 192.0.2.10 (ttl 60)")
            && summary.ends_with("INSYNC"),
        "{summary}"
    );
    // Signed REST-XML calls: the read, the change, and at least one
    // GetChange after the journaled wait.
    assert_eq!(
        finished.aws_decisions("ChangeResourceRecordSets"),
        [Decision::Allowed]
    );
    assert!(
        !finished.aws_decisions("GetChange").is_empty(),
        "{}",
        finished.log()
    );
    assert_eq!(
        zone.record("api.example.com."),
        Some((60, values(&["192.0.2.10"])))
    );

    // Run again: the record already holds the values, nothing is sent.
    let again = run(&body, zone.options()).await;
    let (status, summary, outputs) = again.step("dns");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "api.example.com. A already 192.0.2.10 (ttl 60)");
    assert_eq!(outputs["change_id"], "");
    assert!(again.aws_decisions("ChangeResourceRecordSets").is_empty());
}

#[tokio::test]
async fn a_changed_record_is_put_back_by_rollback() {
    let zone = new_zone().await;
    zone.seed("www.example.com.", 60, &["192.0.2.1", "192.0.2.2"]);
    let body = format!(
        "{}{FAILING_STEP}",
        zone.runbook("www.example.com", 120, &["192.0.2.9"], ALL_ACTIONS)
    );
    let finished = run(&body, zone.options()).await;
    let (status, summary, outputs) = finished.step("dns");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.starts_with(
            "www.example.com. A from 192.0.2.1, 192.0.2.2 (ttl 60) to 192.0.2.9 (ttl 120)"
        ),
        "{summary}"
    );
    assert!(outputs["previous"].contains("192.0.2.2"), "{outputs:?}");
    assert_eq!(finished.report.status, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished
            .log()
            .contains("www.example.com. A back to 192.0.2.1, 192.0.2.2 (ttl 60)"),
        "{}",
        finished.log()
    );
    assert_eq!(
        zone.record("www.example.com."),
        Some((60, values(&["192.0.2.1", "192.0.2.2"])))
    );

    // A change that succeeds stays.
    let body = zone.runbook("www.example.com", 120, &["192.0.2.9"], ALL_ACTIONS);
    let finished = run(&body, zone.options()).await;
    let (status, summary, _) = finished.step("dns");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        zone.record("www.example.com."),
        Some((120, values(&["192.0.2.9"])))
    );
}

#[tokio::test]
async fn rolling_back_a_record_the_run_created_deletes_it() {
    let zone = new_zone().await;
    let body = format!(
        "{}{FAILING_STEP}",
        zone.runbook("new.example.com", 60, &["192.0.2.20"], ALL_ACTIONS)
    );
    let finished = run(&body, zone.options()).await;
    let (status, summary, _) = finished.step("dns");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished.log().contains("deleted new.example.com. A"),
        "{}",
        finished.log()
    );
    assert_eq!(zone.record("new.example.com."), None);
}

#[tokio::test]
async fn plan_says_the_change_and_sends_nothing() {
    let zone = new_zone().await;
    zone.seed("www.example.com.", 60, &["192.0.2.1"]);
    // The zone by its name: planning reads it with ListHostedZonesByName.
    let body = zone
        .runbook("www.example.com", 60, &["192.0.2.9"], ALL_ACTIONS)
        .replace(
            &format!("with.zone_id = \"{}\"", zone.id),
            "with.zone = \"example.com\"",
        );
    let file = TestRunbook::new(&body);
    let output = crate::support::plan_with_aws(&file.path, &zone.moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("www.example.com. A from 192.0.2.1 (ttl 60) to 192.0.2.9 (ttl 60)"),
        "{said}"
    );
    assert!(
        stdout.contains("wait until Route 53 serves it (INSYNC)"),
        "{said}"
    );
    assert_eq!(
        zone.record("www.example.com."),
        Some((60, values(&["192.0.2.1"])))
    );
}

#[tokio::test]
async fn a_change_outside_the_grant_is_denied_recorded_and_never_sent() {
    let zone = new_zone().await;
    let body = zone.runbook(
        "api.example.com",
        60,
        &["192.0.2.10"],
        r#"["ListResourceRecordSets", "GetChange"]"#,
    );
    let finished = run(&body, zone.options()).await;
    let (status, summary, _) = finished.step("dns");
    assert_eq!(status, Status::Denied, "{summary}");
    assert!(
        summary.contains("action `ChangeResourceRecordSets` is not granted"),
        "{summary}"
    );
    // The read was made; the change was denied and recorded as such.
    assert!(
        finished
            .aws_decisions("ListResourceRecordSets")
            .contains(&Decision::Allowed)
    );
    assert_eq!(
        finished.aws_decisions("ChangeResourceRecordSets"),
        [Decision::Denied]
    );
    assert_eq!(zone.record("api.example.com."), None);
}

#[test]
fn a_record_with_both_values_and_an_alias_is_refused_by_validate() {
    let body = "[runbook]\nname = \"dns\"\n\n[[steps]]\nid = \"dns\"\nuses = \"dns-record\"\nwith.zone_id = \"Z1\"\nwith.name = \"api.example.com\"\nwith.type = \"A\"\nwith.values = [\"192.0.2.1\"]\nwith.alias = { dns_name = \"lb.example.com\", zone_id = \"Z2\" }\ngrants.aws = { services = [\"route53\"], actions = [\"ListResourceRecordSets\", \"ChangeResourceRecordSets\", \"GetChange\"], regions = [\"us-east-1\"] }\n";
    let file = TestRunbook::new(body);
    let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("give `values` or an `alias`, not both"),
        "{said}"
    );
}
