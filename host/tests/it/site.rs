//! The `static-site` plugin and the `aws` capability's S3 and CloudFront
//! REST-XML calls against moto_server: a folder uploaded with each file's
//! content type, then only what changed; the invalidation created and
//! waited for; a rollback that puts back the earlier versions and removes
//! what the run created; `plan` says what would change and changes
//! nothing; an ungranted action and a bucket without versions are refused.

use crate::support::{Finished, RunOptions, TestRunbook, aws_at, plan_with_aws, run_file, runtime};
use runbook::events::{Decision, Status};
use runbook_testenv::Moto;

/// The bucket the site goes to.
const BUCKET: &str = "site";

/// Every action the step may need.
const ALL_ACTIONS: &str = r#"["GetBucketVersioning", "ListObjectsV2", "HeadObject", "PutObject", "DeleteObject", "CopyObject", "CreateInvalidation", "GetInvalidation"]"#;

/// A later step that fails, so that the run rolls back.
const FAILING_STEP: &str = "\n[[steps]]\nid = \"smoke\"\nuses = \"misbehave\"\nwith.mode = \"escape\"\ngrants.http = [\"http://127.0.0.1:9\"]\n";

/// A fresh moto_server with the versioned bucket `site` and a CloudFront
/// distribution in front of it.
struct Site {
    moto: Moto,
    distribution: String,
}

fn site() -> Site {
    let moto = Moto::start();
    moto.create_bucket(BUCKET, true);
    let distribution = moto.create_distribution(BUCKET);
    Site { moto, distribution }
}

async fn new_site() -> Site {
    tokio::task::spawn_blocking(site).await.unwrap()
}

/// An object as S3 serves it.
#[derive(Debug)]
struct Object {
    content_type: String,
    cache_control: Option<String>,
    body: String,
}

impl Site {
    /// The object at `key` in the bucket, or `None` when there is none.
    fn object(&self, key: &str) -> Option<Object> {
        let response = self.moto.s3("GET", &format!("/{BUCKET}/{key}"), "");
        if response.starts_with("HTTP/1.1 404") {
            return None;
        }
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("headers, then a body");
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (found, value) = line.split_once(':')?;
                found
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        Some(Object {
            content_type: header("content-type").unwrap_or_default(),
            cache_control: header("cache-control"),
            body: body.to_owned(),
        })
    }

    /// The keys of bucket `bucket` under `web/`, in order.
    fn keys_of(&self, bucket: &str) -> Vec<String> {
        let listed = self
            .moto
            .s3("GET", &format!("/{bucket}?list-type=2&prefix=web%2F"), "");
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        listed
            .split("<Key>")
            .skip(1)
            .map(|rest| rest[..rest.find('<').unwrap()].to_owned())
            .collect()
    }

    /// The keys of the site's bucket under `web/`, in order.
    fn keys(&self) -> Vec<String> {
        self.keys_of(BUCKET)
    }

    /// Stores `body` at `key` directly (as `application/xml`, without a
    /// `Cache-Control`), as it was before the runbook ran.
    fn put(&self, key: &str, body: &str) {
        let stored = self.moto.s3("PUT", &format!("/{BUCKET}/{key}"), body);
        assert!(stored.starts_with("HTTP/1.1 200"), "{stored}");
    }

    fn options(&self) -> RunOptions {
        aws_at(&self.moto.url)
    }
}

/// A runbook whose step `site` uploads `./dist/site` to `s3://site/web/`,
/// with `extra` parameters and granted `actions` of S3 and CloudFront.
fn runbook(extra: &str, actions: &str) -> String {
    format!(
        "[runbook]\nname = \"site\"\n\n[[steps]]\nid = \"site\"\nuses = \"static-site\"\nwith.region = \"us-east-1\"\nwith.bucket = \"{BUCKET}\"\nwith.prefix = \"web\"\nwith.folder = \"./dist/site\"\nwith.cache_control = \"public, max-age=31536000, immutable\"\nwith.html_cache_control = \"no-cache\"\n{extra}grants.fs.read = [\"./dist/site\"]\ngrants.aws = {{ services = [\"s3\", \"cloudfront\"], actions = {actions}, regions = [\"us-east-1\"] }}\n"
    )
}

