//! `/dashboard`: the seed's materialized views as a page (no HTTP in here).
//!
//! - [`Viewer`]: who signed in, the admin or an organizer's read key;
//!   [`authenticate`] tells which from what was typed into the form.
//! - [`Filter`]: organizer and date range, checked against the viewer: a
//!   read key sees its organizer and no other.
//! - [`figures`]: every figure the page shows, read from the views' tables
//!   (never the raw event tables), in one read-only query per panel.
//! - [`page`]: the HTML; [`signin`]: failed sign-ins limited per address
//!   and in all. Who is signed in is kept in the store
//!   (`tenants::sessions`), so a session outlives a restart.

pub mod page;
pub mod signin;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde_json::Value;

use crate::config::Config;
use crate::model::{DATABASE, Table};
use crate::storage::{Storage, StorageError, json_number as num};

/// Who is looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The admin token: every organizer.
    Admin,
    /// A read key: this organizer only.
    Organizer(String),
}

impl Viewer {
    pub fn describe(&self) -> String {
        match self {
            Viewer::Admin => "admin · all organizers".into(),
            Viewer::Organizer(org) => format!("organizer {org}"),
        }
    }
}

/// The viewer a typed token or key stands for. Every configured secret is
/// compared, in constant time, so the time taken tells nothing.
pub fn authenticate(config: &Config, given: &str) -> Option<Viewer> {
    let given = given.trim();
    if given.is_empty() {
        return None;
    }
    let same = |a: &str| crate::config::same_secret(given, a);
    let mut found = None;
    if let Some(token) = config.admin_token.as_deref()
        && same(token)
    {
        found = Some(Viewer::Admin);
    }
    for entry in &config.read_keys {
        if let Some(organizer) = &entry.organizer
            && same(&entry.key)
            && found.is_none()
        {
            found = Some(Viewer::Organizer(organizer.clone()));
        }
    }
    found
}

/// What signed in, when a secret is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub viewer: Viewer,
    /// A read key made through `/admin/keys`: its id and the prefix of the
    /// secret used, so that a session it opened ends when that secret no
    /// longer holds (revoked, rotated out).
    pub key: Option<(String, String)>,
}

/// The viewer a typed token or key stands for: the configured secrets
/// ([`authenticate`]) first, then the read keys kept in the store. `Err`
/// with a reason for a key the store knows that no longer holds (revoked,
/// rotated out, not a read key, or the store's keys not read for too
/// long); `Err(None)` for an unknown one.
pub fn authenticate_with(
    config: &Config,
    tenants: &crate::tenants::Tenants,
    given: &str,
) -> Result<SignedIn, Option<String>> {
    use crate::tenants::keys::{Found, KeyKind};
    if let Some(viewer) = authenticate(config, given) {
        return Ok(SignedIn { viewer, key: None });
    }
    let given = given.trim();
    let ring = tenants.ring();
    if given.is_empty() || ring.is_empty() {
        return Err(None);
    }
    let now = crate::tenants::now_ms();
    let found = ring.lookup(&tenants.digest(given), now);
    if let (Some(_), Some(stale)) = (&found, tenants.stale(now)) {
        return Err(Some(format!(
            "the keys kept in the store were last read {} s ago: retry shortly",
            stale.as_secs()
        )));
    }
    match found {
        None => Err(None),
        Some(Found::Valid(key)) if key.kind == KeyKind::Read => {
            key.mark_used(now);
            let organizer = key.organizers.first().cloned().ok_or(None)?;
            Ok(SignedIn {
                viewer: Viewer::Organizer(organizer),
                key: Some((key.id.clone(), crate::tenants::keys::prefix(given))),
            })
        }
        Some(Found::Valid(key)) => Err(Some(format!(
            "an {} key sends events; figures are read with a read key",
            key.kind.name()
        ))),
        Some(refused) => Err(Some(refused.why())),
    }
}

