//! EXPLAIN and EXPLAIN ANALYZE: a streaming plan as an indented tree.
//!
//! One line per operator, its inputs below it indented by two spaces (the first input of a
//! join is its left side). A line is the operator's name and what it computes, then the
//! fields that say how it behaves in time, always in this order and each only where it
//! applies:
//!
//! - `distribution=` (only when the plan is explained for a parallelism above 1): how rows
//!   reach the operator's instances: `hash(...)` exchange on keys, `per channel` (one instance
//!   per upstream instance) or `single` (one instance).
//! - `emit=`: `append` (rows leave as they are computed), `on window close` or `on watermark`.
//! - `watermark=`: what the operator forwards: a source its `WATERMARK` expression, an
//!   operator with several inputs the minimum of its inputs', an interval join that minimum
//!   held back by the interval, a window operator the watermark after emitting what it closes.
//! - `state=`: what the operator holds and what frees it, from the state tables its operator
//!   declares ([`StreamPlan::state_tables`], [`crate::state::describe`]): grouped by what frees
//!   them (`bounded by watermark`, `held until end of input`, `unbounded`), each table as
//!   `name: what an entry holds [key]`.
//!
//! Stateless operators (filter, projection, window assignment, limit) show none of the last
//! three: they emit each batch as it comes and forward the watermark unchanged. EXPLAIN
//! ANALYZE appends the figures a running (or finished) query measured to each line.
//!
//! Each line comes from `StreamPlan::describe`, one match arm per node kind: a new node kind
//! adds an arm there, in `StreamPlan::inputs` and in `StreamPlan::partitioning`.

use std::fmt::Write;

use datafusion::arrow::temporal_conversions::timestamp_ns_to_datetime;
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::{JoinInputs, MatchRecognizeStreamNode, StreamPlan};
use crate::operators::match_recognize::RowsFreed;
use crate::operators::window::{self, WindowKind};
use crate::operators::window_aggregate::{OutputColumn, WindowColumn};
use crate::operators::{
    changelog_normalize, deduplicate, interval_join, lead, limit, match_recognize, over_aggregate,
    regular_join, session_window, temporal_join, top_n, updating_aggregate, window_aggregate,
    window_join, window_top_n,
};
use crate::plan::match_recognize::{MatchExpr, RowsMode};
use crate::runtime::QueryMetrics;
use crate::runtime::message::WATERMARK_END;
use crate::state::{self, StateTable};

/// How EXPLAIN renders a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The parallelism the query would run at: above 1, each operator line says how rows
    /// reach its instances.
    pub parallelism: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self { parallelism: 1 }
    }
}

/// How the rows of a node's inputs reach the parallel instances of its operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Partitioning {
    /// One instance per upstream instance, fed by it alone (stateless operators).
    PerChannel,
    /// One instance reading every row.
    Single,
    /// One instance per unit of parallelism; input `i`'s rows go by the hash of `keys[i]`
    /// (expressions over that input, of matching types across inputs).
    Hash(Vec<Vec<Expr>>),
}

impl Partitioning {
    /// Hashed on `keys`, or [`Partitioning::Single`] when an input has no key.
    fn hash(keys: Vec<Vec<Expr>>) -> Self {
        if keys.iter().any(Vec::is_empty) {
            Partitioning::Single
        } else {
            Partitioning::Hash(keys)
        }
    }
}

impl std::fmt::Display for Partitioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |keys: &[Expr]| {
            keys.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Partitioning::PerChannel => write!(f, "per channel"),
            Partitioning::Single => write!(f, "single"),
            Partitioning::Hash(keys) => match keys.as_slice() {
                [one] => write!(f, "hash({})", list(one)),
                [left, right] => write!(f, "hash(left: {}; right: {})", list(left), list(right)),
                more => {
                    let lists: Vec<String> = more.iter().map(|k| list(k)).collect();
                    write!(f, "hash({})", lists.join("; "))
                }
            },
        }
    }
}

/// One EXPLAIN line before rendering: the operator's own text and its time fields.
struct Description<'a> {
    /// `Name: details`.
    head: String,
    emit: Option<&'static str>,
    watermark: Option<String>,
    inputs: Vec<&'a StreamPlan>,
}

