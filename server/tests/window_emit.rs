//! Emit on window close over an unbounded stream: a window's row reaches the client as soon as
//! the watermark passes the window's end, and not before; nothing waits for an end of input.
//!
//! This is the point of the conformance case `window_tumble_eowc_no_flush` (RisingWave's
//! `eowc_group_agg.slt`), which a bounded file source can only show with its end-of-input flush
//! (sql-tests/slt/windows_conformance.slt): here the rows go into a push table, whose query
//! never ends, and the test follows the query's COPY output as rows are inserted.

use std::time::Duration;

use futures::{Stream, StreamExt, pin_mut};
mod common;
use common::{connect_with_socket, start, temp_dir, wait_for_no_tasks};

/// How long to wait for a row that must come (generous: CI machines are slow).
const ROW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for a row that must not come. A slow machine can only make this check
/// pass when it should not, never fail when it should pass.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// The next COPY row, as text.
async fn next_row<S>(stream: &mut std::pin::Pin<&mut S>, waiting_for: &str) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let chunk = tokio::time::timeout(ROW_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{waiting_for} not emitted within {ROW_TIMEOUT:?}"))
        .expect("the query over a push table never ends")
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
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

#[tokio::test]
async fn tumble_emits_each_window_when_the_watermark_passes_its_end() {
    let dir = temp_dir("window-emit");
    let server = start(&dir).await;
    let (writer, _) = connect_with_socket(&server).await;
    let (reader, reader_socket) = connect_with_socket(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE t (tm TIMESTAMP(3), foo INT, WATERMARK FOR tm AS tm - INTERVAL '5' MINUTE)",
        )
        .await
        .unwrap();
    // The first five rows of the case. The watermark after each: 16:46, 16:51, 17:25, 17:54,
    // 17:56. [16:00, 17:00) closes at wm >= 16:59:59.999, i.e. after 17:30; [17:00, 18:00)
    // needs wm >= 17:59:59.999 and stays open.
    writer
        .batch_execute(
            "INSERT INTO t VALUES ('2023-05-06 16:51:00', 1), ('2023-05-06 16:56:00', 8), \
             ('2023-05-06 17:30:00', 3), ('2023-05-06 17:59:00', 4), ('2023-05-06 18:01:00', 6)",
        )
        .await
        .unwrap();
    let stream = reader
        .copy_out(
            "COPY (SELECT window_start, MAX(foo) AS max_foo FROM TUMBLE(t, tm, INTERVAL '1' HOUR) \
             GROUP BY window_start, window_end) TO STDOUT",
        )
        .await
        .unwrap();
    pin_mut!(stream);

    assert_eq!(
        next_row(&mut stream, "[16:00, 17:00)").await,
        "2023-05-06 16:00:00\t8\n"
    );
    assert_no_row(&mut stream, "wm = 17:56 closes no other window").await;

    // wm = 18:05 >= 17:59:59.999: [17:00, 18:00) closes with max(3, 4).
    writer
        .batch_execute("INSERT INTO t VALUES ('2023-05-06 18:10:00', 7)")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut stream, "[17:00, 18:00)").await,
        "2023-05-06 17:00:00\t4\n"
    );
    assert_no_row(
        &mut stream,
        "wm = 18:05 < 18:59:59.999 leaves [18:00, 19:00) open",
    )
    .await;

    // wm = 19:25 >= 18:59:59.999: [18:00, 19:00) closes with max(6, 7); [19:00, 20:00) stays
    // open.
    writer
        .batch_execute("INSERT INTO t VALUES ('2023-05-06 19:30:00', 2)")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut stream, "[18:00, 19:00)").await,
        "2023-05-06 18:00:00\t7\n"
    );
    assert_no_row(
        &mut stream,
        "wm = 19:25 < 19:59:59.999 leaves [19:00, 20:00) open",
    )
    .await;

    // A late row for a closed window changes nothing that was emitted (no update, no
    // retraction); a row far ahead closes [19:00, 20:00) without it.
    writer
        .batch_execute(
            "INSERT INTO t VALUES ('2023-05-06 18:30:00', 100); \
             INSERT INTO t VALUES ('2023-05-06 21:00:00', 0)",
        )
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut stream, "[19:00, 20:00)").await,
        "2023-05-06 19:00:00\t2\n"
    );
    assert_no_row(&mut stream, "wm = 20:55 leaves [21:00, 22:00) open").await;

    // The client goes away: the query stops.
    drop(reader);
    reader_socket.abort();
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A window on processing time (`TUMBLE` over a column defined as `PROCTIME()`, Nexmark
/// q12's shape) closes when the wall clock passes its end: its row comes with no further
/// input and no watermark declared. The rows of one INSERT reach the window at one instant,
/// so they share a window.
#[tokio::test]
async fn a_processing_time_window_closes_on_the_clock_without_further_rows() {
    let dir = temp_dir("proctime-emit");
    let server = start(&dir).await;
    let (writer, _) = connect_with_socket(&server).await;
    let (reader, reader_socket) = connect_with_socket(&server).await;
    writer
        .batch_execute("CREATE TABLE clicks (user_id INT, url VARCHAR)")
        .await
        .unwrap();
    let stream = reader
        .copy_out(
            "COPY (SELECT user_id, count(*) AS clicks, window_end - window_start AS size, \
             window_start FROM TUMBLE((SELECT *, PROCTIME() AS p_time FROM clicks), p_time, \
             INTERVAL '1' SECOND) GROUP BY user_id, window_start, window_end) TO STDOUT",
        )
        .await
        .unwrap();
    pin_mut!(stream);
    assert_no_row(&mut stream, "no row came, so no window has any").await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    writer
        .batch_execute("INSERT INTO clicks VALUES (1, 'a'), (2, 'b'), (1, 'c')")
        .await
        .unwrap();
    let mut rows = vec![
        next_row(&mut stream, "the first user's window").await,
        next_row(&mut stream, "the second user's window").await,
    ];
    rows.sort();
    let fields: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.trim_end().split('\t').collect())
        .collect();
    assert_eq!(fields[0][..3], ["1", "2", "00:00:01"], "{rows:?}");
    assert_eq!(fields[1][..3], ["2", "1", "00:00:01"], "{rows:?}");
    assert_eq!(
        fields[0][3], fields[1][3],
        "one INSERT, one window: {rows:?}"
    );
    // The window is on the wall clock (UTC), not on any time in the rows.
    let start = epoch_seconds(fields[0][3]);
    assert!(
        (start - now).abs() < 120,
        "window_start {} is not the wall clock ({now} s since the epoch)",
        fields[0][3]
    );
    assert_no_row(&mut stream, "every row was counted once").await;

    // A later row lands in a later window, which closes on the clock too.
    writer
        .batch_execute("INSERT INTO clicks VALUES (2, 'd')")
        .await
        .unwrap();
    let row = next_row(&mut stream, "the later window").await;
    let later: Vec<&str> = row.trim_end().split('\t').collect();
    assert_eq!(later[..3], ["2", "1", "00:00:01"], "{row}");
    assert!(epoch_seconds(later[3]) > start, "{row} after {rows:?}");

    drop(reader);
    reader_socket.abort();
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seconds since the epoch of a `YYYY-MM-DD HH:MM:SS[.fff]` text (UTC).
fn epoch_seconds(text: &str) -> i64 {
    let (date, time) = text.split_once(' ').expect("a timestamp");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] as i64 * 3600 + t[1] as i64 * 60 + t[2] as i64
}
