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
    /// Programs the step may run, each with its arguments and sandbox.
    pub command: Vec<CommandGrant>,
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
        UrlGrant::nearest(grants, url).refusal
    }

    /// The grant of `grants` nearest to `url`, which none of them allows,
    /// and what differs: a grant for the same host first (the same scheme
    /// and port before another, then the one sharing the most leading path
    /// segments), so that a denial can say "only the path differs" rather
    /// than "not granted".
    pub fn nearest<'g>(grants: &'g [UrlGrant], url: &Url) -> Miss<'g> {
        let granted = grants.iter().map(|grant| grant.as_str()).collect();
        let same_host: Vec<&UrlGrant> = grants
            .iter()
            .filter(|grant| {
                url.host_str()
                    .is_some_and(|host| host.eq_ignore_ascii_case(&grant.host))
            })
            .collect();
        let score = |grant: &UrlGrant| {
            (
                grant.scheme == url.scheme() && url.port_or_known_default() == Some(grant.port),
                grant.scheme == url.scheme(),
                url.port_or_known_default() == Some(grant.port),
                grant.path_within(url) != PathMatch::Outside,
                shared_segments(&grant.path_prefix, url.path()),
            )
        };
        let mut nearest: Option<&UrlGrant> = None;
        for grant in same_host {
            // The first of equals wins: grants keep the runbook's order.
            if nearest.is_none_or(|best| score(grant) > score(best)) {
                nearest = Some(grant);
            }
        }
        let Some(grant) = nearest else {
            return Miss {
                refusal: Refusal::Host,
                nearest: None,
                scheme_differs: false,
                port_differs: false,
                path: PathMatch::Outside,
                granted,
            };
        };
        let scheme_differs = grant.scheme != url.scheme();
        let port_differs = url.port_or_known_default() != Some(grant.port);
        let path = grant.path_within(url);
        let refusal = if scheme_differs {
            Refusal::Scheme
        } else if port_differs {
            Refusal::Port
        } else if path == PathMatch::OutsideOnceDecoded {
            Refusal::PathOnceDecoded
        } else {
            Refusal::Path
        };
        Miss {
            refusal,
            nearest: Some(grant),
            scheme_differs,
            port_differs,
            path,
            granted,
        }
    }

    /// The narrowest grant that allows `url`: its scheme, host, port (when
    /// not the scheme's default) and path, without query or credentials
    /// (`http://h:8080/admin/feature-flags`).
    pub fn narrowest(url: &Url) -> String {
        let mut text = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        if let Some(port) = url.port() {
            text.push_str(&format!(":{port}"));
        }
        text.push_str(url.path().trim_end_matches('/'));
        text
    }

    /// The narrowest grant that allows every URL beginning with `known`,
    /// a URL whose path goes on with what is known only at run time: the
    /// path up to its last `/` (`http://h/flags/` + an id → `http://h/flags`).
    pub fn narrowest_below(known: &Url) -> String {
        let path = known.path();
        let folder = &path[..path.rfind('/').unwrap_or(0)];
        let mut text = format!(
            "{}://{}",
            known.scheme(),
            known.host_str().unwrap_or_default()
        );
        if let Some(port) = known.port() {
            text.push_str(&format!(":{port}"));
        }
        text.push_str(folder);
        text
    }

    /// Whether some URL beginning with `known` (its path cut short: what
    /// follows is known only at run time) may be within this grant: `false`
    /// only when none can be.
    pub fn may_allow_below(&self, known: &Url) -> bool {
        if !self.same_origin(known) {
            return false;
        }
        let path = known.path();
        self.path_prefix.is_empty()
            || self.path_prefix.starts_with(path)
            || within_prefix(path, &self.path_prefix)
    }

    /// The grant as the runbook wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// How a URL that no grant allows differs from the grant nearest to it
