//! Each visit's figures, kept as its rows are stored and written to the
//! `visits` table (`sql/0024_visits_written.sql`) by the server itself: one
//! row per visit and write, where materialized views over every page view
//! and event wrote a partial row per visit and inserted block (about 4 µs of
//! engine time per event) and every query grouped them by visit.
//!
//! Counted after the plugins, from the rows the log has taken: a row a
//! plugin dropped (a bot's) counts nowhere. A visit that changed is written
//! at most every `visits.write_every`, and when the server stops; a later
//! write first cancels the earlier one (the same row, `sign` -1), so sums
//! weighted by `sign` read each visit's latest figures whether or not the
//! engine has collapsed the pairs yet.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use dashmap::DashMap;
use uuid::Uuid;

use crate::ingest::Row;

/// A visit's figures: one row's, a batch's, or the whole visit's so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Figures {
    pub organizer_id: Arc<str>,
    pub visitor: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub pageviews: u32,
    pub events: u32,
    pub engaged_ms: u64,
    /// The earliest page view's time and path (`i64::MAX`: none yet).
    pub entry: (i64, String),
    /// The latest page view's (`i64::MIN`: none yet).
    pub exit: (i64, String),
    pub user_id: String,
    pub session_id: String,
    /// Channel, source and the five `utm_*`: the origin its rows carry
    /// (empty on the rows before its first page view).
    pub origin: [String; 7],
    pub country: String,
    pub user_agent: String,
    /// What its user agent says, read once it is known.
    pub device: super::device::Device,
    /// Its page views by path and its events by type, which `pages_daily`
    /// sums from the lines written (`sql/0027_pages_from_visits.sql`).
    pub pages: Counts,
    pub names: Counts,
}

/// A visit's page views by path, or events by type.
pub(crate) type Counts = HashMap<String, u32, foldhash::fast::RandomState>;

/// Most values a visit counts apart, of each kind: a crawler's visit of
/// ten thousand pages would otherwise write them all with every change.
/// The rest count under [`OTHER`].
pub(crate) const MOST_VALUES: usize = 500;
const OTHER: &str = "(other)";

