//! `TIMESTAMPADD(unit, n, t)` and `TIMESTAMPDIFF(unit, t1, t2)` (Flink's, and JDBC's escape
//! functions): the unit is a bare word (`SECOND`), which the SQL front end turns into a string
//! literal (`crate::sql::time_units`) before these functions see it.
//!
//! Units: `MICROSECOND`, `MILLISECOND`, `SECOND`, `MINUTE`, `HOUR`, `DAY`, `WEEK`, `MONTH`,
//! `QUARTER`, `YEAR` (also with Flink's `SQL_TSI_` prefix). Adding months keeps the day of the
//! month, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29). A difference counts
//! whole units from `t1` to `t2`, truncated toward zero (negative when `t2` is earlier); in
//! months, a month is whole once the day and time of day of `t1` are reached again.

use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// A unit of `TIMESTAMPADD` / `TIMESTAMPDIFF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A fixed number of nanoseconds.
    Fixed(i64),
    /// A number of months.
    Months(u32),
}

fn unit(name: &str) -> Result<Unit> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SQL_TSI_").unwrap_or(&upper);
    Ok(match bare {
        "MICROSECOND" => Unit::Fixed(1_000),
        "MILLISECOND" => Unit::Fixed(1_000_000),
        "SECOND" => Unit::Fixed(1_000_000_000),
        "MINUTE" => Unit::Fixed(60_000_000_000),
        "HOUR" => Unit::Fixed(3_600_000_000_000),
        "DAY" => Unit::Fixed(86_400_000_000_000),
        "WEEK" => Unit::Fixed(7 * 86_400_000_000_000),
        "MONTH" => Unit::Months(1),
        "QUARTER" => Unit::Months(3),
        "YEAR" => Unit::Months(12),
        _ => {
            return exec_err!(
                "unknown time unit '{name}'; expected MICROSECOND, MILLISECOND, SECOND, \
                 MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR"
            );
        }
    })
}

/// Which of the two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arith {
    Add,
    Diff,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimestampArith {
    arith: Arith,
    signature: Signature,
}

