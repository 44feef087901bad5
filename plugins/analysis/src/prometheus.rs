//! Prometheus: an instant query over HTTP, within the step's
//! `grants.http`.

use runbook_sdk::Error;
use runbook_sdk::http::Request;
use runbook_sdk::serde_json::Value;
use std::time::Duration;

/// Runs an instant query; `None` when it returns no series (or NaN).
pub fn query(prometheus: &str, promql: &str) -> Result<Option<f64>, Error> {
    let url = format!(
        "{}/api/v1/query?query={}",
        prometheus.trim_end_matches('/'),
        runbook_sdk::http::encode_component(promql)
    );
    let response = Request::get(url).timeout(Duration::from_secs(30)).send()?;
    let body = response.json().map_err(|_| {
        Error::transient(format!(
            "Prometheus answered {} without JSON",
            response.status
        ))
    })?;
    if body["status"] != "success" {
        let message = body["error"].as_str().unwrap_or("no error message");
        return Err(if response.status == 400 {
            Error::failed(format!(
                "Prometheus rejected the query `{promql}`: {message}"
            ))
        } else {
            Error::transient(format!(
                "Prometheus answered {}: {message}",
                response.status
            ))
        });
    }
    let sample = match body["data"]["resultType"].as_str() {
        Some("scalar") => body["data"]["result"].get(1).cloned(),
        _ => body["data"]["result"]
            .get(0)
            .and_then(|series| series["value"].get(1))
            .cloned(),
    };
    Ok(sample
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|value| value.is_finite()))
}