/// Counts read back from the engine (a JSON object of value to count)
/// under the rule the server counts by ([`bump`]), the most counted first:
/// they keep their name, the rest count under [`OTHER`].
pub(crate) fn capped(counts: Option<serde_json::Value>) -> Counts {
    let mut all: Vec<(String, u64)> = match counts {
        Some(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
            .collect(),
        _ => Vec::new(),
    };
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Counts::default();
    for (value, n) in all {
        bump(&mut out, &value, u32::try_from(n).unwrap_or(u32::MAX));
    }
    out
}

/// Counts `n` more of `value`, within [`MOST_VALUES`]. Allocates only for
/// a value new to the visit: this runs for every row.
fn bump(counts: &mut Counts, value: &str, n: u32) {
    if let Some(c) = counts.get_mut(value) {
        *c += n;
    } else if counts.len() < MOST_VALUES {
        counts.insert(value.to_string(), n);
    } else {
        *counts.entry(OTHER.to_string()).or_default() += n;
    }
}

impl Figures {
    fn empty(organizer_id: Arc<str>, at_ms: i64) -> Figures {
        Figures {
            organizer_id,
            started_ms: at_ms,
            ended_ms: at_ms,
            entry: (i64::MAX, String::new()),
            exit: (i64::MIN, String::new()),
            ..Figures::default()
        }
    }

    /// Adds a stored page view's or event's (`name`: its type) row of
    /// `visit`. Allocates only what it keeps: this runs for every row.
    fn add(
        &mut self,
        h: &mut crate::ingest::Host<'_>,
        name: Option<&str>,
        seen_ms: u64,
        visit: Uuid,
    ) {
        let ts = h.timestamp_ms;
        self.engaged_ms += seen_ms;
        self.started_ms = self.started_ms.min(ts);
        self.ended_ms = self.ended_ms.max(ts);
        match name {
            None => {
                self.pageviews += 1;
                let p = path(h.url);
                bump(&mut self.pages, p, 1);
                if ts < self.entry.0 {
                    self.entry = (ts, p.to_string());
                }
                if ts >= self.exit.0 {
                    self.exit = (ts, p.to_string());
                }
            }
            Some(name) => {
                self.events += 1;
                bump(&mut self.names, name, 1);
            }
        }
        if self.visitor.is_empty() {
            self.visitor = match (h.user_id, h.session_id) {
                (u, _) if !u.is_empty() => u.to_string(),
                (_, s) if !s.is_empty() => s.to_string(),
                _ => visit.to_string(),
            };
        }
        let keep = |to: &mut String, from: &str| {
            if to.is_empty() && !from.is_empty() {
                from.clone_into(to)
            }
        };
        keep(&mut self.session_id, h.session_id);
        keep(&mut self.user_agent, h.user_agent);
        keep(
            &mut self.country,
            h.country.as_deref().map_or("", |c| c.as_str()),
        );
        // The user it last named: an `identify` names them from then on.
        if !h.user_id.is_empty() && self.user_id != h.user_id {
            h.user_id.clone_into(&mut self.user_id);
        }
        if self.origin[0].is_empty() && h.channel.as_deref().is_some_and(|c| !c.is_empty()) {
            let origin = super::origin_columns(h, super::Origin::Visit);
            for (to, from) in self.origin.iter_mut().zip(origin) {
                from.map_or("", |s| s.as_str()).clone_into(to);
            }
        }
    }

    /// Adds `o`, figures of the same visit that arrived after these.
    fn merge(&mut self, o: &Figures) {
        self.started_ms = self.started_ms.min(o.started_ms);
        self.ended_ms = self.ended_ms.max(o.ended_ms);
        self.pageviews += o.pageviews;
        self.events += o.events;
        self.engaged_ms += o.engaged_ms;
        if o.entry.0 < self.entry.0 {
            self.entry = o.entry.clone();
        }
        if o.exit.0 >= self.exit.0 && o.exit.0 != i64::MIN {
            self.exit = o.exit.clone();
        }
        for (counts, more) in [(&mut self.pages, &o.pages), (&mut self.names, &o.names)] {
            for (value, n) in more {
                bump(counts, value, *n);
            }
        }
        let keep = |to: &mut String, from: &String| {
            if to.is_empty() {
                to.clone_from(from)
            }
        };
        keep(&mut self.visitor, &o.visitor);
        keep(&mut self.session_id, &o.session_id);
        keep(&mut self.country, &o.country);
        if self.user_agent.is_empty() && !o.user_agent.is_empty() {
            self.user_agent.clone_from(&o.user_agent);
            self.device = super::device::read(&self.user_agent);
        }
        // The user it last named: an `identify` names them from then on.
        if !o.user_id.is_empty() {
            self.user_id.clone_from(&o.user_id);
        }
        if self.origin[0].is_empty() && !o.origin[0].is_empty() {
            self.origin.clone_from(&o.origin);
        }
    }

    /// Its `visits` row as a JSONEachRow line, `sign` first (so that its
    /// cancel is the same line with `-1` there); `closed`: its last.
    fn line(&self, visit: Uuid, version: u64, closed: bool) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            sign: i8,
            organizer_id: &'a str,
            date: String,
            visit_id: Uuid,
            visitor: &'a str,
            started: String,
            ended: String,
            pageviews: u32,
            events: u32,
            engaged_ms: u64,
            entry_page: &'a str,
            exit_page: &'a str,
            user_id: &'a str,
            session_id: &'a str,
            channel: &'a str,
            source: &'a str,
            utm_medium: &'a str,
            utm_source: &'a str,
            utm_campaign: &'a str,
            utm_content: &'a str,
            utm_term: &'a str,
            country: &'a str,
            user_agent: &'a str,
            device: &'a str,
            browser: &'a str,
            os: &'a str,
            pages: &'a Counts,
            names: &'a Counts,
            closed: u8,
            version: u64,
        }
        let time = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        // The day of its id's time: where every row of it goes.
        let start = visit
            .get_timestamp()
            .map(|t| t.to_unix().0 as i64 * 1000)
            .unwrap_or(self.started_ms);
        let o = &self.origin;
        let line = Line {
            sign: 1,
            organizer_id: &self.organizer_id,
            date: time(start).date_naive().to_string(),
            visit_id: visit,
            visitor: &self.visitor,
            started: crate::storage::datetime64_text(&time(self.started_ms)),
            ended: crate::storage::datetime64_text(&time(self.ended_ms)),
            pageviews: self.pageviews,
            events: self.events,
            engaged_ms: self.engaged_ms,
            entry_page: &self.entry.1,
            exit_page: &self.exit.1,
            user_id: &self.user_id,
            session_id: &self.session_id,
            channel: &o[0],
            source: &o[1],
            utm_medium: &o[2],
            utm_source: &o[3],
            utm_campaign: &o[4],
            utm_content: &o[5],
            utm_term: &o[6],
            country: &self.country,
            user_agent: &self.user_agent,
            device: self.device.kind,
            browser: &self.device.browser,
            os: &self.device.os,
            pages: &self.pages,
            names: &self.names,
            closed: u8::from(closed),
            version,
        };
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, &line).expect("strings and numbers always serialize");
        out.push(b'\n');
        out
    }
}

