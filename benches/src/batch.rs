//! DataFusion's side of the benchmark: the same events held in memory (`MemTable`s named like
//! Eddy's sources), or the same CSV file, and batch queries over them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::BenchResult;
use crate::eddy::Streaming;

/// A DataFusion context holding the generated events.
pub struct Batch {
    ctx: SessionContext,
    /// Bid rows in memory.
    pub bids: usize,
    /// How long Eddy took to generate and stream every bid column (`SELECT * FROM bids`).
    pub bid_generation: Duration,
}

impl Batch {
    /// Generates the events of `streaming`'s sources with Eddy and keeps them in memory, split
    /// into `partitions` partitions (DataFusion scans and aggregates them in parallel).
    pub async fn load(streaming: &mut Streaming, partitions: usize) -> BenchResult<Self> {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(partitions.max(1))
                // As Eddy's sessions: decimal literals are DECIMAL (`0.908 * price` in q1).
                .set_bool("datafusion.sql_parser.parse_float_as_decimal", true),
        );
        let mut bids = 0;
        let mut bid_generation = Duration::ZERO;
        for table in ["bids", "auctions", "persons"] {
            let started = Instant::now();
            let batches = streaming.collect(&format!("SELECT * FROM {table}")).await?;
            if table == "bids" {
                bid_generation = started.elapsed();
                bids = batches.iter().map(RecordBatch::num_rows).sum();
            }
            let schema = batches
                .first()
                .map(RecordBatch::schema)
                .ok_or_else(|| format!("the generator produced no {table}"))?;
            let parts = partitions.max(1);
            let mut split = vec![Vec::new(); parts];
            for (i, batch) in batches.into_iter().enumerate() {
                split[i % parts].push(batch);
            }
            ctx.register_table(table, Arc::new(MemTable::try_new(schema, split)?))?;
        }
        // Nexmark q13's side table.
        ctx.sql(&format!(
            "CREATE TABLE side_input AS {}",
            crate::queries::SIDE_INPUT_ROWS
        ))
        .await?
        .collect()
        .await?;
        Ok(Self {
            ctx,
            bids,
            bid_generation,
        })
    }

    /// Registers the CSV file of bids as `bids_file`, read with `schema`.
    pub async fn register_csv(&self, path: &Path, schema: &SchemaRef) -> BenchResult<()> {
        let path = path
            .to_str()
            .ok_or("the temporary directory's path is not UTF-8")?;
        let options = CsvReadOptions::new().has_header(true).schema(schema);
        self.ctx.register_csv("bids_file", path, options).await?;
        Ok(())
    }

    /// Runs a `COPY ... TO` statement; returns the rows written.
    pub async fn copy(&self, sql: &str) -> BenchResult<usize> {
        let batches = self.ctx.sql(sql).await?.collect().await?;
        let count = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|c| c.value(0))
            })
            .ok_or("DataFusion's COPY returned no count")?;
        Ok(count as usize)
    }

    /// Registers a Parquet file as a table.
    pub async fn register_parquet(&self, name: &str, path: &Path) -> BenchResult<()> {
        let path = path
            .to_str()
            .ok_or("the temporary directory's path is not UTF-8")?;
        self.ctx
            .register_parquet(name, path, Default::default())
            .await?;
        Ok(())
    }

    /// Forgets a table.
    pub fn deregister(&self, name: &str) -> BenchResult<()> {
        self.ctx.deregister_table(name)?;
        Ok(())
    }

    /// Runs a batch query, handing each result batch to `on_batch`; returns the row count.
    pub async fn run(
        &self,
        sql: &str,
        mut on_batch: impl FnMut(&RecordBatch) -> BenchResult<()>,
    ) -> BenchResult<usize> {
        let mut stream = self.ctx.sql(sql).await?.execute_stream().await?;
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            on_batch(&batch)?;
        }
        Ok(rows)
    }
}
