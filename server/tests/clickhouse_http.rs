//! ClickHouse's HTTP interface on the embedded engine (`[clickhouse_http]`):
//! real clients, unmodified (the Rust crate here; clickhouse-connect and
//! `@clickhouse/client` installed and run by the tests), hostile statements
//! refused by the engine's parser, compression both ways, and another
//! ingest server's `clickhouse` backend storing through it.

mod common;

use std::process::Command;

use bilten_analytics::config::{Backend, HttpUser};
use common::install::{npm, output, pip, script};
use common::interface::{self, BACKUPER, READER, WRITER, post, post_to};
use common::{TestServer, as_u64, free_port};
use serde_json::{Value, json};

/// A server with the interface on, a read-only, a read-write and a backup
/// user (queries limited to 3 s); the interface's base URL.
async fn server() -> (TestServer, String) {
    server_with(|_| {}).await
}

async fn server_with(
    tweak: impl FnOnce(&mut bilten_analytics::config::Config),
) -> (TestServer, String) {
    interface::server_with(|c| {
        tweak(c);
        c.storage.query_limits.timeout = std::time::Duration::from_secs(3);
    })
    .await
}

/// An ingest server on the `clickhouse` backend, storing through the
/// interface at `url` as the writer.
async fn ingest_through(
    url: &str,
    tweak: impl FnOnce(&mut bilten_analytics::config::Config),
) -> TestServer {
    TestServer::start(|c| {
        c.storage.backend = Backend::Clickhouse;
        c.storage.clickhouse.url = url.to_string();
        c.storage.clickhouse.user = WRITER.0.into();
        c.storage.clickhouse.password = Some(WRITER.1.into());
        c.storage.clickhouse.system_database =
            bilten_analytics::model::GUEST_SYSTEM_DATABASE.into();
        tweak(c);
    })
    .await
}

/// Rows of the project's `settings` table (the crate checks a row type
/// against every column without a default).
#[derive(Debug, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct Setting {
    key: String,
    value: String,
}

