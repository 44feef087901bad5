//! Sealing a component: writing what it needs (its `describe`'s
//! capabilities) into it as the `runbook:capabilities` custom section, so
//! that `runbook audit` and `runbook lock` read it without running the
//! plugin, and loading checks it against `describe` from then on.
//!
//! The Rust SDK writes the section at build time, inside the core module.
//! Other toolchains (componentize-py, jco) cannot, so `runbook plugin seal`
//! does it after the build: every `runbook:capabilities` section already in
//! the component, at any depth, is dropped, and one is appended at the
//! component's top level. The section's bytes are the capabilities' names,
//! comma-separated, optional ones ending in `?` (`http,secrets?`); nothing
//! for a plugin that needs nothing. (`docs/plugin-authors.md`.)

use super::{CAPABILITIES_SECTION, LoadError, PluginRuntime, capability_names};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use wasmparser::{Chunk, Encoding, Parser, Payload};

/// Why a component could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The file could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component.
    #[error("`{path}` is not a WebAssembly component: {reason}")]
    NotComponent {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The component does not load: an import the host does not provide,
    /// no `runbook:plugin` exports, or a `describe` that fails.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The sealed component could not be written.
    #[error("cannot write `{path}`")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What sealing wrote.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The plugin's name, from `describe`.
    pub plugin: String,
    /// The capabilities written, optional ones ending in `?`.
    pub capabilities: Vec<String>,
    /// What the component carried before, if anything.
    pub replaced: Option<Vec<String>>,
    /// The sealed component's sha256, hex: the digest to pin.
    pub digest: String,
}

/// Seals the component at `input` into `output` (which may be the same
/// file): loads it without the sections it carries, calls `describe`, and
/// writes its capabilities into it. Refuses a component the host would not
/// load, naming an import it does not provide.
pub async fn seal(
    runtime: &PluginRuntime,
    input: &Path,
    output: &Path,
) -> Result<Sealed, SealError> {
    let bytes = std::fs::read(input).map_err(|source| SealError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    let not_component = |reason: String| SealError::NotComponent {
        path: input.to_path_buf(),
        reason,
    };
    let replaced = super::embedded_capabilities(&bytes);
    let bare = without_capabilities(&bytes).map_err(not_component)?;
    // Loaded without what it carried, so that a stale or altered section
    // does not stop it from being sealed again.
    let plugin = runtime.load_bytes(input, &bare, None).await?;
    let capabilities = capability_names(&plugin.descriptor);
    let sealed = append_capabilities(&bare, &capabilities);
    write_atomically(output, &sealed).map_err(|source| SealError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    use sha2::Digest;
    Ok(Sealed {
        plugin: plugin.descriptor.name,
        capabilities,
        replaced,
        digest: hex::encode(sha2::Sha256::digest(&sealed)),
    })
}

/// The section's bytes for these capability names (`http,secrets?`).
pub fn section_text(capabilities: &[String]) -> String {
    capabilities.join(",")
}

/// The component with a `runbook:capabilities` section holding
/// `capabilities` appended at its top level. `bytes` should carry none
/// ([`without_capabilities`]): the host reads the top-level one first.
pub fn append_capabilities(bytes: &[u8], capabilities: &[String]) -> Vec<u8> {
    let section = wasm_encoder::CustomSection {
        name: Cow::Borrowed(CAPABILITIES_SECTION),
        data: Cow::Owned(section_text(capabilities).into_bytes()),
    };
    let mut sealed = bytes.to_vec();
    // A component is its header and its sections, one after another: a
    // section appended at the end belongs to the outermost component.
    sealed.push(wasm_encoder::ComponentSectionId::CoreCustom as u8);
    wasm_encoder::Encode::encode(&section, &mut sealed);
    sealed
}

/// The component (or core module) without any `runbook:capabilities`
/// custom section, at its top level or in any module or component inside
/// it; every other section is kept byte for byte, in order.
pub fn without_capabilities(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut parser = Parser::new(0);
    let mut at = 0usize;
    let mut out: Option<Encoder> = None;
    loop {
        let (consumed, payload) = match parser
            .parse(&bytes[at..], true)
            .map_err(|error| error.to_string())?
        {
            Chunk::Parsed { consumed, payload } => (consumed, payload),
            Chunk::NeedMoreData(_) => return Err("the file ends too early".into()),
        };
        at += consumed;
        if let Payload::Version { encoding, .. } = &payload {
            if out.is_some() {
                return Err("a second WebAssembly header".into());
            }
            out = Some(match encoding {
                Encoding::Component => Encoder::Component(wasm_encoder::Component::new()),
                Encoding::Module => Encoder::Module(wasm_encoder::Module::new()),
            });
            continue;
        }
        let Some(encoder) = out.as_mut() else {
            return Err("no WebAssembly header".into());
        };
        match payload {
            Payload::End(_) => break,
            Payload::CustomSection(section) if section.name() == CAPABILITIES_SECTION => {}
            Payload::ModuleSection {
                unchecked_range: range,
                ..
            } => {
                // The parser leaves the nested bytes to its caller.
                encoder.raw(
                    wasm_encoder::ComponentSectionId::CoreModule as u8,
                    &without_capabilities(nested(bytes, &range)?)?,
                );
                at = range.end;
            }
            Payload::ComponentSection {
                unchecked_range: range,
                ..
            } => {
                encoder.raw(
                    wasm_encoder::ComponentSectionId::Component as u8,
                    &without_capabilities(nested(bytes, &range)?)?,
                );
                at = range.end;
            }
            Payload::CodeSectionStart { range, .. } => {
                encoder.raw(wasm_encoder::SectionId::Code as u8, &bytes[range.clone()]);
                parser.skip_section();
                at = range.end;
            }
            payload => {
                if let Some((id, range)) = payload.as_section() {
                    encoder.raw(id, &bytes[range]);
                }
            }
        }
    }
    Ok(match out {
        Some(Encoder::Component(component)) => component.finish(),
        Some(Encoder::Module(module)) => module.finish(),
        None => return Err("no WebAssembly header".into()),
    })
}

/// The bytes of a module or component inside another.
fn nested<'a>(bytes: &'a [u8], range: &std::ops::Range<usize>) -> Result<&'a [u8], String> {
    bytes
        .get(range.clone())
        .ok_or_else(|| "a nested module runs past the end of the file".to_owned())
}

