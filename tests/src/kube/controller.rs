//! The controllers that make the emulator's workloads move the way a real
//! cluster's do, one step per tick: a Deployment or StatefulSet whose pod
//! template changes gets a new revision and replaces its replicas one by
//! one (or, with a broken image, stalls until its progress deadline); a
//! Job starts a pod, which ends with the exit code and logs a test chose.

use super::resources::by_kind;
use super::store::{Key, Store};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What a Job's pod does.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The pod's exit code; 0 completes the Job, anything else fails it.
    pub exit_code: i32,
    /// What the pod prints.
    pub logs: String,
}

#[derive(Debug, Default)]
struct Tracked {
    template: Value,
    revision: u64,
    updated: u64,
    stalled_ticks: u32,
    previous_update_revision: String,
}

/// The controllers' own memory and the behaviour tests set.
#[derive(Debug)]
pub struct Controllers {
    tracked: BTreeMap<Key, Tracked>,
    /// Images whose pods never become ready.
    pub broken_images: BTreeSet<String>,
    /// Ticks a stalled rollout waits before `ProgressDeadlineExceeded`.
    pub deadline_ticks: u32,
    /// Job outcomes by Job name prefix; the first match wins.
    pub job_outcomes: Vec<(String, JobOutcome)>,
    /// Pod logs by namespace and pod name.
    pub logs: BTreeMap<(String, String), String>,
    /// Per namespace, the schema revisions `alembic upgrade head` applied
    /// (one per image tag), newest last: Jobs running alembic print what
    /// alembic would, so that a re-run at the same version changes nothing.
    migrations: BTreeMap<String, Vec<String>>,
}

impl Default for Controllers {
    fn default() -> Self {
        Controllers {
            tracked: BTreeMap::new(),
            broken_images: BTreeSet::new(),
            deadline_ticks: 20,
            job_outcomes: Vec::new(),
            logs: BTreeMap::new(),
            migrations: BTreeMap::new(),
        }
    }
}

