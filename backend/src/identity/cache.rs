//! Who a session or token belongs to, remembered for a moment: every request names its caller,
//! and a database look-up for each would cost as much as the query itself. An entry lives
//! [`CallerCache::REMEMBERED_FOR`]; whatever ends a credential (signing out, revoking, a password reset or
//! role change, on any instance or from the command line) notifies every instance through
//! Postgres, which forget the user's entries at once and tell the user's live streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Caller, Secret, sessions, tokens};

/// Beyond this many entries the cache starts afresh: memory stays bounded whatever clients send
/// (only credentials that name someone are remembered).
const MAX_ENTRIES: usize = 10_000;
/// The `NOTIFY` channel whose payload is the id of a user whose credentials changed.
pub const CHANNEL: &str = "bank_credentials";

/// Per secret hash: the caller and when they were looked up.
type Remembered = HashMap<Vec<u8>, (Caller, Instant)>;

#[derive(Clone)]
pub struct CallerCache {
    known: Arc<Mutex<Remembered>>,
    /// The users whose credentials changed, as they are heard of; a live stream of theirs
    /// checks its own again.
    changed: broadcast::Sender<Uuid>,
    remembered_for: Duration,
}

/// What a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Session(Secret),
    Token(Secret),
}

impl CallerCache {
    /// How long a look-up is trusted by default when no notification says otherwise (one may
    /// be lost while an instance reconnects to Postgres).
    pub const REMEMBERED_FOR: Duration = Duration::from_secs(2);

    pub fn new(remembered_for: Duration) -> CallerCache {
        CallerCache { known: Arc::default(), changed: broadcast::channel(256).0, remembered_for }
    }

    /// The caller these credentials name, if any: remembered, or looked up.
    pub async fn find(&self, pool: &PgPool, presented: &Presented) -> Result<Option<Caller>, sqlx::Error> {
        let key = presented.secret().hash();
        if let Some(caller) = self.remembered(&key) {
            return Ok(Some(caller));
        }
        self.look_up(pool, presented).await
    }

    /// The caller these credentials name now, asking the database whatever is remembered (a
    /// long-lived request checks it is still allowed to go on).
    pub async fn look_up(&self, pool: &PgPool, presented: &Presented) -> Result<Option<Caller>, sqlx::Error> {
        let found = match presented {
            Presented::Session(secret) => sessions::find(pool, secret).await?,
            Presented::Token(secret) => tokens::find(pool, secret).await?,
        };
        let mut known = self.known.lock().expect("the callers cache is never poisoned");
        match &found {
            Some(caller) => {
                if known.len() >= MAX_ENTRIES {
                    known.clear();
                }
                known.insert(presented.secret().hash(), (caller.clone(), Instant::now()));
            }
            None => {
                known.remove(&presented.secret().hash());
            }
        }
        Ok(found)
    }

    fn remembered(&self, key: &[u8]) -> Option<Caller> {
        let known = self.known.lock().expect("the callers cache is never poisoned");
        known.get(key).filter(|(_, at)| at.elapsed() < self.remembered_for).map(|(caller, _)| caller.clone())
    }

    /// Forgets a session or token just ended here (other instances hear of it from Postgres).
    pub fn forget_secret(&self, secret: &Secret) {
        self.known.lock().expect("the callers cache is never poisoned").remove(&secret.hash());
    }

    /// Forgets everything remembered of the user, and tells their live streams.
    pub fn forget_user(&self, user_id: Uuid) {
        self.known
            .lock()
            .expect("the callers cache is never poisoned")
            .retain(|_, (caller, _)| caller.user_id != user_id);
        // Nobody listening is fine: no stream of theirs is open here.
        let _ = self.changed.send(user_id);
    }

    /// The users whose credentials change from now on (a lagging receiver has missed some).
    pub fn changes(&self) -> broadcast::Receiver<Uuid> {
        self.changed.subscribe()
    }

    /// Hears every instance's (and the command line's) credential changes until `shutdown`.
    pub fn spawn_postgres_relay(&self, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        // Nothing to do on a timer: entries expire by themselves.
        let tick = Duration::from_secs(3600);
        tokio::spawn(eventstore::relay::listen(pool, CHANNEL, tick, shutdown, self.clone()))
    }
}

impl eventstore::relay::Listener for CallerCache {
    /// Notifications may have been missed: nothing remembered is trusted any more.
    async fn catch_up(&self, _pool: &PgPool) {
        self.known.lock().expect("the callers cache is never poisoned").clear();
    }

    fn received(&self, payload: &str) {
        match payload.parse() {
            Ok(user_id) => self.forget_user(user_id),
            Err(_) => tracing::warn!(payload, "a credentials notification that names no user"),
        }
    }
}

impl Presented {
    fn secret(&self) -> &Secret {
        match self {
            Presented::Session(secret) | Presented::Token(secret) => secret,
        }
    }
}

/// Tells every instance, when the transaction commits, that `user_id`'s credentials changed.
pub(crate) async fn announce_change(connection: &mut sqlx::PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(user_id.to_string()).execute(connection).await?;
    Ok(())
}
