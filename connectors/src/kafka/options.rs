//! The `WITH (...)` options of a Kafka source (Flink's names), parsed and checked.
//!
//! Every key is one Eddy honours, a Flink option Eddy does not implement yet (refused with
//! [`ConnectorError::Unsupported`], SQLSTATE 0A000, naming it), a `properties.*` key handed to
//! the client as it is, or an error listing the accepted keys.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult, SourceSplit};

use super::format_options::{
    FORMAT_OPTIONS, key_fields, key_format_and_fields, listed, parse_format, split_properties,
};
use crate::file::options::CsvOptions;

use crate::file_sink::options::parse_duration;

/// Keys Eddy honours (besides `properties.*` and [`FORMAT_OPTIONS`]).
const OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "format",
    "scan.startup.mode",
    "scan.startup.specific-offsets",
    "scan.startup.timestamp-millis",
    "scan.bounded.mode",
    "scan.bounded.specific-offsets",
    "scan.bounded.timestamp-millis",
    "scan.watermark.idle-timeout",
    "scan.topic-partition-discovery.interval",
    "key.fields-prefix",
];

/// Flink options (or prefixes, ending in `.`) this slice of the connector does not implement.
const NOT_YET: &[&str] = &[
    "topic-pattern",
    "scan.parallelism",
    "json.",
    "csv.",
    "raw.",
    "sink.",
];

/// How each message's value becomes a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KafkaFormat {
    /// One JSON object per message; fields matched to columns by name.
    Json,
    /// One CSV record per message; fields matched to columns by position.
    Csv(CsvOptions),
    /// The whole value as the only column (VARCHAR or BYTEA).
    Raw,
}

/// The columns read from the message keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyOptions {
    pub format: KafkaFormat,
    /// `key.fields`, as written (`'a;b'`): resolved against the declared columns by
    /// [`KeyOptions::columns`].
    pub fields: String,
    /// `key.fields-prefix`: the declared key columns are named with it, the key's fields
    /// without it (so that `k_id` from the key and `id` from the value can both be columns).
    pub prefix: Option<String>,
}

impl KeyOptions {
    /// The declared columns (of `schema`) the key holds, in `key.fields` order.
    pub(crate) fn columns(&self, schema: &SchemaRef) -> ConnectorResult<Vec<usize>> {
        key_fields(&self.fields, schema, "the source")
    }

