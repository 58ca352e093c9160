//! Starts the real server, on the real embedded engine, on port 0.
//! One engine per process: run these tests with `cargo nextest`, which gives
//! every test its own process.
#![allow(dead_code)]

pub mod install;
pub mod interface;
pub mod process;
pub mod views;
pub mod wasm;

use std::path::PathBuf;
use std::time::Duration;

use bilten_analytics::config::{Backend, Config, HttpUser};
use bilten_analytics::model::GUEST_SYSTEM_DATABASE;
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-admin-token";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    /// The store behind the interface, when the suite runs on the
    /// `clickhouse` backend.
    store: Option<Box<TestServer>>,
    /// Where its ClickHouse HTTP interface listens, when it serves one.
    pub clickhouse_url: Option<String>,
}

/// A loopback port that was free a moment ago (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn config(data_dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = data_dir.to_path_buf();
    cfg.admin_token = Some(ADMIN.to_string());
    // The plugin chain has its own tests (plugins.rs); here rows go in as sent.
    cfg.plugins = Vec::new();
    // How full the test machine's disk is is not under test (the rule has
    // unit tests in routes/admin.rs).
    cfg.health.min_free_disk_percent = 0.0;
    cfg
}

/// A store for ingest servers on the `clickhouse` backend: a server on the
/// embedded engine serving ClickHouse's HTTP interface, unmigrated.
pub struct Store {
    pub url: String,
    pub user: &'static str,
    pub password: &'static str,
}

impl Store {
    /// The store's server, and where and as whom to reach its interface;
    /// `like` gives the query limits.
    pub async fn start(data_dir: PathBuf, like: &Config) -> (TestServer, Store) {
        let mut cfg = config(&data_dir);
        cfg.migrate_on_start = false;
        cfg.storage.query_limits = like.storage.query_limits.clone();
        cfg.clickhouse_http.listen = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let (user, password) = ("ingest", "ingest-secret");
        cfg.clickhouse_http.users = vec![HttpUser {
            name: user.into(),
            password: Some(password.into()),
            password_sha256: None,
            readonly: false,
            // The server under test backs up through it (`/admin/backups`).
            backup: true,
        }];
        let server = TestServer::start_with(cfg).await;
        let url = server
            .clickhouse_url
            .clone()
            .expect("the interface listens");
        (
            server,
            Store {
                url,
                user,
                password,
            },
        )
    }

    /// The environment that points a server process at this store.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("BILTEN_STORAGE", "clickhouse"),
            ("BILTEN_CLICKHOUSE_URL", self.url.as_str()),
            ("BILTEN_CLICKHOUSE_USER", self.user),
            ("BILTEN_CLICKHOUSE_PASSWORD", self.password),
            // The store keeps `bilten_system` to itself.
            ("BILTEN_CLICKHOUSE_SYSTEM_DATABASE", GUEST_SYSTEM_DATABASE),
        ]
    }
}

/// "embedded", or "clickhouse" when the suite runs on that backend
/// (`BILTEN_TEST_BACKEND=clickhouse`, through a second server's interface).
pub fn backend_under_test() -> &'static str {
    match std::env::var("BILTEN_TEST_BACKEND").as_deref() {
        Ok("clickhouse") => "clickhouse",
        _ => "embedded",
    }
}

/// Where the server under test keeps its records (audit log, migration
/// records): its own system database, or on the `clickhouse` backend the
/// store's guest one.
pub fn system_database() -> &'static str {
    match backend_under_test() {
        "clickhouse" => GUEST_SYSTEM_DATABASE,
        _ => bilten_analytics::model::SYSTEM_DATABASE,
    }
}

