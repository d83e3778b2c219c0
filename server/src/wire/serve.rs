//! One client connection from accept to close: pgwire's TLS negotiation, then the message loop
//! over a [`Checked`] socket, so that no malformed frontend message reaches pgwire's decoders.
//!
//! The loop is pgwire's own (`process_socket`): startup within 60 s, each message dispatched
//! to the handlers by `process_message`, an error answered by `process_error` (a FATAL one ends
//! the session), `Terminate` and a CancelRequest end the connection. What it adds: a message
//! the checks refuse is answered with a FATAL `08P01` ErrorResponse naming what is wrong, and
//! the connection closes, as Postgres closes a connection on a protocol violation.

use std::io;
use std::time::Duration;

use futures::StreamExt;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::framing::{Checked, Malformed};

/// How long a client has to finish its startup (pgwire's limit).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `socket` until the client leaves. `scram`: clients authenticate with SCRAM.
pub async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
    scram: bool,
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
    let checked = Checked::new(old.io, old.read_buf, scram);
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
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            startup_handler.clone(),
            simple_query_handler.clone(),
            extended_query_handler.clone(),
            copy_handler.clone(),
            cancel_handler.clone(),
        )
        .await
        {
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
