//! Request bodies: one JSON object, a JSON array of objects, or NDJSON.
//!
//! Events come out as raw JSON text borrowed from the body (checked, not
//! built into a tree): validation reads each field straight into the row.

use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

impl BodyFormat {
    /// From a `Content-Type` header value; `None` means 415.
    pub fn from_content_type(value: &str) -> Option<BodyFormat> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/jsonlines" => Some(BodyFormat::Ndjson),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("expected a JSON object or an array of objects, got {0}")]
    WrongShape(&'static str),
    #[error("the body holds no events")]
    Empty,
    #[error("too many events in one request: more than the limit of {max}")]
    TooManyEvents { max: usize },
}

/// A JSON array's elements, counted as they are read: past `max` reading
/// stops, so a small gzip body of millions of tiny values never becomes
/// millions of values in memory.
struct Bounded {
    max: usize,
}

/// The message a stopped array carries through serde; `decode` turns it
/// back into `TooManyEvents`.
const STOPPED: &str = "bilten: too many events";

impl<'de> serde::de::DeserializeSeed<'de> for Bounded {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                return Err(serde::de::Error::custom(STOPPED));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// An NDJSON line that is not JSON: where, and the parser's reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed JSON at line {line}, column {column}: {message}")]
pub struct BadLine {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Each item is an event to validate, or (NDJSON only) why its line did not
/// parse: one bad line does not sink the others. More than `max` events is
/// an error found while reading, before the rest is decoded.
pub fn decode(
    body: &[u8],
    format: BodyFormat,
    max: usize,
) -> Result<Vec<Result<&RawValue, BadLine>>, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError::Malformed {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    };
    match format {
        // Only an array can hold more than one event: it alone is counted
        // while it is read. Anything else is one value, judged by its kind.
        BodyFormat::Json if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') => {
            use serde::de::DeserializeSeed;
            let mut de = serde_json::Deserializer::from_slice(body);
            let items = Bounded { max }
                .deserialize(&mut de)
                .and_then(|items| de.end().map(|()| items))
                .map_err(|e| match strip_position(&e.to_string()) == STOPPED {
                    true => DecodeError::TooManyEvents { max },
                    false => malformed(e),
                })?;
            Ok(items.into_iter().map(Ok).collect())
        }
        BodyFormat::Json => match serde_json::from_slice::<&RawValue>(body).map_err(malformed)? {
            value if raw_kind(value) == "an object" => Ok(vec![Ok(value)]),
            other => Err(DecodeError::WrongShape(raw_kind(other))),
        },
        BodyFormat::Ndjson => {
            // Counted before any line is parsed.
            if lines(body).nth(max).is_some() {
                return Err(DecodeError::TooManyEvents { max });
            }
            Ok(lines(body)
                .map(|(n, line)| {
                    serde_json::from_slice::<&RawValue>(line).map_err(|e| BadLine {
                        line: n + 1,
                        column: e.column(),
                        message: strip_position(&e.to_string()),
                    })
                })
                .collect())
        }
    }
}

/// NDJSON's lines with their index, blank ones skipped.
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// What a JSON text is, by its first character (serde_json has already
/// checked that it is valid JSON).
pub(crate) fn raw_kind(v: &RawValue) -> &'static str {
    match v.get().trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// serde_json appends " at line L column C"; we report the position ourselves.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_ndjson() {
        assert_eq!(
            decode(br#"{"a":1}"#, BodyFormat::Json, 10).unwrap().len(),
            1
        );
        assert_eq!(
            decode(br#"[{"a":1},{"a":2}]"#, BodyFormat::Json, 10)
                .unwrap()
                .len(),
            2
        );
        let items = decode(b"{\"a\":1}\n\n{oops\n{\"a\":3}\n", BodyFormat::Ndjson, 10).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[2].is_ok());
        let err = items[1].as_ref().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed JSON at line 3, column 2"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_gives_the_position() {
        let err = decode(b"[{\"a\":1},\n {\"a\" 2}]", BodyFormat::Json, 10).unwrap_err();
        match err {
            DecodeError::Malformed {
                line,
                column,
                message,
            } => {
                assert_eq!((line, column), (2, 7));
                assert_eq!(message, "expected `:`");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode(b"42", BodyFormat::Json, 10).unwrap_err(),
            DecodeError::WrongShape("a number")
        );
        assert_eq!(
            decode(b"\"x\"", BodyFormat::Json, 10).unwrap_err(),
            DecodeError::WrongShape("a string")
        );
        assert!(matches!(
            decode(b"[{\"a\":1}] x", BodyFormat::Json, 10).unwrap_err(),
            DecodeError::Malformed { .. }
        ));
    }

    /// Five million tiny values stop at the limit: the decoder holds at most
    /// `max` of them, and says so before reading the rest.
    #[test]
    fn too_many_events_stop_the_decoder_early() {
        let mut body = b"[".to_vec();
        body.extend(std::iter::repeat_n(b"1,".as_slice(), 5_000_000).flatten());
        body.extend_from_slice(b"1]");
        let started = std::time::Instant::now();
        assert_eq!(
            decode(&body, BodyFormat::Json, 10_000).unwrap_err(),
            DecodeError::TooManyEvents { max: 10_000 }
        );
        // Stopping early: far less than parsing ten megabytes takes.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let lines = "{}\n".repeat(10_001);
        assert_eq!(
            decode(lines.as_bytes(), BodyFormat::Ndjson, 10_000).unwrap_err(),
            DecodeError::TooManyEvents { max: 10_000 }
        );
        assert_eq!(
            decode(lines.as_bytes(), BodyFormat::Ndjson, 10_001)
                .unwrap()
                .len(),
            10_001
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyFormat::from_content_type("application/json; charset=utf-8"),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            BodyFormat::from_content_type("application/x-ndjson"),
            Some(BodyFormat::Ndjson)
        );
        assert_eq!(BodyFormat::from_content_type("text/plain"), None);
    }
}
