-- Financial transactions: one row per sale. Money is Decimal, never Float.
CREATE TABLE IF NOT EXISTS bilten_analytics.ticket_sales
(
    id UUID,
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    event_id String,
    organizer_id String,
    user_id String,
    order_id String,
    quantity UInt32,
    price Decimal(18, 2),
    currency LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organizer_id, event_id, timestamp);
