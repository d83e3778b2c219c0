//! The `WITH (...)` options of a `datagen` source (Flink's names), parsed and checked against
//! the declared columns.

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

use crate::file_sink::options::parse_duration;

/// Flink's default rate.
const DEFAULT_ROWS_PER_SECOND: u64 = 10_000;

/// Flink's default length of a random string or byte string.
const DEFAULT_LENGTH: usize = 100;

/// How one column's values are made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldKind {
    /// Uniform between `min` and `max` (numbers), `length` characters or bytes (strings), up
    /// to `max_past` before the wall clock (timestamps and dates), or either (booleans).
    Random {
        min: Option<f64>,
        max: Option<f64>,
        length: usize,
        max_past: Duration,
    },
    /// `start`, `start + 1`, ... `end`: row `n` holds `start + n`; the source ends after `end`.
    Sequence { start: i64, end: i64 },
}

/// One column's generator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldSpec {
    pub kind: FieldKind,
    /// The share of rows (0 to 1) whose value is NULL.
    pub null_rate: f64,
}

/// The parsed options of one `datagen` source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DatagenOptions {
    /// Rows per second of the whole source (`None`: as fast as possible, Eddy's `0`).
    pub rows_per_second: Option<u64>,
    /// `number-of-rows`: the source ends after this many rows.
    pub number_of_rows: Option<u64>,
    /// One generator per declared column, in column order.
    pub fields: Vec<FieldSpec>,
    /// `seed` (an Eddy option): the same seed gives the same random values.
    pub seed: u64,
}

