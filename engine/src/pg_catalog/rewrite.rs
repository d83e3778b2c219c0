//! Client catalog queries made plannable: psql's `OPERATOR(pg_catalog.~)`, `COLLATE
//! pg_catalog.default`, `'name'::regclass`, `pg_catalog.`-qualified function names, and the
//! handful of whole psql/pgcli queries DataFusion cannot run, through `datafusion-pg-catalog`'s
//! rewrite rules; and `ARRAY(SELECT ...)` (psql's `\du`, `\d`) as an `array_agg` subquery.
//!
//! Only queries that read a system catalog or use a Postgres-only construct are touched: the
//! rules know nothing of streaming queries, so those are left exactly as written.

use std::ops::ControlFlow;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType, Expr, FunctionArguments, Query, SelectItem, SetExpr, Statement,
    Value, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

static PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// True when `statement` is a query over the system catalogs or uses a Postgres-only form.
pub fn is_catalog_query(statement: &Statement) -> bool {
    if !matches!(statement, Statement::Query(_)) {
        return false;
    }
    let mut finder = CatalogFinder;
    statement.visit(&mut finder).is_break()
}

struct CatalogFinder;

impl Visitor for CatalogFinder {
    type Break = ();

    fn pre_visit_relation(
        &mut self,
        relation: &datafusion::sql::sqlparser::ast::ObjectName,
    ) -> ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
            .collect();
        let system = match parts.as_slice() {
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [name] => PG_CATALOG_TABLES.contains(&name.as_str()),
            [] => false,
        };
        if system {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let postgres_only = match expr {
            Expr::BinaryOp { op, .. } => matches!(op, BinaryOperator::PGCustomBinaryOperator(_)),
            Expr::Collate { .. } => true,
            Expr::Cast { data_type, .. } => is_oid_type(data_type),
            // `pg_catalog.version()`, as SQLAlchemy asks on connect.
            Expr::Function(f) => {
                f.name.0.len() > 1
                    && f.name.0[0]
                        .as_ident()
                        .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog"))
            }
            _ => false,
        };
        if postgres_only {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn is_oid_type(data_type: &DataType) -> bool {
    let name = data_type.to_string().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    datafusion_pg_catalog::pg_catalog::oid_field::OID_ALIAS_TYPE_NAMES.contains(&name)
}

/// The catalog query `statement` (whose text is `sql`) in a form DataFusion plans.
pub fn rewrite_catalog_query(statement: Statement, sql: &str) -> Statement {
    // The compatibility parser also swaps whole client queries it knows DataFusion cannot run
    // (psql's row-policy and publication queries) for equivalent empty results.
    let rewritten = match PARSER.parse(sql) {
        Ok(mut statements) if statements.len() == 1 => statements.remove(0),
        _ => PARSER.rewrite(statement),
    };
    let mut rewritten = rewritten;
    let _ = VisitMut::visit(&mut rewritten, &mut ArraySubqueryToAggregate);
    rewritten
}

/// `ARRAY(SELECT x FROM ...)` -> `(SELECT array_agg(x) FROM ...)`: a scalar subquery
/// DataFusion can decorrelate. (An empty result is NULL rather than `{}`.) Over `unnest(a)`,
/// which DataFusion cannot correlate, `ARRAY(SELECT x FROM unnest(a) x)` becomes `a` and
/// `ARRAY(SELECT 'p' || x FROM unnest(a) x)` becomes `array_prefix_elements(a, 'p')` (psql's
/// `\d+` lists a table's options so).
///
/// `x LIKE p ESCAPE 'c'` with another escape than backslash: `p` with `c` made a backslash.
///
/// A scalar subquery returning a column that is not aggregated gets `max()` around it:
/// DataFusion decorrelates only aggregated subqueries, and catalog lookups are by key (at most
/// one row), where `max` changes nothing.
struct ArraySubqueryToAggregate;

impl VisitorMut for ArraySubqueryToAggregate {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(escape) = escape_char.as_ref().map(|e| e.to_string())
        {
            // DataFusion's LIKE escapes with a backslash only (SQLAlchemy writes ESCAPE '/').
            let c = escape.trim_matches('\'');
            if c != "\\" && c.chars().count() == 1 {
                let text = format!("replace(replace({pattern}, '\\', '\\\\'), '{c}', '\\')");
                if let Some(rewritten) = parse_expr(&text) {
                    **pattern = rewritten;
                    *escape_char = None;
                }
            }
            return ControlFlow::Continue(());
        }
        if let Expr::Subquery(query) = expr
            && reads_catalog_without_eddy_rows(query)
        {
            *expr = Expr::value(Value::Null);
            return ControlFlow::Continue(());
        }
        if let Expr::Case {
            conditions,
            else_result,
            ..
        } = expr
            && conditions.iter().all(|w| is_null(&w.result))
            && else_result.as_deref().is_none_or(is_null)
        {
            // Every branch is NULL (a lookup above became NULL): so is the CASE, whatever its
            // conditions (whose correlated subqueries DataFusion could not plan).
            *expr = Expr::value(Value::Null);
            return ControlFlow::Continue(());
        }
        if let Expr::Subquery(query) = expr {
            if let Some(aggregated) = aggregate_scalar(query) {
                **query = aggregated;
            }
            return ControlFlow::Continue(());
        }
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        if !function.name.to_string().eq_ignore_ascii_case("array") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::Subquery(query) = &function.args else {
            return ControlFlow::Continue(());
        };
        if let Some(mapped) = map_over_unnest(query) {
            *expr = mapped;
        } else if let Some(aggregated) = aggregate_query(query, "array_agg") {
            *expr = Expr::Subquery(Box::new(aggregated));
        }
        ControlFlow::Continue(())
    }
}

/// Catalogs that never hold a row about Eddy's relations: column defaults, identity
/// sequences and per-column collations (every column has the type's collation, 0).
const WITHOUT_EDDY_ROWS: &[&str] = &["pg_attrdef", "pg_sequence", "pg_collation"];

/// Whether scalar subquery `query` reads one of [`WITHOUT_EDDY_ROWS`]: SQLAlchemy's column
/// reflection looks a column's default, identity and collation up so, inside `CASE` branches
/// DataFusion cannot decorrelate; for Eddy's relations the lookup finds nothing, NULL.
fn reads_catalog_without_eddy_rows(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let named = |factor: &datafusion::sql::sqlparser::ast::TableFactor| match factor {
        datafusion::sql::sqlparser::ast::TableFactor::Table { name, .. } => name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .is_some_and(|i| WITHOUT_EDDY_ROWS.contains(&i.value.to_ascii_lowercase().as_str())),
        _ => false,
    };
    select
        .from
        .iter()
        .any(|t| named(&t.relation) || t.joins.iter().any(|j| named(&j.relation)))
}

fn is_null(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if v.value == Value::Null)
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
];

/// A scalar subquery's one column, wrapped in `max` unless it is aggregated already.
fn aggregate_scalar(query: &Query) -> Option<Query> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let group_by_empty = matches!(
        &select.group_by,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty()
    );
    let [SelectItem::UnnamedExpr(inner) | SelectItem::ExprWithAlias { expr: inner, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let aggregated = matches!(inner, Expr::Function(f)
        if AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str()));
    if aggregated || !group_by_empty || select.from.is_empty() || query.limit_clause.is_some() {
        return None;
    }
    aggregate_query(query, "max")
}

/// `ARRAY(SELECT x | 'p' || x FROM unnest(a) x)` as an expression over `a`.
fn map_over_unnest(query: &Query) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, TableFactor};
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [table] = select.from.as_slice() else {
        return None;
    };
    if !table.joins.is_empty() || select.selection.is_some() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias: Some(alias),
        args: Some(args),
        ..
    } = &table.relation
    else {
        return None;
    };
    let is_unnest = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"));
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] = args.args.as_slice() else {
        return None;
    };
    if !is_unnest {
        return None;
    }
    let [SelectItem::UnnamedExpr(item)] = select.projection.as_slice() else {
        return None;
    };
    let is_element = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value == alias.name.value);
    let text = if is_element(item) {
        format!("coalesce({array}, make_array())")
    } else if let Expr::BinaryOp {
        left,
        op: BinaryOperator::StringConcat,
        right,
    } = item
        && is_element(right)
        && matches!(left.as_ref(), Expr::Value(_))
    {
        format!("array_prefix_elements({array}, {left})")
    } else {
        return None;
    };
    parse_expr(&text)
}

