//! Options both Kafka sources and sinks take: `properties.*` for the client, a format with
//! its CSV options (`format`, `key.format`, `value.format` and their `csv.*` options) and the
//! `key.fields` list.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

use super::options::KafkaFormat;
use crate::file::options::{CsvOptions, parse_char};

/// The format and key option keys, taken by Kafka sources and sinks alike.
pub(crate) const FORMAT_OPTIONS: &[&str] = &[
    "format",
    "value.format",
    "key.format",
    "key.fields",
    "value.fields-include",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.null-literal",
    "value.csv.field-delimiter",
    "value.csv.quote-character",
    "value.csv.null-literal",
    "key.csv.field-delimiter",
    "key.csv.quote-character",
    "key.csv.null-literal",
];

/// The `properties.*` options without their prefix (the client's configuration), and the
/// other option keys, for the caller to check.
pub(crate) fn split_properties(
    options: &ConnectorOptions,
) -> ConnectorResult<(BTreeMap<String, String>, Vec<&str>)> {
    let mut properties = BTreeMap::new();
    let mut others = Vec::new();
    for (key, value) in options {
        match key.strip_prefix("properties.") {
            Some("") => return Err(invalid("option 'properties.' names no client property")),
            Some(property) => {
                properties.insert(property.to_string(), value.clone());
            }
            None => others.push(key.as_str()),
        }
    }
    Ok((properties, others))
}

/// Whether `key` is one of `names`, or starts with one of them that ends in `.` (a prefix).
pub(crate) fn listed(key: &str, names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| key == *n || (n.ends_with('.') && key.starts_with(n)))
}

/// `key.format` and `key.fields`, given together or not at all: the key's format and the
/// `key.fields` text.
pub(crate) fn key_format_and_fields<'a>(
    options: &'a ConnectorOptions,
    what: &str,
) -> ConnectorResult<Option<(KafkaFormat, &'a str)>> {
    let get = |key: &str| options.get(key).map(String::as_str);
    match (get("key.format"), get("key.fields")) {
        (Some(f), Some(fields)) => Ok(Some((parse_format(options, f, &["key."], what)?, fields))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "option 'key.format' needs key.fields = 'col;...' (the columns of the key)",
        )),
        (None, Some(_)) => Err(invalid(
            "option 'key.fields' needs key.format = 'json', 'csv' or 'raw'",
        )),
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}

/// Parses a format name and its CSV options, read from the first of `prefixes` (`key.`,
/// `value.` or none) that has them.
pub(crate) fn parse_format(
    options: &ConnectorOptions,
    name: &str,
    prefixes: &[&str],
    what: &str,
) -> ConnectorResult<KafkaFormat> {
    let name = name.to_ascii_lowercase();
    let csv_option = |suffix: &str| -> Option<(String, &str)> {
        prefixes.iter().find_map(|p| {
            let key = format!("{p}csv.{suffix}");
            options.get(&key).map(|v| (key, v.as_str()))
        })
    };
    let suffixes = ["field-delimiter", "quote-character", "null-literal"];
    match name.as_str() {
        "csv" => {
            let mut csv = CsvOptions::default();
            if let Some((key, value)) = csv_option("field-delimiter") {
                csv.delimiter = parse_char(&key, value)?.ok_or_else(|| {
                    invalid(format!("option '{key}' must be one character, not empty"))
                })?;
            }
            if let Some((key, value)) = csv_option("quote-character") {
                csv.quote = parse_char(&key, value)?;
            }
            csv.null_value = csv_option("null-literal").map(|(_, v)| v.to_string());
            if csv.quote == Some(csv.delimiter) {
                return Err(invalid(
                    "the CSV quote character must differ from the delimiter",
                ));
            }
            Ok(KafkaFormat::Csv(csv))
        }
        "json" | "raw" => {
            if let Some((key, _)) = suffixes.iter().find_map(|s| csv_option(s)) {
                return Err(invalid(format!(
                    "option '{key}' applies only to format 'csv', not '{name}'"
                )));
            }
            Ok(if name == "json" {
                KafkaFormat::Json
            } else {
                KafkaFormat::Raw
            })
        }
        "avro" | "avro-confluent" | "protobuf" | "debezium-json" | "canal-json"
        | "maxwell-json" | "ogg-json" => Err(ConnectorError::Unsupported(format!(
            "format '{name}' for {what} (supported: json, csv, raw)"
        ))),
        _ => Err(invalid(format!(
            "invalid format '{name}'; expected 'json', 'csv' or 'raw'"
        ))),
    }
}

/// The columns `key.fields` names (`'a;b'`, Flink's separator), in that order.
pub(crate) fn key_fields(
    text: &str,
    schema: &SchemaRef,
    what: &str,
) -> ConnectorResult<Vec<usize>> {
    let mut columns = Vec::new();
    for name in text.split(';').map(str::trim) {
        if name.is_empty() {
            return Err(invalid(format!(
                "option 'key.fields' = '{text}': an empty column name (columns are separated \
                 by ';')"
            )));
        }
        let found = schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .or_else(|| {
                schema
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| {
                invalid(format!(
                    "option 'key.fields': {what} has no column '{name}'; its columns: {}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if columns.contains(&found) {
            return Err(invalid(format!(
                "option 'key.fields' names column '{name}' twice"
            )));
        }
        columns.push(found);
    }
    Ok(columns)
}