#[tokio::test]
async fn the_rust_clickhouse_crate_works_unmodified() {
    let (s, url) = server().await;
    // The crate's defaults: RowBinary, LZ4 blocks both ways (compress=1,
    // decompress=1), credentials in X-ClickHouse-* headers.
    let client = |(user, password): (&str, &str)| {
        clickhouse::Client::default()
            .with_url(&url)
            .with_user(user)
            .with_password(password)
            .with_database("bilten_analytics")
    };
    let writer = client(WRITER);
    let rows: Vec<Setting> = (0..5000)
        .map(|i| Setting {
            key: format!("crate-{i:04}"),
            value: (i % 5 + 1).to_string(),
        })
        .collect();
    let mut insert = writer.insert::<Setting>("settings").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let reader = client(READER);
    let back: Vec<Setting> = reader
        .query("SELECT ?fields FROM settings WHERE value = {v:String} ORDER BY key")
        .param("v", "3")
        .fetch_all()
        .await
        .unwrap();
    let expected: Vec<&Setting> = rows.iter().filter(|r| r.value == "3").collect();
    assert_eq!(back.iter().collect::<Vec<_>>(), expected);
    let total: u64 = reader
        .query("SELECT sum(toUInt64(value)) FROM settings")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        total,
        rows.iter()
            .map(|r| r.value.parse::<u64>().unwrap())
            .sum::<u64>()
    );

    // A read-only user's insert is refused, and nothing is written.
    let mut insert = reader.insert::<Setting>("settings").await.unwrap();
    insert
        .write(&Setting {
            key: "x".into(),
            value: "1".into(),
        })
        .await
        .unwrap();
    let err = insert.end().await.unwrap_err().to_string();
    assert!(err.contains("READONLY"), "{err}");
    // A writer's table of its own is not something the backend sends.
    let err = writer
        .query("CREATE TABLE crate_sales (id UInt32) ENGINE = MergeTree ORDER BY id")
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ACCESS_DENIED") && err.contains("rule: fixed"),
        "{err}"
    );
    assert_eq!(s.count("settings").await, 5000);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn statements_that_reach_the_host_or_other_databases_are_refused() {
    let (s, url) = server().await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("leak.txt");
    let t = target.display();
    // `settings` is a table the writer may insert into, so refusals are
    // about the statement.
    let refused_for_both: Vec<String> = vec![
        "SELECT file('/etc/passwd')".into(),
        "SELECT * FROM file('/etc/passwd', 'LineAsString')".into(),
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')".into(),
        "SELECT * FROM executable('id', 'LineAsString', 'x String')".into(),
        "SELECT * FROM remote('127.0.0.1:9000', system.one)".into(),
        // The engine's local mode reads a file named as a table.
        "SELECT * FROM default.`/etc/passwd`".into(),
        format!("SELECT 1 INTO OUTFILE '{t}'"),
        format!("INSERT INTO FUNCTION file('{t}', 'LineAsString') SELECT 'x'"),
        "INSERT INTO settings SELECT * FROM file('/etc/passwd', 'LineAsString')".into(),
        "INSERT INTO settings (key) SELECT file('/etc/passwd')".into(),
        // Inline rows are expressions, evaluated; and a file read by the
        // engine's client side.
        "INSERT INTO settings (key) VALUES (file('/etc/passwd'))".into(),
        "INSERT INTO settings (key) FROM INFILE '/etc/passwd' FORMAT LineAsString".into(),
        format!("CREATE TABLE f (a String) ENGINE = File(LineAsString, '{t}')"),
        "CREATE TABLE u AS url('http://127.0.0.1:9/', 'LineAsString', 'a String')".into(),
        "CREATE TABLE d (a String DEFAULT file('/etc/passwd')) ENGINE = Memory".into(),
        "CREATE TABLE notes (a String) ENGINE = MergeTree ORDER BY a".into(),
        "CREATE DICTIONARY dd (a UInt64) PRIMARY KEY a SOURCE(FILE(path '/etc/passwd' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)".into(),
        "CREATE TABLE default.elsewhere (a String) ENGINE = Memory".into(),
        "INSERT INTO bilten_system.query_log (query) VALUES ('forged')".into(),
        "INSERT INTO bilten_system.audit_log (actor) FORMAT JSONEachRow\n{\"actor\":\"forged\"}\n".into(),
        "CREATE TABLE bilten_analytics.b ENGINE = Buffer(bilten_system, backups, 1, 1, 1, 1, 1, 1, 1)".into(),
        "CREATE MATERIALIZED VIEW bilten_analytics.mv TO bilten_system.query_log AS SELECT 'x' AS query FROM bilten_analytics.settings".into(),
        "RENAME TABLE settings TO default.notes".into(),
        "ALTER TABLE settings FREEZE".into(),
        "ALTER TABLE settings FREEZE SETTINGS mutations_sync = 2".into(),
        "ALTER TABLE settings DELETE WHERE 1".into(),
        "TRUNCATE TABLE settings".into(),
        "DROP TABLE settings".into(),
        "INSERT INTO settings SETTINGS max_threads = 1 SELECT * FROM file('/etc/passwd', 'LineAsString')".into(),
        // A disk made up on the spot, anywhere on the host; a table attached
        // from a directory.
        format!("CREATE TABLE x (a String) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = 'local', path = '{}/')", out.path().display()),
        "CREATE TABLE w (a String) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = web, endpoint = 'http://127.0.0.1:9/')".into(),
        format!("ALTER TABLE settings MODIFY SETTING disk = disk(type = 'local', path = '{}/')", out.path().display()),
        format!("ATTACH TABLE y FROM '{}/' (a String) ENGINE = MergeTree ORDER BY a", out.path().display()),
        // Settings that point the engine at a file, in the statement, with
        // or without a comment in the way.
        format!("INSERT INTO settings SETTINGS input_format_allow_errors_num = 5, input_format_record_errors_file_path = '{t}' FORMAT CSV\n\"x\",\"y\"\n"),
        format!("INSERT INTO settings SETTINGS /**/ input_format_record_errors_file_path = '{t}' FORMAT CSV\n\"x\",\"y\"\n"),
        "SET readonly = 0".into(),
        "SET ROLE bilten_engine".into(),
        "SYSTEM SHUTDOWN".into(),
        "KILL QUERY WHERE 1".into(),
        "BACKUP TABLE settings TO Disk('backups', 'x.zip')".into(),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', 'w')".into(),
        "CREATE FUNCTION evil AS (x) -> x".into(),
        "SELECT 1; SELECT 2".into(),
        // Text that does not parse as a whole used to reach EXPLAIN, which
        // the engine runs statement by statement.
        format!("SELECT 1; INSERT INTO FUNCTION file('{t}', 'LineAsString') SELECT 'x'; )"),
    ];
    for sql in &refused_for_both {
        for user in [READER, WRITER] {
            let (status, code, body) = post(&url, user, sql).await;
            assert!(
                (400..500).contains(&status) && code.is_some(),
                "{} ran {sql}: {status} {body}",
                user.0
            );
            assert!(body.starts_with("Code: "), "{body}");
        }
    }
    // Rows streamed after `INSERT … FORMAT Values` are expressions too.
    let r = reqwest::Client::new()
        .post(format!("{url}/"))
        .query(&[("query", "INSERT INTO settings (key) FORMAT Values")])
        .basic_auth(WRITER.0, Some(WRITER.1))
        .body("(file('/etc/passwd'))")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("rule: insert"), "{body}");
    // Rows after a statement that hides a second one; a database name that
    // is not one.
    for query in [
        format!(
            "SELECT 1; INSERT INTO FUNCTION file('{t}', 'LineAsString') SELECT 'x'; INSERT INTO settings FORMAT LineAsString"
        ),
        "SELECT 1".to_string(),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{url}/"))
            .query(&[
                ("query", query.as_str()),
                ("database", "x; DROP TABLE settings"),
            ])
            .basic_auth(WRITER.0, Some(WRITER.1))
            .body("row\n")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{query}");
    }
    let r = reqwest::Client::new()
        .post(format!("{url}/"))
        .query(&[(
            "query",
            format!("SELECT 1; INSERT INTO FUNCTION file('{t}', 'LineAsString') SELECT 'x'; INSERT INTO settings FORMAT LineAsString"),
        )])
        .basic_auth(WRITER.0, Some(WRITER.1))
        .body("row\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!target.exists(), "a file was written");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "something was written outside the engine"
    );
    // The reader can neither write nor lift its limits.
    for sql in [
        "INSERT INTO settings (key) FORMAT JSONEachRow\n{\"key\":\"r\"}\n",
        "CREATE TABLE r (a String) ENGINE = Memory",
        "SELECT 1 SETTINGS max_execution_time = 100000",
    ] {
        let (status, code, body) = post(&url, READER, sql).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("164")),
            "{sql}: {body}"
        );
    }
    // A limit a reader sends can only tighten ours (3 s here; Grafana
    // sends one); a looser one is ignored. The engine's message says which held.
    for (query, held) in [
        ("?max_execution_time=1", "maximum: 1000 ms"),
        ("?max_execution_time=100000", "maximum: 3000 ms"),
    ] {
        let (_, code, body) = post_to(
            &url,
            query,
            READER,
            "SELECT count() FROM numbers(100000000000)",
        )
        .await;
        assert_eq!(code.as_deref(), Some("159"), "{query}: {body}");
        assert!(body.contains(held), "{query}: {body}");
    }
    for (user, query, code) in [
        (READER, "?readonly=0", "164"),
        (READER, "?no_such_setting=1", "164"),
        // Not a setting a writer may send (an allow-list), known or not.
        (WRITER, "?no_such_setting=1", "164"),
        (WRITER, "?max_threads=1", "164"),
        // Settings that read or write files: a template is echoed into the
        // answer, a schema is written out.
        (
            WRITER,
            "?format_template_resultset=/etc/passwd&default_format=Template",
            "164",
        ),
        (WRITER, "?output_format_schema=/tmp/leak.capnp", "164"),
        (
            READER,
            "?format_template_resultset=/etc/passwd&default_format=Template",
            "164",
        ),
    ] {
        let (_, got, body) = post_to(&url, query, user, "SELECT 1").await;
        assert_eq!(got.as_deref(), Some(code), "{query}: {body}");
    }
    // A writer's GET only reads.
    let r = reqwest::Client::new()
        .get(format!(
            "{url}/?query=INSERT%20INTO%20settings%20(key)%20FORMAT%20JSONEachRow%20%7B%22key%22%3A%22g%22%7D"
        ))
        .basic_auth(WRITER.0, Some(WRITER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Wrong or missing credentials.
    for user in [
        ("reader", "nope"),
        ("nobody", "reader-secret"),
        ("default", ""),
    ] {
        let (status, code, _) = post(&url, user, "SELECT 1").await;
        assert_eq!((status, code.as_deref()), (403, Some("516")), "{user:?}");
    }
    assert_eq!(s.count("settings").await, 0);
    // What users are for still works: reads for both, writes for the writer:
    // rows as data, with an insert's own settings, and a delete by parameter.
    let (status, _, body) = post(
        &url,
        WRITER,
        "INSERT INTO settings (key, value) SETTINGS insert_deduplication_token = 'w-1' FORMAT JSONEachRow\n{\"key\":\"v\",\"value\":\"1\"}\n{\"key\":\"w\",\"value\":\"2\"}\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_to(
        &url,
        "?param_k=v",
        WRITER,
        "DELETE FROM settings WHERE key = {k:String}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(&url, READER, "SELECT key FROM settings FORMAT JSONEachRow").await;
    assert_eq!((status, body.as_str()), (200, "{\"key\":\"w\"}\n"));
    s.stop().await.unwrap();
}

/// A backup user backs up and restores this database on the `backups` disk
/// and keeps the catalog, as a `clickhouse` backend's `/admin/backups` does;
/// anything else that reaches the host stays refused, however it is spelled.
#[tokio::test]
async fn a_backup_user_backs_up_to_the_backups_disk_and_nowhere_else() {
    let (s, url) = server().await;
    let out = tempfile::tempdir().unwrap();
    let t = out.path().display();
    let row = |key: &str| {
        format!("INSERT INTO settings (key) FORMAT JSONEachRow\n{{\"key\":\"{key}\"}}\n")
    };
    // The catalog in the guest system database, as `ops::records` makes it.
    let catalog = bilten_analytics::ops::records::ddl("bilten_remote");
    let mut statements: Vec<String> = vec![
        row("a"),
        row("b"),
        row("c"),
        // Spacing, case and comments do not matter: the engine's own
        // spelling of the statement is judged.
        "backup   database bilten_analytics /* full */ to Disk('backups',  'full-1')".into(),
        row("d"),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', 'inc-1') SETTINGS base_backup = Disk('backups', 'full-1')".into(),
        "RESTORE DATABASE bilten_analytics AS copy_1 FROM Disk('backups', 'inc-1')".into(),
    ];
    statements.extend(catalog);
    statements.extend([
        "INSERT INTO bilten_remote.backups (id) FORMAT JSONEachRow\n{\"id\":\"inc-1\"}\n".into(),
        "RESTORE DATABASE bilten_analytics AS bilten_verify_1a FROM Disk('backups', 'full-1')"
            .into(),
        "DROP DATABASE IF EXISTS bilten_verify_1a SYNC".into(),
        "RENAME DATABASE bilten_analytics TO bilten_analytics_before_restore_20261130".into(),
        "RESTORE DATABASE bilten_analytics FROM Disk('backups', 'full-1')".into(),
    ]);
    for sql in &statements {
        let (status, _, body) = post(&url, BACKUPER, sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
    }
    let count = |db: &str| format!("SELECT count() FROM {db}.settings");
    for (db, rows) in [
        ("copy_1", "4"),
        ("bilten_analytics", "3"),
        ("bilten_analytics_before_restore_20261130", "4"),
    ] {
        let (_, _, body) = post(&url, READER, &count(db)).await;
        assert_eq!(body.trim(), rows, "{db}");
    }
    let backups = s.data_dir.join("backups");
    assert!(backups.join("full-1").is_dir() && backups.join("inc-1").is_dir());

    let refused = [
        // Elsewhere than the backups disk, or out of it.
        format!("BACKUP DATABASE bilten_analytics TO File('{t}/b')"),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', '../../b')".into(),
        "BACKUP DATABASE bilten_analytics TO Disk('default', 'b')".into(),
        format!("BACKUP DATABASE bilten_analytics TO Disk('backups', 'b') SETTINGS base_backup = File('{t}/x')"),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', 'b') ASYNC".into(),
        // Other databases, or more than this one.
        "BACKUP DATABASE bilten_system TO Disk('backups', 'b')".into(),
        "BACKUP TABLE bilten_analytics.settings, DATABASE system TO Disk('backups', 'b')".into(),
        "BACKUP ALL TO Disk('backups', 'b')".into(),
        // Restores over what exists, or into the engine's own databases.
        "RESTORE DATABASE bilten_analytics AS copy_1 FROM Disk('backups', 'full-1')".into(),
        "RESTORE DATABASE bilten_analytics AS system FROM Disk('backups', 'full-1')".into(),
        "RESTORE DATABASE bilten_analytics AS bilten_system FROM Disk('backups', 'full-1')".into(),
        // The guest system database is a remote server's records, no copy.
        "RESTORE DATABASE bilten_analytics AS bilten_remote FROM Disk('backups', 'full-1')".into(),
        // Names that are the backups directory itself, hidden or archives.
        "BACKUP DATABASE bilten_analytics TO Disk('backups', '.')".into(),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', '.hidden')".into(),
        "BACKUP DATABASE bilten_analytics TO Disk('backups', 'z.zip')".into(),
        "RESTORE DATABASE bilten_analytics AS copy_2 FROM Disk('backups', 'full-1') SETTINGS allow_non_empty_tables = 1".into(),
        format!("RESTORE DATABASE bilten_analytics AS copy_2 FROM File('{t}/b')"),
        // Renames and drops beyond a restore's own.
        "RENAME DATABASE copy_1 TO bilten_analytics_before_restore_1".into(),
        "RENAME DATABASE bilten_analytics TO copy_3".into(),
        "DROP DATABASE IF EXISTS copy_1".into(),
        "DROP DATABASE bilten_system".into(),
        "DROP DATABASE IF EXISTS bilten_analytics".into(),
        // This server's own records: nothing of them. The guest catalog:
        // rows as data only, never dropped or altered.
        "INSERT INTO bilten_system.query_log (query) VALUES ('forged')".into(),
        "INSERT INTO bilten_system.backups (id) FORMAT JSONEachRow\n{\"id\":\"forged\"}\n".into(),
        "CREATE TABLE bilten_system.other (a String) ENGINE = Memory".into(),
        "DROP TABLE bilten_system.backups".into(),
        "DROP TABLE bilten_remote.backups".into(),
        "ALTER TABLE bilten_remote.backups DELETE WHERE 1".into(),
        "INSERT INTO bilten_remote.backups SELECT * FROM file('/etc/passwd', 'LineAsString')".into(),
        "INSERT INTO bilten_remote.backups SELECT query FROM bilten_system.query_log".into(),
        "CREATE TABLE bilten_remote.other (a String) ENGINE = Memory".into(),
        // What nobody may do.
        "SYSTEM SHUTDOWN".into(),
        format!("SELECT 1 INTO OUTFILE '{t}/o'"),
    ];
    for sql in &refused {
        let (status, code, body) = post(&url, BACKUPER, sql).await;
        assert!(
            (400..500).contains(&status) && code.is_some(),
            "the backup user ran {sql}: {status} {body}"
        );
    }
    // The message says what a backup user may do.
    let (_, code, body) = post(&url, BACKUPER, &refused[0]).await;
    assert_eq!(code.as_deref(), Some("497"), "{body}");
    assert!(body.contains("on the backups disk only"), "{body}");
    // A reader or a writer may not back up, even where a backup user may.
    for user in [READER, WRITER] {
        let (status, _, body) = post(
            &url,
            user,
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'w2')",
        )
        .await;
        assert!((400..500).contains(&status), "{}: {body}", user.0);
    }
    // GET only reads, for a backup user too.
    let r = reqwest::Client::new()
        .get(format!("{url}/"))
        .query(&[(
            "query",
            "BACKUP DATABASE bilten_analytics TO Disk('backups', 'g')",
        )])
        .basic_auth(BACKUPER.0, Some(BACKUPER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "written outside"
    );
    let mut made: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(
        made,
        ["full-1", "inc-1"],
        "only the allowed backups were written"
    );
    let (_, _, body) = post(
        &url,
        READER,
        "SELECT count() FROM system.databases WHERE name LIKE 'copy_%'",
    )
    .await;
    assert_eq!(body.trim(), "1");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn ping_parameters_headers_and_compression_follow_clickhouse() {
    let (s, url) = server().await;
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = http.get(format!("{url}/ping")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Ok.\n");

    // Credentials as parameters, the query in the URL, query parameters,
    // default_format, query_id; the answer's headers.
    let r = http
        .get(format!(
            "{url}/?user=reader&password=reader-secret&query=SELECT%20%7Bn%3AUInt8%7D%20%2B%201%20AS%20x&param_n=41&default_format=JSONEachRow&query_id=q-1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["X-ClickHouse-Query-Id"], "q-1");
    assert_eq!(r.headers()["X-ClickHouse-Format"], "JSONEachRow");
    let summary: Value =
        serde_json::from_str(r.headers()["X-ClickHouse-Summary"].to_str().unwrap()).unwrap();
    assert!(summary["elapsed_ns"].as_str().is_some(), "{summary}");
    assert_eq!(r.text().await.unwrap(), "{\"x\":42}\n");

    // Rows in the body after the statement in `query`, in every content
    // encoding; X-ClickHouse-User / -Key.
    for enc in ["gzip", "deflate", "br", "zstd", "lz4"] {
        let rows = (0..1000)
            .map(|n| {
                format!(
                    "{{\"order_id\":\"{enc}\",\"quantity\":{n},\"timestamp\":\"{}\"}}\n",
                    bilten_analytics::storage::datetime64_text(&chrono::Utc::now())
                )
            })
            .collect::<String>();
        let r = http
            .post(format!(
                "{url}/?query=INSERT%20INTO%20ticket_sales%20(order_id,%20quantity,%20timestamp)%20FORMAT%20JSONEachRow"
            ))
            .header("X-ClickHouse-User", WRITER.0)
            .header("X-ClickHouse-Key", WRITER.1)
            .header("Content-Encoding", enc)
            .body(bilten_analytics::clickhouse_http::codec::encode_content(
                enc,
                rows.as_bytes(),
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{enc}: {}", r.text().await.unwrap());
    }
    let counts = s
        .query(
            "SELECT order_id, count() AS c, sum(quantity) AS s FROM bilten_analytics.ticket_sales GROUP BY order_id ORDER BY order_id",
        )
        .await;
    assert_eq!(counts.len(), 5, "{counts:?}");
    for row in counts {
        assert_eq!(as_u64(&row["c"]), 1000, "{row}");
        assert_eq!(as_u64(&row["s"]), 499_500, "{row}");
    }

    // Answers compressed on request: HTTP encodings, or ClickHouse's blocks.
    for enc in ["gzip", "zstd", "br"] {
        let r = http
            .post(format!("{url}/?enable_http_compression=1"))
            .basic_auth(READER.0, Some(READER.1))
            .header("Accept-Encoding", enc)
            .body("SELECT count() FROM ticket_sales")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["Content-Encoding"], enc);
        let packed = r.bytes().await.unwrap();
        let plain =
            bilten_analytics::clickhouse_http::codec::decode_content(enc, packed, 1 << 20).unwrap();
        assert_eq!(plain, b"5000\n", "{enc}");
    }
    let r = http
        .post(format!("{url}/?compress=1"))
        .basic_auth(READER.0, Some(READER.1))
        .body("SELECT count() FROM ticket_sales")
        .send()
        .await
        .unwrap();
    let packed = r.bytes().await.unwrap();
    assert_eq!(
        bilten_analytics::clickhouse_http::codec::decompress_blocks(&packed, 1 << 20).unwrap(),
        b"5000\n"
    );

    // A damaged block and a gzip bomb get a 4xx that says so; nothing stored.
    let mut block = bilten_analytics::clickhouse_http::codec::compress_blocks(
        b"{\"order_id\":\"bad\",\"quantity\":1}\n",
    );
    let last = block.len() - 1;
    block[last] ^= 0xff;
    let r = http
        .post(format!(
            "{url}/?decompress=1&query=INSERT%20INTO%20ticket_sales%20FORMAT%20JSONEachRow"
        ))
        .basic_auth(WRITER.0, Some(WRITER.1))
        .body(block)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("checksum"));
    let bomb =
        bilten_analytics::clickhouse_http::codec::encode_content("gzip", &vec![b' '; 300 << 20]);
    let r = http
        .post(format!(
            "{url}/?query=INSERT%20INTO%20ticket_sales%20FORMAT%20JSONEachRow"
        ))
        .basic_auth(WRITER.0, Some(WRITER.1))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("more than"));
    assert_eq!(s.count("ticket_sales").await, 5000);

    // Engine errors keep ClickHouse's status and code.
    let (status, code, body) = post(&url, READER, "SELECT * FROM no_such_table").await;
    assert_eq!((status, code.as_deref()), (404, Some("60")), "{body}");
    let (status, code, _) = post(&url, READER, "SELEC 1").await;
    assert_eq!((status, code.as_deref()), (400, Some("62")));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn another_ingest_server_stores_through_the_interface() {
    let (store, url) = server().await;
    // An ingest server on the `clickhouse` backend, pointed at the first
    // one's interface: the real protocol, the real engine behind it.
    let ingest = ingest_through(&url, |_| {}).await;
    let events: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "event_type": if i % 5 == 0 { "purchase" } else { "page_view" },
                "organizer_id": format!("org-{}", i % 3),
                "user_id": format!("u{}", i % 10),
                "session_id": format!("s{}", i % 10),
                "event_id": "evt-1",
                "event_name": "Concert",
            })
        })
        .collect();
    let (status, body) = ingest
        .post_json("/v1/events?wait=true", &Value::Array(events))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], json!(true), "{body}");
    assert_eq!(store.count("events").await, 50);
    // The views fed by those inserts agree with the raw rows.
    let hourly = store
        .query("SELECT sum(events) AS n FROM bilten_analytics.events_hourly_mv")
        .await;
    assert_eq!(as_u64(&hourly[0]["n"]), 50);
    // Both servers see the same migrations, applied once.
    let (status, m) = ingest.admin_get("/admin/migrations").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["pending"], json!(0), "{m}");
    ingest.stop().await.unwrap();
    store.stop().await.unwrap();
}

