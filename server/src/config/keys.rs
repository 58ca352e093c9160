//! Keys as configured, `KEY` or `KEY@organizer`, split once when the
//! config is read rather than on every request.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether a key someone sent is a configured secret, in time that depends
/// on neither: their digests, always 32 bytes, are compared in constant
/// time (comparing the texts would stop early when the lengths differ, and
/// so tell a key's length).
pub fn same_secret(given: &str, secret: &str) -> bool {
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(secret.as_bytes()))
        .into()
}

/// An ingest or read key and the one organizer it is bound to, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ScopedKey {
    pub key: String,
    /// `KEY@org`: only this organizer's events (ingest) or figures (read).
    /// `None`: any organizer.
    pub organizer: Option<String>,
}

impl From<&str> for ScopedKey {
    fn from(entry: &str) -> Self {
        let entry = entry.trim();
        match entry.split_once('@') {
            Some((key, organizer)) => ScopedKey {
                key: key.to_string(),
                organizer: Some(organizer.to_string()),
            },
            None => ScopedKey {
                key: entry.to_string(),
                organizer: None,
            },
        }
    }
}

impl From<String> for ScopedKey {
    fn from(entry: String) -> Self {
        ScopedKey::from(entry.as_str())
    }
}

/// Back to the configured form, `KEY` or `KEY@org`.
impl From<ScopedKey> for String {
    fn from(k: ScopedKey) -> String {
        match k.organizer {
            Some(org) => format!("{}@{org}", k.key),
            None => k.key,
        }
    }
}

/// Compares with the configured form, for tests and config checks. Not a
/// key check: requests compare keys in constant time (`subtle`).
impl PartialEq<&str> for ScopedKey {
    fn eq(&self, entry: &&str) -> bool {
        match entry.trim().split_once('@') {
            Some((key, org)) => self.key == key && self.organizer.as_deref() == Some(org),
            None => self.key == entry.trim() && self.organizer.is_none(),
        }
    }
}

/// A TOML list of keys, or one comma-separated string (as from the
/// environment); blank entries are skipped.
pub(super) fn key_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ScopedKey>, D::Error> {
    Ok(super::comma_list(d)?
        .into_iter()
        .map(ScopedKey::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_whatever_their_lengths() {
        assert!(same_secret("k123", "k123"));
        assert!(!same_secret("k12", "k123"));
        assert!(!same_secret("k1234", "k123"));
        assert!(!same_secret("", "k123"));
        assert!(same_secret("", ""));
    }

    #[test]
    fn a_key_is_split_at_its_first_at_sign_and_written_back_as_it_came() {
        let k = ScopedKey::from(" k123@org-1 ");
        assert_eq!(
            (k.key.as_str(), k.organizer.as_deref()),
            ("k123", Some("org-1"))
        );
        assert_eq!(String::from(k), "k123@org-1");
        let k = ScopedKey::from("k@org@x");
        assert_eq!(k.organizer.as_deref(), Some("org@x"));
        let k = ScopedKey::from("plain");
        assert_eq!((k.key.as_str(), k.organizer), ("plain", None));
    }
}
