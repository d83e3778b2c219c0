//! Streaming plan nodes: what a continuous query computes, before anything runs.
//!
//! A [`StreamPlan`] is built from DataFusion's optimized logical plan by
//! [`planner::plan_stream`]; the runtime instantiates operators from it, and `EXPLAIN` prints
//! it ([`explain`]). Expressions stay logical here; physical expressions are created when the
//! plan is run.
//!
//! The DataFusion side of the plan lives here too: the extension nodes the SQL front end
//! builds ([`window_tvf::WindowTvfNode`], [`match_recognize::MatchRecognizeNode`] with its
//! compiled [`match_recognize::MatchSpec`]) and the table provider a stream appears as
//! ([`stream_table::StreamTableProvider`]). This layer imports operators, never `sql`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, SortExpr};

use crate::catalog::RelationDef;
use crate::error::EngineResult;
use crate::operators::deduplicate::Keep;
use crate::operators::join_rows::JoinKind;
use crate::operators::over_aggregate::OverFrame;
use crate::operators::top_n::RankFunction;
use crate::operators::updating_aggregate::WindowExpiry;
use crate::operators::window::WindowKind;
use crate::operators::window_aggregate::{BoundColumn, Emission, OutputColumn, Windowing};
use crate::plan::match_recognize::MatchSpec;
pub use explain::{ExplainOptions, Partitioning};

pub mod explain;
pub mod match_recognize;
pub mod planner;
pub mod stream_table;
pub mod temporal;
pub mod window_tvf;

/// The leading column of an updating plan node's rows: `+` (insert) or `-` (delete); an
/// update is a `-` of the old row followed by a `+` of the new one. Clients see it as `op`.
pub const CHANGELOG_OP: &str = "__op";

/// The marker function the SQL front end adds to a GROUP BY list for `EMIT ON UPDATE`
/// (`sql::emit_syntax`); the planner takes it out of the aggregate's keys.
pub const EMIT_ON_UPDATE_MARKER: &str = "__eddy_emit_on_update";

/// `schema` behind a leading, non-null `__op` column: the schema of an updating node whose
/// logical plan has `schema`.
pub fn changelog_schema(schema: &DFSchema) -> EngineResult<DFSchemaRef> {
    let mut fields = vec![(
        None,
        Arc::new(Field::new(CHANGELOG_OP, DataType::Utf8, false)),
    )];
    fields.extend(schema.iter().map(|(q, f)| (q.cloned(), Arc::clone(f))));
    Ok(Arc::new(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?))
}

/// One node of a streaming plan.
#[derive(Debug, Clone)]
pub enum StreamPlan {
    Source(SourceNode),
    Filter {
        input: Box<StreamPlan>,
        predicate: Expr,
    },
    Project {
        input: Box<StreamPlan>,
        exprs: Vec<Expr>,
        schema: DFSchemaRef,
    },
    Union {
        inputs: Vec<StreamPlan>,
        schema: DFSchemaRef,
    },
    Limit {
        input: Box<StreamPlan>,
        skip: usize,
        fetch: Option<usize>,
    },
    /// Renames the qualifiers of its input's columns (`FROM bids AS b`); no operator.
    Alias {
        input: Box<StreamPlan>,
        schema: DFSchemaRef,
    },
    /// A window table function: appends `window_start`, `window_end`, `window_time`.
    Window(Box<WindowNode>),
    /// Stamps column `column` (defined as `PROCTIME()`) with the wall clock and makes the
    /// clock the watermark: the input of a window on processing time.
    ProcessingTime {
        input: Box<StreamPlan>,
        column: usize,
    },
    /// `GROUP BY` window columns and keys, emitted when each window closes.
    WindowAggregate(Box<WindowAggregateNode>),
    /// `GROUP BY` keys without window columns: a changelog of each group's values.
    UpdatingAggregate(Box<UpdatingAggregateNode>),
    /// An upsert source's upserts and deletes turned into a changelog.
    ChangelogNormalize(Box<ChangelogNormalizeNode>),
    /// `ROW_NUMBER()`/`RANK()`/`DENSE_RANK() OVER (PARTITION BY window_start, window_end
    /// ...)` with `rn <= N`: each window's top rows, when it closes.
    WindowTopN(Box<WindowTopNNode>),
    /// `ROW_NUMBER()`/`RANK()`/`DENSE_RANK() OVER (PARTITION BY k ...)` with `rn <= N` over a
    /// whole stream: a changelog of each partition's top rows.
    TopN(Box<TopNNode>),
    /// `ROW_NUMBER() OVER (PARTITION BY k ORDER BY <time attribute>)` with `rn = 1`: the
    /// first (append-only) or last (updating) row of each key.
    Deduplicate(Box<DeduplicateNode>),
    /// `agg(...) OVER (PARTITION BY k ORDER BY <time attribute> ROWS | RANGE ... PRECEDING)`
    /// and `LAG`: each row with its OVER columns, once the watermark passes it.
    OverAggregate(Box<OverAggregateNode>),
    /// `LEAD(...) OVER (PARTITION BY k ORDER BY <time attribute>)` over an OVER aggregation's
    /// rows: each row with its LEAD columns, once the rows they read have come.
    Lead(Box<LeadNode>),
    /// A join on keys with the two event times bounded against each other.
    IntervalJoin(Box<IntervalJoinNode>),
    /// A join of two inputs with the same windows, on the window bounds and keys.
    WindowJoin(Box<WindowJoinNode>),
    /// A join on keys without time bounds or windows: every row is held (up to a TTL).
    RegularJoin(Box<RegularJoinNode>),
    /// `JOIN versioned FOR SYSTEM_TIME AS OF left.ts`: each left row with the right's version
    /// of its key as of its time, once the watermark passes it.
    TemporalJoin(Box<TemporalJoinNode>),
    /// `JOIN table FOR SYSTEM_TIME AS OF PROCTIME()`: each left row with a push table's or
    /// materialized view's rows as they are when it arrives.
    LookupJoin(Box<LookupJoinNode>),
    /// MATCH_RECOGNIZE: row pattern matching per partition, in event-time order.
    MatchRecognize(Box<MatchRecognizeStreamNode>),
}

