//! One batch through the chain: each plugin gets the rows of its tables and
//! event types as one WIT `batch` (column by column: their text in one
//! string with offsets, a list per number field), and its verdicts are
//! applied to the rows.
//! A plugin's fault applies its failure policy to the events it was judging.

use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::host::{Batch, Event, Fault, FaultKind, Verdict};
use super::layout::{self, TEXT_FIELDS, event_text_len};
use super::{Chain, FailurePolicy, Loaded, Plugins};
use crate::ingest::{self, Parsed, Rejection, Row, Table};
use crate::telemetry;

/// A batch after the chain.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// What is left to store (maybe modified), and every rejection.
    pub parsed: Parsed,
    /// The indexes of the events a plugin's verdict dropped (bots, …).
    pub dropped: Vec<usize>,
    /// JSONEachRow lines for `filtered_traffic`: dropped events counted
    /// per day, organizer and plugin, one line each.
    pub filtered_rows: Vec<u8>,
    /// How many lines `filtered_rows` holds.
    pub filtered: usize,
    /// JSONEachRow lines for `rejected_events`: one per plugin rejection.
    pub rejected_rows: Vec<u8>,
    /// The index and id of each event a plugin rejected.
    pub rejected: Vec<(usize, uuid::Uuid)>,
    /// JSONEachRow lines for `plugin_quarantine`.
    pub quarantine_rows: Vec<u8>,
    /// The indexes of the quarantined events.
    pub quarantined: Vec<usize>,
    /// Events that skipped a failed fail-open plugin (tagged, stored).
    pub skipped: usize,
    /// JSONEachRow lines for `filtered_events`: what a plugin with
    /// `keep_dropped_as` dropped, after the rest of the chain.
    pub kept_rows: Vec<u8>,
    /// How many lines `kept_rows` holds.
    pub kept: usize,
    /// By event index: the rows kept so far, with their traffic class and
    /// the plugin that dropped them. They go on through the chain.
    pub(crate) marked: std::collections::HashMap<usize, (String, String)>,
}

/// What one verdict means for the row, once checked.
pub(crate) enum Decision {
    Keep,
    Modify(Box<Row>),
    Drop,
    Reject(super::host::Rejection),
}

pub fn run(
    plugins: &Plugins,
    chain: &Chain,
    table: Table,
    parsed: Parsed,
    now: DateTime<Utc>,
) -> ChainOutput {
    let mut out = ChainOutput {
        parsed,
        ..ChainOutput::default()
    };
    let received = crate::storage::datetime64_text(&now);
    let now_ms = now.timestamp_millis();
    // The batch as the last plugin saw it, with the rows it held (by their
    // index in the request, which outlives rows removed since): the next
    // plugin that sees the same rows, unchanged, takes it as it is.
    let mut last: Option<(Vec<usize>, Batch)> = None;
    for plugin in chain.plugins.iter().filter(|p| p.applies_to(table)) {
        let rows = &out.parsed.rows;
        let seen: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                plugin.sees_type(event_type(&rows[i].1))
                    && plugin.sees_organizer(rows[i].1.organizer_id())
            })
            .collect();
        if seen.is_empty() {
            continue;
        }
        let ids: Vec<(uuid::Uuid, &str)> = seen
            .iter()
            .map(|&i| (rows[i].1.id(), rows[i].1.organizer_id()))
            .collect();
        let held: Vec<usize> = seen.iter().map(|&i| rows[i].0).collect();
        let name = plugin.config.name.as_str();
        let started = Instant::now();
        let result = match plugin.stats.disabled() {
            Some(why) => Err(Fault::new(FaultKind::Disabled, why)),
            None => {
                let batch = match last.take() {
                    Some((rows_in, batch)) if rows_in == held => batch,
                    _ => batch_of(seen.iter().map(|&i| &rows[i].1)),
                };
                let (result, output) = plugins.host.call(
                    &plugin.compiled,
                    &plugin.config_json,
                    &batch,
                    plugin.limits(&plugins.settings),
                    now_ms,
                    false,
                );
                plugins.log_output(plugin, &output);
                let result = result.and_then(|(_, verdicts)| {
                    decide(table, &ids, verdicts, plugins.settings.verdict_bytes)
                });
                if let Ok(decisions) = &result
                    && decisions.iter().all(|d| matches!(d, Decision::Keep))
                {
                    last = Some((held, batch));
                }
                result
            }
        };
        let stats = &plugin.stats;
        let elapsed = started.elapsed();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.events.fetch_add(seen.len() as u64, Ordering::Relaxed);
        stats
            .nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        metrics::histogram!(telemetry::PLUGIN_BATCH_SECONDS, "plugin" => name.to_string())
            .record(elapsed.as_secs_f64());
        match result {
            Ok(decisions) => apply(&mut out, plugin, table, &seen, decisions, &received),
            Err(fault) => fail(&mut out, plugins, plugin, table, &seen, fault, &received),
        }
        if out.parsed.rows.is_empty() {
            break;
        }
    }
    set_kept_apart(&mut out, table, &received);
    out
}

