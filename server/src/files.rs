//! Files and directories only the server's user may read: the write-ahead
//! log and the engine's data hold every accepted event. A leaf: it imports
//! no other module of this crate.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) 0700, and makes `dir` itself 0700
/// when it already existed.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A file created (or truncated) 0600, for writing.
pub fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes `bytes` to `path` (0600) through a temporary file and a rename,
/// so a reader never sees half of it.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = private_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A file created 0600 if missing, opened for appending.
pub fn private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// 32 secret bytes kept in `path` (0600, its directory 0700), made at
/// random the first time: what this server signs with when no key is
/// configured. A file of another length is an error, never replaced: what
/// was signed with it would silently stop verifying.
pub fn kept_key(path: &Path) -> Result<[u8; 32], String> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            format!(
                "{} is not a 32-byte key; delete it to make a new one (what was signed with \
                 it then no longer verifies)",
                path.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            path.parent()
                .map_or(Ok(()), private_dir)
                .and_then(|_| write_private(path, &key))
                .map_err(|e| format!("cannot keep {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_the_owners_alone_even_when_they_existed() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        // A directory left open by an older version is closed down.
        let old = root.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        private_file(&old.join("f")).unwrap();
        private_append(&old.join("g")).unwrap();
        assert_eq!(mode(&old.join("f")), 0o600);
        assert_eq!(mode(&old.join("g")), 0o600);
    }
}
