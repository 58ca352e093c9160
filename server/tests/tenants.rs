//! Keys made through `/admin/keys`, against the real engine: what each
//! kind lets in, rotation and revocation, forged and replayed records in
//! the store, restarts, and two servers on one store (the second on the
//! `clickhouse` backend through the first's ClickHouse interface).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::interface::{self, READER, WRITER, post};
use reqwest::Method;
use serde_json::{Value, json};

/// The `tenants.signing_key` of servers that share a store.
const SIGNING: &str = "a-signing-key-both-servers-share-0123456789";

async fn make(s: &TestServer, body: Value) -> Value {
    let (status, key) = s.admin(Method::POST, "/admin/keys", Some(&body)).await;
    assert_eq!(status, 201, "{key}");
    key
}

/// `POST /admin/keys/{id}/rotate` with a grace: the answer.
async fn rotate(s: &TestServer, id: &str, grace: &str) -> Value {
    let (status, rotated) = s
        .admin(
            Method::POST,
            &format!("/admin/keys/{id}/rotate"),
            Some(&json!({ "grace": grace })),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    rotated
}

/// A row added to `bilten_control.keys` by a writer of the interface.
async fn insert_row(url: &str, row: &Value) {
    let (status, _, answer) = post(
        url,
        WRITER,
        &format!(
            "INSERT INTO bilten_control.keys (id, version, body, seal) FORMAT JSONEachRow\n{row}\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Signs in to `/dashboard` with `token`: the session's cookie.
async fn sign_in(s: &TestServer, token: &str) -> String {
    common::sign_in(s, token).await.0
}

fn secret(key: &Value) -> String {
    key["secret"].as_str().unwrap().to_string()
}

/// One event for `org` sent with `key` as a bearer token: the status and body.
async fn send(s: &TestServer, key: Option<&str>, org: &str) -> (u16, Value) {
    let mut req = s
        .client
        .post(format!("{}/v1/events", s.base))
        .json(&json!({"event_type": "x", "organizer_id": org}));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    common::status_and_body(req.send().await.unwrap()).await
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn an_ingest_key_made_through_the_api_writes_for_its_organizers_until_revoked() {
    let s = TestServer::start(|_| {}).await;
    // Open until an ingest key exists.
    assert_eq!(send(&s, None, "org-a").await.0, 202);
    let key = make(
        &s,
        json!({"kind": "ingest", "organizers": ["org-a", "org-b"]}),
    )
    .await;
    let first = secret(&key);
    assert!(first.starts_with("bki_") && first.len() == 36, "{key}");
    let id = key["id"].as_str().unwrap().to_string();
    assert_eq!(key["prefix"], first[..10]);
    assert_eq!(key["state"], "active");

    let (status, body) = send(&s, None, "org-a").await;
    assert_eq!(status, 401, "closed once a key exists: {body}");
    assert_eq!(send(&s, Some(&first), "org-a").await.0, 202);
    assert_eq!(send(&s, Some(&first), "org-b").await.0, 202);
    let (status, body) = send(&s, Some(&first), "org-c").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("may not write events for organizer"),
        "{body}"
    );
    let (status, _) = send(&s, Some("bki_not-a-key-at-all-0000000000000"), "org-a").await;
    assert_eq!(status, 401);
    // Secret, so never in a URL.
    let r = s
        .client
        .post(format!("{}/v1/events?key={first}", s.base))
        .json(&json!({"event_type": "x", "organizer_id": "org-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Listed and shown without the secret or anything derived from it
    // beyond its prefix.
    let (status, list) = s.admin_get("/admin/keys").await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(!text.contains(&first), "{text}");
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id)
    );
    let (status, shown) = s.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["organizers"], json!(["org-a", "org-b"]));
    assert!(shown["last_used_at"].is_string(), "{shown}");
    assert!(shown.get("secret").is_none());

    // Rotated with an hour's grace: both work; rotated again at once: only
    // the newest.
    let rotated = rotate(&s, &id, "1h").await;
    let second = secret(&rotated);
    assert_ne!(second, first);
    assert_eq!(rotated["previous_secrets"][0]["prefix"], first[..10]);
    assert_eq!(send(&s, Some(&first), "org-a").await.0, 202);
    assert_eq!(send(&s, Some(&second), "org-a").await.0, 202);
    let third = secret(&rotate(&s, &id, "0s").await);
    for old in [&first, &second] {
        let (status, body) = send(&s, Some(old), "org-a").await;
        assert_eq!(status, 401, "{body}");
        assert!(error(&body).contains("rotated out"), "{body}");
    }
    assert_eq!(send(&s, Some(&third), "org-a").await.0, 202);

    // Revoked: refused, saying so; a revoked key is not rotated.
    let (status, revoked) = s
        .admin(Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    let (status, body) = send(&s, Some(&third), "org-a").await;
    assert_eq!(status, 401, "{body}");
    assert!(error(&body).contains("revoked"), "{body}");
    let (status, body) = s
        .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    // Every key revoked: still closed.
    assert_eq!(send(&s, None, "org-a").await.0, 401);
    let (status, _) = s.admin(Method::DELETE, "/admin/keys/key_nope", None).await;
    assert_eq!(status, 404);

    // What was accepted is stored: 1 sent open, 2 with the first secret,
    // 2 during the grace, 1 with the third.
    s.flush().await;
    assert_eq!(s.count("events").await, 6);

    // The audit log has every change, before and after, and no secret.
    let rows = s
        .query(&format!(
            "SELECT method, path, status, detail FROM {}.audit_log WHERE path LIKE '/admin/keys%' ORDER BY at",
            common::system_database()
        ))
        .await;
    let mut waited = 0;
    let mut rows = rows;
    while rows.len() < 5 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
        rows = s
            .query(&format!(
                "SELECT method, path, status, detail FROM {}.audit_log WHERE path LIKE '/admin/keys%' ORDER BY at",
                common::system_database()
            ))
            .await;
    }
    let all = serde_json::to_string(&rows).unwrap();
    for secret in [&first, &second, &third] {
        assert!(
            !all.contains(secret.as_str()),
            "a secret in the audit log: {all}"
        );
    }
    let revocation = rows
        .iter()
        .find(|r| r["method"] == "DELETE" && r["status"] == 200)
        .expect("the revocation is audited");
    let detail: Value = serde_json::from_str(revocation["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["before"]["state"], "active");
    assert_eq!(detail["after"]["state"], "revoked");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn requests_for_keys_are_checked_and_no_key_reaches_the_routes() {
    let s = TestServer::start(|_| {}).await;
    for (body, field) in [
        (json!({"kind": "admin", "organizers": ["a"]}), "kind"),
        (json!({"kind": "ingest", "organizers": []}), "organizers"),
        (json!({"kind": "ingest"}), "organizers"),
        (
            json!({"kind": "read", "organizers": ["a", "b"]}),
            "organizers",
        ),
        (
            json!({"kind": "ingest", "organizers": ["a b"]}),
            "organizers",
        ),
        (
            json!({"kind": "ingest", "organizers": ["x".repeat(10_000)]}),
            "organizers",
        ),
        (json!({"kind": "public", "organizers": ["a"]}), "origins"),
        (
            json!({"kind": "public", "organizers": ["a"], "origins": ["javascript:alert(1)"]}),
            "origins",
        ),
        (
            json!({"kind": "ingest", "organizers": ["a"], "secret": "mine"}),
            "secret",
        ),
    ] {
        let (status, answer) = s.admin(Method::POST, "/admin/keys", Some(&body)).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(error(&answer).contains(field), "{body} -> {answer}");
    }
    let (status, answer) = s
        .admin(
            Method::POST,
            "/admin/keys/key_x/rotate",
            Some(&json!({"grace": "soon"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(error(&answer).contains("grace"));

    // Every kind of key, and none, on every keys route: refused.
    let ingest = secret(&make(&s, json!({"kind": "ingest", "organizers": ["a"]})).await);
    let read = secret(&make(&s, json!({"kind": "read", "organizers": ["a"]})).await);
    let public = secret(
        &make(
            &s,
            json!({"kind": "public", "organizers": ["a"], "origins": ["*"]}),
        )
        .await,
    );
    let id = make(&s, json!({"kind": "ingest", "organizers": ["a"]})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for who in [Some(&ingest), Some(&read), Some(&public), None] {
        for (method, path) in [
            (Method::GET, "/admin/keys".to_string()),
            (Method::POST, "/admin/keys".to_string()),
            (Method::GET, format!("/admin/keys/{id}")),
            (Method::DELETE, format!("/admin/keys/{id}")),
            (Method::POST, format!("/admin/keys/{id}/rotate")),
        ] {
            let mut req = s
                .client
                .request(method.clone(), format!("{}{path}", s.base))
                .json(&json!({"kind": "ingest", "organizers": ["a"]}));
            if let Some(who) = who {
                req = req.bearer_auth(who);
            }
            let status = req.send().await.unwrap().status();
            assert_eq!(status, 401, "{method} {path} with {who:?}");
        }
    }
    let (_, shown) = s.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(shown["state"], "active", "nothing above revoked it");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_public_key_holds_to_its_origins_and_a_read_key_to_its_organizer() {
    let s = TestServer::start(|_| {}).await;
    let public = make(
        &s,
        json!({"kind": "public", "organizers": ["org-a"], "origins": ["https://tickets.example"]}),
    )
    .await;
    let public_id = public["id"].as_str().unwrap().to_string();
    let public = secret(&public);
    assert!(public.starts_with("bkp_"));
    let beacon = |origin: &'static str, key: String| {
        s.client
            .post(format!("{}/v1/collect/page-views?key={key}", s.base))
            .header("origin", origin)
            .header("content-type", "text/plain")
            .body(json!({"url": "/e/1", "organizer_id": "org-a"}).to_string())
            .send()
    };
    let r = beacon("https://tickets.example", public.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let r = beacon("https://elsewhere.example", public.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The preflight is answered for its origin.
    let r = s
        .client
        .request(Method::OPTIONS, format!("{}/v1/page-views", s.base))
        .header("origin", "https://tickets.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://tickets.example")
    );
    let (status, _) = s
        .admin(Method::DELETE, &format!("/admin/keys/{public_id}"), None)
        .await;
    assert_eq!(status, 200);
    let r = beacon("https://tickets.example", public).await.unwrap();
    assert_eq!(r.status(), 401, "the next beacon after the revocation");

    let read = make(&s, json!({"kind": "read", "organizers": ["org-a"]})).await;
    let read_id = read["id"].as_str().unwrap().to_string();
    let read = secret(&read);
    let stats = |site: &str, key: &str| {
        s.client
            .post(format!("{}/api/v2/query", s.base))
            .bearer_auth(key)
            .json(&json!({"site_id": site, "metrics": ["pageviews"], "date_range": "7d"}))
            .send()
    };
    let r = stats("org-a", &read).await.unwrap();
    assert_eq!(r.status(), 200);
    s.flush().await;
    let r = stats("org-b", &read).await.unwrap();
    assert_eq!(r.status(), 403, "a read key reads its organizer only");
    // It sends nothing.
    let (status, body) = send(&s, Some(&read), "org-a").await;
    assert_eq!(status, 401, "{body}");
    assert!(error(&body).contains("read key"), "{body}");
    // A dashboard session it opened ends with it.
    let cookie = sign_in(&s, &read).await;
    let page = common::dashboard_page(&s, &cookie).await;
    assert!(page.contains("organizer org-a"), "{page}");
    let (status, _) = s
        .admin(Method::DELETE, &format!("/admin/keys/{read_id}"), None)
        .await;
    assert_eq!(status, 200);
    let r = stats("org-a", &read).await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(error(&body).contains("revoked"), "{body}");
    let page = common::dashboard_page(&s, &cookie).await;
    assert!(
        !page.contains("organizer org-a") && page.contains(r#"action="/dashboard/login""#),
        "the session ended with its key"
    );
    s.stop().await.unwrap();
}

/// What a writer of ClickHouse's HTTP interface can do to the keys' table
/// (add rows; nothing else) changes no key: forged records are ignored, a
/// revocation cannot be removed, and a replayed record is the same one.
/// The keys outlive a restart.
#[tokio::test]
async fn forged_and_replayed_records_change_no_key_and_keys_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let users = interface::users();
    let start = |dir: std::path::PathBuf| {
        let users = users.clone();
        async move {
            let mut cfg = common::config(&dir);
            cfg.clickhouse_http.listen = Some(
                format!("127.0.0.1:{}", common::free_port())
                    .parse()
                    .unwrap(),
            );
            cfg.clickhouse_http.users = users;
            cfg.tenants.signing_key = Some(SIGNING.into());
            TestServer::start_with(cfg).await
        }
    };
    let s = start(dir.path().to_path_buf()).await;
    let url = s.clickhouse_url.clone().unwrap();
    let live = make(&s, json!({"kind": "ingest", "organizers": ["org-a"]})).await;
    let gone = make(&s, json!({"kind": "ingest", "organizers": ["org-a"]})).await;
    let gone_id = gone["id"].as_str().unwrap().to_string();
    let (status, _) = s
        .admin(Method::DELETE, &format!("/admin/keys/{gone_id}"), None)
        .await;
    assert_eq!(status, 200);

    // The reader sees digests and seals, never a secret.
    let (status, _, rows) = post(
        &url,
        READER,
        "SELECT id, version, body, seal FROM bilten_control.keys ORDER BY id, version FORMAT JSONEachRow",
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    assert!(!rows.contains(&secret(&live)) && !rows.contains(&secret(&gone)));
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let create = rows
        .iter()
        .find(|r| r["id"] == gone_id && r["body"].as_str().unwrap().contains("create"))
        .unwrap();

    // The writer cannot take the revocation out.
    for sql in [
        format!("DELETE FROM bilten_control.keys WHERE id = '{gone_id}'"),
        format!("ALTER TABLE bilten_control.keys DELETE WHERE id = '{gone_id}'"),
        "TRUNCATE TABLE bilten_control.keys".into(),
        "DROP TABLE bilten_control.keys".into(),
    ] {
        let (status, _, body) = post(&url, WRITER, &sql).await;
        assert!(status >= 400, "{sql}: {status} {body}");
    }
    // It can add rows: a made-up key, the revoked key's creation again
    // under a newer version and its own seal, and the same row as it was.
    let forged_secret = "bki_forgedforgedforgedforgedforged00";
    let body = |id: &str, version: u64| {
        json!({"id": id, "version": version, "at_ms": 1, "by": "me",
               "change": {"op": "create", "kind": "ingest", "organizers": ["org-b"], "origins": [],
                          "secret": {"digest": "00".repeat(32), "prefix": "bki_forged"}}})
        .to_string()
    };
    let inserts = [
        json!({"id": "key_forged", "version": 1, "body": body("key_forged", 1), "seal": "ab".repeat(32)}),
        json!({"id": gone_id, "version": u64::MAX / 2, "body": body(&gone_id, u64::MAX / 2), "seal": create["seal"]}),
        json!({"id": gone_id, "version": u64::MAX / 2, "body": create["body"], "seal": create["seal"]}),
        json!({"id": "key_copy", "version": 5, "body": create["body"], "seal": create["seal"]}),
    ];
    for row in &inserts {
        insert_row(&url, row).await;
    }
    // Nobody dates a row: a row dated in the future would otherwise hold
    // back every poll after it.
    let (status, _, answer) = post(
        &url,
        WRITER,
        "INSERT INTO bilten_control.keys (id, version, body, seal, written) FORMAT JSONEachRow\n\
         {\"id\":\"x\",\"version\":1,\"body\":\"{}\",\"seal\":\"\",\"written\":\"2299-01-01 00:00:00\"}\n",
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("set exactly"), "{answer}");
    // Past a full read of the table (a poll reads again what is recent).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, list) = s.admin_get("/admin/keys").await;
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(!ids.contains(&"key_forged") && !ids.contains(&"key_copy"));
    let (_, shown) = s.admin_get(&format!("/admin/keys/{gone_id}")).await;
    assert_eq!(shown["state"], "revoked", "{shown}");
    assert_eq!(send(&s, Some(forged_secret), "org-b").await.0, 401);
    assert_eq!(send(&s, Some(&secret(&gone)), "org-a").await.0, 401);
    assert_eq!(send(&s, Some(&secret(&live)), "org-a").await.0, 202);

    // A record sealed with the deployment's key, written through the
    // interface as another server writes it, lands past the forgeries:
    // the key it revokes is refused within a poll.
    let live_id = live["id"].as_str().unwrap();
    let record = json!({"id": live_id, "version": u64::MAX / 4, "at_ms": 2, "by": "another server",
                        "change": {"op": "revoke"}})
    .to_string();
    let seal = bilten_analytics::tenants::ControlKey::from_secret(SIGNING).seal("keys", &record);
    let row = json!({"id": live_id, "version": u64::MAX / 4, "body": record, "seal": seal});
    insert_row(&url, &row).await;
    until("a sealed revocation from elsewhere holds", async || {
        send(&s, Some(&secret(&live)), "org-a").await.0 == 401
    })
    .await;
    s.stop().await.unwrap();

    // After a restart, the same: keys read back, forgeries still ignored.
    let s = start(dir.path().to_path_buf()).await;
    let (_, list) = s.admin_get("/admin/keys").await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 2, "{list}");
    for key in [&live, &gone] {
        let (status, body) = send(&s, Some(&secret(key)), "org-a").await;
        assert_eq!(status, 401);
        assert!(error(&body).contains("revoked"), "{body}");
    }
    assert_eq!(
        send(&s, None, "org-a").await.0,
        401,
        "still closed after a restart"
    );
    s.stop().await.unwrap();
}

/// A server that takes requests without a key stops when a row it cannot
/// verify appears in the store: it cannot tell a key sealed with another
/// signing key from none.
#[tokio::test]
async fn a_record_that_does_not_verify_closes_an_open_server() {
    let (s, url) = interface::server_with(|_| {}).await;
    assert_eq!(send(&s, None, "org-a").await.0, 202);
    // A session's or an organizer's record that does not verify grants
    // nothing, so it leaves the server as it was.
    for table in ["sessions", "organizers"] {
        let (status, _, answer) = post(
            &url,
            WRITER,
            &format!(
                "INSERT INTO bilten_control.{table} (id, version, body, seal) FORMAT JSONEachRow\n\
                 {{\"id\":\"x\",\"version\":1,\"body\":\"{{}}\",\"seal\":\"00\"}}\n"
            ),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(send(&s, None, "org-a").await.0, 202);
    let row = json!({"id": "key_x", "version": 1, "body": "{}", "seal": "00"});
    insert_row(&url, &row).await;
    until("closed", async || send(&s, None, "org-a").await.0 == 401).await;
    s.stop().await.unwrap();
}

/// Polls `check` every 20 ms until it holds: how long it took.
async fn until(what: &str, check: impl AsyncFn() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: not within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Two servers on one store: the first on the embedded engine with
/// ClickHouse's interface, the second on the `clickhouse` backend through
/// it, both with the same `tenants.signing_key`. A key made on one is
/// taken by the other, a revocation on one refused by the other, and keys
/// made on both at once are all there, once.
#[tokio::test]
async fn two_servers_on_one_store_share_keys_made_on_either() {
    let (a, url) = interface::server_with(|c| {
        c.tenants.signing_key = Some(SIGNING.into());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.storage.backend = bilten_analytics::config::Backend::Clickhouse;
    cfg.storage.clickhouse.url = url.clone();
    cfg.storage.clickhouse.user = WRITER.0.into();
    cfg.storage.clickhouse.password = Some(WRITER.1.into());
    cfg.storage.clickhouse.system_database = bilten_analytics::model::GUEST_SYSTEM_DATABASE.into();
    cfg.tenants.signing_key = Some(SIGNING.into());
    cfg.tenants.max_stale = Duration::from_secs(3);
    let b = TestServer::start_with(cfg).await;

    // Both closed first: a server with no ingest key takes any.
    make(&a, json!({"kind": "ingest", "organizers": ["org-z"]})).await;
    until("B is closed by a key made on A", async || {
        send(&b, None, "org-a").await.0 == 401
    })
    .await;
    let key = make(&a, json!({"kind": "ingest", "organizers": ["org-a"]})).await;
    let (id, first) = (key["id"].as_str().unwrap().to_string(), secret(&key));
    let took = until("a key made on A works on B", async || {
        send(&b, Some(&first), "org-a").await.0 == 202
    })
    .await;
    println!("made on A, taken by B after {took:?}");
    // Rotated on B (which read it from the store), with no grace.
    let second = secret(&rotate(&b, &id, "0s").await);
    let took = until("the rotation on B holds on A", async || {
        send(&a, Some(&first), "org-a").await.0 == 401
            && send(&a, Some(&second), "org-a").await.0 == 202
    })
    .await;
    println!("rotated on B, held on A after {took:?}");
    let (status, _) = b
        .admin(Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let took = until("the revocation on B holds on A", async || {
        send(&a, Some(&second), "org-a").await.0 == 401
    })
    .await;
    println!("revoked on B, refused by A after {took:?}");

    // Ten keys made on each at the same moment: twenty, each once, on both.
    let body = json!({"kind": "read", "organizers": ["org-a"]});
    let made = futures::future::join_all((0..20).map(|i| {
        let (s, body) = (if i % 2 == 0 { &a } else { &b }, body.clone());
        async move { make(s, body).await["id"].as_str().unwrap().to_string() }
    }))
    .await;
    let mut unique = made.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20);
    for s in [&a, &b] {
        until("every key listed on both", async || {
            let (_, list) = s.admin_get("/admin/keys?kind=read").await;
            let mut ids: Vec<String> = list["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids == unique
        })
        .await;
    }
    // An organizer made on B and suspended on A: refused on B within a poll.
    let (status, _) = b
        .admin(
            Method::POST,
            "/admin/organizers",
            Some(&json!({"id": "org-s", "name": "S"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, answer) = a
        .admin(
            Method::PATCH,
            "/admin/organizers/org-s",
            Some(&json!({"suspended": true})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let writer = secret(&make(&a, json!({"kind": "ingest", "organizers": ["org-s"]})).await);
    let took = until("the suspension on A holds on B", async || {
        send(&b, Some(&writer), "org-s").await.0 == 403
    })
    .await;
    println!("suspended on A, refused by B after {took:?}");
    // Resumed on A, suspended on B at once (B has not polled the
    // resumption yet): the suspension, made last, holds on both.
    let (status, _) = a
        .admin(
            Method::PATCH,
            "/admin/organizers/org-s",
            Some(&json!({"suspended": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = b
        .admin(
            Method::PATCH,
            "/admin/organizers/org-s",
            Some(&json!({"suspended": true})),
        )
        .await;
    assert_eq!(
        (status, answer["state"].as_str()),
        (200, Some("suspended")),
        "{answer}"
    );
    for s in [&a, &b] {
        until("suspended again on both", async || {
            send(s, Some(&writer), "org-s").await.0 == 403
        })
        .await;
    }
    // One organizer made twice at once on one server: one 201, one 409.
    let body = json!({"id": "org-twice", "name": "T"});
    let (first, second) = tokio::join!(
        a.admin(Method::POST, "/admin/organizers", Some(&body)),
        a.admin(Method::POST, "/admin/organizers", Some(&body)),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{first:?} {second:?}");

    // The store gone: past tenants.max_stale, B refuses keys it can no
    // longer check for revocation, saying why (configured keys would hold).
    let late = secret(&make(&b, json!({"kind": "ingest", "organizers": ["org-a"]})).await);
    assert_eq!(send(&b, Some(&late), "org-a").await.0, 202);
    a.stop().await.unwrap();
    until("B refuses keys it cannot check", async || {
        let (status, body) = send(&b, Some(&late), "org-a").await;
        status == 503 && error(&body).contains("last read")
    })
    .await;
    // (B is left to the end of the process: its store is gone.)
}

/// `bilten-analytics keys …` against a running server: the same calls.
/// (Threads of its own: the CLI runs blocking while the server answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_lists_rotates_and_revokes_keys() {
    let s = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = |args: &[&str]| {
        let mut c = common::process::cmd(dir.path());
        c.env("BILTEN_ADMIN_TOKEN", common::ADMIN)
            .args(["keys", "--target", &s.base])
            .args(args);
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let (ok, out, err) = keys(&["create", "--kind", "ingest", "--organizer", "org-123"]);
    assert!(ok, "{out}{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(send(&s, Some(&secret(&made)), "org-123").await.0, 202);
    let (ok, out, _) = keys(&["list", "--organizer", "org-123"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert!(!out.contains(&secret(&made)));
    let (ok, out, _) = keys(&["rotate", &id, "--grace", "0s"]);
    assert!(ok, "{out}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(send(&s, Some(&secret(&made)), "org-123").await.0, 401);
    assert_eq!(send(&s, Some(&secret(&rotated)), "org-123").await.0, 202);
    let (ok, out, _) = keys(&["revoke", &id]);
    assert!(ok, "{out}");
    assert_eq!(send(&s, Some(&secret(&rotated)), "org-123").await.0, 401);
    let (ok, out, _) = keys(&["show", &id]);
    assert!(ok);
    assert!(out.contains("\"revoked\""), "{out}");
    // A refusal is an error exit that says why.
    let (ok, _, err) = keys(&["create", "--kind", "public", "--organizer", "org-123"]);
    assert!(!ok);
    assert!(err.contains("origins"), "{err}");
    let (ok, _, err) = keys(&["revoke", &id]);
    assert!(!ok);
    assert!(err.contains("409") && err.contains("revoked"), "{err}");

    // `organizers …`, through the same client.
    let organizers = |args: &[&str]| {
        let mut c = common::process::cmd(dir.path());
        c.env("BILTEN_ADMIN_TOKEN", common::ADMIN)
            .args(["organizers", "--target", &s.base])
            .args(args);
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(organizers(&["create", "org-123", "--name", "Hall 123"]).0);
    let (ok, out) = organizers(&["suspend", "org-123"]);
    assert!(ok && out.contains("\"suspended\""), "{out}");
    let made = secret(&make(&s, json!({"kind": "ingest", "organizers": ["org-123"]})).await);
    assert_eq!(send(&s, Some(&made), "org-123").await.0, 403);
    assert!(organizers(&["resume", "org-123"]).0);
    assert!(organizers(&["rename", "org-123", "Hall 123 (new)"]).0);
    let (ok, out) = organizers(&["list"]);
    assert!(
        ok && out.contains("Hall 123 (new)") && out.contains("\"active\""),
        "{out}"
    );
    assert_eq!(send(&s, Some(&made), "org-123").await.0, 202);
    s.stop().await.unwrap();
}

/// An organizer suspended through the API: its events refused on every
/// ingest route (a 403 when they are all a request holds), its neighbours'
/// taken, what it stored kept; resumed, taken again. The dashboard's
/// organizer filter lists the organizers made through the API.
#[tokio::test]
async fn a_suspended_organizers_events_are_refused_and_nothing_of_theirs_is_lost() {
    let s = TestServer::start(|_| {}).await;
    let org = |body: Value| {
        let s = &s;
        async move {
            s.admin(Method::POST, "/admin/organizers", Some(&body))
                .await
        }
    };
    let (status, made) = org(json!({"id": "org-a", "name": "Arena A"})).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["state"], "active");
    for (body, status, says) in [
        (json!({"id": "org-a", "name": "Again"}), 409, "exists"),
        (json!({"id": "org a", "name": "A"}), 400, "id"),
        (json!({"id": "org-c", "name": ""}), 400, "name"),
        (json!({"id": "org-c"}), 400, "name"),
    ] {
        let (got, answer) = org(body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(error(&answer).contains(says), "{body} -> {answer}");
    }
    let patch = |id: &str, body: Value| {
        let (s, path) = (&s, format!("/admin/organizers/{id}"));
        async move { s.admin(Method::PATCH, &path, Some(&body)).await }
    };
    assert_eq!(send(&s, None, "org-a").await.0, 202);
    let (status, suspended) = patch("org-a", json!({"suspended": true})).await;
    assert_eq!(status, 200, "{suspended}");
    assert_eq!(suspended["state"], "suspended");

    // Mixed with a neighbour: the neighbour is taken, org-a's event refused.
    let r = s
        .client
        .post(format!("{}/v1/events", s.base))
        .json(&json!([{"event_type": "x", "organizer_id": "org-a"},
                      {"event_type": "x", "organizer_id": "org-b"}]))
        .send()
        .await
        .unwrap();
    let (status, body) = common::status_and_body(r).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["errors"][0]["index"], 0);
    assert_eq!(body["errors"][0]["field"], "organizer_id");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
    // Alone: a 403, on every route.
    let (status, body) = send(&s, None, "org-a").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s
        .post(
            "/v1/page-views",
            "application/x-ndjson",
            b"{\"url\":\"/e/1\",\"organizer_id\":\"org-a\"}\n".to_vec(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // A beacon, an engagement and a ticket sale: the same.
    let r = s
        .client
        .post(format!("{}/v1/collect/page-views", s.base))
        .header("content-type", "text/plain")
        .body(json!({"url": "/e/1", "organizer_id": "org-a"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, body) = s
        .post_json(
            "/v1/engagements",
            &json!({"organizer_id": "org-a", "view_id": uuid::Uuid::now_v7(), "duration_ms": 5}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
    let (status, body) = s
        .post_json(
            "/v1/ticket-sales",
            &json!({"organizer_id": "org-a", "event_id": "e1",
                    "quantity": 1, "price": 10, "currency": "EUR", "user_id": "u1"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let segment_key = secret(&make(&s, json!({"kind": "ingest", "organizers": ["org-a"]})).await);
    let r = s
        .client
        .post(format!("{}/v1/track", s.base))
        .basic_auth(&segment_key, Some(""))
        .json(&json!({"event": "Ticket Viewed", "userId": "u1"}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::status_and_body(r).await;
    assert_eq!(status, 403, "{body}");

    // What org-a stored before stays; resumed, it writes again.
    s.flush().await;
    let stored = s
        .query("SELECT organizer_id, count() AS n FROM bilten_analytics.events GROUP BY organizer_id ORDER BY organizer_id")
        .await;
    assert_eq!(stored[0]["organizer_id"], "org-a");
    assert_eq!(common::as_u64(&stored[0]["n"]), 1, "{stored:?}");
    let (status, resumed) = patch("org-a", json!({"name": "Arena A+", "suspended": false})).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        (resumed["state"].as_str(), resumed["name"].as_str()),
        (Some("active"), Some("Arena A+"))
    );
    assert_eq!(send(&s, Some(&segment_key), "org-a").await.0, 202);
    let (status, _) = patch("org-z", json!({"suspended": true})).await;
    assert_eq!(status, 404);
    let (status, answer) = patch("org-a", json!({"paused": true})).await;
    assert_eq!(status, 400, "{answer}");
    let (_, list) = s.admin_get("/admin/organizers").await;
    assert_eq!(list["organizers"].as_array().unwrap().len(), 1, "{list}");

    // The admin's organizer filter: org-a, made through the API; org-b
    // (only in the data) is not offered.
    let page = common::dashboard_page(&s, &sign_in(&s, common::ADMIN).await).await;
    assert!(page.contains("<option value=\"org-a\""), "{page}");
    assert!(!page.contains("<option value=\"org-b\""));
    s.stop().await.unwrap();
}

/// Dashboard sessions are kept in the store: one outlives a restart, one
/// opened on a server works on another, a sign-out on one ends it on the
/// other within a poll, and a session does not outlive the secret that
/// opened it (an admin token changed at the restart).
#[tokio::test]
async fn dashboard_sessions_outlive_a_restart_and_end_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: std::path::PathBuf, token: &'static str| async move {
        let mut cfg = common::config(&dir);
        cfg.admin_token = Some(token.into());
        cfg.read_keys = vec!["a-read-key-of-org-r@org-r".into()];
        cfg.clickhouse_http.listen = Some(
            format!("127.0.0.1:{}", common::free_port())
                .parse()
                .unwrap(),
        );
        cfg.clickhouse_http.users = interface::users();
        cfg.tenants.signing_key = Some(SIGNING.into());
        TestServer::start_with(cfg).await
    };
    let signed_in = |page: &str| !page.contains(r#"action="/dashboard/login""#);
    let a = start(dir.path().to_path_buf(), common::ADMIN).await;
    let admin = sign_in(&a, common::ADMIN).await;
    let reader = sign_in(&a, "a-read-key-of-org-r").await;
    let spare = sign_in(&a, common::ADMIN).await;
    assert!(signed_in(&common::dashboard_page(&a, &admin).await));
    // The store's reader sees digests, never a cookie.
    let (_, _, rows) = post(
        a.clickhouse_url.as_deref().unwrap(),
        READER,
        "SELECT id, body FROM bilten_control.sessions FORMAT JSONEachRow",
    )
    .await;
    let cookie_value = admin.split_once('=').unwrap().1;
    assert!(
        !rows.contains(cookie_value) && rows.contains("\"op\\\":\\\"open"),
        "{rows}"
    );
    a.stop().await.unwrap();

    let a = start(dir.path().to_path_buf(), common::ADMIN).await;
    assert!(
        signed_in(&common::dashboard_page(&a, &admin).await),
        "the admin's session outlived the restart"
    );
    assert!(
        common::dashboard_page(&a, &reader)
            .await
            .contains("organizer org-r")
    );

    // A second server on the same store takes it, and a sign-out there
    // ends it here.
    let other = tempfile::tempdir().unwrap();
    let mut cfg = common::config(other.path());
    cfg.read_keys = vec!["a-read-key-of-org-r@org-r".into()];
    cfg.storage.backend = bilten_analytics::config::Backend::Clickhouse;
    cfg.storage.clickhouse.url = a.clickhouse_url.clone().unwrap();
    cfg.storage.clickhouse.user = WRITER.0.into();
    cfg.storage.clickhouse.password = Some(WRITER.1.into());
    cfg.storage.clickhouse.system_database = bilten_analytics::model::GUEST_SYSTEM_DATABASE.into();
    cfg.tenants.signing_key = Some(SIGNING.into());
    let b = TestServer::start_with(cfg).await;
    assert!(
        common::dashboard_page(&b, &reader)
            .await
            .contains("organizer org-r")
    );
    let r = common::no_redirects()
        .post(format!("{}/dashboard/logout", b.base))
        .header("cookie", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    until("signed out on A too", async || {
        !signed_in(&common::dashboard_page(&a, &reader).await)
    })
    .await;
    assert!(
        signed_in(&common::dashboard_page(&a, &admin).await),
        "only that session ended"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();

    // Restarted with another admin token: the old token's sessions end.
    let a = start(dir.path().to_path_buf(), "another-admin-token-0123").await;
    assert!(!signed_in(&common::dashboard_page(&a, &spare).await));
    a.stop().await.unwrap();
}
