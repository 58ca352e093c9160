//! End-to-end ingest throughput against the raw engine's insert speed for the
//! same rows, in the same process and run (machines here are noisy, so the
//! ratio is the figure to compare).
//!
//! `cargo bench --bench ingest` (optionally `-- --rows 200000 --rounds 3 --batch 1000
//! --raw-batch 100000 --data-dir DIR`; `--only 2` runs the plugins' server
//! alone).
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
use bilten_analytics::plugins::Plugins;
use bilten_analytics::synth::Generator;
use bilten_analytics::wal::{Wal, WalConfig};
use bilten_analytics::{AppState, ops, router, storage};
use bytes::Bytes;
use serde_json::Value;

/// Sends every body over HTTP (4 in flight), then `/admin/flush`.
async fn end_to_end(client: &reqwest::Client, base: &str, bodies: &[Bytes]) {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = common::arg("--rows", 200_000);
    let rounds = common::arg("--rounds", 3);
    let per_request = common::arg("--batch", 1000);
    let per_raw_insert = common::arg("--raw-batch", per_request);
    let only = Some(common::arg("--only", usize::MAX)).filter(|&i| i < 3);
    // `--data-dir`: where the engine and the logs live (a temporary
    // directory under it; by default the system's).
    let dir = match common::arg("--data-dir", String::new()) {
        d if d.is_empty() => tempfile::tempdir()?,
        d => tempfile::tempdir_in(d)?,
    };
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
        let tenants = Arc::new(bilten_analytics::tenants::Tenants::without_store(
            &cfg,
            storage.clone(),
        ));
        let app = router(AppState::new(
            Arc::new(cfg.clone()),
            storage.clone(),
            batcher,
            wal,
            plugins,
            bilten_analytics::geo::Countries::from_settings(
                &cfg.geo,
                &cfg.storage.embedded.data_dir,
            )
            .unwrap()
            .map(Arc::new),
            tenants,
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
    // Per measure and round: rows/s, and this process's CPU µs per row (the
    // load generator's included: it shares the process and the two cores).
    const NAMES: [&str; 5] = [
        "raw engine insert (JSONEachRow streamed, one insert at a time)",
        "raw engine insert, 2 at once on 2 connections",
        "end to end over HTTP (validate, buffer, flush)",
        "end to end, write-ahead log on (fsync before 202)",
        "end to end, log on, default plugin chain (4 plugins)",
    ];
    // Each figure twice: until the rows are stored, and until the engine's
    // background merges of them have finished too. A profile showed why: a
    // raw measure's merges ran on into the measure after it (30 % of that
    // one's CPU), and a slow measure pays its own merges in its own time
    // where a fast one leaves them for later. So every measure starts with
    // no merge running, on empty tables, and the second figure charges each
    // its own merges.
    let mut rate: [[Vec<f64>; 5]; 2] = Default::default();
    let mut cpu: [[Vec<f64>; 5]; 2] = Default::default();
    let merging = || async {
        let running = storage::query_text(
            &*storage,
            "SELECT count() FROM system.merges WHERE database = 'bilten_analytics'",
        )
        .await
        .unwrap();
        running.trim() != "0"
    };
    // Waits until no merge has run for 3 polls; when (and at what CPU time)
    // one was last seen running.
    let settle = |since: Instant, cpu_since: f64| async move {
        let (mut last, mut last_cpu, mut quiet) = (since, cpu_since, 0);
        while quiet < 3 && since.elapsed().as_secs() < 300 {
            if merging().await {
                (last, last_cpu, quiet) = (Instant::now(), ops::monitor::cpu_seconds(), 0);
            } else {
                quiet += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (last, last_cpu)
    };
    for round in 0..rounds {
        for m in 0..5 {
            // `--only N`: one server alone (0 no log, 1 log, 2 plugins), for
            // a profiler.
            if m >= 2 && only.is_some_and(|only| only != m - 2) {
                for v in rate.iter_mut().chain(cpu.iter_mut()) {
                    v[m].push(f64::NAN);
                }
                continue;
            }
            // Each measure on empty tables, so the merges after it are of
            // its own parts only.
            let tables = storage::query_text(
                &*storage,
                "SELECT name FROM system.tables WHERE database = 'bilten_analytics' \
                 AND engine LIKE '%MergeTree'",
            )
            .await?;
            for table in tables.lines() {
                storage
                    .execute(&format!("TRUNCATE TABLE bilten_analytics.`{table}`"))
                    .await?;
            }
            settle(Instant::now(), 0.0).await;
            let (t, c) = (Instant::now(), ops::monitor::cpu_seconds());
            if m < 2 {
                let workers = Arc::new(tokio::sync::Semaphore::new(m + 1));
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
            } else {
                end_to_end(&client, &bases[m - 2], &bodies).await;
            }
            let (stored, stored_cpu) = (Instant::now(), ops::monitor::cpu_seconds());
            let (merged, merged_cpu) = settle(stored, stored_cpu).await;
            for (k, (at, at_cpu)) in [(stored, stored_cpu), (merged, merged_cpu)]
                .into_iter()
                .enumerate()
            {
                rate[k][m].push(rows as f64 / (at - t).as_secs_f64());
                cpu[k][m].push((at_cpu - c) * 1e6 / rows as f64);
            }
            assert_eq!(count().await, rows, "every event stored");
        }
        let line: Vec<String> = (0..5)
            .map(|m| {
                format!(
                    "{:.0} / {:.0} rows/s ({:.2} / {:.2} µs)",
                    rate[0][m][round], rate[1][m][round], cpu[0][m][round], cpu[1][m][round]
                )
            })
            .collect();
        eprintln!(
            "round {} (stored / and merged): raw {}; 2 at once {}; e2e {}; log {}; plugins {}",
            round + 1,
            line[0],
            line[1],
            line[2],
            line[3],
            line[4]
        );
    }
    let spread = |mut v: Vec<f64>, decimals: usize| {
        v.sort_by(f64::total_cmp);
        let [lo, mid, hi] = [v[0], v[v.len() / 2], v[v.len() - 1]];
        format!("{lo:.decimals$} / {mid:.decimals$} / {hi:.decimals$}")
    };
    println!(
        "rows per run: {rows}, rounds: {rounds}, {per_request} events per request, \
         {per_raw_insert} rows per raw insert; min / median / max over rounds"
    );
    for (k, until) in ["the rows are stored", "their merges have finished too"]
        .iter()
        .enumerate()
    {
        // Ratios to the raw engine, each within its round.
        let ratios = |m: usize| {
            spread(
                rate[k][m]
                    .iter()
                    .zip(&rate[k][0])
                    .map(|(e, r)| e / r)
                    .collect(),
                2,
            )
        };
        println!("\ntimed until {until}:\n");
        println!("| measure | rows/s | CPU µs per row | rate ÷ raw, same round |");
        println!("|---|---|---|---|");
        for (m, name) in NAMES.iter().enumerate() {
            println!(
                "| {name} | {} | {} | {} |",
                spread(rate[k][m].clone(), 0),
                spread(cpu[k][m].clone(), 2),
                ratios(m)
            );
        }
    }
    println!(
        "| decode + validate only, one core | {:.0} | | |",
        rows as f64 / validate_secs
    );
    storage.close().await;
    Ok(())
}
