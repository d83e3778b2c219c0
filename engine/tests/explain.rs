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
async fn error_messages() {
    let mut s = session().await;
    let mut errors = String::new();
    for sql in [
        "SELECT nope FROM bids",
        "SELECT * FROM nope",
        "SELECT channel, count(*) FROM bids GROUP BY channel",
        "SELECT * FROM bids ORDER BY price",
        "SELECT * FROM bids a JOIN bids b ON a.auction = b.auction",
        "CREATE SOURCE s (a INT) WITH (connector = 'nowhere')",
        "CREATE TABLE w (a INT, WATERMARK FOR a AS a)",
        "DECLARE c CURSOR FOR SELECT 1",
    ] {
        let e = run(&mut s, sql).await.unwrap_err();
        errors.push_str(&format!("{sql}\n  -> {e}\n"));
    }
    insta::assert_snapshot!(errors, @r#"
    SELECT nope FROM bids
      -> column "nope" does not exist
    SELECT * FROM nope
      -> relation "nope" does not exist
    SELECT channel, count(*) FROM bids GROUP BY channel
      -> feature not supported: aggregation over a stream without a window (an updating result)
    SELECT * FROM bids ORDER BY price
      -> feature not supported: ORDER BY on a stream (a stream has no end to sort at)
    SELECT * FROM bids a JOIN bids b ON a.auction = b.auction
      -> feature not supported: joins between streams
    CREATE SOURCE s (a INT) WITH (connector = 'nowhere')
      -> unknown connector 'nowhere'; connectors: none registered
    CREATE TABLE w (a INT, WATERMARK FOR a AS a)
      -> WATERMARK column "a" must be a TIMESTAMP, not Int32
    DECLARE c CURSOR FOR SELECT 1
      -> DECLARE CURSOR can only be used in transaction blocks
    "#);
}