/// A `filtered_traffic` line: `events` of an organizer's rows of `table`
/// that `plugin` filtered out, for `reason`, on the day they arrived (not
/// the day they claim: a bot's timestamps are whatever it sends).
fn count_filtered(
    out: &mut ChainOutput,
    received: &str,
    (organizer_id, table, plugin, reason): (&str, Table, &str, &str),
    events: u64,
) {
    write_line(
        &mut out.filtered_rows,
        &FilteredRow {
            date: received.get(..10).unwrap_or(received),
            organizer_id,
            source_table: table.name(),
            plugin,
            reason,
            events,
        },
    );
    out.filtered += 1;
}

/// Moves the rows kept under a traffic class out of those to store, into
/// `filtered_events` lines, counted in `filtered_traffic` as `kept`; to
/// the client they read as dropped. A kept row a later fail-closed plugin
/// quarantined is in `plugin_quarantine` instead, and not counted here.
fn set_kept_apart(out: &mut ChainOutput, table: Table, received: &str) {
    if out.marked.is_empty() {
        return;
    }
    let mut kept: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut gone = vec![false; out.parsed.rows.len()];
    for (pos, (index, row)) in out.parsed.rows.iter().enumerate() {
        let Some((class, plugin)) = out.marked.get(index) else {
            continue;
        };
        gone[pos] = true;
        out.dropped.push(*index);
        write_line(
            &mut out.kept_rows,
            &KeptRow {
                received_at: received,
                organizer_id: row.organizer_id(),
                source_table: table.name(),
                plugin,
                traffic_class: class,
                event_id: row.id(),
                row: line_of(row),
            },
        );
        out.kept += 1;
        *kept
            .entry((row.organizer_id().to_string(), plugin.clone()))
            .or_default() += 1;
    }
    for ((organizer_id, plugin), events) in kept {
        count_filtered(
            out,
            received,
            (&organizer_id, table, &plugin, "kept"),
            events,
        );
    }
    out.marked.clear();
    remove(out, &gone);
}

