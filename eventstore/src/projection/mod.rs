//! Projections: read models built from the global log, each with its own checkpoint.
//!
//! - A batch is one transaction: read the next events after the checkpoint, apply them, advance
//!   the checkpoint. A crash mid-batch rolls all of it back, so a read model is always exactly
//!   the fold of the events up to its checkpoint: nothing applied twice, nothing lost, without
//!   asking projections to be idempotent.
//! - Any number of server instances may run the same projections; one instance at a time leads
//!   each projection, by a session advisory lock held on a connection of its own and a lease it
//!   renews every second. A leader whose lease runs out (paused, cut off) is fenced off: its
//!   session is ended and the next leader's epoch stops any batch it tries later. Each batch
//!   also locks the checkpoint row and checks it did not move, so even two leaders cannot apply
//!   a batch twice.
//! - An event a projection cannot apply stops that projection only, at that event, until an
//!   operator retries (after a fix) or skips it (recorded in `skipped_events`, and skipped by
//!   rebuilds too).
//! - A rebuild fills shadow tables from the start while the live tables keep serving, then
//!   swaps them in one transaction as soon as they reach the live checkpoint.

mod control;
mod external;
mod leadership;
mod monitor;
mod partitions;
mod runner;

use std::future::Future;

use sqlx::PgConnection;

use crate::{Position, RecordedEvent};

pub use control::{
    HEARTBEAT, LEASE, LeverError, LeverRefusal, PulledBy, behind_the_log, checkpoint, checkpoints, led_by,
    recent_levers, request_rebuild, retry, skip_failed_event,
};
pub use external::{
    CLEARING_LOG, CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, ExternalProjectionRunner,
    ExternalStepError, LogPlace, StoredCheckpoint,
};
pub use monitor::{StatusCache, status};
pub use partitions::{AdoptError, MAX_PARTITIONS, Partition, PartitionShare, adopt_count, store_history};
pub use runner::{Progress, ProjectionRunner};

/// A read model built from the global log.
pub trait Projection: Send + Sync + 'static {
    /// Names the checkpoint; a new name builds the projection from the start.
    const NAME: &'static str;

    /// The tables the projection writes; a rebuild replaces them all at once.
    const TABLES: &'static [&'static str];

    /// The event types the projection reads; it is never shown others (another aggregate's),
    /// and its checkpoint passes them by.
    const EVENT_TYPES: &'static [&'static str];

    /// Whether the projection may be split into partitions by stream: true only if applying an
    /// event reads and writes nothing but its own stream's rows, so that partitions applying
    /// different streams at once can never meet (see [`run_partitioned`]).
    const PARTITIONABLE: bool = false;

    /// Applies `events`, in order, inside the batch's transaction, to the tables `target` names.
    fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        target: &Target,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Which copy of a projection's tables a batch writes: the live ones, or the shadow copies a
/// rebuild fills (`<table>_rebuild`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    suffix: &'static str,
}

/// The checkpoint row a rebuild of `name` advances.
pub(crate) fn rebuild_checkpoint_name(name: &str) -> String {
    format!("{name}#rebuild")
}

/// The suffix of a rebuild's shadow copy of a table.
pub(crate) const REBUILD_SUFFIX: &str = "_rebuild";

impl Target {
    pub const LIVE: Target = Target { suffix: "" };
    pub const REBUILD: Target = Target { suffix: REBUILD_SUFFIX };

