//! What a step is called and what it may do: its id and its grants, as
//! the runbook resolved them. Pure types and the rules that read them, at
//! the bottom of the module graph: the runbook builds them, the
//! capabilities check calls against them, events name the step.

use std::path::PathBuf;
use url::Url;

/// A step's id, unique within its runbook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StepId(pub String);

impl StepId {
    /// The id a `[notify]` target's calls are journaled and audited under:
    /// `notify.N`, which no step can have (a step id has no dot).
    pub fn notify_target(index: usize) -> Self {
        StepId(format!("notify.{index}"))
    }

    /// Whether this is a `[notify]` target's id ([`StepId::notify_target`]).
    pub fn is_notify_target(&self) -> bool {
        self.0.strip_prefix("notify.").is_some_and(|index| {
            !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit())
        })
    }

    /// What it is, in a message: "step `deploy`", or "`[notify]` target 0".
    pub fn subject(&self) -> String {
        match self.0.strip_prefix("notify.") {
            Some(index) if self.is_notify_target() => format!("`[notify]` target {index}"),
            _ => format!("step `{}`", self.0),
        }
    }

    /// Where a grant for it is written, in a hint: "the step", "the target".
    pub fn place(&self) -> &'static str {
        if self.is_notify_target() {
            "the target"
        } else {
            "the step"
        }
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Grants that a bound step holds, with every template resolved.
#[derive(Debug, Clone, Default)]
pub struct StepGrants {
    /// URL prefixes the step may call.
    pub http: Vec<UrlGrant>,
    /// Secret names the step may send.
    pub secrets: Vec<String>,
    /// Folders the step may read.
    pub fs_read: Vec<FsGrant>,
    /// AWS calls the step may make.
    pub aws: Option<AwsGrant>,
    /// Kubernetes calls the step may make.
    pub kube: Option<KubeGrant>,
}

impl StepGrants {
    /// The URL grants as the runbook wrote them (resolved).
    pub fn http_texts(&self) -> Vec<String> {
        self.http
            .iter()
            .map(|grant| grant.as_str().to_owned())
            .collect()
    }

    /// The folder grants as the runbook wrote them.
    pub fn fs_texts(&self) -> Vec<String> {
        self.fs_read
            .iter()
            .map(|grant| grant.written.clone())
            .collect()
    }
}

/// A folder a step may read: the host folder (checked to be inside the
/// runbook's folder) and the path the plugin sees it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// As the runbook wrote it.
    pub written: String,
    /// The folder on the host, canonical.
    pub host: PathBuf,
    /// Where the plugin finds it: `/` + the written path (`./dist` → `/dist`).
    pub guest: String,
}

/// One entry of `grants.http`: a scheme, host and port, and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGrant {
    scheme: String,
    host: String,
    port: u16,
    path_prefix: String,
    /// The prefix as a server that decodes before routing reads it.
    routed_prefix: String,
    text: String,
}

impl UrlGrant {
    /// Parses `scheme://host[:port][/path-prefix]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|error| error.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not http or https", url.scheme()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a grant has no query or fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a grant has no user name or password".into());
        }
        let host = url.host_str().ok_or("no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("no port")?;
        let path_prefix = url.path().trim_end_matches('/').to_owned();
        let routed_prefix = routed_path(&path_prefix)
            .filter(|routed| routed != "/")
            .unwrap_or_else(|| path_prefix.clone());
        Ok(UrlGrant {
            scheme: url.scheme().to_owned(),
            host,
            port,
            path_prefix,
            routed_prefix,
            text: text.trim_end_matches('/').to_owned(),
        })
    }

    /// Whether a request to `url` is within this grant. Paths match on
    /// segment boundaries: `/health` allows `/health` and `/health/ready`,
    /// not `/healthz`. The path must be within the prefix both as sent and
    /// as a server that decodes `%2e`, `%2f` and `%5c` before routing reads
    /// it, so `/api/..%2fadmin` is not within `/api`.
    pub fn allows(&self, url: &Url) -> bool {
        self.same_origin(url) && self.path_within(url) == PathMatch::Within
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url
                .host_str()
                .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
    }

    fn path_within(&self, url: &Url) -> PathMatch {
        if self.path_prefix.is_empty() {
            return PathMatch::Within;
        }
        if !within_prefix(url.path(), &self.path_prefix) {
            return PathMatch::Outside;
        }
        match routed_path(url.path()) {
            Some(routed) if within_prefix(&routed, &self.routed_prefix) => PathMatch::Within,
            _ => PathMatch::OutsideOnceDecoded,
        }
    }

    /// Why no grant of `grants` allows `url`.
    pub fn why_not(grants: &[UrlGrant], url: &Url) -> Refusal {
        let same_origin: Vec<&UrlGrant> = grants
            .iter()
            .filter(|grant| grant.same_origin(url))
            .collect();
        if same_origin.is_empty() {
            Refusal::Host
        } else if same_origin
            .iter()
            .any(|grant| grant.path_within(url) == PathMatch::OutsideOnceDecoded)
        {
            Refusal::PathOnceDecoded
        } else {
            Refusal::Path
        }
    }

    /// The grant as the runbook wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Why no grant allows a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No grant names its scheme, host and port.
    Host,
    /// Grants name its origin, but not its path.
    Path,
    /// A grant's prefix holds the path as sent, but not once a server
    /// decodes its `%2e`, `%2f` or `%5c`.
    PathOnceDecoded,
}

