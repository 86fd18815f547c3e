//! The runner of an outside projection: a leader's steps, each a batch applied there with a
//! compare-and-set of the store's checkpoint, then the Postgres checkpoint following it.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    CompareAndSet, ExternalBatch, ExternalError, ExternalProjection, ExternalStepError, LogPlace, StoredCheckpoint,
};
use crate::projection::leadership::{Leadership, Steps};
use crate::projection::partitions::{self, Partition, PartitionShare};
use crate::projection::{Progress, control};
use crate::{LogBatch, Position, ProjectionState, RecordedEvent, read_partition_batch};

/// Runs one outside projection in this instance whenever this instance leads it.
pub struct ExternalProjectionRunner<X> {
    pool: PgPool,
    projection: X,
    wake: watch::Receiver<u64>,
    instance: String,
    batch_size: i64,
    idle_poll: Duration,
    epoch: Option<i64>,
    /// The store's checkpoint as this leadership last found it in the log, or wrote it: one
    /// not looked up again.
    checked: std::sync::Mutex<Option<StoredCheckpoint>>,
    /// The part of the log this runner applies: all of it, or one partition's streams.
    partition: Partition,
    /// The Postgres checkpoint row it follows and leads: the projection's, or its partition's.
    name: String,
    /// For a partition: this instance's share of the projection's partitions.
    share: Option<std::sync::Arc<PartitionShare>>,
}

impl<X: ExternalProjection> ExternalProjectionRunner<X> {
    /// As [`super::ProjectionRunner::new`].
    pub fn new(pool: PgPool, projection: X, wake: watch::Receiver<u64>, instance: impl Into<String>) -> Self {
        ExternalProjectionRunner {
            pool,
            projection,
            wake,
            instance: instance.into(),
            batch_size: 500,
            idle_poll: Duration::from_secs(1),
            epoch: None,
            checked: std::sync::Mutex::new(None),
            partition: Partition::WHOLE,
            name: X::NAME.to_owned(),
            share: None,
        }
    }

    /// Applies only `partition`'s streams, led while this instance's `share` allows (as
    /// [`crate::ProjectionRunner::partition`]).
    pub fn partition(mut self, partition: Partition, share: std::sync::Arc<PartitionShare>) -> Self {
        assert!(X::PARTITIONABLE || partition.count == 1, "{} cannot be partitioned", X::NAME);
        self.name = partition.checkpoint_name(X::NAME);
        self.partition = partition;
        self.share = Some(share);
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

    /// Leads the projection whenever no other instance does, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut leadership =
            Leadership::new(self.pool.clone(), self.wake.clone(), self.instance.clone(), self.idle_poll);
        if let Some(share) = &self.share {
            leadership = leadership.sharing(share.clone(), self.partition.index);
        }
        leadership.run(&mut self, shutdown).await;
    }

    /// One step, as the leader takes it: notices a store that lost its data (or an operator's
    /// rebuild) and starts over, else applies the next batch.
    pub async fn run_step(&self) -> Result<Progress, ExternalStepError> {
        let name = self.name.as_str();
        match self.try_step().await {
            Ok(progress) => {
                match self.projection.warning().await {
                    Some(why) => control::note_stopped(&self.pool, name, &why).await?,
                    None => control::clear_stopped(&self.pool, name).await?,
                }
                Ok(progress)
            }
            Err(ExternalStepError::RebuildStopped(error)) => {
                let error = ExternalStepError::RebuildStopped(error);
                control::note_stopped(&self.pool, name, &error.to_string()).await?;
                Err(error)
            }
            Err(ExternalStepError::Store(error)) => {
                // Shown on the status until a step goes through: the store may be down for long.
                control::note_stopped(&self.pool, name, &format!("read store unavailable: {error}")).await?;
                Err(ExternalStepError::Store(error))
            }
            Err(error) => Err(error),
        }
    }