impl<'a> Description<'a> {
    fn new(head: String, inputs: Vec<&'a StreamPlan>) -> Self {
        Self {
            head,
            emit: None,
            watermark: None,
            inputs,
        }
    }

    fn emit(mut self, emit: &'static str) -> Self {
        self.emit = Some(emit);
        self
    }

    fn watermark(mut self, watermark: impl Into<String>) -> Self {
        self.watermark = Some(watermark.into());
        self
    }
}

/// What a window operator does with the watermark.
const AFTER_EMITTING: &str = "forwarded after emitting";

impl StreamPlan {
    /// The state tables this node's operator declares (its module says what they are):
    /// EXPLAIN's `state=` is derived from them, and the runtime checks every snapshot and
    /// restore of the operator against them.
    pub fn state_tables(&self) -> Vec<StateTable> {
        let names =
            |exprs: &[Expr]| -> Vec<String> { exprs.iter().map(|e| e.to_string()).collect() };
        match self {
            StreamPlan::Window(w) if matches!(w.kind, WindowKind::Session { .. }) => {
                let input = w.input.schema();
                let keys: Vec<String> = w
                    .key_indices
                    .iter()
                    .map(|i| input.field(*i).name().clone())
                    .collect();
                session_window::state_tables(&keys)
            }
            StreamPlan::WindowAggregate(a) => window_aggregate::state_tables(
                &names(&a.keys),
                a.slice_width().is_some(),
                a.windowing.emit.is_updating(),
            ),
            StreamPlan::UpdatingAggregate(a) => updating_aggregate::state_tables(
                &names(&a.keys),
                a.ttl.is_some(),
                a.expiry.is_some(),
            ),
            StreamPlan::ChangelogNormalize(n) => changelog_normalize::state_tables(&names(&n.keys)),
            StreamPlan::WindowTopN(t) => window_top_n::state_tables(&names(&t.partition)),
            StreamPlan::TopN(t) => {
                top_n::state_tables(&names(&t.partition), t.input.is_updating(), t.ttl.is_some())
            }
            StreamPlan::Deduplicate(d) => {
                deduplicate::state_tables(&names(&d.keys), d.keep, d.ttl.is_some())
            }
            StreamPlan::OverAggregate(o) => {
                over_aggregate::state_tables(&names(&o.partition), o.frame)
            }
            StreamPlan::Lead(l) => lead::state_tables(&names(&l.partition)),
            StreamPlan::IntervalJoin(j) => {
                interval_join::state_tables(&names(&j.join.left_keys), &names(&j.join.right_keys))
            }
            StreamPlan::WindowJoin(j) => {
                window_join::state_tables(&names(&j.join.left_keys), &names(&j.join.right_keys))
            }
            StreamPlan::RegularJoin(j) => regular_join::state_tables(
                &names(&j.join.left_keys),
                &names(&j.join.right_keys),
                j.ttl.is_some(),
            ),
            StreamPlan::TemporalJoin(j) => {
                temporal_join::state_tables(&names(&j.left_keys), &names(&j.right_keys))
            }
            StreamPlan::MatchRecognize(m) => {
                let input = m.input.schema();
                let partition: Vec<String> = m
                    .spec
                    .partition_by
                    .iter()
                    .map(|i| input.field(*i).name().clone())
                    .collect();
                let rows = if m.no_watermark {
                    RowsFreed::EndOfInput
                } else if m.spec.unbounded_state() {
                    RowsFreed::Unbounded
                } else {
                    RowsFreed::Watermark
                };
                match_recognize::state_tables(&partition, input.field(m.spec.time).name(), rows)
            }
            StreamPlan::Limit { .. } => limit::state_tables(),
            _ => Vec::new(),
        }
    }

    /// The plan as an indented tree, one operator per line (EXPLAIN), for one instance per
    /// operator.
    pub fn explain(&self) -> String {
        self.explain_with(&ExplainOptions::default())
    }

    /// The plan as an indented tree, one operator per line (EXPLAIN).
    pub fn explain_with(&self, options: &ExplainOptions) -> String {
        let mut out = String::new();
        self.render(0, &mut 0, options, None, &mut out);
        out
    }

