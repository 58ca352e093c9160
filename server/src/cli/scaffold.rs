//! `plugin new` and `plugin build`: a ready plugin project in Rust,
//! JavaScript or Python, and its component, built with that language's
//! toolchain (installed in the project at pinned versions when missing).
//!
//! A project carries what it needs: the SDK of its language and the WIT
//! contract are written into it, so it builds outside this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The contract, and each language's SDK and templates, as this binary knows them.
const WIT: &str = include_str!("../../../sdk/wit/plugin.wit");
const README: &str = include_str!("../../../sdk/templates/README.md");
const RUST_SDK_MANIFEST: &str = include_str!("../../../sdk/Cargo.toml");
const RUST_SDK: &str = include_str!("../../../sdk/src/lib.rs");
const RUST_SDK_EVENT: &str = include_str!("../../../sdk/src/event.rs");
const RUST_SDK_MEMO: &str = include_str!("../../../sdk/src/memo.rs");
const RUST_LIB: &str = include_str!("../../../sdk/templates/rust/src/lib.rs");
const JS_SDK: &str = include_str!("../../../sdk/js/bilten-plugin.js");
const JS_SDK_TYPES: &str = include_str!("../../../sdk/js/bilten-plugin.d.ts");
const JS_PLUGIN: &str = include_str!("../../../sdk/templates/js/plugin.js");
const JS_PACKAGE: &str = include_str!("../../../sdk/templates/js/package.json");
const JS_TEST: &str = include_str!("../../../sdk/templates/js/test/plugin.test.mjs");
const PY_SDK: &str = include_str!("../../../sdk/python/bilten_plugin.py");
const PY_APP: &str = include_str!("../../../sdk/python/bilten_plugin_app.py");
const PY_PLUGIN: &str = include_str!("../../../sdk/templates/python/plugin.py");
const PY_TEST: &str = include_str!("../../../sdk/templates/python/tests/test_plugin.py");

/// The Python toolchain, installed in the project's `.bilten/venv`.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }

    fn unit_test(self) -> &'static str {
        match self {
            Lang::Rust => "cargo test                                            # the unit test",
            Lang::Js => "npm test                                              # the unit test",
            Lang::Python => "python3 -m unittest discover -s tests -t .           # the unit test",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0:?} is not a plugin name: a lowercase letter, then lowercase letters, digits, '-' or '_' (64 at most)"
    )]
    Name(String),
    #[error("{0} already exists: choose another name or remove it")]
    Exists(PathBuf),
    #[error("{0} is not a plugin project: it has no Cargo.toml, plugin.js or plugin.py")]
    NotAProject(PathBuf),
    #[error("{tool} is needed to build a {lang} plugin and was not found: {hint}")]
    MissingTool {
        tool: &'static str,
        lang: &'static str,
        hint: &'static str,
    },
    #[error("{step} failed ({status}); its output is above")]
    Step { step: String, status: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Creates `parent/name`, a project that builds a plugin dropping events of
/// type `test_event`, with a unit test and a README.
pub fn new_project(name: &str, lang: Lang, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::Name(name.into()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{lang}}", lang.label())
            .replace("{{unit_test}}", lang.unit_test())
    };
    let mut files: Vec<(&str, String)> = vec![
        ("README.md", fill(README)),
        (".gitignore", gitignore(lang).into()),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml", rust_manifest(name)));
            files.push(("src/lib.rs", fill(RUST_LIB)));
            files.push(("bilten-plugin-sdk/Cargo.toml", sdk_manifest()));
            files.push(("bilten-plugin-sdk/src/lib.rs", RUST_SDK.into()));
            files.push(("bilten-plugin-sdk/src/event.rs", RUST_SDK_EVENT.into()));
            files.push(("bilten-plugin-sdk/src/memo.rs", RUST_SDK_MEMO.into()));
            files.push(("bilten-plugin-sdk/wit/plugin.wit", WIT.into()));
        }
        Lang::Js => {
            files.push(("plugin.js", fill(JS_PLUGIN)));
            files.push(("package.json", fill(JS_PACKAGE)));
            files.push(("test/plugin.test.mjs", fill(JS_TEST)));
            files.push(("bilten-plugin.js", JS_SDK.into()));
            files.push(("bilten-plugin.d.ts", JS_SDK_TYPES.into()));
        }
        Lang::Python => {
            files.push(("plugin.py", fill(PY_PLUGIN)));
            files.push(("tests/__init__.py", String::new()));
            files.push(("tests/test_plugin.py", fill(PY_TEST)));
            files.push(("bilten_plugin.py", PY_SDK.into()));
        }
    }
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
        std::fs::write(path, text)?;
    }
    Ok(dir)
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n*.wasm\n",
        Lang::Js => "node_modules/\n.bilten/\n*.wasm\n",
        Lang::Python => ".bilten/\n__pycache__/\n*.wasm\n",
    }
}

