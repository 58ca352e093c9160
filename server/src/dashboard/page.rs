//! The dashboard's HTML: the sign-in form, and the page of figures drawn
//! with [`crate::charts`]. The one script sorts the table and refreshes the
//! realtime panel; everything else is drawn here. Markup is `maud`'s, which
//! escapes every value it is given; the charts' SVG comes in as markup.

use chrono::{DateTime, Duration, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Figures, Filter, REALTIME_MINUTES, Revenue, Viewer, add_revenue};
use crate::charts::{self, Series, TimeChart, Unit, format_value};

fn shell(title: &str, header: Markup, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) }
                style { (PreEscaped(charts::STYLE)) }
            }
            body {
                header { h1 { "Bilten Analytics" } (header) }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn login(error: Option<&str>) -> String {
    shell(
        "Sign in · Bilten Analytics",
        html! {},
        html! {
            section.card style="max-width:420px;margin:3em auto" {
                h2 { "Sign in to the dashboard" }
                p style="color:var(--muted);font-size:.9em" {
                    "With the admin token (every organizer) or an organizer's read key."
                }
                @if let Some(e) = error {
                    p.error role="alert" { (e) }
                }
                form.filters method="post" action="/dashboard/login" {
                    label {
                        "Token or read key "
                        input type="password" name="token" autocomplete="current-password" required autofocus;
                    }
                    " "
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// A page that only says what went wrong (a filter refused, the store
/// unreachable), with the way back.
pub fn problem(viewer: &Viewer, message: &str) -> String {
    shell(
        "Bilten Analytics",
        who(viewer),
        html! {
            section.card {
                p.error role="alert" { (message) }
                p { a href="/dashboard" { "Back to the dashboard" } }
            }
        },
    )
}

fn who(viewer: &Viewer) -> Markup {
    html! {
        span.who { "Signed in as " (viewer.describe()) }
        form method="post" action="/dashboard/logout" {
            button.primary type="submit" id="sign-out" { "Sign out" }
        }
    }
}

/// The realtime panel: events and active users per five minutes, the last
/// two hours, buckets without events at zero.
pub fn realtime_panel(now: DateTime<Utc>, points: &[(DateTime<Utc>, f64, f64)]) -> String {
    let five = 300;
    let end = DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(five), 0)
        .expect("a time in range");
    let from = end - Duration::minutes(REALTIME_MINUTES);
    let to = end + Duration::seconds(five);
    let mut events = Vec::new();
    let mut users = Vec::new();
    let mut t = from;
    while t < to {
        let found = points.iter().find(|p| p.0 == t);
        events.push((t, found.map_or(0.0, |p| p.1)));
        users.push((t, found.map_or(0.0, |p| p.2)));
        t += Duration::seconds(five);
    }
    TimeChart {
        id: "realtime",
        title: "Realtime: the last two hours",
        unit: Unit::Count("events and users"),
        currency: "",
        from,
        to,
        bucket_secs: five,
        series: vec![
            Series {
                name: "events".into(),
                color: "#3b6ea5",
                points: events,
            },
            Series {
                name: "active users".into(),
                color: "#e07b39",
                points: users,
            },
        ],
        empty: "No events in the last two hours.",
        width: charts::FULL,
    }
    .svg()
}

/// A channel as the sources panel names it ('': a visit of events only,
/// no page view to read an origin from).
fn channel_label(channel: &str) -> String {
    match channel {
        "" => "Unknown (no page view)".to_string(),
        c => {
            let mut chars = c.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
    }
}

fn kpi(id: &str, label: &str, v: f64, unit: Unit) -> Markup {
    html! {
        div.kpi data-kpi=(id) data-v=(v) {
            div.label { (label) }
            div.value { (format_value(v, unit)) }
        }
    }
}

/// Colours of the revenue chart's currencies, in code order.
const PALETTE: &[&str] = &[
    "#3b6ea5", "#e07b39", "#4f9a5b", "#8e5ea2", "#c0392b", "#7f8c8d",
];

/// A currency's name on the page: its code, or what '' means.
fn currency_name(code: &str) -> &str {
    match code {
        "" => "currency unknown",
        code => code,
    }
}

/// Amounts, one line per currency (`12.50 EUR`), each with its figure in
/// `data-*`; `empty` when there are none.
fn amounts(revenue: &Revenue, empty: &str) -> Markup {
    html! {
        @if revenue.is_empty() {
            span.amount { (empty) }
        }
        @for (currency, amount) in revenue {
            span.amount data-currency=(currency) data-v=(amount) {
                (format_value(*amount, Unit::Money)) " " (currency_name(currency))
            }
        }
    }
}

/// The revenue tile: one line per currency, never one sum across them.
fn revenue_kpi(total: &Revenue) -> Markup {
    html! {
        div.kpi data-kpi="revenue" {
            div.label { "Revenue" }
            div.value { (amounts(total, "No sales")) }
        }
    }
}

/// The whole page for `filter`.
pub fn dashboard(viewer: &Viewer, filter: &Filter, f: &Figures) -> String {
    let sum = |pick: fn(&super::Day) -> f64| f.daily.iter().map(pick).sum::<f64>();
    let revenue = f
        .daily
        .iter()
        .fold(Revenue::new(), |total, d| add_revenue(total, &d.revenue));
    // The currency with the most revenue: what the table sorts revenue by.
    let main_currency = revenue
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(c, _)| c.clone());
    let kpis = [
        ("events", "Events", sum(|d| d.events), Unit::Count("events")),
        (
            "users",
            "Unique users",
            f.unique_users,
            Unit::Count("users"),
        ),
        (
            "page_views",
            "Page views",
            sum(|d| d.page_views),
            Unit::Count("page views"),
        ),
        (
            "orders",
            "Orders",
            sum(|d| d.ticket_sales),
            Unit::Count("orders"),
        ),
        (
            "tickets",
            "Tickets sold",
            sum(|d| d.tickets),
            Unit::Count("tickets"),
        ),
        ("visits", "Visits", f.visit_totals[0], Unit::Count("visits")),
        (
            "bounce_rate",
            "Bounce rate",
            f.visit_totals[1],
            Unit::Percent,
        ),
        (
            "visit_duration",
            "Visit duration (average)",
            f.visit_totals[2],
            Unit::Seconds,
        ),
    ];

    // The four charts side by side: one series each, over the filter's range.
    let (start, end) = (filter.start(), filter.end());
    let half = |(id, series, title, unit): (&str, &str, &str, Unit),
                bucket_secs: i64,
                points: Vec<(DateTime<Utc>, f64)>,
                empty: &str| {
        TimeChart {
            id,
            title,
            unit,
            currency: "in the sales' currency",
            from: start,
            to: end,
            bucket_secs,
            series: vec![Series {
                name: series.into(),
                color: "#3b6ea5",
                points,
            }],
            empty,
            width: charts::HALF,
        }
        .svg()
    };
    let daily = |pick: fn(&super::Day) -> f64| -> Vec<(DateTime<Utc>, f64)> {
        f.daily
            .iter()
            .map(|d| {
                let t = d.date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                (t, pick(d))
            })
            .collect()
    };
    let traffic = filter.traffic_bucket_secs();
    let charts = [
        half(
            (
                "traffic",
                "events",
                "Traffic: events",
                Unit::Count("events"),
            ),
            traffic,
            f.hourly.clone(),
            "No events in this period.",
        ),
        half(
            (
                "page_views",
                "page_views",
                "Traffic: page views",
                Unit::Count("page views"),
            ),
            traffic,
            f.hourly_page_views.clone(),
            "No page views in this period.",
        ),
        revenue_chart(f, start, end, &revenue),
        half(
            (
                "tickets",
                "tickets",
                "Sales: tickets sold",
                Unit::Count("tickets"),
            ),
            86400,
            daily(|d| d.tickets),
            "No tickets sold in this period.",
        ),
    ];

    // The funnel, with the share of the step before.
    let steps: Vec<(String, f64, String)> = f
        .funnel
        .iter()
        .enumerate()
        .map(|(i, (name, users))| {
            let note = match i {
                0 => String::new(),
                _ => {
                    let before = f.funnel[i - 1].1;
                    match before > 0.0 {
                        true => format!(" · {:.1} % of the step before", users / before * 100.0),
                        false => " · no one at the step before".into(),
                    }
                }
            };
            (name.clone(), *users, note)
        })
        .collect();
    let funnel = charts::category_bars(
        charts::FULL,
        "funnel",
        "Purchase funnel: users reaching each step",
        Unit::Count("users"),
        &steps,
        "No funnel steps in this period.",
    );

    // What the plugins filtered out (bots, …): kept out of every figure
    // above, shown so nobody wonders where the traffic went.
    let filtered_bars: Vec<(String, f64, String)> = f
        .filtered
        .iter()
        .map(|(plugin, n)| (plugin.clone(), *n, String::new()))
        .collect();
    let filtered = charts::category_bars(
        charts::FULL,
        "filtered",
        "Filtered out: events dropped by plugins",
        Unit::Count("events"),
        &filtered_bars,
        "No events were filtered out in this period.",
    );

    let country_bars: Vec<(String, f64, String)> = f
        .countries
        .iter()
        .map(|(code, n)| {
            let name = match code.as_str() {
                "" => "Unknown".to_string(),
                code => code.to_string(),
            };
            (name, *n, String::new())
        })
        .collect();
    let countries = charts::category_bars(
        charts::HALF,
        "countries",
        "Countries: page views (the 10 with the most)",
        Unit::Count("page views"),
        &country_bars,
        "No page views in this period.",
    );

    let source_bars: Vec<(String, f64, String)> = f
        .sources
        .iter()
        .map(|((channel, source), n)| {
            let mut label = channel_label(channel);
            if !source.is_empty() {
                label = format!("{label} · {source}");
            }
            (label, *n, String::new())
        })
        .collect();
    let sources = charts::category_bars(
        charts::HALF,
        "sources",
        "Sources: visits by channel and source (the 10 with the most)",
        Unit::Count("visits"),
        &source_bars,
        "No visits in this period.",
    );
    let campaign_bars: Vec<(String, f64, String)> = f
        .campaigns
        .iter()
        .map(|(c, n)| (c.clone(), *n, String::new()))
        .collect();
    let campaigns = charts::category_bars(
        charts::HALF,
        "campaigns",
        "Campaigns: visits by utm_campaign (the 10 with the most)",
        Unit::Count("visits"),
        &campaign_bars,
        "No visits came from a campaign (utm_campaign) in this period.",
    );

    let entry_bars = bars(
        f.entry_pages
            .iter()
            .map(|(page, n, bounce)| (page.as_str(), *n, format!(" · {bounce:.0} % bounced"))),
        "Unknown (no page view)",
    );
    let entry_pages = charts::category_bars(
        charts::HALF,
        "entry_pages",
        "Entry pages: visits by their first page (the 10 with the most)",
        Unit::Count("visits"),
        &entry_bars,
        "No visits in this period.",
    );
    let visitors = |v: f64| match v.round() as i64 {
        1 => " · 1 visitor".to_string(),
        n => format!(" · {} visitors", charts::group(n)),
    };
    let exit_bars = bars(
        f.exit_pages
            .iter()
            .map(|(page, n, v)| (page.as_str(), *n, visitors(*v))),
        "Unknown (no page view)",
    );
    let exit_pages = charts::category_bars(
        charts::HALF,
        "exit_pages",
        "Exit pages: visits by their last page (the 10 with the most)",
        Unit::Count("visits"),
        &exit_bars,
        "No visits in this period.",
    );
    let device_bars = bars(
        f.devices
            .iter()
            .map(|(d, n)| (d.as_str(), *n, String::new())),
        "Unknown",
    );
    let devices = charts::category_bars(
        charts::HALF,
        "devices",
        "Devices: visits by the device's kind",
        Unit::Count("visits"),
        &device_bars,
        "No visits in this period.",
    );
    let page_bars = bars(
        f.pages
            .iter()
            .map(|(p, n, v)| (p.as_str(), *n, visitors(*v))),
        "Unknown (no path)",
    );
    let pages = charts::category_bars(
        charts::HALF,
        "pages",
        "Top pages: page views by page (the 10 with the most)",
        Unit::Count("page views"),
        &page_bars,
        "No page views in this period.",
    );
    let name_bars = bars(
        f.event_names
            .iter()
            .map(|(e, n, v)| (e.as_str(), *n, visitors(*v))),
        "Unknown",
    );
    let event_names = charts::category_bars(
        charts::HALF,
        "event_names",
        "Events by name: events by their type (the 10 sent most)",
        Unit::Count("events"),
        &name_bars,
        "No events in this period.",
    );

    let admin = matches!(viewer, Viewer::Admin);
    let body = html! {
        // Filters: a GET form (no secret in it), organizer and dates.
        form.filters.card method="get" action="/dashboard" id="filters" {
            label {
                "Organizer "
                select name="organizer" disabled[!admin] {
                    @if admin {
                        option value="" selected[filter.organizer.is_none()] { "All organizers" }
                    }
                    @for org in &f.organizers {
                        option value=(org) selected[filter.organizer.as_deref() == Some(org.as_str())] { (org) }
                    }
                }
            }
            label { "From " input type="date" name="from" value=(filter.from); }
            label { "To " input type="date" name="to" value=(filter.to); }
            button.primary type="submit" { "Apply" }
            span.who {
                "Dates in UTC · " (filter.from.format("%-d %b %Y")) " to " (filter.to.format("%-d %b %Y"))
            }
        }
        section.kpis {
            @for (id, label, v, unit) in kpis {
                (kpi(id, label, v, unit))
            }
            (revenue_kpi(&revenue))
        }
        (PreEscaped(realtime_panel(f.now, &f.realtime)))
        div.grid2 {
            @for chart in &charts {
                (PreEscaped(chart))
            }
        }
        (PreEscaped(funnel))
        div.grid2 {
            (PreEscaped(sources))
            (PreEscaped(campaigns))
        }
        div.grid2 {
            (PreEscaped(entry_pages))
            (PreEscaped(exit_pages))
        }
        div.grid2 {
            (PreEscaped(pages))
            (PreEscaped(event_names))
        }
        div.grid2 {
            (PreEscaped(devices))
            (PreEscaped(countries))
        }
        (PreEscaped(filtered))
        (performance_table(f, main_currency.as_deref()))
        (PreEscaped(SCRIPT))
    };
    shell("Dashboard · Bilten Analytics", who(viewer), body)
}

/// A panel's bars: each row's label (`unknown` when empty), its value, and
/// what follows the value.
fn bars<'a>(
    rows: impl Iterator<Item = (&'a str, f64, String)>,
    unknown: &str,
) -> Vec<(String, f64, String)> {
    rows.map(|(label, n, after)| {
        let label = if label.is_empty() { unknown } else { label };
        (label.to_string(), n, after)
    })
    .collect()
}

/// Revenue per day, a line per currency (bars when there is one).
fn revenue_chart(f: &Figures, from: DateTime<Utc>, to: DateTime<Utc>, total: &Revenue) -> String {
    // Every day of the range, at zero without sales: lines go through the
    // days between sales instead of jumping over them.
    let mut days = Vec::new();
    let mut day = from;
    while day < to {
        days.push(day);
        day += Duration::days(1);
    }
    let series = total
        .keys()
        .enumerate()
        .map(|(i, currency)| Series {
            name: currency_name(currency).to_string(),
            color: PALETTE[i % PALETTE.len()],
            points: days
                .iter()
                .map(|t| {
                    let amount = f
                        .daily
                        .iter()
                        .find(|d| d.date == t.date_naive())
                        .and_then(|d| d.revenue.get(currency));
                    (*t, amount.copied().unwrap_or(0.0))
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    let currency = match total.keys().collect::<Vec<_>>().as_slice() {
        [one] => currency_name(one).to_string(),
        _ => "in each sale's currency".to_string(),
    };
    TimeChart {
        id: "revenue",
        title: "Sales: revenue per currency",
        unit: Unit::Money,
        currency: &currency,
        from,
        to,
        bucket_secs: 86400,
        series,
        empty: "No sales in this period.",
        width: charts::HALF,
    }
    .svg()
}

/// `main_currency`: the one revenue sorts by (amounts in others cannot be
/// compared with it).
fn performance_table(f: &Figures, main_currency: Option<&str>) -> Markup {
    let columns = [
        ("Event", false),
        ("Interactions", true),
        ("Visitors", true),
        ("Page views", true),
        ("Tickets", true),
        ("Revenue", true),
        ("Conversion", true),
    ];
    let cell = |v: f64, unit: Unit| {
        html! { td.num data-v=(v) { (format_value(v, unit)) } }
    };
    html! {
        section.card id="performance" {
            h2 {
                "Event performance "
                span.sub style="font-weight:400;color:var(--muted)" {
                    "· top 200 by tickets sold; click a column to sort"
                    @if let Some(c) = main_currency {
                        " (revenue sorts by " (currency_name(c)) ")"
                    }
                }
            }
            @if f.events.is_empty() {
                p.empty { "No ticketed events in this period." }
            } @else {
                table.sortable {
                    thead {
                        tr {
                            @for (name, numeric) in columns {
                                th class=[numeric.then_some("num")] { button type="button" { (name) } }
                            }
                        }
                    }
                    tbody {
                        @for e in &f.events {
                            tr data-event=(e.event_id) {
                                td data-v=(e.event_id) { (e.event_id) }
                                (cell(e.interactions, Unit::Count("")))
                                (cell(e.visitors, Unit::Count("")))
                                (cell(e.page_views, Unit::Count("")))
                                (cell(e.tickets, Unit::Count("")))
                                td.num data-v=(main_currency.and_then(|c| e.revenue.get(c)).copied().unwrap_or(0.0)) {
                                    (amounts(&e.revenue, "–"))
                                }
                                (cell(e.conversion(), Unit::Percent))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sorting by a column (numbers as numbers), and the realtime panel
/// fetched again every 30 seconds with the page's own filter.
const SCRIPT: &str = r#"<script>
for (const table of document.querySelectorAll('table.sortable')) {
  table.querySelectorAll('th').forEach((th, col) => th.querySelector('button').addEventListener('click', () => {
    const down = th.getAttribute('aria-sort') !== 'descending';
    table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
    const numeric = th.classList.contains('num');
    const rows = [...table.tBodies[0].rows];
    const key = r => r.cells[col].dataset.v;
    rows.sort((a, b) => {
      const c = numeric ? key(a) - key(b) : key(a).localeCompare(key(b));
      return down ? -c : c;
    });
    rows.forEach(r => table.tBodies[0].appendChild(r));
  }));
}
setInterval(async () => {
  const r = await fetch('/dashboard/realtime' + location.search, { credentials: 'same-origin' });
  if (r.ok) document.getElementById('realtime').outerHTML = await r.text();
}, 30000);
</script>"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::{Day, EventFigures};
    use chrono::{NaiveDate, TimeZone};

    /// Every value that reaches a page (an organizer id, an event id, a
    /// sign-in error) is text in it, never markup.
    #[test]
    fn values_are_escaped_on_every_page() {
        let hostile = "o'<b>&\"x";
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 18, 0, 0).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let admin = Viewer::Admin;
        let filter = Filter::new(&admin, Some(hostile), Some("2026-11-20"), None, today).unwrap();
        let f = Figures {
            now,
            realtime: vec![],
            hourly: vec![],
            hourly_page_views: vec![],
            daily: vec![Day {
                date: NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(),
                events: 10.0,
                page_views: 5.0,
                ticket_sales: 1.0,
                tickets: 2.0,
                revenue: [(hostile.to_string(), 35.0)].into(),
            }],
            unique_users: 3.0,
            events: vec![EventFigures {
                event_id: format!("evt-{hostile}"),
                interactions: 10.0,
                visitors: 4.0,
                page_views: 3.0,
                tickets: 2.0,
                revenue: [(hostile.to_string(), 35.0)].into(),
                buyers: 1.0,
            }],
            funnel: vec![],
            organizers: vec!["org-a".into(), hostile.into()],
            filtered: vec![(hostile.into(), 3.0)],
            countries: vec![("DE".into(), 4.0), (String::new(), 1.0)],
            sources: vec![(("search".into(), "Google".into()), 3.0)],
            campaigns: vec![("spring_sale".into(), 2.0)],
            visit_totals: [3.0, 33.3, 134.0],
            entry_pages: vec![("/e/1".into(), 2.0, 50.0)],
            exit_pages: vec![("/e/1/checkout".into(), 2.0, 1.0)],
            devices: vec![("Mobile".into(), 2.0), ("".into(), 1.0)],
            pages: vec![(hostile.into(), 3.0, 2.0)],
            event_names: vec![(hostile.into(), 1.0, 1.0)],
        };
        let escaped = "o&#39;&lt;b&gt;&amp;&quot;x";
        let pages = [
            dashboard(&admin, &filter, &f),
            dashboard(&Viewer::Organizer(hostile.into()), &filter, &f),
            problem(&Viewer::Organizer(hostile.into()), hostile),
            login(Some(hostile)),
        ];
        for page in pages {
            assert!(!page.contains("<b>"), "{page}");
            // maud writes `'` as is: text, not markup, outside a tag.
            assert!(
                page.contains(&escaped.replace("&#39;", "'")) || page.contains(escaped),
                "{page}"
            );
        }
        // What the plugins filtered out is drawn, its plugin's name as text.
        let page = dashboard(&admin, &filter, &f);
        let chart = &page[page.find("id=\"filtered\"").unwrap()..];
        assert!(chart.contains("data-v=\"3\""), "{chart}");
        // Countries by code, the unknown ones named.
        let chart = &page[page.find("id=\"countries\"").unwrap()..];
        assert!(chart.contains("DE") && chart.contains("Unknown"), "{chart}");
        // A currency code is text too, in the tile, the chart and the table.
        assert!(!dashboard(&admin, &filter, &f).contains(&format!("data-currency=\"{hostile}")));
        // The chosen organizer stays selected, its value escaped.
        assert!(
            dashboard(&admin, &filter, &f)
                .contains("<option value=\"o'&lt;b&gt;&amp;&quot;x\" selected>")
        );
    }

    /// Revenue in two currencies is shown apart in the tile, the chart and
    /// the table, never as one sum; an amount of unknown currency is named.
    #[test]
    fn revenue_is_shown_per_currency_never_summed_across() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let admin = Viewer::Admin;
        let filter = Filter::new(&admin, None, Some("2026-11-20"), None, today).unwrap();
        let day = |d: u32, revenue: &[(&str, f64)]| Day {
            date: NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
            events: 1.0,
            page_views: 0.0,
            ticket_sales: 1.0,
            tickets: 1.0,
            revenue: revenue.iter().map(|(c, a)| (c.to_string(), *a)).collect(),
        };
        let f = Figures {
            now: Utc.with_ymd_and_hms(2026, 12, 4, 18, 0, 0).unwrap(),
            realtime: vec![],
            hourly: vec![],
            hourly_page_views: vec![],
            daily: vec![
                day(21, &[("EUR", 1000.0), ("USD", 5.5)]),
                day(22, &[("EUR", 234.5), ("", 2.0)]),
            ],
            unique_users: 1.0,
            events: vec![EventFigures {
                event_id: "e-1".into(),
                interactions: 1.0,
                visitors: 1.0,
                page_views: 0.0,
                tickets: 2.0,
                revenue: [("EUR".to_string(), 1234.5), ("USD".to_string(), 5.5)].into(),
                buyers: 1.0,
            }],
            funnel: vec![],
            organizers: vec![],
            filtered: vec![],
            countries: vec![],
            sources: vec![],
            campaigns: vec![],
            visit_totals: [0.0; 3],
            entry_pages: vec![],
            exit_pages: vec![],
            devices: vec![],
            pages: vec![],
            event_names: vec![],
        };
        let page = dashboard(&admin, &filter, &f);
        let tile = &page[page.find("data-kpi=\"revenue\"").unwrap()..];
        let tile = &tile[..tile.find("</div></div>").unwrap()];
        assert!(tile.contains(">1,234.50 EUR<"), "{tile}");
        assert!(tile.contains(">5.50 USD<"), "{tile}");
        assert!(tile.contains(">2.00 currency unknown<"), "{tile}");
        assert!(
            !tile.contains("1,242.00") && !tile.contains("1,240.00"),
            "{tile}"
        );
        // The chart has a series per currency.
        let chart = &page[page.find("id=\"revenue\"").unwrap()..];
        for name in ["EUR", "USD", "currency unknown"] {
            assert!(chart.contains(name), "{name}");
        }
        // The table sorts revenue by the main currency, and shows both.
        assert!(page.contains("(revenue sorts by EUR)"));
        assert!(page.contains("data-v=\"1234.5\""));
        // No sales: the tile says so.
        let none = Figures {
            daily: vec![],
            events: vec![],
            ..f
        };
        assert!(dashboard(&admin, &filter, &none).contains(">No sales<"));
    }
}
