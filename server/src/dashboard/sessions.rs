//! Who is signed in to `/dashboard`: a random id in a cookie, the viewer
//! and an expiry in memory. A restart signs everyone out, which for a page
//! behind a token is the safe failure.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngCore;

use super::Viewer;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; past it the oldest half goes (a flood of sign-ins
/// cannot grow memory without end).
const MAX_SESSIONS: usize = 10_000;

pub struct Sessions {
    open: DashMap<String, (Viewer, Instant)>,
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
    /// (rand's thread generator is a CSPRNG seeded from it).
    pub fn open(&self, viewer: Viewer) -> String {
        let now = Instant::now();
        if self.open.len() >= MAX_SESSIONS {
            self.open.retain(|_, (_, until)| *until > now);
            if self.open.len() >= MAX_SESSIONS {
                let mut ends: Vec<Instant> = self.open.iter().map(|e| e.value().1).collect();
                ends.sort();
                let cut = ends[ends.len() / 2];
                self.open.retain(|_, (_, until)| *until > cut);
            }
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.open.insert(id.clone(), (viewer, now + SESSION_TTL));
        id
    }

    /// The viewer of a live session.
    pub fn viewer(&self, id: &str) -> Option<Viewer> {
        let entry = self.open.get(id)?;
        let (viewer, until) = entry.value();
        if *until > Instant::now() {
            return Some(viewer.clone());
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
        let a = s.open(Viewer::Admin);
        let b = s.open(Viewer::Organizer("o".into()));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(s.viewer(&a), Some(Viewer::Admin));
        assert_eq!(s.viewer(&b), Some(Viewer::Organizer("o".into())));
        s.close(&a);
        assert_eq!(s.viewer(&a), None);
        assert_eq!(s.viewer("not-a-session"), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let s = Sessions::default();
        for _ in 0..MAX_SESSIONS + 10 {
            s.open(Viewer::Admin);
        }
        assert!(s.open.len() <= MAX_SESSIONS, "{}", s.open.len());
    }
}
