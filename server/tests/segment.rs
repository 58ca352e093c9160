//! Segment's HTTP Tracking API (`/v1/batch`, `/v1/track`, …): Segment's own
//! Node library lands rows in the right tables with the right fields, and
//! raw requests check ids, timestamps, organizers and errors.

mod common;

use std::process::Command;

use common::install::{npm, output, pip, script};
use common::{TestServer, as_u64};
use serde_json::{Value, json};

/// A write key scoped to one organizer, and one for any organizer.
const SCOPED: &str = "segment-write-key@org-seg";
const ANY: &str = "segment-any-organizer";

async fn start() -> TestServer {
    TestServer::start(|c| c.ingest_keys = vec![SCOPED.into(), ANY.into()]).await
}

/// POST as Segment's libraries do: the write key as Basic auth's username.
async fn segment(s: &TestServer, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .basic_auth(key, Some(""))
        .json(body)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

#[tokio::test]
async fn segments_node_library_lands_rows_in_the_right_tables() {
    let dir = npm("segment-node", &["@segment/analytics-node@3.1.0"]);
    std::fs::copy(script("segment_check.mjs"), dir.join("segment_check.mjs")).unwrap();
    let s = start().await;
    let mut node = Command::new("node");
    node.arg("segment_check.mjs")
        .current_dir(&dir)
        .env("WRITE_KEY", SCOPED.split('@').next().unwrap())
        .env("HOST", &s.base);
    let ran = output(node).await;
    assert!(ran.ok && ran.stdout.contains("segment: ok"), "{}", ran.text);
    let sent: Vec<Value> = serde_json::from_str(ran.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(sent.len(), 7);
    s.flush().await;

    let events = s
        .query(
            "SELECT event_type, event_name, organizer_id, user_id, event_id, properties, \
             user_agent, ip, toString(id) AS id FROM bilten_analytics.events ORDER BY event_type",
        )
        .await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "alias",
            "checkout_started",
            "group",
            "identify",
            "order_completed",
            "screen"
        ]
    );
    let by_type = |t: &str| events.iter().find(|e| e["event_type"] == t).unwrap();
    let order = by_type("order_completed");
    assert_eq!(order["event_name"], "Order Completed");
    // The key writes for one organizer: its events are that organizer's.
    assert!(events.iter().all(|e| e["organizer_id"] == "org-seg"));
    assert_eq!(order["user_id"], "user-1");
    assert_eq!(order["event_id"], "evt-42");
    let props: Value = serde_json::from_str(order["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["revenue"], json!(99.5));
    assert_eq!(props["products"][0]["sku"], "vip");
    assert_eq!(order["ip"], "203.0.113.7");
    assert!(order["user_agent"].as_str().unwrap().contains("iPhone"));
    // The library's own user agent (it is a backend) is never an event's.
    let anon = by_type("checkout_started");
    assert_eq!(
        (anon["user_id"].as_str(), anon["user_agent"].as_str()),
        (Some("anon-9"), Some(""))
    );
    let traits: Value =
        serde_json::from_str(by_type("identify")["properties"].as_str().unwrap()).unwrap();
    assert_eq!(traits, json!({"plan": "pro", "name": "Ada"}));
    let group: Value =
        serde_json::from_str(by_type("group")["properties"].as_str().unwrap()).unwrap();
    assert_eq!(group["group_id"], "company-7");
    assert_eq!(by_type("screen")["event_name"], "Seat Map");
    let alias: Value =
        serde_json::from_str(by_type("alias")["properties"].as_str().unwrap()).unwrap();
    assert_eq!(alias, json!({"previous_id": "anon-9"}));

    let views = s
        .query("SELECT url, referrer, event_id, user_id, organizer_id FROM bilten_analytics.page_views")
        .await;
    assert_eq!(
        views,
        [
            json!({"url": "https://tickets.example/events/evt-42", "referrer": "https://search.example/",
                "event_id": "evt-42", "user_id": "user-1", "organizer_id": "org-seg"})
        ]
    );
    // Each message's id comes from its messageId: the same batch resent is
    // stored once.
    let resent = json!({"batch": sent, "sentAt": chrono::Utc::now().to_rfc3339()});
    let (status, body) = segment(&s, "/v1/batch", "segment-write-key", &resent).await;
    assert_eq!((status, as_u64(&body["duplicates"])), (200, 7), "{body}");
    s.flush().await;
    assert_eq!(s.count("events").await, 6);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn raw_calls_ids_times_organizers_and_errors() {
    let s = start().await;
    // A key for any organizer: the properties name it; without one, the
    // message is refused by field and its neighbour is kept.
    let batch = json!({
        "sentAt": "2026-03-01T10:00:10.000Z",
        "batch": [
            {"type": "track", "event": "Ticket Added", "userId": "u", "messageId": "m-1",
             "properties": {"organizer_id": "org-a"}, "originalTimestamp": "2026-03-01T10:00:00.000Z"},
            {"type": "track", "event": "Ticket Added", "userId": "u", "messageId": "m-2"},
            {"type": "page", "userId": "u", "messageId": "m-3", "properties": {"organizer_id": "org-a"}},
            {"type": "rocket", "messageId": "m-4"}
        ]
    });
    let (status, body) = segment(&s, "/v1/batch", ANY, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        (as_u64(&body["accepted"]), as_u64(&body["rejected"])),
        (1, 3)
    );
    let refused: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (as_u64(&e["index"]), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(refused, [(1, "organizer_id"), (2, "url"), (3, "type")]);
    s.flush().await;
    let rows = s
        .query("SELECT toString(id) AS id, timestamp FROM bilten_analytics.events")
        .await;
    assert_eq!(rows.len(), 1);
    // A messageId that is not a UUID is mapped to one, the same each time.
    let id = uuid::Uuid::parse_str(rows[0]["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 5);
    // The device's clock said 10 s between the event and sending; the time
    // is ours at receipt minus those 10 s, so within the last minute.
    let at = chrono::NaiveDateTime::parse_from_str(
        rows[0]["timestamp"].as_str().unwrap(),
        "%Y-%m-%d %H:%M:%S%.3f",
    )
    .unwrap()
    .and_utc();
    let age = chrono::Utc::now() - at;
    assert!(
        age > chrono::Duration::seconds(9) && age < chrono::Duration::seconds(60),
        "{age}"
    );

    // A single call's route names its type.
    let (status, body) = segment(
        &s,
        "/v1/track",
        ANY,
        &json!({"event": "Seat Held", "userId": "u", "properties": {"organizer_id": "org-b"}}),
    )
    .await;
    assert_eq!((status, as_u64(&body["accepted"])), (200, 1), "{body}");
    // Nothing usable: 400, which Segment's libraries do not retry.
    let (status, body) = segment(&s, "/v1/identify", ANY, &json!({"userId": "u"})).await;
    assert_eq!(
        (status, body["success"].clone()),
        (400, json!(false)),
        "{body}"
    );
    let (status, body) = segment(&s, "/v1/batch", ANY, &json!({"batch": "no"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("a string"),
        "{body}"
    );
    // A scoped key cannot write for another organizer through the properties.
    let (status, _) = segment(
        &s,
        "/v1/track",
        "segment-write-key",
        &json!({"event": "X", "userId": "u", "properties": {"organizer_id": "org-other"}}),
    )
    .await;
    assert_eq!(status, 200);
    s.flush().await;
    let orgs = s
        .query("SELECT DISTINCT organizer_id AS o FROM bilten_analytics.events ORDER BY o")
        .await;
    assert_eq!(
        orgs,
        [
            json!({"o": "org-a"}),
            json!({"o": "org-b"}),
            json!({"o": "org-seg"})
        ]
    );
    // A wrong write key is a 401.
    let (status, _) = segment(&s, "/v1/track", "wrong", &json!({"event": "X"})).await;
    assert_eq!(status, 401);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn segments_python_library_lands_rows_too() {
    let python = pip("segment-python", &["segment-analytics-python==2.4.0"]);
    let s = start().await;
    let mut check = Command::new(python);
    check
        .arg(script("segment_python_check.py"))
        .env("WRITE_KEY", SCOPED.split('@').next().unwrap())
        .env("HOST", &s.base);
    let ran = output(check).await;
    assert!(
        ran.ok && ran.stdout.contains("segment-python: ok"),
        "{}",
        ran.text
    );
    s.flush().await;
    let events = s
        .query(
            "SELECT event_type, event_name, event_id, user_id, organizer_id \
             FROM bilten_analytics.events ORDER BY event_type",
        )
        .await;
    assert_eq!(
        events,
        [
            json!({"event_type": "identify", "event_name": "", "event_id": "", "user_id": "user-py", "organizer_id": "org-seg"}),
            json!({"event_type": "ticket_scanned", "event_name": "Ticket Scanned", "event_id": "evt-py", "user_id": "user-py", "organizer_id": "org-seg"}),
        ]
    );
    let views = s
        .query("SELECT url, user_id FROM bilten_analytics.page_views")
        .await;
    assert_eq!(
        views,
        [json!({"url": "https://tickets.example/py", "user_id": "user-py"})]
    );
    s.stop().await.unwrap();
}

/// Segment's `anonymousId` is the visitor: a `page` from a campaign, then
/// `identify` with the same `anonymousId`, then a sale sent by the backend
/// with only the user's id: the sale is credited to that campaign.
#[tokio::test]
async fn an_identify_credits_the_anonymous_visits_campaign_to_the_user() {
    let s = start().await;
    let (status, body) = segment(
        &s,
        "/v1/batch",
        ANY,
        &json!({"batch": [
            {"type": "page", "anonymousId": "anon-7", "properties": {"organizer_id": "org-seg"},
             "context": {"page": {"url": "https://tickets.example/e/1?utm_source=ig&utm_medium=social&utm_campaign=spring_sale",
                                  "referrer": "https://l.instagram.com/"}}},
            {"type": "identify", "anonymousId": "anon-7", "userId": "buyer-7",
             "traits": {"organizer_id": "org-seg"}},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = s
        .client
        .post(format!("{}/v1/ticket-sales", s.base))
        .bearer_auth(ANY)
        .json(
            &json!({"organizer_id": "org-seg", "event_id": "e-1", "user_id": "buyer-7",
                      "quantity": 2, "price": "45.00", "currency": "EUR"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    s.flush().await;
    let sale = s
        .query(
            "SELECT last_utm_campaign AS campaign, last_channel AS channel, last_source AS source \
             FROM bilten_analytics.ticket_sales",
        )
        .await;
    assert_eq!(
        sale,
        [json!({"campaign": "spring_sale", "channel": "social", "source": "ig"})]
    );
    s.stop().await.unwrap();
}