/// MATCH_RECOGNIZE over a stream.
#[derive(Debug, Clone)]
pub struct MatchRecognizeStreamNode {
    pub input: StreamPlan,
    pub spec: Arc<MatchSpec>,
    /// The time column has no watermark: rows are matched only at the end of the input.
    pub no_watermark: bool,
    pub schema: DFSchemaRef,
}

/// The inputs, keys and residual condition of a stream-stream join.
#[derive(Debug, Clone)]
pub struct JoinInputs {
    pub left: StreamPlan,
    pub right: StreamPlan,
    pub kind: JoinKind,
    /// Equi-join keys: expressions over the left and the right input.
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// Other conditions, over a left row followed by a right row.
    pub residual: Option<Expr>,
    pub schema: DFSchemaRef,
}

/// An interval join: `lower <= left.time - right.time <= upper` (nanoseconds, inclusive).
#[derive(Debug, Clone)]
pub struct IntervalJoinNode {
    pub join: JoinInputs,
    pub left_time: usize,
    pub right_time: usize,
    pub lower: i64,
    pub upper: i64,
}

/// A regular join: the inputs may be changelogs, and the output is one unless it is an inner
/// join of append-only inputs.
#[derive(Debug, Clone)]
pub struct RegularJoinNode {
    pub join: JoinInputs,
    /// How long held rows live (`SET state.ttl`, a view's `state.ttl`); `None`: forever.
    pub ttl: Option<std::time::Duration>,
    /// The output is a changelog led by [`CHANGELOG_OP`].
    pub updating: bool,
    /// The output schema: the join's, behind `__op` when updating.
    pub schema: DFSchemaRef,
}

/// An event-time temporal join (see `plan::temporal`). The right input is a versioned table's
/// rows in full (every column of its base: the upsert source's changelog, or the versioned
/// view's input), whatever the query reads of it.
#[derive(Debug, Clone)]
pub struct TemporalJoinNode {
    /// Append-only.
    pub left: StreamPlan,
    /// A changelog (an upsert source) or append-only rows (each a new version of its key).
    pub right: StreamPlan,
    /// INNER or LEFT.
    pub kind: JoinKind,
    /// The version key: expressions over the left input, and the right's key columns (over
    /// the right input).
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// The left input's time attribute (`AS OF`), and the right's version time, in
    /// `right_schema`.
    pub left_time: usize,
    pub right_time: usize,
    /// The right columns of the join's output, as columns of `right_schema`.
    pub right_columns: Vec<usize>,
    /// A condition on the version found, over `right_schema`.
    pub right_filter: Option<Expr>,
    /// A condition on the joined row, over `schema`.
    pub residual: Option<Expr>,
    /// The right's rows without `__op`.
    pub right_schema: DFSchemaRef,
    /// The join's output: the left's columns, then the right's `right_columns`.
    pub schema: DFSchemaRef,
}

