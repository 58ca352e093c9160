//! No acknowledged event is lost or doubled: crashes, storage outages, torn
//! logs, a full log, shutdown with storage down. Faults come from the `fail`
//! crate's failpoints, compiled in only with `--features failpoints` (the
//! test script turns it on).
#![cfg(feature = "failpoints")]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::serve;
use common::{TestServer, as_u64};
use serde_json::{Value, json};

/// A request of `n` events, each with its own id, as a client would build it.
/// A phone's and a desktop's: visits' devices are read from them.
const AGENTS: [&str; 2] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
];

fn request(n: usize, tag: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "event_type": "purchase", "event_id": "evt-1", "organizer_id": format!("org-{}", tag % 3), "user_id": format!("u{tag}-{i}"), "user_agent": AGENTS[i % 2]}))
        .collect();
    (ids, Value::Array(events))
}

/// Counts that must agree: rows, distinct ids, and the daily view's sum.
async fn tallies(query: impl AsyncFn(&str) -> Value) -> (u64, u64, u64) {
    let v = query(
        "SELECT (SELECT count() FROM bilten_analytics.events) AS rows, \
                (SELECT uniqExact(id) FROM bilten_analytics.events) AS ids, \
                (SELECT sum(events) FROM bilten_analytics.organizer_daily_metrics_mv) AS in_view",
    )
    .await;
    let row = &v["data"][0];
    (
        as_u64(&row["rows"]),
        as_u64(&row["ids"]),
        as_u64(&row["in_view"]),
    )
}

/// Sends requests from 4 workers until `stop` is set; records which were
/// acknowledged (202) and which were not.
async fn load(
    base: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Value>, Vec<Value>, usize) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let unacked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (base, stop, acked, unacked) =
            (base.clone(), stop.clone(), acked.clone(), unacked.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
                let (_, body) = request(20, w * 10_000 + n);
                let r = client
                    .post(format!("{base}/v1/events"))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => acked.lock().unwrap().push(body),
                    _ => unacked.lock().unwrap().push(body),
                }
                n += 1;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let unacked = std::mem::take(&mut *unacked.lock().unwrap());
    let sent = (acked.len() + unacked.len()) * 20;
    (acked, unacked, sent)
}

