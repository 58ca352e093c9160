//! Monitoring (the seed's `clickhouse:monitor`) and the report, as JSON and
//! as a self-contained HTML page with SVG charts (no scripts or assets to
//! fetch: it opens anywhere, including from a file).

use serde_json::{Value, json};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError, json_number as num};

/// Parts in one partition past this share of ClickHouse's
/// `parts_to_delay_insert` are reported well before inserts slow down.
const PARTS_WARNING_SHARE: f64 = 0.3;

async fn rows(storage: &dyn Storage, sql: &str) -> Result<Vec<Value>, StorageError> {
    crate::storage::json_rows(storage, sql, false).await
}

/// Slow queries (over `slow_ms`) of the last day, slowest first.
pub async fn slow_queries(storage: &dyn Storage, slow_ms: u64) -> Result<Vec<Value>, StorageError> {
    rows(
        storage,
        &format!(
            "SELECT toString(event_time) AS time, query_duration_ms, read_rows, substring(query, 1, 300) AS query \
             FROM system.query_log WHERE type = 'QueryFinish' AND event_time > now() - INTERVAL 1 DAY \
             AND query_duration_ms > {slow_ms} ORDER BY query_duration_ms DESC LIMIT 20"
        ),
    )
    .await
}

/// Everything `GET /admin/monitor` shows.
pub async fn monitor(storage: &dyn Storage, slow_ms: u64) -> Result<Value, StorageError> {
    let errors = rows(
        storage,
        "SELECT exception_code AS code, count() AS count, any(substring(exception, 1, 300)) AS example, \
         toString(max(event_time)) AS last FROM system.query_log \
         WHERE type != 'QueryFinish' AND event_time > now() - INTERVAL 1 DAY GROUP BY code ORDER BY count DESC",
    )
    .await?;
    let storage_by_table = rows(
        storage,
        &format!(
            "SELECT table, sum(rows) AS total_rows, sum(bytes_on_disk) AS bytes_on_disk, \
             sum(data_uncompressed_bytes) AS uncompressed_bytes, count() AS parts \
             FROM system.parts WHERE database = '{DATABASE}' AND active GROUP BY table ORDER BY bytes_on_disk DESC"
        ),
    )
    .await?;
    let growth = rows(
        storage,
        &format!(
            "SELECT toString(day) AS day, table, rows FROM ( \
               SELECT toDate(received_at) AS day, 'events' AS table, count() AS rows FROM {DATABASE}.events WHERE received_at > now() - INTERVAL 7 DAY GROUP BY day \
               UNION ALL SELECT toDate(received_at), 'page_views', count() FROM {DATABASE}.page_views WHERE received_at > now() - INTERVAL 7 DAY GROUP BY 1 \
               UNION ALL SELECT toDate(received_at), 'ticket_sales', count() FROM {DATABASE}.ticket_sales WHERE received_at > now() - INTERVAL 7 DAY GROUP BY 1 \
             ) ORDER BY day, table"
        ),
    )
    .await?;
    let limits = rows(
        storage,
        "SELECT name, value FROM system.merge_tree_settings WHERE name = 'parts_to_delay_insert'",
    )
    .await?;
    let delay_at = limits.first().map(|r| num(&r["value"])).unwrap_or(1000.0);
    let warn_at = (delay_at * PARTS_WARNING_SHARE).round();
    let mut partitions = rows(
        storage,
        &format!(
            "SELECT table, partition, count() AS parts FROM system.parts WHERE database = '{DATABASE}' AND active \
             GROUP BY table, partition ORDER BY parts DESC LIMIT 10"
        ),
    )
    .await?;
    for p in &mut partitions {
        p["warning"] = json!(num(&p["parts"]) >= warn_at);
    }
    let merges = rows(
        storage,
        &format!(
            "SELECT table, round(elapsed, 1) AS elapsed_s, round(progress, 3) AS progress, num_parts, \
             total_size_bytes_compressed AS bytes FROM system.merges WHERE database = '{DATABASE}'"
        ),
    )
    .await?;
    let rate = rows(
        storage,
        &format!(
            "SELECT 'events' AS table, count() / 300 AS rows_per_second FROM {DATABASE}.events WHERE received_at > now() - INTERVAL 5 MINUTE \
             UNION ALL SELECT 'page_views', count() / 300 FROM {DATABASE}.page_views WHERE received_at > now() - INTERVAL 5 MINUTE \
             UNION ALL SELECT 'ticket_sales', count() / 300 FROM {DATABASE}.ticket_sales WHERE received_at > now() - INTERVAL 5 MINUTE"
        ),
    )
    .await?;
    let memory = rows(storage, "SELECT metric, value FROM system.metrics WHERE metric IN ('MemoryTracking', 'Query', 'Merge')").await?;
    // A server has these; the embedded engine does not, and then the
    // process's own figures below stand in.
    let host = rows(
        storage,
        "SELECT metric, value FROM system.asynchronous_metrics WHERE metric IN \
         ('OSUserTimeNormalized', 'OSSystemTimeNormalized', 'LoadAverage1', 'OSMemoryAvailable', 'OSMemoryTotal')",
    )
    .await
    .unwrap_or_default();
    let replicas = rows(
        storage,
        &format!(
            "SELECT table, is_readonly, absolute_delay AS lag_seconds, queue_size FROM system.replicas WHERE database = '{DATABASE}'"
        ),
    )
    .await
    .unwrap_or_default();
    let warnings: Vec<String> = partitions
        .iter()
        .filter(|p| p["warning"] == true)
        .map(|p| {
            format!(
                "{} partition {} has {} active parts (inserts slow down at {delay_at})",
                p["table"], p["partition"], p["parts"]
            )
        })
        .chain(
            replicas
                .iter()
                .filter(|r| r["is_readonly"] == 1)
                .map(|r| format!("replica of {} is read-only", r["table"])),
        )
        .chain(
            (!errors.is_empty())
                .then(|| format!("{} kinds of query errors in the last day", errors.len())),
        )
        .collect();
    Ok(json!({
        "slow_queries": slow_queries(storage, slow_ms).await?,
        "errors": errors,
        "storage": storage_by_table,
        "growth_by_day": growth,
        "parts": { "warn_at": warn_at, "delay_inserts_at": delay_at, "busiest_partitions": partitions },
        "merges": merges,
        "ingestion_rate": rate,
        "memory": memory,
        "process": process_figures(),
        "host": host,
        "replication": if replicas.is_empty() { json!("not replicated") } else { json!(replicas) },
        "warnings": warnings,
    }))
}

