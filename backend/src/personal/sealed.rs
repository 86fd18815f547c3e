//! A personal field as stored: in clear (written before sealing existed, or by a server without
//! a master key), sealed (`{"keyId", "nonce", "ciphertext"}`: AES-256-GCM under the writer's data
//! key, the key id as associated data), or `{"forgotten": true}` (written for someone already
//! forgotten).

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use uuid::Uuid;

use super::keys::{self, Known};
use super::master_key::random_nonce;

/// A personal field, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Text(String),
    /// Its key was destroyed: the person was forgotten.
    Forgotten,
}

/// Why a personal field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unopened {
    /// The key is not loaded: load it ([`keys::load`]) and read again.
    #[error("the data key of user {0} is not loaded")]
    KeyNotLoaded(Uuid),
    #[error("a personal field is malformed: {0}")]
    Malformed(&'static str),
}

impl Unopened {
    /// The key to load before trying again, if that is what is missing.
    pub fn missing_key(&self) -> Option<Uuid> {
        match self {
            Unopened::KeyNotLoaded(id) => Some(*id),
            Unopened::Malformed(_) => None,
        }
    }
}

/// `text`, written by `writer`: sealed with their key if it is loaded, in clear if not (a
/// server without a master key never loads one).
pub fn seal(writer: Option<Uuid>, text: &str) -> Value {
    let Some(writer) = writer else { return Value::String(text.to_owned()) };
    match keys::for_sealing(writer) {
        None => Value::String(text.to_owned()),
        Some(Known::Forgotten) => json!({ "forgotten": true }),
        Some(Known::Key(cipher)) => {
            let nonce = random_nonce();
            let ciphertext = cipher
                .encrypt(Nonce::from_slice(&nonce), Payload { msg: text.as_bytes(), aad: writer.as_bytes() })
                .expect("AES-GCM seals any short text");
            json!({ "keyId": writer, "nonce": BASE64.encode(nonce), "ciphertext": BASE64.encode(ciphertext) })
        }
    }
}

/// A personal field read back: its text, or *forgotten* if its key was destroyed.
pub fn open(field: &Value) -> Result<Opened, Unopened> {
    let sealed = match field {
        Value::String(text) => return Ok(Opened::Text(text.clone())),
        Value::Object(sealed) => sealed,
        _ => return Err(Unopened::Malformed("neither a text nor a sealed object")),
    };
    if sealed.get("forgotten") == Some(&Value::Bool(true)) {
        return Ok(Opened::Forgotten);
    }
    let text_of = |name: &str| sealed.get(name).and_then(Value::as_str);
    let key_id: Uuid = text_of("keyId").and_then(|id| id.parse().ok()).ok_or(Unopened::Malformed("no key id"))?;
    let cipher = match keys::for_opening(key_id) {
        None => return Err(Unopened::KeyNotLoaded(key_id)),
        Some(Known::Forgotten) => return Ok(Opened::Forgotten),
        Some(Known::Key(cipher)) => cipher,
    };
    let decoded =
        |name: &'static str| text_of(name).and_then(|text| BASE64.decode(text).ok()).ok_or(Unopened::Malformed(name));
    let nonce = decoded("nonce")?;
    if nonce.len() != 12 {
        return Err(Unopened::Malformed("nonce"));
    }
    let ciphertext = decoded("ciphertext")?;
    let text = cipher
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: key_id.as_bytes() })
        .map_err(|_| Unopened::Malformed("ciphertext does not open with its key"))?;
    String::from_utf8(text).map(Opened::Text).map_err(|_| Unopened::Malformed("not UTF-8"))
}

/// The writer a command's metadata names (`actor.userId`), if any.
pub fn writer(metadata: &Value) -> Option<Uuid> {
    metadata.pointer("/actor/userId").and_then(Value::as_str).and_then(|id| id.parse().ok())
}

/// Whom a command's words are about (`subject.userId`), if it names someone: their key seals
/// those words (an operator's freeze reason is about the account's owner).
pub fn subject(metadata: &Value) -> Option<Uuid> {
    metadata.pointer("/subject/userId").and_then(Value::as_str).and_then(|id| id.parse().ok())
}

