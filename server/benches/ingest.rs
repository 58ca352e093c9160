//! End-to-end ingest throughput against the raw engine's insert speed for the
//! same rows, in the same process and run (machines here are noisy, so the
//! ratio is the figure to compare).
//!
//! `cargo bench --bench ingest` (optionally `-- --rows 200000 --rounds 3 --batch 1000
//! --raw-batch 100000`).
//!
//! - raw: the JSONEachRow rows the server would produce, inserted straight
//!   into the embedded engine, `--raw-batch` rows per insert (default
//!   `--batch`): one insert at a time (the ratios' reference), and as many at
//!   once as the server's flush workers (2), each on its own connection.
//! - e2e: the same events as JSON over HTTP (`--batch` per request, 4 in flight),
//!   once without the write-ahead log and once with it (fsync before each 202),
//!   decoded, validated, buffered, flushed; timed until `/admin/flush` returns.
//! - e2e with plugins: with the log, and the default chain of four built-in
//!   Wasm plugins (bots, quality, privacy, ua) on every event.
//! - validate: decoding and validation alone, on one core.

mod common;

use std::sync::Arc;
use std::time::Instant;

use bilten_analytics::batch::Batcher;
use bilten_analytics::config::Config;
use bilten_analytics::ingest::{self, BodyFormat, Table};
use bilten_analytics::loadgen::Generator;
use bilten_analytics::plugins::Plugins;
use bilten_analytics::wal::{Wal, WalConfig};
use bilten_analytics::{AppState, ops, router, storage};
use bytes::Bytes;
use serde_json::Value;

