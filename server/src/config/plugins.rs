//! The plugin chain and its sandbox as configured: `[[plugins]]` and
//! `[plugin_host]`. Loading and running them is `plugins`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The directory the build put the built-in plugins in.
pub const BUILTIN_DIR: &str = env!("BILTEN_BUILTIN_PLUGIN_DIR");

/// What a plugin's failure does to the batch it was judging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Skip the plugin for that batch; the events are stored, tagged in
    /// their `plugins_skipped` column, and counted.
    FailOpen,
    /// Store the batch in `plugin_quarantine` instead; never drop it.
    FailClosed,
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// The `.wasm` component; relative paths are under `plugin_host.dir`.
    pub path: PathBuf,
    /// Tables it sees (`events`, `page_views`, `ticket_sales`); all if empty.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Event types it sees; all if empty. Page views have the type
    /// `page_view`, ticket sales `ticket_sale`.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Organizers whose events it sees; all if empty. A validator written
    /// for one organizer's events judges theirs only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizers: Vec<String>,
    /// Handed to the plugin's `init` as a JSON object.
    #[serde(default)]
    pub config: serde_json::Map<String, Value>,
    /// CPU time for one batch: instantiation, `init` and `process`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory cap, MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: usize,
    #[serde(default = "default_policy")]
    pub failure_policy: FailurePolicy,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Keeps what it drops instead of discarding it: stored in
    /// `filtered_events` under this traffic class (say `bot`), after the
    /// plugins that follow it (the privacy plugin still truncates its
    /// address), and never counted in a figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_dropped_as: Option<String>,
}

/// A `[[plugins]]` entry's `timeout` when it sets none.
pub fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
/// A `[[plugins]]` entry's `memory_mb` when it sets none.
pub fn default_memory_mb() -> usize {
    64
}
fn default_policy() -> FailurePolicy {
    FailurePolicy::FailOpen
}
fn yes() -> bool {
    true
}

/// `[plugin_host]`: the sandbox's shared settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// Where relative plugin paths point; defaults to the built-in plugins.
    pub dir: PathBuf,
    /// Batches judged at once, each on its own thread, off the async workers.
    pub workers: usize,
    /// No plugin may have a larger `memory_mb` (it sizes the memory pool).
    pub max_memory_mb: usize,
    /// A plugin that faults this many times…
    pub breaker_faults: usize,
    /// …within this window is disabled until the next reload.
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// A plugin's stdout and stderr kept per batch; the rest is dropped.
    pub output_bytes: usize,
    /// Text a plugin may return for one batch (modified events, rejection
    /// messages); more is a fault before any of it goes further. The copy
    /// out of its memory is bounded by its `memory_mb`.
    pub verdict_bytes: usize,
    /// Lines of plugin output logged per plugin per minute.
    pub log_lines_per_minute: u64,
    /// Where compiled plugins are kept between starts (`plugins::compile_cache`,
    /// keyed by the plugin's bytes and the engine's settings): a restart
    /// loads native code instead of compiling again (seconds of CPU for a
    /// JS or Python plugin). Anyone who can write here could have the
    /// server run their code: it must be private to the server's user, or
    /// it goes unused. `None` (no
    /// cache directory found) or `compile_cache = false`: every start
    /// compiles.
    pub cache_dir: Option<PathBuf>,
    pub compile_cache: bool,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            dir: PathBuf::from(BUILTIN_DIR),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_memory_mb: 256,
            breaker_faults: 5,
            breaker_window: Duration::from_secs(60),
            output_bytes: 16 * 1024,
            verdict_bytes: 16 << 20,
            log_lines_per_minute: 60,
            cache_dir: default_cache_dir(),
            compile_cache: true,
        }
    }
}

/// `$XDG_CACHE_HOME/bilten-analytics/plugins`, else under `~/.cache`: the
/// same place the build keeps the embedded engine.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bilten-analytics").join("plugins"))
}

/// The default chain: the four built-in plugins.
pub fn default_chain() -> Vec<PluginConfig> {
    let plugin = |name: &str, tables: &[&str], policy| PluginConfig {
        name: name.into(),
        path: PathBuf::from(format!("bilten_plugin_{name}.wasm")),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        event_types: Vec::new(),
        organizers: Vec::new(),
        config: Default::default(),
        timeout: default_timeout(),
        memory_mb: default_memory_mb(),
        failure_policy: policy,
        enabled: true,
        keep_dropped_as: None,
    };
    vec![
        // Bots first: no point checking or enriching what is dropped.
        plugin("bots", &["events", "page_views"], FailurePolicy::FailOpen),
        plugin("quality", &[], FailurePolicy::FailClosed),
        // Storing raw addresses because the privacy plugin failed would be
        // the wrong way to fail.
        plugin(
            "privacy",
            &["events", "page_views"],
            FailurePolicy::FailClosed,
        ),
        plugin("ua", &["events"], FailurePolicy::FailOpen),
    ]
}
