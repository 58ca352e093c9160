//! Keys as data: each change to a key (made, rotated, revoked) is a record
//! of its own, and a key is what its records say, folded in order
//! ([`fold`]). The [`Keyring`] is every key by the digest of its secrets,
//! in memory, so a request's key costs one keyed hash and one map lookup,
//! and an unknown key no engine call.
//!
//! No HTTP and no storage in here: `tenants` seals and stores the records,
//! `routes::tenants` serves them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Sends events from a backend, for its organizers.
    Ingest,
    /// Sends page views and events from web pages of its origins.
    Public,
    /// Reads one organizer's figures (`/dashboard`, the Stats API).
    Read,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Ingest => "ingest",
            KeyKind::Public => "public",
            KeyKind::Read => "read",
        }
    }

    /// The start of its secrets, so a leaked one tells what it was.
    fn marker(self) -> &'static str {
        match self {
            KeyKind::Ingest => "bki_",
            KeyKind::Public => "bkp_",
            KeyKind::Read => "bkr_",
        }
    }
}

/// How a secret is found again without being kept: its keyed digest (hex)
/// and its first characters, which tell a person which key it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub digest: String,
    pub prefix: String,
}

/// One change to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Create {
        kind: KeyKind,
        organizers: Vec<String>,
        origins: Vec<String>,
        secret: SecretRef,
    },
    /// A new secret; the ones before it work for `grace_ms` more.
    Rotate { secret: SecretRef, grace_ms: u64 },
    /// For good: no later record brings the key back.
    Revoke,
}

/// A change to a key as it is sealed and stored.
pub type Record = super::Record<Change>;

/// One of a key's secrets.
#[derive(Debug, Clone)]
pub struct Secret {
    pub digest: [u8; 32],
    pub prefix: String,
    pub since_ms: i64,
    /// Rotated out: refused from then on.
    pub until_ms: Option<i64>,
}

/// A key, folded from its records.
#[derive(Debug)]
pub struct Key {
    pub id: String,
    pub kind: KeyKind,
    pub organizers: Vec<String>,
    pub origins: Vec<String>,
    pub created_at_ms: i64,
    /// Oldest first; the last is the current one.
    pub secrets: Vec<Secret>,
    pub revoked_at_ms: Option<i64>,
    /// The newest version folded in.
    pub version: u64,
    /// When this server last let a request through with it (ms; 0: never).
    pub used_ms: Arc<AtomicI64>,
}

impl Key {
    /// Whether a page of `origin` may use this (public) key.
    pub fn allows(&self, origin: &str) -> bool {
        crate::config::browser::origin_listed(&self.origins, origin)
    }

