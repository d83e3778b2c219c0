//! Turns DataFusion's optimized logical plan into a [`StreamPlan`].
//!
//! Only the node kinds the streaming runtime can run are accepted; every other node is refused
//! with a `feature not supported` error that names it, so a user never gets a silently wrong
//! answer.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::{LogicalPlan, TableScan};

use super::{SourceNode, StreamPlan};
use crate::error::{EngineError, EngineResult};
use crate::sql::provider::StreamTableProvider;

/// True when the plan reads at least one stream (source or push table).
pub fn reads_streams(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && stream_provider(scan).is_some()
        {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    // Subqueries in expressions are separate plans.
    let _ = plan.apply_subqueries(|sub| {
        if reads_streams(sub) {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

fn stream_provider(scan: &TableScan) -> Option<Arc<StreamTableProvider>> {
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
            let source = StreamPlan::Source(SourceNode {
                relation: Arc::clone(provider.relation()),
                projection: scan.projection.clone(),
                schema: Arc::clone(&scan.projected_schema),
            });
            Ok(match scan.fetch {
                Some(fetch) => StreamPlan::Limit {
                    input: Box::new(source),
                    skip: 0,
                    fetch: Some(fetch),
                },
                None => source,
            })
        }
        LogicalPlan::Projection(p) => Ok(StreamPlan::Project {
            input: Box::new(plan_stream(&p.input)?),
            exprs: p.expr.clone(),
            schema: Arc::clone(&p.schema),
        }),
        LogicalPlan::Filter(f) => {
            use datafusion::logical_expr::Expr;
            let has_subquery = f.predicate.exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })?;
            if has_subquery {
                return Err(unsupported("subqueries over streams"));
            }
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
                    if reads_streams(i) {
                        plan_stream(i)
                    } else {
                        Err(unsupported(
                            "UNION ALL of a stream with a query that reads no stream",
                        ))
                    }
                })
                .collect::<EngineResult<Vec<_>>>()?;
            Ok(StreamPlan::Union {
                inputs,
                schema: Arc::clone(&u.schema),
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
            Ok(StreamPlan::Limit {
                input: Box::new(plan_stream(&l.input)?),
                skip,
                fetch,
            })
        }
        LogicalPlan::SubqueryAlias(a) => Ok(StreamPlan::Alias {
            input: Box::new(plan_stream(&a.input)?),
            schema: Arc::clone(&a.schema),
        }),
        LogicalPlan::Aggregate(_) => Err(unsupported(
            "aggregation over a stream without a window (an updating result)",
        )),
        LogicalPlan::Join(_) => Err(unsupported("joins between streams")),
        LogicalPlan::Sort(_) => Err(unsupported(
            "ORDER BY on a stream (a stream has no end to sort at)",
        )),
        LogicalPlan::Distinct(_) => Err(unsupported("DISTINCT on a stream")),
        LogicalPlan::Window(_) => Err(unsupported("OVER window functions on a stream")),
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

fn unsupported(what: &str) -> EngineError {
    EngineError::Unsupported(what.to_string())
}
