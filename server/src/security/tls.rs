//! TLS with rustls (ring provider): the certificate chain and key of `--tls-cert`/`--tls-key`
//! (PEM) become the acceptor pgwire negotiates `SSLRequest` (and direct TLS) with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol name of Postgres (required for `sslnegotiation=direct`).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {source}")]
    ReadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert {path}: no PEM certificate in the file ({detail})")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("--tls-key {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("--tls-cert/--tls-key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server certificate ready to serve TLS.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    /// The certificate chain as PEM, for SCRAM channel binding (`tls-server-end-point`).
    pub cert_pem: Arc<Vec<u8>>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Reads a PEM certificate chain (server certificate first) and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCertificate {
            path: cert.to_path_buf(),
            source,
        })?;
        let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
            path: key.to_path_buf(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCertificate {
                path: cert.to_path_buf(),
                detail: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_path_buf(),
                detail: "the file holds no CERTIFICATE section".to_string(),
            });
        }
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: key.to_path_buf(),
            detail: e.to_string(),
        })?;
        // rustls deprecates its ring provider for lacking post-quantum key exchange, which
        // only its aws-lc-rs provider has; Eddy keeps ring to avoid aws-lc-sys' C build
        // (docs/security.md).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_pem: Arc::new(cert_pem),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_name_the_option_and_the_path() {
        let dir = std::env::temp_dir().join(format!("eddy-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("not-pem.txt");
        std::fs::write(&text, "hello").unwrap();
        let missing = dir.join("missing.pem");

        let e = TlsSetup::load(&missing, &text).unwrap_err();
        assert!(matches!(e, TlsError::ReadCertificate { .. }), "{e}");
        assert!(e.to_string().starts_with("--tls-cert"), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let e = TlsSetup::load(&text, &text).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
