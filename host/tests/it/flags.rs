//! The `feature-flag` plugin against the source runbooks' flag admin API
//! (served by the sample service): percentages step up, a bad token is
//! refused, and rollback walks the flag back to where it was.

use crate::support::{RunOptions, run};
use runbook::events::Status;
use runbook_testenv::SampleService;
use serde_json::json;

fn flag_step(id: &str, base: &str, percentage: u8) -> String {
    format!(
        "[[steps]]\nid = \"{id}\"\nuses = \"feature-flag\"\nwith.url = \"{base}/admin/feature-flags\"\nwith.key = \"new_feature\"\nwith.percentage = {percentage}\nwith.token = \"${{{{ secrets.ADMIN_TOKEN }}}}\"\ngrants.http = [\"{base}/admin/feature-flags\"]\ngrants.secrets = [\"ADMIN_TOKEN\"]\n\n"
    )
}

fn with_token(token: &str) -> RunOptions {
    RunOptions {
        secrets: [("ADMIN_TOKEN".to_owned(), token.to_owned())].into(),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn a_flag_steps_up_and_rollback_walks_it_back_to_where_it_was() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| {
        state.admin_token = Some("s3cret".into());
        state.flags.insert(
            "new_feature".into(),
            json!({"key": "new_feature", "percentage": 5, "enabled": true}),
        );
    });
    let base = service.base_url();
    let body = format!(
        "[runbook]\nname = \"flags\"\n\n{}{}[[steps]]\nid = \"monitor\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        flag_step("ten", &base, 10),
        flag_step("fifty", &base, 50)
    );
    let finished = run(&body, with_token("s3cret")).await;
    let (status, summary, outputs) = finished.step("ten");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(summary, "flag `new_feature`: 5% (enabled) → 10%");
    assert_eq!(outputs["previous_percentage"], "5");
    assert_eq!(
        finished.step("fifty").1,
        "flag `new_feature`: 10% (enabled) → 50%"
    );
    assert_eq!(finished.step("monitor").0, Status::Failed);
    // Rolled back newest first: 50 → 10, then 10 → 5.
    let posted: Vec<serde_json::Value> = service
        .state()
        .received
        .iter()
        .filter(|request| request.method == "POST")
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect();
    let percentages: Vec<u64> = posted
        .iter()
        .map(|body| body["percentage"].as_u64().unwrap())
        .collect();
    assert_eq!(percentages, [10, 50, 10, 5]);
    assert_eq!(service.state().flags["new_feature"]["percentage"], 5);
}

#[tokio::test]
async fn a_flag_that_did_not_exist_is_switched_off_on_rollback() {
    let service = SampleService::start(None).await.unwrap();
    let base = service.base_url();
    let body = format!(
        "[runbook]\nname = \"flags\"\n\n{}[[steps]]\nid = \"monitor\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n",
        flag_step("ten", &base, 10)
    );
    let finished = run(&body, with_token("anything")).await;
    assert_eq!(finished.step("ten").1, "flag `new_feature` set to 10%");
    let flag = &service.state().flags["new_feature"];
    assert_eq!(flag["percentage"], 0);
    assert_eq!(flag["enabled"], false);
}

#[tokio::test]
async fn a_wrong_token_is_a_failure_that_says_so() {
    let service = SampleService::start(None).await.unwrap();
    service.update(|state| state.admin_token = Some("s3cret".into()));
    let body = format!(
        "[runbook]\nname = \"flags\"\n\n{}",
        flag_step("ten", &service.base_url(), 10)
    );
    let finished = run(&body, with_token("wrong")).await;
    let (status, summary, _) = finished.step("ten");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("refused to read `new_feature` (401): check the token"),
        "{summary}"
    );
    assert!(service.state().flags.is_empty());
}
