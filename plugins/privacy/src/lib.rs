//! Privacy: IP addresses are truncated (IPv4 to /24, IPv6 to /48) or hashed
//! with a salt, and e-mail addresses are cut out of the properties, the URL
//! and the referrer (plain or URL-encoded), replaced by `[email]`.
//!
//! Config: `ip = "truncate"` (the default), `"hash"` or `"keep"`;
//! `salt = "…"` for hashing (set your own: the default is public).

use std::net::IpAddr;

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};
use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

enum IpMode {
    Truncate,
    Hash(String),
    Keep,
}

struct Privacy {
    ip: IpMode,
    email: Regex,
}

const REDACTED: &str = "[email]";

impl Plugin for Privacy {
    fn new(config: Config) -> Result<Self, String> {
        let ip = match config.str_or("ip", "truncate")? {
            "truncate" => IpMode::Truncate,
            "hash" => IpMode::Hash(config.str_or("salt", "bilten")?.to_string()),
            "keep" => IpMode::Keep,
            other => return Err(format!("ip must be truncate, hash or keep, got {other:?}")),
        };
        // `%40` is `@` URL-encoded, as it appears in query strings.
        let email = Regex::new(
            r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        )
        .map_err(|e| e.to_string())?;
        Ok(Privacy { ip, email })
    }

    fn check(&self, e: &EventRef) -> Result<Verdict, Error> {
        // Decide first, copy only what changes: most events pass untouched.
        let ip = Some(e.ip)
            .filter(|ip| !ip.is_empty())
            .map(|ip| self.ip(ip))
            .filter(|ip| ip != e.ip);
        let url = self.scrub(e.url);
        let referrer = self.scrub(e.referrer);
        let properties = match self.email.is_match(e.properties) {
            true => {
                let mut properties = e.properties()?;
                for value in properties.values_mut() {
                    self.scrub_value(value);
                }
                Some(properties)
            }
            false => None,
        };
        if ip.is_none() && url.is_none() && referrer.is_none() && properties.is_none() {
            return Ok(Verdict::Keep);
        }
        let mut event = e.to_event();
        if let Some(ip) = ip {
            event.ip = ip;
        }
        if let Some(url) = url {
            event.url = url;
        }
        if let Some(referrer) = referrer {
            event.referrer = referrer;
        }
        if let Some(properties) = properties {
            event.set_properties(&properties);
        }
        Ok(Verdict::Modify(event))
    }
}

impl Privacy {
    fn ip(&self, text: &str) -> String {
        let Ok(addr) = text.trim().parse::<IpAddr>() else {
            // Not an address: keep nothing of it.
            return String::new();
        };
        match &self.ip {
            IpMode::Keep => addr.to_string(),
            IpMode::Truncate => match addr {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0")
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
                }
            },
            IpMode::Hash(salt) => {
                let digest = Sha256::new()
                    .chain_update(salt.as_bytes())
                    .chain_update(addr.to_string().as_bytes())
                    .finalize();
                digest[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    fn scrub(&self, text: &str) -> Option<String> {
        self.email
            .is_match(text)
            .then(|| self.email.replace_all(text, REDACTED).into_owned())
    }

    fn scrub_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(clean) = self.scrub(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.scrub_value(v)),
            _ => {}
        }
    }
}

export_plugin!(Privacy);
