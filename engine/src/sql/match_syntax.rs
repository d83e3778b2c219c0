//! The parts of MATCH_RECOGNIZE that sqlparser does not parse, rewritten between the tokenizer
//! and the parser into a form it does.
//!
//! sqlparser 0.62 parses `MATCH_RECOGNIZE (...)` but not Flink's `WITHIN INTERVAL ...` after
//! the pattern, not the `SUBSET` clause, not `RUNNING`/`FINAL` before a navigation function,
//! and it requires `DEFINE`. Inside each `MATCH_RECOGNIZE ( ... )`:
//!
//! - `WITHIN expr` becomes a leading DEFINE entry `__eddy_within AS expr`;
//! - `WITH TIMEOUTS` after `ONE ROW PER MATCH` or `ALL ROWS PER MATCH [...]` becomes a DEFINE
//!   entry `__eddy_timeouts AS TRUE` (it needs WITHIN: without, a syntax error);
//! - `SUBSET S = (A, B), ...` becomes one DEFINE entry `__eddy_subset AS S = (A, B)` per
//!   subset;
//! - `RUNNING f(...)` and `FINAL f(...)` become calls `RUNNING(f(...))` and `FINAL(f(...))`;
//! - a missing DEFINE becomes `DEFINE __eddy_define AS TRUE`;
//! - in PATTERN, an exclusion `{- B -}` becomes `({- B -})`: sqlparser reads a `{` after a
//!   variable or group as the start of a quantifier (`A {- B -}` fails with "expected
//!   quantifier range"), but parses an exclusion where a group may start.
//!
//! And before `MATCH_RECOGNIZE`, a derived table `(SELECT ...) [AS s]`, which sqlparser accepts
//! only as a table name there, becomes `__eddy_derived((SELECT ...)) [AS s]`.
//!
//! The planner (`crate::sql::match_recognize`) takes the `__eddy_` entries and the pseudo table
//! back out. Tokens keep their source locations, so error positions still point into the
//! user's text.

use std::ops::Range;

use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Whitespace};

use crate::sql::window_syntax::{Tokens, closing, error_at, is_word, significant};

/// The DEFINE entry that carries `WITHIN`.
pub const WITHIN_ENTRY: &str = "__eddy_within";
/// The DEFINE entry that carries one `SUBSET` definition.
pub const SUBSET_ENTRY: &str = "__eddy_subset";
/// The pseudo table whose argument is a subquery that MATCH_RECOGNIZE reads.
pub const DERIVED_INPUT: &str = "__eddy_derived";
/// The DEFINE entry that carries `WITH TIMEOUTS`.
pub const TIMEOUTS_ENTRY: &str = "__eddy_timeouts";
/// The DEFINE entry that stands for a missing DEFINE.
pub const EMPTY_DEFINE_ENTRY: &str = "__eddy_define";

