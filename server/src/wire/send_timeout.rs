//! `--client-send-timeout`: a write deadline on a client's socket, so that a client that stops
//! reading holds the server back for a bounded time only.
//!
//! A client that stops reading (a stalled `COPY ... TO STDOUT` consumer, a suspended process)
//! fills its socket's buffers; the connection's writes then wait, its query's output channel
//! fills and its bounded dataflow channels stop it at the source: backpressure holds back
//! that query only. [`SendTimeout`] ends the wait: once one write (or flush) has waited
//! longer than the timeout without the socket taking a byte, it fails with
//! [`io::ErrorKind::TimedOut`], and so does every later write (no ErrorResponse can reach a
//! client that does not read). The statement then fails, the connection closes and the
//! dropped query frees its dataflow. A client that reads, however slowly, is never cut off:
//! the clock restarts whenever the socket takes bytes. Like MySQL's `net_write_timeout`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The default `--client-send-timeout` (MySQL's `net_write_timeout`).
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// A socket whose writes fail once one has been blocked for longer than a timeout.
#[derive(Debug)]
pub struct SendTimeout<S> {
    inner: S,
    /// `None`: writes may wait forever.
    timeout: Option<Duration>,
    /// Running while a write waits for the client.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Set once the deadline passed: the connection is done writing.
    timed_out: bool,
}

impl<S> SendTimeout<S> {
    /// Wraps `inner`; a zero `timeout` turns the deadline off.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout: (!timeout.is_zero()).then_some(timeout),
            deadline: None,
            timed_out: false,
        }
    }

    fn timed_out_error(&self) -> io::Error {
        let waited = self.timeout.unwrap_or_default();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client read nothing for {} (--client-send-timeout)",
                humantime(waited)
            ),
        )
    }

    /// Passes on what a write or flush of the inner socket returned, timing its waits.
    fn timed<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(timeout) = self.timeout else {
            return poll;
        };
        match poll {
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.deadline = None;
                        self.timed_out = true;
                        Poll::Ready(Err(self.timed_out_error()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// `90s`, `1.5s`, `250ms`: how a timeout reads in the log and the error.
fn humantime(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.timed_out_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.timed_out_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.timed_out_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing a connection whose client stopped reading must not wait for it either.
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_blocked_past_the_timeout_fails_and_later_writes_fail_at_once() {
        // A 64-byte pipe whose reader reads nothing until told to.
        let (mut client, server) = tokio::io::duplex(64);
        let mut socket = SendTimeout::new(server, Duration::from_millis(200));
        socket.write_all(&[0u8; 64]).await.unwrap();
        let error = socket.write_all(&[1u8; 10]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("200ms"), "{error}");
        // Even with room again, the connection is done writing.
        let mut buf = [0u8; 64];
        client.read_exact(&mut buf).await.unwrap();
        let error = socket.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_slow_reader_is_never_cut_off_and_zero_turns_the_deadline_off() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut socket = SendTimeout::new(server, Duration::from_secs(2));
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 8];
            while total < 160 {
                // Each read well within the timeout, though all of them take longer.
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += client.read(&mut buf).await.unwrap();
            }
            total
        });
        socket.write_all(&[7u8; 160]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 160);

        let (_client, server) = tokio::io::duplex(4);
        let mut socket = SendTimeout::new(server, Duration::ZERO);
        let blocked = tokio::time::timeout(Duration::from_millis(500), socket.write_all(&[0; 8]));
        assert!(blocked.await.is_err(), "without a timeout the write waits");
    }
}
