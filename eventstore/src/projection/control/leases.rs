//! Who leads a projection: a lease renewed by heartbeats, fenced by an epoch that every write
//! of the leader checks, and a session-level advisory lock that keeps two instances from
//! claiming at once.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// How long a leader's heartbeat vouches for it. A leader that has not renewed its lease for
/// this long — paused, cut off, or stuck — is fenced off by the next instance that wants to lead.
pub const LEASE: Duration = Duration::from_secs(4);
/// How often a leader renews its lease: several renewals fit in one lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether the leadership taken with `epoch` (if any: a runner driven by hand has none) still
/// stands, holding it until the transaction ends. Every write of a leader checks it: a takeover
/// (which increments the epoch) waits for the write in flight, and a leader replaced while it
/// was paused changes nothing when it wakes up.
pub(in crate::projection) async fn leads(
    conn: &mut PgConnection,
    name: &str,
    epoch: Option<i64>,
) -> Result<bool, sqlx::Error> {
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

/// The leadership connection's settings: Postgres notices a peer that vanished (a cut cable, a
/// crashed host) within seconds instead of after the kernel's two-hour keepalive default, and
/// so releases the session lock. Ignored on a Unix socket, where they do not apply.
pub(in crate::projection) async fn configure_leader_connection(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
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
pub(in crate::projection) async fn claim(
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
pub(in crate::projection) async fn heartbeat(
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
pub(in crate::projection) async fn disown(
    conn: &mut PgConnection,
    name: &str,
    instance: &str,
    epoch: i64,
) -> Result<(), sqlx::Error> {
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

pub(in crate::projection) async fn try_lock_leadership(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({LEADERSHIP_LOCK})")).bind(name).fetch_one(conn).await
}

pub(in crate::projection) async fn unlock_leadership(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
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
pub(in crate::projection) async fn fence_expired_leader(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
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

/// Whether a projection's leadership is still the one taken with `epoch`, as of now (the check
/// of an outside projection, whose store's own compare-and-set keeps batches exactly-once).
pub(in crate::projection) async fn leads_now(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
) -> Result<bool, sqlx::Error> {
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
