//! The types a parameter may declare (`[params.NAME] type = "integer"`):
//! how the text of `--set NAME=VALUE` becomes a value of the type, whether
//! a TOML `default` is one, and the hint that shows a value of it. Pure:
//! the diagnostics are made by `validate/params.rs` and `bind/params.rs`.
//!
//! A value is JSON of its type: a string, an integer, a number, a boolean,
//! or a list of scalars (strings, numbers and booleans). Written back as
//! text ([`crate::template::as_text`]: a string as it is, anything else as
//! JSON), every value parses back to itself, which `runbook resume` relies
//! on when it binds the journal's values again.

use serde::Deserialize;
use serde_json::Value;

/// `type` of a parameter; `string` when the runbook does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Text, as every parameter was before types: `--set` gives it as it is.
    #[default]
    String,
    /// A whole number (64 bits, signed): `--set replicas=3`.
    Integer,
    /// Any finite number, whole or not: `--set ratio=0.5`.
    Number,
    /// `--set dry_run=true` or `false`.
    Boolean,
    /// A list of strings, numbers and booleans: `--set services=api,worker`
    /// (strings) or `--set 'services=["api", 2]'` (a JSON array).
    List,
}

impl ParamType {
    /// Its name in `type`.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::List => "list",
        }
    }

    /// A value of it, as a message names one: `an integer`.
    pub fn described(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "`true` or `false`",
            ParamType::List => "a list",
        }
    }

    /// What to write instead of a value that is not of the type, for the
    /// parameter `name`: ``expected an integer, e.g. `--set percentage=10` ``.
    pub fn hint(self, name: &str) -> String {
        match self {
            ParamType::String => format!("expected text, e.g. `--set {name}=text`"),
            ParamType::Integer => format!("expected an integer, e.g. `--set {name}=10`"),
            ParamType::Number => format!("expected a number, e.g. `--set {name}=0.5`"),
            ParamType::Boolean => format!("expected `true` or `false`, e.g. `--set {name}=true`"),
            ParamType::List => format!(
                "expected a comma-separated list, e.g. `--set {name}=api,worker`, or a JSON array of strings, numbers and booleans, e.g. `--set '{name}=[\"api\", 2]'`"
            ),
        }
    }

    /// What a TOML `default` of the type looks like, for the hint of one
    /// that is not: `default = 10`.
    pub fn default_example(self) -> &'static str {
        match self {
            ParamType::String => "default = \"text\"",
            ParamType::Integer => "default = 10",
            ParamType::Number => "default = 0.5",
            ParamType::Boolean => "default = false",
            ParamType::List => "default = [\"api\", \"worker\"]",
        }
    }

    /// The value of the command-line text `text`, or why it is not one of
    /// the type, as the end of a sentence about it (`is not an integer`).
    /// A string is taken as it is; other types ignore spaces around the
    /// value (and around each element of a comma-separated list).
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let not = || format!("is not {}", self.described());
        match self {
            ParamType::String => Ok(Value::String(text.to_owned())),
            ParamType::Integer => match text.trim().parse::<i64>() {
                Ok(number) => Ok(Value::from(number)),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                    ) =>
                {
                    Err("is too large for an integer (64 bits)".to_owned())
                }
                Err(_) => Err(not()),
            },
            ParamType::Number => parse_number(text.trim()).ok_or_else(not),
            ParamType::Boolean => match text.trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(not()),
            },
            ParamType::List => parse_list(text).map_err(|why| format!("{}: {why}", not())),
        }
    }

    /// Whether the TOML value `value` (a `default`) is of the type. A
    /// `number` takes an integer too; a `list` holds only scalars. Dates
    /// and times are of no type, and numbers must be finite.
    pub fn admits(self, value: &toml::Value) -> bool {
        match (self, value) {
            (ParamType::String, toml::Value::String(_))
            | (ParamType::Integer, toml::Value::Integer(_))
            | (ParamType::Number, toml::Value::Integer(_))
            | (ParamType::Boolean, toml::Value::Boolean(_)) => true,
            (ParamType::Number, toml::Value::Float(number)) => number.is_finite(),
            (ParamType::List, toml::Value::Array(items)) => items.iter().all(|item| match item {
                toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_) => true,
                toml::Value::Float(number) => number.is_finite(),
                _ => false,
            }),
            _ => false,
        }
    }

    /// The value a parameter of the type has when it is optional, has no
    /// default and was not given: `""` for a string (as before types),
    /// `[]` for a list, and `null` for the others (nothing inside text,
    /// false in `if`, an unset optional parameter to a plugin).
    pub fn unset(self) -> Value {
        match self {
            ParamType::String => Value::String(String::new()),
            ParamType::List => Value::Array(Vec::new()),
            ParamType::Integer | ParamType::Number | ParamType::Boolean => Value::Null,
        }
    }

    /// What `validate` checks in place of a parameter it was not given and
    /// that has no default: `<params.NAME>` for a string (and as the one
    /// element of a list, so that a `for_each` over it is checked once),
    /// `0` for a number and `false` for a boolean, so that a plugin that
    /// takes a number is checked with one.
    pub fn placeholder(self, name: &str) -> Value {
        let named = Value::String(format!("<params.{name}>"));
        match self {
            ParamType::String => named,
            ParamType::List => Value::Array(vec![named]),
            ParamType::Integer | ParamType::Number => Value::from(0),
            ParamType::Boolean => Value::Bool(false),
        }
    }
}

