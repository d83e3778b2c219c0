//! Turns DataFusion's optimized logical plan into a [`StreamPlan`].
//!
//! Only the node kinds the streaming runtime can run are accepted; every other node is refused
//! with a `feature not supported` error that names it, so a user never gets a silently wrong
//! answer.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, Between, BinaryExpr, Expr, Filter, GroupingSet, Join, JoinType, LogicalPlan,
    Operator, TableScan, lit,
};

use super::{
    CHANGELOG_OP, ChangelogNormalizeNode, DeduplicateNode, IntervalJoinNode, JoinInputs, LeadNode,
    OverAggregateNode, RegularJoinNode, SourceNode, StreamPlan, TopNNode, UpdatingAggregateNode,
    WindowAggregateNode, WindowJoinNode, WindowNode, WindowTopNNode, changelog_schema,
};
use crate::catalog::RelationDef;
use crate::connector::UPSERT_FLAG;
use crate::error::{EngineError, EngineResult};
use crate::operators::deduplicate::Keep;
use crate::operators::join_rows::JoinKind;
use crate::operators::over_aggregate::OverFrame;
use crate::operators::regular_join::RegularJoinSpec;
use crate::operators::top_n::RankFunction;
use crate::operators::updating_aggregate::WindowExpiry;
use crate::operators::window::{MILLISECOND, WindowKind, unit_nanos};
use crate::operators::window_aggregate::{
    BoundColumn, Emission, OutputColumn, WindowColumn, Windowing,
};
use crate::plan::match_recognize::as_match_recognize;
use crate::plan::stream_table::StreamTableProvider;
use crate::plan::window_tvf::{WindowTvfNode, as_window_tvf};

/// True when the plan reads at least one stream (source or push table). A plan that reads
/// only materialized views runs as a batch query over their current contents.
pub fn reads_streams(plan: &LogicalPlan) -> bool {
    reads_relation(plan, &mut |r| r.view.is_none() && !r.system)
}

/// True when the plan reads at least one materialized view (or a system table such as
/// `eddy_dead_letters`, which is read like one: a snapshot, or followed).
pub fn reads_views(plan: &LogicalPlan) -> bool {
    reads_relation(plan, &mut |r| r.view.is_some() || r.system)
}

/// The catalog relations a plan reads, by name (each once).
pub fn relations_read(plan: &LogicalPlan) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    reads_relation(plan, &mut |r| {
        names.push(r.name.clone());
        false
    });
    names.sort();
    names.dedup();
    names
}

fn reads_relation(plan: &LogicalPlan, wanted: &mut dyn FnMut(&RelationDef) -> bool) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && stream_provider(scan).is_some_and(|p| wanted(p.relation()))
        {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    // Subqueries in expressions are separate plans.
    let _ = plan.apply_subqueries(|sub| {
        if reads_relation(sub, wanted) {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// The first node of `plan` that only the streaming runtime implements (a window table
/// function or MATCH_RECOGNIZE), by its SQL name.
pub fn streaming_only_node(plan: &LogicalPlan) -> Option<&'static str> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if as_match_recognize(node).is_some() {
            found = Some("MATCH_RECOGNIZE");
        } else if as_window_tvf(node).is_some() {
            found = Some("a window table function");
        }
        Ok(if found.is_some() {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    found
}

pub(super) fn stream_provider(scan: &TableScan) -> Option<Arc<StreamTableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    let any: &dyn std::any::Any = provider.as_ref();
    any.downcast_ref::<StreamTableProvider>()
        .map(|p| Arc::new(p.clone()))
}

/// Builds the streaming plan of a continuous query.
pub fn plan_stream(plan: &LogicalPlan) -> EngineResult<StreamPlan> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(provider) = stream_provider(scan) else {
                return Err(unsupported(
                    "mixing a stream with a static table in one query",
                ));
            };
            if !scan.filters.is_empty() {
                return Err(EngineError::Internal(
                    "filters were pushed into a stream scan".to_string(),
                ));
            }
            if provider.relation().upsert {
                return plan_upsert_source(scan, provider.relation());
            }
            // An updating view is followed as its changelog, led by the op column.
            let schema = if provider.relation().is_updating_view() {
                super::changelog_schema(&scan.projected_schema)?
            } else {
                Arc::clone(&scan.projected_schema)
            };
            let source = StreamPlan::Source(SourceNode {
                relation: Arc::clone(provider.relation()),
                projection: scan.projection.clone(),
                schema,
            });
            Ok(match scan.fetch {
                Some(fetch) if source.is_updating() => limit_changelog(source, 0, Some(fetch))?,
                Some(fetch) => StreamPlan::Limit {
                    input: Box::new(source),
                    skip: 0,
                    fetch: Some(fetch),
                },
                None => source,
            })
        }
        LogicalPlan::Projection(p) => {
            let input = match p.input.as_ref() {
                // A projection that drops a Top-N's number: only rows entering or leaving
                // the top need to be emitted.
                LogicalPlan::Filter(f) if is_top_n(f) => plan_top_n(f, reads_rank(p, f))?,
                other => plan_stream(other)?,
            };
            // A changelog keeps its `__op` column in front of the projected ones.
            let (exprs, schema) = if input.is_updating() {
                let mut exprs = vec![Expr::Column(Column::new_unqualified(CHANGELOG_OP))];
                exprs.extend(p.expr.iter().cloned());
                (exprs, changelog_schema(&p.schema)?)
            } else {
                (p.expr.clone(), Arc::clone(&p.schema))
            };
            Ok(StreamPlan::Project {
                input: Box::new(input),
                exprs,
                schema,
            })
        }
        LogicalPlan::Filter(f) if is_top_n(f) => plan_top_n(f, true),
        LogicalPlan::Filter(f) => {
            let has_subquery = f.predicate.exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })?;
            if has_subquery {
                return Err(unsupported("subqueries over streams"));
            }
            if super::temporal::has_marker(&f.predicate) {
                return Err(unsupported(
                    "FOR SYSTEM_TIME AS OF outside the right side of a join: it names the \
                     versioned or lookup table a stream joins (`FROM s JOIN t FOR SYSTEM_TIME \
                     AS OF s.ts ON ...`)",
                ));
            }
            // Over a changelog each row is kept or dropped on its own: a group that stops
            // matching keeps its `-` and loses its `+`.
            Ok(StreamPlan::Filter {
                input: Box::new(plan_stream(&f.input)?),
                predicate: f.predicate.clone(),
            })
        }
        LogicalPlan::Union(u) => {
            let inputs = u
                .inputs
                .iter()
                .map(|i| {
                    if reads_streams(i) || reads_views(i) {
                        plan_stream(i)
                    } else {
                        Err(unsupported(
                            "UNION ALL of a stream with a query that reads no stream",
                        ))
                    }
                })
                .collect::<EngineResult<Vec<_>>>()?;
            if !inputs.iter().any(StreamPlan::is_updating) {
                return Ok(StreamPlan::Union {
                    inputs,
                    schema: Arc::clone(&u.schema),
                });
            }
            // A union with a changelog is one: append-only inputs' rows are inserts.
            let inputs = inputs
                .into_iter()
                .map(|input| {
                    if input.is_updating() {
                        return Ok(input);
                    }
                    let schema = input.schema();
                    let mut exprs = vec![lit("+").alias(CHANGELOG_OP)];
                    exprs.extend(schema.columns().into_iter().map(Expr::Column));
                    Ok(StreamPlan::Project {
                        input: Box::new(input),
                        exprs,
                        schema: changelog_schema(&schema)?,
                    })
                })
                .collect::<EngineResult<Vec<_>>>()?;
            Ok(StreamPlan::Union {
                inputs,
                schema: changelog_schema(&u.schema)?,
            })
        }
        LogicalPlan::Limit(l) => {
            let skip = match l.get_skip_type()? {
                SkipType::Literal(s) => s,
                SkipType::UnsupportedExpr => return Err(unsupported("a non-constant OFFSET")),
            };
            let fetch = match l.get_fetch_type()? {
                FetchType::Literal(f) => f,
                FetchType::UnsupportedExpr => return Err(unsupported("a non-constant LIMIT")),
            };
            let input = plan_stream(&l.input)?;
            if input.is_updating() {
                return limit_changelog(input, skip, fetch);
            }
            Ok(StreamPlan::Limit {
                input: Box::new(input),
                skip,
                fetch,
            })
        }
        LogicalPlan::SubqueryAlias(a) => {
            let input = plan_stream(&a.input)?;
            // Expressions above are compiled against this schema by name: `__op` stays.
            let schema = if input.is_updating() {
                changelog_schema(&a.schema)?
            } else {
                Arc::clone(&a.schema)
            };
            Ok(StreamPlan::Alias {
                input: Box::new(input),
                schema,
            })
        }
        LogicalPlan::Aggregate(agg) => plan_window_aggregate(agg),
        LogicalPlan::Extension(_) if as_window_tvf(plan).is_some() => plan_window_tvf(plan),
        LogicalPlan::Extension(_) if as_match_recognize(plan).is_some() => {
            plan_match_recognize(plan)
        }
        LogicalPlan::Join(join) => plan_join(join),
        LogicalPlan::Sort(_) => Err(unsupported(
            "ORDER BY on a stream (a stream has no end to sort at)",
        )),
        LogicalPlan::Distinct(_) => Err(unsupported("DISTINCT on a stream")),
        LogicalPlan::Window(w) => plan_over(w),
        other => Err(unsupported(&format!(
            "{} over a stream",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this plan node")
        ))),
    }
}

