//! Sessions: one per client connection, executing statements against the shared engine.
//!
//! [`Engine`] holds what all sessions share (catalog, connectors, configuration); a
//! [`Session`] holds what one client owns (variables, transaction state, cursors, pending
//! inserts) and turns each parsed statement into a [`StatementResult`] for the server to send.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::ScalarValue;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{CloseCursor, FetchDirection, Reset, Set, Statement, Value};

use crate::catalog::{Catalog, CatalogStore};
use crate::connector::ConnectorRegistry;
use crate::dead_letters::DeadLetters;
use crate::error::{EngineError, EngineResult};
use crate::jobs::JobManager;
use crate::pg_catalog::SharedVars;
use crate::sql::parser::{EddyStatement, ParsedStatement, parse_sql};
use crate::sql::provider::CatalogSchemaProvider;
use crate::table::TableLog;
use crate::vars::SessionVars;

mod checkpoints;
mod copy;
mod ddl;
mod functions;
mod late_rows;
mod logical_views;
mod output;
mod query;
mod sinks;
mod views;

pub use copy::{CopyFormat, CopyIn, CopyOptions};
pub use output::{CommandTag, QueryOutput, ResultStream, StatementResult};

/// The name of the catalog and schema every relation lives in.
pub const CATALOG_NAME: &str = "eddy";
pub const SCHEMA_NAME: &str = "public";

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where push tables keep their rows; `None` keeps them in memory.
    pub data_dir: Option<PathBuf>,
    /// Preferred rows per source batch.
    pub batch_size: usize,
    /// Parallel instances of each keyed operator (and readers of each splittable source) a
    /// query runs with, unless the session sets `parallelism`.
    pub parallelism: usize,
    /// How often background jobs checkpoint (zero: never), unless a job sets
    /// `checkpoint.interval`. Jobs checkpoint only with a data directory.
    pub checkpoint_interval: std::time::Duration,
    /// How long a checkpoint's barrier may take to come back before the checkpoint fails,
    /// unless a job sets `checkpoint.timeout`.
    pub checkpoint_timeout: std::time::Duration,
    /// Registers the test-only fault function `eddy_fault` ([`crate::functions::fault`]);
    /// never on in a normal server.
    pub test_faults: bool,
    /// Bytes of operator state all queries and jobs together may hold (`--max-memory`);
    /// `None`: no limit. A query whose state growth would pass it fails with
    /// [`EngineError::OutOfMemory`].
    pub max_memory: Option<usize>,
    /// How many bytes of changes a client's query following a materialized view may be
    /// behind before it is cut off (`--client-follow-buffer`), so that it never holds back
    /// the view's job; `None`: the view's job waits for it.
    pub client_follow_buffer: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            batch_size: 8192,
            parallelism: 1,
            checkpoint_interval: std::time::Duration::from_secs(10),
            checkpoint_timeout: crate::checkpoints::DEFAULT_TIMEOUT,
            test_faults: false,
            max_memory: None,
            client_follow_buffer: Some(DEFAULT_CLIENT_FOLLOW_BUFFER),
        }
    }
}

/// The default of [`EngineConfig::client_follow_buffer`]: 64 MB.
pub const DEFAULT_CLIENT_FOLLOW_BUFFER: usize = 64 << 20;

/// The session variable that overrides [`EngineConfig::parallelism`] for the session's queries.
pub const PARALLELISM: &str = "parallelism";

/// The session variables that set the state TTL: Eddy's name and Flink's.
pub const STATE_TTL_NAMES: [&str; 2] = ["state.ttl", "table.exec.state.ttl"];

/// A state TTL setting: an interval such as `'1 hour'` or `'90 s'`; `0` means none.
pub fn parse_state_ttl(value: &str) -> EngineResult<Option<std::time::Duration>> {
    let value = value.trim().trim_matches('\'');
    if value == "0" || value.is_empty() {
        return Ok(None);
    }
    let nanos = views::parse_interval("state.ttl", value).map_err(|_| {
        EngineError::InvalidParameterValue(format!(
            "invalid value for parameter \"state.ttl\": \"{value}\" (an interval such as \
             '1 hour' or '30 minutes', or '0' for none)"
        ))
    })?;
    Ok(Some(std::time::Duration::from_nanos(nanos as u64)))
}

/// The session variable that limits the operator state of each of the session's continuous
/// queries (a job's own is its `max.state.bytes` option).
pub const MAX_STATE_BYTES: &str = "max_state_bytes";

