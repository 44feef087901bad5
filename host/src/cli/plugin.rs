//! `runbook plugin inspect`: what a component is, asks for and imports,
//! read from the component itself; `runbook plugin seal`: its capabilities
//! written into it, for components not built with the Rust SDK; `push`, `sign` and `verify`: plugins
//! kept in an OCI registry (`crate::oci`), signed with SSH keys in the
//! `runbook-plugin` namespace (`crate::signature`); `runbook plugin test`: its
//! exports replayed against a cassette ([`crate::plugin::replay`]).

use super::{Cli, Failure, Output, exit};
use crate::capability::tape::{Cassette, Export};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::oci::{self, Client, OciError, Reference};
use crate::plugin::{LoadedPlugin, replay};
use crate::signature;
use crate::terminal;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `runbook plugin ...`
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Make a new plugin project that builds, passes its own test and runs
    /// in the example runbook it comes with.
    #[command(
        after_help = "Example:\n  runbook plugin new http-check --lang rust\n  cd http-check && cargo test && cargo build --release --target wasm32-wasip2\n  runbook exec example.toml --set url=https://example.com/ --yes"
    )]
    New {
        /// The plugin's name: lowercase letters, digits and dashes (`http-check`).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value_t = crate::scaffold::Lang::Rust)]
        lang: crate::scaffold::Lang,
        /// The folder to make it in [default: `./NAME`].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Compile every plugin a runbook uses (or the components named) into
    /// the cache ahead of time, all at once, so that the first `exec` of a
    /// reviewed runbook does not pay for it.
    #[command(
        long_about = "Compile every plugin a runbook uses (or the components named) into the cache ahead of time, all at once: a fresh CI runner or laptop then pays no compilation at the first `validate`, `plan` or `exec`. A component already cached for this version of runbook is only checked. `runbook lock` warms the same way.",
        after_help = "Examples:\n  runbook plugin warm runbooks/riskcast.toml\n  runbook plugin warm runbooks/*.toml --output json\n  runbook plugin warm build/my_plugin.wasm"
    )]
    Warm {
        /// Runbook files (every plugin they name) or component files (`.wasm`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
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
    /// Store a plugin in an OCI registry (the CNCF Wasm artifact layout) and
    /// print the reference to pin in a runbook, with its digest.
    #[command(
        after_help = "Credentials: RUNBOOK_REGISTRY_USER and RUNBOOK_REGISTRY_PASSWORD, else ~/.docker/config.json's `auths`.\nA registry on loopback is reached over HTTP, any other over HTTPS (unless --plain-http).\n\nExample:\n  runbook plugin push target/wasm32-wasip2/release/smoke_test.wasm oci://registry.example.com/plugins/smoke-test:1.4.0"
    )]
    Push {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// `oci://HOST[:PORT]/REPOSITORY:TAG`.
        reference: String,
        /// Reach the registry over plain HTTP even when it is not on loopback.
        #[arg(long)]
        plain_http: bool,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Sign a plugin in a registry with an SSH key (`ssh-keygen -Y sign`,
    /// namespace `runbook-plugin`, over its manifest's digest); the
    /// signature is kept beside it under the tag `sha256-DIGEST.sig`.
    #[command(
        after_help = "Example:\n  runbook plugin sign oci://registry.example.com/plugins/smoke-test:1.4.0@sha256:… --key ~/.ssh/id_ed25519"
    )]
    Sign {
        /// `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`; a tag alone
        /// is signed as the digest it names now.
        reference: String,
        /// The private key (or a public key whose private half is in the
        /// ssh-agent).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Reach the registry over plain HTTP even when it is not on loopback.
        #[arg(long)]
        plain_http: bool,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check a plugin in a registry is signed by a key an allowed_signers
    /// file lists; exit 1 when no signature verifies.
    #[command(
        after_help = "Example:\n  runbook plugin verify oci://registry.example.com/plugins/smoke-test:1.4.0@sha256:… --allowed-signers keys/plugins_allowed_signers"
    )]
    Verify {
        /// `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
        reference: String,
        /// OpenSSH allowed_signers: who may sign plugins.
        #[arg(long, value_name = "FILE")]
        allowed_signers: PathBuf,
        /// Reach the registry over plain HTTP even when it is not on loopback.
        #[arg(long)]
        plain_http: bool,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run a plugin against a recorded cassette, the host answering its
    /// capability calls from it: exit 0 when it returns what was recorded,
    /// 1 with what differs.
    #[command(
        after_help = "Example:\n  runbook exec runbook.toml --record cassettes/\n  runbook plugin test target/wasm32-wasip2/release/smoke_test.wasm --cassette cassettes/smoke.json"
    )]
    Test {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// The cassette (`runbook exec --record DIR` writes `DIR/STEP.json`).
        #[arg(long, value_name = "FILE")]
        cassette: PathBuf,
        /// Which export to replay; repeat for several [default: run, and
        /// rollback when the cassette holds one].
        #[arg(long = "call", value_enum, value_name = "EXPORT")]
        calls: Vec<Call>,
        /// `text` for people, `json` for machines.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// An export of a plugin, for `plugin test --call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Call {
    /// `check(params)`.
    Check,
    /// `plan(params)`.
    Plan,
    /// `run(params, state)`.
    Run,
    /// `rollback(params, outputs)`.
    Rollback,
}

