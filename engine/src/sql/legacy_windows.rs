//! Legacy group windows (`GROUP BY TUMBLE(ts, size)`), rewritten to window table functions
//! after parsing.
//!
//! Older Flink and Nexmark texts window an aggregate in its GROUP BY and read the window's
//! bounds with auxiliary functions:
//!
//! ```sql
//! SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS s, auction, count(*)
//! FROM bids WHERE x GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), auction
//! ```
//!
//! Eddy plans windows only as table functions, so each such SELECT, at any depth of the
//! statement, becomes the short form the planner accepts:
//!
//! ```sql
//! SELECT window_start AS s, auction, count(*)
//! FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) WHERE x GROUP BY window_start, window_end, auction
//! ```
//!
//! `TUMBLE(ts, size)`, `HOP(ts, slide, size)` and `SESSION(ts, gap)` are the group windows;
//! `*_START`, `*_END` and `*_ROWTIME` in SELECT, HAVING and ORDER BY become `window_start`,
//! `window_end` and `window_time` (an unaliased one keeps its function's name as the column
//! name, as Postgres would name it). A legacy session window is per group key, so the other
//! GROUP BY columns become the session's partition keys, and its WHERE moves into the window's
//! input (filtering after sessionizing would merge sessions a filtered row kept apart). The
//! window's input must be a single relation.

use crate::sql::window_tvf::table_factor;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    ObjectName, OrderBy, Query, Select, SelectItem, SetExpr, Statement, TableAlias, TableFactor,
    TableFunctionArgs, TableWithJoins, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::error::char_position;
use crate::error::{EngineError, EngineResult};