/// The plugin's manifest: a workspace of its own (so it builds inside
/// another one too), the SDK beside it.
fn rust_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
bilten-plugin-sdk = {{ path = "bilten-plugin-sdk" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"

[workspace]
"#
    )
}

/// The SDK's manifest, standalone: its dependencies as this repository's
/// `sdk/Cargo.toml` declares them.
fn sdk_manifest() -> String {
    let manifest: toml::Table = toml::from_str(RUST_SDK_MANIFEST).expect("sdk/Cargo.toml is TOML");
    let dependencies = manifest
        .get("dependencies")
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(Default::default()));
    let mut out = toml::Table::new();
    out.insert(
        "package".into(),
        toml::Value::Table(toml::toml! {
            name = "bilten-plugin-sdk"
            version = "1.0.0"
            edition = "2024"
            publish = false
        }),
    );
    out.insert("dependencies".into(), dependencies);
    toml::to_string(&out).expect("a table serializes")
}

/// Which language a project is in, by its files.
pub fn detect(dir: &Path) -> Result<Lang, ScaffoldError> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("plugin.js").is_file() {
        Ok(Lang::Js)
    } else if dir.join("plugin.py").is_file() {
        Ok(Lang::Python)
    } else {
        Err(ScaffoldError::NotAProject(dir.to_path_buf()))
    }
}

/// Builds the project's component into `dir/<name>.wasm` (the name is the
/// directory's) and returns its path. Tools print their progress as they go.
pub fn build(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let dir = std::path::absolute(dir)?;
    let lang = detect(&dir)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin")
        .to_string();
    let out = dir.join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => build_rust(&dir, &name, &out)?,
        Lang::Js => build_js(&dir, &out)?,
        Lang::Python => build_python(&dir, &out)?,
    }
    Ok(out)
}

/// `tool` answers `--version`, or the error that says what to install.
fn require(
    tool: &'static str,
    lang: &'static str,
    hint: &'static str,
) -> Result<(), ScaffoldError> {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Ok(()),
        false => Err(ScaffoldError::MissingTool { tool, lang, hint }),
    }
}

/// The project's `.bilten` build directory, with the contract in `wit/`.
fn work_dir(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let work = dir.join(".bilten");
    std::fs::create_dir_all(work.join("wit"))?;
    std::fs::write(work.join("wit/plugin.wit"), WIT)?;
    Ok(work)
}

fn step(step: &str, cmd: &mut Command) -> Result<(), ScaffoldError> {
    let status = cmd
        .status()
        .map_err(|e| ScaffoldError::Io(std::io::Error::new(e.kind(), format!("{step}: {e}"))))?;
    match status.success() {
        true => Ok(()),
        false => Err(ScaffoldError::Step {
            step: step.into(),
            status: status.to_string(),
        }),
    }
}