/// Checks every verdict before any is applied, so a contract breach fails
/// the whole batch under the policy, never half of it. A modified event keeps
/// its id and its organizer: the organizer is the tenant boundary (ingest
/// keys are scoped by it), and no plugin may move an event across it.
///
/// The text a plugin returns (modified events, rejection messages) counts
/// against `budget`; past it the batch is a fault before any of that text
/// reaches a response, a table or the log.
pub(crate) fn decide(
    table: Table,
    ids: &[(uuid::Uuid, &str)],
    verdicts: Vec<Verdict>,
    budget: usize,
) -> Result<Vec<Decision>, Fault> {
    let mut text = 0usize;
    let mut spend = |n: usize| {
        text += n;
        match text > budget {
            true => Err(Fault::new(
                FaultKind::BadOutput,
                format!(
                    "returned more than {budget} bytes of text for {} events \
                     (plugin_host.verdict_bytes)",
                    ids.len()
                ),
            )),
            false => Ok(()),
        }
    };
    verdicts
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (verdict, (id, organizer)))| match verdict {
            Verdict::Keep => Ok(Decision::Keep),
            Verdict::Drop => Ok(Decision::Drop),
            Verdict::Reject(r) => {
                spend(r.code.len() + r.message.len() + r.field.as_ref().map_or(0, String::len))?;
                Ok(Decision::Reject(r))
            }
            Verdict::Modify(after) => {
                spend(event_text_len(&after))?;
                if uuid::Uuid::parse_str(&after.id).ok() != Some(*id) {
                    return Err(Fault::new(
                        FaultKind::BadOutput,
                        format!("event {i}: a plugin may not change an event's id"),
                    ));
                }
                if after.organizer_id != *organizer {
                    return Err(Fault::new(
                        FaultKind::BadOutput,
                        format!("event {i}: a plugin may not change an event's organizer_id"),
                    ));
                }
                let row =
                    row_of(table, *id, after).map_err(|ingest::Invalid { reason, .. }| {
                        Fault::new(
                            FaultKind::BadOutput,
                            format!("event {i}: the modified event is invalid: {reason}"),
                        )
                    })?;
                Ok(Decision::Modify(Box::new(row)))
            }
        })
        .collect()
}

fn apply(
    out: &mut ChainOutput,
    plugin: &Loaded,
    table: Table,
    seen: &[usize],
    decisions: Vec<Decision>,
    received: &str,
) {
    let name = plugin.config.name.as_str();
    let stats = &plugin.stats;
    let mut gone = vec![false; out.parsed.rows.len()];
    let mut counts = [0u64; 4];
    // Dropped events per organizer: what `filtered_traffic` counts.
    let mut filtered: std::collections::BTreeMap<String, u64> = Default::default();
    for (&pos, decision) in seen.iter().zip(decisions) {
        // A row kept by a plugin before this one takes only its changes
        // (the privacy plugin's): it is out of the figures already, and a
        // rejection would answer the client and store it elsewhere.
        let kept = out.marked.contains_key(&out.parsed.rows[pos].0);
        match decision {
            Decision::Keep => counts[0] += 1,
            Decision::Modify(row) => {
                let mut row = *row;
                let slot = &mut out.parsed.rows[pos].1;
                *row.plugins_skipped() = std::mem::take(slot.plugins_skipped());
                row.keep_host_columns(slot);
                *slot = row;
                counts[1] += 1;
            }
            Decision::Drop => {
                counts[2] += 1;
                let (index, row) = &out.parsed.rows[pos];
                if kept {
                    continue;
                }
                match &plugin.config.keep_dropped_as {
                    // Counted once it is set apart, after the chain.
                    Some(class) => {
                        out.marked.insert(*index, (class.clone(), name.to_string()));
                    }
                    None => {
                        gone[pos] = true;
                        out.dropped.push(*index);
                        *filtered.entry(row.organizer_id().to_string()).or_default() += 1;
                    }
                }
            }
            Decision::Reject(_) if kept => counts[3] += 1,
            Decision::Reject(r) => {
                gone[pos] = true;
                let (index, row) = &out.parsed.rows[pos];
                write_line(
                    &mut out.rejected_rows,
                    &RejectedRow {
                        received_at: received,
                        source_table: table.name(),
                        plugin: name,
                        code: &r.code,
                        field: r.field.as_deref().unwrap_or(""),
                        message: &r.message,
                        event_id: row.id(),
                        event: line_of(row),
                    },
                );
                out.rejected.push((*index, row.id()));
                out.parsed.rejections.push(Rejection {
                    index: *index,
                    field: r.field,
                    reason: r.message,
                    code: Some(r.code),
                    plugin: Some(name.to_string()),
                });
                counts[3] += 1;
            }
        }
    }
    for (verdict, (n, counter)) in
        ["keep", "modify", "drop", "reject"]
            .into_iter()
            .zip(
                counts
                    .iter()
                    .zip([&stats.keep, &stats.modify, &stats.drop, &stats.reject]),
            )
    {
        counter.fetch_add(*n, Ordering::Relaxed);
        if *n > 0 {
            metrics::counter!(telemetry::PLUGIN_VERDICTS, "plugin" => name.to_string(), "verdict" => verdict).increment(*n);
        }
    }
    for (organizer_id, events) in filtered {
        // The contract's drop verdict carries no reason yet.
        count_filtered(out, received, (&organizer_id, table, name, "drop"), events);
    }
    remove(out, &gone);
}

