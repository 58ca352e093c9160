//! `cargo xtask codegen`: writes every file (or region of a file) derived
//! from the event schema's one declaration (`bilten-schema`), in Rust, WIT,
//! JavaScript, TypeScript and Python. `cargo xtask codegen --check` writes
//! nothing and fails when a file is not what the declaration makes (the
//! test command runs it).
//!
//! Generated code rather than macros: the output is plain source a plugin
//! author or a reviewer reads (and rustdoc shows) like any other, the same
//! generator writes the other languages, and nothing needs a proc-macro
//! crate in the SDK's wasm build.

mod generate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use generate::Output;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["codegen"] => run(&root, false),
        ["codegen", "--check"] => run(&root, true),
        _ => {
            eprintln!("usage: cargo xtask codegen [--check]");
            ExitCode::from(2)
        }
    }
}

fn run(root: &Path, check: bool) -> ExitCode {
    let outputs = generate::outputs(&bilten_schema::CLIENT_TABLES);
    match apply(root, &outputs, check) {
        Ok(stale) if stale.is_empty() => {
            if !check {
                println!("{} generated pieces up to date", outputs.len());
            }
            ExitCode::SUCCESS
        }
        Ok(stale) if check => {
            for path in &stale {
                eprintln!(
                    "stale: {} is not what schema/src/lib.rs makes; run `cargo xtask codegen`",
                    path.display()
                );
            }
            ExitCode::FAILURE
        }
        Ok(written) => {
            for path in &written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("codegen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes each output's file what it should be (or, with `check`, only
/// compares); the files that were (or would be) changed.
fn apply(root: &Path, outputs: &[Output], check: bool) -> Result<Vec<PathBuf>, String> {
    let mut changed = Vec::new();
    let mut paths: Vec<&str> = outputs.iter().map(Output::path).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let file = root.join(path);
        let before = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let mut after = before.clone().unwrap_or_default();
        for output in outputs.iter().filter(|o| o.path() == path) {
            after = output.apply(&after).map_err(|e| format!("{path}: {e}"))?;
        }
        if before.as_deref() != Some(after.as_str()) {
            if !check {
                std::fs::write(&file, &after).map_err(|e| format!("{}: {e}", file.display()))?;
            }
            changed.push(file);
        }
    }
    Ok(changed)
}
