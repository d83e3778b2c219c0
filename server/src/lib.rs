//! Eddy's server: the pgwire front end, sessions, catalog persistence and the CLI.
//!
//! [`Server::start`] binds the listener and serves clients until [`Server::shutdown`]; the
//! `eddy` binary and the SQL tests both start servers this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::paths::PathPolicy;
use eddy_engine::session::{Engine, EngineConfig};
use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod catalog_store;
pub mod cli;
pub mod memory;
pub mod panic_hook;
pub mod security;
pub mod wire;

use catalog_store::JsonCatalogStore;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Catalog and table data; `None` keeps everything in memory (tests).
    pub data_dir: Option<PathBuf>,
    /// Parallel instances of each keyed operator per query (sessions may `SET parallelism`).
    pub parallelism: usize,
    /// Directories file sources, sinks and `COPY ... TO 'file'` may use, besides the data
    /// directory and the working directory (`--allow-path`).
    pub allowed_paths: Vec<PathBuf>,
    /// How often background jobs checkpoint (`--checkpoint-interval`; zero: never).
    pub checkpoint_interval: std::time::Duration,
    /// How long a checkpoint's barrier may take to come back (`--checkpoint-timeout`).
    pub checkpoint_timeout: std::time::Duration,
    /// Authentication, TLS and the connection limit.
    pub security: security::SecurityConfig,
    /// How long a send to a client may wait for it to read before its query and connection
    /// end (`--client-send-timeout`; zero: forever).
    pub client_send_timeout: std::time::Duration,
    /// Registers the test-only fault function `eddy_fault` (`--enable-test-faults`).
    pub test_faults: bool,
    /// Bytes of operator state all queries and jobs may hold (`--max-memory`); `None`: no
    /// limit.
    pub max_memory: Option<usize>,
    /// How many bytes of changes a client's query following a materialized view may be
    /// behind before it is cut off (`--client-follow-buffer`); `None`: the view's job waits.
    pub client_follow_buffer: Option<usize>,
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    AllowPath(std::io::Error),
}

/// Splits off a second handle on the socket for noticing disconnects (see `ClientProbe`).
fn with_probe(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, wire::handler::ClientProbe)> {
    let socket = socket.into_std()?;
    let probe = socket.try_clone()?;
    Ok((
        tokio::net::TcpStream::from_std(socket)?,
        wire::handler::ClientProbe::new(probe),
    ))
}

impl Server {
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let (store, ddl) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                let store = JsonCatalogStore::new(dir);
                let ddl = store.load().map_err(|source| ServerError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                (
                    Some(Arc::new(store) as Arc<dyn eddy_engine::catalog::CatalogStore>),
                    ddl,
                )
            }
            None => (None, Vec::new()),
        };
        // Files may be touched in the data directory, the working directory and each
        // `--allow-path` directory, nowhere else.
        let mut allowed: Vec<PathBuf> = config.data_dir.iter().cloned().collect();
        allowed.push(std::env::current_dir().map_err(ServerError::AllowPath)?);
        allowed.extend(config.allowed_paths.iter().cloned());
        let paths = Arc::new(PathPolicy::allow(allowed).map_err(ServerError::AllowPath)?);
        let mut connectors = ConnectorRegistry::default();
        eddy_connectors::register_all(&mut connectors, paths);
        let engine = Engine::new(
            EngineConfig {
                data_dir: config.data_dir.clone(),
                parallelism: config.parallelism.max(1),
                checkpoint_interval: config.checkpoint_interval,
                checkpoint_timeout: config.checkpoint_timeout,
                test_faults: config.test_faults,
                max_memory: config.max_memory,
                client_follow_buffer: config.client_follow_buffer,
                ..EngineConfig::default()
            },
            connectors,
            store,
        );
        for (sql, error) in engine.restore(&ddl).await {
            tracing::error!(statement = %sql, %error, "could not restore a catalog entry");
        }
        if !ddl.is_empty() {
            tracing::info!(relations = ddl.len(), "catalog restored");
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, mut stop) = watch::channel(false);
        let manager = Arc::new(ConnectionManager::new());
        let tls = config.security.tls.as_ref().map(|t| t.acceptor.clone());
        let options = wire::serve::ServeOptions {
            scram: matches!(config.security.auth, security::Authentication::Scram(_)),
            client_send_timeout: config.client_send_timeout,
        };
        let gate = Arc::new(wire::startup::StartupGate::new(
            config.security.clone(),
            Arc::clone(&manager),
        ));
        let shared_engine = Arc::clone(&engine);
        let accept_loop = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.changed() => break,
                };
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let (socket, probe) = match with_probe(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot set up the connection");
                        continue;
                    }
                };
                // Taken at the startup message, given back when the connection ends.
                let slot = Arc::new(wire::startup::ConnectionSlot::default());
                let handlers = wire::ConnectionHandlers::new(
                    wire::handler::Connection::new(
                        engine.new_session(),
                        Arc::clone(&gate),
                        Arc::clone(&slot),
                        peer.to_string(),
                        Some(probe),
                    ),
                    Arc::clone(&manager),
                );
                let tls = tls.clone();
                let options = options.clone();
                tokio::spawn(async move {
                    match wire::serve::serve(socket, tls, handlers, &options).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            tracing::warn!(%peer, error = %e, "client stopped reading: its query and connection end");
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "connection error"),
                    }
                    slot.release();
                    tracing::info!(%peer, "connection closed");
                });
            }
        });
        tracing::info!(
            address = %local_addr,
            auth = ?config.security.auth.method(),
            tls = config.security.tls.is_some(),
            tls_required = config.security.tls_required,
            max_connections = config.security.max_connections,
            client_send_timeout = ?config.client_send_timeout,
            test_faults = config.test_faults,
            max_memory = %config
                .max_memory
                .map_or("unlimited".to_string(), eddy_engine::size::format_size),
            client_follow_buffer = %config
                .client_follow_buffer
                .map_or("off".to_string(), eddy_engine::size::format_size),
            "eddy is listening"
        );
        Ok(Self {
            local_addr,
            engine: shared_engine,
            shutdown,
            accept_loop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine behind this server (tests inspect it).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting connections.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        // Sinks finish the files they have open, so none is left half-written.
        self.engine.jobs().stop_all().await;
    }

    /// Waits until the accept loop ends (it ends only at shutdown).
    pub async fn wait(self) {
        let _ = self.accept_loop.await;
    }
}
