//! The command loop, for any [`Aggregate`]: join the stream's queue in this process, where one
//! worker per stream takes the commands in turn. On a warm stream (one whose state this process
//! kept after its last command), the worker decides every waiting command in order on that
//! state, and the group's events and records (and a snapshot, when due) are appended in one
//! statement, its own transaction, shared with the groups other streams' workers have ready at
//! the same time ([`crate::group_commit`]): one round trip and one commit for all of them.
//! Otherwise, or when that append finds the stream moved on (another process wrote it), or for
//! a refusal: lock the stream, answer a retried command from its remembered outcome, load from
//! the latest snapshot, decide, append and remember in one statement, snapshot when due — once
//! per command, however often it is sent — and decide again on fresh state after losing a race.
//!
//! Why the warm path needs no lock: the append checks, in the statement that inserts, that the
//! stream is still at the kept version and holds the kept last event there; an insert racing
//! another writer's fails on the unique `(stream_id, stream_version)`. The stream lock only
//! makes contending writers wait instead of retry; correctness never rested on it. A refusal is
//! remembered for good, so it is only ever decided on a state read under the lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::{self, Aggregate, LATEST, LoadError, snapshot_due};
use crate::command_queue::{CommandQueues, Joined, TooBusy};
use crate::group_commit::GroupCommit;
use crate::processed_commands::{ProcessedCommand, RecordError, find_processed, record_processed};
use crate::store::{
    AppendAndRecordError, AppendError, CommandRecord, GroupedCommand, StreamGroup, StreamKind, WRITER_TIMEOUTS,
    append_and_record, begin_with_stream_lock,
};
use crate::warm_streams::{WarmState, WarmStreams};
use crate::{AppendNotifier, Position};

/// A command and what identifies it: its id (the idempotency key), the correlation id of the
/// conversation it belongs to, and the stream it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnvelope<C> {
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub stream_id: Uuid,
    pub command: C,
    /// The event that caused the command, if an event did (a process manager's step); else
    /// the command is its events' cause.
    pub causation_id: Option<Uuid>,
    /// What the application adds to each event's metadata (who asked, the request id); the
    /// store's own keys win over these.
    pub metadata: serde_json::Map<String, Value>,
}

