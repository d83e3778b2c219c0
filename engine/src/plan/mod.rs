//! Streaming plan nodes: what a continuous query computes, before anything runs.
//!
//! A [`StreamPlan`] is built from DataFusion's optimized logical plan by
//! [`planner::plan_stream`]; the runtime instantiates operators from it, and `EXPLAIN` prints
//! it. Expressions stay logical here; physical expressions are created when the plan is run.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, SortExpr};

use crate::catalog::RelationDef;
use crate::error::EngineResult;
use crate::operators::join_rows::JoinKind;
use crate::operators::window_aggregate::{BoundColumn, OutputColumn, WindowColumn, Windowing};
use crate::sql::match_recognize::{MatchExpr, MatchSpec, RowsMode};
use window::WindowKind;

pub mod pattern;
pub mod planner;
pub mod window;

/// The leading column of an updating plan node's rows: `+` (insert) or `-` (delete); an
/// update is a `-` of the old row followed by a `+` of the new one. Clients see it as `op`.
pub const CHANGELOG_OP: &str = "__op";

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
    /// `GROUP BY` window columns and keys, emitted when each window closes.
    WindowAggregate(Box<WindowAggregateNode>),
    /// `GROUP BY` keys without window columns: a changelog of each group's values.
    UpdatingAggregate(Box<UpdatingAggregateNode>),
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
    /// `__op`, then the aggregate's columns: the keys (and `__grouping_id`), the aggregates.
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
            StreamPlan::Filter { input, .. } | StreamPlan::Limit { input, .. } => input.schema(),
            StreamPlan::Project { schema, .. }
            | StreamPlan::Union { schema, .. }
            | StreamPlan::Alias { schema, .. } => Arc::clone(schema),
            StreamPlan::Window(w) => Arc::clone(&w.schema),
            StreamPlan::WindowAggregate(a) => Arc::clone(&a.schema),
            StreamPlan::UpdatingAggregate(a) => Arc::clone(&a.schema),
            StreamPlan::WindowTopN(t) => Arc::clone(&t.schema),
            StreamPlan::IntervalJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::WindowJoin(j) => Arc::clone(&j.join.schema),
            StreamPlan::MatchRecognize(m) => Arc::clone(&m.schema),
        }
    }

    /// True when this node's rows are a changelog: each row is led by [`CHANGELOG_OP`] and
    /// may retract an earlier one. Only projections, filters and aliases pass a changelog on;
    /// the planner refuses every other operator over one.
    pub fn is_updating(&self) -> bool {
        match self {
            StreamPlan::Source(s) => s.is_updating(),
            StreamPlan::UpdatingAggregate(_) => true,
            StreamPlan::Project { input, .. }
            | StreamPlan::Filter { input, .. }
            | StreamPlan::Alias { input, .. } => input.is_updating(),
            StreamPlan::Union { .. }
            | StreamPlan::Limit { .. }
            | StreamPlan::Window(_)
            | StreamPlan::WindowAggregate(_)
            | StreamPlan::WindowTopN(_)
            | StreamPlan::IntervalJoin(_)
            | StreamPlan::WindowJoin(_)
            | StreamPlan::MatchRecognize(_) => false,
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
            StreamPlan::Filter { input, .. }
            | StreamPlan::Project { input, .. }
            | StreamPlan::Limit { input, .. }
            | StreamPlan::Alias { input, .. } => input.visit_sources(out),
            StreamPlan::Union { inputs, .. } => inputs.iter().for_each(|i| i.visit_sources(out)),
            StreamPlan::Window(w) => w.input.visit_sources(out),
            StreamPlan::WindowAggregate(a) => a.input.visit_sources(out),
            StreamPlan::UpdatingAggregate(a) => a.input.visit_sources(out),
            StreamPlan::WindowTopN(t) => t.input.visit_sources(out),
            StreamPlan::MatchRecognize(m) => m.input.visit_sources(out),
            StreamPlan::IntervalJoin(j) => {
                j.join.left.visit_sources(out);
                j.join.right.visit_sources(out);
            }
            StreamPlan::WindowJoin(j) => {
                j.join.left.visit_sources(out);
                j.join.right.visit_sources(out);
            }
        }
    }

    /// The plan as indented text, one operator per line (EXPLAIN).
    pub fn explain(&self) -> String {
        let mut out = String::new();
        self.explain_into(0, &mut out);
        out
    }

    fn explain_into(&self, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let next: Vec<&StreamPlan> = match self {
            StreamPlan::Source(s) => {
                let columns: Vec<String> =
                    s.schema.fields().iter().map(|f| f.name().clone()).collect();
                let watermark = s
                    .relation
                    .watermark
                    .as_ref()
                    .map(|w| format!(", watermark=[{}]", w.expr_sql))
                    .unwrap_or_default();
                let kind = match &s.relation.connector {
                    Some(c) => format!("connector={c}"),
                    None => "table".to_string(),
                };
                let _ = writeln!(
                    out,
                    "{pad}Source: {} {kind}, columns=[{}]{watermark}, emit=append",
                    s.relation.name,
                    columns.join(", ")
                );
                vec![]
            }
            StreamPlan::Filter { input, predicate } => {
                let _ = writeln!(out, "{pad}Filter: {predicate}");
                vec![input]
            }
            StreamPlan::Project { input, exprs, .. } => {
                let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                let _ = writeln!(out, "{pad}Project: {}", exprs.join(", "));
                vec![input]
            }
            StreamPlan::Union { inputs, .. } => {
                let _ = writeln!(out, "{pad}Union: watermark=min(inputs)");
                inputs.iter().collect()
            }
            StreamPlan::Limit { input, skip, fetch } => {
                let fetch = fetch.map_or("none".to_string(), |f| f.to_string());
                let _ = writeln!(out, "{pad}Limit: skip={skip}, fetch={fetch}");
                vec![input]
            }
            StreamPlan::Alias { input, .. } => {
                input.explain_into(depth, out);
                return;
            }
            StreamPlan::Window(w) => {
                let input_schema = w.input.schema();
                let column = |i: usize| input_schema.field(i).name().clone();
                let keys: Vec<String> = w.key_indices.iter().map(|i| column(*i)).collect();
                let partition = if keys.is_empty() {
                    String::new()
                } else {
                    format!(", partition=[{}]", keys.join(", "))
                };
                let mode = if w.slices {
                    ", assigns=slices"
                } else if matches!(w.kind, WindowKind::Session { .. }) {
                    ", emit=on window close"
                } else {
                    ", emit=append"
                };
                let _ = writeln!(
                    out,
                    "{pad}Window: {} on {}{partition}{mode}",
                    w.kind,
                    column(w.time_index)
                );
                vec![&w.input]
            }
            StreamPlan::WindowAggregate(a) => {
                let keys: Vec<String> = a.keys.iter().map(|e| e.to_string()).collect();
                let window: Vec<&str> = a
                    .output
                    .iter()
                    .filter_map(|c| match c {
                        OutputColumn::Window(WindowColumn::Start) => Some("window_start"),
                        OutputColumn::Window(WindowColumn::End) => Some("window_end"),
                        OutputColumn::Window(WindowColumn::Time) => Some("window_time"),
                        _ => None,
                    })
                    .collect();
                let aggs: Vec<String> = a.aggregates.iter().map(|e| e.to_string()).collect();
                let sets = match &a.grouping_sets {
                    Some(sets) => format!(", grouping_sets={}", sets.len()),
                    None => String::new(),
                };
                let slicing = match (a.windowing.sliced, a.windowing.kind.slice_width()) {
                    (true, Some(w)) => format!(", slices={}", window::format_duration(w)),
                    _ => ", slices=windows".to_string(),
                };
                let _ = writeln!(
                    out,
                    "{pad}WindowAggregate: {} window=[{}], keys=[{}]{sets}, aggregates=[{}]{slicing}, emit=on window close",
                    a.windowing.kind,
                    window.join(", "),
                    keys.join(", "),
                    aggs.join(", ")
                );
                vec![&a.input]
            }
            StreamPlan::UpdatingAggregate(a) => {
                let keys: Vec<String> = a.keys.iter().map(|e| e.to_string()).collect();
                let aggs: Vec<String> = a.aggregates.iter().map(|e| e.to_string()).collect();
                let sets = match &a.grouping_sets {
                    Some(sets) => format!(", grouping_sets={}", sets.len()),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{pad}UpdatingAggregate: keys=[{}]{sets}, aggregates=[{}], emit=updating, state=unbounded (one entry per distinct group)",
                    keys.join(", "),
                    aggs.join(", ")
                );
                vec![&a.input]
            }
            StreamPlan::WindowTopN(t) => {
                let partition: Vec<String> = t.partition.iter().map(|e| e.to_string()).collect();
                let order: Vec<String> = t.order.iter().map(|e| e.to_string()).collect();
                let _ = writeln!(
                    out,
                    "{pad}WindowTopN: {} limit={}, partition=[window{}{}], order=[{}], emit=on window close",
                    t.kind,
                    t.limit,
                    if partition.is_empty() { "" } else { ", " },
                    partition.join(", "),
                    order.join(", ")
                );
                vec![&t.input]
            }
            StreamPlan::IntervalJoin(j) => {
                let left = j.join.left.schema();
                let right = j.join.right.schema();
                let _ = writeln!(
                    out,
                    "{pad}IntervalJoin: {} on [{}], {} - {} in [{}, {}]{}, emit=append",
                    j.join.kind,
                    join_keys(&j.join),
                    left.field(j.left_time).name(),
                    right.field(j.right_time).name(),
                    window::format_signed_duration(j.lower),
                    window::format_signed_duration(j.upper),
                    residual(&j.join)
                );
                vec![&j.join.left, &j.join.right]
            }
            StreamPlan::WindowJoin(j) => {
                let _ = writeln!(
                    out,
                    "{pad}WindowJoin: {} {} on [window{}]{}, emit=on window close",
                    j.join.kind,
                    j.window,
                    if j.join.left_keys.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", join_keys(&j.join))
                    },
                    residual(&j.join)
                );
                vec![&j.join.left, &j.join.right]
            }
            StreamPlan::MatchRecognize(m) => {
                let _ = writeln!(out, "{pad}{}", explain_match_recognize(m));
                vec![&m.input]
            }
        };
        for child in next {
            child.explain_into(depth + 1, out);
        }
    }
}