/// Whether a session opened with a configured secret (`credential`, its
/// keyed digest, `Tenants::credential`) may go on: the admin token, or a
/// read key of `organizer`, is still configured.
pub fn credential_holds(
    config: &Config,
    tenants: &crate::tenants::Tenants,
    organizer: Option<&str>,
    credential: &str,
) -> bool {
    match organizer {
        None => config
            .admin_token
            .as_deref()
            .is_some_and(|t| tenants.credential(t) == credential),
        Some(org) => config.read_keys.iter().any(|k| {
            k.organizer.as_deref() == Some(org) && tenants.credential(&k.key) == credential
        }),
    }
}

/// Whether a session opened with store key `id`'s secret `prefix` may go
/// on: the key is not revoked, that secret not rotated out, and the
/// store's keys were read lately.
pub fn key_holds(tenants: &crate::tenants::Tenants, id: &str, prefix: &str) -> bool {
    let now = crate::tenants::now_ms();
    tenants.stale(now).is_none()
        && tenants
            .ring()
            .get(id)
            .is_some_and(|k| k.secret_holds(prefix, now))
}

/// What the page shows: one organizer or all, from one day to another
/// (both included, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub organizer: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// A filter the viewer may not have, or cannot mean.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("{0}")]
    Invalid(String),
    #[error("this key sees organizer {0} only")]
    Forbidden(String),
}

/// The default range: the last 30 days.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest range a page reads.
pub const MAX_DAYS: i64 = 366;

impl Filter {
    /// The filter from the form's fields (empty ones take defaults).
    pub fn new(
        viewer: &Viewer,
        organizer: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        today: NaiveDate,
    ) -> Result<Filter, FilterError> {
        let organizer = organizer.map(str::trim).filter(|o| !o.is_empty());
        let organizer = match (viewer, organizer) {
            (Viewer::Admin, None) => None,
            (Viewer::Admin, Some(org)) => Some(checked_organizer(org)?),
            (Viewer::Organizer(own), None) => Some(own.clone()),
            (Viewer::Organizer(own), Some(org)) if org == own => Some(own.clone()),
            (Viewer::Organizer(own), Some(_)) => return Err(FilterError::Forbidden(own.clone())),
        };
        let date = |name: &str, v: Option<&str>, default: NaiveDate| match v
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .filter(|d| (1970..=2149).contains(&chrono::Datelike::year(d)))
                .ok_or_else(|| {
                    FilterError::Invalid(format!(
                        "{name}: expected a date such as 2026-11-28, got {v:?}"
                    ))
                }),
        };
        let to = date("to", to, today)?;
        let from = date("from", from, to - Duration::days(DEFAULT_DAYS - 1))?;
        if from > to {
            return Err(FilterError::Invalid(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(FilterError::Invalid(format!(
                "a page shows at most {MAX_DAYS} days; pick a shorter range"
            )));
        }
        Ok(Filter {
            organizer,
            from,
            to,
        })
    }

    /// The values every statement of the page binds, never spliced into
    /// its text: `{from:Date}` and `{to:Date}` (both included), `{after:Date}`
    /// (the day after `to`), and `{organizer:String}` when one is chosen.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut params = vec![
            ("from".to_string(), self.from.to_string()),
            ("to".to_string(), self.to.to_string()),
            (
                "after".to_string(),
                (self.to + Duration::days(1)).to_string(),
            ),
        ];
        if let Some(org) = &self.organizer {
            params.push(("organizer".to_string(), org.clone()));
        }
        params
    }

    /// ` AND organizer_id = {organizer:String}` when one organizer is chosen.
    fn organizer_sql(&self) -> &'static str {
        match &self.organizer {
            Some(_) => " AND organizer_id = {organizer:String}",
            None => "",
        }
    }

    fn dates_sql(&self, column: &str) -> String {
        format!("{column} BETWEEN {{from:Date}} AND {{to:Date}}")
    }

    fn hours_sql(&self, column: &str) -> String {
        format!(
            "{column} >= toDateTime({{from:Date}}, 'UTC') AND {column} < toDateTime({{after:Date}}, 'UTC')"
        )
    }

    pub fn start(&self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.from.and_hms_opt(0, 0, 0).expect("midnight"))
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.start() + Duration::days((self.to - self.from).num_days() + 1)
    }
}