/// Rewrites every `MATCH_RECOGNIZE ( ... )` clause in `tokens`.
pub fn rewrite_match_recognize(
    tokens: Vec<TokenWithSpan>,
) -> Result<Vec<TokenWithSpan>, ParserError> {
    if !tokens.iter().any(|t| is_match_recognize(&t.token)) {
        return Ok(tokens);
    }
    let tokens = Tokens::new(wrap_derived_inputs(tokens));
    let end = tokens.len();
    let mut out = Vec::with_capacity(end + 16);
    let mut i = 0;
    while i < end {
        if is_match_recognize(&tokens[i].token) {
            let open = significant(&tokens, i + 1, end);
            if let Some(close) = closing(&tokens, open, end) {
                out.extend_from_slice(&tokens[i..open]);
                rewrite_clause(&tokens, open, close, &mut out)?;
                i = close + 1;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok(out)
}

/// `(SELECT ...) [AS] [alias] MATCH_RECOGNIZE (...)`: sqlparser takes MATCH_RECOGNIZE only
/// after a table name, so the subquery becomes the argument of a pseudo table
/// `__eddy_derived((SELECT ...))`, which the planner turns back into the derived table.
fn wrap_derived_inputs(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let tokens = Tokens::new(tokens);
    let end = tokens.len();
    let mut opens = vec![false; end];
    let mut closes = vec![false; end];
    for i in 0..end {
        let query = significant(&tokens, i + 1, end);
        if tokens[i].token == Token::LParen
            && (is_word(&tokens, query, end, "SELECT") || is_word(&tokens, query, end, "WITH"))
            && let Some(close) = closing(&tokens, i, end)
            && match_recognize_follows(&tokens, close + 1, end)
        {
            opens[i] = true;
            closes[close] = true;
        }
    }
    let mut out = Vec::with_capacity(end + 8);
    for (i, t) in tokens.iter().enumerate() {
        if opens[i] {
            out.push(word(DERIVED_INPUT, t.span));
            out.push(TokenWithSpan::new(Token::LParen, t.span));
        }
        out.push(t.clone());
        if closes[i] {
            out.push(TokenWithSpan::new(Token::RParen, t.span));
        }
    }
    out
}

/// Whether `[AS] [alias] MATCH_RECOGNIZE` starts at `i`.
fn match_recognize_follows(tokens: &Tokens, i: usize, end: usize) -> bool {
    let mut j = significant(tokens, i, end);
    for _ in 0..2 {
        if j >= end {
            return false;
        }
        if is_match_recognize(&tokens[j].token) {
            return true;
        }
        if !matches!(tokens[j].token, Token::Word(_)) {
            return false;
        }
        j = significant(tokens, j + 1, end);
    }
    j < end && is_match_recognize(&tokens[j].token)
}

fn is_match_recognize(token: &Token) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case("MATCH_RECOGNIZE"))
}

/// Rewrites the clause between the parentheses at `open` and `close`.
fn rewrite_clause(
    tokens: &Tokens,
    open: usize,
    close: usize,
    out: &mut Vec<TokenWithSpan>,
) -> Result<(), ParserError> {
    // Top-level keyword positions.
    let mut pattern_start = None;
    let mut pattern_end = None;
    let mut define = None;
    let mut within = None;
    let mut subset = None;
    // `WITH TIMEOUTS`: the positions of both words.
    let mut timeouts = None;
    let mut i = open + 1;
    while i < close {
        if let Some(partner) = tokens.partner[i] {
            i = partner + 1;
            continue;
        }
        let next = significant(tokens, i + 1, close);
        if pattern_end.is_none()
            && timeouts.is_none()
            && is_word(tokens, i, close, "WITH")
            && is_word(tokens, next, close, "TIMEOUTS")
        {
            timeouts = Some((i, next));
            i = next + 1;
            continue;
        }
        if is_word(tokens, i, close, "PATTERN") && pattern_end.is_none() {
            let group = significant(tokens, i + 1, close);
            if let Some(group_close) = closing(tokens, group, close) {
                pattern_start = Some(group);
                pattern_end = Some(group_close);
                i = group_close + 1;
                continue;
            }
        } else if pattern_end.is_some() && define.is_none() {
            if is_word(tokens, i, close, "WITHIN") && within.is_none() {
                within = Some(i);
            } else if is_word(tokens, i, close, "SUBSET") && subset.is_none() {
                subset = Some(i);
            } else if is_word(tokens, i, close, "DEFINE") {
                define = Some(i);
            }
        }
        i += 1;
    }
    let (Some(pattern_start), Some(pattern_end)) = (pattern_start, pattern_end) else {
        // No PATTERN: let the parser report it.
        copy_wrapped(tokens, open..close + 1, out);
        return Ok(());
    };
    let clauses_end = define.unwrap_or(close);
    // Each of WITHIN and SUBSET runs to the next of them, DEFINE or the end.
    let clause_range = |start: usize| {
        let next = [within, subset, Some(clauses_end)]
            .into_iter()
            .flatten()
            .filter(|&k| k > start)
            .min()
            .unwrap_or(clauses_end);
        start + 1..next
    };
    if let Some(first) = [within, subset].into_iter().flatten().min()
        && significant(tokens, pattern_end + 1, clauses_end) < first
    {
        return Err(error_at(
            tokens,
            significant(tokens, pattern_end + 1, clauses_end),
            "expected WITHIN, SUBSET or DEFINE after PATTERN (...)",
        ));
    }
    let span = tokens[pattern_end].span;
    let mut entries: Vec<Vec<TokenWithSpan>> = Vec::new();
    if let Some((with, _)) = timeouts {
        let before = previous_significant(tokens, open, with);
        if !["MATCH", "MATCHES", "ROWS"]
            .iter()
            .any(|w| is_word(tokens, before, with, w))
        {
            return Err(error_at(
                tokens,
                with,
                "WITH TIMEOUTS belongs right after ONE ROW PER MATCH or ALL ROWS PER MATCH",
            ));
        }
        if within.is_none() {
            return Err(error_at(
                tokens,
                with,
                "WITH TIMEOUTS needs WITHIN after PATTERN (...): an attempt times out when its \
                 WITHIN interval has passed",
            ));
        }
        let at = tokens[with].span;
        entries.push(vec![
            word(TIMEOUTS_ENTRY, at),
            space(at),
            word("AS", at),
            space(at),
            word("TRUE", at),
        ]);
    }
    if let Some(w) = within {
        let range = clause_range(w);
        if significant(tokens, range.start, range.end) == range.end {
            return Err(error_at(tokens, w, "WITHIN needs an interval"));
        }
        let mut entry = vec![word(WITHIN_ENTRY, span), space(span), word("AS", span)];
        entry.extend_from_slice(&tokens[range]);
        entries.push(entry);
    }
    if let Some(s) = subset {
        let range = clause_range(s);
        for item in split_commas(tokens, range.clone()) {
            if significant(tokens, item.start, item.end) == item.end {
                return Err(error_at(tokens, s, "SUBSET needs definitions `S = (A, B)`"));
            }
            let mut entry = vec![word(SUBSET_ENTRY, span), space(span), word("AS", span)];
            entry.extend_from_slice(&tokens[item]);
            entries.push(entry);
        }
    }
    match timeouts {
        Some((with, timeouts)) => {
            copy_wrapped(tokens, open..with, out);
            copy_wrapped(tokens, timeouts + 1..pattern_start, out);
        }
        None => copy_wrapped(tokens, open..pattern_start, out),
    }
    copy_pattern(tokens, pattern_start..pattern_end + 1, out);
    out.push(space(span));
    match define {
        Some(d) => {
            out.push(tokens[d].clone());
            for entry in entries {
                out.push(space(span));
                out.extend(entry);
                out.push(TokenWithSpan::new(Token::Comma, span));
            }
            copy_wrapped(tokens, d + 1..close + 1, out);
        }
        None => {
            out.push(word("DEFINE", span));
            if entries.is_empty() {
                out.extend([
                    space(span),
                    word(EMPTY_DEFINE_ENTRY, span),
                    space(span),
                    word("AS", span),
                    space(span),
                    word("TRUE", span),
                ]);
            }
            for (k, entry) in entries.into_iter().enumerate() {
                if k > 0 {
                    out.push(TokenWithSpan::new(Token::Comma, span));
                }
                out.push(space(span));
                out.extend(entry);
            }
            out.push(tokens[close].clone());
        }
    }
    Ok(())
}

/// The last index before `i` (and after `floor`) that is not whitespace, or `i` when there is
/// none.
fn previous_significant(tokens: &Tokens, floor: usize, i: usize) -> usize {
    (floor + 1..i)
        .rev()
        .find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
        .unwrap_or(i)
}

/// The comma-separated pieces of `range` (commas inside brackets do not count).
fn split_commas(tokens: &Tokens, range: Range<usize>) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = range.start;
    let mut i = range.start;
    while i < range.end {
        if let Some(partner) = tokens.partner[i] {
            i = partner + 1;
            continue;
        }
        if tokens[i].token == Token::Comma {
            pieces.push(start..i);
            start = i + 1;
        }
        i += 1;
    }
    pieces.push(start..range.end);
    pieces
}

