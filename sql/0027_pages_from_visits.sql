-- `pages_daily` (0026) summed from the visits the server writes instead
-- of from every page view and event: its two views cost the engine 3 to
-- 5 µs per stored row (BENCHMARKS.md), where a visit's line comes every
-- few seconds with its pages and event names counted by the server
-- (server/src/visits/tally.rs).
--
-- Each `visits` line carries its visit's page views by path and events by
-- type; a visit written again cancels its earlier line (`sign` -1), so the
-- sums are signed. A row of `pages_daily` now takes the visit's day (its
-- start), channel and visitor, as `visits_daily` does; page views and
-- events whose rows had no visit (visits off, or nobody to follow) are no
-- longer in it. Days summed before this keep their figures.
--
-- Apply with the servers stopped, as for 0024: a visit followed across
-- this would count its rows since its last write twice.
ALTER TABLE bilten_analytics.visits
    ADD COLUMN IF NOT EXISTS pages Map(String, UInt32) AFTER os,
    ADD COLUMN IF NOT EXISTS names Map(String, UInt32) AFTER pages;

DROP VIEW IF EXISTS bilten_analytics.pages_daily_from_page_views;

DROP VIEW IF EXISTS bilten_analytics.pages_daily_from_events;

ALTER TABLE bilten_analytics.pages_daily
    MODIFY COLUMN pageviews SimpleAggregateFunction(sum, Int64),
    MODIFY COLUMN events SimpleAggregateFunction(sum, Int64);

-- kind 'page': page views by path; kind 'name': events by type, and
-- `pageview` for the page views (Plausible's name). `visits` and
-- `visitors` count a visit under each value a written line of it had
-- (a cancelled line's values stay counted: a visit keeps its channel once
-- known, so only one whose first write came before its first page view
-- counts under two). Its sums under names of their own: an alias that is
-- a column's name would be read inside the other aggregates.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.pages_daily_from_visits
TO bilten_analytics.pages_daily AS
SELECT
    organizer_id, date, kind, channel, value,
    sum(pv) AS pageviews,
    sum(ev) AS events,
    uniqCombinedStateIf(12)(v, s > 0) AS visits,
    uniqCombinedStateIf(12)(who, s > 0) AS visitors
FROM
(
    SELECT
        organizer_id, date, x.1 AS kind, channel, x.2 AS value,
        sign AS s, sign * x.3 AS pv, sign * x.4 AS ev, visit_id AS v, visitor AS who
    FROM bilten_analytics.visits
    ARRAY JOIN arrayConcat(
        arrayMap((p, n) -> ('page', p, toInt64(n), toInt64(n)), mapKeys(pages), mapValues(pages)),
        if(pageviews > 0, [('name', 'pageview', toInt64(pageviews), toInt64(pageviews))], []),
        arrayMap((e, n) -> ('name', e, toInt64(0), toInt64(n)), mapKeys(names), mapValues(names))
    ) AS x
)
GROUP BY organizer_id, date, kind, channel, value;
