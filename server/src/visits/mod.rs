//! Visits, the server's sessions: the host gives each page view and event
//! the visit it belongs to (`visit_id`) and that visit's origin (`channel`,
//! `source`, `utm_*`, from [`crate::sources`]) before the plugins run.
//! Once the log has taken them, it counts them into their visit's figures
//! ([`tally`]) and writes those to the `visits` table
//! (`sql/0024_visits_written.sql`), one row per visit: no query scans raw
//! rows to find visits.
//!
//! A visitor is the tracker's tab (`session_id`), else the signed-in user
//! (`user_id`), else the address and user agent, within one organizer.
//! Their next event after `visits.timeout` (30 minutes) of silence starts a
//! new visit. A visit's id is a UUIDv7 whose time is its start, so the
//! `visits` table can order and partition by that day without ever
//! moving a visit.
//!
//! Kept in memory: a visit going on when the server restarts, or whose
//! visitor's events reach two servers, is split in two. The last few
//! visits of a visitor are kept while any of them is active, so a row that
//! arrives late joins the visit whose span (give or take the timeout) it
//! falls in; one that falls in none is a visit of its own.
//!
//! Attribution: a row of a visit that names its user (`user_id`: after the
//! tracker's or Segment's `identify`, the anonymous visit's later rows do)
//! records that visit's origin as a touch of that user, when it is not
//! direct. A ticket sale with that `user_id` is credited to the first and
//! the last touch of the 30 days before it (`first_*`, `last_*` columns);
//! with none, to direct. Touches are read back from `visits` at start
//! ([`Visits::warm`]), so a restart loses none of the last 30 days.

use foldhash::fast::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use uuid::Uuid;

use crate::ingest::engagement::Engagement;
use crate::ingest::{Host, Row};
use crate::sources::Sources;

pub(crate) mod device;
pub mod recover;
pub(crate) mod tally;

pub use tally::Closing;

/// How often (at most) ended visits are forgotten.
const SWEEP_EVERY_MS: i64 = 60_000;
/// Most touches kept per user: the newest ones.
const TOUCHES_PER_USER: usize = 8;
/// Most recent visits kept per visitor, so that a late row (a beacon sent
/// when its page closed, a retried request) still finds its visit.
const VISITS_PER_VISITOR: usize = 4;
/// Entries whose ages set the cut when a full map makes room.
const EVICTION_SAMPLE: usize = 1024;
/// Most users one visit remembers (a shared computer's few).
const USERS_PER_VISIT: usize = 4;
/// A sale's clock may run behind the visits' (the backend's against the
/// browser's): touches this much after it still count.
const CLOCK_SLACK_MS: i64 = 5 * 60_000;

struct Open {
    id: Uuid,
    start_ms: i64,
    last_ms: i64,
    /// When it was last touched, by the server's clock: what sweeping reads,
    /// so that a backfill of old events keeps its visits while it runs.
    seen_ms: i64,
    /// From its first page view; `None` while it has had only events.
    sources: Option<Arc<Sources>>,
    /// The users its rows named (a few): when its origin is learnt after
    /// them (an `identify` before the page view, in one Segment batch),
    /// each still gets the touch.
    users: Vec<u64>,
}

/// A visit's start and origin, remembered for its user.
#[derive(Clone)]
struct Touch {
    at_ms: i64,
    visit: Uuid,
    sources: Arc<Sources>,
}

/// The visits going on, and users' touches.
pub struct Visits {
    /// By visitor: their recent visits.
    open: DashMap<u64, Vec<Open>, RandomState>,
    /// By (organizer, user): their non-direct visits, oldest first.
    touches: DashMap<u64, Vec<Touch>, RandomState>,
    window_ms: i64,
    hasher: RandomState,
    timeout_ms: i64,
    max_open: usize,
    enabled: bool,
    last_sweep_ms: AtomicI64,
    /// Each visit's figures, until written.
    tallies: tally::Tallies,
    /// Six bytes of each visit id: this server's tag and this run's
    /// ([`recover::tag_of`], [`recover::run_of`]).
    tag: (u32, u16),
}

