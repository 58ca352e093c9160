//! Privacy: IP addresses are truncated (IPv4 to /24, IPv6 to /48) or hashed
//! with a salt, and e-mail addresses are cut out of the properties, the URL
//! and the referrer (plain or URL-encoded), replaced by `[email]`.
//!
//! Config: `ip = "truncate"` (the default), `"hash"` or `"keep"`;
//! `salt = "…"` for hashing (set your own: the default is public).

use std::net::IpAddr;

use bilten_plugin_sdk::{Config, Error, EventRef, Plugin, Verdict, export_plugin};
use serde_json::Value;
use sha2::{Digest, Sha256};

enum IpMode {
    Truncate,
    Hash(String),
    Keep,
}

struct Privacy {
    ip: IpMode,
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
        Ok(Privacy { ip })
    }

    fn check(&self, e: &EventRef) -> Result<Verdict, Error> {
        // Decide first, copy only what changes: most events pass untouched.
        let ip = Some(e.ip)
            .filter(|ip| !ip.is_empty())
            .map(|ip| self.ip(ip))
            .filter(|ip| ip != e.ip);
        let url = self.scrub(e.url);
        let referrer = self.scrub(e.referrer);
        let properties = match !emails(e.properties).is_empty() {
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
        let found = emails(text);
        if found.is_empty() {
            return None;
        }
        let mut clean = String::with_capacity(text.len());
        let mut from = 0;
        for (start, end) in found {
            clean.push_str(&text[from..start]);
            clean.push_str(REDACTED);
            from = end;
        }
        clean.push_str(&text[from..]);
        Some(clean)
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

/// The byte ranges of e-mail addresses in `text`: `local@domain.tld`, the
/// `@` plain or URL-encoded (`%40`, as in query strings). Scanned by hand
/// rather than with the `regex` crate: a fresh instance serves every batch,
/// and compiling the pattern there cost about 200 µs a batch (measured with
/// `cargo bench --bench plugins`), more than all the rest of the plugin.
/// Only ASCII bytes are matched, so every range is on character boundaries.
fn emails(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Most text holds neither `@` nor `%`: skip to the next one.
        match b[i..].iter().position(|&c| c == b'@' || c == b'%') {
            Some(skip) => i += skip,
            None => break,
        }
        let sep = match &b[i..] {
            [b'@', ..] => 1,
            [b'%', b'4', b'0', ..] => 3,
            _ => {
                i += 1;
                continue;
            }
        };
        let floor = found.last().map_or(0, |&(_, end)| end);
        let mut start = i;
        while start > floor && local(b[start - 1]) {
            start -= 1;
        }
        let host = i + sep;
        let mut run = host;
        while run < b.len() && domain(b[run]) {
            run += 1;
        }
        match (start < i, domain_end(&b[host..run])) {
            (true, Some(len)) => {
                found.push((start, host + len));
                i = host + len;
            }
            _ => i += sep,
        }
    }
    found
}

/// How much of `d` (letters, digits, `-` and `.`) is a domain: labels
/// joined by dots, ending in a dot and two or more letters. The longest.
fn domain_end(d: &[u8]) -> Option<usize> {
    let mut best = None;
    for (dot, _) in d.iter().enumerate().filter(|(_, c)| **c == b'.') {
        let labels = &d[..dot];
        let empty_label = labels.first() == Some(&b'.') || labels.last() == Some(&b'.');
        if labels.is_empty() || empty_label || labels.windows(2).any(|w| w == b"..") {
            break;
        }
        let letters = d[dot + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        if letters >= 2 {
            best = Some(dot + 1 + letters);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubbed(text: &str) -> String {
        let p = Privacy { ip: IpMode::Keep };
        p.scrub(text).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn addresses_are_cut_wherever_they_are() {
        assert_eq!(
            scrubbed("write to jane.doe@example.com please"),
            "write to [email] please"
        );
        assert_eq!(
            scrubbed("?email=jane%40example.co.uk&x=1"),
            "?email=[email]&x=1"
        );
        assert_eq!(scrubbed("mailto:bob@example.org"), "mailto:[email]");
        assert_eq!(
            scrubbed("a@b.io, c+tag@d-e.example.net"),
            "[email], [email]"
        );
        assert_eq!(scrubbed("ünï jo@ex.am.ple.com ✓"), "ünï [email] ✓");
    }

    #[test]
    fn what_is_not_an_address_stays() {
        for text in [
            "@home",
            "a@b",
            "a@b.c",
            "me@.com",
            "me@a..com",
            "50%40 off",
            "x@1.23",
        ] {
            assert_eq!(scrubbed(text), text, "{text}");
        }
        // The domain ends where the top-level letters do.
        assert_eq!(scrubbed("a@b.com123"), "[email]123");
    }

    #[test]
    fn addresses_are_truncated_or_hashed() {
        let t = Privacy {
            ip: IpMode::Truncate,
        };
        assert_eq!(t.ip("203.0.113.77"), "203.0.113.0");
        assert_eq!(t.ip("2001:db8:abcd:12::1"), "2001:db8:abcd::");
        assert_eq!(t.ip("not an ip"), "");
        let h = Privacy {
            ip: IpMode::Hash("s".into()),
        };
        assert_eq!(h.ip("203.0.113.77"), h.ip(" 203.0.113.77 "));
        assert_eq!(h.ip("203.0.113.77").len(), 16);
    }
}
