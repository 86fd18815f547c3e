//! A rebuild: shadow tables filled from the first event beside the live ones, then copied into
//! them in one transaction; and the same for a store outside Postgres, which clears itself
//! instead.
//!
//! The shadow tables exist beside the live ones for good ([`crate::schema::prepare_shadow_tables`]
//! makes them at start-up, as the role that migrates): a rebuild empties and fills them and
//! copies them over, which needs no right to create, rename or own a table. So the server's
//! role may have none in the schema its owner migrates (where a table or function it created
//! could be picked up by the owner).

use sqlx::PgPool;

use super::*;
use crate::projection::REBUILD_SUFFIX;

pub(in crate::projection) use crate::projection::rebuild_checkpoint_name;

/// The state a rebuild leaves behind, whether it swapped or gave up: a failure of the live
/// tables meanwhile stays.
const END_REBUILD: &str = "state = CASE WHEN failed_global_position IS NULL THEN 'running' ELSE 'failed' END";

pub(in crate::projection) async fn rebuild_started(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1)")
        .bind(rebuild_checkpoint_name(name))
        .fetch_one(pool)
        .await
}

/// Gives up a rebuild that cannot go on: empties the shadow tables and says why in the status.
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
        empty_shadow(&mut tx, table).await?;
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

/// Empties the shadow copies of the projection's tables (making them where they are missing,
/// which only a role that may create tables can: a database nobody prepared) and sets a
/// checkpoint at the start. The copies are locked before the checkpoint is noted, as
/// [`crate::schema::prepare_shadow_tables`] expects.
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
        if !empty_shadow(&mut tx, table).await? {
            sqlx::query(&format!(r#"CREATE TABLE "{table}{REBUILD_SUFFIX}" (LIKE "{table}" INCLUDING ALL)"#))
                .execute(&mut *tx)
                .await?;
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

/// How long a swap waits for a lock on the live tables. Its deletes and inserts conflict with
/// no reader (readers see the old rows until it commits), only with an exclusive lock someone
/// holds (an `ALTER TABLE`, a `VACUUM FULL`): then it gives up and is tried again, rather than
/// queue every later reader behind it.
const SWAP_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '20ms'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::projection) enum Swap {
    Swapped,
    /// The shadow tables have not reached the live checkpoint yet.
    NotCaughtUp,
    /// Someone held an exclusive lock on the live tables; try again shortly.
    TablesBusy,
    /// Another instance leads the projection now.
    NotLeading,
}

/// If the shadow tables have reached the live checkpoint, copies them over the live ones in one
/// transaction and empties them: readers see the old rows or the new ones, never a mix, and
/// never wait.
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
        // Every column but those the live table makes itself: an identity column's values come
        // from its own sequence (the copy's would collide with it), a generated one is computed.
        let columns: String = sqlx::query_scalar(
            "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname::text), ', ' ORDER BY a.attnum)
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1::text))
               AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
               AND a.attidentity OPERATOR(pg_catalog.=) '' AND a.attgenerated OPERATOR(pg_catalog.=) ''",
        )
        .bind(table)
        .fetch_one(&mut *tx)
        .await?;
        for statement in [
            format!(r#"DELETE FROM "{table}""#),
            format!(r#"INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{table}{REBUILD_SUFFIX}""#),
            format!(r#"TRUNCATE "{table}{REBUILD_SUFFIX}""#),
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

/// Empties `table`'s shadow copy if it exists; whether it does.
pub(in crate::projection) async fn empty_shadow(
    connection: &mut sqlx::PgConnection,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let shadow = format!("{table}{REBUILD_SUFFIX}");
    let exists: bool =
        sqlx::query_scalar("SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($1::text)) IS NOT NULL")
            .bind(&shadow)
            .fetch_one(&mut *connection)
            .await?;
    if exists {
        sqlx::query(&format!(r#"TRUNCATE "{shadow}""#)).execute(&mut *connection).await?;
    }
    Ok(exists)
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
