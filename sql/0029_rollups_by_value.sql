-- The page and facet rollups without the channel, kept beside them as
-- projections: "top pages" or "visitors by browser" over a month, with no
-- channel asked or filtered, reads one row a day per value instead of one
-- per value and channel. The engine picks them by itself (a query that
-- names the channel reads the table). An aggregating table keeps its
-- projections right through merges only when it rebuilds them.
ALTER TABLE bilten_analytics.pages_daily
    MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE bilten_analytics.pages_daily ADD PROJECTION IF NOT EXISTS pages_by_value
(
    SELECT organizer_id, kind, date, value,
        sum(pageviews), sum(events), uniqCombinedMerge(12)(visits), uniqCombinedMerge(12)(visitors)
    GROUP BY organizer_id, kind, date, value
);

ALTER TABLE bilten_analytics.pages_daily MATERIALIZE PROJECTION pages_by_value;

ALTER TABLE bilten_analytics.visit_facets_daily
    MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE bilten_analytics.visit_facets_daily ADD PROJECTION IF NOT EXISTS facets_by_value
(
    SELECT organizer_id, facet, date, value,
        sum(visits), sum(pageviews), sum(events), sum(bounces), sum(duration_ms),
        uniqCombinedMerge(12)(visitors)
    GROUP BY organizer_id, facet, date, value
);

ALTER TABLE bilten_analytics.visit_facets_daily MATERIALIZE PROJECTION facets_by_value;
