//! Migrations: concurrent runs apply each file once, a half-migrated
//! database is finished, a changed file stops the run, and the admin routes.

mod common;

use bilten_analytics::config::Config;
use bilten_analytics::ops::migrations::{self, MIGRATIONS};
use bilten_analytics::storage::{self, query_text};
use common::{ADMIN, TestServer};
use serde_json::Value;

async fn open() -> (tempfile::TempDir, std::sync::Arc<dyn storage::Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.embedded.data_dir = dir.path().to_path_buf();
    (dir, storage::open(&cfg.storage).await.unwrap())
}

/// A store migrated up to (not including) the migration `name`, and that
/// migration: how a store of an older version meets it.
async fn migrated_before(
    name: &str,
) -> (
    tempfile::TempDir,
    std::sync::Arc<dyn storage::Storage>,
    &'static migrations::Migration,
) {
    let (dir, storage) = open().await;
    let at = MIGRATIONS.iter().position(|m| m.name == name).unwrap();
    storage
        .execute(&migrations::bookkeeping()[0])
        .await
        .unwrap();
    for m in &MIGRATIONS[..at] {
        for statement in m.statements() {
            storage.execute(&statement).await.unwrap();
        }
    }
    (dir, storage, &MIGRATIONS[at])
}

#[tokio::test]
async fn two_instances_starting_at_once_apply_each_migration_once() {
    let (_dir, storage) = open().await;
    let (a, b) = tokio::join!(migrations::apply(&*storage), migrations::apply(&*storage));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        MIGRATIONS.len(),
        "one ran them all, the other none: {a:?} / {b:?}"
    );
    assert!(a.is_empty() || b.is_empty());
    let rows = query_text(
        &*storage,
        "SELECT count(), uniqExact(version) FROM bilten_system.schema_migrations",
    )
    .await
    .unwrap();
    assert_eq!(rows.trim(), format!("{0}\t{0}", MIGRATIONS.len()));
    storage.close().await;
}

#[tokio::test]
async fn a_half_migrated_database_is_finished_and_a_changed_file_refused() {
    let (_dir, storage) = open().await;
    // A run that died inside migration 4: the first two statements ran, nothing recorded past 3.
    storage
        .execute("CREATE DATABASE IF NOT EXISTS bilten_analytics")
        .await
        .unwrap();
    for m in &MIGRATIONS[..3] {
        for stmt in m.statements() {
            storage.execute(&stmt).await.unwrap();
        }
    }
    for stmt in &MIGRATIONS[3].statements()[..2] {
        storage.execute(stmt).await.unwrap();
    }
    let applied = migrations::apply(&*storage).await.unwrap();
    assert_eq!(
        applied.len(),
        MIGRATIONS.len(),
        "every file is recorded, the finished ones too"
    );
    let status = migrations::status(&*storage).await.unwrap();
    assert_eq!((status.pending, status.changed), (0, 0));
    let views = query_text(&*storage, "SELECT count() FROM system.tables WHERE database = 'bilten_analytics' AND name LIKE '%\\_mv'").await.unwrap();
    assert_eq!(views.trim(), "5");

    // Someone edits an applied file: the checksum no longer matches.
    storage.execute("INSERT INTO bilten_system.schema_migrations (version, name, checksum, database) VALUES (2, '0002_page_views.sql', 'edited', 'bilten_analytics')").await.unwrap();
    let status = migrations::status(&*storage).await.unwrap();
    assert_eq!(status.changed, 1);
    let err = migrations::apply(&*storage).await.unwrap_err().to_string();
    assert!(
        err.contains("0002_page_views.sql was changed after it was applied"),
        "{err}"
    );
    storage.close().await;
}

