//! `rds-snapshot`: the snapshot before a migration. `create` snapshots a DB
//! instance or Aurora cluster under a templated identifier and waits, with
//! backoff and a deadline, until it is `available`; `restore` creates an
//! instance from a snapshot and waits for it; `prune` deletes a database's
//! oldest manual snapshots with a prefix, keeping the newest N; `verify`
//! checks that the database has a backup younger than `max_age` (its
//! newest available snapshot, automated or manual), changing nothing.
//! Every call goes through the host's AWS capability, signed there.

use runbook_sdk::aws::{self, xml_elements, xml_text};
use runbook_sdk::serde_json::{Value, json};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, PlannedAction, Step,
};
use std::time::{Duration, Instant};

struct RdsSnapshot;

/// What to snapshot, restore or prune.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// `create` (default), `restore`, `prune` or `verify`.
    #[serde(default)]
    mode: Mode,
    /// The AWS region.
    region: String,
    /// The DB instance (or give `cluster`).
    #[serde(default)]
    instance: Option<String>,
    /// The Aurora cluster (instead of `instance`).
    #[serde(default)]
    cluster: Option<String>,
    /// The snapshot's identifier (create, restore), e.g.
    /// `riskcast-pre-migrate-${{ params.version }}`.
    #[serde(default)]
    snapshot: Option<String>,
    /// Restore: the new instance's identifier.
    #[serde(default)]
    target_instance: Option<String>,
    /// Restore: its instance class (default: the snapshot's).
    #[serde(default)]
    instance_class: Option<String>,
    /// Prune: how many of the newest manual snapshots to keep.
    #[serde(default)]
    keep: Option<usize>,
    /// Prune: only snapshots whose identifier starts with this.
    #[serde(default)]
    prefix: Option<String>,
    /// Verify: how old the newest available snapshot may be (`"24h"`).
    #[serde(default)]
    max_age: Option<HumanDuration>,
    /// Wait for `available` (default true).
    #[serde(default)]
    wait: Option<bool>,
    /// How long to wait (default 60m).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// The first pause between checks; it doubles up to 1m (default 5s).
    #[serde(default)]
    poll: Option<HumanDuration>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "kebab-case")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Mode {
    #[default]
    Create,
    Restore,
    Prune,
    Verify,
}

/// Instance or cluster: the names RDS uses for each.
struct Kind {
    id: String,
    cluster: bool,
}

impl Kind {
    fn of(params: &Params) -> Result<Self, Error> {
        match (&params.instance, &params.cluster) {
            (Some(id), None) => Ok(Kind {
                id: id.clone(),
                cluster: false,
            }),
            (None, Some(id)) => Ok(Kind {
                id: id.clone(),
                cluster: true,
            }),
            (Some(_), Some(_)) => Err(Error::invalid_param(
                "cluster",
                "give `instance` or `cluster`, not both",
            )),
            (None, None) => Err(Error::invalid_param(
                "instance",
                "give `instance` (or `cluster`)",
            )),
        }
    }

    fn id_key(&self) -> &'static str {
        if self.cluster {
            "DBClusterIdentifier"
        } else {
            "DBInstanceIdentifier"
        }
    }

    fn snapshot_key(&self) -> &'static str {
        if self.cluster {
            "DBClusterSnapshotIdentifier"
        } else {
            "DBSnapshotIdentifier"
        }
    }

    fn snapshot_element(&self) -> &'static str {
        if self.cluster {
            "DBClusterSnapshot"
        } else {
            "DBSnapshot"
        }
    }

    fn arn_element(&self) -> &'static str {
        if self.cluster {
            "DBClusterSnapshotArn"
        } else {
            "DBSnapshotArn"
        }
    }

    fn describe_action(&self) -> &'static str {
        if self.cluster {
            "DescribeDBClusterSnapshots"
        } else {
            "DescribeDBSnapshots"
        }
    }
}

fn snapshot_id(params: &Params) -> Result<String, Error> {
    let id = params
        .snapshot
        .clone()
        .ok_or_else(|| Error::invalid_param("snapshot", "give the snapshot's identifier"))?;
    if runbook_sdk::unresolved(&id) {
        return Ok(id);
    }
    let valid = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id.len() <= 255
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if !valid {
        return Err(Error::invalid_param(
            "snapshot",
            format!(
                "`{id}` is not a snapshot identifier: a letter first, then letters, digits and single hyphens (dots in versions become hyphens: write the version with `-`)"
            ),
        ));
    }
    Ok(id)
}

