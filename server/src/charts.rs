//! Charts as inline SVG, drawn on the server: the dashboard and the admin
//! report share them. No script and no asset to fetch, so a page opens
//! anywhere (a saved report, a browser without a network).
//!
//! Every chart has a title, its unit, axis ticks with readable dates or
//! numbers, and a sentence instead of an empty frame when there is nothing
//! to draw. Each mark carries its value in `data-*` attributes, so a test
//! (or a curious user's devtools) reads the figures the chart shows.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// A coordinate as the SVG writes it: one decimal.
fn c(v: f64) -> String {
    format!("{v:.1}")
}

/// What a number counts: shown on the axis, in tooltips and in tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// A count of something, named (`events`, `rows`).
    Count(&'static str),
    /// Money, with two decimals.
    Money,
    Bytes,
    Millis,
    Percent,
    /// A span of time given in seconds, read as `2m 14s`.
    Seconds,
}

/// A value as people read it: thousands grouped, money with cents, bytes in
/// kB/MB/GB.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count(_) => group(v.round() as i64),
        Unit::Money => {
            let cents = (v * 100.0).round() as i64;
            format!("{}.{:02}", group(cents / 100), (cents % 100).abs())
        }
        Unit::Bytes => match v {
            b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
            b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
            b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
            b => format!("{b:.0} B"),
        },
        Unit::Millis => format!("{} ms", group(v.round() as i64)),
        Unit::Percent => format!("{v:.1} %"),
        Unit::Seconds => {
            let s = v.round().max(0.0) as i64;
            match (s / 3600, s % 3600 / 60, s % 60) {
                (0, 0, s) => format!("{s}s"),
                (0, m, s) => format!("{m}m {s}s"),
                (h, m, _) => format!("{h}h {m}m"),
            }
        }
    }
}

/// An axis label: short (`12k`, `1.5M`) where ticks are round numbers.
fn short_value(v: f64, unit: Unit) -> String {
    let short = |v: f64| match v.abs() {
        a if a >= 1e9 => format!("{}G", trim(v / 1e9)),
        a if a >= 1e6 => format!("{}M", trim(v / 1e6)),
        a if a >= 1e4 => format!("{}k", trim(v / 1e3)),
        _ => trim(v),
    };
    match unit {
        Unit::Bytes | Unit::Seconds => format_value(v, unit),
        Unit::Millis => format!("{} ms", short(v)),
        Unit::Percent => format!("{} %", trim(v)),
        Unit::Count(_) | Unit::Money => short(v),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 1234567 as "1,234,567".
pub fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The unit's name for an axis caption.
fn unit_name(unit: Unit, currency: &str) -> String {
    match unit {
        Unit::Count(name) => name.to_string(),
        Unit::Money => currency.to_string(),
        Unit::Bytes => "bytes".into(),
        Unit::Millis => "milliseconds".into(),
        Unit::Percent => "percent".into(),
        Unit::Seconds => "time".into(),
    }
}

/// Round steps for an axis from 0 to at least `max`: 1, 2 or 5 times a power
/// of ten, about five of them.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let step = if step < 1.0 && max >= 1.0 { 1.0 } else { step };
    let n = (max / step).ceil() as usize;
    (0..=n.max(1)).map(|i| i as f64 * step).collect()
}

/// One line or set of bars over time.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (start of the bucket, value), in time order; buckets without a point
    /// are zero.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A chart over time, `from` to `to`, in buckets of `bucket` seconds: bars
/// for one series, lines for several.
pub struct TimeChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
    /// Shown with money.
    pub currency: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: i64,
    pub series: Vec<Series>,
    /// Said instead of the chart when every value is zero.
    pub empty: &'a str,
    /// Drawn for this width in pixels ([`FULL`] or [`HALF`]), so that its
    /// text shows at its own size.
    pub width: f64,
}

/// A chart across the page, and one of two side by side.
pub const FULL: f64 = 1160.0;
pub const HALF: f64 = 560.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// A chart's frame: its caption (title and unit) around `inner`.
fn figure(id: &str, title: &str, subtitle: &str, inner: Markup) -> String {
    html! {
        figure.chart-box id=(id) {
            figcaption { (title) span.sub { (subtitle) } }
            (inner)
        }
    }
    .into_string()
}

