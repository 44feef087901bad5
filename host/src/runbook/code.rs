//! The stable name of every kind of problem that loading, parsing,
//! validating and binding a runbook report. Every diagnostic of `runbook`
//! carries one, so that a test can prove each kind has a fixture in
//! `tests/it/bad/`; operators never see them.

use crate::diagnostic::Diagnostic;

/// Declares [`Code`] and [`Code::ALL`] from one list, so the list of every
/// code cannot miss one.
macro_rules! codes {
    ($($(#[doc = $doc:literal])+ $code:ident,)+) => {
        /// The kind of a problem found in a runbook before anything ran.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($(#[doc = $doc])+ $code,)+
        }

        impl Code {
            /// Every code, in the order declared.
            pub const ALL: &'static [Code] = &[$(Code::$code,)+];

            /// The code's name, as diagnostics carry it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Code::$code => stringify!($code),)+
                }
            }
        }
    };
}

codes! {
    // Loading and parsing the file.
    /// The file is larger than [`super::MAX_RUNBOOK_BYTES`].
    TooLarge,
    /// The file is not UTF-8.
    NotUtf8,
    /// The file is not TOML, or a value has the wrong type.
    Toml,
    /// A key the format does not have.
    UnknownKey,
    /// A key the format requires is missing.
    MissingKey,
    /// A plugin is neither a path nor `{ path, sha256 }`.
    PluginSourceShape,
    // Parameters, environments and plugins.
    /// A parameter's `pattern` is not a regular expression.
    InvalidPattern,
    /// A parameter's `default` does not match its `pattern`.
    DefaultMismatch,
    /// A parameter's `default` is not of its `type`.
    DefaultType,
    /// A `pattern` on a parameter whose `type` is not `string`.
    PatternNotString,
    /// An environment's `timezone` is not a known time zone.
    Timezone,
    /// A deploy window that cannot be read.
    Window,
    /// A freeze that cannot be read.
    Freeze,
    /// Approvals that can never or always be given.
    Approvals,
    /// An `allowed_signers` file that cannot be read.
    AllowedSignersUnreadable,
    /// A line of an `allowed_signers` file that cannot be used.
    AllowedSignersLine,
    /// A name in `from` that no line of `allowed_signers` gives a key.
    ApproverWithoutKey,
    /// `requires.environment` names no environment of the runbook.
    UnknownRequiredEnvironment,
    /// `requires.same` names no parameter of the runbook.
    UnknownSameParam,
    /// `requires.within` is shorter than `requires.soaked`.
    WithinShorterThanSoaked,
    /// Environments whose `requires` lead back to themselves.
    RequiresCircle,
    /// A `rollback_window` of no time at all.
    RollbackWindowEmpty,
    /// A plugin's `sha256` is not 64 hex digits.
    MalformedSha256,
    /// A plugin's `oci://` reference cannot be read.
    OciReference,
    /// A plugin in a registry named by a tag without the digest it pins.
    OciUnpinned,
    // The steps' graph.
    /// The runbook has no step.
    NoSteps,
    /// Two steps have one id.
    DuplicateStepId,
    /// `needs` names no step.
    UnknownNeed,
    /// The steps' `needs` form a cycle.
    Cycle,
    // Each step.
    /// A step id that is not an identifier.
    InvalidStepId,
    /// A manual step without a checklist.
    ManualWithoutChecklist,
    /// A manual step with `uses`.
    ManualWithPlugin,
    /// A plugin step without `uses`.
    NoUses,
    /// A checklist on a step that is not manual.
    ChecklistNotManual,
    /// `uses` names no plugin of `[plugins]`.
    UnknownPlugin,
    /// A `timeout`, `backoff` or `max` that is not a duration.
    NotADuration,
    /// A duration longer than [`super::MAX_DURATION`].
    DurationTooLong,
    /// A `memory` that is not a size.
    NotAMemorySize,
    /// A `memory` above [`super::MAX_MEMORY`].
    MemoryTooLarge,
    /// `retries.attempts` is 0.
    NoAttempts,
    /// `retries.attempts` is above [`super::MAX_ATTEMPTS`].
    TooManyAttempts,
    /// A `${{ ... }}` that does not parse.
    Expression,
    /// An `if` that does not parse.
    Condition,
    /// An `if` written as a string with more than one expression.
    ConditionNotOneExpression,
    // What expressions refer to.
    /// A parameter the runbook does not declare.
    UnknownParam,
    /// A variable no environment defines.
    UnknownVar,
    /// A step's output in a value fixed before the run.
    OutputBeforeRun,
    /// An output or outcome of a step this one does not need.
    StepNotNeeded,
    /// An output of a step with `for_each`.
    OutputOfForEach,
    /// `item` in a step without `for_each`.
    ItemOutsideForEach,
    /// A secret outside `with`.
    SecretOutsideWith,
    /// A secret the step is not granted.
    SecretWithoutGrant,
    // `for_each`.
    /// An empty `for_each` list.
    ForEachEmpty,
    /// A `for_each` longer than [`super::MAX_FOR_EACH`].
    ForEachTooLong,
    /// Two `for_each` elements that would run under one id.
    ForEachRepeat,
    /// A `for_each` that is neither a list nor a string.
    ForEachShape,
    /// A `for_each` expression whose value is not a list.
    ForEachNotAList,
    /// A `for_each` expression whose value is not known before the run.
    ForEachUndefined,
    // Grants.
    /// A `grants.secrets` entry that is not a secret name.
    SecretName,
    /// A `grants.kube.verbs` entry that is not a verb.
    KubeVerb,
    /// A `grants.kube.resources` entry that is not `GROUP/VERSION/Kind`.
    KubeResource,
    /// `grants.kube.namespaces` is empty.
    KubeNoNamespace,
    /// A `grants.fs.read` folder written as an absolute path.
    FsAbsolute,
    /// A `grants.fs.read` folder that climbs out with `..`.
    FsClimbs,
    /// A `grants.fs.read` folder that cannot be resolved.
    FsMissing,
    /// A `grants.fs.read` folder that a symlink leads out of the runbook's.
    FsSymlinkEscape,
    /// A `grants.fs.read` entry that is not a folder.
    FsNotAFolder,
    /// A `grants.http` entry with a wildcard.
    HttpWildcard,
    /// A `grants.http` entry that is not a URL prefix.
    HttpGrant,
    /// A grant whose value is not known before the run.
    GrantUndefined,
    /// A `grants.command` program that is not a path.
    CommandProgram,
    /// A `grants.command` argument pattern with `**` before the last.
    CommandArgs,
    /// A `grants.command` port 0.
    CommandPort,
    /// A `grants.command` path that is the whole filesystem, or missing.
    CommandPath,
    // `[notify]`.
    /// `notify.every` shorter than [`super::MIN_NOTIFY_EVERY`].
    NotifyEveryTooShort,
    /// `notify.on` names no moment.
    UnknownMoment,
    /// `notify.on` has `holding` and `[notify]` no `every`.
    HoldingWithoutEvery,
    /// A `steps.` reference in `[notify]`, which runs beside the steps.
    NotifyStepReference,
    // `[state]`.
    /// `state.backend` names no backend.
    UnknownBackend,
    /// `state.url` missing, not the backend's kind, or holding a password.
    StateUrl,
    /// `state.lease` shorter than [`super::MIN_LEASE`].
    LeaseTooShort,
    // `[secrets.NAME]`.
    /// `from` names no source of secrets.
    UnknownSecretSource,
    /// A secret's source without a key it needs (`id`, `region`, `path`).
    SecretSourceMissingKey,
    /// A key that does not go with the secret's source (`key` on a file).
    SecretSourceKey,
    /// A secret's source names a value known only once the run started.
    SecretSourceNotFixed,
    // Binding to an environment and parameters.
    /// `--env` for a runbook without environments.
    NoEnvironments,
    /// `--env` names no environment.
    UnknownEnvironment,
    /// No `--env` for a runbook with environments.
    NoEnvironmentChosen,
    /// `--set` names no parameter.
    UnknownSet,
    /// A parameter's value does not match its pattern.
    ParamMismatch,
    /// A `--set` value that is not of its parameter's `type`.
    ParamNotOfType,
    /// A required parameter without a value.
    MissingParam,
    /// A variable the chosen environment does not define.
    UndefinedVar,
    /// A URL in `with`, known before the run, that no `grants.http` entry
    /// of the step covers.
    UrlNotGranted,
    /// A `with.namespace`, known before the run, outside the step's
    /// `grants.kube.namespaces`.
    NamespaceNotGranted,
    /// A `with.region`, known before the run, outside the step's
    /// `grants.aws.regions`.
    RegionNotGranted,
    /// A secret's source names a value the chosen environment does not
    /// define.
    SecretSourceUndefined,
}

