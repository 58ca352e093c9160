//! Breaks the contract the SDK keeps for you: one verdict fewer than events
//! when the batch holds an event of type "trigger".
//! Written against the bindings directly, as a plugin in another language
//! might be.

wit_bindgen::generate!({ path: "../../../../sdk/wit", world: "plugin" });

use bilten::plugin::types::{Batch, PluginInfo, TextField, Verdict};
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
        // Short by one when a "trigger" event is in the batch. Event i's
        // text field f runs from offsets[14 * i + f] to the next offset.
        let n = batch.tables.len();
        let event_type = |i: usize| {
            let at = 14 * i + TextField::EventType as usize;
            &batch.text[batch.offsets[at] as usize..batch.offsets[at + 1] as usize]
        };
        let short = (0..n).any(|i| event_type(i) == "trigger");
        (0..n).skip(short as usize).map(|_| Verdict::Keep).collect()
    }
}

export!(WrongCount);
