//! Session ids and API tokens: random, shown once, stored hashed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A secret as the client holds it. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(…)")
    }
}

impl Secret {
    /// 256 bits from the operating system's generator, URL-safe base64, after `prefix` (which
    /// lets a leaked token be recognised by secret scanners).
    pub fn generate(prefix: &str) -> Secret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
        Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// What a client sent; only ever compared through its hash.
    pub fn from_client(text: &str) -> Secret {
        Secret(text.to_owned())
    }

    /// Whether this could be a secret [`Secret::generate`] made with `prefix`: anything else is
    /// refused without asking the database.
    pub fn well_formed(&self, prefix: &str) -> bool {
        self.0.strip_prefix(prefix).is_some_and(|body| {
            body.len() == 43 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps. A fast hash is right here: the secret has 256 bits of entropy,
    /// unlike a password, so nothing can be guessed from its hash.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed_stably() {
        let one = Secret::generate("cqb_");
        let two = Secret::generate("cqb_");
        assert_ne!(one, two);
        assert!(one.expose().starts_with("cqb_"));
        assert_eq!(one.expose().len(), 4 + 43);
        assert_eq!(one.hash(), Secret::from_client(one.expose()).hash());
        assert_ne!(one.hash(), two.hash());
        assert_eq!(format!("{one:?}"), "Secret(…)");
        assert!(one.well_formed("cqb_") && !one.well_formed(""));
        assert!(!Secret::from_client("cqb_short").well_formed("cqb_"));
        assert!(!Secret::from_client(&format!("cqb_{}", "%".repeat(43))).well_formed("cqb_"));
    }
}
