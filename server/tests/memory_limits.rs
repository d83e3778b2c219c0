//! Memory limits through SQL: `SET max_state_bytes`, a job's `WITH (max.state.bytes = ...)`
//! and the server's `--max-memory`. A query whose operator state would pass its limit fails
//! with SQLSTATE 53200 naming the operator; its dataflow is dropped and its memory returned;
//! the session, other sessions' queries and the server go on. State the watermark frees never
//! counts: a window query reads far more than its limit's worth of rows without failing. A
//! materialized view's rows count against its job's limit too: a view that grows past it fails
//! and gives its rows back.

use std::time::Duration;

use futures::pin_mut;
use tokio_postgres::Client;
mod common;
use common::{
    connect_with_socket, copy_lines, start, start_configured, temp_dir, text_rows,
    wait_for_no_tasks,
};

/// A bounded source of `n` distinct keys (1..=n): grouping by `id` keeps one group per row.
fn keys_source(name: &str, n: u64) -> String {
    format!(
        "CREATE SOURCE {name} (id BIGINT) WITH (connector = 'datagen', rows-per-second = '0', \
         fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '{n}')"
    )
}

/// 300,000 Nexmark events (276,000 bids, about 30 s of event time) with a watermark.
const BIDS: &str = "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
     WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '300000')";

/// The SQLSTATE and message of a failed statement.
async fn failure(client: &Client, sql: &str) -> (String, String) {
    let run = client.simple_query(sql);
    let e = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the query neither failed nor ended")
        .expect_err("the query should fail");
    let db = e.as_db_error().expect("a database error");
    (db.code().code().to_string(), db.message().to_string())
}

/// Waits (bounded) until the engine's operator state is at most `bytes`.
async fn wait_for_state_at_most(server: &eddy_server::Server, bytes: usize) {
    for _ in 0..600 {
        if server.engine().state_bytes() <= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the engine still holds {} bytes of state",
        server.engine().state_bytes()
    );
}

