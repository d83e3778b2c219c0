//! Helpers shared by the server's integration tests: connecting clients and waiting for a
//! query's dataflow to be gone.

use std::time::Duration;

use eddy_server::Server;
use tokio_postgres::{Client, NoTls};

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