fn build_rust(dir: &Path, name: &str, out: &Path) -> Result<(), ScaffoldError> {
    require("cargo", "Rust", "install Rust with rustup")?;
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match targets {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2") => {}
        Ok(_) => step(
            "rustup target add wasm32-wasip2",
            Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
        )?,
        Err(_) => {
            return Err(ScaffoldError::MissingTool {
                tool: "rustup",
                lang: "Rust",
                hint: "it adds the wasm32-wasip2 target (or add that target to your toolchain yourself)",
            });
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    step(
        "cargo build --release --target wasm32-wasip2",
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(built, out)?;
    Ok(())
}

fn build_js(dir: &Path, out: &Path) -> Result<(), ScaffoldError> {
    require(
        "npm",
        "JavaScript",
        "install Node.js 18 or later, which comes with npm",
    )?;
    let bin = dir.join("node_modules/.bin");
    if !bin.join("componentize-js").exists() || !bin.join("esbuild").exists() {
        step(
            "npm install (componentize-js and esbuild, as package.json pins them)",
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(dir),
        )?;
    }
    let work = work_dir(dir)?;
    std::fs::write(
        work.join("entry.js"),
        "import * as plugin from '../plugin.js'\n\
         import { validator as make } from '../bilten-plugin.js'\n\
         export const validator = make(plugin)\n",
    )?;
    step(
        "esbuild (one module of the plugin and its imports)",
        Command::new(bin.join("esbuild"))
            .arg(work.join("entry.js"))
            .args(["--bundle", "--format=esm", "--log-level=warning"])
            .arg(format!("--outfile={}", work.join("bundle.js").display())),
    )?;
    step(
        "componentize-js",
        Command::new(bin.join("componentize-js"))
            .arg(work.join("bundle.js"))
            .arg("--wit")
            .arg(work.join("wit"))
            .args([
                "--world-name",
                "plugin",
                "--disable",
                "http",
                "fetch-event",
                "-o",
            ])
            .arg(out),
    )?;
    Ok(())
}

fn build_python(dir: &Path, out: &Path) -> Result<(), ScaffoldError> {
    require(
        "python3",
        "Python",
        "install Python 3.10 or later with its venv module",
    )?;
    let work = work_dir(dir)?;
    let venv = work.join("venv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        step(
            "python3 -m venv .bilten/venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        step(
            &format!("pip install {COMPONENTIZE_PY}"),
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                COMPONENTIZE_PY,
            ]),
        )?;
    }
    std::fs::write(work.join("app.py"), PY_APP)?;
    step(
        "componentize-py",
        Command::new(&tool)
            .arg("-d")
            .arg(work.join("wit"))
            .args(["-w", "plugin", "componentize", "app", "-p"])
            .arg(&work)
            .arg("-p")
            .arg(dir)
            .arg("-o")
            .arg(out),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_projects_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "Upper",
            "9lives",
            "has space",
            "dots.no",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(
                    new_project(bad, Lang::Js, dir.path()),
                    Err(ScaffoldError::Name(_))
                ),
                "{bad:?}"
            );
        }
        let made = new_project("drop-tests", Lang::Python, dir.path()).unwrap();
        assert!(made.join("plugin.py").is_file());
        assert!(
            std::fs::read_to_string(made.join("plugin.py"))
                .unwrap()
                .contains("NAME = \"drop-tests\"")
        );
        assert_eq!(detect(&made).unwrap(), Lang::Python);
        assert!(matches!(
            new_project("drop-tests", Lang::Rust, dir.path()),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            detect(dir.path()),
            Err(ScaffoldError::NotAProject(_))
        ));
    }

    #[test]
    fn the_vendored_sdk_has_the_repositorys_dependencies() {
        let manifest: toml::Table = toml::from_str(&sdk_manifest()).unwrap();
        let ours: toml::Table = toml::from_str(RUST_SDK_MANIFEST).unwrap();
        assert_eq!(manifest["dependencies"], ours["dependencies"]);
        assert_eq!(
            manifest["package"]["name"].as_str(),
            Some("bilten-plugin-sdk")
        );
    }
}
