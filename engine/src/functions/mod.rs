//! Flink SQL built-in functions that DataFusion lacks or spells differently, registered as
//! scalar UDFs beside DataFusion's own (whose Postgres names keep working):
//!
//! | function | result |
//! |---|---|
//! | `MOD(a, b)` | `a % b` (the sign of `a`), integers as BIGINT, other numbers as DOUBLE |
//! | `YEAR`, `QUARTER`, `MONTH`, `DAYOFMONTH`, `DAYOFYEAR`, `HOUR`, `MINUTE`, `SECOND` `(t)` | the field of a timestamp or date, BIGINT |
//! | `DATE_FORMAT(t, 'yyyy-MM-dd')` | a timestamp (or a string read as one) formatted with a Java date pattern ([`java_format`]) |
//! | `SPLIT_INDEX(s, sep, i)` | the `i`-th (from 0) piece of `s` split at `sep`; NULL past the end |
//! | `REGEXP_EXTRACT(s, regex[, group])` | the group (0: the whole match, the default) of the first match; NULL without one |
//! | `TIMESTAMPADD(unit, n, t)`, `TIMESTAMPDIFF(unit, t1, t2)` | see [`timestamp_arith`] |
//! | `PROCTIME()` | the wall clock, TIMESTAMP(3): the time a lookup join's `FOR SYSTEM_TIME AS OF` may name ([`as_of`]) |
//! | `COUNT_CHAR(s, c)` | how many times the first character of `c` occurs in `s`, BIGINT (the Nexmark benchmark's UDF, which its q14 calls; 0 for a NULL `s`) |
//!
//! Every other function returns NULL when an argument is NULL.