#[tokio::test]
async fn admin_routes_list_and_dry_run() {
    let s = TestServer::start(|c| c.migrate_on_start = false).await;
    let get = |path: &str| {
        s.client
            .get(format!("{}/admin{path}", s.base))
            .bearer_auth(ADMIN)
            .send()
    };
    let status: Value = get("/migrations").await.unwrap().json().await.unwrap();
    assert_eq!(status["pending"], MIGRATIONS.len());
    let r = s.get_raw("/ready").await;
    assert_eq!(r.status(), 503, "not ready before migrating");

    let post = |path: &str| {
        s.client
            .post(format!("{}/admin{path}", s.base))
            .bearer_auth(ADMIN)
            .send()
    };
    let dry: Value = post("/migrations/apply?dry_run=true")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["pending"].as_array().unwrap().len(), MIGRATIONS.len());
    assert!(
        dry["pending"][0]["statements"][0]
            .as_str()
            .unwrap()
            .starts_with("CREATE TABLE IF NOT EXISTS bilten_analytics.events")
    );
    let still: Value = get("/migrations").await.unwrap().json().await.unwrap();
    assert_eq!(
        still["pending"],
        MIGRATIONS.len(),
        "a dry run changes nothing"
    );

    let applied: Value = post("/migrations/apply")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        applied["applied"].as_array().unwrap().len(),
        MIGRATIONS.len()
    );
    let r = s.get_raw("/ready").await;
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();
}

/// Each client table's columns in `sql/` are the model's fields, with their
/// types, plus the columns the server fills: the one declaration and the
/// schema cannot drift apart.
#[tokio::test]
async fn the_tables_in_sql_have_the_models_fields_and_types() {
    use bilten_analytics::model::{SERVER_COLUMNS, Table};
    let (_dir, storage) = open().await;
    migrations::apply(&*storage).await.unwrap();
    for table in Table::INGEST {
        let text = query_text(
            &*storage,
            &format!(
                "SELECT name, type FROM system.columns WHERE database = 'bilten_analytics' \
                 AND table = '{}' ORDER BY name FORMAT TSVRaw",
                table.name()
            ),
        )
        .await
        .unwrap();
        let in_sql: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let (n, t) = l.split_once('\t').unwrap();
                (n.to_string(), t.to_string())
            })
            .collect();
        let mut declared: Vec<(String, String)> = table
            .fields()
            .iter()
            .map(|f| (f.name.to_string(), f.column.to_string()))
            .chain(
                SERVER_COLUMNS
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string())),
            )
            .chain(
                table
                    .client()
                    .unwrap()
                    .host_columns()
                    .map(|c| (c.name.to_string(), c.column.to_string())),
            )
            .collect();
        declared.sort();
        assert_eq!(in_sql, declared, "{}", table.name());
    }
    storage.close().await;
}

/// The cluster layout's rendering of every migration and of the migrations'
/// own tables, each statement parsed by the engine's own parser
/// (`formatQuery`, the text bound as a parameter through `/admin/query`).
/// No Keeper runs here, so the statements are parse-checked, not run.
#[tokio::test]
async fn the_cluster_layout_renders_every_migration_into_statements_the_engine_parses() {
    use bilten_analytics::ops::migrations::{MIGRATIONS, bookkeeping};
    use bilten_analytics::storage::cluster::render;
    let s = TestServer::start(|_| {}).await;
    let statements: Vec<String> = bookkeeping()
        .into_iter()
        .chain(MIGRATIONS.iter().flat_map(|m| m.statements()))
        .collect();
    let mut rendered = Vec::new();
    for st in &statements {
        rendered.extend(render(st, "bilten").unwrap_or_else(|e| panic!("{e}")));
    }
    // Every table is a Replicated local table plus a Distributed one.
    let tables = statements
        .iter()
        .filter(|s| s.starts_with("CREATE TABLE"))
        .count();
    let replicated = rendered
        .iter()
        .filter(|s| s.contains("ENGINE = Replicated"))
        .count();
    let distributed = rendered
        .iter()
        .filter(|s| s.contains("ENGINE = Distributed(bilten, bilten_analytics,"))
        .count();
    assert_eq!((replicated, distributed), (tables, tables));
    assert!(
        rendered
            .iter()
            .filter(|s| s.starts_with("CREATE MATERIALIZED VIEW"))
            .all(|s| s.contains("_local") && !s.contains("FROM bilten_analytics.events\n")),
        "materialized views read and write the local tables"
    );
    // The check can fail: text the parser refuses is a 400.
    let (status, _) = s
        .admin_query("SELECT formatQuery('CREATE TABLE t ON CLUSTER ENGINE = ') AS f")
        .await;
    assert_eq!(status, 400);
    assert!(rendered.len() > statements.len(), "{}", rendered.len());
    for sql in &rendered {
        assert!(
            sql.contains("ON CLUSTER bilten")
                || !sql.starts_with("CREATE") && !sql.starts_with("ALTER"),
            "{sql}"
        );
        let quoted = sql.replace('\\', "\\\\").replace('\'', "\\'");
        let (status, body) = s
            .admin_query(&format!("SELECT formatQuery('{quoted}') AS f"))
            .await;
        assert_eq!(status, 200, "the engine cannot parse:\n{sql}\n{body}");
    }
    s.stop().await.unwrap();
}

