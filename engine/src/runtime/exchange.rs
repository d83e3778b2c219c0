//! The hash exchange: how one stream is spread over the parallel instances of a keyed operator.
//!
//! An exchange task sits behind each upstream instance. It hashes the key columns of every
//! batch (DataFusion's `create_hashes`, with one fixed seed for every exchange of the query, so
//! that both sides of a join agree), groups the row indices by instance with a counting sort,
//! and sends each instance its rows with Arrow's `take`: no allocation per row, and the rows an
//! instance receives keep their upstream order. Watermarks, barriers and the end of input go to
//! every instance, after the rows that preceded them, so each instance sees the upstream
//! watermark exactly as a single instance would; an instance fed by several exchanges combines
//! them like any operator with several inputs (the minimum).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::mpsc;

use crate::error::EngineResult;
use crate::runtime::message::Message;

/// The seed of every exchange's hash. It differs from the hash maps inside operators (which
/// seed their own hashers), so an instance's keys do not crowd a few buckets of its maps.
const EXCHANGE_SEED: u64 = 0x0e0d_d1e5_ca1e_0f01;

/// Assigns each row of a batch to one of `parts` instances by the hash of its key.
pub(crate) struct HashPartitioner {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    parts: usize,
    hashes: Vec<u64>,
    /// Per row, its instance.
    targets: Vec<u32>,
    /// Row indices grouped by instance; `starts[p]..starts[p + 1]` are instance `p`'s.
    grouped: Vec<u32>,
    starts: Vec<usize>,
}

impl HashPartitioner {
    pub(crate) fn new(keys: Vec<Arc<dyn PhysicalExpr>>, parts: usize) -> Self {
        Self {
            keys,
            parts: parts.max(1),
            hashes: Vec::new(),
            targets: Vec::new(),
            grouped: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// The rows of `batch` for each instance, in their order in `batch` (`None` for an
    /// instance that gets none).
    pub(crate) fn partition(
        &mut self,
        batch: &RecordBatch,
    ) -> EngineResult<Vec<Option<RecordBatch>>> {
        let rows = batch.num_rows();
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        self.hashes.clear();
        self.hashes.resize(rows, 0);
        create_hashes(
            &keys,
            &RandomState::with_seed(EXCHANGE_SEED),
            &mut self.hashes,
        )?;

        // Multiply-shift maps the hash onto 0..parts from its high bits.
        let parts = self.parts as u128;
        self.targets.clear();
        self.targets.extend(
            self.hashes
                .iter()
                .map(|&h| ((u128::from(h) * parts) >> 64) as u32),
        );
        self.starts.clear();
        self.starts.resize(self.parts + 1, 0);
        for &t in &self.targets {
            self.starts[t as usize + 1] += 1;
        }
        if let Some(only) = self.starts.iter().skip(1).position(|&n| n == rows) {
            // Every row goes to one instance: no copy.
            let mut out = vec![None; self.parts];
            out[only] = Some(batch.clone());
            return Ok(out);
        }
        for p in 0..self.parts {
            self.starts[p + 1] += self.starts[p];
        }
        self.grouped.clear();
        self.grouped.resize(rows, 0);
        let mut next = self.starts.clone();
        for (row, &t) in self.targets.iter().enumerate() {
            let slot = &mut next[t as usize];
            self.grouped[*slot] = row as u32;
            *slot += 1;
        }
        let mut out = Vec::with_capacity(self.parts);
        for p in 0..self.parts {
            let rows = &self.grouped[self.starts[p]..self.starts[p + 1]];
            out.push(if rows.is_empty() {
                None
            } else {
                let indices = UInt32Array::from_iter_values(rows.iter().copied());
                Some(take_record_batch(batch, &indices)?)
            });
        }
        Ok(out)
    }
}

/// Forwards `input` to `outputs`, each row to the instance its key hashes to, and every
/// watermark, barrier and end to all of them.
pub(crate) async fn run_exchange(
    mut partitioner: HashPartitioner,
    mut input: mpsc::Receiver<Message>,
    outputs: Vec<mpsc::Sender<Message>>,
) -> EngineResult<()> {
    // All inputs closed without `End`: an upstream task failed; its error reaches the
    // consumer through the query's task set.
    while let Some(message) = input.recv().await {
        let end = matches!(message, Message::End);
        match message {
            Message::Data(batch) => {
                for (output, part) in outputs.iter().zip(partitioner.partition(&batch)?) {
                    if let Some(part) = part
                        && output.send(Message::Data(part)).await.is_err()
                    {
                        return Ok(());
                    }
                }
            }
            other => {
                for output in &outputs {
                    if output.send(other.clone()).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if end {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn batch(keys: Vec<i64>) -> RecordBatch {
        let names: Vec<String> = (0..keys.len()).map(|i| format!("row{i}")).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    fn key_column(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn every_row_goes_to_exactly_one_instance_and_a_key_always_to_the_same() {
        let mut p = HashPartitioner::new(vec![Arc::new(Column::new("k", 0))], 3);
        let mut home = std::collections::HashMap::new();
        for round in 0..3 {
            let keys: Vec<i64> = (0..1000).map(|i| (i * 7 + round) % 101).collect();
            let parts = p.partition(&batch(keys.clone())).unwrap();
            let mut seen = 0;
            for (instance, part) in parts.iter().enumerate() {
                let Some(part) = part else { continue };
                seen += part.num_rows();
                for k in key_column(part) {
                    assert_eq!(*home.entry(k).or_insert(instance), instance, "key {k}");
                }
                // Rows keep their order within an instance.
                let names = part
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let order: Vec<usize> = names
                    .iter()
                    .map(|n| n.unwrap()[3..].parse().unwrap())
                    .collect();
                assert!(order.windows(2).all(|w| w[0] < w[1]));
            }
            assert_eq!(seen, 1000);
        }
        let used: std::collections::HashSet<_> = home.values().collect();
        assert_eq!(used.len(), 3, "101 keys spread over all 3 instances");
    }

    #[test]
    fn a_batch_of_one_key_is_passed_whole() {
        let mut p = HashPartitioner::new(vec![Arc::new(Column::new("k", 0))], 2);
        let parts = p.partition(&batch(vec![5; 10])).unwrap();
        assert_eq!(parts.iter().flatten().count(), 1);
        assert_eq!(
            parts.iter().flatten().map(|b| b.num_rows()).sum::<usize>(),
            10
        );
    }
}