/// Reading an upsert source: its reader's upserts and deletes (every column, then the flag)
/// normalized into a changelog by the primary key, then the columns the query reads.
pub(super) fn plan_upsert_source(
    scan: &TableScan,
    relation: &Arc<RelationDef>,
) -> EngineResult<StreamPlan> {
    let columns =
        DFSchema::try_from_qualified_schema(scan.table_name.clone(), relation.schema.as_ref())?;
    let mut fields: Vec<_> = columns
        .iter()
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    fields.push((
        None,
        Arc::new(Field::new(UPSERT_FLAG, DataType::Boolean, false)),
    ));
    let source = StreamPlan::Source(SourceNode {
        relation: Arc::clone(relation),
        projection: None,
        schema: Arc::new(DFSchema::new_with_metadata(
            fields,
            columns.metadata().clone(),
        )?),
    });
    let column = |i: usize| Expr::Column(Column::from(columns.qualified_field(i)));
    let normalized = StreamPlan::ChangelogNormalize(Box::new(ChangelogNormalizeNode {
        input: source,
        keys: relation.primary_key.iter().map(|&k| column(k)).collect(),
        schema: changelog_schema(&columns)?,
    }));
    let projected = match &scan.projection {
        None => normalized,
        Some(projection) => {
            let mut exprs = vec![Expr::Column(Column::new_unqualified(CHANGELOG_OP))];
            exprs.extend(projection.iter().map(|&i| column(i)));
            StreamPlan::Project {
                input: Box::new(normalized),
                exprs,
                schema: changelog_schema(&scan.projected_schema)?,
            }
        }
    };
    limit_changelog(projected, 0, scan.fetch)
}

/// `LIMIT n` over a changelog (Flink's limit of an updating stream): the first `n` rows of
/// the current result in arrival order, as a Top-N without an order. When one of them is
/// retracted, the next row held comes in; the query runs until its input ends.
fn limit_changelog(
    input: StreamPlan,
    skip: usize,
    fetch: Option<usize>,
) -> EngineResult<StreamPlan> {
    if skip > 0 {
        return Err(over_updating("OFFSET"));
    }
    let Some(fetch) = fetch else {
        return Ok(input);
    };
    let schema = input.schema();
    let metadata = schema.metadata().clone();
    let fields: Vec<_> = schema
        .iter()
        .skip(1)
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    let mut numbered = fields.clone();
    numbered.push((
        None,
        Arc::new(Field::new("__limit_number", DataType::UInt64, false)),
    ));
    let top_n = StreamPlan::TopN(Box::new(TopNNode {
        input,
        partition: Vec::new(),
        order: Vec::new(),
        function: RankFunction::RowNumber,
        limit: fetch,
        rank_output: false,
        ttl: None,
        schema: changelog_schema(&DFSchema::new_with_metadata(numbered, metadata.clone())?)?,
    }));
    let out = DFSchema::new_with_metadata(fields, metadata)?;
    let mut exprs = vec![Expr::Column(Column::new_unqualified(CHANGELOG_OP))];
    exprs.extend(out.columns().into_iter().map(Expr::Column));
    Ok(StreamPlan::Project {
        input: Box::new(top_n),
        exprs,
        schema: changelog_schema(&out)?,
    })
}

fn unsupported(what: &str) -> EngineError {
    EngineError::Unsupported(what.to_string())
}

/// The error for `operator` over an input whose rows are a changelog.
fn over_updating(operator: &str) -> EngineError {
    unsupported(&format!(
        "{operator} over an updating result (its input, e.g. an aggregate without a window, \
         or a window aggregate with EMIT ON UPDATE or allowed.lateness, is a changelog whose \
         rows are retracted as they change); only projections, filters (WHERE, HAVING), \
         aggregates without a window, Top-N and regular joins may consume one"
    ))
}

/// True when `plan` plans to an updating stream. For checks that must come before others;
/// a plan that fails to plan is not (its own error is reported where it is planned).
fn plans_to_updating(plan: &LogicalPlan) -> bool {
    plan_stream(plan).is_ok_and(|p| p.is_updating())
}

/// The column an expression is, under any aliases.
pub(super) fn as_column(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => as_column(&a.expr),
        _ => None,
    }
}

/// Follows column `index` of `plan` down through renames and filters to a window table
/// function: which window column it is, and the function.
fn trace_window_column(plan: &LogicalPlan, index: usize) -> Option<(WindowColumn, &WindowTvfNode)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let column = as_column(p.expr.get(index)?)?;
            let inner = p.input.schema().index_of_column(column).ok()?;
            trace_window_column(&p.input, inner)
        }
        LogicalPlan::SubqueryAlias(a) => trace_window_column(&a.input, index),
        LogicalPlan::Filter(f) => trace_window_column(&f.input, index),
        LogicalPlan::Limit(l) => trace_window_column(&l.input, index),
        // A window aggregate's window columns, grouped by again (cascade, Top-N).
        LogicalPlan::Aggregate(a) => {
            let column = as_column(a.group_expr.get(index)?)?;
            let inner = a.input.schema().index_of_column(column).ok()?;
            trace_window_column(&a.input, inner)
        }
        LogicalPlan::Window(w) if index < w.input.schema().fields().len() => {
            trace_window_column(&w.input, index)
        }
        LogicalPlan::Join(j) if window_join_parts(j).is_some() => {
            let left_len = j.left.schema().fields().len();
            if index < left_len {
                trace_window_column(&j.left, index)
            } else {
                trace_window_column(&j.right, index - left_len)
            }
        }
        LogicalPlan::Extension(_) => {
            let tvf = as_window_tvf(plan)?;
            let column = match index.checked_sub(tvf.window_start_index())? {
                0 => WindowColumn::Start,
                1 => WindowColumn::End,
                2 => WindowColumn::Time,
                _ => return None,
            };
            Some((column, tvf))
        }
        _ => None,
    }
}

/// True when `expr`, evaluated over `input`, reads a window column.
fn reads_window_column(input: &LogicalPlan, expr: &Expr) -> bool {
    expr.column_refs().into_iter().any(|c| {
        input
            .schema()
            .index_of_column(c)
            .is_ok_and(|i| trace_window_column(input, i).is_some())
    })
}

/// True when the nodes between an aggregate and its window function only pass window columns
/// through (so the function may tag rows with slices instead of windows).
fn passes_window_columns_through(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => {
            p.expr
                .iter()
                .all(|e| as_column(e).is_some() || !reads_window_column(&p.input, e))
                && passes_window_columns_through(&p.input)
        }
        LogicalPlan::SubqueryAlias(a) => passes_window_columns_through(&a.input),
        LogicalPlan::Filter(f) => {
            !reads_window_column(&f.input, &f.predicate) && passes_window_columns_through(&f.input)
        }
        LogicalPlan::Extension(_) => as_window_tvf(plan).is_some(),
        _ => false,
    }
}

/// Switches the window function under a chain of projections and filters to slice mode.
fn assign_slices(plan: &mut StreamPlan) -> bool {
    match plan {
        StreamPlan::Window(w) => {
            w.slices = true;
            true
        }
        StreamPlan::Project { input, .. }
        | StreamPlan::Filter { input, .. }
        | StreamPlan::Alias { input, .. } => assign_slices(input),
        _ => false,
    }
}

/// The grouping sets of an aggregate: its distinct group expressions and, with GROUPING SETS,
/// ROLLUP or CUBE, the expressions of each set.
/// Distinct group expressions, and the expressions of each grouping set (if any).
type GroupingSets = (Vec<Expr>, Option<Vec<Vec<Expr>>>);

