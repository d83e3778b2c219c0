//! `CREATE MATERIALIZED VIEW`, `SHOW VIEWS`, `SHOW JOBS` and `EXPLAIN [ANALYZE] MATERIALIZED
//! VIEW`: continuous queries that run as background jobs.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, CreateView, Expr, Ident, SqlOption, Statement, Value,
};

use super::checkpoints::{CHECKPOINT_INTERVAL, CHECKPOINT_TIMEOUT, CheckpointOptions, JobOptions};
use super::ddl::{column_list, normalize_ident, relation_name, show_result};
use super::query::explain_result;
use super::{CommandTag, QueryOutput, Session, StatementResult};
use crate::catalog::RelationDef;
use crate::catalog::RelationKind;
use crate::error::{EngineError, EngineResult, plan_error};
use crate::jobs::{JobOutput, JobSpec};
use crate::late_rows::LATE_ROWS_OPTION;
use crate::plan::ExplainOptions;
use crate::plan::planner::{plan_stream, reads_streams, reads_views, relations_read};
use crate::runtime::memory::{QueryMemory, StateAccount, StateLimit};
use crate::sql::parser::{ExplainView, sql_options_to_pairs};
use crate::view::{Retention, ViewMode, ViewStore};

/// The option that bounds an append-only view's rows by event time.
const RETENTION: &str = "retention";
/// The option that sets the view's state TTL (overriding the session's `state.ttl`).
const STATE_TTL: &str = "state.ttl";
/// The option that keeps a window aggregate's windows for late rows (shared with
/// `CREATE SINK`).
pub(crate) const ALLOWED_LATENESS: &str = "allowed.lateness";
/// The option that limits the job's operator state (overriding the session's
/// `max_state_bytes`); shared with `CREATE SINK`.
pub(crate) const MAX_STATE_BYTES: &str = "max.state.bytes";

