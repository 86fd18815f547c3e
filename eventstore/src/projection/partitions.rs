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
//!   takes free partitions up to its fair share: the count divided by the live members, rounded
//!   up. A partition unled for three leases may be taken by any member, beyond its share.
//! - An instance gives a partition up only when another member asks for it: a member with room
//!   whose try to lead it was refused says so in its membership row. Leading more than the fair
//!   share is not enough: a member that is counted but never leads (wedged, out of connections)
//!   asks for nothing, so the partitions taken over from it stay led instead of being let go
//!   and taken back every few leases.
//! - The count is recorded (`projection_partitionings`). An instance started with another count
//!   empties the read tables and starts every partition from the first event: changing the count
//!   is a rebuild. Every batch checks the recorded count, so an instance still running the old
//!   count applies nothing more.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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

    /// The partition of `count` that `stream_id`'s events are in: what the database's
    /// `stream_partition(stream_id, count)` says, so that a reader can find a stream's partition
    /// without asking (a read store keyed by partition, say).
    pub fn of_stream(stream_id: uuid::Uuid, count: u32) -> Partition {
        if count <= 1 {
            return Partition::WHOLE;
        }
        // `uuid_hash_extended(stream_id, 0)`, a bigint, then a modulo that is never negative.
        let hash = uuid_hash_extended(stream_id) as i64;
        let index = hash.rem_euclid(i64::from(count)) as u32;
        Partition { index, count }
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

/// Postgres's `uuid_hash_extended(id, 0)`: Bob Jenkins's lookup3 over the uuid's 16 bytes, read
/// as little-endian words (as Postgres reads them on the little-endian machines it runs on; a
/// test checks the two agree), the 64 bits of its final `b` and `c`.
fn uuid_hash_extended(id: uuid::Uuid) -> u64 {
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
    let bytes = id.as_bytes();
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    // The initial state for a 16-byte key; a seed of 0 leaves it as it is.
    let start = 0x9e37_79b9_u32.wrapping_add(16).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (start, start, start);
    a = a.wrapping_add(word(0));
    b = b.wrapping_add(word(4));
    c = c.wrapping_add(word(8));
    mix(&mut a, &mut b, &mut c);
    // The last four bytes (of the 11 lookup3 handles after the full 12-byte blocks).
    a = a.wrapping_add(word(12));
    finish(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
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

/// The count `projection` is split into and its generation (`g<microseconds>`, from when that
/// count was adopted), if a count was ever recorded: a count adopted again later is another
/// generation.
pub async fn recorded_generation(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Option<(u32, String)>, sqlx::Error> {
    let found: Option<(i32, i64)> = sqlx::query_as(
        "SELECT partitions, (extract(epoch FROM changed_at) * 1000000)::bigint
         FROM projection_partitionings WHERE projection_name = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await?;
    Ok(found.map(|(count, micros)| (count as u32, format!("g{micros}"))))
}

/// The history an outside store split into partitions is built in: the log's
/// ([`crate::LogIdentity`]) and the generation of the partition count in force, so that what a
/// store kept of an earlier adoption of the same count (a checkpoint, a fence of epochs that
/// started again) reads as of another history, never as its own. `None` with an empty log.
pub async fn store_history(pool: &PgPool, projection: &str) -> Result<Option<String>, sqlx::Error> {
    let Some(identity) = crate::log_identity(pool).await? else { return Ok(None) };
    let mut conn = pool.acquire().await?;
    Ok(Some(match recorded_generation(&mut conn, projection).await? {
        Some((_, generation)) => format!("{identity}#{generation}"),
        None => identity.to_string(),
    }))
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
    Ok(adopt_count_from(pool, projection, tables, count, may_change).await?.is_some())
}

/// As [`adopt_count`]; returns the count that was in force, read under the count's lock, if it
/// changed.
pub async fn adopt_count_from(
    pool: &PgPool,
    projection: &str,
    tables: &[&str],
    count: u32,
    may_change: bool,
) -> Result<Option<u32>, AdoptError> {
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
            super::control::empty_shadow(&mut tx, table).await?;
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
    Ok(changed.then_some(in_force))
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
    /// The partitions (one bit each) this instance tried to lead since the last membership round
    /// and was refused, another leading them, while it had room for more.
    asked_here: AtomicU64,
    /// The partitions other live members asked for at the last membership round.
    asked_by_others: AtomicU64,
}

impl PartitionShare {
    pub fn new(projection: &str, count: u32) -> PartitionShare {
        PartitionShare {
            projection: projection.to_owned(),
            count,
            led: Mutex::new(BTreeSet::new()),
            fair: AtomicUsize::new(0),
            in_force: AtomicBool::new(false),
            asked_here: AtomicU64::new(0),
            asked_by_others: AtomicU64::new(0),
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

    /// Counts partition `index` as led here while this instance tries to take it, if that stays
    /// within its share; the caller releases it when the try fails or the leadership ends.
    /// Under one lock, so that the partitions' runners, all trying at once, cannot together
    /// take more than the share.
    pub(super) fn reserve(&self, index: u32) -> bool {
        if !self.in_force.load(Ordering::Acquire) {
            return false;
        }
        let mut led = self.led();
        led.len() < self.fair.load(Ordering::Acquire) && led.insert(index)
    }

    /// Whether the leader of partition `index` here should let it go: the count changed, or
    /// this instance leads more than its share and another member asked for this partition,
    /// the highest such one here (one at a time, so that the others stay put).
    pub(super) fn should_let_go(&self, index: u32) -> bool {
        if !self.in_force.load(Ordering::Acquire) {
            return true;
        }
        let asked = self.asked_by_others.load(Ordering::Acquire);
        let led = self.led();
        led.len() > self.fair.load(Ordering::Acquire)
            && led.iter().rev().find(|&&led| asked & bit(led) != 0) == Some(&index)
    }

    /// This instance tried to lead partition `index`, with room for it, and another leads it.
    pub(super) fn ask_for(&self, index: u32) {
        self.asked_here.fetch_or(bit(index), Ordering::AcqRel);
    }

    /// Partition `index` is no longer led (or being taken) here.
    pub(super) fn release(&self, index: u32) {
        self.led().remove(&index);
    }

    /// The partitions this instance leads (or is taking) now.
    pub fn led_here(&self) -> Vec<u32> {
        self.led().iter().copied().collect()
    }

    fn led(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.led.lock().expect("never poisoned")
    }

    /// What the last membership round found: how many members run this count, the count in
    /// force, whether some partition has gone unled for longer than a leader may take to come
    /// (then any member may take it, beyond its share: a member counted but unable to lead must
    /// not leave its share unled), and which partitions the other members asked for.
    fn learned(&self, round: Membership) {
        let fair = if round.orphaned { self.count } else { self.count.div_ceil(round.live_members.max(1)) };
        self.fair.store(fair as usize, Ordering::Release);
        self.in_force.store(round.recorded == self.count, Ordering::Release);
        self.asked_by_others.store(round.asked_by_others, Ordering::Release);
    }

    /// The partitions asked for here since the last round, for this round to say; forgotten
    /// here, so that a member stops asking once its runners stop being refused.
    fn take_asked(&self) -> u64 {
        self.asked_here.swap(0, Ordering::AcqRel)
    }
}

/// Partition `index`'s bit in a set of partitions ([`MAX_PARTITIONS`] fit in 64 bits).
fn bit(index: u32) -> u64 {
    1u64 << index
}

/// What one membership round learned.
#[derive(Debug, Clone, Copy)]
struct Membership {
    /// The live members running this instance's count, itself included.
    live_members: u32,
    /// The count in force.
    recorded: u32,
    /// Some partition's lease ran out three times over, or it was never claimed in that long.
    orphaned: bool,
    /// The partitions other live members asked for.
    asked_by_others: u64,
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
        match membership(&pool, &projection, &instance, share.count, share.take_asked()).await {
            Ok(round) => share.learned(round),
            Err(error) => tracing::warn!(projection, %error, "cannot renew this instance's membership"),
        }
    }
    let _ = sqlx::query("DELETE FROM projection_members WHERE projection_name = $1 AND instance = $2")
        .bind(&projection)
        .bind(&instance)
        .execute(&pool)
        .await;
}

/// Renews this instance's membership and says which partitions it `asked` for; learns what the
/// round found.
async fn membership(
    pool: &PgPool,
    projection: &str,
    instance: &str,
    count: u32,
    asked: u64,
) -> Result<Membership, sqlx::Error> {
    // The rows of instances that died without leaving go too, an hour later.
    sqlx::query(
        "WITH gone AS (DELETE FROM projection_members
                       WHERE projection_name = $1 AND instance <> $2
                         AND seen_at < clock_timestamp() - interval '1 hour')
         INSERT INTO projection_members (projection_name, instance, partitions, asks) VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection_name, instance) DO UPDATE SET partitions = $3, asks = $4, seen_at = clock_timestamp()",
    )
    .bind(projection)
    .bind(instance)
    .bind(count as i32)
    .bind(asked as i64)
    .execute(pool)
    .await?;
    let (members, recorded, orphaned, asked_by_others): (i64, i32, bool, i64) = sqlx::query_as(
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
                                    AND p.changed_at < clock_timestamp() - make_interval(secs => 3 * $3))))),
                coalesce((SELECT bit_or(asks) FROM projection_members
                          WHERE projection_name = $1 AND partitions = $2 AND instance <> $4
                            AND seen_at > clock_timestamp() - make_interval(secs => $3)), 0)",
    )
    .bind(projection)
    .bind(count as i32)
    .bind(LEASE.as_secs_f64())
    .bind(instance)
    .fetch_one(pool)
    .await?;
    Ok(Membership {
        live_members: members as u32,
        recorded: recorded as u32,
        orphaned,
        asked_by_others: asked_by_others as u64,
    })
}

