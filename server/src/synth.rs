//! Synthetic traffic, reproducible from a seed: a few organizers sell
//! tickets for a few events each; simulated users walk the funnel
//! page_view → view_event → add_to_cart → checkout → purchase, dropping out
//! along the way. Each page view also goes to `page_views` and each purchase
//! to `ticket_sales` with a price and currency.
//!
//! The CLI's `loadgen` sends it to a server; tests and benches feed it to the
//! library directly.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::model::Table;

/// The traffic model: deterministic for a seed.
pub struct Generator {
    rng: SmallRng,
    organizers: Vec<Organizer>,
    queue: VecDeque<(Table, Value)>,
    next_user: u64,
}

struct Organizer {
    id: String,
    events: Vec<TicketedEvent>,
}

#[derive(Clone)]
struct TicketedEvent {
    id: String,
    price_cents: u32,
    currency: &'static str,
}

const FUNNEL: [(&str, &str, f64); 4] = [
    ("view_event", "Event Details Page", 0.7),
    ("add_to_cart", "Add To Cart", 0.45),
    ("checkout", "Checkout", 0.7),
    ("purchase", "Purchase Complete", 0.8),
];
const BROWSERS: [&str; 4] = ["Chrome", "Safari", "Firefox", "Edge"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];

/// The user agent a visitor's browser on their device sends (from what
/// is drawn already: the datasets tests rely on keep their random stream).
fn user_agent(browser: &str, device: &str) -> &'static str {
    match (device, browser) {
        ("desktop", "Safari") => {
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) \
             Version/17.1 Safari/605.1.15"
        }
        ("desktop", "Firefox") => {
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
        }
        ("desktop", "Edge") => {
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"
        }
        ("desktop", _) => {
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36"
        }
        ("tablet", "Safari") => {
            "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
             Version/17.1 Mobile/15E148 Safari/604.1"
        }
        ("tablet", _) => {
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36"
        }
        (_, "Safari") => {
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, \
             like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
        }
        (_, "Firefox") => "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
        _ => {
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Mobile Safari/537.36"
        }
    }
}
const REFERRERS: [&str; 4] = [
    "",
    "https://www.google.com/",
    "https://instagram.com/",
    "https://newsletter.example/",
];

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut rng = SmallRng::seed_from_u64(seed);
        let organizers = (1..=4)
            .map(|o| {
                let events = (1..=rng.random_range(2..=4))
                    .map(|e| TicketedEvent {
                        id: format!("evt-{o}{e:02}"),
                        price_cents: rng.random_range(15..=150) * 100,
                        currency: CURRENCIES[rng.random_range(0..3)],
                    })
                    .collect();
                Organizer {
                    id: format!("org-{o}"),
                    events,
                }
            })
            .collect();
        Generator {
            rng,
            organizers,
            queue: VecDeque::new(),
            next_user: 1,
        }
    }

    /// The next event to send and the table it goes to.
    pub fn next_event(&mut self) -> (Table, Value) {
        if self.queue.is_empty() {
            self.journey();
        }
        self.queue
            .pop_front()
            .expect("a journey has at least one event")
    }

    /// One user's visit: a page view, then funnel steps until they drop out.
    fn journey(&mut self) {
        let rng = &mut self.rng;
        let organizer = &self.organizers[rng.random_range(0..self.organizers.len())];
        let org = &organizer.id;
        let TicketedEvent {
            id: event_id,
            price_cents,
            currency,
        } = organizer.events[rng.random_range(0..organizer.events.len())].clone();
        let user = format!("user-{}", self.next_user);
        self.next_user += 1;
        let session = format!("sess-{:08x}", rng.random::<u32>());
        let browser = BROWSERS[rng.random_range(0..BROWSERS.len())];
        let device = DEVICES[rng.random_range(0..DEVICES.len())];
        let agent = user_agent(browser, device);
        // Every fifth visitor comes from a campaign, chosen by their number
        // (not the random stream, which the tests' datasets rely on).
        let campaign = match self.next_user % 10 {
            1 => "?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale",
            6 => "?utm_source=facebook&utm_medium=cpc&utm_campaign=summer_fest",
            _ => "",
        };
        let url = format!("https://bilten.example/events/{event_id}{campaign}");
        let event = |event_type: &str, name: &str| {
            json!({
                "event_type": event_type, "event_name": name, "organizer_id": org, "user_id": user,
                "session_id": session, "user_agent": agent,
                "properties": { "event_id": event_id, "browser": browser, "device_type": device },
            })
        };
        self.queue
            .push_back((Table::Events, event("page_view", "Event Page")));
        self.queue.push_back((
            Table::PageViews,
            json!({
                "organizer_id": org, "user_id": user, "session_id": session, "event_id": event_id, "url": url,
                "user_agent": agent,
                "referrer": REFERRERS[rng.random_range(0..REFERRERS.len())],
                "duration_ms": rng.random_range(2_000..180_000),
            }),
        ));
        for (step, name, p) in FUNNEL {
            if !rng.random_bool(p) {
                return;
            }
            self.queue.push_back((Table::Events, event(step, name)));
        }
        let quantity = rng.random_range(1..=4);
        self.queue.push_back((
            Table::TicketSales,
            json!({
                "event_id": event_id, "organizer_id": org, "user_id": user, "quantity": quantity,
                "price": format!("{}.{:02}", price_cents / 100, price_cents % 100), "currency": currency,
            }),
        ));
    }
}

/// A time within `spread` before `now`: busier through the day up to an
/// evening peak at 20:00, quiet at night (UTC), as an event site's traffic
/// is.
pub fn past_time(
    rng: &mut SmallRng,
    now: chrono::DateTime<chrono::Utc>,
    spread: Duration,
) -> chrono::DateTime<chrono::Utc> {
    use chrono::Timelike;
    let spread_ms = spread.as_millis().max(1) as i64;
    loop {
        let t = now - chrono::Duration::milliseconds(rng.random_range(0..spread_ms));
        let hour = t.hour() as f64 + t.minute() as f64 / 60.0;
        let weight = match hour {
            h if h < 7.0 => 0.1,
            h if h < 20.0 => 0.3 + 0.7 * (h - 7.0) / 13.0,
            h => 1.0 - 0.7 * (h - 20.0) / 4.0,
        };
        if rng.random::<f64>() < weight {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let take = |seed| {
            let mut g = Generator::new(seed);
            (0..200)
                .map(|_| g.next_event())
                .map(|(t, v)| (t, v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
        let events = take(7);
        assert!(events.iter().any(|(t, _)| *t == Table::TicketSales));
        assert!(events.iter().any(|(t, _)| *t == Table::PageViews));
        assert!(events.iter().any(|(_, v)| v.contains("\"purchase\"")));
    }
}
