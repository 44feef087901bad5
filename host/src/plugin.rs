//! Loading and calling plugins: one wasmtime `Engine` per process, compiled
//! components cached on disk, and a fresh `Store` for every call, from a
//! pre-instantiated component, with a memory cap, a deadline and
//! cancellation.

pub mod cache;
pub mod replay;
pub mod seal;

use crate::capability::http::HttpClient;
use crate::capability::tape::{Ended, Export, ExportCall, PlannedRecord, PluginInfo};
use crate::capability::{RunAccess, StepContext, StepState};
use crate::grant::{StepGrants, StepId};
use crate::wit::{Descriptor, Outcome, PlannedAction, PluginError, RunResult, StepPre};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

/// How often the epoch advances; a running guest notices a deadline or a
/// cancellation within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's digest is not the one the runbook pins.
    #[error("plugin `{path}` has sha256 {actual}, but the runbook pins {expected}")]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// What the runbook says.
        expected: String,
        /// What the file is.
        actual: String,
    },
    /// The file is not a valid component, or does not fit the contract.
    #[error("`{path}` is not a runbook step plugin: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why, from wasmtime.
        reason: String,
    },
    /// The component imports an interface the host does not provide, so
    /// it cannot be instantiated.
    #[error("`{path}` imports `{import}`, which the host does not provide: {hint}")]
    UnknownImport {
        /// The file.
        path: PathBuf,
        /// The import's name (`wasi:http/outgoing-handler@0.2.3`).
        import: String,
        /// How to build the component without it.
        hint: String,
    },
}

/// How to build a component without an import the host does not provide,
/// in words that fit the toolchain that most likely added it.
pub fn unknown_import_hint(import: &str) -> String {
    if import.starts_with("wasi:http/") {
        "a plugin sends HTTP through `runbook:plugin/http`, which checks the step's grants; \
         build without `wasi:http` (jco and componentize-js: `--disable http`) and target a world \
         of `wit/plugin.wit` such as `step-http`"
            .to_owned()
    } else if import.starts_with("runbook:plugin/") {
        "this host serves `runbook:plugin` 0.2 and 0.1: build the plugin against the \
         `wit/plugin.wit` this host ships"
            .to_owned()
    } else {
        "a plugin may import only `runbook:plugin` interfaces and WASI 0.2 (without `wasi:http`); \
         target the narrowest world of `wit/plugin.wit` that has what it uses, such as \
         `step-base` or `step-http`, and leave out bindings it does not use"
            .to_owned()
    }
}

/// Why the plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime could not create the engine.
    #[error("creating the wasm engine: {0}")]
    Engine(String),
    /// The host's imports could not be added to the linker.
    #[error("linking {what}: {reason}")]
    Link {
        /// Which imports.
        what: &'static str,
        /// Why, from wasmtime.
        reason: String,
    },
    /// The thread that advances the epoch could not be started.
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
    /// The HTTP client that capability calls share could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

impl RuntimeError {
    fn link(what: &'static str, error: impl std::fmt::Display) -> Self {
        RuntimeError::Link {
            what,
            reason: error.to_string(),
        }
    }
}

/// Why a call into a plugin did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The step's deadline passed while the plugin ran.
    #[error("the step took longer than its timeout of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The plugin tried to grow its memory past the cap.
    #[error("the plugin exceeded its memory limit of {} MiB and was stopped; raise it with `memory = \"...\"` on the step if it really needs more", .0 >> 20)]
    MemoryExceeded(u64),
    /// The plugin trapped (panicked, hit `unreachable`, divided by zero, ...).
    #[error("the plugin crashed: {0}")]
    Trap(String),
}

/// What a call returned: the plugin's own result.
pub type CallResult<T> = Result<Result<T, PluginError>, CallError>;

/// Where and how the runtime keeps compiled components.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The compiled-component cache; `None` for the user's cache folder.
    pub cache_dir: Option<PathBuf>,
    /// The engine's settings: the measured defaults, which the benchmarks
    /// change one at a time.
    pub tuning: EngineTuning,
    /// Which compiler makes the code of a component the cache does not
    /// have yet.
    pub first_compile: FirstCompile,
}

