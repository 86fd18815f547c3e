//! A projection's checkpoint row: where it is, who runs it, what state it is in, and the
//! operator's levers (retry, skip, rebuild).

use sqlx::{PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;

use crate::Position;

pub use crate::status::{ProjectionState, ProjectionStatus, RebuildProgress};

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

pub(super) async fn advance(conn: &mut PgConnection, name: &str, to: Position, applied: usize) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = $2::text::xid8, global_position = $3, events_applied = events_applied + $4,
             updated_at = clock_timestamp()
         WHERE projection_name = $1",
    )
    .bind(name)
    .bind(to.transaction_id.to_string())
    .bind(to.global_position)
    .bind(applied as i64)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn state(executor: impl PgExecutor<'_>, name: &str) -> Result<ProjectionState, sqlx::Error> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM projection_checkpoints WHERE projection_name = $1")
        .bind(name)
        .fetch_optional(executor)
        .await?;
    Ok(state.as_deref().map_or(ProjectionState::Running, ProjectionState::parse))
}

pub(super) async fn claim(conn: &mut PgConnection, name: &str, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection_name, owner_instance, owner_heartbeat_at)
         VALUES ($1, $2, clock_timestamp())
         ON CONFLICT (projection_name) DO UPDATE SET owner_instance = $2, owner_heartbeat_at = clock_timestamp()",
    )
    .bind(name)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn heartbeat(conn: &mut PgConnection, name: &str, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET owner_heartbeat_at = clock_timestamp()
         WHERE projection_name = $1 AND owner_instance = $2",
    )
    .bind(name)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn disown(conn: &mut PgConnection, name: &str, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET owner_instance = NULL, owner_heartbeat_at = NULL
         WHERE projection_name = $1 AND owner_instance = $2",
    )
    .bind(name)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stops the projection at the event at `position`.
pub(super) async fn fail(pool: &PgPool, name: &str, position: Position, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints
         SET state = 'failed', last_error = $2, failed_transaction_id = $3::text::xid8,
             failed_global_position = $4, failed_at = clock_timestamp()
         WHERE projection_name = $1",
    )
    .bind(name)
    .bind(error)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .execute(pool)
    .await?;
    Ok(())
}