fn empty_state(id: &str, title: &str, subtitle: &str, message: &str) -> String {
    figure(id, title, subtitle, html! { p.empty { (message) } })
}

impl TimeChart<'_> {
    pub fn svg(&self) -> String {
        let unit = unit_name(self.unit, self.currency);
        let span = (self.to - self.from).num_seconds().max(self.bucket_secs);
        let subtitle = format!(" · {unit} per {}", bucket_name(self.bucket_secs));
        let max = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        if max <= 0.0 {
            return empty_state(self.id, self.title, &subtitle, self.empty);
        }
        let ticks = ticks(max);
        let top = *ticks.last().expect("at least two ticks");
        let w = self.width;
        let (pw, ph) = (w - LEFT - RIGHT, H - TOP - BOTTOM);
        let x = |t: DateTime<Utc>| LEFT + (t - self.from).num_seconds() as f64 / span as f64 * pw;
        let y = |v: f64| TOP + ph - v / top * ph;
        let bucket_w = self.bucket_secs as f64 / span as f64 * pw;
        let bw = (bucket_w * 0.8).clamp(1.0, 40.0);
        let inner = html! {
            svg.chart viewBox=(format!("0 0 {w} {H}")) role="img" aria-label=(self.title) {
                // Value axis: gridlines and labels.
                @for t in &ticks {
                    line.grid x1=(LEFT) x2=(w - RIGHT) y1=(c(y(*t))) y2=(c(y(*t))) {}
                    text.tick.y x=(LEFT - 6.0) y=(c(y(*t) + 4.0)) text-anchor="end" {
                        (short_value(*t, self.unit))
                    }
                }
                // Time axis: readable ticks at round times.
                @for (t, label) in time_ticks(self.from, self.to) {
                    line.axis x1=(c(x(t))) x2=(c(x(t))) y1=(TOP + ph) y2=(TOP + ph + 4.0) {}
                    text.tick.x x=(c(x(t))) y=(TOP + ph + 18.0) text-anchor="middle" { (label) }
                }
                @if let [s] = self.series.as_slice() {
                    @for (t, v) in s.points.iter().filter(|p| p.1 > 0.0) {
                        rect.bar data-series=(s.name) data-t=(t.to_rfc3339()) data-v=(v)
                            x=(c(x(*t) + (bucket_w - bw) / 2.0)) y=(c(y(*v)))
                            width=(c(bw)) height=(c(TOP + ph - y(*v))) fill=(s.color) {
                            title {
                                (label_time(*t, self.bucket_secs)) ": "
                                (format_value(*v, self.unit)) " " (unit)
                            }
                        }
                    }
                } @else {
                    @for s in &self.series {
                        @let path: Vec<String> = s
                            .points
                            .iter()
                            .map(|(t, v)| format!("{},{}", c(x(*t) + bucket_w / 2.0), c(y(*v))))
                            .collect();
                        polyline.line fill="none" stroke=(s.color) stroke-width="2" points=(path.join(" ")) {}
                        @for (t, v) in &s.points {
                            circle.point data-series=(s.name) data-t=(t.to_rfc3339()) data-v=(v)
                                cx=(c(x(*t) + bucket_w / 2.0)) cy=(c(y(*v))) r="2.5" fill=(s.color) {
                                title {
                                    (s.name) " · " (label_time(*t, self.bucket_secs)) ": "
                                    (format_value(*v, self.unit))
                                }
                            }
                        }
                    }
                }
            }
            @if self.series.len() > 1 {
                div.legend {
                    @for s in &self.series {
                        span { i style=(format!("background:{}", s.color)) {} (s.name) }
                    }
                }
            }
        };
        figure(self.id, self.title, &subtitle, inner)
    }
}

