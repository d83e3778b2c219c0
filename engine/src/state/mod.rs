//! Declared operator state, and the snapshots checkpoints are made of.
//!
//! Each stateful operator's module declares its state tables ([`StateTable`]): their name,
//! what keys an entry, what an entry holds and what frees it. The plan node's declaration is
//! the one source for three things: EXPLAIN's `state=` ([`describe`]), the state figures the
//! operator reports per table ([`StateUsage`], summed for `EXPLAIN ANALYZE` and `SHOW JOBS`),
//! and the tables a snapshot may hold (the runtime refuses a snapshot or a restore with an
//! undeclared table).
//!
//! At a checkpoint barrier the runtime asks the operator for a [`StateSnapshot`]: its state as
//! Arrow batches, each tagged with its table. After a restart the same operator (same node
//! and instance of the same plan) receives those batches back through `Operator::restore`
//! before it sees any input. The runtime writes and reads snapshots without understanding
//! their columns (see [`checkpoint`]): the batches carry their own Arrow schemas, which only
//! the operator interprets, so a declaration names the key columns and describes the value
//! rather than fixing an Arrow schema.
//!
//! An operator hands over what it holds at the barrier. Arrow arrays are reference-counted,
//! so handing over a retained batch costs no copy; the write happens off the dataflow's tasks.
//! A batch that never changes once made (MATCH_RECOGNIZE's segments of released rows) can be
//! added as *shared* ([`StateSnapshot::add_shared`]), named by an id the operator chooses:
//! the checkpoint store writes it only the first time it appears and has later checkpoints
//! refer to that file, so such state costs a checkpoint only what changed since the last one.
//! Once told that a checkpoint completed (`Operator::checkpoint_completed`), an operator may
//! even refer to such a batch without handing its rows over again
//! ([`StateSnapshot::add_shared_unchanged`]), so that it need not rebuild state it does not
//! keep as batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{EngineError, EngineResult};

pub mod checkpoint;

/// What frees the entries of a state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freed {
    /// The watermark passing the entry's time bound (a window's end, an interval's edge).
    Watermark,
    /// The end of the input: without a watermark nothing can be freed earlier.
    EndOfInput,
    /// Nothing while the query runs: the table grows with what it keys by; the text says
    /// why, if more than the key explains it.
    Never(&'static str),
    /// A state TTL (`SET state.ttl`): an entry expires that long after it was stored, in
    /// processing time.
    Ttl,
    /// Not a growing table: a few counters or watermarks of constant size.
    Fixed,
}

/// One state table an operator declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTable {
    /// The table's name, which tags its snapshot batches (e.g. `slices`, `left_rows`).
    pub name: &'static str,
    /// What keys an entry (plan column names or roles such as `window`).
    pub key: Vec<String>,
    /// What an entry holds.
    pub value: &'static str,
    pub freed: Freed,
    /// Whether EXPLAIN shows it: the tables holding the operator's rows or aggregates are
    /// shown, small index tables beside them (open windows' bounds, a reordering buffer) not.
    pub shown: bool,
}

impl StateTable {
    pub fn new(name: &'static str, key: Vec<String>, value: &'static str, freed: Freed) -> Self {
        Self {
            name,
            key,
            value,
            freed,
            shown: true,
        }
    }

    /// An index table beside the main ones, not shown by EXPLAIN.
    pub fn index(name: &'static str, key: Vec<String>, value: &'static str, freed: Freed) -> Self {
        Self {
            shown: false,
            ..Self::new(name, key, value, freed)
        }
    }

    /// A table of constant size (counters, watermarks), not shown by EXPLAIN.
    pub fn fixed(name: &'static str, value: &'static str) -> Self {
        Self::index(name, Vec::new(), value, Freed::Fixed)
    }
}

/// How much one declared state table holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateUsage {
    pub table: &'static str,
    pub rows: usize,
    /// Approximate bytes.
    pub bytes: usize,
}

