//! Postgres-style names for unnamed result columns.
//!
//! DataFusion names an unaliased expression by its text (`Int64(1)`, `count(*)`); Postgres
//! names it `?column?`, or by the function called or the type cast to (`count`, `text`). Clients
//! and tests see the Postgres names; the plan itself is unchanged.

use datafusion::sql::sqlparser::ast::{
    CastKind, Expr, Function, Query, SelectItem, SetExpr, Statement,
};

/// Names for the columns of a query's result, if every item of its (first) SELECT list maps to
/// exactly one column. `None` entries keep DataFusion's name (aliases and plain columns).
pub fn postgres_column_names(statement: &Statement) -> Option<Vec<Option<String>>> {
    let Statement::Query(query) = statement else {
        return None;
    };
    query_names(query)
}

fn query_names(query: &Query) -> Option<Vec<Option<String>>> {
    set_expr_names(&query.body)
}

fn set_expr_names(body: &SetExpr) -> Option<Vec<Option<String>>> {
    match body {
        SetExpr::Select(select) => select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(expr) => Some(expr_name(expr)),
                SelectItem::ExprWithAlias { .. } => Some(None),
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => query_names(q),
        SetExpr::SetOperation { left, .. } => set_expr_names(left),
        _ => None,
    }
}

/// The name Postgres gives an unaliased expression (`None`: the column's own name).
fn expr_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(Function { name, .. }) => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase()),
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            expr: inner,
            data_type,
            ..
        } => match expr_name(inner) {
            Some(n) if n != "?column?" => Some(n),
            Some(_) => Some(
                data_type
                    .to_string()
                    .split('(')
                    .next()
                    .unwrap_or("?column?")
                    .to_ascii_lowercase(),
            ),
            None => None,
        },
        Expr::Nested(inner) => expr_name(inner),
        Expr::Case { .. } => Some("case".to_string()),
        _ => Some("?column?".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parser::{EddyStatement, parse_sql};

    fn names(sql: &str) -> Option<Vec<Option<String>>> {
        match parse_sql(sql).unwrap().remove(0).statement {
            EddyStatement::Sql(s) => postgres_column_names(&s),
            _ => None,
        }
    }

    #[test]
    fn like_postgres() {
        assert_eq!(
            names(
                "SELECT 1, a, t.b, count(*), 'x'::text, a + 1 AS c, CASE WHEN a THEN 1 END FROM t"
            ),
            Some(vec![
                Some("?column?".into()),
                None,
                None,
                Some("count".into()),
                Some("text".into()),
                None,
                Some("case".into())
            ])
        );
        assert_eq!(names("SELECT * FROM t"), None);
    }
}
