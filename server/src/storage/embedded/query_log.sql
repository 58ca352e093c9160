CREATE TABLE IF NOT EXISTS bilten_system.query_log
(
    type Enum8('QueryStart' = 1, 'QueryFinish' = 2, 'ExceptionBeforeStart' = 3, 'ExceptionWhileProcessing' = 4),
    event_date Date,
    event_time DateTime,
    event_time_microseconds DateTime64(6),
    query_start_time DateTime,
    query_duration_ms UInt64,
    read_rows UInt64,
    read_bytes UInt64,
    written_rows UInt64,
    result_bytes UInt64,
    query String CODEC(ZSTD(3)),
    query_kind LowCardinality(String),
    exception String CODEC(ZSTD(3)),
    exception_code Int32
)
ENGINE = MergeTree
PARTITION BY event_date
ORDER BY event_time
TTL event_date + INTERVAL 30 DAY