/// Writes `files` (their paths in the folder, their text) into the
/// runbook's `dist/site`.
fn write_files(runbook: &TestRunbook, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = runbook.dir.path().join("dist/site").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// How each `aws` call of a run for `action` was decided.
fn decisions(finished: &Finished, action: &str) -> Vec<Decision> {
    finished.aws_decisions(action)
}

#[tokio::test]
async fn every_file_is_uploaded_with_its_content_type_and_then_only_a_changed_one() {
    let site = new_site().await;
    let runbook = TestRunbook::new(&runbook("", ALL_ACTIONS));
    write_files(
        &runbook,
        &[
            ("index.html", "<h1>v1</h1>"),
            ("about/index.html", "<h1>about</h1>"),
            ("css/app.css", "body { color: black }"),
            ("js/app.js", "console.log(1)"),
            (
                "img/logo.svg",
                "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            ),
        ],
    );
    let finished = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, outputs) = finished.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert_eq!(
        summary,
        "s3://site/web/: 5 uploaded, 0 unchanged, 0 deleted"
    );
    assert_eq!(outputs["uploaded"], "5", "{outputs:?}");
    assert_eq!(outputs["skipped"], "0", "{outputs:?}");
    assert_eq!(outputs["deleted"], "0", "{outputs:?}");
    assert_eq!(outputs["invalidation"], "", "{outputs:?}");
    assert_eq!(decisions(&finished, "PutObject"), [Decision::Allowed; 5]);
    // Pages go up after what they link to.
    let puts: Vec<String> = finished
        .aws_calls("PutObject")
        .into_iter()
        .map(|call| call.requested)
        .collect();
    assert!(
        puts[3].ends_with("(PUT /site/web/about/index.html)")
            && puts[4].ends_with("(PUT /site/web/index.html)"),
        "{puts:#?}"
    );
    let immutable = "public, max-age=31536000, immutable";
    for (key, content_type, cache_control, body) in [
        (
            "web/index.html",
            "text/html; charset=utf-8",
            "no-cache",
            "<h1>v1</h1>",
        ),
        (
            "web/about/index.html",
            "text/html; charset=utf-8",
            "no-cache",
            "<h1>about</h1>",
        ),
        (
            "web/css/app.css",
            "text/css; charset=utf-8",
            immutable,
            "body { color: black }",
        ),
        (
            "web/js/app.js",
            "text/javascript; charset=utf-8",
            immutable,
            "console.log(1)",
        ),
        (
            "web/img/logo.svg",
            "image/svg+xml",
            immutable,
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        ),
    ] {
        let object = site
            .object(key)
            .unwrap_or_else(|| panic!("{key} was not uploaded"));
        assert_eq!(object.content_type, content_type, "{key}");
        assert_eq!(
            object.cache_control.as_deref(),
            Some(cache_control),
            "{key}"
        );
        assert_eq!(object.body, body, "{key}");
    }

    // One file changed: only it goes up again.
    write_files(&runbook, &[("css/app.css", "body { color: navy }")]);
    let again = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, outputs) = again.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", again.log());
    assert_eq!(
        summary,
        "s3://site/web/: 1 uploaded, 4 unchanged, 0 deleted"
    );
    assert_eq!(outputs["skipped"], "4", "{outputs:?}");
    assert_eq!(
        again
            .aws_calls("PutObject")
            .into_iter()
            .map(|call| (call.requested, call.decision))
            .collect::<Vec<_>>(),
        [(
            "s3:PutObject in us-east-1 (PUT /site/web/css/app.css)".to_owned(),
            Decision::Allowed
        )]
    );
    assert_eq!(
        site.object("web/css/app.css").unwrap().body,
        "body { color: navy }"
    );

    // Nothing changed: nothing is sent but the reads.
    let unchanged = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, _) = unchanged.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert_eq!(
        summary,
        "s3://site/web/: 0 uploaded, 5 unchanged, 0 deleted"
    );
    assert!(unchanged.aws_calls("PutObject").is_empty());
}

