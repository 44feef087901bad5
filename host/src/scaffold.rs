//! `runbook plugin new`: a plugin project that builds, passes its own test
//! and runs in the example runbook it comes with, out of the box. The Rust
//! project carries its own copy of the SDK and the contract (this
//! version's, vendored under `runbook-sdk/`) and the lockfile this version
//! was built and tested with, so it builds offline and as it was tested.

use std::path::PathBuf;

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the vendored `runbook-sdk`.
    Rust,
    /// Python, with the vendored `runbook_sdk` and componentize-py.
    Python,
    /// JavaScript, with the vendored SDK and componentize-js.
    Js,
}

/// One file of a new project: where, relative to its folder, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the project's folder.
    pub path: PathBuf,
    /// Its text.
    pub contents: String,
}

/// The SDK's sources, as this version of `runbook` was built with them.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../plugins/sdk/src/lib.rs")),
    ("aws.rs", include_str!("../../plugins/sdk/src/aws.rs")),
    (
        "command.rs",
        include_str!("../../plugins/sdk/src/command.rs"),
    ),
    (
        "duration.rs",
        include_str!("../../plugins/sdk/src/duration.rs"),
    ),
    ("http.rs", include_str!("../../plugins/sdk/src/http.rs")),
    ("kube.rs", include_str!("../../plugins/sdk/src/kube.rs")),
    ("log.rs", include_str!("../../plugins/sdk/src/log.rs")),
    (
        "private.rs",
        include_str!("../../plugins/sdk/src/private.rs"),
    ),
];
const CONTRACT: &str = include_str!("../../wit/plugin.wit");
const LOCKFILE: &str = include_str!("../../Cargo.lock");
const RUST_LIB: &str = include_str!("scaffold/rust_lib.rs.in");
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/__init__.py"),
    ),
    (
        "build.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/build.py"),
    ),
    (
        "errors.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/errors.py"),
    ),
    (
        "http.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/http.py"),
    ),
    (
        "log.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/log.py"),
    ),
    (
        "schema.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/schema.py"),
    ),
    (
        "secrets.py",
        include_str!("../../plugins/sdk-python/runbook_sdk/secrets.py"),
    ),
];
const JS_SDK: &[(&str, &str)] = &[
    ("index.js", include_str!("../../plugins/sdk-js/index.js")),
    ("schema.js", include_str!("../../plugins/sdk-js/schema.js")),
    (
        "index.d.ts",
        include_str!("../../plugins/sdk-js/index.d.ts"),
    ),
    ("build.mjs", include_str!("../../plugins/sdk-js/build.mjs")),
    (
        "package.json",
        include_str!("../../plugins/sdk-js/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../plugins/sdk-js/package-lock.json"),
    ),
];
const JS_STEP: &str = include_str!("scaffold/js_step.js.in");
const JS_TEST: &str = include_str!("scaffold/js_test.mjs.in");
const PYTHON_PLUGIN: &str = include_str!("scaffold/python_plugin.py.in");
const PYTHON_TEST: &str = include_str!("scaffold/python_test.py.in");

/// The componentize-py the Python SDK pins.
fn componentize_py() -> &'static str {
    PYTHON_SDK
        .iter()
        .find(|(name, _)| *name == "build.py")
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|line| line.strip_prefix("TOOLCHAIN = \""))
                .and_then(|rest| rest.strip_suffix('"'))
        })
        .unwrap_or("0.25.1")
}

/// Why a name cannot be a plugin's.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot name a plugin: use lowercase letters, digits and single dashes, starting with a letter (such as `http-check`)"
        ))
    }
}

/// The files of a new plugin project named `name`.
pub fn project(name: &str, lang: Lang) -> Result<Vec<File>, String> {
    check_name(name)?;
    match lang {
        Lang::Rust => Ok(rust(name)),
        Lang::Python => Ok(python(name)),
        Lang::Js => Ok(js(name)),
    }
}

fn file(path: impl Into<PathBuf>, contents: impl Into<String>) -> File {
    File {
        path: path.into(),
        contents: contents.into(),
    }
}

/// `http-check` as a type name: `HttpCheck`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rust(name: &str) -> Vec<File> {
    let library = name.replace('-', "_");
    let mut files = vec![
        file(
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
description = "A runbook step plugin"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
runbook-sdk = {{ path = "runbook-sdk" }}

# Its own workspace, wherever the folder is.
[workspace]

[profile.release]
opt-level = "s"
lto = true
strip = true
"#
            ),
        ),
        file(
            "src/lib.rs",
            RUST_LIB
                .replace("{{name}}", name)
                .replace("{{type}}", &type_name(name)),
        ),
        file(
            "example.toml",
            example(
                name,
                &format!("target/wasm32-wasip2/release/{library}.wasm"),
            ),
        ),
        file(
            "README.md",
            format!(
                r#"# {name}

A runbook step plugin, made by `runbook plugin new`. It checks that a
granted URL answers with the expected status; change `Params`, `plan` and
`run` in `src/lib.rs` to what your step does (docs/plugin-authors.md).

```sh
rustup target add wasm32-wasip2                      # once
cargo test                                           # its own tests, on this machine
cargo build --release --target wasm32-wasip2         # the component
runbook plugin inspect target/wasm32-wasip2/release/{library}.wasm
runbook exec example.toml --set url=https://example.com/ --yes
```

`runbook-sdk/` is the SDK and `runbook-sdk/wit/plugin.wit` the contract
of the `runbook` that made this project; `Cargo.lock` pins what it was
tested with. Record a run with `runbook exec example.toml --set url=... --record cassettes/`
and replay the plugin without the network with
`runbook plugin test target/wasm32-wasip2/release/{library}.wasm --cassette cassettes/check.json`.
"#
            ),
        ),
        file(".gitignore", "/target\n/cassettes\n"),
        file("Cargo.lock", LOCKFILE),
        file(
            "runbook-sdk/Cargo.toml",
            r#"[package]
name = "runbook-sdk"
description = "Write runbook step plugins: one trait, one macro (vendored by `runbook plugin new`)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61.1", default-features = false, features = ["macros", "realloc"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
schemars = "1"
humantime = "2"
serde_path_to_error = "0.1"
"#,
        ),
        file("runbook-sdk/wit/plugin.wit", CONTRACT),
    ];
    for (source, text) in SDK_SOURCES {
        let text = if *source == "lib.rs" {
            // The contract sits beside the vendored SDK.
            text.replace("path: \"../../wit\"", "path: \"wit\"")
        } else {
            (*text).to_owned()
        };
        files.push(file(format!("runbook-sdk/src/{source}"), text));
    }
    files
}

