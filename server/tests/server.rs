//! End-to-end tests of the server through tokio-postgres: streaming while a query runs,
//! cancellation, disconnects, the extended protocol, and restarts.

use std::time::Duration;

use eddy_server::Server;
use futures::{StreamExt, pin_mut};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

mod common;
use common::{connect_with_socket, copy_lines, start, temp_dir, wait_for_no_tasks};

async fn connect(server: &Server) -> Client {
    connect_with_socket(server).await.0
}

async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn copy_to_stdout_streams_rows_while_the_query_runs_and_stops_on_drop() {
    let dir = temp_dir("stream");
    let server = start(&dir).await;
    let writer = connect(&server).await;
    let (reader, reader_socket) = connect_with_socket(&server).await;
    writer
        .batch_execute("CREATE TABLE events (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)")
        .await
        .unwrap();
    let stream = reader
        .copy_out("COPY (SELECT id * 2 FROM events WHERE id > 0) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(stream);
    for id in 1..=3 {
        writer
            .batch_execute(&format!(
                "INSERT INTO events VALUES ({id}, '2023-01-01 00:00:0{id}')"
            ))
            .await
            .unwrap();
        // Each row reaches the client while the (unbounded) query is still running.
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("row not streamed within 10 s")
            .expect("stream ended")
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&chunk).unwrap(),
            format!("{}\n", id * 2)
        );
    }
    assert!(server.engine().live_tasks() > 0);
    // The client goes away: the query stops and frees its tasks.
    drop(reader);
    reader_socket.abort();
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let dir = temp_dir("cancel");
    let server = start(&dir).await;
    let client = connect(&server).await;
    client
        .batch_execute("CREATE TABLE t (a BIGINT)")
        .await
        .unwrap();
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT a FROM t").await;
        (client, result)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.engine().live_tasks() > 0, "query should be running");
    token.cancel_query(NoTls).await.unwrap();
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("cancel did not end the query")
        .unwrap();
    let err = result.expect_err("a cancelled query fails");
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    wait_for_no_tasks(&server).await;
    // The connection is still usable.
    assert_eq!(
        rows(&client, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_stops_an_idle_query() {
    let dir = temp_dir("disconnect");
    let server = start(&dir).await;
    let (client, socket) = connect_with_socket(&server).await;
    client
        .batch_execute("CREATE TABLE t (a BIGINT)")
        .await
        .unwrap();
    // The query produces nothing; only the heartbeat can notice the client is gone.
    let query = tokio::spawn(async move { client.simple_query("SELECT a FROM t").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.engine().live_tasks() > 0);
    query.abort();
    socket.abort();
    let _ = query.await;
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn extended_protocol_with_typed_and_inferred_parameters() {
    let dir = temp_dir("extended");
    let server = start(&dir).await;
    let client = connect(&server).await;
    // Inferred from the cast: the statement describes $1 as int8.
    let stmt = client.prepare("SELECT $1::int8 + 1 AS n").await.unwrap();
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT8]);
    let row = client.query_one(&stmt, &[&41i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>("n"), 42);
    // Binary results of several types.
    let row = client
        .query_one(
            "SELECT true AS b, 1.5::float8 AS f, 'x' AS s, CAST('2023-05-06 16:51:00' AS TIMESTAMP) AS ts",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, f64>("f"), 1.5);
    assert_eq!(row.get::<_, &str>("s"), "x");
    let ts: chrono::NaiveDateTime = row.get("ts");
    assert_eq!(ts.to_string(), "2023-05-06 16:51:00");
    // Parameters into a push table and back out of a continuous query.
    client
        .batch_execute("CREATE TABLE p (id BIGINT, name VARCHAR)")
        .await
        .unwrap();
    let n = client
        .execute("INSERT INTO p VALUES ($1, $2)", &[&7i64, &"seven"])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = client
        .query_one("SELECT name FROM p WHERE id = $1 LIMIT 1", &[&7i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "seven");
    // Errors keep their SQLSTATE in the extended protocol too.
    let err = client.prepare("SELECT * FROM missing").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42P01");
    server.shutdown().await;
}

#[tokio::test]
async fn catalog_and_table_rows_survive_a_restart() {
    let dir = temp_dir("restart");
    let data = common::sql_tests_data().join("bids.csv");
    {
        let server = start(&dir).await;
        let client = connect(&server).await;
        client
            .batch_execute(&format!(
                "CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                 date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
                 WITH (connector = 'file', path = '{}', header = 'true', null_value = 'NULL');
                 CREATE TABLE t (a BIGINT, s VARCHAR);
                 INSERT INTO t VALUES (1, 'one'), (2, 'two');
                 CREATE TABLE gone (a INT);
                 DROP TABLE gone;",
                data.display()
            ))
            .await
            .unwrap();
        drop(client);
        server.shutdown().await;
    }
    let server = start(&dir).await;
    let client = connect(&server).await;
    let sources = rows(&client, "SHOW SOURCES").await;
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0][0].as_deref(), Some("bids"));
    let tables: Vec<_> = rows(&client, "SHOW TABLES")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(tables, vec![Some("t".to_string())]);
    assert_eq!(
        rows(&client, "SELECT a, s FROM t LIMIT 2").await,
        vec![
            vec![Some("1".into()), Some("one".into())],
            vec![Some("2".into()), Some("two".into())]
        ]
    );
    assert_eq!(rows(&client, "SELECT auction FROM bids").await.len(), 4);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn malformed_statements_never_break_the_server() {
    let dir = temp_dir("fuzz");
    let server = start(&dir).await;
    let client = connect(&server).await;
    let bad = [
        "",
        ";",
        "SELECT",
        "SELECT (",
        "SELECT ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1",
        "CREATE SOURCE",
        "CREATE SOURCE x (",
        "CREATE SOURCE x (a INT) WITH (",
        "CREATE SOURCE x (a INT) WITH (connector = )",
        "CREATE TABLE t (WATERMARK FOR)",
        "CREATE TABLE t (a INT, WATERMARK FOR a AS)",
        "DROP SOURCE",
        "SHOW",
        "INSERT INTO",
        "COPY",
        "COPY (SELECT 1) TO",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT 1e999999",
        "SELECT 9223372036854775807 + 1",
        "SELECT CAST('x' AS INT)",
        "SELECT $1",
        "FETCH 1 FROM nowhere",
        "CLOSE nowhere",
        "SET",
        "EXPLAIN",
        "SELECT * FROM TUMBLE(",
        "\u{0}",
        "SELECT '\u{1F600}'",
        "DECLARE c CURSOR FOR SELECT 1",
        "ROLLBACK TO SAVEPOINT x",
        "CREATE SOURCE s WITH (connector = 'nexmark', nexmark.table = 'nope')",
    ];
    for sql in bad {
        // Any answer is fine — an error or a result — as long as the server answers.
        let _ = tokio::time::timeout(Duration::from_secs(10), client.simple_query(sql))
            .await
            .unwrap_or_else(|_| panic!("no answer to {sql:?}"));
    }
    assert_eq!(
        rows(&client, "SELECT 7").await,
        vec![vec![Some("7".to_string())]]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn copy_from_stdin_appends_all_or_nothing() {
    use futures::SinkExt;
    let dir = temp_dir("copyin");
    let server = start(&dir).await;
    let client = connect(&server).await;
    client
        .batch_execute("CREATE TABLE t (a BIGINT, s VARCHAR, ts TIMESTAMP(3))")
        .await
        .unwrap();
    // Text format: tab separated, \N is NULL.
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"1\tone\t2023-01-01 00:00:00\n2\t\\N\t2023-01-01T00:00:01\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // CSV with a header and a column list; the missing column is NULL.
    let sink = client
        .copy_in("COPY t (s, a) FROM STDIN WITH (FORMAT csv, HEADER)")
        .await
        .unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"s,a\n\"three, with comma\",3\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    // A bad value fails the whole COPY with its line, and appends nothing.
    let sink = client
        .copy_in("COPY t FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"4,four,2023-01-01 00:00:04\nfive,5,2023-01-01 00:00:05\n",
    ))
    .await
    .unwrap();
    let err = sink.finish().await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22P02");
    assert!(db.message().contains("line 2"), "{}", db.message());
    assert_eq!(
        rows(&client, "SELECT a, s, ts FROM t LIMIT 3").await,
        vec![
            vec![
                Some("1".into()),
                Some("one".into()),
                Some("2023-01-01 00:00:00".into())
            ],
            vec![Some("2".into()), None, Some("2023-01-01 00:00:01".into())],
            vec![Some("3".into()), Some("three, with comma".into()), None],
        ]
    );
    let count = rows(&client, "SHOW TABLES").await;
    assert_eq!(
        count[0][3].as_deref(),
        Some("3"),
        "the failed COPY appended nothing"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_updating_aggregate_streams_its_changelog_with_an_op_column() {
    let dir = temp_dir("updating");
    let server = start(&dir).await;
    let writer = connect(&server).await;
    let reader = connect(&server).await;
    let follower = connect(&server).await;
    writer
        .batch_execute("CREATE TABLE bids (auction BIGINT, price BIGINT)")
        .await
        .unwrap();
    let query = "SELECT auction, count(*), sum(price) FROM bids GROUP BY auction";
    // Describe (extended protocol) reports the op column first, then Postgres-style names.
    let stmt = writer.prepare(query).await.unwrap();
    let columns: Vec<(&str, &tokio_postgres::types::Type)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_()))
        .collect();
    use tokio_postgres::types::Type;
    assert_eq!(
        columns,
        vec![
            ("op", &Type::TEXT),
            ("auction", &Type::INT8),
            ("count", &Type::INT8),
            ("sum", &Type::INT8)
        ]
    );
    // A cursor over one auction, fetched as rows arrive.
    follower
        .batch_execute(
            "BEGIN; DECLARE c CURSOR FOR SELECT auction, count(*) AS n FROM bids \
             WHERE auction = 2 GROUP BY auction",
        )
        .await
        .unwrap();
    let stream = reader
        .copy_out(&format!("COPY ({query}) TO STDOUT"))
        .await
        .unwrap();
    pin_mut!(stream);
    writer
        .batch_execute("INSERT INTO bids VALUES (1, 10)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut stream, 1).await, "+\t1\t1\t10\n");
    // An update: the old row is deleted, then the new one inserted.
    writer
        .batch_execute("INSERT INTO bids VALUES (1, 5)")
        .await
        .unwrap();
    assert_eq!(
        copy_lines(&mut stream, 2).await,
        "-\t1\t1\t10\n+\t1\t2\t15\n"
    );
    writer
        .batch_execute("INSERT INTO bids VALUES (2, 7)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut stream, 1).await, "+\t2\t1\t7\n");
    let fetched = follower.simple_query("FETCH 1 FROM c").await.unwrap();
    let mut names = Vec::new();
    let mut values = Vec::new();
    for m in fetched {
        if let SimpleQueryMessage::Row(r) = m {
            names = r.columns().iter().map(|c| c.name().to_string()).collect();
            values = (0..r.len())
                .map(|i| r.get(i).unwrap().to_string())
                .collect();
        }
    }
    assert_eq!(names, vec!["op", "auction", "n"]);
    assert_eq!(values, vec!["+", "2", "1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn deallocate_forgets_prepared_statements() {
    let dir = temp_dir("deallocate");
    let server = start(&dir).await;
    let client = connect(&server).await;
    let one = client.prepare("SELECT 1::BIGINT AS a").await.unwrap();
    let two = client.prepare("SELECT 2::BIGINT AS a").await.unwrap();
    assert_eq!(
        client.query_one(&one, &[]).await.unwrap().get::<_, i64>(0),
        1
    );
    // DEALLOCATE ALL forgets every prepared statement: using one again is 26000.
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    for statement in [&one, &two] {
        let err = client.query_one(statement, &[]).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("26000"), "{err:?}");
    }
    // Statements prepared afterwards work.
    let three = client.prepare("SELECT 3::BIGINT AS a").await.unwrap();
    assert_eq!(
        client
            .query_one(&three, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );
    let err = client
        .batch_execute("DEALLOCATE nothing_here")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("26000"), "{err:?}");
    server.shutdown().await;
}
