//! Compiled plugins kept between starts (`plugin_host.cache_dir`): a
//! restart loads their native code instead of compiling them again, which
//! costs seconds of CPU for each built-in and more for a JS or Python plugin.
//!
//! Written here rather than taken from wasmtime's own cache (its `cache`
//! feature): that one runs whatever its directory holds without checking it,
//! and its cleanup deletes every file there it did not write. Here:
//! - the directory is reached from `/` one name at a time, never through a
//!   symbolic link, each directory on the way belonging to root or the
//!   server's user and writable by no one else (a sticky one such as
//!   `/tmp` may be, when the next one is root's or ours: no one else can
//!   move it), and the directory itself must be the server's user's and
//!   closed to others: otherwise someone else could choose the code the
//!   server runs, and the cache is off. Once opened, every read, write,
//!   rename and removal goes through that descriptor (`openat`, never a
//!   path again), so a directory above it swapped later changes nothing;
//! - an entry is named by the SHA-256 of the plugin's bytes and of the
//!   engine's compatibility hash (wasmtime's version and settings), and
//!   holds the SHA-256 of that name and its code: an entry damaged, or moved
//!   under another plugin's name, is compiled again, never run. It must be
//!   a regular file of the server's user with one link, no one else may
//!   write it, and it is read only up to [`MAX_ENTRY_BYTES`];
//! - only its own files are ever removed: past [`MAX_ENTRIES`] entries or
//!   [`MAX_TOTAL_BYTES`], those used longest ago (never one used within
//!   [`IN_USE`]: a large chain would compile again at every start), and its
//!   temporary files an hour after a crash left them.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries kept: a server's chain and a few earlier builds of each plugin;
/// and their bytes (a JS or Python plugin compiles to about 35 MB).
const MAX_ENTRIES: usize = 64;
const MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Entries used this recently are kept past the limits.
const IN_USE: Duration = Duration::from_secs(600);
/// The largest entry read (the largest plugins compile to tens of MB).
const MAX_ENTRY_BYTES: u64 = 512 << 20;
/// An entry starts with this, then the SHA-256 of its name and code.
const MAGIC: &[u8] = b"bilten-compiled-plugin 2\n";
const SUFFIX: &str = ".cwasm";
/// Its temporary files' names start so; nothing else's may.
const TMP: &str = ".bilten-cwasm-tmp-";

/// Why the cache is off.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the directory must be an absolute path")]
    Relative,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{at:?} is a symbolic link or not a directory: the path must name real directories")]
    Link { at: String },
    #[error(
        "{at:?} belongs to uid {owner} with mode {mode:o}: it must belong to this user (uid {me}){} and be writable by no one else",
        if *last { "" } else { " or root" }
    )]
    Shared {
        at: String,
        owner: u32,
        mode: u32,
        me: u32,
        last: bool,
    },
}

impl From<rustix::io::Errno> for Refused {
    fn from(e: rustix::io::Errno) -> Refused {
        Refused::Io(e.into())
    }
}

/// The cache, open on a directory found private.
#[derive(Debug)]
pub struct CompileCache {
    /// The directory, as opened at the start.
    dir: OwnedFd,
    path: PathBuf,
    loaded: AtomicUsize,
    compiled: AtomicUsize,
}

impl CompileCache {
    /// Reaches the directory from `/`, creating what is missing
    /// (owner-only), and checks each directory on the way.
    pub fn open(path: &Path) -> Result<CompileCache, Refused> {
        if !path.is_absolute() {
            return Err(Refused::Relative);
        }
        let dir = walk(path)?;
        Ok(CompileCache {
            dir,
            path: path.to_path_buf(),
            loaded: AtomicUsize::new(0),
            compiled: AtomicUsize::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Plugins loaded from the cache and compiled (then stored) since it
    /// was opened.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.loaded.load(Ordering::Relaxed),
            self.compiled.load(Ordering::Relaxed),
        )
    }

    /// The component from its entry, or compiled and stored. A cache that
    /// cannot be read or written only costs the compilation.
    pub fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let key = key(engine, wasm);
        let name = format!("{key}{SUFFIX}");
        if let Some(code) = self.read_entry(&name, &key) {
            // SAFETY: the code is what `precompile_component` wrote for these
            // bytes and this engine's settings (its name says so, and its
            // checksum, over the name too, that it is whole and not moved),
            // in a file and a directory only this user may write; wasmtime
            // checks its header against the engine again.
            match unsafe { Component::deserialize(engine, &code) } {
                Ok(c) => {
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => tracing::warn!(entry = %name, "compiling again: {e:#}"),
            }
        }
        let code = engine.precompile_component(wasm)?;
        // SAFETY: compiled just now by this engine.
        let component = unsafe { Component::deserialize(engine, &code)? };
        match self.store(&name, &key, &code) {
            Ok(()) => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                self.evict();
            }
            Err(e) => {
                tracing::warn!(dir = %self.path.display(), "a compiled plugin was not kept: {e}")
            }
        }
        Ok(component)
    }

