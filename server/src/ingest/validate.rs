//! Structural validation of one event, and its row for the table.
//!
//! These are the rules every event must pass to be stored at all: types,
//! required fields, lengths, ranges the columns can hold, each taken from
//! the table's declaration in [`crate::model`]. Business rules (allowed
//! currencies, plausible timestamps) belong to the plugin chain.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use uuid::Uuid;

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::Table;
use super::decode::raw_kind;
use crate::model::Kind;

/// Why an event is invalid: the field at fault, when one is, and the
/// reason the client reads (which names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Option<String>,
    pub reason: String,
}

impl Invalid {
    /// Not one field's fault: the event is no object, or unreadable.
    pub fn whole(reason: impl Into<String>) -> Self {
        Invalid {
            field: None,
            reason: reason.into(),
        }
    }
}

/// Decimal(18, 2) holds up to 10^16 - 0.01.
const MAX_PRICE_CENTS: u64 = 10u64.pow(18) - 1;

pub use super::rows::{EventRow, Host, PageViewRow, Row, TicketSaleRow, build};

impl Row {
    /// Fills the user agent and IP an event left empty from its request's
    /// (a browser's: see [`Stamp`]). A field the event set is kept.
    pub fn stamp(&mut self, stamp: &Stamp) {
        let Some((user_agent, ip)) = self.user_agent_and_ip() else {
            return;
        };
        for (field, value) in [(user_agent, &stamp.user_agent), (ip, &stamp.ip)] {
            if field.is_empty() {
                field.clone_from(value);
            }
        }
    }
}

/// What a browser's request says of its sender: its `User-Agent` and the
/// client's address. Only for requests from pages; a backend's own user
/// agent is never its users'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stamp {
    pub user_agent: String,
    pub ip: String,
}

impl Stamp {
    /// Cut to what the columns' rules allow, on a character boundary.
    pub fn new(user_agent: &str, ip: String) -> Stamp {
        let limit = |name| match crate::model::Table::Events.field(name).map(|f| f.kind) {
            Some(Kind::Text(n)) => n,
            _ => unreachable!("{name} is a text field of events"),
        };
        let cut = |text: &str, n: usize| text.chars().take(n).collect::<String>();
        Stamp {
            user_agent: cut(user_agent, limit("user_agent")),
            ip: cut(&ip, limit("ip")),
        }
    }
}

/// Validates one event, given as its JSON text, into its row. With a
/// `scope` (the organizers an ingest key may write for), an event of another
/// organizer is refused before anything else.
pub fn validate(
    table: Table,
    raw: &RawValue,
    now: DateTime<Utc>,
    scope: Option<&[String]>,
) -> Result<Row, Invalid> {
    if raw_kind(raw) != "an object" {
        return Err(Invalid::whole(format!(
            "each event must be a JSON object, got {}",
            raw_kind(raw)
        )));
    }
    let Entries(entries) =
        serde_json::from_str(raw.get()).map_err(|e| Invalid::whole(e.to_string()))?;
    let mut f = Fields {
        entries,
        table,
        properties: None,
    };
    f.in_scope(scope)?;
    let id = f.id()?;
    let timestamp = f.timestamp(now)?;
    let row = build(table, id, timestamp, &mut f)?;
    f.finish()?;
    Ok(row)
}

/// Where a row's values come from: a client's JSON ([`validate`]) or a
/// plugin's modified event, typed. Each value is checked by the model's
/// rules as it is taken ([`Check`] has them for typed values).
pub trait Source {
    /// A text field; empty when absent (and not required).
    fn text(&mut self, name: &str) -> Result<String, Invalid>;
    /// A whole-number field; 0 when absent (and not required).
    fn count(&mut self, name: &str) -> Result<u64, Invalid>;
    /// `properties`, as the text of a JSON object; read before any other
    /// field (a client may send `event_id` inside it).
    fn properties(&mut self) -> Result<String, Invalid>;
    fn price_cents(&mut self) -> Result<u64, Invalid>;
    fn currency(&mut self) -> Result<String, Invalid>;
}

pub(super) fn invalid(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: Some(field.to_string()),
        reason: format!("{field}: {}", reason.into()),
    }
}

