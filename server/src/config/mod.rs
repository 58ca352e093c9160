//! One configuration struct: defaults in `Default` impls, a TOML file on top,
//! environment variables on top of that, validated once at start.
//!
//! Every setting has an environment name: `BILTEN_` plus its path with `__`
//! between levels (`BILTEN_BATCH__MAX_ROWS=500`). A few common ones also have
//! short names: `BILTEN_ADMIN_TOKEN`, `BILTEN_INGEST_KEYS` and
//! `BILTEN_READ_KEYS`, `BILTEN_PUBLIC_KEYS`, `BILTEN_TRUSTED_PROXIES` (comma-separated),
//! `BILTEN_LISTEN`, `BILTEN_STORAGE`, `BILTEN_DATA_DIR`, `BILTEN_CHDB_LIB`,
//! `BILTEN_CLICKHOUSE_URL`, `_USER`, `_PASSWORD`, `_DATABASE`, `_CLUSTER`,
//! `BILTEN_CLICKHOUSE_HTTP_LISTEN`, `BILTEN_CLICKHOUSE_HTTP_USERS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod browser;
pub mod clickhouse_http;
mod keys;
pub mod plugins;
pub mod retention;

pub use clickhouse_http::{ClickHouseHttpConfig, HttpUser};
pub use keys::{ScopedKey, SecretDigest, same_secret};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// The file or the environment does not fit the settings' types
    /// (figment's messages, which name the key and the source).
    #[error("{0}")]
    Parse(String),
    /// A value is refused: the setting, and why.
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

/// A refused setting.
pub fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens. Loopback by default: exposing it needs keys.
    pub listen: SocketAddr,
    /// Bearer token for `/admin`. Without one the admin routes are refused.
    pub admin_token: Option<String>,
    /// When non-empty, ingest routes need one of these keys: `KEY`, or
    /// `KEY@organizer` for one organizer's events only.
    #[serde(deserialize_with = "keys::key_list")]
    pub ingest_keys: Vec<ScopedKey>,
    /// Keys that sign in to `/dashboard` and see one organizer's figures:
    /// `KEY@org-123` entries (`BILTEN_READ_KEYS`, comma-separated). They
    /// write nothing and reach no `/admin` route.
    #[serde(deserialize_with = "keys::key_list")]
    pub read_keys: Vec<ScopedKey>,
    /// Apply pending `sql/` migrations when the server starts.
    pub migrate_on_start: bool,
    pub storage: StorageConfig,
    pub batch: BatchConfig,
    pub ingest: IngestConfig,
    pub wal: WalSettings,
    pub retention: retention::RetentionConfig,
    pub backups: BackupSettings,
    pub health: HealthSettings,
    /// Countries from client addresses (`geo`).
    pub geo: GeoSettings,
    /// Visits (the server's sessions) and where they came from (`visits`).
    pub visits: VisitSettings,
    /// Keys kept in the engine and shared by every server of a store (`tenants`).
    pub tenants: TenantSettings,
    /// Serve HTTPS (rustls) with this certificate chain and key, PEM files.
    pub tls: Option<TlsSettings>,
    /// On SIGTERM, how long to keep flushing before exiting; what is left
    /// stays in the write-ahead log for the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The Wasm plugin chain, in order (`[[plugins]]`). Defaults to the
    /// four built-ins; `plugins = []` runs none.
    pub plugins: Vec<plugins::PluginConfig>,
    pub plugin_host: plugins::HostSettings,
    /// ClickHouse's HTTP interface on the embedded engine; off by default.
    pub clickhouse_http: ClickHouseHttpConfig,
    /// Public keys for web pages, and trusted proxies.
    pub browser: browser::BrowserConfig,
    /// The file this was loaded from: a plugin reload reads it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalSettings {
    /// Acknowledge only rows that are fsynced to the log. Off: a crash loses
    /// what is buffered (for benchmarks and throwaway setups).
    pub enabled: bool,
    /// Defaults to `<storage.embedded.data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// A segment file is closed at this size.
    pub segment_bytes: u64,
    /// When the unconfirmed log reaches this, ingest answers 503 with
    /// Retry-After: memory and disk stay bounded while storage is down.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Backups kept; older ones are deleted after each new one (never the
    /// full backup a kept incremental one builds on).
    pub keep: usize,
    /// With a ClickHouse server: the disk of its configuration to write to.
    /// Embedded backups go to `<data_dir>/backups`.
    pub disk: String,
    /// The secret the backup catalog's rows are signed with (servers that
    /// share a catalog share it; env `BILTEN_BACKUPS__SIGNING_KEY`). Unset:
    /// a random key kept in `<data_dir>/backup-catalog.key`.
    pub signing_key: Option<String>,
}