    /// The schema the key is decoded with: `declared` (the key columns, in key order) with
    /// `key.fields-prefix` taken off their names.
    pub(crate) fn decoded_schema(&self, declared: &SchemaRef) -> SchemaRef {
        let Some(prefix) = &self.prefix else {
            return Arc::clone(declared);
        };
        let fields: Vec<Field> = declared
            .fields()
            .iter()
            .map(|f| {
                let name = f.name().strip_prefix(prefix.as_str()).unwrap_or(f.name());
                f.as_ref().clone().with_name(name)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// Where each assigned partition starts when there is no checkpoint to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartupMode {
    Earliest,
    Latest,
    /// Offsets per partition; partitions not listed start at the earliest offset.
    Specific(BTreeMap<i32, i64>),
    /// The offsets committed to the consumer group (`properties.group.id`); a partition
    /// without one starts where `properties.auto.offset.reset` says, or fails the reader.
    GroupOffsets {
        reset: Option<Reset>,
    },
    /// From the first message of each partition stamped at or after this time (epoch
    /// milliseconds; `scan.startup.timestamp-millis`), as Kafka's offsets-for-times finds it.
    Timestamp(i64),
}

/// Where a bounded read of each partition ends (`scan.bounded.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// At the end of the log as the reader's first fetch reports it (`latest-offset`).
    Latest,
    /// Before these offsets (`specific-offsets`); a partition not listed is not read.
    Specific(BTreeMap<i32, i64>),
    /// Before the offsets committed to the consumer group (`group-offsets`); a partition
    /// without one is not read.
    GroupOffsets,
    /// Before the first message of each partition stamped at or after this time (epoch
    /// milliseconds; `scan.bounded.timestamp-millis`), and at the latest at the end of the
    /// log as the first fetch reports it.
    Timestamp(i64),
}

/// `properties.auto.offset.reset`: where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    Earliest,
    Latest,
}

/// How often a reader looks for new partitions of its topic by default (Flink's default).
pub(crate) const DEFAULT_DISCOVERY: Duration = Duration::from_secs(5 * 60);

/// The parsed options of one Kafka source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaOptions {
    pub topic: String,
    /// The format of the message values (`format` or `value.format`).
    pub format: KafkaFormat,
    /// `key.format` and `key.fields`: columns decoded from the message keys.
    pub key: Option<KeyOptions>,
    /// `value.fields-include = 'EXCEPT_KEY'`: the values hold only the columns that are
    /// not key fields (with `ALL`, the default, they hold every column, and the key fields
    /// are read from the value, as Flink does).
    pub except_key: bool,
    pub startup: StartupMode,
    /// Whether the source ends (`scan.bounded.mode` other than `unbounded`).
    pub bounded: bool,
    /// Where a bounded read of each partition ends.
    pub stop: StopMode,
    /// `scan.watermark.idle-timeout`: a partition without messages for this long stops
    /// holding the watermark back.
    pub idle_timeout: Option<Duration>,
    /// `scan.topic-partition-discovery.interval`: how often new partitions are looked for
    /// (`None`: never; always `None` for a bounded read).
    pub discovery: Option<Duration>,
    /// Whether `properties.group.id` was given: offsets of completed checkpoints are then
    /// committed to that group.
    pub commit_to_group: bool,
    /// The `properties.*` options, without the prefix: librdkafka configuration.
    pub properties: BTreeMap<String, String>,
    /// `upsert-kafka`: each message upserts the row its key identifies, or deletes it (a
    /// message without a value); the key fields always come from the key.
    pub upsert: bool,
}