/// ([`UrlGrant::nearest`]).
#[derive(Debug, Clone)]
pub struct Miss<'g> {
    /// Why, in one word.
    pub refusal: Refusal,
    /// The grant for the same host nearest to the URL; `None` when no
    /// grant is for its host.
    pub nearest: Option<&'g UrlGrant>,
    /// The URL's scheme is not the nearest grant's.
    pub scheme_differs: bool,
    /// The URL's port is not the nearest grant's.
    pub port_differs: bool,
    path: PathMatch,
    /// Every grant, as written: what a URL for another host is told.
    granted: Vec<&'g str>,
}

impl Miss<'_> {
    /// What differs, in words, after "request to a path that is not
    /// granted: ": `host and port are granted (`http://h:8080/admin/feature-flag`),
    /// only the path differs: `/admin/feature-flags` is not under
    /// `/admin/feature-flag``. `path` is the URL's path as it may be shown,
    /// `None` when it may not be (a URL held in a secret).
    pub fn explain(&self, url: &Url, path: Option<&str>) -> String {
        let shown_path = path.map_or_else(|| "its path".to_owned(), |path| format!("`{path}`"));
        let Some(grant) = self.nearest else {
            let host = url.host_str().unwrap_or_default();
            return match self.granted.as_slice() {
                [] => format!("no grant is for host `{host}`: the step is granted no URL"),
                granted => {
                    let mut named: Vec<String> = granted
                        .iter()
                        .take(5)
                        .map(|grant| format!("`{grant}`"))
                        .collect();
                    if granted.len() > named.len() {
                        named.push(format!("and {} more", granted.len() - named.len()));
                    }
                    format!(
                        "no grant is for host `{host}` (granted: {})",
                        named.join(", ")
                    )
                }
            };
        };
        let prefix = if grant.path_prefix.is_empty() {
            "/"
        } else {
            grant.path_prefix.as_str()
        };
        let path_clause = match self.path {
            PathMatch::Within => None,
            PathMatch::Outside => Some(format!("{shown_path} is not under `{prefix}`")),
            PathMatch::OutsideOnceDecoded => Some(format!(
                "{shown_path} leaves `{prefix}` once its `%2e`, `%2f` or `%5c` are decoded"
            )),
        };
        if !self.scheme_differs && !self.port_differs {
            return format!(
                "scheme, host and port are granted (`{}`), only the path differs: {}",
                grant.as_str(),
                path_clause.unwrap_or_default()
            );
        }
        let mut clauses = Vec::new();
        if self.scheme_differs {
            clauses.push(format!(
                "the scheme is `{}`, not `{}`",
                url.scheme(),
                grant.scheme
            ));
        }
        if self.port_differs {
            let port = url
                .port_or_known_default()
                .map(|port| port.to_string())
                .unwrap_or_default();
            clauses.push(format!("the port is {port}, not {}", grant.port));
        }
        clauses.extend(path_clause);
        let differs = match clauses.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, before)) => format!("{} and {last}", before.join(", ")),
            None => String::new(),
        };
        format!(
            "host `{}` is granted (`{}`), but {differs}",
            grant.host,
            grant.as_str()
        )
    }
}

/// Why no grant allows a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No grant names its host.
    Host,
    /// Grants name its host, but with another scheme.
    Scheme,
    /// Grants name its host and scheme, but with another port.
    Port,
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
            Refusal::Scheme => "a scheme that is not granted for its host",
            Refusal::Port => "a port that is not granted for its host",
            Refusal::Path => "a path that is not granted",
            Refusal::PathOnceDecoded => {
                "a path that leaves the granted path once its percent-encoded `.`, `/` or `\\` are decoded"
            }
        }
    }
}