/// An organizer id as the model declares it (its length), before it is
/// bound to a statement's parameter.
fn checked_organizer(org: &str) -> Result<String, FilterError> {
    let max = match Table::Events.field("organizer_id").map(|f| f.kind) {
        Some(crate::model::Kind::Text(max)) => max,
        _ => unreachable!("organizer_id is declared text"),
    };
    if org.chars().count() > max {
        return Err(FilterError::Invalid(format!(
            "organizer: longer than {max} characters"
        )));
    }
    Ok(org.to_string())
}

/// Amounts of money by currency (its code as sales sent it), in code order.
/// The code '' holds an amount whose currency is unknown: revenue of days
/// aggregated before the figures were kept per currency (migration 0018)
/// whose sales are gone. Never one sum across currencies.
pub type Revenue = std::collections::BTreeMap<String, f64>;

/// A row's revenue as the seed's views show it (0018): its amounts per
/// currency (`known`, `{"EUR": 12.5, …}`), and what the row's `total` (the
/// sum across currencies the tables also keep) has beyond them under the
/// unknown currency ''. Computed here from the tables' two columns, where
/// the views compute it in SQL: reading the views' nested aggregation made
/// the page 28 % slower (BENCHMARKS.md); the dashboard test holds the page
/// equal to the views.
fn revenue(total: &serde_json::Value, known: &serde_json::Value) -> Revenue {
    let mut out: Revenue = known
        .as_object()
        .map(|m| m.iter().map(|(c, a)| (c.clone(), num(a))).collect())
        .unwrap_or_default();
    let unknown = num(total) - out.values().sum::<f64>();
    // Amounts are in cents: anything under half a cent is the float sum's.
    if unknown.abs() >= 0.005 {
        *out.entry(String::new()).or_default() += unknown;
    }
    out.retain(|_, a| a.abs() >= 0.005);
    out
}

/// Adds `b`'s amounts to `a`'s, currency by currency.
pub fn add_revenue(mut a: Revenue, b: &Revenue) -> Revenue {
    for (currency, amount) in b {
        *a.entry(currency.clone()).or_default() += amount;
    }
    a
}

/// One day's figures for the filter's organizer(s).
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub date: NaiveDate,
    pub events: f64,
    pub page_views: f64,
    pub ticket_sales: f64,
    pub tickets: f64,
    pub revenue: Revenue,
}

/// One ticketed event over the range.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFigures {
    pub event_id: String,
    pub interactions: f64,
    pub visitors: f64,
    pub page_views: f64,
    pub tickets: f64,
    pub revenue: Revenue,
    pub buyers: f64,
}

impl EventFigures {
    /// Buyers per hundred visitors.
    pub fn conversion(&self) -> f64 {
        if self.visitors > 0.0 {
            self.buyers / self.visitors * 100.0
        } else {
            0.0
        }
    }
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Now, to the second: the realtime panel's right edge.
    pub now: DateTime<Utc>,
    /// Five-minute buckets of the last two hours: events, active users.
    pub realtime: Vec<(DateTime<Utc>, f64, f64)>,
    /// Events per hour over the range (per day over a long one:
    /// [`Filter::traffic_bucket_secs`]).
    pub hourly: Vec<(DateTime<Utc>, f64)>,
    /// Page views, in the same buckets.
    pub hourly_page_views: Vec<(DateTime<Utc>, f64)>,
    pub daily: Vec<Day>,
    /// Distinct users over the whole range.
    pub unique_users: f64,
    pub events: Vec<EventFigures>,
    /// The funnel's steps in order, with the users who reached each.
    pub funnel: Vec<(String, f64)>,
    /// Organizers to choose from (the admin's filter).
    pub organizers: Vec<String>,
    /// Events the plugins filtered out over the range, per plugin.
    pub filtered: Vec<(String, f64)>,
    /// Page views per country (ISO code; '' unknown), the most first.
    pub countries: Vec<(String, f64)>,
    /// Visits per channel and source, the most first.
    pub sources: Vec<((String, String), f64)>,
    /// Visits per campaign (`utm_campaign`), the most first.
    pub campaigns: Vec<(String, f64)>,
    /// Visits, bounce rate (%) and average visit duration (s).
    pub visit_totals: [f64; 3],
    /// The entry pages with the most visits: page, visits, bounce rate (%).
    pub entry_pages: Vec<(String, f64, f64)>,
    /// The exit pages with the most visits: page, visits, visitors.
    pub exit_pages: Vec<(String, f64, f64)>,
    /// Visits per device (`Desktop`, `Mobile`, …; '' not known).
    pub devices: Vec<(String, f64)>,
    /// The pages with the most views: page, page views, visitors.
    pub pages: Vec<(String, f64, f64)>,
    /// The events sent most, page views aside: name, events, visitors.
    pub event_names: Vec<(String, f64, f64)>,
}

