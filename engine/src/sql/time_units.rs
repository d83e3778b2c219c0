//! `TIMESTAMPADD(SECOND, n, t)` and `TIMESTAMPDIFF(DAY, t1, t2)`: the unit is a bare word,
//! which sqlparser reads as a column name. Before planning, such a first argument becomes a
//! string literal (`'SECOND'`), which the functions (`crate::functions::timestamp_arith`) read.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, visit_expressions_mut,
};

/// The functions whose first argument is a time unit.
const FUNCTIONS: &[&str] = &["timestampadd", "timestampdiff"];

/// Turns the bare unit word of every `TIMESTAMPADD` / `TIMESTAMPDIFF` call in `statement`
/// into a string literal.
pub fn quote_time_units(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Function(f) = expr
            && f.name.0.len() == 1
            && f.name.0[0]
                .as_ident()
                .is_some_and(|i| FUNCTIONS.contains(&i.value.to_ascii_lowercase().as_str()))
            && let FunctionArguments::List(list) = &mut f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = list.args.first_mut()
            && let Expr::Identifier(unit) = first
            && unit.quote_style.is_none()
        {
            *first = Expr::value(Value::SingleQuotedString(unit.value.to_ascii_uppercase()));
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    #[test]
    fn the_unit_word_becomes_a_string() {
        let mut statements = Parser::parse_sql(
            &GenericDialect {},
            "SELECT TIMESTAMPADD(second, 5, ts), timestampdiff(DAY, a, b), other(x, y) FROM t",
        )
        .unwrap();
        quote_time_units(&mut statements[0]);
        assert_eq!(
            statements[0].to_string(),
            "SELECT TIMESTAMPADD('SECOND', 5, ts), timestampdiff('DAY', a, b), other(x, y) FROM t"
        );
    }
}