impl Visits {
    pub fn new(settings: &crate::config::VisitSettings) -> Visits {
        Visits {
            open: DashMap::with_hasher(RandomState::default()),
            touches: DashMap::with_hasher(RandomState::default()),
            window_ms: settings
                .attribution_window
                .as_millis()
                .min(i64::MAX as u128) as i64,
            hasher: RandomState::default(),
            timeout_ms: settings.timeout.as_millis().min(i64::MAX as u128) as i64,
            max_open: settings.max_open,
            enabled: settings.enabled,
            last_sweep_ms: AtomicI64::new(0),
            tallies: tally::Tallies::new(
                settings.timeout.as_millis().min(i64::MAX as u128) as i64,
                settings.max_open,
            ),
            tag: (0, 0),
        }
    }

    /// Marks the visits this server makes as its own and this run's (see
    /// [`recover`]).
    pub fn tagged(mut self, tag: u32, run: u16) -> Visits {
        self.tag = (tag, run);
        self
    }

    pub fn tag(&self) -> (u32, u16) {
        self.tag
    }

    /// Visits followed now.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The figures of visits not yet written or forgotten.
    pub(crate) fn tallies(&self) -> &tally::Tallies {
        &self.tallies
    }

    /// A batch's rows' figures, by visit ([`tally::count`]), before the
    /// log takes them; nothing when visits are off.
    pub(crate) fn count<'a>(&self, rows: impl Iterator<Item = &'a mut Row>) -> tally::Counted {
        match self.enabled {
            true => tally::count(rows),
            false => tally::Counted::default(),
        }
    }

    /// Counts stored rows (see [`Visits::count`]) into their visits.
    pub(crate) fn stored(&self, counted: tally::Counted, now_ms: i64) {
        self.tallies.add(counted, now_ms);
    }

    /// Counts a stored engagement into its visit.
    pub fn engagement_stored(&self, e: &Engagement, now_ms: i64) {
        if !e.visit_id.is_nil() {
            self.tallies.engaged(
                &e.organizer_id,
                e.visit_id,
                e.timestamp_ms,
                e.duration_ms,
                now_ms,
            );
        }
    }

    /// Fills each row's visit and origin; `now_ms` is the server's clock.
    pub fn fill<'a>(&self, rows: impl Iterator<Item = &'a mut Row>, now_ms: i64) {
        if !self.enabled {
            return;
        }
        self.sweep(now_ms);
        for row in rows {
            if let Some(h) = row.host() {
                self.place(h, now_ms);
            }
        }
    }

    fn visitor(&self, h: &Host<'_>) -> Option<u64> {
        self.visitor_of(h.organizer_id, h.session_id, h.user_id, h.ip, h.user_agent)
    }

    fn visitor_of(
        &self,
        organizer: &str,
        session: &str,
        user: &str,
        ip: &str,
        user_agent: &str,
    ) -> Option<u64> {
        let (kind, a, b) = if !session.is_empty() {
            (0u8, session, "")
        } else if !user.is_empty() {
            (1, user, "")
        } else if !ip.is_empty() {
            (2, ip, user_agent)
        } else {
            return None;
        };
        Some(self.hasher.hash_one((organizer, kind, a, b)))
    }

    /// Gives an engagement its view's visit: the visitor's visit its view's
    /// start falls in, kept going until the engagement (a long read is not
    /// silence). Nil when no such visit is followed (the server restarted,
    /// or the view never came); an engagement opens no visit.
    pub fn engaged(&self, e: &mut Engagement, ip: &str, user_agent: &str, now_ms: i64) {
        if !self.enabled {
            return;
        }
        let Some(visitor) =
            self.visitor_of(&e.organizer_id, &e.session_id, &e.user_id, ip, user_agent)
        else {
            return;
        };
        let start = e.view_start_ms();
        let Some(mut visits) = self.open.get_mut(&visitor) else {
            return;
        };
        if let Some(i) = nearest(&visits, start, self.timeout_ms) {
            let v = &mut visits[i];
            v.last_ms = v.last_ms.max(e.timestamp_ms);
            v.seen_ms = now_ms;
            e.visit_id = v.id;
        }
    }

    fn place(&self, mut h: Host<'_>, now_ms: i64) {
        if h.first_channel.is_some() {
            return self.attribute(h);
        }
        if h.visit_id.is_none() {
            return;
        }
        let ts = h.timestamp_ms;
        let page = !h.url.is_empty();
        let Some(visitor) = self.visitor(&h) else {
            // Nobody to follow: a page view is a visit of its own.
            if page {
                let sources = Sources::of(h.url, h.referrer);
                write(&mut h, Uuid::nil(), Some(&sources));
            }
            return;
        };
        let fresh = |h: &Host<'_>| Open {
            id: visit_id(ts, self.tag),
            start_ms: ts,
            last_ms: ts,
            seen_ms: now_ms,
            sources: page.then(|| Arc::new(Sources::of(h.url, h.referrer))),
            users: Vec::new(),
        };
        // Full: the visitors followed longest ago make room, so a flood of
        // made-up visitors cannot stop everyone else's visits being followed.
        if self.open.len() >= self.max_open && !self.open.contains_key(&visitor) {
            make_room(&self.open, |visits| {
                visits.iter().map(|v| v.seen_ms).max().unwrap_or(0)
            });
        }
        let timeout = self.timeout_ms;
        let touch = match self.open.entry(visitor) {
            Entry::Occupied(mut o) => {
                let visits = o.get_mut();
                // The visit it falls in (within the timeout of its span),
                // the nearest if two do; rows may arrive out of order.
                let near = nearest(visits, ts, timeout);
                let mut learnt = false;
                let i = match near {
                    Some(i) => {
                        let v = &mut visits[i];
                        v.start_ms = v.start_ms.min(ts);
                        v.last_ms = v.last_ms.max(ts);
                        v.seen_ms = now_ms;
                        if v.sources.is_none() && page {
                            v.sources = Some(Arc::new(Sources::of(h.url, h.referrer)));
                            learnt = true;
                        }
                        i
                    }
                    None => {
                        if visits.len() >= VISITS_PER_VISITOR {
                            // The one that ended first goes.
                            let oldest = (0..visits.len())
                                .min_by_key(|&i| visits[i].last_ms)
                                .unwrap_or(0);
                            visits.remove(oldest);
                        }
                        visits.push(fresh(&h));
                        visits.len() - 1
                    }
                };
                let v = &mut visits[i];
                write(&mut h, v.id, v.sources.as_deref());
                self.touches_of(&h, v, learnt)
            }
            Entry::Vacant(e) => {
                let mut v = fresh(&h);
                write(&mut h, v.id, v.sources.as_deref());
                let touches = self.touches_of(&h, &mut v, false);
                e.insert(vec![v]);
                touches
            }
        };
        // Outside the visit's entry: the two maps' locks are never nested.
        for (user, t) in touch {
            self.remember(user, t);
        }
    }

    /// The touches a row of visit `v` records: its user's, when it names
    /// one and the visit's origin is not direct; every user the visit named
    /// when its origin was `learnt` with this row.
    fn touches_of(&self, h: &Host<'_>, v: &mut Open, learnt: bool) -> Vec<(u64, Touch)> {
        let user =
            (!h.user_id.is_empty()).then(|| self.hasher.hash_one((h.organizer_id, 1u8, h.user_id)));
        if let Some(u) = user
            && !v.users.contains(&u)
            && v.users.len() < USERS_PER_VISIT
        {
            v.users.push(u);
        }
        let Some(sources) = v.sources.as_ref() else {
            return Vec::new();
        };
        if sources.channel == crate::sources::DIRECT {
            return Vec::new();
        }
        let touch = Touch {
            at_ms: v.start_ms,
            visit: v.id,
            sources: sources.clone(),
        };
        match learnt {
            true => v.users.iter().map(|u| (*u, touch.clone())).collect(),
            false => user.map(|u| (u, touch)).into_iter().collect(),
        }
    }

    fn remember(&self, user: u64, t: Touch) {
        // Full: the buyer touched longest ago makes room (made-up users must
        // not switch attribution off for everyone else).
        if self.touches.len() >= self.max_open && !self.touches.contains_key(&user) {
            make_room(&self.touches, |list| list.last().map_or(0, |t| t.at_ms));
        }
        let mut list = self.touches.entry(user).or_default();
        if list.iter().any(|old| old.visit == t.visit) {
            return;
        }
        let at = list.partition_point(|old| old.at_ms <= t.at_ms);
        list.insert(at, t);
        if list.len() > TOUCHES_PER_USER {
            list.remove(0);
        }
    }

    /// Credits a sale to its buyer's first and last touch of the window
    /// before it; to direct without one.
    fn attribute(&self, mut h: Host<'_>) {
        let ts = h.timestamp_ms;
        let (mut first, mut last) = (None, None);
        if !h.user_id.is_empty() {
            let user = self.hasher.hash_one((h.organizer_id, 1u8, h.user_id));
            if let Some(list) = self.touches.get(&user) {
                let within: Vec<&Touch> = list
                    .iter()
                    .filter(|t| t.at_ms >= ts - self.window_ms && t.at_ms <= ts + CLOCK_SLACK_MS)
                    .collect();
                first = within.first().map(|t| t.sources.clone());
                last = within.last().map(|t| t.sources.clone());
            }
        }
        let direct = Sources {
            channel: crate::sources::DIRECT,
            ..Sources::default()
        };
        fill(
            first.as_deref().unwrap_or(&direct),
            origin_columns(&mut h, Origin::First),
        );
        fill(
            last.as_deref().unwrap_or(&direct),
            origin_columns(&mut h, Origin::Last),
        );
    }

    /// Forgets visits untouched for longer than the timeout.
    fn sweep(&self, now_ms: i64) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms - last < SWEEP_EVERY_MS
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let timeout = self.timeout_ms;
        self.open.retain(|_, visits| {
            visits.retain(|v| now_ms - v.seen_ms <= timeout);
            !visits.is_empty()
        });
        // A user's touches outlive the window by a day: sales' clocks vary.
        let keep_from = now_ms - self.window_ms - 86_400_000;
        self.touches.retain(|_, list| {
            list.retain(|t| t.at_ms >= keep_from);
            !list.is_empty()
        });
    }

    /// Reads back the touches of the attribution window from `visits`:
    /// what a restart would otherwise forget. A failure is logged; sales
    /// are then credited from the visits seen since.
    pub async fn warm(&self, storage: &dyn crate::storage::Storage) {
        if !self.enabled {
            return;
        }
        // A day at a time: each read stays within the engine's result limit,
        // and a day that cannot be read costs only its own touches.
        let today = chrono::Utc::now().date_naive();
        let days = (self.window_ms / 86_400_000).max(1);
        let (mut read, mut failed) = (0, 0);
        for back in (0..=days).rev() {
            let day = today - chrono::Duration::days(back);
            match self.warm_day(storage, day).await {
                Ok(n) => read += n,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(%day, error = %e, "that day's touches could not be read back: its visits credit no sale");
                }
            }
        }
        tracing::info!(
            touches = read,
            users = self.users(),
            days_failed = failed,
            "visits' touches read back"
        );
    }

    async fn warm_day(
        &self,
        storage: &dyn crate::storage::Storage,
        day: chrono::NaiveDate,
    ) -> Result<usize, crate::storage::StorageError> {
        let sql = format!(
            "SELECT organizer_id, visit_id, user_id, toUnixTimestamp64Milli(started) AS at, channel, \
             source, utm_medium, utm_source, utm_campaign, utm_content, utm_term \
             FROM {}.visits FINAL WHERE date = {{day:Date}} AND sign = 1 AND user_id != '' \
             AND channel NOT IN ('', 'direct') ORDER BY at",
            crate::model::DATABASE
        );
        let params = [("day".to_string(), day.to_string())];
        let rows = crate::storage::json_rows_with(storage, &sql, &params).await?;
        let text =
            |r: &serde_json::Value, k: &str| crate::sources::kept(r[k].as_str().unwrap_or(""));
        for r in &rows {
            let channel = crate::sources::CHANNELS
                .into_iter()
                .find(|c| r["channel"] == *c)
                .unwrap_or(crate::sources::OTHER);
            let (Some(visit), Some(org), Some(user)) = (
                r["visit_id"].as_str().and_then(|v| v.parse().ok()),
                r["organizer_id"].as_str(),
                r["user_id"].as_str(),
            ) else {
                continue;
            };
            let user = self.hasher.hash_one((org, 1u8, user));
            self.remember(
                user,
                Touch {
                    at_ms: crate::storage::json_number(&r["at"]) as i64,
                    visit,
                    sources: Arc::new(Sources {
                        channel,
                        source: text(r, "source"),
                        utm_medium: text(r, "utm_medium"),
                        utm_source: text(r, "utm_source"),
                        utm_campaign: text(r, "utm_campaign"),
                        utm_content: text(r, "utm_content"),
                        utm_term: text(r, "utm_term"),
                    }),
                },
            );
        }
        Ok(rows.len())
    }

    /// Users with touches remembered.
    pub fn users(&self) -> usize {
        self.touches.len()
    }

    /// The timeout, for the docs and tests.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms as u64)
    }
}

