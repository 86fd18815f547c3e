//! The `account_summary` projection: one row per account with the seed's columns.
//!
//! A batch is folded per account in memory first, then written with one statement for the new
//! accounts and one for the changed ones, whatever the batch size.

use std::collections::HashMap;

use eventstore::{ApplyError, Position, Projection, RecordedEvent, Target};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event_codec::{self, DecodeError};
use crate::personal::keys::{self, KeyError};
use crate::personal::sealed;
use bank::domain::{AccountEvent, AccountStatus, FORGOTTEN, Movement};

pub const PROJECTION_NAME: &str = "account_summary";

#[derive(Debug, Clone, Copy)]
pub struct AccountSummaryProjection;

/// A whole row, for an account opened in this batch.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    pub account_id: Uuid,
    pub owner_id: String,
    pub balance: Decimal,
    pub deposits: Decimal,
    pub withdrawals: Decimal,
    pub count: i64,
    pub last_transaction: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub version: i64,
    pub position: i64,
    pub status: AccountStatus,
}

/// What this batch adds to an account opened before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub account_id: Uuid,
    pub first_event: Position,
    pub deposits: Decimal,
    pub withdrawals: Decimal,
    pub count: i64,
    pub last_transaction: OffsetDateTime,
    pub version: i64,
    pub position: i64,
    /// The status the batch leaves, if an event of it set one.
    pub status: Option<AccountStatus>,
    /// Money came back before any status was set in the batch: a closed account is open again.
    pub reopen_if_closed: bool,
    /// The owner was forgotten (`OwnerForgotten`): the row names [`FORGOTTEN`] from now on.
    pub owner_forgotten: bool,
}

impl Change {
    /// The status after this change, from the one before it.
    pub fn status_after(&self, before: AccountStatus) -> AccountStatus {
        match (&self.status, before) {
            (Some(status), _) => status.clone(),
            (None, AccountStatus::Closed) if self.reopen_if_closed => AccountStatus::Active,
            (None, before) => before,
        }
    }
}

/// What one batch does to the table: whole rows for the accounts it opened, increments for
/// the accounts opened before it (in the order of their first event in the batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummaryBatch {
    pub new_rows: Vec<NewRow>,
    pub changes: Vec<Change>,
}

/// An event of an account that was never created: its read model has no row to change.
#[derive(Debug, thiserror::Error)]
#[error("account {account_id} has no {table} row: it was never created")]
pub struct NeverCreated {
    pub account_id: Uuid,
    pub table: &'static str,
}

/// Decodes an event for a projection; an unreadable one stops the projection at it. Its keys
/// must be loaded first ([`load_keys`]).
pub(super) fn decode(event: &RecordedEvent) -> Result<AccountEvent, ApplyError> {
    event_codec::decode(event).map_err(|error| unreadable(event, error))
}

/// Why `event` could not be decoded, as a projection says it: a data key missing from the cache
/// (dropped since the batch loaded it: someone forgotten, or a credential change) is retried, as
/// a database error that may pass, and loaded again; anything else stops the projection at it.
pub(super) fn unreadable(event: &RecordedEvent, error: DecodeError) -> ApplyError {
    if error.missing_key.is_some() {
        return ApplyError::Database(retried(error));
    }
    ApplyError::Event { position: event.position(), reason: Box::new(error) }
}

/// `error` as a database error the runners retry (see [`eventstore::projection::is_transient`]).
fn retried(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(error))
}

/// Loads the data keys the personal fields of `events` were sealed with, so that decoding them
/// never finds one missing. A failure is retried, never taken for an unreadable event: a
/// database error as the runner retries any, and a key wrapped by a master key this server was
/// not given as one that may pass (another instance, given it, may lead; or this one restarted
/// with it) — the events are readable, and skipping them would lose them.
pub(super) async fn load_keys(executor: impl sqlx::PgExecutor<'_>, events: &[RecordedEvent]) -> Result<(), KeyError> {
    let ids = sealed::key_ids(events.iter().flat_map(|event| [&event.data, &event.metadata]));
    if ids.is_empty() {
        return Ok(());
    }
    keys::load(executor, ids).await
}

/// A [`load_keys`] failure as a projection's error: always one the runner retries.
pub(super) fn key_error(error: KeyError) -> ApplyError {
    match error {
        KeyError::Database(error) => ApplyError::Database(error),
        other => ApplyError::Database(retried(other)),
    }
}

