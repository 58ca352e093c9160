//! `/dashboard` over HTTP, on the real engine: signing in and out, the
//! session cookie, the figures against the views' own numbers, a read key
//! held to its organizer, hostile filters. `dashboard_in_a_real_browser`
//! drives it in headless Chromium with Playwright.

mod common;

use chrono::{Duration, Utc};
use common::{ADMIN, TestServer, no_redirects as client, sign_in};
use serde_json::{Value, json};

const READ_KEY: &str = "read-key-of-org-a-0123";

async fn start() -> TestServer {
    TestServer::start(|c| {
        c.read_keys = vec![format!("{READ_KEY}@org-a").into()];
    })
    .await
}

/// Two organizers: org-a with a funnel, page views and two sales (151.00,
/// 3 tickets), org-b with one sale (40.00, 4 tickets).
async fn with_sales(s: &TestServer) {
    let at = (Utc::now() - Duration::minutes(10)).to_rfc3339();
    let mut events = Vec::new();
    for (step, users) in [
        ("page_view", 4),
        ("view_event", 3),
        ("add_to_cart", 2),
        ("checkout", 2),
        ("purchase", 1),
    ] {
        for u in 0..users {
            events.push(json!({"event_type": step, "organizer_id": "org-a", "user_id": format!("u{u}"), "event_id": "evt-1", "timestamp": at}));
        }
    }
    events.push(json!({"event_type": "click", "organizer_id": "org-b", "user_id": "x", "event_id": "evt-9", "timestamp": at}));
    // Three from the US (Google's resolver's address), two from nowhere known.
    let page_views: Vec<Value> = (0..5)
        .map(|i| {
            let mut pv = json!({"organizer_id": "org-a", "url": format!("https://tickets.example/e/{i}"), "user_id": format!("u{i}"), "event_id": "evt-1", "timestamp": at});
            if i < 3 {
                pv["ip"] = json!("8.8.8.8");
            }
            // Two from Google, one from a campaign's newsletter.
            if i < 2 {
                pv["referrer"] = json!("https://www.google.com/");
            }
            if i == 4 {
                pv["url"] = json!("https://tickets.example/e/4?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale");
            }
            pv
        })
        .collect();
    let sales = json!([
        {"event_id": "evt-1", "organizer_id": "org-a", "user_id": "u0", "quantity": 2, "price": "25.50", "currency": "EUR", "timestamp": at},
        {"event_id": "evt-2", "organizer_id": "org-a", "user_id": "u1", "quantity": 1, "price": 100, "currency": "USD", "timestamp": at},
        {"event_id": "evt-9", "organizer_id": "org-b", "user_id": "x", "quantity": 4, "price": "10.00", "currency": "EUR", "timestamp": at},
    ]);
    for (route, body) in [
        ("events", Value::Array(events)),
        ("page-views", Value::Array(page_views)),
        ("ticket-sales", sales),
    ] {
        let (status, reply) = s.post_json(&format!("/v1/{route}"), &body).await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(reply["rejected"], 0, "{reply}");
    }
    s.flush().await;
}

