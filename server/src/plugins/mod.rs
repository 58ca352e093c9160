//! The Wasm plugin chain: sandboxed validators and enrichers, run once per
//! batch, in the configured order, between validation and the log.
//!
//! - [`host`]: wasmtime (engine, sandbox, limits, one call).
//! - [`chain`]: a batch through the plugins: verdicts, failure policies,
//!   the rows for `rejected_events` and `plugin_quarantine`.
//! - `compile_cache`: compiled plugins kept between starts, checked before
//!   they run.
//! - [`Plugins`]: the loaded chain behind an `ArcSwap` (a reload swaps it
//!   whole; batches in flight finish on the one they started with), the
//!   bounded worker pool, per-plugin stats and the crash-loop breaker.

pub mod chain;
mod compile_cache;
pub mod host;
mod layout;
pub mod trial;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::Table;
use host::{Compiled, FaultKind, Host, Limits};

pub use chain::ChainOutput;

pub use crate::config::plugins::{
    BUILTIN_DIR, FailurePolicy, HostSettings, PluginConfig, default_chain,
};
use crate::config::{ConfigError, invalid};

/// Why a plugin, or the chain, could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "cannot read {path}: {reason} (the built-in plugins are built by `cargo build`; see plugins/)"
    )]
    Read { path: PathBuf, reason: String },
    /// Not a component, the wrong interface version, or imports the sandbox
    /// does not provide.
    #[error(transparent)]
    Compile(#[from] host::Refused),
    /// A `[[plugins]]` entry, or the config file holding them, is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// It could not serve the sample events it was tried on.
    #[error("failed on sample events: {kind}: {detail}")]
    Samples { kind: &'static str, detail: String },
    #[error("it gave no name and version")]
    NoInfo,
    #[error("reload stopped: {0}")]
    Reload(String),
}

/// Counters of one plugin, kept across reloads of the same name.
#[derive(Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub nanos: AtomicU64,
    pub keep: AtomicU64,
    pub modify: AtomicU64,
    pub drop: AtomicU64,
    pub reject: AtomicU64,
    faults: [AtomicU64; 6],
    pub output_bytes_dropped: AtomicU64,
    pub log_lines_suppressed: AtomicU64,
    breaker: std::sync::Mutex<Breaker>,
    log_window: std::sync::Mutex<(Option<Instant>, u64)>,
}

#[derive(Default)]
struct Breaker {
    recent: VecDeque<Instant>,
    /// Why it was disabled.
    open: Option<String>,
}

impl Stats {
    fn fault(&self, kind: FaultKind) -> &AtomicU64 {
        &self.faults[FaultKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed")]
    }

    pub fn faults(&self, kind: FaultKind) -> u64 {
        self.fault(kind).load(Ordering::Relaxed)
    }

    pub fn disabled(&self) -> Option<String> {
        self.breaker.lock().expect("breaker lock").open.clone()
    }

    /// Counts a fault; opens the breaker at `limit` faults within `window`.
    fn record_fault(
        &self,
        name: &str,
        kind: FaultKind,
        detail: &str,
        limit: usize,
        window: Duration,
    ) {
        self.fault(kind).fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::PLUGIN_FAULTS, "plugin" => name.to_string(), "kind" => kind.name()).increment(1);
        if kind == FaultKind::Disabled {
            return;
        }
        let mut b = self.breaker.lock().expect("breaker lock");
        let now = Instant::now();
        b.recent.push_back(now);
        while b
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            b.recent.pop_front();
        }
        if b.open.is_none() && b.recent.len() >= limit {
            let why = format!(
                "{} faults within {:?}; the last: {} ({detail})",
                b.recent.len(),
                window,
                kind.name()
            );
            tracing::error!(plugin = name, reason = %why, "crash-loop breaker: plugin disabled until the next reload");
            b.open = Some(why);
        }
    }

    fn reset_breaker(&self) {
        *self.breaker.lock().expect("breaker lock") = Breaker::default();
    }

    /// Whether another line of this plugin's output may go to the log.
    fn may_log(&self, per_minute: u64) -> bool {
        let mut w = self.log_window.lock().expect("log window lock");
        if w.0.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *w = (Some(Instant::now()), 0);
        }
        w.1 += 1;
        w.1 <= per_minute
    }
}