/// A batch's rows' figures, by visit: one map entry touched per visit
/// when they are added, not one per row.
#[derive(Default)]
pub(crate) struct Counted(HashMap<Uuid, Figures, foldhash::fast::RandomState>);

/// Counts a batch's rows, before the log takes them (they are encoded
/// then); added once it has.
pub(crate) fn count<'a>(rows: impl Iterator<Item = &'a mut Row>) -> Counted {
    let mut batch: HashMap<Uuid, Figures, foldhash::fast::RandomState> = HashMap::default();
    for row in rows {
        // A client that sends whole views says how long each was seen.
        // An event's type is taken out while its row lends the rest, and
        // put back (no copy per row).
        let (name, seen_ms) = match row {
            Row::PageView(r) => (None, r.duration_ms),
            Row::Event(r) => (Some(std::mem::take(&mut r.event_type)), 0),
            // A sale counts in `attribution_daily`, not in its visit.
            Row::TicketSale(_) => continue,
        };
        if let Some(mut h) = row.host()
            && let Some(visit) = h.visit_id.as_deref().copied()
            && !visit.is_nil()
        {
            batch
                .entry(visit)
                .or_insert_with(|| Figures::empty(Arc::from(h.organizer_id), h.timestamp_ms))
                .add(&mut h, name.as_deref(), seen_ms, visit);
        }
        if let (Row::Event(r), Some(name)) = (row, name) {
            r.event_type = name;
        }
    }
    Counted(batch)
}

/// The path of a URL as the engine's `path()` reads it (from the first `/`
/// after `://` to `?` or `#`; empty without them), so that a visit's pages
/// read the same whether the server counted them or the engine did
/// ([`super::recover`]). By hand: it runs for every page view, and a URL
/// parser allocates and normalizes.
fn path(url: &str) -> &str {
    let Some(at) = url.find("://") else {
        return "";
    };
    let rest = &url[at + 3..];
    let Some(slash) = rest
        .find(['/', '?', '#'])
        .filter(|&i| rest.as_bytes()[i] == b'/')
    else {
        return "";
    };
    let p = &rest[slash..];
    &p[..p.find(['?', '#']).unwrap_or(p.len())]
}

/// A visit's line last written, and its version.
type Written = (Option<Box<[u8]>>, u64);

/// How a written line starts.
const SIGNED: &[u8] = b"{\"sign\":1,";

struct Tally {
    now: Figures,
    /// The line last written, to cancel before the next.
    written: Option<Box<[u8]>>,
    /// Its version.
    version: u64,
    dirty: bool,
    /// By the server's clock: when it last changed.
    seen_ms: i64,
}

/// The visits' figures, by visit.
pub(crate) struct Tallies {
    map: DashMap<Uuid, Tally, foldhash::fast::RandomState>,
    /// A visit untouched this long is written a last time and forgotten.
    forget_after_ms: i64,
    /// Most visits kept between writes: past it, those touched longest
    /// ago are closed and forgotten (made-up visitors must not grow the map
    /// without bound; a visit that goes on after that is written anew, and
    /// counted twice).
    most: usize,
}

/// Lines to write, and what to put back if they cannot be.
pub(crate) struct Due {
    pub lines: Vec<u8>,
    pub rows: usize,
    /// Each visit written, with what it had written before and whether it
    /// had changes not written.
    undo: Vec<(Uuid, Written, bool)>,
    /// The visits these lines close (or that close with no line: an
    /// engagement whose view never came), forgotten once they are stored.
    closing: Vec<Uuid>,
}

