//! Compiled components on disk, keyed by the component's sha256 and the
//! engine's compatibility hash: the second run of a runbook maps the
//! compiled code instead of compiling again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Why a component could not be compiled, or its compiled code not be
/// kept or read back. wasmtime's errors are kept as their whole text, cause
/// chain included, which is how they were always shown.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// wasmtime could not compile the component.
    #[error("{0}")]
    Compile(String),
    /// wasmtime could not serialize or map the compiled code.
    #[error("{0}")]
    Code(String),
    /// The cache folder or file could not be written.
    #[error("{0}")]
    Write(#[from] std::io::Error),
}

/// The folder of compiled components.
#[derive(Debug)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

/// `$RUNBOOK_CACHE_DIR`, else `$XDG_CACHE_HOME/runbook/components`, else
/// `~/.cache/runbook/components`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNBOOK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("runbook").join("components")
}

impl ComponentCache {
    /// A cache in `dir` for components compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a component's compiled code lives in.
    pub fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The compiled component, from the cache or compiled now (and stored).
    /// Returns whether it was compiled. A cache entry that cannot be used is
    /// replaced; a cache folder that cannot be written only costs speed.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, bool), CacheError> {
        let path = self.path_for(digest);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, false)),
                Err(error) => {
                    tracing::warn!("ignoring unusable cache entry {}: {error}", path.display());
                }
            }
        }
        let component = Component::new(engine, bytes)
            .map_err(|error| CacheError::Compile(format!("{error:#}")))?;
        if let Err(error) = self.store(&path, &component) {
            tracing::warn!(
                "cannot cache compiled plugin in {}: {error:#}",
                self.dir.display()
            );
        }
        Ok((component, true))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir)?;
        let serialized = component
            .serialize()
            .map_err(|error| CacheError::Code(format!("{error:#}")))?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, serialized)?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime maps compiled code from the file; the cache folder belongs to the user and entries are written only by this module"
)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component, CacheError> {
    // SAFETY: the file was written by `Component::serialize` of an engine
    // with the same compatibility hash (it is in the file name), and
    // wasmtime checks the header again before using it.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|error| CacheError::Code(format!("{error:#}")))
}