/// Joins this instance to a partitioned projection's members at once, so that its partitions
/// know their share before their first try to lead (not a heartbeat later).
pub(super) async fn join(pool: &PgPool, instance: &str, share: &PartitionShare) -> Result<(), sqlx::Error> {
    share.learned(membership(pool, &share.projection, instance, share.count, 0).await?);
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

    fn round(live_members: u32, recorded: u32, orphaned: bool, asked: &[u32]) -> Membership {
        Membership { live_members, recorded, orphaned, asked_by_others: asked.iter().map(|&k| bit(k)).sum() }
    }

    #[test]
    fn an_instance_takes_its_fair_share_and_gives_up_its_highest_asked_for_partition_first() {
        let share = PartitionShare::new("p", 4);
        assert!(!share.reserve(0), "nothing before membership is known");
        share.learned(round(1, 4, false, &[]));
        for index in 0..4 {
            assert!(share.reserve(index));
        }
        assert!(!share.reserve(0), "a partition is taken once");
        // A second instance joins: two each, but nothing goes until it asks.
        share.learned(round(2, 4, false, &[]));
        assert!((0..4).all(|k| !share.should_let_go(k)));
        // It asks for every partition: the highest go, one at a time.
        share.learned(round(2, 4, false, &[0, 1, 2, 3]));
        assert!(share.should_let_go(3) && !share.should_let_go(2) && !share.should_let_go(0));
        share.release(3);
        assert!(share.should_let_go(2));
        share.release(2);
        assert!(!share.should_let_go(1) && !share.reserve(2));
        // Three instances: four partitions still need two here at most.
        share.learned(round(3, 4, false, &[0, 1]));
        assert!(!share.should_let_go(1) && !share.reserve(2));
        // A partition unled for long: any member may take it, beyond its share.
        share.learned(round(3, 4, true, &[]));
        assert!(share.reserve(2));
        share.release(2);
        // The count changed elsewhere: everything goes, nothing is taken.
        share.learned(round(2, 8, false, &[]));
        assert!(share.should_let_go(0) && !share.reserve(2));
    }

    #[test]
    fn partitions_taken_from_a_member_that_never_leads_are_kept_until_someone_asks() {
        // Two members; the other never leads. Its share goes unled, then is taken over here.
        let share = PartitionShare::new("p", 4);
        share.learned(round(2, 4, false, &[]));
        assert!(share.reserve(0) && share.reserve(1));
        assert!(!share.reserve(2), "two of four for each of two members");
        share.learned(round(2, 4, true, &[]));
        assert!(share.reserve(2) && share.reserve(3));
        // Nothing is unled any more, so the fair share is two again: kept all the same, round
        // after round, since the member that never leads asks for nothing.
        for _ in 0..10 {
            share.learned(round(2, 4, false, &[]));
            assert!((0..4).all(|k| !share.should_let_go(k)));
        }
        // A member that can lead asks for one it was refused: that one goes, only that one.
        share.learned(round(2, 4, false, &[1]));
        assert!(share.should_let_go(1) && !share.should_let_go(3));
    }

    #[test]
    fn a_round_says_what_was_asked_since_the_last_and_forgets_it() {
        let share = PartitionShare::new("p", 64);
        share.ask_for(0);
        share.ask_for(63);
        share.ask_for(63);
        assert_eq!(share.take_asked(), bit(0) | bit(63));
        assert_eq!(share.take_asked(), 0);
    }
}
