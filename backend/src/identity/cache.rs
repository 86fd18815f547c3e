//! Who a session or token belongs to, remembered for a moment: every request names its caller,
//! and a database look-up for each would cost as much as the query itself. An entry lives
//! [`CallerCache::REMEMBERED_FOR`]; whatever ends a credential (signing out, revoking, a
//! password reset or role change, on any instance or from the command line) notifies every
//! instance through Postgres, which forget the user's entries at once and tell the user's live
//! streams (and only theirs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Caller, Secret, sessions, tokens};

/// Beyond this many entries the cache starts afresh: memory stays bounded whatever clients send
/// (only credentials that name someone are remembered).
const MAX_ENTRIES: usize = 10_000;
/// The `NOTIFY` channel whose payload is the id of a user whose credentials changed.
pub const CHANNEL: &str = "bank_credentials";

/// Per secret hash: the caller and when they were looked up; and how many times anything was
/// forgotten, so that a look-up that began before a credential ended does not put it back.
#[derive(Default)]
struct Remembered {
    callers: HashMap<Vec<u8>, (Caller, Instant)>,
    forgettings: u64,
}

#[derive(Clone)]
pub struct CallerCache {
    known: Arc<Mutex<Remembered>>,
    /// Per user with a live stream here: told when their credentials change (or may have), so
    /// that their streams, and nobody else's, check theirs again.
    watchers: Arc<Mutex<Watchers>>,
    remembered_for: Duration,
}

/// The users whose live streams listen for changes, and when to drop the entries of users whose
/// streams have all ended (the map stays within twice what is in use).
#[derive(Default)]
struct Watchers {
    by_user: HashMap<Uuid, watch::Sender<()>>,
    tidy_at: usize,
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
        CallerCache { known: Arc::default(), watchers: Arc::default(), remembered_for }
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
    /// long-lived request checks it is still allowed to go on). What was found is remembered
    /// only if nothing was forgotten meanwhile: the answer may predate a credential's end.
    pub async fn look_up(&self, pool: &PgPool, presented: &Presented) -> Result<Option<Caller>, sqlx::Error> {
        let (forgettings, asked_at) = (self.known().forgettings, Instant::now());
        let found = match presented {
            Presented::Session(secret) => sessions::find(pool, secret).await?,
            Presented::Token(secret) => tokens::find(pool, secret).await?,
        };
        let mut known = self.known();
        match &found {
            Some(caller) if known.forgettings == forgettings => {
                if known.callers.len() >= MAX_ENTRIES {
                    known.callers.clear();
                }
                known.callers.insert(presented.secret().hash(), (caller.clone(), asked_at));
            }
            Some(_) => {}
            None => {
                known.callers.remove(&presented.secret().hash());
            }
        }
        Ok(found)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.known.lock().expect("the callers cache is never poisoned")
    }

    fn remembered(&self, key: &[u8]) -> Option<Caller> {
        let known = self.known();
        known.callers.get(key).filter(|(_, at)| at.elapsed() < self.remembered_for).map(|(caller, _)| caller.clone())
    }

    /// Forgets a session or token just ended here (other instances hear of it from Postgres).
    pub fn forget_secret(&self, secret: &Secret) {
        let mut known = self.known();
        known.callers.remove(&secret.hash());
        known.forgettings += 1;
    }

    /// Forgets everything remembered of the user, and tells their live streams.
    pub fn forget_user(&self, user_id: Uuid) {
        let mut known = self.known();
        known.callers.retain(|_, (caller, _)| caller.user_id != user_id);
        known.forgettings += 1;
        drop(known);
        if let Some(watcher) = self.watchers().by_user.get(&user_id) {
            watcher.send_replace(());
        }
    }

    /// Forgets everyone, and has every live stream check its credentials (notifications may
    /// have been missed).
    fn forget_everyone(&self) {
        let mut known = self.known();
        known.callers.clear();
        known.forgettings += 1;
        drop(known);
        for watcher in self.watchers().by_user.values() {
            watcher.send_replace(());
        }
    }

    /// Changes whenever `user_id`'s credentials change (or may have) from now on.
    pub fn changes_of(&self, user_id: Uuid) -> watch::Receiver<()> {
        let mut watchers = self.watchers();
        if watchers.by_user.len() >= watchers.tidy_at {
            watchers.by_user.retain(|_, watcher| watcher.receiver_count() > 0);
            watchers.tidy_at = (2 * watchers.by_user.len()).max(64);
        }
        watchers.by_user.entry(user_id).or_insert_with(|| watch::channel(()).0).subscribe()
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers.lock().expect("the credentials watchers are never poisoned")
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
        self.forget_everyone();
        crate::personal::keys::drop_all_cached();
    }

    /// A user whose credentials changed may have been forgotten: their data key is looked up
    /// again too.
    fn received(&self, payload: &str) {
        match payload.parse() {
            Ok(user_id) => {
                self.forget_user(user_id);
                crate::personal::keys::drop_cached(user_id);
            }
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
