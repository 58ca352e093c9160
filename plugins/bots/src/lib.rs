//! Bot filter: drops events whose user agent is a known crawler, by the
//! `woothee` crate's crawler rules plus the substrings in the config.
//!
//! Config: `extra = ["HeadlessChrome", "python-requests"]` (case-insensitive
//! substrings); `keep_empty = true` keeps events with no user agent (the
//! default: server-side events often have none).

use bilten_plugin_sdk::{Config, Error, EventRef, Memo, Plugin, Verdict, export_plugin};

struct Bots {
    parser: woothee::parser::Parser,
    extra: Vec<String>,
    keep_empty: bool,
    /// Whether each user agent of the batch is a bot's, read once.
    bot: Memo<bool>,
}

/// Tools and headless browsers woothee does not list as crawlers.
const DEFAULT_EXTRA: [&str; 10] = [
    "headlesschrome",
    "python-requests",
    "curl/",
    "wget/",
    "go-http-client",
    "scrapy",
    "phantomjs",
    "bot/",
    "spider",
    "crawler",
];

impl Plugin for Bots {
    fn new(config: Config) -> Result<Self, String> {
        let extra = config
            .strings("extra")?
            .unwrap_or_else(|| DEFAULT_EXTRA.iter().map(|s| s.to_string()).collect())
            .into_iter()
            .map(|s| s.to_lowercase())
            .collect();
        Ok(Bots {
            parser: woothee::parser::Parser::new(),
            extra,
            keep_empty: config.bool_or("keep_empty", true)?,
            bot: Memo::new(4096, 1024),
        })
    }

    fn check(&self, event: &EventRef) -> Result<Verdict, Error> {
        let ua = event.user_agent;
        if ua.is_empty() {
            return Ok(if self.keep_empty {
                Verdict::Keep
            } else {
                Verdict::Drop
            });
        }
        let bot = self.bot.get(ua, |ua| {
            let lower = ua.to_lowercase();
            self.parser
                .parse(ua)
                .is_some_and(|r| r.category == "crawler")
                || self.extra.iter().any(|s| lower.contains(s.as_str()))
        });
        Ok(match bot {
            true => Verdict::Drop,
            false => Verdict::Keep,
        })
    }
}

export_plugin!(Bots);
