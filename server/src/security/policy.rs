//! Who may connect: the startup decision (listen address, password and `--auth` give the
//! client authentication method, or a reason not to start) and the admission of each client
//! (connection limit, TLS requirement, loopback rule). Pure functions, no I/O.

use std::net::{IpAddr, SocketAddr};

/// The `--auth` values. Without `--auth`, a server with `--password` uses SCRAM-SHA-256 and
/// one without trusts loopback clients only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// No password asked, from any client (only with no `--password`).
    Trust,
    /// SCRAM-SHA-256 (RFC 7677) against `--password`; SCRAM-SHA-256-PLUS over TLS.
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

/// How clients authenticate, as decided at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No password; clients other than loopback ones are refused (the default without
    /// `--password`).
    TrustLoopback,
    /// No password from any client (`--auth trust`).
    TrustAny,
    /// SCRAM-SHA-256 as user `eddy` with the `--password`.
    Scram,
}

/// Why the server refuses to start with these options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupDecisionError {
    #[error(
        "refusing to listen on {listen} without a password: set --password (or EDDY_PASSWORD) \
         so that clients authenticate with SCRAM-SHA-256, or pass --auth trust to serve any \
         client without one"
    )]
    NonLoopbackWithoutPassword { listen: SocketAddr },
    #[error("--auth scram-sha-256 needs a password: set --password (or EDDY_PASSWORD)")]
    ScramWithoutPassword,
    #[error(
        "--auth trust asks no password, so --password (or EDDY_PASSWORD) would be ignored: \
         drop one of them"
    )]
    TrustWithPassword,
    #[error("--password (or EDDY_PASSWORD) is empty")]
    EmptyPassword,
    #[error("--tls-required needs --tls-cert and --tls-key")]
    TlsRequiredWithoutCertificate,
}

/// Decides how clients authenticate from the listen address, whether a password is set and
/// `--auth`; `tls` says whether a certificate is configured.
pub fn decide(
    listen: SocketAddr,
    password: Option<&str>,
    auth: Option<AuthMethod>,
    tls: bool,
    tls_required: bool,
) -> Result<ClientAuth, StartupDecisionError> {
    if tls_required && !tls {
        return Err(StartupDecisionError::TlsRequiredWithoutCertificate);
    }
    if password.is_some_and(str::is_empty) {
        return Err(StartupDecisionError::EmptyPassword);
    }
    match (auth, password) {
        (Some(AuthMethod::Trust), Some(_)) => Err(StartupDecisionError::TrustWithPassword),
        (Some(AuthMethod::Trust), None) => Ok(ClientAuth::TrustAny),
        (Some(AuthMethod::ScramSha256), None) => Err(StartupDecisionError::ScramWithoutPassword),
        (_, Some(_)) => Ok(ClientAuth::Scram),
        (None, None) if is_loopback(listen.ip()) => Ok(ClientAuth::TrustLoopback),
        (None, None) => Err(StartupDecisionError::NonLoopbackWithoutPassword { listen }),
    }
}

/// Why a client is turned away before authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("sorry, too many clients already")]
    TooManyClients { max_connections: usize },
    #[error(
        "SSL required: this server accepts only encrypted connections (--tls-required); \
         connect with sslmode=require"
    )]
    TlsRequired,
    #[error(
        "connection from {peer} refused: without a password Eddy serves loopback clients only \
         (start it with --password, or with --auth trust to serve any client)"
    )]
    NotLoopback { peer: IpAddr },
    #[error("password authentication failed for user \"{user}\"")]
    PasswordFailed { user: String },
}

/// What is known about a client when its startup message arrives.
#[derive(Debug, Clone, Copy)]
pub struct ClientStart {
    pub peer: IpAddr,
    /// The connection is encrypted (TLS).
    pub secure: bool,
    /// The client got one of the `--max-connections` slots.
    pub has_slot: bool,
}

/// Admits a client or says why not, in the order Postgres checks: the connection limit, then
/// the host rules (TLS, loopback).
pub fn admit(
    auth: ClientAuth,
    tls_required: bool,
    max_connections: usize,
    client: ClientStart,
) -> Result<(), Refusal> {
    if !client.has_slot {
        return Err(Refusal::TooManyClients { max_connections });
    }
    if tls_required && !client.secure {
        return Err(Refusal::TlsRequired);
    }
    if auth == ClientAuth::TrustLoopback && !is_loopback(client.peer) {
        return Err(Refusal::NotLoopback { peer: client.peer });
    }
    Ok(())
}

/// Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_password_only_loopback_listens() {
        for listen in ["127.0.0.1:6874", "[::1]:6874", "127.0.0.2:1"] {
            assert_eq!(
                decide(addr(listen), None, None, false, false),
                Ok(ClientAuth::TrustLoopback),
                "{listen}"
            );
        }
        for listen in ["0.0.0.0:6874", "[::]:6874", "192.168.1.5:6874"] {
            let e = decide(addr(listen), None, None, false, false).unwrap_err();
            assert!(
                matches!(e, StartupDecisionError::NonLoopbackWithoutPassword { .. }),
                "{listen}"
            );
            assert!(e.to_string().contains("--password"), "{e}");
            assert!(e.to_string().contains("--auth trust"), "{e}");
        }
    }

    #[test]
    fn explicit_trust_overrides_the_loopback_rule() {
        assert_eq!(
            decide(
                addr("0.0.0.0:6874"),
                None,
                Some(AuthMethod::Trust),
                false,
                false
            ),
            Ok(ClientAuth::TrustAny)
        );
    }

    #[test]
    fn a_password_means_scram_anywhere() {
        for listen in ["127.0.0.1:6874", "0.0.0.0:6874"] {
            for auth in [None, Some(AuthMethod::ScramSha256)] {
                assert_eq!(
                    decide(addr(listen), Some("s3cret"), auth, false, false),
                    Ok(ClientAuth::Scram)
                );
            }
        }
    }

    #[test]
    fn contradictory_options_refuse_to_start() {
        let local = addr("127.0.0.1:6874");
        assert_eq!(
            decide(local, None, Some(AuthMethod::ScramSha256), false, false),
            Err(StartupDecisionError::ScramWithoutPassword)
        );
        assert_eq!(
            decide(local, Some("x"), Some(AuthMethod::Trust), false, false),
            Err(StartupDecisionError::TrustWithPassword)
        );
        assert_eq!(
            decide(local, Some(""), None, false, false),
            Err(StartupDecisionError::EmptyPassword)
        );
        assert_eq!(
            decide(local, Some("x"), None, false, true),
            Err(StartupDecisionError::TlsRequiredWithoutCertificate)
        );
        assert_eq!(
            decide(local, Some("x"), None, true, true),
            Ok(ClientAuth::Scram)
        );
    }

    fn client(peer: &str, secure: bool, has_slot: bool) -> ClientStart {
        ClientStart {
            peer: peer.parse().unwrap(),
            secure,
            has_slot,
        }
    }

    #[test]
    fn admission_checks_limit_then_tls_then_loopback() {
        use ClientAuth::*;
        assert_eq!(
            admit(TrustLoopback, false, 100, client("127.0.0.1", false, true)),
            Ok(())
        );
        assert_eq!(
            admit(
                TrustLoopback,
                false,
                100,
                client("::ffff:127.0.0.1", false, true)
            ),
            Ok(())
        );
        assert_eq!(
            admit(TrustLoopback, false, 100, client("10.1.2.3", false, true)),
            Err(Refusal::NotLoopback {
                peer: "10.1.2.3".parse().unwrap()
            })
        );
        assert_eq!(
            admit(TrustAny, false, 100, client("10.1.2.3", false, true)),
            Ok(())
        );
        assert_eq!(
            admit(Scram, false, 100, client("10.1.2.3", false, true)),
            Ok(())
        );
        assert_eq!(
            admit(Scram, true, 100, client("127.0.0.1", false, true)),
            Err(Refusal::TlsRequired)
        );
        assert_eq!(
            admit(Scram, true, 100, client("127.0.0.1", true, true)),
            Ok(())
        );
        assert_eq!(
            admit(Scram, true, 3, client("127.0.0.1", false, false)),
            Err(Refusal::TooManyClients { max_connections: 3 })
        );
        assert_eq!(
            Refusal::TooManyClients { max_connections: 3 }.to_string(),
            "sorry, too many clients already"
        );
    }
}