    /// The plan as [`explain_with`](Self::explain_with) shows it, each operator followed by
    /// what its instances measured (EXPLAIN ANALYZE): rows in and out, instances, the rows and
    /// bytes held in state and the watermark it last emitted. `metrics` must come from running
    /// this plan; it may be read while the query runs.
    pub fn explain_analyze(&self, metrics: &QueryMetrics) -> String {
        let options = ExplainOptions {
            parallelism: metrics.parallelism,
        };
        let mut out = String::new();
        self.render(0, &mut 0, &options, Some(metrics), &mut out);
        out
    }

    /// The id of the node whose rows the query returns: the root, or the first node below it
    /// that is not an alias. Ids number every node in pre-order from 0, inputs in order (the
    /// order in which the runtime builds them; see `runtime::NodeMetrics::id`).
    pub fn output_node(&self) -> usize {
        match self {
            StreamPlan::Alias { input, .. } => 1 + input.output_node(),
            _ => 0,
        }
    }

    /// The inputs of this node, in order (a join's left side first).
    pub fn inputs(&self) -> Vec<&StreamPlan> {
        match self {
            StreamPlan::Source(_) => vec![],
            StreamPlan::Filter { input, .. }
            | StreamPlan::Project { input, .. }
            | StreamPlan::Limit { input, .. }
            | StreamPlan::ProcessingTime { input, .. }
            | StreamPlan::Alias { input, .. } => vec![input],
            StreamPlan::Union { inputs, .. } => inputs.iter().collect(),
            StreamPlan::Window(w) => vec![&w.input],
            StreamPlan::WindowAggregate(a) => vec![&a.input],
            StreamPlan::UpdatingAggregate(a) => vec![&a.input],
            StreamPlan::ChangelogNormalize(n) => vec![&n.input],
            StreamPlan::WindowTopN(t) => vec![&t.input],
            StreamPlan::TopN(t) => vec![&t.input],
            StreamPlan::Deduplicate(d) => vec![&d.input],
            StreamPlan::OverAggregate(o) => vec![&o.input],
            StreamPlan::Lead(l) => vec![&l.input],
            StreamPlan::MatchRecognize(m) => vec![&m.input],
            StreamPlan::IntervalJoin(j) => vec![&j.join.left, &j.join.right],
            StreamPlan::WindowJoin(j) => vec![&j.join.left, &j.join.right],
            StreamPlan::RegularJoin(j) => vec![&j.join.left, &j.join.right],
            StreamPlan::TemporalJoin(j) => vec![&j.left, &j.right],
            StreamPlan::LookupJoin(j) => vec![&j.left],
        }
    }

    /// [`StreamPlan::inputs`], to change them.
    pub fn inputs_mut(&mut self) -> Vec<&mut StreamPlan> {
        match self {
            StreamPlan::Source(_) => vec![],
            StreamPlan::Filter { input, .. }
            | StreamPlan::Project { input, .. }
            | StreamPlan::Limit { input, .. }
            | StreamPlan::ProcessingTime { input, .. }
            | StreamPlan::Alias { input, .. } => vec![input],
            StreamPlan::Union { inputs, .. } => inputs.iter_mut().collect(),
            StreamPlan::Window(w) => vec![&mut w.input],
            StreamPlan::WindowAggregate(a) => vec![&mut a.input],
            StreamPlan::UpdatingAggregate(a) => vec![&mut a.input],
            StreamPlan::ChangelogNormalize(n) => vec![&mut n.input],
            StreamPlan::WindowTopN(t) => vec![&mut t.input],
            StreamPlan::MatchRecognize(m) => vec![&mut m.input],
            StreamPlan::IntervalJoin(j) => vec![&mut j.join.left, &mut j.join.right],
            StreamPlan::WindowJoin(j) => vec![&mut j.join.left, &mut j.join.right],
            StreamPlan::RegularJoin(j) => vec![&mut j.join.left, &mut j.join.right],
            StreamPlan::TemporalJoin(j) => vec![&mut j.left, &mut j.right],
            StreamPlan::LookupJoin(j) => vec![&mut j.left],
            StreamPlan::TopN(t) => vec![&mut t.input],
            StreamPlan::Deduplicate(d) => vec![&mut d.input],
            StreamPlan::OverAggregate(o) => vec![&mut o.input],
            StreamPlan::Lead(l) => vec![&mut l.input],
        }
    }

