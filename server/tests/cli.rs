//! The binary as an operator runs it: `migrate`, `serve` stopped by SIGTERM,
//! and `loadgen` against it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bilten-analytics");

fn cmd(data: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("BILTEN_DATA_DIR", data)
        .env("BILTEN_ADMIN_TOKEN", "cli-token")
        .env("RUST_LOG", "info");
    c
}

fn run(c: &mut Command) -> (bool, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Starts `serve` on port 0 and returns the child and its address, read from the log.
fn serve(data: &std::path::Path, extra: &[(&str, &str)]) -> (Child, String) {
    let mut c = cmd(data);
    c.args(["serve", "--listen", "127.0.0.1:0"])
        .envs(extra.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = c.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("addr=") {
                let addr: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(
                    addr.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != ':')
                        .to_string(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not log its address");
    (child, format!("http://{addr}"))
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("server did not stop within 30 s of SIGTERM");
}

#[test]
fn migrate_dry_run_status_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(cmd(dir.path()).args(["migrate", "--dry-run"]));
    assert!(ok, "{out}");
    assert!(out.contains("pending  0001_events.sql"), "{out}");
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS bilten_analytics.events"),
        "{out}"
    );

    let (ok, out) = run(cmd(dir.path()).args(["migrate"]));
    assert!(ok, "{out}");
    assert!(out.contains("10 migration(s) applied"), "{out}");

    let (ok, out) = run(cmd(dir.path()).args(["migrate", "--status"]));
    assert!(ok, "{out}");
    assert_eq!(out.matches("applied ").count(), 10, "{out}");
    assert!(!out.contains("pending"), "{out}");

    let (ok, out) = run(cmd(dir.path()).args(["migrate"]));
    assert!(ok && out.contains("0 migration(s) applied"), "{out}");
}

#[test]
fn a_bad_config_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[batch]\nmax_rows = 0\n").unwrap();
    let (ok, out) = run(cmd(dir.path()).args(["serve", "--config", file.to_str().unwrap()]));
    assert!(!ok);
    assert!(out.contains("batch.max_rows must be at least 1"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test]
async fn loadgen_then_sigterm_drains_and_a_restart_sees_every_row() {
    let dir = tempfile::tempdir().unwrap();
    // Rows stay buffered (an hour's max_age) until SIGTERM drains them.
    let (mut child, base) = serve(
        dir.path(),
        &[
            ("BILTEN_BATCH__MAX_AGE", "1h"),
            ("BILTEN_BATCH__MAX_ROWS", "100000"),
        ],
    );
    let summary = bilten_analytics::loadgen::run(bilten_analytics::loadgen::Args {
        target: base.clone(),
        rate: 10.0,
        duration: Duration::from_secs(1),
        total: Some(700),
        seed: 3,
        batch: Some(50),
        concurrency: 2,
        api_key: None,
        quiet: true,
    })
    .await
    .unwrap();
    assert_eq!(
        (
            summary.sent,
            summary.accepted,
            summary.rejected,
            summary.failed_requests
        ),
        (700, 700, 0, 0)
    );
    assert!(summary.latency_ms_p50 > 0.0 && summary.latency_ms_p99 >= summary.latency_ms_p50);
    let status = terminate(&mut child);
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let (mut child, base) = serve(dir.path(), &[]);
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{base}/admin/query"))
        .bearer_auth("cli-token")
        .body("SELECT (SELECT count() FROM bilten_analytics.events) + (SELECT count() FROM bilten_analytics.page_views) + (SELECT count() FROM bilten_analytics.ticket_sales) AS n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["n"], 700, "{body}");
    assert!(terminate(&mut child).success());
}