    pub fn state(&self) -> &'static str {
        match self.revoked_at_ms {
            Some(_) => "revoked",
            None => "active",
        }
    }

    /// Whether the secret whose prefix is `prefix` still holds at `now_ms`.
    pub fn secret_holds(&self, prefix: &str, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none()
            && self
                .secrets
                .iter()
                .any(|s| s.prefix == prefix && s.until_ms.is_none_or(|u| u > now_ms))
    }

    pub fn mark_used(&self, now_ms: i64) {
        self.used_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// A hex digest back to bytes; `None` if it is not 64 hex digits.
pub fn digest_bytes(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key `records` (one key's, sealed and verified) describe, in version
/// order (ties by their text, so every server folds them alike). Records
/// before its creation, a second creation, and anything after a
/// revocation but another revocation are ignored; `None` if it was never
/// created. `used` carries the last use across folds.
pub fn fold(records: &mut [Record], used: Arc<AtomicI64>) -> Option<Key> {
    super::in_order(records);
    let mut key: Option<Key> = None;
    for r in records.iter() {
        match (&mut key, &r.change) {
            (
                None,
                Change::Create {
                    kind,
                    organizers,
                    origins,
                    secret,
                },
            ) => {
                let digest = digest_bytes(&secret.digest)?;
                key = Some(Key {
                    id: r.id.clone(),
                    kind: *kind,
                    organizers: organizers.clone(),
                    origins: origins.clone(),
                    created_at_ms: r.at_ms,
                    secrets: vec![Secret {
                        digest,
                        prefix: secret.prefix.clone(),
                        since_ms: r.at_ms,
                        until_ms: None,
                    }],
                    revoked_at_ms: None,
                    version: r.version,
                    used_ms: used.clone(),
                });
            }
            (None, _) => {}
            (Some(k), Change::Revoke) => {
                if k.revoked_at_ms.is_none() {
                    k.revoked_at_ms = Some(r.at_ms);
                }
                k.version = r.version;
            }
            (Some(k), _) if k.revoked_at_ms.is_some() => {}
            (Some(k), Change::Rotate { secret, grace_ms }) => {
                let Some(digest) = digest_bytes(&secret.digest) else {
                    continue;
                };
                let until = r.at_ms.saturating_add(*grace_ms as i64);
                for s in &mut k.secrets {
                    s.until_ms = Some(s.until_ms.map_or(until, |u| u.min(until)));
                }
                k.secrets.push(Secret {
                    digest,
                    prefix: secret.prefix.clone(),
                    since_ms: r.at_ms,
                    until_ms: None,
                });
                k.version = r.version;
            }
            (Some(_), Change::Create { .. }) => {}
        }
    }
    key
}

/// What a secret sent with a request turns out to be.
#[derive(Debug)]
pub enum Found<'a> {
    Valid(&'a Arc<Key>),
    Revoked { key: &'a Arc<Key>, at_ms: i64 },
    RotatedOut { key: &'a Arc<Key>, at_ms: i64 },
}

impl Found<'_> {
    pub fn key(&self) -> &Arc<Key> {
        match self {
            Found::Valid(key) | Found::Revoked { key, .. } | Found::RotatedOut { key, .. } => key,
        }
    }

    /// Why a key that no longer holds is refused, for the 401.
    pub fn why(&self) -> String {
        let at = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        match self {
            Found::Valid(key) => format!("key {} is valid", key.id),
            Found::Revoked { key, at_ms } => format!(
                "this key ({}) was revoked at {}: ask for a new one",
                key.id,
                at(*at_ms)
            ),
            Found::RotatedOut { key, at_ms } => format!(
                "this secret of key {} was rotated out at {}: use its new secret",
                key.id,
                at(*at_ms)
            ),
        }
    }
}

/// Every key by the digests of its secrets.
#[derive(Debug, Default)]
pub struct Keyring {
    by_digest: HashMap<[u8; 32], (Arc<Key>, usize)>,
    by_id: HashMap<String, Arc<Key>>,
    /// The origins of live public keys, lowercased: a preflight is
    /// answered from here, without a walk over every key.
    origins: std::collections::HashSet<String>,
    any_origin: bool,
    /// Whether any ingest key was ever made: then no request goes in
    /// without a key, even once they are all revoked.
    pub any_ingest: bool,
}

impl Keyring {
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Keyring {
        let mut ring = Keyring::default();
        for key in keys {
            let key = Arc::new(key);
            ring.any_ingest |= key.kind == KeyKind::Ingest;
            if key.kind == KeyKind::Public && key.revoked_at_ms.is_none() {
                for o in &key.origins {
                    ring.any_origin |= o == "*";
                    ring.origins.insert(o.to_ascii_lowercase());
                }
            }
            for (i, s) in key.secrets.iter().enumerate() {
                ring.by_digest.insert(s.digest, (key.clone(), i));
            }
            ring.by_id.insert(key.id.clone(), key);
        }
        ring
    }

    /// The key a secret's digest belongs to, and whether it still holds.
    pub fn lookup(&self, digest: &[u8; 32], now_ms: i64) -> Option<Found<'_>> {
        let (key, i) = self.by_digest.get(digest)?;
        if let Some(at_ms) = key.revoked_at_ms {
            return Some(Found::Revoked { key, at_ms });
        }
        match key.secrets[*i].until_ms {
            Some(at_ms) if at_ms <= now_ms => Some(Found::RotatedOut { key, at_ms }),
            _ => Some(Found::Valid(key)),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Key>> {
        self.by_id.get(id)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> Vec<Arc<Key>> {
        let mut keys: Vec<Arc<Key>> = self.by_id.values().cloned().collect();
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        keys
    }

    /// Whether a live public key names `origin` (a preflight carries no key).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.contains(&origin.to_ascii_lowercase())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A new secret for a key of `kind`: 192 random bits after a marker of
/// its kind, URL-safe.
pub fn new_secret(kind: KeyKind) -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{}{}",
        kind.marker(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new key's id: 96 random bits, so two servers making keys at the same
/// moment never make the same one.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("key_{}", hex(&bytes))
}

/// How much of a secret a listing shows: its marker and 6 characters
/// (36 of its 192 bits).
pub fn prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// An organizer id a key may name: what an event's `organizer_id` may
/// hold (its declared length), without spaces or control characters.
pub fn organizer_id(o: &str) -> Result<(), String> {
    let max = match crate::model::Table::Events
        .field("organizer_id")
        .map(|f| f.kind)
    {
        Some(crate::model::Kind::Text(max)) => max,
        _ => unreachable!("organizer_id is declared text"),
    };
    if o.is_empty() || o.chars().count() > max {
        return Err(format!("an organizer id is 1 to {max} characters"));
    }
    if o.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an organizer id has no spaces or control characters".into());
    }
    Ok(())
}

/// What a request to make a key asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub kind: KeyKind,
    pub organizers: Vec<String>,
    #[serde(default)]
    pub origins: Vec<String>,
}

impl NewKey {
    /// The request's faults, each naming its field.
    pub fn check(&self) -> Result<(), String> {
        if self.organizers.is_empty() {
            return Err("organizers: name at least one organizer".into());
        }
        if self.organizers.len() > 1000 {
            return Err("organizers: at most 1000".into());
        }
        for o in &self.organizers {
            organizer_id(o).map_err(|why| format!("organizers: {o:?}: {why}"))?;
        }
        if self.kind != KeyKind::Ingest && self.organizers.len() != 1 {
            return Err(format!(
                "organizers: a {} key is for one organizer (a page belongs to one, a viewer \
                 sees one); make one key per organizer",
                self.kind.name()
            ));
        }
        match self.kind {
            KeyKind::Public if self.origins.is_empty() => Err(
                "origins: a public key names the origins of the pages that use it \
                 (`https://tickets.example.com`, or `*` for any)"
                    .into(),
            ),
            KeyKind::Public => {
                for o in &self.origins {
                    crate::config::browser::check_origin(o)
                        .map_err(|why| format!("origins: {o:?}: {why}"))?;
                }
                Ok(())
            }
            _ if !self.origins.is_empty() => Err("origins: only a public key has origins".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, version: u64, change: Change) -> Record {
        Record {
            id: id.into(),
            version,
            at_ms: version as i64,
            by: "token:00".into(),
            change,
        }
    }

    fn secret(n: u8) -> SecretRef {
        SecretRef {
            digest: hex(&[n; 32]),
            prefix: format!("bki_{n}"),
        }
    }

    fn create(n: u8) -> Change {
        Change::Create {
            kind: KeyKind::Ingest,
            organizers: vec!["org-a".into()],
            origins: vec![],
            secret: secret(n),
        }
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_for_its_grace_and_a_revocation_is_final() {
        let mut records = vec![
            record("k", 30, Change::Revoke),
            record("k", 10, create(1)),
            record(
                "k",
                20,
                Change::Rotate {
                    secret: secret(2),
                    grace_ms: 5,
                },
            ),
            // After the revocation: ignored, whatever it says.
            record(
                "k",
                40,
                Change::Rotate {
                    secret: secret(3),
                    grace_ms: 0,
                },
            ),
            record("k", 50, create(4)),
        ];
        let key = fold(&mut records[..3], Arc::default()).unwrap();
        assert_eq!(key.revoked_at_ms, Some(30));
        let ring = Keyring::new([fold(&mut records, Arc::default()).unwrap()]);
        assert!(matches!(
            ring.lookup(&[1; 32], 24),
            Some(Found::Revoked { at_ms: 30, .. })
        ));
        assert!(
            ring.lookup(&[3; 32], 60).is_none(),
            "rotated after revoking"
        );
        assert!(ring.lookup(&[4; 32], 60).is_none(), "created twice");
        assert!(ring.any_ingest);

        // Sorted by now: the creation and the rotation.
        let mut live = records[..2].to_vec();
        let ring = Keyring::new([fold(&mut live, Arc::default()).unwrap()]);
        assert!(matches!(ring.lookup(&[1; 32], 24), Some(Found::Valid(_))));
        assert!(matches!(
            ring.lookup(&[1; 32], 25),
            Some(Found::RotatedOut { at_ms: 25, .. })
        ));
        assert!(matches!(
            ring.lookup(&[2; 32], 1_000),
            Some(Found::Valid(_))
        ));
        assert!(ring.lookup(&[9; 32], 0).is_none());
    }

    #[test]
    fn a_key_never_made_is_nothing() {
        let mut records = vec![record("k", 1, Change::Revoke)];
        assert!(fold(&mut records, Arc::default()).is_none());
    }

    #[test]
    fn requests_for_keys_name_the_field_at_fault() {
        let key = |kind, orgs: &[&str], origins: &[&str]| NewKey {
            kind,
            organizers: orgs.iter().map(|s| s.to_string()).collect(),
            origins: origins.iter().map(|s| s.to_string()).collect(),
        };
        assert!(
            key(KeyKind::Ingest, &["org-a", "org-b"], &[])
                .check()
                .is_ok()
        );
        assert!(
            key(KeyKind::Public, &["org-a"], &["https://a.example"])
                .check()
                .is_ok()
        );
        for (bad, field) in [
            (key(KeyKind::Ingest, &[], &[]), "organizers"),
            (key(KeyKind::Ingest, &["org a'"], &[]), "organizers"),
            (key(KeyKind::Read, &["a", "b"], &[]), "organizers"),
            (key(KeyKind::Public, &["a"], &[]), "origins"),
            (key(KeyKind::Public, &["a"], &["not an origin"]), "origins"),
            (
                key(KeyKind::Read, &["a"], &["https://a.example"]),
                "origins",
            ),
        ] {
            let why = bad.check().unwrap_err();
            assert!(why.starts_with(field), "{why}");
        }
    }

    #[test]
    fn secrets_tell_their_kind_and_are_never_alike() {
        let a = new_secret(KeyKind::Read);
        let b = new_secret(KeyKind::Read);
        assert!(a.starts_with("bkr_") && a.len() == 36, "{a}");
        assert_ne!(a, b);
        assert_eq!(prefix(&a).len(), 10);
        assert_eq!(digest_bytes(&hex(&[7; 32])), Some([7; 32]));
        assert_eq!(digest_bytes("zz"), None);
    }
}
