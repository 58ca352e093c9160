-- What each visit's user agent says of its device, browser and operating
-- system (the Stats API's `visit:device`, `visit:browser`, `visit:os`),
-- read once per visit by the server when it writes the visit
-- (server/src/visits/device.rs). Visits written before this have them
-- empty: their user agent is kept, but no SQL reads one as woothee does.
ALTER TABLE bilten_analytics.visits
    ADD COLUMN IF NOT EXISTS device LowCardinality(String) AFTER user_agent,
    ADD COLUMN IF NOT EXISTS browser LowCardinality(String) AFTER device,
    ADD COLUMN IF NOT EXISTS os LowCardinality(String) AFTER browser;

-- Visits per day, organizer and channel by one of their pages or device
-- columns at a time (`facet` names which): "top entry pages", "visits by
-- browser", or either for visits not direct, over a month reads a few rows
-- a day per value here, where `visits` holds a row per visit (an
-- organizer's 675 000 a month took 46 ms). Summed with
-- `sign` as visits are written, like `visits_daily`. `visitors` counts a
-- visit's visitor under each value a written row of it had: a visit keeps
-- its entry page, channel and device once known, so it counts twice only
-- when one was learnt after a write (a first row without a user agent, an
-- event before the first page view); the Stats API reads visitors by exit
-- page from `visits` instead (a visit's exit page moves with each page).
CREATE TABLE IF NOT EXISTS bilten_analytics.visit_facets_daily
(
    organizer_id String,
    date Date,
    -- entry_page, exit_page, device, browser or os.
    facet LowCardinality(String),
    channel LowCardinality(String),
    value String,
    visits SimpleAggregateFunction(sum, Int64),
    pageviews SimpleAggregateFunction(sum, Int64),
    events SimpleAggregateFunction(sum, Int64),
    bounces SimpleAggregateFunction(sum, Int64),
    duration_ms SimpleAggregateFunction(sum, Int64),
    visitors AggregateFunction(uniqCombined(12), String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, facet, date, channel, value)
SETTINGS non_replicated_deduplication_window = 10000;

-- The visits stored before this (once: a day already in the rollup is
-- skipped, so a second run of this file adds nothing), summed as the view
-- below sums what is written after. Visits written between this and the
-- view's creation are not summed: with several servers on one ClickHouse,
-- stop them all before migrating, as for 0024.
INSERT INTO bilten_analytics.visit_facets_daily
SELECT
    organizer_id, date, facet, channel, value,
    sum(s), sum(pv), sum(ev), sum(b), sum(ms), uniqCombinedStateIf(12)(v, s > 0)
FROM
(
    SELECT
        organizer_id, date, f.1 AS facet, channel, f.2 AS value,
        sign AS s,
        sign * pageviews AS pv,
        sign * events AS ev,
        sign * (pageviews <= 1) AS b,
        sign * dateDiff('millisecond', started, ended) AS ms,
        visitor AS v
    FROM bilten_analytics.visits
    ARRAY JOIN [('entry_page', entry_page), ('exit_page', exit_page), ('device', toString(device)),
        ('browser', toString(browser)), ('os', toString(os))] AS f
    WHERE (organizer_id, date) GLOBAL NOT IN
        (SELECT organizer_id, date FROM bilten_analytics.visit_facets_daily)
)
GROUP BY organizer_id, date, facet, channel, value;

-- Its sums under names of their own first: an alias that is a column's
-- name would be read inside the other aggregates.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.visit_facets_daily_from_visits
TO bilten_analytics.visit_facets_daily AS
SELECT
    organizer_id, date, facet, channel, value,
    sum(s) AS visits,
    sum(pv) AS pageviews,
    sum(ev) AS events,
    sum(b) AS bounces,
    sum(ms) AS duration_ms,
    uniqCombinedStateIf(12)(v, s > 0) AS visitors
FROM
(
    SELECT
        organizer_id, date, f.1 AS facet, channel, f.2 AS value,
        sign AS s,
        sign * pageviews AS pv,
        sign * events AS ev,
        sign * (pageviews <= 1) AS b,
        sign * dateDiff('millisecond', started, ended) AS ms,
        visitor AS v
    FROM bilten_analytics.visits
    ARRAY JOIN [('entry_page', entry_page), ('exit_page', exit_page), ('device', toString(device)),
        ('browser', toString(browser)), ('os', toString(os))] AS f
)
GROUP BY organizer_id, date, facet, channel, value;
