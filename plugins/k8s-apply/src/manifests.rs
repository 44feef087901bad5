//! The manifests of the folder: `*.yaml`, `*.yml` and `*.json` files,
//! several YAML documents to a file, `List`s flattened; each checked to be
//! a Kubernetes object, then given its namespace, the image overrides and
//! the apply set's labels, in the order they are applied. Reads files
//! only: no Kubernetes call.

use runbook_sdk::kube::ObjectRef;
use runbook_sdk::serde_json::{self, Map, Value};
use runbook_sdk::{Deserialize, Error, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The label every object the plugin applies carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runbook");

/// The label that names the apply set.
pub const SET_LABEL: &str = "runbook.dev/apply-set";

/// The annotation that lists the kinds of the set (`apps/v1/Deployment,v1/Service`),
/// so that the next apply finds the kinds it no longer has.
pub const KINDS_ANNOTATION: &str = "runbook.dev/apply-set-kinds";

/// The annotation that lists the namespaces of the set.
pub const NAMESPACES_ANNOTATION: &str = "runbook.dev/apply-set-namespaces";

/// The largest manifest file read.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// Kinds by the order in which they are applied (Helm's): what others
/// need comes first. Other kinds (custom resources) come last, and
/// deletions go the other way.
const ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

/// The built-in kinds that live outside namespaces.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "APIService",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
];

/// Where a kind comes in [`ORDER`].
pub fn rank(kind: &str) -> usize {
    ORDER
        .iter()
        .position(|ordered| *ordered == kind)
        .unwrap_or(ORDER.len())
}

/// Whether objects of `kind` live outside namespaces (for the built-in
/// kinds; a custom cluster-scoped kind is given the namespace, which the
/// API server ignores).
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

/// The API group of an `apiVersion`: `apps` for `apps/v1`, empty for `v1`.
pub fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Which object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
pub struct Target {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `None` for a cluster-scoped object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl Target {
    /// The object for the host's `kube` calls.
    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The object as the outputs name it: `Deployment/shop/api`, or
    /// `Namespace/shop` for a cluster-scoped one.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{namespace}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The resource, as grants name it: `apps/v1/Deployment`.
    pub fn resource(&self) -> String {
        format!("{}/{}", self.api_version, self.kind)
    }

    /// Whether `other` is the same object, maybe read at another version
    /// of its API group (`autoscaling/v1` and `autoscaling/v2`).
    pub fn same_object(&self, other: &Target) -> bool {
        group(&self.api_version) == group(&other.api_version)
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.reference())
    }
}

/// One object to apply.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Which object.
    pub target: Target,
    /// The object as it is applied.
    pub body: Value,
    /// Whether an image override set an image not known yet (a
    /// placeholder, while planning).
    pub unresolved_image: bool,
}

/// The objects of the manifests in `folder`, namespaced objects without a
/// namespace put in `namespace`, in the order they are applied.
pub fn read(folder: &str, namespace: &str) -> Result<Vec<Manifest>, Error> {
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut sources: BTreeMap<Target, String> = BTreeMap::new();
    for (path, text) in files(folder)? {
        for (number, document) in documents(&path, &text)? {
            let source = format!("{path}, document {number}");
            let mut objects = Vec::new();
            flatten(document, &mut objects);
            for object in objects {
                let manifest = manifest(object, namespace, &source)?;
                if let Some(earlier) = sources.insert(manifest.target.clone(), source.clone()) {
                    return Err(Error::failed(format!(
                        "{source}: {} is also in {earlier}: keep one of them",
                        manifest.target
                    )));
                }
                manifests.push(manifest);
            }
        }
    }
    if manifests.is_empty() {
        return Err(Error::failed(format!(
            "found no Kubernetes objects in `{folder}` (in *.yaml, *.yml and *.json files): an empty apply would prune the whole set"
        )));
    }
    manifests.sort_by_key(|manifest| rank(&manifest.target.kind));
    Ok(manifests)
}

