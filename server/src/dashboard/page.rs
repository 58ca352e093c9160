//! The dashboard's HTML: the sign-in form, and the page of figures drawn
//! with [`crate::charts`]. The one script sorts the table and refreshes the
//! realtime panel; everything else is drawn here.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};

use super::{Figures, Filter, REALTIME_MINUTES, Viewer};
use crate::charts::{self, Series, TimeChart, Unit, esc, format_value};

fn shell(title: &str, header: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{}</title><style>{}</style></head>
<body><header><h1>Bilten Analytics</h1>{header}</header><main>{body}</main></body></html>
"#,
        esc(title),
        charts::STYLE
    )
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    shell(
        "Sign in · Bilten Analytics",
        "",
        &format!(
            r#"<section class="card" style="max-width:420px;margin:3em auto">
<h2>Sign in to the dashboard</h2>
<p style="color:var(--muted);font-size:.9em">With the admin token (every organizer) or an organizer's read key.</p>
{error}
<form method="post" action="/dashboard/login" class="filters">
<label>Token or read key <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button class="primary" type="submit">Sign in</button>
</form></section>"#
        ),
    )
}

/// A page that only says what went wrong (a filter refused, the store
/// unreachable), with the way back.
pub fn problem(viewer: &Viewer, message: &str) -> String {
    shell(
        "Bilten Analytics",
        &who(viewer),
        &format!(
            r#"<section class="card"><p class="error" role="alert">{}</p><p><a href="/dashboard">Back to the dashboard</a></p></section>"#,
            esc(message)
        ),
    )
}

fn who(viewer: &Viewer) -> String {
    format!(
        r#"<span class="who">Signed in as {}</span><form method="post" action="/dashboard/logout"><button class="primary" type="submit" id="sign-out">Sign out</button></form>"#,
        esc(&viewer.describe())
    )
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

fn kpi(id: &str, label: &str, v: f64, unit: Unit) -> String {
    format!(
        r#"<div class="kpi" data-kpi="{id}" data-v="{v}"><div class="label">{}</div><div class="value">{}</div></div>"#,
        esc(label),
        esc(&format_value(v, unit))
    )
}

/// The whole page for `filter`.
pub fn dashboard(viewer: &Viewer, filter: &Filter, f: &Figures) -> String {
    let mut body = String::new();
    // Filters: a GET form (no secret in it), organizer and dates.
    let _ = write!(
        body,
        r#"<form class="filters card" method="get" action="/dashboard" id="filters"><label>Organizer <select name="organizer"{}>"#,
        if matches!(viewer, Viewer::Organizer(_)) {
            " disabled"
        } else {
            ""
        }
    );
    if matches!(viewer, Viewer::Admin) {
        let _ = write!(
            body,
            r#"<option value=""{}>All organizers</option>"#,
            if filter.organizer.is_none() {
                " selected"
            } else {
                ""
            }
        );
    }
    for org in &f.organizers {
        let selected = filter.organizer.as_deref() == Some(org.as_str());
        let _ = write!(
            body,
            r#"<option value="{}"{}>{}</option>"#,
            esc(org),
            if selected { " selected" } else { "" },
            esc(org)
        );
    }
    let _ = write!(
        body,
        r#"</select></label><label>From <input type="date" name="from" value="{}"></label><label>To <input type="date" name="to" value="{}"></label><button class="primary" type="submit">Apply</button><span class="who">Dates in UTC · {} to {}</span></form>"#,
        filter.from,
        filter.to,
        filter.from.format("%-d %b %Y"),
        filter.to.format("%-d %b %Y"),
    );

    let sum = |pick: fn(&super::Day) -> f64| f.daily.iter().map(pick).sum::<f64>();
    body.push_str(r#"<section class="kpis">"#);
    for (id, label, v, unit) in [
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
        ("revenue", "Revenue", sum(|d| d.revenue), Unit::Money),
    ] {
        body.push_str(&kpi(id, label, v, unit));
    }
    body.push_str("</section>");

    body.push_str(&realtime_panel(f.now, &f.realtime));

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
    body.push_str(r#"<div class="grid2">"#);
    body.push_str(&half(
        (
            "traffic",
            "events",
            "Traffic: events",
            Unit::Count("events"),
        ),
        traffic,
        f.hourly.clone(),
        "No events in this period.",
    ));
    body.push_str(&half(
        (
            "page_views",
            "page_views",
            "Traffic: page views",
            Unit::Count("page views"),
        ),
        traffic,
        f.hourly_page_views.clone(),
        "No page views in this period.",
    ));
    body.push_str(&half(
        ("revenue", "revenue", "Sales: revenue", Unit::Money),
        86400,
        daily(|d| d.revenue),
        "No sales in this period.",
    ));
    body.push_str(&half(
        (
            "tickets",
            "tickets",
            "Sales: tickets sold",
            Unit::Count("tickets"),
        ),
        86400,
        daily(|d| d.tickets),
        "No tickets sold in this period.",
    ));
    body.push_str("</div>");

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
    body.push_str(&charts::category_bars(
        "funnel",
        "Purchase funnel: users reaching each step",
        Unit::Count("users"),
        &steps,
        "No funnel steps in this period.",
    ));

    body.push_str(&performance_table(f));
    body.push_str(SCRIPT);
    shell("Dashboard · Bilten Analytics", &who(viewer), &body)
}

fn performance_table(f: &Figures) -> String {
    let mut out = String::from(
        r#"<section class="card" id="performance"><h2>Event performance <span class="sub" style="font-weight:400;color:var(--muted)">· top 200 by revenue; click a column to sort</span></h2>"#,
    );
    if f.events.is_empty() {
        out.push_str(r#"<p class="empty">No ticketed events in this period.</p></section>"#);
        return out;
    }
    out.push_str(r#"<table class="sortable"><thead><tr>"#);
    let columns = [
        ("Event", false),
        ("Interactions", true),
        ("Visitors", true),
        ("Page views", true),
        ("Tickets", true),
        ("Revenue", true),
        ("Conversion", true),
    ];
    for (name, numeric) in columns {
        let _ = write!(
            out,
            r#"<th{}><button type="button">{name}</button></th>"#,
            if numeric { r#" class="num""# } else { "" }
        );
    }
    out.push_str("</tr></thead><tbody>");
    for e in &f.events {
        let cell = |v: f64, unit: Unit| {
            format!(
                r#"<td class="num" data-v="{v}">{}</td>"#,
                esc(&format_value(v, unit))
            )
        };
        let _ = write!(
            out,
            r#"<tr data-event="{}"><td data-v="{}">{}</td>{}{}{}{}{}{}</tr>"#,
            esc(&e.event_id),
            esc(&e.event_id),
            esc(&e.event_id),
            cell(e.interactions, Unit::Count("")),
            cell(e.visitors, Unit::Count("")),
            cell(e.page_views, Unit::Count("")),
            cell(e.tickets, Unit::Count("")),
            cell(e.revenue, Unit::Money),
            cell(e.conversion(), Unit::Percent),
        );
    }
    out.push_str("</tbody></table></section>");
    out
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