    /// How rows reach the parallel instances of this node's operator; `None` for nodes that
    /// run no operator (sources have readers, aliases nothing).
    pub fn partitioning(&self) -> Option<Partitioning> {
        let columns = |input: &StreamPlan, indices: &[usize]| -> Vec<Expr> {
            let schema = input.schema();
            indices
                .iter()
                .map(|&i| Expr::Column(Column::from(schema.qualified_field(i))))
                .collect()
        };
        Some(match self {
            StreamPlan::Source(_) | StreamPlan::Alias { .. } => return None,
            StreamPlan::Filter { .. }
            | StreamPlan::Project { .. }
            | StreamPlan::Union { .. }
            | StreamPlan::ProcessingTime { .. } => Partitioning::PerChannel,
            StreamPlan::Limit { .. } => Partitioning::Single,
            StreamPlan::Window(w) => match w.kind {
                WindowKind::Session { .. } => {
                    Partitioning::hash(vec![columns(&w.input, &w.key_indices)])
                }
                _ => Partitioning::PerChannel,
            },
            StreamPlan::WindowAggregate(a) => {
                Partitioning::hash(vec![kept_keys(&a.keys, a.grouping_sets.as_ref())])
            }
            StreamPlan::UpdatingAggregate(a) => {
                let mut keys = kept_keys(&a.keys, a.grouping_sets.as_ref());
                // Over sessions, by the keys other than window columns.
                if let Some(expiry) = &a.expiry {
                    let windows: Vec<&Expr> = expiry
                        .window_keys
                        .iter()
                        .filter_map(|k| a.keys.get(*k))
                        .collect();
                    keys.retain(|k| !windows.contains(&k));
                }
                Partitioning::hash(vec![keys])
            }
            StreamPlan::ChangelogNormalize(n) => Partitioning::hash(vec![n.keys.clone()]),
            StreamPlan::WindowTopN(t) => Partitioning::hash(vec![t.partition.clone()]),
            StreamPlan::TopN(t) => Partitioning::hash(vec![t.partition.clone()]),
            StreamPlan::Deduplicate(d) => Partitioning::hash(vec![d.keys.clone()]),
            StreamPlan::OverAggregate(o) => Partitioning::hash(vec![o.partition.clone()]),
            StreamPlan::Lead(l) => Partitioning::hash(vec![l.partition.clone()]),
            StreamPlan::MatchRecognize(m) => {
                Partitioning::hash(vec![columns(&m.input, &m.spec.partition_by)])
            }
            StreamPlan::IntervalJoin(j) => join_partitioning(&j.join),
            StreamPlan::WindowJoin(j) => join_partitioning(&j.join),
            StreamPlan::RegularJoin(j) => join_partitioning(&j.join),
            StreamPlan::TemporalJoin(j) => {
                Partitioning::hash(vec![j.left_keys.clone(), j.right_keys.clone()])
            }
            StreamPlan::LookupJoin(_) => Partitioning::PerChannel,
        })
    }

    /// Writes this node's line and its inputs'. `next_id` is the pre-order id of this node.
    fn render(
        &self,
        depth: usize,
        next_id: &mut usize,
        options: &ExplainOptions,
        metrics: Option<&QueryMetrics>,
        out: &mut String,
    ) {
        let id = *next_id;
        *next_id += 1;
        if let StreamPlan::Alias { input, .. } = self {
            // Renames columns only: no line of its own.
            input.render(depth, next_id, options, metrics, out);
            return;
        }
        let d = self.describe();
        let _ = write!(out, "{}{}", "  ".repeat(depth), d.head);
        if options.parallelism > 1
            && let Some(p) = self.partitioning()
        {
            let _ = write!(out, ", distribution={p}");
        }
        if let Some(emit) = d.emit {
            let _ = write!(out, ", emit={emit}");
        }
        if let Some(w) = &d.watermark {
            let _ = write!(out, ", watermark={w}");
        }
        if let Some(s) = state::describe(&self.state_tables()) {
            let _ = write!(out, ", state={s}");
        }
        if let Some(node) = metrics.and_then(|m| m.node(id)) {
            let t = node.totals();
            let _ = write!(
                out,
                " (actual: instances={}, rows_in={}, rows_out={}, state_rows={}, \
                 state_bytes={}, watermark={})",
                t.instances,
                t.rows_in,
                t.rows_out,
                t.state_rows,
                t.state_bytes,
                format_watermark(t.watermark)
            );
        }
        out.push('\n');
        for input in d.inputs {
            input.render(depth + 1, next_id, options, metrics, out);
        }
    }