/// A component or a core module being written back.
enum Encoder {
    Component(wasm_encoder::Component),
    Module(wasm_encoder::Module),
}

impl Encoder {
    fn raw(&mut self, id: u8, data: &[u8]) {
        let section = wasm_encoder::RawSection { id, data };
        match self {
            Encoder::Component(component) => {
                component.section(&section);
            }
            Encoder::Module(module) => {
                module.section(&section);
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, so that a
/// reader never sees half a component.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component holding one core module with a section of its own,
    /// and a section at the top level.
    fn component_with_sections() -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        module.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed(CAPABILITIES_SECTION),
            data: Cow::Borrowed(b"kube"),
        });
        module.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed("producers-like"),
            data: Cow::Borrowed(b"kept"),
        });
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        component.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed(CAPABILITIES_SECTION),
            data: Cow::Borrowed(b"aws"),
        });
        component.finish()
    }

    fn parses(bytes: &[u8]) {
        for payload in Parser::new(0).parse_all(bytes) {
            payload.unwrap();
        }
    }

    #[test]
    fn the_top_level_section_is_read_first_then_a_nested_one() {
        let bytes = component_with_sections();
        assert_eq!(
            super::super::embedded_capabilities(&bytes),
            Some(vec!["aws".to_owned()])
        );
        let mut module = wasm_encoder::Module::new();
        module.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed(CAPABILITIES_SECTION),
            data: Cow::Borrowed(b"kube,http?"),
        });
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        assert_eq!(
            super::super::embedded_capabilities(&component.finish()),
            Some(vec!["kube".to_owned(), "http?".to_owned()])
        );
    }

    #[test]
    fn stripping_drops_every_capabilities_section_and_keeps_the_rest() {
        let bytes = component_with_sections();
        let bare = without_capabilities(&bytes).unwrap();
        assert_eq!(super::super::embedded_capabilities(&bare), None);
        assert!(bare.windows(4).any(|window| window == b"kept"));
        // Stripping what has nothing to strip changes nothing.
        assert_eq!(without_capabilities(&bare).unwrap(), bare);
        parses(&bare);
    }

    #[test]
    fn sealing_appends_one_top_level_section_in_the_sdks_format() {
        let bare = without_capabilities(&component_with_sections()).unwrap();
        let names = vec!["http".to_owned(), "secrets?".to_owned()];
        let sealed = append_capabilities(&bare, &names);
        assert_eq!(super::super::embedded_capabilities(&sealed), Some(names));
        assert!(
            sealed
                .windows(b"runbook:capabilitieshttp,secrets?".len())
                .any(|window| window == b"runbook:capabilitieshttp,secrets?")
        );
        parses(&sealed);
        // Nothing needed: an empty section, which says so.
        let sealed = append_capabilities(&bare, &[]);
        assert_eq!(
            super::super::embedded_capabilities(&sealed),
            Some(Vec::new())
        );
    }

    #[test]
    fn what_is_not_wasm_is_refused() {
        assert!(without_capabilities(b"not wasm").is_err());
        assert!(without_capabilities(b"").is_err());
    }
}
