//! Frontend message checks: every message a client sends is checked against the protocol's
//! grammar before pgwire decodes it.
//!
//! pgwire 0.42's frontend decoders read their fields without bounds checks: a `Parse`, `Bind`,
//! `Execute`, `Close` or `Describe` whose body is shorter than its fields (or a length field
//! below 4) panics inside `bytes` ("advance out of bounds"), and a body longer than its fields
//! leaves the rest to be decoded as the next message. [`Checked`] sits between the
//! (decrypted) socket and pgwire's codec: it frames the byte stream itself and hands a message
//! on only once it is complete and well formed, so pgwire decodes nothing it could trip on. A
//! malformed message ends the stream with an [`io::ErrorKind::InvalidData`] error carrying a
//! [`Malformed`]; the connection loop answers it with a FATAL `08P01` ErrorResponse, as
//! Postgres does ("invalid message format", "invalid frontend message type").
//!
//! Messages without fields to check (`CopyData`) are passed through as they arrive, so a large
//! `COPY FROM STDIN` is not held back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest startup message Postgres accepts (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_LENGTH: usize = 10_000;
/// The longest message of any other kind (pgwire's and Postgres' 1 GB limit).
const MAX_MESSAGE_LENGTH: usize = 0x3fff_ffff - 1;
/// The code of a CancelRequest, in place of a startup message's protocol version.
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Why a frontend message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
    #[error("invalid message length {length} for message type '{kind}'")]
    Length { kind: char, length: i64 },
    #[error("invalid startup packet length {0}")]
    StartupLength(i64),
    #[error("invalid startup packet layout: {0}")]
    StartupLayout(&'static str),
    #[error("invalid message format: {what} in a '{kind}' message")]
    Format { kind: char, what: &'static str },
}

impl Malformed {
    /// The error `Checked` reports it as.
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The `Malformed` inside an error of [`Checked`], if that is what it is.
    pub fn from_io(error: &io::Error) -> Option<&Malformed> {
        error.get_ref().and_then(|e| e.downcast_ref::<Malformed>())
    }
}

/// Where the framing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the startup message (which has no type byte).
    Startup,
    /// At the start of a typed message.
    Typed,
    /// Inside a `CopyData` body, this many bytes still to pass.
    PassThrough(usize),
}

/// The framing state of one connection's frontend byte stream.
#[derive(Debug)]
struct Framing {
    phase: Phase,
    /// The first password message is a SASLInitialResponse (SCRAM authentication).
    sasl_initial_next: bool,
}

impl Framing {
    /// Moves whatever prefix of `incoming` is complete and well formed (or passes through) to
    /// `ready`; stops at an incomplete message, or at a malformed one with its error.
    fn advance(&mut self, incoming: &mut BytesMut, ready: &mut BytesMut) -> Result<(), Malformed> {
        loop {
            match self.phase {
                Phase::PassThrough(remaining) => {
                    let n = remaining.min(incoming.len());
                    ready.extend_from_slice(&incoming.split_to(n));
                    if n < remaining {
                        self.phase = Phase::PassThrough(remaining - n);
                        return Ok(());
                    }
                    self.phase = Phase::Typed;
                }
                Phase::Startup => {
                    if incoming.len() < 4 {
                        return Ok(());
                    }
                    let length = i64::from((&incoming[..4]).get_i32());
                    if !(8..=MAX_STARTUP_LENGTH as i64).contains(&length) {
                        return Err(Malformed::StartupLength(length));
                    }
                    let length = length as usize;
                    if incoming.len() < length {
                        return Ok(());
                    }
                    let code = (&incoming[4..8]).get_i32();
                    if code == CANCEL_REQUEST_CODE {
                        if length < 12 {
                            return Err(Malformed::StartupLength(length as i64));
                        }
                    } else {
                        check_startup_parameters(&incoming[8..length])
                            .map_err(Malformed::StartupLayout)?;
                    }
                    ready.extend_from_slice(&incoming.split_to(length));
                    self.phase = Phase::Typed;
                }
                Phase::Typed => {
                    if incoming.len() < 5 {
                        return Ok(());
                    }
                    let kind = incoming[0];
                    let length = i64::from((&incoming[1..5]).get_i32());
                    if !(4..=MAX_MESSAGE_LENGTH as i64).contains(&length) {
                        return Err(Malformed::Length {
                            kind: kind as char,
                            length,
                        });
                    }
                    let body_length = length as usize - 4;
                    match kind {
                        b'd' => {
                            ready.extend_from_slice(&incoming.split_to(5));
                            self.phase = Phase::PassThrough(body_length);
                            continue;
                        }
                        // Sync, Flush, Terminate, CopyDone: no body (pgwire would read a body
                        // as the next message).
                        b'S' | b'H' | b'X' | b'c' if body_length != 0 => {
                            return Err(Malformed::Length {
                                kind: kind as char,
                                length,
                            });
                        }
                        b'S' | b'H' | b'X' | b'c' | b'Q' | b'P' | b'B' | b'C' | b'D' | b'E'
                        | b'f' | b'p' => {}
                        other => return Err(Malformed::UnknownType(other)),
                    }
                    if incoming.len() < 5 + body_length {
                        return Ok(());
                    }
                    let body = &incoming[5..5 + body_length];
                    let sasl_initial = kind == b'p' && self.sasl_initial_next;
                    check_body(kind, body, sasl_initial).map_err(|what| Malformed::Format {
                        kind: kind as char,
                        what,
                    })?;
                    if kind == b'p' {
                        self.sasl_initial_next = false;
                    }
                    ready.extend_from_slice(&incoming.split_to(5 + body_length));
                }
            }
        }
    }
}