/// Folds a batch in memory, without the database: pure, and what the tests below check.
pub fn fold(events: &[RecordedEvent]) -> Result<SummaryBatch, ApplyError> {
    let mut batch = SummaryBatch::default();
    let mut new_index: HashMap<Uuid, usize> = HashMap::new();
    let mut change_index: HashMap<Uuid, usize> = HashMap::new();
    for event in events {
        let id = event.stream_id;
        let decoded = decode(event)?;
        // As in the seed, the initial balance counts as the first deposit; money in counts as
        // deposits, money out as withdrawals.
        if let AccountEvent::AccountCreated { owner_id, initial_balance } = &decoded {
            new_index.insert(id, batch.new_rows.len());
            batch.new_rows.push(NewRow {
                account_id: id,
                owner_id: owner_id.to_string(),
                balance: initial_balance.value(),
                deposits: initial_balance.value(),
                withdrawals: Decimal::ZERO,
                count: 1,
                last_transaction: event.recorded_at,
                created_at: event.recorded_at,
                version: event.stream_version,
                position: event.global_position,
                status: AccountStatus::Active,
            });
            continue;
        }
        let (deposit, withdrawal) = match decoded.movement() {
            Some(Movement::In(amount)) => (amount.value(), Decimal::ZERO),
            Some(Movement::Out(amount)) => (Decimal::ZERO, amount.value()),
            Some(Movement::Opening(_)) | None => (Decimal::ZERO, Decimal::ZERO),
        };
        if let Some(&index) = new_index.get(&id) {
            let row = &mut batch.new_rows[index];
            row.balance += deposit - withdrawal;
            row.deposits += deposit;
            row.withdrawals += withdrawal;
            row.count += 1;
            (row.last_transaction, row.version, row.position) =
                (event.recorded_at, event.stream_version, event.global_position);
            if let Some(status) = decoded.status_after(&row.status) {
                row.status = status;
            }
            if matches!(decoded, AccountEvent::OwnerForgotten) {
                row.owner_id = FORGOTTEN.to_owned();
            }
        } else {
            let index = *change_index.entry(id).or_insert_with(|| {
                batch.changes.push(Change {
                    account_id: id,
                    first_event: event.position(),
                    deposits: Decimal::ZERO,
                    withdrawals: Decimal::ZERO,
                    count: 0,
                    last_transaction: event.recorded_at,
                    version: 0,
                    position: 0,
                    status: None,
                    reopen_if_closed: false,
                    owner_forgotten: false,
                });
                batch.changes.len() - 1
            });
            let change = &mut batch.changes[index];
            change.deposits += deposit;
            change.withdrawals += withdrawal;
            change.count += 1;
            (change.last_transaction, change.version, change.position) =
                (event.recorded_at, event.stream_version, event.global_position);
            if matches!(decoded, AccountEvent::OwnerForgotten) {
                change.owner_forgotten = true;
            }
            match &change.status {
                Some(known) => {
                    if let Some(status) = decoded.status_after(known) {
                        change.status = Some(status);
                    }
                }
                None if matches!(decoded, AccountEvent::TransferRefunded { .. }) => change.reopen_if_closed = true,
                // Any status the event sets does not depend on the one before.
                None => change.status = decoded.status_after(&AccountStatus::Active),
            }
        }
    }
    Ok(batch)
}

impl Projection for AccountSummaryProjection {
    const NAME: &'static str = PROJECTION_NAME;
    const TABLES: &'static [&'static str] = &["account_summary"];
    const EVENT_TYPES: &'static [&'static str] = AccountEvent::TYPES;
    /// Partitionable: one row per account, written from that account's events alone.
    const PARTITIONABLE: bool = true;

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        load_keys(&mut *conn, events).await.map_err(key_error)?;
        write(conn, &fold(events)?, &target.table("account_summary")).await
    }
}

