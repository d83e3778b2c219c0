//! Target `sql`: the SQL front end. The input (as text) is parsed by Eddy's parser and each
//! statement goes as far as it can without running a continuous query: DDL, SET, SHOW and
//! EXPLAIN run for real (in a fresh in-memory engine with the relations of [`PREAMBLE`]);
//! queries, inserts and materialized views are described (planned) and EXPLAINed; sinks,
//! cursors and COPY are only described.

use datafusion::sql::sqlparser::ast::Statement;
use eddy_engine::error::EngineError;
use eddy_engine::session::{Session, StatementResult};
use eddy_engine::sql::parser::{EddyStatement, ParsedStatement, parse_sql};

use crate::FuzzError;
use crate::rng::Rng;
use crate::runtime::{check, drain, fresh_engine, runtime, scratch_dir, setup};

/// The relations generated statements refer to (see [`crate::grammar`]).
pub const PREAMBLE: &str = "
CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND);
CREATE TABLE persons (id BIGINT, name VARCHAR, city VARCHAR, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
CREATE TABLE ticks (symbol VARCHAR, ts TIMESTAMP(3), price DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
CREATE SOURCE nb WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '10');
";

/// Statements of one input past this many are not run (a long input is not a slow one).
const MAX_STATEMENTS: usize = 16;

/// Copies the SQL tests' data files into the scratch directory (the working directory of a
/// run), so that the file sources of statements taken from the tests resolve.
pub fn init() -> Result<(), FuzzError> {
    let data = crate::crate_dir().join("../data");
    copy_dir(&data, scratch_dir())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<(), FuzzError> {
    std::fs::create_dir_all(to).map_err(|e| FuzzError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| FuzzError::io(from, e))? {
        let entry = entry.map_err(|e| FuzzError::io(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| FuzzError::io(&path, e))?;
        }
    }
    Ok(())
}

pub fn generate(rng: &mut Rng) -> Vec<u8> {
    crate::grammar::statements(rng).into_bytes()
}

pub fn run(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let Ok(rt) = runtime() else {
        panic!("harness: no tokio runtime");
    };
    rt.block_on(async {
        let engine = fresh_engine();
        let mut session = engine.new_session();
        if let Err(e) = setup(&mut session, PREAMBLE).await {
            panic!("harness: the preamble failed: {e}");
        }
        let statements = match parse_sql(&text) {
            Ok(s) => s,
            Err(e) => return check(Err(e), &text),
        };
        for statement in statements.iter().take(MAX_STATEMENTS) {
            let result = exercise(&mut session, statement).await;
            if result.is_err() {
                session.on_error();
            }
            check(result, &text);
        }
    });
}

/// Runs `statement` as far as the rules of this target allow.
async fn exercise(session: &mut Session, statement: &ParsedStatement) -> Result<(), EngineError> {
    match &statement.statement {
        EddyStatement::CreateSink(_) | EddyStatement::CopyToFile(_) => {
            session.describe(statement).await.map(|_| ())
        }
        EddyStatement::Sql(stmt) => match stmt.as_ref() {
            Statement::Query(_) => {
                session.describe(statement).await?;
                explain(session, &statement.sql).await
            }
            Statement::CreateView(view) if view.materialized => {
                explain(session, &view.query.to_string()).await
            }
            Statement::Explain {
                statement: inner,
                analyze: true,
                ..
            } => explain(session, &inner.to_string()).await,
            Statement::CreateTable(create) if create.query.is_some() => {
                session.describe(statement).await.map(|_| ())
            }
            Statement::Insert(_)
            | Statement::Copy { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. } => session.describe(statement).await.map(|_| ()),
            _ => execute(session, statement).await,
        },
        _ => execute(session, statement).await,
    }
}

/// `EXPLAIN <query>`: plans the query as a streaming dataflow without running it.
async fn explain(session: &mut Session, query: &str) -> Result<(), EngineError> {
    for statement in parse_sql(&format!("EXPLAIN {query}"))? {
        // What parses back as something other than a plain EXPLAIN is not run.
        if let EddyStatement::Sql(stmt) = &statement.statement
            && let Statement::Explain { analyze: false, .. } = stmt.as_ref()
        {
            execute(session, &statement).await?;
        }
    }
    Ok(())
}

async fn execute(session: &mut Session, statement: &ParsedStatement) -> Result<(), EngineError> {
    match session.execute(statement, &[]).await? {
        StatementResult::Rows(output) | StatementResult::CopyOut(output, _) => {
            drain(output, 64).await.map(|_| ())
        }
        _ => Ok(()),
    }
}
