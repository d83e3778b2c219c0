//! Planning `JOIN rel FOR SYSTEM_TIME AS OF ...`: event-time temporal joins against a
//! versioned table, and processing-time lookup joins against a push table or materialized
//! view (Flink's two joins with a table "as of" a time).
//!
//! The SQL front end rewrites `rel FOR SYSTEM_TIME AS OF expr` into a derived table whose
//! filter calls the marker [`AS_OF_MARKER`] with the expression's text. Here the marker is
//! taken back out of a join's right side, and:
//!
//! - `AS OF left.ts`, the left input's time attribute: a [`TemporalJoinNode`]. The right side
//!   must be a versioned table: an upsert source with a `PRIMARY KEY` and a `WATERMARK`
//!   (versions are its changelog), or a view that keeps the last row per key in event time
//!   (`ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) = 1`, Flink's versioned view;
//!   versions are the rows of its input). The join must equate the whole key.
//! - `AS OF PROCTIME()`: a [`LookupJoinNode`]; the right side is a push table or a
//!   materialized view, read as it is when each left row arrives.
//!
//! Both are INNER or LEFT joins of an append-only left input (as in Flink). The right side is
//! read in full (every column of the relation, or of the versioned view's input), whatever the
//! query projects: the version time and key must be there even when the query does not read
//! them.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, Filter, Join, JoinType, LogicalPlan};

use super::planner::{
    TimeAttribute, as_column, plan_stream, plan_upsert_source, stream_provider, time_attribute,
    top_n_parts,
};
use super::{LookupJoinNode, StreamPlan, TemporalJoinNode};
use crate::catalog::RelationDef;
use crate::error::{EngineError, EngineResult};
use crate::operators::join_rows::JoinKind;
use crate::operators::top_n::RankFunction;

/// The marker function the SQL front end calls with the `AS OF` expression's text.
pub const AS_OF_MARKER: &str = "__eddy_as_of";

fn unsupported(what: impl Into<String>) -> EngineError {
    EngineError::Unsupported(what.into())
}

/// The `AS OF` text when `expr` is a call of the marker.
fn marker_text(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::ScalarFunction(f) if f.name() == AS_OF_MARKER => match f.args.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(text)), _)) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

/// True when `expr` calls the marker.
pub fn has_marker(expr: &Expr) -> bool {
    expr.exists(|e| Ok(marker_text(e).is_some()))
        .unwrap_or(false)
}

/// True when the right side of a join is a relation `FOR SYSTEM_TIME AS OF` something.
pub fn is_as_of(right: &LogicalPlan) -> bool {
    matches!(take_marker(right), Ok(Some(_)))
}

/// The plan with its marker filter taken out, and the marker's text; `None` when no node of
/// the plan's single-input chain has the marker. (DataFusion pushes the marker, which reads no
/// column, down to the scan, through a versioned view's window too.)
fn take_marker(plan: &LogicalPlan) -> EngineResult<Option<(String, LogicalPlan)>> {
    if let LogicalPlan::Filter(f) = plan {
        let conjuncts = split_conjunction(&f.predicate);
        if let Some(text) = conjuncts.iter().find_map(|c| marker_text(c)) {
            let rest: Vec<Expr> = conjuncts
                .into_iter()
                .filter(|c| marker_text(c).is_none())
                .cloned()
                .collect();
            let input = f.input.as_ref().clone();
            let plan = match conjunction(rest) {
                Some(predicate) => {
                    LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?)
                }
                None => input,
            };
            return Ok(Some((text.to_string(), plan)));
        }
    }
    let [input] = plan.inputs()[..] else {
        return Ok(None);
    };
    Ok(match take_marker(input)? {
        Some((text, input)) => Some((text, plan.with_new_exprs(plan.expressions(), vec![input])?)),
        None => None,
    })
}

