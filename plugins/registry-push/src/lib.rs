//! `registry-push`: pushes an image to an OCI registry, or promotes one by
//! digest from one repository (or registry) to another without rebuilding
//! it. Blobs the registry has are skipped, same-registry promotions mount
//! blobs across repositories, large layers are uploaded in chunks streamed
//! by the host from the granted image folder. Each tag's previous digest is
//! an output; rollback points every tag back, or deletes tags that did not
//! exist before.

mod layout;
mod registry;

use layout::Image;
use registry::Registry;
use runbook_sdk::serde_json::{self, Value};
use runbook_sdk::{
    Capability, Deserialize, Error, JsonSchema, Outcome, Outputs, PlannedAction, Step,
};

struct RegistryPush;

/// What to push or promote, where, and as whom.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// `push` (default) or `promote`.
    #[serde(default)]
    mode: Mode,
    /// The registry: `https://registry.example.com` (`http://` for a local one).
    registry: String,
    /// The repository: `riskcast/api`.
    repository: String,
    /// Tags to set, e.g. `["1.2.3", "latest"]`.
    tags: Vec<String>,
    /// Push: the image, an OCI layout folder or a tarball, in a granted folder.
    #[serde(default)]
    source: Option<String>,
    /// Push: which image of a layout holding several (its ref name).
    #[serde(default)]
    image_name: Option<String>,
    /// Promote: the source repository (default: `repository`).
    #[serde(default)]
    from_repository: Option<String>,
    /// Promote: the source tag or digest.
    #[serde(default)]
    from_reference: Option<String>,
    /// Promote: another registry to copy from (default: the same one).
    #[serde(default)]
    from_registry: Option<String>,
    /// The user name, for basic auth or a token service.
    #[serde(default)]
    username: Option<String>,
    /// The password or token: `${{ secrets.NAME }}`.
    #[serde(default)]
    password: Option<String>,
    /// Blobs larger than this many MiB are uploaded in chunks of this size (default 64).
    #[serde(default)]
    chunk_mib: Option<u64>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(crate = "runbook_sdk::serde", rename_all = "kebab-case")]
#[schemars(crate = "runbook_sdk::schemars")]
enum Mode {
    #[default]
    Push,
    Promote,
}

fn credentials(params: &Params) -> Option<(String, String)> {
    params
        .username
        .clone()
        .map(|user| (user, params.password.clone().unwrap_or_default()))
}

fn chunk(params: &Params) -> u64 {
    params.chunk_mib.unwrap_or(64).max(1) << 20
}

