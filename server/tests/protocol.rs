//! Malformed frontend messages, sent over a raw socket after a valid startup: each ends its
//! connection with a FATAL `08P01` ErrorResponse (never a panic of the connection task), and
//! the server goes on serving other clients.

mod common;

use std::time::Duration;

use common::raw::{error_field, message, read_message, started};
use tokio::io::AsyncWriteExt;

/// Sends `bytes` after a startup and returns the ErrorResponse's severity, code and message,
/// checking that the server then closes the connection.
async fn refused(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, String, String) {
    let mut socket = started(addr).await;
    socket.write_all(bytes).await.unwrap();
    let mut error = None;
    while let Some((kind, body)) = read_message(&mut socket).await {
        if kind == b'E' {
            error = Some((
                error_field(&body, b'S').unwrap_or_default(),
                error_field(&body, b'C').unwrap_or_default(),
                error_field(&body, b'M').unwrap_or_default(),
            ));
        }
    }
    error.expect("no ErrorResponse before the connection closed")
}

#[tokio::test]
async fn malformed_messages_end_the_connection_with_08p01() {
    let dir = common::temp_dir("protocol-malformed");
    let server = common::start(&dir).await;
    let addr = server.local_addr();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // The messages that panicked pgwire 0.42.1's decoder: a Parse and a Bind whose bodies
        // end before their fields.
        ("Parse cut short", message(b'P', b"s1\0")),
        (
            "Parse declaring 2 types and giving 1",
            message(b'P', b"s1\0SELECT $1\0\x00\x02\x00\x00\x00\x17"),
        ),
        ("Bind cut short", message(b'B', b"\0")),
        (
            "Bind parameter longer than the message",
            message(b'B', b"\0\0\x00\x00\x00\x01\x00\x00\x10\x00ab"),
        ),
        ("Execute cut short", message(b'E', b"\0\x00")),
        ("Describe without a name", message(b'D', b"S")),
        ("Close without a body", message(b'C', b"")),
        ("a length below 4", vec![b'P', 0, 0, 0, 2]),
        (
            "a Query with bytes after its string",
            message(b'Q', b"SELECT 1\0junk"),
        ),
        ("an unknown message type", message(b'F', b"\0")),
    ];
    for (what, bytes) in cases {
        let (severity, code, text) = refused(addr, &bytes).await;
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "08P01"),
            "{what}: {text}"
        );
    }

    // The server still serves: a new client's extended query (Parse/Bind/Execute) works.
    let (client, _socket) = common::connect_with_socket(&server).await;
    let row = client
        .query_one("SELECT $1::BIGINT + 1", &[&41i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn well_formed_messages_split_across_writes_are_served() {
    let dir = common::temp_dir("protocol-split");
    let server = common::start(&dir).await;
    let mut socket = started(server.local_addr()).await;
    // Parse, Bind, Execute, Sync, written a few bytes at a time.
    let mut bytes = message(b'P', b"\0SELECT 7\0\x00\x00");
    bytes.extend(message(b'B', b"\0\0\x00\x00\x00\x00\x00\x00"));
    bytes.extend(message(b'E', b"\0\x00\x00\x00\x00"));
    bytes.extend(message(b'S', b""));
    for chunk in bytes.chunks(3) {
        socket.write_all(chunk).await.unwrap();
        socket.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut row = None;
    loop {
        let (kind, body) = read_message(&mut socket).await.expect("connection closed");
        match kind {
            b'D' => row = Some(String::from_utf8_lossy(&body[6..]).into_owned()),
            b'E' => panic!("error: {:?}", error_field(&body, b'M')),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(row.as_deref(), Some("7"));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by the pgwire fuzz target: an Execute asking for 2^31 - 1 rows made pgwire reserve
/// room for that many rows before fetching the first (tens of GB: the process aborted). The
/// rows come, and the portal completes, without that reservation.
#[tokio::test]
async fn an_execute_asking_for_two_billion_rows_allocates_for_the_rows_there_are() {
    let dir = common::temp_dir("protocol-max-rows");
    let server = common::start(&dir).await;
    let mut socket = started(server.local_addr()).await;
    let mut bytes = message(
        b'P',
        b"\0SELECT * FROM (VALUES (1), (2), (3)) AS t(x)\0\0\0",
    );
    bytes.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(message(b'E', b"\0\x7f\xff\xff\xff"));
    bytes.extend(message(b'S', b""));
    socket.write_all(&bytes).await.unwrap();
    let mut kinds = String::new();
    while let Some((kind, body)) = read_message(&mut socket).await {
        kinds.push(kind as char);
        if kind == b'C' {
            assert_eq!(body, b"SELECT 3\0");
        }
        if kind == b'Z' {
            break;
        }
    }
    assert_eq!(kinds, "12DDDCZ");
}
