//! The thin extension layer over sqlparser: Eddy's own statements, everything else delegated.
//!
//! Like DataFusion's `DFParser`, this wraps [`Parser`] and looks at the first tokens of each
//! statement. `CREATE SOURCE`, `CREATE TABLE` (whose column list may hold a `WATERMARK FOR`
//! clause), `DROP SOURCE` and `SHOW SOURCES | TABLES | ...` are parsed here; every other
//! statement is handed to sqlparser unchanged. Each parsed statement keeps its own SQL text
//! and its byte offset in the whole query string, so errors can point at a position.
//!
//! Window table functions get two rewrites on the way: the SQL-standard spelling
//! `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))` becomes the short form `TUMBLE(t, ts, ...)` in
//! the token stream before parsing ([`window_syntax`]), and legacy group windows
//! (`GROUP BY TUMBLE(ts, size)`) become the short form in the parsed statement
//! ([`legacy_windows`]).

use datafusion::sql::sqlparser::ast::{
    ColumnDef, Expr, Ident, ObjectName, SqlOption, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError, ParserOptions};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::catalog::RelationKind;
use crate::error::{EngineError, EngineResult, byte_offset, char_position};
use crate::sql::{
    emit_syntax, legacy_windows, match_syntax, temporal_syntax, window_inputs, window_syntax,
};

/// How deep expressions may nest before the parser refuses them (instead of overflowing the
/// stack).
const RECURSION_LIMIT: usize = 64;

/// One statement of a query string.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: EddyStatement,
    /// The statement's own text (without the trailing semicolon).
    pub sql: String,
    /// The whole query string the statement came from; error positions count from its start.
    pub source: std::sync::Arc<str>,
}

/// A statement as Eddy understands it.
#[derive(Debug, Clone)]
pub enum EddyStatement {
    /// `CREATE SOURCE`, or `CREATE TABLE` with a connector or a watermark.
    CreateSource(Box<CreateSource>),
    /// `DROP SOURCE|TABLE [IF EXISTS] name [, ...]`.
    DropRelation(DropRelation),
    /// `SHOW SOURCES | TABLES | VIEWS | SINKS | JOBS`.
    ShowObjects(ShowObjectKind),
    /// `EXPLAIN [ANALYZE] MATERIALIZED VIEW name`.
    ExplainView(ExplainView),
    /// `CREATE SINK name {FROM view | AS query} WITH (...)`.
    CreateSink(Box<CreateSink>),
    /// `COPY {(query) | table} TO 'file' [WITH] (...)`.
    CopyToFile(Box<CopyToFile>),
    /// Anything else, as sqlparser parsed it.
    Sql(Box<Statement>),
}

/// Which catalog objects a `SHOW` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowObjectKind {
    Sources,
    Tables,
    Views,
    Sinks,
    Jobs,
    Checkpoints,
}

/// `CREATE SOURCE` / `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct CreateSource {
    pub name: ObjectName,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    /// Columns declared `METADATA [FROM 'key'] [VIRTUAL]`.
    pub metadata: Vec<MetadataDef>,
    /// `PRIMARY KEY (columns) NOT ENFORCED` (Flink's form; `NOT ENFORCED` may be left out):
    /// the columns that identify a row of an upsert source. Empty without one.
    pub primary_key: Vec<Ident>,
    /// `WITH (...)` options, keys lower-cased and unquoted, values unquoted.
    pub options: Vec<(String, String)>,
    pub kind: RelationKind,
}

/// `column TYPE METADATA [FROM 'key'] [VIRTUAL]` (Flink's metadata columns): the column's
/// values are the key's metadata of each message. Without `FROM` the key is the column's
/// name. `VIRTUAL` (read-only, which only matters when writing) is accepted.
#[derive(Debug, Clone)]
pub struct MetadataDef {
    pub column: Ident,
    pub key: String,
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: Ident,
    pub expr: Expr,
}

