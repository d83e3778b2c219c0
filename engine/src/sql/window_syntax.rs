//! The SQL-standard (Flink) spelling of window table functions, rewritten to Eddy's short form
//! between the tokenizer and the parser.
//!
//! sqlparser cannot parse `TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))`: the
//! inner `TABLE bids` is not an expression. It does parse the short form
//! `TUMBLE(bids, ts, INTERVAL '10' SECOND)` as a table function call, and that is the one
//! spelling the planner accepts. So the token stream is rewritten before parsing, for
//! F in TUMBLE, HOP, CUMULATE and SESSION:
//!
//! - `TABLE ( F(...) )` loses the outer `TABLE (` and its `)`;
//! - `F(TABLE rel, DESCRIPTOR(ts), args...)` becomes `F(rel, ts, args...)`; a `DESCRIPTOR`
//!   in the short form goes too, and `TABLE (SELECT ...)` passes the subquery as `(SELECT ...)`;
//! - `SESSION(TABLE rel PARTITION BY k1, k2, DESCRIPTOR(ts), gap)` (or `PARTITION BY (k1, k2)`)
//!   becomes `SESSION(rel, ts, gap, k1, k2)`;
//! - Flink's named arguments (`DATA => TABLE rel, TIMECOL => DESCRIPTOR(ts), SIZE => ...`, in any
//!   order) are put in positional order.
//!
//! Kept tokens keep their source locations, so the parser's error positions still point into the
//! user's text. Calls that have none of these shapes are left for the parser to accept or reject
//! as usual; only a malformed named-argument call is reported here.

use std::ops::Range;

use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan};