impl TestServer {
    /// A server on a fresh data directory, with `tweak` applied to its config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let mut server = TestServer::start_with(cfg).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_with(cfg: Config) -> TestServer {
        if backend_under_test() == "clickhouse"
            && matches!(cfg.storage.backend, Backend::Embedded)
            // The store itself, or a test of the interface.
            && cfg.clickhouse_http.listen.is_none()
        {
            return Box::pin(TestServer::through_interface(cfg)).await;
        }
        let dir = &cfg.storage.embedded.data_dir;
        if matches!(cfg.storage.backend, Backend::Embedded)
            && cfg.migrate_on_start
            && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
        {
            install::migrated_copy(dir);
        }
        // A port found free may be taken by another test before the server
        // binds it: then the interface gets another.
        let mut cfg = cfg;
        for _ in 0..5 {
            match TestServer::try_start_with(cfg.clone()).await {
                Ok(server) => return server,
                Err(e)
                    if e.contains("Address already in use")
                        && cfg.clickhouse_http.listen.is_some() =>
                {
                    cfg.clickhouse_http.listen =
                        Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
                }
                Err(e) => panic!("server exited: {e}"),
            }
        }
        panic!("no free port for the ClickHouse interface in five tries")
    }

    /// Asserts the engine answers `sql` from the projection `name`, not
    /// from the table's rows (its plan, `EXPLAIN projections = 1`).
    pub async fn assert_reads_projection(&self, sql: &str, name: &str) {
        self.assert_reads_projection_with(sql, &[], name).await
    }

    /// `assert_reads_projection` for a statement with parameters bound.
    pub async fn assert_reads_projection_with(
        &self,
        sql: &str,
        params: &[(String, String)],
        name: &str,
    ) {
        let (status, body) = self
            .admin_query_with(&format!("EXPLAIN projections = 1 {sql}"), params)
            .await;
        assert_eq!(status, 200, "{sql}: {body}");
        let plan = body["data"].as_array().cloned().unwrap_or_default();
        let wanted = format!("ReadFromMergeTree ({name})");
        assert!(
            plan.iter()
                .any(|r| r["explain"].as_str().unwrap_or("").contains(&wanted)),
            "{sql}\nis not read from the projection {name}: {plan:?}"
        );
    }

    /// The server, or why it exited while starting.
    pub async fn try_start_with(cfg: Config) -> Result<TestServer, String> {
        let clickhouse_url = cfg.clickhouse_http.listen.map(|a| format!("http://{a}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let data_dir = cfg.storage.embedded.data_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(bilten_analytics::serve(cfg, listener, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            if handle.is_finished() {
                return Err(format!("{:?}", handle.await));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(TestServer {
            base,
            client,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: None,
            store: None,
            clickhouse_url,
        })
    }

    /// With `BILTEN_TEST_BACKEND=clickhouse`: the server under test runs on
    /// the `clickhouse` backend, against a second server's ClickHouse HTTP
    /// interface (the real protocol, the real engine behind it). The store
    /// does not migrate: the server under test does, through the interface.
    async fn through_interface(mut cfg: Config) -> TestServer {
        let (store, backend) =
            Store::start(cfg.storage.embedded.data_dir.join("store"), &cfg).await;
        cfg.storage.backend = Backend::Clickhouse;
        cfg.storage.clickhouse.url = backend.url.clone();
        cfg.storage.clickhouse.user = backend.user.into();
        cfg.storage.clickhouse.password = Some(backend.password.into());
        cfg.storage.clickhouse.system_database = GUEST_SYSTEM_DATABASE.into();
        let mut server = TestServer::start_with(cfg).await;
        server.store = Some(Box::new(store));
        server
    }

    /// GET a path of this server.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// GET an admin path with the admin token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    /// Any admin route, with the admin token and an optional JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            req = req.json(body);
        }
        status_and_body(req.send().await.unwrap()).await
    }

    /// POST with no body, with a bearer token if given.
    pub async fn post_raw(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, "application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    pub async fn flush(&self) -> Value {
        let r = self
            .client
            .post(format!("{}/admin/flush", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Runs SQL through `/admin/query` and returns ClickHouse's JSON `data` rows.
    pub async fn query(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.admin_query(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn admin_query(&self, sql: &str) -> (u16, Value) {
        self.admin_query_with(sql, &[]).await
    }

    /// `/admin/query` with `param_<name>` values for the statement's
    /// parameters.
    pub async fn admin_query_with(&self, sql: &str, params: &[(String, String)]) -> (u16, Value) {
        let params: Vec<(String, &str)> = params
            .iter()
            .map(|(n, v)| (format!("param_{n}"), v.as_str()))
            .collect();
        let r = self
            .client
            .post(format!("{}/admin/query", self.base))
            .query(&params)
            .bearer_auth(ADMIN)
            .body(sql.to_string())
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    /// `SELECT count()` of a table, as a number.
    pub async fn count(&self, table: &str) -> u64 {
        let rows = self
            .query(&format!(
                "SELECT count() AS n FROM bilten_analytics.{table}"
            ))
            .await;
        as_u64(&rows[0]["n"])
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.take().unwrap().send(()).ok();
        let result = self.handle.take().unwrap().await.unwrap();
        if let Some(store) = self.store.take() {
            Box::pin(store.stop()).await?;
        }
        result
    }
}

/// The status, and the body as JSON (or as a JSON string when it is not JSON).
/// A client that follows no redirect: a sign-in's 303 is read as sent.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in to `/dashboard` with `token`: the session cookie (`name=value`)
/// and the whole `Set-Cookie` line.
pub async fn sign_in(s: &TestServer, token: &str) -> (String, String) {
    let r = no_redirects()
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(r.headers()["location"], "/dashboard");
    let line = r.headers()["set-cookie"].to_str().unwrap().to_string();
    (line.split(';').next().unwrap().to_string(), line)
}

/// `/dashboard` as the session of `cookie` sees it.
pub async fn dashboard_page(s: &TestServer, cookie: &str) -> String {
    no_redirects()
        .get(format!("{}/dashboard", s.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn status_and_body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// ClickHouse's JSON output quotes 64-bit integers.
/// Asserts an ingest answer's `accepted` and `dropped` counts.
pub fn assert_accepted_and_dropped(body: &Value, accepted: u64, dropped: u64) {
    assert_eq!(
        (body["accepted"].as_u64(), body["dropped"].as_u64()),
        (Some(accepted), Some(dropped)),
        "{body}"
    );
}

pub fn as_u64(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_u64().unwrap(),
    }
}

/// Peak resident memory of this process (a test's server runs in it), from
/// the kernel (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
