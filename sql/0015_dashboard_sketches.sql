-- Distinct users as the dashboard counts them over a range of days:
-- HyperLogLog sketches (uniqHLL12: 2.5 KB each, about 1.6 % error, exact
-- for small sets), which merge an order of magnitude faster than the
-- `uniq` states of the seed's tables (BENCHMARKS.md, dashboard). The seed's
-- tables and views are unchanged; these rows are fed beside them.
--
-- measure: 'users' (every event, event_id ''), 'visitors' (events of a
-- ticketed event), a funnel step (its event_type), 'buyers' (ticket sales).
CREATE TABLE IF NOT EXISTS bilten_analytics.dashboard_sketches
(
    date Date,
    organizer_id String,
    event_id String,
    measure LowCardinality(String),
    users AggregateFunction(uniqHLL12, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (organizer_id, measure, event_id, date);

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.dashboard_sketches_from_events
TO bilten_analytics.dashboard_sketches AS
SELECT
    date,
    organizer_id,
    m.1 AS event_id,
    m.2 AS measure,
    uniqHLL12State(user_id) AS users
FROM
(
    SELECT
        toDate(timestamp) AS date,
        organizer_id,
        user_id,
        [('', 'users'),
         (event_id, if(event_id != '', 'visitors', '')),
         (event_id, if(event_type IN ('page_view', 'view_event', 'add_to_cart', 'checkout', 'purchase'), event_type, ''))] AS measures
    FROM bilten_analytics.events
)
ARRAY JOIN arrayFilter(x -> x.2 != '', measures) AS m
GROUP BY date, organizer_id, event_id, measure;

CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.dashboard_sketches_from_ticket_sales
TO bilten_analytics.dashboard_sketches AS
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    'buyers' AS measure,
    uniqHLL12State(user_id) AS users
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id, event_id;

-- What was stored before this migration, by the same SELECTs as the views
-- above (tests/migrations.rs holds them equal). A sketch counts a user
-- once however often it is added, so rows the views also wrote while this
-- ran count once.
INSERT INTO bilten_analytics.dashboard_sketches
SELECT
    date,
    organizer_id,
    m.1 AS event_id,
    m.2 AS measure,
    uniqHLL12State(user_id) AS users
FROM
(
    SELECT
        toDate(timestamp) AS date,
        organizer_id,
        user_id,
        [('', 'users'),
         (event_id, if(event_id != '', 'visitors', '')),
         (event_id, if(event_type IN ('page_view', 'view_event', 'add_to_cart', 'checkout', 'purchase'), event_type, ''))] AS measures
    FROM bilten_analytics.events
)
ARRAY JOIN arrayFilter(x -> x.2 != '', measures) AS m
GROUP BY date, organizer_id, event_id, measure;

INSERT INTO bilten_analytics.dashboard_sketches
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    'buyers' AS measure,
    uniqHLL12State(user_id) AS users
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id, event_id;
