//! Several streams' commands appended and recorded in one statement: the groups that the
//! streams' workers decided on warm states, committed together (see [`crate::group_commit`]).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::snapshots::SNAPSHOT_UPSERT;
use crate::{Appended, NewEvent, Position, SnapshotVersion};

/// One stream's share of the statement: its events, decided at `expected` (the version and the
/// id of the event there), its commands, each with its placeholder outcome and how many of the
/// events were appended by its end, and the stream's state after them if a snapshot is due.
pub struct StreamGroup {
    pub stream_id: Uuid,
    pub expected: (i64, Option<Uuid>),
    pub events: Vec<NewEvent>,
    pub commands: Vec<GroupedCommand>,
    /// Stored as the snapshot at the version after the group's events, with them.
    pub snapshot: Option<Value>,
}

/// What the groups of one aggregate's streams have in common: the streams' type, where in an
/// accepted outcome the version and the position go (see [`crate::CommandRecord`]), and what
/// its snapshots are made by.
#[derive(Debug, Clone, Copy)]
pub struct StreamKind {
    pub stream_type: &'static str,
    pub version_at: &'static [&'static str],
    pub position_at: &'static [&'static str],
    pub snapshot_version: SnapshotVersion,
}

pub struct GroupedCommand {
    pub command_id: Uuid,
    pub request: Value,
    /// The accepted outcome with placeholders at `version_at` and `position_at` (see
    /// [`crate::CommandRecord`]), filled in by the statement.
    pub outcome: Value,
    /// How many of the group's events were appended by this command's end.
    pub through: usize,
}

