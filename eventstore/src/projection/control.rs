//! A projection's checkpoint row: where it is, who leads it (a lease with a fencing token), what
//! state it is in, and the operator's levers (retry, skip, rebuild), each a compare-and-set.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor, PgPool};

use super::{REBUILD_SUFFIX, REPLACED_SUFFIX};
use crate::Position;

use crate::status::{LeverPulled, ProjectionState};

/// How long a leader's heartbeat vouches for it. A leader that has not renewed its lease for
/// this long — paused, cut off, or stuck — is fenced off by the next instance that wants to lead.
pub const LEASE: Duration = Duration::from_secs(4);
/// How often a leader renews its lease: several renewals fit in one lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The checkpoint row a rebuild of `name` advances.
pub(super) fn rebuild_checkpoint_name(name: &str) -> String {
    format!("{name}#rebuild")
}

/// Where a projection has read up to; [`Position::START`] if it never ran.
pub async fn checkpoint(executor: impl PgExecutor<'_>, name: &str) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM projection_checkpoints WHERE projection_name = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    Ok(row.map_or(Position::START, |(transaction_id, global_position)| Position { transaction_id, global_position }))
}

/// Every projection's checkpoint (rebuilds' shadow checkpoints left out).
pub async fn checkpoints(executor: impl PgExecutor<'_>) -> Result<Vec<(String, Position)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT projection_name, transaction_id::text::bigint, global_position FROM projection_checkpoints
         WHERE projection_name NOT LIKE '%#rebuild'",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, transaction_id, global_position)| (name, Position { transaction_id, global_position }))
        .collect())
}

/// Reads the checkpoint and locks it until the transaction ends, creating it on first use.
pub(super) async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    let select = "SELECT transaction_id::text::bigint, global_position
                  FROM projection_checkpoints WHERE projection_name = $1 FOR UPDATE";
    let found: Option<(i64, i64)> = sqlx::query_as(select).bind(name).fetch_optional(&mut *conn).await?;
    let (transaction_id, global_position) = match found {
        Some(found) => found,
        None => {
            sqlx::query("INSERT INTO projection_checkpoints (projection_name) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(name)
                .execute(&mut *conn)
                .await?;
            sqlx::query_as(select).bind(name).fetch_one(&mut *conn).await?
        }
    };
    Ok(Position { transaction_id, global_position })
}

/// Whether the leadership taken with `epoch` (if any: a runner driven by hand has none) still
/// stands, holding it until the transaction ends. Every write of a leader checks it: a takeover
/// (which increments the epoch) waits for the write in flight, and a leader replaced while it
/// was paused changes nothing when it wakes up.
pub(super) async fn leads(conn: &mut PgConnection, name: &str, epoch: Option<i64>) -> Result<bool, sqlx::Error> {
    let Some(epoch) = epoch else {
        return Ok(true);
    };
    let current: Option<i64> =
        sqlx::query_scalar("SELECT leader_epoch FROM projection_checkpoints WHERE projection_name = $1 FOR SHARE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(current == Some(epoch))
}

/// Moves the checkpoint forward to `to`; never backwards. False if it is already at or past it.
pub(super) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    to: Position,
    applied: usize,
) -> Result<bool, sqlx::Error> {
    let advanced = sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, global_position = $3, events_applied = events_applied + $4,
             updated_at = clock_timestamp()
         WHERE projection_name = $1 AND (transaction_id, global_position) < ($2::text::xid8, $3)",
    )
    .bind(name)
    .bind(to.transaction_id.to_string())
    .bind(to.global_position)
    .bind(applied as i64)
    .execute(conn)
    .await?;
    Ok(advanced.rows_affected() == 1)
}

/// What the leader is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Steering {
    pub state: ProjectionState,
    /// The live tables are stopped at an event they cannot apply (during a rebuild too).
    pub live_failed: bool,
}

pub(super) async fn steering(executor: impl PgExecutor<'_>, name: &str) -> Result<Steering, sqlx::Error> {
    let row: Option<(String, bool)> = sqlx::query_as(
        "SELECT state, failed_global_position IS NOT NULL FROM projection_checkpoints WHERE projection_name = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    Ok(match row {
        Some((state, live_failed)) => Steering { state: parse_state(&state)?, live_failed },
        None => Steering { state: ProjectionState::Running, live_failed: false },
    })
}

