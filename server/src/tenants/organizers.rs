//! Organizers as data: made, renamed, suspended and resumed through
//! `/admin/organizers`, each change a sealed record (as keys' are), folded
//! into the [`Directory`] every server holds in memory. A suspended
//! organizer's events are refused (403), nothing of theirs is deleted.
//!
//! No HTTP and no storage in here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One change to an organizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Create {
        name: String,
    },
    Rename {
        name: String,
    },
    /// Its events are refused from now on; what is stored stays.
    Suspend,
    Resume,
}

/// A change to an organizer as it is sealed and stored.
pub type Record = super::Record<Change>;

/// An organizer, folded from its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organizer {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub suspended_at_ms: Option<i64>,
}

/// The organizer `records` (one organizer's, verified) describe, in
/// version order; the first creation counts, a later one is ignored.
pub fn fold(records: &mut [Record]) -> Option<Organizer> {
    super::in_order(records);
    let mut out: Option<Organizer> = None;
    for r in records.iter() {
        match (&mut out, &r.change) {
            (None, Change::Create { name }) => {
                out = Some(Organizer {
                    id: r.id.clone(),
                    name: name.clone(),
                    created_at_ms: r.at_ms,
                    suspended_at_ms: None,
                })
            }
            (None, _) | (Some(_), Change::Create { .. }) => {}
            (Some(o), Change::Rename { name }) => o.name = name.clone(),
            (Some(o), Change::Suspend) => o.suspended_at_ms = Some(r.at_ms),
            (Some(o), Change::Resume) => o.suspended_at_ms = None,
        }
    }
    out
}

/// Every organizer by id, and the suspended ones at hand for the ingest path.
#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<String, Arc<Organizer>>,
    suspended: HashSet<String>,
}

impl Directory {
    pub fn new(organizers: impl IntoIterator<Item = Organizer>) -> Directory {
        let mut d = Directory::default();
        for o in organizers {
            if o.suspended_at_ms.is_some() {
                d.suspended.insert(o.id.clone());
            }
            d.by_id.insert(o.id.clone(), Arc::new(o));
        }
        d
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Organizer>> {
        self.by_id.get(id)
    }

    /// Whether `id`'s events are refused.
    pub fn suspended(&self, id: &str) -> bool {
        !self.suspended.is_empty() && self.suspended.contains(id)
    }

    /// Every organizer, by id.
    pub fn list(&self) -> Vec<Arc<Organizer>> {
        let mut all: Vec<Arc<Organizer>> = self.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

/// `POST /admin/organizers`'s body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrganizer {
    pub id: String,
    pub name: String,
}

/// `PATCH /admin/organizers/{id}`'s body: what changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub name: Option<String>,
    pub suspended: Option<bool>,
}

/// A name people read: 1 to 200 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.trim().chars().count();
    if n == 0 || n > 200 {
        return Err("name: 1 to 200 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name: no control characters".into());
    }
    Ok(())
}

/// The changes `patch` makes to `now` (in order: a rename, then a
/// suspension or resumption). A suspension or resumption asked for is
/// written whatever this server last read (another may have just changed
/// it; writing one twice is harmless); a rename only when the name differs.
pub fn changes(now: &Organizer, patch: &Patch) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    if let Some(name) = &patch.name {
        check_name(name)?;
        if name.trim() != now.name {
            out.push(Change::Rename {
                name: name.trim().to_string(),
            });
        }
    }
    match patch.suspended {
        Some(true) => out.push(Change::Suspend),
        Some(false) => out.push(Change::Resume),
        None => {}
    }
    Ok(out)
}

/// An organizer as `/admin/organizers` shows it.
pub fn view(o: &Organizer) -> serde_json::Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    serde_json::json!({
        "id": o.id,
        "name": o.name,
        "state": if o.suspended_at_ms.is_some() { "suspended" } else { "active" },
        "created_at": time(o.created_at_ms),
        "suspended_at": o.suspended_at_ms.and_then(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, change: Change) -> Record {
        Record {
            id: "org-a".into(),
            version,
            at_ms: version as i64,
            by: "token:00".into(),
            change,
        }
    }

    #[test]
    fn an_organizer_is_its_records_in_order_and_the_first_creation_counts() {
        let mut records = [
            record(4, Change::Resume),
            record(3, Change::Suspend),
            record(1, Change::Create { name: "A".into() }),
            record(2, Change::Rename { name: "B".into() }),
            record(5, Change::Create { name: "C".into() }),
        ];
        let o = fold(&mut records[..4]).unwrap();
        assert_eq!((o.name.as_str(), o.suspended_at_ms), ("B", None));
        let o = fold(&mut records[..3]).unwrap();
        assert_eq!(o.suspended_at_ms, Some(3));
        let d = Directory::new([o]);
        assert!(d.suspended("org-a") && !d.suspended("org-b"));
        assert!(fold(&mut [record(1, Change::Suspend)]).is_none());
    }

    #[test]
    fn a_patch_makes_only_the_changes_it_asks_for() {
        let now = Organizer {
            id: "o".into(),
            name: "A".into(),
            created_at_ms: 0,
            suspended_at_ms: None,
        };
        let patch = |name: Option<&str>, suspended| Patch {
            name: name.map(str::to_string),
            suspended,
        };
        assert_eq!(changes(&now, &patch(Some("A"), None)), Ok(vec![]));
        assert_eq!(
            changes(&now, &patch(None, Some(false))),
            Ok(vec![Change::Resume])
        );
        assert_eq!(
            changes(&now, &patch(Some(" B "), Some(true))),
            Ok(vec![Change::Rename { name: "B".into() }, Change::Suspend])
        );
        assert!(
            changes(&now, &patch(Some(""), None))
                .unwrap_err()
                .starts_with("name")
        );
        assert!(changes(&now, &patch(Some("a\u{0}"), None)).is_err());
    }
}
