//! Isolation between clients, queries and jobs: a panic (injected with the test-only
//! `eddy_fault` function) fails only its own query or job with `XX000`, a client that stops
//! reading is ended by `--client-send-timeout` without holding back anyone else, a client
//! following a materialized view that falls too far behind is cut off (`53000`) instead of
//! holding back the view's job, and 100 clients following continuous queries at once all get
//! their rows.

use std::time::Duration;

use eddy_server::Server;
use futures::{StreamExt, pin_mut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

mod common;
use common::{
    connect_with_socket, copy_lines, eventually, start_configured, temp_dir, text_rows,
    wait_for_no_tasks,
};

const INJECTED: &str = "eddy_fault: injected panic";

async fn connect(server: &Server) -> Client {
    connect_with_socket(server).await.0
}

async fn start_with_faults(dir: &std::path::Path) -> Server {
    start_configured(dir, |config| config.test_faults = true).await
}

/// The SQLSTATE and message of a failed statement.
fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test]
async fn an_operator_panic_fails_only_its_query_and_a_job_panic_only_its_job() {
    let dir = temp_dir("isolation-operator");
    let server = start_with_faults(&dir).await;
    let writer = connect(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE t (k TEXT, v BIGINT); \
             CREATE MATERIALIZED VIEW counts AS SELECT k, count(*) AS n FROM t GROUP BY k",
        )
        .await
        .unwrap();
    // Another client follows a continuous query throughout.
    let follower = connect(&server).await;
    let followed = follower
        .copy_out("COPY (SELECT v FROM t WHERE v > 0) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(followed);
    // The faulty query: its projection panics on the row whose k is 'panic'.
    let (faulty, _socket) = connect_with_socket(&server).await;
    let faulty = std::sync::Arc::new(faulty);
    let running = {
        let faulty = std::sync::Arc::clone(&faulty);
        tokio::spawn(async move { faulty.simple_query("SELECT v, eddy_fault(k) FROM t").await })
    };
    writer
        .batch_execute("INSERT INTO t VALUES ('a', 1)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut followed, 1).await, "1\n");
    writer
        .batch_execute("INSERT INTO t VALUES ('panic', 2)")
        .await
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the panicking query did not end within 10 s")
        .unwrap()
        .expect_err("the panicking query fails");
    let (code, message) = db_error(&failed);
    assert_eq!(code, "XX000", "{message}");
    assert_eq!(
        message,
        format!("internal error in operator Project: {INJECTED}")
    );
    // Its session goes on.
    assert_eq!(text_rows(&faulty, "SELECT 1 + 1").await, vec![vec!["2"]]);

    // A job whose dataflow panics fails, with the panic in SHOW JOBS; nothing else does.
    writer
        .batch_execute("CREATE MATERIALIZED VIEW bad AS SELECT eddy_fault(k) AS f FROM t")
        .await
        .unwrap();
    writer
        .batch_execute("INSERT INTO t VALUES ('panic', 0)")
        .await
        .unwrap();
    eventually(
        &writer,
        "SELECT status, error FROM eddy_jobs WHERE name = 'bad'",
        &[&[
            "failed",
            &format!("internal error in operator Project: {INJECTED}"),
        ]],
    )
    .await;
    writer
        .batch_execute("INSERT INTO t VALUES ('b', 3)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut followed, 2).await, "2\n3\n");
    eventually(
        &writer,
        "SELECT k, n FROM counts ORDER BY k",
        &[&["a", "1"], &["b", "1"], &["panic", "2"]],
    )
    .await;
    eventually(
        &writer,
        "SELECT status FROM eddy_jobs WHERE name = 'counts'",
        &[&["running"]],
    )
    .await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_source_panic_and_a_statement_panic_fail_their_query_with_xx000() {
    let dir = temp_dir("isolation-source");
    let server = start_with_faults(&dir).await;
    let client = connect(&server).await;
    // The watermark is computed in the table's source task.
    client
        .batch_execute(
            "CREATE TABLE w (k TEXT, ts TIMESTAMP(3), WATERMARK FOR ts AS eddy_fault(k, ts))",
        )
        .await
        .unwrap();
    let (follower, _socket) = connect_with_socket(&server).await;
    let follower = std::sync::Arc::new(follower);
    let running = {
        let follower = std::sync::Arc::clone(&follower);
        tokio::spawn(async move { follower.simple_query("SELECT k FROM w").await })
    };
    client
        .batch_execute("INSERT INTO w VALUES ('panic', '2024-01-01 00:00:00')")
        .await
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the panicking query did not end within 10 s")
        .unwrap()
        .expect_err("the panicking query fails");
    assert_eq!(
        db_error(&failed),
        (
            "XX000".to_string(),
            format!("internal error in source w: {INJECTED}")
        )
    );
    assert_eq!(text_rows(&follower, "SELECT 1").await, vec![vec!["1"]]);

    // A query without a stream, evaluated with a literal kind.
    let failed = client
        .simple_query("SELECT eddy_fault('panic')")
        .await
        .expect_err("the panicking statement fails");
    let (code, message) = db_error(&failed);
    assert_eq!(code, "XX000");
    assert!(message.starts_with("internal error in "), "{message}");
    assert!(message.ends_with(INJECTED), "{message}");
    assert_eq!(text_rows(&client, "SELECT 1").await, vec![vec!["1"]]);
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_encoder_panic_fails_its_statement_and_the_session_goes_on() {
    let dir = temp_dir("isolation-encoder");
    let server = start_with_faults(&dir).await;
    let client = connect(&server).await;
    let encoder_error = format!(
        "internal error in the result encoder: {}",
        eddy_engine::functions::fault::ENCODER_FAULT
    );
    // Simple protocol: DataRows.
    let failed = client
        .simple_query("SELECT 1 AS a, eddy_fault('encoder') AS f")
        .await
        .expect_err("the encoder panicked");
    assert_eq!(
        db_error(&failed),
        ("XX000".to_string(), encoder_error.clone())
    );
    assert_eq!(
        text_rows(&client, "SELECT 'still here'").await,
        vec![vec!["still here"]]
    );
    // COPY TO STDOUT, inside the COPY.
    let copy = client
        .copy_out("COPY (SELECT eddy_fault('encoder')) TO STDOUT")
        .await;
    let failed = match copy {
        Err(e) => e,
        Ok(stream) => {
            pin_mut!(stream);
            loop {
                match stream.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e,
                    None => panic!("the COPY ended without the error"),
                }
            }
        }
    };
    assert_eq!(
        db_error(&failed),
        ("XX000".to_string(), encoder_error.clone())
    );
    // Extended protocol, binary results.
    let failed = client
        .query("SELECT eddy_fault($1)", &[&"encoder"])
        .await
        .expect_err("the encoder panicked");
    assert_eq!(db_error(&failed), ("XX000".to_string(), encoder_error));
    let row = client
        .query_one("SELECT eddy_fault($1)", &[&"fine"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "fine");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_fault_function_does_not_exist_in_a_normal_server() {
    let dir = temp_dir("isolation-no-faults");
    let server = common::start(&dir).await;
    let client = connect(&server).await;
    let failed = client
        .simple_query("SELECT eddy_fault('panic')")
        .await
        .expect_err("unknown function");
    assert_eq!(db_error(&failed).0, "42883");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An `eddy` process, killed when dropped, and the lines of its log.
struct ServerProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    fn start(dir: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead;

        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("NO_COLOR", "1")
            .env("EDDY_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("no log line within 20 s")
    }

    /// Reads the log up to the first line containing `text`.
    fn line_with(&self, text: &str) -> String {
        loop {
            let line = self.next_line();
            if line.contains(text) {
                return line;
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `eddy` binary logs a panic with its backtrace, and its client gets XX000.
#[tokio::test]
async fn the_server_binary_logs_a_panic_with_its_backtrace() {
    let dir = temp_dir("isolation-binary");
    let process = ServerProcess::start(&dir, &["--enable-test-faults"]);
    let listening = process.line_with("eddy is listening");
    let addr = listening
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the listening address")
        .to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (client, connection) = tokio_postgres::connect(
        &format!("host={host} port={port} user=eddy dbname=eddy"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let failed = client
        .simple_query("SELECT eddy_fault('panic')")
        .await
        .expect_err("the panicking statement fails");
    assert_eq!(db_error(&failed).0, "XX000");
    // The panic's log entry, then its backtrace, whose frames include the fault function.
    process.line_with(&format!("panic: {INJECTED}"));
    process.line_with("backtrace:");
    process.line_with("eddy_engine::functions::fault");
    // The server still serves.
    assert_eq!(text_rows(&client, "SELECT 1").await, vec![vec!["1"]]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_ended_by_the_send_timeout_and_holds_back_no_one() {
    let dir = temp_dir("isolation-stalled");
    let server = start_configured(&dir, |config| {
        config.client_send_timeout = Duration::from_secs(2);
    })
    .await;
    let other = connect(&server).await;
    other
        .batch_execute(
            "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'nexmark', nexmark.table = 'bid')",
        )
        .await
        .unwrap();
    // A client with a small receive buffer asks for an endless stream and reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let socket = socket.connect(server.local_addr()).await.unwrap();
    let mut stalled = common::raw::start_up(socket).await;
    stalled
        .write_all(&common::raw::query("COPY (SELECT * FROM bids) TO STDOUT"))
        .await
        .unwrap();
    for _ in 0..400 {
        if server.engine().live_tasks() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        server.engine().live_tasks() > 0,
        "the stalled query never started"
    );
    // Meanwhile another client's query over the same source runs to its end.
    let copied = other
        .copy_out("COPY (SELECT auction FROM bids LIMIT 1000) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(copied);
    let mut text = String::new();
    while let Some(chunk) = copied.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(text.lines().count(), 1000);
    // The stalled query ends once a send waited 2 s, which frees its dataflow.
    wait_for_no_tasks(&server).await;
    // And its connection is closed: what the socket holds can be read to its end.
    let mut drained = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
            .await
            .expect("the stalled connection was not closed")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    assert!(
        drained > 4096,
        "only {drained} bytes were sent before the end"
    );
    assert_eq!(text_rows(&other, "SELECT 1").await, vec![vec!["1"]]);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_falling_behind_a_view_is_cut_off_and_the_view_s_job_goes_on() {
    let dir = temp_dir("isolation-follow-buffer");
    // No send timeout: only the follow buffer can keep the stalled client from holding back
    // the view's job.
    let server = start_configured(&dir, |config| {
        config.client_send_timeout = Duration::ZERO;
        config.client_follow_buffer = Some(2 << 20);
    })
    .await;
    let writer = connect(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE t (k BIGINT, pad TEXT); \
             CREATE MATERIALIZED VIEW v AS SELECT k, pad FROM t; \
             CREATE MATERIALIZED VIEW k_only AS SELECT k FROM v",
        )
        .await
        .unwrap();
    let idle_tasks = server.engine().live_tasks();
    // A client with a small receive buffer follows the view and reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let socket = socket.connect(server.local_addr()).await.unwrap();
    let mut stalled = common::raw::start_up(socket).await;
    stalled
        .write_all(&common::raw::query("COPY (SELECT * FROM v) TO STDOUT"))
        .await
        .unwrap();
    for _ in 0..400 {
        if server.engine().live_tasks() > idle_tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        server.engine().live_tasks() > idle_tasks,
        "the follower never started"
    );
    // 24 MB of rows in changes of 50 kB, far more than the client's socket, its dataflow's
    // channels and the 2 MB follow buffer hold.
    const INSERTS: usize = 480;
    const ROWS: usize = 125;
    let pad = "x".repeat(400);
    for i in 0..INSERTS {
        let values: Vec<String> = (0..ROWS)
            .map(|j| format!("({}, '{pad}')", i * ROWS + j))
            .collect();
        writer
            .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    // The view's job took every row, and so did the job of the view over it (a job
    // following a view is never cut off).
    let total = (INSERTS * ROWS).to_string();
    eventually(&writer, "SELECT count(*) FROM v", &[&[&total]]).await;
    eventually(&writer, "SELECT count(*) FROM k_only", &[&[&total]]).await;
    // The stalled client gets the rows it had room for, then an error saying why.
    let mut copied = 0usize;
    let error = loop {
        let message = tokio::time::timeout(
            Duration::from_secs(30),
            common::raw::read_message(&mut stalled),
        )
        .await
        .expect("the stalled client's query did not end");
        match message {
            Some((b'd', _)) => copied += 1,
            Some((b'E', body)) => break body,
            Some(_) => {}
            None => panic!("the connection closed without an error after {copied} rows"),
        }
    };
    assert_eq!(
        common::raw::error_field(&error, b'C').as_deref(),
        Some("53000")
    );
    let message = common::raw::error_field(&error, b'M').unwrap();
    assert!(
        message.starts_with(
            "the query fell more than 2 MB behind materialized view \"v\" and was ended"
        ),
        "{message}"
    );
    assert!(
        copied > 0 && copied < INSERTS * ROWS,
        "{copied} rows copied"
    );
    // Its session goes on.
    let ready = common::raw::read_message(&mut stalled).await.unwrap();
    assert_eq!(ready.0, b'Z');
    stalled
        .write_all(&common::raw::query("SELECT 1"))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while let Some((kind, _)) = common::raw::read_message(&mut stalled).await {
        kinds.push(kind);
        if kind == b'Z' {
            break;
        }
    }
    assert_eq!(kinds, [b'T', b'D', b'C', b'Z']);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_hundred_clients_following_continuous_queries_all_get_their_rows() {
    const FOLLOWERS: usize = 100;
    let dir = temp_dir("isolation-hundred");
    let server = start_configured(&dir, |config| {
        config.security.max_connections = FOLLOWERS + 1;
    })
    .await;
    let writer = connect(&server).await;
    writer
        .batch_execute("CREATE TABLE t (id BIGINT)")
        .await
        .unwrap();
    let mut followers = Vec::with_capacity(FOLLOWERS);
    for i in 0..FOLLOWERS {
        let (client, socket) = connect_with_socket(&server).await;
        // Each follows its own filter: ids divisible by 1, 2, 3 or 4.
        let divisor = i % 4 + 1;
        let stream = client
            .copy_out(&format!(
                "COPY (SELECT id FROM t WHERE id % {divisor} = 0) TO STDOUT"
            ))
            .await
            .unwrap();
        followers.push((client, socket, divisor, Box::pin(stream)));
    }
    for ids in [(1..=10), (11..=24)] {
        let values: Vec<String> = ids.map(|id| format!("({id})")).collect();
        writer
            .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    let received = futures::future::join_all(followers.iter_mut().map(
        |(_, _, divisor, stream)| async move {
            let expected: Vec<String> = (1..=24)
                .filter(|id| id % *divisor as i64 == 0)
                .map(|id| id.to_string())
                .collect();
            let text = copy_lines(&mut stream.as_mut(), expected.len()).await;
            (text, expected)
        },
    ))
    .await;
    for (text, expected) in received {
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
    for (client, socket, _, _) in followers {
        drop(client);
        socket.abort();
    }
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
