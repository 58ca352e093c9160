//! Prometheus metrics: names in one place, `<namespace>_<name>_<unit>`, labels
//! of low cardinality (table, outcome, field of a known schema, error kind).
//! Recorded per request or per batch, never per event.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const INGEST_REQUESTS: &str = "bilten_ingest_requests_total";
pub const INGEST_EVENTS: &str = "bilten_ingest_events_total";
pub const INGEST_REJECTIONS: &str = "bilten_ingest_rejections_total";
pub const BUFFER_ROWS: &str = "bilten_buffer_rows";
pub const BUFFER_OLDEST_AGE: &str = "bilten_buffer_oldest_row_age_seconds";
pub const WAL_BYTES: &str = "bilten_wal_bytes";
pub const WAL_MAX_BYTES: &str = "bilten_wal_max_bytes";
pub const FLUSH_DURATION: &str = "bilten_flush_duration_seconds";
pub const FLUSH_ROWS: &str = "bilten_flush_rows";
pub const ROWS_STORED: &str = "bilten_rows_stored_total";
pub const ROWS_DEAD_LETTERED: &str = "bilten_rows_dead_lettered_total";
pub const STORAGE_ERRORS: &str = "bilten_storage_errors_total";
pub const PLUGIN_BATCH_SECONDS: &str = "bilten_plugin_batch_duration_seconds";
pub const PLUGIN_VERDICTS: &str = "bilten_plugin_verdicts_total";
pub const PLUGIN_FAULTS: &str = "bilten_plugin_faults_total";

/// The server process's CPU seconds, resident memory, threads, open files.
pub const PROCESS_PREFIX: &str = "bilten_";
pub const PROCESS_CPU_SECONDS: &str = "bilten_process_cpu_seconds_total";

fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| metrics_process::Collector::new(PROCESS_PREFIX))
}

/// Reads the process figures now (each `/metrics` scrape calls it).
pub fn collect_process() {
    process().collect();
}

/// The process-wide recorder, installed on first use. One per process, like
/// the engine; a server restarted in the same process keeps counting.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(FLUSH_DURATION.into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(FLUSH_ROWS.into()),
                    &[1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0],
                )
            })
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host application):
        // then our figures still render, they just are not global.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        process().describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(INGEST_REQUESTS, "Ingest requests by table and HTTP status.");
    describe_counter!(
        INGEST_EVENTS,
        "Events by table and outcome: accepted, rejected, duplicate."
    );
    describe_counter!(
        INGEST_REJECTIONS,
        "Rejected events by table and the field at fault."
    );
    describe_gauge!(
        BUFFER_ROWS,
        "Rows accepted and not yet confirmed by storage."
    );
    describe_gauge!(
        BUFFER_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest buffered row."
    );
    describe_gauge!(
        WAL_BYTES,
        Unit::Bytes,
        "Write-ahead log on disk, not yet released."
    );
    describe_gauge!(
        WAL_MAX_BYTES,
        Unit::Bytes,
        "Log size at which ingest answers 503."
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time to store one batch, retries included."
    );
    describe_histogram!(FLUSH_ROWS, "Rows per stored batch.");
    describe_counter!(ROWS_STORED, "Rows confirmed by storage, by table.");
    describe_counter!(
        ROWS_DEAD_LETTERED,
        "Rows refused by storage and kept in dead_letter, by table."
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Failed storage inserts by kind: transient (retried) or rejected."
    );
    describe_histogram!(
        PLUGIN_BATCH_SECONDS,
        Unit::Seconds,
        "Time one plugin took for one batch, by plugin."
    );
    describe_counter!(
        PLUGIN_VERDICTS,
        "Plugin verdicts by plugin and verdict: keep, modify, drop, reject."
    );
    describe_counter!(
        PLUGIN_FAULTS,
        "Plugin faults by plugin and kind: timeout, memory, trap, init, bad_output, disabled."
    );
}

/// Known field names keep the label bounded; anything else is "other". The
/// names are the model's, so a new field is labelled as soon as it exists.
pub fn field_label(field: Option<&str>) -> &'static str {
    let Some(field) = field else {
        return "body";
    };
    if field == "properties.event_id" {
        return "properties.event_id";
    }
    crate::model::Table::INGEST
        .iter()
        .flat_map(|t| t.fields())
        .map(|f| f.name)
        .find(|name| *name == field)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_labels_are_the_models_fields_and_nothing_else() {
        assert_eq!(field_label(None), "body");
        assert_eq!(field_label(Some("price")), "price");
        assert_eq!(field_label(Some("duration_ms")), "duration_ms");
        assert_eq!(
            field_label(Some("properties.event_id")),
            "properties.event_id"
        );
        // A client's made-up field name never becomes a label of its own.
        assert_eq!(field_label(Some("x-attacker-chosen-1234")), "other");
    }
}
