//! Declared operator state, and the snapshots checkpoints are made of.
//!
//! An operator lists its state tables ([`StateTableInfo`]) so the runtime can measure them
//! (`EXPLAIN ANALYZE`, `SHOW JOBS`). At a checkpoint barrier the runtime asks it for a
//! [`StateSnapshot`]: its state as Arrow batches, each tagged with the table it belongs to.
//! After a restart the same operator (same node and instance of the same plan) receives those
//! batches back through `Operator::restore` before it sees any input. The runtime writes and
//! reads snapshots without understanding them (see [`checkpoint`]); only the operator knows
//! its layout, so a snapshot may hold whatever columns the operator needs, as long as its
//! restore reads them back exactly.
//!
//! Snapshots are full, not incremental: an operator hands over what it holds at the barrier.
//! Arrow arrays are reference-counted, so handing over a retained batch costs no copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, EngineResult};

pub mod checkpoint;

/// What an operator reports about one of its state tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTableInfo {
    /// The table's name within the operator (e.g. `windows`, `left_rows`).
    pub name: &'static str,
    /// The key columns, for EXPLAIN.
    pub key: Vec<String>,
    /// Rows currently held.
    pub rows: usize,
    /// Approximate bytes currently held.
    pub bytes: usize,
}

/// The schema metadata key that names the state table a snapshot batch belongs to.
const TABLE_KEY: &str = "eddy.state.table";

/// One operator instance's state at a barrier: batches tagged with their table's name.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    batches: Vec<RecordBatch>,
}

impl StateSnapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a snapshot from batches read back from a checkpoint.
    pub fn from_batches(batches: Vec<RecordBatch>) -> Self {
        Self { batches }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The tagged batches, for writing.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Approximate bytes the snapshot holds.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.get_array_memory_size()).sum()
    }

    /// Adds rows of table `table` (empty batches are kept too: they carry a row count and
    /// a schema, which some tables need).
    pub fn add(&mut self, table: &str, batch: RecordBatch) -> EngineResult<()> {
        let schema = batch.schema();
        let mut metadata = schema.metadata().clone();
        metadata.insert(TABLE_KEY.to_string(), table.to_string());
        let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        self.batches.push(RecordBatch::try_new_with_options(
            schema,
            batch.columns().to_vec(),
            &options,
        )?);
        Ok(())
    }

    /// Adds named integer values (a watermark, a counter) as a one-row table.
    pub fn add_values(&mut self, table: &str, values: &[(&str, Option<i64>)]) -> EngineResult<()> {
        let fields: Vec<Field> = values
            .iter()
            .map(|(name, _)| Field::new(*name, DataType::Int64, true))
            .collect();
        let columns: Vec<ArrayRef> = values
            .iter()
            .map(|(_, v)| Arc::new(Int64Array::from(vec![*v])) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        self.add(table, batch)
    }

    /// The batches of table `table`, in the order they were added.
    pub fn table(&self, table: &str) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|b| b.schema().metadata().get(TABLE_KEY).map(String::as_str) == Some(table))
            .cloned()
            .collect()
    }

    /// The named integer values of table `table` (see [`StateSnapshot::add_values`]).
    pub fn values(&self, table: &str) -> EngineResult<BTreeMap<String, Option<i64>>> {
        let mut out = BTreeMap::new();
        for batch in self.table(table) {
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                let values = column
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| corrupt(format!("value {} is not an integer", field.name())))?;
                let value = (values.len() == 1 && values.is_valid(0)).then(|| values.value(0));
                out.insert(field.name().clone(), value);
            }
        }
        Ok(out)
    }

    /// The snapshot without table `table`.
    pub fn without(self, table: &str) -> Self {
        Self {
            batches: self
                .batches
                .into_iter()
                .filter(|b| b.schema().metadata().get(TABLE_KEY).map(String::as_str) != Some(table))
                .collect(),
        }
    }

    /// Refuses a snapshot holding a table `operator` does not have (another operator's state,
    /// or another version's).
    pub fn expect_tables(&self, operator: &str, known: &[&str]) -> EngineResult<()> {
        match self
            .table_names()
            .into_iter()
            .find(|t| !known.contains(&t.as_str()))
        {
            Some(other) => Err(corrupt(format!("{operator} has no state table {other}"))),
            None => Ok(()),
        }
    }

    /// The names of the tables present, for checks.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .batches
            .iter()
            .filter_map(|b| b.schema().metadata().get(TABLE_KEY).cloned())
            .collect();
        names.dedup();
        names
    }
}

use datafusion::arrow::array::Array;

/// A snapshot that does not say what its operator expects (a checkpoint written by another
/// plan or version): never misread, always refused.
pub fn corrupt(message: impl Into<String>) -> EngineError {
    EngineError::Checkpoint(format!("unreadable operator state: {}", message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_values_round_trip() {
        let mut s = StateSnapshot::new();
        s.add_values("meta", &[("watermark", Some(5)), ("count", None)])
            .unwrap();
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        s.add("rows", rows).unwrap();
        let back = StateSnapshot::from_batches(s.batches().to_vec());
        let values = back.values("meta").unwrap();
        assert_eq!(values["watermark"], Some(5));
        assert_eq!(values["count"], None);
        assert_eq!(back.table("rows")[0].num_rows(), 3);
        assert!(back.table("other").is_empty());
    }
}
