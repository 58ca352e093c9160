//! User-agent enrichment: adds `browser`, `os` and `device_type` to an
//! event's properties from its `user_agent`, as the seed's events carry them.
//! A value the client already sent is kept. Parsing is the `woothee` crate's
//! (a maintained port of the Woothee project's rules), not ours.
//!
//! Config: `overwrite = true` replaces values the client sent.

use bilten_plugin_sdk::{Config, Error, EventRef, Memo, Plugin, Table, Verdict, export_plugin};
use serde_json::Value;

struct UserAgent {
    parser: woothee::parser::Parser,
    overwrite: bool,
    /// Browser, OS and device type of each user agent of the batch, read
    /// once (`None`: woothee knows it not).
    read: Memo<Option<[String; 3]>>,
}

/// Woothee's categories, in the seed's words.
fn device_type(category: &str, os: &str, ua: &str) -> &'static str {
    match category {
        _ if os == "iPad" || ua.contains("Tablet") => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "pc" => "desktop",
        "crawler" => "bot",
        _ => "other",
    }
}

impl Plugin for UserAgent {
    fn new(config: Config) -> Result<Self, String> {
        Ok(UserAgent {
            parser: woothee::parser::Parser::new(),
            overwrite: config.bool_or("overwrite", false)?,
            read: Memo::new(4096, 1024),
        })
    }

    fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
        // Only `events` store properties.
        if event.table != Table::Events || event.user_agent.is_empty() {
            return Ok(Verdict::Keep);
        }
        let read = self.read.get(event.user_agent, |agent| {
            let ua = self.parser.parse(agent)?;
            Some([
                ua.name.to_string(),
                ua.os.to_string(),
                device_type(ua.category, ua.os, agent).to_string(),
            ])
        });
        let Some([browser, os, device]) = read else {
            return Ok(Verdict::Keep);
        };
        let mut properties = event.properties()?;
        let found = [("browser", browser), ("os", os), ("device_type", device)];
        let mut changed = false;
        for (key, value) in found {
            if value == "UNKNOWN" || (!self.overwrite && properties.contains_key(key)) {
                continue;
            }
            properties.insert(key.to_string(), Value::from(value));
            changed = true;
        }
        if !changed {
            return Ok(Verdict::Keep);
        }
        let mut event = event.to_event();
        event.set_properties(&properties);
        Ok(Verdict::Modify(event))
    }
}

export_plugin!(UserAgent);
