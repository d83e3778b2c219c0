//! `ChangelogNormalizeOperator`: the upserts and deletes an upsert source reads (Flink's
//! `upsert-kafka`), keyed by the source's primary key, turned into a changelog that
//! retracts what it replaces (Flink's ChangelogNormalize).
//!
//! Input: the source's columns, then the non-null BOOLEAN `__upsert`
//! ([`crate::connector::UPSERT_FLAG`]): true upserts the row, false deletes the row with the
//! row's key (its other columns are NULL: a tombstone).
//!
//! Emission: updating, row by row in input order. An upsert of a key without a row emits `+`
//! the row; of a key whose row differs, `-` the old row then `+` the new one; of a key whose
//! row is equal, nothing (as Flink does without a state TTL). A delete of a key with a row
//! emits `-` that row; of a key without one, nothing. Nothing is emitted at the end, no row is
//! ever late, and watermarks are forwarded unchanged.
//!
//! State: the last row of every key, never freed (`state=unbounded` in EXPLAIN): as many rows
//! as the topic's compacted key space. Keys and rows are held in Arrow's row format.
//!
//! Snapshot: one table, `rows`: the rows held, as the source's columns.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::Epoch;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot's table.
const ROWS: &str = "rows";

/// The state table of a normalize keyed by `keys` (as the plan names them).
pub fn state_tables(keys: &[String]) -> Vec<StateTable> {
    vec![StateTable::new(
        ROWS,
        keys.to_vec(),
        "the last row of every key",
        Freed::Never("a delete frees its key's row"),
    )]
}

pub struct ChangelogNormalizeOperator {
    info: OperatorInfo,
    /// The source's columns (the input without its flag).
    columns: SchemaRef,
    /// The primary key columns, as indices into `columns`.
    keys: Vec<usize>,
    key_rows: RowConverter,
    rows: RowConverter,
    /// The last row of each key, by the key's row-format bytes.
    held: HashMap<Box<[u8]>, OwnedRow>,
}

impl ChangelogNormalizeOperator {
    /// `columns` are the source's columns (the input's but its last, the flag); `keys` index
    /// them.
    pub fn try_new(info: OperatorInfo, columns: SchemaRef, keys: Vec<usize>) -> EngineResult<Self> {
        let sort_fields = |indices: &mut dyn Iterator<Item = usize>| -> Vec<SortField> {
            indices
                .map(|i| SortField::new(columns.field(i).data_type().clone()))
                .collect()
        };
        let key_rows = RowConverter::new(sort_fields(&mut keys.iter().copied()))?;
        let rows = RowConverter::new(sort_fields(&mut (0..columns.fields().len())))?;
        Ok(Self {
            info,
            columns,
            keys,
            key_rows,
            rows,
            held: HashMap::new(),
        })
    }

    /// Holds `columns`' rows (a batch of the source's columns), keyed; `upserts` says which
    /// rows upsert (the rest delete). Returns the changes: op and row.
    fn apply(
        &mut self,
        columns: &[ArrayRef],
        upserts: Option<&datafusion::arrow::array::BooleanArray>,
    ) -> EngineResult<Vec<(&'static str, OwnedRow)>> {
        let key_columns: Vec<ArrayRef> =
            self.keys.iter().map(|k| Arc::clone(&columns[*k])).collect();
        let keys = self.key_rows.convert_columns(&key_columns)?;
        let rows = self.rows.convert_columns(columns)?;
        let mut changes = Vec::new();
        for i in 0..rows.num_rows() {
            let key = keys.row(i);
            let upsert = upserts.is_none_or(|u| u.is_valid(i) && u.value(i));
            if upsert {
                let row = rows.row(i);
                match self.held.get_mut(key.data()) {
                    Some(old) if old.row() == row => {}
                    Some(old) => {
                        changes.push(("-", std::mem::replace(old, row.owned())));
                        changes.push(("+", row.owned()));
                    }
                    None => {
                        self.held.insert(key.data().into(), row.owned());
                        changes.push(("+", row.owned()));
                    }
                }
            } else if let Some(old) = self.held.remove(key.data()) {
                changes.push(("-", old));
            }
        }
        Ok(changes)
    }
}

