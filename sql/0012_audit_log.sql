-- Every admin action: who, what, when, and the result.
CREATE TABLE IF NOT EXISTS bilten_analytics.audit_log
(
    at DateTime64(3, 'UTC') DEFAULT now64(3),
    actor String,
    remote String,
    method LowCardinality(String),
    path String,
    status UInt16,
    duration_ms UInt32,
    detail String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY at;