/// An object's members as written: names (borrowed unless escaped) and raw
/// values. No tree, no sorted map: each field is read once, when taken.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(16);
                while let Some((Name(name), value)) = m.next_entry::<Name, &RawValue>()? {
                    entries.push((name, value));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A member's name, borrowed from the body unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The event's fields, taken out one by one so that what is left is unknown.
struct Fields<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
    table: Table,
    /// `properties` as sent, for an `event_id` inside it when none comes
    /// apart.
    properties: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// A field's raw JSON (the last, if the name comes twice, as JSON
    /// parsers do); null counts as absent.
    fn take_raw(&mut self, name: &str) -> Option<&'a RawValue> {
        let mut last = None;
        self.entries.retain(|(k, v)| match k == name {
            true => {
                last = Some(*v);
                false
            }
            false => true,
        });
        last.filter(|raw| raw.get().trim() != "null")
    }

    /// A JSON string's text; any other kind is refused by name.
    fn raw_string(name: &str, raw: &RawValue) -> Result<String, Invalid> {
        if raw_kind(raw) != "a string" {
            return Err(invalid(
                name,
                format!("must be a string, got {}", raw_kind(raw)),
            ));
        }
        serde_json::from_str(raw.get()).map_err(|e| invalid(name, e.to_string()))
    }

    /// An event for an organizer outside the key's scope goes no further.
    fn in_scope(&self, scope: Option<&[String]>) -> Result<(), Invalid> {
        let Some(scope) = scope else {
            return Ok(());
        };
        let organizer = self
            .entries
            .iter()
            .rev()
            .find(|(k, _)| k == "organizer_id")
            .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok());
        match organizer {
            Some(org) if !scope.contains(&org) => Err(invalid(
                "organizer_id",
                format!("this API key may not write events for organizer {org:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// The table's declaration of a field this code reads.
    fn spec(&self, name: &str) -> &'static crate::model::Field {
        self.table
            .field(name)
            .unwrap_or_else(|| panic!("{name} is not declared for {}", self.table.name()))
    }

    fn opt_text(&mut self, name: &str) -> Result<Option<String>, Invalid> {
        let spec = self.spec(name);
        match self.take_raw(name) {
            None if spec.required => Err(invalid(name, "is required")),
            None => Ok(None),
            Some(raw) => {
                text_rule(name, spec.kind, spec.required, Self::raw_string(name, raw)?).map(Some)
            }
        }
    }

    /// A string of at most `max` characters, for fields with rules of their
    /// own (the id, the currency).
    fn string(
        &mut self,
        name: &str,
        required: bool,
        max: usize,
    ) -> Result<Option<String>, Invalid> {
        match self.take_raw(name) {
            None if required => Err(invalid(name, "is required")),
            None => Ok(None),
            Some(raw) => text_rule(
                name,
                Kind::Text(max),
                required,
                Self::raw_string(name, raw)?,
            )
            .map(Some),
        }
    }

    fn uint(
        &mut self,
        name: &str,
        required: bool,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, Invalid> {
        match self.take_raw(name) {
            None if required => Err(invalid(name, "is required")),
            None => Ok(None),
            Some(raw) if raw_kind(raw) == "a number" => count_rule(
                name,
                raw.get().trim().parse().ok(),
                raw.get().trim(),
                min,
                max,
            )
            .map(Some),
            Some(raw) => Err(invalid(
                name,
                format!("must be a number, got {}", raw_kind(raw)),
            )),
        }
    }

    fn id(&mut self) -> Result<Uuid, Invalid> {
        match self.string("id", false, 64)? {
            // Time-ordered ids keep inserts of one batch close together on disk.
            None => Ok(Uuid::now_v7()),
            Some(s) => {
                Uuid::parse_str(&s).map_err(|_| invalid("id", format!("must be a UUID, got {s:?}")))
            }
        }
    }

    /// ClickHouse's text form and epoch milliseconds.
    fn timestamp(&mut self, now: DateTime<Utc>) -> Result<(String, i64), Invalid> {
        let ts = match self.take_raw("timestamp") {
            None => now,
            Some(raw) => match raw_kind(raw) {
                "a string" => {
                    let s = Self::raw_string("timestamp", raw)?;
                    parse_time(&s).ok_or_else(|| {
                        invalid(
                            "timestamp",
                            format!(
                                "must be RFC 3339 (2026-11-28T12:00:00Z) or epoch milliseconds, got {s:?}"
                            ),
                        )
                    })?
                }
                "a number" => {
                    let n = raw.get().trim();
                    n.parse::<i64>()
                        .ok()
                        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                        .ok_or_else(|| {
                            invalid(
                                "timestamp",
                                format!("{n} is not a time in epoch milliseconds"),
                            )
                        })?
                }
                other => {
                    return Err(invalid(
                        "timestamp",
                        format!("must be a string or a number, got {other}"),
                    ));
                }
            },
        };
        time_rule(ts)
    }

    /// The price as written (a number's own digits, never a float's
    /// rounding), in cents.
    fn price(&mut self) -> Result<u64, Invalid> {
        let text = match self.take_raw("price") {
            None => return Err(invalid("price", "is required")),
            Some(raw) => match raw_kind(raw) {
                "a number" => raw.get().trim().to_string(),
                "a string" => Self::raw_string("price", raw)?,
                other => {
                    return Err(invalid("price", format!("must be a number, got {other}")));
                }
            },
        };
        parse_cents(&text)
    }

    /// Anything not taken by now is a field this table does not have.
    fn finish(self) -> Result<(), Invalid> {
        match self.entries.iter().map(|(k, _)| k).min() {
            None => Ok(()),
            Some(name) => Err(invalid(name, "is not a known field")),
        }
    }
}

impl Source for Fields<'_> {
    fn text(&mut self, name: &str) -> Result<String, Invalid> {
        match self.opt_text(name)? {
            Some(text) => Ok(text),
            // A client may send an event's `event_id` inside `properties`.
            None if name == "event_id" => properties_event_id(self.table, self.properties),
            None => Ok(String::new()),
        }
    }

    fn count(&mut self, name: &str) -> Result<u64, Invalid> {
        let spec = self.spec(name);
        let Kind::Count(min, max) = spec.kind else {
            unreachable!("{name} is declared {:?}, not a count", spec.kind)
        };
        Ok(self.uint(name, spec.required, min, max)?.unwrap_or(0))
    }

    /// Kept as the client wrote it (members in its order, numbers in its
    /// digits), without the spacing; its size is that text's. No tree is
    /// built: the body's parser has already checked it is JSON.
    fn properties(&mut self) -> Result<String, Invalid> {
        let Some(raw) = self.take_raw("properties") else {
            return Ok("{}".into());
        };
        if raw_kind(raw) != "an object" {
            return Err(invalid(
                "properties",
                format!("must be an object, got {}", raw_kind(raw)),
            ));
        }
        let text = compact_json(raw.get())?;
        self.properties = Some(raw);
        properties_size_rule(self.table, text)
    }

    fn price_cents(&mut self) -> Result<u64, Invalid> {
        self.price()
    }

    fn currency(&mut self) -> Result<String, Invalid> {
        let s = self
            .string("currency", self.spec("currency").required, 3)?
            .unwrap_or_default();
        currency_rule(s)
    }
}

/// A text field's rules from its declaration: required means not blank; at
/// most its length in characters; a name holds only `[A-Za-z0-9_-.:]`.
fn text_rule(name: &str, kind: Kind, required: bool, s: String) -> Result<String, Invalid> {
    let max = match kind {
        Kind::Text(max) | Kind::Name(max) => max,
        other => unreachable!("{name} is declared {other:?}, not text"),
    };
    if required && s.trim().is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    if s.len() > max && s.chars().count() > max {
        return Err(invalid(name, format!("is longer than {max} characters")));
    }
    if matches!(kind, Kind::Name(_))
        && !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    {
        return Err(invalid(
            name,
            format!("may hold only letters, digits and _ - . : (got {s:?})"),
        ));
    }
    Ok(s)
}

/// A whole number within its declared range; `shown` is how it was written.
fn count_rule(name: &str, v: Option<u64>, shown: &str, min: u64, max: u64) -> Result<u64, Invalid> {
    match v {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(invalid(
            name,
            format!("must be a whole number from {min} to {max}, got {shown}"),
        )),
    }
}

/// An instant the tables take (years 2000 to 2099): its ClickHouse text and
/// epoch milliseconds.
fn time_rule(ts: DateTime<Utc>) -> Result<(String, i64), Invalid> {
    let year = chrono::Datelike::year(&ts);
    if !(2000..2100).contains(&year) {
        return Err(invalid(
            "timestamp",
            format!(
                "must be between the years 2000 and 2099, got {}",
                ts.to_rfc3339()
            ),
        ));
    }
    Ok((crate::storage::datetime64_text(&ts), ts.timestamp_millis()))
}

/// A currency as sales carry it: three letters, in upper case (the
/// quality plugin checks them against ISO 4217; without it, any three
/// letters are stored, and an exchange rate can be loaded for them too).
pub fn currency_code(s: &str) -> Option<String> {
    (s.len() == 3 && s.chars().all(|c| c.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
}

fn currency_rule(s: String) -> Result<String, Invalid> {
    currency_code(&s).ok_or_else(|| {
        invalid(
            "currency",
            format!("must be a three-letter ISO 4217 code such as USD, got {s:?}"),
        )
    })
}

/// The model's rules for one table, for values that come typed rather than
/// as JSON (a plugin's modified event): the same checks, the same messages,
/// and no JSON in between.
pub struct Check(pub Table);

impl Check {
    fn spec(&self, name: &str) -> &'static crate::model::Field {
        self.0.field(name).expect("declared in the model")
    }

    pub fn text(&self, name: &str, s: String) -> Result<String, Invalid> {
        let spec = self.spec(name);
        text_rule(name, spec.kind, spec.required, s)
    }

    pub fn count(&self, name: &str, v: u64) -> Result<u64, Invalid> {
        let Kind::Count(min, max) = self.spec(name).kind else {
            unreachable!("{name} is a count")
        };
        count_rule(name, Some(v), &v.to_string(), min, max)
    }

    /// ClickHouse's text form and epoch milliseconds of an instant.
    pub fn time_ms(&self, ms: i64) -> Result<(String, i64), Invalid> {
        let ts = Utc.timestamp_millis_opt(ms).single().ok_or_else(|| {
            invalid(
                "timestamp",
                format!("{ms} is not a time in epoch milliseconds"),
            )
        })?;
        time_rule(ts)
    }

    /// A JSON object as text, within its size; empty is `{}`.
    pub fn properties(&self, text: String) -> Result<String, Invalid> {
        if text.trim().is_empty() {
            return Ok("{}".into());
        }
        let raw: &RawValue = serde_json::from_str(&text).map_err(|_| {
            invalid(
                "properties",
                "must be a JSON object, got text that is not JSON",
            )
        })?;
        if raw_kind(raw) != "an object" {
            return Err(invalid(
                "properties",
                format!("must be an object, got {}", raw_kind(raw)),
            ));
        }
        properties_size_rule(self.0, text)
    }

    /// A price in cents, within what the column holds.
    pub fn price_cents(&self, cents: i64) -> Result<u64, Invalid> {
        u64::try_from(cents)
            .ok()
            .filter(|c| *c <= MAX_PRICE_CENTS)
            .ok_or_else(|| {
                invalid(
                    "price",
                    format!("{cents} cents is not a price the table holds"),
                )
            })
    }

    pub fn currency(&self, s: String) -> Result<String, Invalid> {
        currency_rule(s)
    }
}

/// `properties`' JSON text within the size its declaration allows.
fn properties_size_rule(table: Table, text: String) -> Result<String, Invalid> {
    let Some(Kind::Object(max)) = table.field("properties").map(|f| f.kind) else {
        unreachable!("properties is declared an object")
    };
    if text.len() > max {
        return Err(invalid(
            "properties",
            format!("is {} bytes as JSON, more than {max}", text.len()),
        ));
    }
    Ok(text)
}

/// `event_id` may come inside `properties`, under the same rules.
fn properties_event_id(table: Table, properties: Option<&RawValue>) -> Result<String, Invalid> {
    let Some(Kind::Text(max)) = table.field("event_id").map(|f| f.kind) else {
        unreachable!("event_id is declared text")
    };
    let Some(properties) = properties else {
        return Ok(String::new());
    };
    let Entries(members) =
        serde_json::from_str(properties.get()).map_err(|e| invalid("properties", e.to_string()))?;
    let name = "properties.event_id";
    // The last, if the name comes twice, as JSON parsers do.
    match members.into_iter().rev().find(|(k, _)| k == "event_id") {
        None => Ok(String::new()),
        Some((_, raw)) => match raw_kind(raw) {
            "null" => Ok(String::new()),
            "a string" => {
                let s = Fields::raw_string(name, raw)?;
                match s.chars().count() <= max {
                    true => Ok(s),
                    false => Err(invalid(name, format!("is longer than {max} characters"))),
                }
            }
            other => Err(invalid(name, format!("must be a string, got {other}"))),
        },
    }
}

/// Deepest nesting `properties` may have: serde_json's own limit, which
/// the tree this replaced enforced.
const MAX_DEPTH: usize = 128;

/// Valid JSON text without the spacing between its tokens: borrowed when
/// there is none (what `JSON.stringify` sends). Hand-written because the
/// text is already checked JSON: one pass over its bytes that tracks only
/// strings and depth, where a transcoder would parse it again.
fn compact_json(text: &str) -> Result<String, Invalid> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let (mut in_string, mut escaped, mut depth) = (false, false, 0usize);
    let mut out: Option<Vec<u8>> = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(invalid(
                            "properties",
                            format!(
                                "cannot be read: nested deeper than {MAX_DEPTH} levels (the recursion limit)"
                            ),
                        ));
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b' ' | b'\t' | b'\n' | b'\r' => {
                    // The first space seen: copy what came before it.
                    out.get_or_insert_with(|| bytes[..i].to_vec());
                    continue;
                }
                _ => {}
            }
        }
        if let Some(out) = out.as_mut() {
            out.push(b);
        }
    }
    let out = match out {
        Some(out) => out,
        None => return Ok(text.to_string()),
    };
    // Only ASCII spacing was removed, outside strings: still UTF-8.
    Ok(String::from_utf8(out).expect("JSON text minus its spacing is UTF-8"))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // ClickHouse's own text form, taken as UTC.
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// "12", "12.5", "12.50" → cents. More than two decimals, a sign or an
/// exponent is refused rather than rounded.
fn parse_cents(text: &str) -> Result<u64, Invalid> {
    let bad = |reason: String| invalid("price", reason);
    if text.starts_with('-') {
        return Err(bad(format!("must be 0 or more, got {text}")));
    }
    let numeric = |c: char| c.is_ascii_digit() || "eE+-.".contains(c);
    if text.contains(['e', 'E']) && text.chars().all(numeric) {
        return Err(bad(format!(
            "must be written without an exponent, such as 49.99, got {text}"
        )));
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac)) {
        return Err(bad(format!(
            "must be a decimal number such as 49.99, got {text}"
        )));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 {
        return Err(bad(format!(
            "may have at most 2 decimal places, got {text}"
        )));
    }
    let whole: u64 = whole
        .parse()
        .map_err(|_| bad(format!("is too large: {text}")))?;
    let frac: u64 = format!("{frac:0<2}").parse().expect("two digits");
    whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac))
        .filter(|c| *c <= MAX_PRICE_CENTS)
        .ok_or_else(|| bad(format!("is too large: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn row(table: Table, v: Value) -> Result<Value, Invalid> {
        let mut out = Vec::new();
        let raw = serde_json::value::to_raw_value(&v).unwrap();
        validate(table, &raw, now(), None)?.write(&mut out);
        Ok(serde_json::from_slice(&out).unwrap())
    }

    /// The line stored for each table has exactly the model's fields, in
    /// its order: the row types cannot drift from the declaration.
    #[test]
    fn stored_rows_have_the_models_fields_in_order() {
        let full = [
            (
                Table::Events,
                json!({"event_type": "click", "event_name": "n", "organizer_id": "o", "user_id": "u",
                       "session_id": "s", "event_id": "e", "properties": {"a": 1}, "user_agent": "ua", "ip": "1.2.3.4"}),
            ),
            (
                Table::PageViews,
                json!({"organizer_id": "o", "user_id": "u", "session_id": "s", "event_id": "e",
                       "url": "https://x/", "referrer": "r", "duration_ms": 5, "user_agent": "ua", "ip": "1.2.3.4"}),
            ),
            (
                Table::TicketSales,
                json!({"event_id": "e", "organizer_id": "o", "user_id": "u", "order_id": "x",
                       "quantity": 2, "price": "1.50", "currency": "EUR"}),
            ),
        ];
        for (table, event) in full {
            let mut line = Vec::new();
            let raw = serde_json::value::to_raw_value(&event).unwrap();
            let mut row = validate(table, &raw, now(), None).unwrap();
            // A host column the host filled follows the declared fields;
            // one it left unknown is left out (the engine's default is the
            // same), for parsing a key costs the engine.
            let mut host = row.host().unwrap();
            let filled = if let Some(country) = host.country.take() {
                *country = "FR".into();
                "country"
            } else if let Some(channel) = host.first_channel.take() {
                *channel = "search".into();
                "first_channel"
            } else {
                unreachable!("every client table has a host column")
            };
            row.write(&mut line);
            // serde_json keeps a map's keys in order with `preserve_order`
            // off only when read as a struct; read the raw key order instead.
            let text = String::from_utf8(line).unwrap();
            let mut keys = Vec::new();
            let mut de = serde_json::Deserializer::from_str(&text);
            struct Keys<'a>(&'a mut Vec<String>);
            impl<'de> serde::de::Visitor<'de> for Keys<'_> {
                type Value = ();
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        self.0.push(k);
                    }
                    Ok(())
                }
            }
            serde::Deserializer::deserialize_map(&mut de, Keys(&mut keys)).unwrap();
            // The declared fields, then the columns the host filled.
            let declared: Vec<&str> = table
                .fields()
                .iter()
                .map(|f| f.name)
                .chain([filled])
                .collect();
            assert_eq!(keys, declared, "{}", table.name());
        }
    }

    /// A client's `properties` is stored compact, and its size is that
    /// text's (spacing does not count); one byte past the declared size is
    /// refused with both sizes, for a plugin's modified event too.
    #[test]
    fn properties_are_stored_compact_and_refused_past_their_size() {
        let Kind::Object(max) = Table::Events.field("properties").unwrap().kind else {
            panic!("properties is an object")
        };
        let event = |props: &str| {
            format!(r#"{{"event_type": "click", "organizer_id": "o", "properties": {props}}}"#)
        };
        let take = |props: &str| {
            let raw: Box<RawValue> = serde_json::from_str(&event(props)).unwrap();
            validate(Table::Events, &raw, now(), None)
        };
        // `{"a":"…"}` is 8 bytes besides the value: exactly `max` compact.
        let fits = format!(r#"{{  "a" :  "{}"  }}"#, "x".repeat(max - 8));
        let Row::Event(row) = take(&fits).unwrap() else {
            panic!("an event")
        };
        assert_eq!(row.properties.len(), max);
        assert!(row.properties.starts_with(r#"{"a":"xx"#));
        let over = format!(r#"{{"a":"{}"}}"#, "x".repeat(max - 7));
        let Invalid { field, reason } = take(&over).unwrap_err();
        assert_eq!(field.as_deref(), Some("properties"));
        assert_eq!(
            reason,
            format!("properties: is {} bytes as JSON, more than {max}", max + 1)
        );
        // A plugin's modified event (its text is kept as given): the same
        // rule, the same message.
        assert_eq!(
            Check(Table::Events)
                .properties(row.properties.clone())
                .unwrap(),
            row.properties
        );
        assert_eq!(
            Check(Table::Events).properties(over).unwrap_err().reason,
            format!("properties: is {} bytes as JSON, more than {max}", max + 1)
        );
    }

    /// `properties` keep the client's order, digits, escapes and the spaces
    /// inside strings; only the spacing between tokens goes. An `event_id`
    /// inside them is read without a tree, under the same rules.
    #[test]
    fn properties_keep_the_clients_text_without_its_spacing() {
        let take = |body: &str| {
            let raw: Box<RawValue> = serde_json::from_str(body).unwrap();
            validate(Table::Events, &raw, now(), None)
        };
        let event = |props: &str| {
            format!(r#"{{"event_type":"click","organizer_id":"o","properties":{props}}}"#)
        };
        let Row::Event(row) = take(&event(
            "{ \"z\" : 1.50 ,\n\t\"a\": [ 1, {\"b\" : \"x \\\" } y\"} ], \"u\": \"\\u00e9 \" }",
        ))
        .unwrap() else {
            panic!("an event")
        };
        assert_eq!(
            row.properties,
            r#"{"z":1.50,"a":[1,{"b":"x \" } y"}],"u":"\u00e9 "}"#
        );
        // Already compact: kept byte for byte.
        let compact = r#"{"k":"v","n":[1,2,{"m":null}]}"#;
        let Row::Event(row) = take(&event(compact)).unwrap() else {
            panic!("an event")
        };
        assert_eq!(row.properties, compact);

        // event_id inside properties: taken when none comes apart, the last
        // if named twice; refused by name when it is not a string.
        let Row::Event(row) =
            take(&event(r#"{"event_id":"first","x":1,"event_id":"evt-9"}"#)).unwrap()
        else {
            panic!("an event")
        };
        assert_eq!(row.event_id, "evt-9");
        let Row::Event(row) = take(
            r#"{"event_type":"click","organizer_id":"o","event_id":"outer","properties":{"event_id":5}}"#,
        )
        .unwrap() else {
            panic!("an event")
        };
        assert_eq!(row.event_id, "outer", "the field apart wins");
        let Invalid { field, reason } = take(&event(r#"{"event_id":5}"#)).unwrap_err();
        assert_eq!(field.as_deref(), Some("properties.event_id"));
        assert_eq!(
            reason,
            "properties.event_id: must be a string, got a number"
        );
        for (props, kind) in [
            ("[1]", "an array"),
            ("\"{}\"", "a string"),
            ("7", "a number"),
        ] {
            let Invalid { field, reason } = take(&event(props)).unwrap_err();
            assert_eq!(field.as_deref(), Some("properties"));
            assert_eq!(reason, format!("properties: must be an object, got {kind}"));
        }

        // Nesting: 128 levels are taken, 129 refused with the reason.
        let nested = |n: usize| format!("{}{}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(take(&event(&format!(r#"{{"d":{}}}"#, nested(128)))).is_ok());
        let Invalid { field, reason } =
            take(&event(&format!(r#"{{"d":{}}}"#, nested(129)))).unwrap_err();
        assert_eq!(field.as_deref(), Some("properties"));
        assert!(reason.contains("recursion limit"), "{reason}");
    }

    /// A JSON number is parsed from its decimal text: 2^53 and beyond (and
    /// every cent) survive exactly, as a string price does.
    #[test]
    fn json_number_prices_are_exact() {
        for price in [
            "90071992547409.93",
            "9999999999999999.99",
            "0.07",
            "1234567.1",
        ] {
            let body = format!(
                r#"{{"event_id":"e","organizer_id":"o","quantity":1,"price":{price},"currency":"EUR"}}"#
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            let r = row(Table::TicketSales, v).unwrap();
            let want = match price.split_once('.') {
                Some((w, f)) => format!("{w}.{f:0<2}"),
                None => format!("{price}.00"),
            };
            assert_eq!(r["price"], want.as_str(), "{price}");
        }
        let v: Value = serde_json::from_str(
            r#"{"event_id":"e","organizer_id":"o","quantity":1,"price":5e1,"currency":"EUR"}"#,
        )
        .unwrap();
        let (field, reason) = reason(Table::TicketSales, v);
        assert_eq!(field, "price");
        assert!(reason.contains("without an exponent"), "{reason}");
    }

    fn reason(table: Table, v: Value) -> (String, String) {
        let Invalid { field, reason } = row(table, v).unwrap_err();
        (field.unwrap_or_default(), reason)
    }

    #[test]
    fn seed_track_event_is_accepted() {
        let r = row(
            Table::Events,
            json!({"event_type":"page_view","event_name":"Event Details Page","organizer_id":"org-123",
                   "user_id":"user-456","properties":{"event_id":"evt-789","browser":"Chrome","device_type":"desktop"}}),
        )
        .unwrap();
        assert_eq!(r["event_id"], "evt-789");
        assert_eq!(r["timestamp"], "2026-11-28 12:00:00.000");
        assert_eq!(r["organizer_id"], "org-123");
        let props: Value = serde_json::from_str(r["properties"].as_str().unwrap()).unwrap();
        assert_eq!(props["browser"], "Chrome");
        assert!(Uuid::parse_str(r["id"].as_str().unwrap()).is_ok());
        // Replay reads the resend key back whatever the order of the fields.
        let mut out = Vec::new();
        let raw = RawValue::from_string(r#"{"event_type":"x","organizer_id":"o"}"#.into()).unwrap();
        let row = validate(Table::Events, &raw, now(), None).unwrap();
        row.write(&mut out);
        let keys: Vec<_> = super::super::resend_keys(Table::Events, &out).collect();
        assert_eq!(keys, vec![super::super::ResendKey::of(Table::Events, &row)]);
        let reordered = format!(r#"{{"organizer_id":"o","x":1,"id":"{}"}}"#, row.id());
        let keys: Vec<_> = super::super::resend_keys(Table::Events, reordered.as_bytes()).collect();
        assert_eq!(keys, vec![super::super::ResendKey::of(Table::Events, &row)]);
    }

    /// Fields are read from the raw text: a repeated name counts once (the
    /// last, as JSON parsers do), an escaped name is the same name, and an
    /// unknown one is still refused.
    #[test]
    fn names_read_from_the_raw_text() {
        let parse = |text: &str| {
            let raw = RawValue::from_string(text.into()).unwrap();
            validate(Table::Events, &raw, now(), None)
        };
        let row = parse(r#"{"event_type":"a","event_type":"b","organizer_id":"o"}"#).unwrap();
        let Row::Event(e) = row else { panic!() };
        assert_eq!(e.event_type, "b");
        let row = parse(r#"{"event_type":"a","organizer_\u0069d":"o"}"#).unwrap();
        assert_eq!(row.organizer_id(), "o");
        let err =
            parse(r#"{"event_type":"a","organizer_id":"o","zz":1,"color":null}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("color"));
        let err = parse(r#"{"event_type":"a","organizer_id":7}"#).unwrap_err();
        assert_eq!(err.reason, "organizer_id: must be a string, got a number");
        // Whitespace around values and null as absent, read from the raw text.
        let row =
            parse("{ \"event_type\" : \"a\" ,\n \"organizer_id\": \"o\", \"user_id\" : null }")
                .unwrap();
        assert_eq!(row.organizer_id(), "o");
        let pv = |text: &str| {
            let raw = RawValue::from_string(text.into()).unwrap();
            validate(Table::PageViews, &raw, now(), None)
        };
        let err = pv(r#"{"organizer_id":"o","url":"u","duration_ms":1.5}"#).unwrap_err();
        assert_eq!(
            err.reason,
            "duration_ms: must be a whole number from 0 to 86400000, got 1.5"
        );
        let err = pv(r#"{"organizer_id":"o","url":"u","duration_ms":"5"}"#).unwrap_err();
        assert_eq!(err.reason, "duration_ms: must be a number, got a string");
        let Row::PageView(p) =
            pv(r#"{"organizer_id":"o","url":"u","duration_ms": 1500 }"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.duration_ms, 1500);
        // Out of scope is refused before anything else is looked at.
        let raw =
            RawValue::from_string(r#"{"organizer_id":"other","event_type":"!"}"#.into()).unwrap();
        let err = validate(Table::Events, &raw, now(), Some(&["mine".to_string()])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("organizer_id"));
    }

    #[test]
    fn seed_ticket_sale_is_accepted_with_exact_money() {
        let r = row(
            Table::TicketSales,
            json!({"event_id":"evt-789","organizer_id":"org-123","user_id":"user-456","quantity":2,"price":50.00,"currency":"usd"}),
        )
        .unwrap();
        assert_eq!(r["price"], "50.00");
        assert_eq!(r["currency"], "USD");
        assert_eq!(r["quantity"], 2);
        let r = row(Table::TicketSales, json!({"event_id":"e","organizer_id":"o","quantity":1,"price":"19.99","currency":"EUR"})).unwrap();
        assert_eq!(r["price"], "19.99");
    }

    #[test]
    fn each_rule_names_its_field() {
        let sale = |patch: Value| {
            let mut base =
                json!({"event_id":"e","organizer_id":"o","quantity":1,"price":10,"currency":"USD"});
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    base.as_object_mut().unwrap().remove(k);
                } else {
                    base[k] = v.clone();
                }
            }
            reason(Table::TicketSales, base)
        };
        assert_eq!(
            sale(json!({"price": -1})),
            ("price".into(), "price: must be 0 or more, got -1".into())
        );
        assert_eq!(
            sale(json!({"price": 1.005})).1,
            "price: may have at most 2 decimal places, got 1.005"
        );
        assert_eq!(
            sale(json!({"price": "ten"})).1,
            "price: must be a decimal number such as 49.99, got ten"
        );
        assert_eq!(
            sale(json!({"quantity": 0})).1,
            "quantity: must be a whole number from 1 to 10000, got 0"
        );
        assert_eq!(
            sale(json!({"quantity": "2"})).1,
            "quantity: must be a number, got a string"
        );
        assert_eq!(sale(json!({"currency": "US"})).0, "currency");
        assert_eq!(sale(json!({"event_id": null})).1, "event_id: is required");
        assert_eq!(
            sale(json!({"organizer_id": ""})).1,
            "organizer_id: must not be empty"
        );
        assert_eq!(
            sale(json!({"colour": "red"})).1,
            "colour: is not a known field"
        );
        assert_eq!(
            sale(json!({"id": "nope"})).1,
            "id: must be a UUID, got \"nope\""
        );
        assert_eq!(sale(json!({"timestamp": "yesterday"})).0, "timestamp");
        assert_eq!(
            sale(json!({"timestamp": "1999-12-31T23:59:59Z"})).0,
            "timestamp"
        );

        assert_eq!(
            reason(Table::Events, json!({"organizer_id":"o"})).1,
            "event_type: is required"
        );
        assert_eq!(
            reason(
                Table::Events,
                json!({"event_type":"a b","organizer_id":"o"})
            )
            .0,
            "event_type"
        );
        assert_eq!(
            reason(
                Table::Events,
                json!({"event_type":"x","organizer_id":"o","properties":[1]})
            )
            .1,
            "properties: must be an object, got an array"
        );
        assert_eq!(
            reason(
                Table::Events,
                json!({"event_type":"x","organizer_id":"o","properties":{"event_id":5}})
            )
            .0,
            "properties.event_id"
        );
        assert_eq!(
            reason(Table::PageViews, json!({"organizer_id":"o"})).1,
            "url: is required"
        );
        assert_eq!(
            reason(
                Table::PageViews,
                json!({"organizer_id":"o","url":"/","duration_ms":-5})
            )
            .0,
            "duration_ms"
        );
        assert_eq!(
            reason(Table::Events, json!("x")).1,
            "each event must be a JSON object, got a string"
        );
    }

    #[test]
    fn timestamps_in_three_forms() {
        for (input, want) in [
            (
                json!("2026-11-01T10:00:00.5+01:00"),
                "2026-11-01 09:00:00.500",
            ),
            (json!("2026-11-01 10:00:00"), "2026-11-01 10:00:00.000"),
            (json!(1_790_000_000_000i64), "2026-09-21 14:13:20.000"),
        ] {
            let r = row(
                Table::Events,
                json!({"event_type":"x","organizer_id":"o","timestamp":input}),
            )
            .unwrap();
            assert_eq!(r["timestamp"], want);
        }
    }
}