/// Most sources and campaigns their panels list.
pub const TOP_SOURCES: usize = 10;

/// The Stats API's queries (`stats`) behind the visit panels: sources,
/// campaigns, the visits' totals, entry pages, exit pages, devices, pages
/// and event names; the same figures an app reads from `/api/v2/query`.
pub fn visit_panels(filter: &Filter) -> [serde_json::Value; 8] {
    let range = serde_json::json!([filter.from.to_string(), filter.to.to_string()]);
    let page = serde_json::json!({"limit": TOP_SOURCES});
    [
        serde_json::json!({"metrics": ["visits"], "date_range": range,
                           "dimensions": ["visit:channel", "visit:source"], "pagination": page}),
        serde_json::json!({"metrics": ["visits"], "date_range": range,
                           "dimensions": ["visit:utm_campaign"], "pagination": page,
                           "filters": [["is_not", "visit:utm_campaign", [""]]]}),
        serde_json::json!({"metrics": ["visits", "bounce_rate", "visit_duration"],
                           "date_range": range}),
        serde_json::json!({"metrics": ["visits", "bounce_rate"], "date_range": range,
                           "dimensions": ["visit:entry_page"], "pagination": page}),
        serde_json::json!({"metrics": ["visits", "visitors"], "date_range": range,
                           "dimensions": ["visit:exit_page"], "pagination": page}),
        serde_json::json!({"metrics": ["visits"], "date_range": range,
                           "dimensions": ["visit:device"]}),
        serde_json::json!({"metrics": ["pageviews", "visitors"], "date_range": range,
                           "dimensions": ["event:page"], "pagination": page}),
        serde_json::json!({"metrics": ["events", "visitors"], "date_range": range,
                           "dimensions": ["event:name"], "pagination": page,
                           "filters": [["is_not", "event:name", ["pageview"]]]}),
    ]
}

/// A visit panel's rows: their dimensions and metrics.
type Answer = Vec<(Vec<String>, Vec<f64>)>;

/// `open_window`: the server's visits' ([`crate::config::VisitSettings::open_window`]),
/// so that exit pages read as the Stats API reads them.
async fn visit_panel(
    storage: &dyn Storage,
    filter: &Filter,
    open_window: std::time::Duration,
    query: &serde_json::Value,
) -> Result<Answer, StorageError> {
    let plan = crate::stats::plan_for(query, filter.organizer.as_deref(), filter.to)
        .expect("the dashboard's queries, over at most 366 days, are valid")
        .open_within(open_window);
    let answer = match crate::stats::run(storage, &plan).await {
        Ok(a) => a,
        Err(crate::stats::StatsError::Storage(e)) => return Err(e),
        Err(e) => unreachable!("only the engine fails a planned query: {e}"),
    };
    Ok(answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let dims = r["dimensions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d.as_str().unwrap_or("").to_string())
                .collect();
            let metrics = r["metrics"].as_array().into_iter().flatten().map(num);
            (dims, metrics.collect())
        })
        .collect())
}

/// Each row's first dimension and its first two metrics.
fn with_second(rows: Answer) -> Vec<(String, f64, f64)> {
    rows.into_iter()
        .map(|(mut d, m)| (d.swap_remove(0), m[0], m[1]))
        .collect()
}

/// Each row's first dimension and first metric.
fn firsts(rows: Answer) -> Vec<(String, f64)> {
    rows.into_iter()
        .map(|(mut d, m)| (d.swap_remove(0), m[0]))
        .collect()
}