/// Copies the PATTERN group `range`, putting each exclusion `{- ... -}` in parentheses.
fn copy_pattern(tokens: &Tokens, range: Range<usize>, out: &mut Vec<TokenWithSpan>) {
    let mut exclusion_ends = Vec::new();
    for i in range {
        let token = &tokens[i];
        if token.token == Token::LBrace
            && tokens
                .get(significant(tokens, i + 1, tokens.len()))
                .map(|t| &t.token)
                == Some(&Token::Minus)
            && let Some(partner) = tokens.partner[i]
        {
            out.push(TokenWithSpan::new(Token::LParen, token.span));
            exclusion_ends.push(partner);
        }
        out.push(token.clone());
        if exclusion_ends.contains(&i) {
            out.push(TokenWithSpan::new(Token::RParen, token.span));
        }
    }
}

/// Copies `range`, turning `RUNNING f(...)` / `FINAL f(...)` into `RUNNING(f(...))`.
fn copy_wrapped(tokens: &Tokens, range: Range<usize>, out: &mut Vec<TokenWithSpan>) {
    let mut i = range.start;
    while i < range.end {
        if is_word(tokens, i, range.end, "RUNNING") || is_word(tokens, i, range.end, "FINAL") {
            let name = significant(tokens, i + 1, range.end);
            let call_open = significant(tokens, name + 1, range.end);
            if matches!(tokens.get(name).map(|t| &t.token), Some(Token::Word(_)))
                && let Some(call_close) = closing(tokens, call_open, range.end)
            {
                let span = tokens[i].span;
                out.push(tokens[i].clone());
                out.push(TokenWithSpan::new(Token::LParen, span));
                copy_wrapped(tokens, name..call_close + 1, out);
                out.push(TokenWithSpan::new(Token::RParen, span));
                i = call_close + 1;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
}

fn word(value: &str, span: Span) -> TokenWithSpan {
    TokenWithSpan::new(Token::make_word(value, None), span)
}

fn space(span: Span) -> TokenWithSpan {
    TokenWithSpan::new(Token::Whitespace(Whitespace::Space), span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn rewrite(sql: &str) -> String {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        rewrite_match_recognize(tokens)
            .unwrap()
            .iter()
            .map(|t| t.token.to_string())
            .collect()
    }

    #[test]
    fn within_and_subset_become_define_entries() {
        assert_eq!(
            rewrite(
                "t MATCH_RECOGNIZE (PATTERN (A B) WITHIN INTERVAL '1' HOUR SUBSET S = (A, B), \
                 T = (A) DEFINE A AS x > 1)"
            ),
            "t MATCH_RECOGNIZE (PATTERN (A B) DEFINE __eddy_within AS INTERVAL '1' HOUR , \
             __eddy_subset AS S = (A, B), __eddy_subset AS T = (A) , A AS x > 1)"
        );
    }

    #[test]
    fn with_timeouts_becomes_a_define_entry() {
        assert_eq!(
            rewrite(
                "t MATCH_RECOGNIZE (ONE ROW PER MATCH WITH TIMEOUTS PATTERN (A B) \
                 WITHIN INTERVAL '1' HOUR)"
            ),
            "t MATCH_RECOGNIZE (ONE ROW PER MATCH  PATTERN (A B) DEFINE __eddy_timeouts AS \
             TRUE, __eddy_within AS INTERVAL '1' HOUR)"
        );
        assert_eq!(
            rewrite(
                "t MATCH_RECOGNIZE (ALL ROWS PER MATCH OMIT EMPTY MATCHES with timeouts \
                 PATTERN (A) WITHIN INTERVAL '1' HOUR DEFINE A AS x)"
            ),
            "t MATCH_RECOGNIZE (ALL ROWS PER MATCH OMIT EMPTY MATCHES  PATTERN (A) DEFINE \
             __eddy_timeouts AS TRUE, __eddy_within AS INTERVAL '1' HOUR , A AS x)"
        );
    }

    /// The syntax error and its position (1-based, in characters) as a user sees it.
    fn syntax_error(sql: &str) -> (String, Option<usize>) {
        match crate::sql::parser::parse_sql(sql) {
            Err(crate::error::EngineError::Syntax { message, position }) => (message, position),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn with_timeouts_needs_within_and_its_place() {
        let sql = "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS a \
                   ONE ROW PER MATCH WITH TIMEOUTS PATTERN (A B) DEFINE A AS x > 1)";
        let (message, position) = syntax_error(sql);
        assert!(message.contains("WITH TIMEOUTS needs WITHIN"), "{message}");
        assert_eq!(position, sql.find("WITH TIMEOUTS").map(|p| p + 1));
        let sql = "SELECT * FROM t MATCH_RECOGNIZE (ORDER BY ts WITH TIMEOUTS MEASURES A.x AS a \
                   PATTERN (A B) WITHIN INTERVAL '1' MINUTE DEFINE A AS x > 1)";
        let (message, position) = syntax_error(sql);
        assert!(
            message.contains("WITH TIMEOUTS belongs right after"),
            "{message}"
        );
        assert_eq!(position, sql.find("WITH TIMEOUTS").map(|p| p + 1));
    }

    #[test]
    fn running_and_final_wrap_their_call() {
        assert_eq!(
            rewrite("t MATCH_RECOGNIZE (MEASURES FINAL LAST(A.x) AS l PATTERN (A))"),
            "t MATCH_RECOGNIZE (MEASURES FINAL(LAST(A.x)) AS l PATTERN (A) DEFINE \
             __eddy_define AS TRUE)"
        );
    }

    #[test]
    fn exclusions_are_parenthesised() {
        assert_eq!(
            rewrite("t MATCH_RECOGNIZE (PATTERN (A {- B+ -} C) DEFINE A AS x > 1)"),
            "t MATCH_RECOGNIZE (PATTERN (A ({- B+ -}) C) DEFINE A AS x > 1)"
        );
    }

    #[test]
    fn a_derived_input_becomes_a_pseudo_table_argument() {
        assert_eq!(
            rewrite(
                "SELECT * FROM (SELECT a FROM t) AS s MATCH_RECOGNIZE (PATTERN (A) DEFINE A AS a)"
            ),
            "SELECT * FROM __eddy_derived((SELECT a FROM t)) AS s MATCH_RECOGNIZE (PATTERN (A) \
             DEFINE A AS a)"
        );
    }

    #[test]
    fn text_without_match_recognize_is_untouched() {
        assert_eq!(rewrite("SELECT within FROM t"), "SELECT within FROM t");
    }
}
