//! The README's promises under attack, through HTTP into the real engine:
//! an acknowledged event survives any sequence of restarts, `/admin/query`
//! is read-only and bounded, and dangerous admin input is refused with a 4xx
//! before anything changes.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{ADMIN, TestServer};
use serde_json::{Value, json};

fn event(id: &str, org: &str) -> Value {
    json!({"id": id, "event_type": "page_view", "organizer_id": org, "user_id": "u1"})
}

/// A path in a fresh directory: where an attack would write.
fn scratch(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// Posts gzip bytes as a JSON body of events.
async fn post_gzip(s: &TestServer, gz: Vec<u8>) -> reqwest::Response {
    s.client
        .post(format!("{}/v1/events", s.base))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap()
}

/// Posts one event and writes it to storage.
async fn store_one(s: &TestServer) {
    let (status, body) = s
        .post_json("/v1/events", &event(&uuid::Uuid::now_v7().to_string(), "o"))
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
}

async fn ids_stored(s: &TestServer) -> Vec<String> {
    s.query("SELECT toString(id) AS id FROM bilten_analytics.events ORDER BY id")
        .await
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The sequence that lost event B: A posted and flushed, stop; start and
/// stop with no traffic; start, B posted (202, "rows_stored": 2, with its visit), and B
/// was never in `events`: its batch reused A's deduplication token.
#[tokio::test]
async fn an_event_after_an_idle_restart_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let (a, b) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );

    let s = TestServer::start_with(cfg.clone()).await;
    assert_eq!(s.post_json("/v1/events", &event(&a, "org-1")).await.0, 202);
    s.flush().await;
    s.stop().await.unwrap();

    TestServer::start_with(cfg.clone())
        .await
        .stop()
        .await
        .unwrap();

    let s = TestServer::start_with(cfg).await;
    assert_eq!(s.post_json("/v1/events", &event(&b, "org-1")).await.0, 202);
    // The event, and its visit.
    assert_eq!(s.flush().await["rows_stored"], 2);
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids_stored(&s).await, want);
    s.stop().await.unwrap();
}

/// Longer: eight restarts, traffic on some of them, idle on others, the log
/// directory's segments deleted by hand once. Every event is stored once.
#[tokio::test]
async fn every_event_survives_a_long_sequence_of_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let mut want = Vec::new();
    for round in 0..8 {
        let s = TestServer::start_with(cfg.clone()).await;
        if round % 3 != 1 {
            let id = uuid::Uuid::now_v7().to_string();
            assert_eq!(s.post_json("/v1/events", &event(&id, "org-2")).await.0, 202);
            want.push(id);
            s.flush().await;
        }
        s.stop().await.unwrap();
        if round == 4 {
            for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "wal") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }
    let s = TestServer::start_with(cfg).await;
    want.sort();
    assert_eq!(ids_stored(&s).await, want);
    s.stop().await.unwrap();
}