impl Refusal {
    /// In words, after "request to" or "redirect to".
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Host => "a host that is not granted",
            Refusal::Path => "a path that is not granted",
            Refusal::PathOnceDecoded => {
                "a path that leaves the granted path once its percent-encoded `.`, `/` or `\\` are decoded"
            }
        }
    }
}

/// How a request path compares with a grant's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathMatch {
    Within,
    Outside,
    /// Within as sent, outside as a decoding server routes it.
    OutsideOnceDecoded,
}

/// Whether `path` is `prefix` or below it, on segment boundaries.
fn within_prefix(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The path as a server that decodes before routing would read it:
/// percent-encoded `.`, `/`, `\` and `%` decoded until nothing changes
/// (double encoding included), `\` read as `/`, empty and `.` segments
/// dropped, `..` applied. `None` when the decoding does not settle.
fn routed_path(path: &str) -> Option<String> {
    let mut decoded = path.to_owned();
    let mut settled = false;
    for _ in 0..8 {
        let next = decode_separators(&decoded);
        if next == decoded {
            settled = true;
            break;
        }
        decoded = next;
    }
    if !settled {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        return Some("/".to_owned());
    }
    Some(
        segments
            .iter()
            .map(|segment| format!("/{segment}"))
            .collect(),
    )
}

/// One pass decoding `%2e`, `%2f`, `%5c` and `%25`, in either case.
fn decode_separators(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(index) = rest.find('%') {
        out.push_str(&rest[..index]);
        let escape = rest.get(index + 1..index + 3).unwrap_or_default();
        let decoded = match escape.to_ascii_lowercase().as_str() {
            "2e" => Some('.'),
            "2f" => Some('/'),
            "5c" => Some('\\'),
            "25" => Some('%'),
            _ => None,
        };
        match decoded {
            Some(character) => {
                out.push(character);
                rest = &rest[index + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `grants.aws`: what a step may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsGrant {
    /// Services (`rds`).
    pub services: Vec<String>,
    /// Actions; `Describe*` allows a prefix.
    pub actions: Vec<String>,
    /// Regions.
    pub regions: Vec<String>,
}

impl AwsGrant {
    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "services {}; actions {}; regions {}",
            self.services.join(", "),
            self.actions.join(", "),
            self.regions.join(", ")
        )
    }

    /// Why a call is outside the grant, if it is.
    pub fn refuses(&self, service: &str, action: &str, region: &str) -> Option<String> {
        if !self.services.iter().any(|granted| granted == service) {
            return Some(format!(
                "service `{service}` is not granted (granted: {})",
                self.services.join(", ")
            ));
        }
        let action_allowed = self
            .actions
            .iter()
            .any(|granted| match granted.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => granted == action,
            });
        if !action_allowed {
            return Some(format!(
                "action `{action}` is not granted (granted: {})",
                self.actions.join(", ")
            ));
        }
        if !self.regions.iter().any(|granted| granted == region) {
            return Some(format!(
                "region `{region}` is not granted (granted: {})",
                self.regions.join(", ")
            ));
        }
        None
    }
}

/// `grants.kube`: what a step may do to which objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeGrant {
    /// Namespaces; `*` allows every namespace and cluster-scoped objects.
    pub namespaces: Vec<String>,
    /// `apps/v1/Deployment`, `v1/Service`.
    pub resources: Vec<String>,
    /// `get`, `list`, `watch`, `create`, `patch`, `delete`.
    pub verbs: Vec<String>,
}

/// The verbs a grant can name.
pub const VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete", "logs"];

impl KubeGrant {
    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "namespaces {}; resources {}; verbs {}",
            self.namespaces.join(", "),
            self.resources.join(", "),
            self.verbs.join(", ")
        )
    }

    /// Why a call is outside the grant, if it is. `namespace` is `None`
    /// for cluster-scoped objects and lists across namespaces.
    pub fn refuses(
        &self,
        verb: &str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
    ) -> Option<String> {
        let resource = format!("{api_version}/{kind}");
        if !self.resources.contains(&resource) {
            return Some(format!(
                "resource `{resource}` is not granted (granted: {})",
                self.resources.join(", ")
            ));
        }
        if !self.verbs.iter().any(|granted| granted == verb) {
            return Some(format!(
                "verb `{verb}` is not granted (granted: {})",
                self.verbs.join(", ")
            ));
        }
        let everywhere = self.namespaces.iter().any(|granted| granted == "*");
        match namespace {
            _ if everywhere => None,
            Some(namespace) if self.namespaces.iter().any(|granted| granted == namespace) => None,
            Some(namespace) => Some(format!(
                "namespace `{namespace}` is not granted (granted: {})",
                self.namespaces.join(", ")
            )),
            None => Some(format!(
                "a call across namespaces or on a cluster-scoped object needs `namespaces = [\"*\"]` (granted: {})",
                self.namespaces.join(", ")
            )),
        }
    }
}
