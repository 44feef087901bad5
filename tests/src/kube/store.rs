//! The emulator's object store: objects by resource, namespace and name,
//! one resourceVersion counter for everything (as etcd has), a history of
//! changes so that a watch can start from any resourceVersion, and the
//! API's rules: `AlreadyExists`, `NotFound`, `Conflict` on a stale
//! resourceVersion, generation bumps on spec changes, `dryRun=All`, and
//! server-side apply with its field ownership ([`super::fields`]).

use super::fields;
use super::patch::{self, PatchFormat};
use super::resources::Resource;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tokio::sync::broadcast;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl Key {
    /// The key of `name` in `namespace` of `resource`.
    pub fn new(resource: &Resource, namespace: Option<&str>, name: &str) -> Self {
        Key {
            api_version: resource.api_version(),
            kind: resource.kind.to_owned(),
            namespace: if resource.namespaced {
                namespace.unwrap_or_default().to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

/// A change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change made.
    pub revision: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// Which object.
    pub key: Key,
    /// The object after the change (before, for `DELETED`).
    pub object: Value,
}

/// A failed request, answered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `BadRequest`, `Invalid`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// `404 NotFound`.
    pub fn not_found(resource: &Resource, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!(
                "{}.{} \"{name}\" not found",
                resource.plural, resource.group
            )
            .replace(". \"", " \""),
        }
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// All objects and their history.
#[derive(Debug)]
pub struct Store {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    changes: broadcast::Sender<Change>,
    next_uid: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            revision: 1000,
            objects: BTreeMap::new(),
            history: Vec::new(),
            changes: broadcast::channel(4096).0,
            next_uid: 1,
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn metadata(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("made an object")
}

/// The resourceVersion a request body carries, if any.
fn stated_revision(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

impl Store {
    /// The latest resourceVersion.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A copy of an object.
    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Key::new(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// The objects of a resource, in a namespace or all, that match the
    /// selectors.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(key, object)| in_scope(key, resource, namespace) && selectors.matches(object))
            .map(|(_, object)| object.clone())
            .collect();
        json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": self.revision.to_string()},
            "items": items,
        })
    }

    /// Creates an object; with `dry_run` it is checked and returned, not kept.
    pub fn create(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = match object.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match object
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) => format!("{prefix}{:05x}", self.next_uid * 7919 % 0xfffff),
                None => {
                    return Err(ApiError {
                        code: 422,
                        reason: "Invalid",
                        message: format!(
                            "{} is invalid: metadata.name: Required value",
                            resource.kind
                        ),
                    });
                }
            },
        };
        let namespace = if resource.namespaced {
            let namespace = namespace
                .map(str::to_owned)
                .or_else(|| {
                    object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "default".to_owned());
            let namespaces = super::resources::by_kind("v1", "Namespace").expect("served");
            if !self
                .objects
                .contains_key(&Key::new(namespaces, None, &namespace))
            {
                return Err(ApiError {
                    code: 404,
                    reason: "NotFound",
                    message: format!("namespaces \"{namespace}\" not found"),
                });
            }
            Some(namespace)
        } else {
            None
        };
        let key = Key::new(resource, namespace.as_deref(), &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", resource.plural),
            });
        }
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        let fields = metadata(&mut object);
        fields.insert("name".into(), json!(name));
        if let Some(namespace) = &namespace {
            fields.insert("namespace".into(), json!(namespace));
        }
        fields.insert("uid".into(), json!(uid));
        fields.insert("creationTimestamp".into(), json!(now()));
        fields.insert("generation".into(), json!(1));
        fields.remove("resourceVersion");
        if dry_run {
            return Ok(object);
        }
        self.next_uid += 1;
        Ok(self.commit("ADDED", key, object))
    }

    /// Replaces an object (`PUT`).
    pub fn replace(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let current = self.get(resource, namespace, name)?;
        self.check_revision(resource, name, &object, &current)?;
        self.store_update(resource, namespace, name, current, object, dry_run)
    }

    /// Patches an object; an apply patch creates it when missing.
    pub fn patch(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        format: PatchFormat,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let current = match self.get(resource, namespace, name) {
            Ok(current) => current,
            Err(_) if format == PatchFormat::Apply => {
                let mut object = body.clone();
                metadata(&mut object).insert("name".into(), json!(name));
                return self.create(resource, namespace, object, dry_run);
            }
            Err(missing) => return Err(missing),
        };
        self.check_revision(resource, name, body, &current)?;
        let mut patched = current.clone();
        patch::apply(format, &mut patched, body).map_err(|message| ApiError {
            code: 422,
            reason: "Invalid",
            message,
        })?;
        self.store_update(resource, namespace, name, current, patched, dry_run)
    }

    /// Server-side apply (`application/apply-patch+yaml`) by `manager`:
    /// creates the object when it is missing; otherwise removes what
    /// `manager` applied before and applies no longer (unless another
    /// applier owns it), merges the configuration in, and records in
    /// `metadata.managedFields` what `manager` now owns.
    pub fn apply(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if manager.is_empty() {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            });
        }
        if let Some(stated) = body.pointer("/metadata/name").and_then(Value::as_str)
            && stated != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({stated}) does not match the name on the URL ({name})"
            )));
        }
        let applied = fields::applied_config(body);
        let owned = fields::field_set(&applied);
        let api_version = resource.api_version();
        let Ok(current) = self.get(resource, namespace, name) else {
            let mut object = applied;
            metadata(&mut object).insert("name".into(), json!(name));
            fields::record(&mut object, manager, &api_version, owned, &now());
            return self.create(resource, namespace, object, dry_run);
        };
        self.check_revision(resource, name, body, &current)?;
        let (previous, others) = fields::owned(&current, manager);
        let others: Vec<&fields::FieldSet> = others.iter().collect();
        let mut object = current.clone();
        fields::remove_dropped(&mut object, &previous, Some(&owned), &others);
        patch::strategic_merge(&mut object, &applied);
        fields::record(&mut object, manager, &api_version, owned, &now());
        self.store_update(resource, namespace, name, current, object, dry_run)
    }

    /// Deletes an object and returns it.
    pub fn delete(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Key::new(resource, namespace, name);
        let Some(object) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(resource, name));
        };
        if dry_run {
            return Ok(object);
        }
        self.objects.remove(&key);
        self.revision += 1;
        let change = Change {
            revision: self.revision,
            kind: "DELETED",
            key,
            object: object.clone(),
        };
        self.publish(change);
        Ok(object)
    }

    /// Changes an object's status (controllers): a new resourceVersion,
    /// never a new generation.
    pub fn update_status(&mut self, key: &Key, change: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut object = self.objects.get(key)?.clone();
        let before = object.clone();
        change(&mut object);
        if object == before {
            return Some(object);
        }
        Some(self.commit("MODIFIED", key.clone(), object))
    }

    /// Every object of one kind (controllers).
    pub fn keys_of(&self, api_version: &str, kind: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|key| key.api_version == api_version && key.kind == kind)
            .cloned()
            .collect()
    }

    /// An object by key (controllers).
    pub fn object(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The changes after `revision` (in order) and a receiver for those
    /// still to come, taken together so that none is missed.
    pub fn watch_from(&self, revision: u64) -> (Vec<Change>, broadcast::Receiver<Change>) {
        let past = self
            .history
            .iter()
            .filter(|change| change.revision > revision)
            .cloned()
            .collect();
        (past, self.changes.subscribe())
    }

    /// Synthetic `ADDED` changes for every object in scope (a watch
    /// without a resourceVersion), and a receiver for what comes next.
    pub fn watch_now(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
    ) -> (Vec<Change>, broadcast::Receiver<Change>) {
        let current = self
            .objects
            .iter()
            .filter(|(key, _)| in_scope(key, resource, namespace))
            .map(|(key, object)| Change {
                revision: self.revision,
                kind: "ADDED",
                key: key.clone(),
                object: object.clone(),
            })
            .collect();
        (current, self.changes.subscribe())
    }

    fn check_revision(
        &self,
        resource: &Resource,
        name: &str,
        body: &Value,
        current: &Value,
    ) -> Result<(), ApiError> {
        match (stated_revision(body), stated_revision(current)) {
            (Some(stated), Some(actual)) if stated != actual => Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource.plural
                ),
            }),
            _ => Ok(()),
        }
    }

    fn store_update(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        current: Value,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        // What the server owns stays the server's.
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match current.pointer(&format!("/metadata/{field}")) {
                Some(value) => {
                    metadata(&mut object).insert(field.into(), value.clone());
                }
                None => {
                    metadata(&mut object).remove(field);
                }
            }
        }
        // Managed fields left out of an update stay as they were.
        if object.pointer("/metadata/managedFields").is_none()
            && let Some(managed) = current.pointer("/metadata/managedFields")
        {
            metadata(&mut object).insert("managedFields".into(), managed.clone());
        }
        if current.get("status").is_some() && object.get("status") != current.get("status") {
            object["status"] = current["status"].clone();
        }
        if object == current {
            return Ok(current);
        }
        if object.get("spec") != current.get("spec") {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            metadata(&mut object).insert("generation".into(), json!(generation + 1));
        }
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit("MODIFIED", Key::new(resource, namespace, name), object))
    }

    fn commit(&mut self, kind: &'static str, key: Key, mut object: Value) -> Value {
        self.revision += 1;
        metadata(&mut object).insert("resourceVersion".into(), json!(self.revision.to_string()));
        self.objects.insert(key.clone(), object.clone());
        self.publish(Change {
            revision: self.revision,
            kind,
            key,
            object: object.clone(),
        });
        object
    }

    fn publish(&mut self, change: Change) {
        self.history.push(change.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(change);
    }
}