fn images(template: &Value) -> Vec<String> {
    template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|containers| {
            containers
                .iter()
                .filter_map(|container| container.get("image").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn number(object: &Value, pointer: &str, default: u64) -> u64 {
    object
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

impl Controllers {
    /// Ticks until nothing changes: seeded workloads start fully rolled out,
    /// as in a cluster that has been running for a while.
    pub fn settle(&mut self, store: &mut Store) {
        for _ in 0..1000 {
            let before = store.revision();
            self.tick(store);
            if store.revision() == before {
                return;
            }
        }
    }

    /// Moves every workload one step.
    pub fn tick(&mut self, store: &mut Store) {
        for key in store.keys_of("apps/v1", "Deployment") {
            self.rollout(store, &key, false);
        }
        for key in store.keys_of("apps/v1", "StatefulSet") {
            self.rollout(store, &key, true);
        }
        for key in store.keys_of("batch/v1", "Job") {
            self.job(store, &key);
        }
        let live: BTreeSet<Key> = store
            .keys_of("apps/v1", "Deployment")
            .into_iter()
            .chain(store.keys_of("apps/v1", "StatefulSet"))
            .collect();
        self.tracked.retain(|key, _| live.contains(key));
    }

    fn rollout(&mut self, store: &mut Store, key: &Key, stateful: bool) {
        let Some(object) = store.object(key).cloned() else {
            return;
        };
        let generation = number(&object, "/metadata/generation", 1);
        let desired = number(&object, "/spec/replicas", 1);
        let paused = object.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let template = object
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let broken = images(&template)
            .iter()
            .any(|image| self.broken_images.contains(image));
        let tracked = self.tracked.entry(key.clone()).or_default();
        if tracked.template != template {
            tracked.previous_update_revision = format!("{}-{}", key.name, tracked.revision);
            tracked.template = template;
            tracked.revision += 1;
            tracked.updated = 0;
            tracked.stalled_ticks = 0;
        }
        if !paused {
            if broken {
                tracked.updated = desired.min(1);
                tracked.stalled_ticks += 1;
            } else if tracked.updated < desired {
                tracked.updated += 1;
            }
        }
        tracked.updated = tracked.updated.min(desired);
        let updated = tracked.updated;
        let first = tracked.revision == 1;
        let exceeded = broken && tracked.stalled_ticks >= self.deadline_ticks;
        let complete = updated == desired && !broken;
        let (progressing, reason) = if paused {
            ("Unknown", "DeploymentPaused")
        } else if exceeded {
            ("False", "ProgressDeadlineExceeded")
        } else if complete {
            ("True", "NewReplicaSetAvailable")
        } else {
            ("True", "ReplicaSetUpdated")
        };
        let available = if broken || !first { desired } else { updated };
        let revision = tracked.revision;
        let update_revision = format!("{}-{revision}", key.name);
        let current_revision = if complete {
            update_revision.clone()
        } else {
            tracked.previous_update_revision.clone()
        };
        store.update_status(key, |object| {
            if !stateful {
                if !object.pointer("/metadata/annotations").is_some_and(Value::is_object) {
                    object["metadata"]["annotations"] = json!({});
                }
                object["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!(revision.to_string());
            }
            let mut status = json!({
                "observedGeneration": generation,
                "replicas": if broken { desired + updated } else { desired },
                "updatedReplicas": updated,
                "readyReplicas": available,
                "availableReplicas": available,
            });
            if stateful {
                status["currentReplicas"] = json!(if complete { desired } else { desired - updated });
                status["currentRevision"] = json!(current_revision);
                status["updateRevision"] = json!(update_revision);
            } else {
                if broken {
                    status["unavailableReplicas"] = json!(updated);
                }
                status["conditions"] = json!([
                    {"type": "Available", "status": if available >= desired { "True" } else { "False" },
                     "reason": if available >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                    {"type": "Progressing", "status": progressing, "reason": reason,
                     "message": format!("Deployment \"{}\" {}", key.name, match reason {
                         "ProgressDeadlineExceeded" => "has timed out progressing.",
                         "NewReplicaSetAvailable" => "has successfully progressed.",
                         "DeploymentPaused" => "is paused.",
                         _ => "is progressing.",
                     })},
                ]);
            }
            object["status"] = status;
        });
    }

    /// Forgets every schema revision alembic Jobs applied.
    pub fn forget_migrations(&mut self) {
        self.migrations.clear();
    }

    /// What alembic prints for a Job whose container runs it: `upgrade
    /// head` applies the revision of the image's tag once, `downgrade -1`
    /// removes the newest.
    fn alembic(&mut self, namespace: &str, template: &Value) -> String {
        let Some(container) = template.pointer("/spec/containers/0") else {
            return String::new();
        };
        let command: Vec<&str> = ["command", "args"]
            .iter()
            .filter_map(|field| container.get(*field).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let tag = container
            .get("image")
            .and_then(Value::as_str)
            .and_then(|image| image.rsplit_once(':'))
            .map_or("latest", |(_, tag)| tag)
            .to_owned();
        let applied = self.migrations.entry(namespace.to_owned()).or_default();
        let current = applied.last().cloned().unwrap_or_else(|| "base".into());
        let context = "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n";
        match command.as_slice() {
            ["alembic", "upgrade", "head"] if applied.contains(&tag) => context.to_owned(),
            ["alembic", "upgrade", "head"] => {
                applied.push(tag.clone());
                format!(
                    "{context}INFO  [alembic.runtime.migration] Running upgrade {current} -> {tag}\n"
                )
            }
            ["alembic", "downgrade", "-1"] => {
                applied.pop();
                let previous = applied.last().cloned().unwrap_or_else(|| "base".into());
                format!(
                    "{context}INFO  [alembic.runtime.migration] Running downgrade {current} -> {previous}\n"
                )
            }
            _ => String::new(),
        }
    }

    fn job(&mut self, store: &mut Store, key: &Key) {
        let Some(object) = store.object(key).cloned() else {
            return;
        };
        if object.pointer("/status/succeeded").is_some()
            || object.pointer("/status/failed").is_some()
        {
            return;
        }
        let pods = by_kind("v1", "Pod").expect("served");
        let pod_name = format!(
            "{}-{}",
            key.name,
            &object["metadata"]["uid"]
                .as_str()
                .unwrap_or("00000")
                .replace('-', "")[27..]
        );
        if object.pointer("/status/active").is_none() {
            let mut pod = json!({
                "metadata": {
                    "name": pod_name,
                    "labels": {"job-name": key.name, "batch.kubernetes.io/job-name": key.name},
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": key.name,
                                         "uid": object["metadata"]["uid"], "controller": true}],
                },
                "spec": object.pointer("/spec/template/spec").cloned().unwrap_or(json!({})),
                "status": {"phase": "Running"},
            });
            if let Some(labels) = object
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
            {
                for (name, value) in labels {
                    pod["metadata"]["labels"][name] = value.clone();
                }
            }
            // The pod exists before the Job says it is active, as in a cluster.
            let _ = store.create(pods, Some(&key.namespace), pod, false);
            store.update_status(key, |job| {
                job["status"] =
                    json!({"active": 1, "startTime": job["metadata"]["creationTimestamp"]});
            });
            return;
        }
        let outcome = self
            .job_outcomes
            .iter()
            .find(|(prefix, _)| key.name.starts_with(prefix.as_str()))
            .map(|(_, outcome)| outcome.clone())
            .unwrap_or_else(|| {
                let template = object
                    .pointer("/spec/template")
                    .cloned()
                    .unwrap_or_default();
                let ran = format!("job {} ran {:?}\n", key.name, images(&template));
                let alembic = self.alembic(&key.namespace, &template);
                JobOutcome {
                    exit_code: 0,
                    logs: ran + &alembic,
                }
            });
        self.logs.insert(
            (key.namespace.clone(), pod_name.clone()),
            outcome.logs.clone(),
        );
        let succeeded = outcome.exit_code == 0;
        let pod_key = Key::new(pods, Some(&key.namespace), &pod_name);
        store.update_status(&pod_key, |pod| {
            pod["status"] = json!({
                "phase": if succeeded { "Succeeded" } else { "Failed" },
                "containerStatuses": [{
                    "name": pod.pointer("/spec/containers/0/name").cloned().unwrap_or(json!("main")),
                    "state": {"terminated": {"exitCode": outcome.exit_code,
                              "reason": if succeeded { "Completed" } else { "Error" }}},
                }],
            });
        });
        store.update_status(key, |job| {
            let start = job["status"]["startTime"].clone();
            job["status"] = if succeeded {
                json!({"succeeded": 1, "startTime": start, "completionTime": start,
                       "conditions": [{"type": "Complete", "status": "True"}]})
            } else {
                json!({"failed": 1, "startTime": start,
                       "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit"}]})
            };
        });
    }
}