/// How many leading segments `prefix` and `path` share.
fn shared_segments(prefix: &str, path: &str) -> usize {
    prefix
        .split('/')
        .zip(path.split('/'))
        .skip(1)
        .take_while(|(granted, asked)| granted == asked)
        .count()
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

    /// Why a call is outside the grant, if it is: each of the service,
    /// action and region that the grant does not name.
    pub fn refuses(&self, service: &str, action: &str, region: &str) -> Option<String> {
        let missing = self.missing(service, action, region);
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// Each of the service, action and region of a call that the grant
    /// does not name, in words; empty when it allows the call.
    pub fn missing(&self, service: &str, action: &str, region: &str) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.services.iter().any(|granted| granted == service) {
            missing.push(format!(
                "service `{service}` is not granted (granted: {})",
                self.services.join(", ")
            ));
        }
        if !self.allows_action(action) {
            missing.push(format!(
                "action `{action}` is not granted (granted: {})",
                self.actions.join(", ")
            ));
        }
        if !self.regions.iter().any(|granted| granted == region) {
            missing.push(format!(
                "region `{region}` is not granted (granted: {})",
                self.regions.join(", ")
            ));
        }
        missing
    }

    fn allows_action(&self, action: &str) -> bool {
        self.actions
            .iter()
            .any(|granted| match granted.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => granted == action,
            })
    }

    /// The narrowest grant that allows the call: this one with only what
    /// the call lacks added (the action itself, never a wildcard).
    pub fn widened(&self, service: &str, action: &str, region: &str) -> AwsGrant {
        let mut grant = self.clone();
        if !grant.services.iter().any(|granted| granted == service) {
            grant.services.push(service.to_owned());
        }
        if !grant.allows_action(action) {
            grant.actions.push(action.to_owned());
        }
        if !grant.regions.iter().any(|granted| granted == region) {
            grant.regions.push(region.to_owned());
        }
        grant
    }

    /// As a runbook writes it: `{ services = ["rds"], actions = [...], regions = [...] }`.
    pub fn to_toml(&self) -> String {
        format!(
            "{{ services = {}, actions = {}, regions = {} }}",
            toml_list(&self.services),
            toml_list(&self.actions),
            toml_list(&self.regions)
        )
    }
}

/// `["a", "b"]`, as TOML writes a list of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(", "))
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

    /// Why a call is outside the grant, if it is: each of the resource,
    /// verb and namespace that the grant does not name. `namespace` is
    /// `None` for cluster-scoped objects and lists across namespaces.
    pub fn refuses(
        &self,
        verb: &str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
    ) -> Option<String> {
        let missing = self.missing(verb, namespace, api_version, kind);
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// Each of the resource, verb and namespace of a call that the grant
    /// does not name, in words; empty when it allows the call.
    pub fn missing(
        &self,
        verb: &str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        let resource = format!("{api_version}/{kind}");
        if !self.resources.contains(&resource) {
            missing.push(format!(
                "resource `{resource}` is not granted (granted: {})",
                self.resources.join(", ")
            ));
        }
        if !self.verbs.iter().any(|granted| granted == verb) {
            missing.push(format!(
                "verb `{verb}` is not granted (granted: {})",
                self.verbs.join(", ")
            ));
        }
        if !self.allows_namespace(namespace) {
            missing.push(match namespace {
                Some(namespace) => format!(
                    "namespace `{namespace}` is not granted (granted: {})",
                    self.namespaces.join(", ")
                ),
                None => format!(
                    "a call across namespaces or on a cluster-scoped object needs `namespaces = [\"*\"]` (granted: {})",
                    self.namespaces.join(", ")
                ),
            });
        }
        missing
    }

    /// Whether the grant reaches `namespace` (`None`: every namespace,
    /// which only `"*"` grants).
    pub fn allows_namespace(&self, namespace: Option<&str>) -> bool {
        self.namespaces
            .iter()
            .any(|granted| granted == "*" || Some(granted.as_str()) == namespace)
    }

    /// The narrowest grant that allows the call: this one with only what
    /// the call lacks added (`"*"` in place of the namespaces only for a
    /// call that needs every namespace).
    pub fn widened(
        &self,
        verb: &str,
        namespace: Option<&str>,
        api_version: &str,
        kind: &str,
    ) -> KubeGrant {
        let mut grant = self.clone();
        let resource = format!("{api_version}/{kind}");
        if !grant.resources.contains(&resource) {
            grant.resources.push(resource);
        }
        if !grant.verbs.iter().any(|granted| granted == verb) {
            grant.verbs.push(verb.to_owned());
        }
        if !grant.allows_namespace(namespace) {
            match namespace {
                Some(namespace) => grant.namespaces.push(namespace.to_owned()),
                None => grant.namespaces = vec!["*".to_owned()],
            }
        }
        grant
    }

    /// As a runbook writes it: `{ namespaces = [...], resources = [...], verbs = [...] }`.
    pub fn to_toml(&self) -> String {
        format!(
            "{{ namespaces = {}, resources = {}, verbs = {} }}",
            toml_list(&self.namespaces),
            toml_list(&self.resources),
            toml_list(&self.verbs)
        )
    }
}

