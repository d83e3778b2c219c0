//! The connection limit through tokio-postgres: idle sessions hold no dataflow, one client more
//! than `max_connections` gets 53300, and a client that vanishes mid-query gives back its slot
//! and its dataflow.

use std::time::Duration;

use eddy_server::Server;
use eddy_server::security::SecurityConfig;
use tokio_postgres::NoTls;

mod common;
use common::{connect_with_socket, start_secured, temp_dir, wait_for_no_tasks};

async fn try_connect(server: &Server) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let addr = server.local_addr();
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=eddy dbname=eddy",
            addr.ip(),
            addr.port()
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

#[tokio::test]
async fn a_vanished_client_frees_its_slot_and_idle_sessions_hold_no_dataflow() {
    let dir = temp_dir("limits");
    let server = start_secured(
        &dir,
        SecurityConfig {
            max_connections: 2,
            ..SecurityConfig::default()
        },
    )
    .await;
    let (first, first_socket) = connect_with_socket(&server).await;
    first
        .batch_execute("CREATE TABLE t (a BIGINT)")
        .await
        .unwrap();
    first
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // A finished query leaves its session idle, with no dataflow.
    first.simple_query("SELECT a FROM t LIMIT 1").await.unwrap();
    wait_for_no_tasks(&server).await;

    let second = try_connect(&server).await.unwrap();
    let Err(refused) = try_connect(&server).await else {
        panic!("a third client got in");
    };
    assert_eq!(sqlstate(&refused), Some("53300"), "{refused}");
    assert_eq!(
        refused.as_db_error().map(|d| d.message()),
        Some("sorry, too many clients already")
    );

    // The first client starts an unbounded query that produces nothing, then vanishes.
    let query =
        tokio::spawn(async move { first.simple_query("SELECT a FROM t WHERE a > 1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.engine().live_tasks() > 0,
        "the query should be running"
    );
    query.abort();
    first_socket.abort();
    let _ = query.await;
    wait_for_no_tasks(&server).await;

    // Its slot is free again (the server notices within about a second).
    let mut third = None;
    for _ in 0..100 {
        match try_connect(&server).await {
            Ok(client) => {
                third = Some(client);
                break;
            }
            Err(e) if sqlstate(&e) == Some("53300") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let third = third.expect("the vanished client's slot was not freed within 10 s");
    third.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
    server.shutdown().await;
}
