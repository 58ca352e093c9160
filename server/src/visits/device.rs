//! What a visit's user agent says of its device, browser and operating
//! system, named as Plausible's Stats API names them (`visit:device`,
//! `visit:browser`, `visit:os`). Read once per visit, when its user agent
//! is first known, by woothee: a maintained user-agent database whose
//! parse takes microseconds, where uap's regex sets take hundreds.

use std::sync::LazyLock;

/// A visit's device, browser and operating system; empty when its agent
/// says nothing we know.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Device {
    /// `Desktop`, `Mobile`, `Tablet` or `Other` (a TV, a console).
    pub kind: &'static str,
    /// As woothee names it: `Chrome`, `Firefox`, `Safari`, `Edge`…
    pub browser: String,
    /// `Windows`, `Mac`, `iOS`, `Android`, `GNU/Linux`, `Chrome OS`, or
    /// woothee's name for the rarer ones.
    pub os: String,
}

static PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);

/// What `agent` says.
pub(crate) fn read(agent: &str) -> Device {
    let Some(r) = PARSER.parse(agent) else {
        return Device::default();
    };
    let known = |s: &str| match s {
        woothee::woothee::VALUE_UNKNOWN => String::new(),
        s => s.to_string(),
    };
    // Woothee says "smartphone" for tablets too: an iPad says so in its
    // OS, an Android tablet by leaving "Mobile" out of its agent.
    let kind = match r.category {
        "pc" => "Desktop",
        "smartphone" if r.os == "iPad" => "Tablet",
        "smartphone" if r.os == "Android" && !agent.contains("Mobile") => "Tablet",
        "smartphone" | "mobilephone" => "Mobile",
        "appliance" => "Other",
        _ => "",
    };
    let os = match r.os {
        s if s.starts_with("Windows") => "Windows".to_string(),
        "Mac OSX" | "Mac OS Classic" => "Mac".to_string(),
        "iPhone" | "iPad" | "iPod" => "iOS".to_string(),
        "Linux" => "GNU/Linux".to_string(),
        "ChromeOS" => "Chrome OS".to_string(),
        s => known(s),
    };
    Device {
        kind,
        browser: known(r.name),
        os,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents_read_as_plausible_names_them() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36",
                ("Desktop", "Chrome", "Windows"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like \
                 Gecko) Version/17.1 Safari/605.1.15",
                ("Desktop", "Safari", "Mac"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                ("Mobile", "Safari", "iOS"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like \
                 Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                ("Tablet", "Safari", "iOS"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Mobile Safari/537.36",
                ("Mobile", "Chrome", "Android"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36",
                ("Tablet", "Chrome", "Android"),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                ("Desktop", "Firefox", "GNU/Linux"),
            ),
        ];
        for (agent, (kind, browser, os)) in cases {
            let d = read(agent);
            assert_eq!(
                (d.kind, d.browser.as_str(), d.os.as_str()),
                (kind, browser, os),
                "{agent}"
            );
        }
    }

    #[test]
    fn an_agent_that_says_nothing_known_reads_empty() {
        for agent in ["", "curl/8.4.0", "\u{0}\u{1}%%%", &"x".repeat(10_000)] {
            let d = read(agent);
            assert_eq!(d.kind, "", "{agent:?}");
            assert_eq!(d.os, "", "{agent:?}");
        }
    }
}