/// Writes a folded batch: one statement for the new accounts, one for the changed ones.
async fn write(conn: &mut PgConnection, batch: &SummaryBatch, table: &str) -> Result<(), ApplyError> {
    let (new_rows, changes) = (&batch.new_rows, &batch.changes);
    if !new_rows.is_empty() {
        let column = |f: fn(&NewRow) -> Decimal| new_rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(&format!(
            "INSERT INTO {table} (account_id, owner_id, current_balance, total_deposits, total_withdrawals,
                 transaction_count, last_transaction, created_at, version, last_position, status, status_reason)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],
                 $6::bigint[], $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::bigint[], $11::text[],
                 $12::text[])"
        ))
        .bind(new_rows.iter().map(|r| r.account_id).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.owner_id.as_str()).collect::<Vec<_>>())
        .bind(column(|r| r.balance))
        .bind(column(|r| r.deposits))
        .bind(column(|r| r.withdrawals))
        .bind(new_rows.iter().map(|r| r.count).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.last_transaction).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.version).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(new_rows.iter().map(|r| r.status.reason().map(|reason| reason.as_str())).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !changes.is_empty() {
        let ids: Vec<Uuid> = changes.iter().map(|c| c.account_id).collect();
        let column = |f: fn(&Change) -> Decimal| changes.iter().map(f).collect::<Vec<_>>();
        let updated: Vec<Uuid> = sqlx::query_scalar(&format!(
            "UPDATE {table} s
             SET current_balance = s.current_balance + c.deposits - c.withdrawals,
                 total_deposits = s.total_deposits + c.deposits,
                 total_withdrawals = s.total_withdrawals + c.withdrawals,
                 transaction_count = s.transaction_count + c.count,
                 last_transaction = c.last_transaction, version = c.version, last_position = c.position,
                 status = CASE WHEN c.status IS NOT NULL THEN c.status
                     WHEN c.reopen AND s.status = 'closed' THEN 'active' ELSE s.status END,
                 status_reason = CASE WHEN c.status IS NOT NULL THEN c.status_reason
                     WHEN c.reopen AND s.status = 'closed' THEN NULL ELSE s.status_reason END,
                 owner_id = CASE WHEN c.owner_forgotten THEN $12 ELSE s.owner_id END
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::bigint[], $5::timestamptz[],
                 $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::bool[], $11::bool[])
                 AS c(account_id, deposits, withdrawals, count, last_transaction, version, position, status,
                      status_reason, reopen, owner_forgotten)
             WHERE s.account_id = c.account_id
             RETURNING s.account_id"
        ))
        .bind(&ids)
        .bind(column(|c| c.deposits))
        .bind(column(|c| c.withdrawals))
        .bind(changes.iter().map(|c| c.count).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.last_transaction).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.version).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.position).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.status.as_ref().map(AccountStatus::as_str)).collect::<Vec<_>>())
        .bind(
            changes
                .iter()
                .map(|c| c.status.as_ref().and_then(AccountStatus::reason).map(|reason| reason.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(changes.iter().map(|c| c.reopen_if_closed).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.owner_forgotten).collect::<Vec<_>>())
        .bind(FORGOTTEN)
        .fetch_all(&mut *conn)
        .await?;
        if updated.len() != ids.len() {
            let change = changes.iter().find(|c| !updated.contains(&c.account_id)).expect("one is missing");
            let reason = NeverCreated { account_id: change.account_id, table: "account_summary" };
            return Err(ApplyError::Event { position: change.first_event, reason: Box::new(reason) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use bank::domain::{Amount, Money, OwnerId};

    /// `event` as the store would give it back: stream version and global position `n`.
    fn recorded(stream_id: Uuid, version: i64, n: i64, event: &AccountEvent) -> RecordedEvent {
        let new = event_codec::encode(event, &json!({}));
        RecordedEvent {
            global_position: n,
            transaction_id: 100 + n,
            event_id: new.event_id,
            stream_type: "account".into(),
            stream_id,
            stream_version: version,
            event_type: new.event_type,
            schema_version: new.schema_version,
            data: new.data,
            metadata: new.metadata,
            recorded_at: datetime!(2026-11-30 12:00 UTC) + time::Duration::seconds(n),
        }
    }

    fn created(balance: Decimal) -> AccountEvent {
        AccountEvent::AccountCreated {
            owner_id: OwnerId::parse("alice").unwrap(),
            initial_balance: Money::try_from(balance).unwrap(),
        }
    }

    fn deposited(amount: Decimal) -> AccountEvent {
        AccountEvent::MoneyDeposited { amount: Amount::try_from(amount).unwrap() }
    }

    fn withdrawn(amount: Decimal) -> AccountEvent {
        AccountEvent::MoneyWithdrawn { amount: Amount::try_from(amount).unwrap() }
    }

    #[test]
    fn an_account_opened_in_the_batch_becomes_one_whole_row() {
        let id = Uuid::new_v4();
        let events = [
            recorded(id, 1, 1, &created(dec!(100))),
            recorded(id, 2, 2, &deposited(dec!(50.25))),
            recorded(id, 3, 3, &withdrawn(dec!(20))),
        ];
        let batch = fold(&events).unwrap();
        assert!(batch.changes.is_empty());
        let [row] = batch.new_rows.as_slice() else { panic!("one row: {batch:?}") };
        assert_eq!((row.balance, row.deposits, row.withdrawals), (dec!(130.25), dec!(150.25), dec!(20)));
        assert_eq!((row.count, row.version, row.position), (3, 3, 3));
        assert_eq!(row.created_at, events[0].recorded_at);
        assert_eq!(row.last_transaction, events[2].recorded_at);
    }

    #[test]
    fn accounts_opened_before_get_increments_in_the_order_they_first_appear() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            recorded(b, 4, 10, &deposited(dec!(5))),
            recorded(a, 7, 11, &withdrawn(dec!(1))),
            recorded(b, 5, 12, &withdrawn(dec!(2))),
        ];
        let batch = fold(&events).unwrap();
        assert!(batch.new_rows.is_empty());
        let ids: Vec<Uuid> = batch.changes.iter().map(|c| c.account_id).collect();
        assert_eq!(ids, vec![b, a]);
        let change = &batch.changes[0];
        assert_eq!((change.deposits, change.withdrawals, change.count), (dec!(5), dec!(2), 2));
        assert_eq!((change.version, change.position, change.first_event), (5, 12, events[0].position()));
    }

    #[test]
    fn a_forgotten_owner_is_no_longer_named_by_an_account_opened_before() {
        let id = Uuid::new_v4();
        let events = [recorded(id, 4, 10, &deposited(dec!(5))), recorded(id, 5, 11, &AccountEvent::OwnerForgotten)];
        let batch = fold(&events).unwrap();
        let [change] = batch.changes.as_slice() else { panic!("one change: {batch:?}") };
        assert!(change.owner_forgotten);
        assert_eq!((change.deposits, change.count, change.version, change.status.clone()), (dec!(5), 2, 5, None));

        let untouched = fold(&events[..1]).unwrap();
        assert!(!untouched.changes[0].owner_forgotten);
    }

    #[test]
    fn an_account_opened_and_forgotten_in_one_batch_never_names_its_owner() {
        let id = Uuid::new_v4();
        let events = [
            recorded(id, 1, 1, &created(dec!(10))),
            recorded(id, 2, 2, &withdrawn(dec!(10))),
            recorded(id, 3, 3, &AccountEvent::AccountClosed),
            recorded(id, 4, 4, &AccountEvent::OwnerForgotten),
        ];
        let batch = fold(&events).unwrap();
        let [row] = batch.new_rows.as_slice() else { panic!("one row: {batch:?}") };
        assert_eq!(row.owner_id, FORGOTTEN);
        assert_eq!((row.status.clone(), row.balance, row.count, row.version), (AccountStatus::Closed, dec!(0), 4, 4));
    }

    #[test]
    fn a_key_missing_from_the_cache_is_retried_not_taken_for_an_unreadable_event() {
        let id = Uuid::new_v4();
        let mut sealed = recorded(id, 1, 1, &created(dec!(1)));
        // Sealed with a key no one loaded: the batch is tried again once it is.
        sealed.data["ownerId"] = json!({"keyId": Uuid::new_v4(), "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": "AAAA"});
        let error = fold(&[sealed]).unwrap_err();
        assert!(
            matches!(&error, ApplyError::Database(error) if eventstore::projection::is_transient(error)),
            "{error}"
        );
    }

    #[test]
    fn an_unreadable_event_stops_the_batch_at_it() {
        let id = Uuid::new_v4();
        let mut unreadable = recorded(id, 2, 2, &deposited(dec!(1)));
        unreadable.data = json!({"amount": "lots"});
        let error = fold(&[recorded(id, 1, 1, &created(dec!(1))), unreadable.clone()]).unwrap_err();
        assert!(matches!(error, ApplyError::Event { position, .. } if position == unreadable.position()), "{error}");
    }
}