/// `0015_dashboard_sketches.sql` on a store that already has events: the
/// migration fills the sketches from what is stored, and from then on the
/// views add each insert; a user seen before and after counts once.
#[tokio::test]
async fn the_sketches_migration_counts_what_was_stored_before_it() {
    let (_dir, storage, sketches) = migrated_before("0015_dashboard_sketches.sql").await;
    // The backfill is the views' own SELECTs, word for word.
    let statements = sketches.statements();
    let body = |s: &str, after: &str| s.split_once(after).map(|(_, b)| b.trim().to_string());
    let views: Vec<String> = statements
        .iter()
        .filter_map(|s| body(s, "TO bilten_analytics.dashboard_sketches AS"))
        .collect();
    let backfills: Vec<String> = statements
        .iter()
        .filter_map(|s| body(s, "INSERT INTO bilten_analytics.dashboard_sketches"))
        .collect();
    assert_eq!(views.len(), 2);
    assert_eq!(views, backfills);
    let events = |users: std::ops::Range<u32>| {
        let lines: Vec<String> = users
            .map(|u| {
                format!(
                    r#"{{"id":"{}","timestamp":"2026-11-28 12:00:00.000","received_at":"2026-11-28 12:00:00.000","event_type":"view_event","organizer_id":"o","user_id":"u{u}","event_id":"evt-1"}}"#,
                    uuid::Uuid::new_v4()
                )
            })
            .collect();
        bytes::Bytes::from(lines.join("\n") + "\n")
    };
    storage
        .insert("events", events(0..300), "before")
        .await
        .unwrap();
    for statement in sketches.statements() {
        storage.execute(&statement).await.unwrap();
    }
    let distinct = |measure: &'static str| {
        let storage = storage.clone();
        async move {
            query_text(
                &*storage,
                &format!("SELECT uniqHLL12Merge(users) FROM bilten_analytics.dashboard_sketches WHERE measure = '{measure}'"),
            )
            .await
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap()
        }
    };
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.05;
    for measure in ["users", "visitors", "view_event"] {
        let got = distinct(measure).await;
        assert!(near(got, 300.0), "{measure}: {got}, backfilled");
    }
    // 200 more users, 100 of them seen before.
    storage
        .insert("events", events(200..400), "after")
        .await
        .unwrap();
    let got = distinct("users").await;
    assert!(near(got, 400.0), "{got}: a user seen twice counts once");
    // The seed's own view agrees, exactly.
    let seed = query_text(
        &*storage,
        "SELECT uniqMerge(unique_users) FROM bilten_analytics.metrics_daily",
    )
    .await
    .unwrap();
    assert_eq!(seed.trim(), "400");
    storage.close().await;
}