/// One EXPLAIN line for MATCH_RECOGNIZE: partition, order, pattern, how conditions run and
/// whether the state is bounded.
fn explain_match_recognize(m: &MatchRecognizeStreamNode) -> String {
    let spec = &m.spec;
    let input = m.input.schema();
    let column = |i: usize| input.field(i).name().clone();
    let partition: Vec<String> = spec.partition_by.iter().map(|i| column(*i)).collect();
    let mut order = vec![column(spec.time)];
    order.extend(spec.order_by.iter().map(|o| o.to_string()));
    let (vectorized, per_match): (Vec<_>, Vec<_>) = spec
        .defines
        .iter()
        .enumerate()
        .filter_map(|(v, d)| d.as_ref().map(|d| (v, d)))
        .partition(|(v, d)| d.is_row_local(*v as crate::plan::pattern::VarId));
    let names = |list: Vec<(usize, &MatchExpr)>| -> String {
        list.iter()
            .map(|(v, _)| spec.variables[*v].clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = match spec.rows {
        RowsMode::One => "one row per match",
        RowsMode::All(_) => "all rows per match",
    };
    let within = spec
        .within
        .map(|w| format!(", within={}", window::format_duration(w)))
        .unwrap_or_default();
    let state = if m.no_watermark {
        "held until end of input (no watermark)".to_string()
    } else if spec.unbounded_state() {
        "unbounded (the pattern has an unbounded quantifier and no WITHIN)".to_string()
    } else {
        "bounded".to_string()
    };
    format!(
        "MatchRecognize: partition=[{}], order=[{}], pattern=({}){within}, {rows}, \
         vectorized define=[{}], per-match define=[{}], state={state}, emit=on watermark",
        partition.join(", "),
        order.join(", "),
        spec.pattern.display(&spec.variables),
        names(vectorized),
        names(per_match),
    )
}

fn join_keys(join: &JoinInputs) -> String {
    join.left_keys
        .iter()
        .zip(&join.right_keys)
        .map(|(l, r)| format!("{l} = {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn residual(join: &JoinInputs) -> String {
    join.residual
        .as_ref()
        .map(|r| format!(", filter={r}"))
        .unwrap_or_default()
}
