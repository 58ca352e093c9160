//! The binary as an operator runs it: `migrate`, `serve` stopped by SIGTERM,
//! and `loadgen` against it.

mod common;

use serde_json::{Value, json};

use common::process::{cmd, run, serve};

/// `bilten-analytics loadgen --quiet` against `base`, with or without the
/// admin token (the final flush); its JSON summary from stdout.
fn loadgen(base: &str, args: &[&str], admin_token: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cmd(dir.path());
    if !admin_token {
        c.env_remove("BILTEN_ADMIN_TOKEN");
    }
    let out = c
        .args(["loadgen", "--quiet", "--target", base])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
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
    let all = bilten_analytics::ops::migrations::MIGRATIONS.len();
    assert!(
        out.contains(&format!("{all} migration(s) applied")),
        "{out}"
    );

    let (ok, out) = run(cmd(dir.path()).args(["migrate", "--status"]));
    assert!(ok, "{out}");
    assert_eq!(out.matches("applied ").count(), all, "{out}");
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
    assert!(out.contains("batch.max_rows: must be at least 1"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test]
async fn loadgen_then_sigterm_drains_and_a_restart_sees_every_row() {
    let dir = tempfile::tempdir().unwrap();
    // Rows stay buffered (an hour's max_age) until SIGTERM drains them.
    let mut server = serve(
        dir.path(),
        &[
            ("BILTEN_BATCH__MAX_AGE", "1h"),
            ("BILTEN_BATCH__MAX_ROWS", "100000"),
        ],
    );
    // No admin token: loadgen's final flush would store the rows itself.
    let summary = loadgen(
        &server.base,
        &[
            "--total",
            "700",
            "--seed",
            "3",
            "--batch",
            "50",
            "--concurrency",
            "2",
        ],
        false,
    );
    assert_eq!(
        (
            &summary["sent"],
            &summary["accepted"],
            &summary["rejected"],
            &summary["failed_requests"]
        ),
        (&json!(700), &json!(700), &json!(0), &json!(0)),
        "{summary}"
    );
    let (p50, p99) = (
        summary["latency_ms_p50"].as_f64().unwrap(),
        summary["latency_ms_p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{summary}");
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    assert!(
        server.logged("buffers drained"),
        "{:?}",
        server.log.lock().unwrap()
    );

    // Everything was stored before exit: the restart has nothing to replay.
    let mut server = serve(dir.path(), &[]);
    let body = server
        .query("SELECT (SELECT count() FROM bilten_analytics.events) + (SELECT count() FROM bilten_analytics.page_views) + (SELECT count() FROM bilten_analytics.ticket_sales) AS n")
        .await;
    assert_eq!(body["data"][0]["n"], 700, "{body}");
    assert!(!server.logged("write-ahead log replay"));
    assert!(server.terminate().success());
}

/// With the admin token, loadgen ends with a flush and reports the server's
/// own CPU per stored event, read from its `/metrics`.
#[tokio::test]
async fn loadgen_reports_the_servers_cpu_per_stored_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[("BILTEN_BATCH__MAX_AGE", "1h")]);
    // History for dashboards: timestamps over the last three days.
    let summary = loadgen(
        &server.base,
        &[
            "--total",
            "1500",
            "--seed",
            "5",
            "--batch",
            "100",
            "--concurrency",
            "2",
            "--spread",
            "3days",
        ],
        true,
    );
    assert_eq!(summary["accepted"], 1500, "{summary}");
    assert_eq!(summary["server_events_stored"], 1500, "{summary}");
    let cpu = summary["server_cpu_seconds"].as_f64().unwrap();
    assert!(cpu > 0.0, "{summary}");
    let per_event = summary["server_cpu_us_per_event"].as_f64().unwrap();
    assert!(
        (per_event - cpu * 1e6 / 1500.0).abs() < 1e-6 && per_event < 1e6,
        "{summary}"
    );
    let body = server
        .query("SELECT dateDiff('hour', min(timestamp), max(timestamp)) AS hours, countIf(timestamp > now() + INTERVAL 1 MINUTE) AS future FROM bilten_analytics.events")
        .await;
    let hours = body["data"][0]["hours"].as_u64().unwrap();
    assert!((48..=72).contains(&hours), "spread over 3 days: {body}");
    assert_eq!(body["data"][0]["future"], 0, "{body}");
    assert!(server.terminate().success());
}

/// `geo update` puts the country database beside the data, where the next
/// start reads it instead of the build's; a version that cannot be fetched
/// fails with npm's reason and leaves the database as it was.
#[test]
fn geo_update_fetches_the_country_database_for_the_next_start() {
    use bilten_analytics::config::GeoSettings;
    use bilten_analytics::geo::{Countries, updated_path};
    let dir = tempfile::tempdir().unwrap();
    let version = env!("BILTEN_GEO_VERSION");
    let (ok, out) = run(cmd(dir.path()).args(["geo", "update", "--version", version]));
    assert!(ok, "{out}");
    let db = updated_path(dir.path());
    assert!(out.contains(&db.display().to_string()), "{out}");
    let next_start = Countries::from_settings(&GeoSettings::default(), dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(next_start.path(), db);
    assert_eq!(next_start.country("8.8.8.8").as_deref(), Some("US"));

    let before = std::fs::read(&db).unwrap();
    let (ok, out) = run(cmd(dir.path()).args(["geo", "update", "--version", "0.0.0-no-such"]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("npm pack") && !out.contains("panicked"),
        "{out}"
    );
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the database is unchanged"
    );
    let leftovers: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("country.mmdb")]);
}