    /// The line of one node (not an alias).
    fn describe(&self) -> Description<'_> {
        let inputs = self.inputs();
        match self {
            StreamPlan::Source(s) => {
                let columns: Vec<String> =
                    s.schema.fields().iter().map(|f| f.name().clone()).collect();
                let kind = match (&s.relation.connector, &s.relation.view) {
                    (Some(c), _) => format!("connector={c}"),
                    (None, Some(v)) if v.mode() == crate::view::ViewMode::Updating => {
                        "materialized view (changelog)".to_string()
                    }
                    (None, Some(_)) => "materialized view".to_string(),
                    (None, None) => "table".to_string(),
                };
                let watermark = match (&s.relation.watermark, &s.relation.view) {
                    (Some(w), _) => format!("[{}]", w.expr_sql),
                    (None, Some(v)) if v.time_columns().is_some() => "the view's job's".to_string(),
                    _ => "none".to_string(),
                };
                Description::new(
                    format!(
                        "Source: {} {kind}, columns=[{}]",
                        s.relation.name,
                        columns.join(", ")
                    ),
                    inputs,
                )
                .emit("append")
                .watermark(watermark)
            }
            StreamPlan::Filter { predicate, .. } => {
                Description::new(format!("Filter: {predicate}"), inputs)
            }
            StreamPlan::Project { exprs, .. } => {
                let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                Description::new(format!("Project: {}", exprs.join(", ")), inputs)
            }
            StreamPlan::Union { .. } => {
                Description::new(format!("Union: {} inputs", inputs.len()), inputs)
                    .watermark("min(inputs)")
            }
            StreamPlan::Limit { skip, fetch, .. } => {
                let fetch = fetch.map_or("none".to_string(), |f| f.to_string());
                Description::new(format!("Limit: skip={skip}, fetch={fetch}"), inputs)
            }
            StreamPlan::Alias { .. } => Description::new(String::new(), inputs),
            StreamPlan::ProcessingTime { input, column } => Description::new(
                format!(
                    "ProcessingTime: {} = wall clock",
                    input.schema().field(*column).name()
                ),
                inputs,
            )
            .emit("append")
            .watermark("wall clock"),
            StreamPlan::Window(w) => {
                let input_schema = w.input.schema();
                let column = |i: usize| input_schema.field(i).name().clone();
                let keys: Vec<String> = w.key_indices.iter().map(|i| column(*i)).collect();
                let partition = if keys.is_empty() {
                    String::new()
                } else {
                    format!(", partition=[{}]", keys.join(", "))
                };
                let assigns = if w.slices { ", assigns=slices" } else { "" };
                let head = format!(
                    "Window: {} on {}{partition}{assigns}",
                    w.kind,
                    column(w.time_index)
                );
                match (w.kind, w.slices) {
                    (WindowKind::Session { .. }, _) => {
                        let emit = w.emit;
                        let head = if emit.lateness > 0 {
                            format!(
                                "{head}, allowed_lateness={}",
                                window::format_duration(emit.lateness)
                            )
                        } else {
                            head
                        };
                        Description::new(head, inputs)
                            .emit(match (emit.on_update, emit.lateness > 0) {
                                (true, _) => "updating (on update)",
                                (false, true) => "updating (on window close, then late updates)",
                                (false, false) => "on window close",
                            })
                            .watermark(AFTER_EMITTING)
                    }
                    (_, true) => Description::new(head, inputs),
                    (_, false) => Description::new(head, inputs).emit("append"),
                }
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
                let slicing = match a.slice_width() {
                    Some(w) => format!(", slices={}", window::format_duration(w)),
                    None => ", slices=windows".to_string(),
                };
                let emit = a.windowing.emit;
                let lateness = if emit.lateness > 0 {
                    format!(
                        ", allowed_lateness={}",
                        window::format_duration(emit.lateness)
                    )
                } else {
                    String::new()
                };
                Description::new(
                    format!(
                        "WindowAggregate: {} window=[{}], keys=[{}]{sets}, aggregates=[{}]{slicing}{lateness}",
                        a.windowing.kind,
                        window.join(", "),
                        keys.join(", "),
                        aggs.join(", ")
                    ),
                    inputs,
                )
                .emit(match (emit.on_update, emit.lateness > 0) {
                    (true, _) => "updating (on update)",
                    (false, true) => "updating (on window close, then late updates)",
                    (false, false) => "on window close",
                })
                .watermark(AFTER_EMITTING)
            }
            StreamPlan::UpdatingAggregate(a) => {
                let keys: Vec<String> = a.keys.iter().map(|e| e.to_string()).collect();
                let aggs: Vec<String> = a.aggregates.iter().map(|e| e.to_string()).collect();
                let sets = match &a.grouping_sets {
                    Some(sets) => format!(", grouping_sets={}", sets.len()),
                    None => String::new(),
                };
                let expiry = match &a.expiry {
                    Some(e) => {
                        let key = keys.get(e.key).map_or("?", String::as_str);
                        match e.after {
                            0 => format!(", expires={key}"),
                            after => {
                                format!(", expires={key} + {}", window::format_duration(after))
                            }
                        }
                    }
                    None => String::new(),
                };
                Description::new(
                    format!(
                        "UpdatingAggregate: keys=[{}]{sets}, aggregates=[{}]{}{expiry}",
                        keys.join(", "),
                        aggs.join(", "),
                        ttl_part(a.ttl)
                    ),
                    inputs,
                )
                .emit("updating")
                .watermark(if a.expiry.is_some() {
                    "forwarded after expiring groups"
                } else {
                    "forwarded unchanged"
                })
            }
            StreamPlan::ChangelogNormalize(n) => {
                let keys: Vec<String> = n.keys.iter().map(|e| e.to_string()).collect();
                Description::new(
                    format!("ChangelogNormalize: key=[{}]", keys.join(", ")),
                    inputs,
                )
                .emit("updating")
                .watermark("forwarded unchanged")
            }
            StreamPlan::WindowTopN(t) => {
                let partition: Vec<String> = t.partition.iter().map(|e| e.to_string()).collect();
                let order: Vec<String> = t.order.iter().map(|e| e.to_string()).collect();
                Description::new(
                    format!(
                        "WindowTopN: {} {} <= {}, partition=[window{}{}], order=[{}]",
                        t.kind,
                        t.function,
                        t.limit,
                        if partition.is_empty() { "" } else { ", " },
                        partition.join(", "),
                        order.join(", ")
                    ),
                    inputs,
                )
                .emit("on window close")
                .watermark(AFTER_EMITTING)
            }
            StreamPlan::TopN(t) => {
                let partition: Vec<String> = t.partition.iter().map(|e| e.to_string()).collect();
                let order: Vec<String> = t.order.iter().map(|e| e.to_string()).collect();
                let number = if t.rank_output {
                    "emitted"
                } else {
                    "not emitted"
                };
                Description::new(
                    format!(
                        "TopN: {} <= {}, partition=[{}], order=[{}], number {number}{}",
                        t.function,
                        t.limit,
                        partition.join(", "),
                        order.join(", "),
                        ttl_part(t.ttl)
                    ),
                    inputs,
                )
                .emit("updating")
                .watermark("forwarded unchanged")
            }
            StreamPlan::Deduplicate(d) => {
                let keys: Vec<String> = d.keys.iter().map(|e| e.to_string()).collect();
                let head = format!(
                    "Deduplicate: keep {}, key=[{}], order=[{}]{}",
                    match d.keep {
                        deduplicate::Keep::First => "first",
                        deduplicate::Keep::Last => "last",
                    },
                    keys.join(", "),
                    d.order,
                    ttl_part(d.ttl)
                );
                match d.keep {
                    deduplicate::Keep::First => Description::new(head, inputs)
                        .emit("on watermark")
                        .watermark(AFTER_EMITTING),
                    deduplicate::Keep::Last => Description::new(head, inputs)
                        .emit("updating")
                        .watermark("forwarded unchanged"),
                }
            }
            StreamPlan::OverAggregate(o) => {
                let partition: Vec<String> = o.partition.iter().map(|e| e.to_string()).collect();
                let functions: Vec<String> = o.functions.iter().map(|e| e.to_string()).collect();
                let frame = match o.frame {
                    over_aggregate::OverFrame::Rows(Some(n)) => format!("rows {n} preceding"),
                    over_aggregate::OverFrame::Rows(None) => "rows unbounded preceding".into(),
                    over_aggregate::OverFrame::Range(Some(ns)) => {
                        format!("range {} preceding", window::format_duration(ns))
                    }
                    over_aggregate::OverFrame::Range(None) => "range unbounded preceding".into(),
                };
                Description::new(
                    format!(
                        "OverAggregate: [{}], partition=[{}], order=[{}], {frame}",
                        functions.join(", "),
                        partition.join(", "),
                        o.order
                    ),
                    inputs,
                )
                .emit("on watermark")
                .watermark(AFTER_EMITTING)
            }
            StreamPlan::Lead(l) => {
                let partition: Vec<String> = l.partition.iter().map(|e| e.to_string()).collect();
                let functions: Vec<String> = l.functions.iter().map(|e| e.to_string()).collect();
                Description::new(
                    format!(
                        "Lead: [{}], partition=[{}], order=[{}]",
                        functions.join(", "),
                        partition.join(", "),
                        l.order
                    ),
                    inputs,
                )
                .emit("when the rows it reads have come")
                .watermark("held behind the earliest waiting row")
            }
            StreamPlan::IntervalJoin(j) => {
                let left = j.join.left.schema();
                let right = j.join.right.schema();
                // The operator holds back its output watermark by the widest bound, so that
                // rows it emits late (outer rows padded once no partner can come) are not
                // late downstream.
                let delay = j.upper.max(j.lower.saturating_neg()).max(0);
                let watermark = if delay == 0 {
                    "min(inputs)".to_string()
                } else {
                    format!(
                        "min(inputs) - {} (held back by the interval)",
                        window::format_duration(delay)
                    )
                };
                Description::new(
                    format!(
                        "IntervalJoin: {} on [{}], {} - {} in [{}, {}]{}",
                        j.join.kind,
                        join_keys(&j.join),
                        left.field(j.left_time).name(),
                        right.field(j.right_time).name(),
                        window::format_signed_duration(j.lower),
                        window::format_signed_duration(j.upper),
                        residual(&j.join)
                    ),
                    inputs,
                )
                .emit("append")
                .watermark(watermark)
            }
            StreamPlan::WindowJoin(j) => Description::new(
                format!(
                    "WindowJoin: {} {} on [window{}]{}",
                    j.join.kind,
                    j.window,
                    if j.join.left_keys.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", join_keys(&j.join))
                    },
                    residual(&j.join)
                ),
                inputs,
            )
            .emit("on window close")
            .watermark(format!("min(inputs), {AFTER_EMITTING}")),
            StreamPlan::RegularJoin(j) => Description::new(
                format!(
                    "RegularJoin: {} on [{}]{}{}",
                    j.join.kind,
                    join_keys(&j.join),
                    residual(&j.join),
                    ttl_part(j.ttl)
                ),
                inputs,
            )
            .emit(if j.updating { "updating" } else { "append" }),
            StreamPlan::TemporalJoin(j) => Description::new(
                format!(
                    "TemporalJoin: {} on [{}] as of {}, versions by {}{}{}",
                    j.kind,
                    pairs(&j.left_keys, &j.right_keys),
                    Column::from(j.left.schema().qualified_field(j.left_time)),
                    Column::from(j.right_schema.qualified_field(j.right_time)),
                    j.right_filter
                        .as_ref()
                        .map(|f| format!(", version filter {f}"))
                        .unwrap_or_default(),
                    j.residual
                        .as_ref()
                        .map(|r| format!(", filter={r}"))
                        .unwrap_or_default(),
                ),
                inputs,
            )
            .emit("on watermark")
            .watermark(format!("min(inputs), {AFTER_EMITTING}")),
            StreamPlan::LookupJoin(j) => Description::new(
                format!(
                    "LookupJoin: {} {} {} on [{}] as of processing time{}{}",
                    j.kind,
                    if j.relation.view.is_some() {
                        "materialized view"
                    } else {
                        "table"
                    },
                    j.relation.name,
                    pairs(&j.left_keys, &j.right_keys),
                    j.right_filter
                        .as_ref()
                        .map(|f| format!(", table filter {f}"))
                        .unwrap_or_default(),
                    j.residual
                        .as_ref()
                        .map(|r| format!(", filter={r}"))
                        .unwrap_or_default(),
                ),
                inputs,
            )
            .emit("append"),
            StreamPlan::MatchRecognize(m) => Description::new(explain_match_recognize(m), inputs)
                .emit("on watermark")
                .watermark(AFTER_EMITTING),
        }
    }
}