/// Which compiler compiles a component whose optimised code is not in the
/// cache yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FirstCompile {
    /// Cranelift, the optimising compiler: its code is kept in the cache
    /// and every later run maps it. For commands that run steps.
    #[default]
    Optimised,
    /// Winch, wasmtime's baseline compiler: about five times faster to
    /// compile, slower code. For commands that call each plugin once or
    /// twice (`validate`: `describe` and `check`), so that a fresh machine
    /// checks a runbook in well under a second. Optimised code already in
    /// the cache is used instead; Winch's is cached under its own key and
    /// never runs a step. A component Winch cannot compile (one using the
    /// tail-call, exception or GC proposals) falls back to Cranelift.
    Quick,
}

/// The engine settings that change what a step costs, none of which
/// weakens a limit: each was measured alone (`cargo bench --bench step`,
/// `docs/benchmarks.md`) and the default is the one that paid. Memory and
/// table limits, epoch deadlines and the compiled code's safety checks are
/// not among them: they are fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTuning {
    /// The compiler of the code steps run.
    pub compiler: Compiler,
    /// Instances from a pool of slots reserved up front (`false`: mapped
    /// and unmapped on demand, for each step).
    pub pooling: bool,
    /// How many component instances the pool holds at once (core instances,
    /// memories, tables and stacks follow in proportion).
    pub pool_instances: u32,
    /// Bytes of each linear-memory slot kept mapped between steps and
    /// reset with `memset`, rather than returned to the kernel.
    pub keep_resident: usize,
    /// Reset only the pages a step touched, where the kernel says which
    /// (`PAGEMAP_SCAN`, Linux 6.7 and later).
    pub pagemap_scan: bool,
    /// Linear memories start as a copy-on-write mapping of the module's
    /// data, not by copying it in.
    pub memory_init_cow: bool,
    /// Function tables are filled as they are first used, not at
    /// instantiation.
    pub table_lazy_init: bool,
}

impl Default for EngineTuning {
    fn default() -> Self {
        EngineTuning {
            compiler: Compiler::Cranelift,
            pooling: true,
            pool_instances: 64,
            keep_resident: 4 << 20,
            pagemap_scan: true,
            memory_init_cow: true,
            table_lazy_init: true,
        }
    }
}

/// The process's plugin runtime.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<StepState>,
    cache: cache::ComponentCache,
    /// The baseline compiler's engine, for [`FirstCompile::Quick`].
    quick: Option<Tier>,
    http: HttpClient,
    ticker_stop: Arc<AtomicBool>,
}

/// An engine with its host functions and its part of the cache.
struct Tier {
    engine: Engine,
    linker: Linker<StepState>,
    cache: cache::ComponentCache,
}

impl Tier {
    fn new(engine: Engine, cache_dir: PathBuf) -> Result<Self, RuntimeError> {
        let mut linker = Linker::<StepState>::new(&engine);
        crate::capability::add_to_linker(&mut linker)
            .map_err(|error| RuntimeError::link("the host functions", error))?;
        let cache = cache::ComponentCache::new(cache_dir, &engine);
        Ok(Tier {
            engine,
            linker,
            cache,
        })
    }
}

/// A component made ready by [`PluginRuntime::warm`].
#[derive(Debug, Clone)]
pub struct Warmed {
    /// Compiled now (else it was in the cache already).
    pub compiled: bool,
    /// Its sha256, hex.
    pub digest: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// A loaded, pre-instantiated plugin.
pub struct LoadedPlugin {
    /// The component file.
    pub path: PathBuf,
    /// The component's sha256, hex.
    pub digest: String,
    /// What the plugin says of itself.
    pub descriptor: Descriptor,
    /// The interfaces the component imports, read from the component.
    pub imports: Vec<String>,
    /// The capabilities written into the component at build time (the
    /// `runbook:capabilities` custom section), when it has them.
    pub embedded_capabilities: Option<Vec<String>>,
    /// Whether this load compiled the component (a cache miss).
    pub compiled: bool,
    /// The engine its code was compiled for, in which its stores are made.
    engine: Engine,
    pre: Pre,
}

/// The key of a plugin's parameter schema under which the SDK writes
/// which parameter values need which optional capabilities (its
/// `Step::NEEDED_WHEN`).
pub const NEEDED_WHEN_KEY: &str = "x-runbook-needed-when";

/// The key of a plugin's parameter schema under which the SDK writes which
/// of its failures are transient (its `Step::TRANSIENT`; `""` for none).
pub const TRANSIENT_KEY: &str = "x-runbook-transient";

/// An optional capability that some values of one of a plugin's
/// parameters need (`notify`'s `format = "email"` needs `aws`), as the
/// plugin's parameter schema says under [`NEEDED_WHEN_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct NeededWhen {
    /// The capability's name (`aws`).
    pub capability: String,
    /// A top-level parameter whose value is text (`format`).
    pub param: String,
    /// The values of it that need the capability.
    pub values: Vec<String>,
    /// Whether leaving the parameter out needs it too.
    #[serde(default)]
    pub or_absent: bool,
    /// A grant to copy, for the refusal's hint.
    #[serde(default)]
    pub grant: Option<String>,
}

