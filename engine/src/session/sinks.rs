//! `CREATE SINK`, `SHOW SINKS` and `COPY ... TO 'file'`: exporting a query's rows to files.
//!
//! A sink is a background job (like a materialized view's) whose rows go to a
//! [`SinkWriter`](crate::connector::SinkWriter) instead of a view. `COPY ... TO 'file'` runs a
//! query over bounded inputs once and writes its rows to one file, which appears only when
//! complete.

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use futures::StreamExt;

use super::checkpoints::{CheckpointOptions, JobOptions};
use super::ddl::{relation_name, show_result};
use super::views::{MAX_STATE_BYTES, check_unique_names, result_fields};
use super::{CommandTag, Session, StatementResult};
use crate::catalog::RelationDef;
use crate::catalog::RelationKind;
use crate::connector::{ConnectorOptions, SinkConnector, SinkContext, SinkMetrics, SinkWriter};
use crate::error::{EngineError, EngineResult, plan_error};
use crate::jobs::{JobOutput, JobSpec, SinkState};
use crate::late_rows::LATE_ROWS_OPTION;
use crate::operators::OperatorInfo;
use crate::operators::sink::{SharedSinkWriter, SinkOperator, with_writer};
use crate::plan::planner::{reads_streams, reads_views, relations_read};
use crate::runtime::message::Message;
use crate::sql::parser::{CopyToFile, CreateSink};
use crate::view::{ViewMode, ViewStore};

/// The sink connector that writes `COPY ... TO 'file'`.
const COPY_CONNECTOR: &str = "file";

impl Session {
    /// `CREATE SINK s {FROM v | AS query} WITH (connector = '...', ...)`: checks the options,
    /// opens the writer and starts the job. `statement_sql` is saved in the catalog; `sql` is
    /// the whole query string errors point into.
    pub(crate) async fn create_sink(
        &mut self,
        create: &CreateSink,
        statement_sql: &str,
        sql: &str,
    ) -> EngineResult<StatementResult> {
        self.start_sink(create, statement_sql, sql, false).await
    }

    /// Replays a saved `CREATE SINK` at startup. A sink whose input ended before the restart
    /// is listed as finished and not run again, so a restart does not export a bounded input
    /// twice.
    pub(crate) async fn restore_sink(
        &mut self,
        create: &CreateSink,
        statement_sql: &str,
    ) -> EngineResult<StatementResult> {
        self.start_sink(create, statement_sql, statement_sql, true)
            .await
    }