/// Rewrites every SELECT of `statement` that has a legacy group window. `sql` is the text the
/// statement's spans point into, for error positions.
pub fn rewrite_legacy_windows(statement: &mut Statement, sql: &str) -> EngineResult<()> {
    match statement.visit(&mut LegacyWindowRewriter { sql }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

/// Rewrites each query after its subqueries (so an auxiliary function left in a subquery has
/// already been reported there, never matched against an outer window).
struct LegacyWindowRewriter<'a> {
    sql: &'a str,
}

impl VisitorMut for LegacyWindowRewriter<'_> {
    type Break = EngineError;

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<EngineError> {
        let order_by = query.order_by.as_mut();
        let result = match query.body.as_mut() {
            SetExpr::Select(select) => rewrite_select(select, order_by, self.sql),
            body => rewrite_set_operands(body, self.sql),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn rewrite_set_operands(body: &mut SetExpr, sql: &str) -> EngineResult<()> {
    match body {
        SetExpr::Select(select) => rewrite_select(select, None, sql),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_operands(left, sql)?;
            rewrite_set_operands(right, sql)
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl WindowKind {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "TUMBLE" => Some(Self::Tumble),
            "HOP" => Some(Self::Hop),
            "SESSION" => Some(Self::Session),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tumble => "TUMBLE",
            Self::Hop => "HOP",
            Self::Session => "SESSION",
        }
    }

    /// How the group window is written.
    fn signature(self) -> &'static str {
        match self {
            Self::Tumble => "TUMBLE(time_attr, size)",
            Self::Hop => "HOP(time_attr, slide, size)",
            Self::Session => "SESSION(time_attr, gap)",
        }
    }

    fn arity(self) -> usize {
        match self {
            Self::Tumble | Self::Session => 2,
            Self::Hop => 3,
        }
    }
}

/// What an auxiliary function (`TUMBLE_START`, ...) reads of its window.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Start,
    End,
    Rowtime,
    Proctime,
}

fn auxiliary_function(name: &str) -> Option<(WindowKind, Bound)> {
    let upper = name.to_ascii_uppercase();
    let (kind, bound) = upper.split_once('_')?;
    let bound = match bound {
        "START" => Bound::Start,
        "END" => Bound::End,
        "ROWTIME" => Bound::Rowtime,
        "PROCTIME" => Bound::Proctime,
        _ => return None,
    };
    Some((WindowKind::from_name(kind)?, bound))
}

/// The group window of a SELECT.
struct GroupWindow {
    kind: WindowKind,
    /// The function name as written (kept for the table function).
    name: Ident,
    args: Vec<Expr>,
    /// Its position among the GROUP BY expressions.
    index: usize,
    /// Its text, for messages.
    text: String,
}

fn rewrite_select(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    sql: &str,
) -> EngineResult<()> {
    let window = group_window(select, sql)?;
    if window.is_some() {
        name_auxiliary_columns(&mut select.projection);
    }
    replace_auxiliary_functions(&mut select.projection, window.as_ref(), sql)?;
    replace_auxiliary_functions(&mut select.having, window.as_ref(), sql)?;
    let mut uses_rowtime = select
        .projection
        .iter()
        .map(|p| p.to_string())
        .chain(select.having.iter().map(|h| h.to_string()))
        .any(|text| mentions_window_time(&text));
    if let Some(order_by) = order_by {
        replace_auxiliary_functions(&mut order_by.kind, window.as_ref(), sql)?;
        uses_rowtime |= mentions_window_time(&order_by.to_string());
    }
    let Some(window) = window else {
        return Ok(());
    };
    let kind = window.kind.name();
    let time_column = window
        .args
        .first()
        .and_then(column_name)
        .cloned()
        .ok_or_else(|| EngineError::Plan {
            message: format!(
                "the time attribute of a GROUP BY {kind}(...) window must be a column, found {}",
                window.text
            ),
            position: position(sql, window.name.span),
        })?;
    let GroupByExpr::Expressions(group_by, _) = &mut select.group_by else {
        return Err(EngineError::Internal(
            "a group window outside a GROUP BY list".to_string(),
        ));
    };
    let mut partition_keys: Vec<Ident> = Vec::new();
    if window.kind == WindowKind::Session {
        for (i, key) in group_by.iter().enumerate() {
            if i == window.index {
                continue;
            }
            let column = column_name(key).ok_or_else(|| {
                EngineError::Unsupported(format!(
                    "GROUP BY {key} with a SESSION group window: a legacy session window is per \
                     group key, and only columns can partition a session"
                ))
            })?;
            if !partition_keys.contains(column) {
                partition_keys.push(column.clone());
            }
        }
    }
    let span = window.name.span;
    let mut window_columns = vec![
        Expr::Identifier(Ident::with_span(span, "window_start")),
        Expr::Identifier(Ident::with_span(span, "window_end")),
    ];
    // `*_ROWTIME` became `window_time`, which must then be grouped by too.
    if uses_rowtime {
        window_columns.push(Expr::Identifier(Ident::with_span(span, "window_time")));
    }
    group_by.splice(window.index..=window.index, window_columns);

    let from = match select.from.as_mut_slice() {
        [from] if from.joins.is_empty() => from,
        [] => {
            return Err(EngineError::Plan {
                message: format!("a GROUP BY {kind}(...) window needs a FROM clause"),
                position: position(sql, span),
            });
        }
        [_] => return Err(unsupported_input(kind, "a join")),
        _ => return Err(unsupported_input(kind, "several FROM items")),
    };
    let (mut input, alias) = window_input(&from.relation, kind)?;
    if window.kind == WindowKind::Session
        && let Some(selection) = select.selection.take()
    {
        input = Expr::Subquery(filtered(&from.relation, selection)?);
    }
    let mut args = vec![input, Expr::Identifier(time_column)];
    args.extend(window.args.into_iter().skip(1));
    args.extend(partition_keys.into_iter().map(Expr::Identifier));
    from.relation = table_factor(
        ObjectName::from(vec![window.name]),
        alias,
        Some(TableFunctionArgs {
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            settings: None,
        }),
    );
    Ok(())
}

/// True when rewritten text refers to the `window_time` column.
fn mentions_window_time(text: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word.eq_ignore_ascii_case("window_time"))
}

