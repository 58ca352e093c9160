//! Exchange rates an admin loads: a CSV of date, currency and rate, what
//! one unit of the currency was worth in a base currency that day, into
//! `exchange_rates` (`sql/0030_exchange_rates.sql`). The Stats API converts
//! revenue with them when a query asks (`stats`, `include.converted_to`);
//! nothing here guesses a rate that was not loaded.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::model::DATABASE;
use crate::storage::{Storage, StorageError};

/// The rows of `exchange_rates` that count: what the server loaded. A
/// writer of ClickHouse's interface may insert into the table too; a row
/// stamped in the future would outlive every later load, and one of no
/// rate or less would turn sales into missing ones or negative sums.
pub const IN_FORCE: &str = "loaded_at <= now64(3) AND rate > 0";

/// Most rates one load takes.
pub const MAX_RATES: usize = 100_000;
/// Most rates one listing answers with.
pub const MAX_LISTED: usize = 10_000;

/// A rate, checked; its number kept as the text sent, which the engine
/// reads as a decimal (never through a float).
#[derive(Debug, PartialEq)]
pub struct Rate {
    pub date: NaiveDate,
    pub currency: String,
    pub rate: String,
}

/// A load refused, the line and the field named.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct RatesError(pub String);

fn refused<T>(msg: String) -> Result<T, RatesError> {
    Err(RatesError(msg))
}

/// `code` in upper case when sales may carry it (`ingest::currency_code`:
/// the rule ingest applies, so every stored sale's currency can have a
/// rate).
pub fn currency(code: &str) -> Option<String> {
    crate::ingest::currency_code(code.trim())
}

/// The days a rate may be for: the engine's `Date` range.
fn in_range(d: NaiveDate) -> bool {
    let first = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    let last = NaiveDate::from_ymd_opt(2149, 6, 6).expect("a date");
    (first..=last).contains(&d)
}

/// What a client sent, cut for a message.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    match cut.len() < s.len() {
        true => format!("{cut:?}…"),
        false => format!("{cut:?}"),
    }
}

