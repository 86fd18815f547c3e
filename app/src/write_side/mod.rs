//! The write side: load an account, let the domain decide, append the result — once per
//! command, however often the command is sent.

use std::sync::Arc;
use std::time::Duration;

use eventstore::processed_commands::{ProcessedCommand, RecordError, find_processed, record_processed};
use eventstore::stream_turns::StreamTurns;
use eventstore::{AppendError, Appends, append, begin_with_stream_lock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::account_store::{self, LATEST, LoadError};
use crate::contract::CommandAccepted;
use crate::domain::{AccountCommand, DomainError, decide, evolve};
use crate::event_codec;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Other writers kept appending to the stream; nothing was written.
    #[error("account {account_id} kept changing concurrently; the command was not applied, please retry")]
    Conflict { account_id: Uuid },
    /// The command id was used before for a different command.
    #[error("command id {command_id} was already used for a different command")]
    CommandIdReused { command_id: Uuid },
    /// Too many commands for one account were waiting already; nothing was written.
    #[error(transparent)]
    Busy(#[from] eventstore::stream_turns::TooBusy),
    #[error("the account's history cannot be read: {0}")]
    Unreadable(#[from] crate::event_codec::DecodeError),
    /// The outcome remembered for a command is not one this code can read.
    #[error("the stored outcome of command {command_id} cannot be read: {source}")]
    UnreadableOutcome { command_id: Uuid, source: serde_json::Error },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<LoadError> for CommandError {
    fn from(error: LoadError) -> CommandError {
        match error {
            LoadError::Unreadable(error) => CommandError::Unreadable(error),
            LoadError::Database(error) => CommandError::Database(error),
        }
    }
}

/// The type of every account's stream in the event store.
pub const ACCOUNT_STREAM: &str = "account";

/// A command and what identifies it: its id (the idempotency key), the correlation id of the
/// conversation it belongs to, and the stream it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub account_id: Uuid,
    pub command: AccountCommand,
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
    /// How long a command waits for its account's turn in this process before it gives up.
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
enum Outcome {
    Accepted(CommandAccepted),
    Refused(DomainError),
}

#[derive(Clone)]
pub struct CommandHandler {
    pool: PgPool,
    appends: Appends,
    options: WriteOptions,
    turns: Arc<StreamTurns>,
}

impl CommandHandler {
    pub fn new(pool: PgPool, appends: Appends, options: WriteOptions) -> CommandHandler {
        CommandHandler { pool, appends, options, turns: Arc::new(StreamTurns::new()) }
    }

    /// Handles a command: load the account, decide, append at the loaded version and remember
    /// the outcome, all in one transaction.
    ///
    /// Sent again with the same command id, the command is answered with the first outcome and
    /// writes nothing. Losing the race for the stream's next version means the decision was
    /// made on stale state, so it is made again on fresh state, a bounded number of times.
    #[tracing::instrument(skip_all, fields(command_id = %envelope.command_id, account_id = %envelope.account_id, command = ?envelope.command), err(level = "info"))]
    pub async fn handle(&self, envelope: CommandEnvelope) -> Result<CommandAccepted, CommandError> {
        let request = request_of(&envelope);
        let metadata = json!({
            "commandId": envelope.command_id,
            "correlationId": envelope.correlation_id,
            // A command causes its events; an event that caused a command would be named here.
            "causationId": envelope.command_id,
            "issuedAt": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok(),
        });
        // In line for the account in this process first, holding no connection: a hot account's
        // commands then hold one pooled connection between them, not one each.
        let _turn = if self.options.serialize_writers {
            Some(self.turns.take(envelope.account_id, self.options.turn_patience).await?)
        } else {
            None
        };
        for attempt in 1..=self.options.max_attempts {
            let mut tx = if self.options.serialize_writers {
                self.pool.begin_with(begin_with_stream_lock(envelope.account_id)).await?
            } else {
                self.pool.begin_with(format!("BEGIN; {}", eventstore::store::WRITER_TIMEOUTS)).await?
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
                    return outcome.into_result();
                }
                Attempt::Replay(processed) => {
                    tx.rollback().await?;
                    return replay(processed, &request, envelope.command_id);
                }
                Attempt::Retry => {
                    // Explicitly, so that the failed transaction stops holding back readers now,
                    // not when the pool next hands out this connection.
                    tx.rollback().await?;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(CommandError::Conflict { account_id: envelope.account_id })
    }

    async fn attempt(
        &self,
        tx: &mut PgConnection,
        envelope: &CommandEnvelope,
        request: &Value,
        metadata: &Value,
        replay_check: bool,
    ) -> Result<Attempt, CommandError> {
        let account_id = envelope.account_id;
        if replay_check && let Some(processed) = find_processed(&mut *tx, envelope.command_id).await? {
            return Ok(Attempt::Replay(processed));
        }
        let loaded = account_store::load(&mut *tx, account_id, LATEST).await?;

        let events = match decide(&loaded.state, &envelope.command) {
            Ok(events) => events,
            Err(refusal) => return self.remember(tx, envelope, request, Outcome::Refused(refusal)).await,
        };
        let new_events: Vec<_> = events.iter().map(|event| event_codec::encode(event, metadata)).collect();
        let appended = match append(&mut *tx, ACCOUNT_STREAM, account_id, loaded.version, &new_events).await {
            Ok(appended) => appended,
            Err(AppendError::Conflict { .. }) => return Ok(Attempt::Retry),
            Err(AppendError::Database(error)) => return Err(error.into()),
        };
        if account_store::snapshot_due(loaded.version, appended.version, self.options.snapshot_interval) {
            let state = events.iter().fold(loaded.state, evolve);
            account_store::save(&mut *tx, account_id, appended.version, &state).await?;
        }
        let accepted = CommandAccepted { account_id, version: appended.version, position: appended.position };
        self.remember(tx, envelope, request, Outcome::Accepted(accepted)).await
    }

    async fn remember(
        &self,
        tx: &mut PgConnection,
        envelope: &CommandEnvelope,
        request: &Value,
        outcome: Outcome,
    ) -> Result<Attempt, CommandError> {
        let recorded = serde_json::to_value(&outcome).expect("outcomes always serialise to JSON");
        match record_processed(tx, envelope.command_id, request, &recorded).await {
            Ok(()) => Ok(Attempt::Done(outcome)),
            // The same command, sent twice at once, won elsewhere: the next attempt replays it.
            Err(RecordError::AlreadyRecorded(_)) => Ok(Attempt::Retry),
            Err(RecordError::Database(error)) => Err(error.into()),
        }
    }
}

enum Attempt {
    /// The outcome is written; commit and answer with it.
    Done(Outcome),
    /// The command was handled before; answer as then.
    Replay(ProcessedCommand),
    /// Lost a race; roll back and try again.
    Retry,
}

impl Outcome {
    fn into_result(self) -> Result<CommandAccepted, CommandError> {
        match self {
            Outcome::Accepted(accepted) => Ok(accepted),
            Outcome::Refused(refusal) => Err(CommandError::Rejected(refusal)),
        }
    }
}

fn replay(processed: ProcessedCommand, request: &Value, command_id: Uuid) -> Result<CommandAccepted, CommandError> {
    if processed.request != *request {
        return Err(CommandError::CommandIdReused { command_id });
    }
    let outcome: Outcome = serde_json::from_value(processed.outcome)
        .map_err(|source| CommandError::UnreadableOutcome { command_id, source })?;
    outcome.into_result()
}

/// What identifies a request, to tell a retry from a reused id. A new account's id is made per
/// request, so it is left out: a retried creation is the same request.
fn request_of(envelope: &CommandEnvelope) -> Value {
    match &envelope.command {
        AccountCommand::CreateAccount { owner_id, initial_balance } => {
            json!({ "type": "CreateAccount", "ownerId": owner_id, "initialBalance": initial_balance })
        }
        AccountCommand::Deposit { amount } => {
            json!({ "type": "Deposit", "accountId": envelope.account_id, "amount": amount })
        }
        AccountCommand::Withdraw { amount } => {
            json!({ "type": "Withdraw", "accountId": envelope.account_id, "amount": amount })
        }
    }
}

/// Up to 2^attempt ms, at most 50 ms, with full jitter so that writers that clashed once do
/// not clash again in step.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = 2u64.saturating_pow(attempt).min(50);
    Duration::from_micros(fastrand::u64(0..=ceiling_ms * 1000))
}