/// The one TUMBLE, HOP or SESSION call among the GROUP BY expressions, if any.
fn group_window(select: &Select, sql: &str) -> EngineResult<Option<GroupWindow>> {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Ok(None);
    };
    let mut found: Option<GroupWindow> = None;
    for (index, expr) in exprs.iter().enumerate() {
        let Expr::Function(function) = expr else {
            continue;
        };
        let Some(name) = single_name(function) else {
            continue;
        };
        let Some(kind) = WindowKind::from_name(&name.value) else {
            continue;
        };
        let args = plain_arguments(function)
            .filter(|args| args.len() == kind.arity())
            .ok_or_else(|| EngineError::Plan {
                message: format!(
                    "a {} group window is written {}, found {expr}",
                    kind.name(),
                    kind.signature()
                ),
                position: position(sql, name.span),
            })?;
        if let Some(first) = &found {
            return Err(EngineError::Plan {
                message: format!(
                    "only one group window is allowed per GROUP BY, found {} and {expr}",
                    first.text
                ),
                position: position(sql, name.span),
            });
        }
        found = Some(GroupWindow {
            kind,
            name: name.clone(),
            args: args.into_iter().cloned().collect(),
            index,
            text: expr.to_string(),
        });
    }
    Ok(found)
}

/// Gives an unaliased auxiliary function in the SELECT list its function's name as the column
/// name (`tumble_start`), which it would have had without the rewrite.
fn name_auxiliary_columns(projection: &mut [SelectItem]) {
    for item in projection {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        let alias = match &*expr {
            Expr::Function(function) => single_name(function)
                .filter(|name| auxiliary_function(&name.value).is_some())
                .map(|name| Ident::with_span(name.span, name.value.to_ascii_lowercase())),
            _ => None,
        };
        if let Some(alias) = alias {
            let expr = expr.clone();
            *item = SelectItem::ExprWithAlias { expr, alias };
        }
    }
}

/// Replaces the auxiliary functions in `node` by the window's columns, checking that each
/// matches `window`.
fn replace_auxiliary_functions<V: VisitMut>(
    node: &mut V,
    window: Option<&GroupWindow>,
    sql: &str,
) -> EngineResult<()> {
    let flow = visit_expressions_mut(node, |expr| {
        match auxiliary_replacement(expr, window, sql) {
            Ok(Some(column)) => *expr = column,
            Ok(None) => {}
            Err(e) => return ControlFlow::Break(e),
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

/// The column that replaces `expr` if it is an auxiliary function.
fn auxiliary_replacement(
    expr: &Expr,
    window: Option<&GroupWindow>,
    sql: &str,
) -> EngineResult<Option<Expr>> {
    let Expr::Function(function) = expr else {
        return Ok(None);
    };
    let Some(name) = single_name(function) else {
        return Ok(None);
    };
    let Some((kind, bound)) = auxiliary_function(&name.value) else {
        return Ok(None);
    };
    let written = name.value.to_ascii_uppercase();
    let column = match bound {
        Bound::Start => "window_start",
        Bound::End => "window_end",
        Bound::Rowtime => "window_time",
        Bound::Proctime => {
            return Err(EngineError::Unsupported(format!(
                "{written}: processing-time windows (Eddy's windows are on event time)"
            )));
        }
    };
    let Some(window) = window else {
        return Err(EngineError::Plan {
            message: format!(
                "{expr} must be used with a GROUP BY {}(...) window in the same SELECT",
                kind.name()
            ),
            position: position(sql, name.span),
        });
    };
    let matches = window.kind == kind
        && plain_arguments(function).is_some_and(|args| {
            args.len() == window.args.len()
                && args
                    .iter()
                    .zip(&window.args)
                    .all(|(a, b)| same_argument(a, b))
        });
    if !matches {
        return Err(EngineError::Plan {
            message: format!("{expr} must match the GROUP BY window {}", window.text),
            position: position(sql, name.span),
        });
    }
    Ok(Some(Expr::Identifier(Ident::with_span(name.span, column))))
}

/// The window table function's first argument (the relation) and the alias it keeps.
fn window_input(relation: &TableFactor, kind: &str) -> EngineResult<(Expr, Option<TableAlias>)> {
    let (input, alias) = match relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
            let parts: Vec<Ident> = name
                .0
                .iter()
                .map(|p| p.as_ident().cloned())
                .collect::<Option<_>>()
                .ok_or_else(|| unsupported_input(kind, &format!("{relation}")))?;
            let input = match <[Ident; 1]>::try_from(parts) {
                Ok([one]) => Expr::Identifier(one),
                Err(parts) => Expr::CompoundIdentifier(parts),
            };
            (input, alias)
        }
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias,
            sample: None,
        } => (Expr::Subquery(subquery.clone()), alias),
        TableFactor::Table { args: Some(_), .. }
        | TableFactor::Function { .. }
        | TableFactor::TableFunction { .. } => {
            return Err(unsupported_input(kind, "a table function"));
        }
        other => return Err(unsupported_input(kind, &format!("{other}"))),
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err(EngineError::Unsupported(format!(
            "column aliases on the input of a GROUP BY {kind}(...) window"
        )));
    }
    Ok((input, alias.clone()))
}

/// `(SELECT * FROM relation WHERE selection)`.
fn filtered(relation: &TableFactor, selection: Expr) -> EngineResult<Box<Query>> {
    let dialect = GenericDialect {};
    let mut query = Parser::new(&dialect)
        .try_with_sql("SELECT * FROM t WHERE TRUE")
        .and_then(|mut p| p.parse_query())
        .map_err(|e| EngineError::Internal(format!("window input template: {e}")))?;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(EngineError::Internal(
            "window input template is not a SELECT".to_string(),
        ));
    };
    select.from = vec![TableWithJoins {
        relation: relation.clone(),
        joins: Vec::new(),
    }];
    select.selection = Some(selection);
    Ok(query)
}

