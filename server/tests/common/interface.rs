//! ClickHouse's HTTP interface in tests: a server with its three kinds of
//! users, and a statement posted as one of them.
#![allow(dead_code)]

use bilten_analytics::config::{Config, HttpUser};

use super::{TestServer, free_port};

pub const READER: (&str, &str) = ("reader", "reader-secret");
pub const WRITER: (&str, &str) = ("writer", "writer-secret");
pub const BACKUPER: (&str, &str) = ("backuper", "backuper-secret");

/// The three users, as configured.
pub fn users() -> Vec<HttpUser> {
    [
        (READER, true, false),
        (WRITER, false, false),
        (BACKUPER, false, true),
    ]
    .map(|((name, password), readonly, backup)| HttpUser {
        name: name.into(),
        password: Some(password.into()),
        password_sha256: None,
        readonly,
        backup,
    })
    .to_vec()
}

/// A server with the interface on and the three users, `tweak` applied
/// first; the interface's base URL.
pub async fn server_with(tweak: impl FnOnce(&mut Config)) -> (TestServer, String) {
    let s = TestServer::start(|c| {
        tweak(c);
        c.clickhouse_http.listen = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        c.clickhouse_http.users = users();
    })
    .await;
    let url = s.clickhouse_url.clone().expect("the interface listens");
    (s, url)
}

/// POSTs `sql` as `user`; the status, the exception code header, the body.
pub async fn post(url: &str, user: (&str, &str), sql: &str) -> (u16, Option<String>, String) {
    post_to(url, "", user, sql).await
}

/// `post` with a query string (`?name=value…`).
pub async fn post_to(
    url: &str,
    query: &str,
    user: (&str, &str),
    sql: &str,
) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/{query}"))
        .basic_auth(user.0, Some(user.1))
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let code = r
        .headers()
        .get("X-ClickHouse-Exception-Code")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), code, r.text().await.unwrap())
}
