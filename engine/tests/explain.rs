//! Snapshots of EXPLAIN output and of error messages, so a change in either is a reviewed diff.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{
    ConnectorOptions, ConnectorRegistry, ConnectorResult, SourceConnector, SourceContext,
    SourceReader,
};
use eddy_engine::session::{Engine, EngineConfig, Session, StatementResult};
use eddy_engine::sql::parser::parse_sql;

/// A session with the push table `bids` (unbounded) and the bounded source `bid_log`, which
/// reads the eight rows of [`BidLog`] once.
async fn session() -> Session {
    let mut connectors = ConnectorRegistry::default();
    connectors.register_source(Arc::new(BidLog));
    let engine = Engine::new(EngineConfig::default(), connectors, None);
    let mut session = engine.new_session();
    run(
        &mut session,
        "CREATE TABLE bids (auction BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3), \
         WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND); \
         CREATE TABLE asks (auction BIGINT, price BIGINT, date_time TIMESTAMP(3), \
         WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND); \
         CREATE SOURCE bid_log (auction BIGINT, price BIGINT, channel VARCHAR, \
         date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
         WITH (connector = 'bid_log')",
    )
    .await
    .unwrap();
    session
}

/// A bounded source of eight bids, `(auction, price, channel, seconds after midnight)`:
/// auction 1 in [0 s, 10 s) three times and in [10 s, 20 s) once, auction 2 in [0 s, 10 s)
/// twice and in [20 s, 30 s) twice.
struct BidLog;

const BID_LOG: [(i64, i64, &str, i64); 8] = [
    (1, 10, "web", 1),
    (2, 20, "app", 2),
    (1, 11, "web", 3),
    (1, 12, "app", 5),
    (2, 21, "web", 8),
    (1, 13, "web", 12),
    (2, 22, "app", 21),
    (2, 23, "web", 25),
];

impl SourceConnector for BidLog {
    fn name(&self) -> &'static str {
        "bid_log"
    }

    fn validate(&self, _: &SchemaRef, _: &ConnectorOptions) -> ConnectorResult<()> {
        Ok(())
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let batch = RecordBatch::try_new(
            Arc::clone(&ctx.schema),
            vec![
                Arc::new(Int64Array::from_iter_values(BID_LOG.iter().map(|b| b.0))),
                Arc::new(Int64Array::from_iter_values(BID_LOG.iter().map(|b| b.1))),
                Arc::new(StringArray::from_iter_values(BID_LOG.iter().map(|b| b.2))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    BID_LOG.iter().map(|b| b.3 * 1_000),
                )),
            ],
        )?;
        let batch = match &ctx.projection {
            Some(columns) => batch.project(columns)?,
            None => batch,
        };
        ctx.metrics.add_rows(batch.num_rows() as u64);
        Ok(SourceReader {
            stream: Box::pin(futures::stream::iter([Ok(batch)])),
            bounded: true,
            position: None,
            partitions: None,
        })
    }
}

