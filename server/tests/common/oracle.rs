//! Streaming equals batch (DESIGN.md 1.7 rule 5): the pieces the oracle tests share.
//!
//! A continuous query runs through Eddy's engine over bounded nexmark sources; the same
//! computation runs in plain DataFusion over exactly the same events (the nexmark connector
//! opened with the same options, collected into `MemTable`s). Both results are compared as
//! sorted multisets of rows rendered to text. Include with
//! `#[path = "common/oracle.rs"] mod oracle;`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_engine::connector::{ConnectorOptions, ConnectorRegistry, SourceContext};
use eddy_engine::session::{Engine, EngineConfig, StatementResult};
use eddy_engine::sql::parser::parse_sql;
use futures::TryStreamExt;

/// Every connector Eddy ships.
pub fn connectors() -> ConnectorRegistry {
    let mut registry = ConnectorRegistry::default();
    eddy_connectors::register_all(&mut registry, Default::default());
    registry
}

/// The options of a bounded nexmark source of `table` (`bid`, `auction`, `person`).
pub fn nexmark_options(table: &str, events_max: &str) -> ConnectorOptions {
    [
        ("connector", "nexmark"),
        ("nexmark.table", table),
        ("events.max", events_max),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The rows the nexmark connector produces for `table` with [`nexmark_options`].
pub async fn nexmark_rows(table: &str, events_max: &str) -> Vec<RecordBatch> {
    let registry = connectors();
    let connector = registry.source("nexmark").expect("nexmark is registered");
    let options = nexmark_options(table, events_max);
    let schema = connector
        .default_schema(&options)
        .unwrap()
        .expect("nexmark knows its schemas");
    let reader = connector
        .open(SourceContext {
            source_name: table.to_string(),
            start_row: 0,
            start_position: None,
            metadata: Vec::new(),
            schema,
            options,
            metrics: Arc::default(),
            batch_size: 4096,
            split: eddy_engine::connector::SourceSplit::WHOLE,
            parallelism: 1,
            projection: None,
        })
        .unwrap();
    assert!(reader.bounded, "events.max bounds the source");
    reader.stream.try_collect().await.unwrap()
}

/// [`nexmark_rows`], checked to be in event-time order (so that no row can be behind its own
/// source's watermark).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub async fn nexmark_rows_in_order(table: &str, events_max: &str) -> Vec<RecordBatch> {
    let rows = nexmark_rows(table, events_max).await;
    time_range_in_order(&rows);
    rows
}

/// Every row of `batches` as text, columns separated by `|`, sorted. Timestamps are rendered
/// at millisecond precision whatever their unit (DataFusion's `generate_series` yields
/// nanoseconds).
pub fn render(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows: Vec<String> = batches.iter().flat_map(render_rows).collect();
    rows.sort();
    rows
}

/// The rows of `batch` as [`render`] renders them, in order.
fn render_rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let columns: Vec<Arc<dyn Array>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(_, tz) => {
                cast(c, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone())).unwrap()
            }
            _ => Arc::clone(c),
        })
        .collect();
    let formatters: Vec<ArrayFormatter> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            cells.join("|")
        })
        .collect()
}

/// What an updating result holds once its changelog is applied in order: `batches` are led by
/// the op column (`+` inserts a row, `-` deletes one), and the rows left are rendered as
/// [`render`] renders them (without the op column), sorted. Panics when a `-` deletes a row
/// that is not there, as a materialized view refuses it. Also returns how many `-` rows the
/// changelog had (so a test can tell that it exercised retractions).
#[allow(dead_code)] // read by the tests of updating results only
pub fn fold_changelog(batches: &[RecordBatch]) -> (Vec<String>, usize) {
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    let mut retractions = 0;
    for batch in batches {
        let ops = batch.column(0).as_string::<i32>();
        let columns: Vec<usize> = (1..batch.num_columns()).collect();
        let rows = render_rows(&batch.project(&columns).unwrap());
        for (i, row) in rows.into_iter().enumerate() {
            match ops.value(i) {
                "+" => *held.entry(row).or_default() += 1,
                "-" => {
                    retractions += 1;
                    let count = held
                        .get_mut(&row)
                        .unwrap_or_else(|| panic!("a `-` of a row not held: {row}"));
                    *count -= 1;
                    if *count == 0 {
                        held.remove(&row);
                    }
                }
                other => panic!("an op that is neither + nor -: {other}"),
            }
        }
    }
    let rows = held
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n))
        .collect();
    (rows, retractions)
}

