//! Queries: planning with DataFusion, running as a stream or as a batch, cursors, `INSERT`
//! and `EXPLAIN`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, WriteOp};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Declare, FetchDirection, Statement};

use super::{
    CommandTag, QueryOutput, ResultStream, Session, StatementResult, TransactionState, fetch_count,
};
use crate::error::{EngineError, EngineResult};
use crate::plan::planner::{plan_stream, reads_streams, reads_views, streaming_only_node};
use crate::plan::{ExplainOptions, StreamPlan};
use crate::runtime::{LaunchContext, RunningQuery};

/// An open cursor: a running query and the rows of a batch not yet fetched.
pub(crate) struct Cursor {
    output: QueryOutput,
    leftover: Option<RecordBatch>,
}

impl Cursor {
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.output.schema
    }
}

/// How to start a dataflow.
pub(crate) struct JobLaunch<'a> {
    /// Names the dataflow in `eddy_dead_letters` and its late-row table (a job's name, an
    /// ad-hoc query's text).
    pub job: &'a str,
    /// For a background job that checkpoints: how it takes part.
    pub checkpoint: Option<crate::runtime::CheckpointSetup>,
    /// Instances of each keyed operator.
    pub parallelism: usize,
    /// What its operator state may hold.
    pub state_limit: crate::runtime::memory::StateLimit,
    /// A sink's job: the operator it ends in, with its state tables.
    pub sink: Option<(
        Box<dyn crate::operators::Operator>,
        Vec<crate::state::StateTable>,
    )>,
    /// Where its operators append the rows they drop as late (`WITH (late.rows = ...)`).
    pub late_rows: Option<Arc<crate::late_rows::LateRowTable>>,
    /// How it follows the views it reads.
    pub pace: crate::view::FollowerPace,
}

impl Session {
    /// Plans a statement with DataFusion (analyzed, not yet optimized).
    pub(crate) async fn logical_plan(
        &self,
        stmt: Statement,
        sql: &str,
    ) -> EngineResult<LogicalPlan> {
        self.ctx
            .state()
            .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
            .await
            .map_err(|e| EngineError::from_datafusion(e, sql))
    }

    /// Plans, binds parameters and optimizes.
    /// The streaming plan of a query, and the session state its expressions are compiled
    /// with: for tests and tools that drive operators directly.
    pub async fn stream_plan(
        &self,
        sql: &str,
    ) -> EngineResult<(crate::plan::StreamPlan, datafusion::execution::SessionState)> {
        let statement = crate::sql::parser::parse_sql(sql)?
            .pop()
            .ok_or_else(|| EngineError::Internal("no statement".to_string()))?;
        let crate::sql::parser::EddyStatement::Sql(stmt) = statement.statement else {
            return Err(EngineError::Internal("not a query".to_string()));
        };
        let plan = self.optimized_plan(*stmt, sql, &[]).await?;
        Ok((self.streaming_plan(&plan)?, self.ctx.state()))
    }

    /// True when `plan` (analyzed, not optimized) is a continuous query whose result is
    /// updating (a changelog). False when it cannot be planned yet (e.g. it has parameters
    /// planning needs): running it reports why.
    pub(crate) fn is_updating_query(&self, plan: &LogicalPlan) -> bool {
        reads_streams(plan)
            && self
                .optimize(plan)
                .ok()
                .and_then(|p| plan_stream(&p).ok())
                .is_some_and(|p| p.is_updating())
    }

