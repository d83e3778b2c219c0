//! Target `pattern`: the MATCH_RECOGNIZE pattern compiler and matcher
//! (engine/src/operators/match_recognize/), run through a real streaming query.
//!
//! The input is text, one item a line:
//! `PATTERN <pattern>`, `DEFINE <var> AS <condition>` (any number), and optionally
//! `MEASURES <list>`, `ROWS ALL` (ALL ROWS PER MATCH; else ONE ROW PER MATCH), `TIMEOUTS`
//! (`... PER MATCH WITH TIMEOUTS`, which needs a WITHIN),
//! `SKIP <TO NEXT ROW | PAST LAST ROW | TO FIRST v | TO LAST v>`, `WITHIN <n> <unit>`,
//! `SUBSET <definition>`. Every other line that starts with a digit or `-` is a row
//! `t,symbol,price` (t in seconds from 2024-01-01, price a number or empty for NULL).
//! The rows become a bounded CSV source with a 1 s watermark delay, and the query
//! `SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts ...)` is read to its
//! end: the source ends, so the query must end too.

use std::fmt::Write as _;

use eddy_engine::session::StatementResult;
use eddy_engine::sql::parser::parse_sql;

use crate::runtime::{check, drain, fresh_engine, runtime, scratch_dir, setup};

/// Words for token-level mutations of pattern inputs.
pub const DICTIONARY: &[&str] = &[
    "A",
    "B",
    "C",
    "D",
    "*",
    "+",
    "?",
    "*?",
    "+?",
    "??",
    "{2}",
    "{0}",
    "{1,}",
    "{,3}",
    "{2,1}",
    "{0,0}",
    "(",
    ")",
    "|",
    "^",
    "$",
    "{-",
    "-}",
    "PERMUTE(A, B)",
    "\nPATTERN ",
    "\nDEFINE ",
    "\nMEASURES ",
    "\nROWS ALL",
    "\nSKIP TO NEXT ROW",
    "\nSKIP TO FIRST B",
    "\nSKIP TO LAST A",
    "\nWITHIN 3 SECOND",
    "\nTIMEOUTS",
    "MATCH_STATUS()",
    "\nSUBSET S = (A, B)",
    " AS ",
    "price",
    "PREV(price)",
    "PREV(price, 3)",
    "NEXT(price)",
    "FIRST(A.price)",
    "LAST(B.price, 1)",
    "sum(A.price)",
    "count(*)",
    "avg(price)",
    "CLASSIFIER()",
    "MATCH_NUMBER()",
    " > ",
    " < ",
    " = ",
    " AND ",
    " OR ",
    "NULL",
    "0",
    "1",
    "-1",
    "1e308",
    "\n1,X,1",
    "\n2,X,",
    "\n2,Y,5",
    "\n0,X,-1",
];

/// Rows of one input past this many are ignored.
const MAX_ROWS: usize = 256;
/// 2024-01-01 00:00:00 UTC in milliseconds.
const T0_MS: i64 = 1_704_067_200_000;

/// What an input asks for.
#[derive(Debug, Default)]
struct Spec {
    pattern: String,
    defines: Vec<String>,
    measures: Option<String>,
    all_rows: bool,
    timeouts: bool,
    skip: Option<String>,
    within: Option<String>,
    subset: Option<String>,
    csv: String,
}

