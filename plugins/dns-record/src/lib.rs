//! `dns-record`: one Route 53 record set, set to the values (or the alias)
//! a runbook gives, through the host's AWS capability (Route 53's REST-XML
//! API). The record set found before is checkpointed before anything
//! changes; the change is then waited for, a round at a time with the
//! contract's durable wait, until Route 53 reports it `INSYNC`. `rollback`
//! puts the previous record set back, or deletes the one the run created.

use runbook_sdk::aws::{self, ROUTE53_XMLNS, xml_elements, xml_escape, xml_text};
use runbook_sdk::serde_json;
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    RunResult, Serialize, Step, Wait, unresolved,
};
use std::time::Duration;

struct DnsRecord;

/// Which record set, and what it should hold.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The hosted zone's id (`Z0123456789ABCDEFGHIJ`); or give `zone`.
    #[serde(default)]
    zone_id: Option<String>,
    /// The hosted zone's name (`example.com`), looked up with
    /// `ListHostedZonesByName`, instead of `zone_id`.
    #[serde(default)]
    zone: Option<String>,
    /// The record's name, `www.example.com` (the final dot is optional).
    name: String,
    /// The record's type: `A`, `AAAA`, `CNAME`, `TXT`, `MX`, ...
    #[serde(rename = "type")]
    record_type: String,
    /// How long resolvers may cache it, in seconds (default 300); not for
    /// an alias, which has its target's.
    #[serde(default)]
    ttl: Option<u32>,
    /// The record's values (`["192.0.2.10"]`); a TXT value without quotes
    /// is quoted. Or give `alias`.
    #[serde(default)]
    values: Vec<String>,
    /// Instead of `values`: an alias to an AWS resource (a load balancer,
    /// a CloudFront distribution).
    #[serde(default)]
    alias: Option<Alias>,
    /// A weighted record's identifier among the records of its name and
    /// type; give `weight` with it.
    #[serde(default)]
    set_identifier: Option<String>,
    /// A weighted record's weight, 0 to 255.
    #[serde(default)]
    weight: Option<u8>,
    /// The region the calls are made (and granted) in: Route 53 is global,
    /// signed in `us-east-1`.
    #[serde(default = "default_region")]
    region: String,
    /// Wait until Route 53 reports the change `INSYNC` (served by all its
    /// name servers).
    #[serde(default = "yes")]
    wait: bool,
    /// How long to wait for `INSYNC` before failing (default 10m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn yes() -> bool {
    true
}

/// An alias target, as a runbook writes it.
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Alias {
    /// The target's DNS name (`my-lb-123.us-east-1.elb.amazonaws.com`).
    dns_name: String,
    /// The target's hosted zone id (a load balancer's
    /// `CanonicalHostedZoneId`; `Z2FDTNDATAQYW2` for CloudFront).
    zone_id: String,
    /// Answer with the alias only while its target is healthy.
    #[serde(default)]
    evaluate_health: bool,
}

/// How long the step waits for `INSYNC` when the runbook does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// When the first `GetChange` is made after the change was submitted.
const FIRST_CHECK: Duration = Duration::from_secs(1);

/// Time between two `GetChange`s after the first.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The TTL of a record with values when the runbook gives none.
const DEFAULT_TTL: u32 = 300;

/// The largest TTL Route 53 takes.
const MAX_TTL: u32 = 2_147_483_647;

/// The record types Route 53 serves.
const TYPES: &[&str] = &[
    "A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "MX", "NAPTR", "NS", "PTR", "SOA", "SPF", "SRV",
    "SSHFP", "SVCB", "TLSA", "TXT",
];

/// Routing policies this plugin does not model: a record set that has one
/// is neither changed nor restored by it.
const UNSUPPORTED: &[&str] = &[
    "Region",
    "Failover",
    "GeoLocation",
    "GeoProximityLocation",
    "MultiValueAnswer",
    "CidrRoutingConfig",
    "TrafficPolicyInstanceId",
];

/// A record set as Route 53 has it (or should): what is compared, shown,
/// sent, and kept for rollback (the `previous` output is this as JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde")]
struct RecordSet {
    /// The name, in lower case with its final dot.
    name: String,
    #[serde(rename = "type")]
    record_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u8>,
    /// None for an alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    /// Empty for an alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alias: Option<AliasTarget>,
    /// Kept as found, so that a restored record keeps its health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_check_id: Option<String>,
}

