//! The JavaScript package `@bilten/analytics` (clients/js): built from a
//! clean copy with its pinned toolchain, its own node tests run against a
//! real server, and the tracker the server serves is its current build.

mod common;

use std::process::Command;

use common::install::{js_package, output};
use common::{ADMIN, TestServer};

const KEY: &str = "js-client-test-key";
const READ_KEY: &str = "js-client-read-key-org-stats";

/// The package's node tests (node's own runner): the seed's example
/// verbatim, batching, rejections, resends, a wrong key, the CommonJS build,
/// and retries against a stand-in. Every test must run: none skipped.
#[tokio::test]
async fn the_js_package_tests_pass_against_a_real_server() {
    let dir = js_package();
    let s = TestServer::start(|c| {
        c.ingest_keys = vec![KEY.into()];
        c.read_keys = vec![format!("{READ_KEY}@org-stats").into()];
    })
    .await;
    let mut npm = Command::new("npm");
    npm.args(["test", "--silent"])
        .current_dir(&dir)
        .env("BILTEN_ANALYTICS_URL", &s.base)
        .env("BILTEN_INGEST_KEY", KEY)
        .env("BILTEN_READ_KEY", READ_KEY)
        .env("BILTEN_ADMIN_TOKEN", ADMIN);
    let ran = output(npm).await;
    let text = ran.text;
    assert!(ran.ok, "{text}");
    assert!(text.contains("# fail 0"), "{text}");
    assert!(text.contains("# skipped 0"), "{text}");
    let passed: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(passed >= 14, "{text}");
    s.stop().await.unwrap();
}

/// `/v1/tracker.js` is the package's current build: rebuilt here from the
/// sources with the locked toolchain, byte for byte. Small: under 3 KB gzipped.
#[tokio::test]
async fn the_served_tracker_is_the_current_build() {
    let dir = js_package();
    let fresh = std::fs::read_to_string(dir.join("dist/tracker.min.js")).unwrap();
    assert!(
        fresh == bilten_analytics::routes::ingest::TRACKER_JS,
        "clients/js/dist/tracker.min.js is stale: run `npm run build` in clients/js and commit it"
    );
    let s = TestServer::start(|_| {}).await;
    // Undecoded: the test client would inflate the body and drop the header.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = client
        .get(format!("{}/v1/tracker.js", s.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let gzipped = r.bytes().await.unwrap();
    assert!(gzipped.len() < 3 * 1024, "{} bytes gzipped", gzipped.len());
    s.stop().await.unwrap();
}
