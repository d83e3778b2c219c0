//! When stream-stream joins emit, over unbounded streams, and which rows are late there.
//!
//! The rows go into push tables, whose queries never end by themselves, and each test follows
//! a query's COPY output while it inserts rows step by step. A join takes the minimum of its
//! two inputs' watermarks, and the two inputs are read concurrently, so only a visible result
//! proves how far the join's watermark has got: each step waits for the row that proves it
//! before inserting the next. That makes the late rows here late whatever the interleaving,
//! which bounded files cannot promise (sql-tests/slt/joins.slt).
//!
//! Watermark = ts (no delay) on every table; times are seconds after 10:00:00.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_server::{Server, ServerConfig};
use futures::{Stream, StreamExt, pin_mut};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// How long to wait for a row that must come (generous: CI machines are slow).
const ROW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for a row that must not come. A slow machine can only make this check
/// pass when it should not, never fail when it should pass.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

const LATE_WARNING: &str =
    "WARNING: dropped 1 late row(s) (they arrived after their result was emitted)";

/// A client whose notices (`SEVERITY: message`) are kept.
async fn connect_keeping_notices(server: &Server) -> (Client, Arc<Mutex<Vec<String>>>) {
    let addr = server.local_addr();
    let (client, mut connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=eddy dbname=eddy",
            addr.ip(),
            addr.port()
        ),
        NoTls,
    )
    .await
    .unwrap();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&notices);
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                sink.lock()
                    .unwrap()
                    .push(format!("{}: {}", notice.severity(), notice.message()));
            }
        }
    });
    (client, notices)
}

async fn start_server(name: &str) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("eddy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.clone()),
        parallelism: 1,
        allowed_paths: Vec::new(),
        checkpoint_interval: std::time::Duration::from_secs(10),
        checkpoint_timeout: eddy_engine::checkpoints::DEFAULT_TIMEOUT,
        security: Default::default(),
        client_send_timeout: eddy_server::wire::send_timeout::DEFAULT_CLIENT_SEND_TIMEOUT,
        test_faults: false,
        max_memory: None,
        client_follow_buffer: Some(eddy_engine::session::DEFAULT_CLIENT_FOLLOW_BUFFER),
    })
    .await
    .unwrap();
    (server, dir)
}

/// The next COPY row, as text.
async fn next_row<S>(stream: &mut std::pin::Pin<&mut S>, waiting_for: &str) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let chunk = tokio::time::timeout(ROW_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{waiting_for} not emitted within {ROW_TIMEOUT:?}"))
        .unwrap_or_else(|| panic!("the query ended before {waiting_for}"))
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
}

/// The next `n` COPY rows, sorted (rows emitted together come in no particular order).
async fn next_rows<S>(stream: &mut std::pin::Pin<&mut S>, n: usize, waiting_for: &str) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let mut rows = Vec::new();
    while rows.len() < n {
        // A chunk may hold several rows.
        let chunk = next_row(stream, waiting_for).await;
        rows.extend(chunk.lines().map(str::to_string));
    }
    rows.sort();
    rows.join("\n")
}

/// Fails if a row arrives within [`QUIET_PERIOD`].
async fn assert_no_row<S>(stream: &mut std::pin::Pin<&mut S>, why: &str)
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    if let Ok(item) = tokio::time::timeout(QUIET_PERIOD, stream.next()).await {
        let row = item.map(|r| r.map(|b| String::from_utf8_lossy(&b).into_owned()));
        panic!("{why}, but the query emitted {row:?}");
    }
}

