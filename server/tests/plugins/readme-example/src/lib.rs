use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Table, Verdict, export_plugin};

/// Drops events from test organizers, refuses ticket sales above a cap, and
/// marks events from the team's own office network.
struct HouseRules {
    test_prefix: String,
    max_cents: i64,
}

impl Plugin for HouseRules {
    fn new(config: Config) -> Result<Self, String> {
        Ok(HouseRules {
            test_prefix: config.str_or("test_prefix", "test-")?.to_string(),
            max_cents: config.i64_or("max_price", 10_000)? * 100,
        })
    }

    fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
        if event.organizer_id.starts_with(self.test_prefix.as_str()) {
            return Ok(Verdict::Drop);
        }
        if event.table == Table::TicketSales && event.price_cents > self.max_cents {
            return Err(
                Error::new("price_above_cap", "price is above the house cap").field("price"),
            );
        }
        if event.table == Table::Events && event.ip.starts_with("10.") {
            let mut properties = event.properties()?;
            properties.insert("internal".into(), true.into());
            // `check` reads a borrowed event; `modify` returns an owned one.
            let mut event = event.to_event();
            event.set_properties(&properties);
            return Ok(Verdict::Modify(event));
        }
        Ok(Verdict::Keep)
    }
}

export_plugin!(HouseRules);