/// Page views per hour come from a projection of `page_views`; a
/// lightweight delete (an erasure request) still works, and the hourly
/// counts follow it.
#[tokio::test]
async fn page_views_per_hour_follow_a_lightweight_delete() {
    let (_dir, storage) = open().await;
    migrations::apply(&*storage).await.unwrap();
    let rows: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"id":"{}","timestamp":"2026-11-28 1{}:10:00.000","received_at":"2026-11-28 12:00:00.000","organizer_id":"{}","url":"/e","user_id":"u{i}"}}"#,
                uuid::Uuid::new_v4(),
                i % 3,
                if i < 20 { "keep" } else { "erase" }
            )
        })
        .collect();
    storage
        .insert(
            "page_views",
            bytes::Bytes::from(rows.join("\n") + "\n"),
            "t",
        )
        .await
        .unwrap();
    storage
        .execute("DELETE FROM bilten_analytics.page_views WHERE organizer_id = 'erase'")
        .await
        .unwrap();
    let hourly = query_text(
        &*storage,
        "SELECT organizer_id, toStartOfHour(timestamp) AS h, count() FROM bilten_analytics.page_views \
         GROUP BY organizer_id, h ORDER BY organizer_id, h",
    )
    .await
    .unwrap();
    assert_eq!(
        hourly.trim(),
        "keep\t2026-11-28 10:00:00\t7\nkeep\t2026-11-28 11:00:00\t7\nkeep\t2026-11-28 12:00:00\t6"
    );
    // …and they are the projection's: it was rebuilt for the delete, not
    // dropped, and the engine reads the counts from it.
    let parts = query_text(
        &*storage,
        "SELECT count() FROM system.projection_parts WHERE database = 'bilten_analytics' \
         AND table = 'page_views' AND name = 'hourly' AND active AND rows > 0",
    )
    .await
    .unwrap();
    assert_ne!(
        parts.trim(),
        "0",
        "the projection has no parts after the delete"
    );
    let plan = query_text(
        &*storage,
        "EXPLAIN projections = 1 SELECT organizer_id, toStartOfHour(timestamp) AS h, count() \
         FROM bilten_analytics.page_views GROUP BY organizer_id, h",
    )
    .await
    .unwrap();
    assert!(
        plan.contains("ReadFromMergeTree (hourly)"),
        "not read from the projection after the delete:\n{plan}"
    );
    storage.close().await;
}

/// `0018_revenue_per_currency.sql` on a store that already has sales: each
/// day's revenue is split by currency from the stored sales; a day whose
/// sales retention has since deleted keeps its amount under the unknown
/// currency ''; a second run adds nothing, even once its insert tokens are
/// forgotten; later sales are split as they arrive. No amount is lost or
/// counted twice.
#[tokio::test]
async fn the_currency_migration_splits_stored_revenue_and_loses_none() {
    let (_dir, storage, currency) = migrated_before("0018_revenue_per_currency.sql").await;
    let sales = |rows: &[(&str, &str, &str, u32)]| {
        let lines: Vec<String> = rows
            .iter()
            .map(|(day, price, currency, quantity)| {
                format!(
                    r#"{{"id":"{}","timestamp":"{day} 12:00:00.000","received_at":"{day} 12:00:00.000","event_id":"evt-1","organizer_id":"o","user_id":"u","order_id":"x","quantity":{quantity},"price":"{price}","currency":"{currency}"}}"#,
                    uuid::Uuid::new_v4()
                )
            })
            .collect();
        bytes::Bytes::from(lines.join("\n") + "\n")
    };
    storage
        .insert(
            "ticket_sales",
            sales(&[
                ("2026-10-01", "30.00", "USD", 1),
                ("2026-11-28", "49.99", "EUR", 2),
                ("2026-11-28", "10.00", "USD", 3),
            ]),
            "before",
        )
        .await
        .unwrap();
    // Retention's stand-in: October's sales are gone, its aggregate stays.
    storage
        .execute(
            "ALTER TABLE bilten_analytics.ticket_sales DELETE WHERE toMonth(timestamp) = 10 \
             SETTINGS mutations_sync = 2",
        )
        .await
        .unwrap();
    // Run twice: an interrupted migration is run again whole.
    for _ in 0..2 {
        for statement in currency.statements() {
            storage.execute(&statement).await.unwrap();
        }
    }
    storage
        .insert(
            "ticket_sales",
            sales(&[
                ("2026-11-28", "5.50", "GBP", 2),
                ("2026-11-28", "1.01", "EUR", 1),
            ]),
            "after",
        )
        .await
        .unwrap();
    // Sent again long after, when the tables no longer remember its
    // tokens (a writer of the ClickHouse interface may send migrations):
    // the days already split are left alone.
    for statement in currency.statements() {
        let statement = statement.replace("'migration-0018-", "'much-later-");
        storage.execute(&statement).await.unwrap();
    }
    for view in ["organizer_daily_metrics_mv", "event_performance_mv"] {
        let text = query_text(
            &*storage,
            &format!("SELECT date, toString(revenue) FROM bilten_analytics.{view} ORDER BY date"),
        )
        .await
        .unwrap()
        .replace("\\'", "'");
        assert_eq!(
            text, "2026-10-01\t{'':30}\n2026-11-28\t{'EUR':100.99,'GBP':11,'USD':30}\n",
            "{view}"
        );
    }
    storage.close().await;
}
