//! The browser tracker and what the server does for pages: a real page on
//! another origin in headless Chromium lands page views (counted in realtime
//! while the page is open; their visible time comes after, as engagements)
//! and custom events, stamped with the browser's own user agent;
//! public keys, CORS and the client's address are held to their rules.

mod common;

use std::sync::{Arc, OnceLock};

use axum::response::Html;
use bilten_analytics::config::Config;
use bilten_analytics::config::browser::PublicKey;
use common::{TestServer, as_u64};
use serde_json::{Value, json};

const SECRET: &str = "backend-ingest-key";
const PUBLIC: &str = "pk_site_0123456789";

/// A site on an origin of its own; its pages load the tracker from the
/// server, whose address is known once the server is up (it needs the
/// site's origin first).
async fn site() -> (String, Arc<OnceLock<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let server: Arc<OnceLock<String>> = Arc::default();
    let page = {
        let server = server.clone();
        move |title: &'static str| {
            let server = server.get().cloned().unwrap_or_default();
            Html(format!(
                r#"<!doctype html><html><head><title>{title}</title>
<script defer src="{server}/v1/tracker.js" data-organizer="org-web" data-key="{PUBLIC}"></script>
</head><body><h1>{title}</h1><a id="next" href="/next">Next</a></body></html>"#
            ))
        }
    };
    let next = page.clone();
    // The package's ESM build, for the page to use directly.
    let package =
        std::fs::read_to_string(common::install::js_package().join("dist/index.js")).unwrap();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || async move { page("Events") }),
        )
        .route(
            "/next",
            axum::routing::get(move || async move { next("Next") }),
        )
        .route(
            "/lib/index.js",
            axum::routing::get(move || async move {
                ([("content-type", "text/javascript")], package.clone())
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, server)
}

/// The server, with a public key for `origin`'s pages.
async fn server_for(origin: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let origin = origin.to_string();
    TestServer::start(move |c| {
        c.ingest_keys = vec![SECRET.into()];
        c.browser.public_keys = vec![PublicKey {
            key: PUBLIC.into(),
            organizer: "org-web".into(),
            origins: vec![origin],
        }];
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn a_real_page_on_another_origin_lands_its_views_and_events() {
    let Some(chromium) = common::install::chromium_or_skip() else {
        return;
    };
    let python = common::install::playwright();
    let (origin, server_url) = site().await;
    let s = server_for(&origin, |_| {}).await;
    server_url.set(s.base.clone()).unwrap();
    let mut check = std::process::Command::new(python);
    check
        .arg(common::install::script("tracker_check.py"))
        .env("SITE", &origin)
        .env("SERVER", &s.base)
        .env("PUBLIC_KEY", PUBLIC)
        .env("ADMIN_TOKEN", common::ADMIN)
        .env("CHROMIUM", chromium);
    let ran = common::install::output(check).await;
    assert!(ran.ok, "{}", ran.text);
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(report["failed"], json!([]), "{report}");
    // The first page, a second after it opened and before it was left.
    assert_eq!(report["realtime_views_while_open"], 1, "{report}");
    let user_agent = report["user_agent"].as_str().unwrap();
    assert!(user_agent.contains("Chrome"), "{user_agent}");
    s.flush().await;

    let views = s
        .query(
            "SELECT url, referrer, v.duration_ms AS sent_ms, t.duration_ms AS visible_ms, \
             user_agent, ip, session_id, user_id, v.organizer_id AS organizer_id, \
             toString(visit_id) AS visit \
             FROM bilten_analytics.page_views AS v \
             LEFT JOIN bilten_analytics.page_view_time AS t ON t.view_id = v.id \
             ORDER BY timestamp",
        )
        .await;
    let urls: Vec<(&str, &str)> = views
        .iter()
        .map(|v| (v["url"].as_str().unwrap(), v["referrer"].as_str().unwrap()))
        .collect();
    let home = format!("{origin}/");
    let spa = format!("{origin}/events/evt-1");
    let next = format!("{origin}/next");
    assert_eq!(
        urls,
        [
            (home.as_str(), ""),
            (spa.as_str(), home.as_str()),
            (next.as_str(), spa.as_str())
        ],
        "{views:?}"
    );
    // Each view's visible time came as engagements: the first page was
    // open 5 s; the others' ends came too, as the tab navigated and left.
    assert!(as_u64(&views[0]["visible_ms"]) >= 4_500, "{views:?}");
    for v in &views {
        assert_eq!(as_u64(&v["sent_ms"]), 0, "the view is sent before it ends");
        assert!(as_u64(&v["visible_ms"]) > 0, "{views:?}");
    }
    // The visit's time and its engaged time take them in, once each.
    let visit = s
        .query(&format!(
            "SELECT toUInt32(pageviews) AS pages, engaged_ms AS engaged, \
             toUInt64(dateDiff('millisecond', started, ended)) AS span \
             FROM bilten_analytics.visits FINAL WHERE visit_id = toUUID('{}')",
            views[0]["visit"].as_str().unwrap()
        ))
        .await;
    let total: u64 = views.iter().map(|v| as_u64(&v["visible_ms"])).sum();
    assert_eq!(visit[0]["pages"], 3, "{visit:?}");
    assert_eq!(as_u64(&visit[0]["engaged"]), total, "{visit:?}");
    assert!(
        as_u64(&visit[0]["span"]) >= 5_000,
        "the last page's time counts: {visit:?}"
    );
    let session = views[0]["session_id"].as_str().unwrap();
    assert_eq!(session.len(), 36);
    for v in &views {
        assert_eq!(v["user_agent"], user_agent, "the browser's own user agent");
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["organizer_id"], "org-web");
        assert_eq!(v["session_id"], session, "one tab, one session");
    }
    // The third page's view went when it started, before identify(): it
    // names no user. identify() applies from then on (its event, below).
    assert_eq!(views[2]["user_id"], "", "{views:?}");

    let events = s
        .query(
            "SELECT event_type, event_id, properties, user_agent, session_id, user_id, \
             toString(visit_id) AS visit FROM bilten_analytics.events",
        )
        .await;
    assert_eq!(events.len(), 3, "{events:?}");
    // identify() is said at once, in the tab's visit: the one its views are in.
    let identify = events
        .iter()
        .position(|e| e["event_type"] == "identify")
        .expect("the identify event");
    assert_eq!(events[identify]["user_id"], "user-77");
    assert_eq!(events[identify]["session_id"], session);
    let visits = s
        .query("SELECT DISTINCT toString(visit_id) AS visit FROM bilten_analytics.page_views")
        .await;
    assert_eq!(
        visits,
        [json!({"visit": events[identify]["visit"]})],
        "one tab, one visit"
    );
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != identify)
        .map(|(_, e)| e.clone())
        .collect();
    // The package itself, in the page: its Authorization header needs a
    // CORS preflight, which the browser made and the server answered.
    let package = events
        .iter()
        .position(|e| e["event_type"] == "from_package")
        .expect("the package's event");
    assert_eq!(events[package]["user_agent"], user_agent);
    assert_eq!(events[package]["session_id"], "");
    let events = [events[1 - package].clone()];
    assert_eq!(events[0]["event_type"], "add_to_cart");
    assert_eq!(events[0]["event_id"], "evt-1");
    assert_eq!(events[0]["user_agent"], user_agent);
    assert_eq!(events[0]["session_id"], session);
    let props: Value = serde_json::from_str(events[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["url"], home.as_str());
    assert_eq!(props["quantity"], 2);
    s.stop().await.unwrap();
}

async fn post(s: &TestServer, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut r = s.client.post(format!("{}{path}", s.base)).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    common::status_and_body(r.send().await.unwrap()).await
}

/// What a public key found in a page's source can and cannot do, CORS, and
/// whose user agent and address an event gets.
#[tokio::test]
async fn public_keys_cors_and_stamping_hold_to_their_rules() {
    let site = "https://tickets.example";
    let s = server_for(site, |c| {
        c.browser.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let event = json!({"event_type": "click", "organizer_id": "org-web"});
    let beacon = format!("/v1/collect/events?key={PUBLIC}");
    let from_site = [("origin", site), ("user-agent", "Mozilla/5.0 Test Browser")];

    // From the site: taken, stamped with the request's user agent and the
    // client's address (the proxy in front of us, 127.0.0.1, is trusted).
    let mut headers = from_site.to_vec();
    headers.push(("x-forwarded-for", "198.51.100.23"));
    let (status, body) = post(&s, &beacon, &headers, &event).await;
    assert_eq!(status, 202, "{body}");
    // The key's organizer only.
    let (status, body) = post(
        &s,
        &beacon,
        &from_site,
        &json!({"event_type": "click", "organizer_id": "org-other"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "organizer_id");
    // Another site, or no site at all: refused, with the reason.
    let (status, body) = post(&s, &beacon, &[("origin", "https://evil.example")], &event).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("https://evil.example"),
        "{body}"
    );
    let (status, body) = post(&s, &beacon, &[], &event).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
    // Page views and events only: no ticket sales from a page.
    let sale = json!({"event_id": "e", "organizer_id": "org-web", "quantity": 1, "price": 1, "currency": "EUR"});
    let (status, body) = post(
        &s,
        "/v1/ticket-sales",
        &[
            ("origin", site),
            ("authorization", &format!("Bearer {PUBLIC}")),
        ],
        &sale,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // A secret key in a URL is refused (and said to be compromised).
    let (status, body) = post(&s, &format!("/v1/events?key={SECRET}"), &[], &event).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("never in a URL"),
        "{body}"
    );
    // …wherever it stands, behind a public key too.
    let (status, body) = post(
        &s,
        &format!("/v1/events?key={PUBLIC}&key={SECRET}"),
        &from_site,
        &event,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("never in a URL"),
        "{body}"
    );
    // A backend's request: its own user agent is not its users'.
    let (status, _) = post(
        &s,
        "/v1/events",
        &[
            ("authorization", &format!("Bearer {SECRET}")),
            ("user-agent", "curl/8.5.0"),
        ],
        &json!({"event_type": "backend", "organizer_id": "org-web"}),
    )
    .await;
    assert_eq!(status, 202);
    // A page's event that names its own user agent keeps it.
    let (status, _) = post(
        &s,
        &beacon,
        &from_site,
        &json!({"event_type": "own_ua", "organizer_id": "org-web", "user_agent": "Custom/1.0"}),
    )
    .await;
    assert_eq!(status, 202);
    s.flush().await;
    let rows = s
        .query("SELECT event_type, user_agent, ip FROM bilten_analytics.events ORDER BY event_type")
        .await;
    assert_eq!(
        rows,
        [
            json!({"event_type": "backend", "user_agent": "", "ip": ""}),
            json!({"event_type": "click", "user_agent": "Mozilla/5.0 Test Browser", "ip": "198.51.100.23"}),
            json!({"event_type": "own_ua", "user_agent": "Custom/1.0", "ip": "127.0.0.1"}),
        ]
    );

    // CORS: a preflight from the site is answered, from elsewhere it is not.
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/events", s.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let ok = preflight(site).await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], site);
    let methods = ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    s.stop().await.unwrap();
}
