//! Remembering handled commands, so that a retried command is answered, not applied again.
//!
//! The caller records a command in the same transaction as the events it appended (or alone,
//! for a refusal). What a request and an outcome look like is the caller's business: here they
//! are JSON.

use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProcessedCommand {
    pub request: Value,
    pub outcome: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A concurrent transaction recorded the same command first; this one must roll back and
    /// answer with what was recorded.
    #[error("command {0} was recorded concurrently")]
    AlreadyRecorded(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn find_processed(
    executor: impl PgExecutor<'_>,
    command_id: Uuid,
) -> Result<Option<ProcessedCommand>, sqlx::Error> {
    sqlx::query_as("SELECT request, outcome FROM processed_commands WHERE command_id = $1")
        .bind(command_id)
        .fetch_optional(executor)
        .await
}

/// Records the command; fails with [`RecordError::AlreadyRecorded`] (aborting the caller's
/// transaction) if another transaction recorded it first.
pub async fn record_processed(
    conn: &mut PgConnection,
    command_id: Uuid,
    request: &Value,
    outcome: &Value,
) -> Result<(), RecordError> {
    sqlx::query("INSERT INTO processed_commands (command_id, request, outcome) VALUES ($1, $2, $3)")
        .bind(command_id)
        .bind(request)
        .bind(outcome)
        .execute(conn)
        .await
        .map_err(|error| match crate::store::constraint(&error) {
            Some(crate::store::PROCESSED_COMMANDS_KEY) => RecordError::AlreadyRecorded(command_id),
            _ => RecordError::Database(error),
        })?;
    Ok(())
}

/// Forgets command ids processed more than `age` ago, except those in `keep`, a batch at a
/// time so that no statement holds many row locks or runs long; returns how many. A retry after
/// that is a new command: retries are safe within the retention only. `keep` is for ids a
/// caller still relies on past the retention (the steps of a transfer that has not finished).
pub async fn purge_older_than(
    pool: &sqlx::PgPool,
    age: std::time::Duration,
    keep: &[Uuid],
) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 5_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM processed_commands WHERE command_id IN (
                 SELECT command_id FROM processed_commands
                 WHERE processed_at < clock_timestamp() - make_interval(secs => $1)
                   AND command_id <> ALL($3)
                 LIMIT $2)",
        )
        .bind(age.as_secs_f64())
        .bind(BATCH)
        .bind(keep)
        .execute(pool)
        .await?
        .rows_affected();
        purged += deleted;
        if deleted < BATCH as u64 {
            return Ok(purged);
        }
    }
}
