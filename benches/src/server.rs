//! `--server`: Eddy measured as a user meets it. The bids (and a stream of stock ticks) are
//! written to CSV files, the real server (`eddy serve`, the binary built next to this one) is
//! started on 127.0.0.1, the files are declared as sources and each query is sent over the
//! Postgres protocol as `COPY (query) TO STDOUT`, its rows read to the end. The figure is the
//! CPU time the server process spent (user + system, from `/proc/<pid>/stat`), against
//! DataFusion's batch query over the same file in this process (`getrusage`).
//!
//! Timestamps are written as `2023-01-01 00:00:09.366`, the form a CSV export usually has.
//! Each query reads its file from the start, so the figure includes CSV decoding, watermarks,
//! the operators and the result's encoding on the wire.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use eddy_engine::session::EngineConfig;
use futures::StreamExt;

use crate::csv_file::TempDir;
use crate::eddy::{Events, Streaming};
use crate::measure::{Meter, millions};
use crate::{Args, BenchResult};

/// The first event's time: the generator's events (and the ticks) start here.
const BASE_TIME: &str = "2023-01-01T00:00:09Z";
/// The CSV files' timestamp format.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";
/// Symbols of the tick stream.
const SYMBOLS: u64 = 100;

/// One query of the server run.
#[derive(Debug, Clone, Copy)]
pub struct ServerQuery {
    pub name: &'static str,
    /// The file it reads: `bids_file` or `ticks`.
    pub table: &'static str,
    /// What the server runs.
    pub streaming: &'static str,
    /// What DataFusion runs over the same file, and whether it returns the same rows (a
    /// lower bound otherwise: no batch engine has MATCH_RECOGNIZE).
    pub batch: &'static str,
    pub exact: bool,
}

/// The queries of the server run.
pub const SERVER_QUERIES: &[ServerQuery] = &[
    ServerQuery {
        name: "server-tumble-10s",
        table: "bids_file",
        streaming: "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
            FROM TUMBLE(bids_file, date_time, INTERVAL '10' SECOND) \
            GROUP BY auction, window_start, window_end",
        batch: "SELECT auction, date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
            date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS window_end, \
            count(*), sum(price), max(price) \
            FROM bids_file GROUP BY auction, date_bin(INTERVAL '10' SECOND, date_time)",
        exact: true,
    },
    ServerQuery {
        name: "server-tumble-10s-global",
        table: "bids_file",
        streaming: "SELECT window_start, window_end, count(*), sum(price), max(price) \
            FROM TUMBLE(bids_file, date_time, INTERVAL '10' SECOND) \
            GROUP BY window_start, window_end",
        batch: "SELECT date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
            count(*), sum(price), max(price) \
            FROM bids_file GROUP BY date_bin(INTERVAL '10' SECOND, date_time)",
        exact: true,
    },
    ServerQuery {
        name: "server-hop-10s-2s",
        table: "bids_file",
        streaming: "SELECT auction, window_start, window_end, count(*) \
            FROM HOP(bids_file, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
            GROUP BY auction, window_start, window_end",
        batch: "SELECT auction, window_start, count(*) \
            FROM (SELECT auction, date_bin(INTERVAL '2' SECOND, date_time) - o.d AS window_start \
                  FROM bids_file CROSS JOIN (VALUES (INTERVAL '0' SECOND), (INTERVAL '2' SECOND), \
                    (INTERVAL '4' SECOND), (INTERVAL '6' SECOND), (INTERVAL '8' SECOND)) AS o(d)) \
            GROUP BY auction, window_start",
        exact: true,
    },
    ServerQuery {
        name: "server-pattern-vshape",
        table: "ticks",
        // The V-shape as Flink's documentation writes it: logical navigation in DEFINE.
        streaming: "SELECT * FROM ticks MATCH_RECOGNIZE ( \
              PARTITION BY symbol ORDER BY ts \
              MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, \
                LAST(C.price) AS end_price \
              ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
              PATTERN (A B+ C) \
              DEFINE B AS (LAST(B.price, 1) IS NULL AND B.price < A.price) \
                  OR B.price < LAST(B.price, 1), \
                C AS C.price > LAST(B.price, 1))",
        // What any plan of it must do: every symbol's ticks in time order.
        batch: "SELECT symbol, ts, price FROM ticks ORDER BY symbol, ts",
        exact: false,
    },
];

