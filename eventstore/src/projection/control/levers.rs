//! The operator's levers — retry, skip the failed event, rebuild — each a compare-and-set on the
//! checkpoint row, recorded with who pulled it and why.

use sqlx::{PgConnection, PgPool};

use super::*;
use crate::Position;
use crate::status::{LeverPulled, ProjectionState};

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
///
/// # Errors
///
/// [`LeverRefusal::UnknownProjection`] or [`LeverRefusal::NotFailed`]; a database error. A
/// refused lever changes nothing and is not recorded.
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
///
/// # Errors
///
/// As [`retry`], or [`LeverRefusal::FailureMoved`] when it now fails at another event than
/// `seen`: nothing is skipped that the operator did not see.
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
    let projection =
        crate::projection::Partition::parse_checkpoint_name(name).map_or(name, |(projection, _)| projection);
    if crate::projection::partitions::recorded_count(&mut tx, projection).await? > 1 {
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
