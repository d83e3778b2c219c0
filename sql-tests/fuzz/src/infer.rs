//! Declared schemas for decoder inputs: the file and Kafka sources need their columns
//! declared, so the harness guesses them from the input's first record (names from a CSV
//! header or JSON keys, types from the values), the way a user would write them. A mutated
//! input then mostly decodes, with the rows the mutation broke counted as malformed.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The declared type a user would give a column holding `text`.
pub fn type_of_text(text: &str) -> DataType {
    let t = text.trim();
    if t.parse::<i64>().is_ok() {
        DataType::Int64
    } else if t.parse::<f64>().is_ok() {
        DataType::Float64
    } else if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false") {
        DataType::Boolean
    } else if looks_like_time(t) {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    } else {
        DataType::Utf8
    }
}

fn looks_like_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-'
}

/// The CSV delimiter of `line`: the most frequent of `,;|\t` (`,` when none occurs).
pub fn delimiter(line: &str) -> char {
    [',', ';', '|', '\t']
        .into_iter()
        .max_by_key(|d| (line.matches(*d).count(), *d == ','))
        .unwrap_or(',')
}

/// At most this many columns are declared (an input with thousands of fields is still read,
/// with the extra fields making its rows malformed).
const MAX_COLUMNS: usize = 64;

/// A CSV schema: `header` names the columns when it is a header; `sample` gives the types.
pub fn csv_schema(header: Option<&str>, sample: Option<&str>, delimiter: char) -> SchemaRef {
    let names: Vec<String> = match header {
        Some(h) => h.split(delimiter).map(|n| n.trim().to_string()).collect(),
        None => sample
            .unwrap_or("")
            .split(delimiter)
            .enumerate()
            .map(|(i, _)| format!("c{i}"))
            .collect(),
    };
    let values: Vec<&str> = sample
        .map(|s| s.split(delimiter).collect())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let fields: Vec<Field> = names
        .iter()
        .take(MAX_COLUMNS)
        .enumerate()
        .map(|(i, name)| {
            let name = if name.is_empty() || !seen.insert(name.clone()) {
                format!("c{i}")
            } else {
                name.clone()
            };
            let data_type = values.get(i).map_or(DataType::Utf8, |v| type_of_text(v));
            Field::new(name, data_type, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A JSON schema from the keys and values of the first object in `lines`; a fixed one when
/// no line holds an object.
pub fn json_schema<'a>(lines: impl Iterator<Item = &'a str>) -> SchemaRef {
    for line in lines {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        let fields: Vec<Field> = object
            .iter()
            .take(MAX_COLUMNS)
            .map(|(name, value)| {
                let data_type = match value {
                    serde_json::Value::Bool(_) => DataType::Boolean,
                    serde_json::Value::Number(n) if n.is_i64() => DataType::Int64,
                    serde_json::Value::Number(_) => DataType::Float64,
                    serde_json::Value::String(s) => type_of_text(s),
                    _ => DataType::Utf8,
                };
                Field::new(name, data_type, true)
            })
            .collect();
        if !fields.is_empty() {
            return Arc::new(Schema::new(fields));
        }
    }
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_header_and_first_row_give_names_and_types() {
        let schema = csv_schema(Some("id,price,at"), Some("1,2.5,2024-01-01 00:00:00"), ',');
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Float64,
                DataType::Timestamp(TimeUnit::Millisecond, None)
            ]
        );
        assert_eq!(schema.field(0).name(), "id");
    }

    #[test]
    fn repeated_or_empty_names_get_positional_ones() {
        let schema = csv_schema(Some("a;a;"), None, ';');
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["a", "c1", "c2"]);
    }
}