/// Keys kept in the engine (`tenants`): every server that shares a store
/// reads the same, sealed with the same secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// The secret key records are sealed with and key secrets hashed with
    /// (env `BILTEN_TENANTS__SIGNING_KEY`): every server of a store needs the
    /// same. Unset: 32 random bytes kept in `<data_dir>/tenants.key`, which
    /// suits one server.
    pub signing_key: Option<String>,
    /// How often a server reads the changes others made: a key created,
    /// rotated or revoked on one server holds on the others within this
    /// and a second.
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
    /// How long a rotated-out secret keeps working when a rotation names
    /// no grace period.
    #[serde(with = "humantime_serde")]
    pub rotation_grace: Duration,
    /// When the store's keys could not be read for this long, keys kept
    /// there are refused (503, clients retry) rather than trusted: a key
    /// revoked on another server meanwhile would still work here.
    /// Configured keys are not affected.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            signing_key: None,
            poll_every: Duration::from_secs(1),
            rotation_grace: Duration::from_secs(24 * 3600),
            max_stale: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// `/admin/health` reports the disks degraded when any storage disk has
    /// less than this share of its space free (0 turns the check off).
    pub min_free_disk_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoSettings {
    /// Look up each event's country from its address.
    pub enabled: bool,
    /// The country database (MaxMind DB format, `country_code` per range);
    /// default: the one the build fetched, or a newer one
    /// `bilten-analytics geo update` put beside it.
    pub database: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisitSettings {
    /// Follow visits and their origins, and credit sales to them. Off: the
    /// columns stay empty (and `visits` and attribution with them).
    pub enabled: bool,
    /// A visitor's next event after this long without one starts a new visit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most visitors followed at once, most buyers whose touches are kept,
    /// and most visits whose figures are kept between writes: typically a
    /// few hundred bytes each, at most about 2.6 KB a visitor, 4.8 KB a
    /// buyer and 1 KB a visit (`visits/`). Past it, the tenth seen longest
    /// ago is forgotten at once (visits' figures: those touched longest
    /// ago, written a last time, closed).
    pub max_open: usize,
    /// A ticket sale is credited to its buyer's visits of this long before it.
    #[serde(with = "humantime_serde")]
    pub attribution_window: Duration,
    /// A visit that changed is written to `visits` at most this often (and
    /// when the server stops): how soon the Stats API sees it.
    #[serde(with = "humantime_serde")]
    pub write_every: Duration,
}

impl VisitSettings {
    /// How long a visit may stay open after its latest line was written:
    /// idle up to the timeout and the 5 minutes the tally waits for rows in
    /// flight, its line written up to `write_every` after its last change,
    /// and 5 minutes of slack. What the Stats API reads open visits from,
    /// and how far back a start after a crash looks for them.
    pub fn open_window(&self) -> Duration {
        self.timeout + self.write_every + Duration::from_secs(600)
    }
}

impl Default for VisitSettings {
    fn default() -> Self {
        VisitSettings {
            enabled: true,
            timeout: Duration::from_secs(30 * 60),
            max_open: 200_000,
            attribution_window: Duration::from_secs(30 * 86_400),
            write_every: Duration::from_secs(10),
        }
    }
}

impl Default for GeoSettings {
    fn default() -> Self {
        GeoSettings {
            enabled: true,
            database: None,
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            min_free_disk_percent: 10.0,
        }
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            keep: 7,
            disk: "backups".into(),
            signing_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The ClickHouse engine in-process (chDB): nothing else to run.
    Embedded,
    /// A ClickHouse server or cluster over HTTP.
    Clickhouse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    pub embedded: EmbeddedConfig,
    pub clickhouse: ClickHouseConfig,
    /// Bounds on `/admin/query`, enforced by the engine.
    pub query_limits: QueryLimits,
}

/// What one read-only admin query may take. The engine enforces each one
/// (`max_execution_time`, `max_memory_usage`, `max_result_bytes`); the
/// concurrency bound is ours, so admin queries cannot take the engine
/// calls that inserts need.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_memory_bytes: u64,
    pub max_result_bytes: u64,
    /// Admin queries running at once; more wait their turn.
    pub concurrency: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            max_memory_bytes: 2 << 30,
            max_result_bytes: 100 << 20,
            concurrency: 2,
        }
    }
}

