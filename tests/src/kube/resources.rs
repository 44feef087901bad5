//! The resource types the emulator serves, and the discovery documents
//! (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`) that clients such
//! as `kubectl` and kube-rs read to map a kind to its URL.

use serde_json::{Value, json};

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// `v1`.
    pub version: &'static str,
    /// `Deployment`.
    pub kind: &'static str,
    /// `deployments`, as it appears in URLs.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// `kubectl get deploy`.
    pub short_names: &'static [&'static str],
}

impl Resource {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn resource(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names,
    }
}

/// Everything served: the core workload types, and the traffic routers
/// the canary plugin drives (Istio, Gateway API).
pub const RESOURCES: &[Resource] = &[
    resource("", "v1", "Namespace", "namespaces", false, &["ns"]),
    resource("", "v1", "Pod", "pods", true, &["po"]),
    resource("", "v1", "Service", "services", true, &["svc"]),
    resource("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
    resource("", "v1", "Secret", "secrets", true, &[]),
    resource("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
    resource("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
    resource("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"]),
    resource("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"]),
    resource("batch", "v1", "Job", "jobs", true, &[]),
    // The API Platform's Helm chart (seed 001): autoscaling and ingress.
    resource(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
    ),
    resource(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
    ),
    resource(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
        true,
        &["vs"],
    ),
    resource(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
        true,
        &["dr"],
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
        &[],
    ),
];

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The resource served at `group`/`version` under `plural`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-runbook-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
    })
}

/// `GET /apis`.
pub fn groups() -> Value {
    let mut names: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    names.dedup();
    let groups: Vec<Value> = names
        .iter()
        .map(|name| {
            let version = RESOURCES
                .iter()
                .find(|r| r.group == *name)
                .map_or("v1", |r| r.version);
            let entry = json!({"groupVersion": format!("{name}/{version}"), "version": version});
            json!({"name": name, "versions": [entry.clone()], "preferredVersion": entry})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/GROUP/VERSION`; `None` when nothing is
/// served there.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let first = served.first()?;
    let mut resources = Vec::new();
    for resource in &served {
        resources.push(json!({
            "name": resource.plural,
            "singularName": resource.kind.to_lowercase(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": VERBS,
            "shortNames": resource.short_names,
        }));
        if matches!(resource.kind, "Deployment" | "StatefulSet" | "Job") {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": true,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if group.is_empty() {
        resources.push(json!({
            "name": "pods/log",
            "singularName": "",
            "namespaced": true,
            "kind": "Pod",
            "verbs": ["get"],
        }));
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": resources,
    }))
}