/// A `max_state_bytes` (or `max.state.bytes`) setting: a size such as `'512MB'`, or `0` /
/// `'unlimited'` for none; a bad one is `22023`.
pub fn parse_max_state_bytes(name: &str, value: &str) -> EngineResult<Option<usize>> {
    crate::size::parse_limit(value).map_err(|why| {
        EngineError::InvalidParameterValue(format!("invalid value for parameter \"{name}\": {why}"))
    })
}

/// Most parallel instances a query may ask for.
pub const MAX_PARALLELISM: usize = 256;

/// A `parallelism` setting: a whole number from 1 to [`MAX_PARALLELISM`].
fn parse_parallelism(value: &str) -> EngineResult<usize> {
    value
        .trim()
        .trim_matches('\'')
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_PARALLELISM).contains(n))
        .ok_or_else(|| {
            EngineError::InvalidParameterValue(format!(
                "invalid value for parameter \"{PARALLELISM}\": \"{value}\" (a whole number \
                 from 1 to {MAX_PARALLELISM})"
            ))
        })
}

/// What every session shares.
pub struct Engine {
    catalog: Arc<Catalog>,
    connectors: ConnectorRegistry,
    config: EngineConfig,
    live_tasks: Arc<std::sync::atomic::AtomicUsize>,
    jobs: Arc<JobManager>,
    /// The server-wide budget of operator state (`--max-memory`).
    memory: Arc<crate::runtime::memory::MemoryPool>,
    /// The `eddy_dead_letters` system table.
    dead_letters: Arc<DeadLetters>,
    /// The clock of `dropped_at` in every job's late-row table.
    late_row_clock: Arc<crate::late_rows::LateRowClock>,
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        connectors: ConnectorRegistry,
        store: Option<Arc<dyn CatalogStore>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            catalog: Arc::new(Catalog::new(store)),
            connectors,
            memory: crate::runtime::memory::MemoryPool::new(config.max_memory),
            dead_letters: Arc::new(DeadLetters::new(config.data_dir.clone())),
            late_row_clock: Arc::default(),
            config,
            live_tasks: Arc::default(),
            jobs: Arc::default(),
        })
    }

    /// The settings the engine was started with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Dataflow tasks currently alive, over all queries: zero once every query has ended or
    /// been cancelled.
    pub fn live_tasks(&self) -> usize {
        self.live_tasks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of operator state all queries and jobs hold now, as last measured: back to
    /// zero once every query has ended, failed or been cancelled.
    pub fn state_bytes(&self) -> usize {
        self.memory.used()
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The background jobs (materialized views).
    pub fn jobs(&self) -> &JobManager {
        &self.jobs
    }

    /// The `eddy_dead_letters` system table.
    pub fn dead_letters(&self) -> &Arc<DeadLetters> {
        &self.dead_letters
    }

    /// Replays saved DDL after a restart. Connector options are not re-validated (a file may be
    /// missing now and back later); failures are returned so the server can report them.
    pub async fn restore(self: &Arc<Self>, ddl: &[String]) -> Vec<(String, EngineError)> {
        let mut session = self.new_session();
        session.restoring = true;
        let mut failures = Vec::new();
        for sql in ddl {
            let result = match parse_sql(sql) {
                Ok(statements) => {
                    let mut result = Ok(());
                    for s in statements {
                        result = match &s.statement {
                            EddyStatement::CreateSource(create) => session
                                .create_source(create, &s.sql, false)
                                .await
                                .map(|_| ()),
                            EddyStatement::CreateSink(create) => {
                                session.restore_sink(create, &s.sql).await.map(|_| ())
                            }
                            EddyStatement::Sql(stmt) => match stmt.as_ref() {
                                Statement::CreateView(v) if v.materialized => session
                                    .create_materialized_view(v, &s.sql, &s.sql)
                                    .await
                                    .map(|_| ()),
                                Statement::CreateView(v) => session
                                    .create_logical_view(v, &s.sql, &s.sql)
                                    .await
                                    .map(|_| ()),
                                _ => Ok(()),
                            },
                            _ => Ok(()),
                        };
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failures.push((sql.clone(), e));
            }
        }
        failures
    }

    pub fn new_session(self: &Arc<Self>) -> Session {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false)
            .set_bool("datafusion.sql_parser.collect_spans", true)
            // Plain Utf8 strings end to end: what connectors produce and clients receive.
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
            // The session TimeZone (UTC until SET): `timestamptz` values carry it.
            .set_str("datafusion.execution.time_zone", "UTC")
            // `0.908 * price` is exact, as in Postgres and Flink: literals with a decimal
            // point are DECIMAL, not DOUBLE.
            .set_bool("datafusion.sql_parser.parse_float_as_decimal", true);
        // `regclass`, `oid` and the other OID types as casts (psql, JDBC and GUI tools use them).
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_type_planner(Arc::new(
                datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner,
            ))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // `count(DISTINCT x)` stays one aggregate: the rule's two-level rewrite would put an
        // aggregate over an updating aggregate, which a stream cannot run.
        ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
        let catalog = MemoryCatalogProvider::new();
        // Registering a fresh schema provider cannot fail.
        let _ = catalog.register_schema(
            SCHEMA_NAME,
            Arc::new(CatalogSchemaProvider::new(
                Arc::clone(&self.catalog),
                Arc::clone(&self.jobs),
                Arc::clone(&self.dead_letters),
            )),
        );
        functions::register(&ctx);
        crate::functions::register(&ctx);
        if self.config.test_faults {
            ctx.register_udf(crate::functions::fault::udf());
        }
        let vars = SharedVars::default();
        // Registering fresh schema providers cannot fail.
        let _ = crate::pg_catalog::register(
            &ctx,
            &catalog,
            crate::pg_catalog::RelationSource {
                catalog: Arc::clone(&self.catalog),
                jobs: Arc::clone(&self.jobs),
            },
            vars.clone(),
        );
        ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
        // Window table functions in FROM (TUMBLE, HOP, CUMULATE, SESSION).
        let _ = ctx.register_relation_planner(Arc::new(
            crate::sql::window_tvf::WindowTvfPlanner::new(Arc::clone(&self.catalog)),
        ));
        let _ = ctx.register_relation_planner(Arc::new(
            crate::sql::match_recognize::MatchRecognizePlanner,
        ));
        Session {
            engine: Arc::clone(self),
            ctx,
            vars,
            transaction: TransactionState::Idle,
            pending_inserts: Vec::new(),
            cursors: std::sync::Mutex::default(),
            restoring: false,
        }
    }
}

/// Where a session is with respect to `BEGIN ... COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    Idle,
    InBlock,
    /// A statement failed inside the block; only `COMMIT`/`ROLLBACK` are accepted.
    Failed,
}

/// One client's session.
pub struct Session {
    engine: Arc<Engine>,
    ctx: SessionContext,
    /// Shared with the session's `pg_settings`.
    vars: SharedVars,
    transaction: TransactionState,
    /// Rows inserted inside a transaction block, appended at `COMMIT`.
    pending_inserts: Vec<(Arc<TableLog>, RecordBatch)>,
    /// Behind a lock only so that `Session` is `Sync` (a cursor's stream is not).
    cursors: std::sync::Mutex<HashMap<String, query::Cursor>>,
    /// True in the session that replays the catalog after a restart: jobs resume from their
    /// checkpoints instead of starting over.
    restoring: bool,
}

impl Session {
    pub fn transaction_state(&self) -> TransactionState {
        self.transaction
    }

    /// The session's variables as they are now.
    pub fn vars(&self) -> SessionVars {
        self.vars.snapshot()
    }

    /// Sets a session variable directly (e.g. `application_name` from the startup message).
    pub fn set_variable(&mut self, name: &str, value: String) {
        self.vars.set(name, value);
    }

    /// Parallel instances of each keyed operator in this session's queries: the session's
    /// `parallelism` setting, else the engine's.
    pub fn parallelism(&self) -> EngineResult<usize> {
        match self.vars.get(PARALLELISM) {
            Some(value) => parse_parallelism(&value),
            None => Ok(self.engine.config.parallelism.max(1)),
        }
    }

    /// The state TTL of this session's queries: `SET state.ttl` (or Flink's
    /// `table.exec.state.ttl`); `None` when unset or `0`.
    pub fn state_ttl(&self) -> EngineResult<Option<std::time::Duration>> {
        for name in STATE_TTL_NAMES {
            if let Some(value) = self.vars.get(name) {
                return parse_state_ttl(&value);
            }
        }
        Ok(None)
    }

    /// The limit on the operator state of each of this session's continuous queries:
    /// `SET max_state_bytes`; `None` when unlimited (the server's limit still applies).
    pub fn max_state_bytes(&self) -> EngineResult<Option<usize>> {
        match self.vars.get(MAX_STATE_BYTES) {
            Some(value) => parse_max_state_bytes(MAX_STATE_BYTES, &value),
            None => Ok(None),
        }
    }

    /// The streaming plan of a continuous query, with the session's state TTL.
    pub(crate) fn streaming_plan(
        &self,
        plan: &datafusion::logical_expr::LogicalPlan,
    ) -> EngineResult<crate::plan::StreamPlan> {
        let mut stream_plan = crate::plan::planner::plan_stream(plan)?;
        if let Some(ttl) = self.state_ttl()? {
            stream_plan.set_state_ttl(ttl);
        }
        Ok(stream_plan)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Tells the session a statement failed (so an open transaction block is aborted).
    pub fn on_error(&mut self) {
        if self.transaction == TransactionState::InBlock {
            self.transaction = TransactionState::Failed;
        }
    }

    /// Executes one statement. `params` fill `$1, $2, ...` (extended protocol).
    pub async fn execute(
        &mut self,
        statement: &ParsedStatement,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        if self.transaction == TransactionState::Failed && !is_transaction_end(statement) {
            return Err(EngineError::InvalidTransactionState(
                "current transaction is aborted, commands ignored until end of transaction block"
                    .to_string(),
            ));
        }
        // Errors point into the whole query string; the catalog keeps the statement's own text.
        let sql = statement.source.as_ref();
        match &statement.statement {
            EddyStatement::CreateSource(create) => {
                self.create_source(create, &statement.sql, true).await
            }
            EddyStatement::DropRelation(drop) => self.drop_relation(drop).await,
            EddyStatement::ShowObjects(kind) => self.show_objects(*kind),
            EddyStatement::ExplainView(explain) => self.explain_view(explain),
            EddyStatement::CreateSink(create) => {
                self.create_sink(create, &statement.sql, sql).await
            }
            EddyStatement::CopyToFile(copy) => self.copy_to_file(copy, sql, params).await,
            EddyStatement::Sql(stmt) => match stmt.as_ref() {
                Statement::CreateView(v) if v.materialized => {
                    self.create_materialized_view(v, &statement.sql, sql).await
                }
                Statement::CreateView(v) => self.create_logical_view(v, &statement.sql, sql).await,
                _ => self.execute_sql(stmt, sql, params).await,
            },
        }
    }

    async fn execute_sql(
        &mut self,
        stmt: &Statement,
        sql: &str,
        params: &[ScalarValue],
    ) -> EngineResult<StatementResult> {
        match stmt {
            Statement::Query(_) => Ok(StatementResult::Rows(
                self.run_query(stmt.clone(), sql, params, false).await?,
            )),
            Statement::Insert(_) => self.insert(stmt, sql, params).await,
            Statement::Copy { .. } => self.copy(stmt, sql, params).await,
            Statement::Explain {
                statement, analyze, ..
            } => self.explain(statement, *analyze, sql).await,
            Statement::StartTransaction { .. } => {
                if self.transaction != TransactionState::Idle {
                    return Ok(StatementResult::Notice {
                        message: "there is already a transaction in progress".to_string(),
                        then: CommandTag::new("BEGIN"),
                    });
                }
                self.transaction = TransactionState::InBlock;
                Ok(StatementResult::Command(CommandTag::new("BEGIN")))
            }
            Statement::Commit { .. } => {
                let tag = if self.transaction == TransactionState::Failed {
                    self.pending_inserts.clear();
                    "ROLLBACK"
                } else {
                    // One append per table: a batch is synced whole or dropped whole as a
                    // torn tail after a crash, so a table gets all of the transaction's rows
                    // or none.
                    let mut by_table: Vec<(Arc<TableLog>, Vec<RecordBatch>)> = Vec::new();
                    for (table, batch) in std::mem::take(&mut self.pending_inserts) {
                        match by_table.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &table)) {
                            Some((_, batches)) => batches.push(batch),
                            None => by_table.push((table, vec![batch])),
                        }
                    }
                    for (table, batches) in by_table {
                        let batch =
                            datafusion::arrow::compute::concat_batches(table.schema(), &batches)?;
                        table.append(batch)?;
                    }
                    "COMMIT"
                };
                let was_idle = self.transaction == TransactionState::Idle;
                self.end_transaction();
                if was_idle {
                    return Ok(StatementResult::Notice {
                        message: "there is no transaction in progress".to_string(),
                        then: CommandTag::new(tag),
                    });
                }
                Ok(StatementResult::Command(CommandTag::new(tag)))
            }
            Statement::Rollback { savepoint, .. } => {
                if savepoint.is_some() {
                    return Err(EngineError::Unsupported("savepoints".to_string()));
                }
                let was_idle = self.transaction == TransactionState::Idle;
                self.pending_inserts.clear();
                self.end_transaction();
                if was_idle {
                    return Ok(StatementResult::Notice {
                        message: "there is no transaction in progress".to_string(),
                        then: CommandTag::new("ROLLBACK"),
                    });
                }
                Ok(StatementResult::Command(CommandTag::new("ROLLBACK")))
            }
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                self.show_variable(&name)
            }
            Statement::Reset(reset) => {
                match &reset.reset {
                    Reset::ALL => self.vars.reset_all(),
                    Reset::ConfigurationParameter(name) => self.vars.reset(&name.to_string()),
                }
                Ok(StatementResult::Command(CommandTag::new("RESET")))
            }
            Statement::Declare { stmts } => self.declare(stmts, sql, params).await,
            Statement::Fetch {
                name, direction, ..
            } => self.fetch(&name.value, direction).await,
            Statement::Close { cursor } => {
                match cursor {
                    CloseCursor::All => self.cursors_mut().clear(),
                    CloseCursor::Specific { name } => {
                        if self.cursors_mut().remove(&name.value).is_none() {
                            return Err(EngineError::UnknownCursor(name.value.clone()));
                        }
                    }
                }
                Ok(StatementResult::Command(CommandTag::new("CLOSE CURSOR")))
            }
            Statement::Discard { .. } => {
                self.cursors_mut().clear();
                self.vars.reset_all();
                Ok(StatementResult::Command(CommandTag::new("DISCARD ALL")))
            }
            other => Err(EngineError::Unsupported(statement_kind(other))),
        }
    }

    fn end_transaction(&mut self) {
        self.transaction = TransactionState::Idle;
        // Cursors live until the end of their transaction (no WITH HOLD).
        self.cursors_mut().clear();
    }

    /// The result schema of an open cursor (clients describe a DECLAREd cursor as a portal).
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.cursors_mut().get(name).map(|c| Arc::clone(c.schema()))
    }

    fn cursors_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, query::Cursor>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&mut self, set: &Set) -> EngineResult<StatementResult> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string();
                let value = values
                    .iter()
                    .map(expr_to_setting)
                    .collect::<Vec<_>>()
                    .join(", ");
                if name.eq_ignore_ascii_case("timezone") || name.eq_ignore_ascii_case("time_zone") {
                    self.set_time_zone(&value)?;
                }
                if name.eq_ignore_ascii_case(PARALLELISM) {
                    parse_parallelism(&value)?;
                }
                if STATE_TTL_NAMES.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                    parse_state_ttl(&value)?;
                }
                if name.eq_ignore_ascii_case(MAX_STATE_BYTES) {
                    parse_max_state_bytes(MAX_STATE_BYTES, &value)?;
                }
                self.vars.set(&name, value);
            }
            Set::SetTimeZone { value, .. } => {
                let value = expr_to_setting(value);
                self.set_time_zone(&value)?;
                self.vars.set("timezone", value);
            }
            Set::SetNames { charset_name, .. } => {
                self.vars.set("client_encoding", charset_name.value.clone());
            }
            Set::SetTransaction { .. } => {}
            other => {
                return Err(EngineError::Unsupported(format!("SET form: {other}")));
            }
        }
        Ok(StatementResult::Command(CommandTag::new("SET")))
    }

    /// Session time zone: also used by DataFusion for `now()` and timestamptz casts.
    fn set_time_zone(&mut self, value: &str) -> EngineResult<()> {
        let tz = if value.eq_ignore_ascii_case("local") || value.eq_ignore_ascii_case("default") {
            "UTC".to_string()
        } else {
            value.to_string()
        };
        if tz
            .parse::<datafusion::arrow::array::timezone::Tz>()
            .is_err()
        {
            return Err(EngineError::Data(format!(
                "invalid value for parameter \"TimeZone\": \"{value}\""
            )));
        }
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().execution.time_zone = Some(tz);
        Ok(())
    }

    fn show_variable(&self, name: &str) -> EngineResult<StatementResult> {
        if name.eq_ignore_ascii_case("all") {
            let (names, values): (Vec<_>, Vec<_>) = self
                .vars
                .snapshot()
                .all()
                .map(|(k, v)| (k.clone(), v.clone()))
                .unzip();
            return Ok(StatementResult::Rows(QueryOutput::text_columns(
                &["name", "setting"],
                vec![names, values],
                "SHOW",
            )?));
        }
        let value = self
            .vars
            .get(name)
            .ok_or_else(|| EngineError::UnknownVariable(name.to_string()))?;
        Ok(StatementResult::Rows(QueryOutput::text_columns(
            &[name.to_ascii_lowercase().as_str()],
            vec![vec![value.to_string()]],
            "SHOW",
        )?))
    }

    /// The parameter types and result schema of a statement, without running it (Describe).
    pub async fn describe(
        &mut self,
        statement: &ParsedStatement,
    ) -> EngineResult<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        match &statement.statement {
            EddyStatement::ShowObjects(kind) => Ok((vec![], Some(ddl::show_schema(*kind)))),
            EddyStatement::ExplainView(_) => Ok((
                vec![],
                Some(Arc::new(Schema::new(vec![Field::new(
                    "QUERY PLAN",
                    DataType::Utf8,
                    false,
                )]))),
            )),
            EddyStatement::Sql(stmt) => match stmt.as_ref() {
                Statement::Query(_) => {
                    let plan = self
                        .logical_plan(stmt.as_ref().clone(), &statement.source)
                        .await?;
                    let params = query::parameter_types(&plan)?;
                    let schema = Arc::new(plan.schema().as_arrow().clone());
                    let schema = match crate::sql::names::postgres_column_names(stmt) {
                        Some(names) => output::renamed(&schema, &names),
                        None => schema,
                    };
                    let schema = if self.is_updating_query(&plan) {
                        query::changelog_client_schema(&schema)
                    } else {
                        schema
                    };
                    Ok((params, Some(schema)))
                }
                Statement::Insert(_) => {
                    let plan = self
                        .logical_plan(stmt.as_ref().clone(), &statement.source)
                        .await?;
                    Ok((query::parameter_types(&plan)?, None))
                }
                Statement::ShowVariable { variable } => {
                    let name = variable
                        .iter()
                        .map(|i| i.value.to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let fields = if name == "all" {
                        vec![
                            Field::new("name", DataType::Utf8, false),
                            Field::new("setting", DataType::Utf8, false),
                        ]
                    } else {
                        vec![Field::new(name, DataType::Utf8, false)]
                    };
                    Ok((vec![], Some(Arc::new(Schema::new(fields)))))
                }
                Statement::Explain { .. } => Ok((
                    vec![],
                    Some(Arc::new(Schema::new(vec![Field::new(
                        "QUERY PLAN",
                        DataType::Utf8,
                        false,
                    )]))),
                )),
                Statement::Fetch { name, .. } => {
                    let schema = self
                        .cursor_schema(&name.value)
                        .ok_or_else(|| EngineError::UnknownCursor(name.value.clone()))?;
                    Ok((vec![], Some(schema)))
                }
                _ => Ok((vec![], None)),
            },
            _ => Ok((vec![], None)),
        }
    }
}

