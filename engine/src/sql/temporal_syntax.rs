//! `rel FOR SYSTEM_TIME AS OF expr` (Flink's temporal and lookup joins), rewritten between the
//! tokenizer and the parser into a form sqlparser parses and DataFusion plans.
//!
//! sqlparser parses `FOR SYSTEM_TIME AS OF` only in dialects Eddy does not use. So
//! `rates FOR SYSTEM_TIME AS OF o.ts [AS] [r]` becomes
//! `(SELECT * FROM rates WHERE __eddy_as_of('o.ts')) AS r` (the alias defaults to the
//! relation's name, so `rates.rate` still resolves). The marker is a volatile function that
//! DataFusion keeps where it is; the streaming planner (`plan::temporal`) finds it on the
//! right side of a join, takes it out, and plans a temporal join (the expression is the left
//! side's time attribute) or a lookup join (`PROCTIME()`). Anywhere else the marker is refused.
//!
//! The expression is taken as written, up to the end of a column reference (`o.ts`) or a call
//! (`PROCTIME()`); the planner resolves it. Tokens keep the location of `FOR`, so errors point
//! into the user's text.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::plan::temporal::AS_OF_MARKER;
use crate::sql::window_syntax::{Tokens, closing, is_word, significant};

/// Rewrites every `rel FOR SYSTEM_TIME AS OF expr` in `tokens`.
pub fn rewrite_for_system_time(
    tokens: Vec<TokenWithSpan>,
) -> Result<Vec<TokenWithSpan>, ParserError> {
    if !tokens
        .iter()
        .any(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("SYSTEM_TIME")))
    {
        return Ok(tokens);
    }
    let tokens = Tokens::new(tokens);
    let end = tokens.len();
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(end + 16);
    let mut i = 0;
    while i < end {
        let Some(after_of) = for_system_time_as_of(&tokens, i, end) else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        // The relation: the name before `FOR`, dotted parts included, already in `out`.
        let Some(name_start) = relation_start(&out) else {
            return Err(ParserError::ParserError(format!(
                "FOR SYSTEM_TIME AS OF must follow a table name{}",
                tokens[i].span.start
            )));
        };
        let mut relation: Vec<TokenWithSpan> = out.drain(name_start..).collect();
        while relation
            .last()
            .is_some_and(|t| matches!(t.token, Token::Whitespace(_)))
        {
            relation.pop();
        }
        let last_name = relation
            .iter()
            .rev()
            .find(|t| matches!(t.token, Token::Word(_)))
            .cloned();
        let expr_start = significant(&tokens, after_of, end);
        let expr_end = expression_end(&tokens, expr_start, end);
        if expr_end == expr_start {
            return Err(ParserError::ParserError(format!(
                "FOR SYSTEM_TIME AS OF needs a column of the left input (its time attribute) or \
                 PROCTIME(){}",
                tokens[i].span.start
            )));
        }
        let text: String = tokens[expr_start..expr_end]
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| t.token.to_string())
            .collect();
        let span = tokens[i].span;
        let at = |token: Token| TokenWithSpan { token, span };
        let space = || at(Token::Whitespace(Whitespace::Space));
        out.push(at(Token::LParen));
        out.push(at(Token::make_keyword("SELECT")));
        out.push(space());
        out.push(at(Token::Mul));
        out.push(space());
        out.push(at(Token::make_keyword("FROM")));
        out.push(space());
        out.extend(relation);
        out.push(space());
        out.push(at(Token::make_keyword("WHERE")));
        out.push(space());
        out.push(at(Token::make_word(AS_OF_MARKER, None)));
        out.push(at(Token::LParen));
        out.push(at(Token::SingleQuotedString(text)));
        out.push(at(Token::RParen));
        out.push(at(Token::RParen));
        // Without an alias the derived table takes the relation's name.
        let next = significant(&tokens, expr_end, end);
        let has_alias = matches!(tokens.get(next).map(|t| &t.token),
            Some(Token::Word(w)) if w.keyword == Keyword::AS
                || w.keyword == Keyword::NoKeyword
                || w.quote_style.is_some());
        if !has_alias && let Some(name) = last_name {
            out.push(space());
            out.push(at(Token::make_keyword("AS")));
            out.push(space());
            out.push(TokenWithSpan {
                token: name.token,
                span,
            });
        }
        i = expr_end;
    }
    Ok(out)
}