/// A finite number: an integer when it is written as one (`10`), else a
/// floating-point one (`0.5`, `1e3`).
fn parse_number(text: &str) -> Option<Value> {
    if let Ok(number) = text.parse::<i64>() {
        return Some(Value::from(number));
    }
    let number = text
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())?;
    serde_json::Number::from_f64(number).map(Value::Number)
}

/// A list: a JSON array of scalars when the text starts with `[`, else
/// the comma-separated strings (spaces around each trimmed; nothing at all
/// is the empty list).
fn parse_list(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(trimmed)
            .map_err(|error| format!("it starts with `[` but is not a JSON array ({error})"))?;
        if let Some((position, item)) = items
            .iter()
            .enumerate()
            .find(|(_, item)| !matches!(item, Value::String(_) | Value::Number(_) | Value::Bool(_)))
        {
            return Err(format!(
                "element {} is {}; a list holds strings, numbers and booleans",
                position + 1,
                kind_of(item)
            ));
        }
        return Ok(Value::Array(items));
    }
    if trimmed.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    let items: Vec<&str> = trimmed.split(',').map(str::trim).collect();
    if let Some(position) = items.iter().position(|item| item.is_empty()) {
        return Err(format!("element {} is empty", position + 1));
    }
    Ok(Value::Array(
        items
            .into_iter()
            .map(|item| Value::String(item.to_owned()))
            .collect(),
    ))
}

