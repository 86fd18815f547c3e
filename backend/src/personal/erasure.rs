//! Forgetting a person, at their own request (once their accounts are closed) or an
//! operator's (with a reason, which the log records sealed with the operator's key).
//!
//! One transaction does all of it, so that a crash leaves either nothing done or everything:
//! it appends `OwnerForgotten` to each of the person's accounts and `UserForgotten` to their own
//! stream, destroys their data key, ends their sessions and tokens (deleting the user), drops
//! the snapshots and remembered requests that carry their name in clear, and keeps a keyed hash
//! of their username so that the name is free again only after a cooling-off period. The read
//! models follow the events: the projections put a placeholder where the person was.

use std::time::Duration;

use eventstore::{AppendError, AppendNotifier, LATEST, LoadError};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::keys::{self, KeyError};
use super::master_key::MasterKey;
use crate::account_store;
use crate::event_codec::{self, USER_STREAM_TYPE};
use bank::domain::{self, DomainError, Reason};

/// Who asked for a person to be forgotten.
#[derive(Debug, Clone)]
pub enum ForgottenBy {
    /// The person themself.
    Themself,
    /// An operator, for a reason the log records.
    Operator { operator_id: Uuid, reason: Reason },
}

/// What forgetting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The person's accounts, each of which now reads as owned by someone forgotten.
    pub accounts: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("there is no such user")]
    NoSuchUser,
    #[error("operators are not forgotten through this lever: another operator removes their access first")]
    NotACustomer,
    #[error("{open} of the user's accounts are still open: close them first (money must be claimed by someone)")]
    AccountsOpen { open: usize },
    #[error(
        "{under_way} transfers from the user's accounts are under way: wait until they are done (one refused would bring money back to them)"
    )]
    TransfersUnderWay { under_way: i64 },
    #[error("erasure needs a master key (MASTER_KEY_FILE): without one, personal data is not sealed")]
    NoMasterKey,
    #[error("an account of the user changed meanwhile; try again")]
    Conflict,
    #[error("an account of the user cannot be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AppendError> for EraseError {
    fn from(error: AppendError) -> EraseError {
        match error {
            AppendError::Conflict { .. } => EraseError::Conflict,
            AppendError::Database(error) => EraseError::Database(error),
        }
    }
}

