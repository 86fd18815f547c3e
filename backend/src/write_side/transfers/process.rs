//! The process manager: takes each transfer through its steps, one account command at a time,
//! and records each outcome in the transfer's stream.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{AppendNotifier, CommandEnvelope, LATEST};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::super::{CommandError, CommandHandler, WriteOptions};
use super::TransferCommandError;
use super::tables::step_command_id;
use crate::event_codec::DecodeError;
use crate::transfer_store::Transfer;
use bank::domain::transfer::{AfterStep, REFUND_STEP, TransferStep, next_step};
use bank::domain::{CommandBy, DomainError, TransferRefusal, TransferState};

/// The projection name of the transfer process: its checkpoint, leader and status.
pub const PROCESS_NAME: &str = "transfer_process";

/// A transfer's next step, as its stream was when the step was planned.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub transfer_id: Uuid,
    pub step: TransferStep,
    /// The transfer's latest event when the step was planned.
    pub cause: Option<Uuid>,
}

/// Why a transfer could not be taken further now; it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("transfer {transfer_id}: {source}")]
    Account { transfer_id: Uuid, source: CommandError },
    #[error("transfer {transfer_id}: {source}")]
    Transfer { transfer_id: Uuid, source: TransferCommandError },
    /// The source refused its own money back (its balance would pass the limit, say): the
    /// transfer waits, debited, for an operator.
    #[error("transfer {transfer_id}: the refund was refused: {refusal}")]
    RefundRefused { transfer_id: Uuid, refusal: DomainError },
    #[error("transfer {transfer_id} cannot be read: {source}")]
    Unreadable { transfer_id: Uuid, source: DecodeError },
    #[error("transfer {transfer_id}: its step panicked")]
    Panicked { transfer_id: Uuid },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether a command's failure lasts until something is fixed: an unreadable stream or outcome,
/// or a command id taken by another command.
fn fails_until_fixed<R, D>(error: &eventstore::CommandError<R, D>) -> bool {
    use eventstore::CommandError as E;
    matches!(error, E::Unreadable(_) | E::UnreadableOutcome { .. } | E::CommandIdReused { .. })
}

impl ProcessError {
    /// Whether trying again at once cannot help (until something is fixed or deployed): an
    /// unreadable stream or outcome (written by newer code, say), a command id taken by another
    /// command, a refund refused, a panic. Such a transfer is parked, so that it does not hold
    /// up every transfer after it, and tried again now and then.
    pub(super) fn is_permanent(&self) -> bool {
        match self {
            // A panic that happens once happens every time: parked, it holds up nothing else.
            ProcessError::Unreadable { .. } | ProcessError::RefundRefused { .. } | ProcessError::Panicked { .. } => {
                true
            }
            ProcessError::Account { source, .. } => fails_until_fixed(source),
            ProcessError::Transfer { source, .. } => fails_until_fixed(source),
            ProcessError::Database(_) => false,
        }
    }
}

/// Takes transfers through their steps. Cheap to clone.
#[derive(Clone)]
pub struct TransferProcess {
    pub(super) inner: Arc<ProcessParts>,
}

pub(super) struct ProcessParts {
    pub(super) pool: PgPool,
    accounts: CommandHandler,
    transfers: eventstore::CommandHandler<Transfer>,
    /// Transfers taken on at once in this process, by the log and the deadlines together: each
    /// holds a pooled connection while it steps, and requests need the rest.
    permits: Arc<tokio::sync::Semaphore>,
}

/// The most transfers this process takes on at once.
const CONCURRENT_TRANSFERS: usize = 8;
/// How often a transfer parked by a lasting error is tried again.
pub const PARKED_RETRY: Duration = Duration::from_secs(60);
/// How often a transfer parked by an error that may pass by itself (its stream held busy, a
/// connection lost) is tried again.
pub const PARKED_RETRY_SOON: Duration = Duration::from_secs(5);
/// The waits before each further try of a transfer whose step failed in a way that may pass by
/// itself; once they are spent it is parked, so that it holds up no transfer behind it.
const RETRY_AFTER: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
/// The longest deadline a transfer can be given; command ids are remembered at least this long
/// plus [`DEADLINE_MARGIN`], so that a step is answered from memory until it would be late anyway.
pub const LONGEST_DEADLINE: Duration = Duration::from_secs(3600);
/// See [`LONGEST_DEADLINE`].
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3600);

