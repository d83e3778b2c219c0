//! Snapshots of EXPLAIN output and of error messages, so a change in either is a reviewed diff.

use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::session::{Engine, EngineConfig, Session, StatementResult};
use eddy_engine::sql::parser::parse_sql;

async fn session() -> Session {
    let engine = Engine::new(EngineConfig::default(), ConnectorRegistry::default(), None);
    let mut session = engine.new_session();
    run(
        &mut session,
        "CREATE TABLE bids (auction BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3), \
         WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)",
    )
    .await
    .unwrap();
    session
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
          Source: bids table, columns=[auction, price, channel], watermark=[date_time - INTERVAL '4' SECOND], emit=append
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
        UpdatingAggregate: keys=[bids.channel], aggregates=[count(Int64(1))], emit=updating, state=unbounded (one entry per distinct group)
          Source: bids table, columns=[channel], watermark=[date_time - INTERVAL '4' SECOND], emit=append
    ");
}

#[tokio::test]
async fn error_messages() {
    let mut s = session().await;
    let mut errors = String::new();
    for sql in [
        "SELECT nope FROM bids",
        "SELECT * FROM nope",
        "SELECT count(*) FROM (SELECT channel, count(*) AS n FROM bids GROUP BY channel) s",
        "SELECT * FROM TUMBLE((SELECT channel, max(date_time) AS t FROM bids GROUP BY channel), t, \
         INTERVAL '10' SECOND)",
        "SELECT channel, count(*) FROM bids GROUP BY channel LIMIT 3",
        "SELECT * FROM bids ORDER BY price",
        "SELECT * FROM bids a JOIN bids b ON a.auction = b.auction",
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
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        errors.push_str(&format!("{sql}\n  -> {e}\n"));
    }
    insta::assert_snapshot!(errors, @r#"
    SELECT nope FROM bids
      -> column "nope" does not exist
    SELECT * FROM nope
      -> relation "nope" does not exist
    SELECT count(*) FROM (SELECT channel, count(*) AS n FROM bids GROUP BY channel) s
      -> feature not supported: an aggregate over an updating result (its input, e.g. an aggregate without a window, is a changelog whose rows are retracted as they change); only projections and filters (WHERE, HAVING) may consume one
    SELECT * FROM TUMBLE((SELECT channel, max(date_time) AS t FROM bids GROUP BY channel), t, INTERVAL '10' SECOND)
      -> feature not supported: the window table function TUMBLE over an updating result (its input, e.g. an aggregate without a window, is a changelog whose rows are retracted as they change); only projections and filters (WHERE, HAVING) may consume one
    SELECT channel, count(*) FROM bids GROUP BY channel LIMIT 3
      -> feature not supported: LIMIT over an updating result (its input, e.g. an aggregate without a window, is a changelog whose rows are retracted as they change); only projections and filters (WHERE, HAVING) may consume one
    SELECT * FROM bids ORDER BY price
      -> feature not supported: ORDER BY on a stream (a stream has no end to sort at)
    SELECT * FROM bids a JOIN bids b ON a.auction = b.auction
      -> feature not supported: joins between streams without time bounds or windows (their result would be updating); supported: interval joins `ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '5' SECOND` (or with <, <=, >, >=) on the WATERMARK columns, and window joins of two identical window table functions `ON l.window_start = r.window_start AND l.window_end = r.window_end [AND keys]`
    CREATE SOURCE s (a INT) WITH (connector = 'nowhere')
      -> unknown connector 'nowhere'; connectors: none registered
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
      -> the time column "t" of TUMBLE is not a time attribute: use the WATERMARK FOR column of a source or table (passed through unchanged) or the window_time or window_end of a window
    SELECT window_start, count(*) FROM CUMULATE(bids, date_time, INTERVAL '1' SECOND, INTERVAL '10' SECOND) GROUP BY window_start
      -> feature not supported: a CUMULATE aggregate grouped without window_end (its windows share their start)
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
      WindowAggregate: HOP(slide=2s, size=10s) window=[window_start, window_end], keys=[bids.auction], aggregates=[count(Int64(1)), max(bids.price)], slices=2s, emit=on window close
        Project: bids.auction, bids.price, window_start, window_end
          Window: HOP(slide=2s, size=10s) on date_time, assigns=slices
            Source: bids table, columns=[auction, price, channel, date_time], watermark=[date_time - INTERVAL '4' SECOND], emit=append
    --
    WindowAggregate: TUMBLE(size=10s) window=[window_start], keys=[], aggregates=[sum(bids.price)], slices=windows, emit=on window close
      Filter: window_start > TimestampMillisecond(1577836800000, None)
        Project: bids.price, window_start
          Window: TUMBLE(size=10s) on date_time, emit=append
            Source: bids table, columns=[auction, price, channel, date_time], watermark=[date_time - INTERVAL '4' SECOND], emit=append
    --
    Project: bids.channel, window_start, window_end, count(Int64(1)) AS count(*)
      WindowAggregate: SESSION(gap=5s) window=[window_start, window_end], keys=[bids.channel], aggregates=[count(Int64(1))], slices=windows, emit=on window close
        Project: bids.channel, window_start, window_end
          Window: SESSION(gap=5s) on date_time, partition=[channel], emit=on window close
            Source: bids table, columns=[auction, price, channel, date_time], watermark=[date_time - INTERVAL '4' SECOND], emit=append
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
    insta::assert_snapshot!(unbounded, @"
    MatchRecognize: partition=[auction], order=[date_time], pattern=(A B+ C), one row per match, vectorized define=[B], per-match define=[C], state=unbounded (the pattern has an unbounded quantifier and no WITHIN), emit=on watermark
      Source: bids table, columns=[auction, price, date_time], watermark=[date_time - INTERVAL '4' SECOND], emit=append
    ");
    let bounded = run(
        &mut s,
        "EXPLAIN SELECT * FROM bids MATCH_RECOGNIZE (PARTITION BY auction ORDER BY date_time \
         MEASURES C.price AS top PATTERN (A B+? C) WITHIN INTERVAL '10' SECOND \
         DEFINE B AS B.price < PREV(B.price))",
    )
    .await
    .unwrap();
    insta::assert_snapshot!(bounded, @"
    MatchRecognize: partition=[auction], order=[date_time], pattern=(A B+? C), within=10s, one row per match, vectorized define=[B], per-match define=[], state=bounded, emit=on watermark
      Source: bids table, columns=[auction, price, date_time], watermark=[date_time - INTERVAL '4' SECOND], emit=append
    ");
}