/// The funnel's steps, as `sql/0007_user_funnel.sql` orders them.
pub const FUNNEL: [(&str, &str); 5] = [
    ("page_view", "Page view"),
    ("view_event", "Event details"),
    ("add_to_cart", "Add to cart"),
    ("checkout", "Checkout"),
    ("purchase", "Purchase"),
];

/// How far back the realtime panel looks.
pub const REALTIME_MINUTES: i64 = 120;

/// Events a plugin dropped (bots, …) on one day, for one organizer, table,
/// plugin and reason: what `filtered_traffic` counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Filtered {
    pub date: NaiveDate,
    pub organizer_id: String,
    pub source_table: String,
    pub plugin: String,
    pub reason: String,
    pub events: u64,
}

/// Most rows [`filtered_traffic`] answers with (366 days of a few plugins
/// for many organizers); the rest are counted in its total only.
pub const MAX_FILTERED_ROWS: usize = 10_000;

/// Filtered traffic over a range: its rows (at most [`MAX_FILTERED_ROWS`]),
/// and the total of every row, listed or not.
#[derive(Debug, Clone, PartialEq)]
pub struct FilteredTraffic {
    pub rows: Vec<Filtered>,
    pub events: u64,
    /// Rows were left out of `rows`.
    pub truncated: bool,
}

/// The filter's filtered traffic, per day, organizer, table, plugin and
/// reason.
pub async fn filtered_traffic(
    storage: &dyn Storage,
    filter: &Filter,
) -> Result<FilteredTraffic, StorageError> {
    let sql = format!(
        "SELECT toString(date) AS day, organizer_id, source_table, plugin, reason, \
         sum(events) AS events FROM {DATABASE}.filtered_traffic WHERE {}{} \
         GROUP BY date, organizer_id, source_table, plugin, reason \
         ORDER BY date, organizer_id, source_table, plugin, reason",
        filter.dates_sql("date"),
        filter.organizer_sql()
    );
    let found = rows(storage, &sql, &filter.params()).await?;
    let events = found.iter().map(|r| num(&r["events"]) as u64).sum();
    let rows = found
        .iter()
        .take(MAX_FILTERED_ROWS)
        .filter_map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            Some(Filtered {
                date: NaiveDate::parse_from_str(r["day"].as_str()?, "%Y-%m-%d").ok()?,
                organizer_id: text("organizer_id"),
                source_table: text("source_table"),
                plugin: text("plugin"),
                reason: text("reason"),
                events: num(&r["events"]) as u64,
            })
        })
        .collect();
    Ok(FilteredTraffic {
        rows,
        events,
        truncated: found.len() > MAX_FILTERED_ROWS,
    })
}

async fn rows(
    storage: &dyn Storage,
    sql: &str,
    params: &[(String, String)],
) -> Result<Vec<Value>, StorageError> {
    crate::storage::json_rows_with(storage, sql, params).await
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        // DateTime64 columns come with a fraction, DateTime ones without.
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok())
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

/// The realtime panel alone (it refreshes itself).
pub async fn realtime(
    storage: &dyn Storage,
    filter: &Filter,
) -> Result<(DateTime<Utc>, Vec<(DateTime<Utc>, f64, f64)>), StorageError> {
    let now = Utc::now();
    let sql = format!(
        "SELECT toString(interval_start) AS t, sum(events) AS events, uniqMerge(unique_users) AS users \
         FROM {DATABASE}.realtime_dashboard \
         WHERE interval_start >= toStartOfFiveMinutes(now() - INTERVAL {REALTIME_MINUTES} MINUTE){} \
         GROUP BY interval_start ORDER BY interval_start",
        filter.organizer_sql()
    );
    let points = rows(storage, &sql, &filter.params())
        .await?
        .iter()
        .map(|r| (time(&r["t"]), num(&r["events"]), num(&r["users"])))
        .collect();
    Ok((now, points))
}

/// The traffic panels' bucket: an hour, or a day past [`HOURLY_DAYS`] (a
/// year of hours would be 8 784 bars a chart).
pub const HOURLY_DAYS: i64 = 31;

