//! Engagements: the time a page view was visible. The tracker sends the
//! view when it starts (so realtime counts it at once) and an engagement
//! each time the page is hidden or left: the visible time since the last
//! one. Rows of `page_engagements` (`sql/0023_engagement.sql`).
//!
//! No plugin sees them: they add nothing a plugin judges (the view was
//! judged when it came) and keep no address, user agent or user id (those
//! only find the view's visit, in `visits/`).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::decode::{self, BodyFormat, DecodeError};
use super::validate::{Check, Invalid, invalid};
use super::{Rejection, Table};

/// One engagement, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Engagement {
    pub id: Uuid,
    /// When the page was hidden or left, by the browser's clock.
    pub timestamp_ms: i64,
    pub organizer_id: String,
    /// The page view's id.
    pub view_id: Uuid,
    pub duration_ms: u64,
    /// Who, to find the view's visit; not stored.
    pub session_id: String,
    pub user_id: String,
    /// Filled by the visits.
    pub visit_id: Uuid,
}

impl Engagement {
    /// When its view started: the time in its UUIDv7 id, else its end
    /// less its duration.
    pub fn view_start_ms(&self) -> i64 {
        match self.view_id.get_version() {
            Some(uuid::Version::SortRand) => self
                .view_id
                .get_timestamp()
                .map(|t| {
                    let (s, ns) = t.to_unix();
                    s as i64 * 1000 + ns as i64 / 1_000_000
                })
                .unwrap_or(self.timestamp_ms),
            _ => self.timestamp_ms - self.duration_ms as i64,
        }
    }

    /// Its `page_engagements` row, as a JSONEachRow line.
    pub fn write(&self, out: &mut Vec<u8>) {
        let time = Utc
            .timestamp_millis_opt(self.timestamp_ms)
            .single()
            .unwrap_or_default();
        let row = serde_json::json!({
            "id": self.id,
            "timestamp": crate::storage::datetime64_text(&time),
            "organizer_id": self.organizer_id,
            "view_id": self.view_id,
            "visit_id": self.visit_id,
            "duration_ms": self.duration_ms,
        });
        serde_json::to_writer(&mut *out, &row).expect("a JSON value always serializes");
        out.push(b'\n');
    }
}

/// A request's engagements: the valid ones with their index in it, and
/// why the others were refused.
pub type Parsed = (Vec<(usize, Engagement)>, Vec<Rejection>);

/// A request's engagements. `scope`: the organizers the key may write for.
pub fn parse(
    body: &[u8],
    format: BodyFormat,
    max: usize,
    now: DateTime<Utc>,
    scope: Option<&[String]>,
) -> Result<Parsed, DecodeError> {
    let items = decode::decode(body, format, max)?;
    if items.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut ok = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let checked = item
            .map_err(|bad| Invalid::whole(bad.to_string()))
            .and_then(|raw| one(raw.get(), now, scope));
        match checked {
            Ok(e) => ok.push((index, e)),
            Err(e) => refused.push(Rejection::structural(index, e.field, e.reason)),
        }
    }
    Ok((ok, refused))
}

fn one(raw: &str, now: DateTime<Utc>, scope: Option<&[String]>) -> Result<Engagement, Invalid> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(raw) else {
        return Err(Invalid::whole("each engagement must be a JSON object"));
    };
    let check = Check(Table::PageViews);
    let organizer_id = check.text("organizer_id", text(&mut map, "organizer_id")?)?;
    if let Some(scope) = scope
        && !scope.contains(&organizer_id)
    {
        return Err(invalid(
            "organizer_id",
            format!("this API key may not write events for organizer {organizer_id:?}"),
        ));
    }
    let view_id = match map.remove("view_id") {
        Some(Value::String(s)) => Uuid::parse_str(&s).map_err(|_| {
            invalid(
                "view_id",
                format!("must be the page view's UUID, got {s:?}"),
            )
        })?,
        None | Some(Value::Null) => {
            return Err(invalid("view_id", "is required: the page view's id"));
        }
        Some(_) => return Err(invalid("view_id", "must be a string")),
    };
    let duration_ms = match map.remove("duration_ms") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => check.count("duration_ms", v)?,
            None => {
                return Err(invalid(
                    "duration_ms",
                    format!("must be a whole number from 0 to 86400000, got {n}"),
                ));
            }
        },
        None | Some(Value::Null) => return Err(invalid("duration_ms", "is required")),
        Some(_) => return Err(invalid("duration_ms", "must be a number")),
    };
    let timestamp_ms = match map.remove("timestamp") {
        None | Some(Value::Null) => now.timestamp_millis(),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|ms| {
                // The years the other tables take (2000 to 2099).
                (946_684_800_000..4_102_444_800_000).contains(ms)
            })
            .ok_or_else(|| {
                invalid(
                    "timestamp",
                    format!("must be epoch milliseconds between 2000 and 2099, got {n}"),
                )
            })?,
        Some(_) => return Err(invalid("timestamp", "must be epoch milliseconds")),
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(s)) => {
            Uuid::parse_str(&s).map_err(|_| invalid("id", format!("must be a UUID, got {s:?}")))?
        }
        Some(_) => return Err(invalid("id", "must be a UUID string")),
    };
    let session_id = check.text("session_id", text(&mut map, "session_id")?)?;
    let user_id = check.text("user_id", text(&mut map, "user_id")?)?;
    if let Some(key) = map.keys().next() {
        return Err(invalid(
            key,
            "is not a field of an engagement (id, timestamp, organizer_id, view_id, duration_ms, \
             session_id, user_id)",
        ));
    }
    Ok(Engagement {
        id,
        timestamp_ms,
        organizer_id,
        view_id,
        duration_ms,
        session_id,
        user_id,
        visit_id: Uuid::nil(),
    })
}