/// Forgets `user_id` (see the module's documentation). Their username may be taken again
/// after `cooling_off`.
pub async fn forget(
    pool: &PgPool,
    master: Option<&MasterKey>,
    notifier: &AppendNotifier,
    user_id: Uuid,
    by: ForgottenBy,
    cooling_off: Duration,
) -> Result<Forgotten, EraseError> {
    let master = master.ok_or(EraseError::NoMasterKey)?;
    let (username, role): (String, String) = sqlx::query_as("SELECT username, role FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or(EraseError::NoSuchUser)?;
    if role != "customer" {
        return Err(EraseError::NotACustomer);
    }
    let digest = keys::username_digest(pool, master, &username).await?;
    // Who writes the events: the person or the operator; their key seals their name and words.
    let actor = match &by {
        ForgottenBy::Themself => user_id,
        ForgottenBy::Operator { operator_id, .. } => *operator_id,
    };
    keys::load_for_writing(pool, master, actor).await?;
    let metadata = json!({ "actor": { "userId": actor }, "erasure": true });

    let mut tx = pool.begin_with(format!("BEGIN; {}", eventstore::store::WRITER_TIMEOUTS)).await?;
    let locked: Option<String> = sqlx::query_scalar("SELECT username FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    if locked.as_deref() != Some(username.as_str()) {
        return Err(EraseError::NoSuchUser);
    }
    let mut accounts = owned_accounts(&mut tx, user_id, &username).await?;
    accounts.sort_unstable();
    let mut appends = Vec::new();
    let mut open = 0;
    for account_id in &accounts {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(eventstore::stream_lock_key(*account_id))
            .execute(&mut *tx)
            .await?;
        let loaded = load_account(&mut tx, *account_id).await?;
        match domain::forget_owner(&loaded.state) {
            Ok(events) if events.is_empty() => {}
            Ok(events) => appends.push((*account_id, loaded.version, events)),
            Err(DomainError::AccountNotClosed) => open += 1,
            Err(refusal) => return Err(EraseError::Unreadable(refusal.to_string())),
        }
    }
    if open > 0 {
        return Err(EraseError::AccountsOpen { open });
    }
    let under_way = transfers_under_way(&mut tx, &accounts).await?;
    if under_way > 0 {
        return Err(EraseError::TransfersUnderWay { under_way });
    }
    for (account_id, version, events) in &appends {
        let stored: Vec<_> = events.iter().map(|event| event_codec::encode(event, &metadata)).collect();
        eventstore::append(
            &mut tx,
            <account_store::Account as eventstore::Aggregate>::STREAM_TYPE,
            *account_id,
            *version,
            &stored,
        )
        .await?;
    }
    let (by_whom, reason) = match &by {
        ForgottenBy::Themself => ("self", None),
        ForgottenBy::Operator { reason, .. } => ("operator", Some(reason)),
    };
    let forgotten = event_codec::encode_user_forgotten(by_whom, reason, &metadata);
    eventstore::append(&mut tx, USER_STREAM_TYPE, user_id, 0, &[forgotten]).await?;

    // The accounts' snapshots held the name in clear (the next load folds the log again).
    sqlx::query("DELETE FROM snapshots WHERE stream_id = ANY($1)").bind(&accounts).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO forgotten_users (user_id, username_digest, username_free_after)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(user_id)
    .bind(&digest)
    .bind(cooling_off.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM user_keys WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    // Their sessions, tokens and sign-in addresses go with them (`ON DELETE CASCADE`).
    sqlx::query("DELETE FROM users WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    crate::identity::announce_change(&mut tx, user_id).await?;
    tx.commit().await?;
    keys::drop_cached(user_id);
    notifier.committed();
    forget_stragglers(pool, user_id, &username, &accounts, &metadata).await;
    forget_requests(pool, &username, &accounts).await;
    tracing::info!(%user_id, accounts = accounts.len(), by = by_whom, "forgot a user");
    Ok(Forgotten { accounts })
}

/// The accounts `user_id` opened, as the log says (a read model may lag): created with their
/// key, or in their name before names were sealed.
async fn owned_accounts(conn: &mut PgConnection, user_id: Uuid, username: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT stream_id FROM events
         WHERE event_type = 'AccountCreated' AND stream_type = 'account' AND data -> 'ownerId' ->> 'keyId' = $1
         UNION
         SELECT stream_id FROM events
         WHERE event_type = 'AccountCreated' AND stream_type = 'account'
           AND coalesce(data ->> 'ownerId', data ->> 'owner_id') = $2",
    )
    .bind(user_id.to_string())
    .bind(username)
    .fetch_all(conn)
    .await
}

/// Transfers from `accounts` that took money and are not finished: one refused by its target
/// would bring the money back to an account nobody can claim.
async fn transfers_under_way(conn: &mut PgConnection, accounts: &[Uuid]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events debit
         WHERE debit.stream_id = ANY($1) AND debit.event_type = 'TransferDebited'
           AND NOT EXISTS (SELECT 1 FROM events done
                           WHERE done.stream_id = (debit.data ->> 'transferId')::uuid
                             AND done.event_type IN ('TransferCompleted', 'TransferFailed'))",
    )
    .bind(accounts)
    .fetch_one(conn)
    .await
}

/// Accounts the person opened while they were being forgotten (a command that passed its
/// checks before their sessions ended, and committed after the log was read): their owner is
/// forgotten too, open or not, for the person is gone. Their creation was sealed with the key
/// now destroyed, so their name reads as forgotten already; this tells the read models, which
/// may have read it before.
async fn forget_stragglers(pool: &PgPool, user_id: Uuid, username: &str, known: &[Uuid], metadata: &serde_json::Value) {
    let result = async {
        let mut conn = pool.acquire().await?;
        let found = owned_accounts(&mut conn, user_id, username).await?;
        for account_id in found.into_iter().filter(|id| !known.contains(id)) {
            let mut tx = eventstore::begin_with_stream_lock(pool, account_id).await?;
            let loaded = load_account(&mut tx, account_id).await?;
            if loaded.state.owner_id().is_some_and(|owner| !owner.is_forgotten()) {
                let forgotten = event_codec::encode(&bank::domain::AccountEvent::OwnerForgotten, metadata);
                let stream_type = <account_store::Account as eventstore::Aggregate>::STREAM_TYPE;
                eventstore::append(&mut tx, stream_type, account_id, loaded.version, &[forgotten]).await?;
                sqlx::query("DELETE FROM snapshots WHERE stream_id = $1").bind(account_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            tracing::warn!(%user_id, %account_id, "an account opened while its owner was being forgotten");
        }
        Ok::<_, EraseError>(())
    };
    if let Err(error) = result.await {
        tracing::error!(%user_id, %error, "could not check for accounts opened while forgetting a user");
    }
}

/// Forgets the remembered requests (`processed_commands`) to the person's accounts and those
/// that opened them: their answers may quote a freeze reason about them, and older ones named
/// them in clear. Outside the erasure's transaction, which must not hold back readers of the
/// log while this scans; what it misses goes with the commands' retention.
async fn forget_requests(pool: &PgPool, username: &str, accounts: &[Uuid]) {
    let account_texts: Vec<String> = accounts.iter().map(Uuid::to_string).collect();
    let deleted = sqlx::query(
        "DELETE FROM processed_commands WHERE request ->> 'ownerId' = $1 OR request ->> 'accountId' = ANY($2)",
    )
    .bind(username)
    .bind(&account_texts)
    .execute(pool)
    .await;
    if let Err(error) = deleted {
        tracing::error!(%error, "could not forget the remembered requests of a forgotten user's accounts");
    }
}

/// An account, its keys loaded as its events need them.
async fn load_account(conn: &mut PgConnection, account_id: Uuid) -> Result<account_store::LoadedAccount, EraseError> {
    let mut loaded_keys = Vec::new();
    loop {
        match account_store::load(conn, account_id, LATEST).await {
            Ok(loaded) => return Ok(loaded),
            Err(LoadError::Unreadable(error)) => match error.missing_key {
                Some(key) if !loaded_keys.contains(&key) => {
                    keys::load(&mut *conn, [key]).await?;
                    loaded_keys.push(key);
                }
                _ => return Err(EraseError::Unreadable(error.to_string())),
            },
            Err(LoadError::Database(error)) => return Err(error.into()),
        }
    }
}

/// Whether `username` was forgotten less than its cooling-off period ago: sign-up refuses it.
pub async fn is_cooling_off(pool: &PgPool, master: Option<&MasterKey>, username: &str) -> Result<bool, KeyError> {
    let Some(master) = master else { return Ok(false) };
    let anyone: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM forgotten_users)").fetch_one(pool).await?;
    if !anyone {
        return Ok(false);
    }
    let digest = keys::username_digest(pool, master, username).await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM forgotten_users WHERE username_digest = $1 AND username_free_after > now())",
    )
    .bind(&digest)
    .fetch_one(pool)
    .await?)
}

/// Drops the username hashes whose cooling-off is over: what is left of a forgotten person is
/// then an id and a date. Returns how many.
pub async fn drop_cooled_off_names(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE forgotten_users SET username_digest = NULL
         WHERE username_digest IS NOT NULL AND username_free_after <= now()",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Whether personal data was sealed in this database before (a data key exists): a server
/// started without a master key says loudly that it writes names in clear beside them.
pub async fn was_sealed(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_keys)").fetch_one(pool).await
}
