//! The retention policy as configured: ages per tier, per table.
//! What it does to the tables is `ops::retention`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::model::AGED_TABLES as TABLES;

/// When a table's rows move and go, by age. `None`: never.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPolicy {
    #[serde(default, with = "age")]
    pub cold_after: Option<Duration>,
    #[serde(default, with = "age")]
    pub archive_after: Option<Duration>,
    #[serde(default, with = "age")]
    pub delete_after: Option<Duration>,
}

/// Ages read as humantime ("30d", "2years") and written in whole days when
/// they are whole days ("730days"), which is how people think of retention.
mod age {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(age: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match age {
            None => s.serialize_none(),
            Some(d) if d.as_secs() % 86_400 == 0 => {
                s.serialize_str(&format!("{}days", d.as_secs() / 86_400))
            }
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => humantime::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// For every table without an entry of its own.
    pub default: TierPolicy,
    /// Whole policies for single tables (a missing field there means never).
    pub tables: BTreeMap<String, TierPolicy>,
}

const DAY: u64 = 86_400;

fn days(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n * DAY))
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let mut tables = BTreeMap::new();
        // Financial records: seven years.
        tables.insert(
            "ticket_sales".to_string(),
            TierPolicy {
                cold_after: days(30),
                archive_after: days(365),
                delete_after: days(7 * 365),
            },
        );
        // Realtime figures are for "now": a week, on the fast disk.
        tables.insert(
            "realtime_dashboard".to_string(),
            TierPolicy {
                cold_after: None,
                archive_after: None,
                delete_after: days(7),
            },
        );
        RetentionConfig {
            default: TierPolicy {
                cold_after: days(30),
                archive_after: days(90),
                delete_after: days(730),
            },
            tables,
        }
    }
}

impl RetentionConfig {
    pub fn for_table(&self, table: &str) -> &TierPolicy {
        self.tables.get(table).unwrap_or(&self.default)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.tables.keys() {
            if !TABLES.iter().any(|(t, _)| t == name) {
                let known: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
                return Err(invalid(
                    "retention.tables",
                    format!("unknown table {name:?}; tables are {}", known.join(", ")),
                ));
            }
        }
        for (name, p) in std::iter::once(("default", &self.default))
            .chain(self.tables.iter().map(|(k, v)| (k.as_str(), v)))
        {
            let ages: Vec<Duration> = [p.cold_after, p.archive_after, p.delete_after]
                .into_iter()
                .flatten()
                .collect();
            if ages.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid(
                    format!("retention for {name}"),
                    "cold_after < archive_after < delete_after is required",
                ));
            }
            if ages.iter().any(|a| a.as_secs() < 3600) {
                return Err(invalid(
                    format!("retention for {name}"),
                    "ages under one hour are surely a mistake",
                ));
            }
            // TTLs are ClickHouse `DateTime`s, which end in 2106: an age past
            // that would wrap around and expire today's rows.
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let longest = DATETIME_MAX.saturating_sub(now);
            if let Some(a) = ages.iter().find(|a| a.as_secs() > longest) {
                return Err(invalid(
                    format!("retention for {name}"),
                    format!(
                        "{} reaches past 2106-02-07, the last time ClickHouse's DateTime can \
                         hold; the longest age is {} days (or leave the field out: never)",
                        humantime::format_duration(*a),
                        longest / DAY
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The last second a ClickHouse `DateTime` holds (2106-02-07 06:28:15 UTC).
pub const DATETIME_MAX: u64 = u32::MAX as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_the_seed() {
        let c = RetentionConfig::default();
        assert_eq!(c.default.cold_after, days(30));
        assert_eq!(c.default.archive_after, days(90));
        assert_eq!(c.default.delete_after, days(730));
        assert!(c.for_table("ticket_sales").delete_after > c.default.delete_after);
        assert!(c.for_table("realtime_dashboard").delete_after < c.default.delete_after);
        c.validate().unwrap();
    }

    #[test]
    fn rejects_disordered_or_unknown() {
        let mut c = RetentionConfig::default();
        c.default.archive_after = days(10);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cold_after < archive_after")
        );
        let mut c = RetentionConfig::default();
        c.tables.insert("nope".into(), c.default.clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("unknown table")
        );
    }

    #[test]
    fn ages_past_the_end_of_datetime_are_refused() {
        let mut c = RetentionConfig::default();
        c.default.delete_after = Some(humantime::parse_duration("100years").unwrap());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("reaches past 2106-02-07"), "{err}");
        c.default.delete_after = Some(humantime::parse_duration("70years").unwrap());
        c.validate().unwrap();
    }
}
