-- Page views per day, organizer and channel by page, and events by name:
-- the Stats API's `event:page` ("top pages") and `event:name` ("which
-- events happen"), read from a few rows a day per value instead of every
-- page view or event over the range.
--
-- kind 'page': a page view's path (its URL's, as `visit:entry_page` reads
-- it); kind 'name': an event's type, and `pageview` for every page view
-- (Plausible's name). `visits` counts the visits that had the value,
-- `visitors` their visitors: a row's user, else its tab, else its visit,
-- the rule a visit's visitor follows from its first row (so someone who
-- signs in during a visit counts here as the tab before and the user
-- after). Rows the server gave no visit (no visitor named) count in
-- `pageviews` and `events` only.
CREATE TABLE IF NOT EXISTS bilten_analytics.pages_daily
(
    organizer_id String,
    date Date,
    kind LowCardinality(String),
    channel LowCardinality(String),
    value String,
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visits AggregateFunction(uniqCombined(12), UUID),
    visitors AggregateFunction(uniqCombined(12), String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, kind, date, channel, value)
SETTINGS non_replicated_deduplication_window = 10000;

-- The rows stored before this (once: a day already in the rollup is
-- skipped, so a second run of this file adds nothing). Rows stored between
-- this and the views' creation are not summed: with several servers on one
-- ClickHouse, stop them all before migrating, as for 0024.
INSERT INTO bilten_analytics.pages_daily
SELECT
    organizer_id, date, kind, channel, value,
    sum(page), count(), uniqCombinedStateIf(12)(visit_id, known), uniqCombinedStateIf(12)(visitor, known)
FROM
(
    SELECT
        organizer_id, toDate(timestamp) AS date, k.1 AS kind, channel, k.2 AS value, 1 AS page,
        visit_id, visit_id != toUUID('00000000-0000-0000-0000-000000000000') AS known,
        if(user_id != '', user_id, if(session_id != '', session_id, toString(visit_id))) AS visitor
    FROM bilten_analytics.page_views
    ARRAY JOIN [('page', path(url)), ('name', 'pageview')] AS k
    UNION ALL
    SELECT
        organizer_id, toDate(timestamp) AS date, 'name' AS kind, channel, event_type AS value, 0 AS page,
        visit_id, visit_id != toUUID('00000000-0000-0000-0000-000000000000') AS known,
        if(user_id != '', user_id, if(session_id != '', session_id, toString(visit_id))) AS visitor
    FROM bilten_analytics.events
)
WHERE (organizer_id, date) GLOBAL NOT IN (SELECT organizer_id, date FROM bilten_analytics.pages_daily)
GROUP BY organizer_id, date, kind, channel, value;

-- Their sums under names of their own: an alias that is a column's name
-- would be read inside the other aggregates.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.pages_daily_from_page_views
TO bilten_analytics.pages_daily AS
SELECT
    organizer_id, date, kind, channel, value,
    count() AS pageviews,
    count() AS events,
    uniqCombinedStateIf(12)(v, known) AS visits,
    uniqCombinedStateIf(12)(visitor, known) AS visitors
FROM
(
    SELECT
        organizer_id, toDate(timestamp) AS date, k.1 AS kind, channel, k.2 AS value,
        visit_id AS v, visit_id != toUUID('00000000-0000-0000-0000-000000000000') AS known,
        if(user_id != '', user_id, if(session_id != '', session_id, toString(visit_id))) AS visitor
    FROM bilten_analytics.page_views
    ARRAY JOIN [('page', path(url)), ('name', 'pageview')] AS k
)
GROUP BY organizer_id, date, kind, channel, value;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.pages_daily_from_events
TO bilten_analytics.pages_daily AS
SELECT
    organizer_id, date, 'name' AS kind, channel, value,
    toUInt64(0) AS pageviews,
    count() AS events,
    uniqCombinedStateIf(12)(v, known) AS visits,
    uniqCombinedStateIf(12)(visitor, known) AS visitors
FROM
(
    SELECT
        organizer_id, toDate(timestamp) AS date, channel, event_type AS value,
        visit_id AS v, visit_id != toUUID('00000000-0000-0000-0000-000000000000') AS known,
        if(user_id != '', user_id, if(session_id != '', session_id, toString(visit_id))) AS visitor
    FROM bilten_analytics.events
)
GROUP BY organizer_id, date, kind, channel, value;
