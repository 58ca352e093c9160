//! What tests install at test time (npm and PyPI clients, Playwright), once
//! per target directory: nextest runs tests in parallel processes, so the
//! first takes a lock and installs, the others wait for it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where installs live: the build's scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Fills `dir` with `install` unless a finished install is already there.
pub fn once(dir: &Path, install: impl FnOnce(&Path)) {
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let marker = dir.join(".installed");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        install(dir);
        std::fs::write(marker, b"").unwrap();
    }
}

/// Runs a command that must succeed; its output is in the panic if not.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// npm packages (pinned `name@version`) in a directory of their own.
pub fn npm(name: &str, packages: &[&str]) -> PathBuf {
    let dir = scratch(name);
    once(&dir, |dir| {
        std::fs::write(
            dir.join("package.json"),
            r#"{"private":true,"type":"module"}"#,
        )
        .unwrap();
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .args(packages)
            .current_dir(dir));
    });
    dir
}

/// Python packages (pinned `name==version`) in a venv of their own; its python.
pub fn pip(name: &str, packages: &[&str]) -> PathBuf {
    let venv = scratch(name);
    once(&venv, |venv| {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages));
    });
    venv.join("bin/python")
}

/// A client script of `tests/clients`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// What a finished command said.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    /// stdout then stderr, for messages.
    pub text: String,
}

/// Runs `cmd` off the async runtime, which the server under test needs.
pub async fn output(mut cmd: Command) -> Ran {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Ran {
        ok: out.status.success(),
        stdout,
        text,
    }
}

/// Debian's Chromium, when installed (scripts/test.sh installs it in CI).
pub fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Chromium; without it the test fails, unless skipping the browser
/// checks was asked for by name (`BILTEN_SKIP_BROWSER_TESTS=1`): then
/// `None`, and the test says it skipped.
pub fn chromium_or_skip() -> Option<&'static str> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("BILTEN_SKIP_BROWSER_TESTS").as_deref() == Ok("1"),
            "no chromium at /usr/bin/chromium: install it (apt-get install chromium; \
             scripts/test.sh does), or set BILTEN_SKIP_BROWSER_TESTS=1 to skip the browser \
             checks knowingly"
        );
        eprintln!("SKIPPED (BILTEN_SKIP_BROWSER_TESTS=1): no chromium at /usr/bin/chromium");
    }
    found
}

/// Playwright from PyPI in a venv, driving Debian's Chromium; its python.
pub fn playwright() -> PathBuf {
    pip("playwright-venv", &["playwright==1.65.2"])
}

/// `clients/js` (the `@bilten/analytics` package) copied without
/// node_modules or dist, its locked dependencies installed, and built: once
/// per version of its sources.
pub fn js_package() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    let mut files = Vec::new();
    hash_sources(&source, &mut files);
    let dir = scratch(&format!("js-package-{:08x}", crc32fast::hash(&files)));
    once(&dir, |dir| {
        copy(&source, dir);
        run(Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(dir));
        run(Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(dir));
    });
    dir
}

/// Every source file's path and bytes, in a stable order.
fn hash_sources(dir: &Path, out: &mut Vec<u8>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("node_modules") && !p.ends_with("dist"))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_sources(&path, out);
        } else {
            out.extend(path.to_string_lossy().as_bytes());
            out.extend(std::fs::read(&path).unwrap());
        }
    }
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", "dist"].contains(&name.to_str().unwrap()) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies into `data_dir` (empty) a data directory the migrations already
/// ran on, made once per build of the server: every server that started
/// from nothing ran them all again, about 0.6 s of CPU of a short test's 3
/// (the engine creating some 450 files). What the copy is tested against
/// is unchanged: the server still checks its migrations at start.
pub fn migrated_copy(data_dir: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_bilten-analytics"));
    let meta = std::fs::metadata(bin).unwrap();
    let built = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let template = scratch(&format!("migrated-{}-{}", built.as_nanos(), meta.len()));
    once(&template, |dir| {
        // Earlier builds' templates are never used again.
        for old in std::fs::read_dir(scratch("")).unwrap().flatten() {
            let name = old.file_name().to_string_lossy().into_owned();
            if name.starts_with("migrated-") && old.path() != dir && !name.ends_with(".lock") {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        run(Command::new(bin)
            .arg("migrate")
            .env("BILTEN_STORAGE__EMBEDDED__DATA_DIR", dir.join("data"))
            .env_remove("BILTEN_CONFIG")
            .env_remove("BILTEN_TEST_BACKEND"));
        // The server logs its statements in its own query log: a test of
        // slow queries must not find the migrations'. A MergeTree table is
        // the parts in its directory.
        let log = dir.join("data/engine/data/bilten_system/query_log");
        for part in std::fs::read_dir(&log).unwrap().flatten() {
            if part.path().is_dir() && part.file_name() != "detached" {
                std::fs::remove_dir_all(part.path()).unwrap();
            }
        }
    });
    std::fs::create_dir_all(data_dir).unwrap();
    // `cp -a` keeps the owner-only modes the server set.
    run(Command::new("cp")
        .arg("-a")
        .arg(template.join("data/."))
        .arg(data_dir));
}