fn fail(
    out: &mut ChainOutput,
    plugins: &Plugins,
    plugin: &Loaded,
    table: Table,
    seen: &[usize],
    fault: Fault,
    received: &str,
) {
    let name = plugin.config.name.as_str();
    let policy = plugin.config.failure_policy;
    plugin.stats.record_fault(
        name,
        fault.kind,
        &fault.detail,
        plugins.settings.breaker_faults,
        plugins.settings.breaker_window,
    );
    if fault.kind == FaultKind::Disabled {
        tracing::debug!(plugin = name, ?policy, "plugin disabled by its breaker");
    } else {
        tracing::warn!(plugin = name, kind = fault.kind.name(), detail = %fault.detail, ?policy, events = seen.len(), "plugin fault");
    }
    match policy {
        FailurePolicy::FailOpen => {
            for &pos in seen {
                out.parsed.rows[pos]
                    .1
                    .plugins_skipped()
                    .push(name.to_string());
            }
            out.skipped += seen.len();
        }
        FailurePolicy::FailClosed => {
            let mut gone = vec![false; out.parsed.rows.len()];
            for &pos in seen {
                gone[pos] = true;
                let (index, row) = &out.parsed.rows[pos];
                out.quarantined.push(*index);
                // A row kept apart before says so, so that it is not put
                // back with the others as a person's.
                let detail = match out.marked.get(index) {
                    Some((class, by)) => format!("{} (kept as {class} by {by})", fault.detail),
                    None => fault.detail.clone(),
                };
                write_line(
                    &mut out.quarantine_rows,
                    &QuarantineRow {
                        received_at: received,
                        source_table: table.name(),
                        plugin: name,
                        fault: fault.kind.name(),
                        detail: &detail,
                        event_id: row.id(),
                        row: line_of(row),
                    },
                );
            }
            remove(out, &gone);
        }
    }
}

fn remove(out: &mut ChainOutput, gone: &[bool]) {
    let mut i = 0;
    out.parsed.rows.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
}

/// A `filtered_traffic` row: how many of an organizer's events a plugin
/// dropped in one batch.
#[derive(Serialize)]
struct FilteredRow<'a> {
    date: &'a str,
    organizer_id: &'a str,
    source_table: &'a str,
    plugin: &'a str,
    reason: &'a str,
    events: u64,
}

/// A `filtered_events` row: a row kept under a traffic class, as it would
/// have been stored.
#[derive(Serialize)]
struct KeptRow<'a> {
    received_at: &'a str,
    organizer_id: &'a str,
    source_table: &'a str,
    plugin: &'a str,
    traffic_class: &'a str,
    event_id: uuid::Uuid,
    row: String,
}

/// A `rejected_events` row.
#[derive(Serialize)]
struct RejectedRow<'a> {
    received_at: &'a str,
    source_table: &'a str,
    plugin: &'a str,
    code: &'a str,
    field: &'a str,
    message: &'a str,
    event_id: uuid::Uuid,
    event: String,
}

#[derive(Serialize)]
struct QuarantineRow<'a> {
    received_at: &'a str,
    source_table: &'a str,
    plugin: &'a str,
    fault: &'a str,
    detail: &'a str,
    event_id: uuid::Uuid,
    row: String,
}

fn write_line(out: &mut Vec<u8>, row: &impl Serialize) {
    serde_json::to_writer(&mut *out, row).expect("strings serialize");
    out.push(b'\n');
}