/// An alias target as Route 53 has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde")]
struct AliasTarget {
    dns_name: String,
    zone_id: String,
    evaluate_health: bool,
}

impl RecordSet {
    /// What the runbook asks for.
    fn wanted(params: &Params) -> Self {
        let record_type = params.record_type.trim().to_ascii_uppercase();
        let alias = params.alias.as_ref().map(|alias| AliasTarget {
            dns_name: fqdn(&alias.dns_name),
            zone_id: alias.zone_id.trim().to_owned(),
            evaluate_health: alias.evaluate_health,
        });
        let (ttl, values) = if alias.is_some() {
            (None, Vec::new())
        } else {
            (
                Some(params.ttl.unwrap_or(DEFAULT_TTL)),
                params
                    .values
                    .iter()
                    .map(|value| value_for(&record_type, value))
                    .collect(),
            )
        };
        RecordSet {
            name: fqdn(&params.name),
            set_identifier: params.set_identifier.clone(),
            weight: params.weight,
            ttl,
            values,
            alias,
            health_check_id: None,
            record_type,
        }
    }

    /// `www.example.com. A`, with the set identifier of a weighted record.
    fn label(&self) -> String {
        match &self.set_identifier {
            Some(identifier) => format!("{} {} `{identifier}`", self.name, self.record_type),
            None => format!("{} {}", self.name, self.record_type),
        }
    }

    /// What it answers: `192.0.2.1, 192.0.2.2 (ttl 60)`, `alias to
    /// lb.example.com. (zone Z1)`, with its weight and health check.
    fn describe(&self) -> String {
        let mut text = match &self.alias {
            Some(alias) => format!("alias to {} (zone {})", alias.dns_name, alias.zone_id),
            None => format!(
                "{} (ttl {})",
                self.values.join(", "),
                self.ttl.unwrap_or_default()
            ),
        };
        if let Some(weight) = self.weight {
            text.push_str(&format!(", weight {weight}"));
        }
        if let Some(check) = &self.health_check_id {
            text.push_str(&format!(", health check {check}"));
        }
        text
    }

    /// Whether two record sets answer alike: names compared as DNS does,
    /// values in any order.
    fn same(&self, other: &RecordSet) -> bool {
        self.comparable() == other.comparable()
    }

    fn comparable(&self) -> RecordSet {
        let mut copy = self.clone();
        copy.name = same_name(&copy.name);
        copy.values.sort();
        if let Some(alias) = &mut copy.alias {
            alias.dns_name = same_name(&alias.dns_name);
            // An alias has no TTL of its own (moto reports 0).
            copy.ttl = None;
        }
        copy
    }

    /// The `<ResourceRecordSet>` element of a change, its children in the
    /// order Route 53's schema wants.
    fn to_xml(&self) -> String {
        let mut xml = format!(
            "<ResourceRecordSet><Name>{}</Name><Type>{}</Type>",
            xml_escape(&self.name),
            xml_escape(&self.record_type)
        );
        if let Some(identifier) = &self.set_identifier {
            xml.push_str(&format!(
                "<SetIdentifier>{}</SetIdentifier>",
                xml_escape(identifier)
            ));
        }
        if let Some(weight) = self.weight {
            xml.push_str(&format!("<Weight>{weight}</Weight>"));
        }
        match &self.alias {
            Some(alias) => xml.push_str(&format!(
                "<AliasTarget><HostedZoneId>{}</HostedZoneId><DNSName>{}</DNSName><EvaluateTargetHealth>{}</EvaluateTargetHealth></AliasTarget>",
                xml_escape(&alias.zone_id),
                xml_escape(&alias.dns_name),
                alias.evaluate_health
            )),
            None => {
                xml.push_str(&format!(
                    "<TTL>{}</TTL><ResourceRecords>",
                    self.ttl.unwrap_or(DEFAULT_TTL)
                ));
                for value in &self.values {
                    xml.push_str(&format!(
                        "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                        xml_escape(value)
                    ));
                }
                xml.push_str("</ResourceRecords>");
            }
        }
        if let Some(check) = &self.health_check_id {
            xml.push_str(&format!(
                "<HealthCheckId>{}</HealthCheckId>",
                xml_escape(check)
            ));
        }
        xml.push_str("</ResourceRecordSet>");
        xml
    }