/// Drops, of a sample of a map's entries (the first its shards yield), the
/// one whose `age` is least: room made at a bounded cost.
/// Makes room in a full map: a tenth of it (at least one entry) goes at
/// once, the entries seen longest ago. The cut is the tenth-oldest age
/// among a sample; the whole map is then walked, so no part of it is
/// favoured (taking the oldest of the first few entries, as this did,
/// evicted visitors that had just arrived whenever they landed there). One
/// walk per tenth of the map in new entries: about ten entries looked at
/// per new one.
fn make_room<V>(map: &DashMap<u64, V, RandomState>, age: impl Fn(&V) -> i64) {
    let mut ages: Vec<i64> = map
        .iter()
        .take(EVICTION_SAMPLE)
        .map(|e| age(e.value()))
        .collect();
    if ages.is_empty() {
        return;
    }
    ages.sort_unstable();
    let cut = ages[ages.len() / 10];
    let target = (map.len() / 10).max(1);
    let mut removed = 0;
    map.retain(|_, v| {
        let goes = removed < target && age(v) <= cut;
        removed += goes as usize;
        !goes
    });
}

/// The visit a time falls in: within `timeout` of its span, the nearest if
/// two are (rows and engagements may arrive out of order).
fn nearest(visits: &[Open], ts: i64, timeout: i64) -> Option<usize> {
    let distance = |v: &Open| (v.start_ms - ts).max(ts - v.last_ms).max(0);
    visits
        .iter()
        .enumerate()
        .filter(|(_, v)| distance(v) <= timeout)
        .min_by_key(|(_, v)| distance(v))
        .map(|(i, _)| i)
}

