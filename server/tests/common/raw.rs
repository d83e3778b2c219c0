//! A raw-socket Postgres client for tests that need to misbehave: malformed messages, or a
//! client that stops reading.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message of type `kind` with `body`, its length field computed.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// One backend message: its type and body.
pub async fn read_message(socket: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut header))
        .await
        .expect("the server neither answered nor closed within 10 s")
        .ok()?;
    let length = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; length - 4];
    socket.read_exact(&mut body).await.ok()?;
    Some((header[0], body))
}

/// The fields of an ErrorResponse body by their code byte.
pub fn error_field(body: &[u8], code: u8) -> Option<String> {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

/// A socket past the startup (trust authentication), at its first ReadyForQuery.
pub async fn started(addr: std::net::SocketAddr) -> TcpStream {
    start_up(TcpStream::connect(addr).await.unwrap()).await
}

/// Runs the startup on a connected socket (trust authentication), up to its first
/// ReadyForQuery.
pub async fn start_up(mut socket: TcpStream) -> TcpStream {
    let params = b"\x00\x03\x00\x00user\0eddy\0database\0eddy\0\0";
    let mut startup = (params.len() as i32 + 4).to_be_bytes().to_vec();
    startup.extend_from_slice(params);
    socket.write_all(&startup).await.unwrap();
    loop {
        let (kind, _) = read_message(&mut socket)
            .await
            .expect("the connection closed during startup");
        if kind == b'Z' {
            return socket;
        }
    }
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}
