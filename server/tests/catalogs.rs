//! The Postgres catalogs and session time zone through tokio-postgres, the Rust driver: what a
//! Rust application or tool sees when it inspects Eddy (extended protocol, binary results).

mod common;

use chrono::{DateTime, Utc};
use eddy_server::Server;
use tokio_postgres::Client;

async fn connect(server: &Server) -> Client {
    common::connect_with_socket(server).await.0
}

const BIDS: &str = "CREATE TABLE bids (auction BIGINT, price BIGINT, channel VARCHAR, \
    date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)";

#[tokio::test]
async fn catalogs_describe_tables_and_views_with_postgres_types() {
    let dir = common::temp_dir("catalogs");
    let server = common::start(&dir).await;
    let client = connect(&server).await;
    client.batch_execute(BIDS).await.unwrap();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_auction AS \
             SELECT auction, count(*) AS n FROM bids GROUP BY auction",
        )
        .await
        .unwrap();

    // A prepared catalog query with a parameter, results in binary.
    let rows = client
        .query(
            "SELECT c.relname, c.relkind, n.nspname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 OR c.relname = $2 ORDER BY c.relname",
            &[&"bids", &"per_auction"],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("bids".into(), "r".into(), "public".into()),
            ("per_auction".into(), "m".into(), "public".into()),
        ]
    );

    // Columns as psql's \d shows them: format_type over pg_attribute, by regclass.
    let rows = client
        .query(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = 'bids'::regclass AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await
        .unwrap();
    let columns: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        columns,
        [
            ("auction".into(), "bigint".into()),
            ("price".into(), "bigint".into()),
            ("channel".into(), "text".into()),
            ("date_time".into(), "timestamp(3) without time zone".into()),
        ]
    );

    let rows = client
        .query(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name IN ('bids', 'per_auction') \
             ORDER BY table_name",
            &[],
        )
        .await
        .unwrap();
    let tables: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        tables,
        [
            ("bids".into(), "BASE TABLE".into()),
            ("per_auction".into(), "MATERIALIZED VIEW".into()),
        ]
    );

    // Functions tools call on connect.
    let row = client
        .query_one(
            "SELECT current_database(), current_schema(), pg_catalog.pg_get_userbyid(10), \
             pg_catalog.version()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "eddy");
    assert_eq!(row.get::<_, String>(1), "public");
    assert_eq!(row.get::<_, String>(2), "eddy");
    assert!(row.get::<_, String>(3).starts_with("PostgreSQL "));

    // A catalog query is a batch query: no streaming dataflow.
    let plan = common::text_rows(&client, "EXPLAIN SELECT relname FROM pg_catalog.pg_class").await;
    assert_eq!(plan[0][0], "Batch query (DataFusion):");

    // Dropped relations leave the catalogs.
    client
        .batch_execute("DROP MATERIALIZED VIEW per_auction; DROP TABLE bids")
        .await
        .unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relname IN ('bids', 'per_auction')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn timestamptz_text_follows_the_session_time_zone() {
    let dir = common::temp_dir("timezone");
    let server = common::start(&dir).await;
    let client = connect(&server).await;
    let query =
        "SELECT TIMESTAMPTZ '2024-01-15 12:00:00+00', TIMESTAMPTZ '2024-07-15 12:00:00.5+00'";
    assert_eq!(
        common::text_rows(&client, query).await,
        [["2024-01-15 12:00:00+00", "2024-07-15 12:00:00.5+00"]]
    );
    client
        .batch_execute("SET TimeZone = 'Europe/Paris'")
        .await
        .unwrap();
    // Text: local time and offset, winter and summer.
    assert_eq!(
        common::text_rows(&client, query).await,
        [["2024-01-15 13:00:00+01", "2024-07-15 14:00:00.5+02"]]
    );
    // Binary: the same instant, whatever the zone.
    let row = client.query_one(query, &[]).await.unwrap();
    let winter: DateTime<Utc> = row.get(0);
    assert_eq!(winter.to_rfc3339(), "2024-01-15T12:00:00+00:00");
    client
        .batch_execute("SET TimeZone = 'Asia/Kolkata'")
        .await
        .unwrap();
    assert_eq!(
        common::text_rows(&client, "SELECT TIMESTAMPTZ '2024-01-15 12:00:00+00'").await,
        [["2024-01-15 17:30:00+05:30"]]
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
