//! Durations written the way operators write them: `500ms`, `60s`, `2m`, `1h 30m`.

use std::time::Duration;

/// A duration parsed from a human string such as `"500ms"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({error}); write it like \"500ms\", \"30s\" or \"2m\""
                ))
            })
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HumanDuration".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a duration such as \"500ms\", \"30s\", \"2m\" or \"1h 30m\"",
            "pattern": "^\\s*\\d+\\s*[a-zµ]+(\\s*\\d+\\s*[a-zµ]+)*\\s*$"
        })
    }
}