/// One entry of `grants.command`: a program a step may run, the arguments
/// it may pass, and what the program may touch in its sandbox beyond the
/// system's read-only folders and its scratch folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandGrant {
    /// The program, as the runbook wrote it (rendered).
    pub written: String,
    /// The program on the host: an absolute path, symbolic links resolved
    /// (what the sandbox lets it read and run).
    pub program: PathBuf,
    /// The path that is executed: absolute, its links kept, so that a
    /// program which dispatches on the name it was started by (Debian's
    /// `/usr/bin/psql` → `pg_wrapper`, busybox) sees the name granted.
    pub path: PathBuf,
    /// One pattern per argument: a literal, `*` within an argument for any
    /// text (`--revision=*`), and a last `**` for any further arguments.
    pub args: Vec<String>,
    /// The runbook's folder: a relative working directory (`dir =
    /// "./db"`) is taken from here, as the grant's own paths are.
    pub base: PathBuf,
    /// Files and folders the program may read (and run).
    pub read: Vec<PathBuf>,
    /// Files and folders the program may write.
    pub write: Vec<PathBuf>,
    /// TCP ports the program may connect to.
    pub connect: Vec<u16>,
}

/// The pattern, as the last of `args`, that allows any further arguments.
pub const ANY_FURTHER_ARGS: &str = "**";

impl CommandGrant {
    /// One line for reports: `/usr/bin/alembic upgrade * (read ./db; connect 5432)`.
    pub fn describe(&self) -> String {
        let mut line = self.written.clone();
        for pattern in &self.args {
            line.push(' ');
            line.push_str(pattern);
        }
        let mut reach = Vec::new();
        let paths = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.read.is_empty() {
            reach.push(format!("read {}", paths(&self.read)));
        }
        if !self.write.is_empty() {
            reach.push(format!("write {}", paths(&self.write)));
        }
        if !self.connect.is_empty() {
            let ports: Vec<String> = self.connect.iter().map(u16::to_string).collect();
            reach.push(format!("connect {}", ports.join(", ")));
        }
        if !reach.is_empty() {
            line.push_str(&format!(" ({})", reach.join("; ")));
        }
        line
    }

    /// Whether `args` fit the patterns: one pattern per argument, and a
    /// last `**` for any further ones.
    pub fn allows_args(&self, args: &[String]) -> bool {
        let (patterns, rest_allowed) = match self.args.split_last() {
            Some((last, before)) if last == ANY_FURTHER_ARGS => (before, true),
            _ => (self.args.as_slice(), false),
        };
        if args.len() < patterns.len() || (!rest_allowed && args.len() != patterns.len()) {
            return false;
        }
        patterns
            .iter()
            .zip(args)
            .all(|(pattern, arg)| glob_matches(pattern, arg))
    }