/// One snapshot as RDS describes it.
#[derive(Debug, Clone)]
struct Snapshot {
    id: String,
    status: String,
    arn: String,
    created: String,
    progress: Option<String>,
}

fn snapshots(kind: &Kind, region: &str, filter: Value) -> Result<Vec<Snapshot>, Error> {
    let reply = aws::query("rds", region, kind.describe_action(), &filter)?;
    Ok(xml_elements(&reply.body, kind.snapshot_element())
        .into_iter()
        .map(|element| Snapshot {
            id: xml_text(element, kind.snapshot_key()).unwrap_or_default(),
            status: xml_text(element, "Status").unwrap_or_default(),
            arn: xml_text(element, kind.arn_element()).unwrap_or_default(),
            created: xml_text(element, "SnapshotCreateTime").unwrap_or_default(),
            progress: xml_text(element, "PercentProgress"),
        })
        .collect())
}

fn find(kind: &Kind, region: &str, id: &str) -> Result<Option<Snapshot>, Error> {
    match snapshots(kind, region, json!({ kind.snapshot_key(): id })) {
        Ok(found) => Ok(found.into_iter().find(|snapshot| snapshot.id == id)),
        Err(Error::Failed(message)) if message.contains("NotFound") => Ok(None),
        Err(error) => Err(error),
    }
}

