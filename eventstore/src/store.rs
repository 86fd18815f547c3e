//! Appending and reading events.

use std::sync::LazyLock;

use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::projection::Partition;
use crate::snapshots::{Snapshot, SnapshotVersion};
use crate::{NewEvent, Position, RecordedEvent};

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to the stream since it was read. Reload and decide again.
    #[error("stream {stream_id} is no longer at version {expected_version}")]
    Conflict { stream_id: Uuid, expected_version: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an append wrote: the stream's new version and the position of its last event, which is
/// the consistency token the command answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub version: i64,
    pub position: Position,
}

const RECORDED_EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, \
     event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata, recorded_at";

/// Appends `events` to `stream_id`, which must be at `expected_version` (0 for a new stream).
///
/// One statement, so it is atomic on its own; run it inside the caller's transaction to commit
/// it together with other writes. The version check and the `UNIQUE (stream_id,
/// stream_version)` constraint together make a stale writer fail with
/// [`AppendError::Conflict`] instead of overwriting or leaving a gap. On a conflict the caller's
/// transaction is aborted and must be rolled back.
#[tracing::instrument(skip(conn, events), fields(events = events.len()))]
pub async fn append(
    conn: &mut PgConnection,
    stream_type: &str,
    stream_id: Uuid,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<Appended, AppendError> {
    let insert = sqlx::query_as(INSERT_EVENTS);
    let rows: Vec<(i64, i64, i64)> = bind_events(insert, stream_type, stream_id, expected_version, None, events)
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| match constraint(&error) {
            Some(EVENTS_UNIQUE) => AppendError::Conflict { stream_id, expected_version },
            _ => AppendError::Database(error),
        })?;
    let (version, transaction_id, global_position) =
        *rows.iter().max().ok_or(AppendError::Conflict { stream_id, expected_version })?;
    Ok(Appended { version, position: Position { transaction_id, global_position } })
}

/// A command to remember with its events (see [`append_and_record`]): its id, its request, and
/// its outcome, into which the statement writes the stream's new version and the position of
/// the last event, which only the insert knows.
pub struct CommandRecord<'a> {
    pub command_id: Uuid,
    pub request: &'a serde_json::Value,
    pub outcome: &'a serde_json::Value,
    /// Where in `outcome` the version goes (a number) ...
    pub version_at: &'a [&'a str],
    /// ... and the position (its token, `"<transaction_id>:<global_position>"`, as
    /// [`Position`] is serialised).
    pub position_at: &'a [&'a str],
}

#[derive(Debug, thiserror::Error)]
pub enum AppendAndRecordError {
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The command was recorded by a concurrent transaction first (the caller's is aborted).
    #[error("command {0} was recorded concurrently")]
    AlreadyRecorded(Uuid),
}

/// [`append`], and the command's row in `processed_commands`, in one statement: one round trip
/// instead of two for every accepted command. Fails as [`append`] does, or with
/// [`AppendAndRecordError::AlreadyRecorded`] when the command id is taken.
///
/// `expected_last_event`, if given, is the id of the event at `expected_version`: the stream
/// must hold that very event there, not only an event at that version. A writer that decided on
/// a state it kept from earlier (not read in this transaction) gives it, so that a history the
/// database lost and another writer refilled up to the same version (a restore, a failover to a
/// standby that was behind) is a conflict rather than a match. Event ids are never reused.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn append_and_record(
    conn: &mut PgConnection,
    stream_type: &str,
    stream_id: Uuid,
    expected_version: i64,
    expected_last_event: Option<Uuid>,
    events: &[NewEvent],
    command: &CommandRecord<'_>,
) -> Result<Appended, AppendAndRecordError> {
    let conflict = || AppendError::Conflict { stream_id, expected_version };
    let insert = sqlx::query_as(APPEND_AND_RECORD.as_str());
    let row: Option<(i64, i64, i64)> =
        bind_events(insert, stream_type, stream_id, expected_version, expected_last_event, events)
            .bind(command.command_id)
            .bind(command.request)
            .bind(command.outcome)
            .bind(command.version_at)
            .bind(command.position_at)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|error| match constraint(&error) {
                Some(EVENTS_UNIQUE) => AppendAndRecordError::Append(conflict()),
                Some(PROCESSED_COMMANDS_KEY) => AppendAndRecordError::AlreadyRecorded(command.command_id),
                _ => AppendAndRecordError::Append(AppendError::Database(error)),
            })?;
    let (version, transaction_id, global_position) = row.ok_or_else(conflict)?;
    Ok(Appended { version, position: Position { transaction_id, global_position } })
}

