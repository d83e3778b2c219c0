//! Security and limits of the server: how clients authenticate (trust on loopback, `--auth
//! trust`, SCRAM-SHA-256 with `--password`), TLS (`--tls-cert`/`--tls-key`,
//! `--tls-required`) and the connection limit (`--max-connections`). The pgwire side of it
//! (the startup handler) is `wire::startup`.

pub mod policy;
pub mod scram;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use policy::{AuthMethod, ClientAuth};
pub use scram::ScramCredentials;
pub use tls::TlsSetup;

/// The default of `--max-connections` (Postgres' `max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

/// How clients authenticate, with what it needs.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No password; loopback clients only.
    TrustLoopback,
    /// No password, any client (`--auth trust`).
    TrustAny,
    /// SCRAM-SHA-256 against this verifier.
    Scram(ScramCredentials),
}

impl Authentication {
    /// The method, without its credentials.
    pub fn method(&self) -> ClientAuth {
        match self {
            Authentication::TrustLoopback => ClientAuth::TrustLoopback,
            Authentication::TrustAny => ClientAuth::TrustAny,
            Authentication::Scram(_) => ClientAuth::Scram,
        }
    }
}

/// What the server enforces on every connection.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub auth: Authentication,
    /// TLS is offered when set.
    pub tls: Option<TlsSetup>,
    /// Plaintext connections are refused.
    pub tls_required: bool,
    /// Connections served at once; one more is refused with SQLSTATE 53300.
    pub max_connections: usize,
}

/// Trust on loopback, no TLS, the default connection limit: what `eddy` does with no security
/// option (tests use it too).
impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            auth: Authentication::TrustLoopback,
            tls: None,
            tls_required: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The security options as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    pub password: Option<String>,
    pub auth: Option<AuthMethod>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_required: bool,
    pub max_connections: usize,
}

/// Why the server refuses to start with these security options.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Decision(#[from] policy::StartupDecisionError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Credentials(#[from] scram::CredentialsError),
    #[error("--tls-cert and --tls-key go together")]
    HalfTls,
}

impl SecurityConfig {
    /// Checks the options against the listen address and loads the certificate and the
    /// password's verifier.
    pub fn from_options(
        listen: SocketAddr,
        options: SecurityOptions,
    ) -> Result<Self, SecurityError> {
        let tls_files = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(SecurityError::HalfTls),
        };
        let auth = policy::decide(
            listen,
            options.password.as_deref(),
            options.auth,
            tls_files.is_some(),
            options.tls_required,
        )?;
        let tls = match tls_files {
            Some((cert, key)) => Some(TlsSetup::load(cert, key)?),
            None => None,
        };
        let auth = match (auth, options.password.as_deref()) {
            (ClientAuth::Scram, Some(password)) => {
                Authentication::Scram(ScramCredentials::new(password)?)
            }
            (ClientAuth::Scram, None) => {
                return Err(policy::StartupDecisionError::ScramWithoutPassword.into());
            }
            (ClientAuth::TrustAny, _) => Authentication::TrustAny,
            (ClientAuth::TrustLoopback, _) => Authentication::TrustLoopback,
        };
        Ok(Self {
            auth,
            tls,
            tls_required: options.tls_required,
            max_connections: options.max_connections.max(1),
        })
    }
}