impl QueryLimits {
    /// The limits as ClickHouse settings.
    pub fn settings(&self) -> [(&'static str, String); 3] {
        [
            (
                "max_execution_time",
                self.timeout.as_secs_f64().max(0.001).to_string(),
            ),
            ("max_memory_usage", self.max_memory_bytes.to_string()),
            ("max_result_bytes", self.max_result_bytes.to_string()),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Engine data, its generated config and logs live here.
    pub data_dir: PathBuf,
    /// `libchdb.so` to load; defaults to the one the build fetched.
    pub library: Option<PathBuf>,
    /// The cold and archive volumes (the hot one is `data_dir` itself);
    /// default `<data_dir>/cold` and `<data_dir>/archive`. Point them at
    /// other disks: that is what they are for.
    pub cold_dir: Option<PathBuf>,
    pub archive_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// Longest any one call (insert, query, DDL) may take before it counts
    /// as failed and is retried; a stalled server must not wedge the flushers.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A cluster in the server's `remote_servers`: migrations and DDL are
    /// rendered for it (`storage::cluster`). None: one server.
    pub cluster: Option<String>,
    /// Where this server keeps its records (audit log, backup catalog,
    /// migration records): `bilten_system`, or, when the ClickHouse is
    /// another server's HTTP interface, that interface's
    /// `clickhouse_http.system_database` (`bilten_remote`).
    pub system_database: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A table's buffer is flushed when it holds this many rows…
    pub max_rows: usize,
    /// …or when its oldest row is this old.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Under load an insert carries whatever gathered while the table's
    /// previous one ran, and a table is inserted into at most once per
    /// `min_interval`: inserts grow instead of multiplying (each one is a
    /// part in the table and in every view).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// The most rows one insert carries; past it a buffer is sealed at once.
    pub max_insert_rows: usize,
    /// The most bytes (of JSONEachRow) one insert carries.
    pub max_insert_bytes: usize,
    /// Backoff between retries of a failed insert doubles from this…
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// …up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Inserts that may run at once.
    pub flush_workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest request body, after gzip decompression.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Ingest requests served at once; more get 503 at once (load shedding).
    pub max_in_flight: usize,
    /// An event id seen again within this window is dropped as a duplicate.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Most event ids remembered for that.
    pub dedup_capacity: u64,
    /// `?wait=true` waits this long for storage; then it answers 202 with
    /// `stored` absent (the rows are durable in the log all the same).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            ingest_keys: Vec::new(),
            read_keys: Vec::new(),
            migrate_on_start: true,
            storage: StorageConfig::default(),
            batch: BatchConfig::default(),
            ingest: IngestConfig::default(),
            wal: WalSettings::default(),
            retention: Default::default(),
            backups: BackupSettings::default(),
            health: HealthSettings::default(),
            geo: GeoSettings::default(),
            visits: VisitSettings::default(),
            tenants: TenantSettings::default(),
            tls: None,
            shutdown_timeout: Duration::from_secs(30),
            plugins: plugins::default_chain(),
            plugin_host: Default::default(),
            clickhouse_http: Default::default(),
            browser: Default::default(),
            source: None,
        }
    }
}

impl Default for WalSettings {
    fn default() -> Self {
        WalSettings {
            enabled: true,
            dir: None,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Embedded,
            embedded: EmbeddedConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            query_limits: QueryLimits::default(),
        }
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            data_dir: PathBuf::from("./data"),
            library: None,
            cold_dir: None,
            archive_dir: None,
        }
    }
}