/// Polls `check` with doubling pauses until it returns a value, failing at
/// the deadline. `check` returns `Ok(None)` to keep waiting.
fn wait_for<T>(
    params: &Params,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let timeout = params
        .timeout
        .map_or(Duration::from_secs(3600), HumanDuration::get);
    let mut pause = params
        .poll
        .map_or(Duration::from_secs(5), HumanDuration::get);
    let started = Instant::now();
    loop {
        if let Some(done) = check()? {
            return Ok(done);
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(Error::Timeout(format!(
                "{what} was not done within {}",
                HumanDuration(timeout)
            )));
        }
        runbook_sdk::sleep(pause.min(timeout - elapsed))?;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

fn create(params: &Params) -> Result<Outcome, Error> {
    let kind = Kind::of(params)?;
    let id = snapshot_id(params)?;
    let existing = find(&kind, &params.region, &id)?;
    match &existing {
        Some(snapshot) => runbook_sdk::log::info(format!(
            "snapshot {id} exists already ({})",
            snapshot.status
        )),
        None => {
            let action = if kind.cluster {
                "CreateDBClusterSnapshot"
            } else {
                "CreateDBSnapshot"
            };
            aws::query(
                "rds",
                &params.region,
                action,
                &json!({ kind.id_key(): kind.id, kind.snapshot_key(): id }),
            )?;
            runbook_sdk::log::info(format!("creating snapshot {id} of {}", kind.id));
        }
    }
    let snapshot = if params.wait.unwrap_or(true) {
        wait_for(params, &format!("snapshot {id}"), || {
            let Some(snapshot) = find(&kind, &params.region, &id)? else {
                return Err(Error::failed(format!(
                    "snapshot {id} disappeared while it was being created"
                )));
            };
            match snapshot.status.as_str() {
                "available" => Ok(Some(snapshot)),
                "failed" | "error" | "incompatible-restore" => Err(Error::failed(format!(
                    "snapshot {id} is {}",
                    snapshot.status
                ))),
                status => {
                    let progress = snapshot
                        .progress
                        .as_deref()
                        .and_then(|p| p.parse::<f32>().ok());
                    runbook_sdk::log::progress(
                        format!("snapshot {id}: {status}"),
                        progress.map(|p| p / 100.0),
                    );
                    Ok(None)
                }
            }
        })?
    } else {
        find(&kind, &params.region, &id)?
            .ok_or_else(|| Error::failed(format!("snapshot {id} was not created")))?
    };
    Ok(Outcome::new(format!(
        "snapshot {id} of {} is {}",
        kind.id, snapshot.status
    ))
    .output("snapshot", id)
    .output("arn", snapshot.arn)
    .output("status", snapshot.status))
}

fn restore(params: &Params) -> Result<Outcome, Error> {
    let id = snapshot_id(params)?;
    let target = params.target_instance.clone().ok_or_else(|| {
        Error::invalid_param(
            "target_instance",
            "name the instance to create from the snapshot",
        )
    })?;
    let mut request = json!({"DBInstanceIdentifier": target, "DBSnapshotIdentifier": id});
    if let Some(class) = &params.instance_class {
        request["DBInstanceClass"] = json!(class);
    }
    aws::query(
        "rds",
        &params.region,
        "RestoreDBInstanceFromDBSnapshot",
        &request,
    )?;
    runbook_sdk::log::info(format!("restoring {target} from {id}"));
    let status = if params.wait.unwrap_or(true) {
        wait_for(params, &format!("instance {target}"), || {
            let reply = aws::query(
                "rds",
                &params.region,
                "DescribeDBInstances",
                &json!({"DBInstanceIdentifier": target}),
            )?;
            let status = xml_text(&reply.body, "DBInstanceStatus").unwrap_or_default();
            match status.as_str() {
                "available" => Ok(Some(status)),
                "failed" | "incompatible-restore" | "incompatible-parameters" => {
                    Err(Error::failed(format!("instance {target} is {status}")))
                }
                other => {
                    runbook_sdk::log::progress(format!("instance {target}: {other}"), None);
                    Ok(None)
                }
            }
        })?
    } else {
        "creating".to_owned()
    };
    Ok(
        Outcome::new(format!("instance {target} restored from {id} is {status}"))
            .output("instance", target)
            .output("snapshot", id),
    )
}

/// The manual snapshots `prune` would delete, oldest first.
fn prunable(params: &Params) -> Result<(Vec<Snapshot>, usize), Error> {
    let kind = Kind::of(params)?;
    let keep = params.keep.ok_or_else(|| {
        Error::invalid_param("keep", "say how many of the newest snapshots to keep")
    })?;
    let mut found: Vec<Snapshot> = snapshots(
        &kind,
        &params.region,
        json!({ kind.id_key(): kind.id, "SnapshotType": "manual" }),
    )?
    .into_iter()
    .filter(|snapshot| {
        params
            .prefix
            .as_deref()
            .is_none_or(|prefix| snapshot.id.starts_with(prefix))
    })
    .collect();
    // ISO 8601 times sort as text.
    found.sort_by(|a, b| b.created.cmp(&a.created));
    let total = found.len();
    let old = found.split_off(keep.min(total));
    Ok((old.into_iter().rev().collect(), total))
}

fn prune(params: &Params) -> Result<Outcome, Error> {
    let kind = Kind::of(params)?;
    let (old, total) = prunable(params)?;
    let action = if kind.cluster {
        "DeleteDBClusterSnapshot"
    } else {
        "DeleteDBSnapshot"
    };
    for snapshot in &old {
        aws::query(
            "rds",
            &params.region,
            action,
            &json!({ kind.snapshot_key(): snapshot.id }),
        )?;
        runbook_sdk::log::info(format!(
            "deleted snapshot {} ({})",
            snapshot.id, snapshot.created
        ));
    }
    let deleted: Vec<&str> = old.iter().map(|snapshot| snapshot.id.as_str()).collect();
    Ok(Outcome::new(format!(
        "deleted {} of {total} snapshots, kept the newest {}",
        old.len(),
        total - old.len()
    ))
    .output("deleted", deleted.join(",")))
}

/// Seconds since 1970 of an RDS time (`2026-12-02T03:30:00.123Z`, or with
/// an offset `+00:00`), UTC only, as RDS writes them.
fn unix_seconds(time: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| time.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let rest = time.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if !matches!(rest, "Z" | "z" | "+00:00" | "") || !(1..=12).contains(&month) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The newest available snapshot of the database, automated or manual.
fn newest_backup(params: &Params) -> Result<Option<Snapshot>, Error> {
    let kind = Kind::of(params)?;
    let mut found: Vec<Snapshot> =
        snapshots(&kind, &params.region, json!({ kind.id_key(): kind.id }))?
            .into_iter()
            .filter(|snapshot| snapshot.status == "available")
            .collect();
    // ISO 8601 times sort as text.
    found.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(found.into_iter().next())
}

fn verify(params: &Params) -> Result<Outcome, Error> {
    let kind = Kind::of(params)?;
    let max_age = params.max_age.map(HumanDuration::get).ok_or_else(|| {
        Error::invalid_param(
            "max_age",
            "say how old the backup may be: `max_age = \"24h\"`",
        )
    })?;
    let Some(snapshot) = newest_backup(params)? else {
        return Err(Error::failed(format!(
            "{} has no available snapshot, automated or manual: there is no backup to restore",
            kind.id
        )));
    };
    let created = unix_seconds(&snapshot.created).ok_or_else(|| {
        Error::failed(format!(
            "snapshot {} has a creation time RDS did not write as expected: `{}`",
            snapshot.id, snapshot.created
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let age = Duration::from_secs(u64::try_from(now - created).unwrap_or(0));
    if age > max_age {
        return Err(Error::failed(format!(
            "the newest backup of {} is {} ({}), {} old: older than max_age {}",
            kind.id,
            snapshot.id,
            snapshot.created,
            HumanDuration(age),
            HumanDuration(max_age)
        )));
    }
    Ok(Outcome::new(format!(
        "the newest backup of {} is {}, {} old (max_age {})",
        kind.id,
        snapshot.id,
        HumanDuration(age),
        HumanDuration(max_age)
    ))
    .output("snapshot", snapshot.id)
    .output("snapshot_arn", snapshot.arn)
    .output("created", snapshot.created)
    .output("age_seconds", age.as_secs().to_string()))
}

impl Step for RdsSnapshot {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Aws];
    const IDEMPOTENT: bool = true;

    /// What each mode needs, so that `validate` names what is missing
    /// rather than the middle of a deploy.
    fn check(params: &Params) -> Result<(), Error> {
        match params.mode {
            Mode::Create => {
                Kind::of(params)?;
                snapshot_id(params)?;
            }
            Mode::Restore => {
                snapshot_id(params)?;
                if params.target_instance.is_none() {
                    return Err(Error::invalid_param(
                        "target_instance",
                        "`restore` creates a new instance: name it with `target_instance`",
                    ));
                }
            }
            Mode::Prune => {
                Kind::of(params)?;
                if params.keep.is_none() {
                    return Err(Error::invalid_param(
                        "keep",
                        "`prune` deletes the oldest snapshots: say how many of the newest to keep",
                    ));
                }
            }
            Mode::Verify => {
                Kind::of(params)?;
                if params.max_age.is_none() {
                    return Err(Error::invalid_param(
                        "max_age",
                        "`verify` checks the newest backup's age: say how old it may be, `max_age = \"24h\"`",
                    ));
                }
            }
        }
        Ok(())
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        Ok(match params.mode {
            Mode::Create => {
                let kind = Kind::of(params)?;
                let id = snapshot_id(params)?;
                vec![match find(&kind, &params.region, &id)? {
                    Some(snapshot) => PlannedAction::read(format!(
                        "snapshot {id} exists already ({})",
                        snapshot.status
                    )),
                    None => PlannedAction::write(format!(
                        "create snapshot {id} of {} and wait until it is available",
                        kind.id
                    )),
                }]
            }
            Mode::Restore => vec![PlannedAction::write(format!(
                "create instance {} from snapshot {}",
                params.target_instance.as_deref().unwrap_or("?"),
                snapshot_id(params)?
            ))],
            Mode::Verify => vec![PlannedAction::read(format!(
                "check that {} has an available snapshot younger than {}",
                Kind::of(params)?.id,
                params
                    .max_age
                    .map_or_else(|| "?".to_owned(), |age| age.to_string())
            ))],
            Mode::Prune => {
                let (old, total) = prunable(params)?;
                if old.is_empty() {
                    vec![PlannedAction::read(format!(
                        "{total} snapshots, none to delete"
                    ))]
                } else {
                    old.iter()
                        .map(|snapshot| {
                            PlannedAction::write(format!(
                                "delete snapshot {} ({})",
                                snapshot.id, snapshot.created
                            ))
                        })
                        .collect()
                }
            }
        })
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        match params.mode {
            Mode::Create => create(&params),
            Mode::Restore => restore(&params),
            Mode::Prune => prune(&params),
            Mode::Verify => verify(&params),
        }
    }
}

runbook_sdk::export_step!(RdsSnapshot);

#[cfg(test)]
mod tests {
    use super::unix_seconds;

    #[test]
    fn rds_times_are_read_as_utc_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-12-02T03:30:00.123Z"),
            Some(1_796_182_200)
        );
        assert_eq!(
            unix_seconds("2024-02-29T12:00:00+00:00"),
            Some(1_709_208_000)
        );
        assert_eq!(unix_seconds("2026-12-02T03:30:00+02:00"), None);
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
