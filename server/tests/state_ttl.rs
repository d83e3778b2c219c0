//! The state TTL through SQL (`SET state.ttl`, Flink's `table.exec.state.ttl`): a group of an
//! updating aggregate whose key was not written for longer than the TTL is forgotten, so its
//! next row starts a new group (`+` without a `-`), while the same query without a TTL keeps
//! counting.

use std::time::Duration;

use eddy_server::{Server, ServerConfig};
use futures::{Stream, StreamExt, pin_mut};
mod common;
use common::{connect_with_socket, wait_for_no_tasks};

/// How long to wait for a row that must come (generous: CI machines are slow).
const ROW_TIMEOUT: Duration = Duration::from_secs(10);

/// The next COPY row, as text.
async fn next_row<S>(stream: &mut std::pin::Pin<&mut S>) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let chunk = tokio::time::timeout(ROW_TIMEOUT, stream.next())
        .await
        .expect("a row within the timeout")
        .expect("the query over a push table never ends")
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
}

#[tokio::test]
async fn an_expired_group_starts_afresh_and_without_a_ttl_it_does_not() {
    let dir = std::env::temp_dir().join(format!("eddy-state-ttl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.clone()),
        parallelism: 2,
        allowed_paths: Vec::new(),
        checkpoint_interval: Duration::from_secs(10),
        checkpoint_timeout: eddy_engine::checkpoints::DEFAULT_TIMEOUT,
        security: Default::default(),
    })
    .await
    .unwrap();
    let (writer, _) = connect_with_socket(&server).await;
    let (with_ttl, with_ttl_socket) = connect_with_socket(&server).await;
    let (without, without_socket) = connect_with_socket(&server).await;
    writer
        .batch_execute("CREATE TABLE clicks (user_id INT, url VARCHAR)")
        .await
        .unwrap();
    with_ttl
        .batch_execute("SET state.ttl = '200 milliseconds'")
        .await
        .unwrap();
    let query = "COPY (SELECT user_id, count(*) FROM clicks GROUP BY user_id) TO STDOUT";
    let expiring = with_ttl.copy_out(query).await.unwrap();
    let kept = without.copy_out(query).await.unwrap();
    pin_mut!(expiring);
    pin_mut!(kept);

    writer
        .batch_execute("INSERT INTO clicks VALUES (1, 'a'), (1, 'b')")
        .await
        .unwrap();
    assert_eq!(next_row(&mut expiring).await, "+\t1\t2\n");
    assert_eq!(next_row(&mut kept).await, "+\t1\t2\n");

    // Well past the TTL (and its scan period, a tenth of it), user 1 clicks again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    writer
        .batch_execute("INSERT INTO clicks VALUES (1, 'c')")
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut expiring).await,
        "+\t1\t1\n",
        "the expired group is forgotten: a new one, no retraction"
    );
    assert_eq!(next_row(&mut kept).await, "-\t1\t2\n");
    assert_eq!(next_row(&mut kept).await, "+\t1\t3\n");

    drop((with_ttl, without));
    with_ttl_socket.abort();
    without_socket.abort();
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
