//! File reads: a step sees only the folders in `grants.fs.read`, preopened
//! read-only by WASI (`plugin/state.rs`), where cap-std keeps every path
//! inside its folder. This file makes each open an audit record: it stands
//! in front of WASI's `open-at` and `get-directories`, remembers which
//! guest path each descriptor is, and records every open, allowed or not.

use crate::events::{Decision, EventKind};
use crate::plugin::state::StepState;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, Host as _, HostDescriptor, OpenFlags, PathFlags,
};

/// The WASI filesystem interfaces, as wasmtime-wasi 48 serves them.
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Replaces WASI's `open-at` and `get-directories` in `linker` with
/// versions that do the same and record what was opened.
pub fn audit_opens(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
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
                state.context.emit(EventKind::FileOpened {
                    path: format!("{verb} {full}"),
                    decision: match &opened {
                        Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly) => {
                            Decision::Denied
                        }
                        _ => Decision::Allowed,
                    },
                    reason: opened.as_ref().err().map(|code| code.name().to_owned()),
                });
                Ok((opened,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