    pub(crate) async fn optimized_plan(
        &self,
        stmt: Statement,
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<LogicalPlan> {
        let plan = self.logical_plan(stmt, sql).await?;
        let plan = if params.is_empty() {
            plan
        } else {
            plan.with_param_values(ParamValues::from(params.to_vec()))
                .map_err(|e| EngineError::from_datafusion(e, sql))?
        };
        self.optimize(&plan)
            .map_err(|e| EngineError::from_datafusion(e, sql))
    }

    /// DataFusion's optimizer over `plan`. A plan with `FOR SYSTEM_TIME AS OF` keeps every
    /// column (no projection pruning): the temporal join needs the left's time attribute and
    /// the right's version time even when the query reads neither, and the marker names the
    /// former only as text.
    fn optimize(&self, plan: &LogicalPlan) -> datafusion::common::Result<LogicalPlan> {
        let state = self.ctx.state();
        let as_of = plan
            .exists(|node| {
                Ok(node
                    .expressions()
                    .iter()
                    .any(crate::plan::temporal::has_marker))
            })
            .unwrap_or(false);
        if !as_of {
            return state.optimize(plan);
        }
        let rules: Vec<_> = state
            .optimizers()
            .iter()
            .filter(|rule| rule.name() != "optimize_projections")
            .cloned()
            .collect();
        datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_optimizer_rules(rules)
            .build()
            .optimize(plan)
    }

    /// Starts the dataflow of a streaming plan at the session's parallelism; `job` names it
    /// in `eddy_dead_letters` (an ad-hoc query's text).
    pub(crate) fn launch(&self, plan: &StreamPlan, job: &str) -> EngineResult<RunningQuery> {
        let state_limit = crate::runtime::memory::StateLimit {
            bytes: self.max_state_bytes()?,
            setting: super::MAX_STATE_BYTES,
        };
        let pace = match self.engine.config.client_follow_buffer {
            Some(bytes) => crate::view::FollowerPace::CutOffBehind(bytes),
            None => crate::view::FollowerPace::Backpressure,
        };
        self.launch_with(
            plan,
            JobLaunch {
                job,
                checkpoint: None,
                parallelism: self.parallelism()?,
                state_limit,
                sink: None,
                late_rows: None,
                pace,
            },
        )
    }

    /// Starts a dataflow as `launch` says (a background job's, or an ad-hoc query's).
    pub(crate) fn launch_with(
        &self,
        plan: &StreamPlan,
        launch: JobLaunch<'_>,
    ) -> EngineResult<RunningQuery> {
        let state = self.ctx.state();
        crate::runtime::launch_into(
            plan,
            &LaunchContext {
                state: &state,
                connectors: &self.engine.connectors,
                batch_size: self.engine.config.batch_size,
                parallelism: launch.parallelism,
                live_tasks: Arc::clone(&self.engine.live_tasks),
                checkpoint: launch.checkpoint,
                memory: crate::runtime::memory::QueryMemory::new(
                    Arc::clone(&self.engine.memory),
                    launch.state_limit,
                ),
                dead_letters: Some(self.engine.dead_letters.sink(launch.job)),
                late_rows: launch.late_rows,
                follow_pace: launch.pace,
            },
            launch.sink,
        )
    }

    /// Runs a query: continuously if it reads a stream, as a batch otherwise. A query that
    /// reads only materialized views reads their current contents, unless `follow_views`
    /// (`COPY ... TO STDOUT`), which follows the views as streams.
    pub(crate) async fn run_query(
        &self,
        stmt: Statement,
        sql: &str,
        params: &[ScalarValue],
        follow_views: bool,
    ) -> EngineResult<QueryOutput> {
        let names = crate::sql::names::postgres_column_names(&stmt);
        let plan = self.optimized_plan(stmt, sql, params).await?;
        self.run_plan(plan, sql, names, follow_views).await
    }

    /// Runs an optimized plan; `names` renames the plan's columns (Postgres-style names).
    async fn run_plan(
        &self,
        plan: LogicalPlan,
        sql: &str,
        names: Option<Vec<Option<String>>>,
        follow_views: bool,
    ) -> EngineResult<QueryOutput> {
        let mut schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        if let Some(names) = &names {
            schema = super::output::renamed(&schema, names);
        }
        if reads_streams(&plan) || (follow_views && reads_views(&plan)) {
            let stream_plan = self.streaming_plan(&plan)?;
            if stream_plan.is_updating() {
                schema = changelog_client_schema(&schema);
            }
            let running = self.launch(&stream_plan, sql.trim())?;
            tracing::debug!(query = %sql, "continuous query started");
            Ok(QueryOutput {
                schema,
                stream: ResultStream::Continuous(running),
                tag: "SELECT",
            })
        } else {
            if let Some(node) = streaming_only_node(&plan) {
                return Err(EngineError::Unsupported(format!(
                    "{node} over a query that reads no stream (it runs on sources and tables \
                     only)"
                )));
            }
            let df = self
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| EngineError::from_datafusion(e, sql))?;
            let stream = df.execute_stream().await?;
            Ok(QueryOutput {
                schema,
                stream: ResultStream::Batch(stream),
                tag: "SELECT",
            })
        }
    }