impl EmbeddedConfig {
    pub fn cold_dir(&self) -> PathBuf {
        self.cold_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cold"))
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.archive_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("archive"))
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.data_dir.join("backups")
    }

    pub fn library_path(&self) -> PathBuf {
        self.library
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("BILTEN_CHDB_DEFAULT_LIB")))
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: None,
            database: crate::model::DATABASE.into(),
            timeout: Duration::from_secs(60),
            cluster: None,
            system_database: crate::model::SYSTEM_DATABASE.into(),
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 1000,
            max_age: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            max_insert_rows: 100_000,
            max_insert_bytes: 64 << 20,
            retry_initial_backoff: Duration::from_millis(200),
            retry_max_backoff: Duration::from_secs(30),
            flush_workers: 2,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 10 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_in_flight: 256,
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 1_000_000,
            wait_timeout: Duration::from_secs(10),
        }
    }
}

/// Short environment names for the settings people change most.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("storage", "storage.backend"),
    ("data_dir", "storage.embedded.data_dir"),
    ("chdb_lib", "storage.embedded.library"),
    ("clickhouse_url", "storage.clickhouse.url"),
    ("clickhouse_user", "storage.clickhouse.user"),
    ("clickhouse_cluster", "storage.clickhouse.cluster"),
    ("clickhouse_http_listen", "clickhouse_http.listen"),
    ("clickhouse_http_users", "clickhouse_http.users"),
    ("clickhouse_password", "storage.clickhouse.password"),
    ("clickhouse_database", "storage.clickhouse.database"),
    (
        "clickhouse_system_database",
        "storage.clickhouse.system_database",
    ),
    ("public_keys", "browser.public_keys"),
    ("trusted_proxies", "browser.trusted_proxies"),
];

