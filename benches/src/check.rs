//! `--check`: the benchmark's queries as a correctness test, over a few events (CI runs it in
//! a debug build).
//!
//! For every query it compares full result rows, not counts: each row is rendered as text with
//! arrow's display formatting (so types that print alike compare alike, e.g. a timestamp in
//! milliseconds and one in nanoseconds), and the rows are sorted, since neither engine promises
//! an order. It requires
//! - the same rows with `SET parallelism = 1` and `SET parallelism = 2`;
//! - the same rows as DataFusion's batch query, where that query is an exact equivalent
//!   ([`Baseline::Exact`](crate::queries::Baseline) or `Same`): over a bounded input a
//!   streaming query returns what the batch query returns, minus late rows (for a query on
//!   processing time, `Baseline::RolledUp`, a roll-up of it whose rows do not depend on when
//!   they were processed);
//! - for an updating result (a changelog led by the `op` column: Top-N, deduplication keeping
//!   the last row), the same comparisons of its final rows: the changelog applied in order
//!   (`+` adds a row, `-` removes an equal one, which must be there);
//! - no late rows (the generator's event times never go backwards, so a late row is a bug) and
//!   no malformed rows in the CSV file.
//!
//! The generator starts one second before a 10-second boundary (`base.time`), so that even the
//! 2 seconds of event time of 20,000 events span two tumbling windows and six hopping ones.

use std::fmt::Write as _;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_engine::session::EngineConfig;

use crate::batch::Batch;
use crate::csv_file::{self, TempDir};
use crate::eddy::{Events, Streaming};
use crate::queries::{Export, Query};
use crate::{Args, BenchResult};

/// The first event's time in check runs: 1 s before a multiple of 10 s.
const BASE_TIME: &str = "2023-01-01T00:00:09Z";

/// Rows shown per side when two results differ.
const SHOWN: usize = 5;

pub async fn run(args: &Args, queries: &[&Query], exports: &[&Export]) -> BenchResult<()> {
    let events = Events {
        count: args.events,
        base_time: Some(BASE_TIME.to_string()),
    };
    let mut eddy = Streaming::new(EngineConfig::default(), &events).await?;
    let dir = TempDir::new()?;
    let csv = csv_file::write_bids(&mut eddy, dir.path(), None).await?;
    eddy.add_file_source(&csv.path).await?;
    let batch = Batch::load(&mut eddy, 2).await?;
    batch.register_csv(&csv.path, &csv.schema).await?;
    println!(
        "check: {} events ({} bids) from {BASE_TIME}, parallelism 1 and 2 against DataFusion",
        args.events, batch.bids
    );

    let mut failures = Vec::new();
    for query in queries {
        let mut problems = Vec::new();
        let p1 = streaming_rows(&mut eddy, query, 1, None, &mut problems).await?;
        let p2 = streaming_rows(&mut eddy, query, 2, None, &mut problems).await?;
        if let Some(diff) = diff("parallelism 1", &p1, "parallelism 2", &p2) {
            problems.push(diff);
        }
        let against = if query.batch_is_exact() {
            let mut rows = Vec::new();
            let columns = query.compared_columns();
            batch
                .run(query.batch_sql(), |b| {
                    render(&project(b, columns)?, &mut rows)
                })
                .await?;
            rows.sort_unstable();
            // Over the columns tied rows share, when the query keeps one of several.
            let streaming = match columns {
                Some(_) => streaming_rows(&mut eddy, query, 1, columns, &mut problems).await?,
                None => p1.clone(),
            };
            if let Some(diff) = diff("streaming", &streaming, "DataFusion batch", &rows) {
                problems.push(diff);
            }
            match columns {
                Some(_) => "= DataFusion batch (up to ties)",
                None => "= DataFusion batch",
            }
        } else {
            "(batch baseline is a lower bound, not compared)"
        };
        if problems.is_empty() {
            println!(
                "ok   {}: {} rows, parallelism 1 = 2 {against}",
                query.name,
                p1.len()
            );
        } else {
            println!("FAIL {}:", query.name);
            for problem in &problems {
                println!("{problem}");
            }
            failures.push(query.name);
        }
    }
    // Exports: the file Eddy writes holds the rows of the one DataFusion writes.
    let folder = dir
        .path()
        .to_str()
        .ok_or("the temporary directory's path is not UTF-8")?
        .to_string();
    for export in exports {
        let outcome = eddy
            .run(&export.streaming.replace("{dir}", &folder), |_| Ok(()))
            .await?;
        let count = batch.copy(&export.batch.replace("{dir}", &folder)).await?;
        let mut sides = Vec::new();
        for (table, file) in [
            ("eddy_file", export.files.0),
            ("datafusion_file", export.files.1),
        ] {
            batch
                .register_parquet(table, &dir.path().join(file))
                .await?;
            let mut rows = Vec::new();
            batch
                .run(&format!("SELECT * FROM {table}"), |b| render(b, &mut rows))
                .await?;
            rows.sort_unstable();
            sides.push(rows);
            batch.deregister(table)?;
        }
        let mut problems = Vec::new();
        if outcome.rows != count || outcome.rows != sides[0].len() {
            problems.push(format!(
                "  Eddy's COPY said {} rows, its file holds {}, DataFusion wrote {count}",
                outcome.rows,
                sides[0].len()
            ));
        }
        if let Some(diff) = diff("Eddy's file", &sides[0], "DataFusion's file", &sides[1]) {
            problems.push(diff);
        }
        if problems.is_empty() {
            println!(
                "ok   {}: {} rows, Eddy's file = DataFusion's",
                export.name, count
            );
        } else {
            println!("FAIL {}:", export.name);
            for problem in &problems {
                println!("{problem}");
            }
            failures.push(export.name);
        }
    }
    if failures.is_empty() {
        println!(
            "check passed: {} queries, {} exports",
            queries.len(),
            exports.len()
        );
        Ok(())
    } else {
        Err(format!("check failed for {}", failures.join(", ")).into())
    }
}