fn grouping_sets(group_expr: &[Expr]) -> EngineResult<GroupingSets> {
    if let [Expr::GroupingSet(set)] = group_expr {
        let distinct: Vec<Expr> = set.distinct_expr().into_iter().cloned().collect();
        let sets = match set {
            GroupingSet::GroupingSets(sets) => sets.clone(),
            GroupingSet::Rollup(exprs) => (0..=exprs.len())
                .rev()
                .map(|n| exprs[..n].to_vec())
                .collect(),
            GroupingSet::Cube(exprs) => (0..1usize << exprs.len())
                .rev()
                .map(|mask| {
                    exprs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << (exprs.len() - 1 - i)) != 0)
                        .map(|(_, e)| e.clone())
                        .collect()
                })
                .collect(),
        };
        Ok((distinct, Some(sets)))
    } else {
        Ok((group_expr.to_vec(), None))
    }
}

/// Plans `GROUP BY window_start, window_end, keys...` over a window table function.
fn plan_window_aggregate(agg: &Aggregate) -> EngineResult<StreamPlan> {
    let input = agg.input.as_ref();
    let in_schema = input.schema();
    let (mut distinct, sets) = grouping_sets(&agg.group_expr)?;
    // `EMIT ON UPDATE`: the marker key goes, and its column with it. With grouping sets it
    // stays a (constant) key: `__grouping_id` and GROUPING() count it among the keys.
    let on_update = distinct.iter().any(is_emit_marker);
    let marker = distinct
        .iter()
        .position(is_emit_marker)
        .filter(|_| sets.is_none());
    let schema = match marker {
        Some(i) => {
            distinct.remove(i);
            let fields: Vec<_> = agg
                .schema
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (q, f))| (q.cloned(), Arc::clone(f)))
                .collect();
            Arc::new(DFSchema::new_with_metadata(
                fields,
                agg.schema.metadata().clone(),
            )?)
        }
        None => Arc::clone(&agg.schema),
    };
    let mut output = Vec::new();
    let mut keys: Vec<Expr> = Vec::new();
    let mut bounds: Vec<BoundColumn> = Vec::new();
    let mut window_exprs: Vec<&Expr> = Vec::new();
    let mut tvf: Option<&WindowTvfNode> = None;
    for expr in &distinct {
        let traced = as_column(expr)
            .and_then(|c| in_schema.index_of_column(c).ok())
            .and_then(|i| Some((i, trace_window_column(input, i)?)));
        match traced {
            Some((index, (column, node))) => {
                if tvf.is_some_and(|t| !std::ptr::eq(t, node)) {
                    return Err(unsupported(
                        "grouping by the window columns of two different window functions",
                    ));
                }
                tvf = Some(node);
                output.push(OutputColumn::Window(column));
                window_exprs.push(expr);
                let unit_ns = match in_schema.field(index).data_type() {
                    DataType::Timestamp(unit, _) => unit_nanos(*unit),
                    _ => return Err(EngineError::Internal("window column type".to_string())),
                };
                if !bounds.iter().any(|b| b.column == column) {
                    bounds.push(BoundColumn {
                        index,
                        column,
                        unit_ns,
                    });
                }
            }
            None => {
                output.push(OutputColumn::Key(keys.len()));
                keys.push(expr.clone());
            }
        }
    }
    let Some(tvf) = tvf else {
        // Without a window an aggregate emits on update anyway.
        return plan_updating_aggregate(agg, keys, sets, &schema);
    };
    let grouping_sets = match &sets {
        Some(sets) => {
            let mut masks = Vec::new();
            for set in sets {
                if !window_exprs.iter().all(|w| set.contains(w)) {
                    return Err(unsupported(
                        "a grouping set without the window columns (every grouping set must \
                         include window_start and window_end)",
                    ));
                }
                masks.push(keys.iter().map(|k| !set.contains(k)).collect());
            }
            output.push(OutputColumn::Key(keys.len()));
            Some(masks)
        }
        None => None,
    };
    output.extend((0..agg.aggr_expr.len()).map(OutputColumn::Aggregate));
    if output.len() != schema.fields().len() {
        return Err(EngineError::Internal(format!(
            "window aggregate has {} output columns, expected {}",
            output.len(),
            schema.fields().len()
        )));
    }
    let kind = tvf.kind;
    let emit = Emission {
        on_update,
        lateness: tvf.allowed_lateness,
    };
    let has = |c: WindowColumn| bounds.iter().any(|b| b.column == c);
    let sliced =
        !matches!(kind, WindowKind::Session { .. }) && passes_window_columns_through(input);
    let has_end = has(WindowColumn::End) || has(WindowColumn::Time);
    match kind {
        WindowKind::Cumulate { .. } if !has_end => {
            return Err(unsupported(
                "a CUMULATE aggregate grouped without window_end (its windows share their start)",
            ));
        }
        WindowKind::Session { .. } if !(has(WindowColumn::Start) && has_end) => {
            return Err(unsupported(
                "a SESSION aggregate that does not group by both window_start and window_end",
            ));
        }
        _ => {}
    }
    if matches!(kind, WindowKind::Session { .. }) && emit.is_updating() {
        return plan_updating_session_aggregate(
            agg, distinct, sets, &output, &bounds, emit, &schema,
        );
    }
    let time_type = tvf
        .input
        .schema()
        .field(tvf.time_index()?)
        .data_type()
        .clone();
    let lag = match (kind, time_type) {
        (WindowKind::Session { .. }, _) => 0,
        (_, DataType::Timestamp(unit, _)) => unit_nanos(unit),
        _ => return Err(EngineError::Internal("window time column type".to_string())),
    };
    let mut input_plan = plan_stream(input)?;
    if input_plan.is_updating() {
        return Err(over_updating("a window aggregate"));
    }
    if sliced && !assign_slices(&mut input_plan) {
        return Err(EngineError::Internal(
            "window function not found under its aggregate".to_string(),
        ));
    }
    Ok(StreamPlan::WindowAggregate(Box::new(WindowAggregateNode {
        input: input_plan,
        keys,
        grouping_sets,
        aggregates: agg.aggr_expr.clone(),
        windowing: Windowing {
            kind,
            sliced,
            lag,
            bounds,
            emit,
        },
        output,
        schema: if emit.is_updating() {
            changelog_schema(&schema)?
        } else {
            schema
        },
    })))
}

/// Plans an aggregate over SESSION windows that emits on update or allows lateness: the
/// SESSION under it emits a changelog of its rows (a session's rows are retracted and emitted
/// again as it grows or merges, and within the lateness after it closes), which an updating
/// aggregate grouped by the window columns and keys folds into a changelog of each
/// session's values. A group is forgotten once its session expires (the watermark past its
/// end plus the lateness), when no row can change it any more.
fn plan_updating_session_aggregate(
    agg: &Aggregate,
    keys: Vec<Expr>,
    sets: Option<Vec<Vec<Expr>>>,
    output: &[OutputColumn],
    bounds: &[BoundColumn],
    emit: Emission,
    schema: &DFSchema,
) -> EngineResult<StreamPlan> {
    let mut input = plan_stream(&agg.input)?;
    if input.is_updating() {
        return Err(over_updating("a window aggregate"));
    }
    if !session_changelog(&mut input, emit)? {
        return Err(unsupported(
            "EMIT ON UPDATE or allowed.lateness over SESSION windows that reach the aggregate \
             through more than projections and filters (a cascaded aggregate, a join, an OVER \
             window or a LIMIT): the SESSION itself must emit the changelog",
        ));
    }
    for aggregate in &agg.aggr_expr {
        check_retractable(aggregate).map_err(|e| match e {
            EngineError::Unsupported(why) => EngineError::Unsupported(format!(
                "{why} (a SESSION aggregate with EMIT ON UPDATE or allowed.lateness folds the \
                 SESSION's changelog: a session that grows or merges retracts its rows and sends \
                 them again with its new bounds)"
            )),
            other => other,
        })?;
    }
    // The window column the groups expire by: window_end, else window_time (1 ms earlier).
    let end = [(WindowColumn::End, 0), (WindowColumn::Time, MILLISECOND)]
        .into_iter()
        .find_map(|(column, before)| {
            let key = output
                .iter()
                .position(|o| matches!(o, OutputColumn::Window(c) if *c == column))?;
            bounds.iter().any(|b| b.column == column).then_some(())?;
            Some(WindowExpiry {
                key,
                after: emit.lateness.saturating_add(before),
                window_keys: output
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| matches!(o, OutputColumn::Window(_)))
                    .map(|(i, _)| i)
                    .collect(),
            })
        })
        .ok_or_else(|| EngineError::Internal("a SESSION aggregate without its end".to_string()))?;
    updating_aggregate(agg, input, keys, sets, Some(end), schema)
}