/// Plans a join whose right side is `FOR SYSTEM_TIME AS OF`; `None` when it is not one.
pub fn plan_as_of_join(join: &Join) -> EngineResult<Option<StreamPlan>> {
    if take_marker(&join.left)?.is_some() {
        return Err(unsupported(
            "FOR SYSTEM_TIME AS OF on the left side of a join: the versioned or lookup table \
             goes on the right (`FROM stream JOIN table FOR SYSTEM_TIME AS OF stream.ts`)",
        ));
    }
    let Some((text, right)) = take_marker(&join.right)? else {
        return Ok(None);
    };
    let kind = match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        other => {
            return Err(unsupported(format!(
                "{other} joins FOR SYSTEM_TIME AS OF (temporal and lookup joins are INNER or LEFT)"
            )));
        }
    };
    if join.on.is_empty() {
        return Err(unsupported(
            "a join FOR SYSTEM_TIME AS OF without an equality of the two sides (`ON o.k = t.k`)",
        ));
    }
    let left = plan_stream(&join.left)?;
    if left.is_updating() {
        return Err(unsupported(
            "a join FOR SYSTEM_TIME AS OF whose left input is an updating result (a \
             changelog); the left input must be append-only",
        ));
    }
    if text.eq_ignore_ascii_case("PROCTIME()") {
        return plan_lookup_join(join, kind, left, &right).map(Some);
    }
    let time = as_of_column(join, &text)?;
    if is_proctime(&join.left, time) {
        return plan_lookup_join(join, kind, left, &right).map(Some);
    }
    plan_temporal_join(join, kind, left, time, &right).map(Some)
}

/// The left input's column `AS OF` names, which must be its time attribute.
fn as_of_column(join: &Join, text: &str) -> EngineResult<usize> {
    let left = join.left.schema();
    let column = Column::from_qualified_name(text);
    let index = left
        .index_of_column(&column)
        .or_else(|_| left.index_of_column(&Column::from_qualified_name(text.to_lowercase())))
        .map_err(|_| {
            unsupported(format!(
                "FOR SYSTEM_TIME AS OF {text}: it must name the left input's time attribute (its \
                 WATERMARK column) for a temporal join, or be PROCTIME() for a lookup join"
            ))
        })?;
    if time_attribute(&join.left, index) != TimeAttribute::Yes && !is_proctime(&join.left, index) {
        return Err(unsupported(format!(
            "FOR SYSTEM_TIME AS OF {text}: not a time attribute of the left input (a column \
             its WATERMARK is declared on); an event-time temporal join versions by it"
        )));
    }
    Ok(index)
}

fn unaliased(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => unaliased(&a.expr),
        other => other,
    }
}

/// Whether column `index` of `plan` is `PROCTIME()` (Flink's `p_time AS PROCTIME()`), under
/// aliases, filters and projections.
pub(super) fn is_proctime(plan: &LogicalPlan, index: usize) -> bool {
    match plan {
        LogicalPlan::Projection(p) => match p.expr.get(index).map(unaliased) {
            Some(expr) => match expr {
                Expr::ScalarFunction(f) => f.name().eq_ignore_ascii_case("proctime"),
                Expr::Column(c) => p
                    .input
                    .schema()
                    .index_of_column(c)
                    .is_ok_and(|i| is_proctime(&p.input, i)),
                _ => false,
            },
            None => false,
        },
        LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) => {
            is_proctime(plan.inputs()[0], index)
        }
        _ => false,
    }
}

/// Where the right side's rows come from, once traced down through aliases, projections and
/// filters.
struct Traced<'a> {
    /// The relation (or versioned view input) the right side reads.
    base: Base<'a>,
    /// Per output column of the right side, the base column it is (`None`: not a column).
    columns: Vec<Option<usize>>,
    /// Conditions on the base's rows (filters right above it), over the base's schema.
    filters: Vec<Expr>,
}

