-- Exchange rates an admin loads (`PUT /admin/exchange-rates?base=EUR`, a
-- CSV of date, currency, rate): what one unit of `currency` was worth in
-- `base` on `date`. The Stats API converts revenue into `base` with them
-- when a query asks (`"include": {"converted_to": "EUR"}`), and names each
-- day and currency it has no rate for instead of guessing one. Loading the
-- same base, date and currency again replaces the rate (the latest load).
CREATE TABLE IF NOT EXISTS bilten_analytics.exchange_rates
(
    base LowCardinality(String),
    date Date,
    currency LowCardinality(String),
    rate Decimal(38, 10),
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (base, currency, date);
