//! The provisioned Grafana dashboard (`deploy/grafana/`): every panel's SQL,
//! with the ClickHouse data source's macros expanded as it expands them,
//! runs against the real engine over generated traffic, reads views (or
//! their aggregate tables), and agrees with the raw rows where it says the
//! same thing.

mod common;

use bilten_analytics::synth::Generator;
use chrono::{Duration, Utc};
use common::{TestServer, as_u64};
use serde_json::{Value, json};

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/bilten.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The data source's macros over [from, to] (Unix seconds), and the
/// `organizer` variable.
fn expand(sql: &str, from: i64, to: i64, organizer: &str) -> String {
    let mut out = sql
        .replace("${organizer}", organizer)
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"));
    for (name, wrap) in [
        ("$__timeFilter(", "toDateTime"),
        ("$__dateFilter(", "toDate"),
    ] {
        while let Some(at) = out.find(name) {
            // The argument may hold parentheses of its own: the matching one.
            let open = at + name.len() - 1;
            let mut depth = 0;
            let close = open
                + out[open..]
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .unwrap()
                    .0;
            let column = out[at + name.len()..close].trim().to_string();
            let cond = format!("{column} >= {wrap}({from}) AND {column} <= {wrap}({to})");
            out.replace_range(at..=close, &cond);
        }
    }
    assert!(!out.contains('$'), "a macro left unexpanded: {out}");
    out
}