    async fn try_step(&self) -> Result<Progress, ExternalStepError> {
        let name = self.name.as_str();
        let steering = control::steering(&self.pool, name).await?;
        if steering.state == ProjectionState::Failed {
            return Ok(Progress::CaughtUp);
        }
        // Nothing to project from an empty log (and nothing to compare a store with).
        let Some(identity) = crate::log_identity(&self.pool).await? else {
            return Ok(Progress::CaughtUp);
        };
        let log = if X::PARTITIONABLE {
            // Another instance changed the partition count (and the store's partitions with it).
            let Some(history) = self.history_in_force(&identity.to_string()).await? else {
                return Ok(Progress::NotLeading);
            };
            history
        } else {
            identity.to_string()
        };
        let stored = match self.projection.checkpoint(self.partition).await {
            Ok(stored) => stored,
            Err(ExternalError::Lost(why)) => {
                return self.start_over(&log, &format!("the read store lost data: {why}")).await;
            }
            Err(error) => return Err(ExternalStepError::Store(error)),
        };
        let reached = control::checkpoint(&self.pool, name).await?;
        let rebuilding = match steering.state {
            ProjectionState::Rebuilding => control::rebuild_started(&self.pool, name).await?,
            _ => false,
        };
        if let Some(why) = self.another_history(stored.as_ref(), &log).await? {
            tracing::warn!(projection = name, why, "rebuilding the read store");
            return self.start_over(&log, &why).await;
        }
        let stored_at = stored.as_ref().map(|stored| stored.at);
        if steering.state == ProjectionState::Rebuilding && !rebuilding {
            return self.start_over(&log, "an operator asked for a rebuild").await;
        }
        if steering.state != ProjectionState::Rebuilding {
            let stored = stored_at.map(|at| at.position);
            if control::missed_between(&self.pool, name, X::EVENT_TYPES, self.partition, stored, reached).await? {
                tracing::warn!(projection = name, ?stored, %reached, "the read store lost data; rebuilding it");
                return self
                    .start_over(&log, "the read store lost data (its checkpoint is missing or went back)")
                    .await;
            }
        }
        match self.batch(&log, stored_at, rebuilding.then_some(reached)).await {
            Err(ExternalStepError::Lost(why)) => {
                tracing::warn!(projection = name, why, "the read store lost data; rebuilding it");
                self.start_over(&log, &format!("the read store lost data: {why}")).await
            }
            stepped => stepped,
        }
    }

    /// Why the store's checkpoint is not of this history of the log (`log`), if it is not: it
    /// names another, or the event at its position is not the one it names. Looked up once per
    /// leadership and checkpoint: what this leadership wrote is of this history.
    async fn another_history(
        &self,
        stored: Option<&StoredCheckpoint>,
        log: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let Some(stored) = stored else { return Ok(None) };
        if stored.log != log {
            return Ok(Some(format!(
                "the read store was built from another history of the log ({}; this one is {log})",
                stored.log
            )));
        }
        if self.checked.lock().expect("never poisoned").as_ref() == Some(stored) {
            return Ok(None);
        }
        let found = crate::event_at(&self.pool, stored.at.position).await?;
        if found != stored.at.event {
            return Ok(Some(format!(
                "the log has no event {} at the read store's checkpoint {}: it was built from a history the database \
                 no longer has (a restore, a point-in-time recovery, a standby that missed commits)",
                stored.at.event.map_or_else(|| "-".to_owned(), |event| event.to_string()),
                stored.at.position
            )));
        }
        *self.checked.lock().expect("never poisoned") = Some(stored.clone());
        Ok(None)
    }

    /// Clears the store and rebuilds it from the first event, up to where the Postgres
    /// checkpoint row says it had got; the status says `why`.
    async fn start_over(&self, log: &str, why: &str) -> Result<Progress, ExternalStepError> {
        let name = self.name.as_str();
        // Only a leader clears: a former one could otherwise empty its successor's work. (For
        // one that pauses between this check and the clear, the store's clear is fenced by the
        // epoch and stops once a new build has begun.)
        if !control::leads_now(&self.pool, name, self.epoch).await? {
            return Ok(Progress::NotLeading);
        }
        let epoch = self.epoch.unwrap_or(0);
        self.projection.clear(self.partition, epoch, log).await.map_err(ExternalStepError::Store)?;
        *self.checked.lock().expect("never poisoned") = None;
        if !control::start_external_rebuild(&self.pool, name, self.epoch, why).await? {
            return Ok(Progress::NotLeading);
        }
        let reached = control::checkpoint(&self.pool, name).await?;
        self.batch(log, None, Some(reached)).await
    }