/// A pre-instantiated component, of the contract it was built against.
enum Pre {
    /// `runbook:plugin@0.2`.
    Current(StepPre<StepState>),
    /// `runbook:plugin@0.1.x`: `run` takes no state and cannot wait.
    V0_1(crate::wit::v0_1::StepPre<StepState>),
}

/// An instance, ready for one call of one export.
enum Instance {
    Current(crate::wit::Step),
    V0_1(crate::wit::v0_1::Step),
}

impl Instance {
    async fn describe(&self, store: &mut Store<StepState>) -> wasmtime::Result<Descriptor> {
        match self {
            Instance::Current(step) => step.call_describe(store).await,
            Instance::V0_1(step) => step.call_describe(store).await.map(Into::into),
        }
    }

    async fn check(
        &self,
        store: &mut Store<StepState>,
        params: &str,
    ) -> wasmtime::Result<Result<(), PluginError>> {
        match self {
            Instance::Current(step) => step.call_check(store, params).await,
            Instance::V0_1(step) => Ok(step.call_check(store, params).await?.map_err(Into::into)),
        }
    }

    async fn plan(
        &self,
        store: &mut Store<StepState>,
        params: &str,
    ) -> wasmtime::Result<Result<Vec<PlannedAction>, PluginError>> {
        match self {
            Instance::Current(step) => step.call_plan(store, params).await,
            Instance::V0_1(step) => Ok(step
                .call_plan(store, params)
                .await?
                .map(|actions| actions.into_iter().map(Into::into).collect())
                .map_err(Into::into)),
        }
    }

    async fn run(
        &self,
        store: &mut Store<StepState>,
        params: &str,
        state: Option<&str>,
    ) -> wasmtime::Result<Result<RunResult, PluginError>> {
        match self {
            Instance::Current(step) => step.call_run(store, params, state).await,
            // A 0.1 plugin does all its work in one call.
            Instance::V0_1(step) => Ok(step
                .call_run(store, params)
                .await?
                .map(|outcome| RunResult::Done(outcome.into()))
                .map_err(Into::into)),
        }
    }

    async fn rollback(
        &self,
        store: &mut Store<StepState>,
        params: &str,
        outputs: &[(String, String)],
    ) -> wasmtime::Result<Result<String, PluginError>> {
        match self {
            Instance::Current(step) => step.call_rollback(store, params, outputs).await,
            Instance::V0_1(step) => Ok(step
                .call_rollback(store, params, outputs)
                .await?
                .map_err(Into::into)),
        }
    }
}

