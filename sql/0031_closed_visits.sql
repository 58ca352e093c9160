-- Visitors by exit page from the rollup, not from every visit: the Stats
-- API read `visits FINAL` for them (a visit's exit page moves with each
-- page, and a visitor counted under each of its written rows would count
-- under pages they did not leave from), 171 ms at the median over a month
-- of an organizer's 1 million visits (BENCHMARKS.md).
--
-- A visit's last row now says so: the server writes it once more, `closed`
-- 1, when it forgets the visit (30 minutes of silence, its map full, or
-- the server stopping), and after a crash the next start closes what the
-- crash left open (server/src/visits/recover.rs). Rows stored before this
-- read 1: every visit of an earlier run is over (a restart starts new ones).
ALTER TABLE bilten_analytics.visits
    ADD COLUMN IF NOT EXISTS closed UInt8 DEFAULT 1 AFTER names;

-- `visit_facets_daily` counts a visitor under an exit page from the
-- visit's closing row alone; the sums stay those of every row, weighted by
-- `sign`. The Stats API adds the visits still open, read from `visits`
-- over the last two days. MODIFY QUERY swaps the view's query at once.
ALTER TABLE bilten_analytics.visit_facets_daily_from_visits MODIFY QUERY
SELECT
    organizer_id, date, facet, channel, value,
    sum(s) AS visits,
    sum(pv) AS pageviews,
    sum(ev) AS events,
    sum(b) AS bounces,
    sum(ms) AS duration_ms,
    uniqCombinedStateIf(12)(v, s > 0 AND (facet != 'exit_page' OR c = 1)) AS visitors
FROM
(
    SELECT
        organizer_id, date, f.1 AS facet, channel, f.2 AS value,
        sign AS s,
        sign * pageviews AS pv,
        sign * events AS ev,
        sign * (pageviews <= 1) AS b,
        sign * dateDiff('millisecond', started, ended) AS ms,
        visitor AS v,
        closed AS c
    FROM bilten_analytics.visits
    ARRAY JOIN [('entry_page', entry_page), ('exit_page', exit_page), ('device', toString(device)),
        ('browser', toString(browser)), ('os', toString(os))] AS f
)
GROUP BY organizer_id, date, facet, channel, value;

-- The exit pages summed before this, summed again under the new rule from
-- each visit's live row (every one closed). Run again after an
-- interruption, it deletes and sums again; the insert is not deduplicated
-- against the deleted rows' blocks. With several servers on one ClickHouse,
-- stop them all before migrating, as for 0024.
ALTER TABLE bilten_analytics.visit_facets_daily DELETE WHERE facet = 'exit_page'
SETTINGS mutations_sync = 2;

INSERT INTO bilten_analytics.visit_facets_daily
SETTINGS insert_deduplicate = 0
SELECT
    organizer_id, date, 'exit_page', channel, exit_page,
    sum(sign), sum(sign * pageviews), sum(sign * events), sum(sign * (pageviews <= 1)),
    sum(sign * dateDiff('millisecond', started, ended)),
    uniqCombinedStateIf(12)(visitor, sign > 0 AND closed = 1)
FROM bilten_analytics.visits FINAL
GROUP BY organizer_id, date, channel, exit_page;
