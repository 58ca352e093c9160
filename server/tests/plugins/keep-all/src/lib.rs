//! Keeps every event: the benchmark's baseline for the cost of the host.

use bilten_plugin_sdk::{Config, Error, Event, Plugin, Verdict, export_plugin};

struct KeepAll;

impl Plugin for KeepAll {
    fn new(_config: Config) -> Result<Self, String> {
        Ok(KeepAll)
    }
    fn check(&self, _event: Event) -> Result<Verdict, Error> {
        Ok(Verdict::Keep)
    }
}

export_plugin!(KeepAll);
