-- Each ticket sale credited to the first and to the last visit of its
-- buyer (by user_id) in the 30 days before it that was not direct: the
-- server fills these columns as the sale arrives (server/src/visits.rs;
-- `bilten_schema::HOST_COLUMNS`), 'direct' when there was none. Empty in
-- sales stored before this migration.
ALTER TABLE bilten_analytics.ticket_sales
    ADD COLUMN IF NOT EXISTS first_channel LowCardinality(String) AFTER currency,
    ADD COLUMN IF NOT EXISTS first_source String AFTER first_channel,
    ADD COLUMN IF NOT EXISTS first_utm_medium String AFTER first_source,
    ADD COLUMN IF NOT EXISTS first_utm_source String AFTER first_utm_medium,
    ADD COLUMN IF NOT EXISTS first_utm_campaign String AFTER first_utm_source,
    ADD COLUMN IF NOT EXISTS first_utm_content String AFTER first_utm_campaign,
    ADD COLUMN IF NOT EXISTS first_utm_term String AFTER first_utm_content,
    ADD COLUMN IF NOT EXISTS last_channel LowCardinality(String) AFTER first_utm_term,
    ADD COLUMN IF NOT EXISTS last_source String AFTER last_channel,
    ADD COLUMN IF NOT EXISTS last_utm_medium String AFTER last_source,
    ADD COLUMN IF NOT EXISTS last_utm_source String AFTER last_utm_medium,
    ADD COLUMN IF NOT EXISTS last_utm_campaign String AFTER last_utm_source,
    ADD COLUMN IF NOT EXISTS last_utm_content String AFTER last_utm_campaign,
    ADD COLUMN IF NOT EXISTS last_utm_term String AFTER last_utm_content;

-- Tickets, orders (sale rows) and revenue per day, organizer, ticketed
-- event, model ('first' or 'last'), origin and currency: what the Stats
-- API's ticketing metrics read. Each sale is counted once per model, so
-- either model's rows add up to all sales.
CREATE TABLE IF NOT EXISTS bilten_analytics.attribution_daily
(
    date Date,
    organizer_id String,
    event_id String,
    model LowCardinality(String),
    channel LowCardinality(String),
    source String,
    utm_medium String,
    utm_source String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    currency LowCardinality(String),
    tickets UInt64,
    orders UInt64,
    revenue Decimal(38, 2)
)
ENGINE = SummingMergeTree((tickets, orders, revenue))
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date, model, channel, source, utm_medium, utm_source, utm_campaign, utm_content, utm_term, event_id, currency)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.attribution_from_ticket_sales
TO bilten_analytics.attribution_daily AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    m.1 AS model,
    m.2 AS channel,
    m.3 AS source,
    m.4 AS utm_medium,
    m.5 AS utm_source,
    m.6 AS utm_campaign,
    m.7 AS utm_content,
    m.8 AS utm_term,
    currency,
    sum(quantity) AS tickets,
    count() AS orders,
    sum(toDecimal128(price * quantity, 2)) AS revenue
FROM bilten_analytics.ticket_sales
ARRAY JOIN [('first', first_channel, first_source, first_utm_medium, first_utm_source, first_utm_campaign, first_utm_content, first_utm_term), ('last', last_channel, last_source, last_utm_medium, last_utm_source, last_utm_campaign, last_utm_content, last_utm_term)] AS m
GROUP BY date, organizer_id, event_id, model, channel, source, utm_medium, utm_source, utm_campaign, utm_content, utm_term, currency;

-- Sales stored before this migration, under an unknown origin (channel
-- ''), so that every sale counts. Those the view above has written carry
-- a channel and are left out.
INSERT INTO bilten_analytics.attribution_daily
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    model,
    '' AS channel,
    '' AS source,
    '' AS utm_medium,
    '' AS utm_source,
    '' AS utm_campaign,
    '' AS utm_content,
    '' AS utm_term,
    currency,
    sum(quantity) AS tickets,
    count() AS orders,
    sum(toDecimal128(price * quantity, 2)) AS revenue
FROM bilten_analytics.ticket_sales
ARRAY JOIN ['first', 'last'] AS model
WHERE first_channel = ''
GROUP BY date, organizer_id, event_id, model, currency;
