//! A rebuild: shadow tables filled from the first event beside the live ones, then swapped in;
//! and the same for a store outside Postgres, which clears itself instead.

use sqlx::PgPool;

use super::*;
use crate::projection::{REBUILD_SUFFIX, REPLACED_SUFFIX};

/// The checkpoint row a rebuild of `name` advances.
pub(in crate::projection) fn rebuild_checkpoint_name(name: &str) -> String {
    format!("{name}#rebuild")
}

/// The state a rebuild leaves behind, whether it swapped or gave up: a failure of the live
/// tables meanwhile stays.
const END_REBUILD: &str = "state = CASE WHEN failed_global_position IS NULL THEN 'running' ELSE 'failed' END";

pub(in crate::projection) async fn rebuild_started(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1)")
        .bind(rebuild_checkpoint_name(name))
        .fetch_one(pool)
        .await
}

/// Gives up a rebuild that cannot go on: drops the shadow tables and says why in the status.
/// The live tables keep running (or stay failed).
pub(in crate::projection) async fn abort_rebuild(
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
pub(in crate::projection) async fn start_rebuild(
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
pub(in crate::projection) enum Swap {
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
pub(in crate::projection) async fn swap_rebuilt(
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
pub(in crate::projection) fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Marks an outside projection as rebuilding from the start, `why` shown on its status, with a
/// rebuild checkpoint that counts its progress; its checkpoint stays where the store had got
/// to, which the rebuild must reach. False if this instance no longer leads.
pub(in crate::projection) async fn start_external_rebuild(
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
pub(in crate::projection) async fn end_external_rebuild(
    pool: &PgPool,
    name: &str,
    epoch: Option<i64>,
) -> Result<(), sqlx::Error> {
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