enum Base<'a> {
    Scan(&'a datafusion::logical_expr::TableScan, Arc<RelationDef>),
    /// A view keeping the last row per key: its input, the partition columns and the time
    /// column (indices into the input).
    LastPerKey {
        input: LogicalPlan,
        keys: Vec<usize>,
        time: usize,
    },
}

impl Base<'_> {
    fn schema(&self) -> DFSchemaRef {
        match self {
            Base::Scan(scan, relation) => full_scan_schema(scan, relation),
            Base::LastPerKey { input, .. } => Arc::clone(input.schema()),
        }
    }
}

/// A scan's relation with every column, qualified as the scan is.
fn full_scan_schema(
    scan: &datafusion::logical_expr::TableScan,
    relation: &RelationDef,
) -> DFSchemaRef {
    Arc::new(
        DFSchema::try_from_qualified_schema(scan.table_name.clone(), relation.schema.as_ref())
            .unwrap_or_else(|_| scan.projected_schema.as_ref().clone()),
    )
}

fn trace(plan: &LogicalPlan, versioned: bool) -> EngineResult<Traced<'_>> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => trace(&a.input, versioned),
        LogicalPlan::Projection(p) => {
            let inner = trace(&p.input, versioned)?;
            let columns = p
                .expr
                .iter()
                .map(|e| {
                    as_column(e)
                        .and_then(|c| p.input.schema().index_of_column(c).ok())
                        .and_then(|i| inner.columns[i])
                })
                .collect();
            Ok(Traced { columns, ..inner })
        }
        LogicalPlan::Filter(f) if versioned && let Some((rank, rest)) = ranked(f) => {
            // A condition DataFusion merged into the view's `rn = 1` applies to the version.
            let mut traced = last_per_key(&Filter::try_new(rank, Arc::clone(&f.input))?)?;
            let base = traced.base.schema();
            let over_base = rest.iter().all(|e| {
                e.column_refs()
                    .iter()
                    .all(|c| base.index_of_column(c).is_ok())
            });
            if !over_base {
                return Err(unsupported(
                    "a condition on a versioned view's row number in a temporal join",
                ));
            }
            traced.filters.extend(rest);
            Ok(traced)
        }
        LogicalPlan::Filter(f) => {
            let mut inner = trace(&f.input, versioned)?;
            let over_base = inner.filters.is_empty()
                && inner.columns.iter().enumerate().all(|(i, c)| *c == Some(i))
                && inner.columns.len() == inner.base.schema().fields().len()
                && matches!(
                    (&inner.base, f.input.as_ref()),
                    (Base::Scan(..), LogicalPlan::TableScan(_))
                );
            if !over_base {
                return Err(unsupported(
                    "a condition on a table FOR SYSTEM_TIME AS OF other than on its own \
                     columns; write it in the join's ON clause",
                ));
            }
            inner.filters.push(f.predicate.clone());
            Ok(inner)
        }
        LogicalPlan::TableScan(scan) => {
            let Some(provider) = stream_provider(scan) else {
                return Err(unsupported(
                    "FOR SYSTEM_TIME AS OF a relation that is not Eddy's",
                ));
            };
            let relation = Arc::clone(provider.relation());
            let columns = match &scan.projection {
                Some(p) => p.iter().map(|&i| Some(i)).collect(),
                None => (0..relation.schema.fields().len()).map(Some).collect(),
            };
            Ok(Traced {
                base: Base::Scan(scan, relation),
                columns,
                filters: Vec::new(),
            })
        }
        _ => Err(unsupported(
            "FOR SYSTEM_TIME AS OF a query; it applies to a table, a source or a view",
        )),
    }
}

/// When one conjunct of `filter` bounds a ranking window's number (`rn = 1`): that conjunct,
/// and the others.
fn ranked(filter: &Filter) -> Option<(Expr, Vec<Expr>)> {
    let conjuncts = split_conjunction(&filter.predicate);
    let position = conjuncts.iter().position(|c| {
        Filter::try_new((*c).clone(), Arc::clone(&filter.input))
            .is_ok_and(|f| top_n_parts(&f).is_some())
    })?;
    let rank = conjuncts[position].clone();
    let rest = conjuncts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != position)
        .map(|(_, c)| (*c).clone())
        .collect();
    Some((rank, rest))
}

