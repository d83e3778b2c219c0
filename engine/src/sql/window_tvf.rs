//! Window table functions in the FROM clause: `TUMBLE`, `HOP`, `CUMULATE` and `SESSION`.
//!
//! DataFusion hands every table factor to the registered [`RelationPlanner`]s first. This one
//! takes the short form the parser layer produces (`TUMBLE(rel, ts, size [, offset])`,
//! `HOP(rel, ts, slide, size [, offset])`, `CUMULATE(rel, ts, step, max_size [, offset])`,
//! `SESSION(rel, ts, gap [, key ...])`), plans `rel` through DataFusion (a table, source, CTE
//! or subquery), and wraps it in a [`WindowTvfNode`] (the logical plan node, in
//! `plan::window_tvf`): the input's columns plus `window_start`, `window_end` and
//! `window_time`. The streaming planner turns the node into window operators.

use std::sync::Arc;

use datafusion::common::{
    Column, DFSchema, DataFusionError, Diagnostic, Result, ScalarValue, SchemaError, Span,
};
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNode};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, ObjectName, Spanned, TableFactor,
};

use crate::catalog::Catalog;
use crate::operators::window::{MILLISECOND, WindowKind};
use crate::plan::window_tvf::WindowTvfNode;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

/// Plans window table functions (registered on every session).
#[derive(Debug)]
pub struct WindowTvfPlanner {
    catalog: Arc<Catalog>,
}

impl WindowTvfPlanner {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }
}

impl RelationPlanner for WindowTvfPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let function = match name.0.as_slice() {
            [part] => part
                .as_ident()
                .map(|i| i.value.to_ascii_uppercase())
                .unwrap_or_default(),
            _ => String::new(),
        };
        if !matches!(function.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION") {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let call_span = relation.span();
        let args: Vec<ast::Expr> = args
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
                other => Err(error_at(
                    format!("unexpected argument {other} of {function}"),
                    other.span(),
                )),
            })
            .collect::<Result<_>>()?;
        let usage = match function.as_str() {
            "TUMBLE" => "TUMBLE(table, time_column, size [, offset])",
            "HOP" => "HOP(table, time_column, slide, size [, offset])",
            "CUMULATE" => "CUMULATE(table, time_column, step, max_size [, offset])",
            _ => "SESSION(TABLE t [PARTITION BY key, ...], DESCRIPTOR(time_column), gap)",
        };
        let (min_args, max_args) = match function.as_str() {
            "TUMBLE" => (3, 4),
            "HOP" | "CUMULATE" => (4, 5),
            _ => (3, usize::MAX),
        };
        if args.len() < min_args || args.len() > max_args {
            return Err(error_at(
                format!("wrong number of arguments for {function}: expected {usage}"),
                call_span,
            ));
        }
        let input_factor = match &args[0] {
            ast::Expr::Identifier(ident) => {
                table_factor(ObjectName::from(vec![ident.clone()]), None, None)
            }
            ast::Expr::CompoundIdentifier(idents) => {
                table_factor(ObjectName::from(idents.clone()), None, None)
            }
            ast::Expr::Subquery(query) => TableFactor::Derived {
                lateral: false,
                subquery: query.clone(),
                alias: None,
                sample: None,
            },
            other => {
                return Err(error_at(
                    format!("the first argument of {function} must be a table, not {other}"),
                    other.span(),
                ));
            }
        };
        let input = match context.plan(input_factor) {
            Ok(plan) => plan,
            // Relations named only inside a table function's arguments are not among the
            // ones DataFusion resolved before planning: look them up in the catalog.
            Err(e) => match match &args[0] {
                ast::Expr::Identifier(i) => Some(ObjectName::from(vec![i.clone()])),
                ast::Expr::CompoundIdentifier(ids) => Some(ObjectName::from(ids.clone())),
                _ => None,
            } {
                Some(name) => {
                    let reference = context.object_name_to_table_reference(name)?;
                    match self.catalog.readable(reference.table()) {
                        Some(relation) => LogicalPlanBuilder::scan(
                            reference,
                            provider_as_source(super::provider::relation_provider(relation)),
                            None,
                        )?
                        .build()?,
                        None => return Err(attach_span(e, args[0].span())),
                    }
                }
                None => return Err(e),
            },
        };
        let time = column_arg(context, &input, &args[1], &function)?;
        let mut intervals = Vec::new();
        let interval_count = match function.as_str() {
            "SESSION" => 1,
            _ => args.len() - 2,
        };
        for arg in &args[2..2 + interval_count] {
            intervals.push(interval_arg(context, arg, &function)?);
        }
        let positive = |i: usize| -> Result<i64> {
            if intervals[i] <= 0 {
                Err(error_at(
                    format!("the sizes of {function} must be positive intervals"),
                    args[2 + i].span(),
                ))
            } else {
                Ok(intervals[i])
            }
        };
        let offset = |i: usize| intervals.get(i).copied().unwrap_or(0);
        let kind = match function.as_str() {
            "TUMBLE" => WindowKind::Tumble {
                size: positive(0)?,
                offset: offset(1),
            },
            "HOP" => WindowKind::Hop {
                slide: positive(0)?,
                size: positive(1)?,
                offset: offset(2),
            },
            "CUMULATE" => {
                let (step, max_size) = (positive(0)?, positive(1)?);
                if max_size % step != 0 {
                    return Err(error_at(
                        "the max_size of CUMULATE must be a whole multiple of its step".to_string(),
                        args[3].span(),
                    ));
                }
                WindowKind::Cumulate {
                    step,
                    max_size,
                    offset: offset(2),
                }
            }
            _ => WindowKind::Session { gap: positive(0)? },
        };
        let keys = args[2 + interval_count..]
            .iter()
            .map(|a| column_arg(context, &input, a, &function))
            .collect::<Result<Vec<_>>>()?;
        let node = WindowTvfNode::try_new(input, kind, time, keys)
            .map_err(|e| attach_span(e, call_span))?;
        let plan = LogicalPlan::Extension(Extension {
            node: Arc::new(node) as Arc<dyn UserDefinedLogicalNode>,
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan,
            alias.clone(),
        ))))
    }
}