/// Sends every body over HTTP (4 in flight), then `/admin/flush`; rows/s.
async fn end_to_end(client: &reqwest::Client, base: &str, bodies: &[Bytes], rows: usize) -> f64 {
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (client, url, body) = (client.clone(), format!("{base}/v1/events"), body.clone());
        tasks.spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let reply: Value = r.json().await.unwrap();
            assert!(
                reply["rejected"] == 0
                    && reply["dropped"].is_null()
                    && reply["quarantined"].is_null(),
                "not every event was accepted: {}",
                &reply.to_string()[..reply.to_string().len().min(600)]
            );
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let r = client
        .post(format!("{base}/admin/flush"))
        .bearer_auth("bench")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    rows as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = common::arg("--rows", 200_000);
    let rounds = common::arg("--rounds", 3);
    let per_request = common::arg("--batch", 1000);
    let per_raw_insert = common::arg("--raw-batch", per_request);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = dir.path().to_path_buf();
    cfg.plugins = Vec::new();
    cfg.admin_token = Some("bench".into());
    cfg.batch.max_rows = per_request;
    let storage = storage::open(&cfg.storage).await?;
    ops::migrations::apply(&*storage).await?;

    // The same events for every run: `events` rows from the traffic model.
    let mut generator = Generator::new(1);
    let mut events = Vec::with_capacity(rows);
    while events.len() < rows {
        let (table, v) = generator.next_event();
        if table == Table::Events {
            events.push(v);
        }
    }
    let bodies: Vec<Bytes> = events
        .chunks(per_request)
        .map(|c| Bytes::from(serde_json::to_vec(&Value::Array(c.to_vec())).unwrap()))
        .collect();
    let now = chrono::Utc::now();
    let t = Instant::now();
    let prepared: Vec<Bytes> = bodies
        .iter()
        .map(|b| {
            Bytes::from(
                ingest::process(Table::Events, b, BodyFormat::Json, per_request, now, None)
                    .unwrap()
                    .rows,
            )
        })
        .collect();
    let validate_secs = t.elapsed().as_secs_f64();
    let prepared: Vec<Bytes> = prepared
        .chunks(per_raw_insert.div_ceil(per_request).max(1))
        .map(|c| Bytes::from(c.concat()))
        .collect();

    // Two servers on the one engine: without the write-ahead log and with it.
    let mut bases = Vec::new();
    for (with_log, chain) in [
        (false, Vec::new()),
        (true, Vec::new()),
        (true, bilten_analytics::plugins::default_chain()),
    ] {
        let wal = if with_log {
            let wal_cfg = WalConfig {
                // One log per server: two in one directory would share batch
                // identities, and the tables would drop the second as retries.
                dir: dir.path().join(format!("wal-{}", bases.len())),
                segment_bytes: 64 << 20,
                max_bytes: 1 << 30,
            };
            Some(Arc::new(Wal::open(&wal_cfg)?.0))
        } else {
            None
        };
        let batcher = Batcher::new(cfg.batch.clone(), storage.clone(), wal.clone());
        batcher.start_timer();
        let plugins = Plugins::start(cfg.plugin_host.clone(), &chain, None)?;
        let app = router(AppState::new(
            Arc::new(cfg.clone()),
            storage.clone(),
            batcher,
            wal,
            plugins,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        bases.push(format!("http://{}", listener.local_addr()?));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let client = reqwest::Client::new();

    let count = || async {
        let t = storage::query_text(&*storage, "SELECT count() FROM bilten_analytics.events")
            .await
            .unwrap();
        t.trim().parse::<usize>().unwrap()
    };
    let mut raw = Vec::new();
    let mut raw_parallel = Vec::new();
    let mut e2e = Vec::new();
    let mut e2e_log = Vec::new();
    let mut e2e_chain = Vec::new();
    for round in 0..rounds {
        for (at_once, results) in [(1, &mut raw), (2, &mut raw_parallel)] {
            let before = count().await;
            let t = Instant::now();
            let workers = Arc::new(tokio::sync::Semaphore::new(at_once));
            let mut inserts = tokio::task::JoinSet::new();
            for batch in &prepared {
                let permit = workers.clone().acquire_owned().await?;
                let (storage, batch) = (storage.clone(), batch.clone());
                inserts.spawn(async move {
                    storage
                        .insert("events", batch, &uuid::Uuid::new_v4().simple().to_string())
                        .await
                        .unwrap();
                    drop(permit);
                });
            }
            while inserts.join_next().await.is_some() {}
            results.push(rows as f64 / t.elapsed().as_secs_f64());
            assert_eq!(count().await, before + rows);
        }

        for (base, results) in bases.iter().zip([&mut e2e, &mut e2e_log, &mut e2e_chain]) {
            let before = count().await;
            results.push(end_to_end(&client, base, &bodies, rows).await);
            assert_eq!(count().await, before + rows, "every event stored");
        }
        eprintln!(
            "round {}: raw {:.0} rows/s (2 at once {:.0}), e2e {:.0} rows/s, e2e with the log {:.0} rows/s, and plugins {:.0} rows/s",
            round + 1,
            raw[round],
            raw_parallel[round],
            e2e[round],
            e2e_log[round],
            e2e_chain[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Ratios to the raw engine, each within its round: min / median / max.
    let spread = |v: &[f64]| {
        let mut r: Vec<f64> = v.iter().zip(&raw).map(|(e, r)| e / r).collect();
        r.sort_by(f64::total_cmp);
        format!(
            "{:.2} / {:.2} / {:.2}",
            r[0],
            r[r.len() / 2],
            r[r.len() - 1]
        )
    };
    let spreads = [spread(&e2e), spread(&e2e_log), spread(&e2e_chain)];
    let (raw_m, e2e_m, log_m) = (median(&mut raw), median(&mut e2e), median(&mut e2e_log));
    let raw_parallel_m = median(&mut raw_parallel);
    let chain_m = median(&mut e2e_chain);
    println!(
        "rows per run: {rows}, rounds: {rounds}, {per_request} events per request, \
         {per_raw_insert} rows per raw insert"
    );
    println!("| measure | rows/s (median) |");
    println!("|---|---|");
    println!("| raw engine insert (JSONEachRow, one insert at a time) | {raw_m:.0} |");
    println!("| raw engine insert, 2 at once on 2 connections | {raw_parallel_m:.0} |");
    println!("| end to end over HTTP (validate, buffer, flush) | {e2e_m:.0} |");
    println!("| end to end, write-ahead log on (fsync before 202) | {log_m:.0} |");
    println!("| end to end, log on, default plugin chain (4 plugins) | {chain_m:.0} |");
    println!(
        "| decode + validate only, one core | {:.0} |",
        rows as f64 / validate_secs
    );
    println!("| ratio end to end / raw | {:.2} |", e2e_m / raw_m);
    println!(
        "per-round ratios to raw, min / median / max: log off {}; log on {}; plugins {}",
        spreads[0], spreads[1], spreads[2]
    );
    println!(
        "| ratio end to end with the log / raw | {:.2} |",
        log_m / raw_m
    );
    println!(
        "| ratio with plugins / raw; / without plugins | {:.2}; {:.2} |",
        chain_m / raw_m,
        chain_m / log_m
    );
    storage.close().await;
    Ok(())
}
