//! Reading one stream: its events, from its newest snapshot, and its versions and times.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::RECORDED_EVENT_COLUMNS;
use crate::RecordedEvent;
use crate::snapshots::{Snapshot, SnapshotVersion};

/// The events of one stream with a version above `after_version`, in version order.
pub async fn read_stream(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    read_stream_until(executor, stream_id, after_version, i64::MAX).await
}

/// The events of one stream with `after_version < version <= until_version`, in version order.
pub async fn read_stream_until(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    after_version: i64,
    until_version: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RECORDED_EVENT_COLUMNS} FROM events
         WHERE stream_id = $1 AND stream_version > $2 AND stream_version <= $3
         ORDER BY stream_version"
    ))
    .bind(stream_id)
    .bind(after_version)
    .bind(until_version)
    .fetch_all(executor)
    .await
}

/// A stream as loading needs it: the newest snapshot at or below `up_to_version` made by
/// `version` (snapshots made by another are ignored), if any, and the events after it up to
/// `up_to_version`, in one round trip.
pub async fn read_stream_from_snapshot(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    up_to_version: i64,
    version: SnapshotVersion,
) -> Result<(Option<Snapshot>, Vec<RecordedEvent>), sqlx::Error> {
    let rows: Vec<SnapshotAndEvent> = sqlx::query_as(&format!(
        "WITH snapshot AS (
             SELECT stream_version, state FROM snapshots
             WHERE stream_id = $1 AND stream_version <= $2 AND schema_version = $3 AND fold_version = $4
             ORDER BY stream_version DESC LIMIT 1
         )
         SELECT s.stream_version AS snapshot_version, s.state AS snapshot_state, e.*
         FROM (SELECT 1) AS one
         LEFT JOIN snapshot s ON true
         LEFT JOIN LATERAL (
             SELECT {RECORDED_EVENT_COLUMNS} FROM events
             WHERE stream_id = $1 AND stream_version > coalesce(s.stream_version, 0) AND stream_version <= $2
         ) e ON true
         ORDER BY e.stream_version"
    ))
    .bind(stream_id)
    .bind(up_to_version)
    .bind(version.schema)
    .bind(version.fold)
    .fetch_all(executor)
    .await?;
    let snapshot = rows
        .first()
        .and_then(|row| Some(Snapshot { stream_version: row.snapshot_version?, state: row.snapshot_state.clone()? }));
    let events = rows.into_iter().filter_map(SnapshotAndEvent::into_event).collect();
    Ok((snapshot, events))
}

/// One row of [`read_stream_from_snapshot`]: the snapshot's columns repeated, and an event's
/// (all null when there is no event after the snapshot).
#[derive(sqlx::FromRow)]
struct SnapshotAndEvent {
    snapshot_version: Option<i64>,
    snapshot_state: Option<serde_json::Value>,
    global_position: Option<i64>,
    transaction_id: Option<i64>,
    event_id: Option<Uuid>,
    stream_type: Option<String>,
    stream_id: Option<Uuid>,
    stream_version: Option<i64>,
    event_type: Option<String>,
    schema_version: Option<i32>,
    data: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
    recorded_at: Option<time::OffsetDateTime>,
}

impl SnapshotAndEvent {
    fn into_event(self) -> Option<RecordedEvent> {
        Some(RecordedEvent {
            global_position: self.global_position?,
            transaction_id: self.transaction_id?,
            event_id: self.event_id?,
            stream_type: self.stream_type?,
            stream_id: self.stream_id?,
            stream_version: self.stream_version?,
            event_type: self.event_type?,
            schema_version: self.schema_version?,
            data: self.data?,
            metadata: self.metadata?,
            recorded_at: self.recorded_at?,
        })
    }
}

/// The stream's newest version; 0 for a stream without events.
pub async fn latest_version(executor: impl PgExecutor<'_>, stream_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1")
        .bind(stream_id)
        .fetch_one(executor)
        .await
}

/// The stream's last version recorded before `end`; 0 if it had no event yet. The bound is
/// exclusive, and the lookup a range scan on `(stream_id, recorded_at)`.
pub async fn version_before(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    end: time::OffsetDateTime,
) -> Result<i64, sqlx::Error> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1 AND recorded_at < $2")
            .bind(stream_id)
            .bind(end)
            .fetch_one(executor)
            .await?;
    Ok(version.unwrap_or(0))
}

/// When the stream began (its first event was recorded) and when its event at `version` was;
/// `None` if either does not exist.
pub async fn stream_times(
    executor: impl PgExecutor<'_>,
    stream_id: Uuid,
    version: i64,
) -> Result<Option<(time::OffsetDateTime, time::OffsetDateTime)>, sqlx::Error> {
    let (began, at_version): (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>) = sqlx::query_as(
        "SELECT min(recorded_at) FILTER (WHERE stream_version = 1), min(recorded_at) FILTER (WHERE stream_version = $2)
         FROM events WHERE stream_id = $1 AND stream_version IN (1, $2)",
    )
    .bind(stream_id)
    .bind(version)
    .fetch_one(executor)
    .await?;
    Ok(began.zip(at_version))
}