/// Top-level settings: the keys of [`Config`] itself, read from its
/// serialized defaults so that a new section is never forgotten here. Other
/// `BILTEN_*` variables (the build's `BILTEN_CHDB_CACHE`, the CLI's
/// `BILTEN_CONFIG`, loadgen's `BILTEN_INGEST_KEY`) are not the server's and
/// are left alone.
fn top_level() -> Vec<String> {
    // `tls` is `None` by default and still a key (serialized as null).
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Where the write-ahead log lives.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.embedded.data_dir.join("wal"))
    }

    /// Defaults, then the TOML file if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let top_level = top_level();
        let env = Env::prefixed("BILTEN_")
            .filter(move |k| {
                let key = k.as_str().to_ascii_lowercase();
                let top = key.split("__").next().unwrap_or("");
                top_level.iter().any(|t| t == top)
                    || ENV_ALIASES.iter().any(|(alias, _)| *alias == key)
            })
            .map(|k| {
                let key = k.as_str().to_ascii_lowercase();
                match ENV_ALIASES.iter().find(|(alias, _)| *alias == key) {
                    Some((_, path)) => (*path).into(),
                    None => key.replace("__", ".").into(),
                }
            })
            .lowercase(false);
        let mut config: Config = figment.merge(env).extract().map_err(|e| {
            ConfigError::Parse(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.validate()?;
        config.source = file.map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()));
        Ok(config)
    }

    /// Rules no single field can check on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch.max_rows == 0 {
            return Err(invalid("batch.max_rows", "must be at least 1"));
        }
        if self.batch.max_age.is_zero() {
            return Err(invalid("batch.max_age", "must be more than 0"));
        }
        if self.tenants.poll_every < Duration::from_millis(100)
            || self.tenants.poll_every > Duration::from_secs(60)
        {
            return Err(invalid("tenants.poll_every", "must be from 100ms to 60s"));
        }
        if self.tenants.max_stale < self.tenants.poll_every * 2 {
            return Err(invalid(
                "tenants.max_stale",
                "must be at least twice tenants.poll_every",
            ));
        }
        if self.tenants.rotation_grace > Duration::from_secs(366 * 86_400) {
            return Err(invalid(
                "tenants.rotation_grace",
                "must be at most 366 days",
            ));
        }
        if self
            .tenants
            .signing_key
            .as_ref()
            .is_some_and(|k| k.len() < 32)
        {
            return Err(invalid(
                "tenants.signing_key",
                "must be at least 32 characters (say, `openssl rand -hex 32`)",
            ));
        }
        if self.visits.timeout < Duration::from_secs(1)
            || self.visits.timeout > Duration::from_secs(86_400)
        {
            return Err(invalid("visits.timeout", "must be from 1s to 24h"));
        }
        if self.visits.write_every < Duration::from_millis(100)
            || self.visits.write_every > Duration::from_secs(600)
        {
            return Err(invalid("visits.write_every", "must be from 100ms to 10min"));
        }
        if self.visits.attribution_window > Duration::from_secs(366 * 86_400) {
            return Err(invalid(
                "visits.attribution_window",
                "must be at most 366 days",
            ));
        }
        if self.batch.max_insert_rows < self.batch.max_rows {
            return Err(invalid(
                "batch.max_insert_rows",
                "must be at least batch.max_rows",
            ));
        }
        if self.batch.max_insert_bytes == 0 {
            return Err(invalid("batch.max_insert_bytes", "must be more than 0"));
        }
        if self.batch.flush_workers == 0 {
            return Err(invalid("batch.flush_workers", "must be at least 1"));
        }
        if self.ingest.max_in_flight == 0 {
            return Err(invalid("ingest.max_in_flight", "must be at least 1"));
        }
        if self.wal.max_bytes < self.ingest.max_body_bytes as u64 {
            return Err(invalid(
                "wal.max_bytes",
                "must be at least ingest.max_body_bytes",
            ));
        }
        if self.ingest.max_events_per_request == 0 {
            return Err(invalid(
                "ingest.max_events_per_request",
                "must be at least 1",
            ));
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        self.retention.validate()?;
        self.clickhouse_http
            .validate(matches!(self.storage.backend, Backend::Embedded))?;
        if let Some(cluster) = &self.storage.clickhouse.cluster {
            if cluster.is_empty()
                || !cluster
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    "storage.clickhouse.cluster",
                    "a cluster name from remote_servers: letters, digits, '_' and '-'",
                ));
            }
            if matches!(self.storage.backend, Backend::Embedded) {
                return Err(invalid(
                    "storage.clickhouse.cluster",
                    "is for storage.backend = \"clickhouse\"; the embedded engine is one node",
                ));
            }
        }
        for (at, db) in [
            (
                "storage.clickhouse.database",
                &self.storage.clickhouse.database,
            ),
            (
                "storage.clickhouse.system_database",
                &self.storage.clickhouse.system_database,
            ),
        ] {
            if !crate::model::plain_identifier(db) {
                return Err(invalid(at, format!("{db:?}: letters, digits and '_' only")));
            }
        }
        if self.storage.clickhouse.system_database == self.storage.clickhouse.database {
            return Err(invalid(
                "storage.clickhouse.system_database",
                "must differ from storage.clickhouse.database: a restore of the data must not \
                 roll the records back",
            ));
        }
        let q = &self.storage.query_limits;
        for (name, zero) in [
            ("timeout", q.timeout.is_zero()),
            ("max_memory_bytes", q.max_memory_bytes == 0),
            ("max_result_bytes", q.max_result_bytes == 0),
            ("concurrency", q.concurrency == 0),
        ] {
            if zero {
                return Err(invalid(
                    format!("storage.query_limits.{name}"),
                    "must be above 0",
                ));
            }
        }
        if !(0.0..=100.0).contains(&self.health.min_free_disk_percent) {
            return Err(invalid(
                "health.min_free_disk_percent",
                "must be between 0 and 100",
            ));
        }
        if let Some(tls) = &self.tls {
            for (what, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(invalid(what, format!("no file at {}", path.display())));
                }
            }
        }
        if self.admin_token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("admin_token", "is set but empty"));
        }
        for entry in &self.read_keys {
            match entry.organizer.as_deref() {
                Some(organizer) if entry.key.len() >= 16 && !organizer.is_empty() => {}
                _ => {
                    return Err(invalid(
                        "read_keys",
                        "each entry is KEY@organizer_id, the key at least 16 characters \
                         (a read key sees one organizer's figures)",
                    ));
                }
            }
        }
        for entry in &self.ingest_keys {
            if entry.key.is_empty() || entry.organizer.as_deref() == Some("") {
                return Err(invalid(
                    "ingest_keys",
                    "each entry is KEY, or KEY@organizer_id for one organizer's events",
                ));
            }
        }
        // A read key too: a public key is published in pages, and one equal
        // to a read key would sign anyone in to that organizer's dashboard.
        let secrets: Vec<&str> = (self.ingest_keys.iter().map(|k| k.key.as_str()))
            .chain(self.read_keys.iter().map(|k| k.key.as_str()))
            .chain(self.admin_token.as_deref())
            .collect();
        self.browser.validate(&secrets)?;
        if !self.listen.ip().is_loopback()
            && (self.admin_token.is_none() || self.ingest_keys.is_empty())
        {
            return Err(invalid(
                "listen",
                format!(
                    "refusing to listen on {}, which is not a loopback address, without an admin \
                     token and ingest keys: set BILTEN_ADMIN_TOKEN and BILTEN_INGEST_KEYS",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// A TOML list of `T`, or one string of comma-separated items (as from the
/// environment), each read by `item`; blank items are skipped. An item
/// `item` cannot read is refused, naming `setting` and the form its items
/// take (`expected`, said to the operator).
fn list_or_items<'de, D, T>(
    d: D,
    (setting, expected): (&str, &str),
    item: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        List(Vec<T>),
        One(String),
    }
    match Either::deserialize(d)? {
        Either::List(list) => Ok(list),
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                item(s).ok_or_else(|| {
                    serde::de::Error::custom(format_args!("{setting}: each item is {expected}"))
                })
            })
            .collect(),
    }
}

