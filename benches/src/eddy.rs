//! Eddy's side of the benchmark: an engine in this process with the Nexmark sources declared,
//! and continuous queries run to their end.
//!
//! The sources are bounded (`events.max`): a query ends when the generator has produced every
//! event, every window has fired and every join has been padded, so a run's rows are the whole
//! result over those events (see DESIGN 1.7, rule 5).

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::session::{Engine, EngineConfig, Session, StatementResult};
use eddy_engine::sql::parser::parse_sql;

use crate::BenchResult;

/// The watermark every source declares: event time may lag by 4 seconds.
pub const WATERMARK: &str = "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND";

/// What the generated sources produce.
#[derive(Debug, Clone)]
pub struct Events {
    /// Events of the combined person/auction/bid stream (`events.max`).
    pub count: u64,
    /// Event time of the first event (`base.time`); the generator's default when `None`.
    pub base_time: Option<String>,
}

/// A session of an engine that knows the sources `bids`, `auctions` and `persons`.
pub struct Streaming {
    session: Session,
}

/// The end of a continuous query.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows of the result; of an updating result, those its changelog leaves (inserted less
    /// deleted).
    pub rows: usize,
    /// The changelog rows of an updating result (`None` for an append-only one).
    pub changes: Option<usize>,
    /// Rows dropped because their window or state had already been emitted.
    pub late_rows: u64,
    /// What the client would be warned about: late rows, malformed source rows.
    pub warnings: Vec<String>,
}

impl Streaming {
    /// An engine with `config`, and a session in which the three Nexmark sources exist.
    pub async fn new(config: EngineConfig, events: &Events) -> BenchResult<Self> {
        let mut connectors = ConnectorRegistry::default();
        eddy_connectors::register_all(&mut connectors, Default::default());
        let engine = Engine::new(config, connectors, None);
        let mut streaming = Self {
            session: engine.new_session(),
        };
        let base_time = events
            .base_time
            .as_ref()
            .map(|t| format!(", base.time = '{t}'"))
            .unwrap_or_default();
        for (source, table) in [
            ("bids", "bid"),
            ("auctions", "auction"),
            ("persons", "person"),
        ] {
            streaming
                .execute(&format!(
                    "CREATE SOURCE {source} ({WATERMARK}) WITH (connector = 'nexmark', \
                     nexmark.table = '{table}', events.max = '{}'{base_time})",
                    events.count
                ))
                .await?;
        }
        // Nexmark q13's side table, filled before any query starts.
        streaming
            .execute(&format!(
                "CREATE TABLE side_input (key BIGINT, value VARCHAR); \
                 INSERT INTO side_input {}",
                crate::queries::SIDE_INPUT_ROWS
            ))
            .await?;
        Ok(streaming)
    }

    /// Declares `bids_file`, the CSV file of bids that [`crate::csv_file`] wrote.
    pub async fn add_file_source(&mut self, path: &Path) -> BenchResult<()> {
        let path = path
            .to_str()
            .ok_or("the temporary directory's path is not UTF-8")?;
        self.execute(&format!(
            "CREATE SOURCE bids_file (auction BIGINT, bidder BIGINT, price BIGINT, \
             date_time TIMESTAMP(3), {WATERMARK}) \
             WITH (connector = 'file', path = '{}', format = 'csv', header = 'true')",
            path.replace('\'', "''")
        ))
        .await
    }

    /// The engine the session belongs to: its jobs, for the checkpoint run.
    pub fn engine(&self) -> &Arc<Engine> {
        self.session.engine()
    }

    /// Executes statements that return no rows (`CREATE SOURCE`, `SET`).
    pub async fn execute(&mut self, sql: &str) -> BenchResult<()> {
        for statement in parse_sql(sql)? {
            match self.session.execute(&statement, &[]).await? {
                StatementResult::Command(_) | StatementResult::Notice { .. } => {}
                _ => return Err(format!("expected a command, not rows: {sql}").into()),
            }
        }
        Ok(())
    }

    /// Runs a query to its end, handing each result batch to `on_batch`.
    pub async fn run(
        &mut self,
        sql: &str,
        mut on_batch: impl FnMut(&RecordBatch) -> BenchResult<()>,
    ) -> BenchResult<Outcome> {
        let mut statements = parse_sql(sql)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => statement,
            _ => return Err(format!("expected one query: {sql}").into()),
        };
        let mut output = match self.session.execute(&statement, &[]).await? {
            StatementResult::Rows(output) => output,
            // `COPY ... TO 'file'`: the rows went to the file; the tag counts them.
            StatementResult::Command(tag) => {
                return Ok(Outcome {
                    rows: tag.rows.unwrap_or(0),
                    ..Outcome::default()
                });
            }
            _ => return Err(format!("not a query: {sql}").into()),
        };
        let mut outcome = Outcome::default();
        let mut deleted = 0;
        while let Some(batch) = output.next_batch().await? {
            outcome.rows += batch.num_rows();
            if let Some(ops) = changelog_ops(&batch) {
                *outcome.changes.get_or_insert(0) += batch.num_rows();
                deleted += ops.iter().filter(|op| *op == Some("-")).count();
            }
            on_batch(&batch)?;
        }
        if outcome.changes.is_some() {
            outcome.rows -= 2 * deleted;
        }
        outcome.late_rows = output.metrics().map_or(0, |m| m.late_rows());
        outcome.warnings = output.warnings();
        Ok(outcome)
    }

    /// Runs a query and keeps its result.
    pub async fn collect(&mut self, sql: &str) -> BenchResult<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        self.run(sql, |b| {
            batches.push(b.clone());
            Ok(())
        })
        .await?;
        Ok(batches)
    }
}

/// The op column of a batch of an updating result (a changelog led by it).
fn changelog_ops(batch: &RecordBatch) -> Option<&datafusion::arrow::array::StringArray> {
    let name = batch.schema_ref().fields().first()?.name().clone();
    if name != eddy_engine::plan::CHANGELOG_OP && name != "op" {
        return None;
    }
    batch
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
}