fn is_transaction_end(statement: &ParsedStatement) -> bool {
    matches!(
        &statement.statement,
        EddyStatement::Sql(s) if matches!(s.as_ref(), Statement::Commit { .. } | Statement::Rollback { .. })
    )
}

/// The value of `SET x = value` as Postgres would store it.
fn expr_to_setting(expr: &datafusion::sql::sqlparser::ast::Expr) -> String {
    use datafusion::sql::sqlparser::ast::Expr;
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// The kind of a statement, for "not supported" messages.
fn statement_kind(stmt: &Statement) -> String {
    let text = stmt.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    let kind = match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "SHOW"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".to_string(),
    };
    format!("{kind} statement")
}

/// How many rows a `FETCH` asks for (`None` = all).
fn fetch_count(direction: &FetchDirection) -> EngineResult<Option<usize>> {
    let number = |v: &datafusion::sql::sqlparser::ast::ValueWithSpan| -> EngineResult<usize> {
        match &v.value {
            Value::Number(n, _) => n
                .parse()
                .map_err(|_| EngineError::Data(format!("invalid FETCH count {n}"))),
            other => Err(EngineError::Data(format!("invalid FETCH count {other}"))),
        }
    };
    match direction {
        FetchDirection::Count { limit } => Ok(Some(number(limit)?)),
        FetchDirection::Next => Ok(Some(1)),
        FetchDirection::Forward { limit } => match limit {
            Some(l) => Ok(Some(number(l)?)),
            None => Ok(Some(1)),
        },
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        other => Err(EngineError::Unsupported(format!(
            "FETCH {other} (cursors over streams only move forward)"
        ))),
    }
}
