//! `[browser]`: what web pages may do. Public keys (write-only, one
//! organizer, a list of origins) for the tracker and for pages that call the
//! API, and the proxies whose `X-Forwarded-For` is believed.

use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    /// `[[browser.public_keys]]`, or `BILTEN_PUBLIC_KEYS=
    /// "KEY@org-123=https://a.example|https://b.example,KEY2@org-9=*"`.
    #[serde(deserialize_with = "public_keys")]
    pub public_keys: Vec<PublicKey>,
    /// Addresses or CIDR ranges of the reverse proxies in front of the
    /// server (`BILTEN_TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1"`). Only a
    /// request from one of them has its `X-Forwarded-For` believed.
    #[serde(deserialize_with = "proxies")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A key that may sit in a page's source: it writes page views and events
/// for one organizer, from pages of the listed origins, and nothing else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    pub key: String,
    pub organizer: String,
    /// `https://tickets.example.com` (scheme, host, port), or `*` for any.
    pub origins: Vec<String>,
}

impl PublicKey {
    /// Whether a page of `origin` may use this key.
    pub fn allows(&self, origin: &str) -> bool {
        origin_listed(&self.origins, origin)
    }
}

/// Whether a public key's `origins` let pages of `origin` use it: `*`, or
/// the origin itself (scheme and host in any case).
pub fn origin_listed(origins: &[String], origin: &str) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

impl BrowserConfig {
    /// Whether any key lets pages of `origin` write (CORS preflights carry
    /// no key, so they are answered for the union).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.public_keys.iter().any(|k| k.allows(origin))
    }

    /// `secrets`: the ingest keys and the admin token, which a public key
    /// must not equal (it would publish them).
    pub fn validate(&self, secrets: &[&str]) -> Result<(), ConfigError> {
        for (i, k) in self.public_keys.iter().enumerate() {
            let at = format!("browser.public_keys[{i}]");
            if k.key.len() < 8 || k.key.contains([',', '@', '=', ' ']) {
                return Err(invalid(
                    at,
                    "the key must be at least 8 characters, without ',', '@', '=' or spaces",
                ));
            }
            if k.organizer.is_empty() {
                return Err(invalid(at, "a public key writes for one organizer: set it"));
            }
            if secrets
                .iter()
                .any(|s| s.split('@').next() == Some(k.key.as_str()))
            {
                return Err(invalid(
                    at,
                    "is also an ingest key, a read key or the admin token: a public key is \
                     published in pages, so it must be a key of its own",
                ));
            }
            if k.origins.is_empty() {
                return Err(invalid(
                    at,
                    "list the origins whose pages may use it (\"https://tickets.example.com\"), \
                     or \"*\" for any",
                ));
            }
            for origin in &k.origins {
                if origin != "*" && !is_origin(origin) {
                    return Err(invalid(
                        at,
                        format!(
                            "{origin:?} is not an origin: scheme, host and port only, as \
                             \"https://tickets.example.com\""
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An entry of a public key's origins: `*`, or an origin as a browser
/// sends it.
pub fn check_origin(origin: &str) -> Result<(), String> {
    match origin == "*" || is_origin(origin) {
        true => Ok(()),
        false => Err(
            "not an origin: scheme, host and port only, as \"https://tickets.example.com\"".into(),
        ),
    }
}

/// `http(s)://host[:port]`, as a browser sends it in `Origin`: no path.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// A TOML list of tables, or `KEY@organizer=origin|origin` items separated by commas.
fn public_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
    super::list_or_items(
        d,
        (
            "browser.public_keys",
            "KEY@organizer=origin|origin (\"pk_site@org-123=https://tickets.example.com\")",
        ),
        |item| {
            let (key, rest) = item.split_once('@')?;
            let (organizer, origins) = rest.split_once('=')?;
            Some(PublicKey {
                key: key.to_string(),
                organizer: organizer.to_string(),
                origins: origins.split('|').map(|o| o.trim().to_string()).collect(),
            })
        },
    )
}

/// A list or a comma-separated string of addresses and CIDR ranges.
fn proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    super::comma_list(d)?
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "browser.trusted_proxies: {item:?} is neither an address nor a CIDR range"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        for ok in [
            "https://tickets.example.com",
            "http://127.0.0.1:8081",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "tickets.example.com",
            "https://tickets.example.com/",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
            "https://a.example:99999",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
