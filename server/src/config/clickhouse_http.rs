//! `[clickhouse_http]`: ClickHouse's own HTTP interface on the embedded
//! engine, for standard tools (clickhouse-connect, `@clickhouse/client`,
//! the Rust crate, Grafana) and for another ingest server's `clickhouse`
//! backend.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseHttpConfig {
    /// Off unless set (env `BILTEN_CLICKHOUSE_HTTP_LISTEN`).
    pub listen: Option<SocketAddr>,
    /// Who may connect: `[[clickhouse_http.users]]`, or
    /// `BILTEN_CLICKHOUSE_HTTP_USERS="reader:secret,writer:secret2:rw"`
    /// (`:backup`: a writer that may also back up).
    #[serde(deserialize_with = "users")]
    pub users: Vec<HttpUser>,
    /// The largest request body, after decompression.
    pub max_body_bytes: usize,
    /// Statements running at once; more wait their turn.
    pub concurrency: usize,
    /// The database read-write users may change, and every user's default:
    /// this project's, or the one a `clickhouse` backend is told to use.
    pub database: String,
    /// Where a `clickhouse` backend using this interface keeps its records
    /// (audit log, backup catalog, migration records), insert-only: never
    /// this server's own `bilten_system`. Such a server sets its
    /// `storage.clickhouse.system_database` to this.
    pub system_database: String,
}

impl Default for ClickHouseHttpConfig {
    fn default() -> Self {
        ClickHouseHttpConfig {
            listen: None,
            users: Vec::new(),
            max_body_bytes: 256 << 20,
            concurrency: 8,
            database: crate::model::DATABASE.into(),
            system_database: crate::model::GUEST_SYSTEM_DATABASE.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUser {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Hex SHA-256 of the password, so the file need not hold it.
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// Read-only unless set to false (`:rw` in the environment form).
    #[serde(default = "yes")]
    pub readonly: bool,
    /// A read-write user that may also back up and restore the database
    /// on the engine's `backups` disk, and keep the backup catalog
    /// (`:backup` in the environment form): what a `clickhouse` backend's
    /// `/admin/backups` needs.
    #[serde(default)]
    pub backup: bool,
}

fn yes() -> bool {
    true
}

impl HttpUser {
    /// The password's SHA-256, whichever way it was given.
    pub fn password_digest(&self) -> Option<[u8; 32]> {
        match (&self.password, &self.password_sha256) {
            (Some(p), None) => Some(Sha256::digest(p.as_bytes()).into()),
            (None, Some(hex)) => decode_hex32(hex),
            _ => None,
        }
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl ClickHouseHttpConfig {
    pub fn validate(&self, embedded: bool) -> Result<(), ConfigError> {
        if self.listen.is_none() {
            return Ok(());
        }
        if !embedded {
            return Err(invalid(
                "clickhouse_http.listen",
                "serves the embedded engine; with storage.backend = \"clickhouse\" use that \
                 server's own interface",
            ));
        }
        if self.users.is_empty() {
            return Err(invalid(
                "clickhouse_http.users",
                "no one could connect: add a user (BILTEN_CLICKHOUSE_HTTP_USERS=\"reader:secret\")",
            ));
        }
        for (i, u) in self.users.iter().enumerate() {
            let at = format!("clickhouse_http.users[{i}]");
            if u.name.is_empty() || u.name.contains(':') {
                return Err(invalid(at, "a name is needed, without ':'"));
            }
            if u.backup && u.readonly {
                return Err(invalid(at, "backup = true needs readonly = false"));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(at, format!("{:?} is listed twice", u.name)));
            }
            match (&u.password, &u.password_sha256) {
                (Some(p), None) if p.is_empty() => {
                    return Err(invalid(at, "an empty password is refused"));
                }
                (Some(_), None) => {}
                (None, Some(_)) if u.password_digest().is_none() => {
                    return Err(invalid(at, "password_sha256 must be 64 hex digits"));
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(invalid(at, "give exactly one of password, password_sha256"));
                }
            }
        }
        for (at, db) in [
            ("clickhouse_http.database", &self.database),
            ("clickhouse_http.system_database", &self.system_database),
        ] {
            if !crate::model::plain_identifier(db) {
                return Err(invalid(at, "letters, digits and '_' only"));
            }
        }
        if self.system_database == crate::model::SYSTEM_DATABASE
            || self.system_database == self.database
        {
            return Err(invalid(
                "clickhouse_http.system_database",
                format!(
                    "must differ from {} (this server's own records) and from \
                     clickhouse_http.database",
                    crate::model::SYSTEM_DATABASE
                ),
            ));
        }
        if self.max_body_bytes == 0 || self.concurrency == 0 {
            return Err(invalid(
                "clickhouse_http",
                "max_body_bytes and concurrency must be above 0",
            ));
        }
        Ok(())
    }
}

/// A TOML list of tables, or `name:password[:rw|:backup]` items separated by commas.
fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HttpUser>, D::Error> {
    let expected = ("clickhouse_http.users", "name:password or name:password:rw");
    super::list_or_items(d, expected, |item| {
        // The name ends at the first colon; a trailing `:rw`, `:ro` or
        // `:backup` is the mode; the password is everything between.
        let (name, rest) = item.split_once(':')?;
        let (password, readonly, backup) = match rest.rsplit_once(':') {
            Some((p, "rw")) => (p, false, false),
            Some((p, "backup")) => (p, false, true),
            Some((p, "ro")) => (p, true, false),
            _ => (rest, true, false),
        };
        Some(HttpUser {
            name: name.to_string(),
            password: Some(password.to_string()),
            password_sha256: None,
            readonly,
            backup,
        })
    })
}
