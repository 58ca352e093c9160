//! Segment's HTTP Tracking API: its messages as this server's events, so an
//! app instrumented with Segment's libraries only changes its host.
//!
//! - `track` is an `events` row: `event_name` is the event's name, and
//!   `event_type` its normalised form (`Order Completed` → `order_completed`);
//!   its properties are kept.
//! - `page` is a `page_views` row (`url` and `referrer` from the properties,
//!   else from `context.page`).
//! - `identify`, `screen`, `group` and `alias` are `events` rows of that
//!   type: traits, the screen's properties, the group's traits with
//!   `group_id`, `previous_id`.
//! - `userId` is `user_id` (else `anonymousId`); `anonymousId` is also
//!   `session_id`, the visitor the server's visits follow.
//! - `messageId` is the id: a UUID as it is, any other text its UUIDv5, so a
//!   resent batch is deduplicated.
//! - The time is `timestamp`; without it `originalTimestamp` corrected for
//!   the device's clock skew (`received - (sentAt - originalTimestamp)`), as
//!   Segment does; without either, the time received.
//!
//! The result is events in this server's own shape: validation, plugins and
//! storage are those of every other request.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{DecodeError, Invalid, Rejection, Table};

/// The routes, `/v1/<call>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Batch,
    Track,
    Page,
    Identify,
    Screen,
    Group,
    Alias,
}

impl Call {
    pub const ALL: [Call; 7] = [
        Call::Batch,
        Call::Track,
        Call::Page,
        Call::Identify,
        Call::Screen,
        Call::Group,
        Call::Alias,
    ];

    /// Its route's last part, `/v1/<route>`, and a message's `type`.
    pub fn route(self) -> &'static str {
        match self {
            Call::Batch => "batch",
            Call::Track => "track",
            Call::Page => "page",
            Call::Identify => "identify",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }
}

/// A request's messages as events, per table, each with its index in the request.
#[derive(Debug, Default)]
pub struct Translated {
    pub events: Vec<(usize, Value)>,
    pub page_views: Vec<(usize, Value)>,
    pub rejections: Vec<Rejection>,
}

impl Translated {
    /// Each table's events, in request order.
    pub fn tables(&self) -> [(Table, &[(usize, Value)]); 2] {
        [
            (Table::Events, &self.events),
            (Table::PageViews, &self.page_views),
        ]
    }
}

/// Ids made from a `messageId` that is not a UUID: UUIDv5 in this namespace.
const MESSAGE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b1f_3c1e_9a43_4f0e_b8f4_5e2d_7c9a_1b30);

/// `organizer`: the one organizer the key writes for, when it is one.
pub fn translate(
    call: Call,
    body: &[u8],
    max_events: usize,
    organizer: Option<&str>,
    received: DateTime<Utc>,
) -> Result<Translated, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(mut top) = value else {
        return Err(DecodeError::WrongShape(kind(&value)));
    };
    let (messages, shared) = match call {
        Call::Batch => {
            let messages = match top.remove("batch") {
                Some(Value::Array(items)) => items,
                Some(other) => return Err(DecodeError::WrongShape(kind(&other))),
                None => return Err(DecodeError::Empty),
            };
            (messages, top)
        }
        _ => (vec![Value::Object(top)], Map::new()),
    };
    if messages.is_empty() {
        return Err(DecodeError::Empty);
    }
    if messages.len() > max_events {
        return Err(DecodeError::TooManyEvents { max: max_events });
    }
    let sent_at = shared.get("sentAt").and_then(time);
    let mut out = Translated::default();
    for (index, message) in messages.into_iter().enumerate() {
        match message_event(call, message, &shared, sent_at, organizer, received) {
            Ok((Table::PageViews, event)) => out.page_views.push((index, event)),
            Ok((_, event)) => out.events.push((index, event)),
            Err(Invalid { field, reason }) => out
                .rejections
                .push(Rejection::structural(index, field, reason)),
        }
    }
    Ok(out)
}

