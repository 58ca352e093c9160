//! After a crash: the figures of visits that changed after their last
//! write were in memory only. Their rows are stored (the log replays what
//! was not), so at start each recent visit of this server is summed again
//! from its rows, and one whose `visits` figures differ is written again:
//! its live row cancelled, its figures from the rows. Each visit of the
//! week before whose live row is not its last (`closed` 0: the crash came
//! before its close) is closed: no later row of it will come, since this
//! run follows visits of its own. After a clean stop there is nothing to
//! do (every visit was written as it stood, closed); a stop leaves its
//! mark only once its run's recovery, if it had one, succeeded, so one
//! that failed is done by the next start.
//!
//! Recent: visits with a row received within `slack` of the last row of
//! this server's earlier runs, however long ago that was. This server's:
//! its visit ids carry its tag ([`tag_of`]), so a server sharing a
//! ClickHouse with others never rewrites a visit another one follows, and
//! the run that made them ([`run_of`]), so none this run follows is
//! rewritten either. After a clean stop the server skips all this
//! (`Intake::recover_visits`).

use bytes::Bytes;

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError};

/// This server's tag, from what stays the same across its restarts (its
/// host's name and its log's directory) and differs between two servers:
/// four bytes of each visit id it makes.
pub fn tag_of(dir: &std::path::Path) -> u32 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // A fixed hash (FNV-1a): the tag must not change with the process.
    let mut h: u32 = 0x811c_9dc5;
    for b in host.trim().bytes().chain(dir.to_string_lossy().bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// This run of the server, told from the others of the same tag: two bytes
/// of each visit id it makes, the second it started at (they repeat every
/// 18 hours, so two runs of one server meet only if started that far
/// apart to the second).
pub fn run_of(started: std::time::SystemTime) -> u16 {
    let secs = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs % 65_536) as u16
}

/// A visit id's tag and run, as the engine reads them in its text: the
/// last group's first eight hex digits, then four.
fn id_parts() -> (&'static str, &'static str) {
    (
        "substring(toString(visit_id), 25, 8)",
        "substring(toString(visit_id), 33, 4)",
    )
}