impl Filter {
    pub fn traffic_bucket_secs(&self) -> i64 {
        if (self.to - self.from).num_days() < HOURLY_DAYS {
            3600
        } else {
            86400
        }
    }

    /// `hour` (the start of an hour) as the start of its traffic bucket.
    fn bucket_sql(&self, hour: &str) -> String {
        match self.traffic_bucket_secs() {
            3600 => hour.to_string(),
            _ => format!("toStartOfDay({hour})"),
        }
    }
}

/// The traffic panel's page views per bucket: grouped by what the `hourly`
/// projection of page_views holds (`sql/0016_page_views_hourly.sql`), so
/// the engine reads that instead of the rows. It binds `filter.params()`.
pub fn page_views_over_time(filter: &Filter) -> String {
    let bucket = filter.bucket_sql("toStartOfHour(timestamp)");
    format!(
        "SELECT toString({bucket}) AS t, count() AS page_views FROM {DATABASE}.page_views \
         WHERE {}{} GROUP BY {bucket} ORDER BY {bucket}",
        filter.hours_sql("toStartOfHour(timestamp)"),
        filter.organizer_sql()
    )
}

/// Events the plugins filtered out over the filter's range, per plugin, the
/// most first: the dashboard's panel (the admin route lists every row).
fn filtered_by_plugin(filter: &Filter) -> String {
    format!(
        "SELECT plugin, sum(events) AS events FROM {DATABASE}.filtered_traffic \
         WHERE {}{} GROUP BY plugin ORDER BY events DESC, plugin",
        filter.dates_sql("date"),
        filter.organizer_sql()
    )
}

/// Most countries the countries panel lists.
pub const TOP_COUNTRIES: usize = 10;

/// Page views per country over the filter's range, the most first: read
/// from `page_views`' `countries` projection (0020), never its rows.
pub fn page_views_by_country(filter: &Filter) -> String {
    format!(
        "SELECT country, count() AS page_views FROM {DATABASE}.page_views \
         WHERE {}{} GROUP BY country ORDER BY page_views DESC, country LIMIT {TOP_COUNTRIES}",
        filter.dates_sql("toDate(timestamp)"),
        filter.organizer_sql()
    )
}

