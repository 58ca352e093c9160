//! Data-quality validator: the business rules an event must pass beyond
//! the server's structural checks. Config (all optional):
//!
//! ```toml
//! [plugins.config]
//! required = { purchase = ["event_id", "user_id"] }  # fields per event type
//! min_quantity = 1
//! max_quantity = 100
//! max_future_minutes = 5
//! max_past_days = 30
//! max_length = 512          # every text field but url, referrer, properties
//! max_url_length = 2048
//! ```

use std::collections::HashMap;

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Table, Verdict, export_plugin, now_ms};

struct Quality {
    required: HashMap<String, Vec<String>>,
    quantity: (u32, u32),
    max_future_ms: i64,
    max_past_ms: i64,
    max_length: usize,
    max_url_length: usize,
}

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Funnel steps need the event they are about, and purchases a buyer.
fn default_required() -> HashMap<String, Vec<String>> {
    let fields = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    HashMap::from([
        ("view_event".to_string(), fields(&["event_id"])),
        ("add_to_cart".to_string(), fields(&["event_id"])),
        ("checkout".to_string(), fields(&["event_id", "user_id"])),
        ("purchase".to_string(), fields(&["event_id", "user_id"])),
        ("ticket_sale".to_string(), fields(&["event_id"])),
    ])
}

impl Plugin for Quality {
    fn new(config: Config) -> Result<Self, String> {
        let required = match config.get("required") {
            None => default_required(),
            Some(serde_json::Value::Object(map)) => {
                let mut required = HashMap::new();
                for (event_type, fields) in map {
                    let list = Config(map.clone())
                        .strings(event_type)?
                        .ok_or_else(|| format!("required.{event_type}: {fields}"))?;
                    required.insert(event_type.clone(), list);
                }
                required
            }
            Some(other) => return Err(format!("required must be a table, got {other}")),
        };
        let q = |key, default| {
            let v = config.i64_or(key, default)?;
            u32::try_from(v).map_err(|_| format!("{key} must be from 0 to {}, got {v}", u32::MAX))
        };
        let quantity = (q("min_quantity", 1)?, q("max_quantity", 100)?);
        if quantity.0 > quantity.1 {
            return Err(format!(
                "min_quantity {} is more than max_quantity {}",
                quantity.0, quantity.1
            ));
        }
        Ok(Quality {
            required,
            quantity,
            max_future_ms: config.i64_or("max_future_minutes", 5)? * MINUTE_MS,
            max_past_ms: config.i64_or("max_past_days", 30)? * DAY_MS,
            max_length: config.i64_or("max_length", 512)?.max(1) as usize,
            max_url_length: config.i64_or("max_url_length", 2048)?.max(1) as usize,
        })
    }

    fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
        self.timestamp(event)?;
        self.required(event)?;
        self.lengths(event)?;
        if event.table == Table::TicketSales {
            self.sale(event)?;
        }
        Ok(Verdict::Keep)
    }
}

impl Quality {
    fn timestamp(&self, e: &EventRef) -> Result<(), Error> {
        let now = now_ms();
        if e.timestamp_ms > now + self.max_future_ms {
            return Err(Error::new(
                "timestamp_in_future",
                format!(
                    "timestamp is {} minutes ahead of the server's clock (at most {})",
                    (e.timestamp_ms - now) / MINUTE_MS,
                    self.max_future_ms / MINUTE_MS
                ),
            )
            .field("timestamp"));
        }
        if e.timestamp_ms < now - self.max_past_ms {
            return Err(Error::new(
                "timestamp_too_old",
                format!(
                    "timestamp is {} days old (at most {})",
                    (now - e.timestamp_ms) / DAY_MS,
                    self.max_past_ms / DAY_MS
                ),
            )
            .field("timestamp"));
        }
        Ok(())
    }

    fn required(&self, e: &EventRef) -> Result<(), Error> {
        let Some(fields) = self.required.get(e.event_type) else {
            return Ok(());
        };
        for field in fields {
            let present = match e.text(field).filter(|_| field != "properties") {
                Some(value) => !value.is_empty(),
                // Anything else is looked for in the properties.
                None => e
                    .properties()
                    .map(|p| p.get(field.as_str()).is_some_and(|v| !v.is_null()))
                    .unwrap_or(false),
            };
            if !present {
                return Err(Error::new(
                    "missing_field",
                    format!("{field} is required for {} events", e.event_type),
                )
                .field(field.as_str()));
            }
        }
        Ok(())
    }

    fn lengths(&self, e: &EventRef) -> Result<(), Error> {
        // Every text field but those with rules of their own elsewhere
        // (the id, the type, the properties, the address, the currency).
        let text = e.texts().into_iter().filter_map(|(field, value)| {
            let max = match field {
                "id" | "event_type" | "properties" | "ip" | "currency" => return None,
                "url" | "referrer" => self.max_url_length,
                _ => self.max_length,
            };
            Some((field, value, max))
        });
        for (field, value, max) in text {
            let n = value.chars().count();
            if n > max {
                return Err(Error::new(
                    "too_long",
                    format!("{field} is {n} characters, more than {max}"),
                )
                .field(field));
            }
        }
        Ok(())
    }

    fn sale(&self, e: &EventRef) -> Result<(), Error> {
        if e.price_cents < 0 {
            return Err(Error::new("negative_price", "price must not be negative").field("price"));
        }
        if iso_currency::Currency::from_code(&e.currency.to_ascii_uppercase()).is_none() {
            return Err(Error::new(
                "unknown_currency",
                format!("{:?} is not an ISO 4217 currency code", e.currency),
            )
            .field("currency"));
        }
        let (min, max) = self.quantity;
        if !(min..=max).contains(&e.quantity) {
            return Err(Error::new(
                "quantity_out_of_range",
                format!("quantity must be from {min} to {max}, got {}", e.quantity),
            )
            .field("quantity"));
        }
        Ok(())
    }
}

export_plugin!(Quality);