impl TimestampArith {
    pub fn new(arith: Arith) -> Self {
        Self {
            arith,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const TIMESTAMP: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

fn is_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::Null
    )
}

impl ScalarUDFImpl for TimestampArith {
    fn name(&self) -> &str {
        match self.arith {
            Arith::Add => "timestampadd",
            Arith::Diff => "timestampdiff",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name().to_uppercase();
        if args.len() != 3 {
            return plan_err!(
                "function {name} takes 3 arguments (unit, ...), got {}",
                args.len()
            );
        }
        let unit_ok = matches!(args[0], DataType::Utf8 | DataType::Null);
        match self.arith {
            Arith::Add
                if unit_ok
                    && (args[1].is_integer() || args[1] == DataType::Null)
                    && is_time(&args[2]) =>
            {
                Ok(vec![DataType::Utf8, DataType::Int64, TIMESTAMP])
            }
            Arith::Diff if unit_ok && is_time(&args[1]) && is_time(&args[2]) => {
                Ok(vec![DataType::Utf8, TIMESTAMP, TIMESTAMP])
            }
            Arith::Add => plan_err!(
                "function TIMESTAMPADD takes (unit, integer, timestamp), got ({}, {}, {})",
                args[0],
                args[1],
                args[2]
            ),
            Arith::Diff => plan_err!(
                "function TIMESTAMPDIFF takes (unit, timestamp, timestamp), got ({}, {}, {})",
                args[0],
                args[1],
                args[2]
            ),
        }
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.arith {
            Arith::Add => TIMESTAMP,
            Arith::Diff => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let units = arrays[0].as_string::<i32>();
        let out: ArrayRef = match self.arith {
            Arith::Add => {
                let amounts = arrays[1].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let times = cast(&arrays[2], &TIMESTAMP)?;
                let times = times.as_primitive::<TimestampNanosecondType>();
                let mut out = Vec::with_capacity(times.len());
                for i in 0..times.len() {
                    if units.is_null(i) || amounts.is_null(i) || times.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    out.push(Some(add(
                        unit(units.value(i))?,
                        amounts.value(i),
                        times.value(i),
                    )?));
                }
                Arc::new(TimestampNanosecondArray::from(out))
            }
            Arith::Diff => {
                let from = cast(&arrays[1], &TIMESTAMP)?;
                let to = cast(&arrays[2], &TIMESTAMP)?;
                let (from, to) = (
                    from.as_primitive::<TimestampNanosecondType>(),
                    to.as_primitive::<TimestampNanosecondType>(),
                );
                let mut out = Vec::with_capacity(from.len());
                for i in 0..from.len() {
                    if units.is_null(i) || from.is_null(i) || to.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    out.push(Some(diff(
                        unit(units.value(i))?,
                        from.value(i),
                        to.value(i),
                    )));
                }
                Arc::new(Int64Array::from(out))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn datetime(nanos: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_nanos(nanos).naive_utc()
}

fn add(unit: Unit, amount: i64, nanos: i64) -> Result<i64> {
    let overflow = || {
        datafusion::error::DataFusionError::Execution(
            "TIMESTAMPADD: the timestamp is out of range".to_string(),
        )
    };
    match unit {
        Unit::Fixed(n) => amount
            .checked_mul(n)
            .and_then(|d| nanos.checked_add(d))
            .ok_or_else(overflow),
        Unit::Months(per) => {
            let months = amount.checked_mul(i64::from(per)).ok_or_else(overflow)?;
            let time = datetime(nanos);
            let moved = if months >= 0 {
                time.checked_add_months(Months::new(u32::try_from(months).map_err(|_| overflow())?))
            } else {
                time.checked_sub_months(Months::new(
                    u32::try_from(months.unsigned_abs()).map_err(|_| overflow())?,
                ))
            };
            moved
                .and_then(|t| t.and_utc().timestamp_nanos_opt())
                .ok_or_else(overflow)
        }
    }
}

fn diff(unit: Unit, from: i64, to: i64) -> i64 {
    match unit {
        // Integer division truncates toward zero.
        Unit::Fixed(n) => ((i128::from(to) - i128::from(from)) / i128::from(n)) as i64,
        Unit::Months(per) => {
            let (a, b) = (datetime(from), datetime(to));
            let mut months = (i64::from(b.year()) - i64::from(a.year())) * 12
                + i64::from(b.month())
                - i64::from(a.month());
            // Within the month: (day, time of day) of each.
            let rest = |t: &NaiveDateTime| (t.day(), t.num_seconds_from_midnight(), t.nanosecond());
            if months > 0 && rest(&b) < rest(&a) {
                months -= 1;
            } else if months < 0 && rest(&b) > rest(&a) {
                months += 1;
            }
            months / i64::from(per)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn adds_fixed_units_and_months_clamped_to_the_month_end() {
        let t = at("2024-01-31 10:00:00");
        assert_eq!(
            add(unit("second").unwrap(), 90, t).unwrap(),
            at("2024-01-31 10:01:30")
        );
        assert_eq!(
            add(unit("SQL_TSI_DAY").unwrap(), -31, t).unwrap(),
            at("2023-12-31 10:00:00")
        );
        assert_eq!(
            add(unit("MONTH").unwrap(), 1, t).unwrap(),
            at("2024-02-29 10:00:00")
        );
        assert_eq!(
            add(unit("QUARTER").unwrap(), -1, t).unwrap(),
            at("2023-10-31 10:00:00")
        );
        assert!(unit("fortnight").is_err());
    }

    #[test]
    fn differences_count_whole_units_toward_zero() {
        let (a, b) = (at("2024-01-31 10:00:00"), at("2024-03-30 09:59:59"));
        assert_eq!(diff(unit("MONTH").unwrap(), a, b), 1);
        assert_eq!(diff(unit("MONTH").unwrap(), b, a), -1);
        assert_eq!(diff(unit("DAY").unwrap(), a, b), 58);
        assert_eq!(diff(unit("DAY").unwrap(), b, a), -58);
        assert_eq!(diff(unit("YEAR").unwrap(), a, at("2025-01-31 10:00:00")), 1);
        assert_eq!(diff(unit("HOUR").unwrap(), a, a + 3_599_000_000_000), 0);
    }
}
