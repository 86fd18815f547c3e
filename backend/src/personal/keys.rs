//! Every person's data key: created on their first write, kept wrapped in `user_keys`, held
//! unwrapped in memory while in use, destroyed when they are forgotten.
//!
//! The event codec is pure and synchronous (the generic store calls it), so it finds keys in a
//! process-wide cache rather than asking the database: whoever reads events first makes sure
//! their keys are loaded ([`load`], [`load_for_writing`]). A key missing from the cache is an
//! error the reader fixes by loading it, never a *forgotten*: only the database says that (no
//! row for a key an event was sealed with). Keys are found by user id, which is random, so one
//! cache serves every server in a process (tests run several, each with its own database).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::master_key::{self, MasterKey};

/// How long a loaded key is trusted without asking the database again. Forgetting someone
/// notifies every instance, which drop the key at once; this bounds what a lost notification
/// costs.
pub const TRUSTED_FOR: Duration = Duration::from_secs(60);

/// Beyond this many entries the cache starts afresh: memory stays bounded.
const MAX_ENTRIES: usize = 200_000;

/// The id under which `user_keys` keeps the installation's username key (see
/// [`username_digest`]); no user has it.
const USERNAME_KEY: Uuid = Uuid::nil();

/// What the cache knows of one person's key.
#[derive(Clone)]
pub(crate) enum Known {
    Key(Arc<Aes256Gcm>),
    /// Destroyed: what it sealed reads as *forgotten*, for good.
    Forgotten,
}

/// One person's entry: what is known, when it was read, and whether it may still be read with.
/// An entry is distrusted, never removed, when its person's credentials change: a command in
/// flight still seals with it (so nothing is ever written in clear for want of a key), while
/// reading asks the database again.
struct Entry {
    known: Known,
    loaded: Instant,
    trusted: bool,
}

static CACHE: LazyLock<RwLock<HashMap<Uuid, Entry>>> = LazyLock::new(Default::default);

/// Bumped by every drop: a key read from the database before a drop is not trusted after it (the
/// erasure that caused the drop may have destroyed it).
static DROPS: AtomicU64 = AtomicU64::new(0);

fn cache() -> std::sync::RwLockReadGuard<'static, HashMap<Uuid, Entry>> {
    CACHE.read().expect("the key cache is never poisoned")
}

fn cache_mut() -> std::sync::RwLockWriteGuard<'static, HashMap<Uuid, Entry>> {
    CACHE.write().expect("the key cache is never poisoned")
}

/// Remembers what a read that began at drop count `read_at` found.
fn remember(user_id: Uuid, known: Known, read_at: u64) {
    let trusted = matches!(known, Known::Forgotten) || DROPS.load(Ordering::SeqCst) == read_at;
    let mut cache = cache_mut();
    if cache.len() >= MAX_ENTRIES {
        cache.retain(|_, entry| matches!(entry.known, Known::Forgotten) || entry.loaded.elapsed() < TRUSTED_FOR);
    }
    cache.insert(user_id, Entry { known, loaded: Instant::now(), trusted });
}

/// The key to seal with for `user_id`, as the cache has it (however old or distrusted: sealing
/// with a key destroyed a moment ago only makes the field unreadable sooner).
pub(crate) fn for_sealing(user_id: Uuid) -> Option<Known> {
    cache().get(&user_id).map(|entry| entry.known.clone())
}

/// The key to open with, if the cache's word on it is recent enough to trust.
pub(crate) fn for_opening(user_id: Uuid) -> Option<Known> {
    cache().get(&user_id).and_then(|entry| match entry.known {
        Known::Forgotten => Some(Known::Forgotten),
        Known::Key(_) if entry.trusted && entry.loaded.elapsed() < TRUSTED_FOR => Some(entry.known.clone()),
        Known::Key(_) => None,
    })
}

/// Distrusts what the cache knows of `user_id` (their credentials changed, or they were
/// forgotten, on this instance or another): the next read asks the database.
pub fn drop_cached(user_id: Uuid) {
    DROPS.fetch_add(1, Ordering::SeqCst);
    if let Some(entry) = cache_mut().get_mut(&user_id) {
        entry.trusted = false;
    }
}

/// Empties the cache, keys in use included: for a process that runs a server that seals after
/// one that does not on the same users (the benchmarks' on ÷ off), which would otherwise seal.
pub fn clear_cache() {
    DROPS.fetch_add(1, Ordering::SeqCst);
    cache_mut().clear();
}

