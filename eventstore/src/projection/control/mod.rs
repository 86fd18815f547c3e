//! A projection's checkpoint row: where it is, what state it is in, who leads it (`leases`),
//! the operator's levers (`levers`) and rebuilds (`rebuild`), each a compare-and-set on it.

mod leases;
mod levers;
mod rebuild;

pub use leases::*;
pub use levers::*;
pub(super) use rebuild::*;

use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::Position;
use crate::status::ProjectionState;

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

/// Those of `names` whose checkpoint has not yet passed every event in the log, in log order
/// (a split projection's checkpoint is its slowest partition's). Empty: all have caught up.
pub async fn behind_the_log(executor: impl PgExecutor<'_>, names: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT p.name FROM unnest($1::text[]) p (name), LATERAL projection_checkpoint(p.name) c
         -- The first event after the checkpoint in index order, not EXISTS, which scans the
         -- whole log (see runner::has_events_after).
         WHERE (SELECT e.global_position FROM events e
                WHERE (e.transaction_id, e.global_position) > (c.transaction_id::text::xid8, c.global_position)
                ORDER BY e.transaction_id, e.global_position LIMIT 1) IS NOT NULL",
    )
    .bind(names)
    .fetch_all(executor)
    .await
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

/// Whether an outside store at `stored` lacks events it had applied: events of `event_types`
/// on `partition`'s streams (not skipped) up to `reached`, the checkpoint it was known to have
/// reached, lie after it. (A checkpoint that went back over other partitions' events only lost
/// nothing: it catches up.)
pub(super) async fn missed_between(
    pool: &PgPool,
    name: &str,
    event_types: &[&str],
    partition: crate::projection::Partition,
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
               AND ($8 = 1 OR stream_partition(e.stream_id, $8) = $7)
               AND NOT EXISTS (SELECT 1 FROM skipped_events s
                               WHERE s.projection_name = $6 AND s.global_position = e.global_position))",
    )
    .bind(stored.transaction_id.to_string())
    .bind(stored.global_position)
    .bind(reached.transaction_id.to_string())
    .bind(reached.global_position)
    .bind(event_types)
    .bind(name)
    .bind(partition.index as i32)
    .bind(partition.count as i32)
    .fetch_one(pool)
    .await
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