    /// A `<ResourceRecordSet>` of a listing. Routing policies this plugin
    /// does not model are an error naming them.
    fn from_xml(xml: &str) -> Result<Self, Error> {
        let name = fqdn(&xml_text(xml, "Name").unwrap_or_default());
        let record_type = xml_text(xml, "Type").unwrap_or_default();
        if let Some(policy) = UNSUPPORTED
            .iter()
            .find(|policy| xml.contains(&format!("<{policy}>")))
        {
            return Err(Error::failed(format!(
                "{name} {record_type} has a `{policy}` routing policy, which dns-record does not change or restore: change it by hand or with another step"
            )));
        }
        let alias = xml_elements(xml, "AliasTarget")
            .first()
            .map(|target| AliasTarget {
                dns_name: xml_text(target, "DNSName").unwrap_or_default(),
                zone_id: xml_text(target, "HostedZoneId").unwrap_or_default(),
                evaluate_health: xml_text(target, "EvaluateTargetHealth").as_deref()
                    == Some("true"),
            });
        let values = xml_elements(xml, "ResourceRecord")
            .into_iter()
            .filter_map(|record| xml_text(record, "Value"))
            .collect();
        Ok(RecordSet {
            set_identifier: xml_text(xml, "SetIdentifier"),
            weight: xml_text(xml, "Weight").and_then(|weight| weight.parse().ok()),
            ttl: if alias.is_some() {
                None
            } else {
                xml_text(xml, "TTL").and_then(|ttl| ttl.parse().ok())
            },
            values,
            alias,
            health_check_id: xml_text(xml, "HealthCheckId"),
            name,
            record_type,
        })
    }
}

/// A DNS name as Route 53 writes it: lower case, with its final dot.
fn fqdn(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    }
}

/// A name for comparing: Route 53 lists a `*` as `\052`.
fn same_name(name: &str) -> String {
    fqdn(name).replace("\\052", "*")
}

