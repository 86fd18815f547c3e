//! Who a session or token belongs to, remembered for a moment: every request names its caller,
//! and a database look-up for each would cost as much as the query itself. An entry lives
//! [`REMEMBERED_FOR`]; signing out and revoking forget it at once on the instance that did it,
//! and other instances follow within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{Caller, Credential, Secret, sessions, tokens};

/// How long a look-up is trusted.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(2);
/// Beyond this many entries the cache starts afresh: memory stays bounded whatever clients send
/// (only credentials that name someone are remembered).
const MAX_ENTRIES: usize = 10_000;

/// Per secret hash: the caller and when they were looked up.
type Remembered = HashMap<Vec<u8>, (Caller, Instant)>;

#[derive(Clone, Default)]
pub struct CallerCache {
    known: Arc<Mutex<Remembered>>,
}

/// What a request carried.
pub enum Presented<'a> {
    Session(&'a Secret),
    Token(&'a Secret),
}

impl CallerCache {
    pub fn new() -> CallerCache {
        CallerCache::default()
    }

    /// The caller these credentials name, if any: remembered, or looked up.
    pub async fn find(&self, pool: &PgPool, presented: Presented<'_>) -> Result<Option<Caller>, sqlx::Error> {
        let secret = match presented {
            Presented::Session(secret) | Presented::Token(secret) => secret,
        };
        let key = secret.hash();
        if let Some(caller) = self.remembered(&key) {
            return Ok(Some(caller));
        }
        let found = match presented {
            Presented::Session(secret) => sessions::find(pool, secret).await?,
            Presented::Token(secret) => tokens::find(pool, secret).await?,
        };
        if let Some(caller) = &found {
            let mut known = self.known.lock().expect("the callers cache is never poisoned");
            if known.len() >= MAX_ENTRIES {
                known.clear();
            }
            known.insert(key, (caller.clone(), Instant::now()));
        }
        Ok(found)
    }

    fn remembered(&self, key: &[u8]) -> Option<Caller> {
        let known = self.known.lock().expect("the callers cache is never poisoned");
        known.get(key).filter(|(_, at)| at.elapsed() < REMEMBERED_FOR).map(|(caller, _)| caller.clone())
    }

    /// Forgets a session or token just ended here.
    pub fn forget_secret(&self, secret: &Secret) {
        self.known.lock().expect("the callers cache is never poisoned").remove(&secret.hash());
    }

    /// Forgets a token just revoked here (known by its id, not its secret).
    pub fn forget_token(&self, token_id: uuid::Uuid) {
        self.known
            .lock()
            .expect("the callers cache is never poisoned")
            .retain(|_, (caller, _)| caller.credential != Credential::Token { token_id });
    }
}