/// A UUIDv7 whose time is the visit's start, the server's tag in bytes
/// 10 to 13 and its run in 14 and 15 (random in a UUIDv7; its last group).
fn visit_id(start_ms: i64, (tag, run): (u32, u16)) -> Uuid {
    let ms = start_ms.max(0) as u64;
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        ((ms % 1000) * 1_000_000) as u32,
    ));
    let mut bytes = *id.as_bytes();
    bytes[10..14].copy_from_slice(&tag.to_be_bytes());
    bytes[14..16].copy_from_slice(&run.to_be_bytes());
    Uuid::from_bytes(bytes)
}

fn write(h: &mut Host<'_>, id: Uuid, sources: Option<&Sources>) {
    if let Some(v) = h.visit_id.as_deref_mut() {
        *v = id;
    }
    if let Some(s) = sources {
        fill(s, origin_columns(h, Origin::Visit));
    }
}

/// Which origin of a row: its visit's, or (a sale's) its buyer's first or
/// last touch.
#[derive(Clone, Copy)]
pub(crate) enum Origin {
    Visit,
    First,
    Last,
}

/// A row's columns of one origin, in [`fill`]'s order: channel, source,
/// then the five `utm_*`. The one place that groups them.
pub(crate) fn origin_columns<'r>(
    h: &'r mut Host<'_>,
    which: Origin,
) -> [Option<&'r mut String>; 7] {
    match which {
        Origin::Visit => [
            h.channel.as_deref_mut(),
            h.source.as_deref_mut(),
            h.utm_medium.as_deref_mut(),
            h.utm_source.as_deref_mut(),
            h.utm_campaign.as_deref_mut(),
            h.utm_content.as_deref_mut(),
            h.utm_term.as_deref_mut(),
        ],
        Origin::First => [
            h.first_channel.as_deref_mut(),
            h.first_source.as_deref_mut(),
            h.first_utm_medium.as_deref_mut(),
            h.first_utm_source.as_deref_mut(),
            h.first_utm_campaign.as_deref_mut(),
            h.first_utm_content.as_deref_mut(),
            h.first_utm_term.as_deref_mut(),
        ],
        Origin::Last => [
            h.last_channel.as_deref_mut(),
            h.last_source.as_deref_mut(),
            h.last_utm_medium.as_deref_mut(),
            h.last_utm_source.as_deref_mut(),
            h.last_utm_campaign.as_deref_mut(),
            h.last_utm_content.as_deref_mut(),
            h.last_utm_term.as_deref_mut(),
        ],
    }
}