/// A processing-time lookup join (see `plan::temporal`): the right side is not an input but a
/// relation the operator reads.
#[derive(Debug, Clone)]
pub struct LookupJoinNode {
    /// Append-only.
    pub left: StreamPlan,
    /// A push table or materialized view.
    pub relation: Arc<RelationDef>,
    /// INNER or LEFT.
    pub kind: JoinKind,
    /// Expressions over the left input, and the relation's columns (over `right_schema`).
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// The right columns of the join's output, as columns of the relation.
    pub right_columns: Vec<usize>,
    /// A condition on the relation's rows, over `right_schema`.
    pub right_filter: Option<Expr>,
    /// A condition on the joined row, over `schema`.
    pub residual: Option<Expr>,
    /// Every column of the relation, qualified as the query names it.
    pub right_schema: DFSchemaRef,
    /// The join's output: the left's columns, then the right's `right_columns`.
    pub schema: DFSchemaRef,
}

/// A window join.
#[derive(Debug, Clone)]
pub struct WindowJoinNode {
    pub join: JoinInputs,
    pub window: WindowKind,
    pub lag: i64,
    pub left_bounds: Vec<BoundColumn>,
    pub right_bounds: Vec<BoundColumn>,
}

/// A window Top-N: the first `limit` rows per window and partition.
#[derive(Debug, Clone)]
pub struct WindowTopNNode {
    pub input: StreamPlan,
    pub kind: WindowKind,
    pub lag: i64,
    pub bounds: Vec<BoundColumn>,
    /// PARTITION BY expressions other than window columns.
    pub partition: Vec<Expr>,
    pub order: Vec<SortExpr>,
    pub function: RankFunction,
    pub limit: usize,
    /// The input's columns and the row number.
    pub schema: DFSchemaRef,
}

/// A Top-N over a whole stream: the rows numbered `limit` or less per partition, as a
/// changelog.
#[derive(Debug, Clone)]
pub struct TopNNode {
    /// Append-only, or a changelog (whose `-` rows leave their partition).
    pub input: StreamPlan,
    /// PARTITION BY expressions (none: one partition).
    pub partition: Vec<Expr>,
    pub order: Vec<SortExpr>,
    pub function: RankFunction,
    pub limit: usize,
    /// The number reaches the query's output: rows whose number changes are emitted again.
    /// When the query projects it away, only rows entering or leaving the top are.
    pub rank_output: bool,
    /// How long a partition lives after a row last changed it (`SET state.ttl`, a view's
    /// `state.ttl`); `None`: forever.
    pub ttl: Option<std::time::Duration>,
    /// `__op`, the input's columns (without its `__op`), the number.
    pub schema: DFSchemaRef,
}

/// A deduplication: the first or last row of each key in event time.
#[derive(Debug, Clone)]
pub struct DeduplicateNode {
    /// Append-only.
    pub input: StreamPlan,
    /// PARTITION BY expressions (none: one key).
    pub keys: Vec<Expr>,
    /// The time attribute, ascending (first) or descending (last).
    pub order: SortExpr,
    pub keep: Keep,
    /// How long a key's marker or row lives after it was written (`SET state.ttl`, a view's
    /// `state.ttl`); `None`: forever.
    pub ttl: Option<std::time::Duration>,
    /// The input's columns and the number (always 1); led by `__op` when keeping the last.
    pub schema: DFSchemaRef,
}

/// An OVER aggregation: every input row followed by its OVER columns.
#[derive(Debug, Clone)]
pub struct OverAggregateNode {
    /// Append-only.
    pub input: StreamPlan,
    /// PARTITION BY expressions (none: one partition).
    pub partition: Vec<Expr>,
    /// The ORDER BY: the time attribute, ascending.
    pub order: SortExpr,
    pub frame: OverFrame,
    /// The window function expressions (`Expr::WindowFunction`, maybe aliased), in output
    /// order: aggregates and `LAG`.
    pub functions: Vec<Expr>,
    /// The input's columns, then one per function.
    pub schema: DFSchemaRef,
}

/// LEAD: every input row followed by one column per LEAD.
#[derive(Debug, Clone)]
pub struct LeadNode {
    /// An OVER aggregation (its rows come in time order per partition, final).
    pub input: StreamPlan,
    /// PARTITION BY expressions (none: one partition).
    pub partition: Vec<Expr>,
    /// The ORDER BY: the time attribute, ascending.
    pub order: SortExpr,
    /// The `LEAD` window function expressions (maybe aliased), in output order.
    pub functions: Vec<Expr>,
    /// The input's columns, then one per function.
    pub schema: DFSchemaRef,
}