impl KafkaOptions {
    /// Parses and checks `options`.
    pub(crate) fn parse(options: &ConnectorOptions) -> ConnectorResult<Self> {
        let (properties, keys) = split_properties(options)?;
        for key in keys {
            if listed(key, OPTIONS) || listed(key, FORMAT_OPTIONS) {
                continue;
            }
            if listed(key, NOT_YET) {
                return Err(ConnectorError::Unsupported(format!(
                    "option '{key}' of connector 'kafka' (not implemented yet)"
                )));
            }
            return Err(invalid(format!(
                "unknown option '{key}' for connector 'kafka'; accepted options: {}, properties.*",
                OPTIONS
                    .iter()
                    .chain(FORMAT_OPTIONS)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let get = |key: &str| options.get(key).map(String::as_str);

        let topic = get("topic").unwrap_or_default().trim();
        if topic.is_empty() {
            return Err(invalid("option 'topic' is required for connector 'kafka'"));
        }
        if properties
            .get("bootstrap.servers")
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(invalid(
                "option 'properties.bootstrap.servers' is required for connector 'kafka' \
                 (host:port of the brokers)",
            ));
        }

        let format = match (get("format"), get("value.format")) {
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
                return Err(invalid(format!(
                    "options 'format' ('{a}') and 'value.format' ('{b}') disagree; give one"
                )));
            }
            (Some(f), _) | (None, Some(f)) => {
                parse_format(options, f, &["value.", ""], "connector 'kafka'")?
            }
            (None, None) => {
                return Err(invalid(
                    "option 'format' is required for connector 'kafka': 'json', 'csv' or 'raw'",
                ));
            }
        };
        let prefix = get("key.fields-prefix")
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let key = key_format_and_fields(options, "connector 'kafka'")?.map(|(format, fields)| {
            KeyOptions {
                format,
                fields: fields.to_string(),
                prefix: prefix.clone(),
            }
        });
        if let Some(prefix) = &prefix {
            let Some(key) = &key else {
                return Err(invalid(
                    "option 'key.fields-prefix' needs key.format and key.fields",
                ));
            };
            if let Some(field) = key
                .fields
                .split(';')
                .map(str::trim)
                .find(|f| !f.starts_with(prefix.as_str()))
            {
                return Err(invalid(format!(
                    "option 'key.fields': '{field}' does not start with key.fields-prefix \
                     '{prefix}' (the key columns are declared with the prefix)"
                )));
            }
        }
        let except_key = match get("value.fields-include").map(str::to_ascii_uppercase) {
            None => false,
            Some(v) if v == "ALL" => false,
            Some(v) if v == "EXCEPT_KEY" => {
                if key.is_none() {
                    return Err(invalid(
                        "value.fields-include = 'EXCEPT_KEY' needs key.format and key.fields",
                    ));
                }
                true
            }
            Some(v) => {
                return Err(invalid(format!(
                    "invalid value '{v}' for option 'value.fields-include'; expected 'ALL' or \
                     'EXCEPT_KEY'"
                )));
            }
        };

        if prefix.is_some() && !except_key {
            return Err(invalid(
                "option 'key.fields-prefix' needs value.fields-include = 'EXCEPT_KEY'",
            ));
        }

        let specific = get("scan.startup.specific-offsets");
        let startup = match get("scan.startup.mode").map(|m| m.to_ascii_lowercase()) {
            None => StartupMode::Earliest,
            Some(mode) => match mode.as_str() {
                "earliest-offset" => StartupMode::Earliest,
                "latest-offset" => StartupMode::Latest,
                "specific-offsets" => {
                    let Some(text) = specific else {
                        return Err(invalid(
                            "scan.startup.mode = 'specific-offsets' needs \
                             scan.startup.specific-offsets = 'partition:0,offset:42;...'",
                        ));
                    };
                    StartupMode::Specific(parse_offsets(text).map_err(|e| {
                        invalid(format!("option 'scan.startup.specific-offsets': {e}"))
                    })?)
                }
                "group-offsets" => {
                    if !properties.contains_key("group.id") {
                        return Err(invalid(
                            "scan.startup.mode = 'group-offsets' needs properties.group.id",
                        ));
                    }
                    let reset = match properties
                        .get("auto.offset.reset")
                        .map(|r| r.to_ascii_lowercase())
                        .as_deref()
                    {
                        None | Some("none") | Some("error") => None,
                        Some("earliest" | "smallest" | "beginning") => Some(Reset::Earliest),
                        Some("latest" | "largest" | "end") => Some(Reset::Latest),
                        Some(other) => {
                            return Err(invalid(format!(
                                "invalid value '{other}' for properties.auto.offset.reset; \
                                 expected 'earliest', 'latest' or 'none'"
                            )));
                        }
                    };
                    StartupMode::GroupOffsets { reset }
                }
                "timestamp" => StartupMode::Timestamp(timestamp_millis(
                    get("scan.startup.timestamp-millis"),
                    "scan.startup",
                )?),
                _ => {
                    return Err(invalid(format!(
                        "invalid value '{mode}' for option 'scan.startup.mode'; expected \
                         'earliest-offset', 'latest-offset', 'group-offsets', 'timestamp' or \
                         'specific-offsets'"
                    )));
                }
            },
        };
        if get("scan.startup.timestamp-millis").is_some()
            && !matches!(startup, StartupMode::Timestamp(_))
        {
            return Err(invalid(
                "option 'scan.startup.timestamp-millis' needs scan.startup.mode = 'timestamp'",
            ));
        }
        if specific.is_some() && !matches!(startup, StartupMode::Specific(_)) {
            return Err(invalid(
                "option 'scan.startup.specific-offsets' needs scan.startup.mode = 'specific-offsets'",
            ));
        }

        let stop_offsets = get("scan.bounded.specific-offsets");
        let stop = match get("scan.bounded.mode").map(|m| m.to_ascii_lowercase()) {
            None => None,
            Some(mode) => match mode.as_str() {
                "unbounded" => None,
                "latest-offset" => Some(StopMode::Latest),
                "specific-offsets" => {
                    let Some(text) = stop_offsets else {
                        return Err(invalid(
                            "scan.bounded.mode = 'specific-offsets' needs \
                             scan.bounded.specific-offsets = 'partition:0,offset:42;...'",
                        ));
                    };
                    Some(StopMode::Specific(parse_offsets(text).map_err(|e| {
                        invalid(format!("option 'scan.bounded.specific-offsets': {e}"))
                    })?))
                }
                "group-offsets" => {
                    if !properties.contains_key("group.id") {
                        return Err(invalid(
                            "scan.bounded.mode = 'group-offsets' needs properties.group.id",
                        ));
                    }
                    Some(StopMode::GroupOffsets)
                }
                "timestamp" => Some(StopMode::Timestamp(timestamp_millis(
                    get("scan.bounded.timestamp-millis"),
                    "scan.bounded",
                )?)),
                _ => {
                    return Err(invalid(format!(
                        "invalid value '{mode}' for option 'scan.bounded.mode'; expected \
                         'unbounded', 'latest-offset', 'specific-offsets', 'group-offsets' or \
                         'timestamp'"
                    )));
                }
            },
        };
        if get("scan.bounded.timestamp-millis").is_some()
            && !matches!(stop, Some(StopMode::Timestamp(_)))
        {
            return Err(invalid(
                "option 'scan.bounded.timestamp-millis' needs scan.bounded.mode = 'timestamp'",
            ));
        }
        if stop_offsets.is_some() && !matches!(stop, Some(StopMode::Specific(_))) {
            return Err(invalid(
                "option 'scan.bounded.specific-offsets' needs scan.bounded.mode = 'specific-offsets'",
            ));
        }
        let bounded = stop.is_some();
        let stop = stop.unwrap_or(StopMode::Latest);

        let idle_timeout = match get("scan.watermark.idle-timeout") {
            None => None,
            Some(v) if v.trim() == "0" => None,
            Some(v) => Some(parse_duration("scan.watermark.idle-timeout", v)?),
        };
        let discovery = match get("scan.topic-partition-discovery.interval") {
            _ if bounded => None,
            None => Some(DEFAULT_DISCOVERY),
            Some(v) if v.trim() == "0" => None,
            Some(v) => Some(parse_duration(
                "scan.topic-partition-discovery.interval",
                v,
            )?),
        };
        let commit_to_group = properties.contains_key("group.id");

        Ok(Self {
            topic: topic.to_string(),
            format,
            key,
            except_key,
            startup,
            bounded,
            stop,
            idle_timeout,
            discovery,
            commit_to_group,
            properties,
            upsert: false,
        })
    }

    /// Parses and checks the options of an `upsert-kafka` source: a `kafka` source's, but
    /// read from the earliest offset always (a compacted topic's every key), with
    /// `key.format` and `value.format` required, and `key.fields` the primary key (the
    /// engine sets it).
    pub(crate) fn parse_upsert(options: &ConnectorOptions) -> ConnectorResult<Self> {
        const CONNECTOR: &str = "connector 'upsert-kafka'";
        for key in [
            "format",
            "scan.startup.mode",
            "scan.startup.specific-offsets",
        ] {
            if options.contains_key(key) {
                return Err(invalid(format!(
                    "option '{key}' is not an option of {CONNECTOR}: it reads the topic from \
                     its earliest offset, keys with key.format and values with value.format"
                )));
            }
        }
        for key in ["key.format", "value.format"] {
            if !options.contains_key(key) {
                return Err(invalid(format!(
                    "{CONNECTOR} needs option '{key}' ('json', 'csv' or 'raw')"
                )));
            }
        }
        let mut parsed = Self::parse(options).map_err(|e| match e {
            ConnectorError::InvalidOption(m) => invalid(m.replace("connector 'kafka'", CONNECTOR)),
            ConnectorError::Unsupported(m) => {
                ConnectorError::Unsupported(m.replace("connector 'kafka'", CONNECTOR))
            }
            other => other,
        })?;
        if !parsed.except_key && !matches!(parsed.format, KafkaFormat::Json) {
            // The key fields are read from the key; a CSV or raw value that holds them too
            // would have to be split by position.
            return Err(ConnectorError::Unsupported(format!(
                "value.fields-include = 'ALL' with a value.format other than 'json' for \
                 {CONNECTOR} (declare value.fields-include = 'EXCEPT_KEY': the values hold the \
                 columns that are not key fields)"
            )));
        }
        parsed.upsert = true;
        Ok(parsed)
    }
}

/// Parses Flink's offsets syntax, `partition:0,offset:42;partition:1,offset:300` (a trailing
/// `;` and spaces around the parts are allowed).
pub(crate) fn parse_offsets(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut offsets = BTreeMap::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let mut partition = None;
        let mut offset = None;
        for part in entry.split(',') {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| format!("expected 'partition:N,offset:M', found '{entry}'"))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "partition" if partition.is_none() => {
                    partition = Some(value.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(
                        || format!("invalid partition '{value}' (a number from 0) in '{entry}'"),
                    )?);
                }
                "offset" if offset.is_none() => {
                    offset = Some(value.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(
                        || format!("invalid offset '{value}' (a number from 0) in '{entry}'"),
                    )?);
                }
                _ => return Err(format!("expected 'partition:N,offset:M', found '{entry}'")),
            }
        }
        let (Some(partition), Some(offset)) = (partition, offset) else {
            return Err(format!("expected 'partition:N,offset:M', found '{entry}'"));
        };
        if offsets.insert(partition, offset).is_some() {
            return Err(format!("partition {partition} is listed twice"));
        }
    }
    if offsets.is_empty() {
        return Err("no 'partition:N,offset:M' entry".to_string());
    }
    Ok(offsets)
}