/// A positive decimal such as `0.9231`: digits, one optional point, at
/// most 18 digits before it and 10 after (the column's scale).
fn decimal(s: &str) -> bool {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && whole.len() <= 18
        && fraction.len() <= 10
        && digits(whole)
        && digits(fraction)
        && !(s.contains('.') && fraction.is_empty())
        && s.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// The rates of a CSV body (`date,currency,rate`, a header line allowed)
/// into `base`, every line checked before any is kept.
pub fn parse(base: &str, body: &[u8]) -> Result<(String, Vec<Rate>), RatesError> {
    let Some(base) = currency(base) else {
        return refused(format!(
            "base: a three-letter currency code such as EUR, got {}",
            shown(base)
        ));
    };
    // A spreadsheet's "CSV UTF-8" starts with a byte-order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut out = Vec::new();
    let mut seen: HashMap<(NaiveDate, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| RatesError(format!("the CSV could not be read: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        let fields: Vec<&str> = record.iter().collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        if out.is_empty()
            && seen.is_empty()
            && fields.len() == 3
            && fields[0].eq_ignore_ascii_case("date")
        {
            continue;
        }
        let [date, code, rate] = fields[..] else {
            return refused(format!(
                "line {line}: expected date,currency,rate, got {} fields",
                fields.len()
            ));
        };
        let Some(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .filter(|d| in_range(*d))
        else {
            return refused(format!(
                "line {line}: date: expected YYYY-MM-DD from 1970-01-01 to 2149-06-06, got {}",
                shown(date)
            ));
        };
        let Some(code) = currency(code) else {
            return refused(format!(
                "line {line}: currency: a three-letter code such as USD, got {}",
                shown(code)
            ));
        };
        if code == base {
            return refused(format!(
                "line {line}: currency: {code} is the base; its rate is 1"
            ));
        }
        if !decimal(rate) {
            return refused(format!(
                "line {line}: rate: a positive decimal number such as 0.9231, got {}",
                shown(rate)
            ));
        }
        if let Some(first) = seen.insert((date, code.clone()), line) {
            return refused(format!(
                "line {line}: {code} on {date} is given twice (first on line {first})"
            ));
        }
        if out.len() == MAX_RATES {
            return refused(format!("at most {MAX_RATES} rates in one load"));
        }
        out.push(Rate {
            date,
            currency: code,
            rate: rate.to_string(),
        });
    }
    if out.is_empty() {
        return refused("no rates: send lines of date,currency,rate".into());
    }
    Ok((base, out))
}

/// Stores `rates` into `base`, replacing the rates loaded before for the
/// same days and currencies.
pub async fn load(storage: &dyn Storage, base: &str, rates: &[Rate]) -> Result<(), StorageError> {
    let at = crate::storage::datetime64_text(&chrono::Utc::now());
    let mut rows = Vec::with_capacity(rates.len() * 80);
    for r in rates {
        let line = json!({"base": base, "date": r.date.to_string(), "currency": r.currency,
                          "rate": r.rate, "loaded_at": at});
        serde_json::to_writer(&mut rows, &line).expect("JSON values serialize");
        rows.push(b'\n');
    }
    let token = format!("rates-{}", uuid::Uuid::new_v4().simple());
    storage.insert("exchange_rates", rows.into(), &token).await
}

/// The rates in force from `from` to `to` (of `base`, when given), each the
/// latest loaded; and whether there were more than [`MAX_LISTED`].
pub async fn list(
    storage: &dyn Storage,
    base: Option<&str>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<(Vec<Value>, bool), StorageError> {
    let mut params = vec![
        ("from".to_string(), from.to_string()),
        ("to".to_string(), to.to_string()),
    ];
    let only = match base {
        Some(b) => {
            params.push(("base".to_string(), b.to_string()));
            " AND base = {base:String}"
        }
        None => "",
    };
    let sql = format!(
        "SELECT toString(b) AS base, toString(d) AS date, toString(c) AS currency, \
         toString(r) AS rate, toString(at) AS loaded_at FROM (SELECT base AS b, date AS d, \
         currency AS c, argMax(rate, loaded_at) AS r, max(loaded_at) AS at \
         FROM {DATABASE}.exchange_rates WHERE {IN_FORCE} \
         AND date BETWEEN {{from:Date}} AND {{to:Date}}{only} GROUP BY b, d, c) \
         ORDER BY base, date, currency LIMIT {}",
        MAX_LISTED + 1
    );
    let mut rows = crate::storage::json_rows_with(storage, &sql, &params).await?;
    let truncated = rows.len() > MAX_LISTED;
    rows.truncate(MAX_LISTED);
    Ok((rows, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse("EUR", body.as_bytes()).unwrap_err().0
    }

    #[test]
    fn a_spreadsheets_csv_is_read_with_its_header_quotes_and_blank_lines() {
        let (base, rates) = parse(
            "eur",
            b"\xEF\xBB\xBFdate,currency,rate\r\n\"2026-11-01\",\"usd\",0.9231\r\n\r\n2026-11-02, GBP ,1.15\n",
        )
        .unwrap();
        assert_eq!(base, "EUR");
        assert_eq!(
            rates,
            [
                Rate {
                    date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
                    currency: "USD".into(),
                    rate: "0.9231".into()
                },
                Rate {
                    date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                    currency: "GBP".into(),
                    rate: "1.15".into()
                },
            ]
        );
    }

    #[test]
    fn every_bad_line_is_refused_by_line_and_field() {
        assert!(err("2026-11-01,USD").contains("line 1: expected date,currency,rate, got 2"));
        assert!(err("2026-13-01,USD,1").contains("line 1: date: expected YYYY-MM-DD"));
        assert!(err("1969-12-31,USD,1").contains("line 1: date: expected YYYY-MM-DD"));
        assert!(err("2150-01-01,USD,1").contains("line 1: date: expected YYYY-MM-DD"));
        assert!(err("2026-11-01,USDD,1").contains("line 1: currency: a three-letter code"));
        assert!(err("2026-11-01,U$D,1").contains("line 1: currency: a three-letter code"));
        assert!(err("2026-11-01,EUR,1").contains("EUR is the base"));
        for rate in [
            "-1",
            "0",
            "0.0",
            "1e3",
            "abc",
            "1.",
            ".5",
            "1,5",
            "NaN",
            "12345678901234567890",
        ] {
            let e = err(&format!("2026-11-01,USD,\"{rate}\""));
            assert!(
                e.contains("line 1: rate: a positive decimal"),
                "{rate}: {e}"
            );
        }
        assert!(
            err("2026-11-01,USD,1\n2026-11-01,usd,2")
                .contains("line 2: USD on 2026-11-01 is given twice (first on line 1)")
        );
        assert!(err("").contains("no rates"));
        assert!(err("date,currency,rate\n").contains("no rates"));
        assert!(
            parse("EURO", b"2026-11-01,USD,1")
                .unwrap_err()
                .0
                .contains("base: a three-letter currency code")
        );
        let long = format!("2026-11-01,{},1", "X".repeat(10_000));
        assert!(err(&long).len() < 200, "values are cut in messages");
    }
}