impl DatagenOptions {
    /// Parses `options` for a source with the columns of `schema`.
    pub(crate) fn parse(options: &ConnectorOptions, schema: &SchemaRef) -> ConnectorResult<Self> {
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().to_ascii_lowercase())
            .collect();
        for key in options.keys() {
            let known = matches!(
                key.as_str(),
                "connector" | "rows-per-second" | "number-of-rows" | "seed"
            );
            if known {
                continue;
            }
            let Some(rest) = key.strip_prefix("fields.") else {
                return Err(invalid(format!(
                    "unknown option '{key}' for connector 'datagen'; accepted options: \
                     rows-per-second, number-of-rows, seed, fields.<column>.kind, .min, .max, \
                     .length, .start, .end, .max-past, .null-rate"
                )));
            };
            let (column, option) = rest.rsplit_once('.').unwrap_or((rest, ""));
            if !names.contains(&column.to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "option '{key}': the source has no column '{column}'"
                )));
            }
            if !matches!(
                option,
                "kind" | "min" | "max" | "length" | "start" | "end" | "max-past" | "null-rate"
            ) {
                if option == "var-len" {
                    return Err(ConnectorError::Unsupported(format!(
                        "option '{key}' of connector 'datagen' (not implemented yet)"
                    )));
                }
                return Err(invalid(format!(
                    "unknown option '{key}'; a field takes kind, min, max, length, start, end, \
                     max-past and null-rate"
                )));
            }
        }
        let get = |key: &str| options.get(key).map(String::as_str);
        let rows_per_second = match get("rows-per-second") {
            None => Some(DEFAULT_ROWS_PER_SECOND),
            Some(v) => match number::<u64>("rows-per-second", v)? {
                0 => None,
                n => Some(n),
            },
        };
        let number_of_rows = get("number-of-rows")
            .map(|v| number::<u64>("number-of-rows", v))
            .transpose()?;
        let seed = get("seed")
            .map(|v| number::<u64>("seed", v))
            .transpose()?
            .unwrap_or(0);
        let mut fields = Vec::with_capacity(names.len());
        for (field, name) in schema.fields().iter().zip(&names) {
            let option = |suffix: &str| {
                options
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&format!("fields.{name}.{suffix}")))
                    .map(|(k, v)| (k.clone(), v.clone()))
            };
            let data_type = field.data_type();
            check_type(field.name(), data_type)?;
            let kind = match option("kind")
                .map(|(_, v)| v.to_ascii_lowercase())
                .as_deref()
            {
                None | Some("random") => {
                    if let Some((key, _)) = option("start").or_else(|| option("end")) {
                        return Err(invalid(format!(
                            "option '{key}' needs fields.{name}.kind = 'sequence'"
                        )));
                    }
                    let bound = |suffix: &str| -> ConnectorResult<Option<f64>> {
                        option(suffix)
                            .map(|(key, v)| number::<f64>(&key, &v))
                            .transpose()
                    };
                    let (min, max) = (bound("min")?, bound("max")?);
                    if let (Some(min), Some(max)) = (min, max)
                        && min > max
                    {
                        return Err(invalid(format!(
                            "fields.{name}.min ({min}) is above fields.{name}.max ({max})"
                        )));
                    }
                    let length = option("length")
                        .map(|(key, v)| number::<usize>(&key, &v))
                        .transpose()?
                        .unwrap_or(DEFAULT_LENGTH);
                    let max_past = option("max-past")
                        .map(|(key, v)| parse_duration(&key, &v))
                        .transpose()?
                        .unwrap_or(Duration::ZERO);
                    FieldKind::Random {
                        min,
                        max,
                        length,
                        max_past,
                    }
                }
                Some("sequence") => {
                    if !(data_type.is_integer() || is_text(data_type)) {
                        return Err(invalid(format!(
                            "fields.{name}.kind = 'sequence' needs an integer or string \
                             column, not {data_type}"
                        )));
                    }
                    let bound = |suffix: &str| -> ConnectorResult<i64> {
                        let (key, v) = option(suffix).ok_or_else(|| {
                            invalid(format!(
                                "fields.{name}.kind = 'sequence' needs fields.{name}.{suffix}"
                            ))
                        })?;
                        number::<i64>(&key, &v)
                    };
                    let (start, end) = (bound("start")?, bound("end")?);
                    if start > end {
                        return Err(invalid(format!(
                            "fields.{name}.start ({start}) is above fields.{name}.end ({end})"
                        )));
                    }
                    FieldKind::Sequence { start, end }
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "invalid value '{other}' for option 'fields.{name}.kind'; expected \
                         'random' or 'sequence'"
                    )));
                }
            };
            let null_rate = option("null-rate")
                .map(|(key, v)| number::<f64>(&key, &v))
                .transpose()?
                .unwrap_or(0.0);
            if !(0.0..=1.0).contains(&null_rate) {
                return Err(invalid(format!(
                    "fields.{name}.null-rate must be between 0 and 1, not {null_rate}"
                )));
            }
            fields.push(FieldSpec { kind, null_rate });
        }
        Ok(Self {
            rows_per_second,
            number_of_rows,
            fields,
            seed,
        })
    }

    /// The number of rows the source makes before it ends, if it ends: `number-of-rows`, or
    /// the shortest sequence.
    pub(crate) fn total_rows(&self) -> Option<u64> {
        let sequences = self.fields.iter().filter_map(|f| match f.kind {
            FieldKind::Sequence { start, end } => Some(end.abs_diff(start).saturating_add(1)),
            FieldKind::Random { .. } => None,
        });
        sequences.chain(self.number_of_rows).min()
    }
}

pub(crate) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether datagen can make values of `data_type`.
fn check_type(name: &str, data_type: &DataType) -> ConnectorResult<()> {
    let supported = data_type.is_integer()
        || data_type.is_floating()
        || is_text(data_type)
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Decimal128(..)
                | DataType::Binary
                | DataType::Date32
                | DataType::Timestamp(..)
        );
    if supported {
        Ok(())
    } else {
        Err(ConnectorError::Unsupported(format!(
            "connector 'datagen' for column {name} of type {data_type} (not implemented yet)"
        )))
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> ConnectorResult<T> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("invalid value '{value}' for option '{key}'")))
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption(message.into())
}
