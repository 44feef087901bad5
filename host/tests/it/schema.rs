//! `docs/runbook.schema.json`, the JSON Schema editors use for completion,
//! checked against every runbook in `runbooks/` (and against a runbook with
//! a typo, which it must refuse), with a small validator for the parts of
//! JSON Schema it uses: `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `pattern`, `minimum`, `anyOf`
//! and local `$ref`s. (That every runbook validates in every environment
//! is in `format.rs`.)

use runbook_testenv::workspace_root;
use serde_json::Value;

fn schema() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("docs/runbook.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// TOML as JSON; dates and times become strings.
fn json_of(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Float(number) => Value::from(*number),
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), json_of(value)))
                .collect(),
        ),
    }
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                root,
                root.pointer(pointer)
                    .unwrap_or_else(|| panic!("no {reference} in the schema")),
            )
        }
        None => schema,
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        other => panic!("the validator does not know type `{other}`"),
    }
}

/// Every place `value` breaks `schema`, as `path: problem`.
fn problems(root: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let schema = resolve(root, schema);
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = options.iter().any(|option| {
            let mut inner = Vec::new();
            problems(root, option, value, path, &mut inner);
            inner.is_empty()
        });
        if !fits {
            found.push(format!("{path}: matches none of the allowed shapes"));
        }
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        found.push(format!("{path}: expected {expected}, found {value}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        found.push(format!(
            "{path}: {value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let (Some(pattern), Some(text)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) && !regex::Regex::new(pattern).unwrap().is_match(text)
    {
        found.push(format!("{path}: `{text}` does not match {pattern}"));
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && number < minimum
    {
        found.push(format!("{path}: {number} is below {minimum}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                found.push(format!("{path}: `{key}` is required"));
            }
        }
        for (key, item) in object {
            let at = format!("{path}.{key}");
            match (
                properties.and_then(|properties| properties.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => problems(root, property, item, &at, found),
                (None, Some(Value::Bool(false))) => found.push(format!("{at}: unknown key")),
                (None, Some(additional)) if additional.is_object() => {
                    problems(root, additional, item, &at, found)
                }
                _ => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            problems(root, items, item, &format!("{path}[{index}]"), found);
        }
    }
}

fn runbooks() -> Vec<std::path::PathBuf> {
    crate::support::toml_files(&workspace_root().join("runbooks"))
}

#[test]
fn every_runbook_in_runbooks_matches_the_json_schema() {
    let schema = schema();
    let files = runbooks();
    assert!(files.len() >= 6, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let value = json_of(&toml::Value::Table(
            toml::from_str::<toml::Table>(&text).unwrap(),
        ));
        let mut found = Vec::new();
        problems(&schema, &schema, &value, "", &mut found);
        assert!(found.is_empty(), "{}: {found:#?}", path.display());
    }
}

#[test]
fn the_schema_refuses_a_typo_and_a_wrong_type() {
    let schema = schema();
    let text = "[runbook]\nname = \"x\"\n\n[[steps]]\nid = \"a\"\nuses = \"smoke-test\"\ntimout = \"1m\"\nalways = \"yes\"\ngrants.kube = { namespaces = [\"a\"], resources = [\"v1/Pod\"], verbs = [\"exec\"] }\n";
    let value = json_of(&toml::Value::Table(
        toml::from_str::<toml::Table>(text).unwrap(),
    ));
    let mut found = Vec::new();
    problems(&schema, &schema, &value, "", &mut found);
    assert!(
        found
            .iter()
            .any(|problem| problem == ".steps[0].timout: unknown key"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with(".steps[0].always: expected boolean")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|problem| problem
                .starts_with(".steps[0].grants.kube.verbs[0]: \"exec\" is not one of")),
        "{found:#?}"
    );
}

#[test]
fn the_schema_takes_typed_parameters_and_refuses_an_unknown_type() {
    let schema = schema();
    let text = "[runbook]\nname = \"x\"\n\n[params.percentage]\ntype = \"integer\"\ndefault = 10\n\n[params.ratio]\ntype = \"number\"\ndefault = 0.5\n\n[params.dry_run]\ntype = \"boolean\"\ndefault = false\n\n[params.services]\ntype = \"list\"\ndefault = [\"api\", 2, true]\n\n[params.version]\ndefault = \"1.0\"\n\n[params.wrong]\ntype = \"int\"\ndefault = [{ a = 1 }]\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
    let value = json_of(&toml::Value::Table(
        toml::from_str::<toml::Table>(text).unwrap(),
    ));
    let mut found = Vec::new();
    problems(&schema, &schema, &value, "", &mut found);
    assert!(
        found
            .iter()
            .all(|problem| problem.starts_with(".params.wrong")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with(".params.wrong.type: \"int\" is not one of")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|problem| problem == ".params.wrong.default: matches none of the allowed shapes"),
        "{found:#?}"
    );
}

#[test]
fn the_schema_takes_signed_approvals_and_refuses_a_misspelt_key() {
    let schema = schema();
    let text = "[runbook]\nname = \"x\"\n\n[environments.production]\napprovals = { required = 1, from = [\"bob\"], allowed_signers = \"allowed_signers\" }\nemergency_approvals = { required = 1, from = [\"eve\"], allowed_signer = \"allowed_signers\" }\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
    let value = json_of(&toml::Value::Table(
        toml::from_str::<toml::Table>(text).unwrap(),
    ));
    let mut found = Vec::new();
    problems(&schema, &schema, &value, "", &mut found);
    assert_eq!(
        found,
        [".environments.production.emergency_approvals.allowed_signer: unknown key"],
        "{found:#?}"
    );
}

#[test]
fn the_schema_takes_each_source_of_secrets_and_refuses_an_unknown_one() {
    let schema = schema();
    let text = "[runbook]\nname = \"x\"\n\n[secrets.DB_PASSWORD]\nfrom = \"aws-secretsmanager\"\nid = \"${{ vars.prefix }}/db\"\nregion = \"us-east-1\"\nkey = \"password\"\n\n[secrets.DEPLOY_TOKEN]\nfrom = \"file\"\npath = \"/run/secrets/deploy-token\"\n\n[secrets.SLACK_WEBHOOK]\nvar = \"SLACK_URL\"\n\n[secrets.WRONG]\nfrom = \"vault\"\nsecret = \"x\"\n\n[[steps]]\nid = \"a\"\nuses = \"noop\"\n";
    let value = json_of(&toml::Value::Table(
        toml::from_str::<toml::Table>(text).unwrap(),
    ));
    let mut found = Vec::new();
    problems(&schema, &schema, &value, "", &mut found);
    found.sort();
    assert_eq!(
        found.len(),
        2,
        "only the wrong secret is refused: {found:#?}"
    );
    assert!(
        found[0].starts_with(".secrets.WRONG.from: \"vault\" is not one of"),
        "{found:#?}"
    );
    assert_eq!(found[1], ".secrets.WRONG.secret: unknown key", "{found:#?}");
}

/// `--env local` means the local estate: a runbook whose steps call AWS
/// must send them to the estate's moto in `local`, never to AWS with
/// whatever credentials happen to be loaded.
#[test]
fn every_runbook_that_calls_aws_keeps_its_local_environment_off_aws() {
    for path in runbooks() {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let calls_aws = value
            .get("steps")
            .and_then(toml::Value::as_array)
            .is_some_and(|steps| {
                steps.iter().any(|step| {
                    step.get("grants")
                        .and_then(|grants| grants.get("aws"))
                        .is_some()
                })
            });
        let Some(local) = value.get("environments").and_then(|envs| envs.get("local")) else {
            continue;
        };
        if !calls_aws {
            continue;
        }
        let endpoint = local
            .get("aws_endpoint")
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("{}: `local` sets no aws_endpoint", path.display()));
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "{}: `local` sends AWS calls to {endpoint}",
            path.display()
        );
    }
}