/// Each visit's figures from its stored rows (page views, events, and the
/// engagements of visits with either), for the visits in `{recent}`, in
/// the columns of `visits`.
fn from_rows(recent: &str) -> String {
    // Aggregates under names of their own: an alias that is a column's
    // name would be read inside the other aggregates.
    format!(
        "SELECT 1 AS sign, organizer_id, toDate(UUIDv7ToDateTime(visit_id, 'UTC')) AS date, visit_id, \
         a_visitor AS visitor, a_started AS started, a_ended AS ended, a_pages AS pageviews, \
         a_events AS events, a_ms AS engaged_ms, a_entry AS entry_page, a_exit AS exit_page, \
         a_user AS user_id, a_session AS session_id, a_origin.1 AS channel, a_origin.2 AS source, \
         a_origin.3 AS utm_medium, a_origin.4 AS utm_source, a_origin.5 AS utm_campaign, \
         a_origin.6 AS utm_content, a_origin.7 AS utm_term, a_country AS country, \
         a_agent AS user_agent, '' AS device, '' AS browser, '' AS os, \
         a_paths AS pages, a_names AS names, 1 AS closed, \
         toUInt64(toUnixTimestamp64Milli(now64(3))) AS version FROM ( \
         SELECT organizer_id, visit_id, \
         argMinIf(multiIf(user_id != '', user_id, session_id != '', session_id, toString(visit_id)), \
                  timestamp, kind < 2) AS a_visitor, \
         minIf(timestamp, kind < 2) AS a_started, max(timestamp) AS a_ended, \
         toUInt32(countIf(kind = 1)) AS a_pages, toUInt32(countIf(kind = 0)) AS a_events, \
         sumIf(ms, kind > 0) AS a_ms, \
         argMinIf(page, timestamp, kind = 1) AS a_entry, \
         argMaxIf(page, timestamp, kind = 1) AS a_exit, \
         argMaxIf(user_id, timestamp, user_id != '') AS a_user, \
         argMinIf(session_id, timestamp, session_id != '') AS a_session, \
         argMinIf(origin, timestamp, origin.1 != '') AS a_origin, \
         argMinIf(country, timestamp, country != '') AS a_country, \
         argMinIf(user_agent, timestamp, user_agent != '') AS a_agent, \
         CAST(sumMapIf(map(page, toUInt32(1)), kind = 1), 'Map(String, UInt32)') AS a_paths, \
         CAST(sumMapIf(map(name, toUInt32(1)), kind = 0), 'Map(String, UInt32)') AS a_names \
         FROM ( \
           SELECT organizer_id, visit_id, timestamp, 1 AS kind, toUInt64(duration_ms) AS ms, \
                  path(url) AS page, '' AS name, \
                  user_id, session_id, \
                  (toString(channel), source, utm_medium, utm_source, utm_campaign, utm_content, \
                   utm_term) AS origin, toString(country) AS country, user_agent \
           FROM {DATABASE}.page_views WHERE visit_id GLOBAL IN ({recent}) \
           UNION ALL \
           SELECT organizer_id, visit_id, timestamp, 0, 0, '', event_type, user_id, session_id, \
                  (toString(channel), source, utm_medium, utm_source, utm_campaign, utm_content, \
                   utm_term), toString(country), user_agent \
           FROM {DATABASE}.events WHERE visit_id GLOBAL IN ({recent}) \
           UNION ALL \
           SELECT organizer_id, visit_id, timestamp, 2, duration_ms, '', '', '', '', \
                  ('', '', '', '', '', '', ''), '', '' \
           FROM {DATABASE}.page_engagements WHERE visit_id GLOBAL IN ({recent})) \
         GROUP BY organizer_id, visit_id \
         HAVING a_pages + a_events > 0)"
    )
}

/// How far back visits left open are looked for: a start after a crash
/// closes those of the week before (one that failed to, or a server that
/// came back days later, leaves older ones open: their visitor counts under
/// no exit page).
const OPEN_DAYS: i64 = 7;