/// A window table function.
#[derive(Debug, Clone)]
pub struct WindowNode {
    pub input: StreamPlan,
    pub kind: WindowKind,
    /// The time column, in the input schema.
    pub time_index: usize,
    /// SESSION's partition keys, in the input schema.
    pub key_indices: Vec<usize>,
    /// Tag each row with its slice instead of copying it into every window (set when a
    /// window aggregate consumes the rows).
    pub slices: bool,
    /// SESSION under an aggregate that emits on update or allows lateness: its rows are a
    /// changelog (set by the aggregate's planning; final rows by default).
    pub emit: Emission,
    pub schema: DFSchemaRef,
}

/// A window aggregate: DataFusion's `Aggregate` whose group keys include window columns. Its
/// rows are final, or a changelog (led by [`CHANGELOG_OP`]) when `windowing.emit` says it
/// emits early results or allows lateness.
#[derive(Debug, Clone)]
pub struct WindowAggregateNode {
    pub input: StreamPlan,
    /// The group keys other than window columns.
    pub keys: Vec<Expr>,
    /// With GROUPING SETS / ROLLUP / CUBE: per set, which keys are absent (NULL).
    pub grouping_sets: Option<Vec<Vec<bool>>>,
    pub aggregates: Vec<Expr>,
    pub windowing: Windowing,
    pub output: Vec<OutputColumn>,
    pub schema: DFSchemaRef,
}

impl WindowAggregateNode {
    /// The width of the slices it aggregates rows into when windows share slices (HOP,
    /// CUMULATE, TUMBLE over a TVF); `None` when it aggregates whole windows.
    pub fn slice_width(&self) -> Option<i64> {
        if self.windowing.sliced {
            self.windowing.kind.slice_width()
        } else {
            None
        }
    }
}

/// An aggregate without window columns over an append-only stream: an updating result, whose
/// rows are `+`/`-` changes of each group's values (see [`CHANGELOG_OP`]).
#[derive(Debug, Clone)]
pub struct UpdatingAggregateNode {
    pub input: StreamPlan,
    /// The group keys (none for a global aggregate: one group).
    pub keys: Vec<Expr>,
    /// With GROUPING SETS / ROLLUP / CUBE: per set, which keys are absent (NULL).
    pub grouping_sets: Option<Vec<Vec<bool>>>,
    pub aggregates: Vec<Expr>,
    /// How long a group lives after a row last changed it (`SET state.ttl`, a view's
    /// `state.ttl`); `None`: forever.
    pub ttl: Option<std::time::Duration>,
    /// Over SESSION windows' changelog: groups are forgotten once the watermark passes
    /// their window's end plus the allowed lateness (no row can change them any more).
    pub expiry: Option<WindowExpiry>,
    /// `__op`, then the aggregate's columns: the keys (and `__grouping_id`), the aggregates.
    pub schema: DFSchemaRef,
}

/// The upserts and deletes an upsert source reads (keyed by its primary key), turned into a
/// changelog: an upsert of a key that has a row retracts it before adding the new one, an
/// upsert equal to the row it replaces is dropped, a delete retracts the row (a delete of a
/// key without one is dropped). Flink's ChangelogNormalize.
#[derive(Debug, Clone)]
pub struct ChangelogNormalizeNode {
    /// The source: its columns, then [`crate::connector::UPSERT_FLAG`].
    pub input: StreamPlan,
    /// The primary key columns, over the input's schema.
    pub keys: Vec<Expr>,
    /// `__op`, then the source's columns.
    pub schema: DFSchemaRef,
}

/// Reading a source or push table.
#[derive(Debug, Clone)]
pub struct SourceNode {
    pub relation: Arc<RelationDef>,
    /// Column indices of the relation to keep, in output order.
    pub projection: Option<Vec<usize>>,
    /// The output schema (after the projection), qualified by the relation name.
    pub schema: DFSchemaRef,
}

impl SourceNode {
    /// True when the relation's rows are a changelog (led by [`CHANGELOG_OP`]): an updating
    /// materialized view. Sources, push tables and other views are append-only.
    pub fn is_updating(&self) -> bool {
        self.relation.is_updating_view()
    }
}