/// Accepts a TOML list or one comma-separated string (as from the environment).
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<String> = list_or_items(d, ("a list", "text"), |s| Some(s.to_string()))?;
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
// figment's `Jail` closures return its large error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn defaults_need_no_file() {
        figment::Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(c.batch.max_rows, 1000);
            assert_eq!(c.batch.max_age, Duration::from_secs(5));
            assert_eq!(c.storage.backend, Backend::Embedded);
            Ok(())
        });
    }

    #[test]
    fn query_limits_and_the_database_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILTEN_STORAGE__QUERY_LIMITS__TIMEOUT", "5s");
            jail.set_env("BILTEN_STORAGE__QUERY_LIMITS__CONCURRENCY", "1");
            let c = Config::load(None).unwrap();
            assert_eq!(c.storage.query_limits.timeout, Duration::from_secs(5));
            assert_eq!(c.storage.query_limits.concurrency, 1);
            assert_eq!(c.storage.query_limits.max_result_bytes, 100 << 20);
            jail.set_env("BILTEN_CLICKHOUSE_DATABASE", "staging");
            let c = Config::load(None).unwrap();
            assert_eq!(c.storage.clickhouse.database, "staging");
            jail.set_env("BILTEN_CLICKHOUSE_DATABASE", "staging; DROP");
            match Config::load(None).unwrap_err() {
                ConfigError::Invalid { setting, reason } => {
                    assert_eq!(setting, "storage.clickhouse.database");
                    assert!(reason.contains("letters, digits"), "{reason}");
                }
                other => panic!("{other}"),
            }
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "b.toml",
                "[batch]\nmax_rows = 10\nmax_age = \"2s\"\n[storage]\nbackend = \"clickhouse\"\n",
            )?;
            jail.set_env("BILTEN_BATCH__MAX_ROWS", "20");
            jail.set_env("BILTEN_INGEST_KEYS", "k1, k2");
            jail.set_env("BILTEN_DATA_DIR", "/tmp/x");
            jail.set_env("BILTEN_SKIP_CHDB_FETCH", "1");
            jail.set_env("BILTEN_WAL__ENABLED", "false");
            jail.set_env("BILTEN_SHUTDOWN_TIMEOUT", "3s");
            // Sections added later are read from the environment too.
            jail.set_env("BILTEN_VISITS__ENABLED", "false");
            jail.set_env("BILTEN_GEO__ENABLED", "false");
            jail.set_env("BILTEN_RETENTION__DEFAULT__DELETE_AFTER", "1000days");
            let c = Config::load(Some(Path::new("b.toml"))).unwrap();
            assert_eq!(c.batch.max_rows, 20);
            assert_eq!(c.batch.max_age, Duration::from_secs(2));
            let entries: Vec<String> = c.ingest_keys.into_iter().map(String::from).collect();
            assert_eq!(entries, vec!["k1", "k2"]);
            assert_eq!(c.storage.embedded.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(c.storage.backend, Backend::Clickhouse);
            assert!(!c.wal.enabled);
            assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
            assert!(!c.visits.enabled && !c.geo.enabled);
            assert_eq!(
                c.retention.default.delete_after,
                Some(Duration::from_secs(1000 * 86_400))
            );
            Ok(())
        });
    }

    #[test]
    fn rejects_bad_settings_with_clear_messages() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[batch]\nmax_rowz = 10\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Parse(m) if m.contains("max_rowz")),
                "{err}"
            );
            assert!(matches!(
                Config::load(Some(Path::new("missing.toml"))),
                Err(ConfigError::MissingFile(_))
            ));
            jail.set_env("BILTEN_LISTEN", "0.0.0.0:8080");
            let err = Config::load(None).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { setting, reason }
                    if setting == "listen" && reason.contains("not a loopback address")),
                "{err}"
            );
            jail.set_env("BILTEN_ADMIN_TOKEN", "secret-token");
            jail.set_env("BILTEN_INGEST_KEYS", "k1");
            assert!(Config::load(None).is_ok());
            Ok(())
        });
    }

    /// Ingest keys are split into key and organizer once, at load; an
    /// entry with an empty key or organizer is refused, with the form.
    #[test]
    fn ingest_keys_are_split_at_load_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILTEN_INGEST_KEYS", "k123@org-123, kall");
            let c = Config::load(None).unwrap();
            assert_eq!(c.ingest_keys[0].key, "k123");
            assert_eq!(c.ingest_keys[0].organizer.as_deref(), Some("org-123"));
            assert_eq!(c.ingest_keys[1].organizer, None);
            for bad in ["k123@", "@org-123", "kall, @"] {
                jail.set_env("BILTEN_INGEST_KEYS", bad);
                let err = Config::load(None).unwrap_err();
                assert!(
                    matches!(&err, ConfigError::Invalid { setting, reason }
                        if setting == "ingest_keys" && reason.contains("KEY@organizer_id")),
                    "{bad}: {err}"
                );
            }
            Ok(())
        });
    }

    /// Read keys come comma-separated from `BILTEN_READ_KEYS`, each bound
    /// to one organizer; a bare or short key is refused, with the form.
    #[test]
    fn read_keys_come_from_the_environment_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "BILTEN_READ_KEYS",
                "key-of-org-one-0001@org-1, key-of-org-two-0002@org-2",
            );
            let c = Config::load(None).unwrap();
            let entries: Vec<String> = c.read_keys.into_iter().map(String::from).collect();
            assert_eq!(
                entries,
                vec!["key-of-org-one-0001@org-1", "key-of-org-two-0002@org-2"]
            );
            for bad in ["key-of-org-one-0001", "short@org-1", "key-of-org-one-0001@"] {
                jail.set_env("BILTEN_READ_KEYS", bad);
                let err = Config::load(None).unwrap_err();
                assert!(
                    matches!(&err, ConfigError::Invalid { setting, reason }
                        if setting == "read_keys" && reason.contains("KEY@organizer_id")),
                    "{bad}: {err}"
                );
            }
            Ok(())
        });
    }

    #[test]
    fn public_keys_and_trusted_proxies_from_the_environment_or_toml_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "BILTEN_PUBLIC_KEYS",
                "pk_site_one@org-1=https://tickets.example|http://localhost:3000, pk_any_site@org-2=*",
            );
            jail.set_env("BILTEN_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1");
            let c = Config::load(None).unwrap();
            let keys = &c.browser.public_keys;
            assert_eq!(
                (keys[0].key.as_str(), keys[0].organizer.as_str()),
                ("pk_site_one", "org-1")
            );
            assert!(
                keys[0].allows("http://localhost:3000") && !keys[0].allows("https://evil.example")
            );
            assert!(keys[1].allows("https://anywhere.example"));
            assert!(
                c.browser.trusted_proxies[1]
                    .contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap())
            );
            for (bad, says) in [
                ("pk_site_one", "KEY@organizer=origin"),
                ("pk_site_one@org-1=tickets.example", "is not an origin"),
                (
                    "pk_site_one@org-1=https://tickets.example/path",
                    "is not an origin",
                ),
                ("short@org-1=*", "at least 8"),
                ("pk_site_one@=*", "one organizer"),
            ] {
                jail.set_env("BILTEN_PUBLIC_KEYS", bad);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(says), "{bad}: {err}");
            }
            // A public key is published: it must not be a secret as well.
            jail.set_env("BILTEN_PUBLIC_KEYS", "same-key-as-ingest@org-1=*");
            jail.set_env("BILTEN_INGEST_KEYS", "same-key-as-ingest@org-1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("a key of its own"), "{err}");
            // Nor a read key, which signs in to an organizer's dashboard.
            jail.set_env("BILTEN_INGEST_KEYS", "");
            jail.set_env("BILTEN_PUBLIC_KEYS", "published-in-pages-01@org-2=*");
            jail.set_env("BILTEN_READ_KEYS", "published-in-pages-01@org-1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("a key of its own"), "{err}");
            jail.set_env("BILTEN_READ_KEYS", "");
            jail.set_env("BILTEN_PUBLIC_KEYS", "");
            jail.set_env("BILTEN_TRUSTED_PROXIES", "10.0.0.0/33");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("neither an address nor a CIDR range"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn clickhouse_http_users_come_from_the_environment_or_toml_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILTEN_CLICKHOUSE_HTTP_LISTEN", "127.0.0.1:8123");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("no one could connect"), "{err}");
            jail.set_env(
                "BILTEN_CLICKHOUSE_HTTP_USERS",
                "reader:se:cret, writer:w2:rw, keeper:k:backup",
            );
            let c = Config::load(None).unwrap();
            let users = &c.clickhouse_http.users;
            assert_eq!(users.len(), 3);
            assert!(!users[1].backup && users[2].backup && !users[2].readonly);
            // Only the first colon and an `:rw` / `:ro` / `:backup` suffix are syntax.
            assert_eq!(
                (users[0].name.as_str(), users[0].readonly),
                ("reader", true)
            );
            assert_eq!(users[0].password.as_deref(), Some("se:cret"));
            assert_eq!(
                (users[1].name.as_str(), users[1].readonly),
                ("writer", false)
            );
            assert_eq!(
                users[1].password_digest(),
                Some(Sha256::digest(b"w2").into())
            );
            jail.set_env("BILTEN_CLICKHOUSE_HTTP_USERS", "reader:");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("empty password"), "{err}");
            jail.set_env("BILTEN_CLICKHOUSE_HTTP_USERS", "reader:a,reader:b");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("listed twice"), "{err}");
            jail.set_env("BILTEN_CLICKHOUSE_HTTP_USERS", "reader:a");
            jail.set_env("BILTEN_STORAGE", "clickhouse");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("serves the embedded engine"), "{err}");
            jail.set_env("BILTEN_STORAGE", "embedded");
            jail.create_file(
                "ch.toml",
                "[clickhouse_http]\nlisten = \"127.0.0.1:8123\"\n[[clickhouse_http.users]]\nname = \"g\"\npassword_sha256 = \"zz\"\n",
            )?;
            jail.clear_env();
            let err = Config::load(Some(Path::new("ch.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("64 hex digits"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_cluster_needs_the_clickhouse_backend_and_a_plain_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILTEN_CLICKHOUSE_CLUSTER", "bilten");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("the embedded engine is one node"), "{err}");
            jail.set_env("BILTEN_STORAGE", "clickhouse");
            let c = Config::load(None).unwrap();
            assert_eq!(c.storage.clickhouse.cluster.as_deref(), Some("bilten"));
            jail.set_env("BILTEN_CLICKHOUSE_CLUSTER", "a b; DROP");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("remote_servers"), "{err}");
            Ok(())
        });
    }
}