/// `name [AS alias]`, or a table function call when `args` is given.
pub(crate) fn table_factor(
    name: ObjectName,
    alias: Option<ast::TableAlias>,
    args: Option<ast::TableFunctionArgs>,
) -> TableFactor {
    TableFactor::Table {
        name,
        alias,
        args,
        with_hints: Vec::new(),
        version: None,
        with_ordinality: false,
        partitions: Vec::new(),
        json_path: None,
        sample: None,
        index_hints: Vec::new(),
    }
}

/// A column of the window's input named by `arg` (`ts` or `DESCRIPTOR(ts)` already stripped).
fn column_arg(
    context: &mut dyn RelationPlannerContext,
    input: &LogicalPlan,
    arg: &ast::Expr,
    function: &str,
) -> Result<Column> {
    let name = match arg {
        ast::Expr::Identifier(ident) => context.normalize_ident(ident.clone()),
        ast::Expr::CompoundIdentifier(idents) if !idents.is_empty() => {
            context.normalize_ident(idents[idents.len() - 1].clone())
        }
        other => {
            return Err(error_at(
                format!("expected a column name as argument of {function}, found {other}"),
                other.span(),
            ));
        }
    };
    input
        .schema()
        .qualified_field_with_unqualified_name(&name)
        .map(|(q, f)| Column::new(q.cloned(), f.name()))
        .map_err(|_| {
            let message = format!("column \"{name}\" does not exist in the input of {function}");
            DataFusionError::SchemaError(
                Box::new(SchemaError::FieldNotFound {
                    field: Box::new(Column::new_unqualified(name.clone())),
                    valid_fields: Vec::new(),
                }),
                Box::new(None),
            )
            .with_diagnostic(Diagnostic::new_error(
                message,
                Span::try_from_sqlparser_span(arg.span()),
            ))
        })
}

/// An interval argument in nanoseconds.
pub(crate) fn interval_arg(
    context: &mut dyn RelationPlannerContext,
    arg: &ast::Expr,
    function: &str,
) -> Result<i64> {
    let expr = context.sql_to_expr(arg.clone(), &DFSchema::empty())?;
    let not_interval = || {
        error_at(
            format!("expected an interval such as INTERVAL '10' SECOND as argument of {function}"),
            arg.span(),
        )
    };
    let value = match expr {
        Expr::Literal(v, _) => v,
        _ => return Err(not_interval()),
    };
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return Err(error_at(
                    format!(
                        "{function} sizes in months or years are not supported (months differ in length)"
                    ),
                    arg.span(),
                ));
            }
            (v.days as i64)
                .checked_mul(86_400_000_000_000)
                .and_then(|ns| ns.checked_add(v.nanoseconds))
                .ok_or_else(|| too_large(function, arg))
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Ok(v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * MILLISECOND)
        }
        _ => Err(not_interval()),
    }
}

/// An interval past what nanoseconds in an i64 hold (about 292 years).
fn too_large(function: &str, arg: &ast::Expr) -> DataFusionError {
    error_at(
        format!("the interval argument of {function} is too large (at most 292 years)"),
        arg.span(),
    )
}

pub(crate) fn error_at(
    message: String,
    span: datafusion::sql::sqlparser::tokenizer::Span,
) -> DataFusionError {
    let diagnostic = Diagnostic::new_error(message.clone(), Span::try_from_sqlparser_span(span));
    DataFusionError::Plan(message).with_diagnostic(diagnostic)
}

pub(crate) fn attach_span(
    e: DataFusionError,
    span: datafusion::sql::sqlparser::tokenizer::Span,
) -> DataFusionError {
    if e.diagnostic().is_some() {
        return e;
    }
    let message = e.message().to_string();
    e.with_diagnostic(Diagnostic::new_error(
        message,
        Span::try_from_sqlparser_span(span),
    ))
}