/// This process's resident memory, CPU time and the load average, from /proc.
/// This process's CPU time so far, user and system, in seconds (10 ms
/// resolution).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn process_figures() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpu_seconds = cpu_seconds();
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!({ "resident_bytes": rss_kb * 1024, "cpu_seconds": cpu_seconds, "load_average": load })
}

/// The report: ingestion over time, storage by table and tier, slow queries.
pub async fn report(
    storage: &dyn Storage,
    retention: &crate::ops::retention::RetentionConfig,
    slow_ms: u64,
) -> Result<Value, StorageError> {
    let ingestion = rows(
        storage,
        &format!(
            "SELECT toString(hour) AS hour, sum(n) AS rows FROM ( \
               SELECT toStartOfHour(received_at) AS hour, count() AS n FROM {DATABASE}.events WHERE received_at > now() - INTERVAL 48 HOUR GROUP BY hour \
               UNION ALL SELECT toStartOfHour(received_at), count() FROM {DATABASE}.page_views WHERE received_at > now() - INTERVAL 48 HOUR GROUP BY 1 \
               UNION ALL SELECT toStartOfHour(received_at), count() FROM {DATABASE}.ticket_sales WHERE received_at > now() - INTERVAL 48 HOUR GROUP BY 1 \
             ) GROUP BY hour ORDER BY hour"
        ),
    )
    .await?;
    let tiers = crate::ops::retention::report(storage, retention).await?;
    let mut storage_by_tier = Vec::new();
    if let Some(tables) = tiers["tables"].as_object() {
        for (table, t) in tables {
            for tier in ["hot", "cold", "archive"] {
                let bytes = num(&t["tiers"][tier]["bytes"]);
                if bytes > 0.0 {
                    storage_by_tier.push(json!({ "table": table, "tier": tier, "bytes": bytes, "rows": t["tiers"][tier]["rows"] }));
                }
            }
        }
    }
    Ok(json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "ingestion_by_hour": ingestion,
        "storage_by_table_and_tier": storage_by_tier,
        "slow_ms": slow_ms,
        "slow_queries": slow_queries(storage, slow_ms).await?,
    }))
}

