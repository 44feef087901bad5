//! Append-only JSON-lines files (the journal, the audit log): what a
//! crash can leave at their end, and how to cut it. Pure file handling,
//! at the bottom of the module graph.

use std::path::Path;

/// Cuts what a crash left at the end of a file: a last line without
/// its newline, and any last lines that are not records (a torn write can
/// leave zeros or half a line ending in a newline). None of it was
/// durable, and appending after it would make the file unreadable.
pub fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let keep = intact_length(&bytes);
    if keep == bytes.len() {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()
}

/// How many leading bytes of a JSON-lines file are whole records.
pub fn intact_length(bytes: &[u8]) -> usize {
    let mut keep = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |index| index + 1);
    while keep > 0 {
        let start = bytes[..keep - 1]
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |index| index + 1);
        let line = &bytes[start..keep - 1];
        let blank = line.iter().all(u8::is_ascii_whitespace);
        if !blank && serde_json::from_slice::<serde_json::Value>(line).is_ok() {
            break;
        }
        keep = start;
    }
    keep
}