/// EXPLAIN's `state=` text for a node's declared tables: each shown table with what it holds
/// and by what key, grouped by what frees it; `None` when none is shown.
///
/// E.g. `bounded by watermark (slices: aggregates per slice and key [bids.auction])`.
pub fn describe(tables: &[StateTable]) -> Option<String> {
    let entry = |t: &StateTable| {
        let key = if t.key.is_empty() {
            String::new()
        } else {
            format!(" [{}]", t.key.join(", "))
        };
        match &t.freed {
            Freed::Never(why) if !why.is_empty() => format!("{}: {}{key}; {why}", t.name, t.value),
            _ => format!("{}: {}{key}", t.name, t.value),
        }
    };
    let group = |label: &str, matches: fn(&Freed) -> bool| {
        let entries: Vec<String> = tables
            .iter()
            .filter(|t| t.shown && matches(&t.freed))
            .map(entry)
            .collect();
        (!entries.is_empty()).then(|| format!("{label} ({})", entries.join(", ")))
    };
    let groups: Vec<String> = [
        group("bounded by watermark", |f| matches!(f, Freed::Watermark)),
        group("held until end of input", |f| {
            matches!(f, Freed::EndOfInput)
        }),
        group("bounded by state TTL", |f| matches!(f, Freed::Ttl)),
        group("unbounded", |f| matches!(f, Freed::Never(_))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!groups.is_empty()).then(|| groups.join("; "))
}

/// The schema metadata key that names the state table a snapshot batch belongs to.
const TABLE_KEY: &str = "eddy.state.table";
/// The schema metadata key that holds a shared batch's id (see [`StateSnapshot::add_shared`]).
const SHARED_KEY: &str = "eddy.state.shared";
/// The schema metadata key that marks a reference to a shared batch without its rows.
const UNCHANGED_KEY: &str = "eddy.state.unchanged";

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
        self.push(table, None, batch)
    }

    /// Adds rows of table `table` that the operator names `id`, promising that in this
    /// operator instance the same table and id always name the same rows (a batch made once
    /// and never changed). A checkpoint then writes it only the first time it appears, and a
    /// restore hands it back with its id ([`StateSnapshot::shared`]).
    pub fn add_shared(&mut self, table: &str, id: u64, batch: RecordBatch) -> EngineResult<()> {
        self.push(table, Some(id), batch)
    }

    /// Refers to shared batch `id` of table `table` without its rows. Only for a batch the
    /// operator's snapshot at a checkpoint it was told completed held, and every snapshot
    /// since (unchanged): the checkpoint store then lists the file it wrote, and refuses a
    /// reference to a batch no complete checkpoint holds. A restore reads the rows back from
    /// that file, so an operator's `restore` never receives a reference.
    pub fn add_shared_unchanged(&mut self, table: &str, id: u64) -> EngineResult<()> {
        let metadata = [
            (TABLE_KEY, table.to_string()),
            (SHARED_KEY, id.to_string()),
            (UNCHANGED_KEY, "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let schema = Arc::new(Schema::new_with_metadata(Vec::<Field>::new(), metadata));
        let options = RecordBatchOptions::new().with_row_count(Some(0));
        self.batches.push(RecordBatch::try_new_with_options(
            schema,
            Vec::new(),
            &options,
        )?);
        Ok(())
    }

    fn push(&mut self, table: &str, shared: Option<u64>, batch: RecordBatch) -> EngineResult<()> {
        let schema = batch.schema();
        let mut metadata = schema.metadata().clone();
        metadata.insert(TABLE_KEY.to_string(), table.to_string());
        metadata.remove(UNCHANGED_KEY);
        match shared {
            Some(id) => metadata.insert(SHARED_KEY.to_string(), id.to_string()),
            None => metadata.remove(SHARED_KEY),
        };
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

    /// The batches of table `table`, shared ones included, in the order they were added
    /// (after a restore, the shared ones come last).
    pub fn table(&self, table: &str) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|b| table_of(b) == Some(table))
            .cloned()
            .collect()
    }

    /// The shared batches of table `table` with their ids, in the order they were added.
    pub fn shared(&self, table: &str) -> EngineResult<Vec<(u64, RecordBatch)>> {
        let mut out = Vec::new();
        for batch in self.batches.iter().filter(|b| table_of(b) == Some(table)) {
            if let Some(id) = shared_id(batch)? {
                if is_unchanged(batch) {
                    return Err(corrupt(format!(
                        "shared batch {id} of {table} without its rows"
                    )));
                }
                out.push((id, batch.clone()));
            }
        }
        Ok(out)
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
                .filter(|b| table_of(b) != Some(table))
                .collect(),
        }
    }

    /// Refuses a snapshot holding a table `operator` does not declare (another operator's
    /// state, or another version's); `extra` names tables the runtime adds itself.
    pub fn check_declared(
        &self,
        operator: &str,
        declared: &[StateTable],
        extra: &[&str],
    ) -> EngineResult<()> {
        match self.table_names().into_iter().find(|t| {
            !declared.iter().any(|d| d.name == t.as_str()) && !extra.contains(&t.as_str())
        }) {
            Some(other) => Err(corrupt(format!(
                "{operator} declares no state table {other}"
            ))),
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

/// The table a snapshot batch belongs to.
pub fn table_of(batch: &RecordBatch) -> Option<&str> {
    batch
        .schema_ref()
        .metadata()
        .get(TABLE_KEY)
        .map(String::as_str)
}

/// The id of a shared snapshot batch; `None` for a batch that is not shared.
pub fn shared_id(batch: &RecordBatch) -> EngineResult<Option<u64>> {
    match batch.schema_ref().metadata().get(SHARED_KEY) {
        None => Ok(None),
        Some(id) => id
            .parse()
            .map(Some)
            .map_err(|_| corrupt(format!("a shared batch with id {id:?}"))),
    }
}

/// Whether a shared snapshot batch is a reference without rows (see
/// [`StateSnapshot::add_shared_unchanged`]).
pub fn is_unchanged(batch: &RecordBatch) -> bool {
    batch.schema_ref().metadata().contains_key(UNCHANGED_KEY)
}

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

    #[test]
    fn shared_batches_keep_their_ids_and_adding_one_again_unshares_it() {
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut s = StateSnapshot::new();
        s.add_shared("rows", 7, rows.clone()).unwrap();
        s.add_shared("rows", 9, rows.clone()).unwrap();
        let ids: Vec<u64> = s
            .shared("rows")
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![7, 9]);
        assert_eq!(s.table("rows").len(), 2, "table() lists shared batches too");
        // A shared batch added with `add` (a copy of another snapshot's) is not shared.
        let copy = s.table("rows").remove(0);
        let mut t = StateSnapshot::new();
        t.add("rows", copy).unwrap();
        assert!(t.shared("rows").unwrap().is_empty());
        assert_eq!(shared_id(&t.batches()[0]).unwrap(), None);
        // A reference without rows names its batch, but an operator never receives one.
        let mut r = StateSnapshot::new();
        r.add_shared_unchanged("rows", 7).unwrap();
        assert_eq!(shared_id(&r.batches()[0]).unwrap(), Some(7));
        assert!(is_unchanged(&r.batches()[0]));
        assert!(r.shared("rows").is_err());
    }
}
