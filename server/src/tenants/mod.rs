//! Tenants at runtime: keys made, rotated and revoked through `/admin`,
//! kept in the engine so every server of a store holds the same.
//!
//! - [`keys`]: a key folded from its records, and the in-memory
//!   [`keys::Keyring`] requests are checked against (no engine call).
//! - [`store`]: the tables of [`crate::model::CONTROL_DATABASE`], declared
//!   once, and their rows.
//! - [`Tenants`]: the records this server holds, sealed with
//!   [`ControlKey`], read again every `tenants.poll_every`.
//!
//! Why sealed, append-only records: users of ClickHouse's HTTP interface
//! who may write can add rows to any table they can insert into, and the
//! control database is one (a `clickhouse` backend behind the interface
//! makes keys too). So a record counts only with a seal made with
//! `tenants.signing_key`, which only servers hold; the interface lets
//! nobody change or delete a row there (`clickhouse_http::walls`), so a
//! revocation cannot be taken back by removing it; and a key is whatever
//! its sealed records say, folded in order, so a replayed old record
//! changes nothing.

pub mod keys;
pub mod organizers;
pub mod sessions;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError};
use keys::{Change, Key, KeyKind, Keyring, NewKey, SecretRef};
use organizers::Directory;

/// One change to a thing of the control database (a key, an organizer),
/// as it is sealed and stored: which one, its order among its changes,
/// when and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<C> {
    pub id: String,
    /// Microseconds since the epoch on the server that made the change,
    /// above every version it knew for the thing.
    pub version: u64,
    pub at_ms: i64,
    /// The admin who made it (a token's fingerprint, never the token).
    pub by: String,
    pub change: C,
}

/// Records in the order every server folds them: by version, ties by
/// their text.
pub fn in_order<C: Serialize>(records: &mut [Record<C>]) {
    records.sort_by(|a, b| {
        a.version.cmp(&b.version).then_with(|| {
            serde_json::to_string(a)
                .unwrap_or_default()
                .cmp(&serde_json::to_string(b).unwrap_or_default())
        })
    });
}

/// The secret records are sealed with and key secrets hashed with: from
/// `tenants.signing_key`, else kept in `<data_dir>/tenants.key`. Two keys
/// are derived from it, one per use, so a seal never equals a digest.
#[derive(Clone)]
pub struct ControlKey {
    seal: Hmac<Sha256>,
    digest: Hmac<Sha256>,
}

impl std::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlKey(…)")
    }
}

impl ControlKey {
    pub fn of(config: &crate::config::Config) -> Result<ControlKey, String> {
        match &config.tenants.signing_key {
            Some(secret) => Ok(ControlKey::from_secret(secret)),
            None => crate::files::kept_key(&config.storage.embedded.data_dir.join("tenants.key"))
                .map(|master| ControlKey::from_master(&master)),
        }
    }