impl Operator for ChangelogNormalizeOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let width = self.columns.fields().len();
        if batch.num_columns() != width + 1 {
            return Err(EngineError::Internal(format!(
                "an upsert source's batch of {} columns, expected {} and its flag",
                batch.num_columns(),
                width
            )));
        }
        let flags = batch.column(width).as_boolean_opt().ok_or_else(|| {
            EngineError::Internal("an upsert source's flag is not BOOLEAN".to_string())
        })?;
        let changes = self.apply(&batch.columns()[..width], Some(flags))?;
        if changes.is_empty() {
            return Ok(());
        }
        let ops: StringArray = changes.iter().map(|(op, _)| Some(*op)).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ops)];
        columns.extend(
            self.rows
                .convert_rows(changes.iter().map(|(_, r)| r.row()))?,
        );
        out.batch(super::conform_batch(&self.info.schema, columns)?);
        Ok(())
    }

    /// One table, `rows`: the rows held (the source's columns); no batch when none is.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        if self.held.is_empty() {
            return Ok(snapshot);
        }
        let arrays = self
            .rows
            .convert_rows(self.held.values().map(|r| r.row()))?;
        let schema = Schema::new(
            self.columns
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        snapshot.add(ROWS, RecordBatch::try_new(Arc::new(schema), arrays)?)?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        for batch in snapshot.table(ROWS) {
            let expected: Vec<&DataType> = self
                .columns
                .fields()
                .iter()
                .map(|f| f.data_type())
                .collect();
            let found: Vec<&DataType> = batch.columns().iter().map(|c| c.data_type()).collect();
            if found != expected {
                return Err(corrupt(format!(
                    "changelog normalize rows of types {found:?}, expected {expected:?}"
                )));
            }
            let before = self.held.len();
            let changes = self.apply(batch.columns(), None)?;
            if self.held.len() != before + batch.num_rows() || changes.len() != batch.num_rows() {
                return Err(corrupt("a changelog normalize key held twice"));
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        let bytes = self
            .held
            .iter()
            .map(|(k, r)| k.len() + r.as_ref().len())
            .sum::<usize>();
        vec![StateUsage {
            table: ROWS,
            rows: self.held.len(),
            bytes,
        }]
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BooleanArray, Int64Array};

    use super::*;
    use crate::operators::checkpoint_harness::{Lcg, Step, check_every_cut_forwarding, rows};
    use crate::runtime::message::Message;

    fn columns() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn operator() -> ChangelogNormalizeOperator {
        let output = Arc::new(Schema::new(vec![
            Field::new("__op", DataType::Utf8, false),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]));
        ChangelogNormalizeOperator::try_new(
            OperatorInfo {
                name: "ChangelogNormalize".to_string(),
                schema: output,
            },
            columns(),
            vec![0],
        )
        .unwrap()
    }

    /// Rows of (k, v, upsert): `v` None on a delete.
    fn batch(rows: &[(i64, Option<i64>, bool)]) -> RecordBatch {
        let mut fields = columns().fields().to_vec();
        fields.push(Arc::new(Field::new("__upsert", DataType::Boolean, false)));
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn upserts_retract_the_row_they_replace_and_deletes_retract_theirs() {
        let mut op = operator();
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch(&[
                (1, Some(10), true),
                (2, Some(20), true),
                (1, Some(11), true),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["+ 1 10", "+ 2 20", "- 1 10", "+ 1 11"],
            "the second upsert of key 1 retracts the first"
        );
        // An equal upsert changes nothing; a delete retracts the row it deletes; a delete of
        // a key without a row (already deleted, or never seen) is dropped.
        op.on_batch(
            0,
            batch(&[
                (2, Some(20), true),
                (2, None, false),
                (2, None, false),
                (3, None, false),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["- 2 20"]);
        // A NULL value is a value: an upsert to NULL is not a delete.
        op.on_batch(0, batch(&[(1, None, true), (2, Some(21), true)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["- 1 11", "+ 1 NULL", "+ 2 21"]);
        let usage = op.state_usage();
        assert_eq!(usage[0].rows, 2);
        op.on_watermark(7, &mut out).unwrap();
        op.on_end(&mut out).unwrap();
        let messages: Vec<Message> = out.drain().collect();
        assert!(matches!(messages.as_slice(), [Message::Watermark(7)]));
    }

    #[test]
    fn restores_at_every_cut_with_the_same_changelog() {
        let mut rng = Lcg(11);
        let mut steps = Vec::new();
        for w in 0..12 {
            let rows: Vec<(i64, Option<i64>, bool)> = (0..1 + rng.next(5))
                .map(|_| {
                    let upsert = rng.next(4) != 0;
                    let v = upsert.then(|| rng.next(3) as i64);
                    (rng.next(4) as i64, v, upsert)
                })
                .collect();
            steps.push(Step::Batch(batch(&rows)));
            steps.push(Step::Watermark(w));
        }
        steps.push(Step::End);
        let make = || Box::new(operator()) as Box<dyn Operator>;
        let (output, _) =
            check_every_cut_forwarding(&make, &state_tables(&["k".to_string()]), &steps);
        let text = output.join("\n");
        assert!(text.contains("| - "), "the sequence retracts rows");
    }

    #[test]
    fn a_snapshot_of_other_columns_is_refused() {
        let mut op = operator();
        let mut snapshot = StateSnapshot::new();
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        snapshot
            .add(ROWS, RecordBatch::try_new(schema, vec![strings]).unwrap())
            .unwrap();
        assert!(op.restore(snapshot).is_err());
    }
}
