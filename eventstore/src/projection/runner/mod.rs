//! Running one projection: leadership (a lease), batches, failures, rebuilds.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod rebuild;

use super::control;
use super::leadership::{Leadership, Steps};
use super::partitions::{self, Partition, PartitionShare};
use super::{ApplyError, Projection, ProjectionError, Target, is_transient};
use crate::checkpoint_watch::CheckpointWatch;
use crate::{LogBatch, Position, ProjectionState, RecordedEvent, read_partition_batch};

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Went past this many events of the log: applied, or passed by as not the projection's.
    Applied(usize),
    /// Nothing to apply: the projection has read every committed event.
    CaughtUp,
    /// Nothing can be applied yet: later events exist, but a transaction still running — in
    /// any database of the cluster — may yet commit events that sort before them.
    HeldBack,
    /// Another instance leads the projection now; this one must stop.
    NotLeading,
    /// A rebuild is ready to swap, but someone held an exclusive lock on the live tables: try
    /// again shortly.
    SwapPending,
}

/// Every batch's transaction. A projection's commit need not wait for the disk: a crash can
/// only lose whole batches, read-model writes and checkpoint together, and those are simply
/// applied again. (Commands, whose answers promise durability, never do this.) A batch whose
/// process stops answering mid-way (paused, cut off) is ended by Postgres instead of holding
/// the checkpoint row, and with it the next leader, indefinitely.
const BEGIN_BATCH: &str =
    "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL idle_in_transaction_session_timeout = '3s'";

/// How long the live tables, then a rebuild's shadow, may run before the other's turn: each
/// keeps up with the log, and the live tables lag by at most one turn of the shadow.
const REBUILD_TURN: Duration = Duration::from_millis(200);
/// How soon a swap that found the live tables busy is tried again.
pub(super) const SWAP_RETRY: Duration = Duration::from_millis(100);

/// Runs one projection in this instance whenever this instance leads it.
pub struct ProjectionRunner<P> {
    pool: PgPool,
    projection: P,
    wake: watch::Receiver<u64>,
    instance: String,
    batch_size: i64,
    idle_poll: Duration,
    checkpoints: Option<CheckpointWatch>,
    /// The epoch of this instance's leadership, while it leads; batches run without one (tests)
    /// are not fenced.
    epoch: Option<i64>,
    /// The part of the log this runner applies: all of it, or one partition's streams.
    partition: Partition,
    /// The checkpoint row it advances and leads: the projection's, or its partition's.
    checkpoint_name: String,
    /// For a partition: this instance's share of the projection's partitions.
    share: Option<Arc<PartitionShare>>,
}

impl<P: Projection> ProjectionRunner<P> {
    /// `wake` changes whenever events may have been appended (see [`crate::AppendNotifier`]), so the
    /// projection follows within milliseconds; the idle poll is the fallback for lost wake-ups.
    /// `instance` names this server instance in the projection's status.
    pub fn new(pool: PgPool, projection: P, wake: watch::Receiver<u64>, instance: impl Into<String>) -> Self {
        ProjectionRunner {
            pool,
            wake,
            instance: instance.into(),
            batch_size: 500,
            idle_poll: Duration::from_secs(1),
            checkpoints: None,
            epoch: None,
            partition: Partition::WHOLE,
            checkpoint_name: P::NAME.to_owned(),
            share: None,
            projection,
        }
    }

    /// Applies only `partition`'s streams, led while this instance's `share` allows.
    pub fn partition(mut self, partition: Partition, share: Arc<PartitionShare>) -> Self {
        self.checkpoint_name = partition.checkpoint_name(P::NAME);
        self.partition = partition;
        self.share = Some(share);
        self
    }

