//! Appending events to a stream, alone or with the command's record, and the turns a stream's
//! writers take.

use std::sync::LazyLock;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{NewEvent, Position};

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

/// Appends `events` to `stream_id`, which must be at `expected_version` (0 for a new stream).
///
/// One statement, so it is atomic on its own; run it inside the caller's transaction to commit
/// it together with other writes. The version check and the `UNIQUE (stream_id,
/// stream_version)` constraint together make a stale writer fail with
/// [`AppendError::Conflict`] instead of overwriting or leaving a gap.
///
/// # Errors
///
/// [`AppendError::Conflict`] when the stream is not at `expected_version`;
/// [`AppendError::Database`] when the statement fails. Either way the caller's transaction is
/// aborted and must be rolled back.
///
/// # Cancel safety
///
/// Dropped before it returns, the statement may or may not have run inside the caller's
/// transaction; nothing is visible to others until that transaction commits, and a dropped
/// transaction rolls back.
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
/// instead of two for every accepted command.
///
/// `expected_last_event`, if given, is the id of the event at `expected_version`: the stream
/// must hold that very event there, not only an event at that version. A writer that decided on
/// a state it kept from earlier (not read in this transaction) gives it, so that a history the
/// database lost and another writer refilled up to the same version (a restore, a failover to a
/// standby that was behind) is a conflict rather than a match. Event ids are never reused.
///
/// # Errors
///
/// As [`append`] (a conflict, a failed statement), or
/// [`AppendAndRecordError::AlreadyRecorded`] when another transaction recorded the command id
/// first. Cancel safety is [`append`]'s.
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

pub(crate) const EVENTS_UNIQUE: &str = "events_stream_version_unique";
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
