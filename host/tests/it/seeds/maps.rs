//! The coverage maps of `docs/seeds/` (their format: docs/seeds/README.md)
//! against the runbooks they describe: every step and section a map names
//! exists, the totals add up from the rows, and at least 80 % of what can
//! be automated is.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CLASSES: [&str; 4] = ["automated", "manual", "not yet", "out of scope"];

/// The cells of a Markdown table row; a `|` inside backticks is text.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut in_code = false;
    for c in inner.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                cells.last_mut().unwrap().push(c);
            }
            '|' if !in_code => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells
        .into_iter()
        .map(|cell| cell.trim().to_owned())
        .collect()
}

/// The maps the index lists, each with its runbook.
fn maps() -> Vec<(PathBuf, PathBuf)> {
    let root = runbook_testenv::workspace_root();
    let index = std::fs::read_to_string(root.join("docs/seeds/README.md")).unwrap();
    let listed = Regex::new(
        r"\| \[([0-9]{3}-[a-z0-9-]+\.md)\]\([^)]+\) \| [^|]+ \| `(runbooks/[a-z0-9-]+\.toml)` \|",
    )
    .unwrap();
    let maps: Vec<_> = listed
        .captures_iter(&index)
        .map(|found| {
            (
                root.join("docs/seeds").join(&found[1]),
                root.join(&found[2]),
            )
        })
        .collect();
    assert_eq!(
        maps.len(),
        5,
        "docs/seeds/README.md lists the five seeds' maps"
    );
    maps
}

/// What a map may name in a runbook: its step ids, and its sections
/// (`[notify]`, `[runbook]`, `[environments.production]`).
fn names_in(runbook: &Path) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(runbook).unwrap()).unwrap();
    let mut names: BTreeSet<String> = table
        .get("steps")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|step| step.get("id").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect();
    for (key, value) in &table {
        if value.is_table() {
            names.insert(format!("[{key}]"));
        }
    }
    for environment in table
        .get("environments")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|environments| environments.keys())
    {
        names.insert(format!("[environments.{environment}]"));
    }
    names
}

struct Map {
    path: PathBuf,
    /// Rows of the items table: (seed lines, class, names, note).
    items: Vec<(String, String, Vec<String>, String)>,
    /// The totals table: class → count, and the share row's text.
    totals: BTreeMap<String, usize>,
    share: String,
}

fn read_map(path: &Path) -> Map {
    let text = std::fs::read_to_string(path).unwrap();
    let named = Regex::new(r"`([^`]+)`").unwrap();
    let seed_lines = Regex::new(r"^L[0-9]+").unwrap();
    let mut items = Vec::new();
    let mut totals = BTreeMap::new();
    let mut share = String::new();
    let mut section = "";
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = match heading.trim() {
                "Totals" => "totals",
                "Items" => "items",
                _ => "",
            };
            continue;
        }
        if !line.starts_with('|') || line.starts_with("|---") {
            continue;
        }
        let row = cells(line);
        match section {
            "totals" if row.len() == 2 => {
                if row[0].contains("share") {
                    share = row[1].clone();
                } else if CLASSES.contains(&row[0].as_str()) {
                    let count = row[1].parse().unwrap_or_else(|_| {
                        panic!("{}: `{}` is not a count", path.display(), row[1])
                    });
                    totals.insert(row[0].clone(), count);
                }
            }
            "items" if row.len() == 5 && row[0] != "seed" => {
                assert!(
                    seed_lines.is_match(&row[0]),
                    "{}: `{}` does not start with the seed's line (`L93`)",
                    path.display(),
                    row[0]
                );
                let names = named
                    .captures_iter(&row[3])
                    .map(|found| found[1].to_owned())
                    .collect();
                items.push((row[0].clone(), row[2].clone(), names, row[4].clone()));
            }
            "items" if row[0] != "seed" => panic!(
                "{}: an items row has five cells (seed, item, class, steps, note): {line}",
                path.display()
            ),
            _ => {}
        }
    }
    assert!(
        text.contains("## Values changed from the seed"),
        "{} has no `## Values changed from the seed`",
        path.display()
    );
    Map {
        path: path.to_owned(),
        items,
        totals,
        share,
    }
}

#[test]
fn every_step_a_coverage_map_names_exists_in_its_runbook() {
    for (map_path, runbook) in maps() {
        let map = read_map(&map_path);
        assert!(!map.items.is_empty(), "{} has no items", map.path.display());
        let names = names_in(&runbook);
        for (lines, class, named, note) in &map.items {
            assert!(
                CLASSES.contains(&class.as_str()),
                "{} {lines}: class `{class}` is not one of {CLASSES:?}",
                map.path.display()
            );
            for name in named {
                assert!(
                    names.contains(name),
                    "{} {lines}: `{name}` is not a step or section of {}",
                    map.path.display(),
                    runbook.display()
                );
            }
            if class == "automated" {
                assert!(
                    !named.is_empty(),
                    "{} {lines}: an automated item names the steps that do it",
                    map.path.display()
                );
            } else {
                assert!(
                    !note.is_empty(),
                    "{} {lines}: a `{class}` item says why in its note",
                    map.path.display()
                );
            }
        }
    }
}

#[test]
fn coverage_totals_add_up_and_reach_eighty_percent() {
    for (map_path, _) in maps() {
        let map = read_map(&map_path);
        let mut counted: BTreeMap<String, usize> = BTreeMap::new();
        for (_, class, _, _) in &map.items {
            *counted.entry(class.clone()).or_default() += 1;
        }
        for class in CLASSES {
            assert_eq!(
                map.totals.get(class).copied().unwrap_or_default(),
                counted.get(class).copied().unwrap_or_default(),
                "{}: the totals' `{class}` is not the number of its rows",
                map.path.display()
            );
        }
        let automated = counted.get("automated").copied().unwrap_or_default();
        let automatable = automated + counted.get("not yet").copied().unwrap_or_default();
        let percent = automated * 100 / automatable.max(1);
        assert_eq!(
            map.share,
            format!("{automated} / {automatable} = {percent} %"),
            "{}: the share row",
            map.path.display()
        );
        assert!(
            percent >= 80,
            "{}: {percent} % of what can be automated is",
            map.path.display()
        );
    }
}
