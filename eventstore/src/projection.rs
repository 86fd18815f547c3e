//! Running a projection: reading the global log from a checkpoint and applying it to read tables.
//!
//! Each batch is one transaction that locks the projection's checkpoint row, reads the next
//! events, applies them and advances the checkpoint. A crash mid-batch rolls all of it back, so
//! the read model is always exactly the fold of the events up to its checkpoint: no event is
//! applied twice and none is lost, without asking projections to be idempotent.

use std::future::Future;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Position, RecordedEvent, read_all_after};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at {position} ({event_type}) cannot be applied: {reason}")]
    Unreadable { position: Position, event_type: String, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A read model built from the global log.
pub trait Projection: Send + Sync + 'static {
    /// Names the checkpoint; renaming it rebuilds the projection from the start.
    fn name(&self) -> &'static str;

    /// Applies one event inside the batch's transaction.
    fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Applied this many events.
    Applied(usize),
    /// Nothing to apply: the projection has read every committed event.
    CaughtUp,
    /// Nothing can be applied yet: later events exist, but a transaction still running — in
    /// any database of the cluster — may yet commit events that sort before them.
    HeldBack,
}

/// Drives one projection until cancelled.
pub struct ProjectionRunner<P> {
    pool: PgPool,
    projection: P,
    wake: watch::Receiver<u64>,
    batch_size: i64,
    idle_poll: Duration,
}

impl<P: Projection> ProjectionRunner<P> {
    /// `wake` changes whenever events may have been appended (see [`crate::Appends`]), so the
    /// projection follows within milliseconds; the idle poll is the fallback for lost wake-ups.
    pub fn new(pool: PgPool, projection: P, wake: watch::Receiver<u64>) -> Self {
        ProjectionRunner { pool, projection, wake, batch_size: 500, idle_poll: Duration::from_secs(1) }
    }

    pub fn batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size;
        self
    }

    pub fn idle_poll(mut self, idle_poll: Duration) -> Self {
        self.idle_poll = idle_poll;
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.projection.name();
        let mut failures = 0u32;
        let mut held_back = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let pause = match self.run_batch().await {
                Ok(Progress::Applied(applied)) if applied as i64 == self.batch_size => {
                    (failures, held_back) = (0, 0);
                    continue;
                }
                Ok(Progress::Applied(_) | Progress::CaughtUp) => {
                    (failures, held_back) = (0, 0);
                    self.idle_poll
                }
                // No wake-up will come when the blocking transaction ends: look again soon,
                // less often the longer it lasts.
                Ok(Progress::HeldBack) => {
                    held_back = held_back.saturating_add(1);
                    Duration::from_millis(5 * 2u64.pow(held_back.min(7))).min(self.idle_poll)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::error!(projection = name, %error, ?backoff, "projection batch failed; retrying");
                    backoff
                }
            };
            let wake = &mut self.wake;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Err: nobody can wake us any more; the sleep still does.
                Ok(()) = wake.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(projection = name, "projection stopped");
    }

    /// Applies the next batch and returns how many events it applied.
    ///
    /// The events are read before anything in the transaction takes a transaction id (locking
    /// a row does): a reader's own id counts as running in its snapshot, and would hold back the
    /// events of every transaction that started after it until the next batch. The checkpoint
    /// is then locked and checked, so that two runners can never apply the same batch.
    pub async fn run_batch(&self) -> Result<Progress, ProjectionError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        let checkpoint = checkpoint(&mut *tx, name).await?;
        let events = read_all_after(&mut *tx, checkpoint, self.batch_size).await?;
        let Some(last) = events.last() else {
            let held_back = has_events_after(&mut *tx, checkpoint).await?;
            // Explicitly: a transaction merely dropped is rolled back only when its connection
            // is next used.
            tx.rollback().await?;
            return Ok(if held_back { Progress::HeldBack } else { Progress::CaughtUp });
        };
        if lock_checkpoint(&mut tx, name).await? != checkpoint {
            // Another runner applied a batch meanwhile; this one is stale.
            tx.rollback().await?;
            return Ok(Progress::Applied(0));
        }
        for event in &events {
            self.projection.apply(&mut tx, event).await?;
        }
        sqlx::query(
            "UPDATE projection_checkpoints
             SET transaction_id = $2::text::xid8, global_position = $3, updated_at = clock_timestamp()
             WHERE projection_name = $1",
        )
        .bind(name)
        .bind(last.transaction_id.to_string())
        .bind(last.global_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Progress::Applied(events.len()))
    }
}

/// Reads the checkpoint and locks it until the transaction ends, creating it on first use.
async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query("INSERT INTO projection_checkpoints (projection_name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position
         FROM projection_checkpoints WHERE projection_name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Position { transaction_id, global_position })
}

/// Whether any event, visible or held back, follows `position`.
async fn has_events_after(conn: &mut PgConnection, position: Position) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE (transaction_id, global_position) > ($1::text::xid8, $2))",
    )
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .fetch_one(conn)
    .await
}

/// Where a projection has read up to; [`Position::START`] if it never ran.
pub async fn checkpoint(executor: impl sqlx::PgExecutor<'_>, name: &str) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position
         FROM projection_checkpoints WHERE projection_name = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    Ok(row.map_or(Position::START, |(transaction_id, global_position)| Position { transaction_id, global_position }))
}