/// Which visits a write closes: each closed visit's last line says so
/// (`closed` 1), and `visit_facets_daily` counts its visitor under its exit
/// page from that line alone (`sql/0031_closed_visits.sql`): a visit's exit
/// page moves with each page, and a visitor counted under each would count
/// under pages they did not leave from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Closing {
    /// Those untouched past the timeout, and past the most kept, those
    /// touched longest ago.
    Idle,
    /// Every one: the server stops, and a visitor who comes back after the
    /// restart starts a new visit.
    All,
}

impl Tallies {
    pub fn new(timeout_ms: i64, most: usize) -> Tallies {
        Tallies {
            map: DashMap::with_hasher(Default::default()),
            most,
            // Past the timeout, plus the time a visit's last rows may take
            // through the plugins and the log.
            forget_after_ms: timeout_ms.saturating_add(5 * 60_000),
        }
    }

    /// Visits with figures kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds rows the log has taken, counted by [`count`].
    pub fn add(&self, counted: Counted, now_ms: i64) {
        for (visit, f) in counted.0 {
            self.add_one(visit, &f, now_ms);
        }
    }

    /// Counts an engagement the log has taken. It may come before its
    /// view is counted (engagements skip the plugins): its time waits in
    /// the visit, written once the visit has a page view or an event.
    pub fn engaged(&self, organizer: &str, visit: Uuid, at_ms: i64, ms: u64, now_ms: i64) {
        let mut t = self.map.entry(visit).or_insert_with(|| Tally {
            now: Figures::empty(Arc::from(organizer), at_ms),
            written: None,
            version: 0,
            dirty: true,
            seen_ms: now_ms,
        });
        t.now.engaged_ms += ms;
        t.now.ended_ms = t.now.ended_ms.max(at_ms);
        t.dirty = true;
        t.seen_ms = now_ms;
    }

    fn add_one(&self, visit: Uuid, f: &Figures, now_ms: i64) {
        let mut t = self.map.entry(visit).or_insert_with(|| Tally {
            now: Figures::empty(f.organizer_id.clone(), f.started_ms),
            written: None,
            version: 0,
            dirty: true,
            seen_ms: now_ms,
        });
        t.now.merge(f);
        t.dirty = true;
        t.seen_ms = now_ms;
    }

    /// The lines of the visits that changed since they were last written,
    /// and of those `closing` closes (each cancelling its previous line),
    /// marked written. Visits with no page view or event yet (an engagement
    /// that came first) wait. The caller stores the lines, then
    /// [`Tallies::settle`]s.
    pub fn due(&self, now_ms: i64, closing: Closing) -> Due {
        let mut due = Due {
            lines: Vec::new(),
            rows: 0,
            undo: Vec::new(),
            closing: Vec::new(),
        };
        // Past the most kept: the cut of the ages of those that go.
        let over = self.map.len().saturating_sub(self.most);
        let cut = match over {
            0 => None,
            _ => {
                let mut ages: Vec<i64> = self.map.iter().map(|t| t.seen_ms).collect();
                let (_, cut, _) = ages.select_nth_unstable(over - 1);
                Some(*cut)
            }
        };
        let mut evicted = 0;
        for mut t in self.map.iter_mut() {
            let visit = *t.key();
            let evict = evicted < over && cut.is_some_and(|c| t.seen_ms <= c);
            evicted += evict as usize;
            let close =
                closing == Closing::All || evict || now_ms - t.seen_ms > self.forget_after_ms;
            if t.now.pageviews + t.now.events == 0 {
                // An engagement whose view never came (a bot's, dropped).
                if close && closing == Closing::Idle {
                    due.closing.push(visit);
                }
                continue;
            }
            if !t.dirty && !close {
                continue;
            }
            let version = (now_ms.max(0) as u64).max(t.version + 1);
            let line = t.now.line(visit, version, close);
            if let Some(old) = &t.written {
                due.lines.extend_from_slice(b"{\"sign\":-1,");
                due.lines.extend_from_slice(&old[SIGNED.len()..]);
                due.rows += 1;
            }
            due.lines.extend_from_slice(&line);
            due.rows += 1;
            let before = (t.written.replace(line.into_boxed_slice()), t.version);
            due.undo.push((visit, before, t.dirty));
            if close {
                due.closing.push(visit);
            }
            t.version = version;
            t.dirty = false;
        }
        due
    }

