//! Streaming plan nodes: what a continuous query computes, before anything runs.
//!
//! A [`StreamPlan`] is built from DataFusion's optimized logical plan by
//! [`planner::plan_stream`]; the runtime instantiates operators from it, and `EXPLAIN` prints
//! it ([`explain`]). Expressions stay logical here; physical expressions are created when the
//! plan is run.

use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, SortExpr};

use crate::catalog::RelationDef;
use crate::operators::join_rows::JoinKind;
use crate::operators::window_aggregate::{BoundColumn, OutputColumn, Windowing};
use crate::sql::match_recognize::MatchSpec;
pub use explain::{ExplainOptions, Partitioning};
use window::WindowKind;

pub mod explain;
pub mod pattern;
pub mod planner;
pub mod window;

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
    /// `GROUP BY` window columns and keys, emitted when each window closes.
    WindowAggregate(Box<WindowAggregateNode>),
    /// `ROW_NUMBER() OVER (PARTITION BY window_start, window_end ...)` with `rn <= N`.
    WindowTopN(Box<WindowTopNNode>),
    /// A join on keys with the two event times bounded against each other.
    IntervalJoin(Box<IntervalJoinNode>),
    /// A join of two inputs with the same windows, on the window bounds and keys.
    WindowJoin(Box<WindowJoinNode>),
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
    pub limit: usize,
    /// The input's columns and the row number.
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
    pub schema: DFSchemaRef,
}

/// A window aggregate: DataFusion's `Aggregate` whose group keys include window columns.
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

/// Reading a source or push table.
#[derive(Debug, Clone)]
pub struct SourceNode {
    pub relation: Arc<RelationDef>,
    /// Column indices of the relation to keep, in output order.
    pub projection: Option<Vec<usize>>,
    /// The output schema (after the projection), qualified by the relation name.
    pub schema: DFSchemaRef,
}

impl StreamPlan {
    /// The schema of the rows this node emits.
    pub fn schema(&self) -> DFSchemaRef {
        match self {
            StreamPlan::Source(s) => Arc::clone(&s.schema),
            StreamPlan::Filter { input, .. } | StreamPlan::Limit { input, .. } => input.schema(),
            StreamPlan::Project { schema, .. }
            | StreamPlan::Union { schema, .. }
            | StreamPlan::Alias { schema, .. } => Arc::clone(schema),
            StreamPlan::Window(w) => Arc::clone(&w.schema),
            StreamPlan::WindowAggregate(a) => Arc::clone(&a.schema),
            StreamPlan::WindowTopN(t) => Arc::clone(&t.schema),
            StreamPlan::IntervalJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::WindowJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::MatchRecognize(m) => Arc::clone(&m.schema),
        }
    }

    /// The sources this plan reads, in plan order.
    pub fn sources(&self) -> Vec<&SourceNode> {
        let mut out = Vec::new();
        self.visit_sources(&mut out);
        out
    }

    fn visit_sources<'a>(&'a self, out: &mut Vec<&'a SourceNode>) {
        match self {
            StreamPlan::Source(s) => out.push(s),
            _ => self.inputs().into_iter().for_each(|i| i.visit_sources(out)),
        }
    }
}
