//! The `account_summary` projection: one row per account with the seed's columns.

use eventstore::{Projection, ProjectionError, RecordedEvent};
use sqlx::PgConnection;

use crate::domain::AccountEvent;
use crate::event_codec;

pub const PROJECTION_NAME: &str = "account_summary";

pub struct AccountSummaryProjection;

impl Projection for AccountSummaryProjection {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let unreadable = |reason: String| ProjectionError::Unreadable {
            position: event.position(),
            event_type: event.event_type.clone(),
            reason,
        };
        let decoded = event_codec::decode(event).map_err(|e| unreadable(e.to_string()))?;
        let updated = match decoded {
            // As in the seed, the initial balance counts as the first deposit.
            AccountEvent::AccountCreated { owner_id, initial_balance } => sqlx::query(
                "INSERT INTO account_summary (account_id, owner_id, current_balance, total_deposits,
                     total_withdrawals, transaction_count, last_transaction, created_at, version, last_position)
                 VALUES ($1, $2, $3, $3, 0, 1, $4, $4, $5, $6)",
            )
            .bind(event.stream_id)
            .bind(owner_id.as_str())
            .bind(initial_balance.value())
            .bind(event.recorded_at)
            .bind(event.stream_version)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await?,
            AccountEvent::MoneyDeposited { amount } => sqlx::query(
                "UPDATE account_summary
                 SET current_balance = current_balance + $2, total_deposits = total_deposits + $2,
                     transaction_count = transaction_count + 1, last_transaction = $3,
                     version = $4, last_position = $5
                 WHERE account_id = $1",
            )
            .bind(event.stream_id)
            .bind(amount.value())
            .bind(event.recorded_at)
            .bind(event.stream_version)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await?,
            AccountEvent::MoneyWithdrawn { amount } => sqlx::query(
                "UPDATE account_summary
                 SET current_balance = current_balance - $2, total_withdrawals = total_withdrawals + $2,
                     transaction_count = transaction_count + 1, last_transaction = $3,
                     version = $4, last_position = $5
                 WHERE account_id = $1",
            )
            .bind(event.stream_id)
            .bind(amount.value())
            .bind(event.recorded_at)
            .bind(event.stream_version)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await?,
        };
        if updated.rows_affected() != 1 {
            return Err(unreadable(format!("no account_summary row for account {}", event.stream_id)));
        }
        Ok(())
    }
}
