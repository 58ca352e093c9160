//! Breaks the contract the SDK keeps for you: one verdict fewer than events
//! when the batch holds an event of type "trigger".
//! Written against the bindings directly, as a plugin in another language
//! might be.

wit_bindgen::generate!({ path: "../../../../sdk/wit", world: "plugin" });

use bilten::plugin::types::{Batch, PluginInfo, Span, Verdict};
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
    fn process(batch: Batch) -> Vec<Verdict> {
        // Short by one when a "trigger" event is in the batch.
        let text = |s: Span| &batch.text[s.start as usize..(s.start + s.len) as usize];
        let short = batch.events.iter().any(|e| text(e.event_type) == "trigger");
        batch
            .events
            .iter()
            .skip(short as usize)
            .map(|_| Verdict::Keep)
            .collect()
    }
}

export!(WrongCount);
