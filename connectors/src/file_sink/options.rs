//! The `WITH (...)` options of a file sink and of `COPY ... TO 'file'`, parsed and checked.
//!
//! As for sources, every key is either honoured or an error that lists the accepted ones.

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::basic::{GzipLevel, ZstdLevel};
use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

use super::partition::TimePattern;

/// Options a continuous sink accepts.
const SINK_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "compression",
    "row_group.size",
    "rollover.size",
    "rollover.interval",
    "rollover.inactivity",
    "partition.pattern",
    "partition.time_column",
    "partition.by",
    "header",
];

/// Options `COPY ... TO 'file'` accepts (after the COPY option names are mapped to these).
const COPY_OPTIONS: &[&str] = &["format", "compression", "row_group.size", "header"];

/// The default `rollover.size`: 128 MiB, as Flink's and Arroyo's file sinks.
pub(crate) const DEFAULT_ROLLOVER_SIZE: u64 = 128 * 1024 * 1024;

/// How rows are encoded in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Parquet,
    Csv,
    Json,
}

impl OutputFormat {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" | "json-lines" => Some(Self::Json),
            _ => None,
        }
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Json => "jsonl",
        }
    }
}

/// A Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Snappy,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Some(Self::None),
            "snappy" => Some(Self::Snappy),
            "gzip" => Some(Self::Gzip),
            "lz4" => Some(Self::Lz4),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    pub(crate) fn parquet(self) -> datafusion::parquet::basic::Compression {
        use datafusion::parquet::basic::Compression as C;
        match self {
            Self::None => C::UNCOMPRESSED,
            Self::Snappy => C::SNAPPY,
            Self::Gzip => C::GZIP(GzipLevel::default()),
            Self::Lz4 => C::LZ4_RAW,
            Self::Zstd => C::ZSTD(ZstdLevel::default()),
        }
    }
}

/// The checked options of a file sink (or of one `COPY ... TO 'file'`).
#[derive(Debug, Clone)]
pub(crate) struct SinkOptions {
    /// The folder a sink writes into, or the file COPY writes.
    pub path: String,
    pub format: OutputFormat,
    pub compression: Compression,
    pub row_group_size: Option<usize>,
    /// CSV only: a header line in every file.
    pub header: bool,
    pub rollover_size: u64,
    pub rollover_interval: Option<Duration>,
    pub rollover_inactivity: Option<Duration>,
    /// Event-time partitions: the folder pattern and the column it formats.
    pub time_partition: Option<(TimePattern, usize)>,
    /// Hive-style partition columns, in folder order.
    pub partition_by: Vec<usize>,
}

