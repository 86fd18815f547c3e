//! The write side: an account command goes to the event store's command loop once — which
//! takes the account's turn, locks its stream, answers a retry from the remembered outcome,
//! loads from the latest snapshot, lets the domain decide, appends and snapshots — and its
//! answer comes back as the contract's [`CommandAccepted`].

pub mod transfers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eventstore::AppendNotifier;
use sqlx::PgPool;
use uuid::Uuid;

use crate::account_store::Account;
use crate::event_codec::DecodeError;
use bank::contract::CommandAccepted;
use bank::domain::{AccountCommand, CommandBy, DomainError, OwnerId, Sender};

pub use eventstore::WriteOptions;
pub use transfers::{TransferProcess, TransferRequests};

/// Why an account command was not applied.
pub type CommandError = eventstore::CommandError<DomainError, DecodeError>;
/// An account command, who sent it, its id (the idempotency key), correlation id and account.
pub type CommandEnvelope = eventstore::CommandEnvelope<CommandBy>;

/// Handles account commands. Cheap to clone; clones share the per-account turns, the accounts'
/// warm states and their owners.
#[derive(Clone)]
pub struct CommandHandler {
    accounts: eventstore::CommandHandler<Account>,
    owners: Owners,
    pool: PgPool,
}

impl CommandHandler {
    pub fn new(pool: PgPool, appends: AppendNotifier, options: WriteOptions) -> CommandHandler {
        CommandHandler {
            accounts: eventstore::CommandHandler::new(pool.clone(), appends, options),
            owners: Owners::new(pool.clone()),
            pool,
        }
    }

    /// Handles a command once, however often it is sent: see [`eventstore::CommandHandler::handle`].
    ///
    /// A customer's command to an account that is not theirs (or does not exist) is refused
    /// first, as the domain would refuse it, but without waiting for the account's turn or
    /// recording anything: a stranger who knows an account's id (every counterparty of a
    /// transfer does) can neither slow its owner down nor grow the command table.
    /// Handles the command, loading the data keys its account's events need as it finds them
    /// missing (an operator's reason, another customer's name).
    pub async fn handle(&self, envelope: CommandEnvelope) -> Result<CommandAccepted, CommandError> {
        let missing_key = |error: &CommandError| match error {
            CommandError::Unreadable(error) => error.missing_key,
            _ => None,
        };
        crate::personal::keys::retrying(&self.pool, missing_key, || self.handle_once(envelope.clone())).await
    }

    async fn handle_once(&self, mut envelope: CommandEnvelope) -> Result<CommandAccepted, CommandError> {
        if let Some(sender) = customer_to_an_existing_account(&envelope.command)
            && self.owners.of(envelope.stream_id).await?.as_ref() != Some(sender)
        {
            return Err(CommandError::Rejected(DomainError::AccountNotFound));
        }
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

/// The customer sending a command to an account that exists already (its owner's alone), if
/// that is what it is.
fn customer_to_an_existing_account(sent: &CommandBy) -> Option<&OwnerId> {
    use AccountCommand as C;
    match (&sent.by, &sent.command) {
        (Sender::Customer(by), C::Deposit { .. } | C::Withdraw { .. } | C::DebitForTransfer { .. } | C::Close) => {
            Some(by)
        }
        _ => None,
    }
}

/// Who owns each account, as its creation event says, remembered (up to [`Owners::MAX_ENTRIES`]
/// accounts, then afresh): a command to a known account costs no query for it. Only forgetting
/// the owner changes it, and then the account's own rule refuses every customer: a stale entry
/// lets nobody in.
#[derive(Clone)]
struct Owners {
    pool: PgPool,
    known: Arc<Mutex<HashMap<Uuid, OwnerId>>>,
}

impl Owners {
    const MAX_ENTRIES: usize = 100_000;

    fn new(pool: PgPool) -> Owners {
        Owners { pool, known: Arc::default() }
    }

    /// The account's owner; `None` if it does not exist (not remembered: it may be created).
    async fn of(&self, account_id: Uuid) -> Result<Option<OwnerId>, CommandError> {
        if let Some(owner) = self.known.lock().expect("the owners are never poisoned").get(&account_id) {
            return Ok(Some(owner.clone()));
        }
        let mut conn = self.pool.acquire().await?;
        let Some(owner) = crate::account_store::owner(&mut conn, account_id).await? else {
            return Ok(None);
        };
        let mut known = self.known.lock().expect("the owners are never poisoned");
        if known.len() >= Self::MAX_ENTRIES {
            known.clear();
        }
        known.insert(account_id, owner.clone());
        Ok(Some(owner))
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