impl Session {
    /// `CREATE MATERIALIZED VIEW v [(columns)] [WITH (retention = '...')] AS query`: starts the
    /// job that maintains the view. `statement_sql` is the statement's own text (saved in the
    /// catalog); `sql` is the whole query string errors point into.
    pub(crate) async fn create_materialized_view(
        &mut self,
        create: &CreateView,
        statement_sql: &str,
        sql: &str,
    ) -> EngineResult<StatementResult> {
        const TAG: &str = "CREATE MATERIALIZED VIEW";
        if create.or_replace || create.or_alter {
            return Err(EngineError::Unsupported(
                "CREATE OR REPLACE MATERIALIZED VIEW (drop the view, then create it)".to_string(),
            ));
        }
        let name = relation_name(&create.name)?;
        if let Some(exists) = self.already_exists(&name, create.if_not_exists, TAG) {
            return exists;
        }
        let options = match &create.options {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(options) => sql_options_to_pairs(options)?,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "view options written as {other}"
                )));
            }
        };
        let stmt = Statement::Query(create.query.clone());
        let names = crate::sql::names::postgres_column_names(&stmt);
        let views_named = self.views_named(&stmt);
        let mut plan = self.optimized_plan(stmt, sql, &[]).await?;
        if !reads_streams(&plan) && !reads_views(&plan) {
            return Err(EngineError::Unsupported(
                "a materialized view over a query that reads no source, table or view".to_string(),
            ));
        }
        let lateness = options
            .iter()
            .find(|(k, _)| k == ALLOWED_LATENESS)
            .map(|(_, v)| parse_interval(ALLOWED_LATENESS, v))
            .transpose()?;
        if let Some(nanos) = lateness {
            plan = with_allowed_lateness(plan, nanos)?;
        }
        let mut stream_plan = plan_stream(&plan)?;
        if lateness.is_some() {
            check_allowed_lateness(&stream_plan)?;
        }
        let mode = if stream_plan.is_updating() {
            ViewMode::Updating
        } else {
            ViewMode::Append
        };
        // The view's columns: the query's (with Postgres' names), renamed by a column list.
        let mut fields = result_fields(&plan, names.as_deref());
        if !create.columns.is_empty() {
            if create.columns.len() != fields.len() {
                return Err(plan_error(format!(
                    "materialized view {name} names {} columns but its query has {}",
                    create.columns.len(),
                    fields.len()
                )));
            }
            for (field, column) in fields.iter_mut().zip(&create.columns) {
                *field = field.clone().with_name(normalize_ident(&column.name));
            }
        }
        check_unique_names(&fields, &format!("materialized view {name}"))?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let time_columns = crate::plan::planner::time_attributes(&plan);
        let mut retention = None;
        let mut checkpoint = CheckpointOptions::default();
        let mut state_ttl = None;
        let mut max_state_bytes = None;
        let mut late_rows = None;
        for (key, value) in &options {
            if checkpoint.read(key, value)? {
                continue;
            }
            match key.as_str() {
                // Read before planning.
                ALLOWED_LATENESS => {}
                STATE_TTL => state_ttl = Some(super::parse_state_ttl(value)?),
                MAX_STATE_BYTES => {
                    max_state_bytes = Some(super::parse_max_state_bytes(MAX_STATE_BYTES, value)?)
                }
                LATE_ROWS_OPTION => late_rows = Some(value.clone()),
                RETENTION => {
                    if mode == ViewMode::Updating {
                        return Err(EngineError::Unsupported(
                            "retention of an updating materialized view (it holds one row per \
                             group, not rows in event time)"
                                .to_string(),
                        ));
                    }
                    let Some(&column) = time_columns.as_deref().and_then(|c| c.first()) else {
                        return Err(plan_error(format!(
                            "materialized view {name} has no event-time column to apply the \
                             retention to (a window's window_end or window_time, or a \
                             source's WATERMARK column)"
                        )));
                    };
                    retention = Some(Retention {
                        column,
                        nanos: parse_retention(value)?,
                    });
                }
                other => {
                    return Err(plan_error(format!(
                        "unknown materialized view option '{other}' (options: {RETENTION}, \
                         {STATE_TTL}, {MAX_STATE_BYTES}, {ALLOWED_LATENESS}, {LATE_ROWS_OPTION}, \
                         {CHECKPOINT_INTERVAL}, {CHECKPOINT_TIMEOUT})"
                    )));
                }
            }
        }
        // The view's own TTL and state limit, else the session's, which the saved statement
        // then records (the catalog replays it after a restart, in a session without the
        // setting).
        let mut recorded_options = Vec::new();
        match state_ttl {
            Some(ttl) => {
                if let Some(ttl) = ttl {
                    stream_plan.set_state_ttl(ttl);
                }
            }
            None => {
                if let Some(ttl) = self.state_ttl()? {
                    stream_plan.set_state_ttl(ttl);
                    recorded_options.push(text_option(
                        STATE_TTL,
                        format!("{} milliseconds", ttl.as_millis()),
                    ));
                }
            }
        }
        let max_state_bytes = match max_state_bytes {
            Some(limit) => limit,
            None => {
                let limit = self.max_state_bytes()?;
                if let Some(bytes) = limit {
                    recorded_options.push(text_option(MAX_STATE_BYTES, bytes.to_string()));
                }
                limit
            }
        };
        let statement_sql = if recorded_options.is_empty() {
            statement_sql.to_string()
        } else {
            let mut recorded = create.clone();
            recorded.options = match recorded.options {
                CreateTableOptions::With(mut options) => {
                    options.extend(recorded_options);
                    CreateTableOptions::With(options)
                }
                _ => CreateTableOptions::With(recorded_options),
            };
            Statement::CreateView(recorded).to_string()
        };
        let view = Arc::new(ViewStore::try_new(
            Arc::clone(&schema),
            mode,
            retention,
            time_columns,
        )?);
        let query = create.query.to_string();
        let mut depends_on = with_views(relations_read(&plan), views_named);
        let late_rows = self
            .late_row_table(&name, late_rows.as_deref(), &mut depends_on)
            .await?;
        let job_options = JobOptions {
            max_state_bytes,
            late_rows,
        };
        let checkpointing =
            self.job_checkpointing(&name, &query, &stream_plan, checkpoint, reads_views(&plan))?;
        let mut refused = checkpointing.refused.clone();
        let running = if refused.is_some() {
            None
        } else {
            let started = (|| {
                if let Some(loaded) = &checkpointing.loaded
                    && let Some((contents, watermark)) = &loaded.view
                {
                    view.restore(contents.clone(), *watermark)?;
                }
                // The view's rows count against its job's limits, as its operators' state does.
                let account =
                    |memory| StateAccount::new(memory, format!("MaterializedView {name}"), 0);
                // A view whose input ended before the restart holds its final contents now.
                if checkpointing.finished() {
                    let limit = StateLimit {
                        bytes: max_state_bytes,
                        setting: MAX_STATE_BYTES,
                    };
                    let memory = QueryMemory::new(Arc::clone(&self.engine.memory), limit);
                    view.attach_account(account(memory))?;
                    return Ok(None);
                }
                let running =
                    checkpointing.launch(self, &name, &stream_plan, &job_options, None)?;
                view.attach_account(account(Arc::clone(running.memory())))?;
                Ok(Some(running))
            })();
            match checkpointing.refuse_restore(&name, started) {
                Ok(running) => running,
                Err(why) => {
                    refused = Some(why?);
                    None
                }
            }
        };
        self.engine.catalog.insert(RelationDef {
            name: name.clone(),
            kind: RelationKind::View,
            schema,
            watermark: None,
            connector: None,
            options: options.into_iter().collect(),
            metadata: Vec::new(),
            primary_key: Vec::new(),
            upsert: false,
            ddl: statement_sql,
            table: None,
            view: Some(Arc::clone(&view)),
            depends_on,
            query: None,
            system: false,
        })?;
        let spec = JobSpec {
            name: name.clone(),
            query,
            plan: stream_plan,
            parallelism: checkpointing.parallelism,
            output: JobOutput::View(view),
            checkpoints: checkpointing.checkpoints.clone(),
        };
        let job = match (running, refused) {
            (Some(running), _) => self.engine.jobs.start(spec, running, None),
            (None, Some(refused)) => self.engine.jobs.failed(spec, refused),
            (None, None) => {
                tracing::info!(view = %name, "view restored as finished from its final checkpoint");
                let job = self.engine.jobs.finished(spec);
                checkpointing.restore_late_rows(&job.metrics);
                if let Some(view) = job.view() {
                    view.finish();
                }
                job
            }
        };
        tracing::info!(job = job.id, view = %name, "materialized view created");
        Ok(StatementResult::Command(CommandTag::new(TAG)))
    }

    /// `EXPLAIN [ANALYZE] MATERIALIZED VIEW v`: the plan of the view's job (with its figures).
    pub(crate) fn explain_view(&self, explain: &ExplainView) -> EngineResult<StatementResult> {
        let name = relation_name(&explain.name)?;
        let job = self
            .engine
            .jobs
            .for_name(&name)
            .filter(|j| j.view().is_some())
            .ok_or_else(|| match self.engine.catalog.get(&name) {
                Some(_) => {
                    EngineError::WrongObjectType(format!("\"{name}\" is not a materialized view"))
                }
                None => EngineError::UnknownRelation {
                    name: name.clone(),
                    position: None,
                },
            })?;
        let text = if explain.analyze {
            job.plan.explain_analyze(&job.metrics)
        } else {
            job.plan.explain_with(&ExplainOptions {
                parallelism: job.parallelism,
            })
        };
        explain_result(&text)
    }

    /// `SHOW VIEWS`.
    pub(crate) fn show_views(&self) -> EngineResult<StatementResult> {
        let schema = views_schema();
        let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
        for r in self.engine.catalog.list() {
            let Some(view) = &r.view else { continue };
            let job = self.engine.jobs.for_name(&r.name);
            let mode = match view.mode() {
                ViewMode::Append => "append",
                ViewMode::Updating => "updating",
            };
            let row = [
                r.name.clone(),
                mode.to_string(),
                column_list(&r.schema),
                view.num_rows().to_string(),
                job.as_ref().map(|j| j.id.to_string()).unwrap_or_default(),
                job.as_ref()
                    .map(|j| j.status().name().to_string())
                    .unwrap_or_default(),
            ];
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        show_result(&schema, columns)
    }

    /// `SHOW JOBS`: every job with its status and figures.
    pub(crate) fn show_jobs(&self) -> EngineResult<StatementResult> {
        let batch = self.engine.jobs.report()?;
        Ok(StatementResult::Rows(QueryOutput::ready(
            batch.schema(),
            vec![batch],
            "SHOW",
        )))
    }
}

