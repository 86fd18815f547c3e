//! The command loop, for any [`Aggregate`]: wait for the stream's turn, lock it, answer a retried
//! command from its remembered outcome, load from the latest snapshot, decide, append at the
//! loaded version, remember the outcome, snapshot when due — once per command, however often it
//! is sent — and decide again on fresh state after losing a race.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::aggregate::{self, Aggregate, LATEST, LoadError, snapshot_due};
use crate::processed_commands::{ProcessedCommand, RecordError, find_processed, record_processed};
use crate::store::{AppendError, WRITER_TIMEOUTS, append, begin_with_stream_lock};
use crate::stream_turns::{StreamTurns, TooBusy};
use crate::{Appends, Position};

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
    /// Serialise each stream's writers with a transaction-scoped advisory lock taken with the
    /// transaction's BEGIN, so that contention makes them wait instead of conflict and retry.
    pub serialize_writers: bool,
    /// How often a command is decided again after losing the race for its stream's next version.
    pub max_attempts: u32,
    /// A snapshot is stored every this many events (0: never).
    pub snapshot_interval: i64,
    /// How long a command waits for its stream's turn in this process before it gives up.
    pub turn_patience: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            serialize_writers: true,
            max_attempts: 10,
            snapshot_interval: 25,
            turn_patience: Duration::from_secs(5),
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

/// Runs one aggregate's commands. Cheap to clone; clones share the per-stream turns.
pub struct CommandHandler<A> {
    pool: PgPool,
    appends: Appends,
    options: WriteOptions,
    turns: Arc<StreamTurns>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        CommandHandler {
            pool: self.pool.clone(),
            appends: self.appends.clone(),
            options: self.options,
            turns: self.turns.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> CommandHandler<A> {
    pub fn new(pool: PgPool, appends: Appends, options: WriteOptions) -> CommandHandler<A> {
        CommandHandler { pool, appends, options, turns: Arc::new(StreamTurns::new()), aggregate: PhantomData }
    }

    /// Handles a command: load the stream, decide, append at the loaded version and remember
    /// the outcome, all in one transaction.
    ///
    /// Sent again with the same command id, the command is answered with the first outcome and
    /// writes nothing. Losing the race for the stream's next version means the decision was
    /// made on stale state, so it is made again on fresh state, a bounded number of times.
    #[tracing::instrument(skip_all, fields(command_id = %envelope.command_id, stream_type = A::STREAM_TYPE, stream_id = %envelope.stream_id), err(level = "info"))]
    pub async fn handle(&self, envelope: CommandEnvelope<A::Command>) -> Result<Accepted, A> {
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
        let metadata = Value::Object(metadata);
        // In line for the stream in this process first, holding no connection: a hot stream's
        // commands then hold one pooled connection between them, not one each.
        let _turn = if self.options.serialize_writers {
            Some(self.turns.take(envelope.stream_id, self.options.turn_patience).await?)
        } else {
            None
        };
        for attempt in 1..=self.options.max_attempts {
            let mut tx = if self.options.serialize_writers {
                self.pool.begin_with(begin_with_stream_lock(envelope.stream_id)).await?
            } else {
                self.pool.begin_with(format!("BEGIN; {WRITER_TIMEOUTS}")).await?
            };
            // A first attempt does not look for an earlier outcome: recording it would fail on
            // the command's primary key if there were one, and the retry that follows looks.
            let replay_check = attempt > 1;
            match self.attempt(&mut tx, &envelope, &request, &metadata, replay_check).await? {
                Attempt::Done(outcome) => {
                    tx.commit().await?;
                    if matches!(outcome, Outcome::Accepted(_)) {
                        self.appends.committed();
                    }
                    return outcome.into_result::<A>();
                }
                Attempt::Replay(processed) => {
                    tx.rollback().await?;
                    return replay::<A>(processed, &request, envelope.command_id);
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

    async fn attempt(
        &self,
        tx: &mut PgConnection,
        envelope: &CommandEnvelope<A::Command>,
        request: &Value,
        metadata: &Value,
        replay_check: bool,
    ) -> Result<Attempt<A::Refusal>, A> {
        let stream_id = envelope.stream_id;
        if replay_check && let Some(processed) = find_processed(&mut *tx, envelope.command_id).await? {
            return Ok(Attempt::Replay(processed));
        }
        let loaded = aggregate::load::<A>(&mut *tx, stream_id, LATEST).await?;

        let events = match A::decide(&loaded.state, &envelope.command) {
            Ok(events) => events,
            Err(refusal) => return remember::<A>(tx, envelope.command_id, request, Outcome::Refused(refusal)).await,
        };
        let new_events: Vec<_> = events.iter().map(|event| A::encode(event, metadata)).collect();
        let appended = match append(&mut *tx, A::STREAM_TYPE, stream_id, loaded.version, &new_events).await {
            Ok(appended) => appended,
            Err(AppendError::Conflict { .. }) => return Ok(Attempt::Retry),
            Err(AppendError::Database(error)) => return Err(error.into()),
        };
        if snapshot_due(loaded.version, appended.version, self.options.snapshot_interval) {
            let state = events.iter().fold(loaded.state, A::evolve);
            aggregate::save::<A>(&mut *tx, stream_id, appended.version, &state).await?;
        }
        let accepted = Accepted { stream_id, version: appended.version, position: appended.position };
        remember::<A>(tx, envelope.command_id, request, Outcome::Accepted(accepted)).await
    }
}

async fn remember<A: Aggregate>(
    tx: &mut PgConnection,
    command_id: Uuid,
    request: &Value,
    outcome: Outcome<A::Refusal>,
) -> Result<Attempt<A::Refusal>, A> {
    let recorded = serde_json::to_value(&outcome).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    match record_processed(tx, command_id, request, &recorded).await {
        Ok(()) => Ok(Attempt::Done(outcome)),
        // The same command, sent twice at once, won elsewhere: the next attempt replays it.
        Err(RecordError::AlreadyRecorded(_)) => Ok(Attempt::Retry),
        Err(RecordError::Database(error)) => Err(error.into()),
    }
}

enum Attempt<Refusal> {
    /// The outcome is written; commit and answer with it.
    Done(Outcome<Refusal>),
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