/// Runs the server benchmark and prints one markdown table row per query.
pub async fn run(args: &Args) -> BenchResult<()> {
    let queries: Vec<&ServerQuery> = SERVER_QUERIES
        .iter()
        .filter(|q| args.query.as_deref().is_none_or(|n| n == q.name))
        .collect();
    if queries.is_empty() {
        let names: Vec<&str> = SERVER_QUERIES.iter().map(|q| q.name).collect();
        return Err(format!(
            "no server query of that name; they are {}",
            names.join(", ")
        )
        .into());
    }
    let dir = TempDir::new()?;
    let started = Instant::now();
    let bids = write_bids(args.events, dir.path()).await?;
    let ticks = write_ticks(args.events, dir.path())?;
    println!(
        "server run: {} bids ({} MiB) and {} ticks ({} MiB) written in {:.1}s; \
         server with --workers {}",
        bids.rows,
        bids.bytes >> 20,
        ticks.rows,
        ticks.bytes >> 20,
        started.elapsed().as_secs_f64(),
        args.workers
    );
    let server = ServerProcess::start(dir.path(), args.workers)?;
    let (client, connection) = server.connect().await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids_file (auction BIGINT, bidder BIGINT, price BIGINT, \
               date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'file', path = '{}', format = 'csv', header = 'true'); \
             CREATE SOURCE ticks (symbol VARCHAR, price BIGINT, ts TIMESTAMP(3), \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'file', path = '{}', format = 'csv', header = 'true')",
            bids.path.display(),
            ticks.path.display()
        ))
        .await?;

    let batch =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(args.workers));
    for file in [&bids, &ticks] {
        batch
            .register_csv(
                file.table,
                file.path.to_str().ok_or("temporary path is not UTF-8")?,
                CsvReadOptions::new()
                    .has_header(true)
                    .schema(file.schema.as_ref()),
            )
            .await?;
    }

    println!(
        "| query | events | Eddy server CPU s | Eddy M ev/CPU-s | Eddy wall s | \
         DataFusion CPU s | DataFusion M ev/CPU-s | Eddy / DataFusion |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut problems = Vec::new();
    for query in queries {
        let events = if query.table == "ticks" {
            ticks.rows
        } else {
            bids.rows
        } as u64;
        let cpu_before = server.cpu()?;
        let wall = Instant::now();
        let eddy_rows = copy_rows(&client, query.streaming).await?;
        let wall = wall.elapsed();
        let eddy_cpu = server.cpu()?.saturating_sub(cpu_before);

        let meter = Meter::start();
        let mut batch_rows = 0;
        let mut stream = batch.sql(query.batch).await?.execute_stream().await?;
        while let Some(b) = stream.next().await {
            batch_rows += b?.num_rows();
        }
        let batch_cost = meter.stop();

        if query.exact && batch_rows != eddy_rows {
            problems.push(format!(
                "{}: Eddy returned {eddy_rows} rows, DataFusion {batch_rows}",
                query.name
            ));
        }
        let eddy_rate = events as f64 / eddy_cpu.as_secs_f64().max(1e-9);
        let batch_rate = batch_cost.per_cpu_second(events);
        let ratio = batch_rate.map_or("n/a".to_string(), |b| {
            let ratio = eddy_rate / b;
            if query.exact {
                format!("{ratio:.2}x")
            } else {
                format!("{ratio:.2}x (lower bound)")
            }
        });
        println!(
            "| {} | {events} | {:.2} | {} | {:.2} | {} | {} | {ratio} |",
            query.name,
            eddy_cpu.as_secs_f64(),
            millions(Some(eddy_rate)),
            wall.as_secs_f64(),
            batch_cost
                .cpu
                .map_or("n/a".to_string(), |c| format!("{:.2}", c.as_secs_f64())),
            millions(batch_rate),
        );
    }
    drop(client);
    let _ = connection.await;
    drop(server);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}

/// Runs `query` as `COPY (query) TO STDOUT` and counts the lines that come back.
async fn copy_rows(client: &tokio_postgres::Client, query: &str) -> BenchResult<usize> {
    let stream = client
        .copy_out(&format!("COPY ({query}) TO STDOUT"))
        .await?;
    futures::pin_mut!(stream);
    let mut rows = 0;
    while let Some(chunk) = stream.next().await {
        rows += chunk?.iter().filter(|b| **b == b'\n').count();
    }
    Ok(rows)
}

