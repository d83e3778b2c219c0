//! Subquery inputs of window table functions become CTEs.
//!
//! `TUMBLE((SELECT ... FROM a JOIN b ...), ts, size)` is legal (it is how windows cascade and
//! how a join feeds a window), but DataFusion resolves the tables a statement names before
//! planning it and does not look inside table-function arguments. This rewrite moves each
//! such subquery into a CTE of the query whose FROM clause holds the call
//! (`WITH __window_input_1 AS (SELECT ...) ... FROM TUMBLE(__window_input_1, ts, size)`),
//! where DataFusion finds its tables, and the window planner reads the CTE by name.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    Cte, Expr, FunctionArg, FunctionArgExpr, Ident, Query, SetExpr, Statement, TableAlias,
    TableFactor, VisitMut, VisitorMut, With,
};

/// Hoists subquery inputs of window functions into CTEs, everywhere in `statement`.
pub fn hoist_window_inputs(statement: &mut Statement) {
    let _ = statement.visit(&mut Hoister { next: 1 });
}

struct Hoister {
    next: usize,
}

impl VisitorMut for Hoister {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let mut hoisted = Vec::new();
        self.hoist_in(query.body.as_mut(), &mut hoisted);
        if !hoisted.is_empty() {
            let with = query.with.get_or_insert_with(|| With {
                with_token: AttachedToken::empty(),
                recursive: false,
                cte_tables: Vec::new(),
            });
            with.cte_tables.extend(hoisted);
        }
        ControlFlow::Continue(())
    }
}

impl Hoister {
    fn hoist_in(&mut self, body: &mut SetExpr, hoisted: &mut Vec<Cte>) {
        match body {
            SetExpr::Select(select) => {
                for from in &mut select.from {
                    self.hoist_factor(&mut from.relation, hoisted);
                    for join in &mut from.joins {
                        self.hoist_factor(&mut join.relation, hoisted);
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.hoist_in(left, hoisted);
                self.hoist_in(right, hoisted);
            }
            _ => {}
        }
    }

    fn hoist_factor(&mut self, factor: &mut TableFactor, hoisted: &mut Vec<Cte>) {
        match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                let is_window = matches!(name.0.as_slice(), [part] if part
                .as_ident()
                .is_some_and(|i| {
                    ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
                        .contains(&i.value.to_ascii_uppercase().as_str())
                }));
                if !is_window {
                    return;
                }
                let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) =
                    args.args.first_mut()
                else {
                    return;
                };
                if !matches!(first, Expr::Subquery(_)) {
                    return;
                }
                let name = Ident::new(format!("__window_input_{}", self.next));
                self.next += 1;
                let Expr::Subquery(query) =
                    std::mem::replace(first, Expr::Identifier(name.clone()))
                else {
                    return;
                };
                hoisted.push(Cte {
                    alias: TableAlias {
                        explicit: false,
                        name,
                        columns: Vec::new(),
                        at: None,
                    },
                    query,
                    from: None,
                    materialized: None,
                    closing_paren_token: AttachedToken::empty(),
                });
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                self.hoist_factor(&mut table_with_joins.relation, hoisted);
                for join in &mut table_with_joins.joins {
                    self.hoist_factor(&mut join.relation, hoisted);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn hoisted(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        hoist_window_inputs(&mut statement);
        statement.to_string()
    }

    #[test]
    fn subquery_inputs_become_ctes_of_their_query() {
        assert_eq!(
            hoisted(
                "SELECT window_start, count(*) FROM TUMBLE((SELECT a.ts FROM a JOIN b ON a.k = b.k), \
                 ts, INTERVAL '1' SECOND) GROUP BY window_start"
            ),
            "WITH __window_input_1 AS (SELECT a.ts FROM a JOIN b ON a.k = b.k) \
             SELECT window_start, count(*) FROM TUMBLE(__window_input_1, ts, INTERVAL '1' SECOND) \
             GROUP BY window_start"
        );
        // Existing CTEs stay first (the input may use them); nested calls are hoisted where
        // they are.
        assert_eq!(
            hoisted(
                "WITH c AS (SELECT * FROM a) SELECT * FROM HOP((SELECT * FROM TUMBLE((SELECT * FROM c), \
                 ts, INTERVAL '1' SECOND)), window_time, INTERVAL '1' SECOND, INTERVAL '2' SECOND)"
            ),
            "WITH c AS (SELECT * FROM a), __window_input_1 AS (WITH __window_input_2 AS \
             (SELECT * FROM c) SELECT * FROM TUMBLE(__window_input_2, ts, INTERVAL '1' SECOND)) \
             SELECT * FROM HOP(__window_input_1, window_time, INTERVAL '1' SECOND, INTERVAL '2' SECOND)"
        );
        // Table-name inputs are left alone.
        assert_eq!(
            hoisted("SELECT * FROM TUMBLE(bids, ts, INTERVAL '1' SECOND)"),
            "SELECT * FROM TUMBLE(bids, ts, INTERVAL '1' SECOND)"
        );
    }
}
