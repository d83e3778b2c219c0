//! The `WITH (...)` options of a `kafka` or `upsert-kafka` sink (Flink's names), parsed and
//! checked against the sink's columns.
//!
//! As for the source, every key is one Eddy honours, a Flink option Eddy does not implement yet
//! (refused with [`ConnectorError::Unsupported`], SQLSTATE 0A000, naming it), a `properties.*`
//! key handed to the producer as it is, or an error listing the accepted keys. `format` is
//! Flink's shorthand for `value.format`; CSV options apply to the value (`csv.*` or
//! `value.csv.*`) or to the key (`key.csv.*`).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

use super::format_options::{
    FORMAT_OPTIONS, key_fields, key_format_and_fields, listed, parse_format, split_properties,
};
use super::options::KafkaFormat;

/// Keys Eddy honours (besides `properties.*`), for both connectors unless said otherwise.
const OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "sink.delivery-guarantee",
    "sink.semantic",
    "sink.transactional-id-prefix",
    "sink.partitioner",
];

/// Flink sink options (or prefixes, ending in `.`) Eddy does not implement yet.
const NOT_YET: &[&str] = &[
    "topic-pattern",
    "sink.parallelism",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "key.fields-prefix",
    "json.",
    "key.json.",
    "value.json.",
    "raw.",
    "key.raw.",
    "value.raw.",
    "csv.",
    "key.csv.",
    "value.csv.",
];

/// What the sink promises about each row reaching the topic (Flink's
/// `sink.delivery-guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryGuarantee {
    /// Messages are sent and never waited for at checkpoints.
    None,
    /// Every message sent before a checkpoint is acknowledged before the checkpoint completes.
    AtLeastOnce,
    /// Messages are written in Kafka transactions committed with the job's checkpoints.
    ExactlyOnce,
}

/// Which partition each message goes to (Flink's `sink.partitioner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkPartitioner {
    /// The client's: by the key's hash (murmur2, as Kafka's Java client) when keyed, else
    /// spread by the client.
    Default,
    /// Every message of sink instance `i` to partition `i % partitions` (Flink's
    /// `FlinkFixedPartitioner`).
    Fixed,
    /// Message `n` of the sink to partition `n % partitions`, keys or not.
    RoundRobin,
}

/// The message key: which columns, encoded how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpec {
    pub format: KafkaFormat,
    /// Indices into the sink's columns, in `key.fields` order.
    pub columns: Vec<usize>,
}

/// The parsed options of one Kafka sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaSinkOptions {
    pub topic: String,
    pub value_format: KafkaFormat,
    /// Indices into the sink's columns that make the value, in column order.
    pub value_columns: Vec<usize>,
    pub key: Option<KeySpec>,
    pub delivery: DeliveryGuarantee,
    pub transactional_id_prefix: String,
    pub partitioner: SinkPartitioner,
    /// The `properties.*` options, without the prefix: librdkafka configuration.
    pub properties: BTreeMap<String, String>,
}

/// The default `sink.transactional-id-prefix`.
pub(crate) const DEFAULT_TRANSACTIONAL_ID_PREFIX: &str = "eddy";

