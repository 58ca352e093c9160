//! A plugin for interface 2.0.0, which this server does not implement: it
//! must be refused at load with a message that says so.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use bilten::plugin::types::{Batch, PluginInfo, Verdict};
use exports::bilten::plugin::validator::Guest;

struct Future;

impl Guest for Future {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "future-abi".into(),
            version: "2.0.0".into(),
        }
    }
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn process(batch: Batch) -> Vec<Verdict> {
        batch.events.iter().map(|_| Verdict::Keep).collect()
    }
}

export!(Future);
