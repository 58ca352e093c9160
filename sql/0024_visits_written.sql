-- Visits written by the server: one row per visit, from the figures it
-- keeps as each visit's rows are stored (server/src/visits/tally.rs),
-- instead of a partial row per inserted block from materialized views
-- over every page view and event (0021's `sessions`, which cost about
-- 4 µs of engine time per event and a GROUP BY over every visit per query).
--
-- A visit is written when it changes, at most every `visits.write_every`
-- (10 s), and when the server stops. A later write cancels the earlier one:
-- the server writes the row it wrote before with `sign` -1, then the new
-- one with `sign` 1 and a higher `version`, so sums weighted by `sign` are
-- each visit's latest figures at any time, before and after the engine
-- collapses the pairs (read `sum(sign)` as visits, `sum(sign * pageviews)`
-- as page views, …). A pair collapses by its version, whatever order the
-- inserts arrive in (two flush workers, retries): `VersionedCollapsing`.
CREATE TABLE IF NOT EXISTS bilten_analytics.visits
(
    sign Int8,
    organizer_id String,
    -- The visit's start day (its id's time): a visit's rows stay in one
    -- partition however long it lasts.
    date Date,
    visit_id UUID,
    -- Who it counts as for `visitors`: its user, else its tab, else the
    -- visit itself; set by its first row and never changed.
    visitor String,
    started DateTime64(3, 'UTC'),
    ended DateTime64(3, 'UTC'),
    pageviews UInt32,
    events UInt32,
    -- Time its pages were visible, as the tracker measured it.
    engaged_ms UInt64,
    entry_page String,
    exit_page String,
    user_id String,
    session_id String,
    channel LowCardinality(String),
    source String,
    utm_medium String,
    utm_source String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    country LowCardinality(String),
    user_agent String,
    -- When it was written, by the server's clock (ms); a cancel carries the
    -- version it cancels.
    version UInt64
)
ENGINE = VersionedCollapsingMergeTree(sign, version)
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date, visit_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Visits per day, organizer, origin and country, summed from their rows
-- with `sign` as they are written: most Stats API queries (no page and no
-- hour among their dimensions and filters) read a few rows a day here
-- instead of one per visit. `visitors` counts a visit's visitor once its
-- row is written; it is fixed for the visit, so a visit written again
-- adds no visitor.
CREATE TABLE IF NOT EXISTS bilten_analytics.visits_daily
(
    organizer_id String,
    date Date,
    channel LowCardinality(String),
    source String,
    utm_medium String,
    utm_source String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    country LowCardinality(String),
    visits SimpleAggregateFunction(sum, Int64),
    pageviews SimpleAggregateFunction(sum, Int64),
    events SimpleAggregateFunction(sum, Int64),
    -- Visits of at most one page.
    bounces SimpleAggregateFunction(sum, Int64),
    duration_ms SimpleAggregateFunction(sum, Int64),
    visitors AggregateFunction(uniqCombined(12), String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, date, channel, source, utm_medium, utm_source, utm_campaign, utm_content, utm_term, country)
SETTINGS non_replicated_deduplication_window = 10000;

-- Its sums under names of their own first: an alias that is a column's
-- name would be read inside the other aggregates.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.visits_daily_from_visits
TO bilten_analytics.visits_daily AS
SELECT
    organizer_id, date, channel, source, utm_medium, utm_source, utm_campaign, utm_content,
    utm_term, country,
    sum(s) AS visits,
    sum(pv) AS pageviews,
    sum(ev) AS events,
    sum(b) AS bounces,
    sum(ms) AS duration_ms,
    uniqCombinedStateIf(12)(v, s > 0) AS visitors
FROM
(
    SELECT
        organizer_id, date, channel, source, utm_medium, utm_source, utm_campaign, utm_content,
        utm_term, country,
        sign AS s,
        sign * pageviews AS pv,
        sign * events AS ev,
        sign * (pageviews <= 1) AS b,
        sign * dateDiff('millisecond', started, ended) AS ms,
        visitor AS v
    FROM bilten_analytics.visits
)
GROUP BY organizer_id, date, channel, source, utm_medium, utm_source, utm_campaign, utm_content, utm_term, country;

-- Nothing writes `sessions` any more.
DROP VIEW IF EXISTS bilten_analytics.sessions_from_page_views;
DROP VIEW IF EXISTS bilten_analytics.sessions_from_events;
DROP VIEW IF EXISTS bilten_analytics.sessions_from_engagements;

-- The visits it kept, one row each (once: a second run of this file finds
-- them in `visits`). `sessions` keeps what it held, aged by retention as
-- before; nothing reads it.
INSERT INTO bilten_analytics.visits (sign, organizer_id, date, visit_id, visitor, started, ended,
    pageviews, events, engaged_ms, entry_page, exit_page, user_id, session_id, channel, source,
    utm_medium, utm_source, utm_campaign, utm_content, utm_term, country, user_agent, version)
SELECT
    1, organizer_id, date, visit_id,
    multiIf(u != '', u, s != '', s, toString(visit_id)),
    first, last, pv, ev, eng, entry, exit, u, s, ch, src, medium, usource, campaign, content, term,
    cc, ua, 0
FROM
(
    SELECT
        organizer_id, date, visit_id,
        min(started) AS first,
        max(ended) AS last,
        toUInt32(sum(pageviews)) AS pv,
        toUInt32(sum(events)) AS ev,
        sum(engaged_ms) AS eng,
        argMinMerge(entry_page) AS entry,
        argMaxMerge(exit_page) AS exit,
        max(user_id) AS u,
        max(session_id) AS s,
        max(channel) AS ch,
        max(source) AS src,
        max(utm_medium) AS medium,
        max(utm_source) AS usource,
        max(utm_campaign) AS campaign,
        max(utm_content) AS content,
        max(utm_term) AS term,
        max(country) AS cc,
        max(user_agent) AS ua
    FROM bilten_analytics.sessions
    WHERE visit_id GLOBAL NOT IN (SELECT visit_id FROM bilten_analytics.visits)
    GROUP BY organizer_id, date, visit_id
)
WHERE pv + ev > 0;