impl KafkaSinkOptions {
    /// Parses and checks `options` for a sink with `schema`; `upsert` for `upsert-kafka`.
    pub(crate) fn parse(
        options: &ConnectorOptions,
        schema: &SchemaRef,
        upsert: bool,
    ) -> ConnectorResult<Self> {
        let connector = if upsert { "upsert-kafka" } else { "kafka" };
        let (properties, keys) = split_properties(options)?;
        for key in keys {
            if key == "sink.partitioner" && upsert {
                return Err(invalid(
                    "option 'sink.partitioner' is not an option of connector 'upsert-kafka': \
                     every message of a key must go to the partition of the key's hash, so that \
                     compaction keeps its latest value",
                ));
            }
            if listed(key, OPTIONS) || listed(key, FORMAT_OPTIONS) {
                continue;
            }
            if key.starts_with("scan.") {
                return Err(invalid(format!(
                    "option '{key}' is a source option; a {connector} sink only writes"
                )));
            }
            if listed(key, NOT_YET) {
                return Err(ConnectorError::Unsupported(format!(
                    "option '{key}' of the {connector} sink (not implemented yet)"
                )));
            }
            return Err(invalid(format!(
                "unknown option '{key}' for a {connector} sink; accepted options: {}, properties.*",
                OPTIONS
                    .iter()
                    .chain(FORMAT_OPTIONS)
                    .filter(|o| !(upsert && **o == "sink.partitioner"))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let get = |key: &str| options.get(key).map(String::as_str);

        let topic = get("topic").unwrap_or_default().trim();
        if topic.is_empty() {
            return Err(invalid(format!(
                "option 'topic' is required for a {connector} sink"
            )));
        }
        if topic.contains(';') || topic.contains(',') {
            return Err(ConnectorError::Unsupported(format!(
                "several topics for a {connector} sink ('{topic}'); a sink writes one topic"
            )));
        }
        if properties
            .get("bootstrap.servers")
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(invalid(format!(
                "option 'properties.bootstrap.servers' is required for a {connector} sink \
                 (host:port of the brokers)"
            )));
        }

        let value_format = match (get("format"), get("value.format")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "options 'format' and 'value.format' say the same thing; give one",
                ));
            }
            (None, None) => {
                return Err(invalid(format!(
                    "option 'format' (or 'value.format') is required for a {connector} sink: \
                     'json', 'csv' or 'raw'"
                )));
            }
            (Some(f), None) | (None, Some(f)) => {
                parse_format(options, f, &["value.", ""], "a Kafka sink")?
            }
        };

        let key = match key_format_and_fields(options, "a Kafka sink")? {
            Some((format, fields)) => Some(KeySpec {
                format,
                columns: key_fields(fields, schema, "the sink")?,
            }),
            None if upsert => {
                return Err(invalid(
                    "connector 'upsert-kafka' needs key.fields = 'col;...' (the columns that \
                     identify a row, Flink's PRIMARY KEY) and key.format",
                ));
            }
            None => None,
        };
        if let Some(key) = &key {
            check_raw(&key.format, &key.columns, schema, "key")?;
        }

        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let value_columns = match get("value.fields-include").map(str::to_ascii_uppercase) {
            None => all,
            Some(v) if v == "ALL" => all,
            Some(v) if v == "EXCEPT_KEY" => {
                let Some(key) = &key else {
                    return Err(invalid(
                        "value.fields-include = 'EXCEPT_KEY' needs key.fields",
                    ));
                };
                let rest: Vec<usize> = all
                    .into_iter()
                    .filter(|c| !key.columns.contains(c))
                    .collect();
                if rest.is_empty() {
                    return Err(invalid(
                        "value.fields-include = 'EXCEPT_KEY' leaves no column for the value",
                    ));
                }
                rest
            }
            Some(v) => {
                return Err(invalid(format!(
                    "invalid value '{v}' for option 'value.fields-include'; expected 'ALL' or \
                     'EXCEPT_KEY'"
                )));
            }
        };
        check_raw(&value_format, &value_columns, schema, "value")?;

        let delivery_option = match (get("sink.delivery-guarantee"), get("sink.semantic")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "options 'sink.delivery-guarantee' and 'sink.semantic' (its old name) say \
                     the same thing; give one",
                ));
            }
            (Some(v), None) => Some(("sink.delivery-guarantee", v)),
            (None, Some(v)) => Some(("sink.semantic", v)),
            (None, None) => None,
        };
        let delivery = match delivery_option {
            None => DeliveryGuarantee::AtLeastOnce,
            Some((key, value)) => match value.to_ascii_lowercase().replace('_', "-").as_str() {
                "at-least-once" => DeliveryGuarantee::AtLeastOnce,
                "exactly-once" => DeliveryGuarantee::ExactlyOnce,
                "none" => DeliveryGuarantee::None,
                _ => {
                    return Err(invalid(format!(
                        "invalid value '{value}' for option '{key}'; expected 'at-least-once', \
                         'exactly-once' or 'none'"
                    )));
                }
            },
        };

        let transactional_id_prefix = match get("sink.transactional-id-prefix") {
            None => DEFAULT_TRANSACTIONAL_ID_PREFIX.to_string(),
            Some(p) if p.trim().is_empty() => {
                return Err(invalid(
                    "option 'sink.transactional-id-prefix' must not be empty",
                ));
            }
            Some(p) => p.trim().to_string(),
        };
        if options.contains_key("sink.transactional-id-prefix")
            && delivery != DeliveryGuarantee::ExactlyOnce
        {
            return Err(invalid(
                "option 'sink.transactional-id-prefix' applies only to \
                 sink.delivery-guarantee = 'exactly-once'",
            ));
        }
        if properties.contains_key("transactional.id") {
            return Err(invalid(
                "option 'properties.transactional.id' is chosen by the sink (from \
                 sink.transactional-id-prefix, the sink's name and its instance); use \
                 sink.delivery-guarantee = 'exactly-once'",
            ));
        }

        let partitioner = match get("sink.partitioner").map(str::to_ascii_lowercase) {
            None => SinkPartitioner::Default,
            Some(p) => match p.as_str() {
                "default" => SinkPartitioner::Default,
                "fixed" => SinkPartitioner::Fixed,
                "round-robin" => SinkPartitioner::RoundRobin,
                _ if p.contains('.') => {
                    return Err(ConnectorError::Unsupported(format!(
                        "a custom sink.partitioner class ('{p}'); use 'default', 'fixed' or \
                         'round-robin'"
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "invalid value '{p}' for option 'sink.partitioner'; expected \
                         'default', 'fixed' or 'round-robin'"
                    )));
                }
            },
        };

        Ok(Self {
            topic: topic.to_string(),
            value_format,
            value_columns,
            key,
            delivery,
            transactional_id_prefix,
            partitioner,
            properties,
        })
    }
}

