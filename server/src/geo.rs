//! Countries from client addresses: the host looks up each event's `ip` in
//! a country database (MaxMind DB format, one `country_code` per address
//! range) before the plugins run, and fills the row's `country`
//! (`bilten_schema::HOST_COLUMNS`).
//!
//! A host step, not a built-in plugin: the privacy plugin truncates the
//! address, so the lookup must come first whatever chain a team configures,
//! and a lookup in memory costs less than crossing into the sandbox. The
//! database is public domain (`@ip-location-db/geo-whois-asn-country-mmdb`);
//! the build fetches it, `bilten-analytics geo update` fetches a newer one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ingest::Row;

/// The database the build fetched (`server/build.rs`).
pub const BUILT_IN: &str = env!("BILTEN_GEO_DEFAULT_DB");

/// The country database, read into memory once.
pub struct Countries {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("the country database {path} cannot be read: {reason}")]
pub struct GeoError {
    pub path: PathBuf,
    pub reason: String,
}

/// One range's record, as this database writes it.
#[derive(serde::Deserialize)]
struct Record<'a> {
    country_code: Option<&'a str>,
}

/// Where `bilten-analytics geo update` puts a newer database, under the
/// data directory; read instead of the build's when it exists.
pub fn updated_path(data_dir: &Path) -> PathBuf {
    data_dir.join("geo").join("country.mmdb")
}

impl Countries {
    /// The database the settings name; with none named, the updated one or
    /// the build's. A named database that cannot be read stops the start;
    /// without one, countries stay empty (and the log says why).
    pub fn from_settings(
        settings: &crate::config::GeoSettings,
        data_dir: &Path,
    ) -> Result<Option<Countries>, GeoError> {
        if !settings.enabled {
            return Ok(None);
        }
        if let Some(path) = &settings.database {
            return Countries::open(path).map(Some);
        }
        let updated = updated_path(data_dir);
        let path = match updated.exists() {
            true => updated,
            false => PathBuf::from(BUILT_IN),
        };
        match Countries::open(&path) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(error = %e, "no country database: countries stay empty");
                Ok(None)
            }
        }
    }

    pub fn open(path: &Path) -> Result<Countries, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| GeoError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Countries {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ISO 3166-1 alpha-2 code of `ip`'s country; `None` for text that
    /// is no address, a private or unlisted range, or an odd record.
    pub fn country(&self, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.trim().parse().ok()?;
        let found = self.reader.lookup(ip).ok()?;
        let record: Record = found.decode().ok()??;
        let code = record.country_code?;
        (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| code.to_ascii_uppercase())
    }

    /// Fills the country of each row that has an address and no country.
    pub fn fill<'a>(&self, rows: impl Iterator<Item = &'a mut Row>) {
        for row in rows {
            if let Some(h) = row.host()
                && let Some(country) = h.country
                && country.is_empty()
                && !h.ip.is_empty()
                && let Some(code) = self.country(h.ip)
            {
                *country = code;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn countries() -> Countries {
        Countries::open(Path::new(BUILT_IN)).expect("the build fetched the country database")
    }

    #[test]
    fn addresses_have_their_countries_and_anything_else_none() {
        let c = countries();
        // Well-known public resolvers, registered in their countries.
        assert_eq!(c.country("8.8.8.8").as_deref(), Some("US"));
        assert_eq!(c.country("2001:4860:4860::8888").as_deref(), Some("US"));
        for nothing in [
            "",
            "not an address",
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "300.1.1.1",
        ] {
            assert_eq!(c.country(nothing), None, "{nothing:?}");
        }
    }
}