#[tokio::test]
async fn every_grafana_panel_runs_on_the_views_and_agrees_with_the_raw_rows() {
    // The built-in plugins on, so the filtered-traffic panel has a crawler.
    let s = TestServer::start(|c| c.plugins = bilten_analytics::plugins::default_chain()).await;
    let mut g = Generator::new(5);
    let now = Utc::now();
    for i in 0..1500 {
        let (table, mut v) = g.next_event();
        v["timestamp"] = json!((now - Duration::minutes((i * 7 % 600) as i64)).to_rfc3339());
        let (status, body) = s
            .post_json(&format!("/v1/{}", table.route()), &json!([v]))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"event_type": "page_view", "organizer_id": "org-1",
                     "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}]),
        )
        .await;
    assert_eq!((status, body["dropped"].clone()), (200, json!(1)), "{body}");
    let (status, body) = s
        .post_json(
            "/v1/page-views",
            &json!([{"organizer_id": "org-1", "url": "https://tickets.example/", "ip": "8.8.8.8"}]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.flush().await;
    let (from, to) = (
        (now - Duration::hours(24)).timestamp(),
        now.timestamp() + 60,
    );

    let d = dashboard();
    let variable = d["templating"]["list"][0]["query"].as_str().unwrap();
    let organizers = s.query(variable).await;
    assert!(organizers.len() > 1, "{organizers:?}");
    let org = organizers[0]["organizer_id"].as_str().unwrap().to_string();

    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 9);
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let sql = panel["targets"][0]["rawSql"].as_str().unwrap();
        // Dashboards read views and their aggregates, never the raw tables'
        // rows: a raw table only through one of its projections.
        let raw = [
            "bilten_analytics.events\n",
            "bilten_analytics.page_views\n",
            "bilten_analytics.ticket_sales\n",
        ]
        .iter()
        .any(|raw| sql.contains(raw));
        for organizer in ["all", org.as_str()] {
            let rows = s.query(&expand(sql, from, to, organizer)).await;
            assert!(!rows.is_empty(), "{title} ({organizer}) is empty");
            if raw {
                let projection = match sql.contains("country") {
                    true => "countries",
                    false => "hourly",
                };
                s.assert_reads_projection(&expand(sql, from, to, organizer), projection)
                    .await;
            }
        }
    }

    // Figures a user would compare: revenue and tickets over the range.
    let panel = |id: u64| {
        panels.iter().find(|p| p["id"] == id).unwrap()["targets"][0]["rawSql"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Decimals come as JSON numbers or strings, depending on the settings.
    let number = |v: &Value| -> f64 { v.to_string().trim_matches('"').parse().unwrap() };
    // Revenue per currency, as the raw sales add up in each currency.
    let shown = s
        .query(&format!(
            "SELECT currency, toString(sum(amount)) AS r FROM ({}) GROUP BY currency ORDER BY currency",
            expand(&panel(4), from, to, "all")
        ))
        .await;
    let raw = s
        .query(&format!(
            "SELECT currency, toString(sum(toDecimal128(price * quantity, 2))) AS r FROM bilten_analytics.ticket_sales \
             WHERE toDate(timestamp) >= toDate({from}) AND toDate(timestamp) <= toDate({to}) \
             GROUP BY currency ORDER BY currency"
        ))
        .await;
    assert!(raw.len() >= 2, "sales in several currencies: {raw:?}");
    let pairs = |rows: &[Value]| -> Vec<(String, f64)> {
        rows.iter()
            .map(|r| (r["currency"].as_str().unwrap().to_string(), number(&r["r"])))
            .collect()
    };
    assert_eq!(pairs(&shown), pairs(&raw));
    let raw = s
        .query(&format!(
            "SELECT sum(quantity) AS q FROM bilten_analytics.ticket_sales \
             WHERE toDate(timestamp) >= toDate({from}) AND toDate(timestamp) <= toDate({to})"
        ))
        .await;
    // The table writes each event's revenue per currency, never a sum.
    let table = s.query(&expand(&panel(6), from, to, "all")).await;
    assert!(!table.is_empty());
    for row in &table {
        let text = row["revenue"].as_str().unwrap();
        for amount in text.split(", ") {
            let (number, currency) = amount.split_once(' ').unwrap();
            assert!(
                number
                    .split_once('.')
                    .is_some_and(|(_, cents)| cents.len() == 2)
                    && currency.len() == 3
                    && currency.bytes().all(|b| b.is_ascii_uppercase()),
                "{text}: an amount then its currency, in each currency"
            );
        }
    }
    let tickets = s
        .query(&format!(
            "SELECT sum(tickets) AS t FROM ({})",
            expand(&panel(5), from, to, "all")
        ))
        .await;
    assert_eq!(as_u64(&tickets[0]["t"]), as_u64(&raw[0]["q"]));
    // Campaigns: every ticket credited once, whatever to (this dataset's
    // times are shuffled, so which visit came before a sale is chance).
    let campaigns = s.query(&expand(&panel(11), from, to, "all")).await;
    let credited: u64 = campaigns.iter().map(|r| as_u64(&r["tickets"])).sum();
    assert_eq!(credited, as_u64(&raw[0]["q"]), "{campaigns:?}");
    let sources = s.query(&expand(&panel(10), from, to, "all")).await;
    assert!(
        sources.iter().any(|r| r["origin"] == "search · Google"),
        "{sources:?}"
    );
    // Countries and what the plugins filtered out.
    let countries = s.query(&expand(&panel(8), from, to, "all")).await;
    assert!(
        countries
            .iter()
            .any(|r| r["place"] == "US" && as_u64(&r["page_views"]) == 1),
        "{countries:?}"
    );
    let filtered = s.query(&expand(&panel(9), from, to, "all")).await;
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(
        (
            filtered[0]["plugin"].as_str(),
            as_u64(&filtered[0]["events"])
        ),
        (Some("bots"), 1)
    );
    // Exit pages: each page's visits as the visits' latest rows say.
    let exits = s.query(&expand(&panel(14), from, to, "all")).await;
    let latest = s
        .query(&expand(
            "SELECT exit_page AS page, toInt64(sum(sign)) AS n FROM bilten_analytics.visits \
             WHERE $__dateFilter(date) GROUP BY page HAVING n > 0 ORDER BY n DESC, page LIMIT 10",
            from,
            to,
            "all",
        ))
        .await;
    let shown: Vec<(&Value, u64)> = exits
        .iter()
        .map(|r| (&r["page"], as_u64(&r["exits"])))
        .collect();
    let want: Vec<(&Value, u64)> = latest
        .iter()
        .map(|r| (&r["page"], as_u64(&r["n"])))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want);
    // The funnel's steps come in the purchase order.
    let funnel = s.query(&expand(&panel(7), from, to, "all")).await;
    let orders: Vec<u64> = funnel.iter().map(|r| as_u64(&r["step_order"])).collect();
    assert!(orders.windows(2).all(|w| w[0] <= w[1]), "{funnel:?}");
    s.stop().await.unwrap();
}