/// A plugin as loaded: compiled, validated, with its settings.
pub struct Loaded {
    pub config: PluginConfig,
    pub config_json: String,
    pub tables: Vec<Table>,
    pub path: PathBuf,
    pub checksum: String,
    pub version: String,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    pub stats: Arc<Stats>,
    compiled: Compiled,
}

impl Loaded {
    fn limits(&self, settings: &HostSettings) -> Limits {
        Limits {
            timeout: self.config.timeout,
            memory_bytes: self.config.memory_mb << 20,
            output_bytes: settings.output_bytes,
        }
    }

    pub fn applies_to(&self, table: Table) -> bool {
        self.tables.is_empty() || self.tables.contains(&table)
    }

    pub fn sees_type(&self, event_type: &str) -> bool {
        self.config.event_types.is_empty()
            || self.config.event_types.iter().any(|t| t == event_type)
    }

    /// Whether it judges `organizer`'s events (`organizers`, all if none).
    pub fn sees_organizer(&self, organizer: &str) -> bool {
        self.config.organizers.is_empty() || self.config.organizers.iter().any(|o| o == organizer)
    }
}

/// The chain in force.
pub struct Chain {
    pub plugins: Vec<Arc<Loaded>>,
}

/// What a reload did to one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEntry {
    pub name: String,
    /// `loaded`, `reloaded`, `unchanged`, `removed`, `failed` or `disabled`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The plugin system: host, chain, workers.
pub struct Plugins {
    host: Host,
    settings: HostSettings,
    chain: ArcSwap<Chain>,
    /// Stats by plugin name, so counters survive reloads.
    stats: std::sync::Mutex<HashMap<String, Arc<Stats>>>,
    workers: tokio::sync::Semaphore,
    reload_lock: tokio::sync::Mutex<()>,
    /// The config file `[[plugins]]` came from: a reload reads it again.
    source: Option<PathBuf>,
}

