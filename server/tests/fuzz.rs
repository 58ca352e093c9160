//! Fuzzing on stable Rust: decoding and validation, and the write-ahead
//! log's reader, fed random and mutated input. Each property runs a bounded
//! number of cases (`PROPTEST_CASES` raises it for a longer hunt); a failure
//! is shrunk and its seed kept in `proptest-regressions/`, which is in the
//! repository, so it is replayed on every run after. `tests/corpus/` holds
//! hostile inputs found by hand or by these runs, checked every time.

use std::io::Write;

use bilten_analytics::ingest::{self, BodyFormat, Table};
use bilten_analytics::wal::{Record, Wal, WalConfig};
use proptest::prelude::*;

const TABLES: [Table; 3] = [Table::Events, Table::PageViews, Table::TicketSales];

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A valid event per table, as a client would send it.
fn valid(table: Table, i: usize) -> String {
    match table {
        Table::PageViews => {
            format!(
                r#"{{"url":"/e/{i}","organizer_id":"o","session_id":"s{i}","duration_ms":{i}}}"#
            )
        }
        Table::TicketSales => format!(
            r#"{{"event_id":"e{i}","organizer_id":"o","quantity":{},"price":"{i}.50","currency":"EUR"}}"#,
            i % 9 + 1
        ),
        _ => format!(
            r#"{{"event_type":"page_view","organizer_id":"o","user_id":"u{i}","properties":{{"k":{i}}}}}"#
        ),
    }
}

/// Every outcome of parsing is an answer: rows, rejections or a decode error.
/// Panics are what this looks for; the counts must also add up.
fn parse_is_total(table: Table, body: &[u8], format: BodyFormat) {
    if let Ok(parsed) = ingest::parse(table, body, format, 1000, now(), None) {
        let outcome = parsed.encode();
        assert_eq!(outcome.ids.len(), outcome.accepted);
        assert_eq!(outcome.ends.len(), outcome.accepted);
        assert_eq!(
            outcome.ends.last().copied().unwrap_or(0),
            outcome.rows.len()
        );
        // Every stored line is JSON, one per accepted event.
        let lines = outcome
            .rows
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty());
        for line in lines {
            serde_json::from_slice::<serde_json::Value>(line).expect("stored lines are JSON");
        }
    }
}

/// A random edit of a byte string: flip, insert, delete, truncate, splice.
fn mutate(mut body: Vec<u8>, edits: &[(u8, usize, u8)], newlines: bool) -> Vec<u8> {
    for &(kind, at, byte) in edits {
        let byte = if !newlines && byte == b'\n' {
            b' '
        } else {
            byte
        };
        if body.is_empty() {
            body.push(byte);
            continue;
        }
        let at = at % body.len();
        if !newlines && body[at] == b'\n' {
            continue;
        }
        match kind % 5 {
            0 => body[at] ^= byte | 1,
            1 => body.insert(at, byte),
            2 => {
                body.remove(at);
            }
            3 => body.truncate(at.max(1)),
            _ => {
                let chunk: Vec<u8> = body[at..].iter().take(8).copied().collect();
                let to = (at * 7) % body.len();
                for (k, b) in chunk.into_iter().enumerate() {
                    body.insert(to + k, b);
                }
            }
        }
    }
    if !newlines {
        // A flip can make one too: a damaged line stays one line.
        body.iter_mut()
            .filter(|b| **b == b'\n')
            .for_each(|b| *b = b' ');
    }
    body
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
}

