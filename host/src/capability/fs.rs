//! File reads: a step sees only the folders in `grants.fs.read`, preopened
//! read-only by WASI (`plugin/state.rs`), where cap-std keeps every path
//! inside its folder. This file makes each open an audit record: it stands
//! in front of WASI's `open-at` and `get-directories`, remembers which
//! guest path each descriptor is, and records every open, allowed or not.
//! It also streams granted files as request bodies (`http.body-file`, and
//! `aws.send`'s file bodies, which it hashes first for the signature), so
//! a 1 GiB layer goes from disk to the network without entering the
//! sandbox or the host's memory whole.

use super::{Capability, StepContext, StepState};
pub use crate::grant::FsGrant as Grant;
use crate::wit::PluginError;
use crate::wit::runbook::plugin::http::FileBody;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, Host as _, HostDescriptor, OpenFlags, PathFlags,
};

/// The WASI filesystem interfaces, as wasmtime-wasi 48 serves them.
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Reading files in granted folders.
pub const CAPABILITY: Capability = Capability {
    name: "fs",
    used_through: &[],
    grant_key: "grants.fs.read",
    example: "grants.fs.read = [\"./dist\"]",
    refused_without_grant: None,
    granted: |grants| !grants.fs_read.is_empty(),
    add_to_linker,
};

/// Preopens the step's granted folders, read-only: cap-std keeps every
/// path (`..`, symlinks) inside its folder. A folder that cannot be opened
/// is recorded as a denied call, and the plugin finds it missing.
pub fn preopen(builder: &mut wasmtime_wasi::WasiCtxBuilder, context: &StepContext) {
    for grant in &context.grants.fs_read {
        if let Err(error) =
            builder.preopened_dir(&grant.host, &grant.guest, wasmtime_wasi::FsPerms::ReadOnly)
        {
            context
                .call("fs", format!("read {}", grant.written))
                .refuse(format!("the granted folder cannot be opened: {error}"));
        }
    }
}

/// Replaces WASI's `open-at` and `get-directories` in `linker` (linked
/// with the rest of WASI by [`super::add_to_linker`]) with versions that do
/// the same and record what was opened.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(PREOPENS)?.func_wrap(
        "get-directories",
        |mut store: wasmtime::StoreContextMut<'_, StepState>, (): ()| {
            let state = store.data_mut();
            let directories = state.filesystem().get_directories()?;
            for (descriptor, name) in &directories {
                state.opened.insert(descriptor.rep(), name.clone());
            }
            Ok((directories,))
        },
    )?;
    linker.instance(TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: wasmtime::StoreContextMut<'_, StepState>,
         (directory, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let full = match state.opened.get(&directory.rep()) {
                    Some(parent) => format!("{}/{path}", parent.trim_end_matches('/')),
                    None => path.clone(),
                };
                let writing = flags.contains(DescriptorFlags::WRITE)
                    || open_flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
                let mut view = state.filesystem();
                let opened = match view
                    .open_at(directory, path_flags, path, open_flags, flags)
                    .await
                {
                    Ok(descriptor) => Ok(descriptor),
                    Err(error) => Err(view.convert_error_code(error)?),
                };
                if let Ok(descriptor) = &opened {
                    state.opened.insert(descriptor.rep(), full.clone());
                }
                let verb = if writing { "write" } else { "read" };
                let call = state.context.call("fs", format!("{verb} {full}"));
                match &opened {
                    Ok(_) => call.finish(None, "opened", true),
                    Err(
                        code @ (ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly),
                    ) => call.refuse(code.name()),
                    Err(code) => call.finish(None, code.name(), false),
                }
                Ok((opened,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Where a guest path is on the host, if it is inside a granted folder:
/// the path must name the grant's guest folder or something under it, with
/// no `..`, and must still be inside the folder once symlinks are resolved.
pub fn resolve_granted(context: &StepContext, guest: &str) -> Result<std::path::PathBuf, String> {
    if guest.split('/').any(|part| part == "..") {
        return Err("a path with `..` is refused".into());
    }
    let normalized = format!(
        "/{}",
        guest.trim_start_matches("./").trim_start_matches('/')
    );
    for grant in &context.grants.fs_read {
        let root = grant.guest.trim_end_matches('/');
        let Some(rest) = normalized.strip_prefix(root) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let candidate = grant.host.join(rest.trim_start_matches('/'));
        let real = candidate
            .canonicalize()
            .map_err(|error| format!("{normalized}: {error}"))?;
        if !real.starts_with(&grant.host) {
            return Err(format!("{normalized} leads out of the granted folder"));
        }
        return Ok(real);
    }
    Err(format!(
        "{normalized} is not inside a folder in `grants.fs.read`"
    ))
}

/// Opens `file` (a byte range of a granted file) as a request body stream;
/// its length and the stream. Every use is an audit record.
pub async fn stream_granted(
    context: &StepContext,
    file: &FileBody,
) -> Result<
    (
        u64,
        tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>,
    ),
    PluginError,
> {
    let opened = open_granted(context, file).await?;
    context
        .call(
            "fs",
            format!(
                "read {} (bytes {}+{}, streamed)",
                file.path, file.offset, file.length
            ),
        )
        .finish(None, "opened", true);
    let stream = tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024);
    Ok((file.length, stream))
}

/// The lowercase hex SHA-256 of `file` (a byte range of a granted file),
/// read once from disk: what a signature covers before the same bytes
/// are streamed by [`stream_granted`]. Stops when the step is cancelled
/// or its deadline passes. A file outside the grants is denied and
/// recorded, as [`stream_granted`] does.
pub async fn sha256_of_granted(
    context: &StepContext,
    file: &FileBody,
) -> Result<String, PluginError> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut opened = open_granted(context, file).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout_at(context.deadline, opened.read(&mut buffer)) => read,
            () = context.cancel.cancelled() => return Err(PluginError::Cancelled),
        };
        let count = match read {
            Err(_) => {
                return Err(PluginError::Timeout(format!(
                    "{}: reading it to sign it took past the step's deadline",
                    file.path
                )));
            }
            Ok(Err(error)) => return Err(PluginError::Failed(format!("{}: {error}", file.path))),
            Ok(Ok(0)) => break,
            Ok(Ok(count)) => count,
        };
        hasher.update(&buffer[..count]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `file`'s byte range, opened and positioned: the path checked against
/// `grants.fs.read` (a denial is recorded), the range against the file's
/// size.
async fn open_granted(
    context: &StepContext,
    file: &FileBody,
) -> Result<tokio::io::Take<tokio::fs::File>, PluginError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let denied = |reason: String| {
        let hint = format!("{reason}; if intended, add its folder to the step's `grants.fs.read`");
        context
            .call("fs", format!("read {}", file.path))
            .deny(reason, hint)
    };
    let host_path = resolve_granted(context, &file.path).map_err(denied)?;
    let mut opened = tokio::fs::File::open(&host_path)
        .await
        .map_err(|error| PluginError::Failed(format!("{}: {error}", file.path)))?;
    let size = opened
        .metadata()
        .await
        .map_err(|error| PluginError::Failed(format!("{}: {error}", file.path)))?
        .len();
    if file.offset.saturating_add(file.length) > size {
        return Err(PluginError::Failed(format!(
            "{}: bytes {}..{} asked of a {size}-byte file",
            file.path,
            file.offset,
            file.offset.saturating_add(file.length)
        )));
    }
    opened
        .seek(std::io::SeekFrom::Start(file.offset))
        .await
        .map_err(|error| PluginError::Failed(format!("{}: {error}", file.path)))?;
    Ok(opened.take(file.length))
}