    /// The entry's code when it is whole and only this user could have
    /// written it; its time of use is set to now (for the eviction).
    fn read_entry(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        let me = rustix::process::geteuid().as_raw();
        let sound = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == me
            && st.st_mode & 0o022 == 0
            && st.st_nlink == 1
            && (st.st_size as u64) <= MAX_ENTRY_BYTES;
        if !sound {
            tracing::warn!(entry = %name, "an entry this cache did not write: not run");
            return None;
        }
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::with_capacity(st.st_size as usize);
        Read::by_ref(&mut file)
            .take(MAX_ENTRY_BYTES)
            .read_to_end(&mut bytes)
            .ok()?;
        let rest = bytes.strip_prefix(MAGIC)?;
        let (sum, code) = rest.split_at_checked(32)?;
        if checksum(key, code).as_slice() != sum {
            tracing::warn!(entry = %name, "a damaged compiled plugin: compiling again");
            return None;
        }
        let _ = file.set_modified(SystemTime::now());
        bytes.drain(..MAGIC.len() + 32);
        Some(bytes)
    }

    /// Writes the entry beside and renames it in place: a reader sees the
    /// whole entry or none.
    fn store(&self, name: &str, key: &str, code: &[u8]) -> std::io::Result<()> {
        let tmp = format!("{TMP}{:016x}", rand::random::<u64>());
        let fd = rustix::fs::openat(
            &self.dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = std::fs::File::from(fd);
        let written = file
            .write_all(MAGIC)
            .and_then(|()| file.write_all(&checksum(key, code)))
            .and_then(|()| file.write_all(code))
            .and_then(|()| file.sync_all())
            .and_then(|()| Ok(rustix::fs::renameat(&self.dir, &tmp, &self.dir, name)?));
        if written.is_err() {
            // Ours: created above, with a name no one else's has.
            let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
        }
        written
    }

    /// Past [`MAX_ENTRIES`] or [`MAX_TOTAL_BYTES`], removes the entries
    /// used longest ago (never the newest), and its temporary files a crash
    /// left an hour or more ago; nothing else.
    fn evict(&self) {
        self.evict_past(MAX_ENTRIES, MAX_TOTAL_BYTES)
    }

    fn evict_past(&self, max_entries: usize, max_bytes: u64) {
        let Ok(list) = rustix::fs::Dir::read_from(&self.dir) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let mut entries = Vec::new();
        for e in list.flatten() {
            let Ok(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let ours = name.starts_with(TMP) || is_entry(&name);
            if !ours {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&self.dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                continue;
            }
            let used = st.st_mtime;
            if name.starts_with(TMP) {
                if now - used > Duration::from_secs(3600).as_secs() as i64 {
                    let _ = rustix::fs::unlinkat(&self.dir, &name, AtFlags::empty());
                }
            } else {
                entries.push((used, st.st_size as u64, name));
            }
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut left = entries.len();
        let recent = now - IN_USE.as_secs() as i64;
        for (used, size, name) in &entries {
            let within = left <= max_entries && total <= max_bytes;
            if within || left <= 1 || *used >= recent {
                break;
            }
            let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
            total -= size;
            left -= 1;
        }
    }
}

/// The directory at `path`, reached from `/` one name at a time without
/// following a link, each one checked as the module's map says; the missing
/// ones are created, owner-only.
fn walk(path: &Path) -> Result<OwnedFd, Refused> {
    let me = rustix::process::geteuid().as_raw();
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open("/", flags, Mode::empty())?;
    let mut st = rustix::fs::fstat(&fd)?;
    let mut at = PathBuf::from("/");
    let names: Vec<_> = path.components().skip(1).collect();
    // Every directory on the way is root's or ours, so one below a sticky
    // directory others may write cannot be someone else's.
    let check = |st: &rustix::fs::Stat, at: &Path, last: bool| {
        let owner_ok = st.st_uid == me || (!last && st.st_uid == 0);
        let open_to_others = st.st_mode & 0o022 != 0;
        let sticky = st.st_mode & 0o1000 != 0;
        let ok = owner_ok && (!open_to_others || (!last && sticky));
        match ok {
            true => Ok(()),
            false => Err(Refused::Shared {
                at: at.display().to_string(),
                owner: st.st_uid,
                mode: st.st_mode & 0o7777,
                me,
                last,
            }),
        }
    };
    check(&st, &at, names.is_empty())?;
    for (i, name) in names.iter().enumerate() {
        let std::path::Component::Normal(name) = name else {
            return Err(Refused::Link {
                at: path.display().to_string(),
            });
        };
        at.push(name);
        let next = match rustix::fs::openat(&fd, *name, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&fd, *name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&fd, *name, flags, Mode::empty())
            }
            other => other,
        };
        fd = next.map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Refused::Link {
                at: at.display().to_string(),
            },
            e => e.into(),
        })?;
        st = rustix::fs::fstat(&fd)?;
        check(&st, &at, i + 1 == names.len())?;
    }
    Ok(fd)
}

