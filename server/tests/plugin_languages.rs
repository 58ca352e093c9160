//! A plugin in each language, the way a team makes one: `plugin new`, its
//! unit test, `plugin build` (which installs the toolchain it needs),
//! `plugin test`, then the component in a server's chain, where it drops
//! `test_event` events and keeps the rest.

mod common;

use std::path::Path;
use std::process::Command;

use bilten_analytics::plugins::PluginConfig;
use common::TestServer;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_bilten-analytics");

/// Runs a command that must succeed; what it printed.
fn run(cmd: &mut Command) -> String {
    let (ok, text) = common::process::run(cmd);
    assert!(ok, "{cmd:?} failed:\n{text}");
    text
}

async fn new_build_test_serve(lang: &str, unit_test: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let name = format!("drop-tests-{lang}");
    let plugin = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("plugin")
            .args(args)
            .current_dir(work.path())
            // Rust plugins share one build directory across runs.
            .env(
                "CARGO_TARGET_DIR",
                common::install::scratch("plugin-projects-target"),
            );
        c
    };
    let out = run(&mut plugin(&["new", &name, "--lang", lang]));
    assert!(out.contains(&format!("created ./{name}")), "{out}");
    let dir = work.path().join(&name);
    assert!(
        std::fs::read_to_string(dir.join("README.md"))
            .unwrap()
            .contains("plugin build")
    );
    // The project's own unit test passes as generated.
    run(Command::new(unit_test[0])
        .args(&unit_test[1..])
        .current_dir(&dir)
        .env(
            "CARGO_TARGET_DIR",
            common::install::scratch("plugin-projects-target"),
        ));

    let out = run(&mut plugin(&["build", &name]));
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(out.contains(&format!("built {}", wasm.display())), "{out}");

    let events = work.path().join("events.json");
    std::fs::write(
        &events,
        r#"[{"event_type": "test_event", "organizer_id": "org-1"},
            {"event_type": "purchase", "organizer_id": "org-1"},
            {"table": "page_views", "organizer_id": "org-1", "url": "https://x.example/"}]"#,
    )
    .unwrap();
    let out = run(&mut plugin(&[
        "test",
        wasm.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]));
    assert!(out.contains(&format!("plugin {name} 0.1.0")), "{out}");
    assert!(out.contains("0 events        test_event: drop"), "{out}");
    assert!(out.contains("1 events        purchase: keep"), "{out}");
    assert!(
        out.contains("2 page_views    https://x.example/: keep"),
        "{out}"
    );
    let out = run(&mut plugin(&["check", wasm.to_str().unwrap()]));
    assert!(
        out.contains("contract: bilten:plugin/validator@1.0.0"),
        "{out}"
    );

    in_a_server(&name, &wasm).await;
    contained(lang, &dir, &name, &wasm, &plugin).await;
}

/// What misbehaves when an event of type `boom` comes, as its config's
/// `mode` says: `loop`, `alloc` (without end) or `throw`.
fn hostile_source(lang: &str, name: &str) -> (&'static str, String) {
    match lang {
        "js" => (
            "plugin.js",
            format!(
                r#"import {{ keep }} from './bilten-plugin.js'
export const name = '{name}'
export const version = '0.1.0'
let mode = 'keep'
export function init(config) {{ mode = config.mode ?? 'keep' }}
export function check(event) {{
  if (event.event_type === 'boom') {{
    if (mode === 'loop') for (;;) {{}}
    if (mode === 'alloc') {{ const hog = []; for (;;) hog.push(new Array(1 << 20).fill(7)) }}
    if (mode === 'throw') throw new Error('hostile plugin threw')
  }}
  return keep()
}}
"#
            ),
        ),
        "python" => (
            "plugin.py",
            format!(
                r#"from bilten_plugin import keep
NAME = "{name}"
VERSION = "0.1.0"
mode = "keep"
def init(config):
    global mode
    mode = config.get("mode", "keep")
def check(event, config):
    if event.event_type == "boom":
        if mode == "loop":
            while True:
                pass
        if mode == "alloc":
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        if mode == "throw":
            raise RuntimeError("hostile plugin raised")
    return keep()
"#
            ),
        ),
        _ => (
            "src/lib.rs",
            r#"use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};
struct Hostile { mode: String }
impl Plugin for Hostile {
    fn new(config: Config) -> Result<Self, String> {
        Ok(Hostile { mode: config.str_or("mode", "keep")?.to_string() })
    }
    fn check(&self, event: &EventRef<'_>) -> Result<Verdict, Error> {
        if event.event_type == "boom" {
            match self.mode.as_str() {
                "loop" => loop { std::hint::black_box(0); },
                "alloc" => {
                    let mut hog: Vec<Vec<u8>> = Vec::new();
                    loop { hog.push(vec![7u8; 1 << 20]); std::hint::black_box(&hog); }
                }
                "throw" => panic!("hostile plugin panicked"),
                _ => {}
            }
        }
        Ok(Verdict::Keep)
    }
}
export_plugin!(Hostile);
"#
            .to_string(),
        ),
    }
}

