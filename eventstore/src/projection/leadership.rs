//! Leading a projection: one instance at a time, by a session advisory lock and a lease with a
//! fencing epoch. Whatever a projection writes to — Postgres tables or a store outside — its
//! leader takes over, renews, steps and lets go the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Progress;
use super::control::{self, HEARTBEAT};
use super::partitions::PartitionShare;

/// How often an instance that does not lead asks whether it can.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// What a leader does, one step at a time, while it leads.
pub(super) trait Steps: Send {
    type Error: std::fmt::Display + Send;

    /// The name of the checkpoint row it leads (a partition's, for a partitioned projection).
    fn name(&self) -> &str;

    /// The most events one step applies: a full step is followed at once by the next.
    fn batch_size(&self) -> i64;

    /// The epoch of this instance's leadership, while it leads (`None` once it stops).
    fn led_with(&mut self, epoch: Option<i64>);

    fn step(&mut self) -> impl Future<Output = Result<Progress, Self::Error>> + Send;
}

/// Takes and keeps the leadership of one projection for one instance.
pub(super) struct Leadership {
    pool: PgPool,
    wake: watch::Receiver<u64>,
    instance: String,
    idle_poll: Duration,
    /// The connection a standby asks for leadership on, kept between its tries.
    standby: Option<PgConnection>,
    /// For one partition of a partitioned projection: this instance's share of them, and which
    /// partition this is.
    share: Option<(Arc<PartitionShare>, u32)>,
}

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
enum LeadError {
    #[error("another instance took the projection over")]
    Replaced,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Leadership {
    pub(super) fn new(pool: PgPool, wake: watch::Receiver<u64>, instance: String, idle_poll: Duration) -> Leadership {
        Leadership { pool, wake, instance, idle_poll, standby: None, share: None }
    }

    /// Leads partition `index` only while this instance's `share` of the partitions allows.
    pub(super) fn sharing(mut self, share: Arc<PartitionShare>, index: u32) -> Leadership {
        self.share = Some((share, index));
        self
    }

    /// Leads the projection whenever no other instance does, until `shutdown`. On shutdown the
    /// step in flight finishes and leadership is released at once for another instance.
    pub(super) async fn run(mut self, steps: &mut impl Steps, shutdown: CancellationToken) {
        let name = steps.name().to_owned();
        while !shutdown.is_cancelled() {
            let pause = match self.lead(steps, &shutdown).await {
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
        if let Some(standby) = self.standby.take() {
            let _ = standby.close().await;
        }
        tracing::info!(projection = name, instance = self.instance, "projection stopped");
    }

    /// Takes leadership if free (fencing off a leader whose lease ran out) and drives the
    /// projection until shutdown. `Ok(false)`: another instance leads. A partition is taken
    /// only within this instance's share, counted from before the try to the end of leading.
    async fn lead(&mut self, steps: &mut impl Steps, shutdown: &CancellationToken) -> Result<bool, LeadError> {
        let Some((share, index)) = self.share.clone() else {
            return self.lead_reserved(steps, shutdown).await;
        };
        if !share.reserve(index) {
            // Nothing to ask for while the share is full: no connection kept for it either
            // (else an instance would hold one per partition of every split projection).
            if let Some(standby) = self.standby.take() {
                let _ = standby.close().await;
            }
            return Ok(false);
        }
        let led = self.lead_reserved(steps, shutdown).await;
        share.release(index);
        led
    }

    async fn lead_reserved(&mut self, steps: &mut impl Steps, shutdown: &CancellationToken) -> Result<bool, LeadError> {
        let name = steps.name().to_owned();
        let name = name.as_str();
        // Its own connection, not a pooled one: a session lock taken on a pooled connection
        // would go back to the pool with it. A standby keeps it between its tries.
        let mut leader = match self.standby.take() {
            Some(connection) => connection,
            None => {
                let mut connection = PgConnection::connect_with(&self.pool.connect_options()).await?;
                control::configure_leader_connection(&mut connection).await?;
                connection
            }
        };
        let mut acquired = control::try_lock_leadership(&mut leader, name).await?;
        if !acquired && control::fence_expired_leader(&mut leader, name).await? {
            // The fenced session's lock goes with it, a moment after it is told to end.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                acquired = control::try_lock_leadership(&mut leader, name).await?;
                if acquired {
                    break;
                }
            }
        }
        if !acquired {
            // Refused with room for more: the leader gives it up if it leads more than its share.
            if let Some((share, index)) = &self.share {
                share.ask_for(*index);
            }
            self.standby = Some(leader);
            return Ok(false);
        }
        let partitioned = self.share.as_ref().map(|(share, _)| (share.projection(), share.count()));
        let Some(epoch) = control::claim(&mut leader, name, &self.instance, partitioned).await? else {
            // Split another way now: this instance's count is not in force.
            if let Some((share, _)) = &self.share {
                share.count_not_in_force();
            }
            let _ = control::unlock_leadership(&mut leader, name).await;
            self.standby = Some(leader);
            return Ok(false);
        };
        tracing::info!(projection = name, instance = self.instance, epoch, "leading the projection");
        steps.led_with(Some(epoch));
        let instance = self.instance.clone();
        // A lost lease stops the steps between two steps, never inside one: a step dropped while
        // sqlx's `begin` awaits its BEGIN leaves the pooled connection in a transaction nothing
        // ends (sqlx 0.8, transact-rs/sqlx#4393), whose id holds back every projection.
        let stop = shutdown.child_token();
        let renewing = async {
            let renewed = tokio::select! {
                renewed = renew_lease(&mut leader, name, &instance, epoch) => renewed,
                () = stop.cancelled() => Ok(()),
            };
            stop.cancel();
            renewed
        };
        let stepping = async {
            let applied = self.step_until(steps, &stop).await;
            stop.cancel();
            applied
        };
        let (renewed, applied) = tokio::join!(renewing, stepping);
        let led = renewed.and(applied);
        steps.led_with(None);
        if let Err(error) = &led {
            tracing::warn!(projection = name, instance = self.instance, %error, "stopped leading");
        }
        // Release at once (closing the connection would too) so that another instance need not
        // wait for this one's lease to run out.
        let _ = control::disown(&mut leader, name, &self.instance, epoch).await;
        let _ = control::unlock_leadership(&mut leader, name).await;
        let _ = leader.close().await;
        match led {
            Ok(()) | Err(LeadError::Replaced) => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// Steps until `stop` (shutdown, or the lease lost), which the step in flight finishes first.
    async fn step_until(&mut self, steps: &mut impl Steps, stop: &CancellationToken) -> Result<(), LeadError> {
        let name = steps.name().to_owned();
        let name = name.as_str();
        let (mut failures, mut held_back) = (0u32, 0u32);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // Another instance joined (this one leads more than its share) or the count changed.
            if let Some((share, index)) = &self.share
                && share.should_let_go(*index)
            {
                tracing::info!(projection = name, instance = self.instance, "letting the partition go");
                return Ok(());
            }
            let pause = match steps.step().await {
                Ok(Progress::NotLeading) => return Err(LeadError::Replaced),
                Ok(Progress::SwapPending) => {
                    (failures, held_back) = (0, 0);
                    super::runner::SWAP_RETRY
                }
                Ok(Progress::Applied(applied)) if applied as i64 >= steps.batch_size() => {
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
                _ = stop.cancelled() => return Ok(()),
                // Err: nobody can wake us any more; the sleep still does.
                Ok(()) = wake.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Renews the lease every [`HEARTBEAT`] until it fails or another instance has taken over.
async fn renew_lease(leader: &mut PgConnection, name: &str, instance: &str, epoch: i64) -> Result<(), LeadError> {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        if !control::heartbeat(&mut *leader, name, instance, epoch).await? {
            return Err(LeadError::Replaced);
        }
    }
}