/// `DROP SOURCE|TABLE`.
#[derive(Debug, Clone)]
pub struct DropRelation {
    pub names: Vec<ObjectName>,
    pub if_exists: bool,
    /// `TABLE`, `SOURCE`, `MATERIALIZED VIEW`, `VIEW` or `SINK`, as written.
    pub kind: RelationKind,
    /// `CASCADE`: also drop the views that read the relations.
    pub cascade: bool,
}

/// `CREATE SINK [IF NOT EXISTS] name {FROM view | AS query} WITH (...)`.
#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: ObjectName,
    pub if_not_exists: bool,
    /// `Statement::Query` of `AS query`, or `SELECT * FROM view` for `FROM view`.
    pub query: Box<Statement>,
    /// `WITH (...)` options, keys lower-cased and unquoted, values unquoted.
    pub options: Vec<(String, String)>,
}

/// `COPY (query) TO 'path' [WITH] (FORMAT parquet, ...)`, or `COPY table [(columns)] TO ...`.
#[derive(Debug, Clone)]
pub struct CopyToFile {
    /// The rows to write, as a `Statement::Query`.
    pub query: Box<Statement>,
    pub path: String,
    /// Options, keys lower-cased; `None` for a bare flag (`HEADER`).
    pub options: Vec<(String, Option<String>)>,
}

/// `EXPLAIN [ANALYZE] MATERIALIZED VIEW name`: the plan of a view's running job.
#[derive(Debug, Clone)]
pub struct ExplainView {
    pub name: ObjectName,
    pub analyze: bool,
}

/// Parses a query string into statements.
pub fn parse_sql(sql: &str) -> EngineResult<Vec<ParsedStatement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(ParserOptions::default().unescape)
        .tokenize_with_location()
        .map_err(|e| parse_error(sql, e.into()))?;
    let tokens = window_syntax::rewrite_window_tvfs(tokens).map_err(|e| parse_error(sql, e))?;
    let tokens = match_syntax::rewrite_match_recognize(tokens).map_err(|e| parse_error(sql, e))?;
    let tokens =
        temporal_syntax::rewrite_for_system_time(tokens).map_err(|e| parse_error(sql, e))?;
    let tokens = emit_syntax::rewrite_emit(tokens).map_err(|e| parse_error(sql, e))?;
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens);
    let source: std::sync::Arc<str> = sql.into();
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let start = parser.peek_token();
        if start.token == Token::EOF {
            break;
        }
        let mut statement = parse_statement(&mut parser).map_err(|e| parse_error(sql, e))?;
        let query = match &mut statement {
            EddyStatement::Sql(s) => Some(s),
            EddyStatement::CreateSink(c) => Some(&mut c.query),
            EddyStatement::CopyToFile(c) => Some(&mut c.query),
            _ => None,
        };
        if let Some(s) = query {
            legacy_windows::rewrite_legacy_windows(s, sql)?;
            window_inputs::hoist_window_inputs(s);
            super::time_units::quote_time_units(s);
        }
        // The statement's text runs to the token before the next `;` or the end.
        let next = parser.peek_token();
        let end = if next.token == Token::EOF {
            sql.len()
        } else {
            byte_offset(sql, next.span.start)
        };
        if next.token != Token::SemiColon && next.token != Token::EOF {
            return Err(parse_error(
                sql,
                ParserError::ParserError(format!(
                    "Expected: end of statement, found: {} at {}",
                    next.token, next.span.start
                )),
            ));
        }
        let begin = byte_offset(sql, start.span.start);
        let text = sql.get(begin..end).unwrap_or(sql).trim().to_string();
        // psql's and drivers' catalog queries, in a form DataFusion can plan.
        if let EddyStatement::Sql(s) = &mut statement
            && crate::pg_catalog::rewrite::is_catalog_query(s)
        {
            let original = std::mem::replace(
                s.as_mut(),
                Statement::Commit {
                    chain: false,
                    end: false,
                    modifier: None,
                },
            );
            **s = crate::pg_catalog::rewrite::rewrite_catalog_query(original, &text);
        }
        statements.push(ParsedStatement {
            statement,
            sql: text,
            source: std::sync::Arc::clone(&source),
        });
    }
    Ok(statements)
}