/// The metadata with the actor's name sealed with their own key.
pub fn seal_metadata(metadata: &Value) -> Value {
    let mut sealed = metadata.clone();
    let writer = writer(metadata);
    if let Some(Value::String(name)) = sealed.pointer_mut("/actor/username") {
        let name = std::mem::take(name);
        sealed["actor"]["username"] = seal(writer, &name);
    }
    sealed
}

/// The actor's name in an event's metadata, read: `None` if it names no one.
pub fn actor_name(metadata: &Value) -> Option<Result<Opened, Unopened>> {
    metadata.pointer("/actor/username").map(open)
}

/// The ids of every key the personal fields of `values` were sealed with: what to [`keys::load`]
/// before reading them.
pub fn key_ids<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<Uuid> {
    fn walk(value: &Value, found: &mut Vec<Uuid>) {
        match value {
            Value::Object(object) => {
                if let (Some(Value::String(id)), true) = (object.get("keyId"), object.contains_key("ciphertext")) {
                    if let Ok(id) = id.parse() {
                        found.push(id);
                    }
                    return;
                }
                object.values().for_each(|value| walk(value, found));
            }
            Value::Array(values) => values.iter().for_each(|value| walk(value, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    values.into_iter().for_each(|value| walk(value, &mut found));
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personal::master_key::MasterKey;

    fn with_key(user: Uuid) {
        let master = MasterKey::parse(&MasterKey::generate()).unwrap();
        let (wrapped, nonce) = master.wrap(user.as_bytes(), &[7u8; 32]);
        let bytes = master.unwrap(user.as_bytes(), &wrapped, &nonce).unwrap();
        use aes_gcm::aead::KeyInit;
        keys::tests_remember(
            user,
            Known::Key(std::sync::Arc::new(aes_gcm::Aes256Gcm::new_from_slice(&bytes).unwrap())),
        );
    }

    #[test]
    fn a_sealed_field_opens_while_its_key_lives_and_reads_forgotten_after() {
        let alice = Uuid::new_v4();
        with_key(alice);
        let sealed = seal(Some(alice), "alice");
        assert!(!sealed.to_string().contains("alice"), "{sealed}");
        assert_eq!(key_ids([&json!({"data": {"ownerId": sealed.clone()}})]), vec![alice]);
        assert_eq!(open(&sealed), Ok(Opened::Text("alice".into())));
        keys::tests_remember(alice, Known::Forgotten);
        assert_eq!(open(&sealed), Ok(Opened::Forgotten));
        assert_eq!(seal(Some(alice), "again"), json!({"forgotten": true}));
    }

    #[test]
    fn an_unloaded_key_is_an_error_to_fix_not_forgotten() {
        let bob = Uuid::new_v4();
        with_key(bob);
        let sealed = seal(Some(bob), "bob");
        keys::drop_cached(bob);
        assert_eq!(open(&sealed), Err(Unopened::KeyNotLoaded(bob)));
    }

    #[test]
    fn a_key_distrusted_while_a_command_runs_still_seals_and_is_loaded_again_to_read() {
        let frank = Uuid::new_v4();
        with_key(frank);
        // Their credentials change (a sign-out) between loading the key and encoding.
        keys::drop_cached(frank);
        let sealed = seal(Some(frank), "frank");
        assert!(sealed["ciphertext"].is_string(), "never in clear for want of a key: {sealed}");
        assert_eq!(open(&sealed), Err(Unopened::KeyNotLoaded(frank)), "read again from the database first");
        keys::drop_all_cached();
        assert!(seal(Some(frank), "frank")["ciphertext"].is_string());
    }

    #[test]
    fn clear_text_is_read_as_written_and_a_tampered_field_is_refused() {
        assert_eq!(open(&json!("carol")), Ok(Opened::Text("carol".into())));
        assert_eq!(seal(None, "dave"), json!("dave"));
        let erin = Uuid::new_v4();
        with_key(erin);
        let mut sealed = seal(Some(erin), "erin");
        sealed["keyId"] = json!(Uuid::new_v4());
        assert!(matches!(open(&sealed), Err(Unopened::KeyNotLoaded(_))));
        let mut swapped = seal(Some(erin), "erin");
        swapped["ciphertext"] = seal(Some(erin), "mallory")["ciphertext"].clone();
        swapped["nonce"] = json!("AAAAAAAAAAAAAAAA");
        assert!(matches!(open(&swapped), Err(Unopened::Malformed(_))));
        assert!(open(&json!(12)).is_err());
    }
}