/// Lets a failed projection try its failing event again (after a fix). False if it had not
/// failed.
pub async fn retry(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_checkpoints
         SET state = 'running', last_error = NULL, failed_transaction_id = NULL,
             failed_global_position = NULL, failed_at = NULL
         WHERE projection_name = $1 AND state = 'failed'",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Moves a failed projection past its failing event, recording the skip and the error in
/// `skipped_events`. False if it had not failed.
pub async fn skip_failed_event(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let skipped = sqlx::query(
        "INSERT INTO skipped_events (projection_name, global_position, transaction_id, error)
         SELECT projection_name, failed_global_position, failed_transaction_id, coalesce(last_error, '')
         FROM projection_checkpoints
         WHERE projection_name = $1 AND state = 'failed' AND failed_global_position IS NOT NULL
         FOR UPDATE",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if skipped.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "UPDATE projection_checkpoints
         SET transaction_id = failed_transaction_id, global_position = failed_global_position,
             state = 'running', last_error = NULL, failed_transaction_id = NULL,
             failed_global_position = NULL, failed_at = NULL, updated_at = clock_timestamp()
         WHERE projection_name = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Asks the projection's leader to rebuild it into shadow tables and swap them in. False if
/// the projection is failed or already rebuilding.
pub async fn request_rebuild(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_checkpoints SET state = 'rebuilding', last_error = NULL
         WHERE projection_name = $1 AND state = 'running'",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn rebuild_started(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE projection_name = $1)")
        .bind(rebuild_checkpoint_name(name))
        .fetch_one(pool)
        .await
}

/// Gives up a rebuild that cannot apply an event: drops the shadow tables and says why in the
/// status. The live tables, which did apply the event, keep running.
pub(super) async fn abort_rebuild(pool: &PgPool, name: &str, tables: &[&str], error: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in tables {
        sqlx::query(&format!(r#"DROP TABLE IF EXISTS "{table}_rebuild""#)).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = $1")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE projection_checkpoints SET state = 'running', last_error = $2 WHERE projection_name = $1")
        .bind(name)
        .bind(format!("rebuild stopped: {error}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Creates empty shadow copies of the projection's tables and a checkpoint at the start.
pub(super) async fn start_rebuild(pool: &PgPool, name: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in tables {
        for statement in [
            format!(r#"DROP TABLE IF EXISTS "{table}_rebuild""#),
            format!(r#"CREATE TABLE "{table}_rebuild" (LIKE "{table}" INCLUDING ALL)"#),
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

/// If the shadow tables have caught up with the live checkpoint, swaps them in, atomically:
/// readers see the old tables or the new ones, never a mix. False if not caught up yet.
pub(super) async fn swap_rebuilt(pool: &PgPool, name: &str, tables: &[&str]) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let live = lock_checkpoint(&mut tx, name).await?;
    let shadow = lock_checkpoint(&mut tx, &rebuild_checkpoint_name(name)).await?;
    if shadow != live {
        tx.rollback().await?;
        return Ok(false);
    }
    for table in tables {
        for statement in [
            format!(r#"ALTER TABLE "{table}" RENAME TO "{table}_replaced""#),
            format!(r#"ALTER TABLE "{table}_rebuild" RENAME TO "{table}""#),
            format!(r#"DROP TABLE "{table}_replaced""#),
        ] {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection_name = $1")
        .bind(rebuild_checkpoint_name(name))
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE projection_checkpoints SET state = 'running', last_error = NULL WHERE projection_name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    projection_name: String,
    state: String,
    transaction_id: i64,
    global_position: i64,
    events_applied: i64,
    last_error: Option<String>,
    failed_transaction_id: Option<i64>,
    failed_global_position: Option<i64>,
    owner_instance: Option<String>,
    owner_heartbeat_at: Option<OffsetDateTime>,
    lag_events: i64,
    lag_seconds: f64,
    rebuild_done: Option<i64>,
}

/// A leader that has not said so for this long is taken for gone.
const OWNER_TIMEOUT_SECONDS: i64 = 10;
/// More events behind than this, or older than this, is "catching up".
const CATCHING_UP_EVENTS: i64 = 1000;
const CATCHING_UP_SECONDS: f64 = 5.0;

/// The status of every projection.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let head: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events
         ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let head = head.map_or(Position::START, |(transaction_id, global_position)| Position { transaction_id, global_position });
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    let oldest_transaction_seconds: f64 = sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start))::float8, 0)
         FROM pg_stat_activity WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await?;
    let rows: Vec<StatusRow> = sqlx::query_as(
        "SELECT c.projection_name, c.state, c.transaction_id::text::bigint AS transaction_id, c.global_position,
                c.events_applied, c.last_error, c.failed_transaction_id::text::bigint AS failed_transaction_id,
                c.failed_global_position, c.owner_instance, c.owner_heartbeat_at,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                    WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                    LIMIT 1000000) behind) AS lag_events,
                coalesce((SELECT extract(epoch FROM clock_timestamp() - min(e.recorded_at))::float8 FROM events e
                    WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)), 0) AS lag_seconds,
                (SELECT r.events_applied FROM projection_checkpoints r
                    WHERE r.projection_name = c.projection_name || '#rebuild') AS rebuild_done
         FROM projection_checkpoints c
         WHERE c.projection_name NOT LIKE '%#rebuild'
         ORDER BY c.projection_name",
    )
    .fetch_all(pool)
    .await?;
    let now = OffsetDateTime::now_utc();
    Ok(rows
        .into_iter()
        .map(|row| {
            let state = ProjectionState::parse(&row.state);
            let led = row
                .owner_heartbeat_at
                .is_some_and(|at| (now - at).whole_seconds() < OWNER_TIMEOUT_SECONDS);
            let summary = match state {
                ProjectionState::Failed => "failed",
                ProjectionState::Rebuilding => "rebuilding",
                ProjectionState::Running if !led => "not running",
                ProjectionState::Running if row.lag_events > CATCHING_UP_EVENTS || row.lag_seconds > CATCHING_UP_SECONDS => {
                    "catching up"
                }
                ProjectionState::Running => "running",
            };
            ProjectionStatus {
                name: row.projection_name,
                state,
                summary: summary.to_owned(),
                checkpoint: Position { transaction_id: row.transaction_id, global_position: row.global_position },
                head,
                lag_events: row.lag_events,
                lag_seconds: row.lag_seconds,
                events_applied: row.events_applied,
                last_error: row.last_error,
                failed_position: row
                    .failed_transaction_id
                    .zip(row.failed_global_position)
                    .map(|(transaction_id, global_position)| Position { transaction_id, global_position }),
                owner_instance: if led { row.owner_instance } else { None },
                owner_heartbeat_at: row.owner_heartbeat_at,
                rebuild: row.rebuild_done.map(|done| RebuildProgress { done, total }),
                oldest_transaction_seconds,
            }
        })
        .collect())
}