    /// Tells `checkpoints` of every committed batch of the live tables, so that queries waiting
    /// for the read model (here and, through it, in other processes) look again at once.
    pub fn publish_checkpoints(mut self, checkpoints: CheckpointWatch) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    pub fn batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size;
        self
    }

    pub fn idle_poll(mut self, idle_poll: Duration) -> Self {
        self.idle_poll = idle_poll;
        self
    }

    /// Leads the projection whenever no other instance does, until `shutdown`. On shutdown the
    /// batch in flight finishes and leadership is released at once for another instance.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut leadership =
            Leadership::new(self.pool.clone(), self.wake.clone(), self.instance.clone(), self.idle_poll);
        if let Some(share) = &self.share {
            leadership = leadership.sharing(share.clone(), self.partition.index);
        }
        leadership.run(&mut self, shutdown).await;
    }

    /// One step of the leader: what the projection's state asks for.
    async fn next_step(&self) -> Result<Progress, sqlx::Error> {
        let steering = control::steering(&self.pool, self.checkpoint_name.as_str()).await?;
        match steering.state {
            // Stopped at an event until an operator retries or skips it.
            ProjectionState::Failed => Ok(Progress::CaughtUp),
            ProjectionState::Running => self.settle(Target::LIVE, self.run_batch().await).await,
            ProjectionState::Rebuilding => {
                // The live tables stay where a failure stopped them; the rebuild goes up to there.
                let live = if steering.live_failed { Progress::CaughtUp } else { self.live_turn().await? };
                // The shadow gets more turns than the live tables, so that it gains on them
                // whatever the write rate the projection can follow; the live ones lag by at
                // most one such turn.
                let turn = tokio::time::Instant::now() + REBUILD_TURN;
                let mut shadow = Progress::CaughtUp;
                loop {
                    let (progress, reached) = match self.run_rebuild_batch().await {
                        Ok((progress, reached)) => (Ok(progress), reached),
                        Err(error) => (Err(error), true),
                    };
                    shadow = match (shadow, self.settle(Target::REBUILD, progress).await?) {
                        (Progress::Applied(a), Progress::Applied(b)) => Progress::Applied(a + b),
                        (_, latest) => latest,
                    };
                    if reached || !matches!(shadow, Progress::Applied(_)) || tokio::time::Instant::now() >= turn {
                        break;
                    }
                }
                Ok(match (live, shadow) {
                    (Progress::NotLeading, _) | (_, Progress::NotLeading) => Progress::NotLeading,
                    (_, Progress::SwapPending) => Progress::SwapPending,
                    (Progress::Applied(a), Progress::Applied(b)) => Progress::Applied(a.max(b)),
                    (Progress::Applied(n), _) | (_, Progress::Applied(n)) => Progress::Applied(n),
                    (Progress::HeldBack, _) => Progress::HeldBack,
                    _ => Progress::CaughtUp,
                })
            }
        }
    }

    /// Live batches while they come full, for at most one turn: during a rebuild, the live
    /// tables keep up with the log between the shadow's turns.
    async fn live_turn(&self) -> Result<Progress, sqlx::Error> {
        let turn = tokio::time::Instant::now() + REBUILD_TURN;
        let mut total = 0;
        loop {
            match self.settle(Target::LIVE, self.run_batch().await).await? {
                Progress::Applied(applied) => {
                    total += applied;
                    if (applied as i64) < self.batch_size || tokio::time::Instant::now() >= turn {
                        return Ok(Progress::Applied(total));
                    }
                }
                other if total == 0 => return Ok(other),
                Progress::NotLeading => return Ok(Progress::NotLeading),
                _ => return Ok(Progress::Applied(total)),
            }
        }
    }

    /// Turns a poison error into the projection's failed state; database errors go up.
    async fn settle(&self, target: Target, batch: Result<Progress, ProjectionError>) -> Result<Progress, sqlx::Error> {
        match batch {
            Ok(progress) => Ok(progress),
            Err(ProjectionError::Database(error)) => Err(error),
            Err(ProjectionError::Poison { position, event_type, reason }) => {
                let name = self.checkpoint_name.as_str();
                let error = format!("{event_type} at {position}: {reason}");
                if target == Target::LIVE {
                    tracing::error!(projection = name, %error, "projection stopped at an event it cannot apply");
                    control::fail(&self.pool, name, self.epoch, position, &error).await?;
                } else {
                    tracing::error!(projection = name, %error, "rebuild stopped at an event it cannot apply");
                    control::abort_rebuild(&self.pool, name, self.epoch, P::TABLES, &error).await?;
                }
                Ok(Progress::CaughtUp)
            }
        }
    }

    /// Applies the next batch of the live tables.
    ///
    /// The events are read before anything in the transaction takes a transaction id (locking
    /// a row does): a reader's own id counts as running in its snapshot, and would hold back the
    /// events of every transaction that started after it until the next batch. The checkpoint
    /// is then locked and checked, so that two runners can never apply the same batch.
    pub async fn run_batch(&self) -> Result<Progress, ProjectionError> {
        Ok(self.batch(self.checkpoint_name.as_str(), Target::LIVE, None).await?.0)
    }

    /// One batch of `checkpoint_name`'s events into `target`, at most up to `until` (a
    /// rebuild's shadow stops at the live checkpoint). Returns what it did and whether the
    /// checkpoint has reached `until`.
    async fn batch(
        &self,
        checkpoint_name: &str,
        target: Target,
        until: Option<Position>,
    ) -> Result<(Progress, bool), ProjectionError> {
        let mut tx = self.pool.begin_with(BEGIN_BATCH).await?;
        let checkpoint = control::checkpoint(&mut *tx, checkpoint_name).await?;
        let LogBatch { mut events, read, read_to, .. } =
            read_partition_batch(&mut *tx, checkpoint, self.batch_size, P::EVENT_TYPES, self.partition).await?;
        // Where the checkpoint ends up: the last event read past (wanted or not), or `until`
        // once every event up to it has been read (events at or before the live checkpoint are
        // all committed and visible, since the live tables read them).
        let mut end = read_to;
        let mut reached = false;
        if let Some(until) = until {
            events.retain(|event| event.position() <= until);
            if read_to.is_some_and(|read_to| read_to > until) || read < self.batch_size as usize {
                reached = true;
                end = Some(until);
            }
            // The events an operator skipped in the live tables are skipped here too.
            let positions: Vec<i64> = events.iter().map(|event| event.global_position).collect();
            let skipped = control::skipped_among(&mut tx, self.checkpoint_name.as_str(), &positions).await?;
            events.retain(|event| !skipped.contains(&event.global_position));
        }
        let Some(end) = end.filter(|end| *end > checkpoint) else {
            let held_back = until.is_none() && has_events_after(&mut *tx, checkpoint).await?;
            // Explicitly: a transaction merely dropped is rolled back only when its connection
            // is next used.
            tx.rollback().await?;
            return Ok((if held_back { Progress::HeldBack } else { Progress::CaughtUp }, reached));
        };
        // The count first: a change of count locks it before the checkpoint rows, in that order.
        if !self.count_in_force(&mut tx).await?
            || !control::leads(&mut tx, self.checkpoint_name.as_str(), self.epoch).await?
        {
            tx.rollback().await?;
            return Ok((Progress::NotLeading, false));
        }
        if control::lock_checkpoint(&mut tx, checkpoint_name).await? != checkpoint {
            // Another runner applied a batch meanwhile; this one is stale.
            tx.rollback().await?;
            return Ok((Progress::Applied(0), false));
        }
        if !events.is_empty()
            && let Err(error) = self.projection.apply(&mut tx, &events, &target).await
        {
            tx.rollback().await?;
            return Ok((self.after_failed_batch(checkpoint_name, target, events, error).await?, false));
        }
        control::advance(&mut tx, checkpoint_name, end, events.len()).await?;
        tx.commit().await?;
        self.announce(target, end);
        Ok((Progress::Applied(read), reached))
    }

    /// A batch failed. A transient error is retried as a whole; otherwise the events are applied
    /// one per transaction, so that those before the culprit are kept and the culprit is named.
    async fn after_failed_batch(
        &self,
        checkpoint_name: &str,
        target: Target,
        events: Vec<RecordedEvent>,
        error: ApplyError,
    ) -> Result<Progress, ProjectionError> {
        let error = match error {
            ApplyError::Database(error) if is_transient(&error) => return Err(ProjectionError::Database(error)),
            error => error,
        };
        if events.len() == 1 {
            return Err(poison(&events[0], error));
        }
        let mut applied = 0;
        for event in &events {
            let mut tx = self.pool.begin_with(BEGIN_BATCH).await?;
            if !self.count_in_force(&mut tx).await?
                || !control::leads(&mut tx, self.checkpoint_name.as_str(), self.epoch).await?
            {
                tx.rollback().await?;
                return Ok(Progress::NotLeading);
            }
            if control::lock_checkpoint(&mut tx, checkpoint_name).await? >= event.position() {
                tx.rollback().await?;
                continue;
            }
            if let Err(error) = self.projection.apply(&mut tx, std::slice::from_ref(event), &target).await {
                tx.rollback().await?;
                return match error {
                    ApplyError::Database(error) if is_transient(&error) => Err(ProjectionError::Database(error)),
                    error => Err(poison(event, error)),
                };
            }
            control::advance(&mut tx, checkpoint_name, event.position(), 1).await?;
            tx.commit().await?;
            self.announce(target, event.position());
            applied += 1;
        }
        // Every event passed on its own: the batch failed for a reason that has gone.
        Ok(Progress::Applied(applied))
    }

    /// Whether the projection is still split as this runner splits it (a partitionable one only:
    /// another instance may have changed the count, and emptied the tables, meanwhile). Holds
    /// the recorded count until the transaction ends.
    async fn count_in_force(&self, conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
        if !P::PARTITIONABLE {
            return Ok(true);
        }
        Ok(partitions::recorded_count(conn, P::NAME).await? == self.partition.count)
    }

    fn announce(&self, target: Target, checkpoint: Position) {
        if let (Some(checkpoints), Target::LIVE) = (&self.checkpoints, target) {
            checkpoints.advanced(self.checkpoint_name.as_str(), checkpoint);
        }
    }
}

