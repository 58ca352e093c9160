//! The JavaScript package `@bilten/analytics` (clients/js): built from a
//! clean copy with its pinned toolchain, its own node tests run against a
//! real server, and the tracker the server serves is its current build.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::install::{once, output, run, scratch};
use common::{ADMIN, TestServer};

const KEY: &str = "js-client-test-key";

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// The package copied (without node_modules or dist), its locked
/// dependencies installed, and built: once per version of its sources.
fn built() -> PathBuf {
    let mut files = Vec::new();
    hash_sources(&source(), &mut files);
    let dir = scratch(&format!("js-package-{:08x}", crc32fast::hash(&files)));
    once(&dir, |dir| {
        copy(&source(), dir);
        run(Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(dir));
        run(Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(dir));
    });
    dir
}

/// Every source file's path and bytes, in a stable order.
fn hash_sources(dir: &Path, out: &mut Vec<u8>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("node_modules") && !p.ends_with("dist"))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_sources(&path, out);
        } else {
            out.extend(path.to_string_lossy().as_bytes());
            out.extend(std::fs::read(&path).unwrap());
        }
    }
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", "dist"].contains(&name.to_str().unwrap()) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The package's node tests (node's own runner): the seed's example
/// verbatim, batching, rejections, resends, a wrong key, the CommonJS build,
/// and retries against a stand-in. Every test must run: none skipped.
#[tokio::test]
async fn the_js_package_tests_pass_against_a_real_server() {
    let dir = built();
    let s = TestServer::start(|c| c.ingest_keys = vec![KEY.into()]).await;
    let mut npm = Command::new("npm");
    npm.args(["test", "--silent"])
        .current_dir(&dir)
        .env("BILTEN_ANALYTICS_URL", &s.base)
        .env("BILTEN_INGEST_KEY", KEY)
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
    assert!(passed >= 13, "{text}");
    s.stop().await.unwrap();
}

/// `/v1/tracker.js` is the package's current build: rebuilt here from the
/// sources with the locked toolchain, byte for byte. Small: under 3 KB gzipped.
#[tokio::test]
async fn the_served_tracker_is_the_current_build() {
    let dir = built();
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