    /// `EXPLAIN [ANALYZE] query`. The plan is shown as the session's parallelism would run
    /// it. `ANALYZE` runs a query over bounded sources to its end, discarding its rows, and
    /// shows the plan with what each operator measured.
    pub(crate) async fn explain(
        &self,
        statement: &Statement,
        analyze: bool,
        sql: &str,
    ) -> EngineResult<StatementResult> {
        if !matches!(statement, Statement::Query(_)) {
            return Err(EngineError::Unsupported(
                "EXPLAIN of statements other than queries".to_string(),
            ));
        }
        let plan = self.optimized_plan(statement.clone(), sql, &[]).await?;
        let text = if !reads_streams(&plan) {
            if analyze {
                return Err(EngineError::Unsupported(
                    "EXPLAIN ANALYZE of a batch query (one that reads no source or table)"
                        .to_string(),
                ));
            }
            format!("Batch query (DataFusion):\n{}", plan.display_indent())
        } else if analyze {
            self.explain_analyze(&self.streaming_plan(&plan)?, sql)
                .await?
        } else {
            self.streaming_plan(&plan)?.explain_with(&ExplainOptions {
                parallelism: self.parallelism()?,
            })
        };
        explain_result(&text)
    }

    /// Runs `plan` to its end, discarding its rows, and renders it with its figures. Refused
    /// when a source never ends (a push table or a view whose job runs at once; a connector
    /// once its reader says so).
    async fn explain_analyze(&self, plan: &StreamPlan, sql: &str) -> EngineResult<String> {
        let unbounded = |names: Vec<&str>| {
            EngineError::Unsupported(format!(
                "EXPLAIN ANALYZE of a query over an unbounded source ({}): it would never \
                 end; EXPLAIN ANALYZE MATERIALIZED VIEW v shows the figures of a running view",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        let tables = endless_relations(plan);
        if !tables.is_empty() {
            return Err(unbounded(tables));
        }
        let mut running = self.launch(plan, sql.trim())?;
        if !running.unbounded_sources().is_empty() {
            let names = running.unbounded_sources().to_vec();
            return Err(unbounded(names.iter().map(String::as_str).collect()));
        }
        while running.next_batch().await?.is_some() {}
        Ok(plan.explain_analyze(running.metrics()))
    }
}

/// An EXPLAIN's text as its one-column result, a row per line.
pub(crate) fn explain_result(text: &str) -> EngineResult<StatementResult> {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    Ok(StatementResult::Rows(QueryOutput::text_columns(
        &["QUERY PLAN"],
        vec![lines],
        "EXPLAIN",
    )?))
}

/// The push tables, and the views whose job still runs, that `plan` reads: inputs that never
/// end by themselves.
pub(crate) fn endless_relations(plan: &StreamPlan) -> Vec<&str> {
    plan.sources()
        .iter()
        .filter(|s| {
            s.relation.table.is_some() || s.relation.view.as_ref().is_some_and(|v| v.is_running())
        })
        .map(|s| s.relation.name.as_str())
        .collect()
}

impl Session {
    /// `INSERT INTO table ...`: DataFusion plans the values (casts, defaults for missing
    /// columns); the rows are appended to the push table, at `COMMIT` inside a block.
    pub(crate) async fn insert(
        &mut self,
        stmt: &Statement,
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        let plan = self.optimized_plan(stmt.clone(), sql, params).await?;
        let LogicalPlan::Dml(DmlStatement {
            table_name,
            op: WriteOp::Insert(_),
            input,
            ..
        }) = plan
        else {
            return Err(EngineError::Unsupported("this form of INSERT".to_string()));
        };
        let (_, table) = self.push_table(table_name.table(), "insert into")?;
        if reads_streams(&input) {
            return Err(EngineError::Unsupported(
                "INSERT ... SELECT from a stream (continuous INSERT is not implemented yet)"
                    .to_string(),
            ));
        }
        let batches = self
            .ctx
            .execute_logical_plan(input.as_ref().clone())
            .await?
            .collect()
            .await?;
        let batches = batches
            .iter()
            .map(|b| conform(b, table.schema()))
            .collect::<EngineResult<Vec<_>>>()?;
        // One batch, so the statement's rows are stored whole or not at all.
        let batch = datafusion::arrow::compute::concat_batches(table.schema(), &batches)?;
        let rows = batch.num_rows();
        if self.transaction == TransactionState::InBlock {
            self.pending_inserts.push((Arc::clone(&table), batch));
        } else {
            table.append(batch)?;
        }
        Ok(StatementResult::Command(
            CommandTag::new("INSERT").with_oid(0).with_rows(rows),
        ))
    }

    pub(crate) async fn declare(
        &mut self,
        stmts: &[Declare],
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        let [declare] = stmts else {
            return Err(EngineError::Unsupported(
                "DECLARE of several cursors at once".to_string(),
            ));
        };
        let Some(query) = &declare.for_query else {
            return Err(EngineError::Unsupported("DECLARE of variables".to_string()));
        };
        if declare.hold == Some(true) {
            return Err(EngineError::Unsupported("cursors WITH HOLD".to_string()));
        }
        if self.transaction == TransactionState::Idle {
            return Err(EngineError::InvalidTransactionState(
                "DECLARE CURSOR can only be used in transaction blocks".to_string(),
            ));
        }
        let [name] = declare.names.as_slice() else {
            return Err(EngineError::Unsupported(
                "DECLARE without one cursor name".to_string(),
            ));
        };
        if self.cursors_mut().contains_key(&name.value) {
            return Err(EngineError::DuplicateCursor(name.value.clone()));
        }
        let output = self
            .run_query(Statement::Query(query.clone()), sql, params, false)
            .await?;
        self.cursors_mut().insert(
            name.value.clone(),
            Cursor {
                output,
                leftover: None,
            },
        );
        Ok(StatementResult::Command(CommandTag::new("DECLARE CURSOR")))
    }

    /// `FETCH n FROM c`: waits until n rows have arrived or the query ended.
    pub(crate) async fn fetch(
        &mut self,
        name: &str,
        direction: &FetchDirection,
    ) -> EngineResult<StatementResult> {
        let wanted = fetch_count(direction)?;
        Ok(StatementResult::Rows(
            self.fetch_cursor(name, wanted).await?,
        ))
    }

    /// The next `wanted` rows (all, if `None`) of cursor `name`: what `FETCH` returns, and what
    /// a client gets executing the cursor as a protocol-level portal.
    pub async fn fetch_cursor(
        &mut self,
        name: &str,
        wanted: Option<usize>,
    ) -> EngineResult<QueryOutput> {
        // Out of the map while rows are awaited; put back after.
        let mut cursor = self
            .cursors_mut()
            .remove(name)
            .ok_or_else(|| EngineError::UnknownCursor(name.to_string()))?;
        let mut batches = Vec::new();
        let mut have = 0usize;
        while wanted.is_none_or(|w| have < w) {
            let batch = match cursor.leftover.take() {
                Some(b) => b,
                None => match cursor.output.next_batch().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        self.cursors_mut().insert(name.to_string(), cursor);
                        return Err(e);
                    }
                },
            };
            let take = wanted.map_or(batch.num_rows(), |w| (w - have).min(batch.num_rows()));
            if take < batch.num_rows() {
                cursor.leftover = Some(batch.slice(take, batch.num_rows() - take));
            }
            have += take;
            batches.push(batch.slice(0, take));
        }
        let schema = Arc::clone(&cursor.output.schema);
        self.cursors_mut().insert(name.to_string(), cursor);
        Ok(QueryOutput::ready(schema, batches, "FETCH"))
    }
}

/// The schema a client sees for an updating query whose plan has `schema`: a leading `op`
/// column (`+` or `-`), then the plan's columns.
pub(crate) fn changelog_client_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
    fields.extend(schema.fields().iter().cloned());
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Gives a batch the table's schema (same column types; names and nullability from the table),
/// refusing NULLs in NOT NULL columns.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> EngineResult<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(EngineError::NotNullViolation(field.name().clone()));
        }
        let column = if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            datafusion::arrow::compute::cast(column, field.data_type())?
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::record_batch::RecordBatchOptions::new()
            .with_row_count(Some(batch.num_rows())),
    )?)
}