/// Distrusts every key the cache holds (notifications may have been missed). What is forgotten
/// stays forgotten.
pub fn drop_all_cached() {
    DROPS.fetch_add(1, Ordering::SeqCst);
    cache_mut().values_mut().for_each(|entry| entry.trusted = false);
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The key was wrapped by a master key this server was not given.
    #[error(
        "the data key of user {user_id} was wrapped by master key {master_key_id}, which this server does not have"
    )]
    NoMasterKey { user_id: Uuid, master_key_id: String },
}

#[derive(sqlx::FromRow)]
struct WrappedKey {
    user_id: Uuid,
    wrapped_key: Vec<u8>,
    nonce: Vec<u8>,
    master_key_id: String,
}

impl WrappedKey {
    /// The key, unwrapped with the master key that wrapped it.
    fn bytes(&self) -> Result<Vec<u8>, KeyError> {
        let no_key = || KeyError::NoMasterKey { user_id: self.user_id, master_key_id: self.master_key_id.clone() };
        let master = master_key::unwrapping(&self.master_key_id).ok_or_else(no_key)?;
        master.unwrap(self.user_id.as_bytes(), &self.wrapped_key, &self.nonce).ok_or_else(no_key)
    }

    fn open(&self) -> Result<Arc<Aes256Gcm>, KeyError> {
        let bytes = self.bytes()?;
        let no_key = || KeyError::NoMasterKey { user_id: self.user_id, master_key_id: self.master_key_id.clone() };
        Ok(Arc::new(Aes256Gcm::new_from_slice(&bytes).map_err(|_| no_key())?))
    }
}

/// Loads the keys of `user_ids` the cache does not trust now; a key with no row was destroyed
/// (an event sealed with it proves it existed) and is remembered as forgotten.
pub async fn load(executor: impl PgExecutor<'_>, user_ids: impl IntoIterator<Item = Uuid>) -> Result<(), KeyError> {
    let mut wanted: Vec<Uuid> = user_ids.into_iter().filter(|id| for_opening(*id).is_none()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort_unstable();
    wanted.dedup();
    let read_at = DROPS.load(Ordering::SeqCst);
    let rows: Vec<WrappedKey> =
        sqlx::query_as("SELECT user_id, wrapped_key, nonce, master_key_id FROM user_keys WHERE user_id = ANY($1)")
            .bind(&wanted)
            .fetch_all(executor)
            .await?;
    for id in &wanted {
        match rows.iter().find(|row| row.user_id == *id) {
            Some(row) => remember(*id, Known::Key(row.open()?), read_at),
            None => remember(*id, Known::Forgotten, read_at),
        }
    }
    Ok(())
}

/// Makes sure `user_id` has a key, loaded and trusted, before they write: created (wrapped
/// under `master`) on their first write. A user who no longer exists is remembered as
/// forgotten, and what they write is sealed as such.
pub async fn load_for_writing(pool: &PgPool, master: &MasterKey, user_id: Uuid) -> Result<(), KeyError> {
    if matches!(for_opening(user_id), Some(Known::Key(_))) {
        return Ok(());
    }
    let read_at = DROPS.load(Ordering::SeqCst);
    if let Some(row) = find(pool, user_id).await? {
        remember(user_id, Known::Key(row.open()?), read_at);
        return Ok(());
    }
    // Only for a user who exists: forgetting deletes both rows in one transaction.
    match create(pool, master, user_id, "EXISTS (SELECT 1 FROM users WHERE user_id = $1)").await? {
        Some(row) => remember(user_id, Known::Key(row.open()?), read_at),
        None => remember(user_id, Known::Forgotten, read_at),
    }
    Ok(())
}

/// A new random key for `id`, wrapped under `master`, stored if `condition` holds (SQL, `$1`
/// being `id`) and no key was stored first; then whichever key is stored.
async fn create(pool: &PgPool, master: &MasterKey, id: Uuid, condition: &str) -> Result<Option<WrappedKey>, KeyError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system gives random bytes");
    let (wrapped, nonce) = master.wrap(id.as_bytes(), &key);
    sqlx::query(&format!(
        "INSERT INTO user_keys (user_id, wrapped_key, nonce, master_key_id)
         SELECT $1, $2, $3, $4 WHERE {condition}
         ON CONFLICT (user_id) DO NOTHING"
    ))
    .bind(id)
    .bind(&wrapped)
    .bind(&nonce)
    .bind(master.id())
    .execute(pool)
    .await?;
    Ok(find(pool, id).await?)
}

