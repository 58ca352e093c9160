//! Keeps every event: the benchmark's baseline for the cost of the host.

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};

struct KeepAll;

impl Plugin for KeepAll {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(KeepAll)
    }
    fn check(&self, _event: &EventRef) -> Result<Verdict, Error> {
        Ok(Verdict::Keep)
    }
}

export_plugin!(KeepAll);