fn bucket_name(secs: i64) -> String {
    match secs {
        300 => "5 minutes".into(),
        3600 => "hour".into(),
        86400 => "day".into(),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

/// A bucket's start as a tooltip says it.
fn label_time(t: DateTime<Utc>, bucket_secs: i64) -> String {
    if bucket_secs >= 86400 {
        t.format("%a %-d %b %Y").to_string()
    } else {
        t.format("%-d %b %H:%M UTC").to_string()
    }
}

/// About six ticks at round times between `from` and `to`, each labelled
/// as briefly as the span allows (`14:30`, `Mon 28`, `28 Nov`).
pub fn time_ticks(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, String)> {
    let span = (to - from).num_seconds().max(1);
    let steps = [
        300,
        600,
        900,
        1800,
        3600,
        2 * 3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86400,
        2 * 86400,
        7 * 86400,
        14 * 86400,
        30 * 86400,
    ];
    let step = steps
        .into_iter()
        .find(|s| span / s <= 7)
        .unwrap_or(30 * 86400);
    let first = (from.timestamp() + step - 1).div_euclid(step) * step;
    let mut out = Vec::new();
    let mut t = first;
    while t <= to.timestamp() {
        let at = DateTime::from_timestamp(t, 0).expect("a time in range");
        let label = if step < 86400 {
            // A day's first tick says which day.
            if at.format("%H:%M").to_string() == "00:00" || out.is_empty() && span > 86400 {
                at.format("%-d %b %H:%M").to_string()
            } else {
                at.format("%H:%M").to_string()
            }
        } else {
            at.format("%-d %b").to_string()
        };
        out.push((at, label));
        t += step;
    }
    out
}

/// Horizontal bars, one per category, each with its value written out:
/// storage by table, the steps of a funnel. `note` is written after each
/// value (a conversion rate, say). Drawn `width` wide ([`FULL`], or
/// [`HALF`] for two side by side), so the text is never scaled down.
pub fn category_bars(
    width: f64,
    id: &str,
    title: &str,
    unit: Unit,
    bars: &[(String, f64, String)],
    empty: &str,
) -> String {
    let subtitle = format!(" · {}", unit_name(unit, ""));
    if bars.iter().all(|b| b.1 <= 0.0) {
        return empty_state(id, title, &subtitle, empty);
    }
    // Room for the labels, and after the longest bar for its figure.
    let (row, label_w, figure_w) = match width < FULL {
        true => (28.0, 170.0, 170.0),
        false => (28.0, 200.0, 360.0),
    };
    let h = bars.len() as f64 * row + 8.0;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let inner = html! {
        svg.chart viewBox=(format!("0 0 {width} {h}")) role="img" aria-label=(title) {
            @for (i, (label, value, note)) in bars.iter().enumerate() {
                @let y = 4.0 + i as f64 * row;
                @let bw = (value / max * (width - label_w - figure_w)).max(if *value > 0.0 { 1.0 } else { 0.0 });
                text.tick x=(c(label_w - 8.0)) y=(c(y + row * 0.6)) text-anchor="end" { (shortened(label, label_w)) }
                rect.bar data-series=(label) data-v=(value) x=(label_w) y=(c(y)) width=(c(bw))
                    height=(c(row * 0.7)) fill="#3b6ea5" {
                    title { (label) ": " (format_value(*value, unit)) }
                }
                text.value x=(c(label_w + bw + 6.0)) y=(c(y + row * 0.6)) {
                    (format_value(*value, unit)) (note)
                }
            }
        }
    };
    figure(id, title, &subtitle, inner)
}

/// A label cut to what fits `width` pixels of tick text (a long page
/// path), its end shown as `…`; the bar's tooltip keeps it whole.
fn shortened(label: &str, width: f64) -> String {
    let most = (width / 7.0) as usize;
    match label.chars().count() > most {
        true => format!(
            "{}…",
            label
                .chars()
                .take(most.saturating_sub(1))
                .collect::<String>()
        ),
        false => label.to_string(),
    }
}

/// The look the dashboard and the report share.
pub const STYLE: &str = r#"
:root{--ink:#1f2733;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--accent:#3b6ea5}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--ink);background:var(--bg)}
header{display:flex;align-items:center;gap:1.5em;padding:.9em 2em;background:#fff;border-bottom:1px solid var(--line)}
header h1{font-size:1.15em;margin:0}
header .who{margin-left:auto;color:var(--muted);font-size:.9em}
main{padding:1.2em 2em;max-width:1240px;margin:0 auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1.2em}
.card,.chart-box{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1em 1.2em;margin:0 0 1.2em}
figcaption,.card h2{font-weight:600;font-size:1em;margin:0 0 .5em}
figcaption .sub{font-weight:400;color:var(--muted)}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:var(--line)} svg .axis{stroke:#98a2b3}
svg text{font-size:11px;fill:var(--muted)} svg text.value{fill:var(--ink);font-size:12px}
svg .bar:hover{opacity:.8}
.legend{display:flex;gap:1.2em;font-size:.85em;color:var(--muted);margin-top:.3em}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:.4em}
.empty{color:var(--muted);margin:1.5em 0;text-align:center}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:1em;margin-bottom:1.2em}
.kpi{background:#fff;border:1px solid var(--line);border-radius:10px;padding:.8em 1em}
.kpi .label{color:var(--muted);font-size:.8em} .kpi .value{font-size:1.5em;font-weight:600;margin-top:.2em}
.amount{display:block;white-space:nowrap} .kpi .value .amount:not(:only-child){font-size:.7em}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{padding:.45em .6em;border-bottom:1px solid var(--line);text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th button{all:unset;cursor:pointer;font-weight:600} th button::after{content:" ↕";color:#98a2b3}
th[aria-sort=ascending] button::after{content:" ↑"} th[aria-sort=descending] button::after{content:" ↓"}
form.filters{display:flex;gap:1em;align-items:end;flex-wrap:wrap}
label{display:flex;flex-direction:column;font-size:.8em;color:var(--muted);gap:.25em}
input,select,button.primary{font:inherit;padding:.4em .6em;border:1px solid #d0d5dd;border-radius:6px;background:#fff}
button.primary{background:var(--accent);color:#fff;border-color:var(--accent);cursor:pointer}
.error{color:#b42318}
code{font-size:.85em}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(7.0), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(1234.0), vec![0.0, 500.0, 1000.0, 1500.0]);
        assert_eq!(ticks(0.0), vec![0.0, 1.0]);
        let t = ticks(98_765.0);
        assert!(*t.last().unwrap() >= 98_765.0 && t.len() <= 7, "{t:?}");
    }

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(format_value(1234567.0, Unit::Count("events")), "1,234,567");
        assert_eq!(format_value(1234.5, Unit::Money), "1,234.50");
        assert_eq!(format_value(2_500_000.0, Unit::Bytes), "2.5 MB");
        assert_eq!(format_value(44.6, Unit::Seconds), "45s");
        assert_eq!(format_value(134.0, Unit::Seconds), "2m 14s");
        assert_eq!(format_value(3_900.0, Unit::Seconds), "1h 5m");
        assert_eq!(short_value(12_000.0, Unit::Count("x")), "12k");
        assert_eq!(short_value(1_500_000.0, Unit::Count("x")), "1.5M");
    }

    /// A series' or a category's name is text in the chart, never markup.
    #[test]
    fn names_are_escaped_in_the_svg() {
        let bars = [("<b>x</b> & \"y\"".to_string(), 3.0, " · <i>".to_string())];
        let svg = category_bars(FULL, "c", "T <t>", Unit::Count("n"), &bars, "none");
        assert!(
            !svg.contains("<b>") && !svg.contains("<i>") && !svg.contains("<t>"),
            "{svg}"
        );
        assert!(
            svg.contains("&lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot;"),
            "{svg}"
        );
    }

    /// Two ends of an axis never carry the same label; a span of a day or
    /// less is labelled in hours, a longer one in days.
    #[test]
    fn time_ticks_are_distinct_and_readable() {
        let from = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 0).unwrap();
        let hour = time_ticks(from, from + chrono::Duration::hours(1));
        assert!(hour.len() >= 4, "{hour:?}");
        assert_eq!(hour[0].1, "10:10");
        let month = time_ticks(from, from + chrono::Duration::days(30));
        assert!(
            month
                .iter()
                .all(|t| t.1.ends_with("Nov") || t.1.ends_with("Dec"))
        );
        for ticks in [hour, month] {
            let labels: std::collections::HashSet<_> = ticks.iter().map(|t| &t.1).collect();
            assert_eq!(labels.len(), ticks.len(), "{ticks:?}");
        }
    }

    #[test]
    fn an_empty_chart_says_so() {
        let now = Utc::now();
        let chart = TimeChart {
            id: "c",
            title: "Revenue",
            unit: Unit::Money,
            currency: "EUR",
            from: now - chrono::Duration::days(1),
            to: now,
            bucket_secs: 3600,
            series: vec![Series {
                name: "revenue".into(),
                color: "#000",
                points: vec![],
            }],
            empty: "No sales in this period.",
            width: HALF,
        };
        let html = chart.svg();
        assert!(html.contains("No sales in this period.") && !html.contains("<svg"));
    }
}
