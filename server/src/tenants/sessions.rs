//! Dashboard sessions as data: a sign-in and a sign-out are sealed
//! records (as keys' are), so a session outlives a restart and a sign-out
//! on one server ends it on every server within a poll. A session is named
//! by the keyed digest of its cookie, never the cookie: a reader of the
//! table cannot sign in with what it reads.
//!
//! No HTTP and no storage in here.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions one token or read key holds at most; a new one past it ends
/// that credential's oldest, never anyone else's.
pub const PER_CREDENTIAL: usize = 32;
/// Sessions held at most in all; past it a new sign-in is refused rather
/// than anyone signed out.
pub const MAX_SESSIONS: usize = 100_000;

/// One change to a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Open {
        /// `None`: the admin; else the organizer it sees.
        organizer: Option<String>,
        /// What signed in: a keyed digest of a configured secret
        /// (`config:…`), or a key made through the API (`store-key:…`).
        credential: String,
        until_ms: i64,
    },
    /// Signed out, or made room for: for good.
    Close,
}

/// A change to a session as it is sealed and stored.
pub type Record = super::Record<Change>;

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub organizer: Option<String>,
    pub credential: String,
    pub opened_ms: i64,
    pub until_ms: i64,
}

/// The session `records` describe: opened and not closed; `None` once
/// closed (whatever the order the records arrived in).
pub fn fold(records: &mut [Record]) -> Option<Session> {
    super::in_order(records);
    let mut out = None;
    for r in records.iter() {
        match &r.change {
            Change::Close => return None,
            Change::Open {
                organizer,
                credential,
                until_ms,
            } if out.is_none() => {
                out = Some(Session {
                    organizer: organizer.clone(),
                    credential: credential.clone(),
                    opened_ms: r.at_ms,
                    until_ms: *until_ms,
                })
            }
            Change::Open { .. } => {}
        }
    }
    out
}

/// Every live session by its digest (hex).
#[derive(Debug, Default)]
pub struct Book {
    by_digest: HashMap<String, Session>,
}

impl Book {
    pub fn new(sessions: impl IntoIterator<Item = (String, Session)>) -> Book {
        Book {
            by_digest: sessions.into_iter().collect(),
        }
    }

    /// The session of this digest, if it has not ended by `now_ms`.
    pub fn get(&self, digest: &str, now_ms: i64) -> Option<&Session> {
        self.by_digest.get(digest).filter(|s| s.until_ms > now_ms)
    }

    /// The live sessions of `credential`, oldest first.
    pub fn of(&self, credential: &str, now_ms: i64) -> Vec<(String, i64)> {
        let mut own: Vec<(String, i64)> = self
            .by_digest
            .iter()
            .filter(|(_, s)| s.credential == credential && s.until_ms > now_ms)
            .map(|(d, s)| (d.clone(), s.opened_ms))
            .collect();
        own.sort_by_key(|(d, at)| (*at, d.clone()));
        own
    }

    /// How many are live at `now_ms`.
    pub fn live(&self, now_ms: i64) -> usize {
        self.by_digest
            .values()
            .filter(|s| s.until_ms > now_ms)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, change: Change) -> Record {
        Record {
            id: "d".into(),
            version,
            at_ms: version as i64,
            by: String::new(),
            change,
        }
    }

    #[test]
    fn a_closed_session_stays_closed_and_an_ended_one_is_not_found() {
        let open = Change::Open {
            organizer: None,
            credential: "config:x".into(),
            until_ms: 100,
        };
        assert!(fold(&mut [record(2, Change::Close), record(1, open.clone())]).is_none());
        let s = fold(&mut [record(1, open)]).unwrap();
        let book = Book::new([("d".to_string(), s)]);
        assert!(book.get("d", 99).is_some());
        assert!(book.get("d", 100).is_none());
        assert_eq!(book.of("config:x", 50).len(), 1);
        assert_eq!(book.live(100), 0);
    }
}
