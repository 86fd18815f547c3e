//! The `transfers` projection: one row per transfer with how far it got and when each step
//! happened — what an account page's transfers list and timeline read, for both sides.

use eventstore::{ApplyError, Projection, RecordedEvent, Target};
use sqlx::PgConnection;

use crate::event_codec;
use bank::domain::TransferEvent;

pub const PROJECTION_NAME: &str = "transfers";

#[derive(Debug, Clone, Copy)]
pub struct TransfersProjection;

impl Projection for TransfersProjection {
    const NAME: &'static str = PROJECTION_NAME;
    const TABLES: &'static [&'static str] = &["transfers"];
    const EVENT_TYPES: &'static [&'static str] = TransferEvent::TYPES;

    /// One statement per event: a transfer has at most six, and most batches are small.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> Result<(), ApplyError> {
        let table = target.table("transfers");
        for event in events {
            let decoded = event_codec::decode_transfer(event)
                .map_err(|error| ApplyError::Event { position: event.position(), reason: Box::new(error) })?;
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
