//! One client connection from accept to close: pgwire's TLS negotiation, then the message loop
//! over a [`Checked`] socket, so that no malformed frontend message reaches pgwire's decoders.
//!
//! The loop is pgwire's own (`process_socket`): startup within 60 s, each message dispatched
//! to the handlers by `process_message`, an error answered by `process_error` (a FATAL one ends
//! the session), `Terminate` and a CancelRequest end the connection. What it adds: a message
//! the checks refuse is answered with a FATAL `08P01` ErrorResponse naming what is wrong, and
//! the connection closes, as Postgres closes a connection on a protocol violation. Writes go
//! through a [`SendTimeout`] (`--client-send-timeout`), and a panic while a message is handled
//! outside the handlers' own guards ends the connection with a FATAL `XX000`.

use std::io;
use std::time::Duration;

use eddy_engine::panics;
use futures::StreamExt;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_FATAL};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::errors::sqlstate;
use super::framing::{Checked, Malformed};
use super::send_timeout::SendTimeout;

/// How long a client has to finish its startup (pgwire's limit).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How every connection is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Clients authenticate with SCRAM.
    pub scram: bool,
    /// How long one write may wait for the client to read (zero: forever; see
    /// [`SendTimeout`]).
    pub client_send_timeout: Duration,
}

/// Serves `socket` until the client leaves. An error of kind [`io::ErrorKind::TimedOut`]:
/// the client stopped reading for longer than the send timeout.
pub async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
    options: &ServeOptions,
) -> io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        negotiated = negotiate_tls(socket, tls) => negotiated?,
    };
    // A direct TLS handshake without a certificate configured: nothing to talk to.
    let Some(negotiated) = negotiated else {
        return Ok(());
    };
    let old = negotiated.into_parts();
    let io = SendTimeout::new(old.io, options.client_send_timeout);
    let checked = Checked::new(io, old.read_buf, options.scram);
    let mut parts = FramedParts::new(checked, old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup_handler = handlers.startup_handler();
    let simple_query_handler = handlers.simple_query_handler();
    let extended_query_handler = handlers.extended_query_handler();
    let copy_handler = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    loop {
        let message = if matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        ) {
            tokio::select! {
                _ = &mut startup_timeout => None,
                message = socket.next() => message,
            }
        } else {
            socket.next().await
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(PgWireError::IoError(e))) => {
                if let Some(malformed) = Malformed::from_io(&e) {
                    tracing::info!(error = %malformed, "protocol violation: closing the connection");
                    let error = ErrorInfo::new(
                        "FATAL".to_string(),
                        "08P01".to_string(),
                        malformed.to_string(),
                    );
                    process_error(&mut socket, PgWireError::UserError(Box::new(error)), false)
                        .await?;
                    return Ok(());
                }
                return Err(e);
            }
            // pgwire's own decoding errors (a message over its size limit): the connection
            // ends, as in pgwire's loop.
            Some(Err(_)) | None => return Ok(()),
        };
        // The client is leaving: close at once (asyncpg waits for the server to close).
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
            _ => message.is_extended_query(),
        };
        let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let processed = panics::catch_future(
            "the connection's message handling",
            process_message(
                message,
                &mut socket,
                startup_handler.clone(),
                simple_query_handler.clone(),
                extended_query_handler.clone(),
                copy_handler.clone(),
                cancel_handler.clone(),
            ),
        )
        .await;
        // The handlers catch panics in statements and in result encoding, keeping the
        // session; one anywhere else (startup, authentication, protocol bookkeeping) leaves
        // the connection's state unknown, so it ends, as a FATAL error.
        let processed = match processed {
            Ok(processed) => processed,
            Err(panic) => {
                let error = ErrorInfo::new(
                    SEVERITY_FATAL.to_string(),
                    sqlstate(&panic).to_string(),
                    panic.to_string(),
                );
                process_error(&mut socket, PgWireError::UserError(Box::new(error)), false).await?;
                return Ok(());
            }
        };
        if let Err(mut e) = processed {
            error_handler.on_error(&socket, &mut e);
            let is_fatal = e.is_fatal();
            process_error(&mut socket, e, is_extended_query).await?;
            if is_fatal {
                return Ok(());
            }
        }
        if is_cancel_request {
            return Ok(());
        }
    }
}