pub mod as_of;
pub mod emit;
pub mod fault;
pub mod java_format;
pub mod timestamp_arith;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::compute::{DatePart, cast, date_part};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Registers every function of this module in a session's context.
pub fn register(ctx: &SessionContext) {
    let mut kinds: Vec<(&str, Kind)> = vec![
        ("mod", Kind::Mod),
        ("date_format", Kind::DateFormat),
        ("split_index", Kind::SplitIndex),
        ("regexp_extract", Kind::RegexpExtract),
        ("count_char", Kind::CountChar),
    ];
    kinds.extend(
        PARTS
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, Kind::Part(i))),
    );
    for arith in [timestamp_arith::Arith::Add, timestamp_arith::Arith::Diff] {
        ctx.register_udf(ScalarUDF::new_from_impl(
            timestamp_arith::TimestampArith::new(arith),
        ));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(as_of::AsOfMarker::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(as_of::Proctime::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(emit::EmitOnUpdateMarker::new()));
    for (name, kind) in kinds {
        ctx.register_udf(ScalarUDF::new_from_impl(FlinkFunction {
            name,
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }));
    }
}

/// The date-part functions: name and part.
const PARTS: [(&str, DatePart); 8] = [
    ("year", DatePart::Year),
    ("quarter", DatePart::Quarter),
    ("month", DatePart::Month),
    ("dayofmonth", DatePart::Day),
    ("dayofyear", DatePart::DayOfYear),
    ("hour", DatePart::Hour),
    ("minute", DatePart::Minute),
    ("second", DatePart::Second),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Mod,
    /// An index into [`PARTS`].
    Part(usize),
    DateFormat,
    SplitIndex,
    RegexpExtract,
    CountChar,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FlinkFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

const TIMESTAMP: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || t == &DataType::Null
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

impl FlinkFunction {
    fn arity(&self, args: &[DataType], counts: &[usize]) -> Result<()> {
        if counts.contains(&args.len()) {
            return Ok(());
        }
        let expected = counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        plan_err!(
            "function {} takes {expected} arguments, got {}",
            self.name.to_uppercase(),
            args.len()
        )
    }
}

impl ScalarUDFImpl for FlinkFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name.to_uppercase();
        match self.kind {
            Kind::Mod => {
                self.arity(args, &[2])?;
                if args.iter().all(is_integer) {
                    Ok(vec![DataType::Int64, DataType::Int64])
                } else if args.iter().all(|t| t.is_numeric() || t == &DataType::Null) {
                    Ok(vec![DataType::Float64, DataType::Float64])
                } else {
                    plan_err!(
                        "function MOD takes two numbers, got {} and {}",
                        args[0],
                        args[1]
                    )
                }
            }
            Kind::Part(_) => {
                self.arity(args, &[1])?;
                match &args[0] {
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                        Ok(args.to_vec())
                    }
                    t if is_text(t) => Ok(vec![TIMESTAMP]),
                    other => plan_err!("function {name} takes a TIMESTAMP or a DATE, got {other}"),
                }
            }
            Kind::DateFormat => {
                self.arity(args, &[2])?;
                let value = match &args[0] {
                    DataType::Timestamp(..) => args[0].clone(),
                    DataType::Date32 | DataType::Date64 => TIMESTAMP,
                    t if is_text(t) => TIMESTAMP,
                    other => {
                        return plan_err!("function DATE_FORMAT takes a TIMESTAMP, got {other}");
                    }
                };
                Ok(vec![value, DataType::Utf8])
            }
            Kind::SplitIndex => {
                self.arity(args, &[3])?;
                if !is_integer(&args[2]) {
                    return plan_err!(
                        "function SPLIT_INDEX takes an integer index, got {}",
                        args[2]
                    );
                }
                Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
            }
            Kind::CountChar => {
                self.arity(args, &[2])?;
                if !args.iter().all(is_text) {
                    return plan_err!(
                        "function COUNT_CHAR takes two strings, got {} and {}",
                        args[0],
                        args[1]
                    );
                }
                Ok(vec![DataType::Utf8, DataType::Utf8])
            }
            Kind::RegexpExtract => {
                self.arity(args, &[2, 3])?;
                if args.len() == 3 && !is_integer(&args[2]) {
                    return plan_err!(
                        "function REGEXP_EXTRACT takes an integer group, got {}",
                        args[2]
                    );
                }
                let mut types = vec![DataType::Utf8, DataType::Utf8];
                if args.len() == 3 {
                    types.push(DataType::Int64);
                }
                Ok(types)
            }
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Mod => args.first().cloned().unwrap_or(DataType::Int64),
            Kind::Part(_) | Kind::CountChar => DataType::Int64,
            Kind::DateFormat | Kind::SplitIndex | Kind::RegexpExtract => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: ArrayRef = match self.kind {
            Kind::Mod => rem(&arrays[0], &arrays[1])?,
            Kind::Part(part) => cast(&date_part(&arrays[0], PARTS[part].1)?, &DataType::Int64)?,
            Kind::DateFormat => date_format(&arrays[0], &arrays[1])?,
            Kind::SplitIndex => split_index(&arrays[0], &arrays[1], &arrays[2])?,
            Kind::RegexpExtract => regexp_extract(&arrays[0], &arrays[1], arrays.get(2))?,
            Kind::CountChar => count_char(&arrays[0], &arrays[1])?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The strings of a Utf8 argument.
fn strings(array: &ArrayRef) -> Result<&StringArray> {
    match array.as_string_opt::<i32>() {
        Some(s) => Ok(s),
        None => exec_err!("expected a string argument, got {}", array.data_type()),
    }
}

fn integers(array: &ArrayRef) -> Result<&Int64Array> {
    match array.as_primitive_opt() {
        Some(i) => Ok(i),
        None => exec_err!("expected an integer argument, got {}", array.data_type()),
    }
}

fn date_format(values: &ArrayRef, patterns: &ArrayRef) -> Result<ArrayRef> {
    // Nanoseconds since the epoch, as UTC wall time (a zoned timestamp is formatted in UTC).
    let nanos = cast(values, &TIMESTAMP)?;
    let nanos = nanos.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    let patterns = strings(patterns)?;
    let mut translated: Option<(String, String)> = None;
    let mut out = Vec::with_capacity(nanos.len());
    for i in 0..nanos.len() {
        if nanos.is_null(i) || patterns.is_null(i) {
            out.push(None);
            continue;
        }
        let pattern = patterns.value(i);
        if translated.as_ref().is_none_or(|(java, _)| java != pattern) {
            let chrono = java_format::java_to_chrono(pattern)
                .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
            translated = Some((pattern.to_string(), chrono));
        }
        let format = &translated.as_ref().expect("translated").1;
        let time = chrono::DateTime::from_timestamp_nanos(nanos.value(i)).naive_utc();
        out.push(Some(time.format(format).to_string()));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// Nexmark's `CountChar`: occurrences of `chars`' first character in each value (0 for a NULL
/// value; NULL for a NULL or empty character).
fn count_char(values: &ArrayRef, chars: &ArrayRef) -> Result<ArrayRef> {
    let (values, chars) = (strings(values)?, strings(chars)?);
    let out: Int64Array = (0..values.len())
        .map(|i| {
            let wanted = chars.is_valid(i).then(|| chars.value(i).chars().next())??;
            if values.is_null(i) {
                return Some(0);
            }
            Some(values.value(i).chars().filter(|c| *c == wanted).count() as i64)
        })
        .collect();
    Ok(Arc::new(out))
}

fn split_index(values: &ArrayRef, separators: &ArrayRef, indices: &ArrayRef) -> Result<ArrayRef> {
    let (values, separators, indices) =
        (strings(values)?, strings(separators)?, integers(indices)?);
    let out: StringArray = (0..values.len())
        .map(|i| {
            if values.is_null(i) || separators.is_null(i) || indices.is_null(i) {
                return None;
            }
            let index = usize::try_from(indices.value(i)).ok()?;
            let separator = separators.value(i);
            if separator.is_empty() {
                return (index == 0).then(|| values.value(i));
            }
            values.value(i).split(separator).nth(index)
        })
        .collect();
    Ok(Arc::new(out))
}

fn regexp_extract(
    values: &ArrayRef,
    patterns: &ArrayRef,
    groups: Option<&ArrayRef>,
) -> Result<ArrayRef> {
    let (values, patterns) = (strings(values)?, strings(patterns)?);
    let groups = groups.map(integers).transpose()?;
    let mut compiled: Option<(String, regex::Regex)> = None;
    let mut out = Vec::with_capacity(values.len());
    for i in 0..values.len() {
        if values.is_null(i) || patterns.is_null(i) || groups.is_some_and(|g| g.is_null(i)) {
            out.push(None);
            continue;
        }
        let pattern = patterns.value(i);
        if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
            let regex = regex::Regex::new(pattern).map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!(
                    "REGEXP_EXTRACT: invalid regular expression '{pattern}': {e}"
                ))
            })?;
            compiled = Some((pattern.to_string(), regex));
        }
        let regex = &compiled.as_ref().expect("compiled").1;
        let group = groups.map_or(0, |g| g.value(i));
        let found = usize::try_from(group).ok().and_then(|group| {
            regex
                .captures(values.value(i))
                .and_then(|c| c.get(group))
                .map(|m| m.as_str().to_string())
        });
        out.push(found);
    }
    Ok(Arc::new(StringArray::from(out)))
}
