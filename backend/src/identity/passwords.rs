//! Password hashing with Argon2id, off the async threads and a few at a time: each hash costs
//! about 19 MiB and tens of milliseconds of one core on purpose, so a burst of sign-ins must
//! neither stall other requests nor take all the memory.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

/// How many hashes run at once; more wait for a turn, at most [`TURN_WAIT`].
const HASHES_AT_ONCE: usize = 2;
const TURN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many sign-ins at once; please retry shortly")]
    Busy,
    #[error("a stored password hash cannot be read: {0}")]
    Unreadable(String),
}

#[derive(Clone)]
pub struct Passwords {
    turns: Arc<Semaphore>,
    /// A hash of nothing anyone knows, checked when the username is unknown, so that the
    /// answer takes as long as for a known user with a wrong password.
    decoy: Arc<String>,
}

impl Default for Passwords {
    fn default() -> Passwords {
        Passwords::new()
    }
}

impl Passwords {
    pub fn new() -> Passwords {
        let decoy = hash_now("a password nobody has: it only makes unknown names as slow as known ones")
            .expect("hashing a constant works");
        Passwords { turns: Arc::new(Semaphore::new(HASHES_AT_ONCE)), decoy: Arc::new(decoy) }
    }

    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_owned();
        self.in_turn(move || hash_now(&password)).await?
    }

    /// Whether `password` matches `stored` (a PHC string); with `None`, checks the decoy and
    /// answers no.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.decoy.as_str().to_owned(), str::to_owned);
        let password = password.to_owned();
        let matches = self
            .in_turn(move || {
                let parsed =
                    PasswordHash::new(&stored).map_err(|error| PasswordError::Unreadable(error.to_string()))?;
                Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await??;
        Ok(known && matches)
    }

    async fn in_turn<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        let turn = tokio::time::timeout(TURN_WAIT, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        let done = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(turn);
            result
        })
        .await;
        done.map_err(|_| PasswordError::Busy)
    }
}

fn hash_now(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Unreadable(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new();
        let stored = passwords.hash("correct horse").await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(passwords.verify("correct horse", Some(&stored)).await.unwrap());
        assert!(!passwords.verify("wrong horse", Some(&stored)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
    }
}