/// The rows that set right the visits a crash left behind: each one's
/// live rows cancelled, then its figures from its rows (or, where they
/// agree, its live row again, closed), as JSONEachRow lines for `visits`;
/// and how many. `tag`, `run`: this server's and this
/// run's ([`tag_of`], [`run_of`]); `started`: when this run started.
pub async fn lost(
    storage: &dyn Storage,
    (tag, run): (u32, u16),
    started: chrono::DateTime<chrono::Utc>,
    slack: std::time::Duration,
) -> Result<(Bytes, usize), StorageError> {
    let nil = "toUUID('00000000-0000-0000-0000-000000000000')";
    let (tag_part, run_part) = id_parts();
    let mine = format!("{tag_part} = {{tag:String}} AND {run_part} != {{run:String}}");
    let raw = |table: &str| {
        format!("SELECT visit_id, received_at FROM {DATABASE}.{table} WHERE visit_id != {nil}")
    };
    let all = format!(
        "{} UNION ALL {} UNION ALL {}",
        raw("page_views"),
        raw("events"),
        raw("page_engagements")
    );
    // The last row of this server's earlier runs, stored before this one
    // started (what the log replays is stored since, and is recent too).
    let since = format!(
        "SELECT toString(greatest(max(received_at), toDateTime64('2000-01-01', 3, 'UTC')) \
         - toIntervalMillisecond({})) FROM ({all}) \
         WHERE received_at < {{started:DateTime64(3, 'UTC')}} AND {mine}",
        slack.as_millis().min(u32::MAX as u128)
    );
    let mut params = vec![
        ("tag".to_string(), format!("{tag:08x}")),
        ("run".to_string(), format!("{run:04x}")),
        (
            "started".to_string(),
            crate::storage::datetime64_text(&started),
        ),
        (
            "open_from".to_string(),
            (started.date_naive() - chrono::Duration::days(OPEN_DAYS)).to_string(),
        ),
    ];
    let since = crate::storage::query_text_with(
        storage,
        &since,
        &params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await?;
    params.push(("since".to_string(), since.trim().to_string()));
    let recent = format!(
        "SELECT DISTINCT visit_id FROM ({all}) \
         WHERE received_at >= {{since:DateTime64(3, 'UTC')}} AND {mine}"
    );
    let rows = from_rows(&recent);
    let stored = format!(
        "SELECT visit_id, sum(sign) AS n, sum(sign * pageviews) AS pv, sum(sign * events) AS ev, \
         sum(sign * engaged_ms) AS eng FROM {DATABASE}.visits WHERE visit_id GLOBAL IN ({recent}) \
         GROUP BY visit_id"
    );
    // Differs: never written, or its figures are not its rows'.
    let differing = format!(
        "SELECT r.visit_id FROM ({rows}) AS r LEFT JOIN ({stored}) AS s ON s.visit_id = r.visit_id \
         WHERE s.n != 1 OR s.pv != r.pageviews OR s.ev != r.events OR s.eng != r.engaged_ms"
    );
    // Left open (its live row is not its last) and agreeing: its live row
    // written again, closed.
    let open = format!(
        "SELECT visit_id FROM {DATABASE}.visits FINAL WHERE date >= {{open_from:Date}} AND {mine} \
         AND sign = 1 AND closed = 0 AND visit_id GLOBAL NOT IN ({differing})"
    );
    let columns = "sign, organizer_id, date, visit_id, visitor, started, ended, pageviews, events, \
                   engaged_ms, entry_page, exit_page, user_id, session_id, channel, source, \
                   utm_medium, utm_source, utm_campaign, utm_content, utm_term, country, user_agent, \
                   device, browser, os, pages, names, closed, version";
    // What the engine keeps of a visit (its live row, and any cancel left
    // alone) is cancelled row for row: its rows then sum to nothing.
    // `summed`: a row of the figures summed again (not a cancel, whatever
    // its sign: a lone cancel's is +1), whose device is read below.
    let sql = format!(
        "SELECT * FROM ( \
           SELECT {columns}, false AS summed FROM ( \
             SELECT * REPLACE (-sign AS sign) FROM {DATABASE}.visits FINAL \
             WHERE visit_id GLOBAL IN ({differing}) \
               OR (date >= {{open_from:Date}} AND visit_id GLOBAL IN ({open}))) \
           UNION ALL \
           SELECT {columns}, true FROM ({rows}) WHERE visit_id GLOBAL IN ({differing}) \
           UNION ALL \
           SELECT {columns}, false FROM ( \
             SELECT * REPLACE (1 AS closed, \
               toUInt64(toUnixTimestamp64Milli(now64(3))) AS version) \
             FROM {DATABASE}.visits FINAL \
             WHERE date >= {{open_from:Date}} AND visit_id GLOBAL IN ({open}) AND sign = 1)) \
         ORDER BY visit_id, sign"
    );
    let out = storage
        .query_readonly_with(&sql, &params, "JSONEachRow")
        .await?;
    let n = out.iter().filter(|b| **b == b'\n').count();
    Ok((as_written(&out)?, n))
}

/// The lines as the server writes a visit's: the rows summed again read
/// their device from their user agent (no SQL reads one as woothee does),
/// and keep their visit's [`super::tally::MOST_VALUES`] most counted pages
/// and event types apart, as the server counts them; a cancel keeps what
/// the row it cancels had, so that the two sum to nothing in every rollup.
///
/// A visit whose live row was written before its pages were (0027: no
/// pages, no event types, but page views or events) had them counted in
/// `pages_daily` from its rows as they were stored: summed again, it
/// carries none either, or they would count twice.
fn as_written(lines: &[u8]) -> Result<Bytes, StorageError> {
    let mut out = Vec::with_capacity(lines.len() + lines.len() / 8);
    // Lines come by visit, its cancels first.
    let mut counted_before: Option<serde_json::Value> = None;
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)
            .map_err(|e| StorageError::transient(format!("a visit read back: {e}")))?;
        let summed = row.remove("summed").and_then(|s| s.as_bool()) == Some(true);
        let number = |k: &str| row.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let empty = |k: &str| {
            row.get(k)
                .and_then(|v| v.as_object())
                .is_none_or(|m| m.is_empty())
        };
        if !summed
            && row.get("sign").and_then(|s| s.as_i64()) == Some(-1)
            && empty("pages")
            && empty("names")
            && number("pageviews") + number("events") > 0
        {
            counted_before = row.get("visit_id").cloned();
        }
        if summed {
            let agent = row.get("user_agent").and_then(|a| a.as_str()).unwrap_or("");
            let d = super::device::read(agent);
            row.insert("device".into(), d.kind.into());
            row.insert("browser".into(), d.browser.into());
            row.insert("os".into(), d.os.into());
            let before = counted_before.is_some() && counted_before == row.get("visit_id").cloned();
            for key in ["pages", "names"] {
                let counts = match before {
                    true => super::tally::Counts::default(),
                    false => super::tally::capped(row.remove(key)),
                };
                row.insert(key.into(), serde_json::json!(counts));
            }
        }
        serde_json::to_writer(&mut out, &row).expect("JSON values serialize");
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    fn lines(rows: &[Value]) -> Vec<u8> {
        rows.iter()
            .flat_map(|r| format!("{r}\n").into_bytes())
            .collect()
    }

    fn read(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_visit_written_before_its_pages_were_is_summed_again_without_them() {
        let row = |visit: &str, sign: i64, summed: bool, pages: Value| {
            json!({"sign": sign, "visit_id": visit, "pageviews": 2, "events": 1,
                   "user_agent": "", "pages": pages, "names": {}, "summed": summed})
        };
        let out = super::as_written(&lines(&[
            // Live before 0027: its pages were counted from its rows.
            row("a", -1, false, json!({})),
            row("a", 1, true, json!({"/x": 2})),
            // Live since: its pages are its rows'.
            row("b", -1, false, json!({"/x": 1})),
            row("b", 1, true, json!({"/x": 2})),
            // Never written.
            row("c", 1, true, json!({"/y": 2})),
        ]))
        .unwrap();
        let pages: Vec<(String, Value)> = read(&out)
            .iter()
            .map(|r| {
                (
                    r["visit_id"].as_str().unwrap().to_string(),
                    r["pages"].clone(),
                )
            })
            .collect();
        assert_eq!(
            pages,
            [
                ("a".to_string(), json!({})),
                ("a".into(), json!({})),
                ("b".into(), json!({"/x": 1})),
                ("b".into(), json!({"/x": 2})),
                ("c".into(), json!({"/y": 2})),
            ]
        );
    }

    #[test]
    fn values_summed_again_keep_the_most_counted_as_the_server_does() {
        let many: serde_json::Map<String, Value> = (0..super::super::tally::MOST_VALUES + 10)
            .map(|i| (format!("/p/{i}"), json!(if i == 7 { 100 } else { 1 })))
            .collect();
        let capped = super::super::tally::capped(Some(Value::Object(many)));
        // As the server counts a visit's: the first 500 apart, the rest as
        // one.
        assert_eq!(capped.len(), super::super::tally::MOST_VALUES + 1);
        assert_eq!((capped["/p/7"], capped["(other)"]), (100, 10));
        let total: u64 = capped.values().map(|n| u64::from(*n)).sum();
        assert_eq!(total, 100 + super::super::tally::MOST_VALUES as u64 + 9);
    }
}
