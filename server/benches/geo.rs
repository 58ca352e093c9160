//! The country lookup's cost per event: `geo::Countries::country` over a
//! spread of public IPv4 and IPv6 addresses, on one core, in process CPU
//! time (the machine is noisy; CPU time is what the ingest path pays).
//!
//! `cargo bench --bench geo` (optionally `-- --lookups 1000000 --rounds 5`).

mod common;

use std::path::Path;

use bilten_analytics::geo::{BUILT_IN, Countries};

fn main() {
    let (lookups, rounds) = (
        common::arg("--lookups", 2_000_000usize),
        common::arg("--rounds", 5usize),
    );
    let countries = Countries::open(Path::new(BUILT_IN)).expect("the build's country database");
    // Addresses spread over the space (a multiplicative hash of the index),
    // every fourth an IPv6 one.
    let addresses: Vec<String> = (0..65_536u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            match i % 4 {
                3 => format!(
                    "2{:03x}:{:x}:{:x}::{:x}",
                    (h >> 52) & 0x3ff,
                    (h >> 32) & 0xffff,
                    (h >> 16) & 0xffff,
                    h & 0xffff
                ),
                _ => format!(
                    "{}.{}.{}.{}",
                    1 + (h >> 56) % 222,
                    (h >> 48) & 0xff,
                    (h >> 40) & 0xff,
                    (h >> 32) & 0xff
                ),
            }
        })
        .collect();
    let mut per = Vec::new();
    for round in 1..=rounds {
        let (start, mut found) = (common::cpu_secs(), 0usize);
        for i in 0..lookups {
            found += countries.country(&addresses[i % addresses.len()]).is_some() as usize;
        }
        let ns = (common::cpu_secs() - start) * 1e9 / lookups as f64;
        println!(
            "round {round}: {ns:.0} ns of CPU per lookup ({:.0} % found)",
            found as f64 * 100.0 / lookups as f64
        );
        per.push(ns);
    }
    per.sort_by(f64::total_cmp);
    println!(
        "country lookup, ns of CPU per event, min / median / max over {rounds} rounds of {lookups}: {:.0} / {:.0} / {:.0}",
        per[0],
        per[per.len() / 2],
        per[per.len() - 1]
    );
}