fn parse_expr(text: &str) -> Option<Expr> {
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(text)
    .ok()?
    .parse_expr()
    .ok()
}

/// `query` with its one output column wrapped in `aggregate` (its ORDER BY moved inside).
fn aggregate_query(query: &Query, aggregate: &str) -> Option<Query> {
    let mut query = query.clone();
    let order_by = query.order_by.take();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let [item] = select.projection.as_mut_slice() else {
        return None;
    };
    let (SelectItem::UnnamedExpr(inner) | SelectItem::ExprWithAlias { expr: inner, .. }) = item
    else {
        return None;
    };
    let order = order_by.map(|o| format!(" {o}")).unwrap_or_default();
    let text = format!("{aggregate}({inner}{order})");
    *item = SelectItem::UnnamedExpr(parse_expr(&text)?);
    Some(query)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let _ = VisitMut::visit(&mut statement, &mut ArraySubqueryToAggregate);
        statement.to_string()
    }

    #[test]
    fn lookups_in_catalogs_without_eddy_rows_are_null_and_so_are_cases_of_them() {
        assert_eq!(
            rewritten(
                "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM \
                 pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) ELSE NULL END AS dflt, \
                 CASE WHEN (SELECT t.typcollation FROM pg_type t WHERE t.oid = a.atttypid) != 0 \
                 THEN (SELECT c.collname FROM pg_collation c JOIN pg_namespace n ON true) END \
                 FROM pg_attribute a"
            ),
            "SELECT a.attname, NULL AS dflt, NULL FROM pg_attribute a"
        );
        // A CASE with a branch that is not NULL keeps its conditions.
        assert!(rewritten("SELECT CASE WHEN x THEN 1 ELSE NULL END FROM t").contains("CASE"));
    }
}