/// The example runbook of a project whose component is `component`.
fn example(name: &str, component: &str) -> String {
    format!(
        r#"[runbook]
name = "{name}-example"
description = "Runs the {name} plugin once"

[params.url]
description = "The URL to check"
required = true

[plugins]
{name} = "{component}"

[[steps]]
id = "check"
uses = "{name}"
with.url = "${{{{ params.url }}}}"
grants.http = ["${{{{ params.url }}}}"]
"#
    )
}

fn python(name: &str) -> Vec<File> {
    let pin = componentize_py();
    let mut files = vec![
        file(
            "plugin.py",
            PYTHON_PLUGIN
                .replace("{{name}}", name)
                .replace("{{type}}", &type_name(name)),
        ),
        file("test_plugin.py", PYTHON_TEST),
        file("example.toml", example(name, "plugin.wasm")),
        file(
            ".gitignore",
            "/plugin.wasm\n/.venv\n__pycache__/\n/cassettes\n",
        ),
        file("requirements.txt", format!("componentize-py=={pin}\n")),
        file(
            "README.md",
            format!(
                r#"# {name}

A runbook step plugin in Python, made by `runbook plugin new --lang python`.
It checks that a granted URL answers with the expected status; change
`params_schema`, `plan` and `run` in `plugin.py` to what your step does
(docs/plugin-authors.md).

```sh
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt   # once
python3 -m unittest                                                  # its own tests
.venv/bin/python runbook_sdk/build.py plugin.py -o plugin.wasm       # the component, sealed
runbook plugin inspect plugin.wasm
runbook exec example.toml --set url=https://example.com/ --yes
```

`runbook_sdk/` is the SDK and `runbook_sdk/wit/plugin.wit` the contract of
the `runbook` that made this project. The build picks the narrowest world
for the capabilities the step declares, so the component imports only
what it uses.
"#
            ),
        ),
        file("runbook_sdk/wit/plugin.wit", CONTRACT),
    ];
    for (source, text) in PYTHON_SDK {
        files.push(file(format!("runbook_sdk/{source}"), *text));
    }
    files
}

fn js(name: &str) -> Vec<File> {
    let mut files = vec![
        file("step.js", JS_STEP.replace("{{name}}", name)),
        file("test/step.test.mjs", JS_TEST),
        file("example.toml", example(name, "plugin.wasm")),
        file(
            "package.json",
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "setup": "cd runbook-sdk && npm ci --no-audit --no-fund",
    "test": "node --test test/",
    "build": "node runbook-sdk/build.mjs step.js -o plugin.wasm"
  }},
  "engines": {{ "node": ">=20" }}
}}
"#
            ),
        ),
        file(
            ".gitignore",
            "/plugin.wasm\n/runbook-sdk/node_modules\n/cassettes\n",
        ),
        file(
            "README.md",
            format!(
                r#"# {name}

A runbook step plugin in JavaScript, made by `runbook plugin new --lang js`.
It checks that a granted URL answers with the expected status; change
`params`, `plan` and `run` in `step.js` to what your step does
(docs/plugin-authors.md).

```sh
npm run setup      # once: the pinned componentize-js and jco, in runbook-sdk/
npm test           # its own tests, on this machine's Node
npm run build      # plugin.wasm: the narrowest world, without wasi:http, sealed by `runbook`
runbook plugin inspect plugin.wasm
runbook exec example.toml --set url=https://example.com/ --yes
```

`runbook-sdk/` is the SDK and `runbook-sdk/wit/plugin.wit` the contract of
the `runbook` that made this project; its `package-lock.json` pins the
toolchain it was tested with. Sealing runs `runbook plugin seal`: `runbook`
on PATH, or `$RUNBOOK`.
"#
            ),
        ),
        file("runbook-sdk/wit/plugin.wit", CONTRACT),
    ];
    for (source, text) in JS_SDK {
        files.push(file(format!("runbook-sdk/{source}"), *text));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_become_types() {
        assert!(check_name("http-check").is_ok());
        for bad in ["Http", "-x", "x-", "a--b", "", "1x", "a_b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("http-check"), "HttpCheck");
    }

    #[test]
    fn a_rust_project_vendors_the_sdk_pointing_at_its_own_contract() {
        let files = project("http-check", Lang::Rust).unwrap();
        let find = |path: &str| {
            files
                .iter()
                .find(|file| file.path == std::path::Path::new(path))
                .unwrap_or_else(|| panic!("no {path}"))
        };
        assert!(
            find("runbook-sdk/src/lib.rs")
                .contents
                .contains("path: \"wit\"")
        );
        assert!(
            find("src/lib.rs")
                .contents
                .contains("export_step!(HttpCheck)")
        );
        assert!(
            find("example.toml")
                .contents
                .contains("target/wasm32-wasip2/release/http_check.wasm")
        );
        assert!(find("example.toml").contents.contains("${{ params.url }}"));
    }
}
