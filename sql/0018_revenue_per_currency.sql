-- Revenue per currency: a sum of USD, EUR and GBP sales means nothing, so
-- the daily aggregates keep each currency's sum apart
-- (`revenue_by_currency`, a map from currency to amount) and the seed's views
-- show `revenue` as that map: `{'EUR':120.00,'USD':40.00}`.
--
-- The tables' `revenue` column stays, a sum across currencies that nothing
-- shows: it is what the views check the map against. An amount the map
-- lacks (a day aggregated before this migration whose sales were since
-- deleted by retention, so they could not be added below) is shown under
-- the currency '' (unknown), never dropped and never guessed.
ALTER TABLE bilten_analytics.metrics_daily ADD COLUMN IF NOT EXISTS revenue_by_currency SimpleAggregateFunction(sumMap, Map(String, Decimal(38, 2)));

ALTER TABLE bilten_analytics.event_performance ADD COLUMN IF NOT EXISTS revenue_by_currency SimpleAggregateFunction(sumMap, Map(String, Decimal(38, 2)));

-- What was stored before this migration, by the same SELECTs as the views
-- below, for the days that have no amount per currency yet. So a second
-- run (an interrupted migration run again, or its text sent again by a
-- writer of the ClickHouse interface, which may send migrations word for
-- word) adds nothing: every day with sales has its amounts after the
-- first. The token also makes a retried insert a no-op (0009).
INSERT INTO bilten_analytics.metrics_daily (date, organizer_id, revenue_by_currency)
SETTINGS insert_deduplication_token = 'migration-0018-metrics-daily'
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    sumMap(map(toString(currency), toDecimal128(price * quantity, 2))) AS revenue_by_currency
FROM bilten_analytics.ticket_sales
WHERE (toDate(timestamp), organizer_id) GLOBAL NOT IN (
    SELECT date, organizer_id FROM bilten_analytics.metrics_daily WHERE notEmpty(revenue_by_currency))
GROUP BY date, organizer_id;

INSERT INTO bilten_analytics.event_performance (date, organizer_id, event_id, revenue_by_currency)
SETTINGS insert_deduplication_token = 'migration-0018-event-performance'
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    sumMap(map(toString(currency), toDecimal128(price * quantity, 2))) AS revenue_by_currency
FROM bilten_analytics.ticket_sales
WHERE (toDate(timestamp), organizer_id, event_id) GLOBAL NOT IN (
    SELECT date, organizer_id, event_id FROM bilten_analytics.event_performance WHERE notEmpty(revenue_by_currency))
GROUP BY date, organizer_id, event_id;

-- The views that feed them now add each sale's amount under its currency
-- too. MODIFY QUERY swaps a view's query at once, so no insert passes
-- between an old and a new view.
ALTER TABLE bilten_analytics.metrics_daily_from_ticket_sales MODIFY QUERY
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    count() AS ticket_sales,
    sum(toUInt64(quantity)) AS tickets_sold,
    sum(toDecimal128(price * quantity, 2)) AS revenue,
    sumMap(map(toString(currency), toDecimal128(price * quantity, 2))) AS revenue_by_currency
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id;

ALTER TABLE bilten_analytics.event_performance_from_ticket_sales MODIFY QUERY
SELECT
    toDate(timestamp) AS date,
    organizer_id,
    event_id,
    count() AS transactions,
    sum(toUInt64(quantity)) AS tickets_sold,
    sum(toDecimal128(price * quantity, 2)) AS revenue,
    sumMap(map(toString(currency), toDecimal128(price * quantity, 2))) AS revenue_by_currency,
    uniqState(user_id) AS buyers
FROM bilten_analytics.ticket_sales
GROUP BY date, organizer_id, event_id;

-- The seed's views, with `revenue` per currency. Sum it across rows with
-- sumMap(revenue), never sum().
CREATE OR REPLACE VIEW bilten_analytics.organizer_daily_metrics_mv AS
SELECT
    date,
    organizer_id,
    events,
    unique_users,
    page_views,
    ticket_sales,
    tickets_sold,
    mapFilter((currency, amount) -> amount != 0, mapAdd(known, map('', total - arraySum(mapValues(known))))) AS revenue
FROM
(
    SELECT
        date,
        organizer_id,
        sum(events) AS events,
        uniqMerge(unique_users) AS unique_users,
        sum(page_views) AS page_views,
        sum(ticket_sales) AS ticket_sales,
        sum(tickets_sold) AS tickets_sold,
        sum(revenue) AS total,
        sumMap(revenue_by_currency) AS known
    FROM bilten_analytics.metrics_daily
    GROUP BY date, organizer_id
);

CREATE OR REPLACE VIEW bilten_analytics.event_performance_mv AS
SELECT
    date,
    organizer_id,
    event_id,
    interactions,
    unique_visitors,
    page_views,
    transactions,
    tickets_sold,
    mapFilter((currency, amount) -> amount != 0, mapAdd(known, map('', total - arraySum(mapValues(known))))) AS revenue,
    buyers,
    conversion_rate
FROM
(
    SELECT
        date,
        organizer_id,
        event_id,
        sum(interactions) AS interactions,
        uniqMerge(unique_visitors) AS unique_visitors,
        sum(page_views) AS page_views,
        sum(transactions) AS transactions,
        sum(tickets_sold) AS tickets_sold,
        sum(revenue) AS total,
        sumMap(revenue_by_currency) AS known,
        uniqMerge(buyers) AS buyers,
        if(unique_visitors = 0, 0, round(buyers / unique_visitors * 100, 2)) AS conversion_rate
    FROM bilten_analytics.event_performance
    GROUP BY date, organizer_id, event_id
);
