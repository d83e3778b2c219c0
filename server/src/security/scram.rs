//! The SCRAM-SHA-256 credentials of user `eddy`: a salted verifier (salt, iterations,
//! StoredKey, ServerKey, as Postgres keeps in `pg_authid`), derived once from `--password`,
//! which is then dropped. Other user names get a decoy verifier, so that they fail at the same
//! step as a wrong password (as Postgres' mock authentication does).

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use ring::rand::{SecureRandom, SystemRandom};

/// The only user Eddy has.
pub const USER: &str = "eddy";

/// Iterations of the salted password (Postgres' default `scram_iterations`).
pub const ITERATIONS: usize = 4096;

/// One salted verifier.
#[derive(Clone)]
struct Verifier {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: ITERATIONS,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

/// The verifier of user `eddy` and the decoy for any other name.
#[derive(Clone)]
pub struct ScramCredentials {
    eddy: Verifier,
    decoy: Verifier,
}

/// Key material never appears in logs or `{:?}`.
impl std::fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("user", &USER)
            .field("iterations", &ITERATIONS)
            .finish_non_exhaustive()
    }
}

/// Why the verifier could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no random numbers from the operating system for the password salt")]
    NoRandom,
    #[error("pgwire derived no SCRAM verifier from the salted password")]
    NoVerifier,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, CredentialsError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CredentialsError::NoRandom)?;
    Ok(bytes)
}

impl ScramCredentials {
    /// Salts and hashes `password` (a fresh 16-byte salt, as Postgres uses).
    pub fn new(password: &str) -> Result<Self, CredentialsError> {
        let salt = random_bytes(16)?;
        let salted = gen_salted_password(password, &salt, ITERATIONS);
        let ScramSecret::Verifier {
            stored_key,
            server_key,
            ..
        } = ScramSecret::verifier_from_salted_password(salt.clone(), salted, ITERATIONS)
        else {
            return Err(CredentialsError::NoVerifier);
        };
        // Keys nobody knows a password for: every proof fails against them.
        let decoy = Verifier {
            salt: random_bytes(16)?,
            stored_key: random_bytes(stored_key.len())?,
            server_key: random_bytes(server_key.len())?,
        };
        Ok(Self {
            eddy: Verifier {
                salt,
                stored_key,
                server_key,
            },
            decoy,
        })
    }
}

#[async_trait]
impl AuthSource for ScramCredentials {
    /// No password is stored, so mechanisms that need one (cleartext, md5) cannot be offered.
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let verifier = if login.user() == Some(USER) {
            &self.eddy
        } else {
            &self.decoy
        };
        Ok((verifier.secret(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_matches_the_password_and_is_salted() {
        let a = ScramCredentials::new("s3cret").unwrap();
        let b = ScramCredentials::new("s3cret").unwrap();
        // Same password, different salts: nothing in the verifier repeats.
        assert_ne!(a.eddy.salt, b.eddy.salt);
        assert_ne!(a.eddy.stored_key, b.eddy.stored_key);
        // StoredKey = H(HMAC(SaltedPassword, "Client Key")) for this salt and password.
        let salted = gen_salted_password("s3cret", &a.eddy.salt, ITERATIONS);
        let ScramSecret::Verifier { stored_key, .. } =
            ScramSecret::verifier_from_salted_password(a.eddy.salt.clone(), salted, ITERATIONS)
        else {
            panic!("not a verifier")
        };
        assert_eq!(stored_key, a.eddy.stored_key);
        assert!(!format!("{a:?}").contains("stored"));
    }
}
