//! `runbook report RUN`: the page is self-contained and escapes what
//! plugins wrote, has one timeline bar per step that ran, renders in a real
//! headless browser (Debian `chromium`, whose screenshot is kept under
//! `target/test-artefacts/`), and the Markdown has a timeline row per step.

use crate::support::{TestRunbook, run_id, runbook_cli, text};
use std::path::{Path, PathBuf};

/// A message a plugin may well log: markup, quotes, an ampersand.
const HOSTILE: &str = "<script>alert('x')</script> & <b>bold</b>";

/// Four steps that run (two of them side by side) and one that does not.
fn ran_run() -> (TestRunbook, String, String) {
    let file = TestRunbook::new(&format!(
        r#"[runbook]
name = "report-demo"

[[steps]]
id = "prepare"
uses = "noop"
with.message = "{}"

[[steps]]
id = "left"
needs = ["prepare"]
uses = "noop"

[[steps]]
id = "right"
needs = ["prepare"]
uses = "noop"

[[steps]]
id = "finish"
needs = ["left", "right"]
uses = "noop"
"#,
        HOSTILE.replace('\\', "\\\\").replace('"', "\\\"")
    ));
    let output = runbook_cli(&["exec", file.path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let run = run_id(&output);
    let state = file.dir.path().join(".runbook").display().to_string();
    (file, run, state)
}

const STEPS: [&str; 4] = ["prepare", "left", "right", "finish"];

/// Where test artefacts are kept: `target/test-artefacts/`.
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn html_report(file: &TestRunbook, run: &str, state: &str) -> (PathBuf, String) {
    let page = file.dir.path().join("page.html");
    let output = runbook_cli(&[
        "report",
        run,
        "--html",
        "-o",
        page.to_str().unwrap(),
        "--state-dir",
        state,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let html = std::fs::read_to_string(&page).unwrap();
    (page, html)
}

#[test]
fn the_page_has_a_bar_per_step_escapes_plugin_text_and_fetches_nothing() {
    let (file, run, state) = ran_run();
    let (_, html) = html_report(&file, &run, &state);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert_eq!(
        html.matches("class=\"bar\"").count(),
        STEPS.len(),
        "one bar per step that ran: {html}"
    );
    for step in STEPS {
        assert!(
            html.contains(&format!("class=\"bar\" data-step=\"{step}\"")),
            "no bar for {step}: {html}"
        );
    }
    // The header.
    assert!(html.contains(&run), "{html}");
    assert!(html.contains("report-demo"), "{html}");
    assert!(html.contains("succeeded"), "{html}");
    // What the plugin wrote is text, never markup.
    assert!(
        html.contains(
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
        ),
        "{html}"
    );
    assert!(!html.contains("<b>bold"), "{html}");
    let lower = html.to_lowercase();
    // Self-contained: no script at all, nothing loaded from elsewhere.
    assert!(!lower.contains("<script"), "{html}");
    assert!(!lower.contains("<link"), "{html}");
    assert!(!lower.contains("@import"), "{html}");
    assert!(!lower.contains("src=\"http"), "{html}");
    assert!(!lower.contains("href=\"http"), "{html}");
    assert!(!lower.contains("url(http"), "{html}");
    assert!(lower.contains("<svg"), "the timeline is inline SVG: {html}");
    assert!(lower.contains("<style>"), "the CSS is inline: {html}");
    // The audit verdict.
    assert!(html.contains("data-intact=\"true\""), "{html}");
    assert!(html.contains("chain intact"), "{html}");
}

/// Debian's chromium; the test fails without it (scripts/install-services
/// installs it).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(output) = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && output.status.success()
        {
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!(
        "chromium is not installed, and this test renders the report in it: run scripts/install-services (Debian package `chromium`)"
    );
}

fn headless(profile: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    let output = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1200,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        text(&output)
    );
    output
}

#[test]
fn a_headless_browser_renders_the_page_with_one_bar_per_step() {
    let (file, run, state) = ran_run();
    let (page, html) = html_report(&file, &run, &state);
    let artefacts = artefacts();
    std::fs::write(artefacts.join("report.html"), &html).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let screenshot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    headless(
        profile.path(),
        &[&format!("--screenshot={}", screenshot.display())],
        &page,
    );
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|error| panic!("no screenshot at {}: {error}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 1000 && height >= 1000, "{width}x{height}");
    // A blank page compresses to almost nothing; this one has bars, text
    // and tables.
    assert!(png.len() > 10_000, "the screenshot is {} bytes", png.len());
    let dom = headless(profile.path(), &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("class=\"bar\"").count(),
        STEPS.len(),
        "the rendered DOM has one bar per step: {dom}"
    );
    for step in STEPS {
        assert!(dom.contains(&format!("data-step=\"{step}\"")), "{dom}");
    }
    // The plugin's markup stayed text in the browser's DOM.
    assert!(!dom.to_lowercase().contains("<script"), "{dom}");
    assert!(!dom.contains("<b>bold"), "{dom}");
    assert!(dom.contains("&lt;script&gt;"), "{dom}");
}

#[test]
fn the_markdown_has_a_timeline_row_per_step() {
    let (_file, run, state) = ran_run();
    let output = runbook_cli(&["report", &run, "--markdown", "--state-dir", &state]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let markdown = String::from_utf8_lossy(&output.stdout).into_owned();
    let timeline: Vec<&str> = markdown
        .split("## Timeline")
        .nth(1)
        .unwrap_or_else(|| panic!("no timeline: {markdown}"))
        .lines()
        .skip_while(|line| !line.starts_with("| step |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert_eq!(timeline.len(), STEPS.len(), "{markdown}");
    for step in STEPS {
        assert!(
            timeline
                .iter()
                .any(|row| row.starts_with(&format!("| {step} | noop | succeeded | +"))),
            "no row for {step}: {markdown}"
        );
    }
    // Plugin text is literal inside fenced blocks; everywhere else it is
    // escaped, so a Markdown viewer renders no markup of a plugin's.
    let outside_fences: String = markdown
        .split("```")
        .step_by(2)
        .collect::<Vec<_>>()
        .join("");
    assert!(!outside_fences.contains("<script"), "{markdown}");
    assert!(markdown.contains("chain intact"), "{markdown}");
}

#[test]
fn a_run_that_is_not_there_is_an_error() {
    let state = tempfile::tempdir().unwrap();
    let output = runbook_cli(&[
        "report",
        "20000101-000000-000000",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert_ne!(output.status.code(), Some(0), "{}", text(&output));
}
