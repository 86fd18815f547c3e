//! The transfer process as a projection of the log: what wakes it, and its checkpoint.

use eventstore::Position;
use eventstore::projection::{
    CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, LogPlace, Partition, StoredCheckpoint,
};
use uuid::Uuid;

use super::process::{PROCESS_NAME, TransferProcess};
use bank::domain::TransferEvent;

/// The transfer process as a projection of the log: the events that wake it are a transfer's
/// request and its debit; its checkpoint is a row of its own, moved by compare-and-set.
impl ExternalProjection for TransferProcess {
    const NAME: &'static str = PROCESS_NAME;
    // A transfer's request is all that wakes it: the checkpoint passes the request only once the
    // transfer went as far as it could, so a transfer cut short (a crash, an error) is woken
    // again by its request. Its later events need no wake-up of their own.
    const EVENT_TYPES: &'static [&'static str] = TransferEvent::TYPES.split_at(1).0;

    async fn checkpoint(&self, _: Partition) -> Result<Option<StoredCheckpoint>, ExternalError> {
        let row: Option<(String, i64, i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT log, transaction_id, global_position, event FROM transfer_process_checkpoint WHERE log IS NOT NULL",
        )
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(row.map(|(log, transaction_id, global_position, event)| StoredCheckpoint {
            log,
            at: LogPlace { position: Position { transaction_id, global_position }, event },
        }))
    }

    async fn apply(&self, batch: &ExternalBatch<'_>) -> Result<CompareAndSet, ExternalError> {
        let mut transfers: Vec<Uuid> = batch.events.iter().map(|event| event.stream_id).collect();
        transfers.sort_unstable();
        transfers.dedup();
        self.advance_all(transfers).await.map_err(store_error)?;
        // Every transfer of the batch went as far as it can: the checkpoint may pass them.
        let from = batch.from.unwrap_or(LogPlace::START).position;
        let moved = sqlx::query(
            "INSERT INTO transfer_process_checkpoint AS c (singleton, log, transaction_id, global_position, event, fence)
             VALUES (true, $1, $4, $5, $8, $6)
             ON CONFLICT (singleton) DO UPDATE
                 SET log = $1, transaction_id = $4, global_position = $5, event = $8, fence = GREATEST(c.fence, $6)
                 WHERE c.fence <= $6 AND (($7 AND c.log IS NULL)
                     OR (c.log = $1 AND c.transaction_id = $2 AND c.global_position = $3))",
        )
        .bind(batch.log)
        .bind(from.transaction_id)
        .bind(from.global_position)
        .bind(batch.to.position.transaction_id)
        .bind(batch.to.position.global_position)
        .bind(batch.epoch)
        .bind(batch.from.is_none())
        .bind(batch.to.event)
        .execute(&self.inner.pool)
        .await
        .map_err(store_error)?;
        Ok(if moved.rows_affected() == 1 { CompareAndSet::Applied } else { CompareAndSet::CheckpointMoved })
    }

    /// Starting over means waking every transfer again from the first event: finished ones
    /// need nothing, so they cost a read each.
    async fn clear(&self, _: Partition, epoch: i64, _log: &str) -> Result<(), ExternalError> {
        // The checkpoint lives in the same database as the log: its fence goes with the history.
        let refused: Option<i64> = sqlx::query_scalar(
            "WITH cleared AS (
                 UPDATE transfer_process_checkpoint SET log = NULL, transaction_id = 0, global_position = 0,
                     event = NULL, fence = GREATEST(fence, $1)
                 WHERE fence <= $1 RETURNING 1)
             SELECT fence FROM transfer_process_checkpoint WHERE NOT EXISTS (SELECT 1 FROM cleared)",
        )
        .bind(epoch)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(store_error)?;
        match refused {
            Some(fence) => Err(ExternalError::Store(
                format!("the checkpoint's fence ({fence}) refuses epoch {epoch}: a later leader has written").into(),
            )),
            None => Ok(()),
        }
    }
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> ExternalError {
    ExternalError::Store(Box::new(error))
}