    /// After `due`'s lines were stored (`stored`) or refused: refused, puts
    /// back what it marked written, so that the next write cancels what was
    /// stored (and closes again what it closed); stored, forgets the visits
    /// it closed, unless rows came for one since (its next line cancels
    /// the closing one).
    pub fn settle(&self, due: Due, stored: bool) {
        if !stored {
            for (visit, (written, version), dirty) in due.undo {
                if let Some(mut t) = self.map.get_mut(&visit) {
                    t.written = written;
                    t.version = version;
                    t.dirty |= dirty;
                }
            }
            return;
        }
        for visit in due.closing {
            self.map.remove_if(&visit, |_, t| {
                !t.dirty || t.now.pageviews + t.now.events == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{EventRow, PageViewRow};

    fn view(visit: Uuid, ts: i64, url: &str, channel: &str) -> Row {
        Row::PageView(PageViewRow {
            timestamp_ms: ts,
            organizer_id: "org".into(),
            session_id: "tab".into(),
            url: url.into(),
            visit_id: visit,
            channel: channel.into(),
            ..Default::default()
        })
    }

    fn lines(due: &Due) -> Vec<serde_json::Value> {
        std::str::from_utf8(&due.lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_visit_is_written_when_it_changed_and_its_old_row_cancelled() {
        let t = Tallies::new(30 * 60_000, 1000);
        let v = Uuid::now_v7();
        let mut rows = [
            view(v, 2_000, "https://x.example/b?q=1", "search"),
            view(v, 1_000, "https://x.example/a", "search"),
            Row::Event(EventRow {
                timestamp_ms: 3_000,
                organizer_id: "org".into(),
                user_id: "buyer".into(),
                session_id: "tab".into(),
                visit_id: v,
                event_type: "add_to_cart".into(),
                ..Default::default()
            }),
        ];
        // Its engagement came first (no plugins on its way): it waits.
        t.engaged("org", v, 2_500, 500, 5);
        assert_eq!(t.due(5, Closing::Idle).rows, 0);
        t.add(count(rows.iter_mut()), 10);
        let due = t.due(10, Closing::Idle);
        let l = lines(&due);
        assert_eq!(due.rows, 1);
        t.settle(due, true);
        assert_eq!(
            (
                &l[0]["sign"],
                &l[0]["pageviews"],
                &l[0]["events"],
                &l[0]["engaged_ms"]
            ),
            (&1.into(), &2.into(), &1.into(), &500.into())
        );
        assert_eq!(
            (&l[0]["entry_page"], &l[0]["exit_page"]),
            (&"/a".into(), &"/b".into())
        );
        // Its pages and event types, for `pages_daily`; the rows keep theirs.
        assert_eq!(
            (&l[0]["pages"], &l[0]["names"]),
            (
                &serde_json::json!({"/a": 1, "/b": 1}),
                &serde_json::json!({"add_to_cart": 1})
            )
        );
        assert!(matches!(&rows[2], Row::Event(e) if e.event_type == "add_to_cart"));
        assert_eq!(
            (&l[0]["visitor"], &l[0]["user_id"]),
            (&"tab".into(), &"buyer".into())
        );
        assert_eq!(
            (&l[0]["channel"], &l[0]["version"]),
            (&"search".into(), &10.into())
        );
        // Unchanged: nothing to write.
        assert_eq!(t.due(20, Closing::Idle).rows, 0);
        t.engaged("org", v, 9_000, 4_000, 30);
        let again = t.due(30, Closing::Idle);
        let l2 = lines(&again);
        assert_eq!(again.rows, 2);
        // The cancel is the line written before, version and all.
        assert_eq!(l2[0]["sign"], -1);
        assert_eq!(
            l2[0]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "sign")
                .collect::<Vec<_>>(),
            l[0].as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "sign")
                .collect::<Vec<_>>()
        );
        assert_eq!(
            (&l2[1]["sign"], &l2[1]["engaged_ms"], &l2[1]["version"]),
            (&1.into(), &4500.into(), &30.into())
        );
        // Not stored after all: written again, cancelling the first line.
        t.settle(again, false);
        let third = t.due(30, Closing::Idle);
        let l3 = lines(&third);
        assert_eq!(
            (&l3[0]["sign"], &l3[0]["version"], &l3[1]["version"]),
            (&(-1).into(), &10.into(), &30.into())
        );
        t.settle(third, true);
        assert!(l.iter().chain(&l2).chain(&l3).all(|l| l["closed"] == 0));
        // Untouched past the timeout: closed (its line cancelled, then
        // written once more, marked its last), and forgotten once stored.
        let late = 40 + 36 * 60_000;
        let closed = t.due(late, Closing::Idle);
        let l4 = lines(&closed);
        assert_eq!(
            (closed.rows, &l4[0]["sign"], &l4[0]["closed"]),
            (2, &(-1).into(), &0.into())
        );
        assert_eq!(
            (&l4[1]["sign"], &l4[1]["closed"], &l4[1]["pageviews"]),
            (&1.into(), &1.into(), &2.into())
        );
        // Refused: closed again at the next write, cancelling what was stored.
        t.settle(closed, false);
        let again = t.due(late + 1, Closing::Idle);
        let l5 = lines(&again);
        assert_eq!(
            (l5[0]["version"].clone(), l5[1]["closed"].clone()),
            (30.into(), 1.into())
        );
        t.settle(again, true);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn past_the_most_the_visits_touched_longest_ago_are_closed_and_forgotten() {
        let t = Tallies::new(30 * 60_000, 10);
        for i in 0..25 {
            let mut rows = [view(Uuid::now_v7(), i, "https://x.example/", "")];
            t.add(count(rows.iter_mut()), i);
        }
        // Refused: nothing is forgotten, all are written again.
        let refused = t.due(100, Closing::Idle);
        assert_eq!(refused.rows, 25);
        t.settle(refused, false);
        assert_eq!(t.len(), 25);
        // Stored: the 15 touched longest ago are closed, and forgotten.
        let stored = t.due(101, Closing::Idle);
        assert_eq!(stored.rows, 25);
        let closed = lines(&stored).iter().filter(|l| l["closed"] == 1).count();
        assert_eq!(closed, 15);
        t.settle(stored, true);
        assert_eq!(t.len(), 10);
        assert!(t.map.iter().all(|e| e.seen_ms >= 15), "the newest stay");
    }

    #[test]
    fn at_a_stop_every_visit_is_closed_written_or_not() {
        let t = Tallies::new(30 * 60_000, 1000);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        t.add(count([view(a, 1, "https://x.example/a", "")].iter_mut()), 1);
        let first = t.due(2, Closing::Idle);
        t.settle(first, true);
        t.add(count([view(b, 3, "https://x.example/b", "")].iter_mut()), 3);
        let last = t.due(4, Closing::All);
        let l = lines(&last);
        // a: its line cancelled and closed; b: written once, closed.
        let closing: Vec<(&serde_json::Value, &serde_json::Value)> =
            l.iter().map(|l| (&l["sign"], &l["closed"])).collect();
        assert_eq!(closing.len(), 3, "{l:?}");
        assert_eq!(l.iter().filter(|l| l["closed"] == 1).count(), 2);
        assert!(l.iter().all(|l| l["sign"] == 1 || l["closed"] == 0));
        t.settle(last, true);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_visit_counts_its_most_values_apart_and_the_rest_as_other() {
        let t = Tallies::new(30 * 60_000, 1000);
        let v = Uuid::now_v7();
        let mut rows: Vec<Row> = (0..MOST_VALUES as i64 + 20)
            .map(|i| view(v, i, &format!("https://x.example/p/{i}"), ""))
            .collect();
        rows.push(view(v, 10_000, "https://x.example/p/0", ""));
        t.add(count(rows[..300].iter_mut()), 1);
        t.add(count(rows[300..].iter_mut()), 2);
        let due = t.due(3, Closing::Idle);
        let pages = &lines(&due)[0]["pages"];
        let pages = pages.as_object().unwrap();
        assert_eq!(pages.len(), MOST_VALUES + 1);
        assert_eq!((&pages["/p/0"], &pages[OTHER]), (&2.into(), &20.into()));
        let total: u64 = pages.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(total, rows.len() as u64);
    }

    #[test]
    fn paths_are_read_as_the_engine_reads_them() {
        assert_eq!(path("https://x.example/e/1?utm_source=a#top"), "/e/1");
        assert_eq!(path("https://x.example/"), "/");
        assert_eq!(path("https://x.example"), "");
        assert_eq!(path("https://x.example?a=/b"), "");
        assert_eq!(path("not a url"), "");
        assert_eq!(path("mailto:a@b.example"), "");
    }
}