    /// The key from a configured `tenants.signing_key`.
    pub fn from_secret(secret: &str) -> ControlKey {
        use sha2::Digest;
        ControlKey::from_master(&Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_master(master: &[u8; 32]) -> ControlKey {
        let derive = |purpose: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(master).expect("any key length");
            mac.update(purpose.as_bytes());
            let key = mac.finalize().into_bytes();
            Hmac::<Sha256>::new_from_slice(&key).expect("any key length")
        };
        ControlKey {
            seal: derive("bilten tenants: record seal v1"),
            digest: derive("bilten tenants: secret digest v1"),
        }
    }

    /// A key secret's digest. A keyed hash, and a fast one: secrets are
    /// 192 random bits, so no guess is worth slowing down (a password
    /// hash would cost every request milliseconds for nothing), and the
    /// key means a reader of the table cannot even test a guess offline.
    pub fn digest(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.digest.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The seal of a stored record's text, in the table `table`.
    pub fn seal(&self, table: &str, body: &str) -> String {
        let mut mac = self.seal.clone();
        mac.update(&(table.len() as u64).to_le_bytes());
        mac.update(table.as_bytes());
        mac.update(body.as_bytes());
        keys::hex(&mac.finalize().into_bytes())
    }

    pub fn verifies(&self, table: &str, body: &str, seal: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.seal(table, body)
            .as_bytes()
            .ct_eq(seal.as_bytes())
            .into()
    }
}

/// Why a change to a key was not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key {0}")]
    NotFound(String),
    #[error("no organizer {0}")]
    NoOrganizer(String),
    /// The change contradicts what is there (an organizer made twice).
    #[error("{0}")]
    Conflict(String),
    #[error("key {0} is revoked; make a new one")]
    Revoked(String),
    #[error("the keys kept in the store are not read yet: {0}")]
    NotLoaded(String),
    #[error("the key store: {0}")]
    Storage(#[from] StorageError),
}

/// One table's records as this server holds them, and where its next
/// poll starts.
struct Log<C> {
    records: HashMap<String, Vec<Record<C>>>,
    /// Seals of the records held: a row read twice counts once.
    seen: HashSet<String>,
    /// Seals of rows that did not verify, not checked again (bounded).
    refused: HashSet<String>,
    /// The newest `written` of a sealed row read, for the next poll.
    since: Option<String>,
}

impl<C> Default for Log<C> {
    fn default() -> Self {
        Log {
            records: HashMap::new(),
            seen: HashSet::new(),
            refused: HashSet::new(),
            since: None,
        }
    }
}

impl<C> Log<C> {
    /// The next version for `id`: now, above every version known for it.
    fn next_version(&self, id: &str) -> u64 {
        let known = self
            .records
            .get(id)
            .and_then(|rs| rs.iter().map(|r| r.version).max())
            .unwrap_or(0);
        let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
        now_us.max(known + 1)
    }
}

impl<C: DeserializeOwned> Log<C> {
    /// Takes the rows read from `table`: how many were new, and how many
    /// did not verify.
    fn take(&mut self, key: &ControlKey, table: &str, rows: Vec<store::Row>) -> (usize, u64) {
        let (mut new, mut forged) = (0, 0);
        // A read that reached its limit moves the next one past all it
        // read, sealed or not: rows no one can date (the engine stamps
        // `written`, and no insert through the interface may set it) must
        // not hold the cursor in place, hiding what was written after them.
        if rows.len() >= store::READ_LIMIT
            && let Some(last) = rows.last()
        {
            self.since = Some(last.written.clone());
        }
        for row in rows {
            if self.seen.contains(&row.seal) || self.refused.contains(&row.seal) {
                continue;
            }
            let record = match key.verifies(table, &row.body, &row.seal) {
                true => serde_json::from_str::<Record<C>>(&row.body).ok(),
                false => None,
            };
            match record {
                Some(r) if r.id == row.id => {
                    // Otherwise only a sealed row moves the next poll on.
                    if self
                        .since
                        .as_deref()
                        .is_none_or(|s| row.written.as_str() > s)
                    {
                        self.since = Some(row.written.clone());
                    }
                    self.seen.insert(row.seal);
                    self.records.entry(r.id.clone()).or_default().push(r);
                    new += 1;
                }
                _ => {
                    forged += 1;
                    if self.refused.len() < REFUSED_KEPT {
                        self.refused.insert(row.seal);
                    }
                }
            }
        }
        (new, forged)
    }
}

/// What this server holds of the records, and what it last read.
#[derive(Default)]
struct Held {
    keys: Log<Change>,
    organizers: Log<organizers::Change>,
    sessions: Log<sessions::Change>,
    /// Each key's last use, kept across folds.
    used: HashMap<String, Arc<AtomicI64>>,
    /// Each key's last use as last written to `key_use`.
    used_written: HashMap<String, i64>,
}

/// The keys of the store, as this server knows them.
pub struct Tenants {
    storage: Arc<dyn Storage>,
    key: ControlKey,
    /// A rotation's default grace.
    pub grace: Duration,
    held: tokio::sync::Mutex<Held>,
    ring: ArcSwap<Keyring>,
    directory: ArcSwap<Directory>,
    book: ArcSwap<sessions::Book>,
    loaded: AtomicBool,
    /// Rows whose seal did not verify (forged, or sealed with another
    /// `tenants.signing_key`): ignored, counted, warned about. Once one is
    /// seen, the server no longer takes requests without a key: it cannot
    /// tell a key it cannot verify from no key at all.
    unverified: AtomicU64,
    /// When the store's keys were last read in full or in part (ms).
    read_at: AtomicI64,
    /// Past this since the last read, keys kept in the store are refused
    /// (503): a revocation elsewhere may not have been seen.
    max_stale: Duration,
}

/// How far back a poll reads before the newest row it saw: rows become
/// visible a moment after `now64()` stamped them, and servers' inserts
/// interleave.
const POLL_OVERLAP: &str = "30";
/// Every this many polls, everything is read again (a replica that
/// caught up late holds rows older than the overlap).
const FULL_EVERY: u64 = 60;
/// Every this many polls, the keys' last uses are written.
const USE_EVERY: u64 = 30;
/// Seals of rows that did not verify kept, so as not to check them again.
const REFUSED_KEPT: usize = 100_000;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Tenants {
    pub fn new(
        config: &crate::config::Config,
        storage: Arc<dyn Storage>,
    ) -> Result<Tenants, String> {
        Ok(Tenants {
            storage,
            key: ControlKey::of(config).map_err(|e| format!("tenants.signing_key: {e}"))?,
            grace: config.tenants.rotation_grace,
            held: tokio::sync::Mutex::new(Held::default()),
            ring: ArcSwap::from_pointee(Keyring::default()),
            directory: ArcSwap::from_pointee(Directory::default()),
            book: ArcSwap::from_pointee(sessions::Book::default()),
            loaded: AtomicBool::new(false),
            unverified: AtomicU64::new(0),
            read_at: AtomicI64::new(0),
            max_stale: config.tenants.max_stale,
        })
    }

    /// Tenants read as none: for a router built without a store to read
    /// keys from (its own tests, benchmarks), where only configured keys hold.
    pub fn without_store(config: &crate::config::Config, storage: Arc<dyn Storage>) -> Tenants {
        Tenants {
            storage,
            key: ControlKey::from_master(&rand::random()),
            grace: config.tenants.rotation_grace,
            held: tokio::sync::Mutex::new(Held::default()),
            ring: ArcSwap::from_pointee(Keyring::default()),
            directory: ArcSwap::from_pointee(Directory::default()),
            book: ArcSwap::from_pointee(sessions::Book::default()),
            loaded: AtomicBool::new(true),
            unverified: AtomicU64::new(0),
            read_at: AtomicI64::new(i64::MAX),
            max_stale: config.tenants.max_stale,
        }
    }

    /// Creates the tables where missing and reads every record.
    pub async fn start(&self) -> Result<(), StorageError> {
        for sql in store::ddl() {
            self.storage.execute(&sql).await?;
        }
        self.refresh(true).await.map(|_| ())
    }

    /// Whether the store's keys were read at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn ring(&self) -> arc_swap::Guard<Arc<Keyring>> {
        self.ring.load()
    }

    pub fn digest(&self, secret: &str) -> [u8; 32] {
        self.key.digest(secret)
    }

    pub fn unverified(&self) -> u64 {
        self.unverified.load(Ordering::Relaxed)
    }

    /// Whether a request without a key may go in: the store's keys were
    /// read, hold no ingest key, and no row this server cannot verify
    /// (configured keys are the caller's to check).
    pub fn keeps_open(&self) -> bool {
        self.loaded() && !self.ring().any_ingest && self.unverified() == 0
    }

    /// How long since the store's keys were last read, when that is past
    /// `tenants.max_stale`: then keys kept there are not taken.
    pub fn stale(&self, now_ms: i64) -> Option<Duration> {
        let since = now_ms.saturating_sub(self.read_at.load(Ordering::Acquire));
        (since > self.max_stale.as_millis() as i64).then(|| Duration::from_millis(since as u64))
    }

    /// Reads the records written since the last read (`full`: all), and
    /// folds again what has news. How many records were new.
    pub async fn refresh(&self, full: bool) -> Result<usize, StorageError> {
        let (keys_since, organizers_since, sessions_since) = match full {
            true => (None, None, None),
            false => {
                let held = self.held.lock().await;
                (
                    held.keys.since.clone(),
                    held.organizers.since.clone(),
                    held.sessions.since.clone(),
                )
            }
        };
        let asked_at = now_ms();
        let key_rows = self.read(store::KEYS, keys_since).await?;
        let organizer_rows = self.read(store::ORGANIZERS, organizers_since).await?;
        let session_rows = self.read(store::SESSIONS, sessions_since).await?;
        let mut held = self.held.lock().await;
        let (new_keys, forged_keys) = held.keys.take(&self.key, store::KEYS, key_rows);
        let (new_organizers, forged_organizers) =
            held.organizers
                .take(&self.key, store::ORGANIZERS, organizer_rows);
        let (new_sessions, forged_sessions) =
            held.sessions.take(&self.key, store::SESSIONS, session_rows);
        // Only a key's record that does not verify closes keyless ingest
        // (it may be a key sealed elsewhere); an organizer's or a
        // session's grants nothing.
        if forged_keys > 0 && self.unverified.fetch_add(forged_keys, Ordering::Relaxed) == 0 {
            tracing::warn!(
                rows = forged_keys,
                "key records whose seal does not verify are ignored: forged, or sealed with \
                 another tenants.signing_key (every server of a store needs the same). \
                 Requests without a key are refused from now on"
            );
        }
        if forged_organizers + forged_sessions > 0 {
            tracing::debug!(
                organizers = forged_organizers,
                sessions = forged_sessions,
                "records whose seal does not verify are ignored"
            );
        }
        if new_keys > 0 || !self.loaded() {
            self.fold_keys(&mut held);
        }
        if new_organizers > 0 || !self.loaded() {
            self.fold_organizers(&mut held);
        }
        if new_sessions > 0 || !self.loaded() {
            self.fold_sessions(&mut held);
        }
        self.read_at.store(asked_at, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
        Ok(new_keys + new_organizers + new_sessions)
    }

    async fn read(
        &self,
        table: &str,
        since: Option<String>,
    ) -> Result<Vec<store::Row>, StorageError> {
        let rows = store::read_rows(&*self.storage, table, since.as_deref(), POLL_OVERLAP).await?;
        if rows.len() >= store::READ_LIMIT {
            tracing::warn!(
                table,
                rows = rows.len(),
                "the records read reached the read's limit: the store holds far more rows than \
                 things (forged ones?); those past it are not seen"
            );
        }
        Ok(rows)
    }

    fn fold_keys(&self, held: &mut Held) {
        let Held { keys, used, .. } = held;
        let keys: Vec<Key> = keys
            .records
            .iter_mut()
            .filter_map(|(id, rs)| keys::fold(rs, used.entry(id.clone()).or_default().clone()))
            .collect();
        self.ring.store(Arc::new(Keyring::new(keys)));
    }

    fn fold_organizers(&self, held: &mut Held) {
        let organizers = held
            .organizers
            .records
            .values_mut()
            .filter_map(|rs| organizers::fold(rs));
        self.directory.store(Arc::new(Directory::new(organizers)));
    }

    fn fold_sessions(&self, held: &mut Held) {
        let now = now_ms();
        // Sessions past their end are forgotten (their seals stay seen, so
        // a read of their rows again changes nothing); a closing alone is
        // kept, so that its opening, read later, stays closed.
        held.sessions.records.retain(|_, rs| {
            !rs.iter().any(
                |r| matches!(r.change, sessions::Change::Open { until_ms, .. } if until_ms <= now),
            )
        });
        let live = held.sessions.records.iter_mut().filter_map(|(id, rs)| {
            sessions::fold(rs)
                .filter(|s| s.until_ms > now)
                .map(|s| (id.clone(), s))
        });
        self.book.store(Arc::new(sessions::Book::new(live)));
    }

    /// A session cookie's name in the store: its keyed digest.
    pub fn session_id(&self, cookie: &str) -> String {
        keys::hex(&self.key.digest(&format!("session:{cookie}")))
    }

    /// What a configured secret (the admin token, a read key) is called in
    /// a session's record: its keyed digest, never the secret.
    pub fn credential(&self, secret: &str) -> String {
        format!(
            "config:{}",
            keys::hex(&self.key.digest(&format!("credential:{secret}")))
        )
    }

    /// The live session of this cookie; none while the store's records
    /// were not read for `tenants.max_stale` (a sign-out elsewhere may not
    /// have been seen).
    pub fn session(&self, cookie: &str) -> Option<sessions::Session> {
        let now = now_ms();
        if self.stale(now).is_some() {
            return None;
        }
        self.book.load().get(&self.session_id(cookie), now).cloned()
    }

    /// Opens a session: its cookie. `credential`'s oldest sessions past
    /// [`sessions::PER_CREDENTIAL`] are closed; past
    /// [`sessions::MAX_SESSIONS`] in all, a sign-in is refused.
    pub async fn open_session(
        &self,
        organizer: Option<String>,
        credential: String,
    ) -> Result<String, KeyError> {
        use rand::RngCore;
        self.require_loaded()?;
        let now = now_ms();
        let book = self.book.load_full();
        if book.live(now) >= sessions::MAX_SESSIONS {
            return Err(KeyError::Conflict(
                "too many sessions are open; try again later".into(),
            ));
        }
        let own = book.of(&credential, now);
        if own.len() >= sessions::PER_CREDENTIAL {
            for (id, _) in &own[..=own.len() - sessions::PER_CREDENTIAL] {
                self.change_session(id, sessions::Change::Close).await?;
            }
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let cookie = keys::hex(&bytes);
        let until_ms = now + sessions::SESSION_TTL.as_millis() as i64;
        let open = sessions::Change::Open {
            organizer,
            credential,
            until_ms,
        };
        self.change_session(&self.session_id(&cookie), open).await?;
        Ok(cookie)
    }

    /// Ends the session of this cookie, on every server within a poll.
    pub async fn close_session(&self, cookie: &str) -> Result<(), KeyError> {
        let id = self.session_id(cookie);
        if self.book.load().get(&id, now_ms()).is_none() {
            // Opened on another server since this one last read.
            self.refresh(false).await?;
        }
        if self.book.load().get(&id, now_ms()).is_some() {
            self.change_session(&id, sessions::Change::Close).await?;
        }
        Ok(())
    }

    async fn change_session(&self, id: &str, change: sessions::Change) -> Result<(), KeyError> {
        let mut held = self.held.lock().await;
        self.append(&mut held.sessions, store::SESSIONS, id, "", change)
            .await?;
        self.fold_sessions(&mut held);
        Ok(())
    }

    /// Every organizer made through the API, as this server knows them.
    pub fn directory(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.directory.load()
    }

    /// Reads others' changes every `every`; all of them every
    /// [`FULL_EVERY`] polls; writes the keys' last uses every [`USE_EVERY`].
    pub fn spawn_polling(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut polls: u64 = 0;
            loop {
                tick.tick().await;
                polls += 1;
                let full = !self.loaded() || polls.is_multiple_of(FULL_EVERY);
                if !self.loaded()
                    && let Err(e) = self.start().await
                {
                    tracing::warn!(error = %e, "the keys kept in the store could not be read; retrying");
                    continue;
                }
                if let Err(e) = self.refresh(full).await {
                    tracing::warn!(error = %e, "the keys kept in the store could not be read again; the last ones read hold");
                }
                if polls.is_multiple_of(USE_EVERY)
                    && let Err(e) = self.write_use().await
                {
                    tracing::debug!(error = %e, "the keys' last uses could not be written");
                }
            }
        })
    }

    /// Writes the last uses that changed since the last write.
    pub async fn write_use(&self) -> Result<(), StorageError> {
        let changed: Vec<(String, i64)> = {
            let held = self.held.lock().await;
            held.used
                .iter()
                .map(|(id, at)| (id.clone(), at.load(Ordering::Relaxed)))
                .filter(|(id, at)| *at > 0 && held.used_written.get(id) != Some(at))
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        store::write_use(&*self.storage, &changed).await?;
        let mut held = self.held.lock().await;
        held.used_written.extend(changed);
        Ok(())
    }

    /// Every key's last use: this server's, or another's if later.
    pub async fn last_uses(&self) -> HashMap<String, i64> {
        let keys = self.ring().keys();
        let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        let mut out = store::read_use(&*self.storage, &ids)
            .await
            .unwrap_or_default();
        for key in keys {
            let here = key.used_ms.load(Ordering::Relaxed);
            let at = out.entry(key.id.clone()).or_default();
            *at = (*at).max(here);
        }
        out
    }

    /// Seals and stores one change to a key, then holds it. Changes on
    /// this server are made one at a time, each above every version known
    /// for its key.
    async fn change(&self, id: &str, by: &str, change: Change) -> Result<Arc<Key>, KeyError> {
        let mut held = self.held.lock().await;
        self.append(&mut held.keys, store::KEYS, id, by, change)
            .await?;
        self.fold_keys(&mut held);
        self.ring()
            .get(id)
            .cloned()
            .ok_or_else(|| KeyError::NotFound(id.to_string()))
    }

    /// Seals one change to `id` as a record above every version `log`
    /// knows for it, stores it in `table`, then holds it in `log`. The
    /// caller holds `held`'s lock, so this server's changes go one at a time.
    async fn append<C: Serialize>(
        &self,
        log: &mut Log<C>,
        table: &str,
        id: &str,
        by: &str,
        change: C,
    ) -> Result<(), StorageError> {
        let record = Record {
            id: id.to_string(),
            version: log.next_version(id),
            at_ms: now_ms(),
            by: by.to_string(),
            change,
        };
        let body = serde_json::to_string(&record).expect("serializes");
        let seal = self.key.seal(table, &body);
        store::write_row(&*self.storage, table, id, record.version, &body, &seal).await?;
        log.seen.insert(seal);
        log.records.entry(id.to_string()).or_default().push(record);
        Ok(())
    }

    /// Seals and stores one change to an organizer, then holds it.
    pub(crate) async fn change_organizer(
        &self,
        id: &str,
        by: &str,
        change: organizers::Change,
    ) -> Result<Arc<organizers::Organizer>, KeyError> {
        let mut held = self.held.lock().await;
        // Under the lock: two requests making one organizer at once on this
        // server, one gets the 409.
        if matches!(change, organizers::Change::Create { .. })
            && held.organizers.records.get(id).is_some_and(|rs| {
                rs.iter()
                    .any(|r| matches!(r.change, organizers::Change::Create { .. }))
            })
        {
            return Err(KeyError::Conflict(format!(
                "organizer {id} exists: PATCH /admin/organizers/{id} renames or suspends it"
            )));
        }
        self.append(&mut held.organizers, store::ORGANIZERS, id, by, change)
            .await?;
        self.fold_organizers(&mut held);
        self.directory()
            .get(id)
            .cloned()
            .ok_or_else(|| KeyError::NoOrganizer(id.to_string()))
    }

    pub(crate) fn require_loaded(&self) -> Result<(), KeyError> {
        match self.loaded() {
            true => Ok(()),
            false => Err(KeyError::NotLoaded(
                "the store could not be reached since the start; retry".into(),
            )),
        }
    }

    /// A new key: the key and its secret, which is shown this once.
    pub async fn create(&self, new: NewKey, by: &str) -> Result<(Arc<Key>, String), KeyError> {
        self.require_loaded()?;
        new.check().map_err(KeyError::Invalid)?;
        let secret = keys::new_secret(new.kind);
        let mut origins = new.origins;
        origins.dedup();
        let mut organizers = new.organizers;
        organizers.sort();
        organizers.dedup();
        let change = Change::Create {
            kind: new.kind,
            organizers,
            origins,
            secret: self.secret_ref(&secret),
        };
        let key = self.change(&keys::new_id(), by, change).await?;
        Ok((key, secret))
    }

    /// A new secret for key `id`; the old ones work for `grace` more.
    pub async fn rotate(
        &self,
        id: &str,
        grace: Option<Duration>,
        by: &str,
    ) -> Result<(Arc<Key>, String), KeyError> {
        let kind = self.live(id).await?.kind;
        let grace = grace.unwrap_or(self.grace);
        if grace > Duration::from_secs(366 * 86_400) {
            return Err(KeyError::Invalid("grace: at most 366 days".into()));
        }
        let secret = keys::new_secret(kind);
        let change = Change::Rotate {
            secret: self.secret_ref(&secret),
            grace_ms: grace.as_millis() as u64,
        };
        let key = self.change(id, by, change).await?;
        Ok((key, secret))
    }

    /// A new organizer; a 409 when its id is taken.
    pub async fn create_organizer(
        &self,
        new: organizers::NewOrganizer,
        by: &str,
    ) -> Result<Arc<organizers::Organizer>, KeyError> {
        self.require_loaded()?;
        keys::organizer_id(&new.id).map_err(|why| KeyError::Invalid(format!("id: {why}")))?;
        organizers::check_name(&new.name).map_err(KeyError::Invalid)?;
        self.refresh(false).await?;
        let name = new.name.trim().to_string();
        self.change_organizer(&new.id, by, organizers::Change::Create { name })
            .await
    }

    /// Renames, suspends or resumes organizer `id`: the organizer after.
    pub async fn patch_organizer(
        &self,
        id: &str,
        patch: &organizers::Patch,
        by: &str,
    ) -> Result<Arc<organizers::Organizer>, KeyError> {
        self.require_loaded()?;
        // What other servers changed lately, before deciding.
        self.refresh(false).await?;
        let now = self
            .directory()
            .get(id)
            .cloned()
            .ok_or_else(|| KeyError::NoOrganizer(id.to_string()))?;
        let mut after = now.clone();
        for change in organizers::changes(&now, patch).map_err(KeyError::Invalid)? {
            after = self.change_organizer(id, by, change).await?;
        }
        Ok(after)
    }

    /// Revokes key `id` for good.
    pub async fn revoke(&self, id: &str, by: &str) -> Result<Arc<Key>, KeyError> {
        self.live(id).await?;
        self.change(id, by, Change::Revoke).await
    }

    /// Key `id`, not revoked; read again first if this server has not
    /// seen it yet (made on another server since the last poll).
    async fn live(&self, id: &str) -> Result<Arc<Key>, KeyError> {
        self.require_loaded()?;
        if self.ring().get(id).is_none() {
            self.refresh(false).await?;
        }
        let key = self
            .ring()
            .get(id)
            .cloned()
            .ok_or_else(|| KeyError::NotFound(id.to_string()))?;
        match key.revoked_at_ms {
            Some(_) => Err(KeyError::Revoked(id.to_string())),
            None => Ok(key),
        }
    }

    fn secret_ref(&self, secret: &str) -> SecretRef {
        SecretRef {
            digest: keys::hex(&self.digest(secret)),
            prefix: keys::prefix(secret),
        }
    }
}

/// A key as `/admin/keys` shows it: never a secret, nor a digest.
pub fn view(key: &Key, used_ms: Option<i64>, now: i64) -> serde_json::Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let current = key.secrets.last().map(|s| s.prefix.clone());
    let previous: Vec<serde_json::Value> = key.secrets[..key.secrets.len().saturating_sub(1)]
        .iter()
        .filter(|s| s.until_ms.is_some_and(|u| u > now))
        .map(|s| serde_json::json!({"prefix": s.prefix, "valid_until": s.until_ms.and_then(time)}))
        .collect();
    let mut v = serde_json::json!({
        "id": key.id,
        "kind": key.kind,
        "organizers": key.organizers,
        "prefix": current,
        "state": key.state(),
        "created_at": time(key.created_at_ms),
        "last_used_at": used_ms.filter(|u| *u > 0).and_then(time),
        "revoked_at": key.revoked_at_ms.and_then(time),
        "previous_secrets": previous,
    });
    if key.kind == KeyKind::Public {
        v["origins"] = serde_json::json!(key.origins);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_holds_for_its_table_and_text_under_its_key_only() {
        let a = ControlKey::from_master(&[1; 32]);
        let b = ControlKey::from_master(&[2; 32]);
        let seal = a.seal("keys", "{\"id\":\"k\"}");
        assert!(a.verifies("keys", "{\"id\":\"k\"}", &seal));
        assert!(!a.verifies("keys", "{\"id\":\"j\"}", &seal));
        assert!(!a.verifies("key_use", "{\"id\":\"k\"}", &seal));
        assert!(!b.verifies("keys", "{\"id\":\"k\"}", &seal));
        assert_ne!(a.digest("s"), b.digest("s"));
        assert_ne!(keys::hex(&a.digest("s")), a.seal("", "s"));
    }
}
