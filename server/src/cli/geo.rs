//! `geo update`: fetches the country database's npm package (by name and
//! version, with the npm client, as the build does) and puts its database
//! where the server reads it at its next start, checked first: a download
//! that cannot be read never replaces a working database.

use std::path::Path;

use anyhow::{Context, bail};
use bilten_analytics::config::Config;
use bilten_analytics::geo;

const PACKAGE: &str = "@ip-location-db/geo-whois-asn-country-mmdb";
const FILE: &str = "geo-whois-asn-country.mmdb";

#[derive(clap::Subcommand, Clone)]
pub enum GeoCommand {
    /// Fetch the country database (the newest by default) for the next start.
    Update {
        /// The package version, or `latest`.
        #[arg(long, default_value = "latest")]
        version: String,
    },
}

pub fn run(action: &GeoCommand, config: &Config) -> anyhow::Result<()> {
    let GeoCommand::Update { version } = action;
    // Where the server will read it: the configured file, else the one
    // beside the data that wins over the build's.
    let dest = config
        .geo
        .database
        .clone()
        .unwrap_or_else(|| geo::updated_path(&config.storage.embedded.data_dir));
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // Beside the database, so the last step is a rename on one disk.
    let tmp = dir.join(format!(".geo-update-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let result = (|| {
        let staged = super::npm_pack::unpack(&format!("{PACKAGE}@{version}"), FILE, &tmp)
            .map_err(anyhow::Error::msg)?;
        let countries = geo::Countries::open(&staged)?;
        if countries.country("8.8.8.8").is_none() {
            bail!(
                "{PACKAGE}@{version}: its database knows no country of 8.8.8.8; kept the old one"
            );
        }
        std::fs::rename(&staged, &dest).with_context(|| format!("move into {}", dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    println!(
        "{}",
        serde_json::json!({"package": PACKAGE, "version": version, "database": dest})
    );
    eprintln!("restart the server to read it");
    Ok(())
}