async fn page(s: &TestServer, cookie: Option<&str>, query: &str) -> (u16, String) {
    let mut r = client().get(format!("{}/dashboard{query}", s.base));
    if let Some(cookie) = cookie {
        r = r.header("cookie", cookie);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    (status, r.text().await.unwrap())
}

/// The value a page's element carries in `data-v`, after `marker`.
fn value_after(html: &str, marker: &str) -> f64 {
    let rest = &html[html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"))..];
    let v = rest.split("data-v=\"").nth(1).unwrap();
    v[..v.find('"').unwrap()].parse().unwrap()
}

/// The sum of one series' marks in one chart.
fn panel_sum(html: &str, chart: &str, series: &str) -> f64 {
    let panel = &html[html
        .find(&format!(r#"id="{chart}""#))
        .unwrap_or_else(|| panic!("no chart {chart}"))..];
    let panel = &panel[..panel.find("</figure>").unwrap()];
    panel
        .split(&format!(r#"data-series="{series}" data-t=""#))
        .skip(1)
        .map(|p| {
            // Every mark at a time in the last 90 days, where the axis is.
            let t = chrono::DateTime::parse_from_rfc3339(&p[..p.find('"').unwrap()]).unwrap();
            assert!(
                (Utc::now() - t.with_timezone(&Utc)).num_days() <= 90,
                "{chart}: a mark at {t}"
            );
            let v = p.split("data-v=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].parse::<f64>().unwrap()
        })
        .sum()
}

fn kpi(html: &str, name: &str) -> f64 {
    value_after(html, &format!(r#"data-kpi="{name}""#))
}

/// Amounts by currency in `html` (`data-currency="EUR" data-v="51"`), in
/// the order shown.
fn amounts(html: &str) -> Vec<(String, f64)> {
    html.split(r#"data-currency=""#)
        .skip(1)
        .map(|a| {
            let currency = a[..a.find('"').unwrap()].to_string();
            let v = a.split(r#"data-v=""#).nth(1).unwrap();
            (currency, v[..v.find('"').unwrap()].parse().unwrap())
        })
        .collect()
}

/// The revenue tile's amounts, one per currency.
fn revenue_kpi(html: &str) -> Vec<(String, f64)> {
    let tile = &html[html.find(r#"data-kpi="revenue""#).unwrap()..];
    amounts(&tile[..tile.find("</div></div>").unwrap()])
}

/// A `Map(String, Decimal)` from the views (a JSON object), as amounts.
fn amounts_of(v: &Value) -> Vec<(String, f64)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(c, a)| (c.clone(), number(a)))
        .collect()
}

fn eur_usd(eur: f64, usd: f64) -> Vec<(String, f64)> {
    vec![("EUR".into(), eur), ("USD".into(), usd)]
}

fn number(v: &Value) -> f64 {
    v.to_string().trim_matches('"').parse().unwrap()
}

/// What the views say for one organizer or all (`''`), over the last 30
/// days: the numbers a user checks the page against.
async fn from_views(s: &TestServer, organizer: &str) -> Value {
    let cond = if organizer.is_empty() {
        "1".to_string()
    } else {
        format!("organizer_id = '{organizer}'")
    };
    let range = "date BETWEEN today() - 29 AND today()";
    let daily = &s
        .query(&format!(
            "SELECT sum(events) AS events, sum(page_views) AS page_views, sum(ticket_sales) AS orders, \
             sum(tickets_sold) AS tickets, sumMap(revenue) AS revenue \
             FROM bilten_analytics.organizer_daily_metrics_mv WHERE {range} AND {cond}"
        ))
        .await[0];
    let funnel = s
        .query(&format!(
            "SELECT step, sum(users) AS users FROM bilten_analytics.user_funnel_mv \
             WHERE {range} AND {cond} GROUP BY step"
        ))
        .await;
    let events = s
        .query(&format!(
            "SELECT event_id, sumMap(revenue) AS revenue, sum(tickets_sold) AS tickets \
             FROM bilten_analytics.event_performance_mv WHERE {range} AND {cond} GROUP BY event_id"
        ))
        .await;
    json!({"daily": daily, "funnel": funnel, "events": events})
}

#[tokio::test]
async fn signing_in_shows_the_views_figures_and_a_read_key_sees_its_organizer_only() {
    let s = start().await;
    with_sales(&s).await;

    // Without a session: the form, and no figure.
    let (status, html) = page(&s, None, "").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"action="/dashboard/login""#));
    assert!(!html.contains("data-kpi"));
    let r = client()
        .get(format!("{}/dashboard/realtime", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A wrong token: refused, no cookie.
    let r = client()
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("neither the admin token"));

    // The admin: every organizer.
    let (cookie, line) = sign_in(&s, ADMIN).await;
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(line.contains(attribute), "{line}");
    }
    assert!(!line.contains("Secure"), "no TLS here: {line}");
    assert!(!line.contains(ADMIN), "the token is not the cookie");
    let (status, html) = page(&s, Some(&cookie), "").await;
    assert_eq!(status, 200, "{html}");
    let views = from_views(&s, "").await;
    let d = &views["daily"];
    assert_eq!(
        amounts_of(&d["revenue"]),
        eur_usd(91.0, 100.0),
        "the views themselves: {views}"
    );
    for (name, key) in [
        ("events", "events"),
        ("page_views", "page_views"),
        ("orders", "orders"),
        ("tickets", "tickets"),
    ] {
        assert_eq!(kpi(&html, name), number(&d[key]), "{name}: {views}");
    }
    // Revenue per currency, never one sum of euros and dollars.
    assert_eq!(revenue_kpi(&html), amounts_of(&d["revenue"]));
    assert!(!html.contains("191.00"), "a sum across currencies is shown");
    assert_eq!(kpi(&html, "tickets"), 7.0);
    // Distinct users over the range, as the raw rows count them.
    let raw = s
        .query("SELECT uniqExact(user_id) AS n FROM bilten_analytics.events")
        .await;
    assert_eq!(kpi(&html, "users"), number(&raw[0]["n"]));
    assert_eq!(kpi(&html, "users"), 5.0);
    // The funnel: each step's users, as the view counts them.
    for (step, label) in bilten_analytics::dashboard::FUNNEL {
        let want = views["funnel"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["step"] == step)
            .map_or(0.0, |r| number(&r["users"]));
        assert_eq!(
            value_after(&html, &format!(r#"data-series="{label}""#)),
            want,
            "{step}"
        );
    }
    assert_eq!(value_after(&html, r#"data-series="Purchase""#), 1.0);
    assert!(
        html.contains("50.0 % of the step before"),
        "purchase ÷ checkout"
    );
    // Event performance: one row per ticketed event, its revenue the view's.
    for e in views["events"].as_array().unwrap() {
        let id = e["event_id"].as_str().unwrap();
        let row = &html[html.find(&format!(r#"<tr data-event="{id}""#)).unwrap()..];
        let cells: Vec<f64> = row[..row.find("</tr>").unwrap()]
            .split(r#"class="num" data-v=""#)
            .skip(1)
            .map(|c| c[..c.find('"').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(cells[3], number(&e["tickets"]), "{id}");
        let visitors = match id {
            "evt-1" => 4.0,
            "evt-9" => 1.0,
            _ => 0.0,
        };
        assert_eq!(cells[1], visitors, "{id}: distinct users of its events");
        let row = &row[..row.find("</tr>").unwrap()];
        assert_eq!(amounts(row), amounts_of(&e["revenue"]), "{id}");
    }
    // The realtime panel has the events of ten minutes ago, and the page
    // views (counted as they start: sql/0023_engagement.sql).
    assert_eq!(
        panel_sum(&html, "realtime", "events"),
        18.0,
        "twelve org-a events, one org-b, five page views"
    );
    // Per hour: the events, and the page views (from page_views' hourly
    // projection).
    assert_eq!(panel_sum(&html, "traffic", "events"), 13.0);
    assert_eq!(panel_sum(&html, "page_views", "page_views"), 5.0);
    // …and the engine answers that query from the projection, not the rows.
    let filter = bilten_analytics::dashboard::Filter::new(
        &bilten_analytics::dashboard::Viewer::Admin,
        Some("org-a"),
        None,
        None,
        Utc::now().date_naive(),
    )
    .unwrap();
    s.assert_reads_projection_with(
        &bilten_analytics::dashboard::page_views_over_time(&filter),
        &filter.params(),
        "hourly",
    )
    .await;
    // Countries: page views per country, the unknown ones named, from the
    // `countries` projection.
    let countries = &html[html.find(r#"id="countries""#).unwrap()..];
    assert_eq!(value_after(countries, r#"data-series="US""#), 3.0);
    assert_eq!(value_after(countries, r#"data-series="Unknown""#), 2.0);
    s.assert_reads_projection_with(
        &bilten_analytics::dashboard::page_views_by_country(&filter),
        &filter.params(),
        "countries",
    )
    .await;
    // Sources and campaigns: the Stats API's answer for the same range,
    // bar for bar.
    let day = Utc::now().date_naive();
    let range = json!([(day - Duration::days(29)).to_string(), day.to_string()]);
    let stats = |q: Value| {
        let req = s
            .client
            .post(format!("{}/api/v2/query", s.base))
            .bearer_auth(ADMIN)
            .json(&q);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let sources = stats(
        json!({"site_id": "org-a", "date_range": range, "metrics": ["visits"],
                               "dimensions": ["visit:channel", "visit:source"]}),
    )
    .await;
    let shown: Vec<(String, f64)> = sources["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (channel, source) = (
                r["dimensions"][0].as_str().unwrap(),
                r["dimensions"][1].as_str().unwrap(),
            );
            let mut label = format!("{}{}", channel[..1].to_uppercase(), &channel[1..]);
            if !source.is_empty() {
                label = format!("{label} · {source}");
            }
            (label, r["metrics"][0].as_f64().unwrap())
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("Direct".to_string(), 2.0),
            ("Search · Google".to_string(), 2.0),
            ("Email · newsletter".to_string(), 1.0)
        ],
        "{sources}"
    );
    let sources_panel = &html[html.find(r#"id="sources""#).unwrap()..];
    for (label, visits) in &shown {
        assert_eq!(
            value_after(sources_panel, &format!(r#"data-series="{label}""#)),
            *visits,
            "{label}"
        );
    }
    let campaigns_panel = &html[html.find(r#"id="campaigns""#).unwrap()..];
    assert_eq!(
        value_after(campaigns_panel, r#"data-series="spring_sale""#),
        1.0
    );
    // Entry and exit pages, devices and the visits' totals: the Stats API's answer
    // too, on org-a's page (other organizers have visits of events only).
    let (_, html) = page(&s, Some(&cookie), "?organizer=org-a").await;
    // Each panel: its query, the label of an empty value, and the rows the
    // data must give it at least; every row it shows (the first 10) reads
    // as the API answers. Top pages and events by name come from
    // `pages_daily`.
    for (panel, query, unknown, at_least) in [
        (
            "entry_pages",
            json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:entry_page"]}),
            "Unknown (no page view)",
            2,
        ),
        (
            "exit_pages",
            json!({"metrics": ["visits", "visitors"], "dimensions": ["visit:exit_page"]}),
            "Unknown (no page view)",
            1,
        ),
        (
            "devices",
            json!({"metrics": ["visits"], "dimensions": ["visit:device"]}),
            "Unknown",
            0,
        ),
        (
            "pages",
            json!({"metrics": ["pageviews", "visitors"], "dimensions": ["event:page"]}),
            "Unknown (no path)",
            1,
        ),
        (
            "event_names",
            json!({"metrics": ["events", "visitors"], "dimensions": ["event:name"],
                   "filters": [["is_not", "event:name", ["pageview"]]]}),
            "",
            1,
        ),
    ] {
        let mut query = query;
        query["site_id"] = json!("org-a");
        query["date_range"] = range.clone();
        let answer = stats(query).await;
        let rows = answer["results"].as_array().unwrap();
        assert!(rows.len() >= at_least, "{panel}: {answer}");
        let html = &html[html.find(&format!(r#"id="{panel}""#)).unwrap()..];
        for r in rows.iter().take(10) {
            let label = match r["dimensions"][0].as_str().unwrap() {
                "" => unknown,
                d => d,
            };
            assert_eq!(
                value_after(html, &format!(r#"data-series="{label}""#)),
                r["metrics"][0].as_f64().unwrap(),
                "{panel} {label}: {answer}"
            );
        }
    }
    let totals = stats(json!({"site_id": "org-a", "date_range": range,
                              "metrics": ["visits", "bounce_rate", "visit_duration"]}))
    .await;
    assert!(
        totals["results"][0]["metrics"][0].as_f64().unwrap() >= 2.0,
        "{totals}"
    );
    for (i, kpi) in ["visits", "bounce_rate", "visit_duration"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            value_after(&html, &format!(r#"data-kpi="{kpi}""#)),
            totals["results"][0]["metrics"][i].as_f64().unwrap(),
            "{kpi}: {totals}"
        );
    }
    // A long range is drawn per day, from the same views and projection.
    let from = (Utc::now() - Duration::days(90)).format("%Y-%m-%d");
    let (_, long) = page(&s, Some(&cookie), &format!("?from={from}")).await;
    assert!(long.contains("events per day") && long.contains("page views per day"));
    assert_eq!(panel_sum(&long, "traffic", "events"), 13.0);
    assert_eq!(panel_sum(&long, "page_views", "page_views"), 5.0);
    let long_filter = bilten_analytics::dashboard::Filter::new(
        &bilten_analytics::dashboard::Viewer::Admin,
        None,
        Some(&from.to_string()),
        None,
        Utc::now().date_naive(),
    )
    .unwrap();
    assert_eq!(long_filter.traffic_bucket_secs(), 86400);
    s.assert_reads_projection_with(
        &bilten_analytics::dashboard::page_views_over_time(&long_filter),
        &long_filter.params(),
        "hourly",
    )
    .await;
    // One organizer, chosen by the admin.
    let (_, html) = page(&s, Some(&cookie), "?organizer=org-b").await;
    assert_eq!(revenue_kpi(&html), [("EUR".to_string(), 40.0)]);
    assert_eq!(kpi(&html, "tickets"), 4.0);
    // Hostile and broken filters: quoted, or refused with the reason.
    let (status, html) = page(&s, Some(&cookie), "?organizer=o%27%20OR%201%3D1%20--").await;
    assert_eq!(status, 200);
    assert_eq!(revenue_kpi(&html), []);
    assert!(html.contains("No sales in this period."));
    let (status, html) = page(&s, Some(&cookie), "?from=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        html.contains("expected a date such as 2026-11-28"),
        "{html}"
    );

    // A read key: org-a only, whatever the URL asks.
    let (reader, _) = sign_in(&s, READ_KEY).await;
    let (status, html) = page(&s, Some(&reader), "").await;
    assert_eq!(status, 200);
    assert!(html.contains("organizer org-a"));
    assert!(!html.contains("org-b"), "another organizer's name leaks");
    let views = from_views(&s, "org-a").await;
    assert_eq!(revenue_kpi(&html), amounts_of(&views["daily"]["revenue"]));
    assert_eq!(revenue_kpi(&html), eur_usd(51.0, 100.0));
    let (status, html) = page(&s, Some(&reader), "?organizer=org-b").await;
    assert_eq!(status, 403);
    assert!(html.contains("this key sees organizer org-a only"));
    assert!(!html.contains("data-kpi"));
    let r = client()
        .get(format!("{}/dashboard/realtime?organizer=org-b", s.base))
        .header("cookie", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A read key is not an admin token, nor an ingest key.
    let r = client()
        .get(format!("{}/admin/health", s.base))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Signing out ends the session on the server, not only in the browser.
    let r = client()
        .post(format!("{}/dashboard/logout", s.base))
        .header("cookie", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, html) = page(&s, Some(&reader), "").await;
    assert_eq!(status, 200);
    assert!(!html.contains("data-kpi"), "a closed session shows nothing");
    // The admin's session is its own.
    let (_, html) = page(&s, Some(&cookie), "").await;
    assert!(html.contains("data-kpi"));

    // Sign-ins are in the audit log, as admin requests are: who (a
    // fingerprint or the read key's organizer, never the secret), and the
    // refused guess.
    let mut signed = Vec::new();
    for _ in 0..40 {
        signed = s
            .query(&format!("SELECT actor, status FROM {}.audit_log WHERE path = '/dashboard/login' ORDER BY at", common::system_database()))
            .await;
        if signed.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let actors: Vec<(String, u64)> = signed
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                common::as_u64(&r["status"]),
            )
        })
        .collect();
    assert!(
        actors.contains(&("invalid token".into(), 401)),
        "{actors:?}"
    );
    assert!(
        actors.contains(&("read key of org-a".into(), 303)),
        "{actors:?}"
    );
    assert!(
        actors
            .iter()
            .any(|(a, s)| a.starts_with("token:") && *s == 303),
        "{actors:?}"
    );
    assert!(!format!("{signed:?}").contains(ADMIN) && !format!("{signed:?}").contains(READ_KEY));
    s.stop().await.unwrap();
}

/// Empty tables: every panel says so in a sentence, none draws an empty
/// frame.
#[tokio::test]
async fn an_empty_store_shows_sentences_not_empty_charts() {
    let s = start().await;
    let (cookie, _) = sign_in(&s, ADMIN).await;
    let (status, html) = page(&s, Some(&cookie), "").await;
    assert_eq!(status, 200, "{}", &html[html.len().saturating_sub(600)..]);
    for sentence in [
        "No events in the last two hours.",
        "No events in this period.",
        "No page views in this period.",
        "No sales in this period.",
        "No tickets sold in this period.",
        "No funnel steps in this period.",
        "No ticketed events in this period.",
    ] {
        assert!(html.contains(sentence), "{sentence}");
    }
    assert!(!html.contains("<svg"), "no empty chart frames");
    assert_eq!(revenue_kpi(&html), []);
    assert!(html.contains(">No sales<"));
    s.stop().await.unwrap();
}

/// A real browser: sign in through the form, read the figures as shown,
/// sort the table, wait for the realtime refresh, sign out. The numbers on
/// the page must be the views'.
#[tokio::test]
async fn dashboard_in_a_real_browser() {
    let Some(browser) = common::install::chromium_or_skip() else {
        return;
    };
    let s = start().await;
    with_sales(&s).await;
    let views = from_views(&s, "").await;
    let python = common::install::playwright();
    let shot = tempfile::tempdir().unwrap();
    let shot = shot.path().join("dashboard.png");
    let mut check = std::process::Command::new(python);
    check
        .arg(common::install::script("dashboard_check.py"))
        .env("DASHBOARD_URL", format!("{}/dashboard", s.base))
        .env("CHROMIUM", browser)
        .env("ADMIN_TOKEN", ADMIN)
        .env("READ_KEY", READ_KEY)
        .env("EXPECT", views.to_string())
        .env("SCREENSHOT", &shot);
    let ran = common::install::output(check).await;
    assert!(ran.ok, "{}", ran.text);
    let report: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(report["checked"], "ok", "{report}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    s.stop().await.unwrap();
}

/// Guessing in parallel meets a budget kept across requests, a flood of
/// sign-ins with one key signs nobody else out, and another site's form
/// can neither sign a visitor in nor out.
#[tokio::test]
async fn sign_in_holds_against_parallel_guesses_floods_and_other_sites() {
    let s = start().await;
    let (admin, _) = sign_in(&s, ADMIN).await;
    // 40 sign-ins with one read key: that key's oldest sessions end, the
    // admin's stays.
    let (first, _) = sign_in(&s, READ_KEY).await;
    for _ in 0..40 {
        sign_in(&s, READ_KEY).await;
    }
    assert_eq!(
        page(&s, Some(&admin), "").await.0,
        200,
        "the admin stays signed in"
    );
    let (status, html) = page(&s, Some(&first), "").await;
    assert!(
        status == 200 && html.contains(r#"action="/dashboard/login""#),
        "the flooding key's oldest session ended: {status}"
    );

    // Another site's form: refused both ways, by Origin or Sec-Fetch-Site.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = client()
            .post(format!("{}/dashboard/login", s.base))
            .header(name, value)
            .form(&[("token", ADMIN)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert!(r.headers().get("set-cookie").is_none());
        let r = client()
            .post(format!("{}/dashboard/logout", s.base))
            .header(name, value)
            .header("cookie", &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    assert_eq!(
        page(&s, Some(&admin), "").await.0,
        200,
        "not signed out from afar"
    );
    // This server's own page: its origin.
    let host = s.base.trim_start_matches("http://").to_string();
    let r = client()
        .post(format!("{}/dashboard/login", s.base))
        .header("origin", format!("http://{host}"))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // 40 wrong guesses at once: the address's budget (10) is spent, the
    // rest get a 429 that says when to come back, not a 401.
    let guesses = (0..40).map(|i| {
        let url = format!("{}/dashboard/login", s.base);
        async move {
            let r = client()
                .post(url)
                .form(&[("token", format!("guess-{i}"))])
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry)
        }
    });
    let answers = futures::future::join_all(guesses).await;
    let refused = answers.iter().filter(|(status, _)| *status == 429).count();
    let tried = answers.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(refused + tried, 40, "{answers:?}");
    assert_eq!(tried, 10, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(status, _)| *status == 429)
            .all(|(_, retry)| retry
                .as_deref()
                .is_some_and(|r| r.parse::<u64>().unwrap() >= 1)),
        "{answers:?}"
    );
    // While refused, even the right token does not tell itself apart.
    let r = client()
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Those already signed in are not affected.
    assert_eq!(page(&s, Some(&admin), "").await.0, 200);
    s.stop().await.unwrap();
}
