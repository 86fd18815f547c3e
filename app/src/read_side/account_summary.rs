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

use crate::domain::AccountEvent;
use crate::event_codec;

pub const PROJECTION_NAME: &str = "account_summary";

pub struct AccountSummaryProjection;

/// A whole row, for an account opened in this batch.
struct NewRow {
    account_id: Uuid,
    owner_id: String,
    balance: Decimal,
    deposits: Decimal,
    withdrawals: Decimal,
    count: i64,
    last_transaction: OffsetDateTime,
    created_at: OffsetDateTime,
    version: i64,
    position: i64,
}

/// What this batch adds to an account opened before it.
struct Change {
    first_event: Position,
    deposits: Decimal,
    withdrawals: Decimal,
    count: i64,
    last_transaction: OffsetDateTime,
    version: i64,
    position: i64,
}

/// Decodes an event for a projection; an unreadable one stops the projection at it.
pub(super) fn decode(event: &RecordedEvent) -> Result<AccountEvent, ApplyError> {
    event_codec::decode(event)
        .map_err(|error| ApplyError::Event { position: event.position(), reason: error.to_string() })
}

impl Projection for AccountSummaryProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["account_summary"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        let mut new_rows: Vec<NewRow> = Vec::new();
        let mut new_index: HashMap<Uuid, usize> = HashMap::new();
        let mut changes: HashMap<Uuid, Change> = HashMap::new();
        for event in events {
            let id = event.stream_id;
            let (deposit, withdrawal) = match decode(event)? {
                // As in the seed, the initial balance counts as the first deposit.
                AccountEvent::AccountCreated { owner_id, initial_balance } => {
                    new_index.insert(id, new_rows.len());
                    new_rows.push(NewRow {
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
                    });
                    continue;
                }
                AccountEvent::MoneyDeposited { amount } => (amount.value(), Decimal::ZERO),
                AccountEvent::MoneyWithdrawn { amount } => (Decimal::ZERO, amount.value()),
            };
            if let Some(&index) = new_index.get(&id) {
                let row = &mut new_rows[index];
                row.balance += deposit - withdrawal;
                row.deposits += deposit;
                row.withdrawals += withdrawal;
                row.count += 1;
                (row.last_transaction, row.version, row.position) =
                    (event.recorded_at, event.stream_version, event.global_position);
            } else {
                let change = changes.entry(id).or_insert(Change {
                    first_event: event.position(),
                    deposits: Decimal::ZERO,
                    withdrawals: Decimal::ZERO,
                    count: 0,
                    last_transaction: event.recorded_at,
                    version: 0,
                    position: 0,
                });
                change.deposits += deposit;
                change.withdrawals += withdrawal;
                change.count += 1;
                (change.last_transaction, change.version, change.position) =
                    (event.recorded_at, event.stream_version, event.global_position);
            }
        }

        let table = target.table("account_summary");
        if !new_rows.is_empty() {
            let column = |f: fn(&NewRow) -> Decimal| new_rows.iter().map(f).collect::<Vec<_>>();
            sqlx::query(&format!(
                "INSERT INTO {table} (account_id, owner_id, current_balance, total_deposits, total_withdrawals,
                     transaction_count, last_transaction, created_at, version, last_position)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],
                     $6::bigint[], $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::bigint[])"
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
            .execute(&mut *conn)
            .await?;
        }
        if !changes.is_empty() {
            let (ids, changes): (Vec<Uuid>, Vec<Change>) = changes.into_iter().unzip();
            let column = |f: fn(&Change) -> Decimal| changes.iter().map(f).collect::<Vec<_>>();
            let updated: Vec<Uuid> = sqlx::query_scalar(&format!(
                "UPDATE {table} s
                 SET current_balance = s.current_balance + c.deposits - c.withdrawals,
                     total_deposits = s.total_deposits + c.deposits,
                     total_withdrawals = s.total_withdrawals + c.withdrawals,
                     transaction_count = s.transaction_count + c.count,
                     last_transaction = c.last_transaction, version = c.version, last_position = c.position
                 FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::bigint[], $5::timestamptz[],
                     $6::bigint[], $7::bigint[]) AS c(account_id, deposits, withdrawals, count, last_transaction, version, position)
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
            .fetch_all(&mut *conn)
            .await?;
            if updated.len() != ids.len() {
                let (id, change) =
                    ids.iter().zip(&changes).find(|(id, _)| !updated.contains(id)).expect("one is missing");
                return Err(ApplyError::Event {
                    position: change.first_event,
                    reason: format!("account {id} has no account_summary row: it was never created"),
                });
            }
        }
        Ok(())
    }
}