/// A row as it would be stored, one line of JSON without the newline.
fn line_of(row: &Row) -> String {
    let mut line = Vec::new();
    row.write(&mut line);
    line.pop();
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

/// The type a plugin reads and its `event_types` filter matches.
fn event_type(row: &Row) -> &str {
    match row {
        Row::Event(r) => &r.event_type,
        Row::PageView(_) => "page_view",
        Row::TicketSale(_) => "ticket_sale",
    }
}

/// Rows as one WIT batch, column by column: every text field appended to
/// one string in the contract's `text-field` order, with its offset; a
/// table's missing fields are empty or zero.
pub fn batch_of<'a>(rows: impl Iterator<Item = &'a Row>) -> Batch {
    let n = rows.size_hint().0;
    let mut b = Batch {
        text: String::with_capacity(n * 256),
        offsets: Vec::with_capacity(n * TEXT_FIELDS + 1),
        tables: Vec::with_capacity(n),
        timestamps_ms: Vec::with_capacity(n),
        durations_ms: Vec::with_capacity(n),
        quantities: Vec::with_capacity(n),
        prices_cents: Vec::with_capacity(n),
    };
    for row in rows {
        layout::push(&mut b, row);
    }
    b.offsets.push(b.text.len() as u32);
    b
}

/// A modified event's row, put together by the same builder as a client's
/// ([`ingest::build`]): its fields are moved (not copied) out of the event and
/// checked by the model's rules ([`ingest::Check`]), with no JSON in between.
/// The fields of other tables are ignored; `id` was checked.
fn row_of(table: Table, id: uuid::Uuid, e: Event) -> Result<Row, ingest::Invalid> {
    let check = ingest::Check(table);
    let timestamp = check.time_ms(e.timestamp_ms)?;
    ingest::build(table, id, timestamp, &mut Modified { e, check })
}

/// A plugin's modified event as the source of a row.
struct Modified {
    e: Event,
    check: ingest::Check,
}

impl ingest::Source for Modified {
    fn text(&mut self, name: &str) -> Result<String, ingest::Invalid> {
        let field = layout::text_mut(&mut self.e, name)
            .unwrap_or_else(|| unreachable!("the WIT event has no text field {name}"));
        self.check.text(name, std::mem::take(field))
    }

    fn count(&mut self, name: &str) -> Result<u64, ingest::Invalid> {
        let value = layout::count(&self.e, name)
            .unwrap_or_else(|| unreachable!("the WIT event has no count {name}"));
        self.check.count(name, value)
    }

    fn properties(&mut self) -> Result<String, ingest::Invalid> {
        self.check
            .properties(std::mem::take(&mut self.e.properties))
    }

    fn price_cents(&mut self) -> Result<u64, ingest::Invalid> {
        self.check.price_cents(self.e.price_cents)
    }

    fn currency(&mut self) -> Result<String, ingest::Invalid> {
        self.check.currency(std::mem::take(&mut self.e.currency))
    }
}

