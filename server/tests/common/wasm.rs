//! Builds the test plugins (`server/tests/plugins/`, their own workspace)
//! from source for wasm32-wasip2, once per process, and says where they are.
//! Cargo's lock on the target directory serializes concurrent test processes;
//! after the first build, the rest find it up to date.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory with `keep_all.wasm`, `hostile.wasm`, `future_abi.wasm`,
/// `wrong_count.wasm` and `house_rules.wasm` (the SDK README's example).
pub fn test_plugins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let server = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = server.parent().unwrap().join("target").join("plugins");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(server.join("tests/plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("running cargo for the test plugins");
        assert!(
            out.status.success(),
            "building the test plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    })
    .clone()
}
