//! Helpers shared by the server's integration tests: starting a server on a data directory,
//! connecting clients, reading streamed COPY rows and waiting for a query's dataflow to be gone.
//! (Each test binary uses some of them.)
#![allow(dead_code)]

pub mod raw;

use std::time::Duration;

use eddy_server::{Server, ServerConfig};
use futures::StreamExt;
use tokio_postgres::{Client, NoTls};

/// A server on an ephemeral loopback port with one instance per operator, allowed to read
/// the repository's test data (besides its data directory and working directory).
pub async fn start(dir: &std::path::Path) -> Server {
    start_checkpointing(dir, Duration::from_secs(10)).await
}

/// Like [`start`], with background jobs checkpointing every `interval`.
pub async fn start_checkpointing(dir: &std::path::Path, interval: Duration) -> Server {
    start_with(dir, interval, Default::default()).await
}

/// Like [`start`], with these security settings (authentication, TLS, connection limit).
pub async fn start_secured(
    dir: &std::path::Path,
    security: eddy_server::security::SecurityConfig,
) -> Server {
    start_with(dir, Duration::from_secs(10), security).await
}

/// The sql-tests data folder, found from `CARGO_MANIFEST_DIR` as cargo sets it when it runs
/// the tests (a test binary built in another checkout still reads this one's files).
pub fn sql_tests_data() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../sql-tests/data")
}

async fn start_with(
    dir: &std::path::Path,
    interval: Duration,
    security: eddy_server::security::SecurityConfig,
) -> Server {
    start_configured(dir, |config| {
        config.checkpoint_interval = interval;
        config.security = security;
    })
    .await
}

/// Like [`start`], with the configuration changed by `configure` (a send timeout, test faults).
pub async fn start_configured(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut ServerConfig),
) -> Server {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.to_path_buf()),
        parallelism: 1,
        allowed_paths: vec![sql_tests_data()],
        checkpoint_interval: Duration::from_secs(10),
        checkpoint_timeout: eddy_engine::checkpoints::DEFAULT_TIMEOUT,
        security: Default::default(),
        client_send_timeout: eddy_server::wire::send_timeout::DEFAULT_CLIENT_SEND_TIMEOUT,
        test_faults: false,
        max_memory: None,
        client_follow_buffer: Some(eddy_engine::session::DEFAULT_CLIENT_FOLLOW_BUFFER),
    };
    configure(&mut config);
    Server::start(config).await.unwrap()
}

/// The rows of a simple query as text, NULL as `"NULL"`.
pub async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// `rows` as the text rows [`text_rows`] returns.
pub fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// Polls `sql` (bounded, 10 s) until it returns `expected`.
pub async fn eventually(client: &Client, sql: &str, expected: &[&[&str]]) {
    let expected = table(expected);
    let mut last = Vec::new();
    for _ in 0..400 {
        last = text_rows(client, sql).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} returned {last:?}, expected {expected:?}");
}

/// An empty directory for one test's data, under the system's temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("eddy-server-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Reads COPY data until it holds `lines` lines (bounded wait).
pub async fn copy_lines(
    stream: &mut std::pin::Pin<&mut tokio_postgres::CopyOutStream>,
    lines: usize,
) -> String {
    let mut text = String::new();
    while text.lines().count() < lines {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("rows not streamed within 10 s")
            .expect("stream ended")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text
}

/// A client and the task that owns its socket: aborting the task closes the socket, as a
/// client process that dies would.
pub async fn connect_with_socket(server: &Server) -> (Client, tokio::task::JoinHandle<()>) {
    let addr = server.local_addr();
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=eddy dbname=eddy",
            addr.ip(),
            addr.port()
        ),
        NoTls,
    )
    .await
    .unwrap();
    let socket = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, socket)
}

/// Waits (bounded) until the engine has no dataflow task left.
pub async fn wait_for_no_tasks(server: &Server) {
    for _ in 0..600 {
        if server.engine().live_tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{} dataflow tasks still alive",
        server.engine().live_tasks()
    );
}
