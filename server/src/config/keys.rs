//! Keys as configured, `KEY` or `KEY@organizer`, split once when the
//! config is read rather than on every request.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret's SHA-256 digest: what keys are compared by, in time that
/// depends on neither side (the digests are always 32 bytes; comparing the
/// texts would stop early when the lengths differ, and so tell a key's
/// length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub fn of(secret: &str) -> Self {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    /// In constant time.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Whether a key someone sent is `secret`, compared by digests.
pub fn same_secret(given: &str, secret: &str) -> bool {
    SecretDigest::of(given).matches(&SecretDigest::of(secret))
}

/// An ingest or read key and the one organizer it is bound to, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ScopedKey {
    pub key: String,
    /// `KEY@org`: only this organizer's events (ingest) or figures (read).
    /// `None`: any organizer.
    pub organizer: Option<String>,
    /// The key's digest, taken once here rather than on every request.
    pub digest: SecretDigest,
}

impl From<&str> for ScopedKey {
    fn from(entry: &str) -> Self {
        let entry = entry.trim();
        let (key, organizer) = match entry.split_once('@') {
            Some((key, organizer)) => (key, Some(organizer.to_string())),
            None => (entry, None),
        };
        ScopedKey {
            key: key.to_string(),
            organizer,
            digest: SecretDigest::of(key),
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
        assert_eq!(k.digest, SecretDigest::of("plain"));
        assert_eq!((k.key.as_str(), k.organizer), ("plain", None));
    }
}