    /// The next batch after `stored`; during a rebuild (`until`: where the store was) never past
    /// it, ending the rebuild once it gets there.
    async fn batch(
        &self,
        log: &str,
        stored: Option<LogPlace>,
        until: Option<Position>,
    ) -> Result<Progress, ExternalStepError> {
        let name = self.name.as_str();
        let Window { events, to, reached, read } = match self.window(stored, until).await? {
            Ok(window) => window,
            Err(progress) => return Ok(progress),
        };
        if !control::leads_now(&self.pool, name, self.epoch).await? {
            return Ok(Progress::NotLeading);
        }
        let rebuilding = until.is_some() && !reached;
        let epoch = self.epoch.unwrap_or(0);
        let batch =
            ExternalBatch { partition: self.partition, log, from: stored, to, events: &events, rebuilding, epoch };
        let (applied, stop) = self.apply_up_to_a_culprit(&batch).await?;
        if let Some(Stop { position, error, kept, count }) = stop {
            if let (CompareAndSet::Applied, Some(kept)) = (applied, kept) {
                self.wrote(log, kept);
                self.follow(kept.position, count, until.is_some()).await?;
            }
            if until.is_some() {
                // A failure is recorded past the checkpoint only, and a rebuild is behind it:
                // the status says why it does not go on, and it tries again (as after a fix).
                return Err(ExternalStepError::RebuildStopped(error));
            }
            control::fail(&self.pool, name, self.epoch, position, &error).await?;
            return Ok(Progress::CaughtUp);
        }
        if applied == CompareAndSet::CheckpointMoved {
            // Another leader applied it meanwhile; this one reads again from where the store is.
            return Ok(Progress::Applied(0));
        }
        self.wrote(log, to);
        self.follow(to.position, events.len(), until.is_some()).await?;
        if reached && until.is_some() {
            control::end_external_rebuild(&self.pool, name, self.epoch).await?;
            tracing::info!(projection = name, "the read store is rebuilt");
        }
        Ok(Progress::Applied(read))
    }

    /// The events after `stored` that the next batch applies (never past `until`, skipped ones
    /// left out) and where it ends; or, with nothing to apply, the progress to report.
    async fn window(
        &self,
        stored: Option<LogPlace>,
        until: Option<Position>,
    ) -> Result<Result<Window, Progress>, ExternalStepError> {
        let from = stored.unwrap_or(LogPlace::START);
        let LogBatch { mut events, read, read_to, read_to_event } =
            read_partition_batch(&self.pool, from.position, self.batch_size, X::EVENT_TYPES, self.partition).await?;
        let mut end = read_to.map(|position| LogPlace { position, event: read_to_event });
        let mut reached = false;
        if let Some(until) = until {
            events.retain(|event| event.position() <= until);
            // Every event up to `until` is committed and visible: the store had applied them.
            if read_to.is_some_and(|read_to| read_to > until) || read < self.batch_size as usize {
                reached = true;
                end = Some(if until > from.position {
                    LogPlace { position: until, event: crate::event_at(&self.pool, until).await? }
                } else {
                    from
                });
            }
        }
        let to = match end.filter(|end| end.position > from.position) {
            Some(to) => to,
            // Nothing to apply, but a rebuild that has got back may have to say so.
            None if reached => from,
            None => {
                let held_back = crate::projection::runner::has_events_after(&self.pool, from.position).await?;
                return Ok(Err(if held_back { Progress::HeldBack } else { Progress::CaughtUp }));
            }
        };
        let mut conn = self.pool.acquire().await?;
        let positions: Vec<i64> = events.iter().map(|event| event.global_position).collect();
        let skipped = control::skipped_among(&mut conn, &self.name, &positions).await?;
        events.retain(|event| !skipped.contains(&event.global_position));
        Ok(Ok(Window { events, to, reached, read }))
    }