/// Writes offsets in the syntax [`parse_offsets`] reads.
pub(crate) fn format_offsets(offsets: &BTreeMap<i32, i64>) -> String {
    offsets
        .iter()
        .map(|(partition, offset)| format!("partition:{partition},offset:{offset}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Whether reader `split` reads `partition`: partitions are dealt round-robin by number, a
/// pure function of the partition and the number of readers (so several processes could
/// share a topic the same way).
pub(crate) fn assigned(partition: i32, split: SourceSplit) -> bool {
    split.count > 0 && (partition as usize) % split.count == split.index
}

/// `{prefix}.timestamp-millis`, required by `{prefix}.mode = 'timestamp'`: epoch milliseconds.
fn timestamp_millis(value: Option<&str>, prefix: &str) -> ConnectorResult<i64> {
    let Some(value) = value else {
        return Err(invalid(format!(
            "{prefix}.mode = 'timestamp' needs {prefix}.timestamp-millis (milliseconds since \
             1970-01-01 UTC)"
        )));
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|t| *t >= 0)
        .ok_or_else(|| {
            invalid(format!(
                "invalid value '{value}' for option '{prefix}.timestamp-millis'; expected \
             milliseconds since 1970-01-01 UTC"
            ))
        })
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        let mut o: ConnectorOptions = [
            ("connector", "kafka"),
            ("topic", "t"),
            ("properties.bootstrap.servers", "127.0.0.1:9092"),
            ("format", "json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            o.insert(k.to_string(), v.to_string());
        }
        o
    }

    #[test]
    fn flink_offsets_syntax_round_trips() {
        let parsed = parse_offsets("partition:0,offset:42;partition:1,offset:300").unwrap();
        assert_eq!(parsed, BTreeMap::from([(0, 42), (1, 300)]));
        assert_eq!(
            format_offsets(&parsed),
            "partition:0,offset:42;partition:1,offset:300"
        );
        assert_eq!(
            parse_offsets(" partition : 2 , offset : 0 ; ").unwrap(),
            BTreeMap::from([(2, 0)])
        );
        assert_eq!(
            parse_offsets("offset:7,partition:3").unwrap(),
            BTreeMap::from([(3, 7)])
        );
    }

    #[test]
    fn malformed_offsets_are_refused_with_the_entry() {
        for (text, needle) in [
            ("", "no 'partition:N,offset:M'"),
            ("partition:0", "found 'partition:0'"),
            ("partition:0,offset:-1", "invalid offset '-1'"),
            ("partition:x,offset:1", "invalid partition 'x'"),
            ("partition:0,offset:1;partition:0,offset:2", "listed twice"),
            ("partition:0,offset:1,offset:2", "expected"),
            ("p:0,o:1", "expected"),
        ] {
            let error = parse_offsets(text).unwrap_err();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn partitions_are_dealt_round_robin_over_readers() {
        let readers = 3;
        for partition in 0..10 {
            let owners: Vec<usize> = (0..readers)
                .filter(|&index| {
                    assigned(
                        partition,
                        SourceSplit {
                            index,
                            count: readers,
                        },
                    )
                })
                .collect();
            assert_eq!(owners, vec![partition as usize % readers]);
        }
        assert!((0..5).all(|p| assigned(p, SourceSplit::WHOLE)));
    }

    #[test]
    fn options_are_parsed() {
        let parsed = KafkaOptions::parse(&options(&[
            ("scan.startup.mode", "specific-offsets"),
            ("scan.startup.specific-offsets", "partition:1,offset:5"),
            ("scan.bounded.mode", "latest-offset"),
            ("properties.group.id", "g"),
        ]))
        .unwrap();
        assert_eq!(parsed.topic, "t");
        assert_eq!(parsed.format, KafkaFormat::Json);
        assert_eq!(
            parsed.startup,
            StartupMode::Specific(BTreeMap::from([(1, 5)]))
        );
        assert!(parsed.bounded);
        assert_eq!(parsed.properties["group.id"], "g");
        assert_eq!(parsed.properties["bootstrap.servers"], "127.0.0.1:9092");
        assert!(parsed.commit_to_group);
        assert_eq!(parsed.discovery, None, "no discovery in a bounded read");
        assert_eq!(parsed.idle_timeout, None);

        let parsed = KafkaOptions::parse(&options(&[
            ("scan.startup.mode", "group-offsets"),
            ("properties.group.id", "g"),
            ("properties.auto.offset.reset", "earliest"),
            ("scan.watermark.idle-timeout", "5 s"),
            ("scan.topic-partition-discovery.interval", "1s"),
        ]))
        .unwrap();
        assert_eq!(
            parsed.startup,
            StartupMode::GroupOffsets {
                reset: Some(Reset::Earliest)
            }
        );
        assert_eq!(parsed.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(parsed.discovery, Some(Duration::from_secs(1)));
        let parsed = KafkaOptions::parse(&options(&[])).unwrap();
        assert_eq!(parsed.discovery, Some(DEFAULT_DISCOVERY));
        assert!(!parsed.commit_to_group);
    }

    #[test]
    fn options_not_implemented_yet_are_refused_by_name() {
        for (key, value) in [("json.ignore-parse-errors", "true")] {
            match KafkaOptions::parse(&options(&[(key, value)])) {
                Err(ConnectorError::Unsupported(message)) => {
                    assert!(
                        message.contains(key) || message.contains(value),
                        "{message}"
                    )
                }
                other => panic!("{key} = {value}: {other:?}"),
            }
        }
        assert!(matches!(
            KafkaOptions::parse(&options(&[("format", "avro")])),
            Err(ConnectorError::Unsupported(_))
        ));
    }

    #[test]
    fn mistakes_are_invalid_options() {
        for pairs in [
            vec![("topic", "")],
            vec![("properties.bootstrap.servers", " ")],
            vec![("format", "xml")],
            vec![("bogus", "1")],
            vec![("scan.startup.mode", "specific-offsets")],
            vec![("scan.startup.specific-offsets", "partition:0,offset:1")],
            vec![("csv.field-delimiter", ";")],
            vec![("scan.startup.mode", "group-offsets")],
            vec![("scan.bounded.mode", "group-offsets")],
            vec![("scan.bounded.mode", "specific-offsets")],
            vec![("scan.bounded.specific-offsets", "partition:0,offset:1")],
            vec![("scan.watermark.idle-timeout", "soon")],
        ] {
            assert!(
                matches!(
                    KafkaOptions::parse(&options(&pairs)),
                    Err(ConnectorError::InvalidOption(_))
                ),
                "{pairs:?}"
            );
        }
    }
}
