-- A page view is counted when it starts; the time it is visible comes
-- later, apart. The tracker sends the view at once and, each time the page
-- is hidden or left, an engagement: the visible time since the last one.
-- So no aggregate counts a view twice: views are rows of `page_views`,
-- their time is rows of `page_engagements`, and a view whose end never
-- arrives is still counted, with no time. A view's time on page is the sum
-- of its engagements (`page_view_time`); `duration_ms` on the view itself
-- stays what a client that sends whole views (with their duration) says.
-- The server writes these rows (`routes::ingest`, `intake`), with the view's
-- visit; it keeps no address, user agent or user id here.
CREATE TABLE IF NOT EXISTS bilten_analytics.page_engagements
(
    id UUID,
    -- When the page was hidden or left, by the browser's clock (the clock of
    -- its views).
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    organizer_id String,
    -- The page view's id.
    view_id UUID,
    -- The view's visit; nil when the server knew none (it restarted, or
    -- the view was never sent).
    visit_id UUID,
    duration_ms UInt32 CODEC(T64, ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organizer_id, view_id, timestamp)
SETTINGS non_replicated_deduplication_window = 10000;

-- Each view's time on page, from its engagements.
CREATE VIEW IF NOT EXISTS bilten_analytics.page_view_time AS
SELECT organizer_id, view_id, sum(duration_ms) AS duration_ms, max(timestamp) AS left_at
FROM bilten_analytics.page_engagements
GROUP BY organizer_id, view_id;

-- A visit's time: its engagements add to `engaged_ms`, and the last one
-- ends it (the time on its last page counts). Its pages and events are not
-- touched, so a visit only an engagement names (its view was dropped as a
-- bot's) counts nowhere: the Stats API counts visits with a page view or an
-- event.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.sessions_from_engagements
TO bilten_analytics.sessions AS
SELECT
    organizer_id,
    toDate(UUIDv7ToDateTime(visit_id, 'UTC')) AS date,
    visit_id,
    min(timestamp) AS started,
    max(timestamp) AS ended,
    toUInt64(0) AS pageviews,
    toUInt64(0) AS events,
    sum(duration_ms) AS engaged_ms
FROM bilten_analytics.page_engagements
WHERE visit_id != toUUID('00000000-0000-0000-0000-000000000000')
GROUP BY organizer_id, date, visit_id;

-- Realtime counts page views too, as they start: a visitor reading a page
-- right now is on the panel.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.realtime_dashboard_from_page_views
TO bilten_analytics.realtime_dashboard AS
SELECT
    toStartOfFiveMinutes(timestamp) AS interval_start,
    organizer_id,
    'page_view' AS event_type,
    count() AS events,
    uniqState(user_id) AS unique_users
FROM bilten_analytics.page_views
GROUP BY interval_start, organizer_id;
