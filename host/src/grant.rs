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