fn spec(text: &str) -> Spec {
    let mut spec = Spec {
        csv: "ts,symbol,price\n".to_string(),
        ..Spec::default()
    };
    let mut rows = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("PATTERN ") {
            spec.pattern = rest.to_string();
        } else if let Some(rest) = line.strip_prefix("DEFINE ") {
            spec.defines.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("MEASURES ") {
            spec.measures = Some(rest.to_string());
        } else if line == "ROWS ALL" {
            spec.all_rows = true;
        } else if line == "TIMEOUTS" {
            spec.timeouts = true;
        } else if let Some(rest) = line.strip_prefix("SKIP ") {
            spec.skip = Some(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("WITHIN ") {
            let mut words = rest.split_whitespace();
            let n = words.next().unwrap_or("1");
            let unit = words.next().unwrap_or("SECOND");
            spec.within = Some(format!("INTERVAL '{}' {unit}", n.replace('\'', "")));
        } else if let Some(rest) = line.strip_prefix("SUBSET ") {
            spec.subset = Some(rest.to_string());
        } else if line.starts_with(|c: char| c.is_ascii_digit() || c == '-') && rows < MAX_ROWS {
            let mut fields = line.splitn(3, ',');
            let Some(Ok(t)) = fields.next().map(|t| t.trim().parse::<i64>()) else {
                continue;
            };
            let symbol: String = fields
                .next()
                .unwrap_or("X")
                .chars()
                .filter(|c| c.is_alphanumeric())
                .take(8)
                .collect();
            let price = fields
                .next()
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite())
                .map(|p| p.to_string())
                .unwrap_or_default();
            let ms = T0_MS + t.clamp(-1_000_000_000, 1_000_000_000) * 1000;
            let Some(ts) = chrono::DateTime::from_timestamp_millis(ms) else {
                continue;
            };
            let _ = writeln!(
                spec.csv,
                "{},{symbol},{price}",
                ts.format("%Y-%m-%d %H:%M:%S%.3f")
            );
            rows += 1;
        }
    }
    spec
}

/// The MATCH_RECOGNIZE query of `spec`.
fn query(spec: &Spec) -> String {
    let measures = spec.measures.as_deref().unwrap_or(
        "MATCH_NUMBER() AS m, CLASSIFIER() AS c, FIRST(ts) AS f, LAST(ts) AS l, count(*) AS n",
    );
    let rows = match (spec.all_rows, spec.timeouts) {
        (true, false) => "ALL ROWS PER MATCH",
        (false, false) => "ONE ROW PER MATCH",
        (true, true) => "ALL ROWS PER MATCH WITH TIMEOUTS",
        (false, true) => "ONE ROW PER MATCH WITH TIMEOUTS",
    };
    let skip = spec
        .skip
        .as_deref()
        .map(|s| format!("AFTER MATCH SKIP {s}"))
        .unwrap_or_default();
    let within = spec
        .within
        .as_deref()
        .map(|w| format!(" WITHIN {w}"))
        .unwrap_or_default();
    let subset = spec
        .subset
        .as_deref()
        .map(|s| format!(" SUBSET {s}"))
        .unwrap_or_default();
    let defines = if spec.defines.is_empty() {
        let first: String = spec
            .pattern
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .find(|w| !w.is_empty() && !w.eq_ignore_ascii_case("PERMUTE"))
            .unwrap_or("A")
            .to_string();
        format!("{first} AS TRUE")
    } else {
        spec.defines.join(", ")
    };
    format!(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts \
         MEASURES {measures} {rows} {skip} PATTERN ({}){within}{subset} DEFINE {defines})",
        spec.pattern
    )
}

pub fn run(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let spec = spec(&text);
    let path = scratch_dir().join("ticks.csv");
    if let Err(e) = std::fs::write(&path, &spec.csv) {
        panic!("harness: cannot write {}: {e}", path.display());
    }
    let ddl = format!(
        "CREATE SOURCE ticks (ts TIMESTAMP(3), symbol VARCHAR, price DOUBLE, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'csv', header = 'true')",
        path.display()
    );
    let sql = query(&spec);
    let Ok(rt) = runtime() else {
        panic!("harness: no tokio runtime");
    };
    rt.block_on(async {
        let engine = fresh_engine();
        let mut session = engine.new_session();
        if let Err(e) = setup(&mut session, &ddl).await {
            panic!("harness: the source failed: {e}");
        }
        let statements = match parse_sql(&sql) {
            Ok(s) => s,
            Err(e) => return check(Err(e), &sql),
        };
        for statement in &statements {
            let result = match session.execute(statement, &[]).await {
                Ok(StatementResult::Rows(output)) => drain(output, usize::MAX).await.map(|_| ()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            check(result, &sql);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_becomes_a_query_and_rows() {
        let spec = spec(
            "PATTERN A B+\nDEFINE B AS price > PREV(price)\nROWS ALL\n1,X,1\n2,X,2.5\nx\n3,Y,\n",
        );
        assert_eq!(
            spec.csv,
            "ts,symbol,price\n2024-01-01 00:00:01.000,X,1\n2024-01-01 00:00:02.000,X,2.5\n\
             2024-01-01 00:00:03.000,Y,\n"
        );
        let q = query(&spec);
        assert!(
            q.contains("ALL ROWS PER MATCH  PATTERN (A B+) DEFINE B AS price > PREV(price)"),
            "{q}"
        );
    }
}