fn parse_state(state: &str) -> Result<ProjectionState, sqlx::Error> {
    ProjectionState::parse(state)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown projection state {state:?}").into()))
}

/// The leadership connection's settings: Postgres notices a peer that vanished (a cut cable, a
/// crashed host) within seconds instead of after the kernel's two-hour keepalive default, and
/// so releases the session lock. Ignored on a Unix socket, where they do not apply.
pub(super) async fn configure_leader_connection(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for setting in [
        "tcp_keepalives_idle = 5",
        "tcp_keepalives_interval = 1",
        "tcp_keepalives_count = 3",
        "tcp_user_timeout = 5000",
    ] {
        sqlx::query(&format!("SET {setting}")).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Takes over the projection: a new epoch, this instance as its leader. Returns the epoch, the
/// fencing token every heartbeat and batch of this leadership names. For a partition
/// (`partitioned`: the projection and the count this instance splits it into), nothing is
/// taken — `None` — unless that count is the one in force: an instance started with an old
/// count must not bring back its checkpoint rows.
pub(super) async fn claim(
    conn: &mut PgConnection,
    name: &str,
    instance: &str,
    partitioned: Option<(&str, u32)>,
) -> Result<Option<i64>, sqlx::Error> {
    let (projection, count) = partitioned.map_or((None, 1), |(projection, count)| (Some(projection), count));
    sqlx::query_scalar(
        "INSERT INTO projection_checkpoints (projection_name, owner_instance, owner_heartbeat_at, leader_epoch)
         SELECT $1, $2, clock_timestamp(), 1
         WHERE $3::text IS NULL
            OR coalesce((SELECT partitions FROM projection_partitionings WHERE projection_name = $3), 1) = $4
         ON CONFLICT (projection_name) DO UPDATE
         SET owner_instance = $2, owner_heartbeat_at = clock_timestamp(),
             leader_epoch = projection_checkpoints.leader_epoch + 1
         RETURNING leader_epoch",
    )
    .bind(name)
    .bind(instance)
    .bind(projection)
    .bind(count as i32)
    .fetch_optional(conn)
    .await
}

/// Renews the lease. False if another instance has taken over since `epoch`.
pub(super) async fn heartbeat(
    conn: &mut PgConnection,
    name: &str,
    instance: &str,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "UPDATE projection_checkpoints SET owner_heartbeat_at = clock_timestamp()
         WHERE projection_name = $1 AND owner_instance = $2 AND leader_epoch = $3",
    )
    .bind(name)
    .bind(instance)
    .bind(epoch)
    .execute(conn)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Whether `instance` leads `name` now, as far as its lease says: for work that should run where
/// a projection's leader runs (a process manager's deadlines). A check, not a fence: the work
/// must be safe to do twice.
pub async fn led_by(pool: &PgPool, name: &str, instance: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1 AND owner_instance = $2
             AND owner_heartbeat_at > clock_timestamp() - make_interval(secs => $3))",
    )
    .bind(name)
    .bind(instance)
    .bind(LEASE.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Gives the projection up (a clean stop). The heartbeat time stays, so that a leader paused
/// between this and releasing its lock still has a lease that runs out.
pub(super) async fn disown(conn: &mut PgConnection, name: &str, instance: &str, epoch: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET owner_instance = NULL
         WHERE projection_name = $1 AND owner_instance = $2 AND leader_epoch = $3",
    )
    .bind(name)
    .bind(instance)
    .bind(epoch)
    .execute(conn)
    .await?;
    Ok(())
}

/// The session advisory lock that says who leads `name`, as `pg_try_advisory_lock` takes it.
const LEADERSHIP_LOCK: &str = "hashtext('eventstore projection'), hashtext($1)";

pub(super) async fn try_lock_leadership(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({LEADERSHIP_LOCK})")).bind(name).fetch_one(conn).await
}

pub(super) async fn unlock_leadership(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SELECT pg_advisory_unlock({LEADERSHIP_LOCK})")).bind(name).execute(conn).await?;
    Ok(())
}

/// If the leader of `name` let its lease run out and its leadership session has been idle as
/// long, ends that session, which releases its leadership lock, so that this instance can take
/// over. Returns whether it fenced one.
///
/// A paused or cut-off process keeps its session — and the lock — as long as its TCP
/// connection looks alive, which for a paused process is forever. Its batches in flight are
/// ended by `idle_in_transaction_session_timeout`, and the new epoch stops any it starts later.
pub(super) async fn fence_expired_leader(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    // The candidates first, materialised: in a plain WHERE clause Postgres may call
    // pg_terminate_backend on rows before the other conditions have ruled them out.
    let fenced: Vec<(i32, Option<String>)> = sqlx::query_as(
        "WITH stale AS MATERIALIZED (
             SELECT l.pid, c.owner_instance FROM pg_locks l, projection_checkpoints c
             WHERE c.projection_name = $1
               AND c.owner_heartbeat_at < clock_timestamp() - make_interval(secs => $2)
               AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = hashtext('eventstore projection')::oid AND l.objid = hashtext($1)::oid
               AND l.pid <> pg_backend_pid()
               -- Idle for a lease too: a leader whose heartbeat waits behind a lock (its own
               -- batch, a DDL statement) is busy, not gone, and is left alone.
               AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid AND a.state = 'idle'
                           AND a.state_change < clock_timestamp() - make_interval(secs => $2))
         )
         SELECT pid, owner_instance FROM stale WHERE pg_terminate_backend(pid)",
    )
    .bind(name)
    .bind(LEASE.as_secs_f64())
    .fetch_all(conn)
    .await?;
    for (pid, instance) in &fenced {
        tracing::warn!(projection = name, pid, instance, "fenced off a leader whose lease ran out");
    }
    Ok(!fenced.is_empty())
}

