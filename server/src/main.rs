//! The `bilten-analytics` binary: parses the CLI and config, sets up logging,
//! and calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bilten_analytics::config::Config;
use bilten_analytics::{ops, storage};

mod cli;
use cli::{admin_client, geo, loadgen, plugin};

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
        action: plugin::PluginCommand,
    },
    /// The country database: `geo update` fetches a newer one.
    Geo {
        #[command(subcommand)]
        action: geo::GeoCommand,
    },
    /// Backups: create, list, restore, verify.
    Backup {
        #[command(flatten)]
        target: admin_client::Target,
        #[command(subcommand)]
        action: admin_client::BackupCommand,
    },
    /// Organizers kept in the store: create, list, rename, suspend, resume.
    Organizers {
        #[command(flatten)]
        target: admin_client::Target,
        #[command(subcommand)]
        action: admin_client::OrganizersCommand,
    },
    /// Keys kept in the store: create, list, show, revoke, rotate.
    Keys {
        #[command(flatten)]
        target: admin_client::Target,
        #[command(subcommand)]
        action: admin_client::KeysCommand,
    },
    /// Exchange rates revenue is converted with: load a CSV, list them.
    Rates {
        #[command(flatten)]
        target: admin_client::Target,
        #[command(subcommand)]
        action: admin_client::RatesCommand,
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
        Command::Keys { target, action } => Some(admin_client::keys(target, action.clone()).await?),
        Command::Organizers { target, action } => {
            Some(admin_client::organizers(target, action.clone()).await?)
        }
        Command::Rates { target, action } => {
            Some(admin_client::rates(target, action.clone()).await?)
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
            s.spawn(|| plugin::run(action, config))
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
    if let Command::Geo { action } = &cli.command {
        geo::run(action, &config)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
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
