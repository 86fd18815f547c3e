//! The master key: it wraps every person's data key, and lives outside the database (a file or
//! a setting), so that a copy of the database alone opens nothing.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::sync::{LazyLock, RwLock};

/// A 256-bit master key and its public id (the first 8 bytes of its SHA-256, in hex), which
/// each wrapped key records so that a rotation can tell which master key wrapped it.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("a master key is 64 hexadecimal digits (32 random bytes), e.g. from `openssl rand -hex 32`")]
    Malformed,
    #[error("the master key file {path} cannot be read: {error}")]
    Unreadable { path: String, error: std::io::Error },
}

impl MasterKey {
    /// From its text: 64 hex digits, surrounding white space ignored.
    pub fn parse(text: &str) -> Result<MasterKey, MasterKeyError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MasterKeyError::Malformed);
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| MasterKeyError::Malformed))
            .collect::<Result<_, _>>()?;
        let id = Sha256::digest(&bytes)[..8].iter().map(|b| format!("{b:02x}")).collect();
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| MasterKeyError::Malformed)?;
        Ok(MasterKey { id, cipher })
    }

    /// From a file holding its text.
    pub fn from_file(path: &str) -> Result<MasterKey, MasterKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| MasterKeyError::Unreadable { path: path.to_owned(), error })?;
        MasterKey::parse(&text)
    }

    /// A new random key, as text: what `scripts/run` writes to a file on first start.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `data_key` sealed under this key, bound to `owner` (a wrapped key moved to another
    /// user's row does not open).
    pub(crate) fn wrap(&self, owner: &[u8], data_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce = random_nonce();
        let wrapped = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: data_key, aad: owner })
            .expect("AES-GCM seals any key-sized message");
        (wrapped, nonce.to_vec())
    }

    pub(crate) fn unwrap(&self, owner: &[u8], wrapped: &[u8], nonce: &[u8]) -> Option<Vec<u8>> {
        if nonce.len() != 12 {
            return None;
        }
        self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: wrapped, aad: owner }).ok()
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "MasterKey({})", self.id)
    }
}

/// The server's master keys: the one it wraps new keys with, and during a rotation the one
/// before it, which still opens what it wrapped until every key is wrapped anew.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    pub current: MasterKey,
    pub previous: Option<MasterKey>,
}

impl MasterKeys {
    /// Makes both known to [`unwrapping`]: reading the log needs no handle on the server.
    pub fn install(&self) {
        let mut known = INSTALLED.write().expect("the master keys are never poisoned");
        for key in std::iter::once(&self.current).chain(&self.previous) {
            if !known.iter().any(|installed| installed.id == key.id) {
                known.push(key.clone());
            }
        }
    }
}

/// Every master key a server in this process was given, found by id. A process holds one
/// server in production; tests and benchmarks run several, each with its own database and key.
static INSTALLED: LazyLock<RwLock<Vec<MasterKey>>> = LazyLock::new(Default::default);

/// The installed master key with this id.
pub(crate) fn unwrapping(id: &str) -> Option<MasterKey> {
    INSTALLED.read().expect("the master keys are never poisoned").iter().find(|key| key.id == id).cloned()
}

pub(crate) fn random_nonce() -> [u8; 12] {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the operating system gives random bytes");
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_wrapped_for_one_owner_opens_only_for_that_owner_and_key() {
        let master = MasterKey::parse(&MasterKey::generate()).unwrap();
        let other = MasterKey::parse(&MasterKey::generate()).unwrap();
        let (wrapped, nonce) = master.wrap(b"alice", b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            master.unwrap(b"alice", &wrapped, &nonce).as_deref(),
            Some(&b"0123456789abcdef0123456789abcdef"[..])
        );
        assert_eq!(master.unwrap(b"bob", &wrapped, &nonce), None);
        assert_eq!(other.unwrap(b"alice", &wrapped, &nonce), None);
        assert_ne!(master.id(), other.id());
    }

    #[test]
    fn a_master_key_is_64_hex_digits() {
        assert!(MasterKey::parse(&format!(" {}\n", MasterKey::generate())).is_ok());
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(66)] {
            assert!(matches!(MasterKey::parse(bad), Err(MasterKeyError::Malformed)), "{bad}");
        }
    }
}