    /// Why running `program` with `args` is outside every grant in
    /// `grants`, or the grant that allows it.
    pub fn find<'g>(
        grants: &'g [CommandGrant],
        program: &str,
        args: &[String],
    ) -> Result<&'g CommandGrant, String> {
        let for_program: Vec<&CommandGrant> = grants
            .iter()
            .filter(|grant| grant.program.as_os_str() == program || grant.written == program)
            .collect();
        if for_program.is_empty() {
            let granted: Vec<&str> = grants.iter().map(|grant| grant.written.as_str()).collect();
            return Err(if granted.is_empty() {
                format!("program `{program}` is not granted (no program is)")
            } else {
                format!(
                    "program `{program}` is not granted (granted: {})",
                    granted.join(", ")
                )
            });
        }
        for_program
            .iter()
            .find(|grant| grant.allows_args(args))
            .copied()
            .ok_or_else(|| {
                let patterns: Vec<String> = for_program
                    .iter()
                    .map(|grant| format!("[{}]", grant.args.join(" ")))
                    .collect();
                format!(
                    "arguments [{}] do not fit the granted patterns {}",
                    args.join(" "),
                    patterns.join(", ")
                )
            })
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (`/` included: an argument is not a path to the grant).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod command_tests {
    use super::*;

    fn grant(args: &[&str]) -> CommandGrant {
        CommandGrant {
            path: PathBuf::from("/usr/bin/alembic"),
            base: PathBuf::from("/srv/runbooks"),
            written: "/usr/bin/alembic".into(),
            program: PathBuf::from("/usr/bin/alembic"),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            read: Vec::new(),
            write: Vec::new(),
            connect: vec![5432],
        }
    }

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_argument_fits_its_pattern_and_no_more_are_allowed() {
        let upgrade = grant(&["upgrade", "*"]);
        assert!(upgrade.allows_args(&args("upgrade head")));
        assert!(upgrade.allows_args(&args("upgrade +1")));
        assert!(!upgrade.allows_args(&args("downgrade base")));
        assert!(!upgrade.allows_args(&args("upgrade")));
        assert!(!upgrade.allows_args(&args("upgrade head --sql")));
        assert!(grant(&[]).allows_args(&[]));
        assert!(!grant(&[]).allows_args(&args("current")));
    }

    #[test]
    fn a_last_double_star_allows_any_further_arguments() {
        let any = grant(&["-c", "alembic.ini", "**"]);
        assert!(any.allows_args(&args("-c alembic.ini")));
        assert!(any.allows_args(&args("-c alembic.ini upgrade head")));
        assert!(!any.allows_args(&args("-c other.ini upgrade head")));
    }

    #[test]
    fn a_star_inside_an_argument_matches_any_text_there() {
        let revision = grant(&["--revision=*", "to-*-now"]);
        assert!(revision.allows_args(&args("--revision=ab12 to-x-now")));
        assert!(revision.allows_args(&args("--revision= to--now")));
        assert!(!revision.allows_args(&args("--rev=ab12 to-x-now")));
        assert!(!revision.allows_args(&args("--revision=ab12 to-x-later")));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(!glob_matches("a*b*c", "aXcYb"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn find_names_the_program_or_the_arguments_that_are_not_granted() {
        let grants = [grant(&["upgrade", "*"]), grant(&["current"])];
        assert!(CommandGrant::find(&grants, "/usr/bin/alembic", &args("current")).is_ok());
        let program = CommandGrant::find(&grants, "/usr/bin/psql", &[]).unwrap_err();
        assert!(
            program.contains("program `/usr/bin/psql` is not granted"),
            "{program}"
        );
        let arguments =
            CommandGrant::find(&grants, "/usr/bin/alembic", &args("downgrade base")).unwrap_err();
        assert!(arguments.contains("[upgrade *], [current]"), "{arguments}");
        assert!(grants[0].describe().contains("connect 5432"));
    }
}

#[cfg(test)]
mod nearest_tests {
    use super::*;

    fn grants(texts: &[&str]) -> Vec<UrlGrant> {
        texts
            .iter()
            .map(|text| UrlGrant::parse(text).unwrap())
            .collect()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    /// How `request` misses `granted`: the refusal, the nearest grant, and
    /// the explanation with the path shown.
    fn miss(granted: &[&str], request: &str) -> (Refusal, Option<String>, String) {
        let grants = grants(granted);
        let request = url(request);
        let miss = UrlGrant::nearest(&grants, &request);
        (
            miss.refusal,
            miss.nearest.map(|grant| grant.as_str().to_owned()),
            miss.explain(&request, Some(request.path())),
        )
    }

    #[test]
    fn only_the_path_differs_from_a_grant_for_the_same_origin() {
        let (refusal, nearest, explained) = miss(
            &["http://h:8080/admin/feature-flag"],
            "http://h:8080/admin/feature-flags",
        );
        assert_eq!(refusal, Refusal::Path);
        assert_eq!(nearest.as_deref(), Some("http://h:8080/admin/feature-flag"));
        assert_eq!(
            explained,
            "scheme, host and port are granted (`http://h:8080/admin/feature-flag`), only the path differs: `/admin/feature-flags` is not under `/admin/feature-flag`"
        );
        assert_eq!(
            UrlGrant::narrowest(&url("http://h:8080/admin/feature-flags?key=x")),
            "http://h:8080/admin/feature-flags"
        );
    }

    #[test]
    fn the_nearest_path_grant_shares_the_most_leading_segments() {
        let (_, nearest, _) = miss(
            &[
                "http://h/health",
                "http://h/admin/other",
                "http://h/admin/flags/x",
            ],
            "http://h/admin/flags/y",
        );
        assert_eq!(nearest.as_deref(), Some("http://h/admin/flags/x"));
        assert_eq!(shared_segments("/admin/flags/x", "/admin/flags/y"), 2);
        assert_eq!(shared_segments("", "/admin"), 0);
    }

    #[test]
    fn another_port_or_scheme_on_a_granted_host_is_named_as_such() {
        let (refusal, _, explained) = miss(&["http://h:8080/api"], "http://h:8081/api/x");
        assert_eq!(refusal, Refusal::Port);
        assert_eq!(
            explained,
            "host `h` is granted (`http://h:8080/api`), but the port is 8081, not 8080"
        );
        let (refusal, _, explained) = miss(&["https://h/api"], "http://h/v2");
        assert_eq!(refusal, Refusal::Scheme);
        assert_eq!(
            explained,
            "host `h` is granted (`https://h/api`), but the scheme is `http`, not `https`, the port is 80, not 443 and `/v2` is not under `/api`"
        );
        // Of two grants for the host, the one on the same port is nearer.
        let (_, nearest, _) = miss(&["https://h", "http://h:8080/a"], "http://h:8080/b");
        assert_eq!(nearest.as_deref(), Some("http://h:8080/a"));
    }

    #[test]
    fn another_host_lists_what_is_granted() {
        let (refusal, nearest, explained) = miss(
            &["http://127.0.0.1:1", "https://api.example.com/v1"],
            "http://elsewhere:9/x",
        );
        assert_eq!(refusal, Refusal::Host);
        assert_eq!(nearest, None);
        assert_eq!(
            explained,
            "no grant is for host `elsewhere` (granted: `http://127.0.0.1:1`, `https://api.example.com/v1`)"
        );
        let (_, _, explained) = miss(&[], "http://elsewhere/");
        assert!(
            explained.ends_with("the step is granted no URL"),
            "{explained}"
        );
        // Host names compare without case.
        assert_eq!(miss(&["http://H/a"], "http://h/b").0, Refusal::Path);
    }

    #[test]
    fn a_hidden_path_is_not_shown() {
        let grants = grants(&["https://hooks.example.com/services"]);
        let request = url("https://hooks.example.com/other/T000/B000/XXXX");
        let explained = UrlGrant::nearest(&grants, &request).explain(&request, None);
        assert!(
            explained.ends_with("its path is not under `/services`"),
            "{explained}"
        );
        assert!(!explained.contains("T000"), "{explained}");
    }

    #[test]
    fn the_narrowest_grant_allows_the_request_and_no_sibling() {
        for request in [
            "http://h:8080/admin/feature-flags",
            "https://h/a/b/?q=1",
            "http://[::1]:9/x",
            "https://h/",
        ] {
            let request = url(request);
            let grant = UrlGrant::parse(&UrlGrant::narrowest(&request)).unwrap();
            assert!(grant.allows(&request), "{request}");
        }
        let grant = UrlGrant::parse(&UrlGrant::narrowest(&url("http://h/admin/flags"))).unwrap();
        assert!(!grant.allows(&url("http://h/admin/flagsx")));
        assert!(!grant.allows(&url("http://h/admin")));
    }

    #[test]
    fn a_url_known_only_in_part_is_refused_only_when_no_ending_could_be_granted() {
        let grant = &grants(&["http://h/admin/flags"])[0];
        assert!(grant.may_allow_below(&url("http://h/admin/")));
        assert!(grant.may_allow_below(&url("http://h/admin/fl")));
        assert!(grant.may_allow_below(&url("http://h/admin/flags")));
        assert!(grant.may_allow_below(&url("http://h/admin/flags/")));
        assert!(!grant.may_allow_below(&url("http://h/admin/flagsx")));
        assert!(!grant.may_allow_below(&url("http://h/other/")));
        assert!(!grant.may_allow_below(&url("http://h:81/admin/")));
        assert_eq!(
            UrlGrant::narrowest_below(&url("http://h:8080/admin/flags/")),
            "http://h:8080/admin/flags"
        );
        assert_eq!(
            UrlGrant::narrowest_below(&url("http://h/admin/fl")),
            "http://h/admin"
        );
    }
}

#[cfg(test)]
mod widened_tests {
    use super::*;

    #[test]
    fn a_kube_grant_widened_adds_only_what_the_call_lacks() {
        let grant = KubeGrant {
            namespaces: vec!["shop".into()],
            resources: vec!["apps/v1/Deployment".into()],
            verbs: vec!["get".into()],
        };
        assert_eq!(
            grant
                .widened("patch", Some("shop"), "apps/v1", "Deployment")
                .to_toml(),
            r#"{ namespaces = ["shop"], resources = ["apps/v1/Deployment"], verbs = ["get", "patch"] }"#
        );
        assert_eq!(
            grant
                .widened("get", None, "apps/v1", "Deployment")
                .namespaces,
            ["*"]
        );
        assert_eq!(
            grant
                .missing("delete", Some("payments"), "v1", "Secret")
                .len(),
            3
        );
        assert!(
            grant
                .missing("get", Some("shop"), "apps/v1", "Deployment")
                .is_empty()
        );
    }

    #[test]
    fn an_aws_grant_widened_adds_only_what_the_call_lacks() {
        let grant = AwsGrant {
            services: vec!["rds".into()],
            actions: vec!["Describe*".into()],
            regions: vec!["us-east-1".into()],
        };
        assert_eq!(
            grant
                .widened("rds", "DescribeDBInstances", "eu-west-1")
                .to_toml(),
            r#"{ services = ["rds"], actions = ["Describe*"], regions = ["us-east-1", "eu-west-1"] }"#
        );
        assert_eq!(
            grant
                .refuses("rds", "CreateDBSnapshot", "eu-west-1")
                .unwrap(),
            "action `CreateDBSnapshot` is not granted (granted: Describe*); region `eu-west-1` is not granted (granted: us-east-1)"
        );
    }
}