/// The query's rows with `parallelism` instances (only `columns`, if given), sorted; an
/// updating result's final rows. Late rows and warnings go to `problems`.
async fn streaming_rows(
    eddy: &mut Streaming,
    query: &Query,
    parallelism: usize,
    columns: Option<&[&str]>,
    problems: &mut Vec<String>,
) -> BenchResult<Vec<String>> {
    eddy.execute(&format!("SET parallelism = {parallelism}"))
        .await?;
    let mut rows = Vec::new();
    let mut updating = false;
    let outcome = eddy
        .run(query.checked_sql(), |b| {
            updating = is_changelog(b);
            match columns {
                // The op column stays in front, for the fold.
                Some(columns) if updating => {
                    let op = b.schema().field(0).name().clone();
                    let mut with_op = vec![op.as_str()];
                    with_op.extend(columns);
                    render(&project(b, Some(&with_op))?, &mut rows)
                }
                columns => render(&project(b, columns)?, &mut rows),
            }
        })
        .await?;
    for warning in outcome.warnings {
        problems.push(format!("  parallelism {parallelism}: {warning}"));
    }
    if updating {
        rows = match fold(rows) {
            Ok(rows) => rows,
            Err(problem) => {
                problems.push(format!("  parallelism {parallelism}: {problem}"));
                Vec::new()
            }
        };
    }
    rows.sort_unstable();
    Ok(rows)
}

/// `batch`'s `columns` (by name), or all of it.
fn project(batch: &RecordBatch, columns: Option<&[&str]>) -> BenchResult<RecordBatch> {
    let Some(columns) = columns else {
        return Ok(batch.clone());
    };
    let schema = batch.schema();
    let indices = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(batch.project(&indices)?)
}

/// True when `batch` is part of a changelog: led by the op column.
fn is_changelog(batch: &RecordBatch) -> bool {
    batch
        .schema()
        .fields()
        .first()
        .is_some_and(|f| f.name() == eddy_engine::plan::CHANGELOG_OP || f.name() == "op")
}

/// The final rows of a changelog rendered by [`render`] (each line led by its op): every `+`
/// row, less one equal row per `-` row, without the op.
fn fold(changelog: Vec<String>) -> Result<Vec<String>, String> {
    let mut held: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in changelog {
        match line.split_once(" | ") {
            Some(("+", row)) => *held.entry(row.to_string()).or_default() += 1,
            Some(("-", row)) => match held.get_mut(row) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    held.remove(row);
                }
                None => return Err(format!("the changelog deletes a row it never held: {row}")),
            },
            _ => return Err(format!("a changelog row without its op: {line}")),
        }
    }
    Ok(held
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n))
        .collect())
}

/// Appends each row of `batch` as one line of text, columns separated by ` | `.
fn render(batch: &RecordBatch, rows: &mut Vec<String>) -> BenchResult<()> {
    let options = FormatOptions::default().with_null("NULL");
    let columns = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        let mut line = String::new();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                line.push_str(" | ");
            }
            write!(line, "{}", column.value(row))?;
        }
        rows.push(line);
    }
    Ok(())
}

/// A summary of how two sorted row lists differ, or `None` when they are equal.
fn diff(a_name: &str, a: &[String], b_name: &str, b: &[String]) -> Option<String> {
    if a == b {
        return None;
    }
    let (only_a, only_b) = differences(a, b);
    let mut out = format!(
        "  {a_name} gave {} rows, {b_name} {}: {} only in {a_name}, {} only in {b_name}",
        a.len(),
        b.len(),
        only_a.len(),
        only_b.len()
    );
    for (name, rows) in [(a_name, &only_a), (b_name, &only_b)] {
        for row in rows.iter().take(SHOWN) {
            out.push_str(&format!("\n    only in {name}: {row}"));
        }
        if rows.len() > SHOWN {
            out.push_str(&format!("\n    ... and {} more", rows.len() - SHOWN));
        }
    }
    Some(out)
}

/// The rows of sorted `a` not in sorted `b` and the other way round, as multisets.
fn differences<'a>(a: &'a [String], b: &'a [String]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                only_a.push(a[i].as_str());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                only_b.push(b[j].as_str());
                j += 1;
            }
        }
    }
    only_a.extend(a[i..].iter().map(String::as_str));
    only_b.extend(b[j..].iter().map(String::as_str));
    (only_a, only_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn differences_are_multiset_differences() {
        let a = rows(&["1", "2", "2", "4"]);
        let b = rows(&["2", "3", "4", "4"]);
        assert_eq!(differences(&a, &b), (vec!["1", "2"], vec!["3", "4"]));
    }

    #[test]
    fn equal_results_have_no_diff() {
        let a = rows(&["1 | x", "2 | y"]);
        assert_eq!(diff("a", &a, "b", &a), None);
        let summary = diff("a", &a, "b", &a[..1]).unwrap_or_default();
        assert!(summary.contains("1 only in a"), "{summary}");
        assert!(summary.contains("only in a: 2 | y"), "{summary}");
    }
}
