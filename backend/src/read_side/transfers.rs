//! The `transfers` projection: one row per transfer with how far it got and when each step
//! happened — what an account page's transfers list and timeline read, for both sides.
//!
//! It reads the accounts' `OwnerForgotten` too: a transfer names who requested it, always the
//! source account's owner, and a forgotten owner's name goes from their transfers.

use eventstore::{Aggregate, ApplyError, Projection, RecordedEvent, Target};
use sqlx::PgConnection;

use super::account_summary::{decode, key_error, load_keys, unreadable};
use crate::account_store::Account;
use crate::event_codec;
use bank::domain::{AccountEvent, FORGOTTEN, TransferEvent};

pub const PROJECTION_NAME: &str = "transfers";

/// The account event this projection reads.
const OWNER_FORGOTTEN: &str = "OwnerForgotten";

#[derive(Debug, Clone, Copy)]
pub struct TransfersProjection;

impl Projection for TransfersProjection {
    const NAME: &'static str = PROJECTION_NAME;
    const TABLES: &'static [&'static str] = &["transfers"];
    /// The transfers' events, and the one account event that changes a transfer's row.
    const EVENT_TYPES: &'static [&'static str] = &[
        TransferEvent::TYPES[0],
        TransferEvent::TYPES[1],
        TransferEvent::TYPES[2],
        TransferEvent::TYPES[3],
        TransferEvent::TYPES[4],
        TransferEvent::TYPES[5],
        OWNER_FORGOTTEN,
    ];

    /// One statement per event: a transfer has at most six, and most batches are small.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        let table = target.table("transfers");
        load_keys(&mut *conn, events).await.map_err(key_error)?;
        for event in events {
            if event.stream_type == Account::STREAM_TYPE {
                // `OwnerForgotten` (the only account event read): the name goes from the transfers
                // the owner requested, which are those from their account.
                if matches!(decode(event)?, AccountEvent::OwnerForgotten) {
                    sqlx::query(&format!("UPDATE {table} SET requested_by = $2 WHERE from_account = $1"))
                        .bind(event.stream_id)
                        .bind(FORGOTTEN)
                        .execute(&mut *conn)
                        .await?;
                }
                continue;
            }
            let decoded = event_codec::decode_transfer(event).map_err(|error| unreadable(event, error))?;
            let (set, reason) = match &decoded {
                TransferEvent::TransferRequested(terms) => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (transfer_id, from_account, to_account, amount, requested_by, state,
                             requested_at, deadline, version, last_position)
                         VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7, $8, $9)"
                    ))
                    .bind(event.stream_id)
                    .bind(terms.from)
                    .bind(terms.to)
                    .bind(terms.amount.value())
                    .bind(terms.requested_by.as_str())
                    .bind(event.recorded_at)
                    .bind(terms.deadline)
                    .bind(event.stream_version)
                    .bind(event.global_position)
                    .execute(&mut *conn)
                    .await?;
                    continue;
                }
                TransferEvent::SourceDebited => ("state = 'debited', debited_at = $4", None),
                TransferEvent::TargetCredited => ("credited_at = $4", None),
                TransferEvent::TransferCompleted => ("state = 'completed', finished_at = $4", None),
                TransferEvent::SourceRefunded { reason } => ("refunded_at = $4, reason = $5", Some(reason)),
                TransferEvent::TransferFailed { reason } => {
                    ("state = 'failed', finished_at = $4, reason = $5", Some(reason))
                }
            };
            let updated = sqlx::query(&format!(
                "UPDATE {table} SET {set}, version = $2, last_position = $3 WHERE transfer_id = $1"
            ))
            .bind(event.stream_id)
            .bind(event.stream_version)
            .bind(event.global_position)
            .bind(event.recorded_at)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
            if updated.rows_affected() != 1 {
                let reason = format!("transfer {} has no row: it was never requested", event.stream_id);
                return Err(ApplyError::Event { position: event.position(), reason: reason.into() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_every_transfer_event_and_an_account_s_owner_forgotten() {
        let types = TransfersProjection::EVENT_TYPES;
        assert!(TransferEvent::TYPES.iter().all(|kind| types.contains(kind)), "{types:?}");
        assert_eq!(types.len(), TransferEvent::TYPES.len() + 1);
        assert_eq!(AccountEvent::OwnerForgotten.event_type(), OWNER_FORGOTTEN);
    }
}
