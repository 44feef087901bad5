//! Step logs and progress. The operator sees them live; the run log keeps them.

use crate::bindings::runbook::plugin::log::{self as host, Level};

/// A debug line: shown with `-v`, always kept in the run log.
pub fn debug(message: impl AsRef<str>) {
    host::log(Level::Debug, message.as_ref());
}

/// An informational line.
pub fn info(message: impl AsRef<str>) {
    host::log(Level::Info, message.as_ref());
}

/// A warning: something the operator should read.
pub fn warn(message: impl AsRef<str>) {
    host::log(Level::Warn, message.as_ref());
}

/// An error line; the step usually fails after it.
pub fn error(message: impl AsRef<str>) {
    host::log(Level::Error, message.as_ref());
}

/// Progress on long work: `fraction` between 0 and 1 when known.
pub fn progress(message: impl AsRef<str>, fraction: Option<f32>) {
    host::progress(message.as_ref(), fraction);
}

/// A moment the people following the run should hear about (the canary
/// reached 25 %): logged, and sent by the run's notifications.
pub fn milestone(message: impl AsRef<str>) {
    host::milestone(message.as_ref());
}

/// Records, before the step changes anything, a value its rollback needs
/// (the state it is about to replace), durably: it reaches `rollback`
/// among the outputs, and the first value recorded for a key is kept when
/// the step runs again after a retry or a crash. Call it before the change,
/// and change nothing if it fails.
pub fn checkpoint(key: impl AsRef<str>, value: impl AsRef<str>) -> Result<(), crate::Error> {
    host::checkpoint(key.as_ref(), value.as_ref())
}