/// The manifest files of `folder` (not its subfolders), by name, with
/// their text.
fn files(folder: &str) -> Result<Vec<(String, String)>, Error> {
    let entries = std::fs::read_dir(folder).map_err(|error| {
        Error::failed(format!(
            "cannot read the folder `{folder}` ({error}): is it inside a folder of the step's `grants.fs.read`?"
        ))
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::failed(format!("{folder}: {error}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_manifest = [".yaml", ".yml", ".json"]
            .iter()
            .any(|extension| name.ends_with(extension));
        if is_manifest && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let path = format!("{}/{name}", folder.trim_end_matches('/'));
        let metadata =
            std::fs::metadata(&path).map_err(|error| Error::failed(format!("{path}: {error}")))?;
        if !metadata.is_file() {
            continue;
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(Error::failed(format!(
                "{path} is larger than {} MiB: is it a manifest?",
                MAX_FILE_BYTES >> 20
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| Error::failed(format!("{path}: {error}")))?;
        files.push((path, text));
    }
    Ok(files)
}

/// The documents of one file, numbered from 1: a JSON file is one; a YAML
/// file is split at its `---` lines, as `kubectl` splits it, and documents
/// without content are skipped.
fn documents(path: &str, text: &str) -> Result<Vec<(usize, Value)>, Error> {
    if path.ends_with(".json") {
        let value: Value = serde_json::from_str(text)
            .map_err(|error| Error::failed(format!("{path}: not JSON: {error}")))?;
        return Ok(vec![(1, value)]);
    }
    let mut documents = Vec::new();
    let mut number = 0;
    for (first_line, chunk) in yaml_documents(text) {
        if !has_content(&chunk) {
            continue;
        }
        number += 1;
        let value: Value = serde_saphyr::from_str(&chunk).map_err(|error| {
            let options = serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
                line_offset: u64::try_from(first_line).unwrap_or(0),
            };
            Error::failed(format!(
                "{path}, document {number}: not YAML: {}",
                error.render_with_options(options)
            ))
        })?;
        if !value.is_null() {
            documents.push((number, value));
        }
    }
    Ok(documents)
}

/// A YAML stream's documents, split at separator lines (`---`, or `---`
/// followed by a space and more), each with the number of lines before
/// it. Directive lines (`%YAML`) are left out.
fn yaml_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut first_line = 0;
    for (index, line) in text.lines().enumerate() {
        let separator =
            line.trim_end() == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if separator {
            documents.push((first_line, std::mem::take(&mut current)));
            first_line = index;
            // What follows the marker on its line (a comment) starts the
            // next document, on the marker's line.
            current.push_str(line.get(3..).unwrap_or_default());
            current.push('\n');
            continue;
        }
        if line.starts_with('%') {
            current.push('\n');
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    documents.push((first_line, current));
    documents
}

/// Whether a YAML document has more than blank lines and comments.
fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "..."
    })
}

/// `value`'s objects: itself, or a `List`'s items.
fn flatten(value: Value, objects: &mut Vec<Value>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        objects.push(value);
        return;
    }
    if let Value::Object(mut fields) = value
        && let Some(Value::Array(items)) = fields.remove("items")
    {
        for item in items {
            flatten(item, objects);
        }
    }
}

/// One object checked and placed in its namespace.
fn manifest(mut object: Value, namespace: &str, source: &str) -> Result<Manifest, Error> {
    if !object.is_object() {
        return Err(Error::failed(format!(
            "{source}: not a Kubernetes object (a mapping with `apiVersion`, `kind` and `metadata.name`)"
        )));
    }
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    let api_version = text("/apiVersion")
        .ok_or_else(|| Error::failed(format!("{source}: the object has no `apiVersion`")))?;
    let kind = text("/kind")
        .ok_or_else(|| Error::failed(format!("{source}: the object has no `kind`")))?;
    let name = text("/metadata/name").ok_or_else(|| {
        Error::failed(format!(
            "{source}: the {kind} has no `metadata.name` (server-side apply needs one; `generateName` is not enough)"
        ))
    })?;
    let namespace = if is_cluster_scoped(&kind) {
        None
    } else {
        Some(text("/metadata/namespace").unwrap_or_else(|| namespace.to_owned()))
    };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        match &namespace {
            Some(namespace) => {
                metadata.insert("namespace".to_owned(), Value::String(namespace.clone()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
    }
    Ok(Manifest {
        target: Target {
            api_version,
            kind,
            namespace,
            name,
        },
        body: object,
        unresolved_image: false,
    })
}

/// Where a kind's pod spec is.
fn pod_spec(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "Pod" => Some("/spec"),
        _ => None,
    }
}

/// An image's repository: `registry:5000/shop/api` for
/// `registry:5000/shop/api:1.2@sha256:...`.
pub fn repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// Sets the images `images` names in the pod templates of the workloads:
/// a key is a container's name, or else an image repository. A key that
/// matches no container is an error, naming the containers there are.
pub fn override_images(
    manifests: &mut [Manifest],
    images: &BTreeMap<String, String>,
) -> Result<(), Error> {
    if images.is_empty() {
        return Ok(());
    }
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut containers_seen: Vec<String> = Vec::new();
    for manifest in manifests.iter_mut() {
        let Some(pointer) = pod_spec(&manifest.target.kind) else {
            continue;
        };
        let mut unresolved = false;
        if let Some(pod) = manifest.body.pointer_mut(pointer) {
            for list in ["initContainers", "containers"] {
                let Some(Value::Array(containers)) = pod.get_mut(list) else {
                    continue;
                };
                for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                    let name = container
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let image = container
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    containers_seen.push(format!("{name} ({image})"));
                    let chosen = images
                        .get_key_value(name.as_str())
                        .or_else(|| images.get_key_value(repository(&image)));
                    if let Some((key, new)) = chosen {
                        used.insert(key.as_str());
                        unresolved |= runbook_sdk::unresolved(new);
                        container.insert("image".to_owned(), Value::String(new.clone()));
                    }
                }
            }
        }
        manifest.unresolved_image = unresolved;
    }
    if let Some(unused) = images.keys().find(|key| !used.contains(key.as_str())) {
        return Err(Error::invalid_param(
            format!("images.{unused}"),
            format!(
                "no container of the manifests is named `{unused}` or runs an image of the repository `{unused}` (they have: {})",
                if containers_seen.is_empty() {
                    "no containers".to_owned()
                } else {
                    containers_seen.join(", ")
                }
            ),
        ));
    }
    Ok(())
}

/// Gives every object the labels of the apply set `set`, and the
/// annotations that say which kinds and namespaces the set has.
pub fn label(manifests: &mut [Manifest], set: &str) {
    let kinds: BTreeSet<String> = manifests
        .iter()
        .map(|manifest| manifest.target.resource())
        .collect();
    let namespaces: BTreeSet<String> = manifests
        .iter()
        .filter_map(|manifest| manifest.target.namespace.clone())
        .collect();
    let kinds = kinds.into_iter().collect::<Vec<_>>().join(",");
    let namespaces = namespaces.into_iter().collect::<Vec<_>>().join(",");
    for manifest in manifests.iter_mut() {
        let Some(metadata) = manifest
            .body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let labels = entries(metadata, "labels");
        labels.insert(MANAGED_BY.0.to_owned(), Value::from(MANAGED_BY.1));
        labels.insert(SET_LABEL.to_owned(), Value::from(set));
        let annotations = entries(metadata, "annotations");
        annotations.insert(KINDS_ANNOTATION.to_owned(), Value::from(kinds.as_str()));
        if namespaces.is_empty() {
            annotations.remove(NAMESPACES_ANNOTATION);
        } else {
            annotations.insert(
                NAMESPACES_ANNOTATION.to_owned(),
                Value::from(namespaces.as_str()),
            );
        }
    }
}

/// The map at `key` of `metadata`, made when absent (or not a map).
fn entries<'a>(metadata: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = metadata
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made a map above")
}

/// The kinds (`apiVersion`, `kind`) and namespaces a member of a set says
/// the set had, from its annotations.
pub fn set_contents(object: &Value) -> (Vec<(String, String)>, Vec<String>) {
    let annotation = |key: &str| {
        object
            .pointer("/metadata/annotations")
            .and_then(|annotations| annotations.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let kinds = annotation(KINDS_ANNOTATION)
        .split(',')
        .filter_map(|resource| resource.trim().rsplit_once('/'))
        .filter(|(api_version, kind)| !api_version.is_empty() && !kind.is_empty())
        .map(|(api_version, kind)| (api_version.to_owned(), kind.to_owned()))
        .collect();
    let namespaces = annotation(NAMESPACES_ANNOTATION)
        .split(',')
        .map(str::trim)
        .filter(|namespace| !namespace.is_empty())
        .map(str::to_owned)
        .collect();
    (kinds, namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_sdk::serde_json::json;

    #[test]
    fn yaml_files_split_at_separator_lines_with_their_line_numbers() {
        let text = "# first\na: 1\n---\nb: 2\n--- # third\nc: |\n  ---x\n";
        let documents = yaml_documents(text);
        assert_eq!(documents.len(), 3);
        assert_eq!(documents[0], (0, "# first\na: 1\n".to_owned()));
        assert_eq!(documents[1], (2, "\nb: 2\n".to_owned()));
        assert_eq!(documents[2], (4, " # third\nc: |\n  ---x\n".to_owned()));
        assert!(!has_content("\n# only a comment\n"));
        assert!(has_content(" # third\nc: 1\n"));
    }

    #[test]
    fn documents_are_parsed_and_a_bad_one_is_named_by_file_and_number() {
        let parsed = documents(
            "k8s/app.yaml",
            "---\napiVersion: v1\nkind: ConfigMap\n---\n# nothing\n---\nkind: Service\nspec:\n  ports:\n    - port: 80\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, 2);
        assert_eq!(parsed[1].1["spec"]["ports"][0]["port"], json!(80));
        let Err(Error::Failed(message)) = documents("k8s/app.yaml", "a: 1\n---\nb: [1, 2\n") else {
            panic!("a broken document is an error");
        };
        assert!(
            message.starts_with("k8s/app.yaml, document 2: not YAML"),
            "{message}"
        );
    }

    #[test]
    fn objects_get_their_namespace_and_lists_are_flattened() {
        let mut objects = Vec::new();
        flatten(
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "namespace": "x"}}
            ]}),
            &mut objects,
        );
        let config = manifest(objects[0].clone(), "shop", "list.yaml").unwrap();
        assert_eq!(config.target.label(), "ConfigMap/shop/a");
        assert_eq!(config.body["metadata"]["namespace"], "shop");
        let namespace = manifest(objects[1].clone(), "shop", "list.yaml").unwrap();
        assert_eq!(namespace.target.label(), "Namespace/shop");
        assert!(namespace.body["metadata"].get("namespace").is_none());
        let Err(Error::Failed(message)) = manifest(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "a-"}}),
            "shop",
            "a.yaml, document 1",
        ) else {
            panic!("an object without a name is an error");
        };
        assert!(message.contains("has no `metadata.name`"), "{message}");
    }

    #[test]
    fn images_are_overridden_by_container_name_or_repository() {
        assert_eq!(
            repository("registry:5000/shop/api:1.2"),
            "registry:5000/shop/api"
        );
        assert_eq!(
            repository("registry:5000/shop/api"),
            "registry:5000/shop/api"
        );
        assert_eq!(repository("api@sha256:abc"), "api");
        let mut manifests = vec![
            manifest(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                       "spec": {"template": {"spec": {"containers": [
                           {"name": "web", "image": "registry.example.com/shop/web:1"},
                           {"name": "proxy", "image": "envoy:1"}]}}}}),
                "shop",
                "app.yaml",
            )
            .unwrap(),
        ];
        let images = BTreeMap::from([
            (
                "registry.example.com/shop/web".to_owned(),
                "registry.example.com/shop/web:2".to_owned(),
            ),
            ("proxy".to_owned(), "<params.proxy>".to_owned()),
        ]);
        override_images(&mut manifests, &images).unwrap();
        let containers = &manifests[0].body["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "registry.example.com/shop/web:2");
        assert_eq!(containers[1]["image"], "<params.proxy>");
        assert!(manifests[0].unresolved_image);
        let typo = BTreeMap::from([("wbe".to_owned(), "web:3".to_owned())]);
        let Err(Error::InvalidParams(problem)) = override_images(&mut manifests, &typo) else {
            panic!("an override that matches nothing is an error");
        };
        assert_eq!(problem.path, "images.wbe");
        assert!(
            problem.message.contains(
                "they have: web (registry.example.com/shop/web:2), proxy (<params.proxy>)"
            ),
            "{}",
            problem.message
        );
    }

    #[test]
    fn the_set_labels_and_its_contents_are_on_every_object() {
        let mut manifests: Vec<Manifest> = [("v1", "ConfigMap", "a"), ("apps/v1", "Deployment", "web")]
            .iter()
            .map(|(api_version, kind, name)| {
                manifest(
                    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": {"app": "web"}}}),
                    "shop",
                    "a.yaml",
                )
                .unwrap()
            })
            .collect();
        label(&mut manifests, "web");
        let metadata = &manifests[0].body["metadata"];
        assert_eq!(metadata["labels"]["app"], "web");
        assert_eq!(metadata["labels"][SET_LABEL], "web");
        assert_eq!(metadata["labels"][MANAGED_BY.0], "runbook");
        let (kinds, namespaces) = set_contents(&manifests[1].body);
        assert_eq!(
            kinds,
            [
                ("apps/v1".to_owned(), "Deployment".to_owned()),
                ("v1".to_owned(), "ConfigMap".to_owned())
            ]
        );
        assert_eq!(namespaces, ["shop"]);
    }
}
