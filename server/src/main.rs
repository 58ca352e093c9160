//! The `bilten-analytics` binary: parses the CLI and config, sets up logging,
//! and calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bilten_analytics::config::Config;
use bilten_analytics::{admin_client, loadgen, ops, storage};

#[derive(Parser)]
#[command(
    name = "bilten-analytics",
    version,
    about = "Event analytics ingestion on ClickHouse"
)]
struct Cli {
    /// TOML configuration file; every setting can also come from BILTEN_* variables.
    #[arg(long, global = true, env = "BILTEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingestion server.
    Serve {
        /// Listen address (overrides `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply, or show, the schema migrations from sql/.
    Migrate {
        /// Print the SQL that would run, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// List applied and pending migrations.
        #[arg(long)]
        status: bool,
    },
    /// Send realistic traffic to a running server.
    Loadgen(loadgen::Args),
    /// Deep health check of a running server; exit 0 ok, 1 degraded, 2 down.
    Health(admin_client::Target),
    /// Slow queries, errors, storage, parts, merges, rates; exit 1 on warnings.
    Monitor(admin_client::Target),
    /// The monitoring report, as JSON or a self-contained HTML page.
    Report {
        #[command(flatten)]
        target: admin_client::Target,
        /// Write the HTML report to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Plugins: check a component, or try it on events in the server's sandbox.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
    /// Backups: create, list, restore, verify.
    Backup {
        #[command(flatten)]
        target: admin_client::Target,
        #[command(subcommand)]
        action: admin_client::BackupCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// A ready plugin project in `NAME/`: source that drops events of type
    /// `test_event`, its SDK, a unit test and a README.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: bilten_analytics::plugins::scaffold::Lang,
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Fault-injection builds read FAILPOINTS from the environment.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let code = match &cli.command {
        Command::Health(t) => Some(admin_client::health(t).await?),
        Command::Monitor(t) => Some(admin_client::monitor(t).await?),
        Command::Report { target, html } => Some(admin_client::report(target, html.clone()).await?),
        Command::Backup { target, action } => {
            Some(admin_client::backup(target, action.clone()).await?)
        }
        _ => None,
    };
    if let Some(code) = code {
        return Ok(std::process::ExitCode::from(code));
    }
    if let Command::Plugin { action } = &cli.command {
        // Off the async runtime, as the server runs plugins: WASI's blocking
        // calls (a plugin writing to stderr) may not run on one.
        let config = cli.config.as_deref();
        return std::thread::scope(|s| {
            s.spawn(|| plugin_command(action, config))
                .join()
                .expect("the plugin command's thread")
        });
    }
    if let Command::Loadgen(args) = cli.command {
        let summary = loadgen::run(args).await?;
        return Ok(if summary.failed_requests == 0 {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        });
    }
    let mut config = Config::load(cli.config.as_deref())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
                config.validate().map_err(anyhow::Error::msg)?;
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            match bilten_analytics::serve(config, listener, shutdown_signal()).await {
                Ok(()) => {}
                Err(e) if e.is::<bilten_analytics::EngineStuck>() => {
                    tracing::error!(error = %e, "exiting without closing the engine; the write-ahead log keeps what was not stored");
                    // SAFETY: ends the process at once, without the
                    // engine's teardown, which would wait on its threads.
                    unsafe { libc::_exit(1) };
                }
                Err(e) => return Err(e),
            }
        }
        Command::Migrate { dry_run, status } => {
            let storage = storage::open(&config.storage).await?;
            let result = migrate(&*storage, dry_run, status).await;
            storage.close().await;
            result?;
        }
        _ => unreachable!("handled above"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `plugin check` and `plugin test`: no server, the same sandbox.
fn plugin_command(
    action: &PluginCommand,
    plugin_config: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitCode> {
    use bilten_analytics::config::plugins;
    use bilten_analytics::plugins::host::{Host, Limits};
    use bilten_analytics::plugins::{HostSettings, chain, trial};
    use std::process::ExitCode;
    let refused = |why: String| {
        eprintln!("refused: {why}");
        Ok(ExitCode::from(2))
    };
    use bilten_analytics::plugins::scaffold;
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
    let settings = HostSettings::default();
    let host = Host::new(&settings).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Compiled once: the interface is read, and printed by `check`, before
    // it is linked, so that an import the sandbox refuses is shown by name.
    let component = match host.load(&wasm) {
        Ok(c) => c,
        Err(e) => return refused(e),
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
        Err(e) => return refused(e),
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

async fn migrate(
    storage: &dyn storage::Storage,
    dry_run: bool,
    status: bool,
) -> anyhow::Result<()> {
    let state = ops::migrations::status(storage).await?;
    if status || dry_run {
        for m in &state.migrations {
            println!("{:>4}  {:<8} {}", m.version, m.status, m.name);
        }
    }
    if dry_run {
        for m in state.migrations.iter().filter(|m| m.status == "pending") {
            let migration = ops::migrations::MIGRATIONS
                .iter()
                .find(|x| x.version == m.version)
                .unwrap();
            println!("\n-- {}", migration.name);
            // As they would be sent: rendered for the cluster when there is one.
            for stmt in migration.statements() {
                for sent in storage.render(&stmt)? {
                    println!("{sent};\n");
                }
            }
        }
        return Ok(());
    }
    if !status {
        let applied = ops::migrations::apply(storage).await?;
        println!("{} migration(s) applied", applied.len());
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining buffers");
}