fn parse_statement(parser: &mut Parser<'_>) -> Result<EddyStatement, ParserError> {
    let [first, second] = parser.peek_tokens::<2>();
    let word = |t: &Token| match t {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    match (word(&first).as_str(), word(&second).as_str()) {
        ("CREATE", "SOURCE") => {
            parser.next_token();
            parser.next_token();
            parse_create_source(parser, RelationKind::Source)
                .map(|c| EddyStatement::CreateSource(Box::new(c)))
        }
        ("CREATE", "TABLE") => {
            parser.next_token();
            parser.next_token();
            parse_create_source(parser, RelationKind::Table)
                .map(|c| EddyStatement::CreateSource(Box::new(c)))
        }
        ("DROP", "SOURCE" | "TABLE" | "MATERIALIZED" | "SINK" | "VIEW") => {
            parser.next_token();
            parser.next_token();
            let kind = match word(&second).as_str() {
                "SOURCE" => RelationKind::Source,
                "TABLE" => RelationKind::Table,
                "SINK" => RelationKind::Sink,
                "VIEW" => RelationKind::LogicalView,
                _ => {
                    parser.expect_keyword(Keyword::VIEW)?;
                    RelationKind::View
                }
            };
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = parser.parse_comma_separated(|p| p.parse_object_name(false))?;
            let cascade = parser.parse_keyword(Keyword::CASCADE);
            if !cascade {
                let _ = parser.parse_keyword(Keyword::RESTRICT);
            }
            Ok(EddyStatement::DropRelation(DropRelation {
                names,
                if_exists,
                kind,
                cascade,
            }))
        }
        ("EXPLAIN", "MATERIALIZED" | "ANALYZE")
            if {
                let [_, second, third, fourth] = parser.peek_tokens::<4>();
                is_word(&second, "MATERIALIZED")
                    || (is_word(&third, "MATERIALIZED") && is_word(&fourth, "VIEW"))
            } =>
        {
            parser.next_token();
            let analyze = parser.parse_keyword(Keyword::ANALYZE);
            parser.expect_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])?;
            let name = parser.parse_object_name(false)?;
            Ok(EddyStatement::ExplainView(ExplainView { name, analyze }))
        }
        ("CREATE", "SINK") => {
            parser.next_token();
            parser.next_token();
            parse_create_sink(parser).map(|c| EddyStatement::CreateSink(Box::new(c)))
        }
        // Eddy's option keys are dotted (`checkpoint.interval`), which sqlparser's option list
        // refuses: a view with options is parsed here, any other by sqlparser.
        ("CREATE", "MATERIALIZED") => match parser.maybe_parse(parse_view_with_options)? {
            Some(view) => Ok(EddyStatement::Sql(Box::new(Statement::CreateView(view)))),
            None => parser
                .parse_statement()
                .map(|s| EddyStatement::Sql(Box::new(s))),
        },
        ("COPY", _) => match parser.maybe_parse(parse_copy_to_file_head)? {
            Some((query, path)) => {
                let options = parse_copy_file_options(parser)?;
                Ok(EddyStatement::CopyToFile(Box::new(CopyToFile {
                    query: Box::new(query),
                    path,
                    options,
                })))
            }
            None => parser
                .parse_statement()
                .map(|s| EddyStatement::Sql(Box::new(s))),
        },
        ("SHOW", kind @ ("SOURCES" | "TABLES" | "VIEWS" | "SINKS" | "JOBS" | "CHECKPOINTS")) => {
            let kind = match kind {
                "SOURCES" => ShowObjectKind::Sources,
                "TABLES" => ShowObjectKind::Tables,
                "VIEWS" => ShowObjectKind::Views,
                "SINKS" => ShowObjectKind::Sinks,
                "CHECKPOINTS" => ShowObjectKind::Checkpoints,
                _ => ShowObjectKind::Jobs,
            };
            parser.next_token();
            parser.next_token();
            Ok(EddyStatement::ShowObjects(kind))
        }
        _ => parser
            .parse_statement()
            .map(|s| EddyStatement::Sql(Box::new(s))),
    }
}