/// Cases per property: 512 in the suite (well under a second each);
/// `PROPTEST_CASES=100000` for a longer hunt.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Failures are kept here (the default only finds files under `src/`).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/fuzz.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), t in 0..3usize) {
        parse_is_total(TABLES[t], &body, BodyFormat::Json);
        parse_is_total(TABLES[t], &body, BodyFormat::Ndjson);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(n in 1..8usize, t in 0..3usize, e in edits()) {
        let table = TABLES[t];
        let array = format!("[{}]", (0..n).map(|i| valid(table, i)).collect::<Vec<_>>().join(","));
        parse_is_total(table, &mutate(array.into_bytes(), &e, true), BodyFormat::Json);
    }

    /// One damaged NDJSON line costs that line at most: every other event
    /// of the request is accepted.
    #[test]
    fn a_damaged_ndjson_line_spares_its_neighbours(n in 2..12usize, victim in any::<usize>(), t in 0..3usize, e in edits()) {
        let table = TABLES[t];
        let victim = victim % n;
        let lines: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let line = valid(table, i).into_bytes();
                if i == victim { mutate(line, &e, false) } else { line }
            })
            .collect();
        let body = lines.join(&b'\n');
        let parsed = ingest::parse(table, &body, BodyFormat::Ndjson, 1000, now(), None);
        if let Ok(parsed) = parsed {
            let outcome = parsed.encode();
            prop_assert!(outcome.accepted >= n - 1, "{} of {n} accepted: {}", outcome.accepted, String::from_utf8_lossy(&body));
            prop_assert!(outcome.rejections.iter().all(|r| r.index == victim));
        } else {
            // Only a line that became blank can empty a body of one line.
            prop_assert!(false, "the whole request failed: {parsed:?}");
        }
    }

    /// The log's reader takes any bytes in a segment: it keeps the intact
    /// prefix, sets the rest aside, and the log opens and takes appends.
    #[test]
    fn the_log_opens_over_any_segment_bytes(garbage in prop::collection::vec(any::<u8>(), 0..2048), keep in 0..4usize) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig { dir: dir.path().to_path_buf(), segment_bytes: 1 << 20, max_bytes: 1 << 30 };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (wal, _) = Wal::open(&cfg).unwrap();
            for i in 0..keep {
                wal.append(Record::Rows { table: Table::Events, count: 1, rows: format!("{{\"n\":{i}}}\n").into() }).await.unwrap();
            }
            wal.close();
        });
        let seg = std::fs::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .unwrap();
        std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&garbage).unwrap();
        rt.block_on(async {
            let (wal, recovered) = Wal::open(&cfg).unwrap();
            // The records written before the garbage come back, in order and
            // intact (garbage that happens to frame as a record may follow).
            prop_assert!(recovered.unsealed.len() >= keep);
            for (i, (_, _, _, rows)) in recovered.unsealed.iter().take(keep).enumerate() {
                let written = format!("{{\"n\":{i}}}\n");
                prop_assert_eq!(&rows[..], written.as_bytes());
            }
            wal.append(Record::Rows { table: Table::Events, count: 1, rows: "{}\n".into() }).await.unwrap();
            Ok(())
        })?;
    }
}

/// Hostile inputs kept in the repository: each must get an answer (rows,
/// rejections or a decode error) on every table, in both formats.
#[test]
fn the_corpus_of_hostile_bodies_gets_answers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let body = std::fs::read(entry.unwrap().path()).unwrap();
        for table in TABLES {
            parse_is_total(table, &body, BodyFormat::Json);
            parse_is_total(table, &body, BodyFormat::Ndjson);
        }
        n += 1;
    }
    assert!(n >= 10, "the corpus is at {}", dir.display());
    // And what some of them must say.
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    // Nesting past the parser's limit: that event is refused with the
    // reason, and its neighbours would be kept. Properties that are not an
    // object are refused for that first.
    for (file, reason) in [
        ("deep_nesting_in_an_object.json", "recursion limit"),
        ("deep_nesting.json", "must be an object, got an array"),
    ] {
        let parsed = ingest::parse(
            Table::Events,
            &read(file),
            BodyFormat::Json,
            10,
            now(),
            None,
        )
        .unwrap();
        assert!(parsed.rows.is_empty());
        assert_eq!(parsed.rejections[0].field.as_deref(), Some("properties"));
        assert!(
            parsed.rejections[0].reason.contains(reason),
            "{file}: {:?}",
            parsed.rejections
        );
    }
    let parsed = ingest::parse(
        Table::TicketSales,
        &read("huge_exponent_price.json"),
        BodyFormat::Json,
        10,
        now(),
        None,
    );
    let rejected = parsed.unwrap().rejections;
    assert_eq!(rejected[0].field.as_deref(), Some("price"), "{rejected:?}");
    let parsed = ingest::parse(
        Table::TicketSales,
        &read("price_past_decimal.json"),
        BodyFormat::Json,
        10,
        now(),
        None,
    );
    assert!(parsed.unwrap().rejections[0].reason.contains("too large"));
}