/// The report as one HTML page, drawn with the dashboard's charts.
pub fn report_html(report: &Value) -> String {
    use crate::charts::{self, Series, TimeChart, Unit, format_value};
    use maud::{DOCTYPE, PreEscaped, html};
    let list = |k: &str| report[k].as_array().cloned().unwrap_or_default();
    let generated = report["generated_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    let hour = |t: chrono::DateTime<chrono::Utc>| {
        chrono::DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(3600), 0)
            .unwrap_or(t)
    };
    let ingestion: Vec<_> = list("ingestion_by_hour")
        .iter()
        .filter_map(|r| {
            let t = chrono::NaiveDateTime::parse_from_str(r["hour"].as_str()?, "%Y-%m-%d %H:%M:%S")
                .ok()?;
            Some((t.and_utc(), num(&r["rows"])))
        })
        .collect();
    let ingestion = TimeChart {
        id: "ingestion",
        title: "Rows ingested, the last 48 hours",
        unit: Unit::Count("rows"),
        currency: "",
        from: hour(generated) - chrono::Duration::hours(47),
        to: hour(generated) + chrono::Duration::hours(1),
        bucket_secs: 3600,
        series: vec![Series {
            name: "rows".into(),
            color: "#3b6ea5",
            points: ingestion,
        }],
        empty: "No rows were ingested in the last 48 hours.",
        width: charts::FULL,
    }
    .svg();
    let storage: Vec<(String, f64, String)> = list("storage_by_table_and_tier")
        .iter()
        .map(|r| {
            (
                format!(
                    "{} ({})",
                    r["table"].as_str().unwrap_or(""),
                    r["tier"].as_str().unwrap_or("")
                ),
                num(&r["bytes"]),
                format!(
                    " · {} rows",
                    format_value(num(&r["rows"]), Unit::Count("rows"))
                ),
            )
        })
        .collect();
    let storage = charts::category_bars(
        charts::FULL,
        "storage",
        "Storage by table and tier, on disk",
        Unit::Bytes,
        &storage,
        "Nothing is stored yet.",
    );
    let slow_ms = num(&report["slow_ms"]);
    let queries = list("slow_queries");
    let slow_bars = match queries.is_empty() {
        true => String::new(),
        false => {
            let bars: Vec<(String, f64, String)> = queries
                .iter()
                .map(|q| {
                    (
                        q["time"].as_str().unwrap_or("").to_string(),
                        num(&q["query_duration_ms"]),
                        String::new(),
                    )
                })
                .collect();
            charts::category_bars(
                charts::FULL,
                "slow",
                &format!(
                    "Queries slower than {}, the last day",
                    format_value(slow_ms, Unit::Millis)
                ),
                Unit::Millis,
                &bars,
                "",
            )
        }
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Bilten Analytics report" }
                style { (PreEscaped(charts::STYLE)) }
            }
            body {
                header {
                    h1 { "Bilten Analytics report" }
                    span.who { "Generated " (generated.format("%-d %b %Y %H:%M")) " UTC" }
                }
                main {
                    (PreEscaped(ingestion))
                    (PreEscaped(storage))
                    @if queries.is_empty() {
                        section.card id="slow" {
                            h2 { "Slow queries" }
                            p.empty {
                                "No query took longer than " (format_value(slow_ms, Unit::Millis)) " in the last day."
                            }
                        }
                    } @else {
                        (PreEscaped(slow_bars))
                        section.card id="slow-table" {
                            h2 { "Slow queries, slowest first" }
                            table {
                                thead {
                                    tr {
                                        th { "When (UTC)" }
                                        th.num { "Duration" }
                                        th.num { "Rows read" }
                                        th { "Query" }
                                    }
                                }
                                tbody {
                                    @for q in &queries {
                                        tr {
                                            td { (text(&q["time"])) }
                                            td.num { (format_value(num(&q["query_duration_ms"]), Unit::Millis)) }
                                            td.num { (format_value(num(&q["read_rows"]), Unit::Count("rows"))) }
                                            td { code { (text(&q["query"])) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                (PreEscaped(REPORT_SCRIPT))
            }
        }
    }
    .into_string()
}

/// Marks how many charts the browser laid out with a real size: a check for
/// the report's own tests, harmless elsewhere.
const REPORT_SCRIPT: &str = r#"<script>
document.body.dataset.chartsRendered = [...document.querySelectorAll('svg.chart')]
  .filter(s => { const b = s.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length;
document.body.dataset.barsRendered = [...document.querySelectorAll('svg.chart rect.bar')]
  .filter(r => r.getBBox().height > 0).length;
</script>"#;

#[cfg(test)]
mod report_tests {
    /// A slow query's text and a table's name are text on the page, never
    /// markup; an empty report says so.
    #[test]
    fn the_report_holds_values_to_text() {
        let report = serde_json::json!({
            "generated_at": "2026-12-04T18:00:00Z",
            "slow_ms": 1000,
            "storage_by_table_and_tier": [{"table": "events<b>", "tier": "hot", "bytes": 123456, "rows": 1000}],
            "slow_queries": [{"time": "2026-12-04 10:01:02", "query_duration_ms": 2500, "read_rows": 10,
                              "query": "SELECT '<script>alert(1)</script>' & \"x\""}],
        });
        let page = super::report_html(&report);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(!page.contains("events<b>"), "{page}");
        assert!(page.contains("Generated 4 Dec 2026 18:00 UTC"), "{page}");
        let empty = super::report_html(
            &serde_json::json!({"generated_at": "2026-12-04T18:00:00Z", "slow_ms": 1000}),
        );
        assert!(
            empty.contains("No query took longer than 1,000 ms in the last day."),
            "{empty}"
        );
    }
}