    async fn start_sink(
        &mut self,
        create: &CreateSink,
        statement_sql: &str,
        sql: &str,
        restoring: bool,
    ) -> EngineResult<StatementResult> {
        const TAG: &str = "CREATE SINK";
        let name = relation_name(&create.name)?;
        if let Some(exists) = self.already_exists(&name, create.if_not_exists, TAG) {
            return exists;
        }
        let mut options: ConnectorOptions = create.options.iter().cloned().collect();
        let connector = self.sink_connector(options.remove("connector").as_deref())?;
        let mut checkpoint = CheckpointOptions::default();
        for key in CheckpointOptions::KEYS {
            if let Some(value) = options.remove(key) {
                checkpoint.read(key, &value)?;
            }
        }
        let lateness = options
            .remove(super::views::ALLOWED_LATENESS)
            .map(|v| super::views::parse_interval(super::views::ALLOWED_LATENESS, &v))
            .transpose()?;
        // The sink's own state limit, else the session's.
        let max_state_bytes = match options.remove(MAX_STATE_BYTES) {
            Some(value) => super::parse_max_state_bytes(MAX_STATE_BYTES, &value)?,
            None => self.max_state_bytes()?,
        };
        let late_rows = options.remove(LATE_ROWS_OPTION);
        let names = crate::sql::names::postgres_column_names(&create.query);
        let mut plan = self
            .optimized_plan(create.query.as_ref().clone(), sql, &[])
            .await?;
        if let Some(nanos) = lateness {
            plan = super::views::with_allowed_lateness(plan, nanos)?;
        }
        if !reads_streams(&plan) && !reads_views(&plan) {
            return Err(EngineError::Unsupported(
                "a sink over a query that reads no source, table or view (COPY (query) TO \
                 'file' exports it once)"
                    .to_string(),
            ));
        }
        let stream_plan = self.streaming_plan(&plan)?;
        if lateness.is_some() {
            super::views::check_allowed_lateness(&stream_plan)?;
        }
        let changelog = stream_plan.is_updating();
        let emissions = stream_plan.window_emissions();
        if changelog && !connector.accepts_changelog() && emissions.iter().any(|e| e.is_updating())
        {
            return Err(EngineError::Unsupported(format!(
                "a sink over a window aggregate with EMIT ON UPDATE or allowed.lateness (its rows \
                 are a changelog: a window's rows are retracted as rows update it) into \
                 connector '{}', which appends rows; leave out EMIT ON UPDATE and \
                 allowed.lateness (each window is then written once, when it closes, and later \
                 rows are late), or keep the result in a materialized view",
                connector.name(),
            )));
        }
        if changelog && !connector.accepts_changelog() {
            return Err(EngineError::Unsupported(format!(
                "a sink over an updating query (an aggregate without a window) into connector \
                 '{}', which {}",
                connector.name(),
                connector.changelog_hint()
            )));
        }
        let fields = result_fields(&plan, names.as_deref());
        check_unique_names(&fields, &format!("sink {name}"))?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let metrics = Arc::new(SinkMetrics::default());
        let query = create.query.to_string();
        let mut depends_on = super::views::with_views(
            relations_read(&plan),
            self.views_named(create.query.as_ref()),
        );
        let checkpointing =
            self.job_checkpointing(&name, &query, &stream_plan, checkpoint, reads_views(&plan))?;
        let context = SinkContext {
            sink_name: name.clone(),
            schema: Arc::clone(&schema),
            changelog,
            options: options.clone(),
            time_columns: crate::plan::planner::time_attributes(&plan).unwrap_or_default(),
            metrics: Arc::clone(&metrics),
            exactly_once: checkpointing.checkpoints.is_some(),
        };
        connector.validate(&context)?;
        let late_rows = self
            .late_row_table(&name, late_rows.as_deref(), &mut depends_on)
            .await?;
        let job_options = JobOptions {
            max_state_bytes,
            late_rows,
        };
        // One rule: a sink whose input ended before the restart is not run again. Its final
        // checkpoint says so, and so does its output (`completed`: the file sink's `_SUCCESS`,
        // which `finish` writes last). A crash after `finish` and before the final checkpoint
        // leaves only the output's word, and running the sink again from its previous
        // checkpoint would then publish rows twice; a sink without checkpoints has only that.
        let finished = restoring && (checkpointing.finished() || connector.completed(&context));
        let state = Arc::new(SinkState::new(metrics));
        let mut refused = checkpointing.refused.clone();
        let spec = JobSpec {
            name: name.clone(),
            query,
            plan: stream_plan,
            parallelism: checkpointing.parallelism,
            output: JobOutput::Sink(state),
            checkpoints: checkpointing.checkpoints.clone(),
        };
        let job = if finished || refused.is_some() {
            None
        } else {
            let writer: SharedSinkWriter = Arc::new(Mutex::new(connector.open(context)?));
            let started = (|| {
                // The files of the last complete checkpoint become visible; later ones go.
                // Restored from a checkpoint, the sink operator does it with its part (a
                // checkpoint written before sinks were operators has the record in its
                // manifest); without one, no file of the sink is committed.
                let manifest_record = checkpointing
                    .loaded
                    .as_ref()
                    .map(|l| l.manifest.sink.as_deref());
                match manifest_record {
                    None if restoring && checkpointing.checkpoints.is_some() => {
                        with_writer(&writer, |w| w.recover(None))?;
                    }
                    Some(Some(record)) => with_writer(&writer, |w| w.recover(Some(record)))?,
                    _ => {}
                }
                let sink = SinkOperator::new(
                    OperatorInfo {
                        name: "Sink".to_string(),
                        schema: Arc::clone(&schema),
                    },
                    Arc::clone(&writer),
                );
                checkpointing.launch(self, &name, &spec.plan, &job_options, Some(Box::new(sink)))
            })();
            match checkpointing.refuse_restore(&name, started) {
                Ok(running) => Some((writer, running)),
                Err(why) => {
                    refused = Some(why?);
                    None
                }
            }
        };
        self.engine.catalog.insert(RelationDef {
            name: name.clone(),
            kind: RelationKind::Sink,
            schema,
            watermark: None,
            connector: Some(connector.name().to_string()),
            options,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            upsert: false,
            ddl: statement_sql.to_string(),
            table: None,
            view: None,
            depends_on,
            query: None,
            system: false,
        })?;
        let job = match (job, refused) {
            (Some((writer, running)), _) => self.engine.jobs.start(spec, running, Some(writer)),
            (None, Some(refused)) => self.engine.jobs.failed(spec, refused),
            (None, None) => {
                tracing::info!(sink = %name, "sink restored as finished: its input had ended");
                let job = self.engine.jobs.finished(spec);
                checkpointing.restore_late_rows(&job.metrics);
                job
            }
        };
        tracing::info!(job = job.id, sink = %name, "sink created");
        Ok(StatementResult::Command(CommandTag::new(TAG)))
    }