/// Every panel's figures for `filter`; `open_window` is the visits'
/// ([`crate::config::VisitSettings::open_window`]).
pub async fn figures(
    storage: &dyn Storage,
    viewer: &Viewer,
    filter: &Filter,
    open_window: std::time::Duration,
    registered: Vec<String>,
) -> Result<Figures, StorageError> {
    let org = filter.organizer_sql();
    let (dates, hours) = (filter.dates_sql("date"), filter.hours_sql("hour"));
    let bucket = filter.bucket_sql("hour");
    let hourly = format!(
        "SELECT toString({bucket}) AS t, sum(events) AS events FROM {DATABASE}.events_hourly_mv \
         WHERE {hours}{org} GROUP BY {bucket} ORDER BY {bucket}"
    );
    let hourly_page_views = page_views_over_time(filter);
    let daily = format!(
        "SELECT toString(date) AS day, sum(events) AS events, sum(page_views) AS page_views, \
         sum(ticket_sales) AS ticket_sales, sum(tickets_sold) AS tickets, \
         toString(sum(revenue)) AS total, sumMap(revenue_by_currency) AS known \
         FROM {DATABASE}.metrics_daily WHERE {dates}{org} GROUP BY day ORDER BY day"
    );
    // Distinct users over the range: the daily sketches merged, not a sum
    // of daily counts (a user seen on two days counts once).
    let sketches = format!(
        "SELECT measure, event_id, uniqHLL12Merge(users) AS users FROM {DATABASE}.dashboard_sketches \
         WHERE measure IN ('users', 'visitors', 'buyers') AND {dates}{org} GROUP BY measure, event_id"
    );
    let params = filter.params();
    // The funnel's steps bound too: `{step0:String}`, `{step1:String}`…
    let mut funnel_params = params.clone();
    let mut steps = Vec::new();
    for (i, (step, _)) in FUNNEL.iter().enumerate() {
        funnel_params.push((format!("step{i}"), step.to_string()));
        steps.push(format!("{{step{i}:String}}"));
    }
    let funnel = format!(
        "SELECT measure AS step, uniqHLL12Merge(users) AS users FROM {DATABASE}.dashboard_sketches \
         WHERE measure IN ({}) AND {dates}{org} GROUP BY measure",
        steps.join(", ")
    );
    let events = format!(
        "SELECT event_id, sum(interactions) AS interactions, sum(page_views) AS page_views, \
         sum(tickets_sold) AS tickets, toString(sum(revenue)) AS total, \
         sumMap(revenue_by_currency) AS known \
         FROM {DATABASE}.event_performance WHERE {dates}{org} \
         GROUP BY event_id ORDER BY tickets DESC, event_id LIMIT 200"
    );
    let organizers = async {
        match viewer {
                        Viewer::Organizer(own) => Ok(vec![own.clone()]),
            // The organizers made through `/admin/organizers`; before any
            // is, those the data names.
            Viewer::Admin if !registered.is_empty() => Ok(registered),
            Viewer::Admin => Ok(rows(
                storage,
                &format!(
                    "SELECT DISTINCT organizer_id FROM {DATABASE}.metrics_daily ORDER BY organizer_id LIMIT 1000"
                ),
                &[],
            )
            .await?
            .iter()
            .filter_map(|r| r["organizer_id"].as_str().map(str::to_string))
            .collect()),
        }
    };
    // At once: the page waits for the slowest panel, not for their sum.
    let (by_country, by_plugin) = (page_views_by_country(filter), filtered_by_plugin(filter));
    let [
        by_source,
        by_campaign,
        totals,
        by_entry,
        by_exit,
        by_device,
        by_page,
        by_name,
    ] = visit_panels(filter);
    let (
        (now, realtime),
        hourly,
        hourly_page_views,
        daily,
        sketches,
        events,
        reached,
        organizers,
        filtered,
        countries,
        sources,
        campaigns,
        visit_totals,
        entry_pages,
        exit_pages,
        devices,
        pages,
        event_names,
    ) = tokio::try_join!(
        realtime(storage, filter),
        rows(storage, &hourly, &params),
        rows(storage, &hourly_page_views, &params),
        rows(storage, &daily, &params),
        rows(storage, &sketches, &params),
        rows(storage, &events, &params),
        rows(storage, &funnel, &funnel_params),
        organizers,
        rows(storage, &by_plugin, &params),
        rows(storage, &by_country, &params),
        visit_panel(storage, filter, open_window, &by_source),
        visit_panel(storage, filter, open_window, &by_campaign),
        visit_panel(storage, filter, open_window, &totals),
        visit_panel(storage, filter, open_window, &by_entry),
        visit_panel(storage, filter, open_window, &by_exit),
        visit_panel(storage, filter, open_window, &by_device),
        visit_panel(storage, filter, open_window, &by_page),
        visit_panel(storage, filter, open_window, &by_name),
    )?;
    let distinct = |measure: &str, event_id: &str| {
        sketches
            .iter()
            .find(|r| r["measure"] == measure && r["event_id"] == event_id)
            .map_or(0.0, |r| num(&r["users"]))
    };
    let hourly = hourly
        .iter()
        .map(|r| (time(&r["t"]), num(&r["events"])))
        .collect();
    let hourly_page_views = hourly_page_views
        .iter()
        .map(|r| (time(&r["t"]), num(&r["page_views"])))
        .collect();
    let daily = daily
        .iter()
        .filter_map(|r| {
            Some(Day {
                date: NaiveDate::parse_from_str(r["day"].as_str()?, "%Y-%m-%d").ok()?,
                events: num(&r["events"]),
                page_views: num(&r["page_views"]),
                ticket_sales: num(&r["ticket_sales"]),
                tickets: num(&r["tickets"]),
                revenue: revenue(&r["total"], &r["known"]),
            })
        })
        .collect();
    let unique_users = distinct("users", "");
    let events = events
        .iter()
        .map(|r| {
            let id = r["event_id"].as_str().unwrap_or("");
            EventFigures {
                event_id: id.to_string(),
                interactions: num(&r["interactions"]),
                visitors: distinct("visitors", id),
                page_views: num(&r["page_views"]),
                tickets: num(&r["tickets"]),
                revenue: revenue(&r["total"], &r["known"]),
                buyers: distinct("buyers", id),
            }
        })
        .collect();
    // A step's users over every ticketed event (and none): its sketches
    // merged across event ids, in the query.
    let funnel = FUNNEL
        .iter()
        .map(|(step, name)| {
            let users = reached
                .iter()
                .find(|r| r["step"] == *step)
                .map_or(0.0, |r| num(&r["users"]));
            (name.to_string(), users)
        })
        .collect();
    Ok(Figures {
        now,
        realtime,
        hourly,
        hourly_page_views,
        daily,
        unique_users,
        events,
        funnel,
        organizers,
        filtered: filtered
            .iter()
            .map(|r| {
                let plugin = r["plugin"].as_str().unwrap_or("").to_string();
                (plugin, num(&r["events"]))
            })
            .collect(),
        countries: countries
            .iter()
            .map(|r| {
                let code = r["country"].as_str().unwrap_or("").to_string();
                (code, num(&r["page_views"]))
            })
            .collect(),
        sources: sources
            .into_iter()
            .map(|(mut d, m)| {
                let source = d.pop().unwrap_or_default();
                ((d.pop().unwrap_or_default(), source), m[0])
            })
            .collect(),
        campaigns: firsts(campaigns),
        visit_totals: match visit_totals.first() {
            Some((_, m)) => [m[0], m[1], m[2]],
            None => [0.0; 3],
        },
        entry_pages: with_second(entry_pages),
        exit_pages: with_second(exit_pages),
        devices: firsts(devices),
        pages: with_second(pages),
        event_names: with_second(event_names),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    #[test]
    fn a_read_key_sees_its_organizer_only() {
        let org = Viewer::Organizer("org-1".into());
        let f = Filter::new(&org, None, None, None, today()).unwrap();
        assert_eq!(f.organizer.as_deref(), Some("org-1"));
        assert_eq!(
            Filter::new(&org, Some("org-2"), None, None, today()),
            Err(FilterError::Forbidden("org-1".into()))
        );
        let all = Filter::new(&Viewer::Admin, Some(""), None, None, today()).unwrap();
        assert_eq!(all.organizer, None);
        assert_eq!(all.from, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert_eq!(all.to, today());
    }

    #[test]
    fn ranges_and_organizers_are_checked_and_quoted() {
        let admin = Viewer::Admin;
        let bad = Filter::new(
            &admin,
            None,
            Some("2026-12-01"),
            Some("2026-11-01"),
            today(),
        );
        assert!(matches!(bad, Err(FilterError::Invalid(m)) if m.contains("is after")));
        let bad = Filter::new(&admin, None, Some("yesterday"), None, today());
        assert!(matches!(bad, Err(FilterError::Invalid(m)) if m.contains("2026-11-28")));
        let long = Filter::new(&admin, None, Some("2024-01-01"), None, today());
        assert!(matches!(long, Err(FilterError::Invalid(m)) if m.contains("366")));
        let f = Filter::new(&admin, Some(r"o' OR 1=1 --\"), None, None, today()).unwrap();
        assert_eq!(f.organizer_sql(), " AND organizer_id = {organizer:String}");
        assert!(
            f.params()
                .contains(&("organizer".into(), r"o' OR 1=1 --\".into()))
        );
    }

    #[test]
    fn the_admin_token_and_read_keys_sign_in() {
        let config = Config {
            admin_token: Some("admin-secret".into()),
            read_keys: vec!["reader-key-0123456@org-1".into()],
            ..Config::default()
        };
        assert_eq!(authenticate(&config, "admin-secret"), Some(Viewer::Admin));
        assert_eq!(
            authenticate(&config, " reader-key-0123456 "),
            Some(Viewer::Organizer("org-1".into()))
        );
        for wrong in ["", "admin", "reader-key-0123456@org-1", "org-1"] {
            assert_eq!(authenticate(&config, wrong), None, "{wrong}");
        }
    }
}