/// Switches the SESSION under a chain of projections, filters and aliases to emit `emit`'s
/// changelog, and the chain to carry it (`__op` in front); false when there is none.
fn session_changelog(plan: &mut StreamPlan, emit: Emission) -> EngineResult<bool> {
    match plan {
        StreamPlan::Window(w) if matches!(w.kind, WindowKind::Session { .. }) => {
            w.emit = emit;
            w.schema = changelog_schema(&w.schema)?;
            Ok(true)
        }
        StreamPlan::Filter { input, .. } => session_changelog(input, emit),
        StreamPlan::Alias { input, schema } => {
            if !session_changelog(input, emit)? {
                return Ok(false);
            }
            *schema = changelog_schema(schema)?;
            Ok(true)
        }
        StreamPlan::Project {
            input,
            exprs,
            schema,
        } => {
            if !session_changelog(input, emit)? {
                return Ok(false);
            }
            exprs.insert(0, Expr::Column(Column::new_unqualified(CHANGELOG_OP)));
            *schema = changelog_schema(schema)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// True when `expr` is the `EMIT ON UPDATE` marker key.
fn is_emit_marker(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.name() == super::EMIT_ON_UPDATE_MARKER)
}

/// Plans `GROUP BY keys` without window columns: an updating aggregate, whose output is a
/// changelog of each group's values.
fn plan_updating_aggregate(
    agg: &Aggregate,
    keys: Vec<Expr>,
    sets: Option<Vec<Vec<Expr>>>,
    schema: &DFSchema,
) -> EngineResult<StreamPlan> {
    let input = plan_stream(&agg.input)?;
    if input.is_updating() {
        for aggregate in &agg.aggr_expr {
            check_retractable(aggregate)?;
        }
    }
    updating_aggregate(agg, input, keys, sets, None, schema)
}

/// The updating aggregate of `agg` over `input`, grouped by `keys` (each grouping set of
/// `sets` masks the keys it lacks), its groups freed by `expiry` when given.
fn updating_aggregate(
    agg: &Aggregate,
    input: StreamPlan,
    keys: Vec<Expr>,
    sets: Option<Vec<Vec<Expr>>>,
    expiry: Option<WindowExpiry>,
    schema: &DFSchema,
) -> EngineResult<StreamPlan> {
    let grouping_sets = sets.map(|sets| {
        sets.iter()
            .map(|set| keys.iter().map(|k| !set.contains(k)).collect())
            .collect()
    });
    Ok(StreamPlan::UpdatingAggregate(Box::new(
        UpdatingAggregateNode {
            input,
            keys,
            grouping_sets,
            aggregates: agg.aggr_expr.clone(),
            ttl: None,
            expiry,
            schema: changelog_schema(schema)?,
        },
    )))
}

/// The aggregates an aggregate over a changelog computes: their accumulators retract rows
/// (`retract_batch`) in any order (min and max with their own accumulator, which keeps every
/// value).
const RETRACTABLE: &[&str] = &[
    "count",
    "min",
    "max",
    "sum",
    "avg",
    "mean",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "var_population",
    "var_sample",
];

/// Refuses an aggregate an updating input cannot feed.
fn check_retractable(aggregate: &Expr) -> EngineResult<()> {
    let expr = match aggregate {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = expr else {
        return Err(over_updating(&format!("the aggregate {aggregate}")));
    };
    let name = f.func.name().to_ascii_lowercase();
    if !RETRACTABLE.contains(&name.as_str()) {
        return Err(unsupported(&format!(
            "{name}() over an updating result: an aggregate over a changelog must retract \
             the rows it deletes, which {} do",
            RETRACTABLE.join(", ")
        )));
    }
    if f.params.distinct || !f.params.order_by.is_empty() {
        return Err(unsupported(&format!(
            "{name}(DISTINCT ...) or an ordered aggregate over an updating result"
        )));
    }
    Ok(())
}

/// `rn <= N`, `rn < N`, `rn = 1` (either way round): the ranked column and N.
fn rank_bound(predicate: &Expr) -> Option<(&Column, usize)> {
    let Expr::BinaryExpr(b) = predicate else {
        return None;
    };
    fn column(e: &Expr) -> Option<&Column> {
        match e {
            Expr::Cast(c) => as_column(&c.expr),
            Expr::TryCast(c) => as_column(&c.expr),
            other => as_column(other),
        }
    }
    let number = |e: &Expr| match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
            datafusion::common::ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        },
        _ => None,
    };
    let (c, op, n) = if let (Some(c), Some(n)) = (column(&b.left), number(&b.right)) {
        (c, b.op, n)
    } else if let (Some(c), Some(n)) = (column(&b.right), number(&b.left)) {
        (c, b.op.swap()?, n)
    } else {
        return None;
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    (limit >= 1).then_some((c, limit as usize))
}

/// The ranking function behind a Top-N filter, as the planner reads it.
pub(super) struct TopNParts<'a> {
    /// A projection between the filter and the window (naming the number), if any.
    pub(super) projection: Option<&'a datafusion::logical_expr::Projection>,
    pub(super) window: &'a datafusion::logical_expr::Window,
    pub(super) function: &'a datafusion::logical_expr::expr::WindowFunction,
    pub(super) rank: RankFunction,
    /// The number column the filter bounds, in the filter's schema.
    pub(super) column: &'a Column,
    pub(super) limit: usize,
}

/// The `ROW_NUMBER()`/`RANK()`/`DENSE_RANK()` window behind a filter `rn <= N` on its result.
pub(super) fn top_n_parts(filter: &Filter) -> Option<TopNParts<'_>> {
    let (column, limit) = rank_bound(&filter.predicate)?;
    let (projection, window) = match filter.input.as_ref() {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Window(w) => (Some(p), w),
            _ => return None,
        },
        LogicalPlan::Window(w) => (None, w),
        _ => return None,
    };
    let index = filter.input.schema().index_of_column(column).ok()?;
    let index = match projection {
        Some(p) => window
            .schema
            .index_of_column(as_column(p.expr.get(index)?)?)
            .ok()?,
        None => index,
    };
    if window.window_expr.len() != 1 || index != window.input.schema().fields().len() {
        return None;
    }
    let mut expr = &window.window_expr[0];
    while let Expr::Alias(a) = expr {
        expr = &a.expr;
    }
    let Expr::WindowFunction(function) = expr else {
        return None;
    };
    let rank = RankFunction::from_name(function.fun.name())?;
    Some(TopNParts {
        projection,
        window,
        function: function.as_ref(),
        rank,
        column,
        limit,
    })
}

fn is_top_n(filter: &Filter) -> bool {
    top_n_parts(filter).is_some()
}

/// True when `projection`, over a Top-N filter, reads the Top-N's number.
fn reads_rank(projection: &datafusion::logical_expr::Projection, filter: &Filter) -> bool {
    top_n_parts(filter).is_none_or(|parts| {
        projection
            .expr
            .iter()
            .any(|e| e.column_refs().contains(parts.column))
    })
}

