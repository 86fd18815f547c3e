//! Reading the whole log in order: its head, batches past a position (of every stream, or of one
//! partition's), and which streams a stretch of it changed.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::RECORDED_EVENT_COLUMNS;
use crate::projection::Partition;
use crate::{Position, RecordedEvent};

/// The position of the newest event in reader order; [`Position::START`] for an empty store.
pub async fn head(executor: impl PgExecutor<'_>) -> Result<Position, sqlx::Error> {
    let head: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events
         ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1",
    )
    .fetch_optional(executor)
    .await?;
    Ok(head.map_or(Position::START, |(transaction_id, global_position)| Position { transaction_id, global_position }))
}

/// What a reader that wants only some event types got from one step along the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogBatch {
    /// The events of the wanted types, in reader order.
    pub events: Vec<RecordedEvent>,
    /// How many events were read past, wanted or not.
    pub read: usize,
    /// The position of the last event read past: where the reader's checkpoint may move to.
    pub read_to: Option<Position>,
    /// The id of that event: a checkpoint outside Postgres names it (see [`crate::history`]).
    pub read_to_event: Option<Uuid>,
}

/// Up to `limit` events after `after` in the global log, as [`read_all_after`] reads them, of
/// which only those of `event_types` are returned whole: a reader passes the others by (their
/// positions still count) without their data being sent. A projection that declares what it
/// reads is never shown another aggregate's events.
pub async fn read_batch(
    executor: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
    event_types: &[&str],
) -> Result<LogBatch, sqlx::Error> {
    read_partition_batch(executor, after, limit, event_types, Partition::WHOLE).await
}

/// [`read_batch`] for one partition of a projection: only events of `event_types` on the
/// partition's streams are returned whole; the others are passed by, so that the partition's
/// checkpoint keeps up with the log even while none of its streams change.
pub async fn read_partition_batch(
    executor: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
    event_types: &[&str],
    partition: Partition,
) -> Result<LogBatch, sqlx::Error> {
    let rows: Vec<PassedOrWanted> = sqlx::query_as(
        "SELECT global_position, transaction_id::text::bigint AS transaction_id, event_id, stream_type, stream_id,
                stream_version,
                event_type, schema_version, recorded_at, wanted,
                CASE WHEN wanted THEN data END AS data, CASE WHEN wanted THEN metadata END AS metadata
         FROM (SELECT e.*, e.event_type = ANY($4) AND ($6 = 1 OR stream_partition(e.stream_id, $6) = $5) AS wanted
               FROM events e
               WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
                 AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY e.transaction_id, e.global_position
               LIMIT $3) scanned
         ORDER BY scanned.transaction_id, scanned.global_position",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .bind(event_types)
    .bind(partition.index as i32)
    .bind(partition.count as i32)
    .fetch_all(executor)
    .await?;
    let read_to =
        rows.last().map(|row| Position { transaction_id: row.transaction_id, global_position: row.global_position });
    let read_to_event = rows.last().map(|row| row.event_id);
    let read = rows.len();
    let events = rows.into_iter().filter_map(PassedOrWanted::into_wanted).collect();
    Ok(LogBatch { events, read, read_to, read_to_event })
}

/// One row of [`read_batch`]: an event, whole if wanted.
#[derive(sqlx::FromRow)]
struct PassedOrWanted {
    global_position: i64,
    transaction_id: i64,
    event_id: Uuid,
    stream_type: String,
    stream_id: Uuid,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    recorded_at: time::OffsetDateTime,
    wanted: bool,
    data: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
}

impl PassedOrWanted {
    fn into_wanted(self) -> Option<RecordedEvent> {
        self.wanted.then_some(())?;
        Some(RecordedEvent {
            global_position: self.global_position,
            transaction_id: self.transaction_id,
            event_id: self.event_id,
            stream_type: self.stream_type,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            data: self.data?,
            metadata: self.metadata?,
            recorded_at: self.recorded_at,
        })
    }
}

/// Up to `limit` events after `after` in the global log, in reader order, never skipping one.
///
/// Only events of transactions older than every transaction still running are returned: a
/// transaction still in flight may yet commit events that sort before ones already visible, and
/// returning the later ones first would make the reader's checkpoint jump past them.
pub async fn read_all_after(
    executor: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RECORDED_EVENT_COLUMNS} FROM events
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         -- Qualified: a bare `transaction_id` would name the selected bigint, not the indexed
         -- column, and every batch would sort the whole unread log.
         ORDER BY events.transaction_id, events.global_position
         LIMIT $3"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// A stream that changed within a range of the log, and the lowest version it reached there
/// (1: the stream began there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangedStream {
    pub stream_id: Uuid,
    pub first_version: i64,
}

/// The streams of `stream_type` with events in `(after, up_to]`, in no particular order; `None`
/// if the range holds more than `max_events` events (of any type): reading it would cost more
/// than naming what changed is worth. `up_to` must be a position every event at or below which
/// is committed — a projection's checkpoint is — so that the answer never changes later.
pub async fn changed_streams(
    executor: impl PgExecutor<'_>,
    stream_type: &str,
    after: Position,
    up_to: Position,
    max_events: i64,
) -> Result<Option<Vec<ChangedStream>>, sqlx::Error> {
    let rows: Vec<(Option<Uuid>, Option<i64>, i64)> = sqlx::query_as(
        "WITH slice AS (
             SELECT stream_type, stream_id, stream_version FROM events
             WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2)
               AND (events.transaction_id, events.global_position) <= ($3::text::xid8, $4)
             ORDER BY events.transaction_id, events.global_position
             LIMIT $6 + 1
         ),
         scanned AS (SELECT count(*) AS events FROM slice)
         SELECT changed.stream_id, changed.first_version, scanned.events
         FROM scanned LEFT JOIN (
             SELECT stream_id, min(stream_version) AS first_version FROM slice
             WHERE stream_type = $5 GROUP BY stream_id
         ) changed ON true",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(up_to.transaction_id.to_string())
    .bind(up_to.global_position)
    .bind(stream_type)
    .bind(max_events)
    .fetch_all(executor)
    .await?;
    if rows.first().is_some_and(|(_, _, scanned)| *scanned > max_events) {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|(stream_id, first_version, _)| {
                Some(ChangedStream { stream_id: stream_id?, first_version: first_version? })
            })
            .collect(),
    ))
}