/// `COPY {(query) | table [(columns)]} TO 'path'`; fails (and the caller rewinds) for any
/// other target, which sqlparser then parses (`TO STDOUT`, `FROM STDIN`).
fn parse_copy_to_file_head(parser: &mut Parser<'_>) -> Result<(Statement, String), ParserError> {
    parser.expect_keyword_is(Keyword::COPY)?;
    let query = if parser.consume_token(&Token::LParen) {
        let query = parser.parse_query()?;
        parser.expect_token(&Token::RParen)?;
        Statement::Query(query)
    } else {
        let name = parser.parse_object_name(false)?;
        let columns = if parser.consume_token(&Token::LParen) {
            let columns = parser.parse_comma_separated(|p| p.parse_identifier())?;
            parser.expect_token(&Token::RParen)?;
            columns
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "*".to_string()
        };
        let text = format!("SELECT {columns} FROM {name}");
        Parser::new(&GenericDialect {})
            .try_with_sql(&text)?
            .parse_statement()?
    };
    parser.expect_keyword_is(Keyword::TO)?;
    let token = parser.next_token();
    match token.token {
        Token::SingleQuotedString(path) => Ok((query, path)),
        _ => parser.expected("a file name", token),
    }
}

/// The options after `COPY ... TO 'path'`: `[WITH] (name [value], ...)`, Postgres style, or
/// `name = value`.
fn parse_copy_file_options(
    parser: &mut Parser<'_>,
) -> Result<Vec<(String, Option<String>)>, ParserError> {
    let mut options = Vec::new();
    let with = parser.parse_keyword(Keyword::WITH);
    if !parser.consume_token(&Token::LParen) {
        if with {
            return parser.expected("(", parser.peek_token());
        }
        return Ok(options);
    }
    loop {
        let token = parser.next_token();
        let key = match &token.token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
            _ => return parser.expected("a COPY option", token),
        };
        let _ = parser.consume_token(&Token::Eq);
        let value = match parser.peek_token().token {
            Token::Comma | Token::RParen => None,
            _ => {
                let token = parser.next_token();
                Some(match token.token {
                    Token::Word(w) => w.value,
                    Token::SingleQuotedString(s) => s,
                    Token::Number(n, _) => n,
                    _ => return parser.expected("an option value", token),
                })
            }
        };
        options.push((key, value));
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen)?;
        return Ok(options);
    }
}

