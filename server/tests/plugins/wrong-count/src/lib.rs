//! Breaks the contract the SDK keeps for you: one verdict fewer than events
//! when the batch holds an event of type "trigger".
//! Written against the bindings directly, as a plugin in another language
//! might be.

wit_bindgen::generate!({ path: "../../../../sdk/wit", world: "plugin" });

use bilten::plugin::types::{Event, PluginInfo, Verdict};
use exports::bilten::plugin::validator::Guest;

struct WrongCount;

impl Guest for WrongCount {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "wrong-count".into(),
            version: "0.1.0".into(),
        }
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn process(events: Vec<Event>) -> Vec<Verdict> {
        // Short by one when a "trigger" event is in the batch.
        let short = events.iter().any(|e| e.event_type == "trigger");
        events
            .iter()
            .skip(short as usize)
            .map(|_| Verdict::Keep)
            .collect()
    }
}

export!(WrongCount);
