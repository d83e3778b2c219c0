//! Runs Eddy's sqllogictest files against a real server over pgwire.
//!
//! Each `.slt` file gets a fresh in-process server (its own data directory) and a fresh
//! `tokio-postgres` connection. Errors read `<SQLSTATE>: <message>`, so a test can assert the
//! code with `statement error 42P01`. `$DATA` in a file expands to `sql-tests/data` and
//! `$CONFORMANCE` to the conformance cases copied into `sql-tests/data/conformance` (after
//! `control substitution on`).
//!
//! The harness answers one statement itself instead of sending it: `HARNESS NOTICES` returns,
//! one row each as `SEVERITY: message`, the notices and warnings the server sent while running
//! the previous statement (e.g. the warning about dropped late rows).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use eddy_server::{Server, ServerConfig};
use futures::StreamExt;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// The statement the harness answers itself with the previous statement's notices.
pub const NOTICES_STATEMENT: &str = "HARNESS NOTICES";

/// An error as a test sees it.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SqlError {
    pub code: String,
    pub message: String,
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => SqlError {
                code: "connection".to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// A connection to a test server.
pub struct EddyDb {
    client: Client,
    /// Notices received since the current statement started, as `SEVERITY: message`.
    notices: Arc<Mutex<Vec<String>>>,
    /// Notices of the previous statement (what `HARNESS NOTICES` returns).
    previous_notices: Vec<String>,
}

impl EddyDb {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self, SqlError> {
        let (client, mut connection) = tokio_postgres::connect(
            &format!(
                "host={} port={} user=eddy dbname=eddy",
                addr.ip(),
                addr.port()
            ),
            NoTls,
        )
        .await?;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&notices);
        // Driving the connection by hand (instead of awaiting it) keeps its notices. A notice
        // is handed over here before the messages that follow it (the statement's completion),
        // so it is recorded by the time the statement returns.
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notice(notice) = message
                    && let Ok(mut notices) = sink.lock()
                {
                    notices.push(format!("{}: {}", notice.severity(), notice.message()));
                }
            }
        });
        Ok(Self {
            client,
            notices,
            previous_notices: Vec::new(),
        })
    }

    /// Takes the notices received so far.
    fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

#[async_trait]
impl AsyncDB for EddyDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        if sql
            .trim()
            .trim_end_matches(';')
            .eq_ignore_ascii_case(NOTICES_STATEMENT)
        {
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows: self
                    .previous_notices
                    .iter()
                    .map(|n| vec![n.clone()])
                    .collect(),
            });
        }
        self.take_notices();
        let result = self.client.simple_query(sql).await;
        self.previous_notices = self.take_notices();
        let messages = result?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::Row(row) => {
                    let values = (0..row.len())
                        .map(|i| match row.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect::<Vec<_>>();
                    rows.push(values);
                }
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "eddy"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// This crate's folder: `CARGO_MANIFEST_DIR` as cargo sets it when it runs the tests, so a
/// test binary built in another checkout (a shared target dir) reads this checkout's files;
/// the folder it was compiled in otherwise.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where the test data lives.
pub fn data_dir() -> PathBuf {
    crate_dir().join("data")
}

/// The conformance cases taken from other engines' test suites (each folder's `source.txt`
/// names its origin).
pub fn conformance_dir() -> PathBuf {
    data_dir().join("conformance")
}

/// Runs one `.slt` file against a fresh server, whose queries run each keyed operator with
/// `EDDY_SLT_PARALLELISM` instances (default 1).
pub async fn run_file(path: &Path) -> Result<(), String> {
    let server_dir = std::env::temp_dir().join(format!(
        "eddy-slt-{}-{}",
        std::process::id(),
        path.file_stem().and_then(|s| s.to_str()).unwrap_or("test")
    ));
    let _ = std::fs::remove_dir_all(&server_dir);
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        data_dir: Some(server_dir.clone()),
        parallelism: std::env::var("EDDY_SLT_PARALLELISM")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1),
        allowed_paths: Vec::new(),
        checkpoint_interval: std::time::Duration::from_secs(10),
        checkpoint_timeout: std::time::Duration::from_secs(600),
        security: Default::default(),
        client_send_timeout: eddy_server::wire::send_timeout::DEFAULT_CLIENT_SEND_TIMEOUT,
        test_faults: false,
        max_memory: None,
        client_follow_buffer: Some(64 << 20),
    })
    .await
    .map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let mut runner = sqllogictest::Runner::new(move || async move { EddyDb::connect(addr).await });
    runner.with_column_validator(|_, _| true);
    runner.set_var("DATA".to_string(), data_dir_string(&data_dir()));
    // Where tests export files: inside the server's data directory, which it allows.
    runner.set_var("OUT".to_string(), data_dir_string(&server_dir.join("out")));
    runner.set_var(
        "CONFORMANCE".to_string(),
        data_dir_string(&conformance_dir()),
    );
    let result = runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string());
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&server_dir);
    result
}

fn data_dir_string(p: &Path) -> String {
    p.canonicalize()
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}