/// A written CSV file.
struct CsvFile {
    /// The source's (and DataFusion's table's) name.
    table: &'static str,
    path: PathBuf,
    schema: SchemaRef,
    rows: usize,
    bytes: u64,
}

/// The generator's bids (auction, bidder, price, date_time) in `dir/bids.csv`.
async fn write_bids(events: u64, dir: &Path) -> BenchResult<CsvFile> {
    let mut streaming = Streaming::new(
        EngineConfig::default(),
        &Events {
            count: events,
            base_time: Some(BASE_TIME.to_string()),
        },
    )
    .await?;
    let csv = crate::csv_file::write_bids(&mut streaming, dir, Some(TIMESTAMP_FORMAT)).await?;
    Ok(CsvFile {
        table: "bids_file",
        path: csv.path,
        schema: csv.schema,
        rows: csv.rows,
        bytes: csv.bytes,
    })
}

/// `events` stock ticks in `dir/ticks.csv`: a tick every millisecond, the symbols in turn
/// (`S0` ... `S99`), each symbol's price a random walk (a fixed-seed generator: every run
/// writes the same file).
fn write_ticks(events: u64, dir: &Path) -> BenchResult<CsvFile> {
    let path = dir.join("ticks.csv");
    let mut out = BufWriter::new(File::create(&path)?);
    writeln!(out, "symbol,price,ts")?;
    let start = datafusion::common::ScalarValue::try_from_string(
        BASE_TIME.trim_end_matches('Z').replace('T', " "),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let datafusion::common::ScalarValue::TimestampMillisecond(Some(start_ms), _) = start else {
        return Err("the base time is not a timestamp".into());
    };
    let mut prices = vec![1000i64; SYMBOLS as usize];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..events {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let symbol = (i % SYMBOLS) as usize;
        // A step of -5..=5, the walk kept above 10.
        let step = ((seed >> 33) % 11) as i64 - 5;
        prices[symbol] = (prices[symbol] + step).max(10);
        let ts =
            datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime(start_ms + i as i64)
                .ok_or("a tick time out of range")?;
        writeln!(
            out,
            "S{symbol},{},{}",
            prices[symbol],
            ts.format(TIMESTAMP_FORMAT)
        )?;
    }
    out.flush()?;
    drop(out);
    Ok(CsvFile {
        table: "ticks",
        bytes: std::fs::metadata(&path)?.len(),
        path,
        schema: Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("price", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ])),
        rows: events as usize,
    })
}

/// The server, started for the run and killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    port: u16,
    /// Clock ticks per second of `/proc/<pid>/stat`'s CPU times.
    ticks_per_second: u64,
}

impl ServerProcess {
    /// Starts `eddy serve` (the binary next to this one) on a free port of 127.0.0.1, with a
    /// data directory in `dir` and `dir` allowed to file sources; waits until it accepts
    /// connections.
    pub(crate) fn start(dir: &Path, workers: usize) -> BenchResult<Self> {
        let binary = std::env::current_exe()?.with_file_name("eddy");
        if !binary.exists() {
            return Err(format!(
                "{} not found: build the server first (cargo build --release -p eddy-server)",
                binary.display()
            )
            .into());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("server-data"))
            .arg("--allow-path")
            .arg(dir)
            .arg("--workers")
            .arg(workers.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut server = Self {
            child,
            port,
            ticks_per_second: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("the server exited at start: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("the server did not accept connections within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// A new client connection to the server; the connection must be polled (spawned).
    pub(crate) async fn connect(
        &self,
    ) -> BenchResult<(
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    )> {
        Ok(tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=eddy", self.port),
            tokio_postgres::NoTls,
        )
        .await?)
    }

    /// The server process's resident memory in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn rss(&self) -> BenchResult<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or("no VmRSS in /proc/<pid>/status")?
            .parse::<u64>()?;
        Ok(kb * 1024)
    }

    /// The server process's CPU time so far (user + system).
    pub(crate) fn cpu(&self) -> BenchResult<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The fields after the command name (which may hold spaces) in parentheses.
        let after = stat
            .rsplit_once(')')
            .ok_or("an unreadable /proc/<pid>/stat")?
            .1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields
            .get(11..13)
            .ok_or("a short /proc/<pid>/stat")?
            .iter()
            .map(|f| f.parse::<u64>())
            .sum::<Result<u64, _>>()?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
