//! Running one projection: leadership, batches, failures, rebuilds.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::control::{self, ProjectionState};
use super::{ApplyError, Projection, ProjectionError, Target, is_transient};
use crate::{Position, RecordedEvent, read_all_after};

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

/// Every batch's transaction. A projection's commit need not wait for the disk: a crash can
/// only lose whole batches, read-model writes and checkpoint together, and those are simply
/// applied again. (Commands, whose answers promise durability, never do this.)
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// How often a leader proves its leadership connection alive and says so in the status.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often an instance that does not lead asks whether it can.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Runs one projection in this instance whenever this instance leads it.
pub struct ProjectionRunner<P> {
    pool: PgPool,
    projection: P,
    wake: watch::Receiver<u64>,
    instance: String,
    batch_size: i64,
    idle_poll: Duration,
    applied: Option<std::sync::Arc<watch::Sender<u64>>>,
}

impl<P: Projection> ProjectionRunner<P> {
    /// `wake` changes whenever events may have been appended (see [`crate::Appends`]), so the
    /// projection follows within milliseconds; the idle poll is the fallback for lost wake-ups.
    /// `instance` names this server instance in the projection's status.
    pub fn new(pool: PgPool, projection: P, wake: watch::Receiver<u64>, instance: impl Into<String>) -> Self {
        ProjectionRunner {
            pool,
            projection,
            wake,
            instance: instance.into(),
            batch_size: 500,
            idle_poll: Duration::from_secs(1),
            applied: None,
        }
    }

    /// Bumps `applied` after every committed batch of the live tables, so that queries in this
    /// process waiting for the read model to catch up look again at once.
    pub fn notify_applied(mut self, applied: std::sync::Arc<watch::Sender<u64>>) -> Self {
        self.applied = Some(applied);
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
        let name = self.projection.name();
        while !shutdown.is_cancelled() {
            let pause = match self.lead(&shutdown).await {
                Ok(true) => Duration::ZERO,
                Ok(false) => STANDBY_POLL,
                Err(error) => {
                    tracing::warn!(projection = name, %error, "leadership lost or not obtainable; retrying");
                    STANDBY_POLL
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(projection = name, instance = self.instance, "projection stopped");
    }

    /// Takes leadership if free and drives the projection until shutdown. `Ok(false)`: another
    /// instance leads. An error: the leadership connection failed.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<bool, sqlx::Error> {
        let name = self.projection.name();
        // Its own connection, not a pooled one: a session lock taken on a pooled connection
        // would go back to the pool with it.
        let mut leader = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('eventstore projection'), hashtext($1))")
            .bind(name)
            .fetch_one(&mut leader)
            .await?;
        if !acquired {
            leader.close().await?;
            return Ok(false);
        }
        tracing::info!(projection = name, instance = self.instance, "leading the projection");
        control::claim(&mut leader, name, &self.instance).await?;
        let driven = self.drive(&mut leader, shutdown).await;
        // Release at once (closing the connection would too) so that another instance need not
        // wait for this one's connection to time out.
        let _ = control::disown(&mut leader, name, &self.instance).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('eventstore projection'), hashtext($1))")
            .bind(name)
            .execute(&mut leader)
            .await;
        let _ = leader.close().await;
        driven.map(|()| true)
    }

