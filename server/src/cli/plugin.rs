//! `bilten-analytics plugin`: a new project, its build, and the checks an
//! author runs before a server loads it (`check`, `test`), in the server's
//! own sandbox and limits, with no server running.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::scaffold;
use bilten_analytics::config::plugins;
use bilten_analytics::plugins::host::{Host, Limits};
use bilten_analytics::plugins::{HostSettings, chain, trial};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// A ready plugin project in `NAME/`: source that drops events of type
    /// `test_event`, its SDK, a unit test and a README.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: super::scaffold::Lang,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Builds a project's component into DIR/<DIR's name>.wasm with its
    /// language's toolchain (cargo; componentize-js from npm;
    /// componentize-py from PyPI), installed at pinned versions if missing.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Its contract version, exports, imports and size, and its name and
    /// version from a run on sample events. Exit 0: the server would load
    /// it; 1: it fails on the samples; 2: refused.
    Check { file: PathBuf },
    /// Runs events through it as one batch, in the server's sandbox and
    /// limits, and prints each verdict (keep, modify and what changed, drop,
    /// reject and why) and the time per event. `--config FILE.toml` is the
    /// plugin's config (what its `[[plugins]]` entry's `config` holds).
    /// Exit 0: every event judged; 1: a fault or invalid events; 2: refused.
    Test {
        file: PathBuf,
        /// A JSON array of events; an item's "table" (events, page_views,
        /// ticket_sales; events when absent) says where it goes. Default:
        /// one sample event per table.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Calls to time after the first.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// CPU time for the batch, as `timeout` in `[[plugins]]` (and its
        /// default, 500ms).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Memory cap, MiB, as `memory_mb` in `[[plugins]]` (and its default, 64).
        #[arg(long)]
        memory_mb: Option<usize>,
    },
}

/// `plugin check` and `plugin test`: no server, the same sandbox.
pub fn run(
    action: &PluginCommand,
    plugin_config: Option<&Path>,
) -> anyhow::Result<std::process::ExitCode> {
    let refused = |why: String| {
        eprintln!("refused: {why}");
        Ok(ExitCode::from(2))
    };
    let file = match action {
        PluginCommand::New { name, lang, dir } => {
            let made = scaffold::new_project(name, *lang, dir)?;
            println!("created {}", made.display());
            println!(
                "next: bilten-analytics plugin build {0} && bilten-analytics plugin test {0}/{1}.wasm",
                made.display(),
                name
            );
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Build { dir } => {
            let built = scaffold::build(dir)?;
            let bytes = std::fs::metadata(&built)?.len();
            println!("built {} ({bytes} bytes)", built.display());
            return Ok(ExitCode::SUCCESS);
        }
        PluginCommand::Check { file } | PluginCommand::Test { file, .. } => file,
    };
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // The server's sandbox as the environment sets it (its cache
    // directory, `BILTEN_PLUGIN_HOST__*`); `--config` is the plugin's own.
    let settings = bilten_analytics::config::Config::load(None)
        .map(|c| c.plugin_host)
        .unwrap_or_else(|_| HostSettings::default());
    let host = Host::new(&settings).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Compiled once: the interface is read, and printed by `check`, before
    // it is linked, so that an import the sandbox refuses is shown by name.
    let component = match host.load(&wasm) {
        Ok(c) => c,
        Err(e) => return refused(e.to_string()),
    };
    let found = trial::inspect(&host, &component, wasm.len());
    let check = matches!(action, PluginCommand::Check { .. });
    if check {
        println!("file: {} ({} bytes)", file.display(), found.bytes);
        println!(
            "contract: bilten:plugin/validator@{} (this server: {})",
            found.contract.as_deref().unwrap_or("?"),
            bilten_analytics::plugins::host::INTERFACE_VERSION
        );
        println!("exports: {}", found.exports.join(", "));
        println!("imports:");
        for (name, ok) in &found.imports {
            let note = match (*ok, name.starts_with("wasi:sockets/")) {
                (false, _) => "REFUSED",
                (true, true) => "ok (no network is granted)",
                (true, false) => "ok",
            };
            println!("  {note:<7} {name}");
        }
    }
    let refused_imports = found.refused_imports();
    if !refused_imports.is_empty() {
        return refused(format!(
            "it imports {}: a plugin may import only the contract's types and WASI 0.2 \
             (the sandbox grants it no files, environment or network)",
            refused_imports.join(", ")
        ));
    }
    let compiled = match host.link(&component) {
        Ok(c) => c,
        Err(e) => return refused(e.to_string()),
    };
    let config_json = match plugin_config {
        None => "{}".to_string(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
            serde_json::to_string(&table)?
        }
    };
    let (timeout, memory_mb, rounds) = match action {
        PluginCommand::Test {
            timeout,
            memory_mb,
            rounds,
            ..
        } => (*timeout, *memory_mb, *rounds),
        _ => (None, None, 0),
    };
    let (timeout, memory_mb) = (
        timeout.unwrap_or_else(plugins::default_timeout),
        memory_mb.unwrap_or_else(plugins::default_memory_mb),
    );
    let limits = Limits {
        timeout,
        memory_bytes: memory_mb << 20,
        output_bytes: settings.output_bytes,
    };
    let rows = match action {
        PluginCommand::Test {
            events: Some(path), ..
        } => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match trial::events_from_json(&text) {
                Ok(rows) if !rows.is_empty() => rows,
                Ok(_) => anyhow::bail!("{} holds no events", path.display()),
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        _ => chain::samples(chrono::Utc::now().timestamp_millis()),
    };
    let trial = trial::run(&host, &compiled, &config_json, &rows, limits, rounds + 1);
    if check {
        match &trial.outcomes {
            Ok(_) => {
                println!("plugin: {} {}", trial.name, trial.version);
                println!("sample events: judged, one verdict each");
            }
            Err(fault) => {
                println!("sample events: FAULT: {fault}");
                return Ok(ExitCode::FAILURE);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", trial::report(&trial, &rows));
    Ok(match trial.outcomes {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}