/// Plans `SELECT ... FROM (SELECT ..., ROW_NUMBER() | RANK() | DENSE_RANK() OVER (PARTITION BY
/// ... ORDER BY ...) AS rn ...) WHERE rn <= N`: a window Top-N when the partition holds the
/// window bounds of a window table function, else a deduplication or a Top-N over the whole
/// stream. `rank_output` says whether the query's output has the number.
fn plan_top_n(filter: &Filter, rank_output: bool) -> EngineResult<StreamPlan> {
    let Some(parts) = top_n_parts(filter) else {
        return Err(EngineError::Internal("not a Top-N".to_string()));
    };
    let TopNParts {
        projection,
        window,
        function,
        rank,
        limit,
        ..
    } = parts;
    let input = window.input.as_ref();
    let in_schema = input.schema();
    let mut bounds: Vec<BoundColumn> = Vec::new();
    let mut partition = Vec::new();
    let mut tvf: Option<&WindowTvfNode> = None;
    for expr in &function.params.partition_by {
        let traced = as_column(expr)
            .and_then(|c| in_schema.index_of_column(c).ok())
            .and_then(|i| Some((i, trace_window_column(input, i)?)));
        match traced {
            Some((index, (column, node))) => {
                tvf = Some(node);
                let unit_ns = match in_schema.field(index).data_type() {
                    DataType::Timestamp(unit, _) => unit_nanos(*unit),
                    _ => return Err(EngineError::Internal("window column type".to_string())),
                };
                bounds.push(BoundColumn {
                    index,
                    column,
                    unit_ns,
                });
            }
            None => partition.push(expr.clone()),
        }
    }
    let has = |c: WindowColumn| bounds.iter().any(|b| b.column == c);
    let windowed = has(WindowColumn::Start) && (has(WindowColumn::End) || has(WindowColumn::Time));
    let top_n_input = plan_stream(input)?;
    let updating_input = top_n_input.is_updating();
    let top_n = match tvf.filter(|_| windowed) {
        Some(tvf) => {
            let lag = match (
                tvf.kind,
                tvf.input.schema().field(tvf.time_index()?).data_type(),
            ) {
                (WindowKind::Session { .. }, _) => 0,
                (_, DataType::Timestamp(unit, _)) => unit_nanos(*unit),
                _ => return Err(EngineError::Internal("window time column type".to_string())),
            };
            if updating_input {
                return Err(over_updating("a window Top-N"));
            }
            StreamPlan::WindowTopN(Box::new(WindowTopNNode {
                input: top_n_input,
                kind: tvf.kind,
                lag,
                bounds,
                partition,
                order: function.params.order_by.clone(),
                function: rank,
                limit,
                schema: Arc::clone(&window.schema),
            }))
        }
        None => {
            let keys = function.params.partition_by.clone();
            let order = &function.params.order_by;
            let time_ordered = match order.as_slice() {
                [only] => as_column(&only.expr)
                    .and_then(|c| in_schema.index_of_column(c).ok())
                    .is_some_and(|i| time_attribute(input, i) != TimeAttribute::No),
                _ => false,
            };
            if rank == RankFunction::RowNumber && limit == 1 && time_ordered && !updating_input {
                let order = order[0].clone();
                let keep = if order.asc { Keep::First } else { Keep::Last };
                let schema = match keep {
                    Keep::First => Arc::clone(&window.schema),
                    Keep::Last => changelog_schema(&window.schema)?,
                };
                StreamPlan::Deduplicate(Box::new(DeduplicateNode {
                    input: top_n_input,
                    keys,
                    order,
                    keep,
                    ttl: None,
                    schema,
                }))
            } else {
                StreamPlan::TopN(Box::new(TopNNode {
                    input: top_n_input,
                    partition: keys,
                    order: order.clone(),
                    function: rank,
                    limit,
                    rank_output,
                    ttl: None,
                    schema: changelog_schema(&window.schema)?,
                }))
            }
        }
    };
    Ok(match projection {
        Some(p) if top_n.is_updating() => {
            let mut exprs = vec![Expr::Column(Column::new_unqualified(CHANGELOG_OP))];
            exprs.extend(p.expr.iter().cloned());
            StreamPlan::Project {
                input: Box::new(top_n),
                exprs,
                schema: changelog_schema(&p.schema)?,
            }
        }
        Some(p) => StreamPlan::Project {
            input: Box::new(top_n),
            exprs: p.expr.clone(),
            schema: Arc::clone(&p.schema),
        },
        None => top_n,
    })
}

/// The error for an OVER window Eddy does not run, naming what it runs.
fn unsupported_over(what: &str) -> EngineError {
    unsupported(&format!(
        "{what} in an OVER window on a stream: OVER aggregations take aggregates, LAG and \
         LEAD over (PARTITION BY ... ORDER BY <time attribute> ASC ROWS BETWEEN n PRECEDING AND \
         CURRENT ROW | RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW), the same window for \
         every function; ROW_NUMBER(), RANK() and DENSE_RANK() only as a Top-N (filtered by \
         `rn <= N`, `rn < N` or `rn = 1` in an outer query)"
    ))
}

/// `LAG(x [, n [, default]])`'s offset and default (NULL when absent).
pub fn lag_parts(
    function: &datafusion::logical_expr::expr::WindowFunction,
) -> EngineResult<(usize, ScalarValue)> {
    let constant = |e: Option<&Expr>| -> Option<ScalarValue> {
        let mut e = e?;
        loop {
            match e {
                Expr::Literal(v, _) => return Some(v.clone()),
                Expr::Cast(c) => e = &c.expr,
                Expr::TryCast(c) => e = &c.expr,
                _ => return None,
            }
        }
    };
    let args = &function.params.args;
    let offset = match args.get(1) {
        None => 1,
        Some(e) => constant(Some(e))
            .and_then(|v| v.cast_to(&DataType::Int64).ok())
            .and_then(|v| match v {
                ScalarValue::Int64(Some(n)) if n >= 0 => Some(n as usize),
                _ => None,
            })
            .ok_or_else(|| unsupported_over("a LAG offset that is not a constant count"))?,
    };
    let default = match args.get(2) {
        None => ScalarValue::Null,
        Some(e) => constant(Some(e))
            .ok_or_else(|| unsupported_over("a LAG default that is not a constant"))?,
    };
    Ok((offset, default))
}

/// The frame of an aggregate OVER window: from n rows, an interval or the start of the
/// partition up to the current row.
fn over_frame(frame: &datafusion::logical_expr::WindowFrame) -> EngineResult<OverFrame> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
    if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
        return Err(unsupported_over(
            "a frame that does not end at the current row",
        ));
    }
    let start = match &frame.start_bound {
        WindowFrameBound::CurrentRow => Some(ScalarValue::UInt64(Some(0))),
        WindowFrameBound::Preceding(v) if v.is_null() => None,
        WindowFrameBound::Preceding(v) => Some(v.clone()),
        WindowFrameBound::Following(_) => {
            return Err(unsupported_over(
                "a frame that starts after the current row",
            ));
        }
    };
    match frame.units {
        WindowFrameUnits::Rows => Ok(OverFrame::Rows(match start {
            None => None,
            Some(v) => match v.cast_to(&DataType::UInt64) {
                Ok(ScalarValue::UInt64(Some(n))) => Some(n),
                _ => return Err(unsupported_over("a ROWS frame bound that is not a count")),
            },
        })),
        WindowFrameUnits::Range => Ok(OverFrame::Range(match start {
            None => None,
            Some(ScalarValue::UInt64(Some(0))) => Some(0),
            Some(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => Some(
                i64::from(v.days)
                    .saturating_mul(86_400_000_000_000)
                    .saturating_add(v.nanoseconds),
            ),
            Some(ScalarValue::IntervalDayTime(Some(v))) => Some(
                i64::from(v.days)
                    .saturating_mul(86_400_000_000_000)
                    .saturating_add(i64::from(v.milliseconds) * 1_000_000),
            ),
            Some(_) => {
                return Err(unsupported_over(
                    "a RANGE frame bound that is not a day-time INTERVAL",
                ));
            }
        })),
        WindowFrameUnits::Groups => Err(unsupported_over("a GROUPS frame")),
    }
}