/// A `ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) = 1` filter over a time attribute:
/// Flink's versioned view, whose versions are its input's rows.
fn last_per_key(filter: &Filter) -> EngineResult<Traced<'static>> {
    let not_versioned = || {
        unsupported(
            "FOR SYSTEM_TIME AS OF a Top-N view; a versioned view keeps the last row per key: \
             ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) = 1, ts its time attribute",
        )
    };
    let parts = top_n_parts(filter).ok_or_else(not_versioned)?;
    let input = parts.window.input.as_ref();
    let schema = input.schema();
    let order = &parts.function.params.order_by;
    let time = match order.as_slice() {
        [only] if !only.asc => as_column(&only.expr).and_then(|c| schema.index_of_column(c).ok()),
        _ => None,
    };
    let (Some(time), RankFunction::RowNumber, 1) = (time, parts.rank, parts.limit) else {
        return Err(not_versioned());
    };
    if time_attribute(input, time) != TimeAttribute::Yes {
        return Err(not_versioned());
    }
    let keys = parts
        .function
        .params
        .partition_by
        .iter()
        .map(|e| as_column(e).and_then(|c| schema.index_of_column(c).ok()))
        .collect::<Option<Vec<_>>>()
        .filter(|k| !k.is_empty())
        .ok_or_else(not_versioned)?;
    // The window's columns are its input's, then the number (not a column of the input).
    let width = schema.fields().len();
    let window_columns: Vec<Option<usize>> =
        (0..=width).map(|i| (i < width).then_some(i)).collect();
    let columns = match parts.projection {
        None => window_columns,
        Some(p) => p
            .expr
            .iter()
            .map(|e| {
                as_column(e)
                    .and_then(|c| parts.window.schema.index_of_column(c).ok())
                    .and_then(|i| window_columns[i])
            })
            .collect(),
    };
    Ok(Traced {
        base: Base::LastPerKey {
            input: input.clone(),
            keys,
            time,
        },
        columns,
        filters: Vec::new(),
    })
}

/// The right side's output columns as base columns; every one must be a plain column.
fn output_columns(traced: &Traced<'_>) -> EngineResult<Vec<usize>> {
    traced
        .columns
        .iter()
        .map(|c| {
            c.ok_or_else(|| {
                unsupported(
                    "reading a computed column (or a view's row number) of a table FOR \
                     SYSTEM_TIME AS OF; compute it above the join",
                )
            })
        })
        .collect()
}

/// The join's equalities as (left expression, base column of the right side).
fn key_pairs(join: &Join, traced: &Traced<'_>) -> EngineResult<Vec<(Expr, usize, Expr)>> {
    let right = join.right.schema();
    join.on
        .iter()
        .map(|(l, r)| {
            let base = as_column(r)
                .and_then(|c| right.index_of_column(c).ok())
                .and_then(|i| traced.columns[i])
                .ok_or_else(|| {
                    unsupported(format!(
                        "the join key {r} of a table FOR SYSTEM_TIME AS OF: it must be one of \
                         the table's columns"
                    ))
                })?;
            Ok((l.clone(), base, r.clone()))
        })
        .collect()
}

fn base_column(schema: &DFSchema, index: usize) -> Expr {
    Expr::Column(Column::from(schema.qualified_field(index)))
}

