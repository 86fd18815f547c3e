//! The write side: an account command goes to the event store's command loop once — which
//! takes the account's turn, locks its stream, answers a retry from the remembered outcome,
//! loads from the latest snapshot, lets the domain decide, appends and snapshots — and its
//! answer comes back as the contract's [`CommandAccepted`].

pub mod transfers;

use eventstore::AppendNotifier;
use sqlx::PgPool;

use crate::account_store::Account;
use crate::event_codec::DecodeError;
use bank::contract::CommandAccepted;
use bank::domain::{AccountCommand, CommandBy, DomainError};

pub use eventstore::WriteOptions;
pub use transfers::{TransferProcess, TransferRequests};

/// Why an account command was not applied.
pub type CommandError = eventstore::CommandError<DomainError, DecodeError>;
/// An account command, who sent it, its id (the idempotency key), correlation id and account.
pub type CommandEnvelope = eventstore::CommandEnvelope<CommandBy>;

/// Handles account commands. Cheap to clone; clones share the per-account turns and the accounts'
/// warm states.
#[derive(Clone)]
pub struct CommandHandler {
    accounts: eventstore::CommandHandler<Account>,
}

impl CommandHandler {
    pub fn new(pool: PgPool, appends: AppendNotifier, options: WriteOptions) -> CommandHandler {
        CommandHandler { accounts: eventstore::CommandHandler::new(pool, appends, options) }
    }

    /// Handles a command once, however often it is sent: see [`eventstore::CommandHandler::handle`].
    pub async fn handle(&self, mut envelope: CommandEnvelope) -> Result<CommandAccepted, CommandError> {
        // A transfer's step is judged late by when it arrives, not by when it was planned: a
        // process paused in between (for longer than its step ids are remembered, even) must
        // not move money in time for a transfer whose deadline passed.
        if let AccountCommand::DebitForTransfer { at, .. } | AccountCommand::CreditForTransfer { at, .. } =
            &mut envelope.command.command
        {
            *at = (*at).max(time::OffsetDateTime::now_utc());
        }
        let accepted = self.accounts.handle(envelope).await?;
        Ok(CommandAccepted { account_id: accepted.stream_id, version: accepted.version, position: accepted.position })
    }
}

/// Forgets command ids past `retention`, but never sooner than a transfer's step could still
/// arrive in time ([`transfers::LONGEST_DEADLINE`] and a margin), and never the steps of a
/// transfer not yet finished; returns how many. Idempotent: every instance may run it.
pub async fn forget_old_command_ids(pool: &PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let age = retention.max(transfers::LONGEST_DEADLINE + transfers::DEADLINE_MARGIN);
    let keep = transfers::step_ids_to_keep(pool, age).await?;
    eventstore::processed_commands::purge_older_than(pool, age, &keep).await
}

/// The most events one batch of the transfer process reads. Most are not a transfer's request
/// (each transfer appends five more, all in the one log), so a batch must be large to pass them
/// quickly; at a steady rate a batch holds what arrived since the last one, a few requests, and
/// only a backlog fills one (then a request waits for the slowest transfer of its batch).
pub const TRANSFER_BATCH: i64 = 500;

/// Runs the transfer process in this instance whenever this instance leads it: its projection of
/// the log, and its deadlines.
pub fn run_transfer_process(
    process: &TransferProcess,
    pool: &PgPool,
    appends: &AppendNotifier,
    instance: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use eventstore::projection::ExternalProjectionRunner;
    vec![
        tokio::spawn(
            ExternalProjectionRunner::new(pool.clone(), process.clone(), appends.subscribe(), instance)
                .batch_size(TRANSFER_BATCH)
                .run(shutdown.clone()),
        ),
        tokio::spawn(process.clone().run_deadlines(instance.to_owned(), shutdown.clone())),
    ]
}