/// One plausible event per table, for validating a plugin before it serves.
pub fn samples(now_ms: i64) -> Vec<(Table, Row)> {
    let event = json!({"event_type": "page_view", "event_name": "Event Details Page",
        "organizer_id": "org-sample", "user_id": "user-sample", "session_id": "s-1", "timestamp": now_ms,
        "properties": {"event_id": "evt-sample", "browser": "Chrome", "device_type": "desktop"},
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "ip": "203.0.113.7"});
    let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
    let page_view = json!({"organizer_id": "org-sample", "url": "https://bilten.example/e/1",
        "timestamp": now_ms, "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)", "ip": "2001:db8::1"});
    let sale = json!({"event_id": "evt-sample", "organizer_id": "org-sample", "user_id": "user-sample",
        "timestamp": now_ms, "quantity": 2, "price": "50.00", "currency": "USD"});
    [
        (Table::Events, event),
        (Table::PageViews, page_view),
        (Table::TicketSales, sale),
    ]
    .into_iter()
    .map(|(t, v)| {
        let row = ingest::revalidate(t, v, now).expect("the samples are valid events");
        (t, row)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::super::host::WitTable;
    use super::*;
    use crate::model::Kind;

    const ID: &str = "0190f5a4-1c2b-7d3e-8f40-123456789abc";

    fn modified(table: WitTable, change: impl FnOnce(&mut Event)) -> Event {
        let mut e = Event {
            id: ID.into(),
            table,
            timestamp_ms: 1_764_331_200_000,
            event_type: "view_event".into(),
            event_name: "Event Details Page".into(),
            organizer_id: "org-1".into(),
            user_id: "u1".into(),
            session_id: "s1".into(),
            event_id: "evt-1".into(),
            properties: r#"{"browser":"Chrome"}"#.into(),
            user_agent: "ua".into(),
            ip: "203.0.113.0".into(),
            url: "https://bilten.example/e/1".into(),
            referrer: String::new(),
            duration_ms: 1500,
            order_id: "o-1".into(),
            quantity: 2,
            price_cents: 4999,
            currency: "eur".into(),
        };
        change(&mut e);
        e
    }

    /// What `decide` makes of one modified event.
    fn judge(table: Table, e: Event) -> Result<Row, String> {
        let id = uuid::Uuid::parse_str(ID).unwrap();
        match decide(table, &[(id, "org-1")], vec![Verdict::Modify(e)], 1 << 20) {
            Ok(mut d) => match d.pop() {
                Some(Decision::Modify(row)) => Ok(*row),
                _ => Err("not a modification".into()),
            },
            Err(fault) => Err(fault.detail),
        }
    }

    /// A modified event becomes a typed row directly, checked by the
    /// model's rules: the same refusals a client's JSON would get.
    #[test]
    fn a_modified_event_is_checked_as_a_typed_row() {
        let Row::TicketSale(sale) =
            judge(Table::TicketSales, modified(WitTable::TicketSales, |_| {})).unwrap()
        else {
            panic!("a sale")
        };
        assert_eq!(
            (sale.price.as_str(), sale.currency.as_str(), sale.quantity),
            ("49.99", "EUR", 2)
        );
        assert_eq!(sale.timestamp, "2025-11-28 12:00:00.000");
        let Row::Event(ev) = judge(Table::Events, modified(WitTable::Events, |_| {})).unwrap()
        else {
            panic!("an event")
        };
        assert_eq!(ev.properties, r#"{"browser":"Chrome"}"#);
        assert_eq!(ev.event_type, "view_event");

        let refused =
            |table, wit, change: fn(&mut Event)| judge(table, modified(wit, change)).unwrap_err();
        let (ev, pv, ts) = (Table::Events, Table::PageViews, Table::TicketSales);
        let (wev, wpv, wts) = (WitTable::Events, WitTable::PageViews, WitTable::TicketSales);
        assert!(
            refused(ev, wev, |e| e.event_type = "no spaces".into())
                .contains("event_type: may hold only")
        );
        assert!(
            refused(ev, wev, |e| e.event_type = " ".into())
                .contains("event_type: must not be empty")
        );
        assert!(
            refused(ev, wev, |e| e.user_id = "u".repeat(300))
                .contains("user_id: is longer than 256")
        );
        assert!(
            refused(ev, wev, |e| e.properties = "[1]".into())
                .contains("properties: must be an object, got an array")
        );
        assert!(
            refused(ev, wev, |e| e.properties = "{oops".into())
                .contains("properties: must be a JSON object")
        );
        assert!(
            refused(ev, wev, |e| e.timestamp_ms = 0)
                .contains("timestamp: must be between the years 2000 and 2099")
        );
        assert!(refused(pv, wpv, |e| e.url = String::new()).contains("url: must not be empty"));
        assert!(
            refused(pv, wpv, |e| e.duration_ms = 86_400_001)
                .contains("duration_ms: must be a whole number from 0 to 86400000")
        );
        assert!(
            refused(ts, wts, |e| e.quantity = 0)
                .contains("quantity: must be a whole number from 1 to 10000")
        );
        assert!(refused(ts, wts, |e| e.price_cents = -1).contains("price: -1 cents"));
        assert!(refused(ts, wts, |e| e.currency = "EURO".into()).contains("currency:"));
        assert!(
            refused(ts, wts, |e| e.id = uuid::Uuid::nil().to_string())
                .contains("may not change an event's id")
        );
        assert!(
            refused(ts, wts, |e| e.organizer_id = "org-2".into())
                .contains("may not change an event's organizer_id")
        );
    }

    /// The plugin batch lays out every text field of the model, and only
    /// those: the WIT's `text-field` enum is checked against the one
    /// declaration, so a field added there cannot silently miss the plugins.
    #[test]
    fn the_plugin_text_fields_are_the_models() {
        let wit = include_str!("../../../sdk/wit/plugin.wit");
        let body = wit
            .split("enum text-field {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("the WIT declares text-field");
        let in_wit: Vec<String> = body
            .split(',')
            .map(|f| f.trim().replace('-', "_"))
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(in_wit.len(), TEXT_FIELDS);
        // The same set as the model's text fields…
        let mut textual: Vec<&str> = Table::INGEST
            .iter()
            .flat_map(|t| t.fields())
            .filter(|f| {
                matches!(
                    f.kind,
                    Kind::Id | Kind::Text(_) | Kind::Name(_) | Kind::Object(_) | Kind::Currency
                )
            })
            .map(|f| f.name)
            .collect();
        textual.sort();
        textual.dedup();
        let mut wit_sorted: Vec<&str> = in_wit.iter().map(String::as_str).collect();
        wit_sorted.sort();
        assert_eq!(wit_sorted, textual);
        // …in the order the host lays them out: each table's rows, every
        // text field holding its own name, put where the WIT says it is (a
        // swapped slot would hand a plugin one field's text as another's).
        use crate::ingest::{EventRow, PageViewRow, TicketSaleRow};
        let id = uuid::Uuid::nil();
        let rows = [
            Row::Event(EventRow {
                id,
                timestamp: String::new(),
                timestamp_ms: 0,
                event_type: "event_type".into(),
                event_name: "event_name".into(),
                organizer_id: "organizer_id".into(),
                user_id: "user_id".into(),
                session_id: "session_id".into(),
                event_id: "event_id".into(),
                properties: "properties".into(),
                user_agent: "user_agent".into(),
                ip: "ip".into(),
                country: "country".into(),
                ..Default::default()
            }),
            Row::PageView(PageViewRow {
                id,
                timestamp: String::new(),
                timestamp_ms: 0,
                organizer_id: "organizer_id".into(),
                user_id: "user_id".into(),
                session_id: "session_id".into(),
                event_id: "event_id".into(),
                url: "url".into(),
                referrer: "referrer".into(),
                duration_ms: 0,
                user_agent: "user_agent".into(),
                ip: "ip".into(),
                country: "country".into(),
                ..Default::default()
            }),
            Row::TicketSale(TicketSaleRow {
                id,
                timestamp: String::new(),
                timestamp_ms: 0,
                event_id: "event_id".into(),
                organizer_id: "organizer_id".into(),
                user_id: "user_id".into(),
                order_id: "order_id".into(),
                quantity: 1,
                price: "1.00".into(),
                price_cents: 100,
                currency: "currency".into(),
                ..Default::default()
            }),
        ];
        let batch = batch_of(rows.iter());
        for (i, row) in rows.iter().enumerate() {
            let table = match row {
                Row::Event(_) => Table::Events,
                Row::PageView(_) => Table::PageViews,
                Row::TicketSale(_) => Table::TicketSales,
            };
            for field in table.fields() {
                let Some(slot) = in_wit.iter().position(|w| w == field.name) else {
                    continue;
                };
                if field.name == "id" {
                    continue;
                }
                let at = TEXT_FIELDS * i + slot;
                let text = &batch.text[batch.offsets[at] as usize..batch.offsets[at + 1] as usize];
                assert_eq!(text, field.name, "{} slot {slot}", table.name());
            }
        }
    }
}