    /// The physical name of `table` in this copy.
    pub fn table(&self, table: &str) -> String {
        format!("{table}{}", self.suffix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An event this projection cannot apply: unreadable, or at odds with the read tables.
    #[error("event at {position} cannot be applied: {reason}")]
    Event { position: Position, reason: Box<dyn std::error::Error + Send + Sync> },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Retrying will not help: the projection stops at this event.
    #[error("event at {position} ({event_type}) cannot be applied: {reason}")]
    Poison { position: Position, event_type: String, reason: String },
    /// The database was unreachable or busy; the batch is retried.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether `error` says the database cannot serve right now (a retry may succeed) rather than
/// that a statement is wrong (a retry will fail the same way).
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 28: the login is refused; 3D000: no such database;
            // 40: serialization failure or deadlock; 53: out of resources (disk, memory,
            // connections); 55000: the database does not accept connections; 55P03: a lock wait
            // ran out of time; 57: operator intervention (shutdown, cancel, restart).
            ["08", "28", "40", "53", "57"].iter().any(|class| code.starts_with(class))
                || ["3D000", "55000", "55P03"].contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// Runs `projection` in this instance split into `count` partitions (one: unsplit, as
/// [`ProjectionRunner`] alone), each led by one instance at a time, this instance taking its
/// fair share. A count other than the one in force is refused unless `may_change`; then it
/// empties the read tables and applies the log again from its first event (see
/// [`adopt_count`]). Returns the tasks, which end at `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run_partitioned<P: Projection + Clone>(
    pool: &sqlx::PgPool,
    projection: P,
    count: u32,
    may_change: bool,
    appends: &crate::AppendNotifier,
    checkpoints: &crate::CheckpointWatch,
    instance: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AdoptError> {
    assert!(P::PARTITIONABLE || count == 1, "{} cannot be partitioned", P::NAME);
    assert!((1..=MAX_PARTITIONS).contains(&count), "a partition count is 1 to {MAX_PARTITIONS}");
    if !P::PARTITIONABLE {
        let runner = ProjectionRunner::new(pool.clone(), projection, appends.subscribe(), instance)
            .publish_checkpoints(checkpoints.clone());
        return Ok(vec![tokio::spawn(runner.run(shutdown.clone()))]);
    }
    adopt_count(pool, P::NAME, P::TABLES, count, may_change).await?;
    let share = std::sync::Arc::new(PartitionShare::new(P::NAME, count));
    partitions::join(pool, instance, &share).await?;
    let mut tasks = vec![partitions::spawn_membership(pool, instance, &share, shutdown)];
    for partition in Partition::all(count) {
        let runner = ProjectionRunner::new(pool.clone(), projection.clone(), appends.subscribe(), instance)
            .publish_checkpoints(checkpoints.clone())
            .partition(partition, share.clone());
        tasks.push(tokio::spawn(runner.run(shutdown.clone())));
    }
    Ok(tasks)
}

/// As [`run_partitioned`], for a projection into an outside store: each partition a runner of its
/// own, with its own checkpoint in the store. A count change starts every partition from the
/// first event (the store must keep each count's partitions apart, so that the new ones start
/// empty: see [`ExternalProjection::PARTITIONABLE`]).
pub async fn run_external_partitioned<X: ExternalProjection + Clone>(
    pool: &sqlx::PgPool,
    projection: X,
    count: u32,
    may_change: bool,
    appends: &crate::AppendNotifier,
    instance: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AdoptError> {
    assert!(X::PARTITIONABLE || count == 1, "{} cannot be partitioned", X::NAME);
    assert!((1..=MAX_PARTITIONS).contains(&count), "a partition count is 1 to {MAX_PARTITIONS}");
    if !X::PARTITIONABLE {
        let runner = ExternalProjectionRunner::new(pool.clone(), projection, appends.subscribe(), instance);
        return Ok(vec![tokio::spawn(runner.run(shutdown.clone()))]);
    }
    let retired = partitions::adopt_count_from(pool, X::NAME, &[], count, may_change).await?;
    let share = std::sync::Arc::new(PartitionShare::new(X::NAME, count));
    partitions::join(pool, instance, &share).await?;
    let mut tasks = vec![partitions::spawn_membership(pool, instance, &share, shutdown)];
    if let Some(before) = retired {
        tasks.push(tokio::spawn(retire(pool.clone(), projection.clone(), before, shutdown.clone())));
    }
    for partition in Partition::all(count) {
        let runner = ExternalProjectionRunner::new(pool.clone(), projection.clone(), appends.subscribe(), instance)
            .partition(partition, share.clone());
        tasks.push(tokio::spawn(runner.run(shutdown.clone())));
    }
    Ok(tasks)
}

/// Removes what an outside store keeps of the `partitions` of a count no longer in force, as a
/// Postgres projection's tables are emptied, trying again until it is done or `shutdown`. Nothing
/// reads them (they are of an older generation: [`store_history`]), so a store that cannot do it
/// now only keeps them longer.
async fn retire<X: ExternalProjection>(
    pool: sqlx::PgPool,
    projection: X,
    partitions: u32,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        // Asked each time: the same count may have been adopted again meanwhile, and its new
        // partitions are not to be removed.
        let attempt = async {
            let current = store_history(&pool, X::NAME).await.map_err(|error| ExternalError::Store(error.into()))?;
            projection.retire(partitions, current.as_deref()).await
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => {
                tracing::info!(projection = X::NAME, partitions, "the old count's partitions are removed");
                return;
            }
            Err(error) => {
                tracing::warn!(projection = X::NAME, %error, partitions, "the old partitions are not removed yet")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}
