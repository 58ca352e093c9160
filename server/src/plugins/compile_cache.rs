//! Compiled plugins kept between starts (`plugin_host.cache_dir`): a
//! restart loads their native code instead of compiling them again, which
//! costs seconds of CPU for each built-in and more for a JS or Python plugin.
//!
//! Written here rather than taken from wasmtime's own cache (its `cache`
//! feature): that one runs whatever its directory holds without checking it,
//! and its cleanup deletes every file there it did not write. Here:
//! - an entry is named by the SHA-256 of the plugin's bytes and the engine's
//!   compatibility hash (wasmtime's version and settings), and carries the
//!   SHA-256 of its code: a damaged entry is compiled again, never run;
//! - the directory must belong to the server's user and be writable by no
//!   one else, and so must every directory above it (root's aside, and a
//!   sticky one such as `/tmp` when the directory below it is ours):
//!   otherwise someone else could swap the code the server runs, and the
//!   cache is off;
//! - only its own files are ever removed: past [`MAX_ENTRIES`], those used
//!   longest ago.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries kept: a server's chain and a few earlier builds of each plugin.
const MAX_ENTRIES: usize = 64;
/// An entry starts with this, then the SHA-256 of the rest.
const MAGIC: &[u8] = b"bilten-compiled-plugin 1\n";
const SUFFIX: &str = ".cwasm";

/// Why the cache is off.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the directory must be an absolute path")]
    Relative,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{path} belongs to uid {owner} with mode {mode:o}: it must belong to this user (uid {me}) or root, and be writable by no one else"
    )]
    Shared {
        path: PathBuf,
        owner: u32,
        mode: u32,
        me: u32,
    },
}

/// The cache, open on a directory found private.
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    loaded: AtomicUsize,
    compiled: AtomicUsize,
}

impl CompileCache {
    /// Creates the directory (owner-only) if need be and checks it and
    /// every directory above it.
    pub fn open(dir: &Path) -> Result<CompileCache, Refused> {
        if !dir.is_absolute() {
            return Err(Refused::Relative);
        }
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        private(&dir)?;
        Ok(CompileCache {
            dir,
            loaded: AtomicUsize::new(0),
            compiled: AtomicUsize::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let path = self.dir.join(format!("{}{SUFFIX}", key(engine, wasm)));
        if let Some(code) = read_entry(&path) {
            // SAFETY: the code is what `precompile_component` wrote for these
            // bytes and this engine's settings (the name says so, and the
            // checksum that it is whole), in a directory only this user may
            // write; wasmtime checks its header against the engine again.
            match unsafe { Component::deserialize(engine, &code) } {
                Ok(c) => {
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    // Its time of use, for the eviction.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    return Ok(c);
                }
                Err(e) => tracing::warn!(entry = %path.display(), "compiling again: {e:#}"),
            }
        }
        let code = engine.precompile_component(wasm)?;
        // SAFETY: compiled just now by this engine.
        let component = unsafe { Component::deserialize(engine, &code)? };
        match self.store(&path, &code) {
            Ok(()) => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                self.evict();
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "a compiled plugin was not kept: {e}")
            }
        }
        Ok(component)
    }

    /// Writes the entry beside and renames it in place: a reader sees the
    /// whole entry or none.
    fn store(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(MAGIC)?;
                f.write_all(&Sha256::digest(code))?;
                f.write_all(code)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Past [`MAX_ENTRIES`], removes the entries used longest ago, and
    /// files a crashed write left an hour or more ago; nothing else.
    fn evict(&self) {
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for e in list.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(".tmp-") {
                let old = now.duration_since(used).unwrap_or_default() > Duration::from_secs(3600);
                if old && meta.is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if is_entry(&name) && meta.is_file() {
                entries.push((used, e.path()));
            }
        }
        if entries.len() > MAX_ENTRIES {
            entries.sort();
            for (_, path) in &entries[..entries.len() - MAX_ENTRIES] {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// An entry's name: 64 hex digits and the suffix.
fn is_entry(name: &str) -> bool {
    name.strip_suffix(SUFFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The entry's code when it is whole.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let (sum, code) = rest.split_at_checked(32)?;
    if Sha256::digest(code).as_slice() != sum {
        tracing::warn!(entry = %path.display(), "a damaged compiled plugin: compiling again");
        return None;
    }
    Some(code.to_vec())
}

/// The SHA-256 of the plugin's bytes and of what makes compiled code fit an
/// engine, in hex.
fn key(engine: &Engine, wasm: &[u8]) -> String {
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
    h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `dir` and every directory above it belong to this user or root and no one
/// else may write them; a sticky directory (`/tmp`) may be written by others
/// when the directory below it is ours, for then no one else can move it.
fn private(dir: &Path) -> Result<(), Refused> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let trusted = |uid: u32| uid == me || uid == 0;
    let mut below_ours = false;
    let mut first = true;
    for path in dir.ancestors() {
        let meta = std::fs::metadata(path)?;
        let (owner, mode) = (meta.uid(), meta.mode());
        let writable_by_others = mode & 0o022 != 0;
        let sticky = mode & 0o1000 != 0;
        let ok = match first {
            // The cache itself: ours, and written by us only.
            true => owner == me && !writable_by_others,
            false => trusted(owner) && (!writable_by_others || (sticky && below_ours)),
        };
        if !ok {
            return Err(Refused::Shared {
                path: path.to_path_buf(),
                owner,
                mode: mode & 0o7777,
                me,
            });
        }
        below_ours = trusted(owner);
        first = false;
    }
    Ok(())
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
        // Someone else's file, and a damaged entry: the first is left
        // alone, the second is not read as code.
        std::fs::write(dir.join("keep.me"), b"x").unwrap();
        let damaged = dir.join(format!("{}{SUFFIX}", "0".repeat(64)));
        std::fs::write(&damaged, [MAGIC, &[0u8; 32], b"code"].concat()).unwrap();
        assert!(read_entry(&damaged).is_none());
        cache.evict();
        assert!(dir.join("keep.me").exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = CompileCache::open(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by no one else"), "{e}");
        assert!(matches!(
            CompileCache::open(Path::new("relative/cache")),
            Err(Refused::Relative)
        ));
    }
}