/// Waits (bounded) for the COPY to finish and returns its notices.
async fn finish<S>(stream: &mut std::pin::Pin<&mut S>, notices: &Mutex<Vec<String>>) -> Vec<String>
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let end = tokio::time::timeout(ROW_TIMEOUT, stream.next())
        .await
        .expect("the query ends once its LIMIT is reached");
    assert!(end.is_none(), "no row after the LIMIT: {end:?}");
    // The notice comes after the COPY data, before the command completes.
    for _ in 0..100 {
        let seen = notices.lock().unwrap().clone();
        if !seen.is_empty() {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

async fn insert(client: &Client, table: &str, k: i64, second: u32, id: &str) {
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES ({k}, TIMESTAMP '2024-01-01 10:00:{second:02}', '{id}')"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn interval_full_join_pads_once_the_watermark_passes_and_drops_a_late_row() {
    interval_join_emission("FULL").await;
}

/// LEFT as well: DataFusion pushes the LIMIT into the join's left input, which the planner
/// drops again (a late row among the first left rows would otherwise starve the join).
#[tokio::test]
async fn interval_left_join_pads_once_the_watermark_passes_and_drops_a_late_row() {
    interval_join_emission("LEFT").await;
}

/// The same arrivals through a `kind` (FULL or LEFT) interval join: every right row finds a
/// partner, so both give the same rows.
async fn interval_join_emission(kind: &str) {
    let (server, dir) = start_server(&format!("join-emit-interval-{kind}")).await;
    let (writer, _) = connect_keeping_notices(&server).await;
    let (reader, notices) = connect_keeping_notices(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE a (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts); \
             CREATE TABLE b (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts)",
        )
        .await
        .unwrap();
    // -2 s <= a.ts - b.ts <= 2 s: a left row leaves (padded if unmatched) once ts + 2 <= W,
    // a right row once ts + 2 <= W; a row with ts <= W is late.
    let stream = reader
        .copy_out(&format!(
            "COPY (SELECT a.id, b.id FROM a {kind} JOIN b ON a.k = b.k \
                   AND a.ts BETWEEN b.ts - INTERVAL '2' SECOND AND b.ts + INTERVAL '2' SECOND \
                   LIMIT 4) TO STDOUT"
        ))
        .await
        .unwrap();
    pin_mut!(stream);

    // a1 @0 and b1 @1 (k 1) join at once (offset -1).
    insert(&writer, "a", 1, 0, "a1").await;
    insert(&writer, "b", 1, 1, "b1").await;
    assert_eq!(next_row(&mut stream, "a1-b1").await, "a1\tb1\n");

    // a2 @5 (k 2) has no partner. Left wm 5, right wm 1: W = 1.
    insert(&writer, "a", 2, 5, "a2").await;
    // b3 @6 (k 3): right wm 6, W = min(5, 6) = 5 < 5 + 2: a2 may still meet a right row.
    insert(&writer, "b", 3, 6, "b3").await;
    assert_no_row(&mut stream, "W = 10:00:05 < 10:00:07 keeps a2 waiting").await;

    // a3 @8 (k 3) joins b3 (offset +2, on the bound). Left wm 8: W = min(8, 6) = 6.
    insert(&writer, "a", 3, 8, "a3").await;
    assert_eq!(next_row(&mut stream, "a3-b3").await, "a3\tb3\n");
    assert_no_row(&mut stream, "W = 10:00:06 < 10:00:07 keeps a2 waiting").await;

    // b9 @10 (k 9): right wm 10, W = min(8, 10) = 8 >= 7: a2 is padded now, not at some end.
    insert(&writer, "b", 9, 10, "b9").await;
    assert_eq!(next_row(&mut stream, "a2 padded").await, "a2\t\\N\n");

    // The join's W is 8 now. A left row @8 (k 9) is at the watermark: late. It would have
    // joined b9 (offset -2); it is dropped instead, neither joined nor padded.
    insert(&writer, "a", 9, 8, "late").await;
    assert_no_row(&mut stream, "the late row is dropped, not joined with b9").await;

    // a9 @11 (k 9) joins b9 (offset +1): the fourth row ends the query (LIMIT 4); the late
    // row went into a before it, so the join has seen (and counted) it by then.
    insert(&writer, "a", 9, 11, "a9").await;
    assert_eq!(next_row(&mut stream, "a9-b9").await, "a9\tb9\n");
    assert_eq!(finish(&mut stream, &notices).await, vec![LATE_WARNING]);

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn window_join_emits_each_window_when_both_watermarks_pass_its_end() {
    let (server, dir) = start_server("join-emit-window").await;
    let (writer, _) = connect_keeping_notices(&server).await;
    let (reader, notices) = connect_keeping_notices(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE l (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts); \
             CREATE TABLE r (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts)",
        )
        .await
        .unwrap();
    // TUMBLE 10 s; a window is joined once W >= its end - 1 ms.
    let stream = reader
        .copy_out(
            "COPY (SELECT COALESCE(L.window_start, R.window_start), L.id, R.id \
                   FROM TUMBLE(l, ts, INTERVAL '10' SECOND) L \
                   FULL JOIN TUMBLE(r, ts, INTERVAL '10' SECOND) R \
                   ON L.k = R.k AND L.window_start = R.window_start \
                      AND L.window_end = R.window_end \
                   LIMIT 3) TO STDOUT",
        )
        .await
        .unwrap();
    pin_mut!(stream);

    // [00, 10): l1 @1 (k 1), l2 @3 (k 2), r1 @2 (k 1). Nothing before the window closes.
    insert(&writer, "l", 1, 1, "l1").await;
    insert(&writer, "l", 2, 3, "l2").await;
    insert(&writer, "r", 1, 2, "r1").await;
    assert_no_row(&mut stream, "[00, 10) is open").await;

    // l3 @12: the left watermark (12) alone does not close [00, 10): W = min(12, 2) = 2.
    insert(&writer, "l", 3, 12, "l3").await;
    assert_no_row(&mut stream, "the right watermark (2) keeps [00, 10) open").await;

    // r3 @11: W = min(12, 11) = 11 >= 9.999: [00, 10) is joined: l1-r1, and l2 padded.
    insert(&writer, "r", 3, 11, "r3").await;
    assert_eq!(
        next_rows(&mut stream, 2, "[00, 10)").await,
        "2024-01-01 10:00:00\tl1\tr1\n2024-01-01 10:00:00\tl2\t\\N"
    );
    assert_no_row(&mut stream, "[10, 20) is open (W = 11)").await;

    // r2 @5 (k 2) belongs to [00, 10), which has been joined: late, dropped. It would have
    // matched l2.
    insert(&writer, "r", 2, 5, "r2").await;
    assert_no_row(&mut stream, "a late row changes nothing emitted").await;

    // l4 @25 and r4 @21: W = 21 >= 19.999: [10, 20) is joined (l3-r3), the third row; the
    // late row went into r before r4, so the join has counted it by then.
    insert(&writer, "l", 4, 25, "l4").await;
    insert(&writer, "r", 4, 21, "r4").await;
    assert_eq!(
        next_row(&mut stream, "[10, 20)").await,
        "2024-01-01 10:00:10\tl3\tr3\n"
    );
    assert_eq!(finish(&mut stream, &notices).await, vec![LATE_WARNING]);

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A regular FULL join's changelog, row by row (issue 19 item 1): a row without a partner is
/// padded at once; its first partner retracts the padding; a second partner adds a row; a
/// retraction upstream (here an updating aggregate's new count) retracts the joined rows it
/// was part of. No watermark is involved: rows come out the moment their partner arrives.
#[tokio::test]
async fn regular_full_join_pads_at_once_and_retracts_the_padding_when_a_partner_arrives() {
    let (server, dir) = start_server("join-emit-regular").await;
    let (writer, _) = connect_keeping_notices(&server).await;
    let (reader, _) = connect_keeping_notices(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE a (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts); \
             CREATE TABLE b (k BIGINT, ts TIMESTAMP(3), id VARCHAR, WATERMARK FOR ts AS ts)",
        )
        .await
        .unwrap();
    // The right side is each key's count of b rows: a changelog.
    let stream = reader
        .copy_out(
            "COPY (SELECT a.id, c.k, c.n FROM a FULL JOIN \
                   (SELECT k, count(*) AS n FROM b GROUP BY k) c ON a.k = c.k) TO STDOUT",
        )
        .await
        .unwrap();
    pin_mut!(stream);

    insert(&writer, "a", 1, 0, "a1").await;
    assert_eq!(
        next_row(&mut stream, "a1 padded").await,
        "+\ta1\t\\N\t\\N\n"
    );
    insert(&writer, "b", 2, 0, "b1").await;
    assert_eq!(
        next_row(&mut stream, "count 2 padded").await,
        "+\t\\N\t2\t1\n"
    );
    // a2 (k 2) meets the count: the padded count is retracted, the joined row added.
    insert(&writer, "a", 2, 1, "a2").await;
    assert_eq!(
        next_rows(&mut stream, 2, "a2 joined").await,
        "+\ta2\t2\t1\n-\t\\N\t2\t1"
    );
    // A second b row for k 2 updates the count, `-` the old then `+` the new: the `-`
    // leaves a2 without a partner (its joined row is retracted, its padding comes back), the
    // `+` gives it one again (the padding goes, the row with the new count comes).
    insert(&writer, "b", 2, 2, "b2").await;
    assert_eq!(
        next_rows(&mut stream, 4, "a2 with the new count").await,
        "+\ta2\t2\t2\n+\ta2\t\\N\t\\N\n-\ta2\t2\t1\n-\ta2\t\\N\t\\N"
    );
    // The first b row for k 1 joins a1: its padding goes.
    insert(&writer, "b", 1, 3, "b3").await;
    assert_eq!(
        next_rows(&mut stream, 2, "a1 joined").await,
        "+\ta1\t1\t1\n-\ta1\t\\N\t\\N"
    );
    assert_no_row(&mut stream, "nothing else changed").await;

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
