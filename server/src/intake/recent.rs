//! The ids accepted within the dedup window, to drop a client's resends.
//!
//! Two generations of hash sets per shard: an id is checked in both and
//! claimed in the newer; once the newer is `window` old it becomes the older
//! and the older is dropped. So an id is remembered for at least `window`
//! (at most twice that), and memory is bounded by `capacity`: a generation
//! that fills up rotates early, as an LRU would evict.
//!
//! Written here rather than taken from a cache crate: moka (LRU, TTL), used
//! before, cost about a tenth of the server's CPU at 100 000 events/s in
//! profiles, for bookkeeping (per-entry expiry, access order) this
//! set does not need.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::ingest::ResendKey;

/// Shards for concurrency, each holding at least this many ids per
/// generation: ids spread unevenly over shards, and with thousands per shard
/// the newest `capacity / 2` are kept within about a percent.
const MIN_PER_SHARD: usize = 16_384;
const MAX_SHARDS: usize = 32;

pub struct Recent {
    shards: Vec<Mutex<Generations>>,
    /// Keyed (SipHash): ids come from clients, who must not be able to aim
    /// them all at one shard or one bucket. A key is hashed once, for its
    /// shard and both generations (hash tables take the hash as given).
    hasher: RandomState,
    window: Duration,
    per_generation: usize,
}

struct Generations {
    newer: HashTable<ResendKey>,
    older: HashTable<ResendKey>,
    since: Instant,
}

impl Recent {
    pub fn new(window: Duration, capacity: u64) -> Recent {
        let half = (capacity as usize / 2).max(1);
        let shards = (half / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_generation = half.div_ceil(shards);
        Recent {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Generations {
                        newer: HashTable::new(),
                        older: HashTable::new(),
                        since: Instant::now(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            window,
            per_generation,
        }
    }

    /// The shard of a key hashed to `hash`: from its middle bits, as the
    /// tables use the low and the top ones.
    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Generations> {
        let i = (hash >> 32) as usize % self.shards.len();
        let mut g = self.shards[i].lock().unwrap();
        let age = g.since.elapsed();
        if age >= self.window || g.newer.len() >= self.per_generation {
            let g = &mut *g;
            if age >= self.window * 2 {
                // Both generations are stale after two windows without a
                // rotation: an idle server gives their memory back.
                g.newer = HashTable::new();
                g.older = HashTable::new();
            } else {
                // The newer becomes the older; the older, emptied, is the
                // next newer and keeps its allocation (no regrowing from
                // empty under load).
                std::mem::swap(&mut g.newer, &mut g.older);
                g.newer.clear();
            }
            g.since = Instant::now();
        }
        g
    }

    /// Claims `key`: true if it was not seen within the window (it is now).
    pub fn claim(&self, key: ResendKey) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut g = self.shard(hash);
        if g.older.find(hash, |k| *k == key).is_some() {
            return false;
        }
        match g
            .newer
            .entry(hash, |k| *k == key, |k| self.hasher.hash_one(k))
        {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(key);
                true
            }
        }
    }

    /// Forgets `key`, so that a retry of a refused request is not a resend.
    pub fn release(&self, key: &ResendKey) {
        let hash = self.hasher.hash_one(key);
        let mut g = self.shard(hash);
        if let Ok(found) = g.newer.find_entry(hash, |k| k == key) {
            found.remove();
        }
        if let Ok(found) = g.older.find_entry(hash, |k| k == key) {
            found.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Table;

    fn key(n: u128) -> ResendKey {
        ResendKey {
            organizer: 7,
            table: Table::Events,
            id: uuid::Uuid::from_u128(n),
        }
    }

    #[test]
    fn an_id_is_claimed_once_until_released() {
        let r = Recent::new(Duration::from_secs(600), 1000);
        assert!(r.claim(key(1)));
        assert!(!r.claim(key(1)));
        assert!(r.claim(key(2)));
        r.release(&key(1));
        assert!(r.claim(key(1)));
        assert!(!r.claim(key(1)));
    }

    #[test]
    fn an_id_is_remembered_for_the_window_and_forgotten_after_two() {
        let window = Duration::from_millis(200);
        let r = Recent::new(window, 1000);
        assert!(r.claim(key(1)));
        // Past one window it moved to the older generation: still seen.
        std::thread::sleep(window + Duration::from_millis(20));
        assert!(!r.claim(key(1)));
        std::thread::sleep(window * 2 + Duration::from_millis(20));
        assert!(r.claim(key(1)), "forgotten after two windows");
    }

    #[test]
    fn memory_is_bounded_and_the_newest_ids_are_kept() {
        let capacity = 2 * MIN_PER_SHARD as u64 * MAX_SHARDS as u64;
        let r = Recent::new(Duration::from_secs(600), capacity);
        assert_eq!(r.shards.len(), MAX_SHARDS);
        for n in 0..1_500_000 {
            assert!(r.claim(key(n)));
        }
        let held: usize = r
            .shards
            .iter()
            .map(|s| {
                let g = s.lock().unwrap();
                g.newer.len() + g.older.len()
            })
            .sum();
        assert!(held <= capacity as usize, "{held} held");
        // The newest capacity / 2, less a percent, are still known as resends.
        let newest = capacity as u128 / 2 * 99 / 100;
        for n in 1_500_000 - newest..1_500_000 {
            assert!(!r.claim(key(n)), "id {n} forgotten");
        }
    }
}
