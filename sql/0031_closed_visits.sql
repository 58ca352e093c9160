-- Visitors by exit page from the rollup, not from every visit: the Stats
-- API read `visits FINAL` for them (a visit's exit page moves with each
-- page, and a visitor counted under each of its written rows would count
-- under pages they did not leave from), 128 ms at the median over a month
-- of an organizer's 680 000 visits (BENCHMARKS.md).
--
-- A visit's last row now says so: the server writes it once more, `closed`
-- 1, when it forgets the visit (30 minutes of silence, its map full, or
-- the server stopping), and after a crash the next start closes what the
-- crash left open (server/src/visits/recover.rs). Rows stored before this
-- read 1: every visit of an earlier run is over (a restart starts new ones).
-- Stop every server cleanly before applying it: a line an older server
-- logged and replays after it would read 1 too.
ALTER TABLE bilten_analytics.visits
    ADD COLUMN IF NOT EXISTS closed UInt8 DEFAULT 1 AFTER names;

-- Each closed visit's visitor under its exit page, as the facet
-- `exit_closed` of `visit_facets_daily`: its sums are nothing (the facet
-- `exit_page` keeps the visits' sums), so this view and the statement
-- below add only visitors, and a visitor added twice counts once. The
-- Stats API adds the visits still open, from their latest rows.
CREATE MATERIALIZED VIEW IF NOT EXISTS bilten_analytics.visit_exits_closed
TO bilten_analytics.visit_facets_daily AS
SELECT
    organizer_id, date, facet, channel, value,
    toInt64(0) AS visits,
    toInt64(0) AS pageviews,
    toInt64(0) AS events,
    toInt64(0) AS bounces,
    toInt64(0) AS duration_ms,
    uniqCombinedStateIf(12)(v, s > 0) AS visitors
FROM
(
    SELECT organizer_id, date, 'exit_closed' AS facet, channel, exit_page AS value,
        sign AS s, visitor AS v
    FROM bilten_analytics.visits
    WHERE closed = 1
)
GROUP BY organizer_id, date, facet, channel, value;

-- The visits stored before this: each one's live row (every one closed).
-- Run again, it adds no visitor that is not there already.
INSERT INTO bilten_analytics.visit_facets_daily
SELECT
    organizer_id, date, 'exit_closed', channel, exit_page, 0, 0, 0, 0, 0,
    uniqCombinedState(12)(visitor)
FROM bilten_analytics.visits FINAL
WHERE sign = 1 AND closed = 1
GROUP BY organizer_id, date, channel, exit_page;