impl LoadedPlugin {
    /// The contract the component was built against: `0.2`, or `0.1` for
    /// a plugin the host serves for compatibility (its `run` cannot wait).
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => "0.2",
            Pre::V0_1(_) => "0.1",
        }
    }

    /// What the plugin asks for whatever its parameters, as the
    /// need-versus-grant rules ([`crate::capability::review`]) read it;
    /// `engine::preflight::asks_of` adds what a step's parameters need.
    pub fn asks(&self) -> crate::capability::Asks<'_> {
        let names = |capabilities: &[crate::wit::Capability]| {
            capabilities
                .iter()
                .map(|capability| capability.name())
                .collect()
        };
        crate::capability::Asks {
            plugin: &self.descriptor.name,
            needs: names(&self.descriptor.capabilities),
            may_use: names(&self.descriptor.optional_capabilities),
            needed_by_params: Vec::new(),
            imports: &self.imports,
        }
    }

    /// Whether the plugin needs `capability` (`http`, `kube`, ...) to run.
    pub fn needs(&self, capability: &str) -> bool {
        self.descriptor
            .capabilities
            .iter()
            .any(|declared| declared.name() == capability)
    }

    /// Which parameter values need which of its optional capabilities,
    /// as its parameter schema says ([`NEEDED_WHEN_KEY`]); nothing when
    /// the schema says nothing, or says it in a shape this host does not
    /// read (such a plugin's steps are then denied at the call instead).
    pub fn needed_when(&self) -> Vec<NeededWhen> {
        serde_json::from_str::<serde_json::Value>(&self.descriptor.params_schema)
            .ok()
            .and_then(|mut schema| schema.get_mut(NEEDED_WHEN_KEY).map(serde_json::Value::take))
            .and_then(|needed| serde_json::from_value(needed).ok())
            .unwrap_or_default()
    }

    /// Which of its failures are transient, as its parameter schema says
    /// ([`TRANSIENT_KEY`]): `Some("")` when none are, `None` when it does
    /// not say (a component not built with this SDK).
    pub fn transient(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.descriptor.params_schema)
            .ok()?
            .get(TRANSIENT_KEY)?
            .as_str()
            .map(str::to_owned)
    }

    /// Whether it needs `capability` or may use it with some parameters.
    pub fn may_use(&self, capability: &str) -> bool {
        self.needs(capability)
            || self
                .descriptor
                .optional_capabilities
                .iter()
                .any(|declared| declared.name() == capability)
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Builds the engine, the linker and the cache, and starts the epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let cache_dir = options.cache_dir.unwrap_or_else(cache::default_dir);
        let Tier {
            engine,
            linker,
            cache,
        } = Tier::new(
            build_engine(
                &options.tuning,
                options.tuning.compiler,
                options.tuning.pooling,
            )?,
            cache_dir.clone(),
        )?;
        let quick = match options.first_compile {
            FirstCompile::Optimised => None,
            FirstCompile::Quick => Some(Tier::new(
                // Its code makes a store or two per plugin (`describe`,
                // `check`): no pool is reserved for it.
                build_engine(&options.tuning, Compiler::Winch, false)?,
                cache_dir,
            )?),
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engines: Vec<Engine> = std::iter::once(engine.clone())
                .chain(quick.as_ref().map(|tier| tier.engine.clone()))
                .collect();
            let stop = Arc::clone(&ticker_stop);
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(RuntimeError::Ticker)?;
        }
        Ok(PluginRuntime {
            engine,
            linker,
            cache,
            quick,
            http: HttpClient::new().map_err(RuntimeError::Http)?,
            ticker_stop,
        })
    }

    /// The engine, host functions and cache that make a component's code:
    /// the optimising compiler's, unless this runtime compiles quickly
    /// first and the cache has no optimised code for it yet.
    fn tier_for(&self, digest: &str) -> (&Engine, &Linker<StepState>, &cache::ComponentCache) {
        match &self.quick {
            Some(quick) if !self.cache.path_for(digest).exists() => {
                (&quick.engine, &quick.linker, &quick.cache)
            }
            _ => (&self.engine, &self.linker, &self.cache),
        }
    }

    /// The compiled component, from the cache or compiled now by the
    /// compiler [`PluginRuntime::tier_for`] picks; a component the quick
    /// compiler refuses is compiled by the optimising one.
    fn compile(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, bool, &Engine, &Linker<StepState>), cache::CacheError> {
        let (engine, linker, cache) = self.tier_for(digest);
        match cache.get_or_compile(engine, digest, bytes) {
            Ok((component, compiled)) => Ok((component, compiled, engine, linker)),
            Err(cache::CacheError::Compile(reason)) if !std::ptr::eq(engine, &self.engine) => {
                tracing::debug!("the quick compiler refused the component ({reason}); optimising");
                let (component, compiled) =
                    self.cache.get_or_compile(&self.engine, digest, bytes)?;
                Ok((component, compiled, &self.engine, &self.linker))
            }
            Err(error) => Err(error),
        }
    }

    /// The folder of compiled components, where plugins pulled from a
    /// registry are kept too (`oci/`).
    pub fn cache_dir(&self) -> &Path {
        self.cache.dir()
    }

    /// The shared HTTP client that capability calls use.
    pub fn http_client(&self) -> HttpClient {
        self.http.clone()
    }

    /// Compiles the components at `paths` into the cache at once, one
    /// thread each (wasmtime spreads each compilation over the cores too),
    /// so that loading them afterwards only maps what is cached: what
    /// `validate`, `plan` and `exec` do first for every plugin a runbook
    /// uses, and `runbook plugin warm` ahead of time. Each path's outcome:
    /// whether it was compiled now (false: it was cached), and how long
    /// that took; a component that cannot be read or compiled is left for
    /// the load that follows to report.
    pub fn warm(&self, paths: &[PathBuf]) -> Vec<(PathBuf, Result<Warmed, String>)> {
        std::thread::scope(|scope| {
            let jobs: Vec<_> = paths
                .iter()
                .map(|path| {
                    scope.spawn(move || {
                        let started = std::time::Instant::now();
                        let outcome = std::fs::read(path)
                            .map_err(|error| error.to_string())
                            .and_then(|bytes| {
                                let digest = hex::encode(Sha256::digest(&bytes));
                                self.compile(&digest, &bytes)
                                    .map_err(|error| format!("{error:#}"))
                                    .map(|(_, compiled, _, _)| Warmed {
                                        compiled,
                                        digest,
                                        elapsed: started.elapsed(),
                                    })
                            });
                        (path.clone(), outcome)
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|job| {
                    job.join()
                        .unwrap_or_else(|_| (PathBuf::new(), Err("the compiler panicked".into())))
                })
                .collect()
        })
    }

    /// Loads a component: checks its digest, compiles it or maps it from the
    /// cache, pre-instantiates it and asks it to describe itself.
    pub async fn load(
        &self,
        path: &Path,
        expected_sha256: Option<&str>,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes, expected_sha256).await
    }

    /// Loads a component from its bytes, as [`PluginRuntime::load`] does
    /// with a file's; `path` names it in messages.
    pub async fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        expected_sha256: Option<&str>,
    ) -> Result<LoadedPlugin, LoadError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::DigestMismatch {
                path: path.to_path_buf(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        let invalid = |reason: String| LoadError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let (component, compiled, engine, linker) = self
            .compile(&digest, bytes)
            .map_err(|error| invalid(format!("{error:#}")))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let engine = engine.clone();
        let instance_pre = linker.instantiate_pre(&component).map_err(|error| {
            let reason = format!("{error:#}");
            // wasmtime names the import it could not match; say which, and
            // how to build without it.
            match imports
                .iter()
                .find(|import| reason.contains(&format!("`{import}`")))
            {
                Some(import) => LoadError::UnknownImport {
                    path: path.to_path_buf(),
                    import: import.clone(),
                    hint: unknown_import_hint(import),
                },
                None => invalid(reason),
            }
        })?;
        // The current contract first; a plugin built against 0.1.x
        // exports the older `run`.
        let pre = match StepPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::Current(pre),
            Err(current) => crate::wit::v0_1::StepPre::new(instance_pre)
                .map(Pre::V0_1)
                .map_err(|_| {
                    invalid(format!(
                        "it does not export the `runbook:plugin/step` world of 0.2 or 0.1 ({current:#})"
                    ))
                })?,
        };
        let mut plugin = LoadedPlugin {
            path: path.to_path_buf(),
            digest,
            descriptor: Descriptor {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                params_schema: String::new(),
                capabilities: Vec::new(),
                optional_capabilities: Vec::new(),
                idempotent: false,
            },
            imports,
            embedded_capabilities: embedded_capabilities(bytes),
            compiled,
            engine,
            pre,
        };
        let context = self.bare_context(StepId("describe".into()), Duration::from_secs(10));
        plugin.descriptor = self
            .describe(&plugin, context)
            .await
            .map_err(|error| invalid(format!("`describe` failed: {error}")))?;
        if let Some(embedded) = &plugin.embedded_capabilities {
            let mut described = capability_names(&plugin.descriptor);
            let mut written = embedded.clone();
            described.sort();
            written.sort();
            if described != written {
                return Err(invalid(format!(
                    "capabilities [{}] are written into the component, but `describe` says [{}]: the component was altered or sealed wrongly (seal it again: `runbook plugin seal`)",
                    written.join(", "),
                    described.join(", ")
                )));
            }
        }
        Ok(plugin)
    }

    /// A context with no grants and no event writers: for `describe` and
    /// for tools that only inspect.
    pub fn bare_context(&self, step_id: StepId, timeout: Duration) -> Arc<StepContext> {
        Arc::new(RunAccess::bare(self.http.clone()).for_step(
            step_id,
            StepGrants::default(),
            tokio::time::Instant::now() + timeout,
            &tokio_util::sync::CancellationToken::new(),
            false,
            Default::default(),
        ))
    }

    /// Calls `describe`.
    pub async fn describe(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
    ) -> Result<Descriptor, CallError> {
        self.call(
            plugin,
            context,
            crate::runbook::DEFAULT_MEMORY,
            |step, store| Box::pin(async move { step.describe(store).await.map(Ok) }),
        )
        .await
        .map(|result| result.unwrap_or_else(|never: PluginError| panic!("{never:?}")))
    }

    /// Calls `check` with the step's JSON parameters.
    pub async fn check(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        params: &str,
    ) -> CallResult<()> {
        let kept = params.to_owned();
        let params = params.to_owned();
        let result = self
            .call(
                plugin,
                Arc::clone(&context),
                crate::runbook::DEFAULT_MEMORY,
                move |step, store| Box::pin(async move { step.check(store, &params).await }),
            )
            .await;
        keep(
            &context,
            plugin,
            Export::Check,
            kept,
            None,
            None,
            &result,
            |()| Ended::Checked,
        );
        result
    }

    /// Calls `plan`.
    pub async fn plan(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        memory_limit: u64,
        params: &str,
    ) -> CallResult<Vec<PlannedAction>> {
        let kept = params.to_owned();
        let params = params.to_owned();
        let result = self
            .call(
                plugin,
                Arc::clone(&context),
                memory_limit,
                move |step, store| Box::pin(async move { step.plan(store, &params).await }),
            )
            .await;
        keep(
            &context,
            plugin,
            Export::Plan,
            kept,
            None,
            None,
            &result,
            |actions| {
                Ended::Planned(
                    actions
                        .iter()
                        .map(|action| PlannedRecord {
                            description: action.description.clone(),
                            mutates: action.mutates,
                        })
                        .collect(),
                )
            },
        );
        result
    }

    /// Calls `run`: the first time with no state, after a wait with the
    /// state the wait returned.
    pub async fn run(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        memory_limit: u64,
        params: &str,
        state: Option<&str>,
    ) -> CallResult<RunResult> {
        let kept = (params.to_owned(), state.map(str::to_owned));
        let params = params.to_owned();
        let state = state.map(str::to_owned);
        let result = self
            .call(
                plugin,
                Arc::clone(&context),
                memory_limit,
                move |step, store| {
                    Box::pin(async move { step.run(store, &params, state.as_deref()).await })
                },
            )
            .await;
        keep(
            &context,
            plugin,
            Export::Run,
            kept.0,
            kept.1,
            None,
            &result,
            ended_run,
        );
        result
    }

    /// Calls `run` until the step is done, waiting in this process between
    /// rounds: for tools that need the outcome (`describe`, benchmarks),
    /// not for runs, which journal each wait.
    pub async fn run_to_end(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        memory_limit: u64,
        params: &str,
    ) -> CallResult<Outcome> {
        let mut state = None;
        loop {
            match self
                .run(
                    plugin,
                    Arc::clone(&context),
                    memory_limit,
                    params,
                    state.as_deref(),
                )
                .await?
            {
                Ok(RunResult::Done(outcome)) => return Ok(Ok(outcome)),
                Ok(RunResult::Wait(wait)) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(wait.after_ms)) => {}
                        () = context.cancel.cancelled() => return Err(CallError::Cancelled),
                    }
                    state = Some(wait.state);
                }
                Err(error) => return Ok(Err(error)),
            }
        }
    }

    /// Calls `rollback` with the outputs of an earlier `run`.
    pub async fn rollback(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        memory_limit: u64,
        params: &str,
        outputs: Vec<(String, String)>,
    ) -> CallResult<String> {
        let kept = (params.to_owned(), outputs.clone());
        let params = params.to_owned();
        let result = self
            .call(
                plugin,
                Arc::clone(&context),
                memory_limit,
                move |step, store| {
                    Box::pin(async move { step.rollback(store, &params, &outputs).await })
                },
            )
            .await;
        keep(
            &context,
            plugin,
            Export::Rollback,
            kept.0,
            None,
            Some(kept.1),
            &result,
            |summary| Ended::RolledBack {
                summary: summary.clone(),
            },
        );
        result
    }

    /// Instantiates the plugin in a fresh store and runs one export, bounded
    /// by the context's deadline and cancellation. The store is dropped
    /// afterwards whatever happened, so a trap leaves nothing behind.
    async fn call<T, F>(
        &self,
        plugin: &LoadedPlugin,
        context: Arc<StepContext>,
        memory_limit: u64,
        export: F,
    ) -> CallResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a Instance,
                &'a mut Store<StepState>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = wasmtime::Result<Result<T, PluginError>>>
                        + Send
                        + 'a,
                >,
            > + Send,
    {
        let deadline = context.deadline;
        let cancel = context.cancel.clone();
        // Whole milliseconds: the operator wrote "300ms", not "299ms 997us".
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let timeout = Duration::from_millis((left.as_secs_f64() * 1000.0).round() as u64);
        let mut store = Store::new(&plugin.engine, StepState::new(context, memory_limit));
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let outcome = {
            let work = async {
                let step = match &plugin.pre {
                    Pre::Current(pre) => {
                        Instance::Current(pre.instantiate_async(&mut store).await?)
                    }
                    Pre::V0_1(pre) => Instance::V0_1(pre.instantiate_async(&mut store).await?),
                };
                export(&step, &mut store).await
            };
            tokio::select! {
                result = tokio::time::timeout_at(deadline, work) => match result {
                    Ok(result) => Ok(result),
                    Err(_) => Err(CallError::Timeout(timeout)),
                },
                () = cancel.cancelled() => Err(CallError::Cancelled),
            }
        };
        store.data().log_budget.report(&store.data().context);
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => {
                if store.data().limiter.exceeded {
                    Err(CallError::MemoryExceeded(store.data().limiter.limit()))
                } else {
                    Err(CallError::Trap(describe_trap(&error)))
                }
            }
            Err(error) => Err(error),
        }
    }
}