fn unsupported_input(kind: &str, what: &str) -> EngineError {
    EngineError::Unsupported(format!(
        "a GROUP BY {kind}(...) window over {what}; write the window table function in FROM \
         instead, e.g. FROM {kind}(t, ts, ...)"
    ))
}

fn single_name(function: &Function) -> Option<&Ident> {
    match function.name.0.as_slice() {
        [part] => part.as_ident(),
        _ => None,
    }
}

/// The arguments of a plain call `f(a, b)` (no DISTINCT, named arguments, FILTER or OVER).
fn plain_arguments(function: &Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    if list.duplicate_treatment.is_some()
        || !list.clauses.is_empty()
        || function.filter.is_some()
        || function.over.is_some()
        || !function.within_group.is_empty()
        || !matches!(function.parameters, FunctionArguments::None)
    {
        return None;
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// The column a (possibly qualified) column reference names.
fn column_name(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Identifier(ident) => Some(ident),
        Expr::CompoundIdentifier(idents) => idents.last(),
        _ => None,
    }
}

/// Whether an auxiliary function's argument is the window's: equal expressions, or references
/// to the same column (`b.ts` and `ts`).
fn same_argument(a: &Expr, b: &Expr) -> bool {
    match (column_name(a), column_name(b)) {
        (Some(x), Some(y)) if x.quote_style.is_none() && y.quote_style.is_none() => {
            x.value.eq_ignore_ascii_case(&y.value)
        }
        (Some(x), Some(y)) => x.value == y.value,
        _ => a == b,
    }
}

fn position(sql: &str, span: Span) -> Option<usize> {
    (span.start.line > 0).then(|| char_position(sql, span.start))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;

    use super::rewrite_legacy_windows;
    use crate::error::EngineError;
    use crate::sql::parser::parse_sql;

    /// The statement after this module's rewrite alone (parse_sql also hoists subquery
    /// inputs into CTEs, see window_inputs).
    fn statement(sql: &str) -> Statement {
        let mut statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
            sql,
        )
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(statements.len(), 1);
        let mut statement = statements.remove(0);
        rewrite_legacy_windows(&mut statement, sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        statement
    }

    /// The rewritten text, after checking that the rewritten tree is exactly what the parser
    /// makes of that text (so the planner sees the short form it would see if it were typed).
    fn rewritten(sql: &str) -> String {
        let rewritten = statement(sql);
        let text = rewritten.to_string();
        assert_eq!(rewritten, statement(&text), "{text}");
        text
    }

    fn error(sql: &str) -> EngineError {
        parse_sql(sql).expect_err(sql)
    }

    #[test]
    fn tumble_with_start_end_and_rowtime() {
        assert_eq!(
            rewritten(
                "SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS s, \
                 TUMBLE_END(ts, INTERVAL '10' SECOND) AS e, \
                 TUMBLE_ROWTIME(ts, INTERVAL '10' SECOND) AS t, auction, count(*) \
                 FROM bids WHERE price > 10 \
                 GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), auction"
            ),
            "SELECT window_start AS s, window_end AS e, window_time AS t, auction, count(*) \
             FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) WHERE price > 10 \
             GROUP BY window_start, window_end, window_time, auction"
        );
    }

    #[test]
    fn unaliased_auxiliary_functions_keep_their_name() {
        assert_eq!(
            rewritten(
                "select tumble_end(ts, interval '1' minute), count(*) from bids \
                 group by tumble(ts, interval '1' minute)"
            ),
            "SELECT window_end AS tumble_end, count(*) FROM tumble(bids, ts, INTERVAL '1' MINUTE) \
             GROUP BY window_start, window_end"
        );
    }

    #[test]
    fn hop() {
        assert_eq!(
            rewritten(
                "SELECT auction, HOP_END(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS e, \
                 max(price) FROM bids \
                 GROUP BY auction, HOP(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"
            ),
            "SELECT auction, window_end AS e, max(price) \
             FROM HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
             GROUP BY auction, window_start, window_end"
        );
    }

    #[test]
    fn session_group_keys_become_partition_keys() {
        assert_eq!(
            rewritten(
                "SELECT bidder, SESSION_START(ts, INTERVAL '5' SECOND) AS s, count(*) \
                 FROM bids GROUP BY SESSION(ts, INTERVAL '5' SECOND), bidder"
            ),
            "SELECT bidder, window_start AS s, count(*) \
             FROM SESSION(bids, ts, INTERVAL '5' SECOND, bidder) \
             GROUP BY window_start, window_end, bidder"
        );
        // Its WHERE filters the rows before they are sessionized, as it did before.
        assert_eq!(
            rewritten(
                "SELECT b.bidder, count(*) FROM bids AS b WHERE b.price > 10 \
                 GROUP BY b.bidder, b.channel, SESSION(b.ts, INTERVAL '5' SECOND)"
            ),
            "SELECT b.bidder, count(*) \
             FROM SESSION((SELECT * FROM bids AS b WHERE b.price > 10), ts, INTERVAL '5' SECOND, \
             bidder, channel) AS b \
             GROUP BY b.bidder, b.channel, window_start, window_end"
        );
    }

    #[test]
    fn session_with_an_expression_key_is_unsupported() {
        let e = error(
            "SELECT count(*) FROM bids GROUP BY SESSION(ts, INTERVAL '5' SECOND), lower(channel)",
        );
        assert!(
            matches!(e, EngineError::Unsupported(ref m) if m.contains("lower(channel)")),
            "{e:?}"
        );
    }

    #[test]
    fn having_and_order_by() {
        assert_eq!(
            rewritten(
                "SELECT auction, count(*) FROM bids \
                 GROUP BY auction, TUMBLE(ts, INTERVAL '10' SECOND) \
                 HAVING TUMBLE_END(ts, INTERVAL '10' SECOND) > TIMESTAMP '2024-01-01 00:00:00' \
                 ORDER BY TUMBLE_START(ts, INTERVAL '10' SECOND), auction"
            ),
            "SELECT auction, count(*) FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) \
             GROUP BY auction, window_start, window_end \
             HAVING window_end > TIMESTAMP '2024-01-01 00:00:00' \
             ORDER BY window_start, auction"
        );
    }

    #[test]
    fn alias_and_qualified_time_attribute() {
        assert_eq!(
            rewritten(
                "SELECT TUMBLE_START(b.ts, INTERVAL '10' SECOND) AS s, count(*) FROM bids b \
                 GROUP BY TUMBLE(b.ts, INTERVAL '10' SECOND)"
            ),
            "SELECT window_start AS s, count(*) FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) b \
             GROUP BY window_start, window_end"
        );
        assert_eq!(
            rewritten(
                "SELECT count(*) FROM (SELECT * FROM bids WHERE price > 1) AS t \
                 GROUP BY TUMBLE(t.ts, INTERVAL '10' SECOND)"
            ),
            "SELECT count(*) \
             FROM TUMBLE((SELECT * FROM bids WHERE price > 1), ts, INTERVAL '10' SECOND) AS t \
             GROUP BY window_start, window_end"
        );
    }

    #[test]
    fn nested_queries_and_other_statements() {
        let inner = "SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS s, count(*) AS n FROM bids \
                     GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)";
        let short = "SELECT window_start AS s, count(*) AS n \
                     FROM TUMBLE(bids, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end";
        assert_eq!(
            rewritten(&format!("SELECT * FROM ({inner}) AS t")),
            format!("SELECT * FROM ({short}) AS t")
        );
        assert_eq!(
            rewritten(&format!("WITH w AS ({inner}) SELECT * FROM w")),
            format!("WITH w AS ({short}) SELECT * FROM w")
        );
        assert_eq!(
            rewritten(&format!("INSERT INTO out {inner}")),
            format!("INSERT INTO out {short}")
        );
        assert_eq!(
            rewritten(&format!("COPY ({inner}) TO STDOUT")),
            format!("COPY ({short}) TO STDOUT")
        );
        assert_eq!(
            rewritten(&format!("DECLARE c CURSOR FOR {inner}")),
            format!("DECLARE c CURSOR FOR {short}")
        );
        assert_eq!(
            rewritten(&format!("EXPLAIN {inner}")),
            format!("EXPLAIN {short}")
        );
        // A window over a windowed subquery: both levels are rewritten.
        assert_eq!(
            rewritten(&format!(
                "SELECT max(n) FROM ({inner}) AS t GROUP BY TUMBLE(s, INTERVAL '10' SECOND)"
            )),
            format!(
                "SELECT max(n) FROM TUMBLE(({short}), s, INTERVAL '10' SECOND) AS t \
                 GROUP BY window_start, window_end"
            )
        );
    }

    #[test]
    fn calls_outside_group_by_and_table_functions_are_untouched() {
        for sql in [
            "SELECT TUMBLE(ts, INTERVAL '1' SECOND) FROM bids",
            "SELECT window_start, count(*) FROM TUMBLE(bids, ts, INTERVAL '1' SECOND) \
             GROUP BY window_start, window_end",
            "SELECT a FROM t GROUP BY a",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }

    #[test]
    fn join_or_several_inputs_is_unsupported() {
        let e = error(
            "SELECT count(*) FROM bids JOIN auctions ON bids.auction = auctions.id \
             GROUP BY TUMBLE(bids.ts, INTERVAL '10' SECOND)",
        );
        assert!(
            matches!(e, EngineError::Unsupported(ref m) if m.contains("join")),
            "{e:?}"
        );
        let e = error(
            "SELECT count(*) FROM bids, auctions GROUP BY TUMBLE(bids.ts, INTERVAL '10' SECOND)",
        );
        assert!(
            matches!(e, EngineError::Unsupported(ref m) if m.contains("several FROM items")),
            "{e:?}"
        );
    }

    #[test]
    fn proctime_is_unsupported() {
        let e = error(
            "SELECT TUMBLE_PROCTIME(ts, INTERVAL '1' SECOND), count(*) FROM bids \
             GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        );
        assert!(
            matches!(e, EngineError::Unsupported(ref m) if m.contains("TUMBLE_PROCTIME")),
            "{e:?}"
        );
    }

    #[test]
    fn auxiliary_function_must_match_the_window() {
        let sql = "SELECT TUMBLE_START(ts, INTERVAL '5' SECOND), count(*) FROM bids \
                   GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)";
        match error(sql) {
            EngineError::Plan { message, position } => {
                assert!(
                    message.contains(
                        "must match the GROUP BY window TUMBLE(ts, INTERVAL '10' SECOND)"
                    ),
                    "{message}"
                );
                assert_eq!(position, Some(8));
            }
            other => panic!("{other:?}"),
        }
        let e = error(
            "SELECT HOP_START(ts, INTERVAL '10' SECOND) FROM bids \
             GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)",
        );
        assert!(matches!(e, EngineError::Plan { .. }), "{e:?}");
        let e = error("SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) FROM bids");
        assert!(
            matches!(e, EngineError::Plan { ref message, .. } if message.contains("must be used with a GROUP BY TUMBLE")),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_group_windows() {
        let e = error(
            "SELECT count(*) FROM bids GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), \
             HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)",
        );
        assert!(
            matches!(e, EngineError::Plan { ref message, .. } if message.contains("only one group window")),
            "{e:?}"
        );
        let e = error("SELECT count(*) FROM bids GROUP BY HOP(ts, INTERVAL '1' SECOND)");
        assert!(
            matches!(e, EngineError::Plan { ref message, .. } if message.contains("HOP(time_attr, slide, size)")),
            "{e:?}"
        );
    }
}
