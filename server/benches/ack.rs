//! Acknowledgement latency and throughput, with the write-ahead log on and
//! off, at several request sizes, on the embedded engine.
//!
//! `cargo bench --bench ack` (optionally `-- --seconds 5 --rate 10000`).
//!
//! - latency: an open-loop load at `--rate` events/s (requests paced on a
//!   fixed schedule, so a slow answer cannot slow the offered load), each
//!   request's time to its 202; p50, p99 and the rate achieved.
//! - throughput: 8 connections sending back to back for `--seconds`.
//!
//! With the log on, a 202 means fsynced; concurrent requests share an fsync.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bilten_analytics::batch::Batcher;
use bilten_analytics::config::Config;
use bilten_analytics::ingest::Table;
use bilten_analytics::plugins::Plugins;
use bilten_analytics::storage::{self, Storage};
use bilten_analytics::wal::{Record, Wal, WalConfig};
use bilten_analytics::{AppState, ops, router};
use serde_json::{Value, json};

fn body(size: usize, seq: &mut u64) -> String {
    let events: Vec<Value> = (0..size)
        .map(|_| {
            *seq += 1;
            json!({"event_type": "page_view", "organizer_id": format!("org-{}", *seq % 7), "user_id": format!("u{}", *seq),
                   "properties": {"event_id": "evt-1", "browser": "Chrome"}})
        })
        .collect();
    Value::Array(events).to_string()
}

async fn start(
    storage: Arc<dyn Storage>,
    wal: Option<Arc<Wal>>,
    cfg: &Config,
) -> (String, tokio::task::JoinHandle<()>) {
    let batcher = Batcher::new(cfg.batch.clone(), storage.clone(), wal.clone());
    let timer = batcher.start_timer();
    let plugins = Plugins::start(cfg.plugin_host.clone(), &cfg.plugins, None).unwrap();
    let tenants = Arc::new(bilten_analytics::tenants::Tenants::without_store(
        cfg,
        storage.clone(),
    ));
    let app = router(AppState::new(
        Arc::new(cfg.clone()),
        storage,
        batcher,
        wal,
        plugins,
        bilten_analytics::geo::Countries::from_settings(&cfg.geo, &cfg.storage.embedded.data_dir)
            .unwrap()
            .map(Arc::new),
        tenants,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1/events", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _timer = timer;
        axum::serve(listener, app).await.unwrap();
    });
    (base, server)
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1].as_secs_f64() * 1000.0
}

/// Open loop: request k goes out at k / rate_requests seconds. Returns p50
/// and p99 of the acknowledged requests, events/s acknowledged, and the
/// share of requests shed with 503 (load shedding past `max_in_flight`).
async fn latency(url: &str, size: usize, rate_events: f64, seconds: f64) -> (f64, f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();
    let per_sec = rate_events / size as f64;
    let total = (per_sec * seconds) as usize;
    let mut seq = 0;
    let bodies: Vec<String> = (0..total).map(|_| body(size, &mut seq)).collect();
    // At most 256 requests in flight (file descriptors are finite). A request
    // that cannot go out on time is timed from when it was due, so a slow
    // server shows as latency rather than as a politely slower load.
    let connections = Arc::new(tokio::sync::Semaphore::new(256));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, b) in bodies.into_iter().enumerate() {
        let due = Duration::from_secs_f64(k as f64 / per_sec);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let permit = connections.clone().acquire_owned().await.unwrap();
        let (client, url) = (client.clone(), url.to_string());
        let t = start + due;
        tasks.spawn(async move {
            let _permit = permit;
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!(status == 202 || status == 503, "{status}");
            (status == 202).then(|| t.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(total);
    let mut shed = 0;
    while let Some(d) = tasks.join_next().await {
        match d.unwrap() {
            Some(d) => lat.push(d),
            None => shed += 1,
        }
    }
    let achieved = (lat.len() * size) as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        achieved,
        100.0 * shed as f64 / total as f64,
    )
}

/// Closed loop: 8 connections, back to back.
async fn throughput(url: &str, size: usize, seconds: f64) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut seq = w << 40;
            let mut sent = 0;
            while start.elapsed().as_secs_f64() < seconds {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(size, &mut seq))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                sent += size;
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(n) = tasks.join_next().await {
        sent += n.unwrap();
    }
    sent as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = common::arg("--seconds", 5.0);
    let rate = common::arg("--rate", 10_000.0);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = dir.path().to_path_buf();
    cfg.plugins = Vec::new();
    let storage = storage::open(&cfg.storage).await?;
    ops::migrations::apply(&*storage).await?;
    // `--wal-dir DIR` puts the log elsewhere (another disk, or tmpfs to see
    // what the fsyncs cost).
    let args: Vec<String> = std::env::args().collect();
    let wal_dir = args
        .iter()
        .position(|a| a == "--wal-dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let wal_dir = wal_dir.unwrap_or_else(|| dir.path().join("wal"));
    let (wal, _) = Wal::open(&WalConfig {
        dir: wal_dir,
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
    })?;
    let wal = Arc::new(wal);

    println!(
        "offered load {rate:.0} events/s for {seconds} s per cell; throughput: 8 connections back to back"
    );
    println!(
        "| log | events/request | ack p50 ms | ack p99 ms | acknowledged events/s | shed (503) | max throughput events/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let only = common::arg("--size", 0.0) as usize;
    for size in [1usize, 10, 100]
        .into_iter()
        .filter(|s| only == 0 || *s == only)
    {
        for with_log in [true, false] {
            let (url, server) = start(storage.clone(), with_log.then(|| wal.clone()), &cfg).await;
            let (p50, p99, achieved, shed) = latency(&url, size, rate, seconds).await;
            let max = throughput(&url, size, seconds.min(3.0)).await;
            server.abort();
            println!(
                "| {} | {size} | {p50:.2} | {p99:.2} | {achieved:.0} | {shed:.1} % | {max:.0} |",
                if with_log { "on" } else { "off" }
            );
        }
    }

    // The log alone: appends of one small record, N appenders at once.
    println!();
    println!("| appenders | log appends/s (fsynced, group commit) |");
    println!("|---|---|");
    for appenders in [1usize, 8, 64, 256] {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..appenders {
            let wal = wal.clone();
            tasks.spawn(async move {
                for _ in 0..20_000 / appenders {
                    let rows = bytes::Bytes::from_static(b"{}\n");
                    wal.append(Record::Rows {
                        table: Table::Events,
                        count: 1,
                        rows,
                    })
                    .await
                    .unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        println!(
            "| {appenders} | {:.0} |",
            20_000.0 / t.elapsed().as_secs_f64()
        );
    }
    storage.close().await;
    Ok(())
}