fn plan_temporal_join(
    join: &Join,
    kind: JoinKind,
    left: StreamPlan,
    left_time: usize,
    right: &LogicalPlan,
) -> EngineResult<StreamPlan> {
    let traced = trace(right, true)?;
    let base_schema = traced.base.schema();
    let (right_plan, keys, right_time) = match &traced.base {
        Base::Scan(scan, relation) => {
            let name = &relation.name;
            if !relation.upsert {
                return Err(unsupported(format!(
                    "FOR SYSTEM_TIME AS OF an event time on {name}, which is not a versioned \
                     table: use an upsert source with a PRIMARY KEY and a WATERMARK, or a view \
                     keeping the last row per key (ROW_NUMBER() OVER (PARTITION BY k ORDER BY \
                     ts DESC) = 1); for the latest rows as each row arrives, AS OF PROCTIME()"
                )));
            }
            let Some(watermark) = &relation.watermark else {
                return Err(unsupported(format!(
                    "FOR SYSTEM_TIME AS OF an event time on {name}, which has no WATERMARK: a \
                     versioned table needs one"
                )));
            };
            let time = relation.schema.index_of(&watermark.column)?;
            let mut full = (*scan).clone();
            full.projection = None;
            full.projected_schema = Arc::clone(&base_schema);
            full.fetch = None;
            (
                plan_upsert_source(&full, relation)?,
                relation.primary_key.clone(),
                time,
            )
        }
        Base::LastPerKey { input, keys, time } => {
            let plan = plan_stream(input)?;
            if plan.is_updating() {
                return Err(unsupported(
                    "a versioned view over an updating result (a changelog)",
                ));
            }
            (plan, keys.clone(), *time)
        }
    };
    let output = output_columns(&traced)?;
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    let mut residual: Vec<Expr> = join.filter.iter().cloned().collect();
    let pairs = key_pairs(join, &traced)?;
    for key in &keys {
        match pairs.iter().find(|(_, base, _)| base == key) {
            Some((l, _, _)) => {
                left_keys.push(l.clone());
                right_keys.push(base_column(&base_schema, *key));
            }
            None => {
                return Err(unsupported(format!(
                    "a temporal join that does not equate the versioned table's key column {}: \
                     the join's ON must cover the whole PRIMARY KEY (or the versioned view's \
                     PARTITION BY)",
                    base_schema.field(*key).name()
                )));
            }
        }
    }
    // Equalities on other columns are checked on the version found.
    for (l, base, r) in &pairs {
        if !keys.contains(base) {
            residual.push(l.clone().eq(r.clone()));
        }
    }
    Ok(StreamPlan::TemporalJoin(Box::new(TemporalJoinNode {
        left,
        right: right_plan,
        kind,
        left_keys,
        right_keys,
        left_time,
        right_time,
        right_columns: output,
        right_filter: conjunction(traced.filters),
        residual: conjunction(residual),
        right_schema: base_schema,
        schema: Arc::clone(&join.schema),
    })))
}

fn plan_lookup_join(
    join: &Join,
    kind: JoinKind,
    left: StreamPlan,
    right: &LogicalPlan,
) -> EngineResult<StreamPlan> {
    let traced = trace(right, false)?;
    let Base::Scan(_, relation) = &traced.base else {
        return Err(EngineError::Internal(
            "a lookup of a view's input".to_string(),
        ));
    };
    if relation.table.is_none() && relation.view.is_none() {
        return Err(unsupported(format!(
            "a lookup join (FOR SYSTEM_TIME AS OF PROCTIME()) on {}, a source: it reads a table \
             (CREATE TABLE) or a materialized view",
            relation.name
        )));
    }
    let base_schema = traced.base.schema();
    let output = output_columns(&traced)?;
    let pairs = key_pairs(join, &traced)?;
    Ok(StreamPlan::LookupJoin(Box::new(LookupJoinNode {
        left,
        relation: Arc::clone(relation),
        kind,
        left_keys: pairs.iter().map(|(l, _, _)| l.clone()).collect(),
        right_keys: pairs
            .iter()
            .map(|(_, base, _)| base_column(&base_schema, *base))
            .collect(),
        right_columns: output,
        right_filter: conjunction(traced.filters),
        residual: join.filter.clone(),
        right_schema: base_schema,
        schema: Arc::clone(&join.schema),
    })))
}
