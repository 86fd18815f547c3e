//! The write side: load an account from its events, let the domain decide, append the result.

use std::sync::Arc;

use eventstore::{AppendError, Appended, append, read_stream};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::api::dto::CommandAccepted;
use crate::domain::{AccountCommand, AccountState, DomainError, decide, evolve};
use crate::event_codec::{self, DecodeError};

/// How often a command is re-decided after losing a race for its stream's next version.
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Other writers kept appending to the stream; nothing was written.
    #[error("account {account_id} changed concurrently {MAX_ATTEMPTS} times; the command was not applied")]
    Conflict { account_id: Uuid },
    #[error("the account's history cannot be read: {0}")]
    Corrupt(#[from] DecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct CommandHandler {
    pool: PgPool,
    /// Wakes this process's projections as soon as a command commits.
    appended: Arc<Notify>,
}

impl CommandHandler {
    pub fn new(pool: PgPool, appended: Arc<Notify>) -> CommandHandler {
        CommandHandler { pool, appended }
    }

    /// Handles `command` for the account `account_id`: load, decide, append at the loaded
    /// version, all in one transaction. Losing the race for the next version means the decision
    /// was made on stale state, so it is made again on the fresh state, a bounded number of times.
    #[tracing::instrument(skip(self), err(level = "info"))]
    pub async fn handle(
        &self,
        account_id: Uuid,
        command: AccountCommand,
        command_id: Option<Uuid>,
    ) -> Result<CommandAccepted, CommandError> {
        let metadata = serde_json::json!({ "commandId": command_id.unwrap_or_else(Uuid::new_v4) });
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = self.pool.begin().await?;
            let history = read_stream(&mut *tx, account_id, 0).await?;
            let version = history.last().map_or(0, |event| event.stream_version);
            let mut state = AccountState::default();
            for recorded in &history {
                state = evolve(state, &event_codec::decode(recorded)?);
            }

            let new_events: Vec<_> =
                decide(&state, &command)?.iter().map(|event| event_codec::encode(event, &metadata)).collect();

            match append(&mut tx, account_id, version, &new_events).await {
                Ok(Appended { version, position }) => {
                    tx.commit().await?;
                    // A stored permit if the projection is busy: it runs once more when done.
                    self.appended.notify_one();
                    return Ok(CommandAccepted { account_id, version, position });
                }
                Err(AppendError::Conflict { .. }) => {
                    // Explicitly, so that the failed transaction's id stops holding back the
                    // readers' horizon now, not when the pool next hands out this connection.
                    tx.rollback().await?;
                    continue;
                }
                Err(AppendError::Database(error)) => return Err(error.into()),
            }
        }
        Err(CommandError::Conflict { account_id })
    }
}
