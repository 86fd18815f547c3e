//! Temporal reads, straight from the event store: an account as it was at a version or a
//! moment, and its audit trail. Snapshots keep each of them O(snapshot interval + page).

use eventstore::read_stream_until;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::account_store::{self, LoadError};
use crate::event_codec;
use crate::personal::keys;
use crate::personal::sealed::{self, Opened};
use bank::contract::{HistoricalAccount, HistoryEntry, HistoryPage};
use bank::domain::{AccountEvent, AccountState, FORGOTTEN, Movement, evolve};

/// The data key a read found missing, to load before reading again.
fn missing_key(error: &LoadError) -> Option<Uuid> {
    match error {
        LoadError::Unreadable(error) => error.missing_key,
        LoadError::Database(_) => None,
    }
}

#[derive(Clone)]
pub struct AccountHistory {
    pool: PgPool,
}

impl AccountHistory {
    pub fn new(pool: PgPool) -> AccountHistory {
        AccountHistory { pool }
    }

    /// Who owns the account (as its creation event says, unless they were forgotten since), or
    /// `None` if it does not exist.
    pub async fn owner(&self, account_id: Uuid) -> Result<Option<String>, LoadError> {
        keys::retrying(&self.pool, missing_key, || async {
            let mut conn = self.pool.acquire().await?;
            let Some(owner) = account_store::owner(&mut conn, account_id).await? else { return Ok(None) };
            if !owner.is_forgotten() && owner_forgotten(&mut conn, account_id).await? {
                return Ok(Some(FORGOTTEN.to_owned()));
            }
            Ok(Some(owner.to_string()))
        })
        .await
    }

    /// The account at `version` (the newest one if `version` is beyond it); `None` if the
    /// account does not exist. An owner forgotten since reads as forgotten at every version.
    pub async fn at_version(&self, account_id: Uuid, version: i64) -> Result<Option<HistoricalAccount>, LoadError> {
        keys::retrying(&self.pool, missing_key, || self.at_version_once(account_id, version)).await
    }

    async fn at_version_once(&self, account_id: Uuid, version: i64) -> Result<Option<HistoricalAccount>, LoadError> {
        // Every read on this one connection: a request that holds one connection while asking
        // the pool for another can wait for itself when the pool runs dry.
        let mut conn = self.pool.acquire().await?;
        let latest_version = eventstore::latest_version(&mut *conn, account_id).await?;
        let version = version.min(latest_version);
        let loaded = account_store::load(&mut conn, account_id, version).await?;
        let AccountState::Open { owner_id, balance, total_deposits, total_withdrawals, .. } = loaded.state else {
            return Ok(None);
        };
        let Some((created_at, recorded_at)) =
            eventstore::store::stream_times(&mut *conn, account_id, loaded.version).await?
        else {
            return Ok(None);
        };
        let owner_id = if loaded.version < latest_version && owner_forgotten(&mut conn, account_id).await? {
            FORGOTTEN.to_owned()
        } else {
            owner_id.to_string()
        };
        Ok(Some(HistoricalAccount {
            account_id,
            owner_id,
            balance: balance.value(),
            total_deposits,
            total_withdrawals,
            transaction_count: loaded.version,
            version: loaded.version,
            recorded_at,
            created_at,
            latest_version,
        }))
    }

    /// The account as it was just before `end`, made of the events recorded before it; `None` if
    /// it did not exist yet. The API decides where a moment a client names ends.
    pub async fn before(&self, account_id: Uuid, end: OffsetDateTime) -> Result<Option<HistoricalAccount>, LoadError> {
        let version = eventstore::store::version_before(&self.pool, account_id, end).await?;
        if version == 0 {
            return Ok(None);
        }
        self.at_version(account_id, version).await
    }

    /// Up to `limit` events older than `before_version` (all if `None`), newest first, each
    /// with its metadata and the balance it left. `None` if the account does not exist.
    pub async fn page(
        &self,
        account_id: Uuid,
        before_version: Option<i64>,
        limit: i64,
    ) -> Result<Option<HistoryPage>, LoadError> {
        keys::retrying(&self.pool, missing_key, || self.page_once(account_id, before_version, limit)).await
    }

