//! The state TTL through SQL (`SET state.ttl`, Flink's `table.exec.state.ttl`): a group of an
//! updating aggregate whose key was not written for longer than the TTL is forgotten, so its
//! next row starts a new group (`+` without a `-`), while the same query without a TTL keeps
//! counting.

use std::time::Duration;

use futures::pin_mut;
mod common;
use common::{connect_with_socket, copy_lines, start, temp_dir, wait_for_no_tasks};

#[tokio::test]
async fn an_expired_group_starts_afresh_and_without_a_ttl_it_does_not() {
    let dir = temp_dir("state-ttl");
    let server = start(&dir).await;
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
    assert_eq!(copy_lines(&mut expiring, 1).await, "+\t1\t2\n");
    assert_eq!(copy_lines(&mut kept, 1).await, "+\t1\t2\n");

    // Well past the TTL (and its scan period, a tenth of it), user 1 clicks again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    writer
        .batch_execute("INSERT INTO clicks VALUES (1, 'c')")
        .await
        .unwrap();
    assert_eq!(
        copy_lines(&mut expiring, 1).await,
        "+\t1\t1\n",
        "the expired group is forgotten: a new one, no retraction"
    );
    assert_eq!(copy_lines(&mut kept, 2).await, "-\t1\t2\n+\t1\t3\n");

    drop((with_ttl, without));
    with_ttl_socket.abort();
    without_socket.abort();
    wait_for_no_tasks(&server).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