/// How `run` ended, as a cassette keeps it.
pub fn ended_run(result: &RunResult) -> Ended {
    match result {
        RunResult::Done(outcome) => Ended::Done {
            outputs: outcome.outputs.iter().cloned().collect(),
            summary: outcome.summary.clone(),
        },
        RunResult::Wait(wait) => Ended::Wait {
            after_ms: wait.after_ms,
            state: wait.state.clone(),
            status: wait.status.clone(),
        },
    }
}

/// How an export call ended, as a cassette keeps it.
pub fn ended<T>(result: &CallResult<T>, ok: impl FnOnce(&T) -> Ended) -> Ended {
    match result {
        Ok(Ok(value)) => ok(value),
        Ok(Err(error)) => Ended::Error(error.into()),
        Err(error) => Ended::Crashed(error.to_string()),
    }
}

/// Hands a finished export call to the step's tape (kept in its cassette
/// when the run records).
#[allow(clippy::too_many_arguments, reason = "one call's every part")]
fn keep<T>(
    context: &StepContext,
    plugin: &LoadedPlugin,
    export: Export,
    params: String,
    state: Option<String>,
    outputs: Option<Vec<(String, String)>>,
    result: &CallResult<T>,
    ok: impl FnOnce(&T) -> Ended,
) {
    if !matches!(context.tape, crate::capability::tape::Tape::Record(_)) {
        return;
    }
    let info = PluginInfo {
        name: plugin.descriptor.name.clone(),
        version: plugin.descriptor.version.clone(),
        digest: plugin.digest.clone(),
    };
    context.finish_export(
        &info,
        ExportCall {
            export,
            params,
            state,
            outputs,
            result: ended(result, ok),
        },
    );
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// The trap's message and the guest frames, without wasmtime's noise.
fn describe_trap(error: &wasmtime::Error) -> String {
    let mut message = error.to_string();
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        message = trap.to_string();
    }
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if text.starts_with("error while executing at wasm backtrace") {
            let frames: Vec<&str> = text
                .lines()
                .skip(1)
                .filter(|line| !line.trim().is_empty())
                .take(6)
                .collect();
            if !frames.is_empty() {
                message.push_str("\n  wasm backtrace:\n");
                message.push_str(&frames.join("\n"));
            }
        } else if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// Which of wasmtime's compilers an engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// The optimising compiler.
    Cranelift,
    /// The baseline compiler: one pass, fast to compile, slower code.
    Winch,
}