    async fn page_once(
        &self,
        account_id: Uuid,
        before_version: Option<i64>,
        limit: i64,
    ) -> Result<Option<HistoryPage>, LoadError> {
        let latest_version = eventstore::latest_version(&self.pool, account_id).await?;
        // Another aggregate's stream (a transfer's id) is no account either.
        if latest_version == 0 || self.owner(account_id).await?.is_none() {
            return Ok(None);
        }
        // Saturating: the API refuses versions below 1 and limits outside 1–100, yet an extreme
        // one must not overflow here either.
        let top = before_version.map_or(latest_version, |before| before.saturating_sub(1).min(latest_version));
        let bottom = top.saturating_sub(limit).saturating_add(1).max(1);
        let mut entries = Vec::new();
        if top >= 1 {
            let mut conn = self.pool.acquire().await?;
            let mut state = account_store::load(&mut conn, account_id, bottom - 1).await?.state;
            let events = read_stream_until(&mut *conn, account_id, bottom - 1, top).await?;
            keys::load(&mut *conn, sealed::key_ids(events.iter().flat_map(|e| [&e.data, &e.metadata])))
                .await
                .map_err(key_error)?;
            // Words about an owner forgotten since, written in clear before words were sealed.
            let owner_gone = owner_forgotten(&mut conn, account_id).await?;
            // Actors named in clear (before names were sealed) who were forgotten since.
            let forgotten_actors =
                forgotten_users(&mut conn, events.iter().filter_map(|e| sealed::writer(&e.metadata))).await?;
            for event in events {
                let decoded = event_codec::decode(&event).map_err(LoadError::Unreadable)?;
                state = evolve(state, &decoded);
                let amount = match decoded.movement() {
                    Some(Movement::Opening(initial_balance)) => initial_balance.value(),
                    Some(Movement::In(amount) | Movement::Out(amount)) => amount.value(),
                    None => rust_decimal::Decimal::ZERO,
                };
                let (transfer_id, counterparty_account_id) = match &decoded {
                    AccountEvent::TransferDebited { transfer_id, to, .. } => (Some(*transfer_id), Some(*to)),
                    AccountEvent::TransferCredited { transfer_id, from, .. } => (Some(*transfer_id), Some(*from)),
                    AccountEvent::TransferRefunded { transfer_id, .. } => (Some(*transfer_id), None),
                    _ => (None, None),
                };
                let reason = match &decoded {
                    AccountEvent::AccountFrozen { .. } if owner_gone => Some(FORGOTTEN.to_owned()),
                    AccountEvent::AccountFrozen { reason } => Some(reason.to_string()),
                    _ => None,
                };
                let metadata_id =
                    |key: &str| event.metadata.get(key).and_then(|v| v.as_str()).and_then(|v| v.parse().ok());
                entries.push(HistoryEntry {
                    version: event.stream_version,
                    event_type: event.event_type.clone(),
                    amount,
                    balance_after: state.balance().map(|b| b.value()).unwrap_or_default(),
                    recorded_at: event.recorded_at,
                    position: event.position(),
                    command_id: metadata_id("commandId"),
                    correlation_id: metadata_id("correlationId"),
                    causation_id: metadata_id("causationId"),
                    actor: actor_name(&event.metadata, &forgotten_actors).map_err(|reason| {
                        LoadError::Unreadable(event_codec::DecodeError {
                            event_type: event.event_type.clone(),
                            schema_version: event.schema_version,
                            reason: reason.to_string(),
                            missing_key: reason.missing_key(),
                        })
                    })?,
                    transfer_id,
                    counterparty_account_id,
                    reason,
                });
            }
            entries.reverse();
        }
        let next_before_version = (bottom > 1 && top >= 1).then_some(bottom);
        Ok(Some(HistoryPage { account_id, latest_version, entries, next_before_version }))
    }
}

/// A key that could not be loaded, as a read's error: the database's, or unreadable.
fn key_error(error: keys::KeyError) -> LoadError {
    match error {
        keys::KeyError::Database(error) => LoadError::Database(error),
        other => LoadError::Unreadable(event_codec::DecodeError {
            event_type: String::new(),
            schema_version: 0,
            reason: other.to_string(),
            missing_key: None,
        }),
    }
}

/// Whether the account's owner was forgotten (an `OwnerForgotten` in its stream): what was
/// written in clear before names were sealed reads as forgotten too.
async fn owner_forgotten(conn: &mut sqlx::PgConnection, account_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND event_type = 'OwnerForgotten')")
        .bind(account_id)
        .fetch_one(conn)
        .await
}

/// Which of `user_ids` were forgotten.
async fn forgotten_users(
    conn: &mut sqlx::PgConnection,
    user_ids: impl Iterator<Item = Uuid>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids: Vec<Uuid> = user_ids.collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(ids);
    }
    sqlx::query_scalar("SELECT user_id FROM forgotten_users WHERE user_id = ANY($1)").bind(&ids).fetch_all(conn).await
}

/// The actor's name in an event's metadata, as the audit trail shows it: *forgotten* for
/// someone forgotten, however it was written.
fn actor_name(metadata: &serde_json::Value, forgotten: &[Uuid]) -> Result<Option<String>, sealed::Unopened> {
    if sealed::writer(metadata).is_some_and(|writer| forgotten.contains(&writer)) {
        return Ok(Some(FORGOTTEN.to_owned()));
    }
    Ok(match sealed::actor_name(metadata).transpose()? {
        Some(Opened::Text(name)) => Some(name),
        Some(Opened::Forgotten) => Some(FORGOTTEN.to_owned()),
        None => None,
    })
}