/// After `CREATE SINK`: `[IF NOT EXISTS] name {FROM view | AS query} WITH (options)`.
///
/// sqlparser would read a trailing `WITH (...)` after a query's last table as table hints, so
/// the statement's tokens are split before the last top-level `WITH (` and the query is parsed
/// on its own.
fn parse_create_sink(parser: &mut Parser<'_>) -> Result<CreateSink, ParserError> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false)?;
    let query = if parser.parse_keyword(Keyword::FROM) {
        let view = parser.parse_object_name(false)?;
        Parser::new(&GenericDialect {})
            .try_with_sql(&format!("SELECT * FROM {view}"))?
            .parse_statement()?
    } else if parser.parse_keyword(Keyword::AS) {
        // The rest of the statement, up to a `;` outside parentheses.
        let mut tokens = Vec::new();
        let mut depth = 0usize;
        let mut split = None;
        loop {
            let token = parser.next_token();
            match &token.token {
                Token::EOF => {
                    parser.prev_token();
                    break;
                }
                Token::SemiColon if depth == 0 => {
                    parser.prev_token();
                    break;
                }
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                Token::Word(w)
                    if depth == 0
                        && w.keyword == Keyword::WITH
                        && matches!(parser.peek_token().token, Token::LParen)
                        && !tokens.is_empty() =>
                {
                    split = Some(tokens.len());
                }
                _ => {}
            }
            tokens.push(token);
        }
        let options_tokens = match split {
            Some(at) => tokens.split_off(at),
            None => Vec::new(),
        };
        tokens.push(datafusion::sql::sqlparser::tokenizer::TokenWithSpan::wrap(
            Token::EOF,
        ));
        let mut sub = Parser::new(&GenericDialect {})
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(tokens);
        let query = sub.parse_query()?;
        if sub.peek_token().token != Token::EOF {
            return sub.expected("WITH (options) after the sink's query", sub.peek_token());
        }
        let options = if options_tokens.is_empty() {
            return Err(ParserError::ParserError(
                "CREATE SINK needs WITH (connector = '...', ...) after its query".to_string(),
            ));
        } else {
            let mut options_tokens = options_tokens;
            options_tokens.push(datafusion::sql::sqlparser::tokenizer::TokenWithSpan::wrap(
                Token::EOF,
            ));
            let mut sub =
                Parser::new(&GenericDialect {}).with_tokens_with_locations(options_tokens);
            sub.expect_keyword_is(Keyword::WITH)?;
            let options = parse_with_options(&mut sub)?;
            if sub.peek_token().token != Token::EOF {
                return sub.expected("end of statement", sub.peek_token());
            }
            options
        };
        return Ok(CreateSink {
            name,
            if_not_exists,
            query: Box::new(Statement::Query(query)),
            options,
        });
    } else {
        return parser.expected("FROM view or AS query", parser.peek_token());
    };
    if !parser.parse_keyword(Keyword::WITH) {
        return parser.expected("WITH (connector = '...', ...)", parser.peek_token());
    }
    let options = parse_with_options(parser)?;
    Ok(CreateSink {
        name,
        if_not_exists,
        query: Box::new(query),
        options,
    })
}