/// `raw` encodes exactly one column.
fn check_raw(
    format: &KafkaFormat,
    columns: &[usize],
    schema: &SchemaRef,
    what: &str,
) -> ConnectorResult<()> {
    if *format == KafkaFormat::Raw && columns.len() != 1 {
        return Err(invalid(format!(
            "format 'raw' for the {what} needs exactly one column, not {} ({})",
            columns.len(),
            columns
                .iter()
                .map(|c| schema.field(*c).name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        let mut o: ConnectorOptions = [
            ("topic", "t"),
            ("properties.bootstrap.servers", "127.0.0.1:9092"),
            ("format", "json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            if v.is_empty() {
                o.remove(*k);
            } else {
                o.insert(k.to_string(), v.to_string());
            }
        }
        o
    }

    fn parse(pairs: &[(&str, &str)]) -> ConnectorResult<KafkaSinkOptions> {
        KafkaSinkOptions::parse(&options(pairs), &schema(), false)
    }

    #[test]
    fn defaults_follow_flink() {
        let parsed = parse(&[("properties.linger.ms", "5")]).unwrap();
        assert_eq!(parsed.topic, "t");
        assert_eq!(parsed.value_format, KafkaFormat::Json);
        assert_eq!(parsed.value_columns, vec![0, 1, 2]);
        assert_eq!(parsed.key, None);
        assert_eq!(parsed.delivery, DeliveryGuarantee::AtLeastOnce);
        assert_eq!(parsed.partitioner, SinkPartitioner::Default);
        assert_eq!(parsed.transactional_id_prefix, "eddy");
        assert_eq!(parsed.properties.get("linger.ms").unwrap(), "5");
    }

    #[test]
    fn keys_csv_options_and_guarantees_are_parsed() {
        let parsed = parse(&[
            ("format", ""),
            ("value.format", "csv"),
            ("value.csv.field-delimiter", ";"),
            ("key.format", "csv"),
            ("key.csv.field-delimiter", "|"),
            ("key.fields", " v ; K "),
            ("value.fields-include", "except_key"),
            ("sink.delivery-guarantee", "exactly-once"),
            ("sink.transactional-id-prefix", "app1"),
            ("sink.partitioner", "round-robin"),
        ])
        .unwrap();
        let KafkaFormat::Csv(value) = &parsed.value_format else {
            panic!("{:?}", parsed.value_format)
        };
        assert_eq!(value.delimiter, b';');
        let key = parsed.key.unwrap();
        assert_eq!(key.columns, vec![2, 0]);
        let KafkaFormat::Csv(key_csv) = &key.format else {
            panic!("{:?}", key.format)
        };
        assert_eq!(key_csv.delimiter, b'|');
        assert_eq!(parsed.value_columns, vec![1]);
        assert_eq!(parsed.delivery, DeliveryGuarantee::ExactlyOnce);
        assert_eq!(parsed.transactional_id_prefix, "app1");
        assert_eq!(parsed.partitioner, SinkPartitioner::RoundRobin);
        assert_eq!(
            parse(&[("sink.semantic", "NONE")]).unwrap().delivery,
            DeliveryGuarantee::None
        );
    }

    #[test]
    fn upsert_kafka_needs_a_key_and_keeps_the_hash_partitioner() {
        let upsert =
            |pairs: &[(&str, &str)]| KafkaSinkOptions::parse(&options(pairs), &schema(), true);
        let error = upsert(&[]).unwrap_err().to_string();
        assert!(error.contains("needs key.fields"), "{error}");
        let parsed = upsert(&[("key.fields", "k"), ("key.format", "raw")]).unwrap();
        assert_eq!(
            parsed.key,
            Some(KeySpec {
                format: KafkaFormat::Raw,
                columns: vec![0]
            })
        );
        let error = upsert(&[
            ("key.fields", "k"),
            ("key.format", "raw"),
            ("sink.partitioner", "fixed"),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, ConnectorError::InvalidOption(m) if m.contains("compaction")),
            "{error:?}"
        );
    }

    #[test]
    fn what_is_not_implemented_is_unsupported_and_names_the_option() {
        for (key, value) in [
            ("sink.parallelism", "2"),
            ("sink.buffer-flush.max-rows", "100"),
            ("key.fields-prefix", "k_"),
            ("json.timestamp-format.standard", "ISO-8601"),
            ("topic-pattern", "t.*"),
            ("format", "avro"),
            ("sink.partitioner", "com.example.MyPartitioner"),
            ("topic", "a;b"),
        ] {
            match parse(&[(key, value)]) {
                Err(ConnectorError::Unsupported(message)) => {
                    assert!(
                        message.contains(key) || message.contains(value),
                        "{message}"
                    )
                }
                other => panic!("{key} = {value}: {other:?}"),
            }
        }
    }

    #[test]
    fn mistakes_are_invalid_options() {
        for (pairs, needle) in [
            (vec![("topic", "")], "'topic' is required"),
            (
                vec![("properties.bootstrap.servers", "")],
                "bootstrap.servers",
            ),
            (
                vec![("format", "")],
                "'format' (or 'value.format') is required",
            ),
            (vec![("value.format", "json")], "say the same thing"),
            (vec![("format", "xml")], "invalid format 'xml'"),
            (vec![("key.fields", "k")], "key.format"),
            (vec![("key.format", "json")], "key.fields"),
            (
                vec![("key.fields", "x"), ("key.format", "json")],
                "no column 'x'",
            ),
            (vec![("key.fields", "k;k"), ("key.format", "json")], "twice"),
            (
                vec![("key.fields", "k;n"), ("key.format", "raw")],
                "exactly one column",
            ),
            (vec![("format", "raw")], "exactly one column"),
            (
                vec![("value.fields-include", "EXCEPT_KEY")],
                "needs key.fields",
            ),
            (
                vec![("sink.delivery-guarantee", "twice")],
                "invalid value 'twice'",
            ),
            (
                vec![("sink.transactional-id-prefix", "p")],
                "applies only to",
            ),
            (
                vec![("sink.partitioner", "random")],
                "invalid value 'random'",
            ),
            (
                vec![("scan.startup.mode", "latest-offset")],
                "source option",
            ),
            (
                vec![("csv.field-delimiter", ";")],
                "applies only to format 'csv'",
            ),
            (
                vec![("properties.transactional.id", "x")],
                "chosen by the sink",
            ),
            (vec![("bogus", "1")], "unknown option 'bogus'"),
        ] {
            match parse(&pairs) {
                Err(ConnectorError::InvalidOption(message)) => {
                    assert!(message.contains(needle), "{pairs:?}: {message}")
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }
}