/// The engine: component model, async, epoch interruption, and the pooling
/// allocator when the machine lets it reserve its address space.
fn build_engine(
    tuning: &EngineTuning,
    compiler: Compiler,
    pooled: bool,
) -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    match compiler {
        Compiler::Cranelift => {
            config.strategy(wasmtime::Strategy::Cranelift);
            config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        }
        Compiler::Winch => {
            config.strategy(wasmtime::Strategy::Winch);
        }
    }
    config.memory_init_cow(tuning.memory_init_cow);
    config.table_lazy_init(tuning.table_lazy_init);
    if !pooled {
        return Engine::new(&config).map_err(|error| RuntimeError::Engine(error.to_string()));
    }
    let instances = tuning.pool_instances.max(1);
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memories_per_component(crate::capability::store::MAX_MEMORIES as u32)
        .max_memory_size(crate::runbook::MAX_MEMORY as usize)
        // Steps are short and reuse the same few slots: resetting a slot's
        // first pages with memset (and, where the kernel can say which pages
        // were touched, only those) avoids the page faults that madvise
        // would cost on every step. Measured in docs/benchmarks.md.
        .linear_memory_keep_resident(tuning.keep_resident)
        .table_keep_resident(64 << 10)
        .pagemap_scan(if tuning.pagemap_scan {
            wasmtime::Enabled::Auto
        } else {
            wasmtime::Enabled::No
        });
    let mut pooled = config.clone();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            tracing::warn!(
                "the pooling allocator is not available here ({error}); allocating instances on demand"
            );
            Engine::new(&config).map_err(|error| RuntimeError::Engine(error.to_string()))
        }
    }
}