/// The columns of a query's results as a view or sink keeps them: nullable, with the names
/// Postgres would give them (`count` for `count(*)`).
pub(crate) fn result_fields(
    plan: &datafusion::logical_expr::LogicalPlan,
    names: Option<&[Option<String>]>,
) -> Vec<Field> {
    let mut fields: Vec<Field> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    if let Some(names) = names
        && names.len() == fields.len()
    {
        for (field, name) in fields.iter_mut().zip(names) {
            if let Some(name) = name {
                *field = field.clone().with_name(name);
            }
        }
    }
    fields
}

/// Refuses two columns of one name (`what` names the object, for the message).
pub(crate) fn check_unique_names(fields: &[Field], what: &str) -> EngineResult<()> {
    let mut seen = HashSet::new();
    for f in fields {
        if !seen.insert(f.name().clone()) {
            return Err(plan_error(format!(
                "{what} has two columns named \"{}\": name them with AS",
                f.name()
            )));
        }
    }
    Ok(())
}

/// The columns of `SHOW VIEWS`.
pub(crate) fn views_schema() -> SchemaRef {
    let names = ["name", "mode", "columns", "rows", "job", "status"];
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// A retention such as `'1 hour'` or `'90 seconds'`, in nanoseconds.
fn parse_retention(value: &str) -> EngineResult<i64> {
    parse_interval("retention", value)
}

/// The nanoseconds of a positive interval setting `what` such as `'1 hour'` or `'30 minutes'`.
pub(crate) fn parse_interval(what: &str, value: &str) -> EngineResult<i64> {
    let invalid = || {
        plan_error(format!(
            "invalid {what} '{value}': expected an interval such as '1 hour' or '30 minutes'"
        ))
    };
    let interval = ScalarValue::Utf8(Some(value.to_string()))
        .cast_to(&DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
        .map_err(|_| invalid())?;
    let ScalarValue::IntervalMonthDayNano(Some(v)) = interval else {
        return Err(invalid());
    };
    if v.months != 0 {
        return Err(plan_error(format!(
            "invalid {what} '{value}': months and years have no fixed length; use days"
        )));
    }
    let nanos = i64::from(v.days)
        .checked_mul(86_400_000_000_000)
        .and_then(|d| d.checked_add(v.nanoseconds))
        .filter(|n| *n > 0)
        .ok_or_else(invalid)?;
    Ok(nanos)
}

/// `plan` with its windows allowing `nanos` of lateness (a view's or sink's
/// `allowed.lateness`, read before the plan is made a streaming plan).
pub(crate) fn with_allowed_lateness(
    plan: datafusion::logical_expr::LogicalPlan,
    nanos: i64,
) -> EngineResult<datafusion::logical_expr::LogicalPlan> {
    Ok(crate::plan::window_tvf::with_allowed_lateness(plan, nanos)?)
}

/// Refuses `allowed.lateness` on a job whose plan has no window aggregate that keeps its
/// windows for late rows (for a SESSION aggregate, its SESSION keeps the sessions): the
/// option would change nothing (window joins, window Top-N, interval joins and
/// MATCH_RECOGNIZE drop late rows as before).
pub(crate) fn check_allowed_lateness(plan: &crate::plan::StreamPlan) -> EngineResult<()> {
    if plan.window_emissions().iter().any(|e| e.lateness > 0) {
        return Ok(());
    }
    Err(EngineError::Unsupported(format!(
        "{ALLOWED_LATENESS} on a query without a window aggregate (it keeps a TUMBLE, HOP, \
         CUMULATE or SESSION aggregate's windows for late rows; window joins, window Top-N, \
         interval joins and MATCH_RECOGNIZE drop late rows as before)"
    )))
}

/// The relations a plan reads, and the logical views its statement names (inlined in it).
pub(crate) fn with_views(mut relations: Vec<String>, views: Vec<String>) -> Vec<String> {
    for view in views {
        if !relations.contains(&view) {
            relations.push(view);
        }
    }
    relations
}

/// A `key = 'value'` option, as a saved statement records a session setting.
pub(crate) fn text_option(key: &str, value: String) -> SqlOption {
    SqlOption::KeyValue {
        key: Ident::new(key),
        value: Expr::value(Value::SingleQuotedString(value)),
    }
}