#[tokio::test]
async fn the_invalidation_is_created_and_waited_for_until_cloudfront_completes_it() {
    let site = new_site().await;
    let extra = format!(
        "with.distribution = \"{}\"\nwith.paths = [\"/index.html\", \"/css/*\"]\n",
        site.distribution
    );
    let runbook = TestRunbook::new(&runbook(&extra, ALL_ACTIONS));
    write_files(
        &runbook,
        &[("index.html", "<h1>v1</h1>"), ("css/app.css", "body {}")],
    );
    let finished = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, outputs) = finished.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    let invalidation = outputs["invalidation"].clone();
    assert!(!invalidation.is_empty(), "{outputs:?}");
    assert!(
        summary.starts_with(&format!(
            "s3://site/web/: 2 uploaded, 0 unchanged, 0 deleted, invalidation {invalidation} "
        )),
        "{summary}"
    );
    // moto completes invalidations at once, and says so in capitals.
    assert!(
        summary.to_ascii_lowercase().ends_with(" completed"),
        "{summary}"
    );
    assert_eq!(
        decisions(&finished, "CreateInvalidation"),
        [Decision::Allowed]
    );
    // The status is read after the journaled wait, in a later round.
    assert!(
        !decisions(&finished, "GetInvalidation").is_empty(),
        "{}",
        finished.log()
    );
    let found = site.moto.cloudfront(
        "GET",
        &format!(
            "/2020-05-31/distribution/{}/invalidation/{invalidation}",
            site.distribution
        ),
        "",
    );
    assert!(found.starts_with("HTTP/1.1 200"), "{found}");
    assert!(
        found.contains("<Path>/index.html</Path><Path>/css/*</Path>"),
        "{found}"
    );

    // Nothing to upload: CloudFront is still told to forget, so that a
    // run retried after its uploads leaves it serving the folder.
    let again = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, _) = again.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}");
    assert!(
        summary.starts_with("s3://site/web/: 0 uploaded, 2 unchanged, 0 deleted, invalidation "),
        "{summary}"
    );
    assert_eq!(decisions(&again, "CreateInvalidation"), [Decision::Allowed]);
}

#[tokio::test]
async fn a_rollback_puts_back_overwritten_and_deleted_objects_and_removes_new_ones() {
    let site = new_site().await;
    site.put("web/index.html", "<h1>before</h1>");
    site.put("web/old.css", "old css");
    let extra = format!(
        "with.distribution = \"{}\"\nwith.delete_removed = true\n",
        site.distribution
    );
    let body = format!("{}{FAILING_STEP}", runbook(&extra, ALL_ACTIONS));
    let runbook = TestRunbook::new(&body);
    write_files(
        &runbook,
        &[
            ("index.html", "<h1>after</h1>"),
            ("app.js", "console.log(2)"),
        ],
    );
    let finished = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, outputs) = finished.step("site");
    assert_eq!(status, Status::Succeeded, "{summary}\n{}", finished.log());
    assert!(
        summary.starts_with("s3://site/web/: 2 uploaded, 0 unchanged, 1 deleted, invalidation "),
        "{summary}"
    );
    // What each key held was recorded before it changed.
    let changes = &outputs["changes.0"];
    for key in ["web/index.html", "web/app.js", "web/old.css"] {
        assert!(changes.contains(key), "{key} in {changes}");
    }
    assert_eq!(finished.report.status, Status::Failed);
    assert!(finished.report.rolled_back, "{}", finished.log());
    assert!(
        finished
            .log()
            .contains("s3://site/web/: 1 restored, 1 removed, 1 re-created, invalidation "),
        "{}",
        finished.log()
    );
    // The earlier version is back, with its own metadata.
    let index = site.object("web/index.html").expect("index.html is back");
    assert_eq!(index.body, "<h1>before</h1>");
    assert_eq!(index.content_type, "application/xml");
    assert_eq!(index.cache_control, None);
    assert_eq!(site.object("web/old.css").unwrap().body, "old css");
    assert!(site.object("web/app.js").is_none());
    assert_eq!(site.keys(), ["web/index.html", "web/old.css"]);
    // One invalidation after the upload, one after the rollback.
    assert_eq!(
        decisions(&finished, "CreateInvalidation"),
        [Decision::Allowed, Decision::Allowed]
    );
}