/// An entry's name: 64 hex digits and the suffix.
fn is_entry(name: &str) -> bool {
    name.strip_suffix(SUFFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What an entry holds of its name and code.
fn checksum(key: &str, code: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(code);
    h.finalize().into()
}

/// The SHA-256 of the plugin's bytes and of what makes compiled code fit an
/// engine, in hex.
fn key(engine: &Engine, wasm: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    /// Feeds what `Hash` writes into SHA-256.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            unreachable!("read with finalize")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(Sha256::digest(wasm));
    super::hex(&h.0.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_entries_are_named_as_entries() {
        assert!(is_entry(&format!("{}{SUFFIX}", "a".repeat(64))));
        for other in [
            "data.bin",
            ".tmp-1-2",
            "abc.cwasm",
            "store",
            &"a".repeat(64),
        ] {
            assert!(!is_entry(other), "{other}");
        }
    }

    #[test]
    fn a_directory_others_may_write_is_refused_and_nothing_in_it_is_touched() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = CompileCache::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Someone else's files, and a damaged entry: the first are left
        // alone, the second is not read as code.
        std::fs::write(dir.join("keep.me"), b"x").unwrap();
        std::fs::write(dir.join(".tmp-not-ours"), b"x").unwrap();
        let key = "0".repeat(64);
        let name = format!("{key}{SUFFIX}");
        std::fs::write(dir.join(&name), [MAGIC, &[0u8; 32], b"code"].concat()).unwrap();
        assert!(cache.read_entry(&name, &key).is_none());
        // Whole, but moved under another plugin's name: not read either.
        std::fs::write(
            dir.join(&name),
            [MAGIC, &checksum(&"1".repeat(64), b"code"), b"code"].concat(),
        )
        .unwrap();
        assert!(cache.read_entry(&name, &key).is_none());
        std::fs::write(
            dir.join(&name),
            [MAGIC, &checksum(&key, b"code"), b"code"].concat(),
        )
        .unwrap();
        assert_eq!(cache.read_entry(&name, &key).as_deref(), Some(&b"code"[..]));
        // A second link to it (a file someone else could keep writing): not read.
        std::fs::hard_link(dir.join(&name), root.path().join("link")).unwrap();
        assert!(cache.read_entry(&name, &key).is_none());
        cache.evict();
        assert!(dir.join("keep.me").exists() && dir.join(".tmp-not-ours").exists());
        // Past the limits, the entries used longest ago go, never the newest.
        std::fs::remove_file(root.path().join("link")).unwrap();
        let entry = |i: u64| dir.join(format!("{}{SUFFIX}", i.to_string().repeat(64)));
        for i in 1..=3u64 {
            std::fs::write(entry(i), vec![0u8; 100]).unwrap();
            let used = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 * i);
            std::fs::File::options()
                .write(true)
                .open(entry(i))
                .unwrap()
                .set_modified(used)
                .unwrap();
        }
        std::fs::remove_file(dir.join(&name)).unwrap();
        cache.evict_past(2, u64::MAX);
        assert!(!entry(1).exists() && entry(2).exists() && entry(3).exists());
        cache.evict_past(10, 150);
        assert!(!entry(2).exists() && entry(3).exists());
        cache.evict_past(10, 1);
        assert!(entry(3).exists(), "the newest stays");
        assert!(dir.join("keep.me").exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = CompileCache::open(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by no one else"), "{e}");
        assert!(matches!(
            CompileCache::open(Path::new("relative/cache")),
            Err(Refused::Relative)
        ));
        // A symbolic link anywhere on the way: refused, whatever it names.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(root.path(), root.path().join("via")).unwrap();
        let e = CompileCache::open(&root.path().join("via").join("cache")).unwrap_err();
        assert!(matches!(e, Refused::Link { .. }), "{e}");
        let e = CompileCache::open(&root.path().join("via")).unwrap_err();
        assert!(matches!(e, Refused::Link { .. }), "{e}");
        // A directory others may write on the way, not sticky: refused.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = CompileCache::open(&open.join("cache"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("open\" belongs to uid"), "{e}");
        // Sticky, as /tmp is: a way.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        CompileCache::open(&open.join("cache")).unwrap();
    }
}