/// Checks that a startup message's parameters (after its length and protocol version) are
/// name and value strings, the list ended by an empty name at the last byte (pgwire reads the
/// list up to its first empty or unterminated string and leaves the rest to be decoded as
/// the next message).
fn check_startup_parameters(parameters: &[u8]) -> Result<(), &'static str> {
    let mut fields = Fields(parameters);
    loop {
        match fields.0.first() {
            None => return Err("expected terminator as last byte"),
            Some(0) => {
                fields.skip(1)?;
                break;
            }
            Some(_) => {
                fields.cstring()?;
                fields.cstring()?;
            }
        }
    }
    if fields.0.is_empty() {
        Ok(())
    } else {
        Err("bytes after the terminator")
    }
}

/// Checks that `body` holds exactly the fields of a message of type `kind`.
fn check_body(kind: u8, body: &[u8], sasl_initial: bool) -> Result<(), &'static str> {
    let mut fields = Fields(body);
    match kind {
        b'Q' | b'f' => {
            fields.cstring()?;
        }
        b'P' => {
            fields.cstring()?;
            fields.cstring()?;
            let types = fields.count()?;
            fields.skip(types * 4)?;
        }
        b'B' => {
            fields.cstring()?;
            fields.cstring()?;
            let formats = fields.count()?;
            fields.skip(formats * 2)?;
            for _ in 0..fields.count()? {
                match fields.i32()? {
                    -1 => {}
                    n if n >= 0 => fields.skip(n as usize)?,
                    _ => return Err("a negative parameter length"),
                }
            }
            let result_formats = fields.count()?;
            fields.skip(result_formats * 2)?;
        }
        b'C' | b'D' => {
            fields.skip(1)?;
            fields.cstring()?;
        }
        b'E' => {
            fields.cstring()?;
            fields.i32()?;
        }
        b'p' if sasl_initial => {
            fields.cstring()?;
            match fields.i32()? {
                -1 => {}
                n if n >= 0 => fields.skip(n as usize)?,
                _ => return Err("a negative SASL data length"),
            }
        }
        // A password or SASL response: the whole body is the value.
        b'p' => return Ok(()),
        _ => {}
    }
    if fields.0.is_empty() {
        Ok(())
    } else {
        Err("bytes after the last field")
    }
}

/// A cursor over a message body.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if self.0.len() < n {
            return Err("a field runs past the end of the message");
        }
        self.0 = &self.0[n..];
        Ok(())
    }

    fn cstring(&mut self) -> Result<(), &'static str> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or("a string without its terminating zero byte")?;
        self.0 = &self.0[end + 1..];
        Ok(())
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        if self.0.len() < 4 {
            return Err("a field runs past the end of the message");
        }
        Ok(self.0.get_i32())
    }

    /// A 16-bit count, which must not be negative.
    fn count(&mut self) -> Result<usize, &'static str> {
        if self.0.len() < 2 {
            return Err("a field runs past the end of the message");
        }
        usize::try_from(self.0.get_i16()).map_err(|_| "a negative count")
    }
}

/// A socket whose reads yield only complete, well-formed frontend messages (see the module
/// documentation); writes go straight to the socket.
#[derive(Debug)]
pub struct Checked<S> {
    inner: S,
    framing: Framing,
    /// Bytes read from the socket and not yet checked.
    incoming: BytesMut,
    /// Checked bytes not yet read by pgwire.
    ready: BytesMut,
    /// The error to report once `ready` is drained.
    failed: Option<Malformed>,
}

impl<S> Checked<S> {
    /// Wraps `inner` at the start of the startup message; `read_ahead` holds bytes already read
    /// from it (which are checked first). `scram`: clients authenticate with SCRAM, so the first
    /// password message is a SASLInitialResponse.
    pub fn new(inner: S, read_ahead: BytesMut, scram: bool) -> Self {
        let mut checked = Self {
            inner,
            framing: Framing {
                phase: Phase::Startup,
                sasl_initial_next: scram,
            },
            incoming: read_ahead,
            ready: BytesMut::new(),
            failed: None,
        };
        checked.check();
        checked
    }

