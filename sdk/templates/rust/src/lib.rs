//! {{name}}: a Bilten Analytics plugin in Rust.
//! `bilten-analytics plugin build .` makes {{name}}.wasm.

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};

struct DropTestEvents;

impl Plugin for DropTestEvents {
    /// `config` is the plugin's table from the server's `[[plugins]]` entry.
    fn new(_config: Config) -> Result<Self, String> {
        Ok(DropTestEvents)
    }

    /// Called once per event: keep, modify, drop, or `Err` to reject it.
    fn check(&self, event: &EventRef<'_>) -> Result<Verdict, Error> {
        // Events marked as tests never reach the tables.
        if event.event_type == "test_event" {
            return Ok(Verdict::Drop);
        }
        Ok(Verdict::Keep)
    }
}

export_plugin!(DropTestEvents);

#[cfg(test)]
mod tests {
    use super::*;
    use bilten_plugin_sdk::Table;

    #[test]
    fn test_events_are_dropped_and_the_rest_kept() {
        let plugin = DropTestEvents::new(Config::default()).unwrap();
        let test = EventRef {
            event_type: "test_event",
            ..EventRef::empty(Table::Events)
        };
        assert!(matches!(plugin.check(&test), Ok(Verdict::Drop)));
        let purchase = EventRef {
            event_type: "purchase",
            ..EventRef::empty(Table::Events)
        };
        assert!(matches!(plugin.check(&purchase), Ok(Verdict::Keep)));
    }
}
