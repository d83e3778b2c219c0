//! Late rows as data: the push table a job created `WITH (late.rows = 'name')` appends every
//! row it drops as late to.
//!
//! The table is an ordinary push table (created by the job's statement if absent, with
//! [`late_rows_ddl`], so the catalog replays it before the job after a restart), which any
//! query reads (`SELECT`) or follows (`COPY (SELECT ...) TO STDOUT`, a view). Each row says
//! which job and which operator (as EXPLAIN names it) dropped it, the row's event time, the
//! operator's input watermark then, the row itself as one JSON object (arrow-json's encoding of
//! the columns the operator received, nulls written) and when it was dropped.
//!
//! `dropped_at` only grows over the engine (it is taken under one lock, which also orders the
//! appends, and never goes back with the clock), so the table's watermark on it never makes a
//! row late. Appends are synced to disk like `INSERT`s, but a job restored from a checkpoint
//! replays the rows after it, so a row dropped between its last checkpoint and a crash is
//! appended again: the table is at-least-once.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    Array, ArrayRef, StringArray, StructArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, EngineResult};
use crate::runtime::message::EventTime;
use crate::table::TableLog;

/// The job option (of `CREATE MATERIALIZED VIEW` and `CREATE SINK`) that names the table.
pub const LATE_ROWS_OPTION: &str = "late.rows";

/// The columns of a late-row table, as [`late_rows_ddl`] declares them (name, SQL type).
pub const LATE_ROWS_COLUMNS: [(&str, &str); 6] = [
    ("job", "VARCHAR NOT NULL"),
    ("operator", "VARCHAR NOT NULL"),
    ("event_time", "TIMESTAMP"),
    ("watermark", "TIMESTAMP"),
    ("row", "VARCHAR NOT NULL"),
    ("dropped_at", "TIMESTAMP WITH TIME ZONE NOT NULL"),
];

/// The statement that creates late-row table `name` (saved in the catalog as the table's).
pub fn late_rows_ddl(name: &str) -> String {
    let columns: Vec<String> = LATE_ROWS_COLUMNS
        .iter()
        .map(|(column, ty)| format!("{} {ty}", quoted(column)))
        .collect();
    format!(
        "CREATE TABLE {} ({}, WATERMARK FOR dropped_at AS dropped_at)",
        quoted(name),
        columns.join(", ")
    )
}

