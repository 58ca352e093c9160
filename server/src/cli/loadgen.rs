//! `bilten-analytics loadgen`: sends the library's synthetic traffic
//! (`synth`, reproducible with `--seed`) to a running server over HTTP and
//! prints a JSON summary: counts, latencies and the server's CPU per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use bilten_analytics::model::Table;
use bilten_analytics::synth::{Generator, past_time};
use bilten_analytics::telemetry;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Events per second, open-loop: requests leave on schedule whatever
    /// the answers, and each latency counts from when its request was due,
    /// so a slow server shows as latency instead of slowing the load down.
    /// Raise --concurrency so the schedule is not held back.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to send at --rate (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Send exactly this many events as fast as the server takes them (ignores --rate and --duration).
    #[arg(long)]
    pub total: Option<u64>,
    /// Seed of the random traffic: the same seed sends the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events per request (default: 1 at a --rate, 200 with --total).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Requests in flight at once (at a --rate: the most; past it, requests
    /// wait, and that wait counts in their latency).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Ingest key, if the server needs one.
    #[arg(long, env = "BILTEN_INGEST_KEY")]
    pub api_key: Option<String>,
    /// With the admin token, the run ends with `POST /admin/flush`, so the
    /// server's CPU is divided by events stored, not only accepted.
    #[arg(long, env = "BILTEN_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Spread the events' timestamps over this much of the past (e.g.
    /// 30days), busier in the day than at night, instead of stamping them
    /// now: history for the dashboard, in minutes.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub spread: Option<Duration>,
    /// Give each event and page view a random public IPv4 address, as a
    /// browser's request would have: the country lookup then runs.
    #[arg(long)]
    pub addresses: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// The server's own CPU time over the run (and the final flush), from
    /// its `/metrics`; absent when that could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_seconds: Option<f64>,
    /// Events the server stored over the run (events, page views, sales).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_events_stored: Option<u64>,
    /// Server CPU per event: per stored event after a flush (with the admin
    /// token), else per accepted event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_event: Option<f64>,
}

/// The server's CPU seconds and events stored so far, from its `/metrics`.
/// A few lines of Prometheus text: the two names we need are read by hand
/// rather than with a parser crate.
async fn server_counters(client: &reqwest::Client, target: &str) -> Option<(f64, u64)> {
    let url = format!("{}/metrics", target.trim_end_matches('/'));
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let value = |line: &str| line.rsplit(' ').next()?.parse::<f64>().ok();
    let mut cpu = None;
    let mut stored = 0.0;
    for line in text.lines() {
        if line.starts_with(telemetry::PROCESS_CPU_SECONDS) {
            cpu = value(line);
        } else if line.starts_with(telemetry::ROWS_STORED)
            && Table::INGEST
                .iter()
                .any(|t| line.contains(&format!("table=\"{}\"", t.name())))
        {
            stored += value(line).unwrap_or(0.0);
        }
    }
    Some((cpu?, stored as u64))
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
}