#[tokio::test]
async fn plan_says_what_would_be_uploaded_and_deleted_and_changes_nothing() {
    let site = new_site().await;
    site.put("web/index.html", "<h1>same</h1>");
    site.put("web/stale.txt", "stale");
    let extra = format!(
        "with.distribution = \"{}\"\nwith.delete_removed = true\n",
        site.distribution
    );
    let runbook = TestRunbook::new(&runbook(&extra, ALL_ACTIONS));
    write_files(
        &runbook,
        &[
            ("index.html", "<h1>same</h1>"),
            ("app.css", "a {}"),
            ("app.js", "x()"),
        ],
    );
    let output = plan_with_aws(&runbook.path, &site.moto.url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("~ upload 2 files (1 unchanged) to s3://site/web/"),
        "{said}"
    );
    assert!(
        stdout.contains("~ delete 1 object under s3://site/web/ no longer in ./dist/site"),
        "{said}"
    );
    assert!(
        stdout.contains(&format!("~ invalidate /* on {}", site.distribution)),
        "{said}"
    );
    assert!(
        stdout.contains("· wait until the invalidation is Completed, at most 15m"),
        "{said}"
    );
    assert_eq!(site.keys(), ["web/index.html", "web/stale.txt"]);
    assert_eq!(
        site.object("web/index.html").unwrap().content_type,
        "application/xml"
    );
}

#[tokio::test]
async fn an_upload_outside_the_grant_is_denied_recorded_and_never_sent() {
    let site = new_site().await;
    let runbook = TestRunbook::new(&runbook(
        "",
        r#"["GetBucketVersioning", "ListObjectsV2", "HeadObject"]"#,
    ));
    write_files(&runbook, &[("index.html", "<h1>v1</h1>")]);
    let finished = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, _) = finished.step("site");
    assert_eq!(status, Status::Denied, "{summary}\n{}", finished.log());
    assert!(
        summary.contains("action `PutObject` is not granted"),
        "{summary}"
    );
    assert!(decisions(&finished, "ListObjectsV2").contains(&Decision::Allowed));
    assert_eq!(decisions(&finished, "PutObject"), [Decision::Denied]);
    assert!(site.keys().is_empty());
}

#[tokio::test]
async fn a_bucket_that_keeps_no_versions_is_refused_before_anything_is_uploaded() {
    let site = new_site().await;
    site.moto.create_bucket("plain", false);
    let body = runbook("", ALL_ACTIONS).replace(
        &format!("with.bucket = \"{BUCKET}\""),
        "with.bucket = \"plain\"",
    );
    let runbook = TestRunbook::new(&body);
    write_files(&runbook, &[("index.html", "<h1>v1</h1>")]);
    let finished = run_file(&runtime(), &runbook.path, site.options()).await;
    let (status, summary, _) = finished.step("site");
    assert_eq!(status, Status::Failed, "{summary}");
    assert!(
        summary.contains("bucket `plain` does not keep object versions"),
        "{summary}"
    );
    assert!(finished.aws_calls("PutObject").is_empty());
    assert!(site.keys_of("plain").is_empty());
}

#[test]
fn an_invalidation_path_without_a_leading_slash_is_refused_by_validate() {
    let body = runbook(
        "with.distribution = \"E2QWRUHAPOMQZL\"\nwith.paths = [\"index.html\"]\n",
        ALL_ACTIONS,
    );
    let file = TestRunbook::new(&body);
    std::fs::create_dir_all(file.dir.path().join("dist/site")).unwrap();
    let output = crate::support::runbook_cli(&["validate", file.path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("`index.html` does not start with `/`"),
        "{said}"
    );
}