/// A value as Route 53 takes it: TXT and SPF strings are quoted (their
/// `"` and `\` escaped), in pieces of at most 255 characters.
fn value_for(record_type: &str, value: &str) -> String {
    let value = value.trim();
    if !matches!(record_type, "TXT" | "SPF") || value.starts_with('"') {
        return value.to_owned();
    }
    let characters: Vec<char> = value.chars().collect();
    characters
        .chunks(255)
        .map(|piece| {
            let piece: String = piece.iter().collect();
            format!("\"{}\"", piece.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A hosted zone id as the API paths want it: `Z1`, not `/hostedzone/Z1`.
fn short_zone_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('/')
        .trim_start_matches("hostedzone/")
        .to_owned()
}

/// A change id as the API paths want it: `C1`, not `/change/C1`.
fn short_change_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('/')
        .trim_start_matches("change/")
        .to_owned()
}

/// Milliseconds since the Unix epoch, from the host's wall clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Params {
    /// How long to wait for `INSYNC`.
    fn wait_limit(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, HumanDuration::get)
    }

    /// The hosted zone's id: `zone_id`, or the one public or private zone
    /// named `zone`.
    fn hosted_zone(&self) -> Result<String, Error> {
        if let Some(id) = &self.zone_id {
            return Ok(short_zone_id(id));
        }
        let name = fqdn(self.zone.as_deref().unwrap_or_default());
        let reply = aws::rest(
            "route53",
            &self.region,
            "ListHostedZonesByName",
            "GET",
            "/2013-04-01/hostedzonesbyname",
        )
        .query("dnsname", &name)
        .query("maxitems", "10")
        .send()?;
        let zones: Vec<String> = xml_elements(&reply.body, "HostedZone")
            .into_iter()
            .filter(|zone| {
                xml_text(zone, "Name").is_some_and(|found| same_name(&found) == same_name(&name))
            })
            .filter_map(|zone| xml_text(zone, "Id"))
            .map(|id| short_zone_id(&id))
            .collect();
        match zones.as_slice() {
            [id] => Ok(id.clone()),
            [] => Err(Error::failed(format!(
                "no hosted zone is named {name}: check `zone`, or give `zone_id`"
            ))),
            several => Err(Error::failed(format!(
                "{} hosted zones are named {name} ({}): give `zone_id`",
                several.len(),
                several.join(", ")
            ))),
        }
    }

    /// The record set of `wanted`'s name, type and set identifier in the
    /// zone, if there is one.
    fn current(&self, zone_id: &str, wanted: &RecordSet) -> Result<Option<RecordSet>, Error> {
        let path = format!("/2013-04-01/hostedzone/{zone_id}/rrset");
        let mut start = (
            wanted.name.clone(),
            wanted.record_type.clone(),
            wanted.set_identifier.clone(),
        );
        // A listing starts at a name and type; the record sets of one name
        // and type (weighted ones) may span pages.
        for _ in 0..20 {
            let mut request = aws::rest(
                "route53",
                &self.region,
                "ListResourceRecordSets",
                "GET",
                &path,
            )
            .query("name", &start.0)
            .query("type", &start.1);
            if let Some(identifier) = &start.2 {
                request = request.query("identifier", identifier);
            }
            let reply = request.query("maxitems", "100").send()?;
            for set in xml_elements(&reply.body, "ResourceRecordSet") {
                let found_name = fqdn(&xml_text(set, "Name").unwrap_or_default());
                let found_type = xml_text(set, "Type").unwrap_or_default();
                if same_name(&found_name) == same_name(&wanted.name)
                    && found_type == wanted.record_type
                    && xml_text(set, "SetIdentifier") == wanted.set_identifier
                {
                    return RecordSet::from_xml(set).map(Some);
                }
            }
            let next_name = xml_text(&reply.body, "NextRecordName");
            let next_type = xml_text(&reply.body, "NextRecordType");
            let more = xml_text(&reply.body, "IsTruncated").as_deref() == Some("true");
            match (more, next_name, next_type) {
                (true, Some(name), Some(record_type))
                    if same_name(&name) == same_name(&wanted.name)
                        && record_type == wanted.record_type =>
                {
                    start = (
                        name,
                        record_type,
                        xml_text(&reply.body, "NextRecordIdentifier"),
                    );
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Sends one change (`UPSERT`, `DELETE`) of `set`; its change id.
    fn change(&self, zone_id: &str, action: &str, set: &RecordSet) -> Result<String, Error> {
        let comment: String = format!("runbook dns-record: {action} {}", set.label())
            .chars()
            .take(256)
            .collect();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"{ROUTE53_XMLNS}\"><ChangeBatch><Comment>{}</Comment><Changes><Change><Action>{action}</Action>{}</Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
            xml_escape(&comment),
            set.to_xml()
        );
        let reply = aws::rest(
            "route53",
            &self.region,
            "ChangeResourceRecordSets",
            "POST",
            &format!("/2013-04-01/hostedzone/{zone_id}/rrset/"),
        )
        .xml(body)
        .send()?;
        xml_text(&reply.body, "Id")
            .map(|id| short_change_id(&id))
            .ok_or_else(|| {
                Error::failed(format!(
                    "Route 53 took the {action} of {} but named no change",
                    set.label()
                ))
            })
    }

    /// A change's status: `PENDING` or `INSYNC`.
    fn change_status(&self, change_id: &str) -> Result<String, Error> {
        let reply = aws::rest(
            "route53",
            &self.region,
            "GetChange",
            "GET",
            &format!("/2013-04-01/change/{change_id}"),
        )
        .send()?;
        xml_text(&reply.body, "Status")
            .ok_or_else(|| Error::failed(format!("Route 53 gave no status for change {change_id}")))
    }

    /// Polls a change within this call (for `rollback`, which has no
    /// rounds) until it is `INSYNC`, the wait's timeout passes, or the
    /// step's time nearly runs out; the last status.
    fn settle(&self, change_id: &str) -> Result<String, Error> {
        let started = now_ms();
        loop {
            let status = self.change_status(change_id)?;
            let waited = Duration::from_millis(now_ms().saturating_sub(started));
            if status == "INSYNC"
                || waited >= self.wait_limit()
                || runbook_sdk::remaining() < CHECK_EVERY * 2
            {
                return Ok(status);
            }
            runbook_sdk::sleep(CHECK_EVERY)?;
        }
    }
}

/// What the step keeps between its rounds: the change it waits for.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Pending {
    zone_id: String,
    change_id: String,
    /// The record set the change replaced; none when it created one.
    previous: Option<RecordSet>,
    /// What the record set is now, in words, for the summary.
    now: String,
    /// When the change was submitted, in milliseconds since the epoch.
    submitted_ms: u64,
}

/// `previous` as the step's output: the record set as JSON, or empty when
/// there was none.
fn previous_json(previous: Option<&RecordSet>) -> String {
    previous
        .map(|set| serde_json::to_string(set).unwrap_or_default())
        .unwrap_or_default()
}

/// The step's outcome once the change is done.
fn done(summary: String, zone_id: &str, change_id: &str, previous: Option<&RecordSet>) -> Outcome {
    Outcome::new(summary)
        .output("change_id", change_id)
        .output("previous", previous_json(previous))
        .output("zone_id", zone_id)
}

impl Step for DnsRecord {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        match (&params.zone_id, &params.zone) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_param(
                    "zone",
                    "give `zone_id` or `zone`, not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid_param(
                    "zone_id",
                    "give the hosted zone: its `zone_id`, or its name as `zone`",
                ));
            }
            (Some(id), None) if !unresolved(id) => {
                let id = short_zone_id(id);
                if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
                    return Err(Error::invalid_param(
                        "zone_id",
                        format!(
                            "`{id}` is not a hosted zone id (letters and digits, `Z0123456789ABC`)"
                        ),
                    ));
                }
            }
            _ => {}
        }
        if params.name.trim().is_empty() {
            return Err(Error::invalid_param("name", "give the record's name"));
        }
        let record_type = params.record_type.trim().to_ascii_uppercase();
        if !unresolved(&record_type) && !TYPES.contains(&record_type.as_str()) {
            return Err(Error::invalid_param(
                "type",
                format!(
                    "`{}` is not a record type Route 53 serves ({})",
                    params.record_type,
                    TYPES.join(", ")
                ),
            ));
        }
        match (&params.alias, params.values.is_empty()) {
            (Some(_), false) => {
                return Err(Error::invalid_param(
                    "alias",
                    "give `values` or an `alias`, not both",
                ));
            }
            (None, true) => {
                return Err(Error::invalid_param(
                    "values",
                    "give the record's `values`, or an `alias`",
                ));
            }
            (Some(_), true) if params.ttl.is_some() => {
                return Err(Error::invalid_param(
                    "ttl",
                    "an alias has no TTL of its own: Route 53 uses its target's",
                ));
            }
            _ => {}
        }
        if record_type == "CNAME" && params.values.len() > 1 {
            return Err(Error::invalid_param(
                "values",
                "a CNAME record has exactly one value",
            ));
        }
        if params.ttl.is_some_and(|ttl| ttl > MAX_TTL) {
            return Err(Error::invalid_param(
                "ttl",
                format!("a TTL is at most {MAX_TTL} seconds"),
            ));
        }
        match (&params.set_identifier, params.weight) {
            (Some(_), None) => Err(Error::invalid_param(
                "weight",
                "a weighted record needs its `weight` with its `set_identifier`",
            )),
            (None, Some(_)) => Err(Error::invalid_param(
                "set_identifier",
                "a weighted record needs its `set_identifier` with its `weight`",
            )),
            (Some(identifier), Some(_))
                if identifier.is_empty() || identifier.chars().count() > 128 =>
            {
                Err(Error::invalid_param(
                    "set_identifier",
                    "a set identifier is 1 to 128 characters",
                ))
            }
            _ => Ok(()),
        }
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let wanted = RecordSet::wanted(params);
        let zone_unknown = params.zone_id.as_deref().is_some_and(unresolved)
            || params.zone.as_deref().is_some_and(unresolved);
        if zone_unknown || unresolved(&wanted.name) {
            // The zone or the name comes from an earlier step: nothing to
            // read yet.
            return Ok(vec![PlannedAction::write(format!(
                "set {} to {}",
                wanted.label(),
                wanted.describe()
            ))]);
        }
        let zone_id = params.hosted_zone()?;
        let before = params.current(&zone_id, &wanted)?;
        let mut actions = vec![match &before {
            Some(set) if set.same(&wanted) => {
                PlannedAction::read(format!("{} already {}", wanted.label(), wanted.describe()))
            }
            Some(set) => PlannedAction::write(format!(
                "{} from {} to {}",
                wanted.label(),
                set.describe(),
                wanted.describe()
            )),
            None => {
                PlannedAction::write(format!("create {} {}", wanted.label(), wanted.describe()))
            }
        }];
        if params.wait && !before.as_ref().is_some_and(|set| set.same(&wanted)) {
            actions.push(PlannedAction::read(format!(
                "wait until Route 53 serves it (INSYNC), at most {}",
                HumanDuration(params.wait_limit())
            )));
        }
        Ok(actions)
    }

    /// The first round reads the record set, checkpoints it, and submits
    /// the `UPSERT`; each later round asks `GetChange` whether Route 53
    /// serves it yet, with a journaled wait between rounds.
    fn round(params: Params, state: Option<String>) -> Result<RunResult, Error> {
        if let Some(pending) = runbook_sdk::state::<Pending>(state.as_deref())? {
            let status = params.change_status(&pending.change_id)?;
            if status == "INSYNC" {
                return Ok(RunResult::Done(done(
                    format!("{}, change {} INSYNC", pending.now, pending.change_id),
                    &pending.zone_id,
                    &pending.change_id,
                    pending.previous.as_ref(),
                )));
            }
            let waited = Duration::from_millis(now_ms().saturating_sub(pending.submitted_ms));
            if waited >= params.wait_limit() {
                return Err(Error::failed(format!(
                    "change {} is still {status} after {}: Route 53 has the record set, but not all its name servers serve it yet",
                    pending.change_id,
                    HumanDuration(params.wait_limit())
                )));
            }
            let status = format!("change {} {status}", pending.change_id);
            return Ok(RunResult::Wait(Wait::after(
                CHECK_EVERY.min(params.wait_limit() - waited),
                &pending,
                status,
            )));
        }

        let zone_id = params.hosted_zone()?;
        let wanted = RecordSet::wanted(&params);
        let before = params.current(&zone_id, &wanted)?;
        // What to restore, durable before anything changes.
        runbook_sdk::log::checkpoint("zone_id", &zone_id)?;
        runbook_sdk::log::checkpoint("previous", previous_json(before.as_ref()))?;
        if let Some(set) = &before
            && set.same(&wanted)
        {
            return Ok(RunResult::Done(done(
                format!("{} already {}", wanted.label(), wanted.describe()),
                &zone_id,
                "",
                before.as_ref(),
            )));
        }
        let change_id = params.change(&zone_id, "UPSERT", &wanted)?;
        let now = match &before {
            Some(set) => format!(
                "{} from {} to {}",
                wanted.label(),
                set.describe(),
                wanted.describe()
            ),
            None => format!("created {} {}", wanted.label(), wanted.describe()),
        };
        runbook_sdk::log::info(format!("{now}: change {change_id} submitted"));
        if !params.wait {
            return Ok(RunResult::Done(done(
                format!("{now}, change {change_id} submitted"),
                &zone_id,
                &change_id,
                before.as_ref(),
            )));
        }
        let pending = Pending {
            zone_id,
            change_id,
            previous: before,
            now,
            submitted_ms: now_ms(),
        };
        let status = format!("change {} submitted", pending.change_id);
        Ok(RunResult::Wait(Wait::after(FIRST_CHECK, &pending, status)))
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let Some(previous) = outputs.get("previous") else {
            return Ok(
                "nothing to undo: the run recorded no record set, so it changed none".to_owned(),
            );
        };
        let zone_id = match outputs.get("zone_id") {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => params.hosted_zone()?,
        };
        let wanted = RecordSet::wanted(&params);
        let (summary, change_id) = if previous.is_empty() {
            // The run created the record set: delete it, as it is now,
            // unless someone changed it since.
            match params.current(&zone_id, &wanted)? {
                None => return Ok(format!("{} already absent", wanted.label())),
                Some(now) if now.same(&wanted) => {
                    let change_id = params.change(&zone_id, "DELETE", &now)?;
                    (format!("deleted {}", wanted.label()), change_id)
                }
                Some(now) => {
                    return Err(Error::failed(format!(
                        "{} was created by the run and changed since (now {}): not deleting it; delete it by hand if it should go",
                        wanted.label(),
                        now.describe()
                    )));
                }
            }
        } else {
            let before: RecordSet = serde_json::from_str(previous).map_err(|error| {
                Error::failed(format!(
                    "cannot read the record set the run recorded ({error}); restore it by hand: {previous}"
                ))
            })?;
            let change_id = params.change(&zone_id, "UPSERT", &before)?;
            (
                format!("{} back to {}", before.label(), before.describe()),
                change_id,
            )
        };
        if !params.wait {
            return Ok(format!("{summary}, change {change_id} submitted"));
        }
        let status = params.settle(&change_id)?;
        Ok(format!("{summary}, change {change_id} {status}"))
    }
}

