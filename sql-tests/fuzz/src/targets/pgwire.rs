//! Target `pgwire`: arbitrary frontend message sequences against a live server.
//!
//! One in-process server on 127.0.0.1 (an ephemeral port, trust auth, in-memory catalog) is
//! started once. Each input is read as a stream of frontend messages (`type byte, int32
//! length, body`, as on the wire); a length that does not fit the input is repaired to
//! cover the rest of it, so that mutations change message bodies more often than they break
//! the framing. When the input's first byte is `!`, the rest is sent exactly as it is
//! instead (framing errors). The messages go after a valid startup on a fresh connection,
//! followed by Terminate; the server must then close the connection within [`DEADLINE`].
//! After each input a health check on a new connection must answer `SELECT 1`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eddy_server::{Server, ServerConfig};

use crate::FuzzError;
use crate::runtime::{runtime, scratch_dir};

/// How long the server may take to answer an input, close its connection and pass the health
/// check (within the driver's 1 s per input).
pub const DEADLINE: Duration = Duration::from_millis(900);

static ADDR: OnceLock<SocketAddr> = OnceLock::new();

/// Starts the server (once).
pub fn init() -> Result<(), FuzzError> {
    if ADDR.get().is_some() {
        return Ok(());
    }
    let rt = runtime()?;
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: None,
        parallelism: 1,
        allowed_paths: vec![scratch_dir().to_path_buf()],
        checkpoint_interval: Duration::from_secs(10),
        checkpoint_timeout: eddy_engine::checkpoints::DEFAULT_TIMEOUT,
        security: Default::default(),
        client_send_timeout: Duration::from_secs(1),
        test_faults: false,
        max_memory: None,
        client_follow_buffer: Some(eddy_engine::session::DEFAULT_CLIENT_FOLLOW_BUFFER),
    };
    let server = rt
        .block_on(Server::start(config))
        .map_err(|e| FuzzError::Server(e.to_string()))?;
    let addr = server.local_addr();
    // The server lives as long as the process: its accept loop runs on the shared runtime.
    std::mem::forget(server);
    let _ = ADDR.set(addr);
    Ok(())
}

/// The input as wire bytes: messages with repaired lengths, or the raw rest after `!`.
pub fn frame(input: &[u8]) -> Vec<u8> {
    if let Some(raw) = input.strip_prefix(b"!") {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(input.len() + 8);
    let mut rest = input;
    while let Some((&kind, after)) = rest.split_first() {
        let declared = after
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (body, next) = match declared {
            Some(len) if (4..=after.len()).contains(&len) => (&after[4..len], &after[len..]),
            Some(_) => (&after[4..], &after[after.len()..]),
            None => (after, &after[after.len()..]),
        };
        out.push(kind);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        rest = next;
    }
    out
}

/// A message of the wire protocol: its type byte and body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0eddy\0database\0eddy\0\0");
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Reads backend messages until one of type `until` (returning every message read), the
/// end of the connection (`Ok` with what was read) or `deadline`.
fn read_until(
    stream: &mut TcpStream,
    until: Option<u8>,
    deadline: Instant,
) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut buffer = Vec::new();
    let mut messages = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while buffer.len() >= 5 {
            let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if len < 4 {
                return Err(format!("backend message with length {len}"));
            }
            if buffer.len() < len + 1 {
                break;
            }
            let kind = buffer[0];
            let body = buffer[5..len + 1].to_vec();
            buffer.drain(..len + 1);
            messages.push((kind, body));
            if Some(kind) == until {
                return Ok(messages);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no answer within the deadline (last messages: {:?})",
                messages
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(k, _)| *k as char)
                    .collect::<Vec<_>>()
            ));
        }
        stream
            .set_read_timeout(Some(deadline - now))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(messages),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset after the server closed the connection is an end.
            Err(_) => return Ok(messages),
        }
    }
}

/// A new connection that has completed its startup.
fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .write_all(&startup_message())
        .map_err(|e| e.to_string())?;
    let messages = read_until(&mut stream, Some(b'Z'), deadline)?;
    match messages.last() {
        Some((b'Z', _)) => Ok(stream),
        _ => Err(format!(
            "startup did not end in ReadyForQuery: {:?}",
            messages.iter().map(|(k, _)| *k as char).collect::<String>()
        )),
    }
}

/// `SELECT 1` on a new connection must answer one row `1`.
fn health_check(addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    let mut stream = connect(addr, deadline)?;
    stream
        .write_all(&message(b'Q', b"SELECT 1\0"))
        .map_err(|e| e.to_string())?;
    let messages = read_until(&mut stream, Some(b'Z'), deadline)?;
    let row = messages.iter().find(|(k, _)| *k == b'D');
    match row {
        Some((_, body)) if body.ends_with(b"1") => {
            let _ = stream.write_all(&message(b'X', b""));
            Ok(())
        }
        _ => Err(format!(
            "SELECT 1 answered {:?}",
            messages.iter().map(|(k, _)| *k as char).collect::<String>()
        )),
    }
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> Option<&[u8]> {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
}

pub fn run(input: &[u8]) {
    let Some(&addr) = ADDR.get() else {
        panic!("harness: pgwire::init was not called");
    };
    let deadline = Instant::now() + DEADLINE;
    let mut stream = match connect(addr, deadline) {
        Ok(s) => s,
        Err(e) => panic!("the server refused a new connection: {e}"),
    };
    let mut bytes = frame(input);
    bytes.extend_from_slice(&message(b'X', b""));
    // The server may close the connection before reading everything (a fatal error).
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    match read_until(&mut stream, None, deadline) {
        Ok(messages) => {
            for (kind, body) in &messages {
                if *kind == b'E' && sqlstate(body) == Some(b"XX000") {
                    panic!(
                        "the server reported an internal error: {}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        }
        Err(e) => panic!("the connection did not end after Terminate: {e}"),
    }
    drop(stream);
    if let Err(e) = health_check(addr, deadline) {
        panic!("the server is unhealthy after the input: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_repairs_lengths_that_do_not_fit() {
        assert_eq!(frame(b"Q\0\0\0\x0aSELECT"), message(b'Q', b"SELECT"));
        assert_eq!(frame(b"Q\xff\0\0\0ab"), message(b'Q', b"ab"));
        assert_eq!(frame(b"!Q\xff"), b"Q\xff");
        let two = [message(b'S', b""), message(b'H', b"")].concat();
        assert_eq!(frame(&two), two);
    }
}