/// What a client does with requests that were not acknowledged: sends
/// them again, same ids.
async fn resend(server: &common::process::Server, unacked: &[Value]) {
    let client = reqwest::Client::new();
    for body in unacked {
        let r = client
            .post(format!("{}/v1/events", server.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status() == 202 || r.status() == 200, "{}", r.status());
    }
}

async fn crash_and_recover(
    extra: &[(&str, &str)],
    crash: impl FnOnce(&mut common::process::Server) -> bool,
) {
    crash_and_recover_on(&[], extra, crash).await
}

/// `backend`: the environment of both runs (the crash's and the restart's).
async fn crash_and_recover_on(
    backend: &[(&str, &str)],
    extra: &[(&str, &str)],
    crash: impl FnOnce(&mut common::process::Server) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    // Small batches, not paced: many inserts to crash between.
    let mut env = vec![
        ("BILTEN_BATCH__MAX_ROWS", "100"),
        ("BILTEN_BATCH__MIN_INTERVAL", "0s"),
    ];
    env.extend_from_slice(backend);
    env.extend_from_slice(extra);
    let mut server = serve(dir.path(), &env);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = tokio::spawn(load(server.base.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let crashed_on_its_own = crash(&mut server);
    // A failpoint aborts on its nth insert: on a busy machine the load may
    // take longer than the wait above to reach it, so it goes on until then.
    if crashed_on_its_own {
        for _ in 0..200 {
            if server.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, unacked, sent) = loader.await.unwrap();
    assert!(
        acked.len() > 10,
        "load too small to mean anything: {} acknowledged",
        acked.len()
    );
    if crashed_on_its_own {
        assert!(
            server.child.try_wait().unwrap().is_some(),
            "the failpoint should have aborted the server"
        );
    }
    drop(server);

    // The restart replays the log. A client retries what was not
    // acknowledged, with the same ids, as any at-least-once client does.
    let restarted = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f");
    let server = serve(dir.path(), backend);
    resend(&server, &unacked).await;
    server.flush().await;
    let acked_ids: HashSet<&str> = acked
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let (rows, ids, in_view) = tallies(async |sql| server.query(sql).await).await;
    assert_eq!(rows, ids, "no event stored twice");
    assert_eq!(
        rows as usize,
        sent,
        "every event sent is stored: {} acknowledged before the crash",
        acked_ids.len()
    );
    assert_eq!(in_view, rows, "the daily view agrees with the table");
    // Every acknowledged id is among them.
    let sample: Vec<&&str> = acked_ids.iter().take(200).collect();
    let list = sample
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let found = server
        .query(&format!(
            "SELECT count() AS n FROM bilten_analytics.events WHERE id IN ({list})"
        ))
        .await;
    assert_eq!(as_u64(&found["data"][0]["n"]), sample.len() as u64);
    // The visits' figures, in memory only at the crash, are written again
    // from the stored rows once the restart has replayed the log; and every
    // visit of the crashed run (one with a row received before the restart)
    // is closed, so that the exit pages' rollup counts its visitor.
    let mut last = Value::Null;
    for _ in 0..60 {
        server.flush().await;
        last = server
            .query(&format!(
                "SELECT (SELECT count() FROM bilten_analytics.events \
                         WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000')) AS rows, \
                        (SELECT sum(sign * events) FROM bilten_analytics.visits) AS counted, \
                        (SELECT count() FROM (SELECT visit_id, sum(sign) AS n, sum(sign * events) AS e \
                           FROM bilten_analytics.visits GROUP BY visit_id) AS v \
                         FULL OUTER JOIN (SELECT visit_id, count() AS c FROM bilten_analytics.events \
                           WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000') \
                           GROUP BY visit_id) AS r ON r.visit_id = v.visit_id \
                         WHERE v.n != 1 OR v.e != r.c) AS wrong, \
                        (SELECT count() FROM bilten_analytics.visits FINAL \
                         WHERE sign = 1 AND closed = 0 AND visit_id IN \
                           (SELECT visit_id FROM bilten_analytics.events \
                            WHERE received_at < toDateTime64('{restarted}', 3, 'UTC'))) AS open",
            ))
            .await;
        let row = &last["data"][0];
        if as_u64(&row["wrong"]) == 0
            && as_u64(&row["rows"]) == as_u64(&row["counted"])
            && as_u64(&row["open"]) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let row = &last["data"][0];
    assert_eq!(
        as_u64(&row["rows"]),
        rows,
        "every event has a visit: {last}"
    );
    assert_eq!(
        (as_u64(&row["counted"]), as_u64(&row["wrong"])),
        (rows, 0),
        "each visit counts its events once: {last}"
    );
    assert_eq!(
        as_u64(&row["open"]),
        0,
        "the crashed run's visits are closed: {last}"
    );
    // The rollup by device nets to what the visits say, recovery's rows
    // and their cancels included.
    let facets = server
        .query(
            "SELECT count() AS wrong FROM \
               (SELECT value, sum(visits) AS n FROM bilten_analytics.visit_facets_daily \
                WHERE facet = 'device' GROUP BY value) AS f \
             FULL OUTER JOIN \
               (SELECT toString(device) AS value, sum(sign) AS n FROM bilten_analytics.visits \
                GROUP BY value) AS v ON f.value = v.value \
             WHERE f.n != v.n",
        )
        .await;
    assert_eq!(as_u64(&facets["data"][0]["wrong"]), 0, "{facets}");
    // So do events by name, summed from the visits' lines: every stored
    // event once.
    let names = server
        .query(
            "SELECT count() AS wrong, sum(r.n) AS stored FROM \
               (SELECT value, sum(events) AS n FROM bilten_analytics.pages_daily \
                WHERE kind = 'name' AND value != 'pageview' GROUP BY value) AS p \
             FULL OUTER JOIN \
               (SELECT event_type AS value, count() AS n FROM bilten_analytics.events \
                WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000') \
                GROUP BY value) AS r ON p.value = r.value \
             WHERE p.n != r.n",
        )
        .await;
    assert_eq!(as_u64(&names["data"][0]["wrong"]), 0, "{names}");
}

/// A visit written, then silent, when the server is killed: its figures
/// agree with its rows, but it was never closed. A later start closes it,
/// so that the exit pages' rollup counts its visitor, under its last page:
/// even after a clean run between with visits off, which recovers nothing
/// and so leaves the recovery to the start after it.
#[tokio::test]
async fn a_visit_open_at_a_kill_9_is_closed_by_a_later_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
    let client = reqwest::Client::new();
    for path in ["/a", "/b"] {
        let r = client
            .post(format!("{}/v1/page-views", server.base))
            .json(&json!([{"organizer_id": "org-k", "session_id": "tab",
                           "url": format!("https://t.example{path}")}]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        server.flush().await;
    }
    let open = "SELECT exit_page, closed FROM bilten_analytics.visits FINAL \
                WHERE organizer_id = 'org-k' AND sign = 1";
    assert_eq!(
        server.query(open).await["data"],
        json!([{"exit_page": "/b", "closed": 0}])
    );
    server.kill9();
    let mut off = serve(dir.path(), &[("BILTEN_VISITS__ENABLED", "false")]);
    off.flush().await;
    assert_eq!(
        off.query(open).await["data"],
        json!([{"exit_page": "/b", "closed": 0}])
    );
    assert!(off.terminate().success());
    let server = serve(dir.path(), &[]);
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = server.query(open).await["data"].clone();
        if seen[0]["closed"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, json!([{"exit_page": "/b", "closed": 1}]));
    // The rollup's rows are committed after the table's, a moment later.
    let mut exits = Value::Null;
    for _ in 0..50 {
        exits = server
            .query(
                "SELECT value, uniqCombinedMerge(12)(visitors) AS visitors, sum(visits) AS n \
                 FROM bilten_analytics.visit_facets_daily \
                 WHERE organizer_id = 'org-k' AND facet = 'exit_closed' GROUP BY value ORDER BY value",
            )
            .await["data"]
            .clone();
        if exits != json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(exits, json!([{"value": "/b", "visitors": 1, "n": 0}]));
}

#[tokio::test]
async fn kill_9_under_load_loses_and_doubles_nothing() {
    crash_and_recover(&[], |server| {
        server.kill9();
        false
    })
    .await;
}

/// The same on the `clickhouse` backend, through another server's ClickHouse
/// interface: inserts retried after the crash carry their dedup tokens over
/// the real protocol.
// Multi-threaded: the store serves while this thread waits on a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_the_clickhouse_backend_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) =
        common::Store::start(dir.path().to_path_buf(), &common::config(dir.path())).await;
    crash_and_recover_on(&backend.env(), &[], |server| {
        server.kill9();
        false
    })
    .await;
    store.stop().await.unwrap();
}

/// Two ingest servers on one store, started together, loaded together; one
/// is killed with -9 and restarted. Migrations ran once, each server's
/// batches kept their own dedup tokens, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_servers_share_a_store_and_a_kill_9_of_one_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, backend) =
        common::Store::start(dir.path().join("store"), &common::config(dir.path())).await;
    let mut env = backend.env();
    env.extend([
        ("BILTEN_BATCH__MAX_ROWS", "100"),
        ("BILTEN_BATCH__MIN_INTERVAL", "0s"),
    ]);
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    // Started at once: both run the migrations' lock against the store.
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = |d: std::path::PathBuf| {
        let owned = owned.clone();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            serve(&d, &env)
        })
    };
    let (a, b) = (start(dir_a.clone()), start(dir_b.clone()));
    let (mut a, b) = (a.join().unwrap(), b.join().unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load_a = tokio::spawn(load(a.base.clone(), stop.clone()));
    let load_b = tokio::spawn(load(b.base.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked_a, unacked_a, sent_a) = load_a.await.unwrap();
    let (acked_b, unacked_b, sent_b) = load_b.await.unwrap();
    assert!(acked_a.len() > 10 && acked_b.len() > 10, "load too small");
    drop(a);
    let a = serve(&dir_a, &env);
    resend(&a, &unacked_a).await;
    resend(&b, &unacked_b).await;
    a.flush().await;
    b.flush().await;
    let (rows, ids, in_view) = tallies(async |sql| b.query(sql).await).await;
    assert_eq!(rows, ids, "no event stored twice");
    assert_eq!(rows as usize, sent_a + sent_b, "every event sent is stored");
    assert_eq!(in_view, rows, "the daily view agrees with the table");
    let applied = b
        .query(
            // Both keep their records in the store's guest system database.
            &format!(
                "SELECT count() AS n, uniqExact(version) AS v FROM {}.schema_migrations",
                bilten_analytics::model::GUEST_SYSTEM_DATABASE
            ),
        )
        .await;
    let row = &applied["data"][0];
    assert_eq!(
        as_u64(&row["n"]),
        as_u64(&row["v"]),
        "a migration applied twice"
    );
    drop((a, b));
    store.stop().await.unwrap();
}

#[tokio::test]
async fn a_crash_between_insert_and_checkpoint_is_not_a_double_insert() {
    // The fifth successful insert aborts the process before its batch is
    // confirmed in the log: the replay inserts it again, under the same token.
    crash_and_recover(
        &[("FAILPOINTS", "batch::crash_before_checkpoint=4*off->return")],
        |_| true,
    )
    .await;
}

#[tokio::test]
async fn a_storage_outage_delays_but_delivers_exactly_once() {
    let s = TestServer::start(|c| {
        c.batch.max_rows = 50;
        c.batch.retry_initial_backoff = Duration::from_millis(20);
        c.batch.retry_max_backoff = Duration::from_millis(100);
    })
    .await;
    fail::cfg("storage::insert", "return").unwrap();
    let mut sent = 0;
    for n in 0..30 {
        let (ids, body) = request(10, n);
        let (status, _) = s.post_json("/v1/events", &body).await;
        assert_eq!(
            status, 202,
            "acknowledged from the log while storage is down"
        );
        sent += ids.len();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.count("events").await,
        0,
        "nothing reached storage during the outage"
    );
    // Storage comes back, but the first two confirmations are lost in transit:
    // those batches are retried under the same token and kept once.
    fail::cfg("storage::lost_ack", "2*return").unwrap();
    fail::remove("storage::insert");
    s.flush().await;
    fail::remove("storage::lost_ack");
    let (rows, ids, in_view) = tallies(async |sql| {
        let (status, body) = s.admin_query(sql).await;
        assert_eq!(status, 200);
        body
    })
    .await;
    assert_eq!(
        (rows, ids, in_view),
        (sent as u64, sent as u64, sent as u64)
    );
    let h: Value = s
        .client
        .get(format!("{}/admin/health", s.base))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(as_u64(&h["buffers"]["insert_retries"]) >= 2, "{h}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_and_everything_before_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[("BILTEN_BATCH__MAX_AGE", "1h")]);
    let client = reqwest::Client::new();
    for n in 0..3 {
        let (_, body) = request(10, n);
        let r = client
            .post(format!("{}/v1/events", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    server.kill9();
    // Power loss mid-write: the last record is cut short.
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let server = serve(dir.path(), &[]);
    server.flush().await;
    let v = server
        .query("SELECT count() AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(
        as_u64(&v["data"][0]["n"]),
        20,
        "the two whole requests are kept"
    );
    assert!(
        server.logged("torn or corrupt record"),
        "{:?}",
        server.log.lock().unwrap()
    );
}

#[tokio::test]
async fn a_full_log_answers_503_and_recovers() {
    let s = TestServer::start(|c| {
        c.ingest.max_body_bytes = 8 * 1024;
        c.wal.max_bytes = 16 * 1024;
        c.wal.segment_bytes = 2 * 1024;
        c.batch.max_rows = 10;
        c.batch.retry_initial_backoff = Duration::from_millis(20);
        c.batch.retry_max_backoff = Duration::from_millis(50);
    })
    .await;
    fail::cfg("storage::insert", "return").unwrap();
    let mut accepted = 0;
    let mut refused = None;
    for n in 0..200 {
        let (ids, body) = request(10, n);
        let r = s
            .client
            .post(format!("{}/v1/events", s.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            refused = Some((
                r.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
                r.text().await.unwrap(),
            ));
            break;
        }
        assert_eq!(r.status(), 202);
        accepted += ids.len();
    }
    let (retry_after, message) = refused.expect("the log never filled");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(message.contains("write-ahead log is full"), "{message}");
    assert!(accepted > 0);

    fail::remove("storage::insert");
    s.flush().await;
    let (ids, body) = request(10, 999);
    let (status, _) = s.post_json("/v1/events", &body).await;
    assert_eq!(status, 202, "accepting again once storage drained the log");
    s.flush().await;
    assert_eq!(s.count("events").await, (accepted + ids.len()) as u64);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_with_storage_down_leaves_rows_in_the_log_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.shutdown_timeout = Duration::from_millis(500);
    let s = TestServer::start_with(cfg.clone()).await;
    fail::cfg("storage::insert", "return").unwrap();
    let (ids, body) = request(12, 0);
    assert_eq!(s.post_json("/v1/events", &body).await.0, 202);
    let started = std::time::Instant::now();
    s.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown deadline holds"
    );
    fail::remove("storage::insert");

    let s = TestServer::start_with(cfg).await;
    s.flush().await;
    assert_eq!(s.count("events").await, ids.len() as u64);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_disk_sheds_load_instead_of_queueing_without_bound() {
    let s = TestServer::start(|c| c.ingest.max_in_flight = 4).await;
    // Every fsync takes 300 ms.
    fail::cfg("wal::fsync", "return(300)").unwrap();
    let mut requests = Vec::new();
    for n in 0..16 {
        let (ids, body) = request(5, n);
        let (client, url) = (s.client.clone(), format!("{}/v1/events", s.base));
        requests.push(tokio::spawn(async move {
            (
                ids.len(),
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            )
        }));
    }
    let mut acked = 0;
    let mut shed = 0;
    for r in requests {
        match r.await.unwrap() {
            (n, 202) => acked += n,
            (_, 503) => shed += 1,
            (_, other) => panic!("unexpected status {other}"),
        }
    }
    fail::remove("wal::fsync");
    assert!(shed > 0, "past max_in_flight requests are shed at once");
    assert!(acked > 0, "requests within the limit are served, slowly");
    s.flush().await;
    assert_eq!(
        s.count("events").await,
        acked as u64,
        "exactly the acknowledged events are stored"
    );
    s.stop().await.unwrap();
}

/// Disk full and a missing table are the environment's fault, not the rows':
/// the batch waits (health says why) and is stored whole when it clears.
#[tokio::test]
async fn disk_full_or_a_missing_table_is_retried_never_dead_lettered() {
    for (fault, code) in [
        ("disk_full", "NOT_ENOUGH_SPACE"),
        ("unknown_table", "UNKNOWN_TABLE"),
    ] {
        let s = TestServer::start(|c| {
            c.batch.max_rows = 10;
            c.batch.retry_initial_backoff = Duration::from_millis(20);
            c.batch.retry_max_backoff = Duration::from_millis(100);
        })
        .await;
        fail::cfg("storage::insert", &format!("return({fault})")).unwrap();
        let (ids, body) = request(10, 0);
        assert_eq!(s.post_json("/v1/events", &body).await.0, 202);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, h) = s.admin_get("/admin/health").await;
        assert_eq!(h["status"], "degraded", "{fault}: {h}");
        assert_eq!(h["buffers"]["inserts_failing"], 1, "{fault}: {h}");
        assert!(
            h["buffers"]["last_insert_error"]
                .as_str()
                .unwrap()
                .contains(code),
            "{fault}: {h}"
        );
        assert_eq!(h["buffers"]["rows_dead_lettered"], 0, "{fault}: {h}");
        fail::remove("storage::insert");
        s.flush().await;
        assert_eq!(s.count("events").await, ids.len() as u64, "{fault}");
        assert_eq!(s.count("dead_letter").await, 0, "{fault}");
        let (_, h) = s.admin_get("/admin/health").await;
        assert_eq!(h["buffers"]["inserts_failing"], 0, "{fault}: {h}");
        s.stop().await.unwrap();
    }
}

/// `?wait=true` with storage down answers within its timeout, with the
/// usual 202: the rows are in the log and arrive when storage does.
#[tokio::test]
async fn wait_true_answers_within_its_timeout_when_storage_is_down() {
    let s = TestServer::start(|c| {
        c.ingest.wait_timeout = Duration::from_secs(1);
        c.batch.retry_initial_backoff = Duration::from_millis(20);
        c.batch.retry_max_backoff = Duration::from_millis(100);
    })
    .await;
    fail::cfg("storage::insert", "return").unwrap();
    let (ids, body) = request(5, 0);
    let started = std::time::Instant::now();
    let (status, r) = s.post_json("/v1/events?wait=true", &body).await;
    let took = started.elapsed();
    assert_eq!((status, r["accepted"].clone()), (202, json!(5)), "{r}");
    assert!(r.get("stored").is_none(), "{r}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    fail::remove("storage::insert");
    s.flush().await;
    assert_eq!(s.count("events").await, ids.len() as u64);
    s.stop().await.unwrap();
}

/// A restart forgets no touch: a buyer who came from a campaign before it
/// is credited to that campaign after it (touches read back from
/// `visits` at start).
#[tokio::test]
async fn a_sale_after_a_restart_is_still_credited_to_the_campaign_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(dir.path());
    let s = TestServer::start_with(cfg.clone()).await;
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-r", "session_id": "tab", "user_id": "buyer",
                     "url": "https://bilten.example/?utm_source=ig&utm_medium=social&utm_campaign=encore"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    s.stop().await.unwrap();

    let s = TestServer::start_with(cfg).await;
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!([{"organizer_id": "org-r", "event_id": "e", "user_id": "buyer", "quantity": 1,
                     "price": "10.00", "currency": "EUR"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let sale = s
        .query("SELECT first_utm_campaign AS f, last_utm_campaign AS l, last_channel AS c FROM bilten_analytics.ticket_sales")
        .await;
    assert_eq!(sale, [json!({"f": "encore", "l": "encore", "c": "social"})]);
    s.stop().await.unwrap();
}

/// Visits are written by the server (`visits`, one row per visit): every
/// `visits.write_every` while they change, with no flush asked for, and
/// when it stops; a visit written again replaces its figures, never adds
/// to them.
#[tokio::test]
async fn visits_are_written_as_they_change_and_when_the_server_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.visits.write_every = Duration::from_millis(200);
    cfg.batch.max_age = Duration::from_millis(100);
    let s = TestServer::start_with(cfg.clone()).await;
    let view = |path: &str| json!({"organizer_id": "org-w", "session_id": "tab", "url": format!("https://t.example{path}")});
    let (status, body) = s.post_json("/v1/page-views", &json!([view("/a")])).await;
    assert_eq!(status, 202, "{body}");
    // Written by the timer: no flush.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = visit_figures(&s).await;
        if as_u64(&seen[0]["rows"]) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (as_u64(&seen[0]["visits"]), as_u64(&seen[0]["pages"])),
        (1, 1),
        "{seen:?}"
    );
    // Two more pages, then a graceful stop before the timer's next write.
    let (status, body) = s
        .post_json("/v1/page-views", &json!([view("/b"), view("/c")]))
        .await;
    assert_eq!(status, 202, "{body}");
    s.stop().await.unwrap();
    let s = TestServer::start_with(cfg).await;
    let seen = visit_figures(&s).await;
    assert_eq!(
        (as_u64(&seen[0]["visits"]), as_u64(&seen[0]["pages"])),
        (1, 3),
        "{seen:?}"
    );
    let last = s
        .query(
            "SELECT pageviews, entry_page, exit_page, closed FROM bilten_analytics.visits FINAL \
             WHERE organizer_id = 'org-w'",
        )
        .await;
    assert_eq!(
        last,
        [json!({"pageviews": 3, "entry_page": "/a", "exit_page": "/c", "closed": 1})]
    );
    // Its visitor counts under the page it ended on alone: the line the
    // timer wrote at /a was not its last.
    let exits = s
        .query(
            "SELECT value, uniqCombinedMerge(12)(visitors) AS visitors \
             FROM bilten_analytics.visit_facets_daily \
             WHERE organizer_id = 'org-w' AND facet = 'exit_closed' GROUP BY value ORDER BY value",
        )
        .await;
    assert_eq!(exits, [json!({"value": "/c", "visitors": 1})]);
    s.stop().await.unwrap();
}

async fn visit_figures(s: &TestServer) -> Vec<Value> {
    s.query(
        "SELECT toUInt64(sum(sign)) AS visits, toInt64(sum(sign * pageviews)) AS pages, \
         toUInt64(count()) AS rows FROM bilten_analytics.visits WHERE organizer_id = 'org-w'",
    )
    .await
}
