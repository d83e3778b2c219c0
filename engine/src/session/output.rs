//! What executing a statement gives back to the server.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use super::copy::{CopyFormat, CopyIn};
use crate::error::EngineResult;
use crate::runtime::{QueryMetrics, RunningQuery};

/// `schema` with columns renamed (`None` keeps a name); unchanged unless one name per column.
pub(crate) fn renamed(schema: &SchemaRef, names: &[Option<String>]) -> SchemaRef {
    if names.len() != schema.fields().len() || names.iter().all(Option::is_none) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| match n {
            Some(n) => f.as_ref().clone().with_name(n),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The result of one statement.
pub enum StatementResult {
    /// Rows, described by a schema (SELECT, SHOW, EXPLAIN, FETCH).
    Rows(QueryOutput),
    /// `COPY (query) TO STDOUT`: the same rows, sent as COPY data.
    CopyOut(QueryOutput, CopyFormat),
    /// `COPY t FROM STDIN`: the server collects the data and calls `Session::copy_in`.
    CopyIn(CopyIn),
    /// A command that returns no rows.
    Command(CommandTag),
    /// A command that succeeded with a warning for the client (e.g. `COMMIT` outside a block).
    Notice { message: String, then: CommandTag },
}

/// The completion tag of a command, e.g. `INSERT 0 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    pub command: String,
    pub oid: Option<u32>,
    pub rows: Option<usize>,
}

impl CommandTag {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_string(),
            oid: None,
            rows: None,
        }
    }

    pub fn with_rows(mut self, rows: usize) -> Self {
        self.rows = Some(rows);
        self
    }

    pub fn with_oid(mut self, oid: u32) -> Self {
        self.oid = Some(oid);
        self
    }
}

/// Rows to send: their schema, where they come from, and the tag to finish with.
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub stream: ResultStream,
    /// `SELECT`, `SHOW`, `EXPLAIN`, `FETCH`: the first word of the completion tag.
    pub tag: &'static str,
}

impl std::fmt::Debug for QueryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryOutput")
            .field("schema", &self.schema)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// The producer of a result's batches.
pub enum ResultStream {
    /// A continuous query.
    Continuous(RunningQuery),
    /// A batch query run by DataFusion.
    Batch(SendableRecordBatchStream),
    /// Rows already computed.
    Ready(VecDeque<RecordBatch>),
}

impl QueryOutput {
    pub fn ready(schema: SchemaRef, batches: Vec<RecordBatch>, tag: &'static str) -> Self {
        Self {
            schema,
            stream: ResultStream::Ready(batches.into()),
            tag,
        }
    }

    /// A result of text columns, given column by column.
    pub fn text_columns(
        names: &[&str],
        columns: Vec<Vec<String>>,
        tag: &'static str,
    ) -> EngineResult<Self> {
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
        Ok(Self::ready(schema, vec![batch], tag))
    }

    /// Renames result columns (`None` keeps a name); ignored unless one name per column.
    pub fn rename_columns(&mut self, names: &[Option<String>]) {
        self.schema = renamed(&self.schema, names);
    }

    /// The next batch; `None` at the end.
    pub async fn next_batch(&mut self) -> EngineResult<Option<RecordBatch>> {
        match &mut self.stream {
            ResultStream::Continuous(q) => q.next_batch().await,
            ResultStream::Batch(s) => Ok(s.next().await.transpose()?),
            ResultStream::Ready(batches) => Ok(batches.pop_front()),
        }
    }

    /// Counters of a continuous query.
    pub fn metrics(&self) -> Option<&Arc<QueryMetrics>> {
        match &self.stream {
            ResultStream::Continuous(q) => Some(q.metrics()),
            _ => None,
        }
    }

    /// Warnings to show the client once the rows are sent: malformed source rows and late
    /// rows, which are dropped but never silently.
    pub fn warnings(&self) -> Vec<String> {
        let Some(metrics) = self.metrics() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, m) in &metrics.sources {
            if m.malformed() > 0 {
                let first = m.first_error().unwrap_or_default();
                out.push(match m.on_error() {
                    crate::connector::OnError::DeadLetter => format!(
                        "source \"{name}\": sent {} malformed row(s) to eddy_dead_letters; \
                         first: {first}",
                        m.malformed()
                    ),
                    crate::connector::OnError::Skip | crate::connector::OnError::Fail => format!(
                        "source \"{name}\": skipped {} malformed row(s); first: {first}",
                        m.malformed()
                    ),
                });
            }
        }
        if metrics.late_rows() > 0 {
            out.push(format!(
                "dropped {} late row(s) (they arrived after their result was emitted)",
                metrics.late_rows()
            ));
        }
        out
    }
}
