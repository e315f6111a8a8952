//! The status page in a real browser: headless Chromium loads `/status`,
//! runs its script against live `/status.json` data, and the test reads the
//! rendered DOM. Needs Chromium (`apt-get install chromium`); `.ci/run`
//! installs it and runs this with `--ignored`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, ADMIN_TOKEN};

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Runs headless Chromium on `url` and returns the DOM after scripts ran
/// (`--virtual-time-budget` lets timers and fetches complete).
async fn dump_dom(url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut command = tokio::process::Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,1000",
        "--virtual-time-budget=8000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    command.arg(url).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium runs (apt-get install chromium, or set CHROMIUM)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text content of the element with `id` (first match), tags stripped.
fn text_of(dom: &str, id: &str) -> String {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else {
        return String::new();
    };
    let after = &dom[start..];
    let open_end = after.find('>').map(|i| i + 1).unwrap_or(0);
    let tag: String = dom[..start]
        .rsplit('<')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let body = &after[open_end..];
    let close = body.find(&format!("</{tag}>")).unwrap_or(body.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in body[..close].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
#[ignore = "needs Chromium; .ci/run installs it and runs this test"]
async fn status_page_renders_live_numbers_in_a_real_browser() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["channel"]});
    for _ in 0..10 {
        app.query_ok(query.clone()).await;
    }
    let url = app.url(&format!("/status#token={ADMIN_TOKEN}"));
    let dom = dump_dom(&url, None).await;

    assert!(dom.contains("data-loaded=\"true\""), "the page rendered data: {dom}");
    for chart in ["hit-rate-chart", "request-rate-chart"] {
        let start = dom
            .find(&format!("id=\"{chart}\""))
            .unwrap_or_else(|| panic!("{chart} missing"));
        let svg = &dom[start..start + dom[start..].find("</svg>").unwrap_or(0)];
        assert!(
            svg.contains("<path") || svg.contains("<polyline"),
            "{chart} has a line: {svg}"
        );
        assert!(!svg.contains("data-points=\"0\""), "{chart} has points: {svg}");
    }
    assert!(
        text_of(&dom, "hit-rate-value").contains("90"),
        "9 hits of 10: {}",
        text_of(&dom, "hit-rate-value")
    );
    assert_eq!(text_of(&dom, "breaker-state").to_lowercase(), "closed");
    assert!(text_of(&dom, "redis-status").to_lowercase().contains("up"));
    assert!(text_of(&dom, "database-status").to_lowercase().contains("up"));
    assert!(text_of(&dom, "listener-status").to_lowercase().contains("up"));
    assert_eq!(text_of(&dom, "l1-entries"), "1");
    let hot = text_of(&dom, "hot-keys");
    assert!(
        hot.contains("revenue by channel") && hot.contains("10"),
        "hot keys: {hot}"
    );
    assert!(!text_of(&dom, "latency-table").is_empty());

    // A screenshot for people; kept where the run can find it.
    let shot = std::env::temp_dir().join("analytics-status-page.png");
    dump_dom(&url, Some(&shot)).await;
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "screenshot written"
    );
}
