//! Who is signed in to `/dashboard`: a random id in a cookie, the viewer
//! and an expiry in memory. A restart signs everyone out, which for a page
//! behind a token is the safe failure.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngCore;

use super::Viewer;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions one token or read key holds at most; a new one past it ends
/// that credential's oldest, never anyone else's.
pub const PER_CREDENTIAL: usize = 32;
/// Sessions held at most in all; past it (after expired ones go) a new
/// sign-in is refused rather than anyone signed out.
const MAX_SESSIONS: usize = 100_000;

/// The table of sessions is full of live ones.
#[derive(Debug, thiserror::Error)]
#[error("too many sessions are open; try again later")]
pub struct Full;

pub struct Sessions {
    /// Id → viewer, the credential it signed in with (a fingerprint), and
    /// when it ends.
    open: DashMap<String, (Viewer, String, Instant)>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            open: DashMap::new(),
        }
    }
}

impl Sessions {
    /// A new session's id: 256 bits from the operating system's generator
    /// (rand's thread generator is a CSPRNG seeded from it). `credential`
    /// names what signed in (a fingerprint of the token or key): its own
    /// sessions are capped at [`PER_CREDENTIAL`], oldest out.
    pub fn open(&self, viewer: Viewer, credential: &str) -> Result<String, Full> {
        let now = Instant::now();
        let mut own: Vec<(Instant, String)> = self
            .open
            .iter()
            .filter(|e| e.value().1 == credential)
            .map(|e| (e.value().2, e.key().clone()))
            .collect();
        if own.len() >= PER_CREDENTIAL {
            own.sort();
            for (_, id) in &own[..=own.len() - PER_CREDENTIAL] {
                self.open.remove(id);
            }
        }
        if self.open.len() >= MAX_SESSIONS {
            self.open.retain(|_, (_, _, until)| *until > now);
            if self.open.len() >= MAX_SESSIONS {
                return Err(Full);
            }
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.open.insert(
            id.clone(),
            (viewer, credential.to_string(), now + SESSION_TTL),
        );
        Ok(id)
    }

    /// The viewer of a live session.
    pub fn viewer(&self, id: &str) -> Option<Viewer> {
        self.viewer_and_credential(id).map(|(v, _)| v)
    }

    /// The viewer of a live session and the credential it signed in with.
    pub fn viewer_and_credential(&self, id: &str) -> Option<(Viewer, String)> {
        let entry = self.open.get(id)?;
        let (viewer, credential, until) = entry.value();
        if *until > Instant::now() {
            return Some((viewer.clone(), credential.clone()));
        }
        drop(entry);
        self.open.remove(id);
        None
    }

    pub fn close(&self, id: &str) {
        self.open.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_read_and_close() {
        let s = Sessions::default();
        let a = s.open(Viewer::Admin, "token:a").unwrap();
        let b = s.open(Viewer::Organizer("o".into()), "key:o").unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(s.viewer(&a), Some(Viewer::Admin));
        assert_eq!(s.viewer(&b), Some(Viewer::Organizer("o".into())));
        s.close(&a);
        assert_eq!(s.viewer(&a), None);
        assert_eq!(s.viewer("not-a-session"), None);
    }

    #[test]
    fn a_flood_of_sign_ins_with_one_key_signs_out_no_one_else() {
        let s = Sessions::default();
        let admin = s.open(Viewer::Admin, "token:admin").unwrap();
        let first = s.open(Viewer::Organizer("o".into()), "key:o").unwrap();
        for _ in 0..10_001 {
            s.open(Viewer::Organizer("o".into()), "key:o").unwrap();
        }
        assert_eq!(s.viewer(&admin), Some(Viewer::Admin));
        assert_eq!(s.viewer(&first), None, "the flooding key's oldest went");
        assert_eq!(s.open.len(), PER_CREDENTIAL + 1);
    }
}