/// `, ttl=...` for a node with a state TTL, else nothing.
fn ttl_part(ttl: Option<std::time::Duration>) -> String {
    ttl.map(|ttl| format!(", ttl={}", format_ttl(ttl)))
        .unwrap_or_default()
}

/// A state TTL as EXPLAIN shows it (`1h`, `30s`, `1500ms`).
fn format_ttl(ttl: std::time::Duration) -> String {
    window::format_duration(ttl.as_nanos().min(i64::MAX as u128) as i64)
}

/// A join's partitioning: by the equi-join keys when both sides' keys have the same types (so
/// equal keys hash alike), else one instance.
fn join_partitioning(join: &JoinInputs) -> Partitioning {
    let (left, right) = (join.left.schema(), join.right.schema());
    let types = |keys: &[Expr], schema: &DFSchema| -> Option<Vec<_>> {
        keys.iter().map(|e| e.get_type(schema).ok()).collect()
    };
    let same_types = join.left_keys.len() == join.right_keys.len()
        && matches!(
            (types(&join.left_keys, &left), types(&join.right_keys, &right)),
            (Some(l), Some(r)) if l == r
        );
    if same_types {
        Partitioning::hash(vec![join.left_keys.clone(), join.right_keys.clone()])
    } else {
        Partitioning::Single
    }
}