    fn sink_connector(&self, name: Option<&str>) -> EngineResult<Arc<dyn SinkConnector>> {
        let names = self.engine.connectors.sink_names().join(", ");
        let name = name.ok_or_else(|| {
            plan_error(format!(
                "CREATE SINK needs WITH (connector = '...'); sink connectors: {names}"
            ))
        })?;
        self.engine.connectors.sink(name).cloned().ok_or_else(|| {
            plan_error(format!(
                "unknown sink connector '{name}'; sink connectors: {names}"
            ))
        })
    }

    /// `SHOW SINKS`: each sink with its job's status and what it has written.
    pub(crate) fn show_sinks(&self) -> EngineResult<StatementResult> {
        let schema = sinks_schema();
        let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
        for r in self.engine.catalog.list() {
            if r.kind != RelationKind::Sink {
                continue;
            }
            let job = self.engine.jobs.for_name(&r.name);
            let sink = job.as_ref().and_then(|j| match &j.output {
                JobOutput::Sink(s) => Some(Arc::clone(s)),
                JobOutput::View(_) => None,
            });
            let count = |f: fn(&SinkMetrics) -> &std::sync::atomic::AtomicU64| {
                sink.as_ref()
                    .map(|s| SinkMetrics::get(f(&s.metrics)).to_string())
                    .unwrap_or_default()
            };
            let row = [
                r.name.clone(),
                r.connector.clone().unwrap_or_default(),
                // A file sink's folder; a Kafka sink's topic.
                r.options
                    .get("path")
                    .or_else(|| r.options.get("topic"))
                    .cloned()
                    .unwrap_or_default(),
                job.as_ref().map(|j| j.id.to_string()).unwrap_or_default(),
                job.as_ref()
                    .map(|j| j.status().name().to_string())
                    .unwrap_or_default(),
                count(|m| &m.rows),
                count(|m| &m.files),
                count(|m| &m.partitions_committed),
                count(|m| &m.late_rows),
            ];
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        show_result(&schema, columns)
    }

    /// `COPY (query) TO 'path' [WITH] (FORMAT parquet|csv|json, COMPRESSION ..., ROW_GROUP_SIZE
    /// n, HEADER)`: runs a query over bounded inputs to its end and writes its rows to one
    /// file, visible once complete. Views are read as they are now; an updating query writes
    /// its final rows.
    pub(crate) async fn copy_to_file(
        &mut self,
        copy: &CopyToFile,
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        let connector = self.sink_connector(Some(COPY_CONNECTOR))?;
        let mut options = ConnectorOptions::new();
        for (key, value) in &copy.options {
            let key = match key.as_str() {
                "row_group_size" => "row_group.size".to_string(),
                other => other.to_string(),
            };
            let value = match (key.as_str(), value) {
                (_, Some(v)) => v.clone(),
                ("header", None) => "true".to_string(),
                (k, None) => {
                    return Err(plan_error(format!("COPY option {k} needs a value")));
                }
            };
            options.insert(key, value);
        }
        let names = crate::sql::names::postgres_column_names(&copy.query);
        let plan = self
            .optimized_plan(copy.query.as_ref().clone(), sql, params)
            .await?;
        let fields = result_fields(&plan, names.as_deref());
        check_unique_names(&fields, "the query of COPY")?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let context = SinkContext {
            sink_name: "COPY".to_string(),
            schema: Arc::clone(&schema),
            changelog: false,
            options,
            time_columns: Vec::new(),
            metrics: Arc::new(SinkMetrics::default()),
            exactly_once: false,
        };
        let unbounded = |names: Vec<&str>| {
            EngineError::Unsupported(format!(
                "COPY TO a file of a query over an unbounded source ({}): it would never end; \
                 export it continuously with CREATE SINK ... WITH (connector = 'parquet', \
                 path = '...')",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        // Check the whole statement before the file is created.
        let rows: RowSource = if reads_streams(&plan) {
            let stream_plan = self.streaming_plan(&plan)?;
            let endless = super::query::endless_relations(&stream_plan);
            if !endless.is_empty() {
                return Err(unbounded(endless));
            }
            let updating = stream_plan.is_updating();
            let running = self.launch(&stream_plan, sql.trim())?;
            if !running.unbounded_sources().is_empty() {
                let names = running.unbounded_sources().to_vec();
                return Err(unbounded(names.iter().map(String::as_str).collect()));
            }
            RowSource::Stream { running, updating }
        } else {
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| EngineError::from_datafusion(e, sql))?;
            RowSource::Batch(df.execute_stream().await?)
        };
        let writer = connector.open_file(context, &copy.path).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "COPY TO a file with connector '{}'",
                connector.name()
            ))
        })??;
        let rows = write_all(rows, writer, &schema).await?;
        Ok(StatementResult::Command(
            CommandTag::new("COPY").with_rows(rows),
        ))
    }
}