async fn find(executor: impl PgExecutor<'_>, user_id: Uuid) -> Result<Option<WrappedKey>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, wrapped_key, nonce, master_key_id FROM user_keys WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// A username, keyed-hashed under the installation's username key (itself wrapped by the
/// master key): what `forgotten_users` keeps to refuse the name during its cooling-off, and
/// from which nobody without the master key can tell the name (usernames are too few to hide
/// behind a plain hash).
pub async fn username_digest(pool: &PgPool, master: &MasterKey, username: &str) -> Result<Vec<u8>, KeyError> {
    use hmac::{Hmac, Mac};
    let row = match find(pool, USERNAME_KEY).await? {
        Some(row) => row,
        None => create(pool, master, USERNAME_KEY, "true").await?.ok_or(sqlx::Error::RowNotFound)?,
    };
    let key = row.bytes()?;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Wraps anew, under `current`, every key wrapped by another master key this server has, a
/// batch at a time (the server does, at start and every hour); counts those none of its master
/// keys opens.
pub async fn rewrap(pool: &PgPool, current: &MasterKey, batch: i64) -> Result<Rewrapped, KeyError> {
    let mut rewrapped = Rewrapped::default();
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<WrappedKey> = sqlx::query_as(
            "SELECT user_id, wrapped_key, nonce, master_key_id FROM user_keys
             WHERE master_key_id <> $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(current.id())
        .bind(after)
        .bind(batch)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { return Ok(rewrapped) };
        after = last.user_id;
        for row in rows {
            let opened = master_key::unwrapping(&row.master_key_id)
                .and_then(|old| old.unwrap(row.user_id.as_bytes(), &row.wrapped_key, &row.nonce));
            let Some(key) = opened else {
                rewrapped.unopenable += 1;
                continue;
            };
            let (wrapped, nonce) = current.wrap(row.user_id.as_bytes(), &key);
            // Only if nobody changed it meanwhile (another instance rewrapping, or an erasure).
            rewrapped.done += sqlx::query(
                "UPDATE user_keys SET wrapped_key = $2, nonce = $3, master_key_id = $4
                 WHERE user_id = $1 AND master_key_id = $5",
            )
            .bind(row.user_id)
            .bind(&wrapped)
            .bind(&nonce)
            .bind(current.id())
            .bind(&row.master_key_id)
            .execute(pool)
            .await?
            .rows_affected();
        }
    }
}

/// What a [`rewrap`] did: keys wrapped anew, and keys none of the server's master keys opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrapped {
    pub done: u64,
    pub unopenable: u64,
}

/// What the operations page shows of the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyCounts {
    /// People with a data key.
    pub keys: i64,
    /// Of which wrapped by a master key other than the current one (a rotation under way).
    pub keys_under_other_master_keys: i64,
    /// People forgotten.
    pub forgotten: i64,
}

pub async fn counts(executor: impl PgExecutor<'_>, current: Option<&MasterKey>) -> Result<KeyCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM user_keys WHERE user_id <> $1) AS keys,
                (SELECT count(*) FROM user_keys WHERE user_id <> $1 AND master_key_id IS DISTINCT FROM $2)
                    AS keys_under_other_master_keys,
                (SELECT count(*) FROM forgotten_users) AS forgotten",
    )
    .bind(USERNAME_KEY)
    .bind(current.map(MasterKey::id))
    .fetch_one(executor)
    .await
}

#[cfg(test)]
pub(crate) fn tests_remember(user_id: Uuid, known: Known) {
    remember(user_id, known, DROPS.load(Ordering::SeqCst));
}

/// Runs `attempt` again after loading each key it reports missing (`missing_key`), at most
/// [`MAX_KEYS_PER_ATTEMPT`] of them: for readers that go through the generic store, which decodes
/// with whatever the cache holds. A key that cannot be loaded leaves the attempt's own error.
pub async fn retrying<T, E, F: std::future::Future<Output = Result<T, E>>>(
    pool: &PgPool,
    missing_key: impl Fn(&E) -> Option<Uuid>,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    let mut loaded = Vec::new();
    loop {
        let result = attempt().await;
        let Err(error) = &result else { return result };
        match missing_key(error) {
            Some(key) if !loaded.contains(&key) && loaded.len() < MAX_KEYS_PER_ATTEMPT => {
                if let Err(load_error) = load(pool, [key]).await {
                    tracing::warn!(error = %load_error, "could not load a data key");
                    return result;
                }
                loaded.push(key);
            }
            _ => return result,
        }
    }
}

/// How many keys one read may need loaded (an account's owner and the operators who froze it).
const MAX_KEYS_PER_ATTEMPT: usize = 16;