impl Code {
    /// A diagnostic of this kind, with no place yet.
    pub fn diagnostic(self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).code(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// `runbook.rs` and every file below `runbook/`.
    fn runbook_sources() -> Vec<PathBuf> {
        fn walk(folder: &Path, files: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|extension| extension == "rs") {
                    files.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join("runbook.rs")];
        walk(&root.join("runbook"), &mut files);
        files
    }

    /// The fixture test proves every code has a fixture; this proves every
    /// diagnostic has a code, so that a new one cannot go without both.
    #[test]
    fn every_diagnostic_of_loading_validating_and_binding_is_made_with_a_code() {
        let files = runbook_sources();
        assert!(files.len() > 10, "{files:?}");
        let mut uncoded = Vec::new();
        for file in files
            .iter()
            .filter(|file| !file.ends_with("runbook/code.rs"))
        {
            let text = std::fs::read_to_string(file).unwrap();
            for (number, line) in text.lines().enumerate() {
                if line.contains("Diagnostic::new(") {
                    uncoded.push(format!("{}:{}", file.display(), number + 1));
                }
            }
        }
        assert!(
            uncoded.is_empty(),
            "make these with `Code::NAME.diagnostic(...)`, adding a code and a fixture in tests/it/bad/ for a new kind of problem: {uncoded:?}"
        );
    }

    #[test]
    fn every_code_has_its_own_name() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        assert_eq!(Code::UnknownNeed.name(), "UnknownNeed");
        let diagnostic = Code::Cycle.diagnostic("a cycle");
        assert_eq!(diagnostic.code, Some("Cycle"));
        assert!(!diagnostic.to_string().contains("Cycle"), "{diagnostic}");
    }
}
