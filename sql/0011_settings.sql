-- Settings changed through the admin API (the retention policy), kept so they
-- outlive a restart. The newest value of a key wins.
CREATE TABLE IF NOT EXISTS bilten_analytics.settings
(
    key String,
    value String,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY key;
