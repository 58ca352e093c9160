//! Monitoring (the seed's `clickhouse:monitor`) and the report, as JSON and
//! as a self-contained HTML page with SVG charts (no scripts or assets to
//! fetch: it opens anywhere, including from a file).

use serde_json::{Value, json};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError};

/// Parts in one partition past this share of ClickHouse's
/// `parts_to_delay_insert` are reported well before inserts slow down.
const PARTS_WARNING_SHARE: f64 = 0.3;

async fn rows(storage: &dyn Storage, sql: &str) -> Result<Vec<Value>, StorageError> {
    let out = storage.query(sql, "JSONEachRow").await?;
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| StorageError::Rejected(e.to_string())))
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
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
        "slow_queries": slow_queries(storage, slow_ms).await?,
    }))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart as inline SVG: one bar per (label, value).
fn bar_chart(id: &str, title: &str, bars: &[(String, f64)], unit: &str) -> String {
    let (w, h, pad) = (760.0, 240.0, 40.0);
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let step = if bars.is_empty() {
        0.0
    } else {
        (w - 2.0 * pad) / bars.len() as f64
    };
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    svg.push_str(&format!(
        r##"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
        h - pad,
        w - pad,
        h - pad
    ));
    for (i, (label, value)) in bars.iter().enumerate() {
        let bh = (value / max) * (h - 2.0 * pad);
        // Bars stay narrow when there are few of them.
        let bw = (step * 0.8).clamp(1.0, 36.0);
        let x = pad + i as f64 * step + (step - bw) / 2.0;
        svg.push_str(&format!(
            r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="#3b6ea5"><title>{}: {value} {unit}</title></rect>"##,
            h - pad - bh,
            esc(label)
        ));
    }
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        svg.push_str(&format!(
            r#"<text x="{pad}" y="{}" font-size="11">{}</text>"#,
            h - pad + 16.0,
            esc(&first.0)
        ));
        svg.push_str(&format!(
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            w - pad,
            h - pad + 16.0,
            esc(&last.0)
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{pad}" y="{}" font-size="11">max {max} {unit}</text></svg></figure>"#,
        pad - 10.0
    ));
    svg
}

/// Horizontal bars with a label each: for categories (table and tier).
fn hbar_chart(id: &str, title: &str, bars: &[(String, f64)], unit: &str) -> String {
    let (w, row, label_w) = (760.0, 22.0, 260.0);
    let h = (bars.len() as f64 * row + 10.0).max(40.0);
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let bw = (value / max) * (w - label_w - 110.0);
        svg.push_str(&format!(
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text><rect class="bar" x="{label_w}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="#3b6ea5"><title>{}: {value} {unit}</title></rect><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
            label_w - 8.0,
            y + row * 0.65,
            esc(label),
            row * 0.75,
            esc(label),
            label_w + bw + 6.0,
            y + row * 0.65,
            human_bytes(*value),
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

/// The report as one HTML page.
pub fn report_html(report: &Value) -> String {
    let list = |k: &str| report[k].as_array().cloned().unwrap_or_default();
    let ingestion: Vec<(String, f64)> = list("ingestion_by_hour")
        .iter()
        .map(|r| {
            (
                r["hour"].as_str().unwrap_or("").to_string(),
                num(&r["rows"]),
            )
        })
        .collect();
    let storage: Vec<(String, f64)> = list("storage_by_table_and_tier")
        .iter()
        .map(|r| {
            (
                format!(
                    "{} ({})",
                    r["table"].as_str().unwrap_or(""),
                    r["tier"].as_str().unwrap_or("")
                ),
                num(&r["bytes"]),
            )
        })
        .collect();
    let mut slow =
        String::from("<table><tr><th>time</th><th>ms</th><th>rows read</th><th>query</th></tr>");
    for q in list("slow_queries") {
        slow.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(q["time"].as_str().unwrap_or("")),
            num(&q["query_duration_ms"]),
            num(&q["read_rows"]),
            esc(q["query"].as_str().unwrap_or(""))
        ));
    }
    slow.push_str("</table>");
    let slow_ms: Vec<(String, f64)> = list("slow_queries")
        .iter()
        .map(|q| {
            (
                q["time"].as_str().unwrap_or("").to_string(),
                num(&q["query_duration_ms"]),
            )
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bilten Analytics report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}figure{{margin:1.5em 0}}figcaption{{font-weight:600;margin-bottom:.3em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:13px;text-align:left}}</style></head>
<body>
<h1>Bilten Analytics report</h1>
<p>Generated {generated}</p>
{ingestion}
{storage}
<h2>Slow queries</h2>
{slow_chart}
{slow}
<script>
// Marks how many charts the browser laid out with a real size: a check for
// the report's own tests, harmless elsewhere.
document.body.dataset.chartsRendered = [...document.querySelectorAll('svg.chart')]
  .filter(s => {{ const b = s.getBoundingClientRect(); return b.width > 0 && b.height > 0; }}).length;
document.body.dataset.barsRendered = [...document.querySelectorAll('svg.chart rect.bar')]
  .filter(r => r.getBBox().height > 0).length;
</script>
</body></html>
"#,
        generated = esc(report["generated_at"].as_str().unwrap_or("")),
        ingestion = bar_chart(
            "ingestion",
            "Rows ingested per hour (last 48 hours)",
            &ingestion,
            "rows"
        ),
        storage = hbar_chart(
            "storage",
            "Storage by table and tier (bytes on disk)",
            &storage,
            "bytes"
        ),
        slow_chart = bar_chart("slow", "Slow queries (duration)", &slow_ms, "ms"),
    )
}
