//! Partition folders: event-time partitions from a strftime pattern, and Hive-style
//! `column=value` partitions.
//!
//! An event-time partition covers one period of the pattern's finest field: `%Y/%m/%d/%H`
//! covers an hour, so the partition of 10:17 is `[10:00, 11:00)` and it is complete once the
//! watermark reaches 11:00. Times are formatted in UTC.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use datafusion::arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_engine::connector::{ConnectorError, ConnectorResult};

/// The folder of rows whose partition value is NULL (Hive's name).
pub(crate) const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The period one event-time partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

/// A `partition.pattern` such as `dt=%Y-%m-%d/hour=%H`.
#[derive(Debug, Clone)]
pub(crate) struct TimePattern {
    pattern: String,
    period: Period,
}

impl TimePattern {
    /// Checks the pattern: only `%Y %m %d %j %H %M %S %%`, a period the fields pin down
    /// completely (an hour needs its day, month and year), and no `..` or absolute folder.
    pub(crate) fn parse(pattern: &str) -> ConnectorResult<Self> {
        let bad = |why: &str| {
            ConnectorError::InvalidOption(format!("invalid partition.pattern '{pattern}': {why}"))
        };
        let mut fields = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some(f @ ('Y' | 'm' | 'd' | 'j' | 'H' | 'M' | 'S')) => fields.push(f),
                    Some('%') => {}
                    Some(other) => {
                        return Err(bad(&format!(
                            "%{other} is not supported (use %Y %m %d %j %H %M %S)"
                        )));
                    }
                    None => return Err(bad("it ends with a lone %")),
                }
            } else if !(c.is_ascii_alphanumeric() || "=-_/.".contains(c)) {
                return Err(bad(&format!(
                    "'{c}' is not allowed in a folder name (use letters, digits, = - _ . /)"
                )));
            }
        }
        if pattern.starts_with('/')
            || pattern
                .split('/')
                .any(|s| s == ".." || s == "." || s.is_empty())
        {
            return Err(bad(
                "its folders must be relative and non-empty, without . or ..",
            ));
        }
        let has = |f: char| fields.contains(&f);
        let day = has('j') || (has('m') && has('d'));
        let period = if has('S') {
            Period::Second
        } else if has('M') {
            Period::Minute
        } else if has('H') {
            Period::Hour
        } else if has('d') || has('j') {
            Period::Day
        } else if has('m') {
            Period::Month
        } else if has('Y') {
            Period::Year
        } else {
            return Err(bad("it has no time field (e.g. dt=%Y-%m-%d)"));
        };
        let complete = has('Y')
            && match period {
                Period::Year => true,
                Period::Month => has('m'),
                Period::Day => day,
                Period::Hour => day,
                Period::Minute => day && has('H'),
                Period::Second => day && has('H') && has('M'),
            };
        if !complete {
            return Err(bad(
                "each partition must be one period: give every coarser field too \
                 (an hour needs %Y, %m and %d, or %Y and %j)",
            ));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            period,
        })
    }

    /// The partition of a time (nanoseconds since the epoch): its folder and its end.
    pub(crate) fn partition(&self, nanos: i64) -> (String, i64) {
        let (start, end) = self.bounds(nanos);
        let folder = DateTime::<Utc>::from_timestamp_nanos(start)
            .format(&self.pattern)
            .to_string();
        (folder, end)
    }

    /// The start of the period holding `nanos`: rows with the same start share a partition.
    pub(crate) fn period_start(&self, nanos: i64) -> i64 {
        self.bounds(nanos).0
    }

    /// Start and end (exclusive) of the period holding `nanos`.
    fn bounds(&self, nanos: i64) -> (i64, i64) {
        const SECOND: i64 = 1_000_000_000;
        let fixed = |width: i64| {
            let start = nanos.div_euclid(width).saturating_mul(width);
            (start, start.saturating_add(width))
        };
        match self.period {
            Period::Second => fixed(SECOND),
            Period::Minute => fixed(60 * SECOND),
            Period::Hour => fixed(3_600 * SECOND),
            Period::Day => fixed(86_400 * SECOND),
            Period::Month | Period::Year => {
                let date = DateTime::<Utc>::from_timestamp_nanos(nanos).date_naive();
                let (start, next) = if self.period == Period::Month {
                    let start = NaiveDate::from_ymd_opt(date.year(), date.month(), 1);
                    let next = if date.month() == 12 {
                        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
                    } else {
                        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
                    };
                    (start, next)
                } else {
                    (
                        NaiveDate::from_ymd_opt(date.year(), 1, 1),
                        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1),
                    )
                };
                let to_nanos = |d: Option<NaiveDate>| {
                    d.and_then(|d| d.and_hms_opt(0, 0, 0))
                        .and_then(|t| t.and_utc().timestamp_nanos_opt())
                        .unwrap_or(i64::MAX)
                };
                (to_nanos(start), to_nanos(next))
            }
        }
    }
}