impl SinkOptions {
    /// Parses the options of a continuous sink against the rows it receives.
    pub(crate) fn parse_sink(
        options: &ConnectorOptions,
        schema: &SchemaRef,
        time_columns: &[usize],
        default_format: OutputFormat,
    ) -> ConnectorResult<Self> {
        check_keys(options, SINK_OPTIONS, "a file sink")?;
        let path = options
            .get("path")
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| invalid("option 'path' is required: the folder to write files into"))?
            .clone();
        let mut parsed = Self::common(options, path, default_format)?;
        if let Some(size) = options.get("rollover.size") {
            parsed.rollover_size = parse_size("rollover.size", size)?;
        }
        parsed.rollover_interval = options
            .get("rollover.interval")
            .map(|v| parse_duration("rollover.interval", v))
            .transpose()?;
        parsed.rollover_inactivity = options
            .get("rollover.inactivity")
            .map(|v| parse_duration("rollover.inactivity", v))
            .transpose()?;
        if let Some(pattern) = options.get("partition.pattern") {
            let pattern = TimePattern::parse(pattern)?;
            let column = match options.get("partition.time_column") {
                Some(name) => schema.index_of(name).map_err(|_| {
                    invalid(format!(
                        "partition.time_column '{name}' is not a column of the sink's rows"
                    ))
                })?,
                None => *time_columns.first().ok_or_else(|| {
                    invalid(
                        "partition.pattern needs an event-time column: the rows have none \
                         (a window's window_end, a source's WATERMARK column); name one with \
                         partition.time_column",
                    )
                })?,
            };
            if !matches!(schema.field(column).data_type(), DataType::Timestamp(_, _)) {
                return Err(invalid(format!(
                    "partition.time_column '{}' must be a TIMESTAMP, not {}",
                    schema.field(column).name(),
                    schema.field(column).data_type()
                )));
            }
            parsed.time_partition = Some((pattern, column));
        } else if options.contains_key("partition.time_column") {
            return Err(invalid(
                "partition.time_column needs partition.pattern (e.g. 'dt=%Y-%m-%d/hour=%H')",
            ));
        }
        if let Some(columns) = options.get("partition.by") {
            for name in columns.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let index = schema.index_of(name).map_err(|_| {
                    invalid(format!(
                        "partition.by column '{name}' is not a column of the sink's rows"
                    ))
                })?;
                if parsed.partition_by.contains(&index) {
                    return Err(invalid(format!("partition.by names '{name}' twice")));
                }
                parsed.partition_by.push(index);
            }
        }
        Ok(parsed)
    }

    /// Parses the options of `COPY ... TO path`.
    pub(crate) fn parse_copy(
        options: &ConnectorOptions,
        path: &str,
        default_format: OutputFormat,
    ) -> ConnectorResult<Self> {
        check_keys(options, COPY_OPTIONS, "COPY TO a file")?;
        Self::common(options, path.to_string(), default_format)
    }

    fn common(
        options: &ConnectorOptions,
        path: String,
        default_format: OutputFormat,
    ) -> ConnectorResult<Self> {
        let format = match options.get("format") {
            Some(f) => OutputFormat::from_name(f).ok_or_else(|| {
                invalid(format!("unknown format '{f}'; formats: parquet, csv, json"))
            })?,
            None => default_format,
        };
        let compression = match options.get("compression") {
            Some(c) => Compression::from_name(c).ok_or_else(|| {
                invalid(format!(
                    "unknown compression '{c}'; codecs: zstd, snappy, gzip, lz4, none"
                ))
            })?,
            None if format == OutputFormat::Parquet => Compression::Zstd,
            None => Compression::None,
        };
        if format != OutputFormat::Parquet && compression != Compression::None {
            return Err(ConnectorError::Unsupported(
                "compressed CSV or JSON output (compression applies to Parquet only)".to_string(),
            ));
        }
        let row_group_size = match options.get("row_group.size") {
            Some(v) => {
                if format != OutputFormat::Parquet {
                    return Err(invalid("row_group.size applies to Parquet only"));
                }
                Some(
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "row_group.size must be a positive number of rows, not '{v}'"
                            ))
                        })?,
                )
            }
            None => None,
        };
        let header = match options.get("header") {
            Some(v) => {
                if format != OutputFormat::Csv {
                    return Err(invalid("header applies to CSV only"));
                }
                match v.to_ascii_lowercase().as_str() {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    _ => return Err(invalid(format!("header must be true or false, not '{v}'"))),
                }
            }
            None => false,
        };
        Ok(Self {
            path,
            format,
            compression,
            row_group_size,
            header,
            rollover_size: DEFAULT_ROLLOVER_SIZE,
            rollover_interval: None,
            rollover_inactivity: None,
            time_partition: None,
            partition_by: Vec::new(),
        })
    }
}

fn check_keys(options: &ConnectorOptions, accepted: &[&str], what: &str) -> ConnectorResult<()> {
    for key in options.keys() {
        if !accepted.contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown option '{key}' for {what}; accepted options: {}",
                accepted.join(", ")
            )));
        }
    }
    Ok(())
}

/// `'128 MB'` as `(128, "mb")`: a whole number and a lower-cased unit (empty if none).
fn number_and_unit(value: &str) -> Option<(u64, String)> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

/// A size such as `'128MB'`, `'64 MiB'`, `'1gb'` or `'1000000'` (bytes). As in Flink, `KB`,
/// `MB` and `GB` are powers of 1024.
pub(crate) fn parse_size(key: &str, value: &str) -> ConnectorResult<u64> {
    let bad = || {
        invalid(format!(
            "{key} must be a size such as '128MB', '64KB' or a number of bytes, not '{value}'"
        ))
    };
    let (number, unit) = number_and_unit(value).ok_or_else(bad)?;
    let factor: u64 = match unit.as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(bad)
}

/// A duration such as `'10 minutes'`, `'30s'`, `'1 hour'` or `'500 ms'`.
pub(crate) fn parse_duration(key: &str, value: &str) -> ConnectorResult<Duration> {
    let bad = || {
        invalid(format!(
            "{key} must be a duration such as '30 seconds', '10 min' or '1 hour', not '{value}'"
        ))
    };
    let (number, unit) = number_and_unit(value).ok_or_else(bad)?;
    let millis: u64 = match unit.as_str() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(millis)
        .filter(|n| *n > 0)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

pub(crate) fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("k", "128MB").unwrap(), 128 << 20);
        assert_eq!(parse_size("k", "64 kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("k", "1000").unwrap(), 1000);
        assert!(parse_size("k", "12 parsecs").is_err());
        assert!(parse_size("k", "0").is_err());
        assert_eq!(
            parse_duration("k", "10 minutes").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(parse_duration("k", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("k", "250 ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_duration("k", "soon").is_err());
    }
}
