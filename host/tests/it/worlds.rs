//! The worlds of `wit/plugin.wit`, resolved as componentize-py, jco and
//! wit-bindgen resolve them: `step-base` imports `log` and `clock`, each
//! `step-A-B` adds exactly the interfaces its name says, `step` adds every
//! capability's, and all export the same functions. A toolchain that
//! imports every interface of its world then imports only what its name
//! promises.

use std::collections::BTreeSet;
use wit_parser::{Resolve, WorldItem, WorldKey};

const EXPORTS: [&str; 5] = ["describe", "check", "plan", "run", "rollback"];
const CAPABILITIES: [&str; 5] = ["http", "secrets", "kube", "aws", "command"];

fn package() -> (Resolve, wit_parser::PackageId) {
    let mut resolve = Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&wit).expect("wit/ resolves");
    (resolve, package)
}

/// The interfaces of `runbook:plugin` a world imports, by their short
/// names (`log`), and the names of what it exports.
fn shape(resolve: &Resolve, world: wit_parser::WorldId) -> (BTreeSet<String>, BTreeSet<String>) {
    let world = &resolve.worlds[world];
    let imports = world
        .imports
        .iter()
        // Types a world `use`s (`descriptor`) are names, not imports a
        // component makes.
        .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
        .map(|(key, item)| {
            assert!(
                matches!(item, WorldItem::Interface { .. }),
                "{} imports something other than an interface: {key:?}",
                world.name
            );
            let name = resolve.name_world_key(key);
            name.strip_prefix("runbook:plugin/")
                .and_then(|rest| rest.strip_suffix("@0.2.0"))
                .unwrap_or_else(|| panic!("{} imports {name}", world.name))
                .to_owned()
        })
        .collect();
    let exports = world
        .exports
        .keys()
        .map(|key| match key {
            WorldKey::Name(name) => name.clone(),
            WorldKey::Interface(_) => resolve.name_world_key(key),
        })
        .collect();
    (imports, exports)
}

#[test]
fn every_world_imports_exactly_what_its_name_says_and_exports_the_step() {
    let (resolve, package) = package();
    let package = &resolve.packages[package];
    assert_eq!(package.name.to_string(), "runbook:plugin@0.2.0");
    let exports: BTreeSet<String> = EXPORTS.iter().map(|name| (*name).to_owned()).collect();
    let base: BTreeSet<String> = ["types", "log", "clock"]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    let mut seen = BTreeSet::new();
    for (name, world) in &package.worlds {
        let (imports, exported) = shape(&resolve, *world);
        assert_eq!(exported, exports, "world {name}");
        let mut expected = base.clone();
        match name.as_str() {
            "step" => expected.extend(CAPABILITIES.iter().map(|name| (*name).to_owned())),
            "step-base" => {}
            _ => {
                let added = name
                    .strip_prefix("step-")
                    .unwrap_or_else(|| panic!("world {name} is not named step-…"));
                for capability in added.split('-') {
                    assert!(
                        CAPABILITIES.contains(&capability),
                        "world {name} names `{capability}`, which is no capability"
                    );
                    expected.insert(capability.to_owned());
                }
            }
        }
        assert_eq!(imports, expected, "world {name}");
        seen.insert(name.clone());
    }
    // One world per capability, the base, and `step` with all of them.
    for capability in CAPABILITIES {
        assert!(seen.contains(&format!("step-{capability}")), "{seen:?}");
    }
    assert!(
        seen.contains("step-base") && seen.contains("step"),
        "{seen:?}"
    );
    assert!(seen.contains("step-http-secrets"), "{seen:?}");
}

#[test]
fn the_step_world_imports_every_interface_of_the_package() {
    let (resolve, package) = package();
    let world = resolve.select_world(&[package], Some("step")).unwrap();
    let (imports, _) = shape(&resolve, world);
    let interfaces: BTreeSet<String> = resolve.packages[package]
        .interfaces
        .keys()
        .cloned()
        .collect();
    assert_eq!(imports, interfaces);
}

#[test]
fn every_capability_the_host_links_has_its_world() {
    let (resolve, package) = package();
    for capability in runbook::capability::CAPABILITIES {
        for interface in capability.used_through {
            if *interface != capability.name {
                continue;
            }
            let world = format!("step-{interface}");
            assert!(
                resolve.select_world(&[package], Some(&world)).is_ok(),
                "no world `{world}` for the `{}` capability",
                capability.name
            );
        }
    }
}