fn text(map: &mut Map<String, Value>, name: &str) -> Result<String, Invalid> {
    match map.remove(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(body: &str, scope: Option<&[String]>) -> Result<Engagement, Rejection> {
        let (mut ok, mut refused) =
            parse(body.as_bytes(), BodyFormat::Json, 10, Utc::now(), scope).unwrap();
        match ok.pop() {
            Some((_, e)) => Ok(e),
            None => Err(refused.pop().unwrap()),
        }
    }

    #[test]
    fn an_engagement_names_its_view_and_its_time() {
        let view = Uuid::now_v7();
        let e = parse_one(
            &format!(
                r#"{{"organizer_id":"org","view_id":"{view}","duration_ms":4200,"session_id":"s"}}"#
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            (e.view_id, e.duration_ms, e.session_id.as_str()),
            (view, 4200, "s")
        );
        // The view's start is the time in its id.
        assert!((e.view_start_ms() - Utc::now().timestamp_millis()).abs() < 5_000);
        let mut line = Vec::new();
        e.write(&mut line);
        let row: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(row["duration_ms"], 4200);
        assert_eq!(row["view_id"], view.to_string());
        assert!(
            row.get("session_id").is_none(),
            "who it was is not kept: {row}"
        );
    }

    #[test]
    fn a_bad_engagement_is_refused_naming_its_field() {
        let view = Uuid::now_v7();
        let cases = [
            (
                r#"{"organizer_id":"o","duration_ms":5}"#.to_string(),
                "view_id",
            ),
            (
                r#"{"organizer_id":"o","view_id":"nope","duration_ms":5}"#.to_string(),
                "view_id",
            ),
            (
                format!(r#"{{"organizer_id":"o","view_id":"{view}"}}"#),
                "duration_ms",
            ),
            (
                format!(r#"{{"organizer_id":"o","view_id":"{view}","duration_ms":-1}}"#),
                "duration_ms",
            ),
            (
                format!(r#"{{"organizer_id":"o","view_id":"{view}","duration_ms":86400001}}"#),
                "duration_ms",
            ),
            (
                format!(r#"{{"view_id":"{view}","duration_ms":5}}"#),
                "organizer_id",
            ),
            (
                format!(r#"{{"organizer_id":"o","view_id":"{view}","duration_ms":5,"x":1}}"#),
                "x",
            ),
            (
                format!(
                    r#"{{"organizer_id":"o","view_id":"{view}","duration_ms":5,"timestamp":1}}"#
                ),
                "timestamp",
            ),
        ];
        for (body, field) in cases {
            let r = parse_one(&body, None).unwrap_err();
            assert_eq!(r.field.as_deref(), Some(field), "{body}: {r:?}");
            assert!(r.reason.starts_with(field), "{r:?}");
        }
        let scope = ["mine".to_string()];
        let r = parse_one(
            &format!(r#"{{"organizer_id":"theirs","view_id":"{view}","duration_ms":5}}"#),
            Some(&scope),
        )
        .unwrap_err();
        assert_eq!(r.field.as_deref(), Some("organizer_id"));
    }
}