impl StreamPlan {
    /// The schema of the rows this node emits.
    pub fn schema(&self) -> DFSchemaRef {
        match self {
            StreamPlan::Source(s) => Arc::clone(&s.schema),
            StreamPlan::Filter { input, .. }
            | StreamPlan::Limit { input, .. }
            | StreamPlan::ProcessingTime { input, .. } => input.schema(),
            StreamPlan::Project { schema, .. }
            | StreamPlan::Union { schema, .. }
            | StreamPlan::Alias { schema, .. } => Arc::clone(schema),
            StreamPlan::Window(w) => Arc::clone(&w.schema),
            StreamPlan::WindowAggregate(a) => Arc::clone(&a.schema),
            StreamPlan::UpdatingAggregate(a) => Arc::clone(&a.schema),
            StreamPlan::ChangelogNormalize(n) => Arc::clone(&n.schema),
            StreamPlan::WindowTopN(t) => Arc::clone(&t.schema),
            StreamPlan::TopN(t) => Arc::clone(&t.schema),
            StreamPlan::Deduplicate(d) => Arc::clone(&d.schema),
            StreamPlan::OverAggregate(o) => Arc::clone(&o.schema),
            StreamPlan::Lead(l) => Arc::clone(&l.schema),
            StreamPlan::IntervalJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::WindowJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::RegularJoin(j) => Arc::clone(&j.schema),
            StreamPlan::TemporalJoin(j) => Arc::clone(&j.schema),
            StreamPlan::LookupJoin(j) => Arc::clone(&j.schema),
            StreamPlan::MatchRecognize(m) => Arc::clone(&m.schema),
        }
    }

    /// True when this node's rows are a changelog: each row is led by [`CHANGELOG_OP`] and
    /// may retract an earlier one. Projections, filters, aliases and unions pass a changelog
    /// on; regular joins, aggregates and Top-N consume one; the planner refuses every other
    /// operator over one.
    pub fn is_updating(&self) -> bool {
        match self {
            StreamPlan::Source(s) => s.is_updating(),
            StreamPlan::WindowAggregate(a) => a.windowing.emit.is_updating(),
            StreamPlan::Window(w) => w.emit.is_updating(),
            StreamPlan::UpdatingAggregate(_)
            | StreamPlan::ChangelogNormalize(_)
            | StreamPlan::TopN(_) => true,
            StreamPlan::Deduplicate(d) => d.keep == Keep::Last,
            StreamPlan::RegularJoin(j) => j.updating,
            StreamPlan::Project { input, .. }
            | StreamPlan::Filter { input, .. }
            | StreamPlan::ProcessingTime { input, .. }
            | StreamPlan::Alias { input, .. } => input.is_updating(),
            StreamPlan::Union { inputs, .. } => inputs.iter().any(StreamPlan::is_updating),
            StreamPlan::Limit { .. }
            | StreamPlan::WindowTopN(_)
            | StreamPlan::OverAggregate(_)
            | StreamPlan::Lead(_)
            | StreamPlan::IntervalJoin(_)
            | StreamPlan::WindowJoin(_)
            | StreamPlan::TemporalJoin(_)
            | StreamPlan::LookupJoin(_)
            | StreamPlan::MatchRecognize(_) => false,
        }
    }

    /// The sources this plan reads, in plan order.
    pub fn sources(&self) -> Vec<&SourceNode> {
        let mut out = Vec::new();
        self.visit_sources(&mut out);
        out
    }

    /// Sets the state TTL of every operator that holds state until a TTL frees it (regular
    /// joins, updating aggregates, Top-N, deduplication) and has none of its own.
    pub fn set_state_ttl(&mut self, ttl: std::time::Duration) {
        let own = match self {
            StreamPlan::RegularJoin(j) => Some(&mut j.ttl),
            StreamPlan::UpdatingAggregate(a) => Some(&mut a.ttl),
            StreamPlan::TopN(t) => Some(&mut t.ttl),
            StreamPlan::Deduplicate(d) => Some(&mut d.ttl),
            _ => None,
        };
        if let Some(own) = own
            && own.is_none()
        {
            *own = Some(ttl);
        }
        for input in self.inputs_mut() {
            input.set_state_ttl(ttl);
        }
    }

    /// How each window aggregate of the plan emits, in plan order (for an aggregate over
    /// SESSION windows, the SESSION's emission).
    pub fn window_emissions(&self) -> Vec<Emission> {
        let mut out = Vec::new();
        match self {
            StreamPlan::WindowAggregate(a) => out.push(a.windowing.emit),
            StreamPlan::Window(w) if w.emit.is_updating() => out.push(w.emit),
            _ => {}
        }
        for input in self.inputs() {
            out.extend(input.window_emissions());
        }
        out
    }

    fn visit_sources<'a>(&'a self, out: &mut Vec<&'a SourceNode>) {
        match self {
            StreamPlan::Source(s) => out.push(s),
            _ => self.inputs().into_iter().for_each(|i| i.visit_sources(out)),
        }
    }
}