impl From<Call> for Export {
    fn from(call: Call) -> Self {
        match call {
            Call::Check => Export::Check,
            Call::Plan => Export::Plan,
            Call::Run => Export::Run,
            Call::Rollback => Export::Rollback,
        }
    }
}

/// Runs the command.
pub async fn run(cli: &Cli, command: &PluginCommand) -> Result<u8, Failure> {
    match command {
        PluginCommand::Inspect { file, output } => inspect(cli, file, *output).await,
        PluginCommand::Warm { files, output } => warm(cli, files, *output),
        PluginCommand::New { name, lang, dir } => new(name, *lang, dir.as_deref()),
        PluginCommand::Seal { file, out, output } => seal(cli, file, out, *output).await,
        PluginCommand::Push {
            file,
            reference,
            plain_http,
            output,
        } => push(cli, file, reference, *plain_http, *output).await,
        PluginCommand::Sign {
            reference,
            key,
            plain_http,
            output,
        } => sign(reference, key, *plain_http, *output).await,
        PluginCommand::Verify {
            reference,
            allowed_signers,
            plain_http,
            output,
        } => verify(reference, allowed_signers, *plain_http, *output).await,
        PluginCommand::Test {
            file,
            cassette,
            calls,
            output,
        } => test(cli, file, cassette, calls, *output).await,
    }
}

/// A reference given on the command line, or the refusal of it.
fn reference(text: &str) -> Result<Reference, Failure> {
    Reference::parse(text).map_err(|why| {
        Failure::Invalid(Diagnostics(vec![
            Diagnostic::new(format!("`{text}` is not a registry reference: {why}"))
                .hint("write `oci://HOST[:PORT]/REPOSITORY:TAG`, with `@sha256:DIGEST` to name one manifest"),
        ]))
    })
}

/// A registry's refusal, with what to do about it.
fn registry_failure(error: OciError) -> Failure {
    let hint = match &error {
        OciError::Unauthorized { .. } => {
            "set RUNBOOK_REGISTRY_USER and RUNBOOK_REGISTRY_PASSWORD, or `docker login` the registry"
        }
        OciError::Unreachable { .. } => {
            "is the registry up? A registry not on loopback is reached over HTTPS unless --plain-http"
        }
        OciError::Tampered { .. } | OciError::NotAPlugin(_) => {
            "the registry does not hold what the reference names; push the plugin again and use the digest `push` prints"
        }
        _ => "see what the registry answered, above",
    };
    Failure::Invalid(Diagnostics(vec![
        Diagnostic::new(error.to_string()).hint(hint),
    ]))
}

/// The digest `reference` names, checked against the registry: the one
/// written (the manifest fetched and its digest checked), else the one its
/// tag names now; and the manifest's descriptor.
async fn manifest_of(client: &Client, reference: &Reference) -> Result<oci::Descriptor, OciError> {
    let bytes = match &reference.digest {
        Some(digest) => client.manifest_by_digest(digest).await?,
        None => client.manifest(reference.tag_or_digest()).await?,
    };
    oci::plugin_layer(&bytes)?;
    Ok(oci::Descriptor {
        media_type: oci::MANIFEST_MEDIA_TYPE.into(),
        digest: oci::digest_of(&bytes),
        size: bytes.len() as u64,
    })
}