/// The type of each `$n` parameter: what DataFusion inferred from comparisons, else the type
/// the parameter is cast to (`$1::int8`), else unknown.
pub(crate) fn parameter_types(plan: &LogicalPlan) -> EngineResult<Vec<Option<DataType>>> {
    let mut types: HashMap<String, Option<DataType>> = plan.get_parameter_types()?;
    let mut from_casts: HashMap<String, DataType> = HashMap::new();
    plan.apply_with_subqueries(|node| {
        // `LIMIT $1 OFFSET $2` take integers.
        if let LogicalPlan::Limit(limit) = node {
            for e in [&limit.skip, &limit.fetch].into_iter().flatten() {
                if let Expr::Placeholder(p) = e.as_ref() {
                    from_casts.entry(p.id.clone()).or_insert(DataType::Int64);
                }
            }
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                let cast = match e {
                    Expr::Cast(c) => Some((&c.expr, c.field.data_type())),
                    Expr::TryCast(c) => Some((&c.expr, c.field.data_type())),
                    _ => None,
                };
                if let Some((inner, data_type)) = cast
                    && let Expr::Placeholder(p) = inner.as_ref()
                {
                    from_casts.entry(p.id.clone()).or_insert(data_type.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    for (id, t) in from_casts {
        let slot = types.entry(id).or_insert(None);
        if slot.is_none() {
            *slot = Some(t);
        }
    }
    let count = types
        .keys()
        .filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Ok((1..=count)
        .map(|i| types.get(&format!("${i}")).cloned().flatten())
        .collect())
}
