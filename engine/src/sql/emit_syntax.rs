//! `EMIT ON UPDATE` and `EMIT ON WINDOW CLOSE` after a GROUP BY (RisingWave's spelling),
//! rewritten between the tokenizer and the parser.
//!
//! sqlparser has no EMIT clause. `EMIT ON WINDOW CLOSE` is what a window aggregate does
//! anyway, so it is dropped. `EMIT ON UPDATE` becomes one more group key, a call of the marker
//! [`EMIT_ON_UPDATE_MARKER`] (a volatile function, which DataFusion's optimizer keeps): the
//! streaming planner finds it among the aggregate's keys, takes it out, and plans the window
//! aggregate to emit a changelog of each window's current rows. The clause may follow the
//! GROUP BY list or the HAVING condition of the same SELECT; the marker goes at the end of the
//! GROUP BY list either way. Anywhere else the clause is a syntax error that points at `EMIT`.

use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::plan::EMIT_ON_UPDATE_MARKER;
use crate::sql::window_syntax::{Tokens, error_at, is_word, significant};

/// What the SELECT at one bracket depth has shown so far.
#[derive(Default, Clone, Copy)]
struct Clauses {
    /// A GROUP BY list is open (no later clause has started).
    group_by: bool,
    /// Where its HAVING keyword is in the output.
    having: Option<usize>,
}

/// Keywords that end a GROUP BY list and its HAVING, where EMIT may no longer follow.
const LATER_CLAUSES: [&str; 10] = [
    "SELECT",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
    "QUALIFY",
];

/// Rewrites every `EMIT ON UPDATE` / `EMIT ON WINDOW CLOSE` in `tokens`.
pub fn rewrite_emit(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, ParserError> {
    if !tokens
        .iter()
        .any(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("EMIT")))
    {
        return Ok(tokens);
    }
    let tokens = Tokens::new(tokens);
    let end = tokens.len();
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(end + 8);
    let mut depth: Vec<Clauses> = vec![Clauses::default()];
    let mut i = 0;
    while i < end {
        match &tokens[i].token {
            Token::LParen => depth.push(Clauses::default()),
            Token::RParen if depth.len() > 1 => {
                depth.pop();
            }
            _ => {}
        }
        let Some(clauses) = depth.last_mut() else {
            break;
        };
        if is_word(&tokens, i, end, "GROUP")
            && is_word(&tokens, significant(&tokens, i + 1, end), end, "BY")
        {
            *clauses = Clauses {
                group_by: true,
                having: None,
            };
        } else if is_word(&tokens, i, end, "HAVING") && clauses.group_by {
            clauses.having = Some(out.len());
        } else if LATER_CLAUSES.iter().any(|w| is_word(&tokens, i, end, w)) {
            *clauses = Clauses::default();
        } else if let Some((on_update, next)) = emit_clause(&tokens, i, end) {
            if !clauses.group_by {
                return Err(error_at(
                    &tokens,
                    i,
                    "EMIT ON UPDATE and EMIT ON WINDOW CLOSE follow the GROUP BY list (or the \
                     HAVING condition) of a window aggregate",
                ));
            }
            if on_update {
                let span = tokens[i].span;
                let at = |token: Token| TokenWithSpan { token, span };
                let marker = [
                    at(Token::Comma),
                    at(Token::make_word(EMIT_ON_UPDATE_MARKER, None)),
                    at(Token::LParen),
                    at(Token::RParen),
                    at(Token::Whitespace(
                        datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
                    )),
                ];
                let position = clauses.having.unwrap_or(out.len());
                out.splice(position..position, marker);
            }
            *clauses = Clauses::default();
            i = next;
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok(out)
}

/// At `EMIT ON UPDATE` or `EMIT ON WINDOW CLOSE`: whether it is the former, and the index
/// after the clause.
fn emit_clause(tokens: &Tokens, i: usize, end: usize) -> Option<(bool, usize)> {
    if !is_word(tokens, i, end, "EMIT") {
        return None;
    }
    let on = significant(tokens, i + 1, end);
    if !is_word(tokens, on, end, "ON") {
        return None;
    }
    let what = significant(tokens, on + 1, end);
    if is_word(tokens, what, end, "UPDATE") {
        return Some((true, what + 1));
    }
    let close = significant(tokens, what + 1, end);
    (is_word(tokens, what, end, "WINDOW") && is_word(tokens, close, end, "CLOSE"))
        .then_some((false, close + 1))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn rewrite(sql: &str) -> Result<String, ParserError> {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        Ok(rewrite_emit(tokens)?
            .iter()
            .map(|t| t.token.to_string())
            .collect())
    }

    #[test]
    fn emit_on_update_becomes_a_marker_key_at_the_end_of_the_group_by_list() {
        assert_eq!(
            rewrite("SELECT k, count(*) FROM t GROUP BY k, window_start EMIT ON UPDATE").unwrap(),
            "SELECT k, count(*) FROM t GROUP BY k, window_start ,__eddy_emit_on_update() "
        );
        // After HAVING: the marker still goes into the GROUP BY list.
        assert_eq!(
            rewrite("SELECT k FROM t GROUP BY k HAVING count(*) > 1 emit on update").unwrap(),
            "SELECT k FROM t GROUP BY k ,__eddy_emit_on_update() HAVING count(*) > 1 "
        );
        // In a subquery.
        assert_eq!(
            rewrite("SELECT * FROM (SELECT k FROM t GROUP BY k EMIT ON UPDATE) AS s").unwrap(),
            "SELECT * FROM (SELECT k FROM t GROUP BY k ,__eddy_emit_on_update() ) AS s"
        );
    }

    #[test]
    fn emit_on_window_close_is_dropped() {
        assert_eq!(
            rewrite("SELECT k FROM t GROUP BY k EMIT ON WINDOW CLOSE").unwrap(),
            "SELECT k FROM t GROUP BY k "
        );
    }

    #[test]
    fn emit_anywhere_else_is_a_syntax_error_at_emit() {
        for sql in [
            "SELECT k FROM t EMIT ON UPDATE",
            "SELECT k FROM t GROUP BY k ORDER BY k EMIT ON UPDATE",
            "SELECT k FROM t GROUP BY k EMIT ON UPDATE EMIT ON UPDATE",
        ] {
            let err = rewrite(sql).unwrap_err().to_string();
            assert!(err.contains("follow the GROUP BY list"), "{sql}: {err}");
            assert!(err.contains("Column"), "{sql}: {err}");
        }
        // A column called emit is a column.
        assert_eq!(
            rewrite("SELECT emit FROM t GROUP BY emit").unwrap(),
            "SELECT emit FROM t GROUP BY emit"
        );
    }
}
