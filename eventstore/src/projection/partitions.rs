//! A projection split into partitions by a hash of the stream id, so that several instances
//! apply it in parallel.
//!
//! - Each partition is a projection of its own to the rest of the engine: its own checkpoint row
//!   (`<name>/<k>-of-<N>`), leader, lease, epoch, failure and levers. All of a stream's events
//!   are in one partition, in the log's order, so the read tables see each stream in order; a
//!   partition passes the other partitions' events by, so its checkpoint keeps up with the log.
//! - Readers see the least of the partitions' checkpoints (`projection_checkpoint(name)` in SQL,
//!   the [`crate::CheckpointWatch`] in process): everything up to it is applied.
//! - Every instance that runs the projection says so once a second (`projection_members`) and
//!   leads at most its fair share of the partitions: the count divided by the live members,
//!   rounded up. An instance that leads more than that (another joined) lets its highest
//!   partition go; one that leads fewer takes free ones (another left or died).
//! - The count is recorded (`projection_partitionings`). An instance started with another count
//!   empties the read tables and starts every partition from the first event: changing the count
//!   is a rebuild. Every batch checks the recorded count, so an instance still running the old
//!   count applies nothing more.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::control::{HEARTBEAT, LEASE};

/// The most partitions a projection may be split into.
pub const MAX_PARTITIONS: u32 = 64;

/// One of `count` partitions of a projection: the streams whose hash falls on `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    /// The whole log: an unpartitioned projection.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Every partition of a projection split `count` ways.
    pub fn all(count: u32) -> impl Iterator<Item = Partition> {
        (0..count).map(move |index| Partition { index, count })
    }

    /// The name of this partition's checkpoint row: the projection's own name when it is whole.
    pub fn checkpoint_name(&self, projection: &str) -> String {
        if self.count <= 1 { projection.to_owned() } else { format!("{projection}/{}-of-{}", self.index, self.count) }
    }

    /// The projection and partition a checkpoint name stands for, if it names a partition.
    pub fn parse_checkpoint_name(name: &str) -> Option<(&str, Partition)> {
        let (projection, partition) = name.rsplit_once('/')?;
        let (index, count) = partition.split_once("-of-")?;
        let partition = Partition { index: index.parse().ok()?, count: count.parse().ok()? };
        (partition.index < partition.count && partition.count > 1).then_some((projection, partition))
    }
}

/// How many partitions the instances running `projection` agreed on last (one if never split).
pub async fn recorded_count(conn: &mut PgConnection, projection: &str) -> Result<u32, sqlx::Error> {
    let count: Option<i32> =
        sqlx::query_scalar("SELECT partitions FROM projection_partitionings WHERE projection_name = $1 FOR KEY SHARE")
            .bind(projection)
            .fetch_optional(conn)
            .await?;
    Ok(count.map_or(1, |count| count as u32))
}