/// Appends each group's events to its stream and records its commands, in one statement (so in
/// the caller's transaction, or one of its own).
///
/// Returns, for each group in order, its commands' [`Appended`], or `None` if the group was
/// left out, nothing of it written: its stream is not at the expected version and event
/// (another writer moved it on), or one of its command ids was recorded before (a retry).
/// Leaving a group out does not fail the others.
///
/// # Panics
///
/// If two groups are of one stream: the second would be decided on a state without the first.
///
/// # Errors
///
/// The statement's. A concurrent writer's uncommitted append to one of the streams makes the
/// statement wait for it and, if it commits, fail on `events_stream_version_unique`; a command
/// id recorded concurrently fails it on `processed_commands_pkey`. Either way nothing at all
/// is written.
pub async fn append_streams_and_record(
    conn: &mut PgConnection,
    kind: StreamKind,
    groups: &[StreamGroup],
) -> Result<Vec<Option<Vec<Appended>>>, sqlx::Error> {
    let distinct: HashSet<Uuid> = groups.iter().map(|group| group.stream_id).collect();
    assert_eq!(distinct.len(), groups.len(), "one group per stream in a statement");
    let events =
        groups.iter().flat_map(|group| group.events.iter().enumerate().map(move |(at, event)| (group, at, event)));
    let mut streams = Vec::new();
    let mut expected_versions = Vec::new();
    let mut expected_last = Vec::new();
    let mut ordinals = Vec::new();
    let mut event_ids = Vec::new();
    let mut event_types = Vec::new();
    let mut schema_versions = Vec::new();
    let mut data = Vec::new();
    let mut metadata = Vec::new();
    for (group, at, event) in events {
        streams.push(group.stream_id);
        expected_versions.push(group.expected.0);
        expected_last.push(group.expected.1);
        ordinals.push(at as i64 + 1);
        event_ids.push(event.event_id);
        event_types.push(event.event_type.as_str());
        schema_versions.push(event.schema_version);
        data.push(&event.data);
        metadata.push(&event.metadata);
    }
    let commands = groups.iter().flat_map(|group| group.commands.iter().map(move |command| (group, command)));
    let mut command_ids = Vec::new();
    let mut requests = Vec::new();
    let mut outcomes = Vec::new();
    let mut command_streams = Vec::new();
    let mut last_versions = Vec::new();
    for (group, command) in commands {
        command_ids.push(command.command_id);
        requests.push(&command.request);
        outcomes.push(&command.outcome);
        command_streams.push(group.stream_id);
        last_versions.push(group.expected.0 + command.through as i64);
    }
    let snapshots = groups.iter().filter_map(|group| group.snapshot.as_ref().map(|state| (group, state)));
    let (mut snapshot_streams, mut snapshot_versions, mut snapshot_states) = (Vec::new(), Vec::new(), Vec::new());
    for (group, state) in snapshots {
        snapshot_streams.push(group.stream_id);
        snapshot_versions.push(group.expected.0 + group.events.len() as i64);
        snapshot_states.push(state);
    }
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(&APPEND_STREAMS_AND_RECORD)
        .bind(streams)
        .bind(expected_versions)
        .bind(expected_last)
        .bind(ordinals)
        .bind(event_ids)
        .bind(event_types)
        .bind(schema_versions)
        .bind(data)
        .bind(metadata)
        .bind(kind.stream_type)
        .bind(command_ids)
        .bind(requests)
        .bind(outcomes)
        .bind(command_streams)
        .bind(last_versions)
        .bind(kind.version_at)
        .bind(kind.position_at)
        .bind(snapshot_streams)
        .bind(snapshot_versions)
        .bind(snapshot_states)
        .bind(kind.snapshot_version.schema)
        .bind(kind.snapshot_version.fold)
        .fetch_all(&mut *conn)
        .await?;
    // Looked up once per command: a statement carries up to a thousand of each.
    let appended: HashMap<(Uuid, i64), Position> = rows
        .into_iter()
        .map(|(stream_id, version, transaction_id, global_position)| {
            ((stream_id, version), Position { transaction_id, global_position })
        })
        .collect();
    Ok(groups
        .iter()
        .map(|group| {
            // A group is written whole or not at all: a command without its row means none has.
            let (expected_version, _) = group.expected;
            group
                .commands
                .iter()
                .map(|command| {
                    let version = expected_version + command.through as i64;
                    appended.get(&(group.stream_id, version)).map(|&position| Appended { version, position })
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect())
}

/// The events ($1..$9, one element per event: its stream, the stream's expected version and
/// last event, its ordinal in its group, then the event) of the streams that are where their
/// group expects them and none of whose commands ($11..$15, one element per command) was
/// recorded before, inserted in the order given; then each command's record, from the row of
/// its last event, with that row's version and position written at $16 and $17 of its
/// outcome; then the snapshots due ($18..$20: stream, version, state; $21, $22: the
/// snapshot's schema and fold versions) of the streams written. The streams with a command
/// recorded before are looked up once for all (materialised): per stream, the probe would run
/// once for every command of the statement.
static APPEND_STREAMS_AND_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!("WITH given AS (
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::bigint[], $5::uuid[], $6::text[],
                              $7::int[], $8::jsonb[], $9::jsonb[])
             WITH ORDINALITY AS e(stream_id, expected_version, expected_last, ord, event_id, event_type,
                                  schema_version, data, metadata, n)),
     commands AS (
         SELECT * FROM UNNEST($11::uuid[], $12::jsonb[], $13::jsonb[], $14::uuid[], $15::bigint[])
             AS c(command_id, request, outcome, stream_id, last_version)),
     recorded_before AS MATERIALIZED (
         SELECT DISTINCT c.stream_id FROM commands c JOIN processed_commands p USING (command_id)),
     ready AS (
         SELECT s.stream_id, s.expected_version
         FROM (SELECT DISTINCT stream_id, expected_version, expected_last FROM given) s
         WHERE (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = s.stream_id) = s.expected_version
           AND (s.expected_last IS NULL
                OR EXISTS (SELECT 1 FROM events
                           WHERE stream_id = s.stream_id AND stream_version = s.expected_version
                             AND event_id = s.expected_last))
           AND NOT EXISTS (SELECT 1 FROM recorded_before r WHERE r.stream_id = s.stream_id)),
     appended AS (
         INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data, metadata)
         SELECT e.event_id, $10, e.stream_id, e.expected_version + e.ord, e.event_type, e.schema_version, e.data, e.metadata
         FROM given e JOIN ready USING (stream_id, expected_version)
         ORDER BY e.n
         RETURNING stream_id, stream_version, transaction_id::text::bigint AS transaction_id, global_position),
     recorded AS (
         INSERT INTO processed_commands (command_id, request, outcome)
         SELECT c.command_id, c.request,
                jsonb_set(jsonb_set(c.outcome, $16, to_jsonb(a.stream_version)),
                          $17, to_jsonb(a.transaction_id::text || ':' || a.global_position::text))
         FROM commands c JOIN appended a ON a.stream_id = c.stream_id AND a.stream_version = c.last_version
         ORDER BY c.command_id
         RETURNING command_id),
     snapshotted AS (
         INSERT INTO snapshots (stream_id, stream_version, schema_version, fold_version, state)
         SELECT s.stream_id, s.stream_version, $21, $22, s.state
         FROM UNNEST($18::uuid[], $19::bigint[], $20::jsonb[]) AS s(stream_id, stream_version, state)
         JOIN ready USING (stream_id)
         {SNAPSHOT_UPSERT}
         RETURNING stream_id)
     SELECT stream_id, stream_version, transaction_id, global_position FROM appended")
});
