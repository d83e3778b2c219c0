//! The measuring run: every selected query through Eddy, then through DataFusion, printed as a
//! markdown table.
//!
//! All streaming runs come first, while the process holds nothing large, so that their peak
//! memory is theirs; then Eddy generates the events once more into memory for DataFusion.
//! Every rate is events of the run (`--events`, all three kinds) per second, whatever the query
//! reads, so rows of the table compare. A streaming run includes generating its events (the
//! source is the generator; a query over two sources generates twice); a batch run starts with
//! the events in memory. The file variant's two runs both read the same CSV file.

use eddy_engine::session::EngineConfig;

use crate::batch::Batch;
use crate::csv_file::{self, BidsCsv, TempDir};
use crate::eddy::{Events, Outcome, Streaming};
use crate::measure::{Cost, Meter, mebibytes, millions};
use crate::queries::{Export, Query, SKIPPED};
use crate::{Args, BenchResult};

/// One query's figures.
struct Row<'a> {
    query: &'a Query,
    streaming: Cost,
    outcome: Outcome,
    batch: Option<(Cost, usize)>,
}

/// One export's figures: Eddy's run, DataFusion's, the rows each wrote and the file sizes.
struct ExportRow<'a> {
    export: &'a Export,
    streaming: Cost,
    rows: usize,
    batch: Option<(Cost, usize)>,
}

pub async fn run(args: &Args, queries: &[&Query], exports: &[&Export]) -> BenchResult<()> {
    let config = EngineConfig {
        parallelism: args.workers,
        ..EngineConfig::default()
    };
    let events = Events {
        count: args.events,
        base_time: None,
    };
    let mut eddy = Streaming::new(config, &events).await?;
    let dir = TempDir::new()?;
    let csv = if queries.iter().any(|q| q.reads_file) {
        let csv = csv_file::write_bids(&mut eddy, dir.path(), None).await?;
        eddy.add_file_source(&csv.path).await?;
        Some(csv)
    } else {
        None
    };

    let mut rows = Vec::new();
    for query in queries {
        eprintln!("streaming {} ...", query.name);
        let meter = Meter::start();
        let outcome = eddy.run(query.streaming, |_| Ok(())).await?;
        let streaming = meter.stop();
        rows.push(Row {
            query,
            streaming,
            outcome,
            batch: None,
        });
    }

    let folder = dir
        .path()
        .to_str()
        .ok_or("the temporary directory's path is not UTF-8")?
        .to_string();
    let mut export_rows = Vec::new();
    for export in exports {
        eprintln!("streaming {} ...", export.name);
        let meter = Meter::start();
        let outcome = eddy
            .run(&export.streaming.replace("{dir}", &folder), |_| Ok(()))
            .await?;
        export_rows.push(ExportRow {
            export,
            streaming: meter.stop(),
            rows: outcome.rows,
            batch: None,
        });
    }

    eprintln!("generating the events again, into memory for DataFusion ...");
    let batch = Batch::load(&mut eddy, args.workers).await?;
    if let Some(csv) = &csv {
        batch.register_csv(&csv.path, &csv.schema).await?;
    }
    for row in &mut rows {
        eprintln!("batch {} ...", row.query.name);
        let meter = Meter::start();
        let count = batch.run(row.query.batch_sql(), |_| Ok(())).await?;
        row.batch = Some((meter.stop(), count));
    }

    for row in &mut export_rows {
        eprintln!("batch {} ...", row.export.name);
        let meter = Meter::start();
        let count = batch
            .copy(&row.export.batch.replace("{dir}", &folder))
            .await?;
        row.batch = Some((meter.stop(), count));
    }

    print_table(args, &batch, csv.as_ref(), &rows);
    print_exports(args, dir.path(), &export_rows);
    let mismatched_exports: Vec<String> = export_rows
        .iter()
        .filter_map(|r| {
            let (_, n) = r.batch?;
            (n != r.rows).then(|| {
                format!(
                    "{}: Eddy wrote {} rows, DataFusion {n}",
                    r.export.name, r.rows
                )
            })
        })
        .collect();
    if !mismatched_exports.is_empty() {
        return Err(mismatched_exports.join("; ").into());
    }
    let mismatches: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let (_, batch_rows) = row.batch?;
            (row.query.batch_is_exact() && batch_rows != row.outcome.rows).then(|| {
                format!(
                    "{}: streaming gave {} rows, batch {batch_rows}",
                    row.query.name, row.outcome.rows
                )
            })
        })
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join("; ").into())
    }
}