/// What kind of JSON value `value` is, in words.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_string_is_taken_as_it_is() {
        assert_eq!(ParamType::String.parse(" 1.2 "), Ok(json!(" 1.2 ")));
        assert_eq!(ParamType::String.parse(""), Ok(json!("")));
    }

    #[test]
    fn an_integer_is_a_whole_number() {
        assert_eq!(ParamType::Integer.parse("10"), Ok(json!(10)));
        assert_eq!(ParamType::Integer.parse(" -3 "), Ok(json!(-3)));
        assert_eq!(
            ParamType::Integer.parse("ten"),
            Err("is not an integer".to_owned())
        );
        assert_eq!(
            ParamType::Integer.parse("1.5"),
            Err("is not an integer".to_owned())
        );
        assert!(
            ParamType::Integer
                .parse("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(
            ParamType::Integer.hint("percentage"),
            "expected an integer, e.g. `--set percentage=10`"
        );
    }

    #[test]
    fn a_number_stays_whole_when_written_whole_and_must_be_finite() {
        assert_eq!(ParamType::Number.parse("10"), Ok(json!(10)));
        assert_eq!(ParamType::Number.parse("0.5"), Ok(json!(0.5)));
        assert_eq!(ParamType::Number.parse("1e3"), Ok(json!(1000.0)));
        for wrong in ["", "ten", "inf", "NaN", "1,5"] {
            assert_eq!(
                ParamType::Number.parse(wrong),
                Err("is not a number".to_owned()),
                "{wrong}"
            );
        }
    }

    #[test]
    fn a_boolean_is_true_or_false_and_nothing_else() {
        assert_eq!(ParamType::Boolean.parse("true"), Ok(json!(true)));
        assert_eq!(ParamType::Boolean.parse("false"), Ok(json!(false)));
        for wrong in ["yes", "1", "True", ""] {
            assert_eq!(
                ParamType::Boolean.parse(wrong),
                Err("is not `true` or `false`".to_owned()),
                "{wrong}"
            );
        }
    }

    #[test]
    fn a_list_is_comma_separated_strings_or_a_json_array_of_scalars() {
        assert_eq!(
            ParamType::List.parse("api, worker"),
            Ok(json!(["api", "worker"]))
        );
        assert_eq!(ParamType::List.parse("api"), Ok(json!(["api"])));
        assert_eq!(ParamType::List.parse(""), Ok(json!([])));
        assert_eq!(ParamType::List.parse("80,443"), Ok(json!(["80", "443"])));
        assert_eq!(
            ParamType::List.parse(r#"["a,b", 2, true]"#),
            Ok(json!(["a,b", 2, true]))
        );
        assert_eq!(ParamType::List.parse("[]"), Ok(json!([])));
        assert_eq!(
            ParamType::List.parse("api,,worker"),
            Err("is not a list: element 2 is empty".to_owned())
        );
        assert_eq!(
            ParamType::List.parse(r#"["api", {"a": 1}]"#),
            Err(
                "is not a list: element 2 is an object; a list holds strings, numbers and booleans"
                    .to_owned()
            )
        );
        assert!(
            ParamType::List
                .parse("[api")
                .unwrap_err()
                .starts_with("is not a list: it starts with `[` but is not a JSON array")
        );
    }

    #[test]
    fn every_value_written_as_text_parses_back_to_itself() {
        let values = [
            (ParamType::String, json!("1.2.3")),
            (ParamType::String, json!("")),
            (ParamType::Integer, json!(-7)),
            (ParamType::Number, json!(10)),
            (ParamType::Number, json!(0.25)),
            (ParamType::Number, json!(1.0)),
            (ParamType::Boolean, json!(false)),
            (ParamType::List, json!(["a,b", "c", 2, 0.5, true])),
            (ParamType::List, json!([])),
        ];
        for (kind, value) in values {
            let text = crate::template::as_text(&value);
            assert_eq!(kind.parse(&text), Ok(value.clone()), "{kind:?} {text}");
        }
    }

    #[test]
    fn a_default_must_be_of_the_type() {
        let toml = |text: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("v = {text}"))
                .unwrap()
                .get("v")
                .cloned()
                .unwrap()
        };
        assert!(ParamType::String.admits(&toml("\"x\"")));
        assert!(!ParamType::String.admits(&toml("10")));
        assert!(ParamType::Integer.admits(&toml("10")));
        assert!(!ParamType::Integer.admits(&toml("\"10\"")));
        assert!(!ParamType::Integer.admits(&toml("1.5")));
        assert!(ParamType::Number.admits(&toml("10")));
        assert!(ParamType::Number.admits(&toml("1.5")));
        assert!(!ParamType::Number.admits(&toml("nan")));
        assert!(ParamType::Boolean.admits(&toml("true")));
        assert!(!ParamType::Boolean.admits(&toml("\"true\"")));
        assert!(ParamType::List.admits(&toml("[\"a\", 1, 0.5, false]")));
        assert!(ParamType::List.admits(&toml("[]")));
        assert!(!ParamType::List.admits(&toml("[[\"a\"]]")));
        assert!(!ParamType::List.admits(&toml("[{ a = 1 }]")));
        assert!(!ParamType::List.admits(&toml("\"a,b\"")));
        assert!(!ParamType::String.admits(&toml("2026-01-01")));
    }

    #[test]
    fn unset_and_placeholder_values_have_the_type() {
        assert_eq!(ParamType::String.unset(), json!(""));
        assert_eq!(ParamType::List.unset(), json!([]));
        assert_eq!(ParamType::Integer.unset(), Value::Null);
        assert_eq!(
            ParamType::String.placeholder("version"),
            json!("<params.version>")
        );
        assert_eq!(
            ParamType::List.placeholder("services"),
            json!(["<params.services>"])
        );
        assert_eq!(ParamType::Number.placeholder("ratio"), json!(0));
        assert_eq!(ParamType::Boolean.placeholder("dry_run"), json!(false));
    }
}
