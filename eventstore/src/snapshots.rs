//! Snapshots: a stream's state stored every so many events, so that loading reads the latest
//! snapshot plus the events after it instead of the whole history
//! ([`crate::read_stream_from_snapshot`] reads both in one statement).

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A stored state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Snapshot {
    pub stream_version: i64,
    pub state: Value,
}

/// Stores `state` as the stream's state at `stream_version`. Storing the same version twice
/// keeps the first: both were folded from the same immutable events.
pub async fn save_snapshot(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    stream_version: i64,
    schema_version: i32,
    state: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO snapshots (stream_id, stream_version, schema_version, state)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(stream_id)
    .bind(stream_version)
    .bind(schema_version)
    .bind(state)
    .execute(executor)
    .await?;
    Ok(())
}