async fn run(session: &mut Session, sql: &str) -> Result<String, String> {
    let mut out = String::new();
    for statement in parse_sql(sql).map_err(|e| e.to_string())? {
        match session
            .execute(&statement, &[])
            .await
            .map_err(|e| e.to_string())?
        {
            StatementResult::Rows(mut rows) => {
                while let Some(batch) = rows.next_batch().await.map_err(|e| e.to_string())? {
                    let column = datafusion::arrow::compute::cast(
                        batch.column(0),
                        &datafusion::arrow::datatypes::DataType::Utf8,
                    )
                    .map_err(|e| e.to_string())?;
                    let column = column
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .ok_or("not a string column")?;
                    for line in column.iter().flatten() {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            StatementResult::Command(tag) => out.push_str(&tag.command),
            _ => out.push_str("(other)"),
        }
    }
    Ok(out)
}

#[tokio::test]
async fn explain_shows_the_streaming_plan() {
    let mut s = session().await;
    let plan = run(
        &mut s,
        "EXPLAIN SELECT auction, price * 2 AS double_price FROM bids WHERE channel = 'web' LIMIT 10",
    )
    .await
    .unwrap();
    insta::assert_snapshot!(plan, @r#"
    Project: bids.auction, bids.price * Int64(2) AS double_price
      Limit: skip=0, fetch=10
        Filter: bids.channel = Utf8("web")
          Source: bids table, columns=[auction, price, channel], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    "#);
}

#[tokio::test]
async fn explain_shows_an_updating_aggregate() {
    let mut s = session().await;
    let plan = run(
        &mut s,
        "EXPLAIN SELECT channel, n * 2 AS twice FROM (SELECT channel, count(*) AS n \
         FROM bids GROUP BY channel) WHERE n > 1",
    )
    .await
    .unwrap();
    insta::assert_snapshot!(plan, @r"
    Project: __op, bids.channel, count(Int64(1)) * Int64(2) AS twice
      Filter: count(Int64(1)) > Int64(1)
        UpdatingAggregate: keys=[bids.channel], aggregates=[count(Int64(1))], emit=updating, watermark=forwarded unchanged, state=unbounded (groups: one entry per distinct group [bids.channel])
          Source: bids table, columns=[channel], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    ");
}

#[tokio::test]
async fn error_messages() {
    let mut s = session().await;
    let mut errors = String::new();
    for sql in [
        "SELECT nope FROM bids",
        "SELECT * FROM nope",
        "SELECT median(n) FROM (SELECT channel, count(*) AS n FROM bids GROUP BY channel) s",
        "SELECT * FROM TUMBLE((SELECT channel, max(date_time) AS t FROM bids GROUP BY channel), t, \
         INTERVAL '10' SECOND)",
        "SELECT channel, count(*) FROM bids GROUP BY channel LIMIT 3 OFFSET 1",
        "SELECT * FROM bids ORDER BY price",
        "SELECT * FROM bids a CROSS JOIN bids b",
        "CREATE SOURCE s (a INT) WITH (connector = 'nowhere')",
        "CREATE TABLE w (a INT, WATERMARK FOR a AS a)",
        "DECLARE c CURSOR FOR SELECT 1",
        "SELECT * FROM TUMBLE(bids, auction, INTERVAL '10' SECOND)",
        "SELECT * FROM TUMBLE(bids, date_time)",
        "SELECT * FROM TUMBLE(bids, nope, INTERVAL '10' SECOND)",
        "SELECT * FROM TUMBLE(nope, date_time, INTERVAL '10' SECOND)",
        "SELECT * FROM HOP(bids, date_time, INTERVAL '1' MONTH, INTERVAL '2' MONTH)",
        "SELECT * FROM TUMBLE(bids, date_time, INTERVAL '0' SECOND)",
        "SELECT * FROM TUMBLE(bids, date_time, 10)",
        "SELECT * FROM TUMBLE((SELECT date_time + INTERVAL '1' SECOND AS t FROM bids), t, \
         INTERVAL '10' SECOND)",
        "SELECT window_start, count(*) FROM CUMULATE(bids, date_time, INTERVAL '1' SECOND, \
         INTERVAL '10' SECOND) GROUP BY window_start",
        "SELECT auction, sum(price) OVER (PARTITION BY auction ORDER BY price) FROM bids",
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        errors.push_str(&format!("{sql}\n  -> {e}\n"));
    }
    insta::assert_snapshot!(errors, @r#"
    SELECT nope FROM bids
      -> column "nope" does not exist
    SELECT * FROM nope
      -> relation "nope" does not exist
    SELECT median(n) FROM (SELECT channel, count(*) AS n FROM bids GROUP BY channel) s
      -> feature not supported: median() over an updating result: an aggregate over a changelog must retract the rows it deletes, which count, min, max, sum, avg, mean, stddev, stddev_pop, stddev_samp, var, var_pop, var_samp, var_population, var_sample do
    SELECT * FROM TUMBLE((SELECT channel, max(date_time) AS t FROM bids GROUP BY channel), t, INTERVAL '10' SECOND)
      -> feature not supported: the window table function TUMBLE over an updating result (its input, e.g. an aggregate without a window, or a window aggregate with EMIT ON UPDATE or allowed.lateness, is a changelog whose rows are retracted as they change); only projections, filters (WHERE, HAVING), aggregates without a window, Top-N and regular joins may consume one
    SELECT channel, count(*) FROM bids GROUP BY channel LIMIT 3 OFFSET 1
      -> feature not supported: OFFSET over an updating result (its input, e.g. an aggregate without a window, or a window aggregate with EMIT ON UPDATE or allowed.lateness, is a changelog whose rows are retracted as they change); only projections, filters (WHERE, HAVING), aggregates without a window, Top-N and regular joins may consume one
    SELECT * FROM bids ORDER BY price
      -> feature not supported: ORDER BY on a stream (a stream has no end to sort at)
    SELECT * FROM bids a CROSS JOIN bids b
      -> feature not supported: joins between streams without an equality of the two sides (a cross join), time bounds or windows; a regular join needs `ON a.k = b.k`, an interval join bounds the WATERMARK columns (`a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts`), a window join equates window_start and window_end of identical window functions
    CREATE SOURCE s (a INT) WITH (connector = 'nowhere')
      -> unknown connector 'nowhere'; connectors: bid_log
    CREATE TABLE w (a INT, WATERMARK FOR a AS a)
      -> WATERMARK column "a" must be a TIMESTAMP, not Int32
    DECLARE c CURSOR FOR SELECT 1
      -> DECLARE CURSOR can only be used in transaction blocks
    SELECT * FROM TUMBLE(bids, auction, INTERVAL '10' SECOND)
      -> the time column "auction" of TUMBLE must be a TIMESTAMP, not Int64
    SELECT * FROM TUMBLE(bids, date_time)
      -> wrong number of arguments for TUMBLE: expected TUMBLE(table, time_column, size [, offset])
    SELECT * FROM TUMBLE(bids, nope, INTERVAL '10' SECOND)
      -> column "nope" does not exist
    SELECT * FROM TUMBLE(nope, date_time, INTERVAL '10' SECOND)
      -> relation "nope" does not exist
    SELECT * FROM HOP(bids, date_time, INTERVAL '1' MONTH, INTERVAL '2' MONTH)
      -> HOP sizes in months or years are not supported (months differ in length)
    SELECT * FROM TUMBLE(bids, date_time, INTERVAL '0' SECOND)
      -> the sizes of TUMBLE must be positive intervals
    SELECT * FROM TUMBLE(bids, date_time, 10)
      -> expected an interval such as INTERVAL '10' SECOND as argument of TUMBLE
    SELECT * FROM TUMBLE((SELECT date_time + INTERVAL '1' SECOND AS t FROM bids), t, INTERVAL '10' SECOND)
      -> the time column "t" of TUMBLE is not a time attribute: use the WATERMARK FOR column of a source or table (passed through unchanged), the window_time or window_end of a window, or a column defined as PROCTIME()
    SELECT window_start, count(*) FROM CUMULATE(bids, date_time, INTERVAL '1' SECOND, INTERVAL '10' SECOND) GROUP BY window_start
      -> feature not supported: a CUMULATE aggregate grouped without window_end (its windows share their start)
    SELECT auction, sum(price) OVER (PARTITION BY auction ORDER BY price) FROM bids
      -> feature not supported: an ORDER BY other than one time attribute (the WATERMARK FOR column or a window's window_time) ascending in an OVER window on a stream: OVER aggregations take aggregates, LAG and LEAD over (PARTITION BY ... ORDER BY <time attribute> ASC ROWS BETWEEN n PRECEDING AND CURRENT ROW | RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW), the same window for every function; ROW_NUMBER(), RANK() and DENSE_RANK() only as a Top-N (filtered by `rn <= N`, `rn < N` or `rn = 1` in an outer query)
    "#);
}

#[tokio::test]
async fn explain_window_plans() {
    let mut s = session().await;
    let mut plans = String::new();
    for sql in [
        // HOP aggregates once per 2 s slice; the TVF tags rows with slices.
        "EXPLAIN SELECT auction, window_start, window_end, count(*), max(price) \
         FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
        // A filter on a window column needs whole windows: no slicing.
        "EXPLAIN SELECT window_start, sum(price) FROM (SELECT * FROM TUMBLE(bids, date_time, \
         INTERVAL '10' SECOND) WHERE window_start > TIMESTAMP '2020-01-01 00:00:00') \
         GROUP BY window_start",
        "EXPLAIN SELECT channel, window_start, window_end, count(*) \
         FROM SESSION(bids, date_time, INTERVAL '5' SECOND, channel) \
         GROUP BY channel, window_start, window_end",
    ] {
        plans.push_str(&run(&mut s, sql).await.unwrap());
        plans.push_str("--\n");
    }
    insta::assert_snapshot!(plans, @r"
    Project: bids.auction, window_start, window_end, count(Int64(1)) AS count(*), max(bids.price)
      WindowAggregate: HOP(slide=2s, size=10s) window=[window_start, window_end], keys=[bids.auction], aggregates=[count(Int64(1)), max(bids.price)], slices=2s, emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open slice and key [slice, bids.auction])
        Project: bids.auction, bids.price, window_start, window_end
          Window: HOP(slide=2s, size=10s) on date_time, assigns=slices
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    WindowAggregate: TUMBLE(size=10s) window=[window_start], keys=[], aggregates=[sum(bids.price)], slices=windows, emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open window and key [window])
      Filter: window_start > TimestampMillisecond(1577836800000, None)
        Project: bids.price, window_start
          Window: TUMBLE(size=10s) on date_time, emit=append
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    Project: bids.channel, window_start, window_end, count(Int64(1)) AS count(*)
      WindowAggregate: SESSION(gap=5s) window=[window_start, window_end], keys=[bids.channel], aggregates=[count(Int64(1))], slices=windows, emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open window and key [window, bids.channel])
        Project: bids.channel, window_start, window_end
          Window: SESSION(gap=5s) on date_time, partition=[channel], emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (rows: rows of kept sessions [channel, session])
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    ");
}

#[tokio::test]
async fn explain_match_recognize() {
    let mut s = session().await;
    let unbounded = run(
        &mut s,
        "EXPLAIN SELECT * FROM bids MATCH_RECOGNIZE (PARTITION BY auction ORDER BY date_time \
         MEASURES LAST(B.price) AS bottom ONE ROW PER MATCH PATTERN (A B+ C) \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > LAST(B.price))",
    )
    .await
    .unwrap();
    insta::assert_snapshot!(unbounded, @r"
    MatchRecognize: partition=[auction], order=[date_time], pattern=(A B+ C), one row per match, vectorized define=[B], per-match define=[C], emit=on watermark, watermark=forwarded after emitting, state=unbounded (partitions: a matcher's position per partition key [auction], partition_rows: rows of open matches [auction, row]; the pattern has an unbounded quantifier and no WITHIN)
      Source: bids table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    ");
    let bounded = run(
        &mut s,
        "EXPLAIN SELECT * FROM bids MATCH_RECOGNIZE (PARTITION BY auction ORDER BY date_time \
         MEASURES C.price AS top PATTERN (A B+? C) WITHIN INTERVAL '10' SECOND \
         DEFINE B AS B.price < PREV(B.price))",
    )
    .await
    .unwrap();
    insta::assert_snapshot!(bounded, @r"
    MatchRecognize: partition=[auction], order=[date_time], pattern=(A B+? C), within=10s, one row per match, vectorized define=[B], per-match define=[], emit=on watermark, watermark=forwarded after emitting, state=bounded by watermark (partition_rows: rows of open matches [auction, row]); unbounded (partitions: a matcher's position per partition key [auction])
      Source: bids table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    ");
}

#[tokio::test]
async fn explain_joins_and_unions() {
    let mut s = session().await;
    let mut plans = String::new();
    for sql in [
        // The join holds its watermark back by the wider bound (5 s), so padded rows it emits
        // late are not late downstream.
        "EXPLAIN SELECT b.auction, b.price, a.price FROM bids b LEFT JOIN asks a \
         ON b.auction = a.auction \
         AND a.date_time BETWEEN b.date_time - INTERVAL '5' SECOND AND b.date_time + INTERVAL '2' SECOND",
        "EXPLAIN SELECT b.auction, b.window_start, b.price, a.price \
         FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) b \
         JOIN TUMBLE(asks, date_time, INTERVAL '10' SECOND) a \
         ON b.auction = a.auction AND b.window_start = a.window_start AND b.window_end = a.window_end",
        "EXPLAIN SELECT auction, price, date_time FROM bids UNION ALL \
         SELECT auction, price, date_time FROM asks",
    ] {
        plans.push_str(&run(&mut s, sql).await.unwrap());
        plans.push_str("--\n");
    }
    insta::assert_snapshot!(plans, @r"
    Project: b.auction, b.price, a.price
      IntervalJoin: Left on [b.auction = a.auction], date_time - date_time in [-2s, 5s], emit=append, watermark=min(inputs) - 5s (held back by the interval), state=bounded by watermark (left_rows: rows within the interval [b.auction, event time], right_rows: rows within the interval [a.auction, event time])
        Source: bids table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
        Source: asks table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '1' SECOND]
    --
    Project: b.auction, b.window_start, b.price, a.price
      WindowJoin: Inner TUMBLE(size=10s) on [window, b.auction = a.auction], emit=on window close, watermark=min(inputs), forwarded after emitting, state=bounded by watermark (left_rows: rows per open window [b.auction, window], right_rows: rows per open window [a.auction, window])
        Project: bids.auction, bids.price, window_start, window_end
          Window: TUMBLE(size=10s) on date_time, emit=append
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
        Project: asks.auction, asks.price, window_start, window_end
          Window: TUMBLE(size=10s) on date_time, emit=append
            Source: asks table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '1' SECOND]
    --
    Union: 2 inputs, watermark=min(inputs)
      Source: bids table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
      Source: asks table, columns=[auction, price, date_time], emit=append, watermark=[date_time - INTERVAL '1' SECOND]
    --
    ");
}

#[tokio::test]
async fn explain_at_parallelism_2_shows_how_rows_reach_the_instances() {
    let mut s = session().await;
    run(&mut s, "SET parallelism = 2").await.unwrap();
    let mut plans = String::new();
    for sql in [
        // Keyed: a hash exchange on the group key; the projections below run per channel.
        "EXPLAIN SELECT auction, window_start, count(*) \
         FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end",
        // No key to spread rows by: one instance.
        "EXPLAIN SELECT window_start, count(*) \
         FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end",
        "EXPLAIN SELECT b.auction FROM bids b JOIN asks a ON b.auction = a.auction \
         AND a.date_time BETWEEN b.date_time - INTERVAL '5' SECOND AND b.date_time",
        "EXPLAIN SELECT * FROM bids LIMIT 3",
    ] {
        plans.push_str(&run(&mut s, sql).await.unwrap());
        plans.push_str("--\n");
    }
    insta::assert_snapshot!(plans, @r"
    Project: bids.auction, window_start, count(Int64(1)) AS count(*), distribution=per channel
      WindowAggregate: TUMBLE(size=10s) window=[window_start, window_end], keys=[bids.auction], aggregates=[count(Int64(1))], slices=10s, distribution=hash(bids.auction), emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open slice and key [slice, bids.auction])
        Project: bids.auction, window_start, window_end, distribution=per channel
          Window: TUMBLE(size=10s) on date_time, assigns=slices, distribution=per channel
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    Project: window_start, count(Int64(1)) AS count(*), distribution=per channel
      WindowAggregate: TUMBLE(size=10s) window=[window_start, window_end], keys=[], aggregates=[count(Int64(1))], slices=10s, distribution=single, emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open slice and key [slice])
        Project: window_start, window_end, distribution=per channel
          Window: TUMBLE(size=10s) on date_time, assigns=slices, distribution=per channel
            Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    Project: b.auction, distribution=per channel
      IntervalJoin: Inner on [b.auction = a.auction], date_time - date_time in [0s, 5s], distribution=hash(left: b.auction; right: a.auction), emit=append, watermark=min(inputs) - 5s (held back by the interval), state=bounded by watermark (left_rows: rows within the interval [b.auction, event time], right_rows: rows within the interval [a.auction, event time])
        Source: bids table, columns=[auction, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
        Source: asks table, columns=[auction, date_time], emit=append, watermark=[date_time - INTERVAL '1' SECOND]
    --
    Limit: skip=0, fetch=3, distribution=single
      Limit: skip=0, fetch=3, distribution=single
        Source: bids table, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND]
    --
    ");
}

/// `count(*)` per auction and 10 s window over [`BID_LOG`]: (1, [0, 10)) 3, (2, [0, 10)) 2,
/// (1, [10, 20)) 1, (2, [20, 30)) 2: four rows.
const BID_COUNTS: &str = "SELECT auction, window_start, count(*) AS bids \
    FROM TUMBLE(bid_log, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end";

#[tokio::test]
async fn explain_analyze_runs_a_bounded_query_and_shows_what_each_operator_did() {
    let mut s = session().await;
    let plan = run(&mut s, &format!("EXPLAIN ANALYZE {BID_COUNTS}"))
        .await
        .unwrap();
    // The source read 8 rows; the aggregate took them and emitted 4; the bounded input ended,
    // so every watermark reached the end and no state is left.
    insta::assert_snapshot!(plan, @r"
    Project: bid_log.auction, window_start, count(Int64(1)) AS count(*) AS bids (actual: instances=1, rows_in=4, rows_out=4, state_rows=0, state_bytes=0, watermark=end)
      WindowAggregate: TUMBLE(size=10s) window=[window_start, window_end], keys=[bid_log.auction], aggregates=[count(Int64(1))], slices=10s, emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open slice and key [slice, bid_log.auction]) (actual: instances=1, rows_in=8, rows_out=4, state_rows=0, state_bytes=0, watermark=end)
        Project: bid_log.auction, window_start, window_end (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
          Window: TUMBLE(size=10s) on date_time, assigns=slices (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
            Source: bid_log connector=bid_log, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND] (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
    ");

    run(&mut s, "SET parallelism = 2").await.unwrap();
    let plan = run(&mut s, &format!("EXPLAIN ANALYZE {BID_COUNTS}"))
        .await
        .unwrap();
    // Two instances of the aggregate, fed by a hash exchange: the same totals.
    insta::assert_snapshot!(plan, @r"
    Project: bid_log.auction, window_start, count(Int64(1)) AS count(*) AS bids, distribution=per channel (actual: instances=2, rows_in=4, rows_out=4, state_rows=0, state_bytes=0, watermark=end)
      WindowAggregate: TUMBLE(size=10s) window=[window_start, window_end], keys=[bid_log.auction], aggregates=[count(Int64(1))], slices=10s, distribution=hash(bid_log.auction), emit=on window close, watermark=forwarded after emitting, state=bounded by watermark (groups: aggregates per open slice and key [slice, bid_log.auction]) (actual: instances=2, rows_in=8, rows_out=4, state_rows=0, state_bytes=0, watermark=end)
        Project: bid_log.auction, window_start, window_end, distribution=per channel (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
          Window: TUMBLE(size=10s) on date_time, assigns=slices, distribution=per channel (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
            Source: bid_log connector=bid_log, columns=[auction, price, channel, date_time], emit=append, watermark=[date_time - INTERVAL '4' SECOND] (actual: instances=1, rows_in=8, rows_out=8, state_rows=0, state_bytes=0, watermark=end)
    ");
}

#[tokio::test]
async fn explain_analyze_refuses_a_query_that_never_ends() {
    let mut s = session().await;
    let mut errors = String::new();
    for sql in [
        "EXPLAIN ANALYZE SELECT * FROM bids",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN ANALYZE INSERT INTO bids VALUES (1, 1, 'web', TIMESTAMP '2024-01-01 00:00:00')",
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        errors.push_str(&format!("{sql}\n  -> {e}\n"));
    }
    insta::assert_snapshot!(errors, @r#"
    EXPLAIN ANALYZE SELECT * FROM bids
      -> feature not supported: EXPLAIN ANALYZE of a query over an unbounded source ("bids"): it would never end; EXPLAIN ANALYZE MATERIALIZED VIEW v shows the figures of a running view
    EXPLAIN ANALYZE SELECT 1
      -> feature not supported: EXPLAIN ANALYZE of a batch query (one that reads no source or table)
    EXPLAIN ANALYZE INSERT INTO bids VALUES (1, 1, 'web', TIMESTAMP '2024-01-01 00:00:00')
      -> feature not supported: EXPLAIN of statements other than queries
    "#);
}

#[tokio::test]
async fn query_metrics_sum_up_a_finished_query() {
    let mut s = session().await;
    let statement = parse_sql(BID_COUNTS).unwrap().remove(0);
    let StatementResult::Rows(mut output) = s.execute(&statement, &[]).await.unwrap() else {
        panic!("a query returns rows");
    };
    let mut rows = 0;
    while let Some(batch) = output.next_batch().await.unwrap() {
        rows += batch.num_rows();
    }
    let metrics = output.metrics().unwrap();
    assert_eq!(rows, 4);
    assert_eq!(metrics.rows_in(), 8, "the source read every row");
    assert_eq!(metrics.rows_out(), 4, "what the client received");
    assert_eq!(
        metrics.output_watermark(),
        Some(i64::MAX),
        "the input ended"
    );
    assert_eq!(
        metrics.state_bytes(),
        0,
        "every window fired and freed its state"
    );
}

#[tokio::test]
async fn query_metrics_follow_a_running_query() {
    let mut s = session().await;
    let statement = parse_sql(
        "SELECT auction, window_start, count(*) FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
    )
    .unwrap()
    .remove(0);
    let StatementResult::Rows(output) = s.execute(&statement, &[]).await.unwrap() else {
        panic!("a query returns rows");
    };
    let metrics = Arc::clone(output.metrics().unwrap());
    assert_eq!(metrics.output_watermark(), None, "no row yet");
    // The state figures follow within the refresh period (100 ms), with no further message.
    run(
        &mut s,
        "INSERT INTO bids VALUES (1, 10, 'web', TIMESTAMP '2024-01-01 00:00:01'), \
         (2, 20, 'app', TIMESTAMP '2024-01-01 00:00:02'), \
         (1, 11, 'web', TIMESTAMP '2024-01-01 00:00:09')",
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // 00:00:09 - 4 s: the window [00:00:00, 00:00:10) is still open and holds its two keys.
    let expected = 1_704_067_205_000_000_000;
    while metrics.output_watermark() != Some(expected) || metrics.state_bytes() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows in {}, watermark {:?}, state bytes {}",
            metrics.rows_in(),
            metrics.output_watermark(),
            metrics.state_bytes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.rows_in(), 3);
    assert_eq!(metrics.rows_out(), 0, "no window closed");
    drop(output);
}