/// The cells both tables share: Eddy's rates, workers and memory, DataFusion's time and rate,
/// and the ratio of their times.
fn cost_cells(args: &Args, streaming: &Cost, batch: Option<Cost>) -> String {
    let events = args.events;
    format!(
        "{} | {} | {} | {} ({}) | {} | {} | {}",
        millions(Some(streaming.per_second(events))),
        millions(streaming.per_cpu_second(events)),
        args.workers,
        mebibytes(streaming.peak_rss),
        mebibytes(streaming.start_rss),
        batch.map_or_else(|| "n/a".into(), |c| format!("{:.3}", c.wall.as_secs_f64())),
        millions(batch.and_then(|c| c.per_cpu_second(events))),
        batch.map_or_else(
            || "n/a".into(),
            |c| format!(
                "{:.1}",
                streaming.wall.as_secs_f64() / c.wall.as_secs_f64().max(1e-9)
            )
        ),
    )
}

fn print_exports(args: &Args, dir: &std::path::Path, rows: &[ExportRow<'_>]) {
    if rows.is_empty() {
        return;
    }
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map_or_else(|_| "n/a".to_string(), |m| mebibytes(Some(m.len())))
    };
    println!();
    println!(
        "| export | Eddy M events/s (wall) | Eddy M events/CPU-s | workers | Eddy peak RSS MiB \
         (at start) | DataFusion batch s | DataFusion M events/CPU-s | streaming/batch time | \
         rows | file MiB (Eddy / DataFusion) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} / {} |",
            row.export.name,
            cost_cells(args, &row.streaming, row.batch.map(|(cost, _)| cost)),
            row.rows,
            size(row.export.files.0),
            size(row.export.files.1),
        );
    }
}

fn print_table(args: &Args, batch: &Batch, csv: Option<&BidsCsv>, rows: &[Row<'_>]) {
    let generation = batch.bid_generation.as_secs_f64();
    println!(
        "events={} bids={} workers={} generating and streaming every bid column: {generation:.2} s \
         ({:.2} M events/s)",
        args.events,
        batch.bids,
        args.workers,
        args.events as f64 / generation.max(1e-9) / 1e6
    );
    if let Some(csv) = csv {
        println!(
            "CSV file of bids for the file source: {} rows, {:.0} MiB",
            csv.rows,
            csv.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    println!();
    println!(
        "| query | Eddy M events/s (wall) | Eddy M events/CPU-s | workers | Eddy peak RSS MiB \
         (at start) | DataFusion batch s | DataFusion M events/CPU-s | streaming/batch time | \
         rows out |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (batch_cost, batch_rows) = row
            .batch
            .map_or((None, None), |(cost, n)| (Some(cost), Some(n)));
        let rows_out = match batch_rows {
            Some(n) if n != row.outcome.rows && row.query.batch_is_exact() => {
                format!("{} (batch: {n}, MISMATCH)", row.outcome.rows)
            }
            Some(n) if !row.query.batch_is_exact() => {
                format!("{} (batch is a lower bound: {n})", row.outcome.rows)
            }
            _ => row.outcome.rows.to_string(),
        };
        let rows_out = match row.outcome.changes {
            Some(changes) => format!("{rows_out} (updating: {changes} changes)"),
            None => rows_out,
        };
        let late = if row.outcome.late_rows > 0 {
            format!(", {} late", row.outcome.late_rows)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {rows_out}{late} |",
            row.query.name,
            cost_cells(args, &row.streaming, batch_cost),
        );
    }
    for (name, reason) in SKIPPED {
        if args.query.as_deref().is_none_or(|q| q == *name) {
            println!("| {name} | skipped: {reason} | | | | | | | |");
        }
    }
    for row in rows.iter().filter(|r| r.query.reads_file) {
        let eddy = row.streaming.per_cpu_second(args.events);
        let datafusion = row
            .batch
            .and_then(|(cost, _)| cost.per_cpu_second(args.events));
        if let (Some(eddy), Some(datafusion)) = (eddy, datafusion) {
            println!();
            println!(
                "{}: Eddy's file source {} M events per CPU-second, DataFusion's CSV scan {}: \
                 {:.2}x (target >= 0.8x)",
                row.query.name,
                millions(Some(eddy)),
                millions(Some(datafusion)),
                eddy / datafusion
            );
        }
    }
}
