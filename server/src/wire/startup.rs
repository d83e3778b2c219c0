//! Connection startup over pgwire: admits a client (connection limit, `--tls-required`, the
//! loopback rule) and authenticates it (trust, or SCRAM-SHA-256 with SCRAM-SHA-256-PLUS
//! channel binding over TLS) before its session is served. One [`StartupGate`] is shared by
//! every connection; each connection's handshake state lives in pgwire's per-connection
//! storage.

use std::fmt::Debug;
use std::sync::{Arc, PoisonError};

use futures::{Sink, SinkExt};
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    AuthDriver, AuthOutcome, DefaultServerParameterProvider, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, ConnectionManager, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::errors::{refusal_error, refusal_info};
use crate::security::policy::{self, ClientStart, Refusal};
use crate::security::{Authentication, SecurityConfig};

/// The SCRAM mechanisms offered on plaintext and on TLS connections (SCRAM-SHA-256-PLUS
/// must not be offered without TLS: libpq refuses such a server).
struct Scram {
    plain: ScramAuth,
    tls: ScramAuth,
}

/// A connection's place among the `--max-connections`: taken when its startup message
/// arrives (so a TCP probe or a cancel request takes none), given back when it closes.
#[derive(Default)]
pub struct ConnectionSlot(std::sync::Mutex<Option<OwnedSemaphorePermit>>);

impl ConnectionSlot {
    /// Takes a slot unless this connection has one; false when all are taken.
    fn acquire(&self, slots: &Arc<Semaphore>) -> bool {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_none() {
            *held = Arc::clone(slots).try_acquire_owned().ok();
        }
        held.is_some()
    }

    /// Gives the slot back (the connection closed).
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Admission and authentication of new connections.
pub struct StartupGate {
    config: SecurityConfig,
    slots: Arc<Semaphore>,
    driver: AuthDriver<DefaultServerParameterProvider>,
    scram: Option<Scram>,
}

/// Where a connection's startup stands after one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Authenticated: ReadyForQuery was sent.
    Ready,
    /// The handshake goes on (or the message was not a startup one).
    NotYet,
}

impl StartupGate {
    pub fn new(config: SecurityConfig, manager: Arc<ConnectionManager>) -> Self {
        let scram = match &config.auth {
            Authentication::Scram(credentials) => {
                let source = Arc::new(credentials.clone());
                let plain = ScramAuth::new(source.clone());
                let mut tls = ScramAuth::new(source);
                if let Some(setup) = &config.tls
                    && let Err(e) = tls.configure_certificate(&setup.cert_pem)
                {
                    // Plain SCRAM over TLS still works; only channel binding is off.
                    tracing::warn!(error = %e, "no SCRAM channel binding for this certificate");
                }
                Some(Scram { plain, tls })
            }
            Authentication::TrustLoopback | Authentication::TrustAny => None,
        };
        Self {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            driver: AuthDriver::new(DefaultServerParameterProvider::default())
                .with_connection_manager(manager),
            config,
            scram,
        }
    }

    /// Handles one message of the startup phase of the connection holding `slot`.
    ///
    /// A refused client gets its FATAL ErrorResponse and the connection is closed right
    /// there, as Postgres does: pgwire would follow the error with a ReadyForQuery, which
    /// asyncpg reports as a protocol violation.
    pub async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
        slot: &ConnectionSlot,
    ) -> PgWireResult<Started>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self.step(client, message, slot).await {
            Ok(started) => Ok(started),
            Err(Failure::Wire(e)) => Err(e),
            Err(Failure::Refused(refusal)) => {
                let info = refusal_info(&refusal);
                client
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                // Once closed, pgwire's own report of the error fails and ends the connection.
                client.close().await?;
                Err(refusal_error(&refusal))
            }
        }
    }

    async fn step<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
        slot: &ConnectionSlot,
    ) -> Result<Started, Failure>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                policy::admit(
                    self.config.auth.method(),
                    self.config.tls_required,
                    self.config.max_connections,
                    ClientStart {
                        peer: client.socket_addr().ip(),
                        secure: client.is_secure(),
                        has_slot: slot.acquire(&self.slots),
                    },
                )
                .map_err(Failure::Refused)?;
                let Some(scram) = &self.scram else {
                    self.driver.complete_authentication(client, None).await?;
                    return Ok(Started::Ready);
                };
                let mechanism = if client.is_secure() {
                    scram.tls.create()
                } else {
                    scram.plain.create()
                };
                self.driver.begin_authentication(client, mechanism).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                self.driver.advance_authentication(client, message).await
            }
            _ => return Ok(Started::NotYet),
        };
        match outcome.map_err(|e| password_failure(client, e))? {
            AuthOutcome::InProgress => Ok(Started::NotYet),
            AuthOutcome::Authenticated { final_message, .. } => {
                self.driver
                    .complete_authentication(client, final_message)
                    .await?;
                Ok(Started::Ready)
            }
        }
    }
}

/// Why a startup step failed.
enum Failure {
    /// The client is turned away (limit, TLS, loopback rule, wrong password).
    Refused(Refusal),
    /// A protocol or I/O error, reported by pgwire.
    Wire(PgWireError),
}

impl From<PgWireError> for Failure {
    fn from(e: PgWireError) -> Self {
        Failure::Wire(e)
    }
}

/// A wrong proof names the user of the startup message, as Postgres does (pgwire names the
/// SCRAM user name, which libpq leaves empty).
fn password_failure<C: ClientInfo>(client: &C, e: PgWireError) -> Failure {
    match e {
        PgWireError::InvalidPassword(_) => Failure::Refused(Refusal::PasswordFailed {
            user: client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default(),
        }),
        e => Failure::Wire(e),
    }
}