fn check_params(params: &Params) -> Result<(), Error> {
    if params.tags.is_empty() {
        return Err(Error::invalid_param("tags", "give at least one tag"));
    }
    for (index, tag) in params.tags.iter().enumerate() {
        if runbook_sdk::unresolved(tag) {
            continue;
        }
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(Error::invalid_param(
                format!("tags[{index}]"),
                format!("`{tag}` is not a tag: letters, digits, `_`, `.` and `-`, up to 128"),
            ));
        }
    }
    if !(params.registry.starts_with("http://")
        || params.registry.starts_with("https://")
        || runbook_sdk::unresolved(&params.registry))
    {
        return Err(Error::invalid_param(
            "registry",
            "write the registry as a URL: `https://registry.example.com`",
        ));
    }
    match params.mode {
        Mode::Push if params.source.is_none() => Err(Error::invalid_param(
            "source",
            "`push` needs `source`: an OCI layout folder or a tarball",
        )),
        Mode::Promote if params.from_reference.is_none() => Err(Error::invalid_param(
            "from_reference",
            "`promote` needs the source tag or digest",
        )),
        _ => Ok(()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Points every tag at the manifest; returns its digest.
fn put_tags(
    registry: &Registry,
    params: &Params,
    media_type: &str,
    manifest: &[u8],
) -> Result<String, Error> {
    let mut digest = String::new();
    for tag in &params.tags {
        digest = registry.put_manifest(&params.repository, tag, media_type, manifest)?;
        runbook_sdk::log::info(format!("tagged {}:{tag} → {digest}", params.repository));
    }
    Ok(digest)
}

/// Where each tag pointed before the step (`none` when it did not exist).
fn previous_tags(registry: &Registry, params: &Params) -> Result<Vec<(String, String)>, Error> {
    params
        .tags
        .iter()
        .map(|tag| {
            let digest = registry.tag_digest(&params.repository, tag)?;
            Ok((
                format!("previous.{tag}"),
                digest.unwrap_or_else(|| "none".into()),
            ))
        })
        .collect()
}

fn push(params: &Params, registry: &Registry) -> Result<(String, String), Error> {
    let source = params.source.as_deref().unwrap_or_default();
    let image: Image = layout::read(source, params.image_name.as_deref())?;
    let total = image.size();
    let count = image.blobs.len();
    let mut done = 0u64;
    let mut skipped = 0usize;
    for (position, blob) in image.blobs.iter().enumerate() {
        if registry.has_blob(&params.repository, &blob.digest)? {
            skipped += 1;
        } else {
            let before = done;
            registry.upload(&params.repository, blob, chunk(params), |sent| {
                runbook_sdk::log::progress(
                    format!(
                        "blob {}/{count} · {} of {}",
                        position + 1,
                        mib(before + sent),
                        mib(total)
                    ),
                    Some(((before + sent) as f64 / total.max(1) as f64) as f32),
                );
            })?;
        }
        done += blob.size;
    }
    for (digest, media_type, bytes) in &image.children {
        registry.put_manifest(&params.repository, digest, media_type, bytes)?;
    }
    let digest = put_tags(registry, params, &image.media_type, &image.manifest)?;
    if digest != image.digest() {
        return Err(Error::failed(format!(
            "the registry stored manifest {digest}, the image's is {}",
            image.digest()
        )));
    }
    Ok((
        digest,
        format!("{count} blobs ({}), {skipped} already there", mib(total)),
    ))
}

/// What a manifest refers to: blobs (digest, size) and, for an index, the
/// child manifests to copy first.
struct References {
    blobs: Vec<(String, u64)>,
    children: Vec<layout::ChildManifest>,
}

/// The blobs (digest, size) a manifest or index refers to, with child
/// manifests to copy first.
fn referenced(registry: &Registry, repository: &str, manifest: &[u8]) -> Result<References, Error> {
    let parsed: Value = serde_json::from_slice(manifest)
        .map_err(|error| Error::failed(format!("the manifest is not JSON: {error}")))?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if let Some(entries) = parsed["manifests"].as_array() {
        for entry in entries {
            let digest = entry["digest"].as_str().unwrap_or_default().to_owned();
            let (media_type, bytes) = registry.manifest(repository, &digest)?;
            blobs.extend(referenced(registry, repository, &bytes)?.blobs);
            children.push((digest, media_type, bytes));
        }
    } else {
        let config = &parsed["config"];
        blobs.push((
            config["digest"].as_str().unwrap_or_default().to_owned(),
            config["size"].as_u64().unwrap_or(0),
        ));
        for layer in parsed["layers"].as_array().into_iter().flatten() {
            blobs.push((
                layer["digest"].as_str().unwrap_or_default().to_owned(),
                layer["size"].as_u64().unwrap_or(0),
            ));
        }
    }
    Ok(References { blobs, children })
}

fn promote(params: &Params, registry: &Registry) -> Result<(String, String), Error> {
    let from_repository = params
        .from_repository
        .clone()
        .unwrap_or_else(|| params.repository.clone());
    let reference = params.from_reference.clone().unwrap_or_default();
    let other = params
        .from_registry
        .as_ref()
        .map(|base| Registry::new(base, credentials(params)));
    let source = other.as_ref().unwrap_or(registry);
    let same_registry = other.is_none();
    let (media_type, manifest) = source.manifest(&from_repository, &reference)?;
    let wanted = layout::digest_of(&manifest);
    if reference.starts_with("sha256:") && reference != wanted {
        return Err(Error::failed(format!(
            "the registry sent a manifest whose digest is {wanted}, not {reference}"
        )));
    }
    let References { blobs, children } = referenced(source, &from_repository, &manifest)?;
    let (mut mounted, mut copied, mut present) = (0, 0, 0);
    for (digest, size) in &blobs {
        if registry.has_blob(&params.repository, digest)? {
            present += 1;
        } else if same_registry
            && from_repository != params.repository
            && registry.mount(&params.repository, &from_repository, digest)?
        {
            mounted += 1;
        } else {
            registry.copy_blob(
                source,
                &from_repository,
                &params.repository,
                digest,
                *size,
                chunk(params),
            )?;
            copied += 1;
        }
    }
    for (digest, child_type, bytes) in &children {
        registry.put_manifest(&params.repository, digest, child_type, bytes)?;
    }
    let digest = put_tags(registry, params, &media_type, &manifest)?;
    if digest != wanted {
        return Err(Error::failed(format!(
            "promoted manifest is {digest}, the source's is {wanted}"
        )));
    }
    Ok((
        digest,
        format!(
            "{} blobs: {mounted} mounted, {copied} copied, {present} already there",
            blobs.len()
        ),
    ))
}

impl Step for RegistryPush {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] =
        &[Capability::Http, Capability::Secrets, Capability::Fs];
    const IDEMPOTENT: bool = true;

    fn check(params: &Params) -> Result<(), Error> {
        check_params(params)
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let registry = Registry::new(&params.registry, credentials(params));
        let mut actions = Vec::new();
        match params.mode {
            Mode::Push => {
                let image = layout::read(
                    params.source.as_deref().unwrap_or_default(),
                    params.image_name.as_deref(),
                )?;
                actions.push(PlannedAction::write(format!(
                    "push {} ({} blobs, {}) to {}/{}",
                    image.digest(),
                    image.blobs.len(),
                    mib(image.size()),
                    params.registry,
                    params.repository
                )));
            }
            Mode::Promote => actions.push(PlannedAction::write(format!(
                "promote {}:{} to {}",
                params
                    .from_repository
                    .as_deref()
                    .unwrap_or(&params.repository),
                params.from_reference.as_deref().unwrap_or_default(),
                params.repository
            ))),
        }
        for (key, previous) in previous_tags(&registry, params)? {
            let tag = key.trim_start_matches("previous.");
            actions.push(PlannedAction::write(if previous == "none" {
                format!("create tag {tag}")
            } else {
                format!("move tag {tag} (now {previous})")
            }));
        }
        Ok(actions)
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let registry = Registry::new(&params.registry, credentials(&params));
        let previous = previous_tags(&registry, &params)?;
        let (digest, words) = match params.mode {
            Mode::Push => push(&params, &registry)?,
            Mode::Promote => promote(&params, &registry)?,
        };
        let mut outcome = Outcome::new(format!(
            "{}:{} → {digest}; {words}",
            params.repository,
            params.tags.join(",")
        ))
        .output("digest", digest.clone())
        .output(
            "image",
            format!(
                "{}/{}@{digest}",
                params.registry.split("://").nth(1).unwrap_or_default(),
                params.repository
            ),
        );
        for (key, value) in previous {
            outcome = outcome.output(key, value);
        }
        Ok(outcome)
    }

    fn rollback(params: Params, outputs: &Outputs) -> Result<String, Error> {
        let registry = Registry::new(&params.registry, credentials(&params));
        let pushed = outputs.get("digest").unwrap_or_default().to_owned();
        let mut done = Vec::new();
        let mut created = Vec::new();
        for tag in &params.tags {
            match outputs.get(&format!("previous.{tag}")) {
                Some("none") => created.push(tag.clone()),
                Some(previous) if previous != pushed => {
                    let (media_type, manifest) = registry.manifest(&params.repository, previous)?;
                    registry.put_manifest(&params.repository, tag, &media_type, &manifest)?;
                    done.push(format!("{tag} → {previous}"));
                }
                Some(_) => done.push(format!("{tag} unchanged")),
                None => {}
            }
        }
        if !created.is_empty() {
            // Delete the new tags; a registry that cannot delete tags can
            // delete the manifest when no other tag points at it.
            let mut by_tag = true;
            for tag in &created {
                by_tag &= registry.delete_manifest(&params.repository, tag)?;
            }
            if !by_tag {
                let others: Vec<String> = registry
                    .tags(&params.repository)?
                    .into_iter()
                    .filter(|tag| !created.contains(tag))
                    .filter(|tag| {
                        registry
                            .tag_digest(&params.repository, tag)
                            .ok()
                            .flatten()
                            .as_deref()
                            == Some(pushed.as_str())
                    })
                    .collect();
                if !others.is_empty() {
                    return Err(Error::failed(format!(
                        "cannot remove tags {}: the registry deletes only whole manifests, and {} still point at {pushed}",
                        created.join(", "),
                        others.join(", ")
                    )));
                }
                if !registry.delete_manifest(&params.repository, &pushed)? {
                    return Err(Error::failed(format!(
                        "the registry refuses deletes: tags {} still point at {pushed} (enable deletion in the registry)",
                        created.join(", ")
                    )));
                }
            }
            done.push(format!("removed {}", created.join(", ")));
        }
        Ok(if done.is_empty() {
            "nothing to undo".into()
        } else {
            done.join("; ")
        })
    }
}

runbook_sdk::export_step!(RegistryPush);