/// Text the classifier cannot parse used to be run statement by statement.
#[tokio::test]
async fn sql_that_does_not_parse_runs_nothing() {
    let s = TestServer::start(|_| {}).await;
    let (_target, file) = scratch("x");
    let (status, body) = s
        .admin_query(&format!(
            "SELECT 1; INSERT INTO FUNCTION file('{}','LineAsString') SELECT 'x'; )",
            file.display()
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Syntax error"),
        "{body}"
    );
    assert!(!file.exists(), "the file was written");

    let (status, body) = s
        .admin_query(&format!(
            "SELECT 1; DROP TABLE {}.audit_log; )",
            common::system_database()
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    let tables = s
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{}' AND name = 'audit_log'",
            common::system_database()
        ))
        .await;
    assert_eq!(tables.len(), 1, "the audit log was dropped");
    s.stop().await.unwrap();
}

/// Parameters are bound as values: quotes, backslashes, tabs and newlines
/// in one come back as sent and end nothing, on either backend.
#[tokio::test]
async fn admin_sql_parameters_are_values_never_sql() {
    let s = TestServer::start(|_| {}).await;
    let hostile = "o' OR 1=1 --\\ \t\n'); DROP TABLE x; --";
    let params = [
        ("v".to_string(), hostile.to_string()),
        ("d".to_string(), "2026-12-01".to_string()),
    ];
    let (status, body) = s
        .admin_query_with(
            "SELECT {v:String} AS v, toUInt32(length({v:String})) AS n, {d:Date} + 1 AS next",
            &params,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["v"], hostile, "{body}");
    assert_eq!(body["data"][0]["n"], hostile.len(), "{body}");
    assert_eq!(body["data"][0]["next"], "2026-12-02", "{body}");
    // A parameter the statement names but the request lacks: a clear 400.
    let (status, body) = s.admin_query_with("SELECT {missing:String}", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("missing"),
        "{body}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_sql_cannot_reach_files_the_network_processes_or_settings() {
    let s = TestServer::start(|_| {}).await;
    let (_target, out) = scratch("out");
    for sql in [
        "SELECT * FROM file('/proc/self/environ','RawBLOB')".to_string(),
        // The `file` function reads a file in read-only mode too.
        "SELECT file('/proc/self/environ')".to_string(),
        "SELECT arrayMap(p -> `file`(p), ['/etc/hostname'])".to_string(),
        "SELECT * FROM url('http://127.0.0.1:9/x','RawBLOB')".to_string(),
        "SELECT * FROM executable('ls','TSV','x String')".to_string(),
        "SELECT * FROM remote('127.0.0.1:9000', system.one)".to_string(),
        "SELECT * FROM s3('http://127.0.0.1:9/bucket/x','CSV')".to_string(),
        "SELECT * FROM input('x UInt8')".to_string(),
        format!("SELECT 1 INTO OUTFILE '{}'", out.display()),
        format!(
            "INSERT INTO FUNCTION file('{}','CSV') SELECT 1",
            out.display()
        ),
        "INSERT INTO bilten_analytics.events (event_type, organizer_id) VALUES ('x','y')".into(),
        format!("DROP TABLE {}.audit_log", common::system_database()),
        "SET readonly = 0".into(),
        "SELECT 1 SETTINGS readonly = 0".into(),
        "SELECT 1 SETTINGS max_execution_time = 100000".into(),
        "SYSTEM STOP MERGES".into(),
        "SELECT 1; SELECT 2".into(),
    ] {
        let (status, body) = s.admin_query(&sql).await;
        assert_eq!(status, 400, "{sql}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains(ADMIN),
            "{sql} leaked the admin token: {text}"
        );
    }
    assert!(!out.exists());
    assert_eq!(s.count("events").await, 0);
    // Reading is what it is for.
    let rows = s
        .query("SELECT name FROM system.tables WHERE database = 'bilten_analytics' AND name = 'events'")
        .await;
    assert_eq!(rows, vec![json!({"name": "events"})]);
    let rows = s.query("SELECT number FROM numbers(3)").await;
    assert_eq!(rows.len(), 3);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_sql_is_bounded_in_time_and_result_size() {
    let s = TestServer::start(|c| {
        c.storage.query_limits.timeout = Duration::from_secs(1);
        c.storage.query_limits.max_result_bytes = 1 << 20;
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = s
        .admin_query("SELECT count() FROM numbers(100000000000)")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("exceeded a limit"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (status, body) = s.admin_query("SELECT * FROM numbers(10000000)").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("exceeded a limit"),
        "{body}"
    );
    // Ingest goes on meanwhile.
    assert_eq!(
        s.post_json("/v1/events", &event(&uuid::Uuid::now_v7().to_string(), "o"))
            .await
            .0,
        202
    );
    s.stop().await.unwrap();
}

/// `delete_after = "100years"` wrapped DateTime, and apply deleted today's events.
#[tokio::test]
async fn a_retention_age_past_2106_is_refused_and_nothing_is_deleted() {
    let s = TestServer::start(|_| {}).await;
    store_one(&s).await;
    let policy = json!({"default": {"cold_after": "30d", "archive_after": "90d", "delete_after": "100years"}});
    let (status, body) = s
        .admin(reqwest::Method::PUT, "/admin/retention", Some(&policy))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("2106"), "{body}");
    let r = s.post_raw("/admin/retention/apply", Some(ADMIN)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.count("events").await, 1);
    s.stop().await.unwrap();
}

/// A restore body marked gzip that is not gzip used to read as empty, and an
/// empty body restores over the live database.
#[tokio::test]
async fn an_unreadable_restore_body_is_refused_and_the_live_database_stays() {
    let s = TestServer::start(|_| {}).await;
    store_one(&s).await;
    let (status, body) = s.admin(reqwest::Method::POST, "/admin/backups", None).await;
    assert_eq!(status, 200, "{body}");
    let id = body["backup"]["id"].as_str().unwrap().to_string();
    let r = s
        .client
        .post(format!("{}/admin/backups/{id}/restore", s.base))
        .bearer_auth(ADMIN)
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(r#"{"database": "elsewhere"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = common::status_and_body(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("could not read"),
        "{body}"
    );
    let set_aside = s
        .query(
            "SELECT name FROM system.databases WHERE name LIKE 'bilten_analytics_before_restore%'",
        )
        .await;
    assert!(
        set_aside.is_empty(),
        "the live database was replaced: {set_aside:?}"
    );
    assert_eq!(s.count("events").await, 1);
    s.stop().await.unwrap();
}

/// Prices passed through f64: 90071992547409.93 was stored as …92.
#[tokio::test]
async fn a_json_number_price_is_stored_to_the_cent() {
    let s = TestServer::start(|_| {}).await;
    let body = br#"{"event_id":"e","organizer_id":"o","quantity":1,"price":90071992547409.93,"currency":"USD"}"#;
    let (status, r) = s
        .post("/v1/ticket-sales", "application/json", body.to_vec())
        .await;
    assert_eq!(status, 202, "{r}");
    s.flush().await;
    let rows = s
        .query("SELECT toString(price) AS p FROM bilten_analytics.ticket_sales")
        .await;
    assert_eq!(rows[0]["p"], "90071992547409.93");
    s.stop().await.unwrap();
}

/// The token is checked before the body is read, and admin bodies are small.
#[tokio::test]
async fn admin_bodies_are_capped_and_read_only_after_the_token() {
    let s = TestServer::start(|_| {}).await;
    let big = vec![b' '; 5 << 20];
    let r = s
        .client
        .post(format!("{}/admin/query", s.base))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(format!("{}/admin/query", s.base))
        .bearer_auth(ADMIN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A gzip bomb: 100 KB that inflates to 100 MB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 100 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    let r = s
        .client
        .post(format!("{}/admin/query", s.base))
        .bearer_auth(ADMIN)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    s.stop().await.unwrap();
}

/// A flood of token-less admin requests is recorded within a budget and
/// counted, and events keep flowing.
#[tokio::test]
async fn a_flood_of_refused_admin_requests_does_not_stall_ingest() {
    let s = TestServer::start(|_| {}).await;
    const FLOOD: usize = 600;
    for _ in 0..FLOOD / 100 {
        let wave: Vec<_> = (0..100)
            .map(|_| {
                let (c, url) = (s.client.clone(), format!("{}/admin/health", s.base));
                tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(s.post_json("/v1/events", &event(&id, "o")).await.0, 202);
        for f in wave {
            assert_eq!(f.await.unwrap().unwrap(), 401);
        }
    }
    s.flush().await;
    assert_eq!(s.count("events").await, (FLOOD / 100) as u64);
    // Written once a second: wait for the writer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows = s
        .query(&format!(
            "SELECT actor, detail FROM {}.audit_log WHERE status = 401 OR status = 0",
            common::system_database()
        ))
        .await;
    let one_by_one = rows.iter().filter(|r| r["actor"] == "no token").count();
    assert!((20..FLOOD).contains(&one_by_one), "{one_by_one} rows");
    let counted: u64 = rows
        .iter()
        .filter(|r| r["actor"] == "refused requests over the recording limit")
        .map(|r| {
            r["detail"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(one_by_one as u64 + counted, FLOOD as u64);
    s.stop().await.unwrap();
}

/// The resend set admits new ids when full, keeping the newest, and
/// an id is a resend only for the same organizer and table.
#[tokio::test]
async fn resends_are_recognised_under_load_beyond_the_cache_size() {
    let s = TestServer::start(|c| c.ingest.dedup_capacity = 1000).await;
    let mut last = Vec::new();
    for round in 0..10 {
        let ids: Vec<String> = (0..500).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let body = Value::Array(ids.iter().map(|id| event(id, "org-a")).collect());
        assert_eq!(
            s.post_json("/v1/events", &body).await.0,
            202,
            "round {round}"
        );
        last = ids;
    }
    let resend = Value::Array(last.iter().map(|id| event(id, "org-a")).collect());
    let (status, r) = s.post_json("/v1/events", &resend).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["duplicates"], 500);
    // The same id from another organizer is another event.
    let (status, r) = s.post_json("/v1/events", &event(&last[0], "org-b")).await;
    assert_eq!((status, r["accepted"].clone()), (202, json!(1)), "{r}");
    s.stop().await.unwrap();
}

/// Random damage to valid bodies, through HTTP into the engine: never a 5xx
/// or a crash, and in NDJSON every undamaged event of a request is stored.
#[tokio::test]
async fn damaged_bodies_never_get_a_5xx_and_valid_neighbours_are_kept() {
    use rand::{Rng, SeedableRng};
    let s = TestServer::start(|_| {}).await;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    let mut kept = Vec::new();
    for round in 0..40 {
        let ids: Vec<String> = (0..10).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let victim = rng.random_range(0..ids.len());
        let mut lines: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| event(id, "o").to_string().into_bytes())
            .collect();
        let line = &mut lines[victim];
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..line.len());
            let byte = match rng.random::<u8>() {
                b'\n' => b' ',
                b => b,
            };
            match rng.random_range(0..4) {
                0 => line[at] = byte,
                1 => line.insert(at, byte),
                2 => {
                    line.remove(at);
                }
                _ => line.truncate(at.max(1)),
            }
        }
        let body = lines.join(&b'\n');
        let (status, r) = s
            .post("/v1/events", "application/x-ndjson", body.clone())
            .await;
        assert!(status < 500, "round {round}: {status} {r}");
        assert!(
            r["accepted"].as_u64().unwrap() >= 9,
            "round {round}: {r} for {}",
            String::from_utf8_lossy(&body)
        );
        kept.extend(
            ids.iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, id)| id.clone()),
        );

        // The same damage anywhere in a JSON array, and in gzip bytes.
        let array = format!("[{}]", String::from_utf8_lossy(&lines.join(&b','))).into_bytes();
        let mut damaged = array.clone();
        let at = rng.random_range(0..damaged.len());
        damaged[at] ^= rng.random_range(1..=255u8);
        let (status, r) = s.post("/v1/page-views", "application/json", damaged).await;
        assert!(status < 500, "round {round}: {status} {r}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&array).unwrap();
        let mut gz = gz.finish().unwrap();
        let at = rng.random_range(0..gz.len());
        gz[at] ^= rng.random_range(1..=255u8);
        let r = post_gzip(&s, gz).await;
        assert!(
            r.status().as_u16() < 500,
            "round {round}: gzip {}",
            r.status()
        );
    }
    s.flush().await;
    let stored = ids_stored(&s).await;
    let stored: std::collections::HashSet<&String> = stored.iter().collect();
    let missing: Vec<&String> = kept.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} undamaged events missing",
        missing.len()
    );
    assert_eq!(s.get_raw("/health").await.status(), 200);
    s.stop().await.unwrap();
}

/// Every event is in these directories: the server's user alone may read them.
#[tokio::test]
async fn data_log_and_backups_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(|_| {}).await;
    assert_eq!(
        s.post_json("/v1/events", &event(&uuid::Uuid::now_v7().to_string(), "o"))
            .await
            .0,
        202
    );
    let r = s.post_raw("/admin/backups", Some(ADMIN)).await;
    assert_eq!(r.status(), 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in ["", "engine", "wal", "cold", "archive", "backups"] {
        let p = s.data_dir.join(dir);
        assert_eq!(mode(&p), 0o700, "{}", p.display());
    }
    for e in std::fs::read_dir(s.data_dir.join("wal")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
    }
    s.stop().await.unwrap();
}

/// 10 KB of gzip that inflates to five million JSON values: refused as too
/// many events while it is read, without building them all in memory.
#[tokio::test]
async fn a_small_gzip_body_of_millions_of_values_costs_no_memory() {
    let s = TestServer::start(|_| {}).await;
    let mut json = b"[".to_vec();
    json.extend(std::iter::repeat_n(b"1,".as_slice(), 5_000_000).flatten());
    json.extend_from_slice(b"1]");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 20_000, "{} bytes of gzip", gz.len());
    drop(json);
    // Warm up the path (allocator arenas, the first request's buffers).
    let (status, _) = s
        .post_json("/v1/events", &event(&uuid::Uuid::now_v7().to_string(), "o"))
        .await;
    assert_eq!(status, 202);
    let before = common::peak_rss_bytes();
    let r = post_gzip(&s, gz).await;
    let (status, body) = common::status_and_body(r).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("too many events"),
        "{body}"
    );
    let grew = common::peak_rss_bytes().saturating_sub(before);
    // The inflated body itself is 10 MB; a value per element would be 160 MB+.
    assert!(grew < 64 << 20, "peak memory grew by {} MiB", grew >> 20);
    s.stop().await.unwrap();
}

/// A request without the token is answered before its body is read: a body
/// that never comes (or is endless) holds nothing.
#[tokio::test]
async fn the_admin_token_is_checked_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|_| {}).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        b"POST /admin/query HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\nSELECT 1",
    )
    .await
    .unwrap();
    let mut reply = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut reply))
        .await
        .expect("no answer while the body was still coming")
        .unwrap();
    let head = String::from_utf8_lossy(&reply[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    s.stop().await.unwrap();
}

/// A config built in code (an embedder's, a test's) meets the rules a
/// loaded one does: an empty admin token would otherwise open nothing, or
/// everything, depending on how it is compared.
#[tokio::test]
async fn a_config_built_in_code_is_checked_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.admin_token = Some(String::new());
    let err = match TestServer::try_start_with(cfg).await {
        Ok(_) => panic!("a server with an empty admin token started"),
        Err(e) => e,
    };
    assert!(
        err.contains("admin_token") && err.contains("empty"),
        "{err}"
    );
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        made.is_empty(),
        "nothing is opened before the config is checked: {made:?}"
    );
}