/// Sends the traffic and returns the summary (also printed to stdout).
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let client = reqwest::Client::new();
    let batch = args
        .batch
        .unwrap_or(if args.total.is_some() { 200 } else { 1 })
        .max(1);
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut generator = Generator::new(args.seed);
    let mut addresses = SmallRng::seed_from_u64(args.seed ^ 0xadd7);
    // With `--spread`: a journey's events (one visitor's, in a row) a few
    // seconds to two minutes apart from a time in the spread, so that they
    // make one visit, as a real visitor's do (the visit, the user, the time).
    let mut past = args.spread.map(|spread| {
        (
            spread,
            SmallRng::seed_from_u64(args.seed ^ 0x5eed),
            chrono::Utc::now(),
            None::<(String, chrono::DateTime<chrono::Utc>)>,
        )
    });
    let before = server_counters(&client, &args.target).await;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut generated: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let want = match args.total {
            Some(total) => (total - generated).min(batch as u64),
            None if started.elapsed() >= args.duration => 0,
            None => batch as u64,
        };
        if want == 0 {
            break;
        }
        // Pace: the k-th event is due at k / rate seconds. With --total,
        // a request is due when it is sent (closed loop).
        let due = match args.total {
            Some(_) => None,
            None => {
                let due =
                    started + Duration::from_secs_f64(generated as f64 / args.rate.max(0.001));
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
        };
        let mut groups: Vec<(Table, Vec<Value>)> = Vec::new();
        for _ in 0..want {
            let (table, mut event) = generator.next_event();
            if args.addresses && table != Table::TicketSales {
                let [a, b, c, d]: [u8; 4] = addresses.random();
                // Outside 0.x, 10.x, 127.x and the multicast and reserved ranges.
                let a = 11 + a % 212;
                event["ip"] = serde_json::json!(format!("{a}.{b}.{c}.{d}"));
            }
            if let Some((spread, rng, now, last)) = past.as_mut() {
                let user = event["user_id"].as_str().unwrap_or_default().to_string();
                let at = match last.take() {
                    Some((u, t)) if u == user => {
                        (t + chrono::Duration::seconds(rng.random_range(5..120))).min(*now)
                    }
                    _ => past_time(rng, *now, *spread),
                };
                event["timestamp"] = serde_json::json!(at.to_rfc3339());
                *last = Some((user, at));
            }
            match groups.iter_mut().find(|(t, _)| *t == table) {
                Some((_, list)) => list.push(event),
                None => groups.push((table, vec![event])),
            }
        }
        generated += want;
        for (table, events) in groups {
            let permit = permits.clone().acquire_owned().await?;
            let (client, counters, latencies) =
                (client.clone(), counters.clone(), latencies.clone());
            let url = format!("{}/v1/{}", args.target.trim_end_matches('/'), table.route());
            let key = args.api_key.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let due = due.unwrap_or_else(Instant::now);
                send(
                    &client,
                    &url,
                    key.as_deref(),
                    events,
                    due,
                    &counters,
                    &latencies,
                )
                .await;
            });
        }
        while tasks.try_join_next().is_some() {}
        if !args.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:>6.1}s] sent {} accepted {} rejected {} failed requests {}",
                started.elapsed().as_secs_f64(),
                counters.sent.load(Ordering::Relaxed),
                counters.accepted.load(Ordering::Relaxed),
                counters.rejected.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed),
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let flushed = match &args.admin_token {
        Some(token) => client
            .post(format!("{}/admin/flush", args.target.trim_end_matches('/')))
            .bearer_auth(token)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        None => false,
    };
    let after = server_counters(&client, &args.target).await;
    let server = before
        .zip(after)
        .map(|((c0, s0), (c1, s1))| (c1 - c0, s1.saturating_sub(s0)));
    let mut lat = std::mem::take(&mut *latencies.lock().await);
    lat.sort();
    let summary = Summary {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        requests: counters.requests.load(Ordering::Relaxed),
        failed_requests: counters.failed.load(Ordering::Relaxed),
        seconds,
        events_per_second: counters.sent.load(Ordering::Relaxed) as f64 / seconds.max(1e-9),
        latency_ms_p50: percentile(&lat, 0.50),
        latency_ms_p90: percentile(&lat, 0.90),
        latency_ms_p99: percentile(&lat, 0.99),
        latency_ms_max: lat.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        server_cpu_seconds: server.map(|(cpu, _)| cpu),
        server_events_stored: server.map(|(_, stored)| stored),
        server_cpu_us_per_event: server.and_then(|(cpu, stored)| {
            let events = if flushed {
                stored
            } else {
                counters.accepted.load(Ordering::Relaxed)
            };
            (events > 0).then(|| cpu * 1e6 / events as f64)
        }),
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(summary)
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    events: Vec<Value>,
    due: Instant,
    c: &Counters,
    lat: &Mutex<Vec<Duration>>,
) {
    let n = events.len() as u64;
    let mut req = client.post(url).json(&events);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let result = req.send().await;
    let elapsed = due.elapsed();
    c.sent.fetch_add(n, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    lat.lock().await.push(elapsed);
    let body: Option<Value> = match result {
        Ok(resp)
            if resp.status().is_success() || resp.status() == reqwest::StatusCode::BAD_REQUEST =>
        {
            resp.json().await.ok()
        }
        // The first few failures are logged; the summary counts them all.
        Ok(resp) => {
            if c.failed.load(Ordering::Relaxed) < 5 {
                tracing::warn!(status = %resp.status(), url, "request failed");
            }
            None
        }
        Err(e) => {
            if c.failed.load(Ordering::Relaxed) < 5 {
                tracing::warn!(error = %e, url, "request failed");
            }
            None
        }
    };
    match body {
        Some(b) => {
            c.accepted
                .fetch_add(b["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
            c.rejected
                .fetch_add(b["rejected"].as_u64().unwrap_or(0), Ordering::Relaxed);
        }
        None => {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds. A sorted
/// vector is exact and small enough here that a histogram crate buys nothing.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&lat, 0.5), 50.0);
        assert_eq!(percentile(&lat, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
