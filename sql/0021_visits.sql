-- Visits, the server's sessions: the server gives each page view and event
-- the visit it belongs to (`visit_id`, a UUIDv7 whose time is the visit's
-- start; nil when the event names no visitor) and that visit's origin,
-- read from its first page view's referrer and URL (server/src/visits.rs,
-- server/src/sources.rs; `bilten_schema::HOST_COLUMNS`). Empty, and nil, in
-- rows stored before this migration: visits start with it.
ALTER TABLE bilten_analytics.events
    ADD COLUMN IF NOT EXISTS visit_id UUID AFTER country,
    ADD COLUMN IF NOT EXISTS channel LowCardinality(String) AFTER visit_id,
    ADD COLUMN IF NOT EXISTS source String AFTER channel,
    ADD COLUMN IF NOT EXISTS utm_medium String AFTER source,
    ADD COLUMN IF NOT EXISTS utm_source String AFTER utm_medium,
    ADD COLUMN IF NOT EXISTS utm_campaign String AFTER utm_source,
    ADD COLUMN IF NOT EXISTS utm_content String AFTER utm_campaign,
    ADD COLUMN IF NOT EXISTS utm_term String AFTER utm_content;

ALTER TABLE bilten_analytics.page_views
    ADD COLUMN IF NOT EXISTS visit_id UUID AFTER country,
    ADD COLUMN IF NOT EXISTS channel LowCardinality(String) AFTER visit_id,
    ADD COLUMN IF NOT EXISTS source String AFTER channel,
    ADD COLUMN IF NOT EXISTS utm_medium String AFTER source,
    ADD COLUMN IF NOT EXISTS utm_source String AFTER utm_medium,
    ADD COLUMN IF NOT EXISTS utm_campaign String AFTER utm_source,
    ADD COLUMN IF NOT EXISTS utm_content String AFTER utm_campaign,
    ADD COLUMN IF NOT EXISTS utm_term String AFTER utm_content;

-- One row per visit once merged (read it with GROUP BY visit_id, or the
-- -Merge combinators): kept as rows arrive, never by scanning them. Keyed
-- by the visit's start day, which its id holds, so a visit's rows stay in
-- one partition however long it lasts. Its origin is the same on all its
-- rows but those of events sent before its first page view, which are
-- empty: `max` keeps the origin.
CREATE TABLE IF NOT EXISTS bilten_analytics.sessions
(
    organizer_id String,
    date Date,
    visit_id UUID,
    started SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ended SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    -- Time the pages were visible, as the tracker measured it.
    engaged_ms SimpleAggregateFunction(sum, UInt64),
    entry_page AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    exit_page AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    user_id SimpleAggregateFunction(max, String),
    session_id SimpleAggregateFunction(max, String),
    channel SimpleAggregateFunction(max, LowCardinality(String)),
    source SimpleAggregateFunction(max, String),
    utm_medium SimpleAggregateFunction(max, String),
    utm_source SimpleAggregateFunction(max, String),
    utm_campaign SimpleAggregateFunction(max, String),
    utm_content SimpleAggregateFunction(max, String),
    utm_term SimpleAggregateFunction(max, String),
    country SimpleAggregateFunction(max, LowCardinality(String)),
    user_agent SimpleAggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date, visit_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.sessions_from_page_views
TO bilten_analytics.sessions AS
SELECT
    organizer_id,
    toDate(UUIDv7ToDateTime(visit_id, 'UTC')) AS date,
    visit_id,
    min(timestamp) AS started,
    max(timestamp) AS ended,
    count() AS pageviews,
    toUInt64(0) AS events,
    sum(duration_ms) AS engaged_ms,
    argMinState(path(url), timestamp) AS entry_page,
    argMaxState(path(url), timestamp) AS exit_page,
    max(user_id) AS user_id,
    max(session_id) AS session_id,
    max(channel) AS channel,
    max(source) AS source,
    max(utm_medium) AS utm_medium,
    max(utm_source) AS utm_source,
    max(utm_campaign) AS utm_campaign,
    max(utm_content) AS utm_content,
    max(utm_term) AS utm_term,
    max(country) AS country,
    max(user_agent) AS user_agent
FROM bilten_analytics.page_views
WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000')
GROUP BY organizer_id, date, visit_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.sessions_from_events
TO bilten_analytics.sessions AS
SELECT
    organizer_id,
    toDate(UUIDv7ToDateTime(visit_id, 'UTC')) AS date,
    visit_id,
    min(timestamp) AS started,
    max(timestamp) AS ended,
    toUInt64(0) AS pageviews,
    count() AS events,
    toUInt64(0) AS engaged_ms,
    max(user_id) AS user_id,
    max(session_id) AS session_id,
    max(channel) AS channel,
    max(source) AS source,
    max(utm_medium) AS utm_medium,
    max(utm_source) AS utm_source,
    max(utm_campaign) AS utm_campaign,
    max(utm_content) AS utm_content,
    max(utm_term) AS utm_term,
    max(country) AS country,
    max(user_agent) AS user_agent
FROM bilten_analytics.events
WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000')
GROUP BY organizer_id, date, visit_id;
