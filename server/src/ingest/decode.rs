//! Request bodies: one JSON object, a JSON array of objects, or NDJSON.

use serde_json::Value;

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

#[derive(Debug, thiserror::Error, PartialEq)]
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
    #[error("too many events in one request: {got}, the limit is {max}")]
    TooManyEvents { got: usize, max: usize },
}

/// Each item is an event to validate, or (NDJSON only) why its line did not
/// parse: one bad line does not sink the others.
pub fn decode(body: &[u8], format: BodyFormat) -> Result<Vec<Result<Value, String>>, DecodeError> {
    match format {
        BodyFormat::Json => {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| DecodeError::Malformed {
                    line: e.line(),
                    column: e.column(),
                    message: strip_position(&e.to_string()),
                })?;
            match value {
                Value::Array(items) => Ok(items.into_iter().map(Ok).collect()),
                Value::Object(_) => Ok(vec![Ok(value)]),
                other => Err(DecodeError::WrongShape(kind(&other))),
            }
        }
        BodyFormat::Ndjson => Ok(body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| {
                serde_json::from_slice::<Value>(line).map_err(|e| {
                    format!(
                        "malformed JSON at line {}, column {}: {}",
                        n + 1,
                        e.column(),
                        strip_position(&e.to_string())
                    )
                })
            })
            .collect()),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
        assert_eq!(decode(br#"{"a":1}"#, BodyFormat::Json).unwrap().len(), 1);
        assert_eq!(
            decode(br#"[{"a":1},{"a":2}]"#, BodyFormat::Json)
                .unwrap()
                .len(),
            2
        );
        let items = decode(b"{\"a\":1}\n\n{oops\n{\"a\":3}\n", BodyFormat::Ndjson).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[2].is_ok());
        let err = items[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("malformed JSON at line 3, column 2"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_gives_the_position() {
        let err = decode(b"[{\"a\":1},\n {\"a\" 2}]", BodyFormat::Json).unwrap_err();
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
            decode(b"42", BodyFormat::Json).unwrap_err(),
            DecodeError::WrongShape("a number")
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