fn in_scope(key: &Key, resource: &Resource, namespace: Option<&str>) -> bool {
    key.api_version == resource.api_version()
        && key.kind == resource.kind
        && namespace.is_none_or(|namespace| key.namespace == namespace)
}

/// `labelSelector` and `fieldSelector` of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Missing(String),
}

fn requirements(text: &str) -> Vec<Requirement> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::Missing(key.trim().into())
            } else {
                Requirement::Exists(part.into())
            }
        })
        .collect()
}

impl Selectors {
    /// From the query's `labelSelector` and `fieldSelector`.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Self {
        Selectors {
            labels: labels.map(requirements).unwrap_or_default(),
            fields: fields.map(requirements).unwrap_or_default(),
        }
    }

    /// Whether an object matches every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let field = |path: &str| {
            object
                .pointer(&format!("/{}", path.replace('.', "/")))
                .map(|value| {
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned)
                })
        };
        self.labels
            .iter()
            .all(|requirement| holds(requirement, &label))
            && self
                .fields
                .iter()
                .all(|requirement| holds(requirement, &field))
    }
}

fn holds(requirement: &Requirement, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Equals(key, value) => value_of(key).as_deref() == Some(value),
        Requirement::NotEquals(key, value) => value_of(key).as_deref() != Some(value),
        Requirement::Exists(key) => value_of(key).is_some(),
        Requirement::Missing(key) => value_of(key).is_none(),
    }
}