    /// Applies `batch`; if the store cannot apply one of its events, applies what comes before
    /// that event and says where it stopped and why.
    async fn apply_up_to_a_culprit(
        &self,
        batch: &ExternalBatch<'_>,
    ) -> Result<(CompareAndSet, Option<Stop>), ExternalStepError> {
        let (position, reason) = match self.projection.apply(batch).await {
            Ok(applied) => return Ok((applied, None)),
            Err(ExternalError::Event { position, reason }) => (position, reason),
            Err(ExternalError::Lost(why)) => return Err(ExternalStepError::Lost(why)),
            Err(error) => return Err(ExternalStepError::Store(error)),
        };
        let before: Vec<RecordedEvent> =
            batch.events.iter().filter(|event| event.position() < position).cloned().collect();
        let kept = before.last().map(|last| LogPlace { position: last.position(), event: Some(last.event_id) });
        let applied = match kept {
            Some(to) => {
                let before_culprit = ExternalBatch { to, events: &before, ..*batch };
                self.projection.apply(&before_culprit).await.map_err(ExternalStepError::Store)?
            }
            None => CompareAndSet::CheckpointMoved,
        };
        let event_type = batch.events.iter().find(|event| event.position() == position).map(|e| e.event_type.as_str());
        let error = format!("{} at {position}: {reason}", event_type.unwrap_or("event"));
        tracing::error!(projection = self.name, %error, "projection stopped at an event it cannot apply");
        Ok((applied, Some(Stop { position, error, kept, count: before.len() })))
    }

    /// The history the store is built in ([`crate::projection::store_history`]: the log's
    /// `identity` and the generation of the partition count in force), if that count is this
    /// runner's. A count never recorded is one, of no generation.
    async fn history_in_force(&self, identity: &str) -> Result<Option<String>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(match partitions::recorded_generation(&mut conn, X::NAME).await? {
            Some((count, generation)) => (count == self.partition.count).then(|| format!("{identity}#{generation}")),
            None => (self.partition.count == 1).then(|| identity.to_owned()),
        })
    }

    /// This leadership moved the store's checkpoint to `to`, of the history `log`.
    fn wrote(&self, log: &str, to: LogPlace) {
        *self.checked.lock().expect("never poisoned") = Some(StoredCheckpoint { log: log.to_owned(), at: to });
    }

    /// Moves the Postgres checkpoint row after the store's (or, during a rebuild, the
    /// rebuild's progress).
    async fn follow(&self, to: Position, applied: usize, rebuilding: bool) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let name = self.name.as_str();
        if rebuilding {
            control::advance(&mut conn, &control::rebuild_checkpoint_name(name), to, applied).await?;
        } else {
            control::advance(&mut conn, name, to, applied).await?;
        }
        Ok(())
    }
}

impl<X: ExternalProjection> Steps for ExternalProjectionRunner<X> {
    type Error = ExternalStepError;

    fn name(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> i64 {
        self.batch_size
    }

    fn led_with(&mut self, epoch: Option<i64>) {
        self.epoch = epoch;
        // A new leadership looks at the store afresh: the database may have been restored or
        // failed over meanwhile.
        *self.checked.lock().expect("never poisoned") = None;
    }

    async fn step(&mut self) -> Result<Progress, ExternalStepError> {
        self.run_step().await
    }
}

/// What the next batch applies: its events, where it ends, whether a rebuild reaches where the
/// store was, and how many events were read for it.
struct Window {
    events: Vec<RecordedEvent>,
    to: LogPlace,
    reached: bool,
    read: usize,
}

/// Where a batch stopped at an event the store cannot apply: the event's position, why, the
/// last event applied before it, and how many were.
struct Stop {
    position: Position,
    error: String,
    kept: Option<LogPlace>,
    count: usize,
}