/// [`INSERT_EVENTS`], then the command's record ($10..$14) from its last row. Data-modifying
/// CTEs run exactly once, whether or not the outer query reads them; the command is recorded
/// only if the events were appended (`last` has a row). Made once: it is sent with every
/// command on a warm stream.
static APPEND_AND_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH appended AS ({INSERT_EVENTS}),
              last AS (SELECT * FROM appended ORDER BY stream_version DESC LIMIT 1),
              recorded AS (
                  INSERT INTO processed_commands (command_id, request, outcome)
                  SELECT $10, $11,
                         jsonb_set(jsonb_set($12, $13, to_jsonb(last.stream_version)),
                                   $14, to_jsonb(last.transaction_id::text || ':' || last.global_position::text))
                  FROM last
                  RETURNING command_id)
         SELECT stream_version, transaction_id, global_position FROM last"
    )
});

const EVENTS_UNIQUE: &str = "events_stream_version_unique";
pub(crate) const PROCESSED_COMMANDS_KEY: &str = "processed_commands_pkey";

/// The constraint a statement broke, if that is why it failed.
pub(crate) fn constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Inserts the events ($3..$7, in order) at the versions after $2 of stream $1 (type $8), if
/// the stream is at version $2 (and, if $9 is not null, holds event $9 there); returns each
/// one's version and position.
const INSERT_EVENTS: &str =
    "INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata)
     SELECT e.event_id, $8, $1, $2 + e.ord, e.event_type, e.schema_version, e.data, e.metadata
     FROM UNNEST($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[])
          WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, ord)
     WHERE (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1) = $2
       AND ($9::uuid IS NULL
            OR EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND stream_version = $2 AND event_id = $9))
     ORDER BY e.ord
     RETURNING stream_version, transaction_id::text::bigint AS transaction_id, global_position";

/// Binds [`INSERT_EVENTS`]'s parameters.
fn bind_events<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    stream_type: &'q str,
    stream_id: Uuid,
    expected_version: i64,
    expected_last_event: Option<Uuid>,
    events: &'q [NewEvent],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    assert!(!events.is_empty(), "an append needs at least one event");
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schema_versions: Vec<i32> = events.iter().map(|e| e.schema_version).collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.data).collect();
    let metadata: Vec<&serde_json::Value> = events.iter().map(|e| &e.metadata).collect();
    query
        .bind(stream_id)
        .bind(expected_version)
        .bind(event_ids)
        .bind(event_types)
        .bind(schema_versions)
        .bind(data)
        .bind(metadata)
        .bind(stream_type)
        .bind(expected_last_event)
}

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

/// Begins a transaction in which the writers of one stream take turns.
///
/// Optimistic concurrency alone is correct but, under contention on one stream, each writer
/// that loses the race must reload and decide again, and a busy stream can starve it. A
/// transaction-scoped advisory lock taken before loading serialises the stream's writers so
/// that none loses. It does not replace the version check, which still guards writers that do
/// not take it.
///
/// Both waits are bounded: for the lock ([`WRITER_TIMEOUTS`]: a writer of another process that
/// stopped answering cannot hold the stream for longer), and for the writer itself, whose
/// transaction Postgres ends if its process stops answering mid-way — an open transaction would
/// otherwise hold every reader of the log back (they read below the oldest one running).
///
/// The lock is its own statement, not part of `BEGIN`'s: a lock wait that runs out inside the
/// statement that begins the transaction fails a transaction sqlx does not know it began, and
/// the connection went back to the pool still inside it, failing whatever used it next.
pub async fn begin_with_stream_lock(
    pool: &PgPool,
    stream_id: Uuid,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin_with(format!("BEGIN; {WRITER_TIMEOUTS}")).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(stream_lock_key(stream_id)).execute(&mut *tx).await?;
    Ok(tx)
}

/// The bounds of a writer's transaction: how long it waits for a lock, and how long it may sit
/// idle (its process paused or cut off) before Postgres ends it. A lock wait that runs out is
/// [`crate::is_transient`]: the caller may retry.
pub const WRITER_TIMEOUTS: &str = "SET LOCAL lock_timeout = '3s'; SET LOCAL idle_in_transaction_session_timeout = '3s'";

/// The advisory lock a stream's writers take turns on. Advisory locks take a bigint; two
/// streams that share one only take turns needlessly.
pub fn stream_lock_key(stream_id: Uuid) -> i64 {
    let (high, low) = stream_id.as_u64_pair();
    (high ^ low) as i64
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