/// An origin into its columns: channel, source, then the five `utm_*` in
/// `Sources`' order.
fn fill(s: &Sources, columns: [Option<&mut String>; 7]) {
    let values = [
        s.channel,
        &s.source,
        &s.utm_medium,
        &s.utm_source,
        &s.utm_campaign,
        &s.utm_content,
        &s.utm_term,
    ];
    for (column, value) in columns.into_iter().zip(values) {
        if let Some(c) = column {
            c.clear();
            c.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VisitSettings;
    use crate::ingest::PageViewRow;

    fn view(session: &str, ts: i64, url: &str, referrer: &str) -> Row {
        Row::PageView(PageViewRow {
            id: Uuid::now_v7(),
            timestamp: String::new(),
            timestamp_ms: ts,
            organizer_id: "org".into(),
            user_id: String::new(),
            session_id: session.into(),
            event_id: String::new(),
            url: url.into(),
            referrer: referrer.into(),
            duration_ms: 0,
            user_agent: String::new(),
            ..Default::default()
        })
    }

    fn visit(row: &mut Row) -> (Uuid, String) {
        let h = row.host().unwrap();
        (*h.visit_id.unwrap(), h.source.unwrap().clone())
    }

    const MIN: i64 = 60_000;

    #[test]
    fn thirty_minutes_of_silence_end_a_visit_and_its_origin_is_its_first_page() {
        let v = Visits::new(&VisitSettings::default());
        let t0 = 1_780_000_000_000;
        let mut rows = [
            view(
                "tab",
                t0,
                "https://t.example/?utm_source=ads",
                "https://www.google.com/",
            ),
            view(
                "tab",
                t0 + 29 * MIN,
                "https://t.example/e/2",
                "https://t.example/",
            ),
            view(
                "tab",
                t0 + 29 * MIN + 30 * MIN + 1,
                "https://t.example/e/3",
                "",
            ),
            view("other", t0, "https://t.example/", ""),
        ];
        v.fill(rows.iter_mut(), t0);
        let got: Vec<_> = rows.iter_mut().map(visit).collect();
        assert_eq!(got[0], got[1]);
        assert_eq!(got[0].1, "ads");
        assert_ne!(got[2].0, got[0].0);
        assert_eq!(got[2].1, "");
        assert_ne!(got[3].0, got[0].0);
        // The id's time is the visit's start.
        assert_eq!(
            got[0].0.get_timestamp().unwrap().to_unix().0 as i64,
            t0 / 1000
        );
        assert_eq!(v.open(), 2);
        // Swept once silent for longer than the timeout.
        v.fill(std::iter::empty(), t0 + 31 * MIN + SWEEP_EVERY_MS);
        assert_eq!(v.open(), 0);
    }

    #[test]
    fn an_engagement_joins_its_views_visit_and_keeps_it_going() {
        let v = Visits::new(&VisitSettings::default());
        let t0 = 1_780_000_000_000;
        let mut first = view("tab", t0, "https://t.example/", "https://www.google.com/");
        v.fill(std::iter::once(&mut first), t0);
        let (visit_id, _) = visit(&mut first);
        let at = |ms: i64| uuid::Timestamp::from_unix(uuid::NoContext, (ms / 1000) as u64, 0);
        // Read for 40 minutes, then left: the engagement's view started at t0.
        let mut e = Engagement {
            id: Uuid::now_v7(),
            timestamp_ms: t0 + 40 * MIN,
            organizer_id: "org".into(),
            view_id: Uuid::new_v7(at(t0)),
            duration_ms: (40 * MIN) as u64,
            session_id: "tab".into(),
            user_id: String::new(),
            visit_id: Uuid::nil(),
        };
        v.engaged(&mut e, "", "", t0 + 40 * MIN);
        assert_eq!(e.visit_id, visit_id);
        // The next page 45 minutes after the first is still that visit:
        // the reading was no silence.
        let mut next = view("tab", t0 + 45 * MIN, "https://t.example/e/2", "");
        v.fill(std::iter::once(&mut next), t0 + 45 * MIN);
        assert_eq!(visit(&mut next).0, visit_id);
        // Another tab's engagement finds no visit, and opens none.
        let mut stray = Engagement {
            session_id: "unknown".into(),
            visit_id: Uuid::nil(),
            ..e.clone()
        };
        v.engaged(&mut stray, "", "", t0 + 45 * MIN);
        assert!(stray.visit_id.is_nil());
        assert_eq!(v.open(), 1);
    }

    #[test]
    fn a_visit_opened_by_an_event_takes_its_first_page_views_origin() {
        let v = Visits::new(&VisitSettings::default());
        let t0 = 1_780_000_000_000;
        let mut event = Row::Event(crate::ingest::EventRow {
            id: Uuid::now_v7(),
            timestamp: String::new(),
            timestamp_ms: t0 + 1000,
            event_type: "click".into(),
            event_name: String::new(),
            organizer_id: "org".into(),
            user_id: String::new(),
            session_id: "tab".into(),
            event_id: String::new(),
            properties: String::new(),
            user_agent: String::new(),
            ..Default::default()
        });
        v.fill(std::iter::once(&mut event), t0);
        let mut page = view("tab", t0, "https://t.example/", "https://www.facebook.com/");
        v.fill(std::iter::once(&mut page), t0);
        assert_eq!(visit(&mut event).0, visit(&mut page).0);
        assert_eq!(visit(&mut page).1, "Facebook");
        // A backfilled event from a day before is a visit of its own.
        let mut old = view("tab", t0 - 24 * 60 * MIN, "https://t.example/", "");
        v.fill(std::iter::once(&mut old), t0);
        assert_ne!(visit(&mut old).0, visit(&mut page).0);
    }

    fn sale(user: &str, ts: i64) -> Row {
        Row::TicketSale(crate::ingest::TicketSaleRow {
            id: Uuid::now_v7(),
            timestamp_ms: ts,
            organizer_id: "org".into(),
            user_id: user.into(),
            ..Default::default()
        })
    }

    fn credited(row: &mut Row) -> (String, String) {
        let h = row.host().unwrap();
        (
            h.first_source.unwrap().clone(),
            h.last_source.unwrap().clone(),
        )
    }

    #[test]
    fn a_sale_is_credited_to_the_first_and_last_touch_of_its_window() {
        let v = Visits::new(&VisitSettings::default());
        let day = 24 * 60 * MIN;
        let t0 = 1_780_000_000_000;
        let touch = |tab: &str, ts: i64, referrer: &str| {
            let mut r = view(tab, ts, "https://t.example/", referrer);
            if let Row::PageView(p) = &mut r {
                p.user_id = "buyer".into();
            }
            r
        };
        let mut rows = [
            // Too old for a sale at t0 + 40 days.
            touch("a", t0, "https://www.bing.com/"),
            touch("b", t0 + 15 * day, "https://www.google.com/"),
            touch("c", t0 + 20 * day, ""),
            touch("d", t0 + 25 * day, "https://www.facebook.com/"),
        ];
        v.fill(rows.iter_mut(), t0);
        let mut late = sale("buyer", t0 + 40 * day);
        let mut early = sale("buyer", t0 + 10 * day);
        let mut stranger = sale("someone", t0 + 40 * day);
        v.fill([&mut late, &mut early, &mut stranger].into_iter(), t0);
        assert_eq!(credited(&mut late), ("Google".into(), "Facebook".into()));
        assert_eq!(credited(&mut early), ("Bing".into(), "Bing".into()));
        assert_eq!(credited(&mut stranger), (String::new(), String::new()));
        let h = stranger.host().unwrap();
        assert_eq!(h.first_channel.unwrap().as_str(), "direct");
    }

    #[test]
    fn past_the_limit_the_visitor_seen_longest_ago_is_forgotten() {
        let v = Visits::new(&VisitSettings {
            max_open: 1,
            ..VisitSettings::default()
        });
        let t0 = 1_780_000_000_000;
        let mut rows = [
            view("a", t0, "https://t.example/", ""),
            view("b", t0, "https://t.example/", ""),
            view("b", t0 + 1, "https://t.example/", ""),
            view("a", t0 + 2, "https://t.example/", ""),
        ];
        v.fill(rows.iter_mut(), t0);
        assert_eq!(v.open(), 1);
        let got: Vec<_> = rows.iter_mut().map(visit).collect();
        // b made room by forgetting a, and keeps its visit; a comes back
        // to a new one.
        assert_eq!(got[1].0, got[2].0);
        assert_ne!(got[0].0, got[3].0);
    }

    /// A full map forgets those seen longest ago, wherever they sit in it:
    /// a visitor who just arrived keeps their visit however many come
    /// after (the eviction looked only at the map's first entries, and
    /// forgot new visitors that landed there).
    #[test]
    fn a_full_map_keeps_the_visitors_who_just_arrived() {
        let v = Visits::new(&VisitSettings {
            max_open: 1_000,
            ..VisitSettings::default()
        });
        let t0 = 1_780_000_000_000;
        let mut first = Vec::new();
        for i in 0..20_000i64 {
            let mut row = view(&format!("tab-{i}"), t0 + i, "https://t.example/", "");
            v.fill(std::iter::once(&mut row), t0 + i);
            first.push(visit(&mut row).0);
            // Each visitor's next page, 200 visitors later, is the same visit.
            if i >= 200 {
                let j = i - 200;
                let mut next = view(&format!("tab-{j}"), t0 + i, "https://t.example/e/2", "");
                v.fill(std::iter::once(&mut next), t0 + i);
                assert_eq!(
                    visit(&mut next).0,
                    first[j as usize],
                    "visitor {j} was forgotten"
                );
            }
        }
        assert!(v.open() <= 1_000, "{}", v.open());
    }

    /// `visits.max_open` bounds how many visitors (and buyers) are kept; a
    /// visitor's origin comes from anyone's landing URL, so each value is
    /// cut at 64 bytes: at most about 2.6 KB a visitor and 4.8 KB a buyer
    /// (README, `VisitSettings::max_open`).
    #[test]
    fn a_followed_visitor_and_a_buyer_cost_a_few_kb_at_most_whatever_their_urls() {
        let v = Visits::new(&VisitSettings::default());
        let t0 = 1_780_000_000_000;
        let long: String = "\u{1D11E}".repeat(256);
        let url = format!(
            "https://t.example/?utm_source={long}&utm_medium={long}&utm_campaign={long}&utm_content={long}&utm_term={long}"
        );
        let visitors = 100;
        let mut rows: Vec<Row> = (0..visitors)
            .flat_map(|i| {
                let url = url.clone();
                (0..4).map(move |k| {
                    let mut r = view(&format!("tab-{i}"), t0 + k * 31 * MIN, &url, "");
                    if let Row::PageView(p) = &mut r {
                        p.user_id = format!("user-{i}");
                    }
                    r
                })
            })
            .collect();
        v.fill(rows.iter_mut(), t0);
        let held = |s: &Sources| {
            std::mem::size_of::<Sources>()
                + [
                    &s.source,
                    &s.utm_medium,
                    &s.utm_source,
                    &s.utm_campaign,
                    &s.utm_content,
                    &s.utm_term,
                ]
                .iter()
                .map(|x| x.capacity())
                .sum::<usize>()
        };
        let open: usize = v
            .open
            .iter()
            .flat_map(|e| {
                e.value()
                    .iter()
                    .map(|o| std::mem::size_of::<Open>() + o.sources.as_deref().map_or(0, held))
                    .collect::<Vec<_>>()
            })
            .sum();
        assert_eq!(v.open(), visitors as usize);
        let per_visitor = open / visitors as usize;
        // Each user's touches outlive the visits by 31 days: 16 of them a user.
        let touches: usize = v
            .touches
            .iter()
            .flat_map(|e| {
                e.value()
                    .iter()
                    .map(|t| held(&t.sources))
                    .collect::<Vec<_>>()
            })
            .sum();
        let per_user = touches / v.users();
        assert!(
            per_visitor <= 2_600 && per_user <= 4_800,
            "a visitor holds {per_visitor} bytes of open visits and a buyer {per_user} bytes of touches: \
             at max_open = 1 000 000, {} GB",
            (per_visitor + per_user) as f64 * 1e6 / 1e9
        );
    }
}