/// When `FOR SYSTEM_TIME AS OF` starts at `i`, the index after `OF`.
fn for_system_time_as_of(tokens: &Tokens, i: usize, end: usize) -> Option<usize> {
    if !is_word(tokens, i, end, "FOR") {
        return None;
    }
    let mut at = i;
    for word in ["SYSTEM_TIME", "AS", "OF"] {
        at = significant(tokens, at + 1, end);
        if !is_word(tokens, at, end, word) {
            return None;
        }
    }
    Some(at + 1)
}

/// Where the relation name that ends `out` (before trailing whitespace) starts: a word, or
/// dotted words.
fn relation_start(out: &[TokenWithSpan]) -> Option<usize> {
    let previous = |from: usize| -> Option<usize> {
        (0..from)
            .rev()
            .find(|&j| !matches!(out[j].token, Token::Whitespace(_)))
    };
    let mut start = previous(out.len())?;
    if !matches!(out[start].token, Token::Word(_)) {
        return None;
    }
    while let Some(dot) = previous(start)
        && out[dot].token == Token::Period
        && let Some(word) = previous(dot)
        && matches!(out[word].token, Token::Word(_))
    {
        start = word;
    }
    Some(start)
}

/// The end of the `AS OF` expression starting at `start`: dotted words, then an optional
/// argument list.
fn expression_end(tokens: &Tokens, start: usize, end: usize) -> usize {
    if !matches!(tokens.get(start).map(|t| &t.token), Some(Token::Word(_))) {
        return start;
    }
    let mut last = start;
    loop {
        let dot = significant(tokens, last + 1, end);
        let word = significant(tokens, dot + 1, end);
        if dot < end
            && tokens[dot].token == Token::Period
            && matches!(tokens.get(word).map(|t| &t.token), Some(Token::Word(_)))
        {
            last = word;
        } else {
            break;
        }
    }
    let open = significant(tokens, last + 1, end);
    // A typed literal (`TIMESTAMP '...'`), which the planner refuses by name.
    if last == start
        && matches!(
            tokens.get(open).map(|t| &t.token),
            Some(Token::SingleQuotedString(_))
        )
    {
        return open + 1;
    }
    match closing(tokens, open, end) {
        Some(close) => close + 1,
        None => last + 1,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn rewrite(sql: &str) -> String {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        rewrite_for_system_time(tokens)
            .unwrap()
            .iter()
            .map(|t| t.token.to_string())
            .collect()
    }

    #[test]
    fn a_versioned_relation_becomes_a_marked_derived_table() {
        assert_eq!(
            rewrite("SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF o.ts ON o.c = rates.c"),
            "SELECT * FROM o JOIN (SELECT * FROM rates WHERE __eddy_as_of('o.ts')) AS rates \
             ON o.c = rates.c"
        );
        assert_eq!(
            rewrite("FROM o LEFT JOIN s.rates for system_time as of PROCTIME() AS r ON true"),
            "FROM o LEFT JOIN (SELECT * FROM s.rates WHERE __eddy_as_of('PROCTIME()')) AS r ON \
             true"
        );
        assert_eq!(
            rewrite("FROM o JOIN rates FOR SYSTEM_TIME AS OF o.ts r ON true"),
            "FROM o JOIN (SELECT * FROM rates WHERE __eddy_as_of('o.ts')) r ON true"
        );
    }

    #[test]
    fn text_without_the_clause_is_unchanged() {
        let sql = "SELECT system_time FROM t FOR x";
        assert_eq!(rewrite(sql), sql);
    }

    #[test]
    fn a_clause_without_a_relation_or_expression_is_an_error() {
        for sql in [
            "SELECT 1 FOR SYSTEM_TIME AS OF x",
            "SELECT * FROM t FOR SYSTEM_TIME AS OF 1",
        ] {
            let tokens = Tokenizer::new(&GenericDialect {}, sql)
                .tokenize_with_location()
                .unwrap();
            assert!(rewrite_for_system_time(tokens).is_err(), "{sql}");
        }
    }
}