/// A timestamp column as nanoseconds since the epoch.
pub(crate) fn nanos(column: &ArrayRef) -> ConnectorResult<TimestampNanosecondArray> {
    let tz = match column.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => {
            return Err(ConnectorError::InvalidOption(format!(
                "partition time column must be a TIMESTAMP, not {other}"
            )));
        }
    };
    let cast = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, tz))?;
    cast.as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .cloned()
        .ok_or_else(|| ConnectorError::Io("timestamp cast".to_string()))
}

/// Formats Hive partition values (`name=value`) of one batch, escaping characters that are
/// unsafe in a folder name as `%XX`, as Hive does.
pub(crate) struct HiveValues<'a> {
    names: Vec<String>,
    columns: Vec<(&'a ArrayRef, ArrayFormatter<'a>)>,
}

impl<'a> HiveValues<'a> {
    pub(crate) fn try_new(
        names: Vec<String>,
        columns: &'a [ArrayRef],
        options: &'a FormatOptions<'a>,
    ) -> ConnectorResult<Self> {
        let columns = columns
            .iter()
            .map(|c| Ok((c, ArrayFormatter::try_new(c.as_ref(), options)?)))
            .collect::<ConnectorResult<Vec<_>>>()?;
        Ok(Self {
            names: names.iter().map(|n| escape(n)).collect(),
            columns,
        })
    }

    /// The folders of row `row`: `a=1/b=x`.
    pub(crate) fn folder(&self, row: usize) -> String {
        let mut parts = Vec::with_capacity(self.columns.len());
        for (name, (column, formatter)) in self.names.iter().zip(&self.columns) {
            let value = if column.is_null(row) {
                NULL_PARTITION.to_string()
            } else {
                escape(&formatter.value(row).to_string())
            };
            parts.push(format!("{name}={value}"));
        }
        parts.join("/")
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_alphanumeric() || "-_. +,@".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = out.replace('.', "%2E");
        if out.is_empty() {
            out.push_str("%00");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn hour_day_month_partitions() {
        let p = TimePattern::parse("dt=%Y-%m-%d/hour=%H").unwrap();
        let (folder, end) = p.partition(at("2024-03-05T10:17:00Z"));
        assert_eq!(folder, "dt=2024-03-05/hour=10");
        assert_eq!(end, at("2024-03-05T11:00:00Z"));
        let p = TimePattern::parse("%Y/%m").unwrap();
        let (folder, end) = p.partition(at("2024-12-31T23:59:59Z"));
        assert_eq!(folder, "2024/12");
        assert_eq!(end, at("2025-01-01T00:00:00Z"));
        let p = TimePattern::parse("day=%Y-%j").unwrap();
        assert_eq!(p.partition(at("2024-02-01T05:00:00Z")).0, "day=2024-032");
        // Before 1970 floors downwards.
        let p = TimePattern::parse("%Y-%m-%d").unwrap();
        assert_eq!(p.partition(at("1969-12-31T23:00:00Z")).0, "1969-12-31");
    }

    #[test]
    fn incomplete_or_unsafe_patterns_are_refused() {
        for bad in [
            "hour=%H", "%Y/%H", "../%Y", "/abs/%Y", "%Y/%x", "x", "%Y//%m", "a b/%Y",
        ] {
            assert!(TimePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hive_values_are_escaped() {
        assert_eq!(escape("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("ok-1.5"), "ok-1.5");
    }
}
