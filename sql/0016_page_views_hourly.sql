-- Page views per hour and organizer, for /dashboard's traffic panel: a
-- projection, so every part of page_views carries its own hourly counts,
-- written with the part (never ahead of it or twice) and used by any query
-- that groups page views by organizer and hour. The second statement builds
-- it for the parts stored before this migration.
ALTER TABLE bilten_analytics.page_views ADD PROJECTION IF NOT EXISTS hourly
(
    SELECT organizer_id, toStartOfHour(timestamp), count()
    GROUP BY organizer_id, toStartOfHour(timestamp)
);

ALTER TABLE bilten_analytics.page_views MATERIALIZE PROJECTION hourly;
