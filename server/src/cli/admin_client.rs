//! The CLI's operations commands (`health`, `monitor`, `report`, `backup`):
//! thin clients of a running server's `/admin` API, so they work the same
//! against the embedded engine (which only the server process may open) and
//! a ClickHouse server.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of the running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Admin token.
    #[arg(long, env = "BILTEN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a backup now.
    Create {
        /// On top of the latest full backup.
        #[arg(long)]
        incremental: bool,
    },
    /// List backups, newest first.
    List,
    /// Restore a backup (into the live database unless --database).
    Restore {
        id: String,
        #[arg(long)]
        database: Option<String>,
    },
    /// Restore into a scratch database and compare counts and checksums.
    Verify { id: String },
}

impl Target {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String)> {
        let token = self
            .token
            .as_deref()
            .context("set BILTEN_ADMIN_TOKEN (or --token) to the server's admin token")?;
        let url = format!("{}/admin{path}", self.target.trim_end_matches('/'));
        let mut req = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self.call(method, path, body).await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) && path != "/health" {
            bail!(
                "{path}: HTTP {status}: {}",
                value.get("error").unwrap_or(&value)
            );
        }
        Ok(value)
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `health`: prints the deep check. Exit code 0 ok, 1 degraded, 2 down or unreachable.
pub async fn health(t: &Target) -> anyhow::Result<u8> {
    let h = match t.json(reqwest::Method::GET, "/health", None).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            return Ok(2);
        }
    };
    print(&h);
    Ok(match h["status"].as_str() {
        Some("ok") => 0,
        Some("degraded") => 1,
        _ => 2,
    })
}

pub async fn monitor(t: &Target) -> anyhow::Result<u8> {
    let m = t.json(reqwest::Method::GET, "/monitor", None).await?;
    print(&m);
    Ok(if m["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
        1
    } else {
        0
    })
}

/// `report`: JSON to stdout, or the HTML page to a file.
pub async fn report(t: &Target, html: Option<PathBuf>) -> anyhow::Result<u8> {
    match html {
        Some(path) => {
            let (status, page) = t
                .call(reqwest::Method::GET, "/report?format=html", None)
                .await?;
            if status != 200 {
                bail!("report: HTTP {status}: {page}");
            }
            std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
            println!("report written to {}", path.display());
        }
        None => print(&t.json(reqwest::Method::GET, "/report", None).await?),
    }
    Ok(0)
}

pub async fn backup(t: &Target, cmd: BackupCommand) -> anyhow::Result<u8> {
    use reqwest::Method;
    let v = match cmd {
        BackupCommand::Create { incremental } => {
            t.json(
                Method::POST,
                "/backups",
                Some(serde_json::json!({ "incremental": incremental })),
            )
            .await?
        }
        BackupCommand::List => t.json(Method::GET, "/backups", None).await?,
        BackupCommand::Restore { id, database } => {
            t.json(
                Method::POST,
                &format!("/backups/{id}/restore"),
                Some(serde_json::json!({ "database": database })),
            )
            .await?
        }
        BackupCommand::Verify { id } => {
            let v = t
                .json(Method::POST, &format!("/backups/{id}/verify"), None)
                .await?;
            print(&v);
            return Ok(if v["ok"] == true { 0 } else { 1 });
        }
    };
    print(&v);
    Ok(0)
}