/// The custom section in which a component carries its capabilities: the
/// Rust SDK writes it at build time (inside the core module), and
/// `runbook plugin seal` at the component's top level ([`seal`]).
pub const CAPABILITIES_SECTION: &str = "runbook:capabilities";

/// Reads the capabilities written into a component, without running it
/// (optional ones end in `?`): the `runbook:capabilities` custom section
/// at the component's top level (where sealing writes it), else the first
/// in a core module or component inside it (where the Rust SDK's build
/// writes it). `None` when there is none.
pub fn embedded_capabilities(bytes: &[u8]) -> Option<Vec<String>> {
    let mut depth = 0usize;
    let mut nested = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::CustomSection(section))
                if section.name() == CAPABILITIES_SECTION =>
            {
                let names = std::str::from_utf8(section.data()).ok().map(|text| {
                    text.split(',')
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect()
                });
                if depth == 0 {
                    return names;
                }
                if nested.is_none() {
                    nested = Some(names);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    nested.flatten()
}

/// What a plugin says it needs, as names, optional ones ending in `?`: the
/// form of the `runbook:capabilities` section and of `runbook.lock`.
pub fn capability_names(descriptor: &Descriptor) -> Vec<String> {
    descriptor
        .capabilities
        .iter()
        .map(|capability| capability.name().to_owned())
        .chain(
            descriptor
                .optional_capabilities
                .iter()
                .map(|capability| format!("{}?", capability.name())),
        )
        .collect()
}