/// Why a partition count was not adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The projection runs split another way and changing that was not asked for: an instance
    /// started with a mistaken count must not empty the read tables.
    #[error(
        "{projection} is split into {recorded} partition(s), not {count}: start with that count, or allow the change \
         (which empties its tables and applies the log again)"
    )]
    CountInForce { projection: String, recorded: u32, count: u32 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Makes `count` the projection's partition count. If another count was in force (and
/// `may_change` allows it), the read `tables` are emptied and every checkpoint of the projection
/// goes, in one transaction: the new partitions apply the log from its first event. The count's
/// row, locked first, is the barrier: a batch of the old count in flight is waited for, and any
/// later one finds the count changed. A projection that never ran takes any count. Returns
/// whether the count changed.
pub async fn adopt_count(
    pool: &PgPool,
    projection: &str,
    tables: &[&str],
    count: u32,
    may_change: bool,
) -> Result<bool, AdoptError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eventstore partitioning'), hashtext($1))")
        .bind(projection)
        .execute(&mut *tx)
        .await?;
    let recorded: Option<i32> =
        sqlx::query_scalar("SELECT partitions FROM projection_partitionings WHERE projection_name = $1 FOR UPDATE")
            .bind(projection)
            .fetch_optional(&mut *tx)
            .await?;
    let ran: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1 OR starts_with(projection_name, $1 || '/'))",
    )
    .bind(projection)
    .fetch_one(&mut *tx)
    .await?;
    let in_force = recorded.map_or(1, |recorded| recorded as u32);
    let changed = in_force != count && ran;
    if changed && !may_change {
        return Err(AdoptError::CountInForce { projection: projection.to_owned(), recorded: in_force, count });
    }
    if changed {
        // The checkpoints before the tables: a batch of the old count that got its checkpoint
        // row before the count's lock was taken here is waited for.
        sqlx::query(
            "DELETE FROM projection_checkpoints
             WHERE projection_name = $1 OR projection_name = $1 || '#rebuild' OR starts_with(projection_name, $1 || '/')",
        )
        .bind(projection)
        .execute(&mut *tx)
        .await?;
        for table in tables {
            sqlx::query(&format!(r#"DELETE FROM "{table}""#)).execute(&mut *tx).await?;
            sqlx::query(&format!(r#"DROP TABLE IF EXISTS "{table}_rebuild""#)).execute(&mut *tx).await?;
        }
        tracing::warn!(
            projection,
            count,
            previous = recorded,
            "partition count changed: rebuilding from the first event"
        );
    }
    if in_force != count || recorded.is_none() {
        sqlx::query(
            "INSERT INTO projection_partitionings (projection_name, partitions) VALUES ($1, $2)
             ON CONFLICT (projection_name) DO UPDATE SET partitions = $2, changed_at = clock_timestamp()",
        )
        .bind(projection)
        .bind(count as i32)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// The partitions of one projection this instance leads, and how many it may lead.
#[derive(Debug)]
pub struct PartitionShare {
    projection: String,
    count: u32,
    led: Mutex<BTreeSet<u32>>,
    /// The count divided by the live members, rounded up; none until membership is known.
    fair: AtomicUsize,
    /// The recorded count is this instance's: otherwise it leads nothing.
    in_force: AtomicBool,
}

impl PartitionShare {
    pub fn new(projection: &str, count: u32) -> PartitionShare {
        PartitionShare {
            projection: projection.to_owned(),
            count,
            led: Mutex::new(BTreeSet::new()),
            fair: AtomicUsize::new(0),
            in_force: AtomicBool::new(false),
        }
    }

    pub(super) fn projection(&self) -> &str {
        &self.projection
    }

    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Another count is in force (found before the next membership round says so).
    pub(super) fn count_not_in_force(&self) {
        self.in_force.store(false, Ordering::Release);
    }

    /// Whether this instance may take one more partition.
    pub(super) fn may_take(&self) -> bool {
        self.in_force.load(Ordering::Acquire) && self.led().len() < self.fair.load(Ordering::Acquire)
    }

    /// Whether the leader of partition `index` here should let it go: the count changed, or
    /// this instance leads more than its share and this is its highest partition (one at a
    /// time, so that the others stay put).
    pub(super) fn should_let_go(&self, index: u32) -> bool {
        if !self.in_force.load(Ordering::Acquire) {
            return true;
        }
        let led = self.led();
        led.len() > self.fair.load(Ordering::Acquire) && led.last() == Some(&index)
    }

    pub(super) fn leads(&self, index: u32, leads: bool) {
        let mut led = self.led();
        if leads {
            led.insert(index);
        } else {
            led.remove(&index);
        }
    }

    /// The partitions this instance leads now.
    pub fn led_here(&self) -> Vec<u32> {
        self.led().iter().copied().collect()
    }

    fn led(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.led.lock().expect("never poisoned")
    }

    /// What the last membership round found: how many members run this count, the count in
    /// force, and whether some partition has gone unled for longer than a leader may take to
    /// come (then any member may take it, beyond its share: a member counted but unable to lead
    /// must not leave its share unled).
    fn learned(&self, live_members: u32, recorded: u32, orphaned: bool) {
        let fair = if orphaned { self.count } else { self.count.div_ceil(live_members.max(1)) };
        self.fair.store(fair as usize, Ordering::Release);
        self.in_force.store(recorded == self.count, Ordering::Release);
    }
}

/// Says once a [`HEARTBEAT`] that `instance` runs `projection` split `share.count` ways, and
/// learns how many instances do, until `shutdown`; then leaves, so that the others take its
/// partitions at once.
pub(super) async fn keep_membership(
    pool: PgPool,
    instance: String,
    share: Arc<PartitionShare>,
    shutdown: CancellationToken,
) {
    let projection = share.projection.clone();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = beat.tick() => {}
        }
        match membership(&pool, &projection, &instance, share.count).await {
            Ok((members, recorded, orphaned)) => share.learned(members, recorded, orphaned),
            Err(error) => tracing::warn!(projection, %error, "cannot renew this instance's membership"),
        }
    }
    let _ = sqlx::query("DELETE FROM projection_members WHERE projection_name = $1 AND instance = $2")
        .bind(&projection)
        .bind(&instance)
        .execute(&pool)
        .await;
}

/// Renews this instance's membership; returns the live members running the same count, the
/// recorded count, and whether a partition's lease ran out three times over (or it was never
/// claimed in that long).
async fn membership(
    pool: &PgPool,
    projection: &str,
    instance: &str,
    count: u32,
) -> Result<(u32, u32, bool), sqlx::Error> {
    // The rows of instances that died without leaving go too, an hour later.
    sqlx::query(
        "WITH gone AS (DELETE FROM projection_members
                       WHERE projection_name = $1 AND instance <> $2
                         AND seen_at < clock_timestamp() - interval '1 hour')
         INSERT INTO projection_members (projection_name, instance, partitions) VALUES ($1, $2, $3)
         ON CONFLICT (projection_name, instance) DO UPDATE SET partitions = $3, seen_at = clock_timestamp()",
    )
    .bind(projection)
    .bind(instance)
    .bind(count as i32)
    .execute(pool)
    .await?;
    let (members, recorded, orphaned): (i64, i32, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projection_members
                 WHERE projection_name = $1 AND partitions = $2
                   AND seen_at > clock_timestamp() - make_interval(secs => $3)),
                coalesce((SELECT partitions FROM projection_partitionings WHERE projection_name = $1), 1),
                EXISTS (SELECT 1 FROM generate_series(0, $2 - 1) AS part (k)
                        LEFT JOIN projection_checkpoints c ON c.projection_name = $1 || '/' || part.k || '-of-' || $2
                        WHERE $2 > 1 AND (
                            c.owner_heartbeat_at < clock_timestamp() - make_interval(secs => 3 * $3)
                            -- Never claimed since the count was adopted, that long ago.
                            OR (c.projection_name IS NULL AND EXISTS (
                                SELECT 1 FROM projection_partitionings p WHERE p.projection_name = $1
                                    AND p.changed_at < clock_timestamp() - make_interval(secs => 3 * $3)))))",
    )
    .bind(projection)
    .bind(count as i32)
    .bind(LEASE.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((members as u32, recorded as u32, orphaned))
}

/// Joins this instance to a partitioned projection's members at once, so that its partitions
/// know their share before their first try to lead (not a heartbeat later).
pub(super) async fn join(pool: &PgPool, instance: &str, share: &PartitionShare) -> Result<(), sqlx::Error> {
    let (members, recorded, orphaned) = membership(pool, &share.projection, instance, share.count).await?;
    share.learned(members, recorded, orphaned);
    Ok(())
}

/// Starts the membership of this instance in a partitioned projection.
pub(super) fn spawn_membership(
    pool: &PgPool,
    instance: &str,
    share: &Arc<PartitionShare>,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(keep_membership(pool.clone(), instance.to_owned(), share.clone(), shutdown.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_a_whole_projection_keeps_its_name() {
        assert_eq!(Partition::WHOLE.checkpoint_name("account_summary"), "account_summary");
        let third = Partition { index: 2, count: 4 };
        assert_eq!(third.checkpoint_name("account_summary"), "account_summary/2-of-4");
        assert_eq!(Partition::parse_checkpoint_name("account_summary/2-of-4"), Some(("account_summary", third)));
        for name in ["account_summary", "a/4-of-4", "a/0-of-1", "a/x-of-2", "a#rebuild"] {
            assert_eq!(Partition::parse_checkpoint_name(name), None, "{name}");
        }
        assert_eq!(Partition::all(3).map(|p| p.index).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn an_instance_takes_its_fair_share_and_lets_its_highest_partition_go_first() {
        let share = PartitionShare::new("p", 4);
        assert!(!share.may_take(), "nothing before membership is known");
        share.learned(1, 4, false);
        for index in 0..4 {
            assert!(share.may_take());
            share.leads(index, true);
        }
        assert!(!share.may_take());
        // A second instance joins: two each; the highest partitions go, one at a time.
        share.learned(2, 4, false);
        assert!(share.should_let_go(3) && !share.should_let_go(2) && !share.should_let_go(0));
        share.leads(3, false);
        assert!(share.should_let_go(2));
        share.leads(2, false);
        assert!(!share.should_let_go(1) && !share.may_take());
        // Three instances: four partitions still need two here at most.
        share.learned(3, 4, false);
        assert!(!share.should_let_go(1) && !share.may_take());
        // A partition unled for long: any member may take it, beyond its share.
        share.learned(3, 4, true);
        assert!(share.may_take());
        // The count changed elsewhere: everything goes, nothing is taken.
        share.learned(2, 8, false);
        assert!(share.should_let_go(0) && !share.may_take());
    }
}