impl TransferProcess {
    pub fn new(
        pool: PgPool,
        accounts: CommandHandler,
        appends: AppendNotifier,
        options: WriteOptions,
    ) -> TransferProcess {
        let transfers = eventstore::CommandHandler::new(pool.clone(), appends, options);
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_TRANSFERS));
        TransferProcess { inner: Arc::new(ProcessParts { pool, accounts, transfers, permits }) }
    }

    /// Takes the transfer's next steps until it needs none (finished, or not requested).
    /// Safe to call any number of times, at once too: see the module's documentation.
    pub async fn advance(&self, transfer_id: Uuid) -> Result<(), ProcessError> {
        // A transfer needs at most three account steps (debit, credit, refund) in two turns;
        // a third turn finds nothing left. Bounded, so that no fault can make this spin.
        for _ in 0..3 {
            if !self.take_next_step(transfer_id).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Takes the transfer's next step (and records its outcome), if it needs one; false if it
    /// needs none.
    pub async fn take_next_step(&self, transfer_id: Uuid) -> Result<bool, ProcessError> {
        match self.plan(transfer_id).await? {
            Some(planned) => self.take_planned(planned).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// The transfer's next step as of now, read from its stream, if it needs one. A transfer
    /// that needs one is noted as under way; one that is finished, as finished.
    pub async fn plan(&self, transfer_id: Uuid) -> Result<Option<PlannedStep>, ProcessError> {
        let (state, latest_event) = self.load(transfer_id).await?;
        let TransferState::Known { terms, .. } = &state else {
            return Ok(None);
        };
        match next_step(transfer_id, &state, OffsetDateTime::now_utc()) {
            Some(step) => {
                self.open(transfer_id, terms.deadline).await?;
                Ok(Some(PlannedStep { transfer_id, step, cause: latest_event }))
            }
            None => {
                self.close(transfer_id).await?;
                Ok(None)
            }
        }
    }

    /// Takes a planned step and records its outcome. The plan may be old (its process paused
    /// in between): see the module's documentation for why that is safe.
    pub async fn take_planned(&self, planned: PlannedStep) -> Result<(), ProcessError> {
        self.take(planned.transfer_id, planned.step, planned.cause).await
    }

    /// The id of the transfer's latest event, read afresh.
    async fn latest_event(&self, transfer_id: Uuid) -> Result<Option<Uuid>, ProcessError> {
        Ok(self.load(transfer_id).await?.1)
    }

    /// The transfer's state and latest event, from its stream.
    async fn load(&self, transfer_id: Uuid) -> Result<(TransferState, Option<Uuid>), ProcessError> {
        let missing_key = |error: &ProcessError| match error {
            ProcessError::Unreadable { source, .. } => source.missing_key,
            _ => None,
        };
        crate::personal::keys::retrying(&self.inner.pool, missing_key, || self.load_once(transfer_id)).await
    }

    async fn load_once(&self, transfer_id: Uuid) -> Result<(TransferState, Option<Uuid>), ProcessError> {
        let mut conn = self.inner.pool.acquire().await?;
        let loaded = eventstore::aggregate::load::<Transfer>(&mut conn, transfer_id, LATEST).await.map_err(
            |error| match error {
                eventstore::LoadError::Unreadable(source) => ProcessError::Unreadable { transfer_id, source },
                eventstore::LoadError::Database(error) => ProcessError::Database(error),
            },
        )?;
        Ok((loaded.state, loaded.events.last().map(|(event, _)| event.event_id)))
    }

    /// One account step and the record of its outcome (with the refund, if the target refused).
    async fn take(&self, transfer_id: Uuid, step: TransferStep, cause: Option<Uuid>) -> Result<(), ProcessError> {
        let account = |source| ProcessError::Account { transfer_id, source };
        let answer = match self.account_step(transfer_id, step.kind.name(), step.account_id, &step.command, cause).await
        {
            Ok(()) => Ok(()),
            Err(CommandError::Rejected(refusal)) => Err(refusal),
            Err(error) => return Err(account(error)),
        };
        let record = match step.after(transfer_id, answer.as_ref().map(|_| ())) {
            AfterStep::Record(record) => record,
            AfterStep::Refund { account_id, command, then } => {
                // The credit was refused. If the transfer moved on since this step was planned
                // (a paused leader waking up to a transfer another finished), the refusal is
                // that of a late repeat, not the transfer's answer: a refund now would make
                // money once the refund's id is forgotten. The next turn reads where it is.
                if self.latest_event(transfer_id).await? != cause {
                    return Ok(());
                }
                match self.account_step(transfer_id, REFUND_STEP, account_id, &command, cause).await {
                    Ok(()) => then,
                    Err(CommandError::Rejected(refusal)) => {
                        return Err(ProcessError::RefundRefused { transfer_id, refusal });
                    }
                    Err(error) => return Err(account(error)),
                }
            }
        };
        let envelope = CommandEnvelope {
            command_id: step_command_id(transfer_id, step.kind.outcome_name()),
            correlation_id: transfer_id,
            stream_id: transfer_id,
            command: record,
            causation_id: cause,
            metadata: Default::default(),
        };
        match self.inner.transfers.handle(envelope).await {
            // Out of step: the transfer moved on meanwhile (another leader recorded it): the next
            // turn reads where it is.
            Ok(_) | Err(eventstore::CommandError::Rejected(TransferRefusal::OutOfStep { .. })) => Ok(()),
            Err(source) => Err(ProcessError::Transfer { transfer_id, source }),
        }
    }

    async fn account_step(
        &self,
        transfer_id: Uuid,
        step: &str,
        account_id: Uuid,
        command: &CommandBy,
        cause: Option<Uuid>,
    ) -> Result<(), CommandError> {
        let envelope = CommandEnvelope {
            command_id: step_command_id(transfer_id, step),
            correlation_id: transfer_id,
            stream_id: account_id,
            command: command.clone(),
            causation_id: cause,
            metadata: Default::default(),
        };
        self.inner.accounts.handle(envelope).await.map(|_| ())
    }

    /// Advances every transfer in `transfer_ids`, a few at once. A transfer that cannot go on —
    /// a lasting error (see [`ProcessError::is_permanent`]; a panic too), or one that may pass
    /// but outlasted [`RETRY_AFTER`] — is parked: logged, and kept in `transfer_process_parked`
    /// with its error, and the others go on; a parked transfer that goes through later leaves
    /// the table. Only a transfer that could not even be parked fails the call (after the others
    /// have had their turn).
    pub async fn advance_all(&self, transfer_ids: Vec<Uuid>) -> Result<(), ProcessError> {
        self.advance_each(transfer_ids, false).await
    }

    /// [`Self::advance_all`]; `parked`: the transfers were parked, and leave the table once they
    /// go through.
    async fn advance_each(&self, transfer_ids: Vec<Uuid>, parked: bool) -> Result<(), ProcessError> {
        let mut running = tokio::task::JoinSet::new();
        let mut tasks = std::collections::HashMap::new();
        for transfer_id in transfer_ids {
            let process = self.clone();
            let task = running.spawn(async move {
                let _permit = process.inner.permits.clone().acquire_owned().await;
                let mut waits = RETRY_AFTER.iter();
                loop {
                    match process.advance(transfer_id).await {
                        Err(error) if !error.is_permanent() => match waits.next() {
                            Some(wait) => {
                                tracing::debug!(%transfer_id, %error, "a transfer's step failed: trying again");
                                tokio::time::sleep(*wait).await;
                            }
                            None => return Err(error),
                        },
                        outcome => return outcome,
                    }
                }
            });
            tasks.insert(task.id(), transfer_id);
        }
        let mut first_failure = None;
        while let Some(done) = running.join_next_with_id().await {
            let (transfer_id, outcome) = match done {
                Ok((task, outcome)) => (tasks.get(&task).copied().unwrap_or_default(), outcome),
                Err(panic) => {
                    let transfer_id = tasks.get(&panic.id()).copied().unwrap_or_default();
                    tracing::error!(%transfer_id, %panic, "a transfer's step panicked");
                    (transfer_id, Err(ProcessError::Panicked { transfer_id }))
                }
            };
            let noted = match outcome {
                Ok(()) if parked => self.unpark(transfer_id).await,
                Ok(()) => Ok(()),
                Err(error) => self.park(transfer_id, &error).await,
            };
            if let Err(error) = noted {
                // Not even parked (the database is out of reach): the batch is tried again.
                first_failure.get_or_insert(ProcessError::Database(error));
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// While this instance leads the transfer process, takes on overdue transfers every
    /// second, until `shutdown`. A step the deadline makes is refused by the account as too
    /// late, so the transfer is undone; one that raced it and won stands.
    pub async fn run_deadlines(self, instance: String, shutdown: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            if let Err(error) = self.fire_due_deadlines(&instance).await {
                tracing::warn!(%error, "transfer deadlines: will look again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// One look at the deadlines and at the parked transfers due another try, if this
    /// instance leads the process; how many were overdue. Each part runs whatever the other
    /// met.
    pub async fn fire_due_deadlines(&self, instance: &str) -> Result<usize, ProcessError> {
        if !eventstore::projection::led_by(&self.inner.pool, PROCESS_NAME, instance).await? {
            return Ok(0);
        }
        let deadlines = async {
            let overdue = self.overdue(100).await?;
            let count = overdue.len();
            if count > 0 {
                tracing::info!(count, "transfers past their deadline: undoing them");
            }
            self.advance_all(overdue).await.map(|()| count)
        };
        let parked = async {
            let parked = self.parked_due(10).await?;
            if !parked.is_empty() {
                tracing::info!(count = parked.len(), "trying parked transfers again");
            }
            self.advance_each(parked, true).await
        };
        let (deadlines, parked) = tokio::join!(deadlines, parked);
        let count = deadlines?;
        parked?;
        Ok(count)
    }
}