/// A command's events are stored: the stream's version after them and the position of the
/// last, which a reader may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    // Outcomes remembered before commands were generic named the stream `accountId`.
    #[serde(alias = "accountId")]
    pub stream_id: Uuid,
    pub version: i64,
    pub position: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<Refusal, DecodeError> {
    /// The aggregate refused the command; that is remembered too.
    #[error(transparent)]
    Rejected(Refusal),
    /// Other writers kept appending to the stream; nothing was written.
    #[error("{stream_type} {stream_id} kept changing concurrently; the command was not applied, please retry")]
    Conflict { stream_type: &'static str, stream_id: Uuid },
    /// The command id was used before for a different command.
    #[error("command id {command_id} was already used for a different command")]
    CommandIdReused { command_id: Uuid },
    /// Too many commands for one stream were waiting already; nothing was written.
    #[error(transparent)]
    Busy(#[from] TooBusy),
    /// An event in the stream cannot be read.
    #[error("the stream's history cannot be read: {0}")]
    Unreadable(DecodeError),
    /// The outcome remembered for a command is not one this code can read.
    #[error("the stored outcome of command {command_id} cannot be read: {source}")]
    UnreadableOutcome { command_id: Uuid, source: serde_json::Error },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl<R, D> From<LoadError<D>> for CommandError<R, D> {
    fn from(error: LoadError<D>) -> Self {
        match error {
            LoadError::Unreadable(error) => CommandError::Unreadable(error),
            LoadError::Database(error) => CommandError::Database(error),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Serialise each stream's writers: in this process, in the stream's queue (whose worker
    /// commits the commands waiting together), and between processes with a transaction-scoped
    /// advisory lock, so that contention makes them wait instead of conflict and retry.
    pub serialize_writers: bool,
    /// How often a command is decided again after losing the race for its stream's next version.
    pub max_attempts: u32,
    /// A snapshot is stored every this many events (0: never).
    pub snapshot_interval: i64,
    /// How long a command waits in its stream's queue in this process before it gives up.
    pub turn_patience: Duration,
    /// How many streams' latest states this process keeps, so that their next command skips
    /// the load (0: every command loads). Each is a few hundred bytes of an account's state.
    pub warm_streams: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            serialize_writers: true,
            max_attempts: 10,
            snapshot_interval: 25,
            turn_patience: Duration::from_secs(5),
            warm_streams: 100_000,
        }
    }
}

/// How a handled command ended, as remembered in `processed_commands`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Outcome<Refusal> {
    Accepted(Accepted),
    Refused(Refusal),
}

type Result<T, A> = std::result::Result<T, CommandError<<A as Aggregate>::Refusal, <A as Aggregate>::DecodeError>>;

/// At most this many waiting commands share one statement: it bounds the statement's size and
/// the wait of a command behind a long queue.
const MOST_AT_ONCE: usize = 64;

/// Runs one aggregate's commands. Cheap to clone; clones share the per-stream queues and the
/// warm streams.
pub struct CommandHandler<A: Aggregate> {
    pool: PgPool,
    appends: AppendNotifier,
    options: WriteOptions,
    queues: Arc<CommandQueues<Waiting<A>>>,
    group_commit: Arc<GroupCommit>,
    warm: Arc<WarmStreams<A::State>>,
}

/// A command in its stream's queue, and where its answer goes.
struct Waiting<A: Aggregate> {
    command: Arc<Prepared<A>>,
    answer: oneshot::Sender<Result<Accepted, A>>,
    /// When its caller stops waiting for its turn: a command not begun by then is answered
    /// busy and writes nothing, even if the worker has taken it from the queue.
    until: tokio::time::Instant,
}

/// A command with what it is remembered by (its request) and what its events carry (metadata).
struct Prepared<A: Aggregate> {
    envelope: CommandEnvelope<A::Command>,
    request: Value,
    metadata: Value,
}

impl<A: Aggregate> Prepared<A> {
    fn new(envelope: CommandEnvelope<A::Command>) -> Prepared<A> {
        let request = A::request(envelope.stream_id, &envelope.command);
        let mut metadata = envelope.metadata.clone();
        let own = json!({
            "commandId": envelope.command_id,
            "correlationId": envelope.correlation_id,
            // A command causes its events, or the event that caused the command does.
            "causationId": envelope.causation_id.unwrap_or(envelope.command_id),
            "issuedAt": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok(),
        });
        if let Value::Object(own) = own {
            metadata.extend(own);
        }
        Prepared { envelope, request, metadata: Value::Object(metadata) }
    }
}

impl<A: Aggregate> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        CommandHandler {
            pool: self.pool.clone(),
            appends: self.appends.clone(),
            options: self.options,
            queues: self.queues.clone(),
            group_commit: self.group_commit.clone(),
            warm: self.warm.clone(),
        }
    }
}

impl<A: Aggregate> CommandHandler<A> {
    pub fn new(pool: PgPool, appends: AppendNotifier, options: WriteOptions) -> CommandHandler<A> {
        let warm = Arc::new(WarmStreams::new(options.warm_streams));
        let group_commit = Arc::new(GroupCommit::new(
            &pool,
            StreamKind {
                stream_type: A::STREAM_TYPE,
                version_at: ACCEPTED_VERSION,
                position_at: ACCEPTED_POSITION,
                snapshot_version: A::SNAPSHOT_VERSION,
            },
        ));
        CommandHandler { pool, appends, options, queues: Arc::new(CommandQueues::new()), group_commit, warm }
    }

    /// Handles a command: take the stream's state from the warm streams or load it, decide,
    /// append at its version and remember the outcome, all in one transaction — shared with the
    /// commands that waited for the stream beside it.
    ///
    /// Sent again with the same command id, the command is answered with the first outcome and
    /// writes nothing. Losing the race for the stream's next version means the decision was
    /// made on stale state, so it is made again on fresh state, a bounded number of times.
    ///
    /// # Errors
    ///
    /// [`CommandError::Rejected`] when the aggregate refuses (remembered like an acceptance);
    /// `Conflict` after the last attempt lost its race; `CommandIdReused`; `Busy` when the
    /// command waited in its stream's queue for longer than the patience;
    /// `Unreadable`/`UnreadableOutcome` for stored data this code cannot read; `Database`. Only
    /// a rejection writes anything.
    ///
    /// # Cancel safety
    ///
    /// Dropped while the command waits in its stream's queue, it leaves the queue and nothing
    /// is written. Dropped once the stream's worker took it, the command goes on and its
    /// outcome is remembered. Either way the command id makes a retry safe: it is answered from
    /// the first outcome if that committed, and decided afresh if not.
    #[tracing::instrument(skip_all, fields(command_id = %envelope.command_id, stream_type = A::STREAM_TYPE, stream_id = %envelope.stream_id))]
    pub async fn handle(&self, envelope: CommandEnvelope<A::Command>) -> Result<Accepted, A> {
        let handled = self.handle_logged(envelope).await;
        match &handled {
            // A refusal's words are the aggregate's answer to its sender (a balance, a reason
            // for freezing an account): only that there was one goes to the log.
            Err(CommandError::Rejected(_)) => tracing::info!("refused"),
            Err(error) => tracing::info!(%error, "failed"),
            Ok(_) => {}
        }
        handled
    }

    async fn handle_logged(&self, envelope: CommandEnvelope<A::Command>) -> Result<Accepted, A> {
        let command = Arc::new(Prepared::new(envelope));
        if !self.options.serialize_writers {
            return self.handle_one(&command).await;
        }
        // In line for the stream in this process first, holding no connection: a hot stream's
        // commands then hold one pooled connection between them, not one each.
        let stream = command.envelope.stream_id;
        let (answer, mut answered) = oneshot::channel();
        let patience = self.options.turn_patience;
        let until = tokio::time::Instant::now() + patience;
        let (ticket, joined) = self.queues.join(stream, Waiting { command: command.clone(), answer, until });
        if joined == Joined::StartWorker {
            // Made before the task: dropped unpolled (a runtime shutting down), it still frees
            // the stream for the next command's worker.
            let running = Running { queues: self.queues.clone(), stream, done: false };
            let worker = self.clone().work(running);
            tokio::spawn(worker.instrument(tracing::info_span!("stream_worker", stream_id = %stream)));
        }
        let answer = match tokio::time::timeout(patience, &mut answered).await {
            Ok(answer) => answer,
            Err(_) => match self.queues.withdraw(stream, ticket) {
                Some(_) => return Err(TooBusy { stream, waited: patience }.into()),
                // The worker took it meanwhile: it answers at once if the command has not
                // begun, else once it is done (bounded by the database's own timeouts).
                None => answered.await,
            },
        };
        match answer {
            Ok(result) => result,
            // The worker stopped before it answered (a panic): the command id makes it safe to
            // handle here, whether or not the worker's transaction committed.
            Err(_) => self.handle_one(&command).await,
        }
    }

    /// How many commands wait in the stream's queue in this process, not yet taken by its
    /// worker (for tests).
    pub fn waiting(&self, stream_id: Uuid) -> usize {
        self.queues.waiting(stream_id)
    }

    /// The stream's worker: takes the waiting commands, as many at a time as wait, until none
    /// is left.
    async fn work(self, mut running: Running<Waiting<A>>) {
        let stream = running.stream;
        loop {
            let mut waiting: VecDeque<Waiting<A>> = self.queues.take(stream, MOST_AT_ONCE).into();
            if waiting.is_empty() {
                running.done = true;
                return;
            }
            loop {
                still_wanted(&mut waiting, stream, self.options.turn_patience);
                if waiting.is_empty() {
                    break;
                }
                // A group answered (it may have ended at a snapshot): the rest form the next.
                if self.on_warm_stream_together(stream, &mut waiting).await {
                    continue;
                }
                // None could go together (the stream is cold, or the first is a refusal, a
                // command id already in the group, or the group was left out): the first
                // goes alone, the long way, which leaves the stream warm again.
                still_wanted(&mut waiting, stream, self.options.turn_patience);
                if let Some(next) = waiting.pop_front() {
                    let outcome = self.handle_one(&next.command).await;
                    let _ = next.answer.send(outcome);
                }
            }
        }
    }

    /// On a warm stream, the commands at the front of `waiting` that the kept state accepts,
    /// appended together with their records (and with other streams' groups), and answered;
    /// whether any were. Those it leaves (from the first refusal on, and all if the group was
    /// left out) are the caller's.
    async fn on_warm_stream_together(&self, stream: Uuid, waiting: &mut VecDeque<Waiting<A>>) -> bool {
        let Some(warm) = self.warm.take(stream) else {
            return false;
        };
        let WarmState { version: expected_version, last_event_id, mut state } = warm;
        let mut version = expected_version;
        let mut events = Vec::new();
        let mut snapshot = None;
        // Each command's placeholder outcome, and how many events were appended by its end.
        let mut outcomes = Vec::new();
        for next in waiting.iter() {
            let envelope = &next.command.envelope;
            // The same command twice in one statement would fail it on the command's key.
            if waiting.iter().take(outcomes.len()).any(|taken| taken.command.envelope.command_id == envelope.command_id)
            {
                break;
            }
            let Ok(decided) = A::decide(&state, &envelope.command) else {
                break;
            };
            if decided.is_empty() {
                break;
            }
            let Ok(outcome) = accepted_placeholder::<A>(stream) else {
                break;
            };
            let before = version;
            events.extend(decided.iter().map(|event| A::encode(event, &next.command.metadata)));
            state = decided.iter().fold(state, A::evolve);
            version += decided.len() as i64;
            outcomes.push((events.len(), outcome));
            // The group ends with the command that makes a snapshot due, stored with it (a state
            // that does not serialise is not stored: the next one due is).
            if snapshot_due(before, version, self.options.snapshot_interval) {
                snapshot = serde_json::to_value(&state).ok();
                break;
            }
        }
        if outcomes.is_empty() {
            // Nothing decided on it changed it: the state is still the stream's.
            self.warm.put(stream, WarmState { version, last_event_id, state });
            return false;
        }
        let commands = waiting
            .iter()
            .zip(outcomes)
            .map(|(next, (through, outcome))| GroupedCommand {
                command_id: next.command.envelope.command_id,
                request: next.command.request.clone(),
                outcome,
                through,
            })
            .collect();
        let last_event_id_after = events.last().map(|event| event.event_id);
        let group =
            StreamGroup { stream_id: stream, expected: (expected_version, last_event_id), events, commands, snapshot };
        // Not written (moved on, a command id recorded before, the database failing): the
        // stream stays cold and each command takes the long way, where it is told apart.
        let Some(appended) = self.group_commit.append(group).await else {
            return false;
        };
        self.appends.committed();
        self.warm.put(stream, WarmState { version, last_event_id: last_event_id_after, state });
        for appended in appended {
            let next = waiting.pop_front().expect("one waiting command per appended command");
            let accepted = Accepted { stream_id: stream, version: appended.version, position: appended.position };
            let _ = next.answer.send(Ok(accepted));
        }
        true
    }

    /// One command, alone: on the warm stream if it is, else (or if that fails) under the
    /// stream's lock.
    async fn handle_one(&self, command: &Prepared<A>) -> Result<Accepted, A> {
        let Prepared { envelope, request, metadata } = command;
        // Taken out while the command works: put back only once its transaction committed.
        if let Some(warm) = self.warm.take(envelope.stream_id)
            && let Some(accepted) = self.on_warm_stream(envelope, request, metadata, warm).await?
        {
            return Ok(accepted);
        }
        for attempt in 1..=self.options.max_attempts {
            let mut tx = if self.options.serialize_writers {
                begin_with_stream_lock(&self.pool, envelope.stream_id).await?
            } else {
                self.pool.begin_with(format!("BEGIN; {WRITER_TIMEOUTS}")).await?
            };
            // A first attempt does not look for an earlier outcome: recording it would fail on
            // the command's primary key if there were one, and the retry that follows looks.
            let replay_check = attempt > 1;
            match self.attempt(&mut tx, envelope, request, metadata, replay_check).await? {
                Attempt::Done(outcome, after) => {
                    tx.commit().await?;
                    if matches!(outcome, Outcome::Accepted(_)) {
                        self.appends.committed();
                    }
                    if let Some(after) = after {
                        self.warm.put(envelope.stream_id, after);
                    }
                    return outcome.into_result::<A>();
                }
                Attempt::Replay(processed) => {
                    tx.rollback().await?;
                    return replay::<A>(processed, request, envelope.command_id);
                }
                Attempt::Retry => {
                    // Explicitly, so that the failed transaction stops holding back readers now,
                    // not when the pool next hands out this connection.
                    tx.rollback().await?;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(CommandError::Conflict { stream_type: A::STREAM_TYPE, stream_id: envelope.stream_id })
    }

    /// A command on a warm stream, decided on the state this process kept: appended with its
    /// record in one statement, which is its own transaction. `None` when the locked path must
    /// take it: a refusal (decided again on a state read under the lock, then remembered), a
    /// snapshot due (written with the events), or an append that found the stream moved on or
    /// the command id taken (the locked path reloads, or replays the first outcome).
    async fn on_warm_stream(
        &self,
        envelope: &CommandEnvelope<A::Command>,
        request: &Value,
        metadata: &Value,
        warm: WarmState<A::State>,
    ) -> Result<Option<Accepted>, A> {
        let Ok(events) = A::decide(&warm.state, &envelope.command) else {
            return Ok(None);
        };
        let new_version = warm.version + events.len() as i64;
        if snapshot_due(warm.version, new_version, self.options.snapshot_interval) {
            return Ok(None);
        }
        let appending = Appending::new::<A>(envelope, request, metadata, &events)?;
        let mut conn = self.pool.acquire().await?;
        let expected = (warm.version, warm.last_event_id);
        let Some(appended) = appending.append::<A>(&mut conn, envelope.stream_id, expected).await? else {
            return Ok(None);
        };
        self.appends.committed();
        let state = events.iter().fold(warm.state, A::evolve);
        self.warm.put(envelope.stream_id, appending.warm_after(&appended, state));
        Ok(Some(Accepted { stream_id: envelope.stream_id, version: appended.version, position: appended.position }))
    }

    async fn attempt(
        &self,
        tx: &mut PgConnection,
        envelope: &CommandEnvelope<A::Command>,
        request: &Value,
        metadata: &Value,
        replay_check: bool,
    ) -> Result<Attempt<A::Refusal, A::State>, A> {
        let stream_id = envelope.stream_id;
        if replay_check && let Some(processed) = find_processed(&mut *tx, envelope.command_id).await? {
            return Ok(Attempt::Replay(processed));
        }
        let loaded = aggregate::load::<A>(&mut *tx, stream_id, LATEST).await?;
        let events = match A::decide(&loaded.state, &envelope.command) {
            Ok(events) => events,
            Err(refusal) => return remember::<A>(tx, envelope.command_id, request, Outcome::Refused(refusal)).await,
        };
        let appending = Appending::new::<A>(envelope, request, metadata, &events)?;
        // Read in this transaction, under the stream's lock: the version is enough.
        let Some(appended) = appending.append::<A>(&mut *tx, stream_id, (loaded.version, None)).await? else {
            return Ok(Attempt::Retry);
        };
        let state = events.iter().fold(loaded.state, A::evolve);
        if snapshot_due(loaded.version, appended.version, self.options.snapshot_interval) {
            aggregate::save::<A>(&mut *tx, stream_id, appended.version, &state).await?;
        }
        let accepted = Accepted { stream_id, version: appended.version, position: appended.position };
        let after = appending.warm_after(&appended, state);
        Ok(Attempt::Done(Outcome::Accepted(accepted), Some(after)))
    }
}

/// An accepted command's events, encoded, and its record, ready to append.
struct Appending<'a> {
    command_id: Uuid,
    request: &'a Value,
    events: Vec<crate::NewEvent>,
    /// The accepted outcome with placeholders, which the append's statement fills in with the
    /// version and position only it knows.
    outcome: Value,
}

impl<'a> Appending<'a> {
    fn new<A: Aggregate>(
        envelope: &CommandEnvelope<A::Command>,
        request: &'a Value,
        metadata: &Value,
        events: &[A::Event],
    ) -> Result<Appending<'a>, A> {
        let outcome = accepted_placeholder::<A>(envelope.stream_id)?;
        let events = events.iter().map(|event| A::encode(event, metadata)).collect();
        Ok(Appending { command_id: envelope.command_id, request, events, outcome })
    }

    /// Appends at `expected` (the version, and the id of the event there if the state was kept
    /// from earlier) and records the command; `None` if the stream moved on or the command id
    /// is taken: the caller's transaction, if any, is then aborted.
    async fn append<A: Aggregate>(
        &self,
        conn: &mut PgConnection,
        stream_id: Uuid,
        expected: (i64, Option<Uuid>),
    ) -> Result<Option<crate::Appended>, A> {
        let record = CommandRecord {
            command_id: self.command_id,
            request: self.request,
            outcome: &self.outcome,
            version_at: ACCEPTED_VERSION,
            position_at: ACCEPTED_POSITION,
        };
        let (version, last_event) = expected;
        match append_and_record(conn, A::STREAM_TYPE, stream_id, version, last_event, &self.events, &record).await {
            Ok(appended) => Ok(Some(appended)),
            // Another writer moved the stream on, or the same command, sent twice at once, won
            // elsewhere: the next attempt loads again, or replays it.
            Err(
                AppendAndRecordError::Append(AppendError::Conflict { .. }) | AppendAndRecordError::AlreadyRecorded(_),
            ) => Ok(None),
            Err(AppendAndRecordError::Append(AppendError::Database(error))) => Err(error.into()),
        }
    }

    /// The stream's state to keep after the append committed.
    fn warm_after<S>(&self, appended: &crate::Appended, state: S) -> WarmState<S> {
        WarmState { version: appended.version, last_event_id: self.events.last().map(|event| event.event_id), state }
    }
}

/// Where [`append_and_record`] writes the version and the position in an accepted outcome as
/// serialised (`{"accepted": {"streamId": …, "version": …, "position": "…"}}`; a unit test
/// holds the two together).
const ACCEPTED_VERSION: &[&str] = &["accepted", "version"];
const ACCEPTED_POSITION: &[&str] = &["accepted", "position"];

/// A stream's worker at work. Dropped before it is done (the worker panicked, or its task was
/// dropped), it abandons the queue: the waiting commands' callers see the worker gone, and the
/// next command starts a new one.
struct Running<T> {
    queues: Arc<CommandQueues<T>>,
    stream: Uuid,
    done: bool,
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if !self.done {
            self.queues.abandon(self.stream);
        }
    }
}

/// Keeps the commands whose callers still wait for them: a caller gone wants nothing written,
/// and a command whose caller's patience ran out before it began is answered busy.
fn still_wanted<A: Aggregate>(waiting: &mut VecDeque<Waiting<A>>, stream: Uuid, patience: Duration) {
    let now = tokio::time::Instant::now();
    let mut kept = VecDeque::with_capacity(waiting.len());
    for next in waiting.drain(..) {
        if next.answer.is_closed() {
            continue;
        }
        if next.until <= now {
            let _ = next.answer.send(Err(TooBusy { stream, waited: patience }.into()));
            continue;
        }
        kept.push_back(next);
    }
    *waiting = kept;
}

/// An accepted outcome with placeholders, which the append's statement fills in with the
/// version and position only it knows.
fn accepted_placeholder<A: Aggregate>(stream_id: Uuid) -> Result<Value, A> {
    let placeholder = Accepted { stream_id, version: 0, position: Position::START };
    serde_json::to_value(Outcome::<A::Refusal>::Accepted(placeholder))
        .map_err(|error| CommandError::Database(sqlx::Error::Encode(Box::new(error))))
}

/// Remembers a refusal (an acceptance is remembered with its events).
async fn remember<A: Aggregate>(
    tx: &mut PgConnection,
    command_id: Uuid,
    request: &Value,
    outcome: Outcome<A::Refusal>,
) -> Result<Attempt<A::Refusal, A::State>, A> {
    let recorded = serde_json::to_value(&outcome).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    match record_processed(tx, command_id, request, &recorded).await {
        // The state stays cold: a refusal left it as loaded, but keeping it would need a copy.
        Ok(()) => Ok(Attempt::Done(outcome, None)),
        // The same command, sent twice at once, won elsewhere: the next attempt replays it.
        Err(RecordError::AlreadyRecorded(_)) => Ok(Attempt::Retry),
        Err(RecordError::Database(error)) => Err(error.into()),
    }
}

enum Attempt<Refusal, State> {
    /// The outcome is written; commit, keep the stream's new state warm, and answer.
    Done(Outcome<Refusal>, Option<WarmState<State>>),
    /// The command was handled before; answer as then.
    Replay(ProcessedCommand),
    /// Lost a race; roll back and try again.
    Retry,
}

impl<Refusal> Outcome<Refusal> {
    fn into_result<A: Aggregate<Refusal = Refusal>>(self) -> Result<Accepted, A> {
        match self {
            Outcome::Accepted(accepted) => Ok(accepted),
            Outcome::Refused(refusal) => Err(CommandError::Rejected(refusal)),
        }
    }
}

fn replay<A: Aggregate>(processed: ProcessedCommand, request: &Value, command_id: Uuid) -> Result<Accepted, A> {
    if processed.request != *request {
        return Err(CommandError::CommandIdReused { command_id });
    }
    let outcome: Outcome<A::Refusal> = serde_json::from_value(processed.outcome)
        .map_err(|source| CommandError::UnreadableOutcome { command_id, source })?;
    outcome.into_result::<A>()
}

/// Up to 2^attempt ms, at most 50 ms, with full jitter so that writers that clashed once do
/// not clash again in step.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 2u64.saturating_pow(attempt).min(50);
    Duration::from_micros(fastrand::u64(0..=ceiling_ms * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_writes_the_version_and_position_where_an_accepted_outcome_has_them() {
        let accepted = Accepted {
            stream_id: Uuid::new_v4(),
            version: 7,
            position: Position { transaction_id: 812, global_position: 40 },
        };
        let outcome = serde_json::to_value(Outcome::<()>::Accepted(accepted)).unwrap();
        let pointer = |path: &[&str]| format!("/{}", path.join("/"));
        assert_eq!(outcome.pointer(&pointer(ACCEPTED_VERSION)), Some(&json!(7)));
        // The statement writes `transaction_id || ':' || global_position`, the token.
        assert_eq!(outcome.pointer(&pointer(ACCEPTED_POSITION)), Some(&json!("812:40")));
    }

    #[test]
    fn backoff_grows_to_at_most_50_ms() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= Duration::from_millis(50));
        }
    }
}