runbook_sdk::export_step!(DnsRecord);

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, ttl: u32, values: &[&str]) -> RecordSet {
        RecordSet {
            name: name.to_owned(),
            record_type: "A".to_owned(),
            set_identifier: None,
            weight: None,
            ttl: Some(ttl),
            values: values.iter().map(|value| (*value).to_owned()).collect(),
            alias: None,
            health_check_id: None,
        }
    }

    #[test]
    fn a_listed_record_set_is_read_and_written_back_alike() {
        let listed = "<ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><SetIdentifier>blue</SetIdentifier><Weight>90</Weight><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord><ResourceRecord><Value>192.0.2.2</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>";
        let found = RecordSet::from_xml(listed).unwrap();
        assert_eq!(found.values, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(found.set_identifier.as_deref(), Some("blue"));
        assert_eq!(found.weight, Some(90));
        assert_eq!(found.to_xml(), listed);
        assert_eq!(found.label(), "www.example.com. A `blue`");
        assert_eq!(found.describe(), "192.0.2.1, 192.0.2.2 (ttl 60), weight 90");
    }

    #[test]
    fn an_alias_has_no_ttl_even_where_moto_lists_one() {
        let listed = "<ResourceRecordSet><Name>app.example.com.</Name><Type>A</Type><TTL>0</TTL><AliasTarget><HostedZoneId>Z35SXDOTRQ7X7K</HostedZoneId><DNSName>lb-1.us-east-1.elb.amazonaws.com.</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget></ResourceRecordSet>";
        let found = RecordSet::from_xml(listed).unwrap();
        assert_eq!(found.ttl, None);
        assert!(!found.to_xml().contains("<TTL>"));
        assert_eq!(
            found.describe(),
            "alias to lb-1.us-east-1.elb.amazonaws.com. (zone Z35SXDOTRQ7X7K)"
        );
    }

    #[test]
    fn routing_policies_it_does_not_model_are_refused() {
        let listed = "<ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><SetIdentifier>eu</SetIdentifier><Region>eu-west-1</Region><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>";
        let error = RecordSet::from_xml(listed).unwrap_err();
        assert!(
            error.message().contains("`Region` routing policy"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn record_sets_are_the_same_in_any_order_and_spelling_of_names() {
        assert!(
            set("WWW.example.com", 60, &["192.0.2.2", "192.0.2.1"]).same(&set(
                "www.example.com.",
                60,
                &["192.0.2.1", "192.0.2.2"]
            ))
        );
        assert!(set("\\052.example.com.", 60, &["192.0.2.1"]).same(&set(
            "*.example.com.",
            60,
            &["192.0.2.1"]
        )));
        assert!(!set("www.example.com.", 60, &["192.0.2.1"]).same(&set(
            "www.example.com.",
            120,
            &["192.0.2.1"]
        )));
    }

    #[test]
    fn txt_values_are_quoted_and_split_as_route53_wants() {
        assert_eq!(value_for("TXT", "v=spf1 -all"), "\"v=spf1 -all\"");
        assert_eq!(value_for("TXT", "\"already\""), "\"already\"");
        assert_eq!(value_for("TXT", "say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(value_for("A", "192.0.2.1"), "192.0.2.1");
        let long = "x".repeat(300);
        assert_eq!(
            value_for("TXT", &long),
            format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))
        );
    }

    #[test]
    fn zone_and_change_ids_lose_their_prefixes() {
        assert_eq!(short_zone_id("/hostedzone/Z123"), "Z123");
        assert_eq!(short_zone_id("Z123"), "Z123");
        assert_eq!(short_change_id("/change/C9"), "C9");
    }
}