/// `storage.clickhouse.database` is honoured in every statement: migrations,
/// inserts, views, health and admin SQL all use the configured database, and
/// the interface lets its writer change that one.
#[tokio::test]
async fn another_database_name_is_honoured_in_every_statement() {
    // The store does not migrate itself: only the ingest server's
    // migrations create anything.
    let (store, url) = server_with(|c| {
        c.clickhouse_http.database = "bilten_staging".into();
        c.migrate_on_start = false;
    })
    .await;
    let ingest = ingest_through(&url, |c| {
        c.storage.clickhouse.database = "bilten_staging".into();
    })
    .await;
    let (status, body) = ingest
        .post_json(
            "/v1/events?wait=true",
            &json!([{"event_type": "page_view", "organizer_id": "org-1", "user_id": "u1"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The store holds the rows under the configured name, and nothing else.
    let rows = store
        .query("SELECT (SELECT count() FROM bilten_staging.events) AS staged, (SELECT sum(events) FROM bilten_staging.events_hourly_mv) AS in_view, (SELECT count() FROM system.databases WHERE name = 'bilten_analytics') AS default_db")
        .await;
    assert_eq!(as_u64(&rows[0]["staged"]), 1, "{rows:?}");
    assert_eq!(as_u64(&rows[0]["in_view"]), 1, "{rows:?}");
    assert_eq!(as_u64(&rows[0]["default_db"]), 0, "{rows:?}");
    // The ingest server's own SQL names `bilten_analytics`; it reaches the store's.
    let seen = ingest
        .query("SELECT count() AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(as_u64(&seen[0]["n"]), 1);
    let (status, m) = ingest.admin_get("/admin/migrations").await;
    assert_eq!((status, m["pending"].clone()), (200, json!(0)), "{m}");
    ingest.stop().await.unwrap();
    store.stop().await.unwrap();
}

/// Runs a client's check script with the users' passwords; it must succeed
/// and print `ok_line`.
async fn run_client(mut cmd: Command, ok_line: &str) {
    cmd.env("CH_READER_PASSWORD", READER.1)
        .env("CH_WRITER_PASSWORD", WRITER.1);
    let ran = output(cmd).await;
    assert!(ran.ok && ran.text.contains(ok_line), "{}", ran.text);
}

#[tokio::test]
async fn clickhouse_connect_works_unmodified() {
    let python = pip("clickhouse-connect", &["clickhouse-connect==1.12.0"]);
    let (s, url) = server().await;
    let (status, _) = s
        .post_json(
            "/v1/events",
            &json!([{"event_type": "page_view", "organizer_id": "org-1"}]),
        )
        .await;
    assert_eq!(status, 202);
    s.flush().await;
    let port = url.rsplit(':').next().unwrap().to_string();
    let mut python = Command::new(python);
    python
        .arg(script("clickhouse_connect_check.py"))
        .env("CH_HOST", "127.0.0.1")
        .env("CH_PORT", port)
        .env("CH_EVENTS", "1");
    run_client(python, "clickhouse-connect: ok").await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn clickhouse_js_client_works_unmodified() {
    let dir = npm("clickhouse-js", &["@clickhouse/client@1.23.1"]);
    std::fs::copy(
        script("clickhouse_js_check.mjs"),
        dir.join("clickhouse_js_check.mjs"),
    )
    .unwrap();
    let (s, url) = server().await;
    let mut node = Command::new("node");
    node.arg("clickhouse_js_check.mjs")
        .current_dir(&dir)
        .env("CH_URL", url);
    run_client(node, "@clickhouse/client: ok").await;
    s.stop().await.unwrap();
}

/// The backup catalog is data: a writer of the interface may insert rows
/// into a `clickhouse` backend's catalog (its records are insert-only), but
/// rows it forges (an id that is a path or carries SQL, a base that points
/// elsewhere, a "deleted" mark on a real backup) are never run, never
/// deleted from the disk, never counted toward `keep`, and never hide a
/// backup the server signed.
#[tokio::test]
async fn forged_catalog_rows_are_never_code_paths_or_counted() {
    let (store, url) = server().await;
    let ingest = TestServer::start(|c| {
        c.storage.backend = Backend::Clickhouse;
        c.storage.clickhouse.url = url.clone();
        c.storage.clickhouse.user = BACKUPER.0.into();
        c.storage.clickhouse.password = Some(BACKUPER.1.into());
        c.storage.clickhouse.system_database =
            bilten_analytics::model::GUEST_SYSTEM_DATABASE.into();
        c.backups.keep = 1;
    })
    .await;
    let (status, first) = ingest
        .admin(reqwest::Method::POST, "/admin/backups", Some(&json!({})))
        .await;
    assert_eq!(status, 200, "{first}");
    let real = first["backup"]["id"].as_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let planted = out.path().join("planted");
    let forged = [
        json!({"id": "../engine", "kind": "full", "status": "created", "created_at": "2099-01-01 00:00:00.000", "tables": "{}"}),
        json!({"id": "/etc", "kind": "full", "status": "created", "created_at": "2099-01-01 00:00:00.000", "tables": "{}"}),
        json!({"id": format!("x') SETTINGS base_backup = File('{}')", planted.display()), "kind": "full", "status": "created", "created_at": "2099-01-02 00:00:00.000", "tables": "{}"}),
        json!({"id": "inc-forged", "kind": "incremental", "base": "../../engine", "status": "created", "created_at": "2099-01-03 00:00:00.000", "tables": "{}"}),
        json!({"id": real, "kind": "full", "status": "deleted", "created_at": "2099-01-04 00:00:00.000", "tables": "{}", "signature": "00"}),
    ];
    for row in &forged {
        let (status, _, body) = post(
            &url,
            WRITER,
            &format!("INSERT INTO bilten_remote.backups FORMAT JSONEachRow\n{row}\n"),
        )
        .await;
        assert_eq!(status, 200, "a writer may insert catalog rows: {body}");
    }
    // The list: the real backup, signed, still created; the forged rows
    // with impossible names are not there at all.
    let (status, list) = ingest.admin_get("/admin/backups").await;
    assert_eq!(status, 200, "{list}");
    let backups = list["backups"].as_array().unwrap();
    let ids: Vec<&str> = backups.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert!(
        !ids.iter().any(|i| i.contains('/') || i.contains('\'')),
        "{list}"
    );
    let mine = backups.iter().find(|b| b["id"] == real.as_str()).unwrap();
    assert_eq!(
        (mine["status"].as_str(), mine["signed"].as_bool()),
        (Some("created"), Some(true)),
        "{list}"
    );
    // An incremental builds on the signed full backup, never a forged one.
    let (status, inc) = ingest
        .admin(
            reqwest::Method::POST,
            "/admin/backups",
            Some(&json!({"incremental": true})),
        )
        .await;
    assert_eq!(status, 200, "{inc}");
    assert_eq!(inc["backup"]["base"], real.as_str(), "{inc}");
    // keep = 1 prunes this server's own older backups only.
    let (status, full) = ingest
        .admin(reqwest::Method::POST, "/admin/backups", Some(&json!({})))
        .await;
    assert_eq!(status, 200, "{full}");
    let pruned: Vec<&str> = full["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        pruned
            .iter()
            .all(|p| *p == real || *p == inc["backup"]["id"].as_str().unwrap()),
        "{full}"
    );
    assert!(!planted.exists(), "a forged id ran as SQL");
    // The store's own data survived: it still answers, with its rows.
    assert!(store.data_dir.join("engine").is_dir());
    let (status, _, body) = post(&url, READER, "SELECT count() FROM system.tables").await;
    assert_eq!(status, 200, "{body}");
    ingest.stop().await.unwrap();
    store.stop().await.unwrap();
}

/// What attacks on the first version of the walls found, each held now: a
/// structure string's `ALIAS file(…)` evaluated by a "pure" table function,
/// a SHOW's WHERE or LIMIT (which EXPLAIN AST leaves out) calling `file()`,
/// answers past the result limit from a statement without a table, and
/// statement text far past what the engine parses.
#[tokio::test]
async fn reads_evaluate_no_structure_strings_and_answers_keep_the_limits() {
    let (s, url) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    let marker = format!("MARK-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&secret, &marker).unwrap();
    let p = secret.display();
    for user in [READER, WRITER] {
        for sql in [
            format!("SELECT b FROM values('a String, b String ALIAS file(''{p}'')', 'x')"),
            format!(
                "SELECT b FROM generateRandom('a UInt8, b String ALIAS file(''{p}'')') LIMIT 1"
            ),
            format!("SELECT b FROM null('a String, b String DEFAULT file(''{p}'')')"),
        ] {
            let (status, _, body) = post(&url, user, &sql).await;
            assert!(
                status >= 400 && !body.contains(&marker),
                "{} read the file: {sql}: {status} {body}",
                user.0
            );
        }
        // A SHOW's WHERE and LIMIT, which EXPLAIN AST does not show.
        for sql in [
            format!("SHOW DATABASES LIMIT toUInt8(file('{p}'))"),
            format!("SHOW TABLES FROM system WHERE toUInt8(file('{p}'))"),
            format!("SHOW COLUMNS FROM system.one WHERE name = file('{p}')"),
        ] {
            let (status, _, body) = post(&url, user, &sql).await;
            assert!(
                status >= 400 && !body.contains(&marker),
                "{} read the file: {sql}: {status} {body}",
                user.0
            );
        }
        // The structure as a query parameter.
        let r = reqwest::Client::new()
            .post(format!("{url}/"))
            .query(&[
                ("query", "SELECT b FROM values({s:String}, 'x')".to_string()),
                ("param_s", format!("a String, b String ALIAS file('{p}')")),
            ])
            .basic_auth(user.0, Some(user.1))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_client_error() && !body.contains(&marker),
            "{status} {body}"
        );
    }
    // The answer is held to max_result_bytes (100 MB), tables or none,
    // whatever the format makes of the data.
    for sql in [
        "SELECT randomString(150000000)",
        "SELECT randomString(150000000) FROM system.one",
        "SELECT randomString(60000000) AS s FORMAT JSON",
    ] {
        let (status, code, body) = post(&url, READER, sql).await;
        assert!(
            status >= 400 && code.as_deref() == Some("396"),
            "{sql}: {status} {code:?} {}",
            &body[..body.len().min(200)]
        );
    }
    // A statement's text past 1 MiB is refused before it is parsed.
    let long = format!("SELECT 1 -- {}", "a".repeat(2 << 20));
    let (status, code, body) = post(&url, READER, &long).await;
    assert_eq!((status, code.as_deref()), (400, Some("62")), "{body}");
    assert!(body.contains("Max query size exceeded"), "{body}");
    s.stop().await.unwrap();
}

/// A backup user may not drop the live database (a restore renames it
/// aside), and a live database renamed away, then partly made again by a
/// writer, does not keep the server from starting: it makes what is
/// missing, takes events, and the old one is still there. An old layout's
/// audit log a writer made again is not copied into the records.
#[tokio::test]
async fn a_backup_user_cannot_drop_the_live_database_nor_keep_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.clickhouse_http.listen = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    cfg.clickhouse_http.users = [(BACKUPER, true), (WRITER, false)]
        .map(|((name, password), backup)| HttpUser {
            name: name.into(),
            password: Some(password.into()),
            password_sha256: None,
            readonly: false,
            backup,
        })
        .to_vec();
    let s = TestServer::start_with(cfg.clone()).await;
    let url = s.clickhouse_url.clone().unwrap();
    let events = |tag: &str| {
        Value::Array(
            (0..5)
                .map(|i| json!({"event_type": "page_view", "organizer_id": "org-1", "user_id": format!("{tag}{i}")}))
                .collect(),
        )
    };
    assert_eq!(s.post_json("/v1/events", &events("old")).await.0, 202);
    s.flush().await;
    for sql in [
        "DROP DATABASE IF EXISTS bilten_analytics SYNC",
        "DROP DATABASE IF EXISTS bilten_analytics",
        "RENAME DATABASE bilten_analytics TO gone",
    ] {
        let (status, code, body) = post(&url, BACKUPER, sql).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("497")),
            "{sql}: {body}"
        );
    }
    let (status, _, body) = post(
        &url,
        BACKUPER,
        "RENAME DATABASE bilten_analytics TO bilten_analytics_before_restore_1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A writer then makes part of it again with the migrations' own
    // statements (the database and `events`), and the old layout's audit
    // log with a forged row in it.
    let mut again = vec!["CREATE DATABASE IF NOT EXISTS bilten_analytics".to_string()];
    let first = &bilten_analytics::ops::migrations::MIGRATIONS;
    again.extend(first[0].statements());
    again.extend(first[11].statements());
    again.push(
        "INSERT INTO bilten_analytics.audit_log (actor, path) FORMAT JSONEachRow\n{\"actor\":\"admin\",\"path\":\"FORGED\"}\n".into(),
    );
    for sql in &again {
        let (status, _, body) = post(&url, WRITER, sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
    }
    s.stop().await.unwrap();
    let s = TestServer::start_with(cfg).await;
    let forged = s
        .query("SELECT count() AS n FROM bilten_system.audit_log WHERE path = 'FORGED'")
        .await;
    assert_eq!(
        as_u64(&forged[0]["n"]),
        0,
        "a forged row reached the audit log"
    );
    let (status, health) = s.admin_get("/admin/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["migrations"]["pending"], 0, "{health}");
    assert_eq!(s.post_json("/v1/events", &events("new")).await.0, 202);
    s.flush().await;
    assert_eq!(s.count("events").await, 5);
    let old = s
        .query("SELECT count() AS n FROM bilten_analytics_before_restore_1.events")
        .await;
    assert_eq!(as_u64(&old[0]["n"]), 5);
    s.stop().await.unwrap();
}

/// Bodies that decompress to 40 MiB each, sent ten at once by a
/// read-only user: a body is read only once its statement has a turn
/// (`clickhouse_http.concurrency`), and a statement's text that large is
/// refused before it is copied or parsed. Memory grows by a few bodies, not
/// by ten (it grew by gigabytes before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_read_one_turn_at_a_time_and_long_texts_refused_before_parsing() {
    let (s, url) = server_with(|c| c.clickhouse_http.concurrency = 2).await;
    let mut text = b"SELECT 1 -- ".to_vec();
    text.resize(40 << 20, b'a');
    let bomb = bilten_analytics::clickhouse_http::codec::encode_content("gzip", &text);
    drop(text);
    let before = common::peak_rss_bytes();
    let sends = (0..10).map(|_| {
        let (url, bomb) = (url.clone(), bomb.clone());
        async move {
            let r = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap()
                .post(format!("{url}/"))
                .basic_auth(READER.0, Some(READER.1))
                .header("Content-Encoding", "gzip")
                .body(bomb)
                .send()
                .await
                .unwrap();
            let code = r
                .headers()
                .get("X-ClickHouse-Exception-Code")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), code)
        }
    });
    let answers = futures::future::join_all(sends).await;
    assert!(
        answers.iter().all(|a| *a == (400, Some("62".to_string()))),
        "{answers:?}"
    );
    let grown = common::peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < 300 << 20,
        "memory grew by {} MiB for ten 40 MiB bodies",
        grown >> 20
    );
    s.stop().await.unwrap();
}

/// One raw HTTP/1.1 exchange: `head` (request line and headers, no blank
/// line), then `body`; the response's text as far as it comes within
/// `wait` (the server may answer before the body is all sent).
async fn raw_exchange(url: &str, head: &str, body: &[u8], wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    c.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // Enough once the headers and a little of the body are in.
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.len() > 200 {
                    break;
                }
            }
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The handler's steps answer as the one handler did: who before the body,
/// the turn before the body and through the statement, credentials never
/// from a form, a form's settings through the allow-list, the empty
/// statement's two answers, and each refusal's code, status and query id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handlers_steps_keep_auth_turns_forms_and_codes() {
    use std::time::Duration;
    let (s, url) = server_with(|c| {
        c.clickhouse_http.concurrency = 1;
        c.clickhouse_http.max_body_bytes = 1 << 20;
    })
    .await;
    let http = reqwest::Client::new();
    let basic = |u: (&str, &str)| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", u.0, u.1))
    };

    // No credentials, a 100 MB body announced, 8 bytes sent: refused at
    // once, the body never waited for, the query id echoed.
    let answer = raw_exchange(
        &url,
        "POST /?query_id=attack-1 HTTP/1.1\r\nContent-Length: 100000000",
        b"SELECT 1",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-clickhouse-exception-code: 516"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-clickhouse-query-id: attack-1"),
        "{answer}"
    );

    // A reader's body half sent holds the one turn: another reader's
    // statement waits; a stranger is still refused at once (no turn taken).
    let holder = {
        let (url, auth) = (url.clone(), basic(READER));
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
            c.write_all(
                format!(
                    "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Length: 10\r\n\r\nSELECT"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            c.write_all(b" 7\n\n").await.unwrap();
            let mut out = vec![0u8; 4096];
            let n = c.read(&mut out).await.unwrap();
            String::from_utf8_lossy(&out[..n]).into_owned()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waited = http
        .post(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .body("SELECT 1")
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        waited.is_err(),
        "ran while another held the turn: {waited:?}"
    );
    let stranger = http
        .post(format!("{url}/"))
        .basic_auth("reader", Some("nope"))
        .body("SELECT 1")
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("a stranger is answered without a turn");
    assert_eq!(stranger.status(), 403);
    let held = holder.await.unwrap();
    assert!(held.starts_with("HTTP/1.1 200"), "{held}");
    assert!(held.ends_with("7\n"), "{held}");

    // The empty statement: GET is ClickHouse's liveness answer, POST an
    // error; neither without credentials.
    let r = http
        .get(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "Ok.\n".to_string())
    );
    let r = http
        .get(format!("{url}/?query=%20%20"))
        .basic_auth(READER.0, Some(READER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "Ok.\n".to_string())
    );
    let r = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    for body in ["", "  \n\t"] {
        let (status, code, text) = post_to(&url, "?query_id=empty", READER, body).await;
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("62")),
            "{body:?}: {text}"
        );
        assert!(text.contains("Empty query"), "{text}");
    }

    // Credentials in a form are not credentials: the URL's or the
    // headers' are taken before the body is read.
    let form = |fields: &[(&str, &str)], boundary: &str| -> String {
        let mut f = String::new();
        for (name, value) in fields {
            f.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        f.push_str(&format!("--{boundary}--\r\n"));
        f
    };
    let send_form =
        |query: &'static str, auth: Option<(&'static str, &'static str)>, body: String| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let mut r = http
                    .post(format!("{url}/{query}"))
                    .header("Content-Type", "multipart/form-data; boundary=XyZ")
                    .body(body);
                if let Some((u, p)) = auth {
                    r = r.basic_auth(u, Some(p));
                }
                let r = r.send().await.unwrap();
                let code = r
                    .headers()
                    .get("X-ClickHouse-Exception-Code")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), code, r.text().await.unwrap())
            }
        };
    let insert = "INSERT INTO settings (key) FORMAT JSONEachRow {\"key\":\"form\"}";
    let writer_in_form = || {
        form(
            &[
                ("user", WRITER.0),
                ("password", WRITER.1),
                ("query", insert),
            ],
            "XyZ",
        )
    };
    let (status, code, text) = send_form("", None, writer_in_form()).await;
    assert_eq!((status, code.as_deref()), (403, Some("516")), "{text}");
    let (status, code, text) = send_form("", Some(READER), writer_in_form()).await;
    assert_eq!(
        status, 403,
        "a reader wrote with a form's credentials: {code:?} {text}"
    );
    // A form's settings go through the allow-list; `readonly` only tightens.
    for (name, value, want) in [
        ("readonly", "0", "164"),
        ("format_template_resultset", "/etc/passwd", "164"),
        ("no_such_setting", "1", "164"),
    ] {
        let (status, code, text) = send_form(
            "",
            Some(READER),
            form(&[("query", "SELECT 1"), (name, value)], "XyZ"),
        )
        .await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some(want)),
            "{name}: {text}"
        );
    }
    let (status, _, text) = send_form(
        "",
        Some(WRITER),
        form(&[("query", insert), ("readonly", "1")], "XyZ"),
    )
    .await;
    assert_eq!(status, 403, "readonly=1 in a form did not tighten: {text}");
    // A form's `param_*` is bound, never spliced.
    let (status, _, text) = send_form(
        "",
        Some(READER),
        form(
            &[
                ("query", "SELECT {v:String}"),
                ("param_v", "x'); SELECT ('y"),
            ],
            "XyZ",
        ),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (200, "x\\'); SELECT (\\'y\n"),
        "{text}"
    );
    // A file field, a broken form.
    let file = "--XyZ\r\nContent-Disposition: form-data; name=\"t\"; filename=\"t.tsv\"\r\n\r\n1\r\n--XyZ--\r\n";
    let (status, code, text) = send_form("?query=SELECT%201", Some(READER), file.into()).await;
    assert_eq!((status, code.as_deref()), (413, Some("1001")), "{text}");
    assert!(text.contains("external tables"), "{text}");
    let (status, code, text) = send_form(
        "?query=SELECT%201",
        Some(READER),
        "--XyZ\r\nnonsense".into(),
    )
    .await;
    assert_eq!((status, code.as_deref()), (413, Some("1001")), "{text}");
    assert!(text.contains("multipart form is malformed"), "{text}");

    // Bounds and decoding: each with its code, status and query id.
    let big = vec![b'a'; (1 << 20) + 1];
    let r = http
        .post(format!("{url}/?query_id=big"))
        .basic_auth(READER.0, Some(READER.1))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["X-ClickHouse-Exception-Code"], "1001");
    assert_eq!(r.headers()["X-ClickHouse-Query-Id"], "big");
    let bomb =
        bilten_analytics::clickhouse_http::codec::encode_content("gzip", &vec![b' '; 8 << 20]);
    let r = http
        .post(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "{:?}", r.headers());
    assert_eq!(r.headers()["X-ClickHouse-Exception-Code"], "1001");
    let r = http
        .post(format!("{url}/?decompress=1&query_id=dc"))
        .basic_auth(READER.0, Some(READER.1))
        .body("not blocks at all, not at all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["X-ClickHouse-Exception-Code"], "271");
    assert_eq!(r.headers()["X-ClickHouse-Query-Id"], "dc");
    let r = http
        .post(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .header("Content-Encoding", "compress")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["X-ClickHouse-Exception-Code"], "1001");
    let r = http
        .post(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .body(b"SELECT 1 \xff\xfe".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["X-ClickHouse-Exception-Code"], "62");

    assert_eq!(s.count("settings").await, 0);
    s.stop().await.unwrap();
}

/// A limit a reader sends only tightens: a value smaller than ours that
/// the engine reads as 0 (no limit at all) must not loosen it. The engine
/// keeps `max_execution_time` in whole microseconds, so anything under
/// 1 µs (0.0000001, 1e-300) became 0: no timeout. A client that then hangs
/// up gives its turn back while the statement runs on in the engine.
#[tokio::test]
async fn a_limit_below_the_engines_resolution_is_not_no_limit() {
    let (s, url) = server_with(|c| c.clickhouse_http.concurrency = 1).await;
    let mut failures = Vec::new();
    for query in [
        "?max_execution_time=0.0000001",
        "?max_execution_time=1e-300",
        "?max_execution_time=0.0000009",
    ] {
        let r = reqwest::Client::new()
            .post(format!("{url}/{query}"))
            .basic_auth(READER.0, Some(READER.1))
            .body("SELECT count() FROM numbers(100000000000)")
            .timeout(std::time::Duration::from_secs(8))
            .send()
            .await;
        match r {
            Err(e) => failures.push(format!("{query}: the 3 s limit did not hold: {e}")),
            Ok(r) => {
                let code = r
                    .headers()
                    .get("X-ClickHouse-Exception-Code")
                    .map(|v| v.to_str().unwrap().to_string());
                let text = r.text().await.unwrap();
                // Refused as a value, or run under a limit: never unlimited.
                if !matches!(code.as_deref(), Some("159" | "36" | "164")) {
                    failures.push(format!("{query}: {code:?} {text}"));
                }
            }
        }
    }
    // Statements whose clients hung up, still running, past any limit.
    let (_, _, running) = post(
        &url,
        READER,
        "SELECT count() FROM system.processes WHERE query LIKE '%numbers(100000000000)%' AND query NOT LIKE '%system.processes%'",
    )
    .await;
    if running.trim() != "0" {
        failures.push(format!(
            "{} unlimited statements still run in the engine",
            running.trim()
        ));
    }
    if let Err(e) = s.stop().await {
        failures.push(format!("the server did not stop: {e}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A client that hangs up does not give its statement's turn back while
/// the engine still runs it: with one turn, the next statement waits for
/// the abandoned one to end (its 3 s limit), and so finds it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_up_statement_keeps_its_turn_until_the_engine_ends_it() {
    let (s, url) = server_with(|c| c.clickhouse_http.concurrency = 1).await;
    let long = "SELECT count() FROM numbers(100000000000)";
    let abandoned = reqwest::Client::new()
        .post(format!("{url}/"))
        .basic_auth(READER.0, Some(READER.1))
        .body(long)
        .timeout(std::time::Duration::from_millis(700))
        .send()
        .await;
    assert!(abandoned.is_err(), "the client hung up before the answer");
    let (status, _, running) = post(
        &url,
        READER,
        "SELECT count() FROM system.processes WHERE query LIKE '%numbers(100000000000)%' \
         AND query NOT LIKE '%system.processes%'",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        running.trim(),
        "0",
        "the next statement ran beside the abandoned one: the turn was given back early"
    );
    s.stop().await.unwrap();
}