/// A message refused for one field; the reason names it.
fn refused(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: Some(field.to_string()),
        reason: reason.into(),
    }
}

fn message_event(
    call: Call,
    message: Value,
    shared: &Map<String, Value>,
    batch_sent_at: Option<DateTime<Utc>>,
    organizer: Option<&str>,
    received: DateTime<Utc>,
) -> Result<(Table, Value), Invalid> {
    let Value::Object(mut m) = message else {
        return Err(refused(
            "type",
            format!("each message must be a JSON object, got {}", kind(&message)),
        ));
    };
    // A batch's messages name their type; a single call's route does.
    let kind_name = match (call, m.get("type")) {
        (Call::Batch, Some(Value::String(t))) => t.to_ascii_lowercase(),
        (Call::Batch, _) => {
            return Err(refused(
                "type",
                "type: each message of a batch needs its type (track, page, identify, …)",
            ));
        }
        (_, _) => call.route().into(),
    };
    // The batch's `context` is every message's, under the message's own.
    let context = merged(shared.get("context"), m.get("context"));
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let properties = match m.remove("properties") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Map::new(),
        Some(other) => {
            return Err(refused(
                "properties",
                format!("properties: must be an object, got {}", kind(&other)),
            ));
        }
    };
    let traits = match m.remove("traits") {
        Some(Value::Object(t)) => t,
        _ => Map::new(),
    };
    let mut event = Map::new();
    if let Some(id) = text(m.get("messageId")) {
        let id = uuid::Uuid::parse_str(&id)
            .unwrap_or_else(|_| uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, id.as_bytes()));
        event.insert("id".into(), json!(id));
    }
    if let Some(at) = when(&m, batch_sent_at, received) {
        event.insert("timestamp".into(), at);
    }
    let organizer = organizer
        .map(str::to_string)
        .or_else(|| text(properties.get("organizer_id")))
        .or_else(|| text(traits.get("organizer_id")));
    if let Some(o) = organizer {
        event.insert("organizer_id".into(), json!(o));
    }
    if let Some(user) = text(m.get("userId")).or_else(|| text(m.get("anonymousId"))) {
        event.insert("user_id".into(), json!(user));
    }
    // The device's id is the visitor: an `identify` joins the anonymous
    // visit it happens in, so that visit's campaign is the user's.
    if let Some(anonymous) = text(m.get("anonymousId")) {
        event.insert("session_id".into(), json!(anonymous));
    }
    if let Some(e) = text(properties.get("event_id")) {
        event.insert("event_id".into(), json!(e));
    }
    for (ours, theirs) in [("user_agent", "userAgent"), ("ip", "ip")] {
        if let Some(v) = text(context.get(theirs)) {
            event.insert(ours.into(), json!(v));
        }
    }
    let page = context.get("page").and_then(Value::as_object);
    let (event_type, event_name, props) = match kind_name.as_str() {
        "page" => {
            for field in ["url", "referrer"] {
                let value =
                    text(properties.get(field)).or_else(|| page.and_then(|p| text(p.get(field))));
                if let Some(v) = value {
                    event.insert(field.into(), json!(v));
                }
            }
            return Ok((Table::PageViews, Value::Object(event)));
        }
        "track" => {
            let Some(name) = text(m.get("event")).filter(|n| !n.trim().is_empty()) else {
                return Err(refused(
                    "event",
                    "event: a track call needs the event's name",
                ));
            };
            (normalise(&name), name, properties)
        }
        "identify" => ("identify".into(), String::new(), traits),
        "screen" => (
            "screen".into(),
            text(m.get("name")).unwrap_or_default(),
            properties,
        ),
        "group" => {
            let mut t = traits;
            if let Some(g) = text(m.get("groupId")) {
                t.insert("group_id".into(), json!(g));
            }
            ("group".into(), String::new(), t)
        }
        "alias" => {
            let mut p = Map::new();
            if let Some(previous) = text(m.get("previousId")) {
                p.insert("previous_id".into(), json!(previous));
            }
            ("alias".into(), String::new(), p)
        }
        other => {
            return Err(refused(
                "type",
                format!(
                    "type: {other:?} is not a Segment call (track, page, identify, screen, group, \
                     alias)"
                ),
            ));
        }
    };
    event.insert("event_type".into(), json!(event_type));
    if !event_name.is_empty() {
        event.insert("event_name".into(), json!(event_name));
    }
    event.insert("properties".into(), Value::Object(props));
    Ok((Table::Events, Value::Object(event)))
}