/// What a continuous query returned.
pub struct Streamed {
    pub batches: Vec<RecordBatch>,
    /// Rows dropped as late.
    pub late: u64,
    /// The warnings the client would see.
    pub warnings: Vec<String>,
    /// Per plan node, its name and parallel instances.
    #[allow(dead_code)] // read by the parallel tests only
    pub instances: Vec<(String, usize)>,
}

/// Runs `ddl` then `query` through a fresh engine whose sources read `batch_size` rows at a
/// time.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub async fn run_streaming(ddl: &str, query: &str, batch_size: usize) -> Streamed {
    run_parallel(ddl, query, batch_size, 1).await
}

/// [`run_streaming`] with `parallelism` instances of each keyed operator.
#[allow(dead_code)] // not every test binary that includes this module runs in parallel
pub async fn run_parallel(
    ddl: &str,
    query: &str,
    batch_size: usize,
    parallelism: usize,
) -> Streamed {
    let engine = Engine::new(
        EngineConfig {
            data_dir: None,
            batch_size,
            parallelism,
            ..EngineConfig::default()
        },
        connectors(),
        None,
    );
    let mut session = engine.new_session();
    for statement in parse_sql(ddl).unwrap() {
        session.execute(&statement, &[]).await.unwrap();
    }
    let statements = parse_sql(query).unwrap();
    assert_eq!(statements.len(), 1);
    let mut output = match session.execute(&statements[0], &[]).await {
        Ok(StatementResult::Rows(output)) => output,
        Ok(_) => panic!("not a query: {query}"),
        Err(e) => panic!("streaming query failed: {e}\n{query}"),
    };
    let mut batches = Vec::new();
    while let Some(batch) = output.next_batch().await.unwrap() {
        batches.push(batch);
    }
    let metrics = output
        .metrics()
        .expect("a query over a source is continuous");
    Streamed {
        batches,
        late: metrics.late_rows(),
        instances: metrics.instances.clone(),
        warnings: output.warnings(),
    }
}

/// Runs `query` with plain DataFusion over `tables` (name, rows).
pub async fn run_batch(tables: &[(&str, &[RecordBatch])], query: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    for (name, rows) in tables {
        let table = MemTable::try_new(rows[0].schema(), vec![rows.to_vec()]).unwrap();
        ctx.register_table(*name, Arc::new(table)).unwrap();
    }
    let frame = ctx
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("batch query failed to plan: {e}\n{query}"));
    frame
        .collect()
        .await
        .unwrap_or_else(|e| panic!("batch query failed: {e}\n{query}"))
}

/// The smallest and largest `date_time` of `rows`, in epoch milliseconds; panics unless
/// they come in event-time order (so a watermark behind the newest row never makes a row
/// late).
pub fn time_range_in_order(rows: &[RecordBatch]) -> (i64, i64) {
    let mut range = (i64::MAX, i64::MIN);
    for batch in rows {
        let index = batch.schema().index_of("date_time").unwrap();
        let times = batch
            .column(index)
            .as_primitive::<TimestampMillisecondType>();
        for t in times.iter().flatten() {
            assert!(t >= range.1, "nexmark rows are in event-time order");
            range = (range.0.min(t), t);
        }
    }
    range
}

/// A SQL timestamp literal for epoch milliseconds.
#[allow(dead_code)] // not every test binary that includes this module writes time literals
pub fn timestamp_literal(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).expect("a representable time");
    format!(
        "TIMESTAMP '{}'",
        t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f")
    )
}

/// Multiset difference `a - b` (at most `limit` rows).
pub fn missing_from(a: &[String], b: &[String], limit: usize) -> Vec<String> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for row in b {
        *counts.entry(row).or_default() += 1;
    }
    let mut out = Vec::new();
    for row in a {
        let n = counts.entry(row).or_default();
        if *n > 0 {
            *n -= 1;
        } else if out.len() < limit {
            out.push(row.clone());
        }
    }
    out
}

/// Panics, showing the rows only one side has, unless the sorted rows are equal.
pub fn assert_same_rows(streaming: &[String], batch: &[String], context: &str) {
    if streaming != batch {
        panic!(
            "streaming differs from batch: {} rows vs {} rows\n\
             only in streaming (first 10):\n  {}\nonly in batch (first 10):\n  {}\n{context}",
            streaming.len(),
            batch.len(),
            missing_from(streaming, batch, 10).join("\n  "),
            missing_from(batch, streaming, 10).join("\n  "),
        );
    }
}