/// Where the rows of a `COPY ... TO 'file'` come from.
enum RowSource {
    Stream {
        running: crate::runtime::RunningQuery,
        /// A changelog, folded into its final rows before writing.
        updating: bool,
    },
    Batch(datafusion::execution::SendableRecordBatchStream),
}

/// Writes every row to `writer` and finishes the file; on a failure removes it.
async fn write_all(
    source: RowSource,
    mut writer: Box<dyn SinkWriter>,
    schema: &SchemaRef,
) -> EngineResult<usize> {
    let mut rows = 0;
    let mut write = |writer: &mut Box<dyn SinkWriter>, batch: RecordBatch| -> EngineResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())?;
        rows += batch.num_rows();
        crate::runtime::blocking(|| writer.write(&batch))?;
        Ok(())
    };
    let result: EngineResult<()> = async {
        match source {
            RowSource::Stream {
                mut running,
                updating: false,
            } => {
                while let Some(batch) = running.next_batch().await? {
                    write(&mut writer, batch)?;
                }
            }
            RowSource::Stream {
                mut running,
                updating: true,
            } => {
                let view = ViewStore::try_new(Arc::clone(schema), ViewMode::Updating, None, None)?;
                while let Some(message) = running.next_message().await? {
                    if matches!(message, Message::Data(_)) {
                        view.apply(message).await?;
                    }
                }
                for batch in view.snapshot()? {
                    write(&mut writer, batch)?;
                }
            }
            RowSource::Batch(mut stream) => {
                while let Some(batch) = stream.next().await.transpose()? {
                    write(&mut writer, batch)?;
                }
            }
        }
        crate::runtime::blocking(|| writer.finish())?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(rows),
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}

/// The columns of `SHOW SINKS`.
pub(crate) fn sinks_schema() -> SchemaRef {
    let names = [
        "name",
        "connector",
        "path",
        "job",
        "status",
        "rows",
        "files",
        "partitions_committed",
        "late_rows",
    ];
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}