fn poison(event: &RecordedEvent, error: ApplyError) -> ProjectionError {
    let reason = match error {
        ApplyError::Event { reason, .. } => reason.to_string(),
        ApplyError::Database(error) => error.to_string(),
    };
    ProjectionError::Poison { position: event.position(), event_type: event.event_type.clone(), reason }
}

/// Whether any event, visible or held back, follows `position`.
///
/// The first event after it, in index order, rather than `EXISTS`: Postgres guesses that a
/// third of the rows pass a row comparison, so for `EXISTS` it scanned the table from its
/// start — the whole log, every time a caught-up projection looked (10–30 ms at 80,000 events,
/// against 0.1 ms), which made this the busiest query of a loaded server.
pub(super) async fn has_events_after(conn: impl sqlx::PgExecutor<'_>, position: Position) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT global_position FROM events
                 WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                 ORDER BY transaction_id, global_position LIMIT 1) IS NOT NULL",
    )
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .fetch_one(conn)
    .await
}

impl<P: Projection> Steps for ProjectionRunner<P> {
    type Error = sqlx::Error;

    fn name(&self) -> &str {
        &self.checkpoint_name
    }

    fn batch_size(&self) -> i64 {
        self.batch_size
    }

    fn led_with(&mut self, epoch: Option<i64>) {
        self.epoch = epoch;
    }

    async fn step(&mut self) -> Result<Progress, sqlx::Error> {
        self.next_step().await
    }
}