    async fn drive(&mut self, leader: &mut PgConnection, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let name = self.projection.name();
        let mut heartbeat = Instant::now();
        let (mut failures, mut held_back) = (0u32, 0u32);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if heartbeat.elapsed() >= HEARTBEAT {
                control::heartbeat(leader, name, &self.instance).await?;
                heartbeat = Instant::now();
            }
            let pause = match self.step().await {
                Ok(Progress::Applied(applied)) if applied as i64 >= self.batch_size => {
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
                    tracing::warn!(projection = name, %error, ?backoff, "projection batch failed; retrying");
                    backoff
                }
            };
            let wake = &mut self.wake;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                // Err: nobody can wake us any more; the sleep still does.
                Ok(()) = wake.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One step of the leader: what the projection's state asks for.
    async fn step(&self) -> Result<Progress, sqlx::Error> {
        let name = self.projection.name();
        match control::state(&self.pool, name).await? {
            // Stopped at an event until an operator retries or skips it.
            ProjectionState::Failed => Ok(Progress::CaughtUp),
            ProjectionState::Running => self.settle(Target::LIVE, self.run_batch().await).await,
            ProjectionState::Rebuilding => {
                let live = self.settle(Target::LIVE, self.run_batch().await).await?;
                let shadow = self.settle(Target::REBUILD, self.run_rebuild_batch().await).await?;
                Ok(match (live, shadow) {
                    (Progress::Applied(a), Progress::Applied(b)) => Progress::Applied(a.max(b)),
                    (Progress::Applied(n), _) | (_, Progress::Applied(n)) => Progress::Applied(n),
                    (Progress::HeldBack, _) => Progress::HeldBack,
                    _ => Progress::CaughtUp,
                })
            }
        }
    }

    /// Turns a poison error into the projection's failed state; database errors go up.
    async fn settle(&self, target: Target, batch: Result<Progress, ProjectionError>) -> Result<Progress, sqlx::Error> {
        match batch {
            Ok(progress) => Ok(progress),
            Err(ProjectionError::Database(error)) => Err(error),
            Err(ProjectionError::Poison { position, event_type, reason }) => {
                let name = self.projection.name();
                let error = format!("{event_type} at {position}: {reason}");
                if target == Target::LIVE {
                    tracing::error!(projection = name, %error, "projection stopped at an event it cannot apply");
                    control::fail(&self.pool, name, position, &error).await?;
                } else {
                    tracing::error!(projection = name, %error, "rebuild stopped at an event it cannot apply");
                    control::abort_rebuild(&self.pool, name, self.projection.tables(), &error).await?;
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
        self.batch(self.projection.name(), Target::LIVE, None).await
    }

    /// Applies the next batch of a rebuild's shadow tables, never past the live checkpoint, and
    /// swaps the shadow tables in once they have caught up with it.
    async fn run_rebuild_batch(&self) -> Result<Progress, ProjectionError> {
        let name = self.projection.name();
        let tables = self.projection.tables();
        let shadow = control::rebuild_checkpoint_name(name);
        if !control::rebuild_started(&self.pool, name).await? {
            let started = control::start_rebuild(&self.pool, name, tables).await;
            self.give_up_rebuild_unless_transient(started).await?;
        }
        let live = control::checkpoint(&self.pool, name).await?;
        let progress = self.batch(&shadow, Target::REBUILD, Some(live)).await?;
        if matches!(progress, Progress::CaughtUp | Progress::Applied(0)) {
            let swapped = control::swap_rebuilt(&self.pool, name, tables).await;
            if self.give_up_rebuild_unless_transient(swapped).await? == Some(true) {
                tracing::info!(projection = name, "rebuilt projection swapped in");
            }
        }
        Ok(progress)
    }

    /// A rebuild step that failed for good (a table that cannot be copied or renamed) ends the
    /// rebuild, with the reason in the status; a transient failure is retried.
    async fn give_up_rebuild_unless_transient<T>(&self, result: Result<T, sqlx::Error>) -> Result<Option<T>, ProjectionError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) if is_transient(&error) => Err(error.into()),
            Err(error) => {
                let name = self.projection.name();
                tracing::error!(projection = name, %error, "rebuild stopped");
                control::abort_rebuild(&self.pool, name, self.projection.tables(), &error.to_string()).await?;
                Ok(None)
            }
        }
    }

    /// One batch of `checkpoint_name`'s events (at most up to `until`) into `target`.
    async fn batch(&self, checkpoint_name: &str, target: Target, until: Option<Position>) -> Result<Progress, ProjectionError> {
        let mut tx = self.pool.begin_with(BEGIN_BATCH).await?;
        let checkpoint = control::checkpoint(&mut *tx, checkpoint_name).await?;
        let mut events = read_all_after(&mut *tx, checkpoint, self.batch_size).await?;
        if let Some(until) = until {
            events.retain(|event| event.position() <= until);
        }
        let Some(last) = events.last() else {
            let held_back = until.is_none() && has_events_after(&mut tx, checkpoint).await?;
            // Explicitly: a transaction merely dropped is rolled back only when its connection
            // is next used.
            tx.rollback().await?;
            return Ok(if held_back { Progress::HeldBack } else { Progress::CaughtUp });
        };
        let last = last.position();
        if control::lock_checkpoint(&mut tx, checkpoint_name).await? != checkpoint {
            // Another runner applied a batch meanwhile; this one is stale.
            tx.rollback().await?;
            return Ok(Progress::Applied(0));
        }
        match self.projection.apply(&mut tx, &events, &target).await {
            Ok(()) => {}
            Err(error) => {
                tx.rollback().await?;
                return self.after_failed_batch(checkpoint_name, target, events, error).await;
            }
        }
        control::advance(&mut tx, checkpoint_name, last, events.len()).await?;
        tx.commit().await?;
        self.announce(target);
        Ok(Progress::Applied(events.len()))
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
            self.announce(target);
            applied += 1;
        }
        // Every event passed on its own: the batch failed for a reason that has gone.
        Ok(Progress::Applied(applied))
    }
}

impl<P: Projection> ProjectionRunner<P> {
    fn announce(&self, target: Target) {
        if let (Some(applied), Target::LIVE) = (&self.applied, target) {
            applied.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

fn poison(event: &RecordedEvent, error: ApplyError) -> ProjectionError {
    let reason = match error {
        ApplyError::Event { reason, .. } => reason,
        ApplyError::Database(error) => error.to_string(),
    };
    ProjectionError::Poison { position: event.position(), event_type: event.event_type.clone(), reason }
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
