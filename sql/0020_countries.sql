-- The client's country (ISO 3166-1 alpha-2), which the server looks up from
-- its address before the plugins run (the privacy plugin truncates the
-- address): `bilten_schema::HOST_COLUMNS`. Empty when unknown, and in rows
-- stored before this migration.
ALTER TABLE bilten_analytics.events ADD COLUMN IF NOT EXISTS country LowCardinality(String) AFTER ip;

ALTER TABLE bilten_analytics.page_views ADD COLUMN IF NOT EXISTS country LowCardinality(String) AFTER ip;

-- Page views per organizer, day and country, for /dashboard's countries
-- panel: a projection, like `hourly` (0016), so no query scans the rows.
ALTER TABLE bilten_analytics.page_views ADD PROJECTION IF NOT EXISTS countries
(
    SELECT organizer_id, toDate(timestamp), country, count()
    GROUP BY organizer_id, toDate(timestamp), country
);

ALTER TABLE bilten_analytics.page_views MATERIALIZE PROJECTION countries;
