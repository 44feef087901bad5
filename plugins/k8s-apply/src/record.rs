//! What the step saves before it changes anything, as checkpoints that
//! `rollback` reads back among the outputs: each applied object's live
//! state (or that it did not exist) and each object the step prunes. The
//! host keeps at most 256 KiB in one checkpoint and 64 checkpoints for a
//! step, so the record is cut into chunks (`previous`, `previous.1`, …),
//! and an object too large for one chunk into pieces of its JSON text.

use crate::manifests::{Target, rank};
use runbook_sdk::serde_json::{self, Value};
use runbook_sdk::{Deserialize, Error, Outputs, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The key of the first chunk; the others are `previous.1`, `previous.2`, ….
pub const KEY: &str = "previous";

/// Most bytes of one chunk's JSON: under the host's 256 KiB a checkpoint.
const CHUNK_BYTES: usize = 200 * 1024;

/// Most chunks: the host keeps 64 checkpoints a step.
const MAX_CHUNKS: usize = 60;

/// One object as it was before the step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
pub struct Saved {
    /// Which object.
    pub target: Target,
    /// The object as [`crate::live::kept`] keeps it; `None` when it did not
    /// exist.
    pub before: Option<Value>,
}

/// Everything saved before the step changed anything.
#[derive(Debug, Default)]
pub struct Record {
    /// The objects the step applies, in the order it applies them.
    pub objects: Vec<Saved>,
    /// The objects of the previous apply that the step deletes.
    pub pruned: Vec<Saved>,
    /// Objects whose saved state cannot be read back (a piece is missing).
    pub unreadable: Vec<String>,
}

/// One checkpoint's worth of the record.
#[derive(Default, Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Chunk {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    objects: Vec<Saved>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pruned: Vec<Saved>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pieces: Vec<Piece>,
}

/// Part of an object's saved state too large for one chunk: piece `index`
/// (from 0) of `count` of the JSON text of its `before`.
#[derive(Serialize, Deserialize)]
#[serde(crate = "runbook_sdk::serde")]
struct Piece {
    pruned: bool,
    target: Target,
    index: usize,
    count: usize,
    text: String,
}

/// The pieces of one object's saved state found: index → (count, text).
type Parts = BTreeMap<usize, (usize, String)>;

/// The checkpoint key of chunk `index`.
pub fn key(index: usize) -> String {
    if index == 0 {
        KEY.to_owned()
    } else {
        format!("{KEY}.{index}")
    }
}

/// The record as checkpoints: (key, value) in order.
pub fn checkpoints(record: &Record) -> Result<Vec<(String, String)>, Error> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current = Chunk::default();
    let mut size = 0;
    let mut total = 0;
    let entries = record
        .objects
        .iter()
        .map(|saved| (false, saved))
        .chain(record.pruned.iter().map(|saved| (true, saved)));
    for (pruned, saved) in entries {
        let length = serde_json::to_string(saved).map_or(0, |text| text.len()) + 1;
        total += length;
        if length > CHUNK_BYTES {
            // Quoted in a JSON string, the text can at most double.
            let text = saved
                .before
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default();
            let parts = split(&text, CHUNK_BYTES / 2 - 4096);
            let count = parts.len();
            for (index, part) in parts.into_iter().enumerate() {
                if size > 0 {
                    chunks.push(std::mem::take(&mut current));
                }
                current.pieces.push(Piece {
                    pruned,
                    target: saved.target.clone(),
                    index,
                    count,
                    text: part.to_owned(),
                });
                size = CHUNK_BYTES;
            }
            continue;
        }
        if size + length > CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        if pruned {
            current.pruned.push(saved.clone());
        } else {
            current.objects.push(saved.clone());
        }
        size += length;
    }
    chunks.push(current);
    if chunks.len() > MAX_CHUNKS {
        return Err(Error::failed(format!(
            "the objects' state before the apply is {} KiB, more than a step can record ({} KiB): apply the folder in several steps",
            total / 1024,
            MAX_CHUNKS * CHUNK_BYTES / 1024
        )));
    }
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            serde_json::to_string(chunk)
                .map(|text| (key(index), text))
                .map_err(|error| {
                    Error::failed(format!("cannot record the objects' state: {error}"))
                })
        })
        .collect()
}