/// `name` as a quoted identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns a late-row table must have, for messages: `job VARCHAR NOT NULL, ...`.
pub fn late_rows_columns_text() -> String {
    LATE_ROWS_COLUMNS
        .iter()
        .map(|(column, ty)| format!("{column} {ty}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `schema` has exactly the columns of `expected` (a table made by [`late_rows_ddl`]):
/// the same names and types in the same order (nullability aside).
pub fn same_columns(schema: &Schema, expected: &Schema) -> bool {
    schema.fields().len() == expected.fields().len()
        && schema
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// What every job's late rows share: the clock of `dropped_at`.
#[derive(Debug, Default)]
pub struct LateRowClock {
    /// The last `dropped_at` written (microseconds since the epoch); the lock also orders
    /// appends, so each table receives its rows in `dropped_at` order.
    last: Mutex<i64>,
}

impl LateRowClock {
    /// Runs `append` with the next `dropped_at` (never before the previous one).
    fn with_next<T>(&self, append: impl FnOnce(i64) -> T) -> T {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        *last = now.max(*last);
        append(*last)
    }
}

/// Where one job's late rows go: its table, under its name.
#[derive(Debug)]
pub struct LateRowTable {
    job: String,
    table: Arc<TableLog>,
    clock: Arc<LateRowClock>,
}

/// Rows an operator drops as late: each row of its input batch with its event time (`None`
/// when it has none, e.g. a NULL time).
pub type LateRows = [(usize, Option<EventTime>)];

impl LateRowTable {
    /// The late rows of job `job`, appended to `table` (a late-row table: see
    /// [`same_columns`]).
    pub fn new(job: &str, table: Arc<TableLog>, clock: Arc<LateRowClock>) -> Self {
        Self {
            job: job.to_string(),
            table,
            clock,
        }
    }

    /// Appends `rows` of `batch`, dropped by `operator` at input watermark `watermark`.
    pub fn append(
        &self,
        operator: &str,
        batch: &RecordBatch,
        rows: &LateRows,
        watermark: Option<EventTime>,
    ) -> EngineResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let indices = UInt32Array::from(
            rows.iter()
                .map(|(row, _)| u32::try_from(*row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| EngineError::Internal("late row index past u32".to_string()))?,
        );
        let taken = take_record_batch(batch, &indices)?;
        let json = row_json(&taken)?;
        let times = TimestampNanosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let watermarks = TimestampNanosecondArray::from(vec![watermark; n]);
        let schema = Arc::clone(self.table.schema());
        crate::runtime::blocking(|| {
            self.clock.with_next(|dropped_at| {
                let dropped =
                    TimestampMicrosecondArray::from(vec![dropped_at; n]).with_timezone("UTC");
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(vec![self.job.as_str(); n])),
                    Arc::new(StringArray::from(vec![operator; n])),
                    Arc::new(times),
                    Arc::new(watermarks),
                    Arc::new(json),
                    Arc::new(dropped),
                ];
                let columns = columns
                    .into_iter()
                    .zip(schema.fields())
                    .map(|(c, f)| conform(c, f))
                    .collect::<EngineResult<Vec<_>>>()?;
                self.table
                    .append(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            })
        })
    }
}

/// `column` in the type of the table's `field` (a table a user created may differ in unit).
fn conform(column: ArrayRef, field: &FieldRef) -> EngineResult<ArrayRef> {
    if column.data_type() == field.data_type() {
        Ok(column)
    } else {
        Ok(cast(&column, field.data_type())?)
    }
}

/// Each row of `batch` as one JSON object (arrow-json's encoding, nulls written as `null`).
fn row_json(batch: &RecordBatch) -> EngineResult<StringArray> {
    let schema: SchemaRef = batch.schema();
    let row = StructArray::try_new(schema.fields().clone(), batch.columns().to_vec(), None)?;
    let field: FieldRef = Arc::new(Field::new(
        "row",
        DataType::Struct(schema.fields().clone()),
        false,
    ));
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(&field, &row, &options)?;
    let mut texts = Vec::with_capacity(row.len());
    let mut bytes = Vec::new();
    for index in 0..row.len() {
        bytes.clear();
        encoder.encode(index, &mut bytes);
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Ok(StringArray::from(texts))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("job", DataType::Utf8, false),
            Field::new("operator", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new(
                "watermark",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("row", DataType::Utf8, false),
            Field::new(
                "dropped_at",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                false,
            ),
        ]))
    }

    #[test]
    fn rows_become_json_with_their_times() {
        let table = Arc::new(TableLog::in_memory(table_schema()));
        let late = LateRowTable::new("v", Arc::clone(&table), Arc::default());
        let input = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a\"b"), Some("x"), None])),
            ],
        )
        .unwrap();
        late.append(
            "WindowAggregate",
            &input,
            &[(0, Some(1_000_000_000)), (2, None)],
            Some(5_000_000_000),
        )
        .unwrap();
        let batches = table.batches_from(0);
        let text = pretty_format_batches(&batches).unwrap().to_string();
        assert!(
            text.contains(
                "| v   | WindowAggregate | 1970-01-01T00:00:01 | 1970-01-01T00:00:05 | \
                 {\"k\":1,\"s\":\"a\\\"b\"} |"
            ),
            "{text}"
        );
        assert!(
            text.contains("|                     | 1970-01-01T00:00:05 | {\"k\":3,\"s\":null}"),
            "{text}"
        );
    }

    #[test]
    fn the_ddl_declares_the_columns_in_order() {
        let ddl = late_rows_ddl("late \"x\"");
        assert!(ddl.starts_with("CREATE TABLE \"late \"\"x\"\"\" (\"job\" VARCHAR NOT NULL"));
        assert!(ddl.ends_with(", WATERMARK FOR dropped_at AS dropped_at)"));
        assert!(same_columns(&table_schema(), &table_schema()));
        let fewer = Schema::new(table_schema().fields()[..5].to_vec());
        assert!(!same_columns(&fewer, &table_schema()));
    }
}