/// Plans aggregates and `LAG` OVER (PARTITION BY ... ORDER BY <time attribute> <frame>) over
/// an append-only stream: Flink's OVER aggregation.
fn plan_over(window: &datafusion::logical_expr::Window) -> EngineResult<StreamPlan> {
    use datafusion::logical_expr::expr::WindowFunctionDefinition;
    let input = window.input.as_ref();
    let in_schema = input.schema();
    let mut shape: Option<(&Vec<Expr>, &Vec<datafusion::logical_expr::SortExpr>)> = None;
    // Per function, its frame (`None` for LAG and LEAD, which have none).
    let mut frames: Vec<Option<OverFrame>> = Vec::new();
    // The LEAD functions: computed by a Lead operator after the others.
    let mut leads: Vec<usize> = Vec::new();
    // Checked first: Flink refuses any OVER aggregation of a changelog.
    let stream = plan_stream(input)?;
    if stream.is_updating() {
        return Err(over_updating("an OVER aggregation"));
    }
    let time_ordered = |order: &[datafusion::logical_expr::SortExpr]| match order {
        [only] if only.asc => as_column(&only.expr)
            .and_then(|c| in_schema.index_of_column(c).ok())
            .is_some_and(|i| time_attribute(input, i) != TimeAttribute::No),
        _ => false,
    };
    for e in &window.window_expr {
        let mut expr = e;
        while let Expr::Alias(a) = expr {
            expr = &a.expr;
        }
        let Expr::WindowFunction(function) = expr else {
            return Err(unsupported_over(&format!("{e}")));
        };
        let params = &function.params;
        match shape {
            None => shape = Some((&params.partition_by, &params.order_by)),
            Some((p, o)) if *p == params.partition_by && *o == params.order_by => {}
            Some(_) => {
                return Err(unsupported_over(
                    "functions over different PARTITION BY or ORDER BY",
                ));
            }
        }
        if !time_ordered(&params.order_by) {
            return Err(unsupported_over(
                "an ORDER BY other than one time attribute (the WATERMARK FOR column or a \
                 window's window_time) ascending",
            ));
        }
        if params.filter.is_some() {
            return Err(unsupported_over("FILTER"));
        }
        if params.distinct {
            return Err(unsupported_over("DISTINCT"));
        }
        match &function.fun {
            WindowFunctionDefinition::AggregateUDF(udaf) => {
                let this = over_frame(&params.window_frame)?;
                frames.push(Some(this));
                let name = udaf.name().to_ascii_lowercase();
                if this.is_bounded() && !RETRACTABLE.contains(&name.as_str()) {
                    return Err(unsupported_over(&format!(
                        "the aggregate {name} over a bounded frame (it cannot retract rows \
                         leaving the frame; UNBOUNDED PRECEDING takes any aggregate)"
                    )));
                }
            }
            WindowFunctionDefinition::WindowUDF(udwf) => match udwf.name() {
                "lag"
                    if params.null_treatment
                        == Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls) =>
                {
                    return Err(unsupported_over("LAG ... IGNORE NULLS"));
                }
                "lag" => {
                    lag_parts(function)?;
                    frames.push(None);
                }
                "lead"
                    if params.null_treatment
                        == Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls) =>
                {
                    return Err(unsupported_over("LEAD ... IGNORE NULLS"));
                }
                "lead" => {
                    lag_parts(function)?;
                    leads.push(frames.len());
                    frames.push(None);
                }
                other => return Err(unsupported_over(&format!("the window function {other}"))),
            },
        }
    }
    let Some((partition, order)) = shape else {
        return Err(EngineError::Internal(
            "a window without functions".to_string(),
        ));
    };
    let order = order
        .first()
        .ok_or_else(|| EngineError::Internal("an OVER window without ORDER BY".to_string()))?;
    // One operator per frame (LAG with the first), each appending its columns to the rows of
    // the one before; a projection restores the window's column order.
    let mut groups: Vec<(OverFrame, Vec<usize>)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if leads.contains(&i) {
            continue;
        }
        let f = f
            .or_else(|| groups.first().map(|g| g.0))
            .or(frames.iter().find_map(|f| *f));
        let f = f.unwrap_or(OverFrame::Rows(None));
        match groups.iter_mut().find(|g| g.0 == f) {
            Some(g) => g.1.push(i),
            None => groups.push((f, vec![i])),
        }
    }
    let inputs = in_schema.fields().len();
    let mut plan = stream;
    let mut fields: Vec<usize> = (0..inputs).collect();
    // The window's columns at `fields`: the schema of a stacked operator's rows.
    let schema_of = |fields: &[usize]| -> EngineResult<DFSchema> {
        Ok(DFSchema::new_with_metadata(
            fields
                .iter()
                .map(|&i| {
                    let (q, f) = window.schema.qualified_field(i);
                    (q.cloned(), Arc::clone(f))
                })
                .collect(),
            window.schema.metadata().clone(),
        )?)
    };
    for (frame, functions) in &groups {
        fields.extend(functions.iter().map(|i| inputs + i));
        let schema = schema_of(&fields)?;
        plan = StreamPlan::OverAggregate(Box::new(OverAggregateNode {
            input: plan,
            partition: partition.clone(),
            order: order.clone(),
            frame: *frame,
            functions: functions
                .iter()
                .map(|&i| window.window_expr[i].clone())
                .collect(),
            schema: Arc::new(schema),
        }));
    }
    if !leads.is_empty() {
        // LEAD reads the rows after each one: they come in time order, final, from the OVER
        // aggregation (which, without other functions, only orders them).
        if groups.is_empty() {
            plan = StreamPlan::OverAggregate(Box::new(OverAggregateNode {
                input: plan,
                partition: partition.clone(),
                order: order.clone(),
                frame: OverFrame::Rows(None),
                functions: Vec::new(),
                schema: Arc::clone(input.schema()),
            }));
        }
        fields.extend(leads.iter().map(|i| inputs + i));
        let schema = schema_of(&fields)?;
        plan = StreamPlan::Lead(Box::new(LeadNode {
            input: plan,
            partition: partition.clone(),
            order: order.clone(),
            functions: leads
                .iter()
                .map(|&i| window.window_expr[i].clone())
                .collect(),
            schema: Arc::new(schema),
        }));
    }
    if fields
        .iter()
        .enumerate()
        .all(|(position, &i)| position == i)
    {
        return Ok(plan);
    }
    Ok(StreamPlan::Project {
        input: Box::new(plan),
        exprs: (0..window.schema.fields().len())
            .map(|i| Expr::Column(Column::from(window.schema.qualified_field(i))))
            .collect(),
        schema: Arc::clone(&window.schema),
    })
}

/// Whether a column carries event time the watermark speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeAttribute {
    /// The `WATERMARK FOR` column of its source, or a window's `window_time` or `window_end`.
    Yes,
    /// A column of sources without any watermark: windows close only at the end of input,
    /// so every timestamp column is as good as another.
    NoWatermark,
    /// A column the watermark does not bound (an expression, another column).
    No,
}

/// The output columns of a query that are time attributes (a view's event-time columns a
/// window or join over the view can use); `None` when the query reads no watermark at all.
pub fn time_attributes(plan: &LogicalPlan) -> Option<Vec<usize>> {
    let attributes: Vec<TimeAttribute> = (0..plan.schema().fields().len())
        .map(|i| time_attribute(plan, i))
        .collect();
    let yes: Vec<usize> = (0..attributes.len())
        .filter(|i| attributes[*i] == TimeAttribute::Yes)
        .collect();
    if yes.is_empty() && attributes.contains(&TimeAttribute::NoWatermark) {
        None
    } else {
        Some(yes)
    }
}

/// Whether column `index` of `plan` is a time attribute (Flink's rule: window functions run
/// on the watermarked column, so lateness does not depend on how rows are batched).
pub(super) fn time_attribute(plan: &LogicalPlan, index: usize) -> TimeAttribute {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(provider) = stream_provider(scan) else {
                return TimeAttribute::No;
            };
            if let Some(view) = &provider.relation().view {
                let column = scan.projection.as_ref().map_or(index, |p| p[index]);
                return match view.time_columns() {
                    None => TimeAttribute::NoWatermark,
                    Some(columns) if columns.contains(&column) => TimeAttribute::Yes,
                    Some(_) => TimeAttribute::No,
                };
            }
            match &provider.relation().watermark {
                None => TimeAttribute::NoWatermark,
                Some(spec) if scan.projected_schema.field(index).name() == &spec.column => {
                    TimeAttribute::Yes
                }
                Some(_) => TimeAttribute::No,
            }
        }
        LogicalPlan::Projection(p) => {
            let Some(column) = p.expr.get(index).and_then(as_column) else {
                return TimeAttribute::No;
            };
            match p.input.schema().index_of_column(column) {
                Ok(inner) => time_attribute(&p.input, inner),
                Err(_) => TimeAttribute::No,
            }
        }
        LogicalPlan::SubqueryAlias(a) => time_attribute(&a.input, index),
        LogicalPlan::Filter(f) => time_attribute(&f.input, index),
        LogicalPlan::Limit(l) => time_attribute(&l.input, index),
        LogicalPlan::Union(u) => {
            let all: Vec<TimeAttribute> =
                u.inputs.iter().map(|i| time_attribute(i, index)).collect();
            if all.iter().all(|a| *a == TimeAttribute::Yes) {
                TimeAttribute::Yes
            } else if all.iter().all(|a| *a == TimeAttribute::NoWatermark) {
                TimeAttribute::NoWatermark
            } else {
                TimeAttribute::No
            }
        }
        LogicalPlan::Window(w) if index < w.input.schema().fields().len() => {
            time_attribute(&w.input, index)
        }
        LogicalPlan::Extension(_) => match as_window_tvf(plan) {
            Some(tvf) if index < tvf.window_start_index() => time_attribute(&tvf.input, index),
            // window_end and window_time: a window's rows are emitted before the watermark
            // passes them, so they are never behind it.
            Some(tvf) if index > tvf.window_start_index() => TimeAttribute::Yes,
            _ => TimeAttribute::No,
        },
        LogicalPlan::Aggregate(_) => match trace_window_column(plan, index) {
            Some((WindowColumn::Time | WindowColumn::End, _)) => TimeAttribute::Yes,
            _ => TimeAttribute::No,
        },
        // A window join's rows leave when their window closes: only its window_time is a
        // time attribute. An interval join holds its watermark back by the interval, so both
        // inputs' time attributes stay time attributes.
        LogicalPlan::Join(j) if window_join_parts(j).is_some() => {
            match trace_window_column(plan, index) {
                Some((WindowColumn::Time | WindowColumn::End, _)) => TimeAttribute::Yes,
                _ => TimeAttribute::No,
            }
        }
        // A temporal or lookup join's rows keep the left's times, behind the watermark it
        // forwards; the right's columns are no time attributes.
        LogicalPlan::Join(j) if super::temporal::is_as_of(&j.right) => {
            if index < j.left.schema().fields().len() {
                time_attribute(&j.left, index)
            } else {
                TimeAttribute::No
            }
        }
        // A regular join's rows come out whenever a partner arrives, at any time: none of its
        // columns is a time attribute (as in Flink).
        LogicalPlan::Join(j) if !matches!(interval_join_parts(j), Ok(Some(_))) => TimeAttribute::No,
        LogicalPlan::Join(j) => {
            let left_len = j.left.schema().fields().len();
            if index < left_len {
                time_attribute(&j.left, index)
            } else {
                time_attribute(&j.right, index - left_len)
            }
        }
        _ => TimeAttribute::No,
    }
}