    fn check(&mut self) {
        if self.failed.is_none()
            && let Err(e) = self.framing.advance(&mut self.incoming, &mut self.ready)
        {
            self.failed = Some(e);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(e.clone().into_io()));
            }
            this.incoming.reserve(8 * 1024);
            let spare = this.incoming.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // End of stream: an unfinished last message is never handed on (pgwire sees
                // the stream end).
                return Poll::Ready(Ok(()));
            }
            // SAFETY: `read` filled the first `n` bytes of the spare capacity.
            unsafe { this.incoming.set_len(this.incoming.len() + n) };
            this.check();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\0eddy\0\0";
        let mut m = (body.len() as i32 + 4).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    /// Feeds `bytes` one at a time (every split point) and returns what was passed on and the
    /// error, if any.
    fn feed(bytes: &[u8], scram: bool) -> (Vec<u8>, Option<Malformed>) {
        let mut framing = Framing {
            phase: Phase::Startup,
            sasl_initial_next: scram,
        };
        let mut incoming = BytesMut::new();
        let mut ready = BytesMut::new();
        for b in bytes {
            incoming.extend_from_slice(&[*b]);
            if let Err(e) = framing.advance(&mut incoming, &mut ready) {
                return (ready.to_vec(), Some(e));
            }
        }
        (ready.to_vec(), None)
    }

    #[test]
    fn well_formed_messages_pass_whole() {
        let mut stream = startup();
        stream.extend(message(b'P', b"s1\0SELECT $1\0\x00\x01\x00\x00\x00\x17"));
        stream.extend(message(
            b'B',
            b"\0s1\0\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0242\x00\x00",
        ));
        stream.extend(message(b'D', b"P\0"));
        stream.extend(message(b'E', b"\0\x00\x00\x00\x00"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'd', b"1,2\n"));
        stream.extend(message(b'Q', b"SELECT 1\0"));
        assert_eq!(feed(&stream, false), (stream.clone(), None));
    }

    #[test]
    fn a_short_parse_or_bind_body_is_refused_before_it_is_passed_on() {
        // The messages that panicked pgwire's decoder: fields cut short.
        for (kind, body) in [
            (b'P', &b"s1\0"[..]),
            (b'P', b"s1\0SELECT 1\0\x00"),
            (b'P', b"s1\0SELECT 1\0\x00\x02\x00\x00\x00\x17"),
            (b'B', b"\0"),
            (b'B', b"\0s1\0\x00\x00\x00\x01\x00\x00\x00\x09ab"),
            (b'E', b"\0\x00"),
            (b'C', b""),
            (b'D', b"S"),
        ] {
            let mut stream = startup();
            let before = stream.len();
            stream.extend(message(kind, body));
            let (passed, error) = feed(&stream, false);
            assert_eq!(passed.len(), before, "{}", kind as char);
            assert!(
                matches!(error, Some(Malformed::Format { .. })),
                "{}: {error:?}",
                kind as char
            );
        }
    }

    #[test]
    fn lengths_below_four_and_trailing_bytes_are_refused() {
        let mut stream = startup();
        stream.extend([b'P', 0, 0, 0, 2]);
        assert!(matches!(
            feed(&stream, false).1,
            Some(Malformed::Length { length: 2, .. })
        ));
        let mut stream = startup();
        stream.extend(message(b'Q', b"SELECT 1\0junk"));
        assert!(matches!(
            feed(&stream, false).1,
            Some(Malformed::Format { .. })
        ));
        let mut stream = startup();
        stream.extend(message(b'S', b"x"));
        assert!(matches!(
            feed(&stream, false).1,
            Some(Malformed::Length { .. })
        ));
        assert_eq!(
            feed(&[0, 0, 0, 4], false).1,
            Some(Malformed::StartupLength(4))
        );
    }

    #[test]
    fn startup_parameters_must_end_with_their_terminator() {
        let packet = |body: &[u8]| {
            let mut m = (body.len() as i32 + 4).to_be_bytes().to_vec();
            m.extend_from_slice(body);
            m
        };
        assert_eq!(feed(&startup(), false).1, None);
        // An empty value is a value.
        let empty_value = packet(b"\x00\x03\x00\x00user\0eddy\0options\0\0\0");
        assert_eq!(feed(&empty_value, false).1, None);
        for body in [
            &b"\x00\x03\x00\x00user\0eddy\0"[..],
            b"\x00\x03\x00\x00user\0eddy",
            b"\x00\x03\x00\x00user\0eddy\0\0P\0\0\0\x05s",
        ] {
            assert!(
                matches!(
                    feed(&packet(body), false).1,
                    Some(Malformed::StartupLayout(_))
                ),
                "{body:?}"
            );
        }
    }

    /// What the checks pass decodes in pgwire without a panic: message streams built from
    /// well-formed messages, then with bytes changed, dropped or added, are fed through the
    /// checks in random pieces, and whatever they pass is decoded as pgwire's codec decodes it
    /// (the startup first; a SCRAM client's first password message as a SASLInitialResponse).
    #[test]
    fn what_passes_the_checks_decodes_in_pgwire_without_panicking() {
        use pgwire::messages::{DecodeContext, PgWireFrontendMessage};

        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n.max(1)
        };
        let templates: Vec<Vec<u8>> = vec![
            message(b'Q', b"SELECT 1\0"),
            message(b'P', b"s1\0SELECT $1\0\x00\x01\x00\x00\x00\x17"),
            message(
                b'B',
                b"\0s1\0\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0242\x00\x00",
            ),
            message(b'D', b"P\0"),
            message(b'C', b"S\0"),
            message(b'E', b"\0\x00\x00\x00\x00"),
            message(b'S', b""),
            message(b'H', b""),
            message(b'd', b"1,2\n"),
            message(b'c', b""),
            message(b'f', b"stop\0"),
            message(b'p', b"SCRAM-SHA-256\0\x00\x00\x00\x09n,,n=,r=x"),
            message(b'p', b"c=biws,r=x,p=y"),
        ];
        let mut passed_messages = 0;
        for _ in 0..20_000 {
            let scram = next(2) == 0;
            let mut stream = startup();
            for _ in 0..next(6) {
                stream.extend(&templates[next(templates.len() as u64) as usize]);
            }
            for _ in 0..next(3) {
                let at = next(stream.len() as u64 + 1) as usize;
                match next(3) {
                    0 if at < stream.len() => stream[at] = next(256) as u8,
                    1 if at < stream.len() => {
                        stream.remove(at);
                    }
                    _ => stream.insert(at, next(256) as u8),
                }
            }
            let mut framing = Framing {
                phase: Phase::Startup,
                sasl_initial_next: scram,
            };
            let mut incoming = BytesMut::new();
            let mut ready = BytesMut::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let piece = (1 + next(16) as usize).min(rest.len());
                incoming.extend_from_slice(&rest[..piece]);
                rest = &rest[piece..];
                if framing.advance(&mut incoming, &mut ready).is_err() {
                    break;
                }
            }
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut buf = ready.clone();
                let mut context = DecodeContext::default();
                context.awaiting_frontend_ssl = false;
                let mut first_password = scram;
                let mut count = 0;
                while let Ok(Some(message)) = PgWireFrontendMessage::decode(&mut buf, &context) {
                    count += 1;
                    match message {
                        PgWireFrontendMessage::Startup(_)
                        | PgWireFrontendMessage::CancelRequest(_) => {
                            context.awaiting_frontend_startup = false;
                        }
                        PgWireFrontendMessage::PasswordMessageFamily(p) if first_password => {
                            first_password = false;
                            let _ = p.into_sasl_initial_response();
                        }
                        _ => {}
                    }
                }
                count
            }));
            match decoded {
                Ok(count) => passed_messages += count,
                Err(_) => panic!("pgwire panicked on bytes the checks passed: {ready:?}"),
            }
        }
        assert!(
            passed_messages > 20_000,
            "only {passed_messages} messages were decoded"
        );
    }

    #[test]
    fn unknown_types_are_refused() {
        let mut stream = startup();
        stream.extend(message(b'F', b""));
        assert_eq!(feed(&stream, false).1, Some(Malformed::UnknownType(b'F')));
    }

    #[test]
    fn the_first_scram_message_is_checked_as_a_sasl_initial_response() {
        let mut stream = startup();
        stream.extend(message(b'p', b"SCRAM-SHA-256\0\x00\x00\x00\x09n,,n=,r=x"));
        // Later password messages are SASL responses: any bytes.
        stream.extend(message(b'p', b"c=biws,r=x,p=y"));
        assert_eq!(feed(&stream, true), (stream.clone(), None));
        let mut stream = startup();
        stream.extend(message(b'p', b"SCRAM-SHA-256\0\x00\x00\x00\x40n,,"));
        assert!(matches!(
            feed(&stream, true).1,
            Some(Malformed::Format { .. })
        ));
    }

    #[test]
    fn copy_data_passes_as_it_arrives() {
        let mut stream = startup();
        stream.extend(message(b'd', &[b'x'; 100]));
        let (passed, error) = feed(&stream[..stream.len() - 50], false);
        assert_eq!(error, None);
        assert_eq!(passed.len(), stream.len() - 50);
    }
}
