//! JSON-lines decoding: one JSON object per line into a [`TextBatchBuilder`].
//!
//! Each declared column takes the object's field of the same name (an exact match first, else
//! the first field whose name matches ignoring ASCII case). A missing field or `null` is NULL;
//! strings are taken as they are; numbers and booleans as their JSON text; arrays and objects
//! as JSON text. Blank lines are skipped; a line that is not a JSON object is malformed.

use std::borrow::Cow;

use eddy_engine::connector::ConnectorResult;
use serde_json::{Map, Value};

use super::decode::TextBatchBuilder;

/// Parses JSON-lines regions for one schema.
pub(crate) struct JsonDecoder {
    columns: Vec<String>,
}

impl JsonDecoder {
    pub(crate) fn new(columns: impl IntoIterator<Item = String>) -> Self {
        Self {
            columns: columns.into_iter().collect(),
        }
    }

    /// Decodes every line of `region` (which starts on line `first_line` of the file); a last
    /// line without a line break is decoded too. Returns the bytes consumed: all of them.
    pub(crate) fn decode(
        &self,
        region: &[u8],
        first_line: u64,
        out: &mut TextBatchBuilder<'_>,
    ) -> ConnectorResult<usize> {
        if region.is_empty() {
            return Ok(0);
        }
        let body = region.strip_suffix(b"\n").unwrap_or(region);
        for (line_number, line) in (first_line..).zip(body.split(|b| *b == b'\n')) {
            self.decode_line(line, line_number, out)?;
        }
        Ok(region.len())
    }

    fn decode_line(
        &self,
        line: &[u8],
        line_number: u64,
        out: &mut TextBatchBuilder<'_>,
    ) -> ConnectorResult<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(text) = std::str::from_utf8(line) else {
            out.malformed(line_number, "line is not valid UTF-8", Some(line))?;
            return Ok(());
        };
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                out.malformed(
                    line_number,
                    &format!("expected a JSON object, found {}", kind(&other)),
                    Some(line),
                )?;
                return Ok(());
            }
            Err(e) => {
                out.malformed(line_number, &format!("invalid JSON: {e}"), Some(line))?;
                return Ok(());
            }
        };
        let values: Vec<Option<Cow<'_, str>>> = self
            .columns
            .iter()
            .map(|name| lookup(&object, name).and_then(render))
            .collect();
        out.push_row(line_number, line, values.iter().map(|v| v.as_deref()))
    }
}

fn lookup<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn render(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Array(_) | Value::Object(_) => Some(Cow::Owned(value.to_string())),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