/// The language's runtime is contained as a Rust plugin is: a loop is a
/// timeout, endless allocation hits the memory cap, a throw is a trap; in a
/// server the breaker disables it, and a hot reload of a good build puts it
/// back.
async fn contained(
    lang: &str,
    dir: &Path,
    name: &str,
    wasm: &Path,
    plugin: &dyn Fn(&[&str]) -> Command,
) {
    let work = dir.parent().unwrap();
    let good = work.join("good.wasm");
    std::fs::copy(wasm, &good).unwrap();
    let (file, source) = hostile_source(lang, name);
    std::fs::write(dir.join(file), source).unwrap();
    run(&mut plugin(&["build", name]));
    let hostile = work.join("hostile.wasm");
    std::fs::copy(wasm, &hostile).unwrap();
    let boom = work.join("boom.json");
    std::fs::write(
        &boom,
        r#"[{"event_type": "boom", "organizer_id": "org-1"}]"#,
    )
    .unwrap();
    // Allocation gets time enough that the memory cap, not the clock, stops
    // it, however loaded the machine (an interpreter's collector is slow).
    for (mode, fault, timeout) in [
        ("loop", "FAULT: timeout", "300ms"),
        ("alloc", "FAULT: memory", "20s"),
        ("throw", "FAULT: trap", "300ms"),
    ] {
        let config = work.join(format!("{mode}.toml"));
        std::fs::write(&config, format!("mode = \"{mode}\"\n")).unwrap();
        let (code, text) = common::process::run_code(&mut plugin(&[
            "test",
            hostile.to_str().unwrap(),
            "--events",
            boom.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            timeout,
            "--memory-mb",
            "64",
            "--rounds",
            "0",
        ]));
        assert_eq!(code, Some(1), "{lang} {mode}: {text}");
        assert!(text.contains(fault), "{lang} {mode}: {text}");
    }

    // In a server: fail_open, so the events are kept; three faults disable it.
    let served = work.join("served.wasm");
    std::fs::copy(&hostile, &served).unwrap();
    let entry: PluginConfig = serde_json::from_value(json!({
        "name": name, "path": served, "config": {"mode": "throw"}, "failure_policy": "fail_open"
    }))
    .unwrap();
    let s = TestServer::start(move |c| {
        c.plugin_host.breaker_faults = 3;
        c.plugins = vec![entry];
    })
    .await;
    for _ in 0..3 {
        let (status, body) = s
            .post_json(
                "/v1/events",
                &json!([{"event_type": "boom", "organizer_id": "org-1"}]),
            )
            .await;
        assert_eq!(
            (status, body["accepted"].clone()),
            (202, json!(1)),
            "{body}"
        );
    }
    let state = |plugins: serde_json::Value| plugins["plugins"][0]["state"].clone();
    assert_eq!(state(s.admin_get("/admin/plugins").await.1), "disabled");
    // A good build renamed over it, and a reload: back in service, judging.
    let staged = work.join("staged.wasm");
    std::fs::copy(&good, &staged).unwrap();
    std::fs::rename(&staged, &served).unwrap();
    let (status, body) = common::status_and_body(
        s.post_raw("/admin/plugins/reload", Some(common::ADMIN))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["plugins"][0]["action"].clone()),
        (200, json!("reloaded")),
        "{body}"
    );
    assert_eq!(state(s.admin_get("/admin/plugins").await.1), "active");
    drops_the_test_event(&s).await;
    s.stop().await.unwrap();
}

/// A test event and a purchase: the first dropped (and counted), the second taken.
async fn drops_the_test_event(s: &TestServer) {
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"event_type": "test_event", "organizer_id": "org-1"},
                    {"event_type": "purchase", "organizer_id": "org-1"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    common::assert_accepted_and_dropped(&body, 1, 1);
}

/// The component in a server's chain: the test event is dropped (and
/// counted), its neighbour stored.
async fn in_a_server(name: &str, wasm: &Path) {
    let entry: PluginConfig = serde_json::from_value(json!({"name": name, "path": wasm})).unwrap();
    let s = TestServer::start(move |c| c.plugins = vec![entry]).await;
    drops_the_test_event(&s).await;
    s.flush().await;
    let rows = s
        .query("SELECT event_type FROM bilten_analytics.events")
        .await;
    assert_eq!(rows, [json!({"event_type": "purchase"})]);
    let (_, plugins) = s.admin_get("/admin/plugins").await;
    assert!(plugins.to_string().contains(name), "{plugins}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_javascript_plugin_from_new_to_a_server() {
    new_build_test_serve("js", &["npm", "test", "--silent"]).await;
}

#[tokio::test]
async fn a_python_plugin_from_new_to_a_server() {
    new_build_test_serve(
        "python",
        &[
            "python3", "-m", "unittest", "discover", "-s", "tests", "-t", ".",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_rust_plugin_from_new_to_a_server() {
    new_build_test_serve("rust", &["cargo", "test", "--quiet"]).await;
}