/// A window table function and its parameters in positional order; a parameter may have several
/// names (Flink calls CUMULATE's last size `SIZE`, others `MAX_SIZE`).
struct WindowFunction {
    name: &'static str,
    params: &'static [&'static [&'static str]],
    /// How many leading parameters must be given (the rest are optional).
    required: usize,
}

const WINDOW_FUNCTIONS: [WindowFunction; 4] = [
    WindowFunction {
        name: "TUMBLE",
        params: &[&["DATA"], &["TIMECOL"], &["SIZE"], &["OFFSET"]],
        required: 3,
    },
    WindowFunction {
        name: "HOP",
        params: &[&["DATA"], &["TIMECOL"], &["SLIDE"], &["SIZE"], &["OFFSET"]],
        required: 4,
    },
    WindowFunction {
        name: "CUMULATE",
        params: &[
            &["DATA"],
            &["TIMECOL"],
            &["STEP"],
            &["MAX_SIZE", "SIZE"],
            &["OFFSET"],
        ],
        required: 4,
    },
    WindowFunction {
        name: "SESSION",
        params: &[&["DATA"], &["TIMECOL"], &["GAP"]],
        required: 3,
    },
];

/// How deeply window calls may nest in one another's arguments before the rest is left to the
/// parser (whose own recursion limit then applies).
const MAX_DEPTH: usize = 64;

/// Rewrites the standard spellings of window table functions in `tokens` to the short form.
pub fn rewrite_window_tvfs(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, ParserError> {
    if !tokens.iter().any(|t| window_function(&t.token).is_some()) {
        return Ok(tokens);
    }
    let tokens = Tokens::new(tokens);
    let mut out = Vec::with_capacity(tokens.len());
    rewrite_range(&tokens, 0..tokens.len(), 0, &mut out)?;
    Ok(out)
}

/// The token stream with the partner of each bracket precomputed, so that stepping over a
/// bracketed group costs nothing and the rewrite stays linear in the length of the input (even
/// for a text of thousands of nested `tumble(`).
pub(crate) struct Tokens {
    list: Vec<TokenWithSpan>,
    /// For an opening bracket, the index of the bracket that closes it.
    pub(crate) partner: Vec<Option<usize>>,
}

impl Tokens {
    pub(crate) fn new(list: Vec<TokenWithSpan>) -> Self {
        let mut partner = vec![None; list.len()];
        let mut open = Vec::new();
        for (i, t) in list.iter().enumerate() {
            match t.token {
                Token::LParen | Token::LBracket | Token::LBrace => open.push(i),
                Token::RParen | Token::RBracket | Token::RBrace => {
                    if let Some(o) = open.pop() {
                        partner[o] = Some(i);
                    }
                }
                _ => {}
            }
        }
        Tokens { list, partner }
    }
}

impl std::ops::Deref for Tokens {
    type Target = [TokenWithSpan];

    fn deref(&self) -> &[TokenWithSpan] {
        &self.list
    }
}

/// Copies `range` of `tokens` to `out`, rewriting the window calls in it.
fn rewrite_range(
    tokens: &Tokens,
    range: Range<usize>,
    depth: usize,
    out: &mut Vec<TokenWithSpan>,
) -> Result<(), ParserError> {
    if depth > MAX_DEPTH {
        out.extend_from_slice(&tokens[range]);
        return Ok(());
    }
    let end = range.end;
    let mut i = range.start;
    while i < end {
        if let Some((call, wrapper_close)) = table_wrapper(tokens, i, end) {
            // `TABLE ( F(...) )`: keep only the call.
            if !rewrite_call(tokens, call.clone(), depth, out)? {
                rewrite_range(tokens, call, depth + 1, out)?;
            }
            i = wrapper_close + 1;
            continue;
        }
        if let Some(call_end) = call_at(tokens, i, end)
            && rewrite_call(tokens, i..call_end, depth, out)?
        {
            i = call_end;
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok(())
}

/// If `tokens[i..]` starts `TABLE ( F(...) )`, the range of `F(...)` and the index of the
/// wrapper's closing parenthesis.
fn table_wrapper(tokens: &Tokens, i: usize, end: usize) -> Option<(Range<usize>, usize)> {
    if !is_word(tokens, i, end, "TABLE") {
        return None;
    }
    let open = significant(tokens, i + 1, end);
    if token(tokens, open, end) != Some(&Token::LParen) {
        return None;
    }
    let name = significant(tokens, open + 1, end);
    let call_end = call_at(tokens, name, end)?;
    let close = significant(tokens, call_end, end);
    (token(tokens, close, end) == Some(&Token::RParen)).then_some((name..call_end, close))
}

/// If `tokens[i]` is a window function name followed by `(`, the index just past the call.
fn call_at(tokens: &Tokens, i: usize, end: usize) -> Option<usize> {
    window_function(token(tokens, i, end)?)?;
    let open = significant(tokens, i + 1, end);
    if token(tokens, open, end) != Some(&Token::LParen) {
        return None;
    }
    Some(closing(tokens, open, end)? + 1)
}

fn window_function(token: &Token) -> Option<&'static WindowFunction> {
    match token {
        Token::Word(w) if w.quote_style.is_none() => WINDOW_FUNCTIONS
            .iter()
            .find(|f| w.value.eq_ignore_ascii_case(f.name)),
        _ => None,
    }
}

/// One argument of the rewritten call.
struct Piece {
    range: Range<usize>,
    /// Whether window calls inside the piece are rewritten too (a time column or a key is a
    /// plain name and is copied).
    nested: bool,
    /// Where the comma before the piece points, for error positions.
    comma: Span,
}

/// Writes the short form of the window call `call` (its name through its closing parenthesis)
/// to `out`; `false` (and nothing written) if the call has none of the standard shapes.
fn rewrite_call(
    tokens: &Tokens,
    call: Range<usize>,
    depth: usize,
    out: &mut Vec<TokenWithSpan>,
) -> Result<bool, ParserError> {
    let Some(function) = window_function(&tokens[call.start].token) else {
        return Ok(false);
    };
    let open = significant(tokens, call.start + 1, call.end);
    let close = call.end - 1;
    let first = significant(tokens, open + 1, close);
    let named = matches!(token(tokens, first, close), Some(Token::Word(_)))
        && token(tokens, significant(tokens, first + 1, close), close) == Some(&Token::RArrow);
    let pieces = if named {
        Some(named_arguments(tokens, function, open, close)?)
    } else {
        positional_arguments(tokens, function, open, close)
    };
    let Some(pieces) = pieces else {
        return Ok(false);
    };
    out.push(tokens[call.start].clone());
    out.push(tokens[open].clone());
    for (n, piece) in pieces.into_iter().enumerate() {
        if n > 0 {
            out.push(TokenWithSpan::new(Token::Comma, piece.comma));
        }
        if piece.nested {
            rewrite_range(tokens, piece.range, depth + 1, out)?;
        } else {
            out.extend_from_slice(&tokens[piece.range]);
        }
    }
    out.push(tokens[close].clone());
    Ok(true)
}

/// The relation argument: `TABLE rel [PARTITION BY keys]`, or a plain expression.
struct DataArgument {
    relation: Range<usize>,
    keys: Vec<Range<usize>>,
    /// Written with the `TABLE` keyword.
    table: bool,
    /// `PARTITION BY k1, k2` without parentheses: the keys run up to the next argument, so that
    /// argument must be recognisable (a DESCRIPTOR or a named argument).
    bare_keys: bool,
}

/// `F(data, timecol, args...)` between `open` and `close`: the pieces of the short form, or
/// `None` if this is not a standard spelling.
fn positional_arguments(
    tokens: &Tokens,
    function: &WindowFunction,
    open: usize,
    close: usize,
) -> Option<Vec<Piece>> {
    let first = significant(tokens, open + 1, close);
    let (data, mut i) = if is_word(tokens, first, close, "TABLE") {
        data_argument(tokens, first, close)?
    } else {
        let end = argument_end(tokens, first, close);
        let data = DataArgument {
            relation: first..end,
            keys: Vec::new(),
            table: false,
            bare_keys: false,
        };
        (data, end)
    };
    let mut rest = Vec::new();
    while i < close {
        // `tokens[i]` is a top-level comma.
        let end = argument_end(tokens, i + 1, close);
        rest.push((i + 1..end, tokens[i].span));
        i = end;
    }
    let (time, time_comma) = rest.first().cloned()?;
    let descriptor = descriptor_column(tokens, time.clone());
    if (!data.table && descriptor.is_none())
        || (data.bare_keys && descriptor.is_none())
        || (!data.keys.is_empty() && function.name != "SESSION")
    {
        return None;
    }
    let mut pieces = vec![Piece {
        range: data.relation,
        nested: true,
        comma: Span::empty(),
    }];
    pieces.push(match descriptor {
        Some(column) => Piece {
            range: column,
            nested: false,
            comma: time_comma,
        },
        None => Piece {
            range: time,
            nested: true,
            comma: time_comma,
        },
    });
    pieces.extend(rest.into_iter().skip(1).map(|(range, comma)| Piece {
        range,
        nested: true,
        comma,
    }));
    pieces.extend(key_pieces(tokens, data.keys));
    Some(pieces)
}

/// `F(DATA => ..., TIMECOL => ..., SIZE => ...)` between `open` and `close`, in any order.
fn named_arguments(
    tokens: &Tokens,
    function: &WindowFunction,
    open: usize,
    close: usize,
) -> Result<Vec<Piece>, ParserError> {
    let mut slots: Vec<Option<(Range<usize>, Span)>> = vec![None; function.params.len()];
    let mut data = None;
    let mut i = significant(tokens, open + 1, close);
    loop {
        let name = match token(tokens, i, close) {
            Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
            _ => {
                return Err(error_at(
                    tokens,
                    i.min(close),
                    &format!(
                        "{} takes either named or positional arguments, not both",
                        function.name
                    ),
                ));
            }
        };
        let arrow = significant(tokens, i + 1, close);
        if token(tokens, arrow, close) != Some(&Token::RArrow) {
            return Err(error_at(
                tokens,
                i,
                &format!(
                    "{} takes either named or positional arguments, not both",
                    function.name
                ),
            ));
        }
        let slot = function
            .params
            .iter()
            .position(|names| names.contains(&name.as_str()))
            .ok_or_else(|| {
                let expected: Vec<&str> = function.params.iter().map(|n| n[0]).collect();
                error_at(
                    tokens,
                    i,
                    &format!(
                        "{} has no argument named {name} (its arguments are {})",
                        function.name,
                        expected.join(", ")
                    ),
                )
            })?;
        if slots[slot].is_some() {
            return Err(error_at(
                tokens,
                i,
                &format!("argument {name} of {} is given twice", function.name),
            ));
        }
        let value = significant(tokens, arrow + 1, close);
        let (range, end) = if slot == 0 && is_word(tokens, value, close, "TABLE") {
            let (argument, end) = data_argument(tokens, value, close).ok_or_else(|| {
                error_at(
                    tokens,
                    value,
                    &format!(
                        "expected DATA => TABLE name [PARTITION BY columns] in {}",
                        function.name
                    ),
                )
            })?;
            let relation = argument.relation.clone();
            data = Some(argument);
            (relation, end)
        } else {
            let end = argument_end(tokens, value, close);
            (value..end, end)
        };
        slots[slot] = Some((range, tokens[i].span));
        if end >= close {
            break;
        }
        i = significant(tokens, end + 1, close);
    }
    if let Some(missing) = slots[..function.required].iter().position(Option::is_none) {
        return Err(error_at(
            tokens,
            close,
            &format!(
                "{} is missing its argument {}",
                function.name, function.params[missing][0]
            ),
        ));
    }
    let keys = data.map(|d| d.keys).unwrap_or_default();
    if !keys.is_empty() && function.name != "SESSION" {
        return Err(error_at(
            tokens,
            open,
            &format!("{} does not take PARTITION BY", function.name),
        ));
    }
    let mut pieces = Vec::new();
    for (slot, given) in slots.into_iter().enumerate() {
        let Some((range, comma)) = given else {
            continue;
        };
        let range = match slot {
            1 => descriptor_column(tokens, range.clone()).unwrap_or(range),
            _ => range,
        };
        pieces.push(Piece {
            range,
            nested: slot != 1,
            comma,
        });
    }
    pieces.extend(key_pieces(tokens, keys));
    Ok(pieces)
}

fn key_pieces(tokens: &Tokens, keys: Vec<Range<usize>>) -> impl Iterator<Item = Piece> {
    keys.into_iter().map(|range| Piece {
        comma: tokens[range.start].span,
        range,
        nested: false,
    })
}

/// `TABLE rel [PARTITION BY k1, k2 | PARTITION BY (k1, k2)]` starting at `table` (the `TABLE`
/// keyword): the argument and the index just past it (a top-level comma or `end`).
fn data_argument(tokens: &Tokens, table: usize, end: usize) -> Option<(DataArgument, usize)> {
    let start = significant(tokens, table + 1, end);
    let relation = if token(tokens, start, end) == Some(&Token::LParen) {
        start..closing(tokens, start, end)? + 1
    } else {
        start..name_end(tokens, start, end)?
    };
    let mut i = significant(tokens, relation.end, end);
    let mut keys = Vec::new();
    let mut bare_keys = false;
    if is_word(tokens, i, end, "PARTITION") {
        let by = significant(tokens, i + 1, end);
        if !is_word(tokens, by, end, "BY") {
            return None;
        }
        let first = significant(tokens, by + 1, end);
        if token(tokens, first, end) == Some(&Token::LParen) {
            let close = closing(tokens, first, end)?;
            let mut k = significant(tokens, first + 1, close);
            loop {
                let key_end = name_end(tokens, k, close)?;
                keys.push(k..key_end);
                let next = significant(tokens, key_end, close);
                if next == close {
                    break;
                }
                if token(tokens, next, close) != Some(&Token::Comma) {
                    return None;
                }
                k = significant(tokens, next + 1, close);
            }
            i = significant(tokens, close + 1, end);
        } else {
            bare_keys = true;
            let mut k = first;
            loop {
                let key_end = name_end(tokens, k, end)?;
                keys.push(k..key_end);
                i = significant(tokens, key_end, end);
                match bare_key_after(tokens, i, end) {
                    Some(next) => k = next,
                    None => break,
                }
            }
        }
    }
    (i >= end || token(tokens, i, end) == Some(&Token::Comma)).then_some((
        DataArgument {
            relation,
            keys,
            table: true,
            bare_keys,
        },
        i,
    ))
}

/// After an unparenthesized partition key, at `comma`: where the next key starts, if the next
/// argument is another plain column name (and not `DESCRIPTOR(...)` or `name => ...`).
fn bare_key_after(tokens: &Tokens, comma: usize, end: usize) -> Option<usize> {
    if token(tokens, comma, end) != Some(&Token::Comma) {
        return None;
    }
    let next = significant(tokens, comma + 1, end);
    if is_word(tokens, next, end, "DESCRIPTOR")
        || token(tokens, significant(tokens, next + 1, end), end) == Some(&Token::RArrow)
    {
        return None;
    }
    let after = significant(tokens, name_end(tokens, next, end)?, end);
    (after >= end || token(tokens, after, end) == Some(&Token::Comma)).then_some(next)
}

/// The column inside an argument that is exactly `DESCRIPTOR ( name )`.
fn descriptor_column(tokens: &Tokens, range: Range<usize>) -> Option<Range<usize>> {
    let end = range.end;
    let word = significant(tokens, range.start, end);
    if !is_word(tokens, word, end, "DESCRIPTOR") {
        return None;
    }
    let open = significant(tokens, word + 1, end);
    if token(tokens, open, end) != Some(&Token::LParen) {
        return None;
    }
    let close = closing(tokens, open, end)?;
    let start = significant(tokens, open + 1, close);
    let name = start..name_end(tokens, start, close)?;
    (significant(tokens, name.end, close) == close && significant(tokens, close + 1, end) == end)
        .then_some(name)
}

/// The index just past the (possibly qualified) name `a.b.c` starting at `i`.
fn name_end(tokens: &Tokens, i: usize, end: usize) -> Option<usize> {
    if !matches!(token(tokens, i, end), Some(Token::Word(_))) {
        return None;
    }
    let mut last = i;
    loop {
        let dot = significant(tokens, last + 1, end);
        if token(tokens, dot, end) != Some(&Token::Period) {
            return Some(last + 1);
        }
        let next = significant(tokens, dot + 1, end);
        if !matches!(token(tokens, next, end), Some(Token::Word(_))) {
            return Some(last + 1);
        }
        last = next;
    }
}

/// The index of the top-level comma that ends the argument starting at `i`, or `end`.
fn argument_end(tokens: &Tokens, i: usize, end: usize) -> usize {
    let mut j = i;
    while j < end {
        match tokens[j].token {
            Token::LParen | Token::LBracket | Token::LBrace => match tokens.partner[j] {
                Some(close) if close < end => j = close,
                _ => return end,
            },
            Token::RParen | Token::RBracket | Token::RBrace | Token::Comma => return j,
            _ => {}
        }
        j += 1;
    }
    end
}

/// The index of the `)` that closes the `(` at `open`, if it comes before `end`.
pub(crate) fn closing(tokens: &Tokens, open: usize, end: usize) -> Option<usize> {
    let close = tokens.partner.get(open).copied().flatten()?;
    (close < end && tokens[open].token == Token::LParen && tokens[close].token == Token::RParen)
        .then_some(close)
}

/// The first index at or after `i` (and before `end`) that is not whitespace or a comment, or
/// `end`.
pub(crate) fn significant(tokens: &Tokens, i: usize, end: usize) -> usize {
    (i..end)
        .find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
        .unwrap_or(end)
}

pub(crate) fn token(tokens: &Tokens, i: usize, end: usize) -> Option<&Token> {
    (i < end).then(|| &tokens[i].token)
}

pub(crate) fn is_word(tokens: &Tokens, i: usize, end: usize, word: &str) -> bool {
    matches!(token(tokens, i, end), Some(Token::Word(w))
        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// A syntax error at `tokens[i]`, in the form the parser's errors take (so that the position is
/// reported the same way).
pub(crate) fn error_at(tokens: &Tokens, i: usize, message: &str) -> ParserError {
    let location = tokens
        .get(i)
        .map(|t| t.span.start.to_string())
        .unwrap_or_default();
    ParserError::ParserError(format!("{message}{location}"))
}

#[cfg(test)]
mod tests {
    use super::rewrite_window_tvfs;
    use crate::error::EngineError;
    use crate::sql::parser::parse_sql;

    /// The statement after this module's rewrite alone (parse_sql also moves subquery inputs
    /// into CTEs, see window_inputs).
    fn rewritten(sql: &str) -> String {
        use datafusion::sql::sqlparser::dialect::GenericDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        use datafusion::sql::sqlparser::tokenizer::Tokenizer;
        let dialect = GenericDialect {};
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let tokens = rewrite_window_tvfs(tokens).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        Parser::new(&dialect)
            .with_tokens_with_locations(tokens)
            .parse_statement()
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .to_string()
    }

    #[test]
    fn tumble_standard_spelling_becomes_short_form() {
        assert_eq!(
            rewritten(
                "SELECT auction, window_start, count(*) \
                 FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS w \
                 GROUP BY auction, window_start, window_end"
            ),
            "SELECT auction, window_start, count(*) \
             FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) AS w \
             GROUP BY auction, window_start, window_end"
        );
    }

    #[test]
    fn lowercase_keywords_comments_and_offset() {
        assert_eq!(
            rewritten(
                "select * from table ( tumble ( table s.bids /* the input */ , \
                 descriptor ( date_time ) , interval '10' second, interval '2' second ) ) w"
            ),
            "SELECT * FROM tumble(s.bids, date_time, INTERVAL '10' SECOND, INTERVAL '2' SECOND) w"
        );
    }

    #[test]
    fn hop_and_cumulate() {
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, \
                 INTERVAL '10' SECOND))"
            ),
            "SELECT * FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, \
                 INTERVAL '10' SECOND, INTERVAL '1' SECOND)) AS c"
            ),
            "SELECT * FROM CUMULATE(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND, \
             INTERVAL '1' SECOND) AS c"
        );
    }