const REGULAR_JOIN_KEYS: &str = "joins between streams without an equality of the two sides \
     (a cross join), time bounds or windows; a regular join needs `ON a.k = b.k`, an interval \
     join bounds the WATERMARK columns (`a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts`), \
     a window join equates window_start and window_end of identical window functions";

/// The window-bound pairs of a window join: (left bounds, right bounds, the window kind),
/// when the join's keys equate `window_start` and `window_end` of identical windows.
fn window_join_parts(join: &Join) -> Option<(Vec<BoundColumn>, Vec<BoundColumn>, WindowKind, i64)> {
    let mut left_bounds = Vec::new();
    let mut right_bounds = Vec::new();
    let mut kinds = Vec::new();
    for (l, r) in &join.on {
        fn trace(plan: &LogicalPlan, e: &Expr) -> Option<(BoundColumn, WindowKind, i64)> {
            let index = plan.schema().index_of_column(as_column(e)?).ok()?;
            let (column, tvf) = trace_window_column(plan, index)?;
            let unit_ns = match plan.schema().field(index).data_type() {
                DataType::Timestamp(unit, _) => unit_nanos(*unit),
                _ => return None,
            };
            Some((
                BoundColumn {
                    index,
                    column,
                    unit_ns,
                },
                tvf.kind,
                tvf.time_lag(),
            ))
        }
        if let (Some((lb, lk, ll)), Some((rb, rk, rl))) =
            (trace(&join.left, l), trace(&join.right, r))
            && lb.column == rb.column
        {
            kinds.push((lk, ll));
            kinds.push((rk, rl));
            left_bounds.push(lb);
            right_bounds.push(rb);
        }
    }
    let has = |c: WindowColumn| left_bounds.iter().any(|b: &BoundColumn| b.column == c);
    if !(has(WindowColumn::Start) && (has(WindowColumn::End) || has(WindowColumn::Time))) {
        return None;
    }
    let (kind, lag) = kinds[0];
    kinds
        .iter()
        .all(|k| k.0 == kind)
        .then_some((left_bounds, right_bounds, kind, lag))
}

/// `col`, `col + interval`, `col - interval` or `interval + col`: the column and the
/// offset in nanoseconds.
fn time_term(expr: &Expr) -> Option<(&Column, i64)> {
    /// A column, also under a cast to another timestamp precision (DataFusion aligns two
    /// time columns of different precisions that way).
    fn time_column(e: &Expr) -> Option<&Column> {
        match e {
            Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(_, _)) => {
                as_column(&c.expr)
            }
            Expr::TryCast(c) if matches!(c.field.data_type(), DataType::Timestamp(_, _)) => {
                as_column(&c.expr)
            }
            other => as_column(other),
        }
    }
    fn interval_ns(e: &Expr) -> Option<i64> {
        match e {
            Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
                // Past the i64 range (about 292 years): not a bound this planner can use.
                (v.days as i64)
                    .checked_mul(86_400_000_000_000)
                    .and_then(|ns| ns.checked_add(v.nanoseconds))
            }
            Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
                Some(v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000)
            }
            _ => None,
        }
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Plus => match (time_column(left), time_column(right)) {
                (Some(c), None) => Some((c, interval_ns(right)?)),
                (None, Some(c)) => Some((c, interval_ns(left)?)),
                _ => None,
            },
            Operator::Minus => Some((time_column(left)?, interval_ns(right)?.checked_neg()?)),
            _ => None,
        },
        other => Some((time_column(other)?, 0)),
    }
}

/// Time bounds found in a join condition.
#[derive(Debug, Default)]
struct TimeBounds {
    left_time: Option<Column>,
    right_time: Option<Column>,
    /// Inclusive bounds of left.time - right.time, in nanoseconds.
    lower: Option<i64>,
    upper: Option<i64>,
}

impl TimeBounds {
    /// Takes `a op b` as a bound if it compares a left and a right time column; false if it
    /// is some other condition.
    fn add(&mut self, join: &Join, a: &Expr, op: Operator, b: &Expr) -> bool {
        let (Some((ca, oa)), Some((cb, ob))) = (time_term(a), time_term(b)) else {
            return false;
        };
        let on_left = |c: &Column| join.left.schema().has_column(c);
        let on_right = |c: &Column| join.right.schema().has_column(c);
        // Normalise to `left - right op c`.
        let (lc, rc, op, c) = if on_left(ca) && on_right(cb) {
            (ca, cb, op, ob - oa)
        } else if on_right(ca) && on_left(cb) {
            match op.swap() {
                Some(swapped) => (cb, ca, swapped, oa - ob),
                None => return false,
            }
        } else {
            return false;
        };
        let same = |slot: &Option<Column>, c: &Column| slot.as_ref().is_none_or(|s| s == c);
        if !same(&self.left_time, lc) || !same(&self.right_time, rc) {
            return false;
        }
        match op {
            Operator::GtEq => self.lower = Some(self.lower.map_or(c, |l| l.max(c))),
            Operator::Gt => self.lower = Some(self.lower.map_or(c + 1, |l| l.max(c + 1))),
            Operator::LtEq => self.upper = Some(self.upper.map_or(c, |u| u.min(c))),
            Operator::Lt => self.upper = Some(self.upper.map_or(c - 1, |u| u.min(c - 1))),
            _ => return false,
        }
        self.left_time = Some(lc.clone());
        self.right_time = Some(rc.clone());
        true
    }
}

/// The time bounds of an interval join in a join's condition, when the condition bounds both
/// ways the same two columns, one of each side.
struct IntervalParts {
    left_time: usize,
    right_time: usize,
    lower: i64,
    upper: i64,
    residual: Vec<Expr>,
}

