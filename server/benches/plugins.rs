//! Time per event of each plugin, through the real host (fresh store per
//! batch, limits on), at batch sizes 1, 100 and 1000: a trivial keep-all
//! plugin (the host's own cost) and each built-in.
//!
//! `cargo bench --bench plugins [-- --seconds 2]`
//!
//! Each figure is the median of 5 rounds of about `--seconds / 5` each.
//! `host` is building the batch alone (rows into the WIT's columns), which
//! every plugin's figure includes.

mod common;
#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::path::PathBuf;
use std::time::Instant;

use bilten_analytics::config::Config;
use bilten_analytics::ingest::{self, BodyFormat, Parsed, Table};
use bilten_analytics::plugins::{self, PluginConfig, Plugins, chain};
use bilten_analytics::synth::Generator;
use serde_json::Value;

fn plugin(name: &str, path: PathBuf) -> PluginConfig {
    let mut cfg = plugins::default_chain().remove(0);
    cfg.name = name.into();
    cfg.path = path;
    cfg.tables = Vec::new();
    cfg
}

/// Median nanoseconds per event of `f` over 5 rounds of about `budget / 5`
/// seconds. The rows are cloned before the clock starts and what `f`
/// returns is dropped after it stops (in the server the batcher takes the
/// rows): what is timed is `f`.
fn measure<T>(parsed: &Parsed, budget: f64, f: impl Fn(Parsed) -> T) -> f64 {
    let run = |copies: Vec<Parsed>| {
        let mut outs = Vec::with_capacity(copies.len());
        let t = Instant::now();
        for p in copies {
            outs.push(f(p));
        }
        t.elapsed().as_secs_f64()
    };
    // Calibrate: how many batches fill a round.
    let once = run(vec![parsed.clone(); 3]) / 3.0;
    let per_round = ((budget / 5.0 / once) as usize).clamp(3, 200_000);
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            run(vec![parsed.clone(); per_round]) * 1e9 / (per_round * parsed.rows.len()) as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// The chain on one batch; a fault would make the figure meaningless.
fn chain_of(plugins: &Plugins) -> impl Fn(Parsed) -> Parsed + '_ {
    let now = chrono::Utc::now();
    move |p| {
        let out = plugins.run_blocking(Table::Events, p, now);
        assert_eq!(
            out.quarantined.len() + out.skipped,
            0,
            "a plugin faulted in the bench"
        );
        out.parsed
    }
}

fn main() -> anyhow::Result<()> {
    let seconds = common::arg("--seconds", 2.0);
    // `--only keep_all --batch 1000`: one line, for a profiler.
    let only = common::arg("--only", String::new());
    let only_batch = common::arg("--batch", 0usize);
    let test_dir = wasm::test_plugins();
    let builtin = PathBuf::from(plugins::BUILTIN_DIR);
    let mut candidates = vec![("keep_all", test_dir.join("keep_all.wasm"))];
    for name in ["bots", "quality", "privacy", "ua"] {
        candidates.push((name, builtin.join(format!("bilten_plugin_{name}.wasm"))));
    }
    // Realistic `events` rows from the traffic model.
    let mut generator = Generator::new(7);
    let mut events = Vec::new();
    while events.len() < 1000 {
        let (table, v) = generator.next_event();
        if table == Table::Events {
            events.push(v);
        }
    }
    let now = chrono::Utc::now();
    let batches: Vec<(usize, Parsed)> = [1usize, 100, 1000]
        .into_iter()
        .map(|n| {
            let body = serde_json::to_vec(&Value::Array(events[..n].to_vec())).unwrap();
            let parsed =
                ingest::parse(Table::Events, &body, BodyFormat::Json, n, now, None).unwrap();
            assert_eq!(parsed.rows.len(), n);
            (n, parsed)
        })
        .collect();
    let settings = Config::default().plugin_host;
    println!("plugin     batch   ns/event   µs/batch");
    let wanted = |name: &str, n: usize| {
        (only.is_empty() || only == name) && (only_batch == 0 || only_batch == n)
    };
    for (n, parsed) in batches.iter().filter(|(n, _)| wanted("host", *n)) {
        let ns = measure(parsed, seconds, |p| {
            // Dropped here, as the chain drops it after each plugin.
            std::hint::black_box(chain::batch_of(p.rows.iter().map(|(_, row)| row)));
            p
        });
        println!(
            "{:<10} {:>5} {:>10.0} {:>10.1}",
            "host",
            n,
            ns,
            ns * *n as f64 / 1000.0
        );
    }
    for (name, path) in candidates {
        if !only.is_empty() && only != name {
            continue;
        }
        let chain = Plugins::start(settings.clone(), &[plugin(name, path)], None)?;
        for (n, parsed) in batches.iter().filter(|(n, _)| wanted(name, *n)) {
            let ns = measure(parsed, seconds, chain_of(&chain));
            println!(
                "{:<10} {:>5} {:>10.0} {:>10.1}",
                name,
                n,
                ns,
                ns * *n as f64 / 1000.0
            );
        }
    }
    Ok(())
}