impl Plugins {
    /// Builds the host and loads every enabled plugin. Any plugin that does
    /// not load is an error: a server should not start without the checks
    /// its operator configured.
    pub fn start(
        settings: HostSettings,
        configs: &[PluginConfig],
        source: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Plugins>> {
        let host =
            Host::new(&settings).map_err(|e| anyhow::anyhow!("starting the plugin host: {e:#}"))?;
        let plugins = Arc::new(Plugins {
            host,
            workers: tokio::sync::Semaphore::new(settings.workers.max(1)),
            settings,
            chain: ArcSwap::from_pointee(Chain {
                plugins: Vec::new(),
            }),
            stats: Default::default(),
            reload_lock: tokio::sync::Mutex::new(()),
            source,
        });
        check_configs(configs, &plugins.settings).map_err(|e| anyhow::anyhow!(e))?;
        let mut loaded = Vec::new();
        for cfg in configs.iter().filter(|c| c.enabled) {
            let plugin = plugins
                .load(cfg)
                .map_err(|e| anyhow::anyhow!("plugin {}: {e}", cfg.name))?;
            tracing::info!(plugin = %cfg.name, version = %plugin.version, path = %plugin.path.display(), "plugin loaded");
            loaded.push(Arc::new(plugin));
        }
        plugins.chain.store(Arc::new(Chain { plugins: loaded }));
        Ok(plugins)
    }

    pub fn chain(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    /// Batches judged at once (`plugin_host.workers`).
    pub fn workers(&self) -> usize {
        self.settings.workers.max(1)
    }

    /// Whether any plugin sees this table (if none, skip the pool entirely).
    pub fn applies_to(&self, table: Table) -> bool {
        self.chain
            .load()
            .plugins
            .iter()
            .any(|p| p.applies_to(table))
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.settings.dir.join(path)
        }
    }

    /// A plugin's file, read once: where it is, its bytes, their SHA-256.
    fn read(&self, cfg: &PluginConfig) -> Result<(PathBuf, Vec<u8>, String), PluginError> {
        let path = self.resolve(&cfg.path);
        let wasm = std::fs::read(&path).map_err(|e| PluginError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let checksum = hex(&Sha256::digest(&wasm));
        Ok((path, wasm, checksum))
    }

    /// Reads, compiles and validates one plugin (blocking: compiling takes
    /// a while).
    fn load(&self, cfg: &PluginConfig) -> Result<Loaded, PluginError> {
        self.load_from(cfg, self.read(cfg)?)
    }

    fn load_from(
        &self,
        cfg: &PluginConfig,
        (path, wasm, checksum): (PathBuf, Vec<u8>, String),
    ) -> Result<Loaded, PluginError> {
        let compiled = self.host.compile(&wasm)?;
        let stats = self
            .stats
            .lock()
            .expect("stats lock")
            .entry(cfg.name.clone())
            .or_default()
            .clone();
        let tables = cfg
            .tables
            .iter()
            .map(|t| parse_table(&cfg.name, t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut plugin = Loaded {
            config: cfg.clone(),
            config_json: Value::Object(cfg.config.clone()).to_string(),
            tables,
            path,
            checksum,
            version: String::new(),
            loaded_at: chrono::Utc::now(),
            stats,
            compiled,
        };
        plugin.version = self.validate(&plugin)?;
        Ok(plugin)
    }

    /// Runs a plugin on sample events of each table it sees: it must
    /// instantiate, accept its config and answer one verdict per event.
    fn validate(&self, plugin: &Loaded) -> Result<String, PluginError> {
        let now = chrono::Utc::now().timestamp_millis();
        let samples = chain::samples(now);
        let batch = chain::batch_of(
            samples
                .iter()
                .filter(|(t, _)| plugin.applies_to(*t))
                .map(|(_, row)| row),
        );
        let (result, output) = self.host.call(
            &plugin.compiled,
            &plugin.config_json,
            &batch,
            plugin.limits(&self.settings),
            now,
            true,
        );
        self.log_output(plugin, &output);
        match result {
            Ok((Some(info), _)) => Ok(format!("{} {}", info.name, info.version)),
            Ok((None, _)) => Err(PluginError::NoInfo),
            Err(fault) => Err(PluginError::Samples {
                kind: fault.kind.name(),
                detail: fault.detail,
            }),
        }
    }

    /// Runs a batch through the chain on the worker pool.
    pub async fn run(
        self: &Arc<Self>,
        table: Table,
        parsed: crate::ingest::Parsed,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ChainOutput {
        let chain = self.chain();
        let _permit = self.workers.acquire().await.expect("never closed");
        let this = self.clone();
        tokio::task::spawn_blocking(move || chain::run(&this, &chain, table, parsed, now))
            .await
            .expect("the plugin chain does not panic")
    }

    /// Runs a batch through the chain on this thread (the benches use it).
    pub fn run_blocking(
        &self,
        table: Table,
        parsed: crate::ingest::Parsed,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ChainOutput {
        chain::run(self, &self.chain(), table, parsed, now)
    }

    /// Logs a call's output, tagged, within the plugin's line budget.
    fn log_output(&self, plugin: &Loaded, output: &host::Output) {
        let name = plugin.config.name.as_str();
        if output.dropped > 0 {
            plugin
                .stats
                .output_bytes_dropped
                .fetch_add(output.dropped as u64, Ordering::Relaxed);
        }
        for line in String::from_utf8_lossy(&output.text).lines() {
            if plugin.stats.may_log(self.settings.log_lines_per_minute) {
                tracing::info!(plugin = name, "{line}");
            } else {
                plugin
                    .stats
                    .log_lines_suppressed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Loads what changed on disk (or in the config file), validates each
    /// plugin, and swaps the whole chain at once. A plugin that fails keeps
    /// its old version running.
    pub async fn reload(self: &Arc<Self>) -> Result<Vec<ReloadEntry>, PluginError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.reload_blocking())
            .await
            .map_err(|e| PluginError::Reload(e.to_string()))?
    }

    fn reload_blocking(&self) -> Result<Vec<ReloadEntry>, PluginError> {
        let configs = match &self.source {
            Some(file) => crate::config::Config::load(Some(file))?.plugins,
            None => self
                .chain()
                .plugins
                .iter()
                .map(|p| p.config.clone())
                .collect(),
        };
        check_configs(&configs, &self.settings)?;
        let old = self.chain();
        let mut entries = Vec::new();
        let mut next = Vec::new();
        for cfg in &configs {
            let previous = old.plugins.iter().find(|p| p.config.name == cfg.name);
            if !cfg.enabled {
                entries.push(entry(&cfg.name, "disabled", None, None));
                continue;
            }
            let file = self.read(cfg);
            let unchanged = previous.is_some_and(|p| {
                p.config == *cfg
                    && file.as_ref().is_ok_and(|(_, _, sum)| *sum == p.checksum)
                    && p.stats.disabled().is_none()
            });
            if unchanged {
                let p = previous.expect("checked").clone();
                entries.push(entry(&cfg.name, "unchanged", Some(p.version.clone()), None));
                next.push(p);
                continue;
            }
            match file.and_then(|file| self.load_from(cfg, file)) {
                Ok(plugin) => {
                    plugin.stats.reset_breaker();
                    let action = if previous.is_some() {
                        "reloaded"
                    } else {
                        "loaded"
                    };
                    tracing::info!(plugin = %cfg.name, version = %plugin.version, action, "plugin reload");
                    entries.push(entry(&cfg.name, action, Some(plugin.version.clone()), None));
                    next.push(Arc::new(plugin));
                }
                Err(e) => {
                    tracing::warn!(plugin = %cfg.name, error = %e, "plugin reload failed; the old version keeps running");
                    entries.push(entry(
                        &cfg.name,
                        "failed",
                        previous.map(|p| p.version.clone()),
                        Some(e.to_string()),
                    ));
                    if let Some(p) = previous {
                        next.push(p.clone());
                    }
                }
            }
        }
        for p in &old.plugins {
            if !configs.iter().any(|c| c.name == p.config.name) {
                entries.push(entry(
                    &p.config.name,
                    "removed",
                    Some(p.version.clone()),
                    None,
                ));
            }
        }
        self.chain.store(Arc::new(Chain { plugins: next }));
        Ok(entries)
    }

    /// For `GET /admin/plugins`.
    pub fn status(&self) -> Value {
        let chain = self.chain();
        let plugins: Vec<Value> = chain
            .plugins
            .iter()
            .map(|p| {
                let s = &p.stats;
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let events = load(&s.events);
                let faults: serde_json::Map<String, Value> = FaultKind::ALL
                    .iter()
                    .map(|k| (k.name().to_string(), json!(s.faults(*k))))
                    .collect();
                let disabled = s.disabled();
                json!({
                    "name": p.config.name,
                    "version": p.version,
                    "path": p.path,
                    "checksum": format!("sha256:{}", p.checksum),
                    "loaded_at": p.loaded_at,
                    "state": if disabled.is_some() { "disabled" } else { "active" },
                    "disabled_reason": disabled,
                    "failure_policy": p.config.failure_policy,
                    "tables": p.tables.iter().map(|t| t.name()).collect::<Vec<_>>(),
                    "event_types": p.config.event_types,
                    "organizers": p.config.organizers,
                    "keep_dropped_as": p.config.keep_dropped_as,
                    "limits": { "timeout_ms": p.config.timeout.as_millis() as u64, "memory_mb": p.config.memory_mb },
                    "calls": load(&s.batches),
                    "events": events,
                    "verdicts": { "keep": load(&s.keep), "modify": load(&s.modify), "drop": load(&s.drop), "reject": load(&s.reject) },
                    "faults": faults,
                    "ns_per_event": if events == 0 { 0.0 } else { load(&s.nanos) as f64 / events as f64 },
                    "output_bytes_dropped": load(&s.output_bytes_dropped),
                    "log_lines_suppressed": load(&s.log_lines_suppressed),
                })
            })
            .collect();
        let cache = self.host.compile_cache().map(
            |(dir, loaded, compiled)| json!({ "dir": dir, "loaded": loaded, "compiled": compiled }),
        );
        json!({
            "interface": format!("bilten:plugin@{}", host::INTERFACE_VERSION),
            "compile_cache": cache,
            "plugins": plugins,
        })
    }

    /// For `/admin/health`: degraded while any plugin is disabled.
    pub fn health(&self) -> Value {
        let chain = self.chain();
        let disabled: Vec<Value> = chain
            .plugins
            .iter()
            .filter_map(|p| {
                p.stats
                    .disabled()
                    .map(|why| json!({ "name": p.config.name, "reason": why }))
            })
            .collect();
        let faults: u64 = chain
            .plugins
            .iter()
            .map(|p| {
                FaultKind::ALL
                    .iter()
                    .map(|k| p.stats.faults(*k))
                    .sum::<u64>()
            })
            .sum();
        json!({
            "status": if disabled.is_empty() { "ok" } else { "degraded" },
            "loaded": chain.plugins.len(),
            "disabled": disabled,
            "faults": faults,
        })
    }
}

fn entry(
    name: &str,
    action: &'static str,
    version: Option<String>,
    error: Option<String>,
) -> ReloadEntry {
    ReloadEntry {
        name: name.to_string(),
        action,
        version,
        error,
    }
}

fn parse_table(plugin: &str, name: &str) -> Result<Table, ConfigError> {
    Table::INGEST
        .into_iter()
        .find(|t| t.name() == name || t.route() == name)
        .ok_or_else(|| {
            invalid(
                format!("plugin {plugin}: tables"),
                format!("unknown table {name:?} (events, page_views or ticket_sales)"),
            )
        })
}

/// Names unique and non-empty, tables known, limits within the host's.
fn check_configs(configs: &[PluginConfig], settings: &HostSettings) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for c in configs {
        if c.name.trim().is_empty() {
            return Err(invalid("plugins", "every [[plugins]] entry needs a name"));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(invalid(
                "plugins",
                format!("two plugins are named {:?}", c.name),
            ));
        }
        for t in &c.tables {
            parse_table(&c.name, t)?;
        }
        if c.memory_mb == 0 || c.memory_mb > settings.max_memory_mb {
            return Err(invalid(
                format!("plugin {}: memory_mb", c.name),
                format!(
                    "must be from 1 to plugin_host.max_memory_mb ({}), got {}",
                    settings.max_memory_mb, c.memory_mb
                ),
            ));
        }
        if c.timeout.is_zero() {
            return Err(invalid(
                format!("plugin {}: timeout", c.name),
                "must be more than 0",
            ));
        }
        // Compared as events carry them: a space too many and the plugin
        // would silently judge nothing. As long as ingest takes them.
        let most = match Table::Events.field("organizer_id").map(|f| f.kind) {
            Some(bilten_schema::Kind::Text(n)) => n,
            _ => unreachable!("organizer_id is a text field of events"),
        };
        if let Some(o) = c
            .organizers
            .iter()
            .find(|o| o.is_empty() || o.chars().count() > most || o.trim() != o.as_str())
        {
            return Err(invalid(
                format!("plugin {}: organizers", c.name),
                format!(
                    "an organizer id is 1 to {most} characters, without spaces around it, got {:?}",
                    o.chars().take(64).collect::<String>()
                ),
            ));
        }
        if let Some(class) = &c.keep_dropped_as
            && !traffic_class(class)
        {
            return Err(invalid(
                format!("plugin {}: keep_dropped_as", c.name),
                format!(
                    "a traffic class is 1 to 32 lowercase letters, digits, '_' or '-', got {class:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// A traffic class a plugin may keep what it drops under: a short plain
/// name, safe in a table and on a dashboard.
fn traffic_class(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
