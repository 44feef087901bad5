//! `runbook plugin inspect`: what a component is, asks for and imports,
//! read from the component itself; `runbook plugin seal`: its capabilities
//! written into it, for components not built with the Rust SDK.

use super::{Cli, Failure, Output, exit};
use crate::plugin::LoadedPlugin;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `runbook plugin ...`
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Show a plugin's name, version, digest, capabilities, imports and parameters.
    #[command(
        after_help = "Example:\n  runbook plugin inspect target/wasm32-wasip2/release/smoke_test.wasm"
    )]
    Inspect {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write what a component needs (its `describe`'s capabilities) into it
    /// as its `runbook:capabilities` section, replacing any it carries: for
    /// plugins built with componentize-py, jco or any toolchain but the
    /// Rust SDK, which writes it at build time.
    #[command(
        after_help = "Example:\n  runbook plugin seal build/my_plugin.wasm -o dist/my_plugin.wasm"
    )]
    Seal {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// Where to write the sealed component (may be the same file).
        #[arg(short = 'o', long = "out", value_name = "OUT.wasm")]
        out: PathBuf,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Runs the command.
pub async fn run(cli: &Cli, command: &PluginCommand) -> Result<u8, Failure> {
    match command {
        PluginCommand::Inspect { file, output } => inspect(cli, file, *output).await,
        PluginCommand::Seal { file, out, output } => seal(cli, file, out, *output).await,
    }
}

async fn seal(cli: &Cli, file: &Path, out: &Path, output: Output) -> Result<u8, Failure> {
    let runtime = super::plugin_runtime(cli)?;
    let sealed = crate::plugin::seal::seal(&runtime, file, out)
        .await
        .with_context(|| format!("cannot seal `{}`", file.display()))?;
    let words = |names: &[String]| {
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    };
    match output {
        Output::Json => super::print_json(&serde_json::json!({
            "file": file.display().to_string(),
            "out": out.display().to_string(),
            "name": sealed.plugin,
            "capabilities": sealed.capabilities,
            "replaced": sealed.replaced,
            "sha256": sealed.digest,
        }))?,
        Output::Text => {
            outln!(
                "sealed {} into {}: needs {}",
                sealed.plugin,
                out.display(),
                words(&sealed.capabilities)
            )?;
            if let Some(replaced) = &sealed.replaced {
                outln!("replaced      {}", words(replaced))?;
            }
            outln!("sha256        {}", sealed.digest)?;
        }
    }
    Ok(exit::SUCCESS)
}

async fn inspect(cli: &Cli, file: &PathBuf, output: Output) -> Result<u8, Failure> {
    let runtime = super::plugin_runtime(cli)?;
    let plugin = runtime
        .load(file, None)
        .await
        .with_context(|| format!("cannot inspect `{}`", file.display()))?;
    let descriptor = &plugin.descriptor;
    let schema: serde_json::Value =
        serde_json::from_str(&descriptor.params_schema).unwrap_or_default();
    let capabilities: Vec<&str> = descriptor
        .capabilities
        .iter()
        .map(|capability| capability.name())
        .collect();
    let size = std::fs::metadata(file)
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    match output {
        Output::Json => super::print_json(&serde_json::json!({
            "file": file.display().to_string(),
            "name": descriptor.name,
            "version": descriptor.version,
            "description": descriptor.description,
            "sha256": plugin.digest,
            "size": size,
            "capabilities": capabilities,
            "optional_capabilities": descriptor.optional_capabilities.iter().map(|capability| capability.name()).collect::<Vec<_>>(),
            "idempotent": descriptor.idempotent,
            "contract": plugin.contract(),
            "imports": plugin.imports,
            "embedded_capabilities": plugin.embedded_capabilities,
            "params_schema": schema,
        }))?,
        Output::Text => print_text(file, &plugin, size, &capabilities, &schema)?,
    }
    Ok(exit::SUCCESS)
}

/// `plugin inspect` for people: what the plugin is, needs and imports,
/// and its parameters.
fn print_text(
    file: &Path,
    plugin: &LoadedPlugin,
    size: u64,
    capabilities: &[&str],
    schema: &serde_json::Value,
) -> Result<(), Failure> {
    let descriptor = &plugin.descriptor;
    outln!("{} {}", descriptor.name, descriptor.version)?;
    if !descriptor.description.is_empty() {
        outln!("  {}", descriptor.description)?;
    }
    outln!()?;
    outln!(
        "file          {} ({} KiB)",
        file.display(),
        size.div_ceil(1024)
    )?;
    outln!("sha256        {}", plugin.digest)?;
    outln!(
        "contract      runbook:plugin@{}{}",
        plugin.contract(),
        if plugin.contract() == "0.1" {
            " (served unchanged; its steps cannot wait between rounds)"
        } else {
            ""
        }
    )?;
    outln!(
        "needs         {}",
        if capabilities.is_empty() {
            "nothing".to_owned()
        } else {
            capabilities.join(", ")
        }
    )?;
    if !descriptor.optional_capabilities.is_empty() {
        let optional: Vec<&str> = descriptor
            .optional_capabilities
            .iter()
            .map(|capability| capability.name())
            .collect();
        outln!(
            "optional      {} (only with some parameters)",
            optional.join(", ")
        )?;
    }
    // Which parameter values need an optional capability: a step that
    // gives one without the grant is refused before the run.
    for needed in plugin.needed_when() {
        let mut values: Vec<String> = needed
            .values
            .iter()
            .map(|value| format!("`{} = {value:?}`", needed.param))
            .collect();
        if needed.or_absent {
            values.push(format!("no `{}`", needed.param));
        }
        outln!("needed with   {}: {}", needed.capability, values.join(", "))?;
    }
    outln!(
        "embedded      {}",
        match &plugin.embedded_capabilities {
            Some(names) if names.is_empty() => "nothing (sealed)".to_owned(),
            Some(names) => format!("{} (sealed)", names.join(", ")),
            None => "not sealed: no `runbook:capabilities` section, so what it needs is known only by running it; seal it with `runbook plugin seal`".to_owned(),
        }
    )?;
    outln!(
        "idempotent    {}",
        if descriptor.idempotent {
            "yes: may be re-run after a crash"
        } else {
            "no"
        }
    )?;
    outln!()?;
    outln!("imports (what the component can call at all):")?;
    for import in &plugin.imports {
        outln!("  {import}")?;
    }
    outln!()?;
    outln!("parameters:")?;
    print_schema(schema)
}

/// Prints a JSON Schema's properties, one per line, nested objects indented.
fn print_schema(schema: &serde_json::Value) -> Result<(), Failure> {
    let definitions = schema.get("$defs").cloned().unwrap_or_default();
    print_properties(schema, &definitions, 1)
}

fn print_properties(
    schema: &serde_json::Value,
    definitions: &serde_json::Value,
    depth: usize,
) -> Result<(), Failure> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|value| value.as_array())
        .map(|items| items.iter().filter_map(|item| item.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(|value| value.as_object()) else {
        if depth == 1 {
            outln!("  (none)")?;
        }
        return Ok(());
    };
    for (name, property) in properties {
        let resolved = resolve(property, definitions);
        let kind = type_name(&resolved, definitions);
        let description = property
            .get("description")
            .or_else(|| resolved.get("description"))
            .and_then(|value| value.as_str())
            .unwrap_or("")
            .replace('\n', " ");
        let requirement = if required.contains(&name.as_str()) {
            " (required)"
        } else {
            ""
        };
        outln!(
            "{:indent$}{name}: {kind}{requirement}  {description}",
            "",
            indent = depth * 2
        )?;
        let item = resolved
            .get("items")
            .map(|items| resolve(items, definitions))
            .unwrap_or(resolved.clone());
        if item.get("properties").is_some() && depth < 4 {
            print_properties(&item, definitions, depth + 1)?;
        }
    }
    Ok(())
}

fn resolve(schema: &serde_json::Value, definitions: &serde_json::Value) -> serde_json::Value {
    if let Some(reference) = schema.get("$ref").and_then(|value| value.as_str())
        && let Some(name) = reference.strip_prefix("#/$defs/")
        && let Some(definition) = definitions.get(name)
    {
        return definition.clone();
    }
    if let Some(variants) = schema.get("anyOf").and_then(|value| value.as_array())
        && let Some(first) = variants
            .iter()
            .find(|variant| variant.get("type") != Some(&"null".into()))
    {
        return resolve(first, definitions);
    }
    schema.clone()
}

fn type_name(schema: &serde_json::Value, definitions: &serde_json::Value) -> String {
    match schema.get("type") {
        Some(serde_json::Value::String(kind)) if kind == "array" => {
            let item = schema
                .get("items")
                .map(|items| resolve(items, definitions))
                .unwrap_or_default();
            format!("list of {}", type_name(&item, definitions))
        }
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(serde_json::Value::Array(kinds)) => kinds
            .iter()
            .filter_map(|kind| kind.as_str())
            .filter(|kind| *kind != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "value".into(),
    }
}