/// Stops the live tables at the event at `position`, unless the checkpoint has passed it
/// meanwhile (another leader applied it). A rebuild in progress goes on (up to the event), and
/// the failure stays when it ends.
pub(super) async fn fail(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
    position: Position,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        return tx.rollback().await;
    }
    sqlx::query(
        "UPDATE projection_checkpoints
         SET state = CASE WHEN state = 'rebuilding' THEN 'rebuilding' ELSE 'failed' END,
             last_error = $2, failed_transaction_id = $3::text::xid8,
             failed_global_position = $4, failed_at = clock_timestamp()
         WHERE projection_name = $1 AND ($3::text::xid8, $4) > (transaction_id, global_position)",
    )
    .bind(name)
    .bind(error)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Why an operator's lever did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeverRefusal {
    #[error("there is no projection {0:?}")]
    UnknownProjection(String),
    #[error("projection {0} has not failed")]
    NotFailed(String),
    /// The failure the operator saw is not the one now: skipping would skip an event unseen.
    #[error("projection {name} now fails at {now}, not at {seen}: look again before skipping")]
    FailureMoved { name: String, seen: Position, now: Position },
    #[error("projection {0} is already rebuilding")]
    AlreadyRebuilding(String),
    /// A partitioned projection is rebuilt by starting its instances with another partition
    /// count (which empties its tables and applies the log again), not partition by partition:
    /// a shadow table of one partition's streams cannot replace the whole table.
    #[error("projection {0} is partitioned: rebuild it by changing its partition count (PROJECTION_PARTITIONS)")]
    Partitioned(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LeverError {
    #[error(transparent)]
    Refused(#[from] LeverRefusal),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The checkpoint row as the levers see it, locked until the lever's transaction ends.
struct LeverRow {
    state: ProjectionState,
    failed_at: Option<Position>,
}

async fn lock_for_lever(conn: &mut PgConnection, name: &str) -> Result<LeverRow, LeverError> {
    let row: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT state, failed_transaction_id::text::bigint, failed_global_position FROM projection_checkpoints
         WHERE projection_name = $1 AND projection_name NOT LIKE '%#%' FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let (state, failed_transaction_id, failed_global_position) =
        row.ok_or_else(|| LeverRefusal::UnknownProjection(name.to_owned()))?;
    Ok(LeverRow {
        state: parse_state(&state)?,
        failed_at: failed_transaction_id
            .zip(failed_global_position)
            .map(|(transaction_id, global_position)| Position { transaction_id, global_position }),
    })
}

/// The columns a failure sets, cleared; a rebuild in progress goes on.
const CLEAR_FAILURE: &str = "state = CASE WHEN state = 'rebuilding' THEN 'rebuilding' ELSE 'running' END,
     last_error = NULL, failed_transaction_id = NULL, failed_global_position = NULL, failed_at = NULL";

/// Who pulls a lever and why: recorded with the lever, in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct PulledBy<'a> {
    pub operator: &'a str,
    pub reason: &'a str,
}

async fn record_pull(
    tx: &mut sqlx::PgConnection,
    name: &str,
    lever: &str,
    by: PulledBy<'_>,
    position: Option<Position>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_levers (projection_name, lever, operator, reason, position) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(lever)
    .bind(by.operator)
    .bind(by.reason)
    .bind(position.map(|position| position.to_string()))
    .execute(tx)
    .await?;
    Ok(())
}

/// The levers pulled lately, newest first (at most `limit`).
pub async fn recent_levers(pool: &PgPool, limit: i64) -> Result<Vec<LeverPulled>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projection_name, lever, operator, reason, position, pulled_at FROM projection_levers
         ORDER BY pulled_at DESC, lever_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Lets a failed projection try its failing event again (after a fix).
pub async fn retry(pool: &PgPool, name: &str, by: PulledBy<'_>) -> Result<(), LeverError> {
    let mut tx = pool.begin().await?;
    if lock_for_lever(&mut tx, name).await?.failed_at.is_none() {
        return Err(LeverRefusal::NotFailed(name.to_owned()).into());
    }
    sqlx::query(&format!("UPDATE projection_checkpoints SET {CLEAR_FAILURE} WHERE projection_name = $1"))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    record_pull(&mut tx, name, "retry", by, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves a failed projection past its failing event, which must be the one the operator saw
/// (`seen`), recording the skip and the error in `skipped_events`. Rebuilds skip it too.
pub async fn skip_failed_event(pool: &PgPool, name: &str, seen: Position, by: PulledBy<'_>) -> Result<(), LeverError> {
    let mut tx = pool.begin().await?;
    let Some(now) = lock_for_lever(&mut tx, name).await?.failed_at else {
        return Err(LeverRefusal::NotFailed(name.to_owned()).into());
    };
    if now != seen {
        return Err(LeverRefusal::FailureMoved { name: name.to_owned(), seen, now }.into());
    }
    sqlx::query(
        "INSERT INTO skipped_events (projection_name, global_position, transaction_id, error)
         SELECT projection_name, failed_global_position, failed_transaction_id, coalesce(last_error, '')
         FROM projection_checkpoints WHERE projection_name = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    // Forward only: a failure the checkpoint has already passed is not skipped (nor recorded).
    let moved = sqlx::query(&format!(
        "UPDATE projection_checkpoints
         SET transaction_id = failed_transaction_id, global_position = failed_global_position,
             updated_at = clock_timestamp(), {CLEAR_FAILURE}
         WHERE projection_name = $1 AND (failed_transaction_id, failed_global_position) > (transaction_id, global_position)"
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(LeverRefusal::NotFailed(name.to_owned()).into());
    }
    record_pull(&mut tx, name, "skip", by, Some(seen)).await?;
    tx.commit().await?;
    Ok(())
}

/// Asks the projection's leader to rebuild it into shadow tables and swap them in. A failed
/// projection can be rebuilt too: the rebuild stops where the live tables stopped, and the
/// failure stays until retried or skipped.
pub async fn request_rebuild(pool: &PgPool, name: &str, by: PulledBy<'_>) -> Result<(), LeverError> {
    let mut tx = pool.begin().await?;
    let projection = super::Partition::parse_checkpoint_name(name).map_or(name, |(projection, _)| projection);
    if super::partitions::recorded_count(&mut tx, projection).await? > 1 {
        return Err(LeverRefusal::Partitioned(projection.to_owned()).into());
    }
    if lock_for_lever(&mut tx, name).await?.state == ProjectionState::Rebuilding {
        return Err(LeverRefusal::AlreadyRebuilding(name.to_owned()).into());
    }
    sqlx::query("UPDATE projection_checkpoints SET state = 'rebuilding' WHERE projection_name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    record_pull(&mut tx, name, "rebuild", by, None).await?;
    tx.commit().await?;
    Ok(())
}

/// The state a rebuild leaves behind, whether it swapped or gave up: a failure of the live
/// tables meanwhile stays.
const END_REBUILD: &str = "state = CASE WHEN failed_global_position IS NULL THEN 'running' ELSE 'failed' END";

pub(super) async fn rebuild_started(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1)")
        .bind(rebuild_checkpoint_name(name))
        .fetch_one(pool)
        .await
}

/// Gives up a rebuild that cannot go on: drops the shadow tables and says why in the status.
/// The live tables keep running (or stay failed).
pub(super) async fn abort_rebuild(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
    tables: &[&str],
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        return tx.rollback().await;
    }
    for table in tables {
        sqlx::query(&format!(r#"DROP TABLE IF EXISTS "{table}{REBUILD_SUFFIX}""#)).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = $1")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "UPDATE projection_checkpoints SET {END_REBUILD}, last_error = coalesce(last_error, $2) WHERE projection_name = $1"
    ))
    .bind(name)
    .bind(format!("rebuild stopped: {error}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Creates empty shadow copies of the projection's tables and a checkpoint at the start.
pub(super) async fn start_rebuild(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
    tables: &[&str],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        return tx.rollback().await;
    }
    for table in tables {
        for statement in [
            format!(r#"DROP TABLE IF EXISTS "{table}{REBUILD_SUFFIX}""#),
            format!(r#"CREATE TABLE "{table}{REBUILD_SUFFIX}" (LIKE "{table}" INCLUDING ALL)"#),
        ] {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
    }
    sqlx::query("INSERT INTO projection_checkpoints (projection_name) VALUES ($1)")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(projection = name, "rebuild started");
    Ok(())
}

/// How long a swap waits for readers of the live tables to let go. `ALTER TABLE … RENAME`
/// needs an exclusive lock, and while it waits every later reader queues behind it: a swap
/// that cannot have its lock at once gives up and is tried again, instead of stalling reads.
const SWAP_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '20ms'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Swap {
    Swapped,
    /// The shadow tables have not reached the live checkpoint yet.
    NotCaughtUp,
    /// A reader held the live tables; try again shortly.
    TablesBusy,
    /// Another instance leads the projection now.
    NotLeading,
}

/// If the shadow tables have reached the live checkpoint, swaps them in, atomically: readers
/// see the old tables or the new ones, never a mix.
pub(super) async fn swap_rebuilt(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
    tables: &[&str],
) -> Result<Swap, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        tx.rollback().await?;
        return Ok(Swap::NotLeading);
    }
    let live = lock_checkpoint(&mut tx, name).await?;
    let shadow = lock_checkpoint(&mut tx, &rebuild_checkpoint_name(name)).await?;
    if shadow != live {
        tx.rollback().await?;
        return Ok(Swap::NotCaughtUp);
    }
    sqlx::query(SWAP_LOCK_TIMEOUT).execute(&mut *tx).await?;
    for table in tables {
        for statement in [
            format!(r#"ALTER TABLE "{table}" RENAME TO "{table}{REPLACED_SUFFIX}""#),
            format!(r#"ALTER TABLE "{table}{REBUILD_SUFFIX}" RENAME TO "{table}""#),
            format!(r#"DROP TABLE "{table}{REPLACED_SUFFIX}""#),
        ] {
            match sqlx::query(&statement).execute(&mut *tx).await {
                Ok(_) => {}
                Err(error) if is_lock_timeout(&error) => {
                    tx.rollback().await?;
                    return Ok(Swap::TablesBusy);
                }
                Err(error) => return Err(error),
            }
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = $1")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "UPDATE projection_checkpoints SET {END_REBUILD}, last_error = CASE WHEN failed_global_position IS NULL
             THEN NULL ELSE last_error END
         WHERE projection_name = $1"
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Swap::Swapped)
}

/// 55P03 lock_not_available: a `lock_timeout` ran out.
pub(super) fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// The positions among `positions` that an operator skipped in `name`: a rebuild skips them too.
pub(super) async fn skipped_among(
    conn: &mut PgConnection,
    name: &str,
    positions: &[i64],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT global_position FROM skipped_events WHERE projection_name = $1 AND global_position = ANY($2)",
    )
    .bind(name)
    .bind(positions)
    .fetch_all(conn)
    .await
}

/// Whether a projection's leadership is still the one taken with `epoch`, as of now (the check
/// of an outside projection, whose store's own compare-and-set keeps batches exactly-once).
pub(super) async fn leads_now(pool: &PgPool, name: &str, epoch: Option<i64>) -> Result<bool, sqlx::Error> {
    let Some(epoch) = epoch else {
        return Ok(true);
    };
    let current: Option<i64> =
        sqlx::query_scalar("SELECT leader_epoch FROM projection_checkpoints WHERE projection_name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(current == Some(epoch))
}

/// Whether an outside store at `stored` lacks events it had applied: events of `event_types`
/// (not skipped) up to `reached`, the checkpoint it was known to have reached, lie after it.
pub(super) async fn missed_between(
    pool: &PgPool,
    name: &str,
    event_types: &[&str],
    stored: Option<Position>,
    reached: Position,
) -> Result<bool, sqlx::Error> {
    if stored.is_some_and(|stored| stored >= reached) {
        return Ok(false);
    }
    let stored = stored.unwrap_or(Position::START);
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events e
             WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
               AND (e.transaction_id, e.global_position) <= ($3::text::xid8, $4)
               AND e.event_type = ANY($5)
               AND NOT EXISTS (SELECT 1 FROM skipped_events s
                               WHERE s.projection_name = $6 AND s.global_position = e.global_position))",
    )
    .bind(stored.transaction_id.to_string())
    .bind(stored.global_position)
    .bind(reached.transaction_id.to_string())
    .bind(reached.global_position)
    .bind(event_types)
    .bind(name)
    .fetch_one(pool)
    .await
}

/// Marks an outside projection as rebuilding from the start, `why` shown on its status, with a
/// rebuild checkpoint that counts its progress; its checkpoint stays where the store had got
/// to, which the rebuild must reach. False if this instance no longer leads.
pub(super) async fn start_external_rebuild(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
    why: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "UPDATE projection_checkpoints SET state = 'rebuilding', rebuild_reason = $2 WHERE projection_name = $1",
    )
    .bind(name)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection_name) VALUES ($1)
         ON CONFLICT (projection_name) DO UPDATE SET transaction_id = '0', global_position = 0, events_applied = 0",
    )
    .bind(rebuild_checkpoint_name(name))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(projection = name, "rebuild started");
    Ok(true)
}

/// An outside projection's rebuild got back to where the store was.
pub(super) async fn end_external_rebuild(pool: &PgPool, name: &str, epoch: Option<i64>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !leads(&mut tx, name, epoch).await? {
        return tx.rollback().await;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = $1")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("UPDATE projection_checkpoints SET {END_REBUILD} WHERE projection_name = $1"))
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Shows why an outside projection cannot go on, on its status, while it has not failed at an
/// event (whose error stays): its store cannot be written, or its rebuild stopped at an event.
pub(super) async fn note_stopped(pool: &PgPool, name: &str, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_error = $2
         WHERE projection_name = $1 AND failed_global_position IS NULL AND last_error IS DISTINCT FROM $2",
    )
    .bind(name)
    .bind(why)
    .execute(pool)
    .await?;
    Ok(())
}

/// The projection goes on again: the note [`note_stopped`] left goes.
pub(super) async fn clear_stopped(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_error = NULL
         WHERE projection_name = $1 AND failed_global_position IS NULL AND last_error IS NOT NULL",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}
