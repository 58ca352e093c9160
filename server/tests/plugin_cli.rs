//! `bilten-analytics plugin check` and `plugin test`: a plugin tried before
//! it is loaded, in the server's sandbox and limits, with exit codes a CI
//! job can use (0 fine, 1 a fault or invalid events, 2 refused).

mod common;

use std::path::Path;

use common::process::{cmd, run_code};
use common::wasm::test_plugins;

/// Exit code and everything printed.
fn plugin(args: &[&str], wasm: &Path) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = run_code(
        cmd(dir.path())
            .arg("plugin")
            .arg(args[0])
            .arg(wasm)
            .args(&args[1..]),
    );
    (code.unwrap_or(-1), text)
}

#[test]
fn check_reports_the_contract_and_refuses_what_the_sandbox_does_not_give() {
    let dir = test_plugins();
    let (code, out) = plugin(&["check"], &dir.join("house_rules.wasm"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("contract: bilten:plugin/validator@1.0.0 (this server: 1.0.0)"),
        "{out}"
    );
    assert!(out.contains("plugin: house-rules 0.1.0"), "{out}");
    assert!(out.contains("ok      wasi:cli/stdout"), "{out}");
    // A plugin that reaches for the network may import sockets; they are
    // granted no network, and check says so.
    let (code, out) = plugin(&["check"], &dir.join("hostile.wasm"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok (no network is granted) wasi:sockets/tcp@"),
        "{out}"
    );
    // Built for an interface this server does not have.
    let (code, out) = plugin(&["check"], &dir.join("future_abi.wasm"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("supports only @1.0.0"), "{out}");
    // Not a component at all.
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not wasm").unwrap();
    let (code, out) = plugin(&["check"], junk.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a valid WebAssembly component"), "{out}");
}

#[test]
fn test_prints_each_verdict_with_its_reason_or_changes() {
    let dir = test_plugins();
    let work = tempfile::tempdir().unwrap();
    let events = work.path().join("events.json");
    std::fs::write(
        &events,
        r#"[
          {"event_type": "click", "organizer_id": "test-org"},
          {"table": "ticket_sales", "event_id": "evt-1", "organizer_id": "org-1",
           "quantity": 1, "price": "150.00", "currency": "EUR"},
          {"event_type": "click", "organizer_id": "org-1", "ip": "10.1.2.3"},
          {"table": "page_views", "organizer_id": "org-1", "url": "https://x.example/"}
        ]"#,
    )
    .unwrap();
    let config = work.path().join("house.toml");
    std::fs::write(&config, "test_prefix = \"test-\"\nmax_price = 100\n").unwrap();
    let (code, out) = plugin(
        &[
            "test",
            "--events",
            events.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--rounds",
            "3",
        ],
        &dir.join("house_rules.wasm"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("plugin house-rules 0.1.0"), "{out}");
    assert!(out.contains("0 events        click: drop"), "{out}");
    assert!(
        out.contains("1 ticket_sales  1 × 150.00 EUR: reject price_above_cap (price): price is above the house cap"),
        "{out}"
    );
    assert!(out.contains("2 events        click: modify"), "{out}");
    assert!(
        out.contains(r#"properties: "{}" → "{\"internal\":true}""#),
        "{out}"
    );
    assert!(
        out.contains("3 page_views    https://x.example/: keep"),
        "{out}"
    );
    assert!(out.contains("µs per event; median of 3 more"), "{out}");
}

#[test]
fn a_fault_or_bad_events_fail_the_run() {
    let dir = test_plugins();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("loop.toml");
    std::fs::write(&config, "mode = \"loop\"\n").unwrap();
    let (code, out) = plugin(
        &[
            "test",
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            "50ms",
            "--rounds",
            "0",
        ],
        &dir.join("hostile.wasm"),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAULT: timeout: ran past its time limit of 50ms"),
        "{out}"
    );
    let events = work.path().join("bad.json");
    std::fs::write(&events, r#"[{"event_type": "click"}]"#).unwrap();
    let (code, out) = plugin(
        &["test", "--events", events.to_str().unwrap()],
        &dir.join("keep_all.wasm"),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("event 0 is not valid before any plugin: organizer_id"),
        "{out}"
    );
}

/// Without the language's toolchain, `plugin build` says what to install.
#[test]
fn build_names_the_missing_toolchain() {
    let work = tempfile::tempdir().unwrap();
    for (lang, says) in [
        ("js", "npm is needed to build a JavaScript plugin"),
        ("python", "python3 is needed to build a Python plugin"),
        ("rust", "cargo is needed to build a Rust plugin"),
    ] {
        let name = format!("no-tools-{lang}");
        let out = cmd(work.path())
            .args(["plugin", "new", &name, "--lang", lang])
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = cmd(work.path())
            .args(["plugin", "build", &name])
            .current_dir(work.path())
            .env("PATH", work.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(says), "{lang}: {text}");
    }
}