#[tokio::test]
async fn a_query_over_max_state_bytes_fails_and_everything_else_goes_on() {
    let dir = temp_dir("memory-query-limit");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let (other, other_socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "{}; {}; CREATE TABLE clicks (user_id INT)",
            keys_source("many", 1_000_000),
            keys_source("few", 100)
        ))
        .await
        .unwrap();

    // Bad values are refused with 22023 and leave the setting alone.
    let e = client
        .batch_execute("SET max_state_bytes = 'lots'")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22023");
    assert!(
        db.message().contains("not a memory size"),
        "{}",
        db.message()
    );
    assert_eq!(
        text_rows(&client, "SHOW max_state_bytes").await,
        [["unlimited"]]
    );

    // Another session's query runs beside it, and must not notice.
    let following = other
        .copy_out("COPY (SELECT user_id, count(*) FROM clicks GROUP BY user_id) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(following);
    client
        .batch_execute("INSERT INTO clicks VALUES (1)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut following, 1).await, "+\t1\t1\n");

    client
        .batch_execute("SET max_state_bytes = '1MB'")
        .await
        .unwrap();
    assert_eq!(text_rows(&client, "SHOW max_state_bytes").await, [["1MB"]]);
    let (code, message) = failure(&client, "SELECT id, count(*) FROM many GROUP BY id").await;
    assert_eq!(code, "53200", "{message}");
    assert!(
        message.starts_with("operator UpdatingAggregate instance 0 holds ")
            && message.ends_with("of state, over max_state_bytes 1 MB"),
        "{message}"
    );
    // Its dataflow is gone and its memory returned: what is left is the other query's.
    wait_for_state_at_most(&server, 64 * 1024).await;

    // The same session runs a query within the limit.
    let rows = text_rows(&client, "SELECT id, count(*) FROM few GROUP BY id").await;
    assert_eq!(rows.len(), 100, "{rows:?}");
    assert!(rows.iter().all(|r| r.last().unwrap() == "1"), "{rows:?}");
    // The other session's query went on.
    client
        .batch_execute("INSERT INTO clicks VALUES (1)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut following, 2).await, "-\t1\t1\n+\t1\t2\n");

    // RESET lifts the limit for the next queries.
    client.batch_execute("RESET max_state_bytes").await.unwrap();
    assert_eq!(
        text_rows(&client, "SHOW max_state_bytes").await,
        [["unlimited"]]
    );

    drop(other);
    other_socket.abort();
    wait_for_no_tasks(&server).await;
    assert_eq!(server.engine().state_bytes(), 0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn state_the_watermark_frees_never_counts() {
    let dir = temp_dir("memory-watermark");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client.batch_execute(BIDS).await.unwrap();
    client
        .batch_execute("SET max_state_bytes = '256kB'")
        .await
        .unwrap();
    // 276,000 bids (tens of MB) pass through one-second windows: each window's state is
    // freed when the watermark passes its end, so the state stays far below 256 kB.
    let rows = text_rows(
        &client,
        "SELECT window_start, count(*) AS bids, max(price) \
         FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
    )
    .await;
    let total: u64 = rows.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert!(rows.len() >= 25, "{} windows", rows.len());
    assert!(total > 250_000, "{total} bids counted");
    // The same limit stops a query whose state only grows (about a group per bid).
    let (code, message) = failure(
        &client,
        "SELECT auction, bidder, price, count(*) FROM bids GROUP BY auction, bidder, price",
    )
    .await;
    assert_eq!(code, "53200", "{message}");
    assert!(message.contains("over max_state_bytes 256 kB"), "{message}");
    wait_for_no_tasks(&server).await;
    assert_eq!(server.engine().state_bytes(), 0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until job `name` is no longer running; its status and error.
async fn job_outcome(client: &Client, name: &str) -> (String, String) {
    let sql = format!("SELECT status, error FROM eddy_jobs WHERE name = '{name}'");
    for _ in 0..2400 {
        let rows = text_rows(client, &sql).await;
        if let Some(row) = rows.first()
            && row[0] != "running"
        {
            return (row[0].clone(), row[1].clone());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {name} still running");
}

#[tokio::test]
async fn a_view_job_over_its_max_state_bytes_is_listed_failed() {
    let dir = temp_dir("memory-view-limit");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&keys_source("many", 1_000_000))
        .await
        .unwrap();
    let e = client
        .batch_execute(
            "CREATE MATERIALIZED VIEW bad WITH (max.state.bytes = '-1') AS \
             SELECT id, count(*) FROM many GROUP BY id",
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023", "{e:?}");
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW counts WITH (max.state.bytes = '1MB') AS \
             SELECT id, count(*) FROM many GROUP BY id",
        )
        .await
        .unwrap();
    // A view created under the session's setting takes it, and keeps it across a restart.
    client
        .batch_execute(
            "SET max_state_bytes = '2MB'; CREATE MATERIALIZED VIEW inherited AS \
             SELECT id, count(*) FROM many GROUP BY id",
        )
        .await
        .unwrap();
    let over = |limit: &str, outcome: &(String, String)| {
        outcome.0 == "failed"
            // The aggregate's groups or the view's rows, whichever crossed the limit first.
            && (outcome
                .1
                .starts_with("operator UpdatingAggregate instance 0 holds ")
                || outcome
                    .1
                    .starts_with("operator MaterializedView "))
            && outcome
                .1
                .ends_with(&format!("over max.state.bytes {limit}"))
    };
    let counts = job_outcome(&client, "counts").await;
    assert!(over("1 MB", &counts), "{counts:?}");
    let inherited = job_outcome(&client, "inherited").await;
    assert!(over("2 MB", &inherited), "{inherited:?}");
    // The jobs' dataflows are gone and their state returned (what is left is the rows the
    // views kept, if their aggregate failed first); the session goes on.
    wait_for_no_tasks(&server).await;
    let view_bytes = |name: &str| {
        let relation = server.engine().catalog().get(name).unwrap();
        relation.view.as_ref().unwrap().bytes()
    };
    assert_eq!(
        server.engine().state_bytes(),
        view_bytes("counts") + view_bytes("inherited")
    );
    assert_eq!(text_rows(&client, "SELECT 1").await, [["1"]]);
    drop(client);
    server.shutdown().await;

    // After a restart (no session setting now) both views run again under their limits.
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let counts = job_outcome(&client, "counts").await;
    assert!(over("1 MB", &counts), "{counts:?}");
    let inherited = job_outcome(&client, "inherited").await;
    assert!(over("2 MB", &inherited), "{inherited:?}");
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_view_whose_rows_grow_past_its_limit_fails_and_gives_them_back() {
    let dir = temp_dir("memory-view-rows");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "{}; {}",
            keys_source("many", 1_000_000),
            keys_source("few", 100)
        ))
        .await
        .unwrap();
    // No operator holds state here: only the view's rows grow.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW everything WITH (max.state.bytes = '4MB') AS \
             SELECT id, 'a row of the view' AS pad FROM many; \
             CREATE MATERIALIZED VIEW small WITH (max.state.bytes = '4MB') AS \
             SELECT id FROM few",
        )
        .await
        .unwrap();
    let (status, error) = job_outcome(&client, "everything").await;
    assert_eq!(status, "failed");
    assert!(
        error.starts_with("operator MaterializedView everything instance 0 holds ")
            && error.ends_with("over max.state.bytes 4 MB"),
        "{error}"
    );
    // Reading the failed view says why it is empty; its memory is returned.
    let e = client
        .simple_query("SELECT count(*) FROM everything")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert!(
        db.message().contains("gave its rows back"),
        "{}",
        db.message()
    );
    // The view within its limit is whole, and its rows are all the state left.
    assert_eq!(job_outcome(&client, "small").await.0, "finished");
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM small").await,
        [["100"]]
    );
    wait_for_no_tasks(&server).await;
    let held = server.engine().state_bytes();
    assert!(held > 0 && held < 64 << 10, "{held} bytes held");
    client
        .batch_execute("DROP MATERIALIZED VIEW small")
        .await
        .unwrap();
    wait_for_state_at_most(&server, 0).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_query_that_grows_past_the_server_limit_fails_and_others_go_on() {
    let dir = temp_dir("memory-server-limit");
    let server = start_configured(&dir, |config| config.max_memory = Some(2 << 20)).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let (other, other_socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "{}; {}; CREATE TABLE clicks (user_id INT)",
            keys_source("many", 1_000_000),
            keys_source("few", 100)
        ))
        .await
        .unwrap();
    let following = other
        .copy_out("COPY (SELECT user_id, count(*) FROM clicks GROUP BY user_id) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(following);
    client
        .batch_execute("INSERT INTO clicks VALUES (7)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut following, 1).await, "+\t7\t1\n");

    // No session limit: the server's 2 MB stops the query whose state grows.
    let (code, message) = failure(&client, "SELECT id, count(*) FROM many GROUP BY id").await;
    assert_eq!(code, "53200", "{message}");
    assert!(
        message.starts_with("operator UpdatingAggregate instance 0 holds ")
            && message.ends_with("over the server's --max-memory 2 MB"),
        "{message}"
    );
    wait_for_state_at_most(&server, 64 * 1024).await;
    // The memory came back: the same session runs another query; the other one went on.
    let rows = text_rows(&client, "SELECT id, count(*) FROM few GROUP BY id").await;
    assert_eq!(rows.len(), 100, "{rows:?}");
    assert!(rows.iter().all(|r| r.last().unwrap() == "1"), "{rows:?}");
    client
        .batch_execute("INSERT INTO clicks VALUES (7)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut following, 2).await, "-\t7\t1\n+\t7\t2\n");

    drop(other);
    other_socket.abort();
    wait_for_no_tasks(&server).await;
    assert_eq!(server.engine().state_bytes(), 0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
