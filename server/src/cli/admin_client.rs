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

/// `rates`: the exchange rates revenue is converted with.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RatesCommand {
    /// Load a CSV file of date,currency,rate lines into a base currency.
    Load {
        file: PathBuf,
        /// The currency the rates are in (what one unit was worth in it).
        #[arg(long)]
        base: String,
    },
    /// The rates in force.
    List {
        #[arg(long)]
        base: Option<String>,
        /// First day, YYYY-MM-DD (default: a year ago).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default: today).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `keys`: keys kept in the store (`/admin/keys`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key; its secret is printed this once.
    Create {
        /// ingest, public or read.
        #[arg(long)]
        kind: String,
        /// An organizer it is for (repeat for more; ingest keys only).
        #[arg(long = "organizer", required = true)]
        organizers: Vec<String>,
        /// A public key's page origin, `https://tickets.example.com` or `*`
        /// (repeat for more).
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Every key: prefix, kind, organizers, state, created and last used.
    List {
        #[arg(long)]
        organizer: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// active or revoked.
        #[arg(long)]
        state: Option<String>,
    },
    /// One key.
    Show { id: String },
    /// Revoke a key, on every server, for good.
    Revoke { id: String },
    /// A new secret, printed this once; the old one works for the grace period.
    Rotate {
        id: String,
        /// How long the old secret keeps working (default: the server's
        /// `tenants.rotation_grace`, 24h).
        #[arg(long)]
        grace: Option<String>,
    },
}

/// `organizers`: organizers kept in the store (`/admin/organizers`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OrganizersCommand {
    /// Make an organizer.
    Create {
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Every organizer made through the API.
    List,
    /// Give an organizer another name.
    Rename { id: String, name: String },
    /// Refuse an organizer's events from now on (what it stored stays).
    Suspend { id: String },
    /// Take an organizer's events again.
    Resume { id: String },
}

/// `organizers …`: the same calls as `/admin/organizers`, printed as JSON.
pub async fn organizers(t: &Target, action: OrganizersCommand) -> anyhow::Result<u8> {
    use reqwest::Method;
    let patch = |id: &str, body| {
        (
            Method::PATCH,
            format!("/organizers/{}", segment(id)),
            Some(body),
        )
    };
    let (method, path, body) = match action {
        OrganizersCommand::Create { id, name } => (
            Method::POST,
            "/organizers".to_string(),
            Some(serde_json::json!({"id": id, "name": name})),
        ),
        OrganizersCommand::List => (Method::GET, "/organizers".to_string(), None),
        OrganizersCommand::Rename { id, name } => patch(&id, serde_json::json!({ "name": name })),
        OrganizersCommand::Suspend { id } => patch(&id, serde_json::json!({"suspended": true})),
        OrganizersCommand::Resume { id } => patch(&id, serde_json::json!({"suspended": false})),
    };
    print(&t.json(method, &path, body).await?);
    Ok(0)
}

/// `keys …`: the same calls as `/admin/keys`, printed as JSON.
pub async fn keys(t: &Target, action: KeysCommand) -> anyhow::Result<u8> {
    use reqwest::Method;
    let (method, path, body) = match action {
        KeysCommand::Create {
            kind,
            organizers,
            origins,
        } => (
            Method::POST,
            "/keys".to_string(),
            Some(serde_json::json!({"kind": kind, "organizers": organizers, "origins": origins})),
        ),
        KeysCommand::List {
            organizer,
            kind,
            state,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [("organizer", organizer), ("kind", kind), ("state", state)] {
                if let Some(v) = v {
                    query.append_pair(k, &v);
                }
            }
            (Method::GET, format!("/keys?{}", query.finish()), None)
        }
        KeysCommand::Show { id } => (Method::GET, format!("/keys/{}", segment(&id)), None),
        KeysCommand::Revoke { id } => (Method::DELETE, format!("/keys/{}", segment(&id)), None),
        KeysCommand::Rotate { id, grace } => (
            Method::POST,
            format!("/keys/{}/rotate", segment(&id)),
            grace.map(|g| serde_json::json!({ "grace": g })),
        ),
    };
    print(&t.json(method, &path, body).await?);
    Ok(0)
}

/// An id as one path segment, whatever it holds.
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// A request's body: JSON, or text as it is (a CSV file).
enum Body {
    Json(Value),
    Text(String),
}

impl Target {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String)> {
        self.send(method, path, body.map(Body::Json)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
    ) -> anyhow::Result<(u16, String)> {
        let token = self
            .token
            .as_deref()
            .context("set BILTEN_ADMIN_TOKEN (or --token) to the server's admin token")?;
        let url = format!("{}/admin{path}", self.target.trim_end_matches('/'));
        let mut req = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token);
        match body {
            Some(Body::Json(b)) => req = req.json(&b),
            Some(Body::Text(t)) => req = req.header("content-type", "text/csv").body(t),
            None => {}
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

/// `rates load` and `rates list`.
pub async fn rates(t: &Target, action: RatesCommand) -> anyhow::Result<u8> {
    let (path, body, method) = match action {
        RatesCommand::Load { file, base } => {
            let csv = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("base", &base)
                .finish();
            (
                format!("/exchange-rates?{query}"),
                Some(Body::Text(csv)),
                reqwest::Method::PUT,
            )
        }
        RatesCommand::List { base, from, to } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [("base", base), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    query.append_pair(k, &v);
                }
            }
            (
                format!("/exchange-rates?{}", query.finish()),
                None,
                reqwest::Method::GET,
            )
        }
    };
    let (status, text) = t.send(method, &path, body).await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !(200..300).contains(&status) {
        bail!(
            "exchange rates: HTTP {status}: {}",
            value.get("error").unwrap_or(&value)
        );
    }
    print(&value);
    Ok(0)
}