async fn push(
    cli: &Cli,
    file: &Path,
    written: &str,
    plain_http: bool,
    output: Output,
) -> Result<u8, Failure> {
    let target = reference(written)?;
    let Some(tag) = target.tag.clone().filter(|_| target.digest.is_none()) else {
        return Err(Failure::Invalid(Diagnostics(vec![
            Diagnostic::new(format!(
                "push to a tag: `{written}` names a digest or no tag"
            ))
            .hint("write `oci://HOST[:PORT]/REPOSITORY:TAG`; the digest is printed once pushed"),
        ])));
    };
    // Only a component that loads as a step plugin is pushed.
    let runtime = super::plugin_runtime(cli)?;
    let plugin = runtime
        .load(file, None)
        .await
        .with_context(|| format!("cannot push `{}`", file.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let client = Client::new(&target, "pull,push", plain_http).map_err(registry_failure)?;
    let pushed = client
        .push_plugin(&tag, bytes)
        .await
        .map_err(registry_failure)?;
    let pinned = target.pinned(&pushed.manifest);
    match output {
        Output::Json => super::print_json(&serde_json::json!({
            "reference": pinned.to_string(),
            "digest": pushed.manifest,
            "tag": tag,
            "plugin": plugin.descriptor.name,
            "version": plugin.descriptor.version,
            "sha256": plugin.digest,
            "size": pushed.size,
        }))?,
        Output::Text => {
            eprintln!(
                "pushed {} {} ({} KiB, sha256 {})",
                crate::terminal::owned(&plugin.descriptor.name),
                crate::terminal::owned(&plugin.descriptor.version),
                pushed.size.div_ceil(1024),
                plugin.digest
            );
            outln!("{pinned}")?;
        }
    }
    Ok(exit::SUCCESS)
}

async fn sign(written: &str, key: &Path, plain_http: bool, output: Output) -> Result<u8, Failure> {
    let target = reference(written)?;
    let client = Client::new(&target, "pull,push", plain_http).map_err(registry_failure)?;
    let manifest = manifest_of(&client, &target)
        .await
        .map_err(registry_failure)?;
    let payload = signature::plugin_payload(&manifest.digest);
    let armored = signature::sign_in(key, signature::PLUGIN_NAMESPACE, &payload)
        .map_err(|error| Failure::Invalid(Diagnostics(vec![Diagnostic::new(error.to_string())])))?;
    let fingerprint = signature::public_key_of(key)
        .map(|public| signature::fingerprint(&public))
        .unwrap_or_default();
    client
        .push_signature(&manifest, &armored)
        .await
        .map_err(registry_failure)?;
    let pinned = target.pinned(&manifest.digest);
    let tag = oci::signature_tag(&manifest.digest);
    match output {
        Output::Json => super::print_json(&serde_json::json!({
            "reference": pinned.to_string(),
            "digest": manifest.digest,
            "key": fingerprint,
            "signature_tag": tag,
        }))?,
        Output::Text => {
            outln!("signed {pinned}")?;
            outln!("  key        {fingerprint}")?;
            outln!(
                "  signature  oci://{}/{}:{tag}",
                target.registry,
                target.repository
            )?;
        }
    }
    Ok(exit::SUCCESS)
}

async fn verify(
    written: &str,
    allowed_signers: &Path,
    plain_http: bool,
    output: Output,
) -> Result<u8, Failure> {
    let target = reference(written)?;
    let text = std::fs::read_to_string(allowed_signers)
        .with_context(|| format!("cannot read `{}`", allowed_signers.display()))?;
    let signers = signature::AllowedSigners::parse(&text).map_err(|lines| {
        Failure::Invalid(Diagnostics(
            lines
                .into_iter()
                .map(|line| {
                    Diagnostic::new(format!(
                        "{}:{}: {}",
                        allowed_signers.display(),
                        line.line,
                        line.message
                    ))
                    .hint(line.hint)
                })
                .collect(),
        ))
    })?;
    let client = Client::new(&target, "pull", plain_http).map_err(registry_failure)?;
    let manifest = manifest_of(&client, &target)
        .await
        .map_err(registry_failure)?;
    let found = client
        .signatures(&manifest.digest)
        .await
        .map_err(registry_failure)?;
    let now = jiff::Timestamp::now();
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    for armored in &found {
        match signature::verify_plugin(&signers, armored, &manifest.digest, now) {
            Ok(good) => verified.push(serde_json::json!({
                "key": good.key,
                "principals": good.signer.principals,
                "line": good.signer.line,
            })),
            Err(why) => rejected.push(why.to_string()),
        }
    }
    let pinned = target.pinned(&manifest.digest);
    match output {
        Output::Json => super::print_json(&serde_json::json!({
            "reference": pinned.to_string(),
            "digest": manifest.digest,
            "verified": verified,
            "rejected": rejected,
        }))?,
        Output::Text => {
            outln!("{pinned}")?;
            for good in &verified {
                outln!(
                    "  signed by {} (key {}, line {} of {})",
                    good["principals"]
                        .as_array()
                        .map(|names| names
                            .iter()
                            .filter_map(|name| name.as_str())
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default(),
                    good["key"].as_str().unwrap_or_default(),
                    good["line"],
                    allowed_signers.display()
                )?;
            }
            for why in &rejected {
                outln!("  not counted: {why}")?;
            }
        }
    }
    if verified.is_empty() {
        eprintln!(
            "error: {} has {} signature{} and none by a key {} lists",
            pinned,
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            allowed_signers.display()
        );
        return Ok(exit::STEP_FAILED);
    }
    Ok(exit::SUCCESS)
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

async fn test(
    cli: &Cli,
    file: &Path,
    cassette: &Path,
    calls: &[Call],
    output: Output,
) -> Result<u8, Failure> {
    let runtime = super::plugin_runtime(cli)?;
    let plugin = runtime
        .load(file, None)
        .await
        .with_context(|| format!("cannot load `{}`", file.display()))?;
    let kept = Cassette::read(cassette).map_err(anyhow::Error::msg)?;
    let exports: Vec<Export> = if calls.is_empty() {
        replay::default_exports(&kept)
    } else {
        calls.iter().copied().map(Export::from).collect()
    };
    let replayed = replay::replay(&runtime, &plugin, &kept, &exports, replay::DEFAULT_TIMEOUT)
        .await
        .map_err(|error| anyhow::anyhow!("cannot replay `{}`: {error}", cassette.display()))?;
    match output {
        Output::Json => super::print_json(&replayed)?,
        Output::Text => {
            for call in &replayed.calls {
                let verdict = if call.passed() { "ok    " } else { "FAILED" };
                outln!(
                    "{verdict} {} of step `{}` ({} host call(s) expected): {}",
                    call.export.name(),
                    terminal::text(&replayed.step),
                    call.expected_calls,
                    terminal::text(&replay::describe(&call.got))
                )?;
                for problem in &call.problems {
                    outln!("         {}", terminal::text(problem))?;
                }
            }
            outln!(
                "{} {}",
                terminal::text(&replayed.plugin),
                if replayed.passed {
                    "answered as recorded"
                } else {
                    "did not answer as recorded"
                }
            )?;
        }
    }
    Ok(if replayed.passed {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    })
}

/// Writes a new plugin project.
fn new(name: &str, lang: crate::scaffold::Lang, dir: Option<&Path>) -> Result<u8, Failure> {
    let refuse = |message: String, hint: &str| {
        Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
    };
    let files = crate::scaffold::project(name, lang).map_err(|message| {
        refuse(
            message,
            "the name is the plugin's, its crate's and its file's",
        )
    })?;
    let folder = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if std::fs::read_dir(&folder).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(refuse(
            format!("{} exists and is not empty", folder.display()),
            "pick another name, or `--dir` an empty or new folder",
        ));
    }
    for file in &files {
        let path = folder.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    outln!("made {} ({} files)", folder.display(), files.len())?;
    outln!("  cd {}", folder.display())?;
    outln!("  cargo test")?;
    outln!("  cargo build --release --target wasm32-wasip2")?;
    outln!("  runbook exec example.toml --set url=https://example.com/ --yes")?;
    Ok(exit::SUCCESS)
}

/// Compiles the components of `files` (runbooks: the plugins they name on
/// disk) into the cache at once.
fn warm(cli: &Cli, files: &[PathBuf], output: Output) -> Result<u8, Failure> {
    let mut components = Vec::new();
    for file in files {
        if file
            .extension()
            .is_some_and(|extension| extension == "wasm")
        {
            components.push(file.clone());
            continue;
        }
        let runbook = crate::runbook::load(file)?;
        components.extend(
            runbook
                .plugins
                .values()
                .filter(|source| source.oci.is_none())
                .map(|source| source.path.clone()),
        );
    }
    components.sort();
    components.dedup();
    let runtime = super::plugin_runtime(cli)?;
    let started = std::time::Instant::now();
    let warmed = runtime.warm(&components);
    let total = started.elapsed();
    let failed = warmed
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .count();
    if output == Output::Json {
        let entries: Vec<serde_json::Value> = warmed
            .iter()
            .map(|(path, outcome)| match outcome {
                Ok(warmed) => serde_json::json!({
                    "file": path.display().to_string(),
                    "sha256": warmed.digest,
                    "compiled": warmed.compiled,
                    "ms": warmed.elapsed.as_secs_f64() * 1000.0,
                }),
                Err(error) => serde_json::json!({
                    "file": path.display().to_string(),
                    "error": error,
                }),
            })
            .collect();
        super::print_json(&serde_json::json!({
            "plugins": entries,
            "ms": total.as_secs_f64() * 1000.0,
        }))?;
    } else {
        for (path, outcome) in &warmed {
            match outcome {
                Ok(warmed) => outln!(
                    "{} {} ({:.1} s)",
                    if warmed.compiled {
                        "compiled"
                    } else {
                        "cached  "
                    },
                    path.display(),
                    warmed.elapsed.as_secs_f64()
                )?,
                Err(error) => outln!("failed   {}: {error}", path.display())?,
            }
        }
        outln!(
            "{} plugin(s) ready in {:.1} s{}",
            warmed.len() - failed,
            total.as_secs_f64(),
            if failed > 0 {
                format!("; {failed} failed (`runbook validate` says why)")
            } else {
                String::new()
            }
        )?;
    }
    Ok(if failed > 0 {
        exit::INVALID
    } else {
        exit::SUCCESS
    })
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