/// The interval join a join's condition makes; `Ok(None)` when it is not one (no complete
/// bounds); an error when its bounds compare columns that are not time attributes.
fn interval_join_parts(join: &Join) -> EngineResult<Option<IntervalParts>> {
    let mut bounds = TimeBounds::default();
    let mut residual = Vec::new();
    for conjunct in join.filter.iter().flat_map(split_conjunction) {
        let taken = match conjunct {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let mut probe = TimeBounds {
                    left_time: bounds.left_time.clone(),
                    right_time: bounds.right_time.clone(),
                    lower: bounds.lower,
                    upper: bounds.upper,
                };
                if probe.add(join, expr, Operator::GtEq, low)
                    && probe.add(join, expr, Operator::LtEq, high)
                {
                    bounds = probe;
                    true
                } else {
                    false
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(
                    op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) =>
            {
                bounds.add(join, left, *op, right)
            }
            _ => false,
        };
        if !taken {
            residual.push(conjunct.clone());
        }
    }
    let (Some(left_time), Some(right_time), Some(lower), Some(upper)) = (
        bounds.left_time,
        bounds.right_time,
        bounds.lower,
        bounds.upper,
    ) else {
        return Ok(None);
    };
    let left_time = join.left.schema().index_of_column(&left_time)?;
    let right_time = join.right.schema().index_of_column(&right_time)?;
    for (plan, index) in [(&join.left, left_time), (&join.right, right_time)] {
        if time_attribute(plan, index) == TimeAttribute::No {
            return Err(EngineError::Plan {
                message: format!(
                    "the interval join bounds compare \"{}\", which is not a time attribute: \
                     use the WATERMARK FOR column of each side (passed through unchanged)",
                    plan.schema().field(index).name()
                ),
                position: None,
            });
        }
    }
    Ok(Some(IntervalParts {
        left_time,
        right_time,
        lower,
        upper,
        residual,
    }))
}

/// Plans a join between two streams: a window join, an interval join, or else a regular join.
fn plan_join(join: &Join) -> EngineResult<StreamPlan> {
    if let Some(plan) = super::temporal::plan_as_of_join(join)? {
        return Ok(plan);
    }
    let streaming = |p: &LogicalPlan| reads_streams(p) || reads_views(p);
    if !streaming(&join.left) || !streaming(&join.right) {
        return Err(unsupported(
            "joins of a stream with a table that is not a stream",
        ));
    }
    let kind = match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::LeftSemi,
        JoinType::LeftAnti => JoinKind::LeftAnti {
            null_aware: join.null_aware,
        },
        JoinType::RightSemi => JoinKind::RightSemi,
        JoinType::RightAnti => JoinKind::RightAnti,
        other => return Err(unsupported(&format!("{other} joins between streams"))),
    };
    // DataFusion pushes a LIMIT above a LEFT/RIGHT join into its preserved side; the LIMIT
    // above stays. Over a stream, cutting an input short could starve the join (a late row
    // among the first n never joins), so the pushed copy is dropped. (A LIMIT the user wrote
    // on that side inside the join is dropped with it: a documented limitation.)
    // The copy may sit under projections or inside the scan (`fetch`).
    fn unlimited(plan: &LogicalPlan) -> EngineResult<LogicalPlan> {
        Ok(match plan {
            LogicalPlan::Limit(l) => unlimited(&l.input)?,
            LogicalPlan::TableScan(scan) if scan.fetch.is_some() => {
                let mut scan = scan.clone();
                scan.fetch = None;
                LogicalPlan::TableScan(scan)
            }
            LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
                let input = unlimited(plan.inputs()[0])?;
                plan.with_new_exprs(plan.expressions(), vec![input])?
            }
            other => other.clone(),
        })
    }
    let inputs = |on: Vec<(Expr, Expr)>, residual: Option<Expr>| -> EngineResult<JoinInputs> {
        let (left_keys, right_keys) = on.into_iter().unzip();
        // Only an outer join's preserved side receives the pushed copy.
        let left = if matches!(join.join_type, JoinType::Left) {
            unlimited(&join.left)?
        } else {
            join.left.as_ref().clone()
        };
        let right = if matches!(join.join_type, JoinType::Right) {
            unlimited(&join.right)?
        } else {
            join.right.as_ref().clone()
        };
        Ok(JoinInputs {
            left: plan_stream(&left)?,
            right: plan_stream(&right)?,
            kind,
            left_keys,
            right_keys,
            residual,
            schema: Arc::clone(&join.schema),
        })
    };
    let over_changelog = plans_to_updating(&join.left) || plans_to_updating(&join.right);
    if let Some((left_bounds, right_bounds, window, lag)) = window_join_parts(join) {
        if over_changelog {
            return Err(over_updating("a window join"));
        }
        if matches!(window, WindowKind::Session { .. }) {
            return Err(unsupported("window joins of SESSION windows"));
        }
        let bound_columns: Vec<usize> = left_bounds.iter().map(|b| b.index).collect();
        let keys: Vec<(Expr, Expr)> = join
            .on
            .iter()
            .filter(|(l, _)| {
                as_column(l)
                    .and_then(|c| join.left.schema().index_of_column(c).ok())
                    .is_none_or(|i| !bound_columns.contains(&i))
            })
            .cloned()
            .collect();
        return Ok(StreamPlan::WindowJoin(Box::new(WindowJoinNode {
            join: inputs(keys, join.filter.clone())?,
            window,
            lag,
            left_bounds,
            right_bounds,
        })));
    }
    if matches!(kind, JoinKind::LeftAnti { null_aware: true }) {
        return Err(unsupported(
            "NOT IN subqueries over streams that are not window joins (a NULL arriving in \
             the subquery would retract every row); NOT EXISTS works",
        ));
    }
    let outer_or_inner = matches!(
        kind,
        JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
    );
    if outer_or_inner
        && !over_changelog
        && let Some(parts) = interval_join_parts(join)?
    {
        // Without equi-join keys every pair in the interval joins.
        return Ok(StreamPlan::IntervalJoin(Box::new(IntervalJoinNode {
            join: inputs(join.on.clone(), conjunction(parts.residual))?,
            left_time: parts.left_time,
            right_time: parts.right_time,
            lower: parts.lower,
            upper: parts.upper,
        })));
    }
    if join.on.is_empty() {
        return Err(unsupported(REGULAR_JOIN_KEYS));
    }
    let join = inputs(join.on.clone(), join.filter.clone())?;
    let updating =
        RegularJoinSpec::emits_changelog(kind, join.left.is_updating(), join.right.is_updating());
    let schema = if updating {
        changelog_schema(&join.schema)?
    } else {
        Arc::clone(&join.schema)
    };
    Ok(StreamPlan::RegularJoin(Box::new(RegularJoinNode {
        join,
        ttl: None,
        updating,
        schema,
    })))
}

/// Plans MATCH_RECOGNIZE: its ORDER BY must lead with a time attribute, so that the
/// watermark tells when rows are final.
fn plan_match_recognize(plan: &LogicalPlan) -> EngineResult<StreamPlan> {
    let Some(node) = as_match_recognize(plan) else {
        return Err(EngineError::Internal("not MATCH_RECOGNIZE".to_string()));
    };
    if plans_to_updating(&node.input) {
        return Err(over_updating("MATCH_RECOGNIZE"));
    }
    let time = node.spec.time;
    let attribute = time_attribute(&node.input, time);
    if attribute == TimeAttribute::No {
        return Err(EngineError::Plan {
            message: format!(
                "MATCH_RECOGNIZE must ORDER BY a time attribute first, and \"{}\" is not one: \
                 use the WATERMARK FOR column of a source or table (passed through unchanged) \
                 or the window_time of a window",
                node.input.schema().field(time).name()
            ),
            position: None,
        });
    }
    Ok(StreamPlan::MatchRecognize(Box::new(
        crate::plan::MatchRecognizeStreamNode {
            input: plan_stream(&node.input)?,
            spec: Arc::clone(&node.spec),
            no_watermark: attribute == TimeAttribute::NoWatermark,
            schema: Arc::clone(node.schema_ref()),
        },
    )))
}

/// Plans a window table function node.
fn plan_window_tvf(plan: &LogicalPlan) -> EngineResult<StreamPlan> {
    let Some(tvf) = as_window_tvf(plan) else {
        return Err(EngineError::Internal(
            "not a window table function".to_string(),
        ));
    };
    let input_schema = tvf.input.schema();
    let key_indices = tvf
        .keys
        .iter()
        .map(|k| input_schema.index_of_column(k))
        .collect::<Result<Vec<_>, _>>()?;
    let time_index = tvf.time_index()?;
    if plans_to_updating(&tvf.input) {
        return Err(over_updating(&format!(
            "the window table function {}",
            tvf.kind.name()
        )));
    }
    // A window on processing time: a column defined as PROCTIME(), stamped and watermarked
    // by the clock right under the window.
    let processing_time = super::temporal::is_proctime(&tvf.input, time_index);
    if !processing_time && time_attribute(&tvf.input, time_index) == TimeAttribute::No {
        return Err(EngineError::Plan {
            message: format!(
                "the time column \"{}\" of {} is not a time attribute: use the \
                 WATERMARK FOR column of a source or table (passed through unchanged), \
                 the window_time or window_end of a window, or a column defined as PROCTIME()",
                tvf.time.name,
                tvf.kind.name()
            ),
            position: None,
        });
    }
    let mut input = plan_stream(&tvf.input)?;
    if processing_time {
        input = StreamPlan::ProcessingTime {
            input: Box::new(input),
            column: time_index,
        };
    }
    Ok(StreamPlan::Window(Box::new(WindowNode {
        input,
        kind: tvf.kind,
        time_index: tvf.time_index()?,
        key_indices,
        slices: false,
        emit: Emission::default(),
        schema: Arc::clone(tvf.schema_ref()),
    })))
}