/// The event's time, as Segment computes it. An unreadable `timestamp` is
/// passed on as it is, for validation to refuse with its reason.
fn when(
    m: &Map<String, Value>,
    batch_sent_at: Option<DateTime<Utc>>,
    received: DateTime<Utc>,
) -> Option<Value> {
    if let Some(ts) = m.get("timestamp").filter(|v| !v.is_null()) {
        return Some(ts.clone());
    }
    let original = m.get("originalTimestamp").and_then(time)?;
    let sent = m.get("sentAt").and_then(time).or(batch_sent_at);
    let at = match sent {
        Some(sent) => received - (sent - original),
        None => original,
    };
    Some(json!(at.to_rfc3339_opts(SecondsFormat::Millis, true)))
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `outer` with `inner`'s keys on top (both objects; either may be absent).
fn merged(outer: Option<&Value>, inner: Option<&Value>) -> Map<String, Value> {
    let mut out = outer
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(inner) = inner.and_then(Value::as_object) {
        out.extend(inner.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// An event name as an `event_type`: lower case, runs of anything but
/// letters, digits and `_ - . :` as one `_`, at most 64 characters.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || "_-.:".contains(c) {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out.truncate(64);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        time(&json!(text)).unwrap()
    }

    #[test]
    fn names_become_event_types() {
        assert_eq!(normalise("Order Completed"), "order_completed");
        assert_eq!(normalise("  Ticket -- Added!  "), "ticket_--_added");
        assert_eq!(normalise("checkout:step.2"), "checkout:step.2");
        assert_eq!(normalise("🎟️"), "");
        assert_eq!(normalise(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn a_batch_splits_by_table_and_keeps_indexes() {
        let body = json!({
            "sentAt": "2026-01-01T12:00:10.000Z",
            "context": {"ip": "203.0.113.9"},
            "batch": [
                {"type": "track", "event": "Order Completed", "userId": "u1",
                 "messageId": "node-next-1-abc", "timestamp": "2026-01-01T12:00:00.000Z",
                 "properties": {"organizer_id": "org-1", "event_id": "evt-9", "total": 10}},
                {"type": "page", "anonymousId": "a1", "messageId": "5f8e0b0e-4b4c-4e4a-8f3a-0c1d2e3f4a5b",
                 "originalTimestamp": "2026-01-01T12:00:05.000Z",
                 "context": {"page": {"url": "https://x.example/e/1", "referrer": "https://r.example/"}}},
                {"type": "track"},
                {"type": "teleport"},
                {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}}
            ]
        });
        let received = at("2026-01-01T12:00:20.000Z");
        let out = translate(
            Call::Batch,
            body.to_string().as_bytes(),
            100,
            Some("org-k"),
            received,
        )
        .unwrap();
        let (i, track) = &out.events[0];
        assert_eq!(*i, 0);
        assert_eq!(track["event_type"], "order_completed");
        assert_eq!(track["event_name"], "Order Completed");
        // The key's organizer wins over the properties'.
        assert_eq!(track["organizer_id"], "org-k");
        assert_eq!(track["event_id"], "evt-9");
        assert_eq!(track["ip"], "203.0.113.9");
        assert_eq!(track["properties"]["total"], 10);
        assert_eq!(track["timestamp"], "2026-01-01T12:00:00.000Z");
        let v5 = uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, b"node-next-1-abc");
        assert_eq!(track["id"], json!(v5));
        let (i, page) = &out.page_views[0];
        assert_eq!(*i, 1);
        assert_eq!(page["url"], "https://x.example/e/1");
        assert_eq!(page["referrer"], "https://r.example/");
        assert_eq!(page["user_id"], "a1");
        assert_eq!(page["id"], "5f8e0b0e-4b4c-4e4a-8f3a-0c1d2e3f4a5b");
        // Sent 5 s after it happened by the device's clock, received 10 s
        // after sending by ours: it happened at 12:00:15 by ours.
        assert_eq!(page["timestamp"], "2026-01-01T12:00:15.000Z");
        let fields: Vec<_> = out
            .rejections
            .iter()
            .map(|r| (r.index, r.field.clone().unwrap()))
            .collect();
        assert_eq!(fields, [(2, "event".into()), (3, "type".into())]);
        let (i, identify) = &out.events[1];
        assert_eq!(*i, 4);
        assert_eq!(identify["event_type"], "identify");
        assert_eq!(identify["properties"]["email"], "a@b.c");
    }

    #[test]
    fn without_a_key_organizer_the_properties_name_it() {
        let body = br#"{"event":"Viewed","userId":"u","properties":{"organizer_id":"org-7"}}"#;
        let out = translate(Call::Track, body, 10, None, Utc::now()).unwrap();
        assert_eq!(out.events[0].1["organizer_id"], "org-7");
        let out = translate(Call::Track, br#"{"event":"Viewed"}"#, 10, None, Utc::now()).unwrap();
        assert!(out.events[0].1.get("organizer_id").is_none());
    }

    #[test]
    fn bodies_that_are_not_messages() {
        assert!(matches!(
            translate(Call::Batch, b"{\"batch\":[]}", 10, None, Utc::now()),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            translate(Call::Batch, b"[1]", 10, None, Utc::now()),
            Err(DecodeError::WrongShape("an array"))
        ));
        let many = json!({"batch": vec![json!({"type": "track", "event": "x"}); 11]});
        assert!(matches!(
            translate(
                Call::Batch,
                many.to_string().as_bytes(),
                10,
                None,
                Utc::now()
            ),
            Err(DecodeError::TooManyEvents { max: 10 })
        ));
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 _:-]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "track",
                "page",
                "identify",
                "screen",
                "group",
                "alias",
                "TRACK",
                "rocket",
                "2026-01-01T00:00:00Z",
                "not a time",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "type",
                        "event",
                        "userId",
                        "anonymousId",
                        "messageId",
                        "timestamp",
                        "originalTimestamp",
                        "sentAt",
                        "properties",
                        "traits",
                        "context",
                        "name",
                        "groupId",
                        "previousId",
                        "organizer_id",
                        "url",
                        "page",
                        "userAgent",
                        "ip",
                    ])
                    .prop_map(String::from),
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Whatever a batch holds, translation does not panic, and every
        /// message comes out exactly once: as an event, a page view or a
        /// rejection, under its own index.
        #[test]
        fn every_message_comes_out_once(messages in proptest::collection::vec(json(), 1..12), org in proptest::option::of("[a-z-]{1,8}")) {
            let body = json!({"batch": messages, "sentAt": "2026-01-01T00:00:05Z"}).to_string();
            let out = translate(Call::Batch, body.as_bytes(), 100, org.as_deref(), Utc::now()).unwrap();
            let mut seen: Vec<usize> = out
                .events
                .iter()
                .chain(&out.page_views)
                .map(|(i, _)| *i)
                .chain(out.rejections.iter().map(|r| r.index))
                .collect();
            seen.sort();
            proptest::prop_assert_eq!(seen, (0..messages.len()).collect::<Vec<_>>());
            for (_, event) in out.events.iter().chain(&out.page_views) {
                if let Some(o) = &org {
                    proptest::prop_assert_eq!(&event["organizer_id"], &json!(o));
                }
            }
        }
    }
}