    #[test]
    fn session_partition_keys_move_to_the_end() {
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND))"
            ),
            "SELECT * FROM SESSION(bids, ts, INTERVAL '5' SECOND)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(SESSION(TABLE bids PARTITION BY auction, \
                 DESCRIPTOR(ts), INTERVAL '5' SECOND)) AS s"
            ),
            "SELECT * FROM SESSION(bids, ts, INTERVAL '5' SECOND, auction) AS s"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(SESSION(TABLE bids PARTITION BY auction, bids.bidder, \
                 DESCRIPTOR(ts), INTERVAL '5' SECOND))"
            ),
            "SELECT * FROM SESSION(bids, ts, INTERVAL '5' SECOND, auction, bids.bidder)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(session(TABLE bids partition by (auction, bidder), \
                 DESCRIPTOR(ts), INTERVAL '5' SECOND))"
            ),
            "SELECT * FROM session(bids, ts, INTERVAL '5' SECOND, auction, bidder)"
        );
    }

    #[test]
    fn inside_a_subquery_and_a_cte() {
        assert_eq!(
            rewritten(
                "SELECT * FROM (SELECT window_start, count(*) AS n \
                 FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
                 GROUP BY window_start, window_end) AS t"
            ),
            "SELECT * FROM (SELECT window_start, count(*) AS n \
             FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) \
             GROUP BY window_start, window_end) AS t"
        );
        assert_eq!(
            rewritten(
                "WITH w AS (SELECT * FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), \
                 INTERVAL '5' SECOND, INTERVAL '10' SECOND))) SELECT * FROM w"
            ),
            "WITH w AS (SELECT * FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)) \
             SELECT * FROM w"
        );
    }

    #[test]
    fn subquery_inputs_are_rewritten_too() {
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(TUMBLE(TABLE (SELECT * FROM TABLE(TUMBLE(TABLE bids, \
                 DESCRIPTOR(ts), INTERVAL '1' SECOND))), DESCRIPTOR(window_time), \
                 INTERVAL '10' SECOND))"
            ),
            "SELECT * FROM TUMBLE((SELECT * FROM TUMBLE(bids, ts, INTERVAL '1' SECOND)), \
             window_time, INTERVAL '10' SECOND)"
        );
    }

    #[test]
    fn descriptor_in_the_short_form_is_dropped() {
        assert_eq!(
            rewritten("SELECT * FROM TUMBLE(bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)"),
            "SELECT * FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)"
        );
    }

    #[test]
    fn short_form_is_untouched() {
        for sql in [
            "SELECT * FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) AS w",
            "SELECT * FROM SESSION(bids, ts, INTERVAL '10' SECOND, auction)",
            "SELECT * FROM HOP((SELECT * FROM bids), ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }

    #[test]
    fn named_arguments_in_any_order() {
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(TUMBLE(DATA => TABLE Bid, TIMECOL => DESCRIPTOR(bidtime), \
                 SIZE => INTERVAL '10' MINUTE))"
            ),
            "SELECT * FROM TUMBLE(Bid, bidtime, INTERVAL '10' MINUTE)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(HOP(SIZE => INTERVAL '10' MINUTE, data => TABLE Bid, \
                 OFFSET => INTERVAL '1' MINUTE, TIMECOL => DESCRIPTOR(bidtime), \
                 SLIDE => INTERVAL '5' MINUTE))"
            ),
            "SELECT * FROM HOP(Bid, bidtime, INTERVAL '5' MINUTE, INTERVAL '10' MINUTE, \
             INTERVAL '1' MINUTE)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(SESSION(DATA => TABLE Bid PARTITION BY item, \
                 TIMECOL => DESCRIPTOR(bidtime), GAP => INTERVAL '5' MINUTE))"
            ),
            "SELECT * FROM SESSION(Bid, bidtime, INTERVAL '5' MINUTE, item)"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM TABLE(CUMULATE(DATA => TABLE Bid, TIMECOL => DESCRIPTOR(bidtime), \
                 STEP => INTERVAL '2' MINUTE, SIZE => INTERVAL '10' MINUTE))"
            ),
            "SELECT * FROM CUMULATE(Bid, bidtime, INTERVAL '2' MINUTE, INTERVAL '10' MINUTE)"
        );
    }

    #[test]
    fn malformed_named_arguments_are_syntax_errors_with_a_position() {
        let sql = "SELECT * FROM TABLE(TUMBLE(DATA => TABLE Bid, TIMECOL => DESCRIPTOR(ts), \
                   WIDTH => INTERVAL '10' MINUTE))";
        match parse_sql(sql).unwrap_err() {
            EngineError::Syntax { message, position } => {
                assert!(message.contains("no argument named WIDTH"), "{message}");
                assert_eq!(position, sql.find("WIDTH").map(|p| p + 1));
            }
            other => panic!("{other:?}"),
        }
        let sql = "SELECT * FROM TABLE(TUMBLE(DATA => TABLE Bid, TIMECOL => DESCRIPTOR(ts)))";
        match parse_sql(sql).unwrap_err() {
            EngineError::Syntax { message, .. } => {
                assert!(message.contains("missing its argument SIZE"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_inside_the_standard_spelling_points_into_the_original_text() {
        let sql =
            "SELECT *\nFROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND +)) AS w";
        match parse_sql(sql).unwrap_err() {
            EngineError::Syntax { message, position } => {
                assert!(message.contains("found: )"), "{message}");
                assert_eq!(position, sql.find("+)").map(|p| p + 2));
            }
            other => panic!("{other:?}"),
        }
        // The commas between rewritten arguments point at the user's commas too.
        let sql = "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), , INTERVAL '1' SECOND))";
        match parse_sql(sql).unwrap_err() {
            EngineError::Syntax { message, position } => {
                assert!(message.contains("found: ,"), "{message}");
                assert_eq!(position, sql.find(", INTERVAL").map(|p| p + 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let calls = "tumble(".repeat(20_000);
        let sql = format!("SELECT * FROM {calls}x{}", ")".repeat(20_000));
        assert!(parse_sql(&sql).is_err());
        let mut sql = "bids".to_string();
        for _ in 0..200 {
            sql = format!(
                "TABLE (SELECT * FROM TABLE(TUMBLE({sql}, DESCRIPTOR(ts), INTERVAL '1' SECOND)))"
            );
        }
        let sql = format!("SELECT * FROM {}", &sql["TABLE ".len()..]);
        assert!(
            matches!(parse_sql(&sql), Err(EngineError::Syntax { ref message, .. }) if message.contains("nested too deeply")),
            "{:?}",
            parse_sql(&sql).err()
        );
    }

    #[test]
    fn other_shapes_are_left_to_the_parser() {
        // PARTITION BY is SESSION's only; this stays a syntax error at the inner TABLE.
        let sql = "SELECT * FROM TABLE(TUMBLE(TABLE bids PARTITION BY a, DESCRIPTOR(ts), \
                   INTERVAL '10' SECOND))";
        assert!(
            matches!(parse_sql(sql), Err(EngineError::Syntax { .. })),
            "{:?}",
            parse_sql(sql)
        );
        // A call of the same name that is not a window table function is untouched.
        assert_eq!(
            rewritten("SELECT hop(a, b), tumble FROM hop"),
            "SELECT hop(a, b), tumble FROM hop"
        );
    }
}
