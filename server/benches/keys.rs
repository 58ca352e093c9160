//! What a key kept in the store costs: per request, the keyed digest of the
//! secret sent and the keyring's lookup (with 10 keys and with 10 000,
//! known and unknown secrets); at start, reading 10 000 keys' records back
//! (seal checked, parsed, folded into the keyring). In process CPU time,
//! on one core (the machine is noisy; CPU time is what a request pays).
//!
//! `cargo bench --bench keys` (optionally `-- --lookups 1000000 --rounds 5`).

mod common;

use std::sync::Arc;

use bilten_analytics::tenants::ControlKey;
use bilten_analytics::tenants::keys::{
    Change, KeyKind, Keyring, Record, SecretRef, fold, hex, new_id, new_secret, prefix,
};

/// `n` keys' creation records, sealed as a server stores them, and their secrets.
fn made(key: &ControlKey, n: usize) -> (Vec<(String, String)>, Vec<String>) {
    let mut rows = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..n {
        let kind = [KeyKind::Ingest, KeyKind::Public, KeyKind::Read][i % 3];
        let secret = new_secret(kind);
        let record = Record {
            id: new_id(),
            version: 1,
            at_ms: 1,
            by: "token:00000000".into(),
            change: Change::Create {
                kind,
                organizers: vec![format!("org-{i}")],
                origins: match kind {
                    KeyKind::Public => vec![format!("https://org-{i}.example")],
                    _ => vec![],
                },
                secret: SecretRef {
                    digest: hex(&key.digest(&secret)),
                    prefix: prefix(&secret),
                },
            },
        };
        let body = serde_json::to_string(&record).unwrap();
        let seal = key.seal("keys", &body);
        rows.push((body, seal));
        secrets.push(secret);
    }
    (rows, secrets)
}

/// Start-up's share: every row's seal checked, parsed, folded, indexed.
fn read_back(key: &ControlKey, rows: &[(String, String)]) -> Keyring {
    let keys = rows.iter().filter_map(|(body, seal)| {
        assert!(key.verifies("keys", body, seal));
        let mut records = vec![serde_json::from_str::<Record>(body).ok()?];
        fold(&mut records, Arc::default())
    });
    Keyring::new(keys)
}

fn summary(what: &str, mut per: Vec<f64>, unit: &str) {
    per.sort_by(f64::total_cmp);
    println!(
        "{what}, {unit} of CPU, min / median / max over {} rounds: {:.0} / {:.0} / {:.0}",
        per.len(),
        per[0],
        per[per.len() / 2],
        per[per.len() - 1]
    );
}

fn main() {
    let (lookups, rounds) = (
        common::arg("--lookups", 1_000_000usize),
        common::arg("--rounds", 5usize),
    );
    let key = ControlKey::from_master(&[7; 32]);
    for n in [10, 10_000] {
        let (rows, secrets) = made(&key, n);
        let mut start_ms = Vec::new();
        let mut ring = Keyring::default();
        for _ in 0..rounds {
            let start = common::cpu_secs();
            ring = read_back(&key, &rows);
            start_ms.push((common::cpu_secs() - start) * 1e3);
        }
        assert_eq!(ring.len(), n);
        summary(&format!("{n} keys read back at start"), start_ms, "ms");
        let unknown: Vec<String> = (0..1000).map(|_| new_secret(KeyKind::Ingest)).collect();
        for (label, sent) in [("known", &secrets), ("unknown", &unknown)] {
            let mut per = Vec::new();
            for _ in 0..rounds {
                let (start, mut found) = (common::cpu_secs(), 0usize);
                for i in 0..lookups {
                    let digest = key.digest(&sent[i % sent.len()]);
                    if let Some(f) = ring.lookup(&digest, 2) {
                        f.key().mark_used(2);
                        found += 1;
                    }
                }
                per.push((common::cpu_secs() - start) * 1e9 / lookups as f64);
                assert_eq!(found > 0, label == "known");
            }
            summary(
                &format!("a request's key, {label}, among {n} keys"),
                per,
                "ns",
            );
        }
    }
}