/// `(key = value, ...)` after `WITH`.
fn parse_with_options(parser: &mut Parser<'_>) -> Result<Vec<(String, String)>, ParserError> {
    let mut options = Vec::new();
    parser.expect_token(&Token::LParen)?;
    if !parser.consume_token(&Token::RParen) {
        loop {
            options.push(parse_option(parser)?);
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    Ok(options)
}

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [(columns)] WITH (options) AS query`, the
/// options in Eddy's form (dotted keys). Fails (and the caller hands the statement to
/// sqlparser) when there is no `WITH` list.
fn parse_view_with_options(
    parser: &mut Parser<'_>,
) -> Result<datafusion::sql::sqlparser::ast::CreateView, ParserError> {
    use datafusion::sql::sqlparser::ast::{CreateTableOptions, CreateView, Ident, ViewColumnDef};
    parser.expect_keywords(&[Keyword::CREATE, Keyword::MATERIALIZED, Keyword::VIEW])?;
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false)?;
    let mut columns = Vec::new();
    if parser.consume_token(&Token::LParen) {
        loop {
            columns.push(ViewColumnDef {
                name: parser.parse_identifier()?,
                data_type: None,
                options: None,
            });
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    parser.expect_keyword(Keyword::WITH)?;
    let options = parse_with_options(parser)?
        .into_iter()
        .map(|(key, value)| SqlOption::KeyValue {
            key: Ident::new(key),
            value: Expr::value(Value::SingleQuotedString(value)),
        })
        .collect();
    parser.expect_keyword(Keyword::AS)?;
    let query = parser.parse_query()?;
    Ok(CreateView {
        or_alter: false,
        or_replace: false,
        materialized: true,
        secure: false,
        name,
        name_before_not_exists: false,
        columns,
        query,
        options: CreateTableOptions::With(options),
        cluster_by: Vec::new(),
        comment: None,
        with_no_schema_binding: false,
        if_not_exists,
        temporary: false,
        copy_grants: false,
        to: None,
        params: None,
    })
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

/// After `CREATE SOURCE` / `CREATE TABLE`.
fn parse_create_source(
    parser: &mut Parser<'_>,
    kind: RelationKind,
) -> Result<CreateSource, ParserError> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut metadata = Vec::new();
    let mut primary_key = Vec::new();
    if parser.consume_token(&Token::LParen) {
        loop {
            if parser.consume_token(&Token::RParen) {
                break;
            }
            if is_word(&parser.peek_token().token, "WATERMARK")
                && is_word(&parser.peek_nth_token(1).token, "FOR")
            {
                parser.next_token();
                parser.expect_keyword_is(Keyword::FOR)?;
                let column = parser.parse_identifier()?;
                parser.expect_keyword_is(Keyword::AS)?;
                let expr = parser.parse_expr()?;
                if watermark.is_some() {
                    return parser.expected("only one WATERMARK clause", parser.peek_token());
                }
                watermark = Some(WatermarkDef { column, expr });
            } else if parser.peek_keyword(Keyword::PRIMARY)
                || parser.peek_keyword(Keyword::CONSTRAINT)
            {
                if parser.parse_keyword(Keyword::CONSTRAINT) {
                    parser.parse_identifier()?;
                }
                if !parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                    return Err(ParserError::ParserError(
                        "feature not supported: table constraints other than PRIMARY KEY on a \
                         stream"
                            .to_string(),
                    ));
                }
                if !primary_key.is_empty() {
                    return parser.expected("only one PRIMARY KEY", parser.peek_token());
                }
                primary_key = parser.parse_parenthesized_column_list(
                    datafusion::sql::sqlparser::parser::IsOptional::Mandatory,
                    false,
                )?;
                // Flink requires NOT ENFORCED; Eddy never enforces a key either way.
                if parser.parse_keyword(Keyword::NOT) {
                    parser.expect_keyword_is(Keyword::ENFORCED)?;
                }
            } else if parser.peek_keyword(Keyword::UNIQUE) {
                return Err(ParserError::ParserError(
                    "feature not supported: table constraints other than PRIMARY KEY on a stream"
                        .to_string(),
                ));
            } else {
                let column = parser.parse_column_def()?;
                if is_word(&parser.peek_token().token, "METADATA") {
                    parser.next_token();
                    let key = if parser.parse_keyword(Keyword::FROM) {
                        parser.parse_literal_string()?
                    } else {
                        column.name.value.clone()
                    };
                    if is_word(&parser.peek_token().token, "VIRTUAL") {
                        parser.next_token();
                    }
                    metadata.push(MetadataDef {
                        column: column.name.clone(),
                        key,
                    });
                }
                columns.push(column);
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    let options = if parser.parse_keyword(Keyword::WITH) {
        parse_with_options(parser)?
    } else {
        Vec::new()
    };
    Ok(CreateSource {
        name,
        if_not_exists,
        columns,
        watermark,
        metadata,
        primary_key,
        options,
        kind,
    })
}

/// One `key = value` option: keys may be quoted (`'connector'`), dotted (`events.max`), hyphenated
/// (`scan.startup.specific-offsets`) or plain;
/// values are strings, numbers or bare words.
fn parse_option(parser: &mut Parser<'_>) -> Result<(String, String), ParserError> {
    let mut key = String::new();
    loop {
        let token = parser.next_token();
        match &token.token {
            Token::Word(w) => {
                key.push_str(&w.value);
                // Flink's hyphenated keys unquoted: `scan.startup.specific-offsets`.
                while parser.consume_token(&Token::Minus) {
                    let part = parser.next_token();
                    match &part.token {
                        Token::Word(w) => {
                            key.push('-');
                            key.push_str(&w.value);
                        }
                        _ => return parser.expected("an option name", part),
                    }
                }
            }
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => key.push_str(s),
            _ => return parser.expected("an option name", token),
        }
        if parser.consume_token(&Token::Period) {
            key.push('.');
            continue;
        }
        break;
    }
    parser.expect_token(&Token::Eq)?;
    let token = parser.next_token();
    let value = match &token.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Number(n, _) => n.clone(),
        Token::Word(w) => w.value.clone(),
        Token::Minus => match parser.next_token().token {
            Token::Number(n, _) => format!("-{n}"),
            _ => return parser.expected("an option value", token),
        },
        _ => return parser.expected("an option value", token),
    };
    Ok((key.to_ascii_lowercase(), value))
}

/// Converts `WITH` options of a statement that sqlparser parsed (`CREATE TABLE ... WITH`).
pub fn sql_options_to_pairs(options: &[SqlOption]) -> EngineResult<Vec<(String, String)>> {
    options
        .iter()
        .map(|o| match o {
            SqlOption::KeyValue { key, value } => {
                let value = match value {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                        Value::Number(n, _) => n.clone(),
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                };
                Ok((key.value.to_ascii_lowercase(), value))
            }
            other => Err(EngineError::Unsupported(format!("option {other}"))),
        })
        .collect()
}

/// Turns a sqlparser error into a syntax error with a 1-based character position.
fn parse_error(sql: &str, err: ParserError) -> EngineError {
    let message = match err {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return EngineError::Syntax {
                message: "statement is nested too deeply".to_string(),
                position: None,
            };
        }
    };
    if let Some(rest) = message.strip_prefix("feature not supported: ") {
        return EngineError::Unsupported(rest.to_string());
    }
    // sqlparser appends " at Line: L, Column: C" to most messages.
    let (text, position) = match message.rfind(" at Line: ") {
        Some(i) => {
            let location = parse_location(&message[i + " at Line: ".len()..]);
            (
                message[..i].to_string(),
                location.map(|l| char_position(sql, l)),
            )
        }
        None => (message.clone(), None),
    };
    // Postgres points just past the input for "syntax error at end of input".
    let at_end = text.ends_with("found: EOF");
    let position = if at_end || position.is_none() {
        Some(sql.trim_end().chars().count() + 1)
    } else {
        position
    };
    EngineError::Syntax {
        message: text,
        position,
    }
}

fn parse_location(s: &str) -> Option<Location> {
    let (line, column) = s.split_once(", Column: ")?;
    let line = line.trim().parse().ok()?;
    let column = column
        .trim()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(Location { line, column })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> EddyStatement {
        let mut v = parse_sql(sql).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0).statement
    }

    #[test]
    fn create_source_with_watermark_and_quoted_options() {
        let s = one(
            "CREATE SOURCE bids (auction BIGINT, date_time TIMESTAMP(3), \
             WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH ('connector' = 'file', path = 'a.csv', events.max = 10)",
        );
        let EddyStatement::CreateSource(c) = s else {
            panic!("not a source")
        };
        assert_eq!(c.name.to_string(), "bids");
        assert_eq!(c.columns.len(), 2);
        assert_eq!(c.watermark.unwrap().column.value, "date_time");
        assert_eq!(
            c.options,
            vec![
                ("connector".into(), "file".into()),
                ("path".into(), "a.csv".into()),
                ("events.max".into(), "10".into())
            ]
        );
    }

    #[test]
    fn statements_are_split_with_their_text() {
        let v = parse_sql("SELECT 1; ; select 2 ;").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].sql, "SELECT 1");
        assert_eq!(v[1].sql, "select 2");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_sql("SELECT 1 FROM").unwrap_err();
        match e {
            EngineError::Syntax { position, .. } => assert_eq!(position, Some(14)),
            other => panic!("{other:?}"),
        }
        let e = parse_sql("SELEC 1").unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Syntax {
                    position: Some(1),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn show_and_drop() {
        assert!(matches!(
            one("SHOW SOURCES"),
            EddyStatement::ShowObjects(ShowObjectKind::Sources)
        ));
        let EddyStatement::DropRelation(d) = one("DROP SOURCE IF EXISTS a, b") else {
            panic!()
        };
        assert!(d.if_exists);
        assert_eq!(d.names.len(), 2);
    }

    #[test]
    fn create_sink_from_view_and_as_query() {
        let EddyStatement::CreateSink(c) =
            one("CREATE SINK s FROM v WITH (connector = 'parquet', path = 'out')")
        else {
            panic!()
        };
        assert_eq!(c.name.to_string(), "s");
        assert_eq!(c.query.to_string(), "SELECT * FROM v");
        assert_eq!(c.options.len(), 2);
        let mut both = parse_sql(
            "CREATE SINK IF NOT EXISTS s AS SELECT a FROM t WHERE b IN (SELECT 1) \
             WITH ('connector' = 'parquet', rollover.size = '1MB'); SELECT 1",
        )
        .unwrap();
        assert_eq!(both.len(), 2);
        let EddyStatement::CreateSink(c) = both.remove(0).statement else {
            panic!()
        };
        assert!(c.if_not_exists);
        assert_eq!(c.query.to_string(), "SELECT a FROM t WHERE b IN (SELECT 1)");
        assert_eq!(c.options[1], ("rollover.size".into(), "1MB".into()));
        // A CTE at the start is part of the query, not the options.
        let EddyStatement::CreateSink(c) = one(
            "CREATE SINK s AS WITH x AS (SELECT 1 AS a) SELECT a FROM x WITH (connector = 'parquet')",
        ) else {
            panic!()
        };
        assert!(c.query.to_string().starts_with("WITH x AS"));
        assert!(parse_sql("CREATE SINK s AS SELECT 1").is_err());
        assert!(parse_sql("CREATE SINK s FROM v").is_err());
    }

    #[test]
    fn copy_to_file_and_stdout() {
        let EddyStatement::CopyToFile(c) = one(
            "COPY (SELECT a FROM t) TO 'out/x.parquet' WITH (FORMAT parquet, COMPRESSION zstd, \
             ROW_GROUP_SIZE 1000, HEADER)",
        ) else {
            panic!()
        };
        assert_eq!(c.path, "out/x.parquet");
        assert_eq!(c.query.to_string(), "SELECT a FROM t");
        assert_eq!(
            c.options,
            vec![
                ("format".into(), Some("parquet".into())),
                ("compression".into(), Some("zstd".into())),
                ("row_group_size".into(), Some("1000".into())),
                ("header".into(), None),
            ]
        );
        let EddyStatement::CopyToFile(c) = one("COPY t (a, b) TO 'x.csv' (FORMAT csv)") else {
            panic!()
        };
        assert_eq!(c.query.to_string(), "SELECT a, b FROM t");
        assert!(matches!(
            one("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)"),
            EddyStatement::Sql(_)
        ));
        assert!(matches!(one("COPY t FROM STDIN"), EddyStatement::Sql(_)));
    }

    #[test]
    fn table_constraints_other_than_primary_key_are_unsupported() {
        let e = parse_sql("CREATE TABLE t (a INT, UNIQUE (a))").unwrap_err();
        assert!(matches!(e, EngineError::Unsupported(_)), "{e:?}");
        let e = parse_sql("CREATE TABLE t (a INT, CONSTRAINT c CHECK (a > 0))").unwrap_err();
        assert!(matches!(e, EngineError::Unsupported(_)), "{e:?}");
    }

    #[test]
    fn a_primary_key_is_parsed_with_or_without_not_enforced() {
        for sql in [
            "CREATE SOURCE s (a INT, b INT, PRIMARY KEY (b, a) NOT ENFORCED) WITH (x = 'y')",
            "CREATE SOURCE s (a INT, b INT, CONSTRAINT pk PRIMARY KEY (b, a)) WITH (x = 'y')",
        ] {
            let EddyStatement::CreateSource(c) = one(sql) else {
                panic!("{sql}")
            };
            let names: Vec<_> = c.primary_key.iter().map(|i| i.value.as_str()).collect();
            assert_eq!(names, ["b", "a"], "{sql}");
        }
        assert!(parse_sql("CREATE SOURCE s (a INT, PRIMARY KEY (a), PRIMARY KEY (a))").is_err());
    }
}