/// MATCH_RECOGNIZE's line (partition, order, pattern, how conditions run).
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
        .partition(|(v, d)| {
            d.is_row_local(*v as crate::operators::match_recognize::pattern::VarId)
        });
    let names = |list: Vec<(usize, &MatchExpr)>| -> String {
        list.iter()
            .map(|(v, _)| spec.variables[*v].clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = match (spec.rows, spec.timeouts) {
        (RowsMode::One, false) => "one row per match",
        (RowsMode::One, true) => "one row per match with timeouts",
        (RowsMode::All(_), false) => "all rows per match",
        (RowsMode::All(_), true) => "all rows per match with timeouts",
    };
    let within = spec
        .within
        .map(|w| format!(", within={}", window::format_duration(w)))
        .unwrap_or_default();
    format!(
        "MatchRecognize: partition=[{}], order=[{}], pattern=({}){within}, {rows}, \
         vectorized define=[{}], per-match define=[{}]",
        partition.join(", "),
        order.join(", "),
        spec.pattern.display(&spec.variables),
        names(vectorized),
        names(per_match),
    )
}

fn join_keys(join: &JoinInputs) -> String {
    pairs(&join.left_keys, &join.right_keys)
}

/// Join keys as `l = r, ...`.
fn pairs(left: &[Expr], right: &[Expr]) -> String {
    left.iter()
        .zip(right)
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

/// A watermark for EXPLAIN ANALYZE: `none`, `end` or a UTC timestamp.
fn format_watermark(watermark: Option<i64>) -> String {
    match watermark {
        None => "none".to_string(),
        Some(WATERMARK_END) => "end".to_string(),
        Some(w) => timestamp_ns_to_datetime(w).map_or_else(|| w.to_string(), |t| t.to_string()),
    }
}

/// The group keys rows are spread by: a key some grouping set rolls up must meet all its
/// values in one instance, so only the keys every set keeps.
fn kept_keys(keys: &[Expr], grouping_sets: Option<&Vec<Vec<bool>>>) -> Vec<Expr> {
    keys.iter()
        .enumerate()
        .filter(|(k, _)| grouping_sets.is_none_or(|sets| sets.iter().all(|absent| !absent[*k])))
        .map(|(_, e)| e.clone())
        .collect()
}