/// `text` in parts of at most `most` bytes, cut between characters.
fn split(text: &str, most: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(most);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// The record the checkpoints among `outputs` hold; `None` when the step
/// recorded none, and so changed nothing. Where two attempts of the step
/// recorded the same object, the first record of it counts.
pub fn read(outputs: &Outputs) -> Result<Option<Record>, Error> {
    let mut chunks = Vec::new();
    while let Some(text) = outputs.get(&key(chunks.len())) {
        let chunk: Chunk = serde_json::from_str(text).map_err(|error| {
            Error::failed(format!(
                "the state saved under `{}` is unreadable ({error}): put the objects back by hand",
                key(chunks.len())
            ))
        })?;
        chunks.push(chunk);
    }
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut record = Record::default();
    let mut seen: BTreeSet<(bool, Target)> = BTreeSet::new();
    let mut pieces: BTreeMap<(bool, Target), Parts> = BTreeMap::new();
    for chunk in chunks {
        for saved in chunk.objects {
            if seen.insert((false, saved.target.clone())) {
                record.objects.push(saved);
            }
        }
        for saved in chunk.pruned {
            if seen.insert((true, saved.target.clone())) {
                record.pruned.push(saved);
            }
        }
        for piece in chunk.pieces {
            pieces
                .entry((piece.pruned, piece.target))
                .or_default()
                .entry(piece.index)
                .or_insert((piece.count, piece.text));
        }
    }
    for ((pruned, target), parts) in pieces {
        if seen.contains(&(pruned, target.clone())) {
            continue;
        }
        let count = parts.values().next().map_or(0, |(count, _)| *count);
        let complete = parts.len() == count
            && parts.keys().copied().eq(0..count)
            && parts.values().all(|(of, _)| *of == count);
        let text: String = parts.into_values().map(|(_, text)| text).collect();
        let before = if complete {
            serde_json::from_str::<Value>(&text).ok()
        } else {
            None
        };
        let Some(before) = before else {
            record.unreadable.push(format!(
                "{target}: its saved state is incomplete; put it back by hand"
            ));
            continue;
        };
        let saved = Saved {
            target,
            before: Some(before),
        };
        if pruned {
            record.pruned.push(saved);
        } else {
            record.objects.push(saved);
        }
    }
    // Pieced objects were put last: back in the order of applying.
    record.objects.sort_by_key(|saved| rank(&saved.target.kind));
    record.pruned.sort_by_key(|saved| rank(&saved.target.kind));
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_sdk::serde_json::json;

    fn saved(kind: &str, name: &str, before: Option<Value>) -> Saved {
        Saved {
            target: Target {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: Some("shop".into()),
                name: name.into(),
            },
            before,
        }
    }

    fn outputs(checkpoints: Vec<(String, String)>) -> Outputs {
        Outputs(checkpoints)
    }

    #[test]
    fn a_small_record_is_one_checkpoint_and_reads_back() {
        let record = Record {
            objects: vec![
                saved("ConfigMap", "a", None),
                saved(
                    "Service",
                    "web",
                    Some(json!({"spec": {"ports": [{"port": 80}]}})),
                ),
            ],
            pruned: vec![saved("ConfigMap", "old", Some(json!({"data": {"x": "1"}})))],
            unreadable: Vec::new(),
        };
        let checkpoints = checkpoints(&record).unwrap();
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(checkpoints[0].0, "previous");
        let back = read(&outputs(checkpoints)).unwrap().unwrap();
        assert_eq!(back.objects.len(), 2);
        assert_eq!(back.objects[0].before, None);
        assert_eq!(
            back.objects[1].before,
            Some(json!({"spec": {"ports": [{"port": 80}]}}))
        );
        assert_eq!(back.pruned[0].target.name, "old");
        assert!(read(&Outputs::default()).unwrap().is_none());
    }

    #[test]
    fn a_large_record_is_cut_into_chunks_and_a_large_object_into_pieces() {
        let big = "x\"y".repeat(120 * 1024);
        let record = Record {
            objects: (0..40)
                .map(|index| {
                    saved(
                        "ConfigMap",
                        &format!("c{index}"),
                        Some(json!({"data": {"a": "z".repeat(20 * 1024)}})),
                    )
                })
                .chain([saved(
                    "ConfigMap",
                    "huge",
                    Some(json!({"data": {"big": big}})),
                )])
                .collect(),
            pruned: Vec::new(),
            unreadable: Vec::new(),
        };
        let checkpoints = checkpoints(&record).unwrap();
        assert!(checkpoints.len() > 5, "{}", checkpoints.len());
        assert!(
            checkpoints
                .iter()
                .all(|(_, value)| value.len() <= 256 * 1024)
        );
        assert_eq!(checkpoints[2].0, "previous.2");
        let back = read(&outputs(checkpoints)).unwrap().unwrap();
        assert_eq!(back.objects.len(), 41);
        assert!(back.unreadable.is_empty());
        let huge = back
            .objects
            .iter()
            .find(|saved| saved.target.name == "huge")
            .unwrap();
        assert_eq!(huge.before.as_ref().unwrap()["data"]["big"], json!(big));
    }

    #[test]
    fn the_first_attempts_record_of_an_object_counts() {
        let first = checkpoints(&Record {
            objects: vec![saved("ConfigMap", "a", None)],
            ..Record::default()
        })
        .unwrap();
        let mut later = checkpoints(&Record {
            objects: vec![saved("ConfigMap", "a", Some(json!({"data": {}})))],
            ..Record::default()
        })
        .unwrap();
        later[0].0 = "previous.1".into();
        let mut all = first;
        all.extend(later);
        let back = read(&outputs(all)).unwrap().unwrap();
        assert_eq!(back.objects.len(), 1);
        assert_eq!(back.objects[0].before, None);
    }
}
